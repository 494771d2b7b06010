"""The webhook certificate's pure decisions: what a Secret holds, and the next step."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from support import REPO_ROOT, helm
from tcr_assistant.servingcert import certificates
from tcr_assistant.servingcert import decision as servingcert
from tcr_assistant.servingcert.certificates import CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, Step, decide, inspect
from tcr_assistant.spec import api

NAMES = servingcert.service_names("tcr-assistant-webhook-service", "tcr-assistant-system")
VALIDITY = 300.0
T0 = 1_800_000_000.0


def issued(now: float = T0) -> dict[str, bytes]:
    return certificates.issue(NAMES, now, VALIDITY)


def test_a_fresh_certificate_is_kept_until_two_thirds_of_its_lifetime() -> None:
    data = issued()
    facts = inspect(data, NAMES)
    assert facts.problem is None and len(facts.authorities) == 1
    trusted = certificates.fingerprints(data[CA_CERT])
    assert decide(facts, trusted, T0 + 1) == (Step.KEEP, "valid")
    due = certificates.next_check(facts, T0 + 1)
    assert due is not None and T0 + 0.6 * VALIDITY < due < T0 + 0.7 * VALIDITY
    assert decide(facts, trusted, due)[0] is Step.ADD_CA


def test_missing_or_unusable_secrets_are_issued_again_and_say_why_without_key_material() -> None:
    good, other = issued(), issued()
    cases = {
        "the Secret does not exist": None,
        "the Secret lacks tls.key": {k: v for k, v in good.items() if k != TLS_KEY},
        "the Secret lacks ca.crt, tls.crt": {k: v for k, v in good.items() if k in (CA_KEY, TLS_KEY)},
        "a certificate or key in the Secret does not parse": {**good, TLS_CERT: b"not a certificate"},
        "tls.key is not the key of tls.crt": {**good, TLS_KEY: other[TLS_KEY]},
        "ca.key is not the key of the newest CA in ca.crt": {**good, CA_KEY: other[CA_KEY]},
        "the serving certificate is not signed by a CA in ca.crt": {**good, CA_CERT: other[CA_CERT],
                                                                    CA_KEY: other[CA_KEY]},
    }
    for why, data in cases.items():
        facts = None if data is None else inspect(data, NAMES)
        step, reason = decide(facts, None, T0)
        assert (step, reason) == (Step.ISSUE, why)
        assert "PRIVATE" not in reason and "BEGIN" not in reason
    assert decide(inspect(good, ["elsewhere.example"]), None, T0) == (
        Step.ISSUE, "the serving certificate does not name elsewhere.example")
    assert decide(inspect(good, NAMES), None, T0 + VALIDITY + 1) == (Step.ISSUE, "the serving certificate has expired")


def test_the_serving_certificate_waits_for_the_new_ca_to_be_trusted() -> None:
    data = issued()
    old = certificates.fingerprints(data[CA_CERT])
    later = T0 + 0.7 * VALIDITY
    added = certificates.apply(Step.ADD_CA, data, NAMES, later, VALIDITY)
    assert added is not None
    facts = inspect(added, NAMES)
    assert len(facts.authorities) == 2 and added[TLS_CERT] == data[TLS_CERT]
    assert decide(facts, old, later)[0] is Step.WAIT
    both = certificates.fingerprints(added[CA_CERT])
    assert decide(facts, both, later)[0] is Step.RENEW_SERVING


def keyless(now: float = T0) -> dict[str, bytes]:
    """A Secret as a chart renders it, or the original add-on's: ca.crt, tls.crt, tls.key and no ca.key."""
    return {k: v for k, v in issued(now).items() if k != CA_KEY}


def previous_chart_secret() -> dict[str, bytes]:
    """The certificate Secret the 0.1.0 chart renders (RSA, Sprig's genCA/genSignedCert), from its archive."""
    chart = REPO_ROOT / "releases" / "0.1.0" / "tcr-addon-0.1.0.tgz"
    out = helm("template", "tcr-addon", str(chart), "-n", "tcr-assistant-system", "--kube-version", "1.34.0",
               "--show-only", "templates/webhook-secret.yaml").stdout
    secret: dict[str, Any] = yaml.safe_load(out)
    assert secret["type"] == "kubernetes.io/tls" and sorted(secret["data"]) == [CA_CERT, TLS_CERT, TLS_KEY]
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def test_the_previous_charts_certificate_is_served_as_it_is_until_due() -> None:
    data = previous_chart_secret()
    assert b"RSA PRIVATE KEY" in data[TLS_KEY]  # not the keeper's own kind of key
    facts = inspect(data, NAMES)
    assert facts.problem is None and not facts.signing_key and len(facts.authorities) == 1
    trusted = certificates.fingerprints(data[CA_CERT])
    now = facts.serving.not_before + 60 if facts.serving else T0
    step, why = decide(facts, trusted, now)
    assert step is Step.KEEP and "no ca.key" in why
    assert certificates.apply(step, data, NAMES, now, VALIDITY) is None, "kept: nothing is written"
    # A Secret that names another Service is not usable, with or without ca.key.
    assert decide(inspect(data, ["elsewhere.example"]), None, now)[0] is Step.ISSUE


def test_a_secret_without_ca_key_gets_a_ca_of_its_own_first_then_a_serving_certificate_under_it() -> None:
    data = keyless()
    facts = inspect(data, NAMES)
    first = certificates.fingerprints(data[CA_CERT])
    assert decide(facts, first, T0 + 1)[0] is Step.KEEP
    due = certificates.next_check(facts, T0 + 1)
    assert due is not None and T0 + 0.6 * VALIDITY < due < T0 + 0.7 * VALIDITY, "no busy loop while it is kept"
    step, _ = decide(facts, first, due)
    assert step is Step.ADD_CA
    added = certificates.apply(step, data, NAMES, due, VALIDITY)
    assert added is not None and added[CA_KEY] and added[TLS_CERT] == data[TLS_CERT] and added[TLS_KEY] == data[TLS_KEY]
    after = inspect(added, NAMES)
    assert after.signing_key and len(after.authorities) == 2 and after.serving_issuer in (first or frozenset())
    assert decide(after, first, due)[0] is Step.WAIT, "not re-issued before the new CA is published"
    both = certificates.fingerprints(added[CA_CERT])
    assert decide(after, both, due)[0] is Step.RENEW_SERVING
    renewed = certificates.apply(Step.RENEW_SERVING, added, NAMES, due, VALIDITY)
    assert renewed is not None and inspect(renewed, NAMES).serving_issuer == after.authorities[0].fingerprint
    # A ca.key that is not the newest CA's is still a problem (not a Secret without one).
    other = issued()
    assert inspect({**data, CA_KEY: other[CA_KEY]}, NAMES).problem == "ca.key is not the key of the newest CA in ca.crt"


def test_a_secret_without_ca_key_whose_serving_certificate_is_due_adds_a_ca() -> None:
    """The CA has years left but the serving certificate is due: without ca.key it cannot be
    re-issued under that CA, so a CA of the keeper's own is added first."""
    ca, ca_key = certificates._new_ca(T0, 10 * VALIDITY)
    tls_crt, tls_key = certificates._new_serving(ca, ca_key, NAMES, T0, VALIDITY)
    facts = inspect({CA_CERT: certificates._pem(ca), TLS_CERT: tls_crt, TLS_KEY: tls_key}, NAMES)
    assert facts.problem is None and not facts.signing_key
    assert decide(facts, None, T0 + 0.5 * VALIDITY)[0] is Step.KEEP
    assert decide(facts, None, T0 + 0.7 * VALIDITY)[0] is Step.ADD_CA
    assert decide(facts, None, T0 + 1.01 * VALIDITY) == (Step.ISSUE, "the serving certificate has expired")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=0.4), min_size=30, max_size=60), st.booleans())
def test_over_many_lifetimes_the_served_certificate_is_always_trusted_and_valid(gaps: list[float],
                                                                                handed_over: bool) -> None:
    """Passes at arbitrary times (never later than the keeper's own due time): after every write
    the certificate served is signed by a CA the published caBundle holds, it has not expired,
    and the bundle never holds more than two CAs. Starting from nothing, or from a certificate
    handed over without ca.key (which is never issued again from scratch)."""
    now = T0
    data: dict[str, bytes] | None = keyless() if handed_over else None
    published: frozenset[str] | None = certificates.fingerprints(data[CA_CERT]) if data else None
    steps: list[Step] = []
    for gap in gaps:
        for _ in range(5):  # one wake-up: passes until nothing is written
            facts = inspect(data, NAMES) if data is not None else None
            step, _ = decide(facts, published, now)
            new = certificates.apply(step, data or {}, NAMES, now, VALIDITY)
            if new is None:
                break
            steps.append(step)
            data = new
            if step is not Step.ISSUE:
                after = inspect(data, NAMES)
                assert after.serving_issuer in (published or frozenset()), step
        assert data is not None
        published = certificates.fingerprints(data[CA_CERT])  # the caBundle follows the Secret
        facts = inspect(data, NAMES)
        assert facts.problem is None and facts.serving is not None
        assert facts.serving.not_after > now and len(facts.authorities) <= 2
        due = certificates.next_check(facts, now)
        now = min(now + gap * VALIDITY, due if due is not None else now + gap * VALIDITY)
    assert steps.count(Step.ISSUE) == (0 if handed_over else 1), steps
    if now - T0 > 2 * VALIDITY:
        assert {Step.ADD_CA, Step.RENEW_SERVING, Step.PRUNE} <= set(steps)


def test_only_our_secret_or_one_named_in_values_is_trusted() -> None:
    settings = servingcert.CertSettings(namespace="tcr-assistant-system", secret="tcr-assistant-webhook-server-cert",
                                        webhook_configuration="v", names=NAMES, validity=VALIDITY, cert_dir=Path("/x"))
    ours = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "tcr-assistant"}}}
    helms = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm"}}}
    unlabelled: dict[str, object] = {"metadata": {}}
    trust, Trust = servingcert.trust, servingcert.Trust
    assert [trust(s, existing=False) for s in (None, ours, helms, unlabelled)] == [
        Trust.KEEP, Trust.KEEP, Trust.REFUSED, Trust.REFUSED]
    assert {trust(s, existing=True) for s in (None, ours, helms, unlabelled)} == {Trust.AS_IS}
    data = {key: b"x" for key in (CA_CERT, TLS_CERT, TLS_KEY)}
    refused = servingcert.refusal(settings, helms, data, Trust.REFUSED)
    assert refused is not None and "Secret tcr-assistant-system/tcr-assistant-webhook-server-cert" in refused
    assert "webhook.existingCertSecret=tcr-assistant-webhook-server-cert" in refused
    assert servingcert.refusal(settings, ours, data, Trust.KEEP) is None
    assert servingcert.refusal(settings, helms, data, Trust.AS_IS) is None
    assert "create it with tls.crt, tls.key and ca.crt" in (servingcert.refusal(settings, None, {}, Trust.AS_IS) or "")
    lacking = servingcert.refusal(settings, helms, {TLS_CERT: b"x", TLS_KEY: b"x"}, Trust.AS_IS)
    assert lacking is not None and "lacks ca.crt" in lacking


def test_a_secret_handed_over_is_kept_and_renewed_with_its_labels_as_they_are() -> None:
    """The chart marks the certificate Secret a previous chart version rendered (Helm keeps it
    labelled managed-by Helm); the keeper trusts the mark, and a renewal writes the data and the
    owner reference but leaves the labels (a managed-by of another value would be a conflict for
    Helm's server-side apply)."""
    settings = servingcert.CertSettings(namespace="tcr-assistant-system", secret="tcr-assistant-webhook-server-cert",
                                        webhook_configuration="v", names=NAMES, validity=VALIDITY, cert_dir=Path("/x"))
    labels = {api.LABEL_MANAGED_BY: "Helm", "app.kubernetes.io/component": "webhook"}
    annotations = {servingcert.HANDED_OVER: api.MANAGED_BY, "helm.sh/resource-policy": "keep",
                   "meta.helm.sh/release-name": "tcr-addon"}
    secret = {"metadata": {"name": settings.secret, "resourceVersion": "7", "labels": labels,
                           "annotations": annotations}}
    assert servingcert.trust(secret, existing=False) is servingcert.Trust.KEEP
    assert servingcert.refusal(settings, secret, keyless(), servingcert.Trust.KEEP) is None
    owner = {"metadata": {"name": "v", "uid": "u-1"}}
    body = servingcert.secret_body(settings, issued(), owner, secret)
    assert body["metadata"]["labels"] == labels and body["metadata"]["annotations"] == annotations
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1" and body["metadata"]["resourceVersion"] == "7"
    # Another value of the annotation, or the annotation gone (helm rollback), is not a hand-over.
    for other in ({servingcert.HANDED_OVER: "someone-else"}, {}):
        withdrawn = {"metadata": {**secret["metadata"], "annotations": other}}
        assert servingcert.trust(withdrawn, existing=False) is servingcert.Trust.REFUSED
    ours = {"metadata": {"resourceVersion": "8", "labels": {api.LABEL_MANAGED_BY: "someone"}}}
    assert servingcert.secret_body(settings, issued(), owner, ours)["metadata"]["labels"][api.LABEL_MANAGED_BY] == (
        api.MANAGED_BY), "a Secret of the keeper's own still gets its label"


def test_the_original_add_ons_certificate_names_only_what_the_api_server_dials() -> None:
    """A kubebuilder operator's certificate names <service>.<namespace>.svc and its
    .cluster.local form, not the short names we add when we issue: it is served as it is."""
    from harness import original, pki

    authority = pki.CertificateAuthority("tcr-assistant-original-ca")
    secret = original.certificate_secret(authority)
    data = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    facts = inspect(data, NAMES)
    assert facts.problem is None, facts.problem
    assert facts.serving is not None
    assert decide(facts, certificates.fingerprints(data[CA_CERT]), facts.serving.not_before + 60)[0] is Step.KEEP
    other = pki.CertificateAuthority("other").issue("x", server=True, dns_names=(NAMES[1], NAMES[3]))
    assert inspect({**data, TLS_CERT: other.cert_pem, TLS_KEY: other.key_pem}, NAMES).problem == \
        f"the serving certificate does not name {NAMES[0]}"
