"""What `scripts/migrate` will do: a pure function of what it found (no I/O).

The original TKE add-on and this chart use the same object names. The hand-over has two phases,
decided from the cluster each time, so every run is idempotent:

* prepare (no Helm release yet): every object the chart renders that already exists is handed to
  the release (Helm's ownership label and annotations, and a server-side apply as Helm's field
  manager, so that Helm 4's own apply meets no conflict); the CRD also gets
  `helm.sh/resource-policy: keep`. Where the chart names the webhook Service's port anew, a
  temporary EndpointSlice serves the new name until the endpointslice controller publishes it
  (`bridge_slices`): kube-proxy refuses connections to a Service port no slice names. Objects
  whose immutable fields differ from the chart's (the workloads' selectors) are retired instead:
  the old controller's Deployment is deleted with `propagationPolicy: Orphan`, so its Pods keep
  serving the webhook (they get the chart's Service selector labels) and keep distributing, while
  the leader Lease of the chart's controller is held for them: the new controller serves its
  webhooks at once but writes nothing. The old hosts-updater DaemonSet is deleted; the lines it
  wrote stay (the new updater never writes a second answer for a name). The webhook's certificate
  Secret is marked for the new controller, which serves it as it is, so the API server's trust
  never changes.
* finish (the release exists and its controller is Ready): the old controller's Pods are
  stopped, then the Lease is released and the new controller takes over.

Distributed Secrets (`tcr.ips*`) and ServiceAccount links are never touched: the new controller
adopts a Secret of its name in place (same UID). ImagePullSecret objects named in the values
become the chart's; the others stay the user's own and are served as before.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from values_wizard.from_cluster import helm_owner

GROUP = "tcr.tencentcloudcr.com"
CRD_NAME = f"imagepullsecrets.{GROUP}"
LEASE_NAME = "tcr-assistant-leader"
CERT_SECRET = "tcr-assistant-webhook-server-cert"
WEBHOOK_CONFIGURATION = "tcr-assistant-validating-webhook-configuration"
WEBHOOK_SERVICE = "tcr-assistant-webhook-service"
CONTROLLER_DEPLOYMENT = "tcr-assistant-controller-manager"
HOSTS_DAEMONSET = "hosts-updater"

HELM_MANAGED = ("app.kubernetes.io/managed-by", "Helm")
HELM_FIELD_MANAGER = "helm"  # the field manager Helm 3 and 4 write with
RESOURCE_POLICY = "helm.sh/resource-policy"
CONTROLLER_TRUST = ("app.kubernetes.io/managed-by", "tcr-assistant")
IPS_LABEL = f"{GROUP}/imagepullsecret"  # with CONTROLLER_TRUST: the controller's labels on a distributed Secret
RETIRED = f"{GROUP}/retired-by-migration"  # on the old controller's ReplicaSets, once orphaned
LEASE_HOLDER = "tcr-addon-migrate"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # an EndpointSlice's Service
SLICE_MANAGER_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"  # the slices Kubernetes derives from the selector
BRIDGE_MANAGER = "tcr-addon-migrate"  # the temporary slices of a port rename
LEASE_SECONDS = 365 * 86400  # held until `--apply` finishes; a Lease has no "forever"

# The original add-on's objects (its published object list, plus the ServiceAccount a
# kubebuilder operator of its name runs under); namespaced ones live in the release namespace.
ORIGINAL_OBJECTS: tuple[tuple[str, str, str, bool], ...] = (
    ("v1", "ServiceAccount", CONTROLLER_DEPLOYMENT, True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME, False),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "tcr-assistant-manager-role", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "tcr-assistant-manager-rolebinding", False),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", WEBHOOK_CONFIGURATION, False),
    ("rbac.authorization.k8s.io/v1", "Role", "tcr-assistant-leader-election-role", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "tcr-assistant-leader-election-rolebinding", True),
    ("v1", "Secret", CERT_SECRET, True),
    ("v1", "Service", WEBHOOK_SERVICE, True),
    ("apps/v1", "Deployment", CONTROLLER_DEPLOYMENT, True),
    ("v1", "ConfigMap", "updater-config", True),
    ("apps/v1", "DaemonSet", HOSTS_DAEMONSET, True),
)


def original_refs(namespace: str) -> frozenset[Ref]:
    return frozenset(Ref(api, kind, name, namespace if namespaced else None)
                     for api, kind, name, namespaced in ORIGINAL_OBJECTS)


WORKLOADS = frozenset({"Deployment", "DaemonSet"})
BINDINGS = frozenset({"ClusterRoleBinding", "RoleBinding"})


@dataclass(frozen=True, order=True)
class Ref:
    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        where = f" -n {self.namespace}" if self.namespace else ""
        return f"{self.kind}/{self.name}{where}"


@dataclass(frozen=True)
class Rendered:
    """One object of `helm template` with the user's values."""

    ref: Ref
    selector: Mapping[str, str] | None = None  # workloads: spec.selector.matchLabels; Service: spec.selector
    role_ref: Mapping[str, str] | None = None  # bindings
    webhooks: tuple[str, ...] = ()  # webhook configurations: the entries' names
    body: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the whole document


@dataclass(frozen=True)
class Live:
    """What the cluster holds under a name the chart or the original uses."""

    ref: Ref
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    selector: Mapping[str, str] | None = None
    role_ref: Mapping[str, str] | None = None
    crd_problem: str | None = None  # the CRD is not the one this chart serves (why)
    deleting: bool = False
    webhooks: tuple[str, ...] = ()
    body: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the whole object

    def helm_owner(self) -> tuple[str, str] | None:
        return helm_owner({"annotations": self.annotations})


@dataclass(frozen=True)
class OldPod:
    """A Pod of the original controller (of its Deployment, or of a ReplicaSet we retired)."""

    name: str
    labels: Mapping[str, str]
    port_names: frozenset[str]
    ready: bool


@dataclass(frozen=True)
class Inventory:
    release: str
    namespace: str
    rendered: tuple[Rendered, ...]
    live: Mapping[Ref, Live]
    release_exists: bool
    namespace_terminating: bool = False
    old_replicasets: tuple[str, ...] = ()  # of the original Deployment, or retired earlier
    old_pods: tuple[OldPod, ...] = ()
    lease_holder: str | None = None  # None: no Lease, or its holder has let it go
    lease_live: bool = False  # its holder renewed it within its duration
    new_controller_ready: int = 0  # Ready replicas of the release's own Deployment
    image_pull_secrets: tuple[str, ...] = ()
    distributed_secrets: int = 0
    distributed_wrong_type: tuple[str, ...] = ()  # "ns/name" of tcr.ips* Secrets of another type
    distributed_unmarked: tuple[str, ...] = ()  # "ns/name" of tcr.ips* Secrets without the controller's label
    links: int = 0
    webhook_target_port: str | None = None  # the rendered Service's targetPort name


class Do(enum.Enum):
    HOLD_LEASE = "hold the new controller's leader Lease"
    ADOPT = "hand to the Helm release"
    TRUST_CERTIFICATE = "mark for the new controller (served as it is)"
    ROUTE_OLD_PODS = "label the old controller's Pods for the chart's webhook Service"
    RETIRE_DEPLOYMENT = "delete with propagationPolicy Orphan (its Pods keep running)"
    RETIRE_DAEMONSET = "delete (its hosts lines stay)"
    STOP_OLD_CONTROLLER = "delete the old controller's ReplicaSets and wait for its Pods to stop"
    MARK_DISTRIBUTED_SECRETS = ("label the original's tcr.ips* Secrets as the controller's, so that it may update "
                                "them in place (same UID)")
    RELEASE_LEASE = "release the leader Lease: the new controller takes over"
    ADOPT_IMAGE_PULL_SECRET = ("hand to the Helm release as the values render it (its password moves to the "
                               "chart's credentials Secret; the distributed Secrets do not change)")


ORDER = (Do.HOLD_LEASE, Do.ROUTE_OLD_PODS, Do.TRUST_CERTIFICATE, Do.ADOPT, Do.RETIRE_DEPLOYMENT,
         Do.RETIRE_DAEMONSET, Do.STOP_OLD_CONTROLLER, Do.MARK_DISTRIBUTED_SECRETS, Do.RELEASE_LEASE,
         Do.ADOPT_IMAGE_PULL_SECRET)


@dataclass(frozen=True)
class Action:
    do: Do
    ref: Ref | None = None
    detail: str = ""

    def describe(self) -> str:
        target = f" {self.ref}" if self.ref else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.do.value}:{target}{detail}"


class Phase(enum.Enum):
    NOTHING = "nothing to migrate: no object of the original add-on exists"
    PREPARE = "prepare: hand the original's objects to the Helm release"
    INSTALL = "ready: run `helm install` (the objects are the release's now); then run --apply again"
    WAITING = "waiting: the release exists but its controller is not Ready yet; run --apply again"
    FINISH = "finish: stop the old controller, then let the new one lead"
    DONE = "done: the release's controller is in charge"
    ADOPT_IMAGE_PULL_SECRETS = ("done; the ImagePullSecrets named in the values can be handed to the chart: then "
                                "`helm upgrade` with those values")
    REFUSED = "refused"


@dataclass(frozen=True)
class Plan:
    phase: Phase
    actions: tuple[Action, ...] = ()
    refusals: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    objects: tuple[tuple[str, str, str], ...] = ()  # (object, what is there, what happens)


def _owned_by_us(live: Live, release: str, namespace: str) -> bool:
    return live.helm_owner() == (release, namespace) and live.labels.get(HELM_MANAGED[0]) == HELM_MANAGED[1]


def _refusals(inv: Inventory) -> list[str]:
    out: list[str] = []
    if inv.namespace_terminating:
        out.append(f"namespace {inv.namespace} is being deleted: wait until it is gone, then `helm install`")
    for live in inv.live.values():
        owner = live.helm_owner()
        if owner is not None and owner != (inv.release, inv.namespace):
            out.append(f"{live.ref} belongs to Helm release {owner[0]!r} in namespace {owner[1]!r}: this tool hands "
                       f"over an install made from manifests; uninstall or rename that release first "
                       f"(with the CRD kept: `kubectl annotate crd {CRD_NAME} {RESOURCE_POLICY}=keep`)")
        if live.crd_problem:
            out.append(f"{live.ref}: {live.crd_problem}; this chart serves tcr.tencentcloudcr.com/v1 "
                       f"ImagePullSecret, cluster-scoped")
        if live.deleting:
            out.append(f"{live.ref} is being deleted: wait until it is gone, then run again")
    if inv.lease_live and inv.lease_holder not in (None, LEASE_HOLDER) and not inv.release_exists:
        out.append(f"Lease {LEASE_NAME} in {inv.namespace} is held by {inv.lease_holder!r}, but no Helm release "
                   f"{inv.release!r} exists: another controller of this chart runs here; stop it first")
    return out


def _prepare(inv: Inventory) -> tuple[list[Action], list[str], list[tuple[str, str, str]]]:
    actions: list[Action] = []
    refusals: list[str] = []
    objects: list[tuple[str, str, str]] = []
    rendered = {r.ref: r for r in inv.rendered}
    originals = original_refs(inv.namespace)
    retire_deployment = False
    for ref in sorted(set(rendered) | set(inv.live)):
        live = inv.live.get(ref)
        wanted = rendered.get(ref)
        if live is None:
            objects.append((str(ref), "absent", "helm install creates it" if wanted else "nothing"))
            continue
        if _owned_by_us(live, inv.release, inv.namespace):
            objects.append((str(ref), f"owned by release {inv.release}", "nothing"))
            continue
        if ref.kind in WORKLOADS and (wanted is None or dict(wanted.selector or {}) != dict(live.selector or {})):
            why = "not in the chart with these values" if wanted is None else "its selector differs (immutable)"
            do = Do.RETIRE_DEPLOYMENT if ref.kind == "Deployment" else Do.RETIRE_DAEMONSET
            retire_deployment |= do is Do.RETIRE_DEPLOYMENT
            actions.append(Action(do, ref, why))
            objects.append((str(ref), "the original's", do.value))
            continue
        if wanted is None:
            if ref.kind == "Secret" and ref.name == CERT_SECRET:
                if live.labels.get(CONTROLLER_TRUST[0]) != CONTROLLER_TRUST[1]:
                    actions.append(Action(Do.TRUST_CERTIFICATE, ref, "the API server trusts it already"))
                objects.append((str(ref), "the original's", Do.TRUST_CERTIFICATE.value))
            else:
                objects.append((str(ref), "the original's", "left alone (not in the chart with these values)"))
            continue
        if ref.kind in BINDINGS and dict(wanted.role_ref or {}) != dict(live.role_ref or {}):
            refusals.append(f"{ref} binds {dict(live.role_ref or {})}, the chart binds {dict(wanted.role_ref or {})}: "
                            f"roleRef is immutable; delete the binding by hand (the chart recreates it)")
            continue
        if ref.kind == "ImagePullSecret":
            refusals.append(f"ImagePullSecret {ref.name} is in the values: leave it out of the values for "
                            f"`helm install`; once the migration is done, `scripts/migrate --apply -f <values with "
                            f"it>` hands it to the chart, then `helm upgrade` with those values")
            continue
        if ref not in originals:
            refusals.append(f"{ref} exists, but the original add-on has no such object and no Helm release owns it: "
                            f"it is somebody else's; rename or delete it (this tool never takes it over)")
            continue
        detail = ""
        if ref.kind == "CustomResourceDefinition":
            detail = "kept on uninstall: helm.sh/resource-policy keep"
        elif ref.kind == "Service":
            changes = []
            if dict(wanted.selector or {}) != dict(live.selector or {}):
                changes.append(f"selector set to the chart's {dict(wanted.selector or {})}")
            renamed = renamed_ports(live.body, wanted.body)
            if renamed:
                changes += [f"port {old or '(unnamed)'} named {new}" for old, new in renamed.items()]
                changes.append("a temporary EndpointSlice serves the new name until Kubernetes publishes it")
            detail = "; ".join(changes)
        elif ref.kind.endswith("WebhookConfiguration") and live.webhooks != wanted.webhooks:
            if len(live.webhooks) != 1 or len(wanted.webhooks) != 1:
                refusals.append(f"{ref} has webhooks {list(live.webhooks)}, the chart {list(wanted.webhooks)}: "
                                f"only a single entry can be renamed with its caBundle kept")
                continue
            detail = f"entry {live.webhooks[0]} renamed {wanted.webhooks[0]}, caBundle kept"
        actions.append(Action(Do.ADOPT, ref, detail))
        objects.append((str(ref), "not owned by Helm", Do.ADOPT.value))
    old_pods_pending = [p for p in inv.old_pods if not _routed(p, inv)]
    if retire_deployment or inv.old_pods:
        if inv.lease_holder != LEASE_HOLDER:
            actions.insert(0, Action(Do.HOLD_LEASE, Ref("coordination.k8s.io/v1", "Lease", LEASE_NAME, inv.namespace),
                                     f"holder {LEASE_HOLDER}"))
        if old_pods_pending:
            actions.append(Action(Do.ROUTE_OLD_PODS, None, ", ".join(p.name for p in old_pods_pending)))
    if inv.distributed_unmarked:
        actions.append(_mark(inv))
    # The Lease is held and the old Pods carry the chart's Service labels before the Service's
    # selector changes; workloads are retired last.
    actions.sort(key=lambda a: ORDER.index(a.do))
    return actions, refusals, objects


def _mark(inv: Inventory) -> Action:
    return Action(Do.MARK_DISTRIBUTED_SECRETS, None, f"{len(inv.distributed_unmarked)} Secret(s), "
                  "and any the old controller writes until it stops")


def _service_selector(inv: Inventory) -> Mapping[str, str]:
    for r in inv.rendered:
        if r.ref.kind == "Service" and r.ref.name == WEBHOOK_SERVICE:
            return r.selector or {}
    return {}


def _routed(pod: OldPod, inv: Inventory) -> bool:
    selector = _service_selector(inv)
    return bool(selector) and all(pod.labels.get(k) == v for k, v in selector.items())


def route_labels(inv: Inventory) -> dict[str, str]:
    """The labels an old controller Pod gets so that the chart's webhook Service selects it."""
    return dict(_service_selector(inv))


def plan(inv: Inventory) -> Plan:
    """The next phase of the migration and its actions (or why not)."""
    refusals = _refusals(inv)
    notes = _notes(inv)
    if refusals:
        return Plan(Phase.REFUSED, refusals=tuple(refusals), notes=tuple(notes))
    if not inv.release_exists:
        actions, more, objects = _prepare(inv)
        if more:
            return Plan(Phase.REFUSED, refusals=tuple(more), notes=tuple(notes), objects=tuple(objects))
        original = [live for live in inv.live.values() if not _owned_by_us(live, inv.release, inv.namespace)]
        if not actions and not original and not inv.old_pods:
            phase = Phase.NOTHING if not inv.live else Phase.INSTALL
            return Plan(phase, notes=tuple(notes), objects=tuple(objects))
        return Plan(Phase.PREPARE if actions else Phase.INSTALL, tuple(actions), notes=tuple(notes),
                    objects=tuple(objects))
    actions = []
    if inv.old_replicasets or inv.old_pods:
        if inv.new_controller_ready < 1:
            return Plan(Phase.WAITING, notes=tuple(notes))
        actions.append(Action(Do.STOP_OLD_CONTROLLER, None, ", ".join(inv.old_replicasets) or "its Pods"))
    if actions or inv.distributed_unmarked:
        actions.append(_mark(inv))
    if inv.lease_holder == LEASE_HOLDER:
        actions.append(Action(Do.RELEASE_LEASE, Ref("coordination.k8s.io/v1", "Lease", LEASE_NAME, inv.namespace)))
    if actions:
        return Plan(Phase.FINISH, tuple(actions), notes=tuple(notes))
    # Done: ImagePullSecrets the values name that are still the user's are handed over now, when
    # only the new controller reads them (the original would not understand a passwordSecretRef).
    for r in inv.rendered:
        live = inv.live.get(r.ref)
        if r.ref.kind == "ImagePullSecret" and live is not None and not _owned_by_us(live, inv.release, inv.namespace):
            actions.append(Action(Do.ADOPT_IMAGE_PULL_SECRET, r.ref))
    return Plan(Phase.ADOPT_IMAGE_PULL_SECRETS if actions else Phase.DONE, tuple(actions), notes=tuple(notes))


def _notes(inv: Inventory) -> list[str]:
    notes = [f"{len(inv.image_pull_secrets)} ImagePullSecret(s): "
             + (", ".join(inv.image_pull_secrets) if inv.image_pull_secrets else "none"),
             f"{inv.distributed_secrets} distributed Secret(s) tcr.ips* ({len(inv.distributed_unmarked)} not yet "
             f"labelled as the controller's) and {inv.links} ServiceAccount link(s): left in place; the new "
             f"controller updates each Secret in place (same UID)"]
    rendered_ips = {r.ref.name for r in inv.rendered if r.ref.kind == "ImagePullSecret"}
    for name in inv.image_pull_secrets:
        if name in rendered_ips:
            notes.append(f"ImagePullSecret {name}: in the values, the chart owns it from `helm install` on")
        else:
            notes.append(f"ImagePullSecret {name}: not in the values, stays your own (the controller serves it); "
                         f"`scripts/values --from-cluster` writes values that include it")
    for key in inv.distributed_wrong_type:
        notes.append(f"Secret {key} is not of type kubernetes.io/dockerconfigjson: the controller will replace it "
                     f"(a Secret's type cannot change), the one step that recreates a Secret")
    port = inv.webhook_target_port
    for pod in inv.old_pods:
        if port and port not in pod.port_names:
            notes.append(f"old Pod {pod.name} has no port named {port!r}: the chart's webhook Service cannot reach "
                         f"it, so ImagePullSecret writes may be refused until the new controller is Ready")
    return notes


def _port_key(port: Mapping[str, Any]) -> tuple[Any, str]:
    return port.get("port"), port.get("protocol") or "TCP"


def renamed_ports(live_service: Mapping[str, Any], wanted_service: Mapping[str, Any]) -> dict[str, str]:
    """Old name -> new name of the Service ports the chart keeps (same port and protocol) but names
    anew. kube-proxy matches a Service port to EndpointSlice ports by name, so until the
    endpointslice controller republishes its slices under the new name, that port has no endpoints."""
    live = {_port_key(port): port.get("name") or "" for port in (live_service.get("spec") or {}).get("ports") or []}
    renamed: dict[str, str] = {}
    for port in (wanted_service.get("spec") or {}).get("ports") or []:
        old = live.get(_port_key(port))
        if old is not None and old != (port.get("name") or ""):
            renamed[old] = port.get("name") or ""
    return renamed


def _ready(endpoint: Mapping[str, Any]) -> bool:
    return (endpoint.get("conditions") or {}).get("ready") is not False  # unset means ready


def _controller_slices(service: str, slices: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Only the slices Kubernetes derived from the Service's selector: never one somebody else wrote."""
    wanted = {SERVICE_NAME_LABEL: service, SLICE_MANAGER_LABEL: SLICE_CONTROLLER}
    return [s for s in slices
            if all(((s.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in wanted.items())]


def bridge_slices(service: str, namespace: str, renamed: Mapping[str, str],
                  slices: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """EndpointSlices that serve `renamed` ports under their new names, with the Ready endpoints
    the endpointslice controller publishes for `service` under the old names (one slice per
    address type); none when nothing is renamed or nothing is Ready."""
    bridges: dict[str, dict[str, Any]] = {}
    for found in _controller_slices(service, slices):
        ports = [{**port, "name": renamed[port.get("name") or ""]} for port in found.get("ports") or []
                 if (port.get("name") or "") in renamed]
        endpoints = [{key: endpoint[key] for key in ("addresses", "targetRef", "nodeName", "zone") if endpoint.get(key)}
                     | {"conditions": {"ready": True}}
                     for endpoint in found.get("endpoints") or [] if _ready(endpoint)]
        if not ports or not endpoints:
            continue
        address_type = str(found.get("addressType"))
        bridge = bridges.setdefault(address_type, {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
            "metadata": {"name": f"{service}-migrate-{address_type.lower()}", "namespace": namespace,
                         "labels": {SERVICE_NAME_LABEL: service, SLICE_MANAGER_LABEL: BRIDGE_MANAGER}},
            "ports": [], "endpoints": []})
        bridge["ports"] += [port for port in ports if port not in bridge["ports"]]
        bridge["endpoints"] += [e for e in endpoints if e not in bridge["endpoints"]]
    return list(bridges.values())


def serves(service: str, port_names: Iterable[str], slices: Sequence[Mapping[str, Any]]) -> bool:
    """The endpointslice controller publishes a Ready endpoint under every one of `port_names`."""
    published = {(port.get("name") or "") for found in _controller_slices(service, slices)
                 if any(_ready(e) for e in found.get("endpoints") or []) for port in found.get("ports") or []}
    return set(port_names) <= published


def summary(p: Plan) -> Sequence[str]:
    """The plan as lines of text (what the dry run prints)."""
    lines = [f"phase: {p.phase.value}"]
    if p.objects:
        lines.append("objects:")
        width = max(len(o[0]) for o in p.objects)
        lines += [f"  {name:<{width}}  {state}: {what}" for name, state, what in p.objects]
    if p.refusals:
        lines.append("refused:")
        lines += [f"  - {r}" for r in p.refusals]
    if p.actions:
        lines.append("actions, in order:")
        lines += [f"  {i}. {a.describe()}" for i, a in enumerate(p.actions, 1)]
    if p.notes:
        lines.append("notes:")
        lines += [f"  - {n}" for n in p.notes]
    return lines
