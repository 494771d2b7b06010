"""The chart's copies of the value rules are generated from controller/tcr_assistant/spec/rules.py.

`python -m harness.gen_rules --check` must pass on the committed chart, and must fail (naming the
file and the field) on a chart whose generated fields were edited by hand; writing them back
restores the committed files byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chart_support import CHART_DIR, CRD_FILE, REPO_ROOT, load_crd

from harness import gen_rules
from tcr_assistant.spec import names as name_rules
from tcr_assistant.spec import rules

SCHEMA_FILE = CHART_DIR / gen_rules.SCHEMA_FILE


def test_committed_chart_is_up_to_date() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "scripts"))
    proc = subprocess.run([sys.executable, "-m", "harness.gen_rules", "--check"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"generated rules are out of date; run `{gen_rules.COMMAND}`\n{proc.stderr}"


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    (tmp_path / "crds").mkdir()
    shutil.copy(SCHEMA_FILE, tmp_path / gen_rules.SCHEMA_FILE)
    shutil.copy(CRD_FILE, tmp_path / gen_rules.CRD_FILE)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_check_names_each_stale_field_and_writing_restores_the_files(
        chart_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema, crd = chart_copy / gen_rules.SCHEMA_FILE, chart_copy / gen_rules.CRD_FILE
    server = '"description": "Registry host name, optional :port; no scheme, no path, lower case.",\n'
    edit(schema, server + ' ' * 16 + '"minLength": 1,\n' + ' ' * 16 + '"maxLength": 259,',
         server + ' ' * 16 + '"minLength": 1,\n' + ' ' * 16 + '"maxLength": 260,')
    edit(crd, "maxLength: 1024  # generated", "maxLength: 1000  # generated")
    edit(crd, "<= 65535\"  # generated", "<= 65536\"  # generated")
    edit(crd, r"pattern: '^[-._a-zA-Z0-9]+$'", r"pattern: '^[-._a-zA-Z0-9]*$'")

    assert gen_rules.main(["--check", "--chart", str(chart_copy)]) == 1
    err = capsys.readouterr().err
    assert "chart/values.schema.json: properties.global.properties.imagePullSecretsCrs.items.properties." \
           "dockerServer.maxLength differs" in err
    for field in ("spec.docker.username:maxLength (maxLength)", "spec.docker.server:rule-port (rule)",
                  "spec.docker.passwordSecretRef.key:pattern (pattern)"):
        assert re.search(rf"chart/crds/imagepullsecrets\.tcr\.tencentcloudcr\.com\.yaml:\d+: {re.escape(field)} "
                         "differs", err), (field, err)
    assert "4 generated field(s) out of date" in err
    assert schema.read_bytes() != SCHEMA_FILE.read_bytes(), "--check wrote the file"

    assert gen_rules.main(["--chart", str(chart_copy)]) == 0
    assert "4 field(s) rewritten" in capsys.readouterr().out
    assert schema.read_bytes() == SCHEMA_FILE.read_bytes()
    assert crd.read_bytes() == CRD_FILE.read_bytes()
    assert gen_rules.main(["--check", "--chart", str(chart_copy)]) == 0


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  # generated: spec.docker.password:maxLength", "", "no line is marked '# generated: <field>' for "
                                                            "spec.docker.password:maxLength"),
        ("# generated: spec.docker.password:maxLength", "# generated: spec.docker.username:maxLength",
         "'spec.docker.username:maxLength' is marked twice"),
        ("# generated: spec.docker.password:maxLength", "# generated: spec.docker.pasword:maxLength",
         "unknown generated field 'spec.docker.pasword:maxLength'"),
        ("# generated: spec.docker.server:maxLength", "# generated: spec.docker.server:rule-scheme",
         "marks a 'maxLength' line, expected 'rule'"),
    ],
    ids=["unmarked", "twice", "unknown", "wrong-line"],
)
def test_broken_markers_are_errors(chart_copy: Path, capsys: pytest.CaptureFixture[str], old: str, new: str,
                                   message: str) -> None:
    edit(chart_copy / gen_rules.CRD_FILE, old, new)
    before = (chart_copy / gen_rules.CRD_FILE).read_bytes()
    assert gen_rules.main(["--chart", str(chart_copy)]) == 2
    assert message in capsys.readouterr().err
    assert (chart_copy / gen_rules.CRD_FILE).read_bytes() == before


def test_a_reformatted_schema_is_refused(chart_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = chart_copy / gen_rules.SCHEMA_FILE
    schema.write_text(schema.read_text().replace('  "title"', '    "title"', 1))
    assert gen_rules.main(["--check", "--chart", str(chart_copy)]) == 2
    assert "not in json.dumps(indent=2) form" in capsys.readouterr().err


@pytest.mark.parametrize("maximum", [1, 9, 10, 99, 100, 255, 1000, 8080, 65535])
def test_port_number_matches_exactly_one_to_maximum(maximum: int) -> None:
    pattern = re.compile(rules.port_number(maximum))
    limit = 10 ** len(str(maximum))
    accepted = [n for n in range(limit) if pattern.fullmatch(str(n))]
    assert accepted == list(range(1, maximum + 1))
    assert not any(pattern.fullmatch(f"0{n}") for n in range(limit))


def test_python_expressions_are_unchanged_and_both_syntaxes_agree() -> None:
    assert name_rules.DNS1123_LABEL_RE.pattern == r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
    assert name_rules.DNS1123_SUBDOMAIN_RE.pattern == (
        r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
    for syntax in (rules.ESCAPED, rules.BRACKETED):
        host = re.compile(rules.host(syntax))
        assert host.fullmatch("a.b-c.d") and not host.fullmatch("a" * 64) and not host.fullmatch("a..b")
        names = re.compile(rules.name_list(rules.subdomain(syntax)))
        assert names.fullmatch(" a , b.c ") and not names.fullmatch("a,,b") and not names.fullmatch("aXb")


def _crd_node(crd: dict[str, Any], *path: str | int) -> Any:
    node: Any = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in path:
        node = node[part]
    return node


def test_hand_written_messages_name_the_generated_limits() -> None:
    """Messages are not generated: they must still say the numbers the rules enforce."""
    crd = load_crd()
    spec = ("properties", "spec", "properties")
    server = (*spec, "docker", "properties", "server")
    expectations: list[tuple[tuple[str | int, ...], list[int]]] = [
        (("x-kubernetes-validations", 0), [rules.MAX_NAME_LENGTH, rules.DNS1123_SUBDOMAIN_MAX]),
        ((*spec, "namespaces", "x-kubernetes-validations", 0), [rules.DNS1123_LABEL_MAX]),
        ((*spec, "serviceAccounts", "x-kubernetes-validations", 1), [rules.DNS1123_SUBDOMAIN_MAX]),
        ((*server, "x-kubernetes-validations", 3), [rules.PORT_MAX]),
        ((*server, "x-kubernetes-validations", 4), [rules.DNS1123_SUBDOMAIN_MAX]),
    ]
    for path, numbers in expectations:
        message = _crd_node(crd, *path)["message"]
        for number in numbers:
            assert re.search(rf"\b{number}\b", message), (path, message)
    schema = json.loads(SCHEMA_FILE.read_text())
    name = schema["properties"]["global"]["properties"]["imagePullSecretsCrs"]["items"]["properties"]["name"]
    assert f"at most {rules.MAX_NAME_LENGTH} characters" in name["description"]
