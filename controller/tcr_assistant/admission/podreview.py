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
  lists too (so it was copied from there), or it has none;
* the Pod is not a mirror Pod (the kubelet's copy of a static Pod, annotation
  ``kubernetes.io/config.mirror``) and the request does not come from a node (user
  ``system:node:…`` or group ``system:nodes``): an entry there would let the node read the
  Secret, and the API server refuses mirror Pods that name Secrets;
* the Pod's annotations stay within the API server's limit (256 KiB, keys and values together)
  with our annotation added; else the Pod is admitted unchanged, with a warning saying why.

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

from tcr_assistant.admission import review as admission
from tcr_assistant.reconciler.observed import ServiceAccountInfo, entries_digest, opted_out
from tcr_assistant.spec.api import GROUP

ANNOTATION_ADDED = f"{GROUP}/added-image-pull-secrets"
PATCH_TYPE = "JSONPatch"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# k8s.io/apimachinery validation: TotalAnnotationSizeLimitB, the bytes of every key and value.
ANNOTATIONS_LIMIT_BYTES = 256 * 1024
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"


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
    mirror: bool = False  # a static Pod's mirror
    by_node: bool = False  # requested by a node (its kubelet)
    other_annotation_bytes: int = 0  # keys and values, our annotation not counted


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
    user = _mapping(request.get("userInfo"))
    groups = [str(g) for g in _list(user.get("groups"))]
    return PodFacts(
        namespace=str(request.get("namespace") or meta.get("namespace") or ""),
        service_account=str(spec.get("serviceAccountName") or "default"),
        pull_secrets=tuple(str(e.get("name")) for e in entries if isinstance(e, Mapping) and e.get("name")),
        opted_out=opted_out(annotations),
        has_annotations=bool(annotations),
        owner=f"{owners[0].get('kind')} {owners[0].get('name')}" if owners else "",
        dry_run=bool(request.get("dryRun")),
        mirror=MIRROR_ANNOTATION in annotations,
        by_node=str(user.get("username") or "").startswith(NODE_USER_PREFIX) or NODES_GROUP in groups,
        other_annotation_bytes=sum(_bytes(k) + _bytes(v) for k, v in annotations.items() if k != ANNOTATION_ADDED),
    )


def _bytes(value: Any) -> int:
    return len(str(value).encode())


def not_for_us(facts: PodFacts) -> str | None:
    """Why a Pod is never changed whatever its ServiceAccount (None: it may be)."""
    if facts.mirror:
        return "a mirror Pod (the kubelet's copy of a static Pod)"
    if facts.by_node:
        return "created by a node"
    return None


def copied_from(pull_secrets: Sequence[str], account: ServiceAccountInfo | None) -> bool:
    """Were a Pod's entries copied from its ServiceAccount (so it names none of its own)? A Pod
    with none: yes. With some and the account unknown: no. A long list is kept as a digest only:
    the Pod's must then be the same list (the API server copies it whole)."""
    if not pull_secrets:
        return True
    if account is None:
        return False
    if account.all_kept:
        return set(pull_secrets) <= {e for e in account.pull_secrets if e}
    return entries_digest(list(pull_secrets)) == account.entries_digest


def entries_to_add(facts: PodFacts, wanted: Sequence[str], account: ServiceAccountInfo | None) -> list[str]:
    """Our entries the Pod should get, or [] to leave it alone.

    ``wanted``: our Secret names its ServiceAccount is served with; ``account``: the
    ServiceAccount as the controller knows it (None when unknown)."""
    if facts.opted_out or not wanted or not_for_us(facts) is not None:
        return []
    if not copied_from(facts.pull_secrets, account):
        return []  # the Pod names its own imagePullSecrets
    return [name for name in wanted if name not in facts.pull_secrets]


def annotation_bytes_after(facts: PodFacts, add: Sequence[str]) -> int:
    """The size the API server checks, with our annotation recording ``add``."""
    return facts.other_annotation_bytes + _bytes(ANNOTATION_ADDED) + _bytes(",".join(add))


def too_large_warning(facts: PodFacts, add: Sequence[str]) -> str | None:
    """The warning for a Pod whose annotations would exceed the limit with ours (None: they fit)."""
    size = annotation_bytes_after(facts, add)
    if size <= ANNOTATIONS_LIMIT_BYTES:
        return None
    return (f"tcr-assistant: imagePullSecrets {', '.join(add)} not added: the Pod's annotations would be "
            f"{size} bytes with {ANNOTATION_ADDED}, over the API server's limit of {ANNOTATIONS_LIMIT_BYTES}")[:250]


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


def review_response(uid: str, patch: Sequence[Mapping[str, Any]] = (), warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Allowed, with ``patch`` when there is one (a Pod is never refused), and ``warnings`` for the user."""
    review = admission.review_response(uid, True, warnings=list(warnings) or None)
    if patch:
        review["response"]["patchType"] = PATCH_TYPE
        review["response"]["patch"] = base64.b64encode(json.dumps(list(patch), separators=(",", ":")).encode()).decode()
    return review


def why(facts: PodFacts, add: Sequence[str]) -> str:
    """The Event message (on the ServiceAccount: a Pod being created has no name yet when generated)."""
    who = f"a Pod of {facts.owner}" if facts.owner else "a Pod"
    return (f"added {', '.join(add)} to {who} created before ServiceAccount {facts.service_account} was linked: "
            "a Pod copies its ServiceAccount's imagePullSecrets only when it is admitted")
