"""The test tiers: `make test-unit` (`-m "not cluster and not long"`) never starts a cluster, and the
properties `make test-long` runs get 10,000 examples each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import cluster
from support import CLUSTER_FIXTURES, LONG_PROFILE, property_examples, property_settings, tier_markers

# A suite of its own for pytester: a `control_plane` that fails whoever requests it, a fixture built
# on it, and the tier hook of tests/conftest.py.
CONFTEST = '''
import pytest

from support import mark_tiers


def pytest_collection_modifyitems(items):
    mark_tiers(items)


@pytest.fixture(scope="session")
def control_plane():
    raise AssertionError("the control plane was requested")


@pytest.fixture
def admin(control_plane):
    return control_plane
'''
TESTS = '''
def test_pure():
    assert 1 + 1 == 2


def test_on_the_cluster(admin):
    assert admin is not None
'''


def test_the_unit_tier_never_requests_the_control_plane(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=TESTS)
    unit = pytester.runpytest("-m", "not cluster", "-p", "no:cacheprovider")
    unit.assert_outcomes(passed=1, deselected=1)
    # The same suite with the cluster tier selected does request it: the fixture above is live.
    cluster_tier = pytester.runpytest("-m", "cluster", "-p", "no:cacheprovider")
    cluster_tier.assert_outcomes(errors=1, deselected=1)
    cluster_tier.stdout.fnmatch_lines(["*the control plane was requested*"])


def test_tier_markers_follow_the_fixture_closure() -> None:
    assert tier_markers(["tmp_path", "monkeypatch"]) == []
    assert tier_markers(["k", "admin_kube", "control_plane"]) == ["cluster"]
    assert tier_markers(["release", "node_cluster"]) == ["cluster", "node"]
    assert {"control_plane", "node_cluster"} <= CLUSTER_FIXTURES


def test_a_unit_test_that_starts_a_control_plane_fails(tmp_path: Path) -> None:
    # This test is in the unit tier: tests/conftest.py refuses to start a control plane for it.
    plane = cluster.ControlPlane(tmp_path / "plane", tie_to_parent=True)
    try:
        with pytest.raises(AssertionError, match=r"is in the unit tier but starts a control plane"):
            plane.up()
    finally:
        if (tmp_path / "plane" / cluster.STATE_FILE).exists():  # the guard failed: stop what it let start
            plane.down()


def _examples_run(decorate: Callable[[Any], Any]) -> int:
    runs: list[int] = []

    @decorate
    @given(st.integers())
    def prop(value: int) -> None:
        runs.append(value)

    prop()
    return len(runs)


def test_property_settings_run_their_count_by_default_and_the_long_profiles_in_make_test_long() -> None:
    assert _examples_run(property_settings(20, deadline=None)) == 20
    before = settings.get_current_profile_name()
    settings.load_profile(LONG_PROFILE)  # what `--hypothesis-profile=long` does
    try:
        assert property_examples(20) >= 10_000
    finally:
        settings.load_profile(before)
    assert property_examples(20) == 20
