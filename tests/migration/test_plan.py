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
