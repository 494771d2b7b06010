"""Write the value rules of controller/tcr_assistant/spec/rules.py into the chart.

    PYTHONPATH=scripts .venv/bin/python -m harness.gen_rules [--check] [--chart DIR]

The chart must validate values and ImagePullSecrets without the controller, so two of its files
carry the rules the webhook uses (validation.py, built on rules.py). Only the generated values
are rewritten; every other byte of both files stays:

- ``values.schema.json``: the fields listed in ``schema_fields()``, by JSON path (the
  ``pattern``, ``maxLength`` and ``not`` of the registry entries in global.imagePullSecretsCrs,
  of the hosts-updater's domains and of the helm-test namespace). The file is kept exactly as
  ``json.dumps(indent=2)`` writes it, so writing it back changes nothing else.
- ``crds/imagepullsecrets.tcr.tencentcloudcr.com.yaml``: each line that ends in
  ``# generated: <field>``, one per entry of ``crd_fields()``; the value on that line is
  replaced in the quoting it already has, the marker and every comment stay.
  (``templates/crd-imagepullsecrets.yaml`` renders this same file on upgrade; it has no copy.)

``--check`` writes nothing and exits 1, naming each file and field that differs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import REPO_ROOT
from tcr_assistant.spec import rules
from tcr_assistant.spec.rules import BRACKETED, ESCAPED

CHART_DIR = REPO_ROOT / "chart"
SCHEMA_FILE = "values.schema.json"
CRD_FILE = "crds/imagepullsecrets.tcr.tencentcloudcr.com.yaml"
COMMAND = "PYTHONPATH=scripts .venv/bin/python -m harness.gen_rules"

Value = str | int | list[str]

MARKER = re.compile(
    r"^(?P<head>\s*(?:- )?(?P<key>[-\w$]+): )(?P<value>\S.*?)(?P<tail>\s+# generated: (?P<field>\S+))\s*$"
)


class GenError(RuntimeError):
    pass


@dataclass(frozen=True)
class Difference:
    file: str  # relative to the chart directory
    field: str
    committed: object
    generated: object

    def __str__(self) -> str:
        return (f"chart/{self.file}: {self.field} differs from controller/tcr_assistant/spec/rules.py\n"
                f"  committed: {self.committed!r}\n  generated: {self.generated!r}")


def anchored(pattern: str) -> str:
    return f"^{pattern}$"


def schema_list(empty: str, item: str) -> str:
    """A JSON Schema pattern: `empty` (what means all or none) or a list of `item`s."""
    return anchored(f"({empty}|{rules.name_list(item)})")


def cel_list(empty: str, item: str) -> str:
    """The same as one CEL rule (RE2 inside a CEL string literal: no backslashes)."""
    return f"self.matches('{anchored(empty)}') || self.matches('{anchored(rules.name_list(item))}')"


def schema_fields() -> dict[str, Value]:
    """values.schema.json: JSON path (keys joined by '.') -> value."""
    entry = "properties.global.properties.imagePullSecretsCrs.items.properties"
    secret = f"{entry}.dockerPasswordSecret.properties"
    return {
        f"{entry}.name.maxLength": rules.MAX_NAME_LENGTH,
        f"{entry}.name.pattern": anchored(rules.subdomain(ESCAPED)),
        f"{entry}.namespaces.pattern": schema_list(rules.all_items(ESCAPED), rules.DNS1123_LABEL),
        f"{entry}.serviceAccounts.pattern": schema_list(rules.all_items(ESCAPED), rules.subdomain(ESCAPED)),
        f"{entry}.excludedNamespaces.pattern": schema_list(" *", rules.DNS1123_LABEL),
        f"{entry}.dockerServer.maxLength": rules.SERVER_MAX,
        f"{entry}.dockerServer.pattern": anchored(f"{rules.host(ESCAPED)}(:{rules.port_number()})?"),
        f"{secret}.name.maxLength": rules.DNS1123_SUBDOMAIN_MAX,
        f"{secret}.name.pattern": anchored(rules.subdomain(ESCAPED)),
        f"{secret}.key.maxLength": rules.SECRET_KEY_MAX,
        f"{secret}.key.pattern": anchored(rules.SECRET_KEY),
        f"{secret}.key.not.enum": list(rules.RESERVED_SECRET_KEYS),
        "properties.global.properties.hosts.items.properties.domain.maxLength": rules.DNS1123_SUBDOMAIN_MAX,
        "properties.global.properties.hosts.items.properties.domain.pattern": anchored(rules.host(ESCAPED)),
        "properties.tests.properties.namespace.maxLength": rules.DNS1123_LABEL_MAX,
        "properties.tests.properties.namespace.pattern": anchored(rules.DNS1123_LABEL),
        "properties.podWebhook.properties.excludedNamespaces.items.maxLength": rules.DNS1123_LABEL_MAX,
        "properties.podWebhook.properties.excludedNamespaces.items.pattern": anchored(rules.DNS1123_LABEL),
        **selector_schema_fields(f"{entry}.namespaceSelector.properties"),
        **token_from_schema_fields(f"{entry}.dockerTokenFrom.properties.tcr.properties"),
    }


def token_from_schema_fields(base: str) -> dict[str, Value]:
    """``dockerTokenFrom.tcr`` in values.schema.json (the CRD's ``tokenFrom.tcr``)."""
    host_port = anchored(f"{rules.host(ESCAPED)}(:{rules.port_number()})?")
    return {
        f"{base}.instanceId.maxLength": rules.INSTANCE_ID_MAX,
        f"{base}.instanceId.pattern": anchored(rules.INSTANCE_ID),
        f"{base}.region.maxLength": rules.REGION_MAX,
        f"{base}.region.pattern": anchored(rules.REGION),
        f"{base}.tokenType.enum": list(rules.TOKEN_TYPES),
        f"{base}.endpoint.maxLength": rules.SERVER_MAX,
        f"{base}.endpoint.pattern": host_port,
        f"{base}.webIdentity.properties.stsEndpoint.maxLength": rules.SERVER_MAX,
        f"{base}.webIdentity.properties.stsEndpoint.pattern": host_port,
        f"{base}.apiKeySecretRef.properties.name.maxLength": rules.DNS1123_SUBDOMAIN_MAX,
        f"{base}.apiKeySecretRef.properties.name.pattern": anchored(rules.subdomain(ESCAPED)),
    }


def selector_schema_fields(base: str) -> dict[str, Value]:
    """The LabelSelector's rules (selectors.py) in values.schema.json."""
    def key(path: str) -> dict[str, Value]:
        return {f"{path}.maxLength": rules.LABEL_KEY_MAX, f"{path}.pattern": anchored(rules.label_key(ESCAPED)),
                f"{path}.not.pattern": f"^[^/]{{{rules.DNS1123_SUBDOMAIN_MAX + 1},}}/"}

    def value(path: str) -> dict[str, Value]:
        return {f"{path}.maxLength": rules.LABEL_NAME_MAX, f"{path}.pattern": anchored(rules.LABEL_VALUE)}

    expression = f"{base}.matchExpressions.items.properties"
    return {
        f"{base}.matchLabels.maxProperties": rules.SELECTOR_LABELS_MAX,
        **key(f"{base}.matchLabels.propertyNames"),
        **value(f"{base}.matchLabels.additionalProperties"),
        f"{base}.matchExpressions.maxItems": rules.SELECTOR_EXPRESSIONS_MAX,
        **key(f"{expression}.key"),
        f"{expression}.values.maxItems": rules.SELECTOR_VALUES_MAX,
        **value(f"{expression}.values.items"),
    }


def crd_fields() -> dict[str, tuple[str, Value]]:
    """The CRD: marker (`# generated: <field>`) -> (the YAML key on that line, value)."""
    port_digits = len(str(rules.PORT_MAX))
    host_port = anchored(f"{rules.host(BRACKETED)}(:{rules.PORT})?")
    return {
        "metadata.name:rule": (
            "rule", f"!has(self.metadata.name) || size(self.metadata.name) <= {rules.MAX_NAME_LENGTH}"),
        "spec.namespaces:maxLength": ("maxLength", rules.LIST_MAX),
        "spec.namespaces:rule": ("rule", cel_list(rules.all_items(BRACKETED), rules.DNS1123_LABEL)),
        "spec.serviceAccounts:maxLength": ("maxLength", rules.LIST_MAX),
        "spec.serviceAccounts:rule": ("rule", cel_list(rules.all_items(BRACKETED), rules.subdomain(BRACKETED))),
        "spec.serviceAccounts:rule-item-length": (
            "rule", f"!self.matches('[^, ]{{{rules.DNS1123_SUBDOMAIN_MAX + 1}}}')"),
        "spec.excludedNamespaces:maxLength": ("maxLength", rules.LIST_MAX),
        "spec.excludedNamespaces:rule": ("rule", cel_list(" *", rules.DNS1123_LABEL)),
        "spec.docker.server:maxLength": ("maxLength", rules.SERVER_MAX),
        "spec.docker.server:rule-scheme": ("rule", f"!self.matches('^{rules.SCHEME}')"),
        "spec.docker.server:rule-host": ("rule", f"self.matches('{host_port}')"),
        "spec.docker.server:rule-port": (
            "rule",
            f"!self.matches('^[^:]*:[0-9]{{1,{port_digits}}}$') || int(self.split(':')[1]) <= {rules.PORT_MAX}"),
        "spec.docker.server:rule-host-length": ("rule", f"size(self.split(':')[0]) <= {rules.DNS1123_SUBDOMAIN_MAX}"),
        "spec.docker.username:maxLength": ("maxLength", rules.USERNAME_MAX),
        "spec.docker.password:maxLength": ("maxLength", rules.PASSWORD_MAX),
        "spec.docker.passwordSecretRef.name:maxLength": ("maxLength", rules.DNS1123_SUBDOMAIN_MAX),
        "spec.docker.passwordSecretRef.name:pattern": ("pattern", anchored(rules.subdomain(ESCAPED))),
        "spec.docker.passwordSecretRef.key:maxLength": ("maxLength", rules.SECRET_KEY_MAX),
        "spec.docker.passwordSecretRef.key:pattern": ("pattern", anchored(rules.SECRET_KEY)),
        "spec.docker.passwordSecretRef.key:rule": (
            "rule", " && ".join(f"self != '{key}'" for key in rules.RESERVED_SECRET_KEYS)),
        **selector_crd_fields("spec.namespaceSelector"),
        **token_from_crd_fields("spec.docker.tokenFrom.tcr", host_port),
    }


def token_from_crd_fields(base: str, host_port: str) -> dict[str, tuple[str, Value]]:
    """``tokenFrom.tcr``: the instance, the region, the token type and the API hosts."""
    hosts = {f"{field}:{suffix}": value for field in (f"{base}.endpoint", f"{base}.webIdentity.stsEndpoint")
             for suffix, value in (("maxLength", ("maxLength", rules.SERVER_MAX)),
                                   ("rule-host", ("rule", f"self.matches('{host_port}')")))}
    return {
        f"{base}.instanceId:maxLength": ("maxLength", rules.INSTANCE_ID_MAX),
        f"{base}.instanceId:pattern": ("pattern", anchored(rules.INSTANCE_ID)),
        f"{base}.region:maxLength": ("maxLength", rules.REGION_MAX),
        f"{base}.region:pattern": ("pattern", anchored(rules.REGION)),
        f"{base}.tokenType:enum": ("enum", list(rules.TOKEN_TYPES)),
        f"{base}.apiKeySecretRef.name:maxLength": ("maxLength", rules.DNS1123_SUBDOMAIN_MAX),
        f"{base}.apiKeySecretRef.name:pattern": ("pattern", anchored(rules.subdomain(ESCAPED))),
        **hosts,
    }


def selector_crd_fields(base: str) -> dict[str, tuple[str, Value]]:
    """The LabelSelector's rules (selectors.py) in the CRD."""
    prefix = f"size(%s.split('/')[0]) <= {rules.DNS1123_SUBDOMAIN_MAX}"
    return {
        f"{base}.matchLabels:maxProperties": ("maxProperties", rules.SELECTOR_LABELS_MAX),
        f"{base}.matchLabels.value:maxLength": ("maxLength", rules.LABEL_NAME_MAX),
        f"{base}.matchLabels.value:pattern": ("pattern", anchored(rules.LABEL_VALUE)),
        f"{base}.matchLabels:rule-keys": ("rule", f"self.all(k, k.matches('{anchored(rules.label_key(BRACKETED))}'))"),
        f"{base}.matchLabels:rule-key-prefix": ("rule", f"self.all(k, !k.contains('/') || {prefix % 'k'})"),
        f"{base}.matchExpressions:maxItems": ("maxItems", rules.SELECTOR_EXPRESSIONS_MAX),
        f"{base}.matchExpressions.key:rule-prefix": ("rule", f"!self.key.contains('/') || {prefix % 'self.key'}"),
        f"{base}.matchExpressions.key:maxLength": ("maxLength", rules.LABEL_KEY_MAX),
        f"{base}.matchExpressions.key:pattern": ("pattern", anchored(rules.label_key(ESCAPED))),
        f"{base}.matchExpressions.values:maxItems": ("maxItems", rules.SELECTOR_VALUES_MAX),
        f"{base}.matchExpressions.values.item:maxLength": ("maxLength", rules.LABEL_NAME_MAX),
        f"{base}.matchExpressions.values.item:pattern": ("pattern", anchored(rules.LABEL_VALUE)),
    }


# -- values.schema.json ----------------------------------------------------------------------


def dump_schema(schema: Any) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def render_schema(text: str, fields: Mapping[str, Value]) -> tuple[str, list[Difference]]:
    """The schema with `fields` set, and what differed."""
    schema = json.loads(text)
    if dump_schema(schema) != text:
        raise GenError(f"chart/{SCHEMA_FILE} is not in json.dumps(indent=2) form: writing it back would change "
                       "more than the generated fields (reformat it first)")
    differences = []
    for path, value in fields.items():
        *parents, leaf = path.split(".")
        node = schema
        for key in parents:
            if not isinstance(node, dict) or key not in node:
                raise GenError(f"chart/{SCHEMA_FILE}: {path}: there is no {key!r} on the way")
            node = node[key]
        if not isinstance(node, dict) or leaf not in node:
            raise GenError(f"chart/{SCHEMA_FILE}: {path}: the field is missing (generated fields are replaced, "
                           "never added)")
        if node[leaf] != value:
            differences.append(Difference(SCHEMA_FILE, path, node[leaf], value))
            node[leaf] = value
    return dump_schema(schema), differences


# -- the CRD ---------------------------------------------------------------------------------


def yaml_scalar(value: Value, like: str) -> str:
    """`value` as a YAML scalar in the quoting of `like` (double, single or plain)."""
    if isinstance(value, list):
        raise GenError("lists are not written into YAML lines")
    if isinstance(value, int):
        out = str(value)
    elif not value.isprintable():
        raise GenError(f"{value!r}: not printable")
    elif like.startswith('"'):
        out = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif like.startswith("'"):
        out = "'" + value.replace("'", "''") + "'"
    else:
        raise GenError(f"{value!r}: a generated string must be quoted in the file (it is {like})")
    if yaml.safe_load(f"v: {out}")["v"] != value:
        raise GenError(f"{value!r} does not survive YAML as {out}")
    return out


def render_crd(text: str, fields: Mapping[str, tuple[str, Value]]) -> tuple[str, list[Difference]]:
    """The CRD with every marked line's value set from `fields`, and what differed."""
    lines = text.split("\n")
    seen: dict[str, int] = {}
    differences = []
    for number, line in enumerate(lines, start=1):
        if "# generated:" not in line or line.lstrip().startswith("#"):
            continue
        match = MARKER.match(line)
        if match is None:
            raise GenError(f"chart/{CRD_FILE}:{number}: a '# generated:' marker must end a 'key: value' line")
        field = match["field"]
        if field not in fields:
            raise GenError(f"chart/{CRD_FILE}:{number}: unknown generated field {field!r}")
        if field in seen:
            raise GenError(f"chart/{CRD_FILE}:{number}: {field!r} is marked twice (first on line {seen[field]})")
        seen[field] = number
        key, value = fields[field]
        if match["key"] != key:
            raise GenError(f"chart/{CRD_FILE}:{number}: {field!r} marks a {match['key']!r} line, expected {key!r}")
        committed = yaml.safe_load(f"v: {match['value']}")["v"]
        if committed != value:
            differences.append(Difference(f"{CRD_FILE}:{number}", f"{field} ({key})", committed, value))
            lines[number - 1] = match["head"] + yaml_scalar(value, match["value"]) + match["tail"]
    missing = sorted(set(fields) - set(seen))
    if missing:
        raise GenError(f"chart/{CRD_FILE}: no line is marked '# generated: <field>' for {', '.join(missing)}")
    return "\n".join(lines), differences


# -- both ------------------------------------------------------------------------------------


def generate(chart_dir: Path = CHART_DIR, *, check: bool = False) -> list[Difference]:
    """Bring both files in `chart_dir` in line with rules.py (unless `check`); what differed."""
    differences: list[Difference] = []
    for name, render in ((SCHEMA_FILE, lambda text: render_schema(text, schema_fields())),
                         (CRD_FILE, lambda text: render_crd(text, crd_fields()))):
        path = chart_dir / name
        text = path.read_text()
        new_text, found = render(text)
        differences += found
        if not check and new_text != text:
            path.write_text(new_text)
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.gen_rules",
        description="Write the value rules of controller/tcr_assistant/spec/rules.py into the chart's "
        "values.schema.json and CRD (only the generated fields; everything else stays).",
    )
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and name each file and field that differs")
    parser.add_argument("--chart", type=Path, default=CHART_DIR, help=f"the chart directory (default {CHART_DIR})")
    args = parser.parse_args(argv)
    try:
        differences = generate(args.chart, check=args.check)
    except (GenError, OSError, ValueError) as error:
        print(f"harness.gen_rules: error: {error}", file=sys.stderr)
        return 2
    for difference in differences:
        print(difference, file=sys.stderr if args.check else sys.stdout)
    if args.check and differences:
        print(f"{len(differences)} generated field(s) out of date: run `{COMMAND}`", file=sys.stderr)
        return 1
    if not args.check:
        print(f"{len(differences)} field(s) rewritten" if differences else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
