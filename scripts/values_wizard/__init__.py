"""The values wizard behind ``scripts/values``: chart values from the TKE console's install choices.

Modules: ``cli`` (command line, the run), ``plan`` (options -> plan -> values, regions, hosts),
``render`` (YAML quoting and ``values.yaml.j2``), ``check`` (the chart's schema and the webhook's
rules, per option), ``helm`` (``helm template`` of the chart), ``tcr_api`` (the TCR API calls),
``from_cluster`` (``--from-cluster``: values from the cluster's ImagePullSecrets), ``errors``.
A product tool: nothing here depends on the test harness in ``scripts/harness``.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "chart"
PROG = "scripts/values"
