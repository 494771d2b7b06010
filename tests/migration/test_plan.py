"""The migration's decisions, as pure functions: phases, order, and what is refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from migration import plan as p
from values_wizard.from_cluster import RELEASE_NAME, RELEASE_NAMESPACE

NS = "tcr-assistant-system"
SELECTOR = {"app.kubernetes.io/name": "tcr-addon", "app.kubernetes.io/component": "controller"}
DEPLOYMENT = p.Ref("apps/v1", "Deployment", p.CONTROLLER_DEPLOYMENT, NS)
SERVICE = p.Ref("v1", "Service", p.WEBHOOK_SERVICE, NS)
ROLE = p.Ref("rbac.authorization.k8s.io/v1", "ClusterRole", "tcr-assistant-manager-role")
RENDERED = (p.Rendered(DEPLOYMENT, SELECTOR), p.Rendered(SERVICE, SELECTOR), p.Rendered(ROLE))


def live(ref: p.Ref, owner: str | None = None, **kw: object) -> p.Live:
    annotations = {RELEASE_NAME: owner, RELEASE_NAMESPACE: NS} if owner else {}
    labels = {"app.kubernetes.io/managed-by": "Helm"} if owner else {}
    return p.Live(ref, f"uid-{ref.name}", labels, annotations, **kw)  # type: ignore[arg-type]


def original(**kw: object) -> p.Inventory:
    defaults: dict[str, object] = dict(
        release="tcr-addon", namespace=NS, rendered=RENDERED, release_exists=False,
        live={DEPLOYMENT: live(DEPLOYMENT, selector={"control-plane": "controller-manager"}),
              SERVICE: live(SERVICE, selector={"control-plane": "controller-manager"}), ROLE: live(ROLE)},
        old_replicasets=("old-rs",), old_pods=(p.OldPod("old-1", {"control-plane": "controller-manager"},
                                                        frozenset({"webhook-server"}), True),),
        webhook_target_port="webhook-server")
    defaults.update(kw)
    return p.Inventory(**defaults)  # type: ignore[arg-type]


def test_prepare_holds_the_lease_first_routes_the_old_pods_and_retires_the_deployment_last() -> None:
    plan = p.plan(original())
    assert plan.phase is p.Phase.PREPARE
    assert [a.do for a in plan.actions] == [p.Do.HOLD_LEASE, p.Do.ROUTE_OLD_PODS, p.Do.ADOPT, p.Do.ADOPT,
                                            p.Do.RETIRE_DEPLOYMENT]
    assert [a.ref for a in plan.actions if a.do is p.Do.ADOPT] == [ROLE, SERVICE]


def test_after_the_release_the_finish_waits_for_the_new_controller() -> None:
    waiting = p.plan(original(release_exists=True, lease_holder=p.LEASE_HOLDER, new_controller_ready=0))
    assert waiting.phase is p.Phase.WAITING and waiting.actions == ()
    finish = p.plan(original(release_exists=True, lease_holder=p.LEASE_HOLDER, new_controller_ready=1))
    assert [a.do for a in finish.actions] == [p.Do.STOP_OLD_CONTROLLER, p.Do.MARK_DISTRIBUTED_SECRETS,
                                              p.Do.RELEASE_LEASE]
    done = p.plan(original(release_exists=True, old_replicasets=(), old_pods=(), lease_holder="pod-1_x",
                           lease_live=True, new_controller_ready=1))
    assert done.phase is p.Phase.DONE


def test_an_old_pod_without_the_services_port_name_is_named_in_the_notes() -> None:
    pods = (p.OldPod("old-1", {}, frozenset({"https"}), True),)
    assert any("old-1" in note and "webhook-server" in note for note in p.plan(original(old_pods=pods)).notes)


def test_a_binding_with_another_role_ref_is_refused() -> None:
    binding = p.Ref("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "tcr-assistant-manager-rolebinding")
    inv = original(rendered=(*RENDERED, p.Rendered(binding, role_ref={"kind": "ClusterRole", "name": "a"})),
                   live={**original().live, binding: live(binding, role_ref={"kind": "ClusterRole", "name": "b"})})
    plan = p.plan(inv)
    assert plan.phase is p.Phase.REFUSED and "roleRef is immutable" in plan.refusals[0]


OWNERS = st.sampled_from([None, "tcr-addon", "tke-addon"])


@given(deployment=OWNERS, service=OWNERS, role=OWNERS)
def test_nothing_owned_by_another_release_is_ever_touched(deployment: str | None, service: str | None,
                                                         role: str | None) -> None:
    owners = {DEPLOYMENT: deployment, SERVICE: service, ROLE: role}
    inv = original(live={ref: live(ref, owner, selector=None if ref is ROLE else {"control-plane": "x"})
                         for ref, owner in owners.items()})
    plan = p.plan(inv)
    foreign = [ref for ref, owner in owners.items() if owner == "tke-addon"]
    if foreign:
        assert plan.phase is p.Phase.REFUSED and plan.actions == ()
        assert all(any(str(ref) in r for r in plan.refusals) for ref in foreign)
    else:
        touched = {a.ref for a in plan.actions if a.ref is not None}
        assert not {ref for ref, owner in owners.items() if owner == "tcr-addon"} & touched
        assert [p.ORDER.index(a.do) for a in plan.actions] == sorted(p.ORDER.index(a.do) for a in plan.actions)


def _service(*ports: dict[str, object]) -> dict[str, object]:
    return {"spec": {"ports": list(ports)}}


def _slice(name: str, *, manager: str = p.SLICE_CONTROLLER, service: str = p.WEBHOOK_SERVICE, port: str | None = None,
           ready: tuple[bool | None, ...] = (True,), address_type: str = "IPv4") -> dict[str, object]:
    return {"metadata": {"name": name, "labels": {p.SERVICE_NAME_LABEL: service, p.SLICE_MANAGER_LABEL: manager}},
            "addressType": address_type,
            "ports": [{"port": 9443, "protocol": "TCP", **({"name": port} if port is not None else {})}],
            "endpoints": [{"addresses": [f"10.0.0.{i}"], "targetRef": {"kind": "Pod", "name": f"old-{i}"},
                           **({"conditions": {"ready": r}} if r is not None else {})} for i, r in enumerate(ready)]}


def test_a_port_the_chart_names_anew_is_bridged_with_the_ready_endpoints_only() -> None:
    renamed = p.renamed_ports(_service({"port": 443, "protocol": "TCP", "targetPort": 9443}),
                              _service({"name": "https", "port": 443, "targetPort": "webhook-server"}))
    assert renamed == {"": "https"}
    bridges = p.bridge_slices(p.WEBHOOK_SERVICE, NS, renamed, [_slice("svc-abc", ready=(True, False, None))])
    assert len(bridges) == 1
    bridge = bridges[0]
    assert bridge["metadata"]["labels"] == {p.SERVICE_NAME_LABEL: p.WEBHOOK_SERVICE,
                                            p.SLICE_MANAGER_LABEL: p.BRIDGE_MANAGER}
    assert bridge["ports"] == [{"name": "https", "port": 9443, "protocol": "TCP"}]
    assert [e["targetRef"]["name"] for e in bridge["endpoints"]] == ["old-0", "old-2"]
    assert all(e["conditions"] == {"ready": True} for e in bridge["endpoints"])
    # Kubernetes publishes the new name: the bridge can go.
    assert not p.serves(p.WEBHOOK_SERVICE, renamed.values(), [_slice("svc-abc"), *bridges])
    assert p.serves(p.WEBHOOK_SERVICE, renamed.values(), [_slice("svc-abc", port="https")])


def test_no_bridge_when_the_port_keeps_its_name_or_nothing_is_ready() -> None:
    same = _service({"name": "https", "port": 443, "protocol": "TCP"})
    assert p.renamed_ports(same, _service({"name": "https", "port": 443})) == {}
    assert p.renamed_ports(_service({"port": 443}), _service({"name": "https", "port": 8443})) == {}
    assert p.bridge_slices(p.WEBHOOK_SERVICE, NS, {}, [_slice("a")]) == []
    assert p.bridge_slices(p.WEBHOOK_SERVICE, NS, {"": "https"}, [_slice("a", ready=(False,))]) == []


def test_a_bridge_never_copies_endpoints_kubernetes_did_not_publish_for_the_service() -> None:
    """An EndpointSlice anybody with write access to the namespace made (another manager, or
    another Service's name) would otherwise steer the webhook's traffic to its addresses."""
    planted = [_slice("planted", manager="someone-else"), _slice("other", service="another-service"),
               _slice("prior-bridge", manager=p.BRIDGE_MANAGER)]
    assert p.bridge_slices(p.WEBHOOK_SERVICE, NS, {"": "https"}, planted) == []
    assert not p.serves(p.WEBHOOK_SERVICE, ["https"], [_slice("planted", manager="someone-else", port="https")])
