"""The I/O of `scripts/migrate`: read what the cluster holds, render the chart, carry out a plan.

Reads the cluster of KUBECONFIG (as kubectl does) with the Kubernetes Python client, and renders the
chart with the real `helm template`. Every write is a patch of one named object, the deletion of
an object the plan retires, or a temporary EndpointSlice of the webhook Service (created and
deleted by its own field manager); nothing else is listed for deletion.
"""

from __future__ import annotations

import contextlib
import datetime
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from values_wizard.from_cluster import RELEASE_NAME, RELEASE_NAMESPACE

from . import plan as p

SECRET_PREFIX = "tcr.ips"
SECRET_TYPE = "kubernetes.io/dockerconfigjson"
ENDPOINT_SETTLE_SECONDS = 3.0  # kube-proxy applies an EndpointSlice change within about a second
ENDPOINT_SLICE = p.Ref("discovery.k8s.io/v1", "EndpointSlice", "")


class MigrationError(RuntimeError):
    """A step could not be carried out (message says which and why)."""


def connect(context: str | None = None) -> client.ApiClient:
    return config.new_client_from_config(context=context)


# -- the chart --------------------------------------------------------------------------------


def render(helm: Path, chart: Path, release: str, namespace: str, values: Sequence[Path],
           kube_version: str | None) -> list[p.Rendered]:
    """`helm template` with the user's values: what the release will own."""
    argv = [str(helm), "template", release, str(chart), "--namespace", namespace, "--include-crds"]
    if kube_version:
        argv += ["--kube-version", kube_version]
    for path in values:
        argv += ["--values", str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise MigrationError(f"`helm template` of {chart} failed: {proc.stderr.strip()[-800:]}")
    out: list[p.Rendered] = []
    seen: set[p.Ref] = set()
    for doc in yaml.safe_load_all(proc.stdout):
        if not isinstance(doc, dict) or not doc.get("kind"):
            continue
        meta = doc.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        if "helm.sh/hook" in annotations:
            continue  # hooks are not release objects
        ref = p.Ref(doc["apiVersion"], doc["kind"], meta["name"], _namespace_of(doc, namespace))
        if ref in seen:
            continue
        seen.add(ref)
        spec = doc.get("spec") or {}
        selector: Mapping[str, str] | None = None
        if doc["kind"] in p.WORKLOADS:
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
        elif doc["kind"] == "Service":
            selector = spec.get("selector") or {}
        out.append(p.Rendered(ref, selector, doc.get("roleRef"), _webhook_names(doc), doc))
    return out


CLUSTER_SCOPED = frozenset({"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ImagePullSecret",
                            "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Namespace",
                            "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"})


def _webhook_names(doc: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(w.get("name")) for w in doc.get("webhooks") or [])


def _namespace_of(doc: Mapping[str, Any], default: str) -> str | None:
    if doc["kind"] in CLUSTER_SCOPED:
        return None
    return str((doc.get("metadata") or {}).get("namespace") or default)


def webhook_target_port(helm_docs: Iterable[p.Rendered]) -> str | None:
    return "webhook-server" if any(r.ref.kind == "Service" and r.ref.name == p.WEBHOOK_SERVICE
                                   for r in helm_docs) else None


# -- the cluster ------------------------------------------------------------------------------


class Cluster:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # Typed as Any: the client's models make every nested field Optional.
        self.core: Any = client.CoreV1Api(api)
        self.apps: Any = client.AppsV1Api(api)
        self.coordination: Any = client.CoordinationV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)
        self._dynamic: dynamic.DynamicClient | None = None

    @property
    def dynamic(self) -> dynamic.DynamicClient:
        if self._dynamic is None:
            self._dynamic = dynamic.DynamicClient(self.api)
        return self._dynamic

    def server_version(self) -> str:
        info = client.VersionApi(self.api).get_code()
        return str(info.git_version).lstrip("v").split("+")[0].split("-")[0]

    def _resource(self, ref: p.Ref) -> Any:
        try:
            return self.dynamic.resources.get(api_version=ref.api_version, kind=ref.kind)
        except ResourceNotFoundError:
            return None

    def get(self, ref: p.Ref) -> dict[str, Any] | None:
        resource = self._resource(ref)
        if resource is None:
            return None
        try:
            obj = resource.get(name=ref.name, namespace=ref.namespace)
        except NotFoundError:
            return None
        result: dict[str, Any] = obj.to_dict()
        return result

    def inventory(self, release: str, namespace: str, rendered: Sequence[p.Rendered]) -> p.Inventory:
        live: dict[p.Ref, p.Live] = {}
        for ref in sorted({r.ref for r in rendered} | p.original_refs(namespace)):
            obj = self.get(ref)
            if obj is not None:
                live[ref] = _live(ref, obj)
        old_rs, old_pods = self._old_controller(namespace, live.get(
            p.Ref("apps/v1", "Deployment", p.CONTROLLER_DEPLOYMENT, namespace)))
        holder, lease_live = self._lease(namespace)
        ips = self._image_pull_secrets()
        distributed, wrong, links, unmarked = self._distributed(ips)
        ns_obj = self.get(p.Ref("v1", "Namespace", namespace))
        return p.Inventory(
            release=release, namespace=namespace, rendered=tuple(rendered), live=live,
            release_exists=self._release_exists(release, namespace),
            namespace_terminating=bool(ns_obj and (ns_obj.get("metadata") or {}).get("deletionTimestamp")),
            old_replicasets=tuple(old_rs), old_pods=tuple(old_pods),
            lease_holder=holder, lease_live=lease_live,
            new_controller_ready=self._new_controller_ready(release, namespace, rendered),
            image_pull_secrets=tuple(ips), distributed_secrets=distributed, distributed_wrong_type=tuple(wrong),
            distributed_unmarked=tuple(unmarked), links=links, webhook_target_port=webhook_target_port(rendered))

    def _release_exists(self, release: str, namespace: str) -> bool:
        try:
            found = self.core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(found.items)

    def _old_controller(self, namespace: str, deployment: p.Live | None
                        ) -> tuple[list[str], list[p.OldPod]]:
        """The original controller's ReplicaSets (of its Deployment, or retired earlier) and their Pods."""
        try:
            sets = self.apps.list_namespaced_replica_set(namespace).items
        except ApiException as exc:
            if exc.status == 404:
                return [], []
            raise
        ours: list[Any] = []
        for rs in sets:
            annotations = rs.metadata.annotations or {}
            owners = rs.metadata.owner_references or []
            is_retired = annotations.get(p.RETIRED) == "true"
            of_original = deployment is not None and deployment.helm_owner() is None and any(
                o.uid == deployment.uid for o in owners)
            if is_retired or of_original:
                ours.append(rs)
        names = [rs.metadata.name for rs in ours]
        uids = {rs.metadata.uid for rs in ours}
        pods = []
        for pod in self.core.list_namespaced_pod(namespace).items:
            if pod.metadata.deletion_timestamp is None and any(
                    o.uid in uids for o in pod.metadata.owner_references or []):
                ports = frozenset(port.name for c in pod.spec.containers for port in c.ports or [] if port.name)
                ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
                pods.append(p.OldPod(pod.metadata.name, dict(pod.metadata.labels or {}), ports, ready))
        return names, pods

    def _lease(self, namespace: str) -> tuple[str | None, bool]:
        try:
            lease = self.coordination.read_namespaced_lease(p.LEASE_NAME, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, False
            raise
        holder = lease.spec.holder_identity or None
        renewed = lease.spec.renew_time
        duration = lease.spec.lease_duration_seconds or 15
        live = bool(holder and renewed and (datetime.datetime.now(datetime.UTC) - renewed).total_seconds() < duration)
        return holder, live

    def _new_controller_ready(self, release: str, namespace: str, rendered: Sequence[p.Rendered]) -> int:
        wanted = next((r for r in rendered if r.ref.kind == "Deployment" and r.ref.name == p.CONTROLLER_DEPLOYMENT),
                      None)
        if wanted is None:
            return 0
        try:
            deployment = self.apps.read_namespaced_deployment(p.CONTROLLER_DEPLOYMENT, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return 0
            raise
        annotations = deployment.metadata.annotations or {}
        if annotations.get(RELEASE_NAME) != release:
            return 0
        if (deployment.spec.selector.match_labels or {}) != dict(wanted.selector or {}):
            return 0
        return int(deployment.status.ready_replicas or 0)

    def _image_pull_secrets(self) -> list[str]:
        try:
            found = self.custom.list_cluster_custom_object(p.GROUP, "v1", "imagepullsecrets")
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        return sorted(item["metadata"]["name"] for item in found.get("items") or [])

    def _distributed(self, ips: Sequence[str]) -> tuple[int, list[str], int, list[str]]:
        names = {f"{SECRET_PREFIX}{name}" for name in ips}
        count, wrong, unmarked = 0, [], []
        for secret in self._list_all(self.core.list_secret_for_all_namespaces):
            if secret.metadata.name in names:
                count += 1
                key = f"{secret.metadata.namespace}/{secret.metadata.name}"
                if secret.type != SECRET_TYPE:
                    wrong.append(key)
                elif (secret.metadata.labels or {}).get(p.CONTROLLER_TRUST[0]) != p.CONTROLLER_TRUST[1]:
                    unmarked.append(key)
        links = sum(1 for sa in self._list_all(self.core.list_service_account_for_all_namespaces)
                    for ref in sa.image_pull_secrets or [] if ref.name in names)
        return count, wrong, links, unmarked

    def _do_mark_distributed_secrets(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        """Listed again now: the old controller may have written more since the plan was made."""
        _, _, _, unmarked = self._distributed(self._image_pull_secrets())
        for key in unmarked:
            namespace, name = key.split("/", 1)
            labels = {p.CONTROLLER_TRUST[0]: p.CONTROLLER_TRUST[1], p.IPS_LABEL: name[len(SECRET_PREFIX):]}
            try:
                self.core.patch_namespaced_secret(name, namespace, {"metadata": {"labels": labels}})
            except ApiException as exc:
                if exc.status != 404:  # gone meanwhile: nothing to mark
                    raise

    @staticmethod
    def _list_all(call: Callable[..., Any]) -> Iterable[Any]:
        token = None
        while True:
            page = call(limit=500, _continue=token) if token else call(limit=500)
            yield from page.items
            token = page.metadata._continue
            if not token:
                return

    # -- carrying out -------------------------------------------------------------------------

    def apply(self, plan: p.Plan, inv: p.Inventory, log: Callable[[str], None], timeout: float) -> None:
        for action in plan.actions:
            log(f"-> {action.describe()}")
            handler = getattr(self, f"_do_{action.do.name.lower()}")
            handler(action, inv, timeout)

    def _patch(self, ref: p.Ref, body: Any, content_type: str = "application/merge-patch+json") -> None:
        resource = self._resource(ref)
        if resource is None:
            raise MigrationError(f"{ref}: the API server does not serve {ref.api_version} {ref.kind}")
        resource.patch(body=body, name=ref.name, namespace=ref.namespace, content_type=content_type)

    def _do_adopt(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        wanted = next(r for r in inv.rendered if r.ref == action.ref)  # only rendered objects are adopted
        if wanted.ref.kind == "Service":
            self._adopt_service(wanted, inv, timeout)
            return
        if wanted.ref.kind.endswith("WebhookConfiguration") and wanted.webhooks:
            # Entries merge by name: renamed, the original's entry (and its caBundle) becomes the
            # chart's, instead of a second entry without a caBundle.
            self._patch(wanted.ref, [{"op": "replace", "path": "/webhooks/0/name", "value": wanted.webhooks[0]}],
                        "application/json-patch+json")
        keep = {p.RESOURCE_POLICY: "keep"} if wanted.ref.kind == "CustomResourceDefinition" else {}
        self._apply_as_helm(wanted, inv, keep)

    def _adopt_service(self, wanted: p.Rendered, inv: p.Inventory, timeout: float) -> None:
        namespace = wanted.ref.namespace or inv.namespace
        live = inv.live.get(wanted.ref)
        renamed = p.renamed_ports(live.body if live is not None else {}, wanted.body)
        bridges = p.bridge_slices(wanted.ref.name, namespace, renamed, self._endpoint_slices(namespace))
        slices = self._resource(ENDPOINT_SLICE)
        for bridge in bridges:
            slices.server_side_apply(body=bridge, name=bridge["metadata"]["name"], namespace=namespace,
                                     field_manager=p.BRIDGE_MANAGER, force_conflicts=True)
        if bridges:  # kube-proxy holds the new name's endpoints before the Service asks for them
            time.sleep(ENDPOINT_SETTLE_SECONDS)
        # Helm's patch would add the chart's selector to the original's (keys are only ever
        # added): the old Pods carry the chart's labels by now, so they stay selected.
        self._patch(wanted.ref, [{"op": "replace", "path": "/spec/selector", "value": dict(wanted.selector or {})}],
                    "application/json-patch+json")
        self._apply_as_helm(wanted, inv)
        if bridges:
            self._wait(lambda: p.serves(wanted.ref.name, renamed.values(), self._endpoint_slices(namespace)), timeout,
                       f"Kubernetes' EndpointSlices of {wanted.ref} under the port name(s) {sorted(renamed.values())}")
            time.sleep(ENDPOINT_SETTLE_SECONDS)
            self._delete_bridges(namespace)

    def _endpoint_slices(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        """The webhook Service's EndpointSlices (``selector``: more label requirements)."""
        found = self._resource(ENDPOINT_SLICE).get(
            namespace=namespace, label_selector=",".join(filter(None, [f"{p.SERVICE_NAME_LABEL}={p.WEBHOOK_SERVICE}",
                                                                       selector])))
        return [item.to_dict() for item in found.items]

    def _delete_bridges(self, namespace: str) -> None:
        for found in self._endpoint_slices(namespace, f"{p.SLICE_MANAGER_LABEL}={p.BRIDGE_MANAGER}"):
            with contextlib.suppress(NotFoundError):
                self._resource(ENDPOINT_SLICE).delete(name=found["metadata"]["name"], namespace=namespace)

    def _apply_as_helm(self, wanted: p.Rendered, inv: p.Inventory, annotations: Mapping[str, str] = {}) -> None:
        """Server-side apply of the rendered object as Helm's field manager, taking over the fields
        the original's managers own: Helm 4 applies server-side and would otherwise stop on a
        conflict; Helm 3's three-way patch then finds nothing to change. Fields the chart leaves out
        (the webhook's caBundle) keep their values."""
        resource = self._resource(wanted.ref)
        body = dict(wanted.body)
        meta = dict(body.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations, RELEASE_NAME: inv.release,
                               RELEASE_NAMESPACE: inv.namespace}
        if wanted.ref.namespace:
            meta["namespace"] = wanted.ref.namespace
        body["metadata"] = meta
        resource.server_side_apply(body=body, name=wanted.ref.name, namespace=wanted.ref.namespace,
                                   field_manager=p.HELM_FIELD_MANAGER, force_conflicts=True)
        # A forced apply takes the fields whose values differ; those with equal values stay shared
        # with the original's managers, and a later chart that changes one would conflict with them
        # under Helm 4. Helm's entries alone remain: what it did not render is left unowned.
        live = self.get(wanted.ref) or {}
        entries = (live.get("metadata") or {}).get("managedFields") or []
        kept = [e for e in entries if e.get("manager") == p.HELM_FIELD_MANAGER]
        if kept and len(kept) != len(entries):
            self._patch(wanted.ref, [{"op": "replace", "path": "/metadata/managedFields", "value": kept}],
                        "application/json-patch+json")

    def _do_adopt_image_pull_secret(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        assert action.ref is not None
        wanted = next(r for r in inv.rendered if r.ref == action.ref)
        docker = ((wanted.body.get("spec") or {}).get("docker") or {})
        reference = docker.get("passwordSecretRef")
        if reference:  # the chart's credentials Secret first, so the reference never dangles
            secret = next((r for r in inv.rendered if r.ref.kind == "Secret" and r.ref.name == reference.get("name")),
                          None)
            if secret is not None:
                self._apply_as_helm(secret, inv)
        # One JSON patch swaps password for the reference (the CRD allows exactly one of them).
        live = self.get(action.ref) or {}
        ops: list[dict[str, Any]] = [{"op": "add", "path": "/metadata/labels", "value": {
            **((live.get("metadata") or {}).get("labels") or {}), p.HELM_MANAGED[0]: p.HELM_MANAGED[1]}}]
        live_docker = (live.get("spec") or {}).get("docker") or {}
        if reference and "password" in live_docker:
            ops += [{"op": "remove", "path": "/spec/docker/password"},
                    {"op": "add", "path": "/spec/docker/passwordSecretRef", "value": reference}]
        self._patch(action.ref, ops, "application/json-patch+json")
        self._apply_as_helm(wanted, inv)

    def _do_trust_certificate(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        assert action.ref is not None
        body: dict[str, Any] = {"metadata": {"labels": {p.CONTROLLER_TRUST[0]: p.CONTROLLER_TRUST[1]}}}
        webhook = self.get(p.Ref("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
                                 p.WEBHOOK_CONFIGURATION))
        if webhook is not None:  # uninstalling the release removes the configuration, and with it this Secret
            meta = webhook["metadata"]
            owners = [o for o in (self.get(action.ref) or {}).get("metadata", {}).get("ownerReferences") or []
                      if o.get("uid") != meta["uid"]]
            owners.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                           "name": meta["name"], "uid": meta["uid"]})
            body["metadata"]["ownerReferences"] = owners
        self._patch(action.ref, body)

    def _do_hold_lease(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        now = datetime.datetime.now(datetime.UTC)
        now = now.replace(microsecond=now.microsecond or 1)  # a MicroTime must print its six digits
        spec = {"holderIdentity": p.LEASE_HOLDER, "leaseDurationSeconds": p.LEASE_SECONDS,
                "acquireTime": now, "renewTime": now}
        try:
            lease = self.coordination.read_namespaced_lease(p.LEASE_NAME, inv.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease(inv.namespace, client.V1Lease(
                metadata=client.V1ObjectMeta(name=p.LEASE_NAME, namespace=inv.namespace),
                spec=client.V1LeaseSpec(holder_identity=p.LEASE_HOLDER, lease_duration_seconds=p.LEASE_SECONDS,
                                        acquire_time=now, renew_time=now)))
            return
        if lease.spec.holder_identity and lease.spec.holder_identity != p.LEASE_HOLDER and inv.lease_live:
            raise MigrationError(f"Lease {p.LEASE_NAME} is held by {lease.spec.holder_identity!r}")
        lease.spec.holder_identity = spec["holderIdentity"]
        lease.spec.lease_duration_seconds = p.LEASE_SECONDS
        lease.spec.acquire_time = now
        lease.spec.renew_time = now
        self.coordination.replace_namespaced_lease(p.LEASE_NAME, inv.namespace, lease)  # optimistic: resourceVersion

    def _do_route_old_pods(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        labels = p.route_labels(inv)
        for pod in inv.old_pods:
            self.core.patch_namespaced_pod(pod.name, inv.namespace, {"metadata": {"labels": labels}})

    def _do_retire_deployment(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        assert action.ref is not None
        for name in inv.old_replicasets:
            self.apps.patch_namespaced_replica_set(name, inv.namespace,
                                                   {"metadata": {"annotations": {p.RETIRED: "true"}}})
        self.apps.delete_namespaced_deployment(action.ref.name, inv.namespace, propagation_policy="Orphan")
        self._wait(lambda: self.get(action.ref) is None if action.ref else True, timeout, f"{action.ref} deleted")

    def _do_retire_daemonset(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        assert action.ref is not None
        self.apps.delete_namespaced_daemon_set(action.ref.name, inv.namespace, propagation_policy="Background")
        self._wait(lambda: self.get(action.ref) is None if action.ref else True, timeout, f"{action.ref} deleted")

    def _do_stop_old_controller(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        # Out of the webhook Service first: a Pod that closes its listener while kube-proxy still
        # sends it calls would have them refused.
        old = {pod.name for pod in inv.old_pods}
        self._delete_bridges(inv.namespace)  # left by an interrupted prepare: it names the old Pods

        def endpoints() -> list[dict[str, Any]]:
            return [e for s in self._endpoint_slices(inv.namespace) for e in s.get("endpoints") or []
                    if e.get("targetRef")]

        def new_pod_ready() -> bool:
            return any(e["targetRef"].get("name") not in old and (e.get("conditions") or {}).get("ready") is not False
                       for e in endpoints())

        def unrouted() -> bool:
            return not old & {e["targetRef"].get("name") for e in endpoints()}

        # A new Pod stands behind the Service (and kube-proxy knows it) before the old ones leave it.
        self._wait(new_pod_ready, timeout, "a Ready Pod of the release among the webhook Service's endpoints")
        time.sleep(ENDPOINT_SETTLE_SECONDS)
        unroute = {"metadata": {"labels": {key: None for key in p.route_labels(inv)}}}
        for name in sorted(old):
            try:
                self.core.patch_namespaced_pod(name, inv.namespace, unroute)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        self._wait(unrouted, timeout, "the old controller's Pods out of the webhook Service's endpoints")
        time.sleep(ENDPOINT_SETTLE_SECONDS)
        for name in inv.old_replicasets:
            try:
                self.apps.delete_namespaced_replica_set(name, inv.namespace, propagation_policy="Foreground")
            except ApiException as exc:
                if exc.status != 404:
                    raise

        def gone() -> bool:
            names = {pod.metadata.name for pod in self.core.list_namespaced_pod(inv.namespace).items}
            return not old & names

        self._wait(gone, timeout, "the old controller's Pods gone")

    def _do_release_lease(self, action: p.Action, inv: p.Inventory, timeout: float) -> None:
        lease = self.coordination.read_namespaced_lease(p.LEASE_NAME, inv.namespace)
        if lease.spec.holder_identity != p.LEASE_HOLDER:
            return
        lease.spec.holder_identity = None  # an empty holder: the first candidate takes it at once
        lease.spec.lease_duration_seconds = 1
        self.coordination.replace_namespaced_lease(p.LEASE_NAME, inv.namespace, lease)

    @staticmethod
    def _wait(done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise MigrationError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.5)


def _live(ref: p.Ref, obj: Mapping[str, Any]) -> p.Live:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    selector: Mapping[str, str] | None = None
    if ref.kind in p.WORKLOADS:
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
    elif ref.kind == "Service":
        selector = spec.get("selector") or {}
    return p.Live(ref, str(meta.get("uid")), dict(meta.get("labels") or {}), dict(meta.get("annotations") or {}),
                  selector, obj.get("roleRef"), _crd_problem(obj) if ref.kind == "CustomResourceDefinition" else None,
                  bool(meta.get("deletionTimestamp")), _webhook_names(obj), obj)


def _crd_problem(crd: Mapping[str, Any]) -> str | None:
    spec = crd.get("spec") or {}
    if spec.get("group") != p.GROUP or (spec.get("names") or {}).get("kind") != "ImagePullSecret":
        return f"group {spec.get('group')!r}, kind {(spec.get('names') or {}).get('kind')!r}"
    if spec.get("scope") != "Cluster":
        return f"scope {spec.get('scope')!r}"
    if not any(v.get("name") == "v1" and v.get("served") for v in spec.get("versions") or []):
        return "version v1 is not served"
    return None
