"""values.schema.json and validation.py mean the same for registry entries.

The webhook skips the chart's own ImagePullSecrets (they are created in the same `helm install`
as the webhook, before anything can serve it), so the values schema must never accept an entry
whose ImagePullSecret the webhook's rules (validation.py) would refuse. It should not refuse
valid ones either.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
from chart_support import CHART_DIR, run_helm, template_args
from hypothesis import given, settings
from hypothesis import strategies as st

from tcr_assistant.spec.validation import validate_image_pull_secret

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
ITEM = SCHEMA["properties"]["global"]["properties"]["imagePullSecretsCrs"]["items"]
VALIDATOR = jsonschema.Draft7Validator(ITEM)

BASE = {"name": "reg", "type": "docker", "dockerServer": "example.tencentcloudcr.com", "dockerUsername": "u",
        "dockerPassword": "p"}


def to_resource(entry: dict[str, Any]) -> dict[str, Any]:
    """What templates/imagepullsecrets.yaml makes of an entry."""
    docker: dict[str, Any] = {"server": entry["dockerServer"], "username": str(entry["dockerUsername"])}
    if entry.get("dockerPasswordSecret"):
        ref = entry["dockerPasswordSecret"]
        docker["passwordSecretRef"] = {"name": ref["name"], "key": ref.get("key") or "password"}
    else:
        docker["password"] = str(entry["dockerPassword"])
    spec: dict[str, Any] = {"namespaces": entry.get("namespaces", "*"),
                            "serviceAccounts": entry.get("serviceAccounts", "*"), "docker": docker}
    if entry.get("excludedNamespaces"):
        spec["excludedNamespaces"] = entry["excludedNamespaces"]
    if entry.get("namespaceSelector"):
        spec["namespaceSelector"] = entry["namespaceSelector"]
    return {"apiVersion": "tcr.tencentcloudcr.com/v1", "kind": "ImagePullSecret", "metadata": {"name": entry["name"]},
            "spec": spec}


def helm_accepts(entry: dict[str, Any]) -> bool:
    """The chart's own checks beyond the schema (templates/_helpers.tpl: tcr-addon.validateValues)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as values:
        json.dump({"global": {"imagePullSecretsCrs": [entry]}}, values)
        values.flush()
        return run_helm(*template_args(Path(values.name))).returncode == 0


def verdicts(field: str, value: Any) -> tuple[bool, bool]:
    """(values accepted by the chart, resource accepted by validation.py)."""
    entry = {**BASE, field: value}
    if field == "dockerPasswordSecret":
        entry.pop("dockerPassword")
    schema_ok = not list(VALIDATOR.iter_errors(entry))
    python_ok = validate_image_pull_secret(to_resource(entry)) == []
    if schema_ok and not python_ok:
        schema_ok = helm_accepts(entry)
    return schema_ok, python_ok


CASES: list[tuple[str, Any]] = [
    *[("namespaces", v) for v in ["*", "", " * ", "a", "a,b", " a , b ", "a,,b", "a,", "*,a", "A", "a.b", "a_b",
                                  "x" * 63, "x" * 64, "-a", "a\tb", "a, b"]],
    *[("serviceAccounts", v) for v in ["*", "default", "a.b", "a..b", "default,builder", "x" * 64, "a.", "*,a",
                                       ("a" * 60 + ".") * 4 + "a" * 9, ("a" * 60 + ".") * 4 + "a" * 10]],
    *[("excludedNamespaces", v) for v in ["", "a", "a,b", "*", "a,,b", " a "]],
    *[("dockerServer", v) for v in ["example.tencentcloudcr.com", "a.com:5000", "a.com:65535", "a.com:65536",
                                    "a.com:0", "a.com:080", "https://a.com", "a.com/x", "A.com", "a.com.", "",
                                    "user@a.com", "10.0.0.1", "*.a.com", "a .com", "[::1]:5000", "a.com:"]],
    *[("dockerUsername", v) for v in ["u", "100012345678", 100012345678, "a:b", "", " ", "a b", "a\nb", "a\tb",
                                      " u"]],
    *[("name", v) for v in ["reg", "a.b", "A", "a_b", "x" * 246, "x" * 247, "-a", "a-"]],
    *[("dockerPasswordSecret", v) for v in [{"name": "s"}, {"name": "s", "key": "token"},
                                            {"name": "s", "key": "a/b"}, {"name": "S"}, {"name": "s", "key": ".."}]],
    *[("namespaceSelector", v) for v in [
        {"matchLabels": {"team": "a"}}, {"matchLabels": {"x.io/team": ""}}, {"matchLabels": {"Team_": "a"}},
        {"matchLabels": {"a" * 64: "a"}}, {"matchLabels": {"a": "v" * 64}}, {"matchLabels": {"a/b/c": "a"}},
        {"matchLabels": {"a" * 254 + "/b": "a"}}, {"matchLabels": {"a": "-x"}},
        {"matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}]},
        {"matchExpressions": [{"key": "env", "operator": "In", "values": []}]},
        {"matchExpressions": [{"key": "env", "operator": "NotIn"}]},
        {"matchExpressions": [{"key": "env", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "env", "operator": "DoesNotExist", "values": ["x"]}]},
        {"matchExpressions": [{"key": "env", "operator": "Near", "values": ["x"]}]},
        {"matchExpressions": [{"key": "", "operator": "Exists"}]}]],
]


def test_chart_checks_beyond_the_schema_are_consulted() -> None:
    long_name = ("a" * 60 + ".") * 4 + "a" * 10
    assert not list(VALIDATOR.iter_errors({**BASE, "serviceAccounts": long_name})), "schema alone accepts it"
    assert verdicts("serviceAccounts", long_name) == (False, False)


def test_cases_agree() -> None:
    disagreements = []
    for field, value in CASES:
        schema_ok, python_ok = verdicts(field, value)
        if schema_ok != python_ok:
            disagreements.append(f"{field}={value!r}: values schema {'accepts' if schema_ok else 'refuses'}, "
                                 f"validation.py {'accepts' if python_ok else 'refuses'}")
    assert disagreements == []


near_valid = st.text(alphabet="ab0.-:,* /A_\t", max_size=12)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["namespaces", "serviceAccounts", "excludedNamespaces", "dockerServer",
                              "dockerUsername", "name"]),
       value=near_valid)
def test_schema_never_accepts_what_the_webhook_refuses(field: str, value: str) -> None:
    schema_ok, python_ok = verdicts(field, value)
    assert python_ok or not schema_ok, f"{field}={value!r} passes the chart's checks but validation.py refuses it"


label_text = st.text(alphabet="ab0.-_/A ", max_size=10)


@settings(max_examples=150, deadline=None)
@given(labels=st.dictionaries(label_text, label_text, max_size=2),
       expressions=st.lists(st.fixed_dictionaries(
           {"key": label_text, "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"])},
           optional={"values": st.lists(label_text, max_size=2)}), max_size=2))
def test_schema_never_accepts_a_selector_the_webhook_refuses(labels: dict[str, str],
                                                             expressions: list[dict[str, Any]]) -> None:
    selector = {**({"matchLabels": labels} if labels else {}), **({"matchExpressions": expressions} if expressions
                                                                  else {})}
    schema_ok, python_ok = verdicts("namespaceSelector", selector)
    assert python_ok or not schema_ok, f"{selector!r} passes the chart's checks but validation.py refuses it"
