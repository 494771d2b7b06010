"""Keeps the webhook's serving certificate: the Secret, the caBundle, and the files served.

Every replica runs one keeper (not only the leader: every replica serves the webhook). A pass
reads the Secret and the ValidatingWebhookConfiguration, lets ``certificates.decide`` pick one
step (in a short-lived ``python -m tcr_assistant.servingcert.certificates``, so this process never loads
``cryptography``; an unchanged Secret and caBundle reuse the last answer until it is due),
writes the Secret with optimistic concurrency (a replica that loses the race reads the
winner's certificate and uses it), publishes the Secret's ``ca.crt`` as the caBundle of every
webhook in the configuration, and writes ``tls.crt``/``tls.key`` into the directory the webhook
server reloads from. Passes run on start, on any change to either object (two watches, each on
one object by name, which RBAC can limit by ``resourceNames``), and when a certificate comes due.

The Secret is created with an owner reference to the webhook configuration, so deleting the
configuration (``helm uninstall``, ``webhook.enabled=false``) removes it.

Only these certificates are trusted (published as the caBundle, so the API server sends every
matched request to whoever holds the key): one this keeper wrote (our ``managed-by`` label), one
handed over to it (annotation ``tcr.tencentcloudcr.com/handed-over-to: tcr-assistant``: the
chart puts it on the Secret a previous chart version rendered, which Helm keeps labelled
``managed-by: Helm``; kept as it is, without ``ca.key``, until it is due, then renewed in place
with its labels left as they are), or one the values name as the user's
(``webhook.existingCertSecret``, flag ``--webhook-cert-existing``: served and published as it
is, never written). A Secret of our name with neither mark is someone else's: it is neither
served nor published, never written or deleted, and the keeper stays not ready with a log line
naming the Secret and the value to set, unless the certificate it already serves is still the
one the API server trusts (every caBundle unchanged since it published it): then it keeps
serving it and stays ready. That is the hand-back on ``helm rollback`` to a chart that
rendered the certificate: the Pods being replaced answer until they stop.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcr_assistant.k8s.client import SECRETS, Kube, KubeError, Resource
from tcr_assistant.k8s.reflector import Reflector
from tcr_assistant.servingcert.decision import CertSettings, Trust, ca_bundles, decode, refusal, secret_body, trust
from tcr_assistant.spec.api import CA_CERT, TLS_CERT, TLS_KEY, WEBHOOK_CERT_KEYS

log = logging.getLogger(__name__)

WEBHOOK_CONFIGURATIONS = Resource("/apis/admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", False)
MUTATING_CONFIGURATIONS = Resource("/apis/admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", False)
RETRY_DELAY = 5.0  # seconds after a failed pass (API server unreachable, forbidden, ...)
MAX_WRITES_IN_A_ROW = 4  # renewal takes at most three writes (add CA, renew, prune)
HELPER_TIMEOUT = 60.0

Evaluate = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class CertificateHelperError(RuntimeError):
    pass


def run_certificate_helper(request: Mapping[str, Any]) -> Mapping[str, Any]:
    """``certificates.evaluate`` in a process of its own: its ~10 MiB of ``cryptography`` go when it exits."""
    proc = subprocess.run([sys.executable, "-m", "tcr_assistant.servingcert.certificates"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=False)
    if proc.returncode != 0:
        # Its stderr is a traceback: code lines and messages, never the request's values.
        raise CertificateHelperError(f"the certificate helper exited with {proc.returncode}: {proc.stderr[-800:]}")
    answer: Mapping[str, Any] = json.loads(proc.stdout)
    return answer


def configurations(settings: CertSettings) -> list[tuple[Resource, str]]:
    """The webhook configurations whose caBundle the keeper keeps: the validating one, and the Pod webhook's."""
    found = [(WEBHOOK_CONFIGURATIONS, settings.webhook_configuration)]
    if settings.mutating_configuration:
        found.append((MUTATING_CONFIGURATIONS, settings.mutating_configuration))
    return found


@dataclass
class _Published:
    """What the last pass achieved (read by /readyz)."""

    files: bytes | None = None  # tls.crt written to the directory
    in_step: bool = False  # the configuration's caBundle equals the Secret's ca.crt
    bundle: bytes | None = None  # the ca.crt that goes with the files served (what was published)


def write_atomically(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ServingCertKeeper:
    def __init__(self, kube: Kube, settings: CertSettings, stop: threading.Event, *,
                 watch_timeout: int = 300, read_timeout: float = 330.0,
                 evaluate: Evaluate = run_certificate_helper) -> None:
        self.kube = kube
        self.settings = settings
        self.evaluate = evaluate
        self._answer: tuple[Any, Mapping[str, Any]] | None = None
        self.stop_event = stop
        self.wake = threading.Event()
        self.published = _Published()
        self._waiting_logged = False
        self._refusal_logged: str | None = None
        self._writes_in_a_row = 0
        self._thread: threading.Thread | None = None

        def trigger(_kind: str, _old: Any, _new: Any) -> None:
            self.wake.set()

        common: dict[str, Any] = {"watch_timeout": watch_timeout, "read_timeout": read_timeout, "stop": stop}
        self.reflectors = [
            Reflector(kube, SECRETS, _slim, trigger, name="webhook-cert-secret",
                      namespace=settings.namespace, field_selector=f"metadata.name={settings.secret}", **common),
            *(Reflector(kube, resource, _slim, trigger, name=resource.plural, field_selector=f"metadata.name={name}",
                        **common) for resource, name in configurations(settings)),
        ]

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.settings.cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for reflector in self.reflectors:
            reflector.start()
        self._thread = threading.Thread(target=self._run, name="webhook-cert", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.wake.set()
        for reflector in self.reflectors:
            reflector.interrupt()
        if self._thread is not None:
            self._thread.join(5.0)

    def ready(self) -> bool:
        """The webhook serves a certificate that the API server trusts."""
        return self.published.files is not None and self.published.in_step

    def _run(self) -> None:
        timeout: float | None = None
        while not self.stop_event.is_set():
            self.wake.wait(timeout)
            self.wake.clear()
            if self.stop_event.is_set():
                return
            try:
                timeout = self.sync(time.time())
            except KubeError as exc:
                log.warning("webhook certificate: %s; retrying in %gs", exc, RETRY_DELAY)
                self.published.in_step = False
                timeout = RETRY_DELAY
            except Exception:
                log.exception("webhook certificate: pass failed; retrying in %gs", RETRY_DELAY)
                self.published.in_step = False
                timeout = RETRY_DELAY

    # -- one pass -----------------------------------------------------------------------------

    def _read(self, fresh: bool) -> tuple[list[Mapping[str, Any] | None], Mapping[str, Any] | None]:
        """(each webhook configuration, Secret): from the watches' caches, or ``fresh`` from the API server."""
        settings = self.settings
        if not fresh:
            stores = [list(r.store.values()) for r in self.reflectors]
            return [s[0] if s else None for s in stores[1:]], (stores[0][0] if stores[0] else None)
        found: list[Mapping[str, Any] | None] = [
            self.kube.get(resource.path(None, name)) for resource, name in configurations(settings)]
        return found, self.kube.get_secret(settings.namespace, settings.secret)

    def sync(self, now: float, fresh: bool = False) -> float | None:
        """One pass; returns the seconds until the next one is due on its own (None: on events only).

        A pass that only confirms works from the watches' caches (a restart reads nothing); one
        that would write starts over from a fresh read, so no write rests on a stale cache."""
        if not fresh and not all(r.synced.is_set() for r in self.reflectors):
            return 0.2
        settings = self.settings
        configurations, secret = self._read(fresh)
        configuration = configurations[0]
        present = [c for c in configurations if c is not None]
        if configuration is None:
            if not self._waiting_logged:
                log.info("webhook certificate: waiting for ValidatingWebhookConfiguration %s",
                         settings.webhook_configuration)
                self._waiting_logged = True
            self.published.in_step = False
            return None
        self._waiting_logged = False
        data = decode(secret)
        due: float | None = None
        trusted = trust(secret, settings.existing)
        problem = refusal(settings, secret, data, trusted)
        if problem is not None:
            if problem != self._refusal_logged:
                log.warning("webhook certificate: %s", problem)
                self._refusal_logged = problem
            # Nothing of the Secret is served or published. What is already served stays, and so
            # does readiness while the API server still trusts it (every caBundle as published).
            self.published.in_step = self._still_trusted(present)
            self._writes_in_a_row = 0
            return None
        self._refusal_logged = None
        if trusted is Trust.KEEP:
            answer = self._decision(secret, present, now)
            if answer["data"] is not None:
                if not fresh:
                    return self.sync(now, fresh=True)
                new = {key: base64.b64decode(value) for key, value in answer["data"].items()}
                self._write(secret, new, configuration, str(answer["step"]), str(answer["why"]))
                # Read back what was written (ours, or another replica's that won) in a fresh
                # pass; a Secret that keeps asking for writes is a fault, so slow down then.
                self._writes_in_a_row += 1
                return 0.0 if self._writes_in_a_row < MAX_WRITES_IN_A_ROW else RETRY_DELAY
            if answer["step"] == "wait":
                log.info("webhook certificate: %s", answer["why"])
            due = answer["next_check"]
        bundle = data.get(CA_CERT, b"")
        stale = [(config, [name for name, current in ca_bundles(config).items() if current != bundle])
                 for config in present]
        stale = [(config, names) for config, names in stale if names]
        if stale and bundle:
            if not fresh:
                return self.sync(now, fresh=True)
            for config, names in stale:
                self._publish(config, names, bundle)
        self.published.in_step = bool(bundle)
        self._serve(data)
        if self.published.files is not None and self.published.files == data.get(TLS_CERT):
            self.published.bundle = bundle
        self._writes_in_a_row = 0
        return None if due is None else max(0.0, due - now) + 1.0

    def _still_trusted(self, configurations: Sequence[Mapping[str, Any]]) -> bool:
        """The files served were published, and every webhook's caBundle is still what was published."""
        bundle = self.published.bundle
        if self.published.files is None or not bundle or not configurations:
            return False
        return all(current == bundle for config in configurations for current in ca_bundles(config).values())

    def _decision(self, secret: Mapping[str, Any] | None, configurations: Sequence[Mapping[str, Any]],
                  now: float) -> Mapping[str, Any]:
        """The helper's answer, or the last one while no object changed and it is not due. A renewal
        waits until every configuration's caBundle trusts the new CA."""
        webhooks = [w for c in configurations for w in c.get("webhooks") or []]
        bundles = sorted((w.get("clientConfig") or {}).get("caBundle") or "" for w in webhooks)
        version = None if secret is None else secret["metadata"].get("resourceVersion")
        key = (version, tuple(bundles))
        if self._answer is not None and self._answer[0] == key:
            last = self._answer[1]
            if last["step"] == "keep" and (last["next_check"] is None or now < last["next_check"]):
                return last
        data = None if secret is None else {k: v for k, v in (secret.get("data") or {}).items()
                                            if k in WEBHOOK_CERT_KEYS}
        request = {"data": data, "bundles": [b for b in bundles if b], "names": list(self.settings.names),
                   "now": now, "validity": self.settings.validity}
        answer = self.evaluate(request)
        self._answer = (key, answer)
        return answer

    def _write(self, secret: Mapping[str, Any] | None, data: Mapping[str, bytes], configuration: Mapping[str, Any],
               step: str, why: str) -> None:
        body = secret_body(self.settings, data, configuration, secret)
        path = SECRETS.path(self.settings.namespace, None if secret is None else self.settings.secret)
        try:
            self.kube.request("POST" if secret is None else "PUT", path, body=body)
        except KubeError as exc:
            if exc.conflict or exc.already_exists:
                log.info("webhook certificate: another replica wrote the Secret first; using its certificate")
                return
            raise
        log.info("webhook certificate: %s in Secret %s/%s (%s)", step, self.settings.namespace,
                 self.settings.secret, why)

    def _publish(self, configuration: Mapping[str, Any], stale: Sequence[str], bundle: bytes) -> None:
        encoded = base64.b64encode(bundle).decode()
        patch = {"webhooks": [{"name": name, "clientConfig": {"caBundle": encoded}} for name in stale]}
        name = configuration["metadata"]["name"]
        resource = next(r for r, n in configurations(self.settings) if n == name)
        self.kube.request("PATCH", resource.path(None, name), body=patch,
                          content_type="application/strategic-merge-patch+json")
        log.info("webhook certificate: caBundle of %s set for %s", name, ", ".join(stale))

    def _serve(self, data: Mapping[str, bytes]) -> None:
        cert, key = data.get(TLS_CERT), data.get(TLS_KEY)
        if not cert or not key or cert == self.published.files:
            return
        directory = self.settings.cert_dir
        # Key first: a reader that sees the new key with the old certificate fails to load the
        # pair and keeps its previous context, then loads both on its next connection.
        write_atomically(directory / "tls.key", key)
        write_atomically(directory / "tls.crt", cert)
        self.published.files = cert


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a pass reads of either object: no managedFields, no status."""
    meta = obj.get("metadata") or {}
    kept = {key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion", "labels", "annotations")
            if key in meta}
    return {**{key: obj[key] for key in ("type", "data", "webhooks") if key in obj}, "metadata": kept}
