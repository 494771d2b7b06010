"""values.schema.json: strict, self-contained, in step with values.yaml and the README."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from chart_support import (
    CASES,
    CHART_DIR,
    case_values,
    documented_keys,
    load_values,
    run_helm,
    schema_allows_path,
    schema_property_paths,
    template_args,
    value_paths,
)

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()
# Maps whose keys are free (labels, selectors, resources…): their children are not schema properties.
FREE_MAPS = {"commonLabels", "commonAnnotations", "controller.nodeSelector", "controller.podLabels",
             "controller.podAnnotations", "controller.affinity", "hostsUpdater.nodeSelector", "hostsUpdater.podLabels",
             "hostsUpdater.podAnnotations", "hostsUpdater.affinity", "controller.resources", "hostsUpdater.resources",
             # Kubernetes objects passed through as they are (the API server validates them)
             "controller.podSecurityContext", "controller.securityContext", "controller.strategy",
             "controller.metrics.serviceMonitor.labels"}


def test_schema_is_draft7_and_self_contained() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    refs = re.findall(r'"\$ref":\s*"([^"]*)"', json.dumps(SCHEMA))
    assert all(ref.startswith("#") for ref in refs), refs


def test_our_objects_are_closed() -> None:
    for path, sub in schema_property_paths(SCHEMA).items():
        if sub.get("type") != "object" or path in FREE_MAPS or (path.split(".")[0] == "global" and path.count(".") < 2):
            continue
        if path in ("global", "global.cluster"):
            continue
        if "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{path} accepts unknown keys"
    assert SCHEMA["additionalProperties"] is False
    item = SCHEMA["properties"]["global"]["properties"]["imagePullSecretsCrs"]["items"]
    assert item["additionalProperties"] is False


@pytest.mark.parametrize("name", list(CASES))
def test_defaults_and_ci_files_pass_the_schema(name: str) -> None:
    values = load_values()
    if CASES[name] is not None:
        values = _merge(values, case_values(name))
    errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(values)]
    assert errors == []


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


CR = ("--set", "global.imagePullSecretsCrs[0].name=reg", "--set", "global.imagePullSecretsCrs[0].type=docker",
      "--set", "global.imagePullSecretsCrs[0].dockerServer=example.tencentcloudcr.com",
      "--set", "global.imagePullSecretsCrs[0].dockerUsername=u",
      "--set", "global.imagePullSecretsCrs[0].dockerPassword=p")

# (id, extra helm arguments, text that must appear in the error: the key's path)
BAD_VALUES: list[tuple[str, tuple[str, ...], str]] = [
    ("type-podman", (*CR, "--set", "global.imagePullSecretsCrs[0].type=podman"), "/global/imagePullSecretsCrs/0/type"),
    ("replicas-not-a-number", ("--set-string", "controller.replicas=two"), "/controller/replicas"),
    ("unknown-top-level-key", ("--set", "replicaCount=2"), "replicaCount"),
    ("unknown-controller-key", ("--set", "controller.replica=2"), "replica"),
    ("unknown-cr-key", (*CR, "--set", "global.imagePullSecretsCrs[0].dockerpassword=x"), "dockerpassword"),
    ("server-with-scheme", (*CR, "--set", "global.imagePullSecretsCrs[0].dockerServer=https://a.example.com"),
     "/global/imagePullSecretsCrs/0/dockerServer"),
    ("server-with-path", (*CR, "--set", "global.imagePullSecretsCrs[0].dockerServer=a.example.com/ns"),
     "/global/imagePullSecretsCrs/0/dockerServer"),
    ("server-upper-case", (*CR, "--set", "global.imagePullSecretsCrs[0].dockerServer=A.example.com"),
     "/global/imagePullSecretsCrs/0/dockerServer"),
    ("namespaces-star-mixed", (*CR, "--set-string", "global.imagePullSecretsCrs[0].namespaces=*\\,a"),
     "/global/imagePullSecretsCrs/0/namespaces"),
    ("namespaces-empty-item", (*CR, "--set-string", "global.imagePullSecretsCrs[0].namespaces=a\\,\\,b"),
     "/global/imagePullSecretsCrs/0/namespaces"),
    ("cr-name-upper-case", (*CR, "--set", "global.imagePullSecretsCrs[0].name=Reg"),
     "/global/imagePullSecretsCrs/0/name"),
    ("username-with-colon", (*CR, "--set", "global.imagePullSecretsCrs[0].dockerUsername=a:b"),
     "/global/imagePullSecretsCrs/0/dockerUsername"),
    ("missing-server", ("--set", "global.imagePullSecretsCrs[0].name=reg",
                        "--set", "global.imagePullSecretsCrs[0].dockerUsername=u",
                        "--set", "global.imagePullSecretsCrs[0].dockerPassword=p"), "dockerServer"),
    ("no-password", ("--set", "global.imagePullSecretsCrs[0].name=reg",
                     "--set", "global.imagePullSecretsCrs[0].dockerServer=example.tencentcloudcr.com",
                     "--set", "global.imagePullSecretsCrs[0].dockerUsername=u"),
     "global.imagePullSecretsCrs[0].dockerPassword"),
    ("password-and-secret", (*CR, "--set", "global.imagePullSecretsCrs[0].dockerPasswordSecret.name=s"),
     "global.imagePullSecretsCrs[0]: set exactly one of dockerPassword, dockerPasswordSecret or dockerTokenFrom"),
    ("duplicate-names", (*CR, "--set", "global.imagePullSecretsCrs[1].name=reg",
                         "--set", "global.imagePullSecretsCrs[1].dockerServer=b.example.com",
                         "--set", "global.imagePullSecretsCrs[1].dockerUsername=u",
                         "--set", "global.imagePullSecretsCrs[1].dockerPassword=p"),
     "global.imagePullSecretsCrs[1].name"),
    ("secret-key-bad", (*CR[:-2], "--set", "global.imagePullSecretsCrs[0].dockerPasswordSecret.name=s",
                        "--set", "global.imagePullSecretsCrs[0].dockerPasswordSecret.key=a/b"),
     "/global/imagePullSecretsCrs/0/dockerPasswordSecret/key"),
    ("host-ip-bad", ("--set", "global.hosts[0].domain=a.example.com", "--set", "global.hosts[0].ip=10.0.0.300"),
     "/global/hosts/0/ip"),
    ("failure-policy", ("--set", "webhook.failurePolicy=Retry",), "/webhook/failurePolicy"),
    ("timeout-too-long", ("--set", "webhook.timeoutSeconds=31",), "/webhook/timeoutSeconds"),
    ("hosts-updater-mode", ("--set", "hostsUpdater.enabled=sometimes",), "/hostsUpdater/enabled"),
    ("vap-mode", ("--set", "validatingAdmissionPolicy.enabled=yes",), "/validatingAdmissionPolicy/enabled"),
    ("digest-bad", ("--set", "controller.image.digest=sha256:xyz",), "/controller/image/digest"),
    ("pull-policy", ("--set", "hostsUpdater.image.pullPolicy=Sometimes",), "/hostsUpdater/image/pullPolicy"),
    ("interval-zero", ("--set", "hostsUpdater.interval=0",), "/hostsUpdater/interval"),
    ("test-namespace", ("--set", "tests.namespace=Default",), "/tests/namespace"),
    ("resources-quantity", ("--set", "controller.resources.limits.memory=lots",),
     "/controller/resources/limits/memory"),
]


def test_good_base_values_render() -> None:
    proc = run_helm(*template_args(None, *CR))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("extra", "key"), [(b[1], b[2]) for b in BAD_VALUES], ids=[b[0] for b in BAD_VALUES])
def test_bad_value_fails_naming_the_key(extra: tuple[str, ...], key: str) -> None:
    proc = run_helm(*template_args(None, *extra))
    assert proc.returncode != 0, "helm template accepted a bad value"
    assert key in proc.stderr, proc.stderr


def test_every_values_key_is_documented() -> None:
    documented = documented_keys(VALUES_TEXT)
    paths = value_paths(load_values())
    assert set(documented) == set(paths), set(documented) ^ set(paths)
    leaves = [p for p, v in paths.items() if not (isinstance(v, dict) and v)]
    undocumented = [p for p in leaves if not documented[p] and not any(p.startswith(f + ".") for f in FREE_MAPS)]
    assert undocumented == []
    free = [p for p in FREE_MAPS if p in paths]
    assert all(documented[p] for p in free)


def test_every_values_key_is_in_the_schema_and_vice_versa() -> None:
    paths = value_paths(load_values())
    missing = [p for p in paths
               if not schema_allows_path(SCHEMA, p) and not any(p.startswith(f + ".") for f in FREE_MAPS)]
    assert missing == []
    assert not schema_allows_path(SCHEMA, "controller.replica"), "the check can fail"
    declared = schema_property_paths(SCHEMA)
    # Declared but optional (not set by default): the sub-keys of the cert-manager issuerRef.
    optional = {"webhook.certManager.issuerRef.name", "webhook.certManager.issuerRef.kind",
                "webhook.certManager.issuerRef.group"}
    not_in_values = [p for p in declared if p not in paths and p not in optional
                     and not any(p.startswith(f + ".") for f in FREE_MAPS)]
    assert not_in_values == []
    undescribed = [p for p, sub in declared.items() if not sub.get("description")]
    assert undescribed == []


def test_readme_lists_every_key() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    paths = value_paths(load_values())
    leaves = [p for p, v in paths.items() if not (isinstance(v, dict) and v) or p in FREE_MAPS]
    leaves = [p for p in leaves if not any(p.startswith(f + ".") for f in FREE_MAPS)]
    missing = [p for p in leaves if f"`{p}`" not in readme]
    assert missing == []
