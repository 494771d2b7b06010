"""Helpers for the chart tests: render the chart with the real helm binary, walk values and schema."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from support import CHART_DIR, CRD_FILE, REPO_ROOT, helm, load_crd

__all__ = ["CHART_DIR", "CRD_FILE", "REPO_ROOT", "load_crd"]  # the chart suite imports them from here

CI_DIR = CHART_DIR / "ci"
RELEASE = "tcr-addon"
NAMESPACE = "tcr-assistant-system"
#: The oldest and the newest Kubernetes the chart supports: built-in objects are validated against both.
KUBE_VERSIONS = ("1.30.0", "1.37.0")

#: Render cases: name -> values file (None = chart defaults).
CI_FILES = sorted(CI_DIR.glob("*.yaml"))
CASES: dict[str, Path | None] = {"defaults": None, **{path.stem: path for path in CI_FILES}}

Manifest = dict[str, Any]


def run_helm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run helm (no cluster needed unless the arguments say so); never raises on failure."""
    return helm(*args, timeout=timeout, check=False)


def template_args(values: Path | None = None, *extra: str) -> list[str]:
    args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, "--include-crds"]
    if values is not None:
        args += ["-f", str(values)]
    return [*args, *extra]


@functools.cache
def render(values: Path | None = None, *extra: str) -> tuple[Manifest, ...]:
    """`helm template` the chart; every non-empty document, parsed. Fails the test on error."""
    proc = run_helm(*template_args(values, *extra))
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def by_kind(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m.get("kind") == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name}, found {len(found)}"
    return found[0]


def is_hook(manifest: Manifest) -> bool:
    return "helm.sh/hook" in (manifest.get("metadata", {}).get("annotations") or {})


def pod_specs(manifests: tuple[Manifest, ...]) -> list[tuple[str, dict[str, Any]]]:
    """(description, pod spec) of every Pod-bearing object in a render."""
    out: list[tuple[str, dict[str, Any]]] = []
    for m in manifests:
        kind, name = m.get("kind"), m.get("metadata", {}).get("name")
        if kind == "Pod":
            out.append((f"Pod/{name}", m["spec"]))
        elif kind in ("Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet"):
            out.append((f"{kind}/{name}", m["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            out.append((f"{kind}/{name}", m["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def load_values() -> dict[str, Any]:
    data = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert isinstance(data, dict)
    return data


def value_paths(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value for every key of values.yaml (parents and leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        out[path] = value
        if isinstance(value, dict) and value:
            out.update(value_paths(value, path + "."))
    return out


def documented_keys(values_text: str) -> dict[str, bool]:
    """Dotted path of every key in values.yaml -> whether a `# --` comment block sits right above it.

    Comment lines directly above a key (same indentation) belong to it; commented-out examples
    after a key (`# - name: …`) are ignored.
    """
    result: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for raw in values_text.splitlines():
        stripped = raw.strip()
        if not stripped:
            comment = []
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        if stripped.startswith("- ") or ":" not in stripped:
            comment = []
            continue
        key = stripped.split(":", 1)[0].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([name for _, name in stack] + [key])
        result[path] = bool(comment) and comment[0].startswith("# --")
        stack.append((indent, key))
        comment = []
    return result


def schema_allows_path(schema: dict[str, Any], path: str) -> bool:
    """Whether the dotted path is reachable in the JSON schema (via properties or additionalProperties)."""
    node: Any = schema
    for part in path.split("."):
        if not isinstance(node, dict):
            return False
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return node.get("additionalProperties") is True
    return True


def schema_property_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Dotted path -> subschema for every declared property (not into array items or free maps)."""
    out: dict[str, dict[str, Any]] = {}
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        out[path] = sub
        out.update(schema_property_paths(sub, path + "."))
    return out


def openapi_to_jsonschema(node: Any) -> Any:
    """The CRD's openAPIV3Schema as plain JSON schema (drop the x-kubernetes-* extensions)."""
    if isinstance(node, dict):
        return {k: openapi_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if isinstance(node, list):
        return [openapi_to_jsonschema(v) for v in node]
    return node


def case_values(name: str) -> dict[str, Any]:
    """The values file of a render case as a dict ({} for the chart defaults)."""
    path = CASES[name]
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data
