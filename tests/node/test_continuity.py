"""The load harness's own judgement of the webhook Service, on recorded changes (no cluster)."""

from __future__ import annotations

from continuity import ServiceChange, replay_service
from kubernetes import client


def service(version: int, port_name: str | None) -> ServiceChange:
    obj = client.V1Service(metadata=client.V1ObjectMeta(name="svc", resource_version=str(version)),
                           spec=client.V1ServiceSpec(ports=[client.V1ServicePort(name=port_name, port=443)]))
    return ServiceChange(version, "Service", "MODIFIED", "svc", obj, "00:00:00")


def endpoint_slice(version: int, name: str, port_name: str | None, *ready: bool, event: str = "MODIFIED"
                   ) -> ServiceChange:
    obj = client.V1EndpointSlice(
        address_type="IPv4", metadata=client.V1ObjectMeta(name=name, resource_version=str(version)),
        ports=[client.DiscoveryV1EndpointPort(name=port_name, port=9443)],
        endpoints=[client.V1Endpoint(addresses=[f"10.0.0.{i}"], conditions=client.V1EndpointConditions(ready=r))
                   for i, r in enumerate(ready)])
    return ServiceChange(version, "EndpointSlice", event, name, obj, "00:00:00")


LISTED = [service(10, None), endpoint_slice(11, "svc-a", None, True)]


def test_a_port_renamed_before_its_slice_is_a_gap_whatever_order_the_watches_delivered() -> None:
    # The endpointslice controller's update arrives first on its own watch, the Service's later.
    changes = [*LISTED, endpoint_slice(21, "svc-a", "https", True), service(20, "https")]
    replayed, gaps = replay_service(changes, after=11)
    assert replayed == 4
    assert len(gaps) == 1 and "https" in gaps[0] and "Service svc modified" in gaps[0]


def test_a_bridge_slice_under_the_new_name_closes_that_gap() -> None:
    changes = [*LISTED, endpoint_slice(19, "svc-bridge", "https", True, event="ADDED"), service(20, "https"),
               endpoint_slice(21, "svc-a", "https", True), endpoint_slice(30, "svc-bridge", "https", event="DELETED")]
    assert replay_service(changes, after=11) == (6, [])


def test_a_rollout_is_a_gap_only_while_no_endpoint_is_ready() -> None:
    surge = [*LISTED, endpoint_slice(20, "svc-a", None, True, True), endpoint_slice(21, "svc-a", None, False, True)]
    assert replay_service(surge, after=11)[1] == []
    outage = [*LISTED, endpoint_slice(20, "svc-a", None, False), endpoint_slice(21, "svc-a", None, True)]
    assert len(replay_service(outage, after=11)[1]) == 1


def test_states_before_both_watches_listed_are_not_judged() -> None:
    # The Service listed at 10, its slice only at 25: the partial state between is no gap.
    changes = [service(10, None), endpoint_slice(25, "svc-a", None, True)]
    assert replay_service(changes, after=25)[1] == []
