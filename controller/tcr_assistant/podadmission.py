"""The Pod webhook's decision, pure: close the race between a new namespace and its first Pods.

A Pod copies its ServiceAccount's ``imagePullSecrets`` once, when it is admitted (the API
server's ServiceAccount admission plugin does it, before any webhook), and never again. A Pod
admitted before the controller linked its ServiceAccount never gets our Secret. This webhook,
called for every Pod CREATE, adds the entries the controller would have put on the
ServiceAccount, and only those, when:

* the ServiceAccount is served by an active ImagePullSecret (the same rule as the controller's:
  namespaces, selector, exclusions, opt-out annotations) and the Pod lacks the entry;
* the Pod has not opted out (the opt-out annotation on the Pod);
* the Pod names no ``imagePullSecrets`` of its own: every entry it has is one its ServiceAccount
  lists too (so it was copied from there), or it has none.

Everything else is admitted unchanged. The change is a JSON patch that appends the entries and
records them in the annotation ``tcr.tencentcloudcr.com/added-image-pull-secrets``, so ``kubectl
describe pod`` says what was added and why. The webhook is registered with ``failurePolicy:
Ignore``: when it cannot answer, Pods are admitted as before.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import admission
from .api import GROUP
from .observed import opted_out

ANNOTATION_ADDED = f"{GROUP}/added-image-pull-secrets"
PATCH_TYPE = "JSONPatch"


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What the decision needs of a Pod being created."""

    namespace: str
    service_account: str
    pull_secrets: tuple[str, ...]  # its imagePullSecrets as admitted so far
    opted_out: bool
    has_annotations: bool
    owner: str  # e.g. "ReplicaSet web-5d8f" or "" (for messages)
    dry_run: bool


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def pod_facts(request: Mapping[str, Any]) -> PodFacts | None:
    """The facts of a Pod CREATE request; None for anything else (left alone)."""
    if request.get("operation") != "CREATE" or (request.get("kind") or {}).get("kind") != "Pod":
        return None
    pod = request.get("object")
    if not isinstance(pod, Mapping):
        return None
    meta = _mapping(pod.get("metadata"))
    spec = _mapping(pod.get("spec"))
    annotations = _mapping(meta.get("annotations"))
    entries = _list(spec.get("imagePullSecrets"))
    owners = [o for o in _list(meta.get("ownerReferences")) if isinstance(o, Mapping)]
    return PodFacts(
        namespace=str(request.get("namespace") or meta.get("namespace") or ""),
        service_account=str(spec.get("serviceAccountName") or "default"),
        pull_secrets=tuple(str(e.get("name")) for e in entries if isinstance(e, Mapping) and e.get("name")),
        opted_out=opted_out(annotations),
        has_annotations=bool(annotations),
        owner=f"{owners[0].get('kind')} {owners[0].get('name')}" if owners else "",
        dry_run=bool(request.get("dryRun")),
    )


def entries_to_add(facts: PodFacts, wanted: Sequence[str], account_entries: Sequence[str] | None) -> list[str]:
    """Our entries the Pod should get, or [] to leave it alone.

    ``wanted``: our Secret names its ServiceAccount is served with; ``account_entries``: what the
    ServiceAccount lists now (None when unknown)."""
    if facts.opted_out or not wanted:
        return []
    if facts.pull_secrets and (account_entries is None or not set(facts.pull_secrets) <= set(account_entries)):
        return []  # the Pod names its own imagePullSecrets
    return [name for name in wanted if name not in facts.pull_secrets]


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def patch_for(facts: PodFacts, add: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON patch that appends ``add`` and records them in the annotation."""
    entries = [{"name": name} for name in add]
    if facts.pull_secrets:
        ops: list[dict[str, Any]] = [{"op": "add", "path": "/spec/imagePullSecrets/-", "value": e} for e in entries]
    else:
        ops = [{"op": "add", "path": "/spec/imagePullSecrets", "value": entries}]
    note = ",".join(add)
    if facts.has_annotations:
        ops.append({"op": "add", "path": f"/metadata/annotations/{_pointer(ANNOTATION_ADDED)}", "value": note})
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION_ADDED: note}})
    return ops


def review_response(uid: str, patch: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Allowed, with ``patch`` when there is one (a Pod is never refused)."""
    review = admission.review_response(uid, True)
    if patch:
        review["response"]["patchType"] = PATCH_TYPE
        review["response"]["patch"] = base64.b64encode(json.dumps(list(patch), separators=(",", ":")).encode()).decode()
    return review


def why(facts: PodFacts, add: Sequence[str]) -> str:
    """The Event message (on the ServiceAccount: a Pod being created has no name yet when generated)."""
    who = f"a Pod of {facts.owner}" if facts.owner else "a Pod"
    return (f"added {', '.join(add)} to {who} created before ServiceAccount {facts.service_account} was linked: "
            "a Pod copies its ServiceAccount's imagePullSecrets only when it is admitted")
