"""The webhook's serving certificate: what the Secret holds, what to do next, and how to issue.

The Secret (type kubernetes.io/tls) holds four keys:

* ``ca.crt``: the trusted CA certificates, newest first (PEM bundle); the webhook
  configuration's ``caBundle`` is exactly this;
* ``ca.key``: the key of the newest CA;
* ``tls.crt`` / ``tls.key``: the serving certificate, signed by one of the CAs in ``ca.crt``.

A Secret without ``ca.key`` (one a chart rendered, or the original add-on's, handed over to the
controller) is usable as it is while its certificate names the Service and is signed by a CA in
``ca.crt``: it is served and its ``ca.crt`` published, unchanged. When it comes due, a CA of the
controller's own is added first (``ADD_CA``, which needs no old key) and the serving certificate
is re-issued under it once published, as for any renewal.

Renewal never leaves the API server without trust in the certificate being served. A CA past
two thirds of its life is first *added* to the bundle (the old one stays until it expires); only
once the webhook configuration's caBundle holds the new CA is the serving certificate re-issued
under it. :func:`decide` is pure: facts and the time in, one step out.

``cryptography`` is imported here only, and the controller never imports this module: the
keeper runs ``python -m tcr_assistant.servingcert.certificates`` for each decision (:func:`evaluate`, JSON
on stdin and stdout), so the long-running process does not carry the library's ~10 MiB.
"""

from __future__ import annotations

import base64
import datetime
import enum
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tcr_assistant.spec.api import CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, WEBHOOK_CERT_KEYS

KEYS = WEBHOOK_CERT_KEYS
RENEW_FRACTION = 2 / 3  # renew at two thirds of the lifetime, as cert-manager does by default
BACKDATE = 300.0  # seconds at most (a tenth of the validity); tolerates clocks a little behind ours
CA_COMMON_NAME = "tcr-assistant-webhook-ca"


@dataclass(frozen=True)
class Lifetime:
    not_before: float  # POSIX seconds
    not_after: float

    @property
    def renew_at(self) -> float:
        return self.not_before + (self.not_after - self.not_before) * RENEW_FRACTION


@dataclass(frozen=True)
class Authority:
    fingerprint: str  # SHA-256 of the DER certificate, hex
    lifetime: Lifetime


@dataclass(frozen=True)
class Facts:
    """What a Secret's data says, checked; ``problem`` names why it cannot be used as it is."""

    authorities: tuple[Authority, ...] = ()  # newest first
    serving: Lifetime | None = None
    serving_issuer: str | None = None  # fingerprint of the CA in the bundle that signed it
    problem: str | None = None
    signing_key: bool = True  # ca.key (the newest CA's key) is there: the serving certificate can be re-issued


class Step(enum.Enum):
    ISSUE = "issue"  # new CA and serving certificate (nothing usable is there)
    ADD_CA = "add-ca"  # the newest CA is due: add a new one to the bundle
    RENEW_SERVING = "renew-serving"  # re-issue the serving certificate under the newest CA
    PRUNE = "prune"  # drop expired CAs from the bundle
    WAIT = "wait"  # the serving certificate is due, but the caBundle lacks the newest CA yet
    KEEP = "keep"


def decide(facts: Facts | None, published: frozenset[str] | None, now: float) -> tuple[Step, str]:
    """The next step for the Secret, and why.

    ``facts`` is None when the Secret does not exist; ``published`` holds the fingerprints in the
    webhook configuration's caBundle (None: unknown or unparseable).
    """
    if facts is None:
        return Step.ISSUE, "the Secret does not exist"
    if facts.problem is not None:
        return Step.ISSUE, facts.problem
    assert facts.serving is not None and facts.authorities
    if facts.serving.not_after <= now:
        return Step.ISSUE, "the serving certificate has expired"
    issuer = next(a for a in facts.authorities if a.fingerprint == facts.serving_issuer)
    if issuer.lifetime.not_after <= now:
        return Step.ISSUE, "the serving certificate's CA has expired"
    newest = facts.authorities[0]
    if any(a.lifetime.not_after <= now for a in facts.authorities):
        return Step.PRUNE, "a CA in the bundle has expired"
    if newest.lifetime.renew_at <= now:
        return Step.ADD_CA, "the CA is past two thirds of its lifetime"
    if not facts.signing_key:
        # Handed over without ca.key: served as it is until due; a CA of our own comes first.
        if facts.serving.renew_at <= now or issuer.lifetime.renew_at <= now:
            return Step.ADD_CA, "the serving certificate is due and the Secret has no ca.key: a new CA is added first"
        return Step.KEEP, "valid (no ca.key: served as it is until it is due)"
    if facts.serving.renew_at <= now or facts.serving_issuer != newest.fingerprint:
        why = ("the serving certificate is past two thirds of its lifetime"
               if facts.serving.renew_at <= now else "the serving certificate is not signed by the newest CA")
        if published is None or newest.fingerprint not in published:
            return Step.WAIT, f"{why}; waiting until the webhook configuration trusts the newest CA"
        return Step.RENEW_SERVING, why
    return Step.KEEP, "valid"


def next_check(facts: Facts | None, now: float) -> float | None:
    """When :func:`decide` may answer differently on its own (time passing), or None."""
    if facts is None or facts.problem is not None or facts.serving is None:
        return None
    if facts.signing_key and (facts.serving.renew_at <= now
                              or facts.serving_issuer != facts.authorities[0].fingerprint):
        return now  # a renewal waits for the caBundle: look again once it is published
    times = [facts.serving.renew_at, facts.serving.not_after]
    for authority in facts.authorities:
        times += [authority.lifetime.renew_at, authority.lifetime.not_after]
    later = [t for t in times if t > now]
    return min(later) if later else None


# -- reading ----------------------------------------------------------------------------------


def _lifetime(cert: x509.Certificate) -> Lifetime:
    return Lifetime(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """``ca`` issued ``cert`` (names and signature; ECDSA ours, RSA a chart's or the original add-on's)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _same_public_key(private_pem: bytes, cert: x509.Certificate) -> bool:
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def _authorities_newest_first(bundle: bytes) -> list[x509.Certificate]:
    return sorted(x509.load_pem_x509_certificates(bundle), key=lambda c: c.not_valid_before_utc, reverse=True)


def fingerprints(bundle: bytes) -> frozenset[str] | None:
    """Fingerprints of the certificates in a PEM bundle (a caBundle); None if it does not parse."""
    try:
        return frozenset(_fingerprint(c) for c in x509.load_pem_x509_certificates(bundle))
    except ValueError:
        return None


def inspect(data: Mapping[str, bytes], names: Sequence[str]) -> Facts:
    """Check a Secret's (decoded) data; never raises, and never puts key material in ``problem``.

    ``ca.key`` may be missing (a certificate handed over): ``signing_key`` is then False."""
    missing = [key for key in KEYS if key != CA_KEY and not data.get(key)]
    if missing:
        return Facts(problem=f"the Secret lacks {', '.join(missing)}")
    signing_key = bool(data.get(CA_KEY))
    try:
        cas = _authorities_newest_first(data[CA_CERT])
        serving = x509.load_pem_x509_certificate(data[TLS_CERT])
        if signing_key and not _same_public_key(data[CA_KEY], cas[0]):
            return Facts(problem="ca.key is not the key of the newest CA in ca.crt")
        if not _same_public_key(data[TLS_KEY], serving):
            return Facts(problem="tls.key is not the key of tls.crt")
    except (ValueError, TypeError, IndexError):
        return Facts(problem="a certificate or key in the Secret does not parse")
    try:
        san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = set()
    # The API server dials the first name (<service>.<namespace>.svc); the others are ours to add
    # when we issue, and a certificate made elsewhere (the original add-on's) need not carry them.
    if names and names[0] not in dns:
        return Facts(problem=f"the serving certificate does not name {names[0]}")
    authorities = tuple(Authority(_fingerprint(c), _lifetime(c)) for c in cas)
    issuer = next((_fingerprint(c) for c in cas if _signed_by(serving, c)), None)
    if issuer is None:
        return Facts(authorities, problem="the serving certificate is not signed by a CA in ca.crt")
    return Facts(authorities, _lifetime(serving), issuer, signing_key=signing_key)


# -- issuing ----------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: str, issuer: str, now: float, not_after: float, public_key: ec.EllipticCurvePublicKey,
             ) -> x509.CertificateBuilder:
    utc = datetime.UTC
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.fromtimestamp(now - min(BACKDATE, (not_after - now) / 10), utc))
            .not_valid_after(datetime.datetime.fromtimestamp(not_after, utc)))


def _new_ca(now: float, validity: float) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(CA_COMMON_NAME, CA_COMMON_NAME, now, now + validity, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _new_serving(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: Sequence[str], now: float,
                 validity: float) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + validity, ca.not_valid_after_utc.timestamp())
    common = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    cert = (_builder(names[0], str(common), now, not_after, key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem(cert), _pem_key(key)


def issue(names: Sequence[str], now: float, validity: float) -> dict[str, bytes]:
    """A fresh CA and a serving certificate for ``names`` (the first is the subject)."""
    ca, ca_key = _new_ca(now, validity)
    tls_crt, tls_key = _new_serving(ca, ca_key, names, now, validity)
    return {CA_CERT: _pem(ca), CA_KEY: _pem_key(ca_key), TLS_CERT: tls_crt, TLS_KEY: tls_key}


def apply(step: Step, data: Mapping[str, bytes], names: Sequence[str], now: float, validity: float,
          ) -> dict[str, bytes] | None:
    """The Secret's new data after ``step``, or None when the step writes nothing."""
    if step is Step.ISSUE:
        return issue(names, now, validity)
    cas = _authorities_newest_first(data[CA_CERT])
    if step is Step.PRUNE:
        kept = [c for c in cas if c.not_valid_after_utc.timestamp() > now]
        return {**data, CA_CERT: b"".join(_pem(c) for c in kept)}
    if step is Step.ADD_CA:
        ca, ca_key = _new_ca(now, validity)
        return {**data, CA_CERT: b"".join(_pem(c) for c in [ca, *cas]), CA_KEY: _pem_key(ca_key)}
    if step is Step.RENEW_SERVING:
        key = serialization.load_pem_private_key(data[CA_KEY], password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        tls_crt, tls_key = _new_serving(cas[0], key, names, now, validity)
        return {**data, TLS_CERT: tls_crt, TLS_KEY: tls_key}
    return None


# -- the keeper's questions, answered in a process of its own -----------------------------------


def published_authorities(bundles: Sequence[bytes]) -> frozenset[str] | None:
    """Fingerprints of the CAs that every webhook's caBundle holds (None: unknown or unset)."""
    sets = [fingerprints(bundle) for bundle in bundles]
    if not sets or any(s is None for s in sets):
        return None
    return frozenset.intersection(*[s for s in sets if s is not None])


def evaluate(request: Mapping[str, object]) -> dict[str, object]:
    """One decision for the keeper: the step, why, the Secret's new data (or None), and when to
    look again. Request and answer are JSON-ready (binary values base64)."""
    raw = request.get("data")
    data = None if raw is None else {k: base64.b64decode(str(v)) for k, v in dict(raw).items()}  # type: ignore[call-overload]
    names = [str(n) for n in request["names"]]  # type: ignore[attr-defined]
    now, validity = float(request["now"]), float(request["validity"])  # type: ignore[arg-type]
    bundles = [base64.b64decode(str(b)) for b in request.get("bundles") or []]  # type: ignore[attr-defined]
    facts = None if data is None else inspect(data, names)
    step, why = decide(facts, published_authorities(bundles), now)
    new = apply(step, data or {}, names, now, validity)
    return {"step": step.value, "why": why, "next_check": next_check(facts, now),
            "data": None if new is None else {k: base64.b64encode(v).decode() for k, v in new.items()}}


def main() -> int:
    """``python -m tcr_assistant.servingcert.certificates``: one :func:`evaluate` request on stdin,
    the answer on stdout."""
    json.dump(evaluate(json.load(sys.stdin)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
