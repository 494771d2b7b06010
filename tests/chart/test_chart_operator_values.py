"""The operator values of the controller: logging, workers, extra args and env, security
contexts, strategy, spread, disruption budget, metrics Service and ServiceMonitor,
NetworkPolicy, and the refusal of several replicas without leader election."""

from __future__ import annotations

from typing import Any

from chart_support import CASES, by_kind, one, render, run_helm, template_args

CONTROLLER = "tcr-assistant-controller-manager"


def deployment_spec(manifests: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return dict(one(manifests, "Deployment", CONTROLLER)["spec"])


def test_defaults_add_no_optional_object() -> None:
    manifests = render(None)
    for kind in ("PodDisruptionBudget", "ServiceMonitor", "NetworkPolicy"):
        assert not by_kind(manifests, kind), kind
    assert [s["metadata"]["name"] for s in by_kind(manifests, "Service")] == ["tcr-assistant-webhook-service"]
    spec = deployment_spec(manifests)
    assert "strategy" not in spec and "topologySpreadConstraints" not in spec["template"]["spec"]


def test_every_operator_value_reaches_its_object() -> None:
    manifests = render(CASES["operator-values"])
    spec = deployment_spec(manifests)
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert container["args"][-3:] == ["--log-level=debug", "--workers=8", "--watch-timeout=600"]
    assert "--leader-elect" in container["args"] and "--drift-mode=watch" in container["args"]
    assert {"name": "TZ", "value": "UTC"} in container["env"]
    pdb = one(manifests, "PodDisruptionBudget", CONTROLLER)["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert pdb["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    service = one(manifests, "Service", "tcr-assistant-metrics")["spec"]
    assert service["selector"] == spec["selector"]["matchLabels"]
    assert service["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = one(manifests, "ServiceMonitor", CONTROLLER)
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    assert monitor["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    policy = one(manifests, "NetworkPolicy", CONTROLLER)["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert [p["port"] for p in policy["ingress"][0]["ports"]] == ["webhook-server", "metrics", "health"]
    container_ports = {p["name"] for p in container["ports"]}
    assert {"webhook-server", "metrics", "health"} <= container_ports  # the policy's named ports exist


def test_disruption_budget_min_available_by_default() -> None:
    manifests = render(None, "--set", "controller.podDisruptionBudget.enabled=true")
    assert one(manifests, "PodDisruptionBudget", CONTROLLER)["spec"]["minAvailable"] == 1


def test_security_contexts_are_values_restricted_by_default() -> None:
    pod = deployment_spec(render(None))["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    changed = deployment_spec(render(None, "--set", "controller.podSecurityContext.runAsUser=1234"))
    assert changed["template"]["spec"]["securityContext"]["runAsUser"] == 1234


def test_several_replicas_need_leader_election() -> None:
    proc = run_helm(*template_args(None, "--set", "controller.replicas=2",
                                   "--set", "controller.leaderElection.enabled=false"))
    assert proc.returncode != 0
    assert "controller.replicas: 2 replicas need controller.leaderElection.enabled=true" in proc.stderr
    assert render(None, "--set", "controller.replicas=2")  # with leader election (the default): fine
    assert render(None, "--set", "controller.leaderElection.enabled=false")  # one replica: fine


def test_schema_refuses_unknown_and_bad_operator_values() -> None:
    for assignment, key in (("controller.logLevel=loud", "logLevel"), ("controller.workers=0", "workers"),
                            ("controller.metrics.serviceMonitor.interval=soon", "interval"),
                            ("controller.networkPolicy.egress=true", "egress")):
        proc = run_helm(*template_args(None, "--set", assignment))
        assert proc.returncode != 0, assignment
        assert key in proc.stderr, (assignment, proc.stderr)
