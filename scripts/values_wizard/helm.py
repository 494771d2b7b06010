"""The chart rendered by the real ``helm template`` with the wizard's values.

The values go to a private temporary file (mode 0600, removed afterwards): they may hold a
password. helm checks them against the chart's ``values.schema.json`` first; when that fails, its
complaints are kept (:class:`SchemaError`) and the chart is rendered once more with
``--skip-schema-validation``, so the webhook's rules can still be applied to what the chart makes
of the values. A ``fail`` in the chart's templates becomes a :class:`ChartError`; anything else
helm says is summarised in ``Rendered.failure``. Nothing helm prints is passed on unfiltered:
every message goes through :func:`scrub` first, and the caller shows helm's words only for values
that hold no secret.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from values_wizard import CHART
from values_wizard.errors import Failure

RELEASE = "tcr-addon"
NAMESPACE = "tcr-assistant-system"
TIMEOUT = 120
#: A secret shorter than this is not searched for in helm's messages (it would match ordinary words).
SCRUB_MIN_LENGTH = 4

#: A path in the values: keys and list indices, e.g. ("global", "imagePullSecretsCrs", 0, "name").
ValuesPath = tuple[str | int, ...]


@dataclass(frozen=True)
class SchemaError:
    """One complaint of helm's schema check; ``message`` may quote the value (see :func:`scrub`)."""

    path: ValuesPath
    message: str


@dataclass(frozen=True)
class ChartError:
    """A ``fail`` in the chart's templates that names a value (``global.imagePullSecretsCrs[0].name: ...``)."""

    path: ValuesPath
    where: str  # the path as the chart wrote it
    message: str


@dataclass
class Rendered:
    """What ``helm template`` made of the values: the documents, or why there are none."""

    documents: list[dict[str, Any]] | None = None
    schema_errors: list[SchemaError] = field(default_factory=list)
    chart_errors: list[ChartError] = field(default_factory=list)
    failure: str | None = None  # helm failed for another reason (one scrubbed line)


def cache_bin_dir() -> Path:
    """Where ``scripts/tools`` (``make setup``) puts the helm it builds: ``$TCR_ADDON_CACHE/bin``,
    else ``$XDG_CACHE_HOME/tcr-addon/bin``, else ``~/.cache/tcr-addon/bin``."""
    override = os.environ.get("TCR_ADDON_CACHE")
    if override:
        return Path(override) / "bin"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tcr-addon" / "bin"


def find_helm() -> Path:
    """helm as ``make setup`` builds it, else the one on PATH; :class:`Failure` when there is none."""
    try:
        where = cache_bin_dir()
    except RuntimeError:  # no home directory to look in
        where = None
    if where is not None:
        candidate = where / "helm"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("helm")
    if found:
        return Path(found)
    built = f" (it builds helm into {where})" if where is not None else ""
    raise Failure(
        f"helm is not installed: the values are checked by rendering the chart with `helm template`; "
        f"run `make setup`{built}, or put helm on PATH"
    )


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``<hidden>``, as written or escaped the way helm quotes it.

    Should a secret still be found afterwards (say it overlaps the marker), the whole text becomes
    ``***``, shorter than any secret searched for.
    """
    for secret in secrets:
        if len(secret) < SCRUB_MIN_LENGTH:
            continue
        forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
                 secret.encode("unicode_escape").decode("ascii")}
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "<hidden>")
        if any(form in text for form in forms):
            return "***"
    return text


_SCHEMA_LINE = re.compile(r"^\s*- at '(?P<path>[^']*)': (?P<message>.*)$")
_EXECUTION_ERROR = re.compile(r"execution error at \([^)]*\): (?P<message>.*)$")
_CHART_PATH = re.compile(r"^(?P<where>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*): (?P<message>.*)$")


def _pointer_path(pointer: str) -> ValuesPath:
    """``/global/imagePullSecretsCrs/0/name`` -> ("global", "imagePullSecretsCrs", 0, "name")."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    return tuple(int(p) if p.isdigit() else p for p in parts)


def _dotted_path(where: str) -> ValuesPath:
    """``global.imagePullSecretsCrs[0].name`` -> ("global", "imagePullSecretsCrs", 0, "name")."""
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[A-Za-z_]\w*|\d+", where))


def parse_schema_errors(stderr: str) -> list[SchemaError]:
    """helm's "values don't meet the specifications of the schema(s)" list, innermost errors only."""
    if "don't meet the specifications of the schema" not in stderr:
        return []
    errors = [SchemaError(_pointer_path(m["path"]), m["message"].strip())
              for m in map(_SCHEMA_LINE.match, stderr.splitlines()) if m]
    # "at '/global': validation failed" only announces the errors below it.
    return [e for e in errors
            if not any(len(o.path) > len(e.path) and o.path[:len(e.path)] == e.path for o in errors)]


def parse_chart_error(stderr: str) -> ChartError | None:
    """The chart's own ``fail`` message when it names a value (the chart's validateValues helper)."""
    for line in stderr.splitlines():
        match = _EXECUTION_ERROR.search(line)
        if match:
            named = _CHART_PATH.match(match["message"].strip())
            if named:
                return ChartError(_dotted_path(named["where"]), named["where"], named["message"])
    return None


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    chosen = next((line for line in lines if line.startswith("Error:")), lines[0] if lines else "no message")
    return chosen.removeprefix("Error:").strip()[:300]


def _documents(stdout: str) -> list[dict[str, Any]] | None:
    try:
        return [doc for doc in yaml.safe_load_all(stdout) if isinstance(doc, dict)]
    except yaml.YAMLError:  # its message would quote the manifest, which may hold the password
        return None


def _run(helm: Path, values_file: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", values_file, *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_")}
    try:
        return subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              env=env, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise Failure(f"`helm template` did not finish within {TIMEOUT} s") from None
    except OSError as exc:
        raise Failure(f"cannot run {helm}: {exc.strerror or exc}") from None


def template(values_text: str, secrets: list[str]) -> Rendered:
    """``helm template`` of the chart with ``values_text`` as the values file.

    ``secrets`` (the password or token, and anything else that must not be shown) are removed
    from every message taken from helm.
    """
    helm = find_helm()
    fd, path = tempfile.mkstemp(prefix="tcr-addon-values.", suffix=".yaml")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(values_text)
        rendered = Rendered()
        proc = _run(helm, path)
        if proc.returncode != 0:
            rendered.schema_errors = [SchemaError(e.path, scrub(e.message, secrets))
                                      for e in parse_schema_errors(proc.stderr)]
            if rendered.schema_errors:  # render anyway, for the webhook's rules
                proc = _run(helm, path, "--skip-schema-validation")
    finally:
        Path(path).unlink(missing_ok=True)
    if proc.returncode == 0:
        rendered.documents = _documents(proc.stdout)
        if rendered.documents is None:
            rendered.failure = "its output is not valid YAML"
        return rendered
    chart_error = parse_chart_error(proc.stderr)
    if chart_error is not None:
        rendered.chart_errors.append(
            ChartError(chart_error.path, chart_error.where, scrub(chart_error.message, secrets)))
    else:
        rendered.failure = scrub(_first_error(proc.stderr), secrets)
    return rendered
