"""Validation of the values, reported per option: the chart's schema and the webhook's own rules.

The values are rendered by the real chart (``helm template``, see ``helm``) and each
ImagePullSecret it makes is checked with the webhook's rules
(``tcr_assistant.spec.validation.validate_image_pull_secret``); the values are also checked against the
values schema (``--schema``, by default the chart's ``values.schema.json``), and helm checks them
against the chart's schema. Every problem is reported as ``--option: message``: the webhook's
messages first (they say most), then one schema message for each option they did not name. No
message quotes a password or an issued token.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from values_wizard import CHART, helm
from values_wizard.errors import BadOption, Failure
from values_wizard.helm import ValuesPath
from values_wizard.plan import Credentials, Plan

DEFAULT_SCHEMA = CHART / "values.schema.json"

#: (option, message)
Problem = tuple[str, str]

_VALUES_OPTIONS = {
    "name": "--name",
    "namespaces": "--namespaces",
    "serviceAccounts": "--service-accounts",
    "excludedNamespaces": "--exclude-namespaces",
    "namespaceSelector": "--namespace-selector",
    "dockerServer": "--registry",
    "dockerPasswordSecret": "--existing-secret",
    "dockerTokenFrom": "--mint-in-cluster",
}
#: dockerTokenFrom.tcr's keys (values) and spec.docker.tokenFrom.tcr's (the webhook) -> their option.
_TOKEN_FROM_OPTIONS = {
    "instanceId": "--instance-id",
    "region": "--region",
    "tokenType": "--token-type",
    "endpoint": "--endpoint",
    "apiKeySecretRef": "--api-key-secret",
    "webIdentity": "--web-identity",
}
#: Values keys whose content may be quoted in a message (never the password; the user name only
#: when the user typed it).
_PLAIN_KEYS = {"name", "namespaces", "serviceAccounts", "excludedNamespaces", "namespaceSelector", "matchLabels",
               "matchExpressions", "operator", "values", "type", "dockerServer", "key",
               "domain", "ip", "disabled", "region", "longregion", "namespace",
               "dockerTokenFrom", "tcr", "instanceId", "tokenType", "endpoint", "apiKeySecretRef", "webIdentity"}


def load_schema(path: str) -> dict[str, Any]:
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadOption("--schema", f"{path} does not exist (the chart's values.schema.json)") from None
    except (OSError, ValueError) as exc:
        raise BadOption("--schema", f"cannot read {path}: {exc}") from None
    if not isinstance(schema, dict):
        raise BadOption("--schema", f"{path} is not a JSON schema object")
    return schema


def secrets_of(creds: Credentials) -> list[str]:
    """What no message may show: the password or token, and an issued user name."""
    secrets = [creds.password] if creds.password else []
    if creds.username_option == "--issue-token" and creds.username:
        secrets.append(creds.username)
    return secrets


# --------------------------------------------------------------------------------------------
# The webhook's rules, on the ImagePullSecrets the chart renders


def _spec_option(path: str, creds: Credentials) -> str:
    if path == "metadata.name":
        return "--name"
    if path.startswith("spec.docker.passwordSecretRef"):
        return "--existing-secret"
    if path.startswith("spec.namespaceSelector"):
        return "--namespace-selector"
    if path.startswith("spec.docker.tokenFrom"):
        parts = path.split(".")
        return _TOKEN_FROM_OPTIONS.get(parts[4], "--mint-in-cluster") if len(parts) > 4 else "--mint-in-cluster"
    return {
        "spec.namespaces": "--namespaces",
        "spec.serviceAccounts": "--service-accounts",
        "spec.excludedNamespaces": "--exclude-namespaces",
        "spec.docker.server": "--registry",
        "spec.docker.username": creds.username_option,
        "spec.docker.password": creds.password_option,
        "spec.docker": creds.password_option,
    }.get(path, path)


def image_pull_secrets(documents: Sequence[Mapping[str, Any]], plan: Plan) -> list[Mapping[str, Any]]:
    """The rendered ImagePullSecrets, one per registry of the plan, in its order."""
    found = [doc for doc in documents if doc.get("kind") == "ImagePullSecret"]
    if len(found) != len(plan.registries):
        raise Failure(
            f"internal error: `helm template` rendered {len(found)} ImagePullSecret(s) from "
            f"{len(plan.registries)} registr{'y' if len(plan.registries) == 1 else 'ies'} (chart and wizard disagree)"
        )
    return found


def rendered_password(docker: Mapping[str, Any], documents: Sequence[Mapping[str, Any]]) -> Any:
    """The password an ImagePullSecret's ``spec.docker`` gets: inline, or from a rendered Secret it references
    (the chart keeps values' passwords in a Secret of its own)."""
    ref = docker.get("passwordSecretRef")
    if not isinstance(ref, Mapping):
        return docker.get("password")
    for doc in documents:
        metadata = doc.get("metadata")
        if doc.get("kind") == "Secret" and isinstance(metadata, Mapping) and metadata.get("name") == ref.get("name"):
            encoded = (doc.get("data") or {}).get(ref.get("key") or "password")
            return base64.b64decode(encoded).decode("utf-8", "replace") if isinstance(encoded, str) else None
    return None


def check_credentials_survive(ips: Sequence[Mapping[str, Any]], documents: Sequence[Mapping[str, Any]],
                              values: Mapping[str, Any]) -> None:
    """The chart must carry server, user name and password (or dockerTokenFrom) over unchanged; the
    message names no value."""
    crs = values["global"]["imagePullSecretsCrs"]
    for cr, doc in zip(crs, ips, strict=True):
        spec = doc.get("spec")
        docker = spec.get("docker") if isinstance(spec, Mapping) else None
        if not isinstance(docker, Mapping):
            continue  # the webhook's rules report it
        if "dockerTokenFrom" in cr and (docker.get("tokenFrom") != cr["dockerTokenFrom"] or any(
                key in docker for key in ("username", "password", "passwordSecretRef"))):
            raise Failure(
                f"internal error: `helm template` renders ImagePullSecret {cr['name']!r} with another "
                "spec.docker.tokenFrom than dockerTokenFrom, or with a user name or password (chart and wizard "
                "disagree)"
            )
        rendered = {"server": docker.get("server"), "username": docker.get("username"),
                    "password": rendered_password(docker, documents)}
        for key, field in (("dockerServer", "server"), ("dockerUsername", "username"), ("dockerPassword", "password")):
            if key in cr and rendered[field] != cr[key]:
                raise Failure(
                    f"internal error: `helm template` renders ImagePullSecret {cr['name']!r} with another "
                    f"spec.docker.{field} than the values hold (chart and wizard disagree)"
                )


def webhook_problems(ips: Sequence[Mapping[str, Any]], plan: Plan, creds: Credentials) -> list[Problem]:
    """The webhook's verdict on each rendered ImagePullSecret (one per registry, in order), per option."""
    from tcr_assistant.spec.validation import validate_image_pull_secret

    problems: list[Problem] = []
    for (name, domain, name_option), obj in zip(plan.registries, ips, strict=True):
        errors = validate_image_pull_secret(obj)
        # A name made from a bad domain: the domain's own message says it better.
        made_from_bad_domain = name_option == "--registry" and any(e.field == "spec.docker.server" for e in errors)
        about_name = f"ImagePullSecret name {name!r}" + (
            f" (made from {domain!r}; give --name)" if name_option == "--registry" else ""
        )
        metadata = obj.get("metadata")
        rendered_name = metadata.get("name") if isinstance(metadata, Mapping) else None
        misread = rendered_name != name  # e.g. 123 or null: YAML reads the chart's output as a number, a null
        if misread and not made_from_bad_domain:
            problems.append((name_option, f"{about_name}: the chart renders it as {rendered_name!r}, not as that name"))
        spec = obj.get("spec")
        for error in errors:
            option = _spec_option(error.field, creds)
            if error.field == "metadata.name" and (misread or made_from_bad_domain):
                continue
            if error.field.startswith("spec.docker.passwordSecretRef") and creds.secret_name is None:
                continue  # the chart's own credentials Secret, keyed by the name: reported for the name
            if error.field == "metadata.name":
                option = name_option
                message = f"{about_name}: {error.message}"
            elif option == "--registry":
                message = f"{domain!r} {error.message}"
            elif error.field in ("spec.namespaces", "spec.serviceAccounts", "spec.excludedNamespaces"):
                value = spec.get(error.field.removeprefix("spec.")) if isinstance(spec, Mapping) else None
                message = f"{value!r}: {error.message}"
            else:
                message = error.message  # the validation module never quotes passwords
            problems.append((option, message))
    return problems


# --------------------------------------------------------------------------------------------
# The values schema (ours through jsonschema, the chart's through helm)


def path_option(path: ValuesPath, plan: Plan, creds: Credentials) -> tuple[str, bool]:
    """The option a values path comes from, and whether its content must not be shown."""
    option, secret = "values", True
    if path[:2] == ("global", "imagePullSecretsCrs") and len(path) >= 4:
        key = str(path[3])
        if key == "name" and isinstance(path[2], int) and path[2] < len(plan.registries):
            option = plan.registries[path[2]][2]
        elif key == "dockerUsername":
            option = creds.username_option
        elif key == "dockerPassword":
            option = creds.password_option
        elif key == "dockerTokenFrom" and len(path) >= 6:
            option = _TOKEN_FROM_OPTIONS.get(str(path[5]), "--mint-in-cluster")
        else:
            option = _VALUES_OPTIONS.get(key, "values")
    elif path[:2] == ("global", "hosts") and len(path) >= 3 and isinstance(path[2], int) \
            and path[2] < len(plan.hosts):
        option = plan.hosts[path[2]].option
    elif path[:2] == ("global", "cluster"):
        option = "--region"
    elif path[:1] == ("tests",):
        option = "--namespaces"  # tests.namespace is chosen from the served namespaces
    last = str(path[-1]) if path else ""
    if last in _PLAIN_KEYS or (last == "dockerUsername" and creds.username_option != "--issue-token"):
        secret = False
    return option, secret


def schema_problems(values: Mapping[str, Any], schema: Mapping[str, Any], plan: Plan,
                    creds: Credentials) -> list[Problem]:
    """The values against ``schema`` (``--schema``), per option."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    problems: list[Problem] = []
    for error in sorted(validator.iter_errors(values), key=lambda e: [str(p) for p in e.absolute_path]):
        path = tuple(error.absolute_path)
        option, secret = path_option(path, plan, creds)
        where = "/".join(str(p) for p in path)
        if secret:
            problems.append((option, f"does not match the chart's values schema at {where} (rule {error.validator})"))
        else:
            problems.append((option, f"the chart's values schema refuses {where}: {error.message}"))
    return problems


def helm_problems(rendered: helm.Rendered, plan: Plan, creds: Credentials) -> list[Problem]:
    """What helm refused: the chart's schema, or a ``fail`` in its templates, per option."""
    problems: list[Problem] = []
    for error in rendered.schema_errors:
        option, secret = path_option(error.path, plan, creds)
        where = "/".join(str(p) for p in error.path)
        if secret:
            problems.append((option, f"does not match the chart's values schema at {where} (helm template)"))
        else:
            problems.append((option, f"the chart's values schema refuses {where} (helm template): {error.message}"))
    for chart_error in rendered.chart_errors:
        option, _ = path_option(chart_error.path, plan, creds)
        # The chart's own messages quote no password; the text is scrubbed all the same.
        problems.append((option, f"the chart refuses {chart_error.where}: {chart_error.message}"))
    return problems


def validate(values: Mapping[str, Any], text: str, plan: Plan, creds: Credentials,
             schema: Mapping[str, Any]) -> list[str]:
    """Every problem as ``--option: message`` (deduplicated, in a stable order); [] = valid.

    ``text`` is the values file as it will be written (``values`` read back from it). Raises
    :class:`Failure` when helm is missing or the chart cannot be rendered for another reason.
    """
    rendered = helm.template(text, secrets_of(creds))
    first: list[Problem] = []
    if rendered.documents is not None:
        ips = image_pull_secrets(rendered.documents, plan)
        check_credentials_survive(ips, rendered.documents, values)
        first = webhook_problems(ips, plan, creds)
    problems: list[str] = []
    reported: set[str] = set()
    for option, message in first:
        line = f"{option}: {message}"
        if line not in problems:
            problems.append(line)
        reported.add(option)
    for option, message in [*schema_problems(values, schema, plan, creds), *helm_problems(rendered, plan, creds)]:
        if option in reported:
            continue  # already said, by the webhook's rules or an earlier schema message
        problems.append(f"{option}: {message}")
        reported.add(option)
    if not problems and rendered.documents is None:
        raise Failure(f"`helm template` cannot render the chart with these values: {rendered.failure}")
    return problems
