"""What the keeper of the webhook's serving certificate decides, without I/O: which Secret it may
trust, why it refuses one (names only, never a value), the Secret it writes, the caBundles it
reads. The certificate itself is decided in a helper process (`certificates`)."""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcr_assistant.spec import api
from tcr_assistant.spec.api import CA_CERT, TLS_CERT, TLS_KEY, WEBHOOK_CERT_KEYS

COMPONENT = "webhook"
HANDED_OVER = f"{api.GROUP}/handed-over-to"  # annotation: a Secret given to the keeper (value MANAGED_BY)


@dataclass(frozen=True)
class CertSettings:
    namespace: str  # of the Secret (the controller's own namespace)
    secret: str
    webhook_configuration: str  # validating: the Secret's owner
    names: Sequence[str]  # DNS names in the serving certificate; the first is its subject
    validity: float  # seconds, of each CA and serving certificate
    cert_dir: Path
    mutating_configuration: str | None = None  # the Pod webhook's: its caBundle is kept too
    existing: bool = False  # the Secret is the user's (named in values): served and published, never written


def service_names(service: str, namespace: str) -> list[str]:
    """The DNS names under which the API server reaches a webhook Service."""
    return [f"{service}.{namespace}.svc", service, f"{service}.{namespace}", f"{service}.{namespace}.svc.cluster.local"]


def decode(secret: Mapping[str, Any] | None) -> dict[str, bytes]:
    data = (secret or {}).get("data") or {}
    return {key: base64.b64decode(value) for key, value in data.items() if key in WEBHOOK_CERT_KEYS}


def handed_over(secret: Mapping[str, Any] | None) -> bool:
    annotations = ((secret or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(HANDED_OVER) == api.MANAGED_BY


def is_ours(secret: Mapping[str, Any] | None) -> bool:
    labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
    return secret is None or labels.get(api.LABEL_MANAGED_BY) == api.MANAGED_BY or handed_over(secret)


class Trust(enum.Enum):
    """What the keeper may do with the certificate Secret."""

    KEEP = "keep"  # ours, or none yet: issue, renew, publish, serve
    AS_IS = "as-is"  # the user's, named in values: publish and serve, never write
    REFUSED = "refused"  # someone else's, not named: nothing (not served, not published, not written)


def trust(secret: Mapping[str, Any] | None, existing: bool) -> Trust:
    if existing:
        return Trust.AS_IS
    return Trust.KEEP if is_ours(secret) else Trust.REFUSED


def refusal(settings: CertSettings, secret: Mapping[str, Any] | None, data: Mapping[str, bytes],
            trusted: Trust) -> str | None:
    """Why the Secret's certificate is not published, and what to do; None when it may be. Names only:
    never a value of the Secret."""
    where = f"Secret {settings.namespace}/{settings.secret}"
    if trusted is Trust.REFUSED:
        return (f"{where} was not created by tcr-assistant (no label {api.LABEL_MANAGED_BY}={api.MANAGED_BY}): "
                "it is not trusted, so it is neither served nor published as the caBundle, and is left as it is. "
                f"To use it, set the chart value webhook.existingCertSecret={settings.secret} "
                "(flag --webhook-cert-existing); to let tcr-assistant issue its own, delete it "
                f"(nor is it handed over: no annotation {HANDED_OVER}={api.MANAGED_BY})")
    if trusted is Trust.AS_IS:
        if secret is None:
            return f"waiting for {where} (webhook.existingCertSecret): create it with tls.crt, tls.key and ca.crt"
        missing = [key for key in (TLS_CERT, TLS_KEY, CA_CERT) if not data.get(key)]
        if missing:
            return (f"{where} (webhook.existingCertSecret) lacks {', '.join(missing)}: add them "
                    "(ca.crt is the CA that signed tls.crt; it is published as the caBundle)")
    return None


def secret_body(settings: CertSettings, data: Mapping[str, bytes], owner: Mapping[str, Any],
                current: Mapping[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": settings.secret,
        "namespace": settings.namespace,
        "labels": {api.LABEL_MANAGED_BY: api.MANAGED_BY, "app.kubernetes.io/component": COMPONENT},
        "ownerReferences": [{"apiVersion": "admissionregistration.k8s.io/v1",
                             "kind": "ValidatingWebhookConfiguration",
                             "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}],
    }
    if current is not None:
        old = current["metadata"]
        meta["resourceVersion"] = old["resourceVersion"]  # optimistic concurrency between replicas
        # A Secret handed over keeps its labels: the chart that renders it sets managed-by Helm,
        # and a field of another value would be a conflict for Helm's server-side apply.
        meta["labels"] = (dict(old.get("labels") or {}) if handed_over(current)
                          else {**(old.get("labels") or {}), **meta["labels"]})
        if old.get("annotations"):
            meta["annotations"] = old["annotations"]
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": meta,
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()}}


def ca_bundles(configuration: Mapping[str, Any]) -> dict[str, bytes]:
    """Webhook name -> its caBundle (decoded; empty when unset)."""
    return {w["name"]: base64.b64decode((w.get("clientConfig") or {}).get("caBundle") or "")
            for w in configuration.get("webhooks") or []}
