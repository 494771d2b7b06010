"""The ImagePullSecret webhook's view of the add-on's credential Secrets: `passwordSecretRef` may
name only a Secret of the add-on's namespace marked as a credential source.

The controller's cache holds the marked Secrets only; a miss is settled by reading the Secret's
metadata (a new Secret may not be cached yet), never its data.
"""

from __future__ import annotations

from typing import Any

from tcr_assistant.admission import review as admission
from tcr_assistant.admission.review import CredentialSource, CredentialSources
from tcr_assistant.k8s.client import SECRETS, Kube, KubeError
from tcr_assistant.reconciler.state import ControllerState
from tcr_assistant.spec import api

READ_TIMEOUT = 2.0  # the webhook's check of an uncached Secret, within its own timeout
# The Secret's metadata alone: checking a mark needs no data (so the webhook never holds a key it may not use).
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class CredentialLookup:
    def __init__(self, kube: Kube, state: ControllerState, namespace: str) -> None:
        self.kube = kube
        self.state = state
        self.namespace = namespace

    def review(self, body: bytes, max_body_bytes: int = admission.MAX_BODY_BYTES) -> tuple[int, Any]:
        """The ImagePullSecret webhook's answer, with passwordSecretRef checked against this add-on's Secrets."""
        return admission.handle(body, max_body_bytes, CredentialSources(self.namespace, self.source))

    def source(self, name: str) -> CredentialSource:
        """How Secret ``name`` of the add-on's namespace is marked."""
        with self.state.lock:  # (a minted token's key has a '/': no valid name reaches it)
            if name in self.state.local_secrets:
                return CredentialSource.MARKED
        try:
            meta = self.kube.request("GET", SECRETS.path(self.namespace, name), timeout=READ_TIMEOUT,
                                     accept=PARTIAL_METADATA)
        except KubeError as exc:
            return CredentialSource.MISSING if exc.not_found else CredentialSource.UNKNOWN
        except Exception:  # a timeout or a broken connection: the webhook warns, the controller still checks
            return CredentialSource.UNKNOWN
        labels = (meta.get("metadata") or {}).get("labels") or {}
        marked = labels.get(api.LABEL_CREDENTIAL_SOURCE) == "true"
        return CredentialSource.MARKED if marked else CredentialSource.UNMARKED
