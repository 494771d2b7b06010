"""Pure decisions of the uninstall step that takes hosts-updater's lines off the nodes."""

from __future__ import annotations

from typing import Any

import pytest

from tcr_assistant.hooks.hosts import remove_mode, rollout_state


def daemonset(args: list[str], rolling: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "hosts-updater", "generation": 3},
        "spec": {
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": rolling or {"maxSurge": 0,
                                                                                    "maxUnavailable": 1}},
            "template": {"spec": {"containers": [
                {"name": "sidecar", "args": ["--x"]},
                {"name": "hosts-updater", "args": args},
            ]}},
        },
    }


def test_remove_mode_appends_the_flag_once_and_replaces_all_pods_at_once() -> None:
    original = daemonset(["--config=/etc/updater/config.json", "--interval=60"])
    updated = remove_mode(original)
    assert updated is not None
    containers = updated["spec"]["template"]["spec"]["containers"]
    assert containers[1]["args"] == ["--config=/etc/updater/config.json", "--interval=60", "--remove"]
    assert containers[0]["args"] == ["--x"], "other containers are untouched"
    assert updated["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": "100%"}
    assert original["spec"]["template"]["spec"]["containers"][1]["args"][-1] == "--interval=60", "input not mutated"
    assert remove_mode(updated) is None, "already in remove mode: nothing to write"


def test_remove_mode_of_a_daemonset_switched_off_by_the_chart_only_widens_the_rollout() -> None:
    updated = remove_mode(daemonset(["--config=c", "--remove"]))
    assert updated is not None
    assert updated["spec"]["template"]["spec"]["containers"][1]["args"].count("--remove") == 1
    assert updated["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "100%"


def test_remove_mode_refuses_a_daemonset_without_our_container() -> None:
    with pytest.raises(ValueError, match="hosts-updater"):
        remove_mode({"spec": {"template": {"spec": {"containers": [{"name": "other"}]}}}})


@pytest.mark.parametrize(
    ("status", "done"),
    [
        ({}, False),
        ({"observedGeneration": 2, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberReady": 2}, False),
        ({"observedGeneration": 3, "desiredNumberScheduled": 2, "updatedNumberScheduled": 1, "numberReady": 2}, False),
        ({"observedGeneration": 3, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberReady": 1}, False),
        ({"observedGeneration": 3, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberReady": 2}, True),
        ({"observedGeneration": 3, "desiredNumberScheduled": 0}, True),
    ],
)
def test_rollout_is_done_only_when_every_node_runs_the_new_template_and_is_ready(
    status: dict[str, Any], done: bool
) -> None:
    state, summary = rollout_state({**daemonset([]), "status": status})
    assert state is done
    assert "nodes clean" in summary
