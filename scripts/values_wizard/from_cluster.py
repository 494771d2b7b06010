"""``--from-cluster``: chart values from the ImagePullSecrets that already exist in a cluster.

For migrating from hand-made ImagePullSecret objects (the TKE add-on's, or ours created with
kubectl): every ImagePullSecret (``tcr.tencentcloudcr.com/v1``, cluster-scoped) of the cluster
that ``KUBECONFIG`` (or ``~/.kube/config``) and ``--context`` point at, as kubectl reads it, becomes
one ``global.imagePullSecretsCrs`` entry with the same name, scope and credentials, so that the
chart installed with these values owns objects of the same names and the same effect.

The rules (also in ``--help`` and the README):

* ``spec.namespaces`` / ``spec.serviceAccounts`` are copied (absent: ``"*"``, what absent means);
  ``spec.excludedNamespaces`` and ``spec.namespaceSelector`` are copied unless empty (empty and
  absent mean the same); ``spec.docker.server`` / ``username`` become ``dockerServer`` /
  ``dockerUsername``.
* An inline ``spec.docker.password`` becomes ``dockerPassword`` (the chart keeps it in its Secret
  ``tcr-assistant-registry-credentials`` and the ImagePullSecret references it);
  ``spec.docker.passwordSecretRef {name, key}`` becomes ``dockerPasswordSecret {name, key}`` (a
  Secret in the release namespace, as before: the add-on's own).
* What no chart value expresses and Helm would lose is refused, naming the object and the field:
  other spec or docker fields, owner references, finalizers other than the controller's own, an
  object being deleted. Labels and annotations stay on the object (Helm leaves the metadata it
  does not render).
* An object annotated ``meta.helm.sh/release-name`` with this release (``--release`` in
  ``--release-namespace``) is the chart's own already: it is skipped with a note. One of another
  release is refused, naming that release.
* ``global.hosts``: from ConfigMap ``updater-config`` (key ``config.json``, the hosts-updater's
  format) in the release namespace when there is one that no Helm release owns; otherwise the
  ``--host`` flags alone. A ``--host`` for the same domain replaces the cluster's entry.

Nothing read here is ever printed in full: the messages name objects and fields, never a password.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from values_wizard import helm
from values_wizard.check import rendered_password
from values_wizard.errors import Failure

GROUP = "tcr.tencentcloudcr.com"
VERSION = "v1"
PLURAL = "imagepullsecrets"
RELEASE_NAME = "meta.helm.sh/release-name"
RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
#: kubectl apply's record of what it applied: no effect on the object, not carried over.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: The controller's own finalizer (``tcr_assistant.spec.api.FINALIZER``): the chart's objects get it too.
CONTROLLER_FINALIZER = f"{GROUP}/cleanup"
HOSTS_CONFIGMAP = "updater-config"
HOSTS_KEY = "config.json"
DEFAULT_RELEASE = helm.RELEASE
DEFAULT_RELEASE_NAMESPACE = helm.NAMESPACE
TIMEOUT = 30

_SPEC_KEYS = {"namespaces", "serviceAccounts", "excludedNamespaces", "namespaceSelector", "docker"}
_DOCKER_KEYS = {"server", "username", "password", "passwordSecretRef"}
_REF_KEYS = {"name", "key"}
_SELECTOR_KEYS = {"matchLabels", "matchExpressions"}
_EXPRESSION_KEYS = {"key", "operator", "values"}

#: values key of an entry -> the ImagePullSecret field it comes from (for messages).
VALUES_TO_FIELD = {
    "name": "metadata.name",
    "namespaces": "spec.namespaces",
    "serviceAccounts": "spec.serviceAccounts",
    "excludedNamespaces": "spec.excludedNamespaces",
    "namespaceSelector": "spec.namespaceSelector",
    "type": "type",
    "dockerServer": "spec.docker.server",
    "dockerUsername": "spec.docker.username",
    "dockerPassword": "spec.docker.password",
    "dockerPasswordSecret": "spec.docker.passwordSecretRef",
}


@dataclass
class Taken:
    """What the cluster gave: the values entries (in name order), hosts, notes and the problems."""

    crs: list[dict[str, Any]] = field(default_factory=list)
    hosts: list[dict[str, Any]] | None = None  # None: no usable ConfigMap (the --host flags alone)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # names owned by this release already

    @property
    def passwords(self) -> list[str]:
        return [cr["dockerPassword"] for cr in self.crs if isinstance(cr.get("dockerPassword"), str)]


# --------------------------------------------------------------------------------------------
# Reading the cluster


def kubeconfig_location(env: Mapping[str, str]) -> str:
    """Where kubectl reads its configuration: ``$KUBECONFIG`` (a ':'-separated list, merged), else
    ``~/.kube/config``."""
    return env.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def connect(env: Mapping[str, str], context: str | None) -> Any:
    """An API client for the cluster of the kubeconfig (``context``, else its current context)."""
    from kubernetes import config

    location = kubeconfig_location(env)
    try:
        return config.new_client_from_config(config_file=location, context=context, persist_config=False)
    except config.ConfigException as exc:
        raise Failure(f"--from-cluster: cannot use the kubeconfig ({location}): {exc}") from None
    except OSError as exc:
        raise Failure(f"--from-cluster: cannot read the kubeconfig ({location}): {exc.strerror or exc}") from None


def _api_failure(what: str, exc: Exception) -> Failure:
    """A message that names the status, never the response body (it could quote an object)."""
    status = getattr(exc, "status", None)
    if status:
        reason = getattr(exc, "reason", "") or ""
        return Failure(f"--from-cluster: {what}: the API server answered {status} {reason}".rstrip())
    return Failure(f"--from-cluster: {what}: {type(exc).__name__}: cannot reach the API server")


def list_image_pull_secrets(api: Any) -> list[dict[str, Any]]:
    """Every ImagePullSecret of the cluster, as the API returns them (plain JSON), in pages."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api)
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": 500, "_request_timeout": TIMEOUT}
        if token:
            kwargs["_continue"] = token
        try:
            page = cast(dict[str, Any], custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs))
        except ApiException as exc:
            if exc.status == 404:
                raise Failure(
                    f"--from-cluster: the cluster serves no ImagePullSecrets ({GROUP}/{VERSION}): "
                    "there is nothing to take over"
                ) from None
            raise _api_failure(f"listing ImagePullSecrets ({GROUP}/{VERSION})", exc) from None
        except Exception as exc:  # urllib3: connection refused, TLS, timeouts
            raise _api_failure("listing ImagePullSecrets", exc) from None
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return sorted(items, key=lambda obj: str((obj.get("metadata") or {}).get("name")))


def read_hosts_configmap(api: Any, namespace: str) -> dict[str, Any] | None:
    """ConfigMap ``updater-config`` of ``namespace`` as plain JSON; None when there is none."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    try:
        configmap = core.read_namespaced_config_map(HOSTS_CONFIGMAP, namespace, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_failure(f"reading ConfigMap {namespace}/{HOSTS_CONFIGMAP}", exc) from None
    except Exception as exc:
        raise _api_failure(f"reading ConfigMap {namespace}/{HOSTS_CONFIGMAP}", exc) from None
    result: dict[str, Any] = api.sanitize_for_serialization(configmap)
    return result


# --------------------------------------------------------------------------------------------
# Objects -> values


def helm_owner(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """(release, namespace) of the Helm release that owns an object, None for none."""
    annotations = metadata.get("annotations") or {}
    release = annotations.get(RELEASE_NAME)
    if not release:
        return None
    return str(release), str(annotations.get(RELEASE_NAMESPACE) or "")


def _ownership(kind: str, name: str, metadata: Mapping[str, Any], release: str, namespace: str) -> str | None:
    """"skip" when this release owns it already, a problem when another does, None when none does."""
    owner = helm_owner(metadata)
    if owner is None:
        return None
    if owner == (release, namespace):
        return "skip"
    return (
        f"{kind} {name!r} belongs to Helm release {owner[0]!r} (namespace {owner[1] or '?'!r}), not to "
        f"{release!r} in {namespace!r}: manage it with that release, or give its name with --release and "
        "--release-namespace"
    )


def _refuse(name: str, where: str, why: str) -> str:
    return f"ImagePullSecret {name!r}: {where}: {why}"


def _metadata_problems(name: str, metadata: Mapping[str, Any]) -> list[str]:
    # Labels and annotations are not values but are not lost either: Helm's patch (three-way, or
    # server-side apply) leaves the metadata it does not render on the object it adopts.
    problems = []
    for owner in metadata.get("ownerReferences") or []:
        problems.append(_refuse(name, "metadata.ownerReferences",
                                f"owned by {owner.get('kind')} {owner.get('name')!r}, which would delete or "
                                "rewrite it; the chart cannot keep that owner"))
    for finalizer in metadata.get("finalizers") or []:
        if finalizer != CONTROLLER_FINALIZER:
            problems.append(_refuse(name, "metadata.finalizers",
                                    f"{finalizer!r} is not the controller's; the chart cannot set it"))
    if metadata.get("deletionTimestamp"):
        problems.append(_refuse(name, "metadata.deletionTimestamp", "the object is being deleted"))
    return problems


def _string(name: str, where: str, value: Any, problems: list[str], *, secret: bool = False) -> str | None:
    if isinstance(value, str):
        return value
    shown = "a value" if secret else f"{json.dumps(value)[:60]}"
    problems.append(_refuse(name, where, f"must be a string, not {shown}"))
    return None


def _selector(name: str, value: Any, problems: list[str]) -> dict[str, Any] | None:
    """spec.namespaceSelector in the values' shape (None: absent or empty, which match every namespace)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.append(_refuse(name, "spec.namespaceSelector", "must be an object"))
        return None
    for key in sorted(set(value) - _SELECTOR_KEYS):
        problems.append(_refuse(name, f"spec.namespaceSelector.{key}", "no chart value expresses it"))
    selector: dict[str, Any] = {}
    labels = value.get("matchLabels")
    if labels:
        if not isinstance(labels, Mapping):
            problems.append(_refuse(name, "spec.namespaceSelector.matchLabels", "must be an object"))
        else:
            selector["matchLabels"] = dict(labels)
    expressions = value.get("matchExpressions")
    if expressions:
        if not isinstance(expressions, list):
            problems.append(_refuse(name, "spec.namespaceSelector.matchExpressions", "must be a list"))
        else:
            converted = []
            for index, expression in enumerate(expressions):
                where = f"spec.namespaceSelector.matchExpressions[{index}]"
                if not isinstance(expression, Mapping):
                    problems.append(_refuse(name, where, "must be an object"))
                    continue
                for key in sorted(set(expression) - _EXPRESSION_KEYS):
                    problems.append(_refuse(name, f"{where}.{key}", "no chart value expresses it"))
                item = {"key": expression.get("key"), "operator": expression.get("operator")}
                if expression.get("values"):
                    item["values"] = list(expression["values"])
                converted.append(item)
            if converted:
                selector["matchExpressions"] = converted
    return selector or None


def to_entry(obj: Mapping[str, Any], problems: list[str]) -> dict[str, Any] | None:
    """One ImagePullSecret as a ``global.imagePullSecretsCrs`` entry; what cannot be expressed goes to
    ``problems`` (and the entry is then None)."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name"))
    found = _metadata_problems(name, metadata)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        problems.append(_refuse(name, "spec", "is missing"))
        return None
    for key in sorted(set(spec) - _SPEC_KEYS):
        found.append(_refuse(name, f"spec.{key}", "no chart value expresses it"))
    entry: dict[str, Any] = {"name": name}
    for key in ("namespaces", "serviceAccounts"):
        value = spec.get(key)
        entry[key] = "*" if value is None else _string(name, f"spec.{key}", value, found)
    excluded = spec.get("excludedNamespaces")
    if excluded is not None:
        text = _string(name, "spec.excludedNamespaces", excluded, found)
        if text is not None and text.strip():
            entry["excludedNamespaces"] = text
    selector = _selector(name, spec.get("namespaceSelector"), found)
    if selector is not None:
        entry["namespaceSelector"] = selector
    entry["type"] = "docker"
    docker = spec.get("docker")
    if not isinstance(docker, Mapping):
        found.append(_refuse(name, "spec.docker", "is missing"))
        problems.extend(found)
        return None
    for key in sorted(set(docker) - _DOCKER_KEYS):
        found.append(_refuse(name, f"spec.docker.{key}", "no chart value expresses it"))
    entry["dockerServer"] = _string(name, "spec.docker.server", docker.get("server"), found)
    entry["dockerUsername"] = _string(name, "spec.docker.username", docker.get("username"), found)
    password = docker.get("password")
    ref = docker.get("passwordSecretRef")
    if ref is not None and password not in (None, ""):
        found.append(_refuse(name, "spec.docker", "has both password and passwordSecretRef; the chart takes one"))
    elif ref is not None:
        if not isinstance(ref, Mapping):
            found.append(_refuse(name, "spec.docker.passwordSecretRef", "must be an object"))
        else:
            for key in sorted(set(ref) - _REF_KEYS):
                found.append(_refuse(name, f"spec.docker.passwordSecretRef.{key}",
                                     "no chart value expresses it (dockerPasswordSecret is a Secret of the "
                                     "release namespace: name and key only)"))
            secret = {"name": _string(name, "spec.docker.passwordSecretRef.name", ref.get("name"), found)}
            if ref.get("key") is not None:
                secret["key"] = _string(name, "spec.docker.passwordSecretRef.key", ref.get("key"), found)
            entry["dockerPasswordSecret"] = secret
    elif password in (None, ""):
        found.append(_refuse(name, "spec.docker", "has neither password nor passwordSecretRef"))
    else:
        entry["dockerPassword"] = _string(name, "spec.docker.password", password, found, secret=True)
    if found:
        problems.extend(found)
        return None
    return entry


def hosts_from_configmap(configmap: Mapping[str, Any] | None, release: str, namespace: str,
                         taken: Taken) -> None:
    """``global.hosts`` from ConfigMap ``updater-config`` when it is usable (else ``taken.hosts`` stays None)."""
    from hosts_updater.config import ConfigError, parse_config

    where = f"ConfigMap {namespace}/{HOSTS_CONFIGMAP}"
    if configmap is None:
        taken.notes.append(f"{where} does not exist: hosts entries come from --host only")
        return
    ownership = _ownership("ConfigMap", f"{namespace}/{HOSTS_CONFIGMAP}", configmap.get("metadata") or {},
                           release, namespace)
    if ownership == "skip":
        taken.notes.append(f"{where} belongs to Helm release {release!r} already (its values hold the hosts): "
                           "hosts entries come from --host only")
        return
    if ownership is not None:
        taken.problems.append(ownership)
        return
    text = (configmap.get("data") or {}).get(HOSTS_KEY)
    if text is None:
        taken.notes.append(f"{where} has no key {HOSTS_KEY}: hosts entries come from --host only")
        return
    try:
        parse_config(text.encode("utf-8"))
        document = json.loads(text)
    except (ConfigError, ValueError) as exc:
        taken.notes.append(f"{where}: {HOSTS_KEY} is not in the hosts-updater's format ({exc}): hosts entries "
                           "come from --host only")
        return
    hosts: list[dict[str, Any]] = []
    for item in document.get("hosts") or []:
        domain, ip = str(item.get("domain") or "").strip().lower(), str(item.get("ip") or "").strip()
        if domain and ip:  # a disabled entry without both writes nothing and removes nothing
            hosts.append({"domain": domain, "ip": ip, "disabled": bool(item.get("disabled"))})
    taken.hosts = hosts
    taken.notes.append(f"{where}: {len(hosts)} hosts entr{'y' if len(hosts) == 1 else 'ies'}")


def take(objects: Sequence[Mapping[str, Any]], release: str, namespace: str) -> Taken:
    """The values entries for ``objects``, skipping those of ``release`` and refusing what cannot be expressed."""
    taken = Taken()
    for obj in objects:
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name"))
        ownership = _ownership("ImagePullSecret", name, metadata, release, namespace)
        if ownership == "skip":
            taken.skipped.append(name)
            taken.notes.append(
                f"ImagePullSecret {name!r} belongs to Helm release {release!r} already (the chart's own): "
                "skipped; keep it in that release's values (helm get values) when you upgrade it"
            )
            continue
        if ownership is not None:
            taken.problems.append(ownership)
            continue
        entry = to_entry(obj, taken.problems)
        if entry is None:
            continue
        taken.crs.append(entry)
        secret = entry.get("dockerPasswordSecret")
        if secret is not None:
            taken.notes.append(
                f"ImagePullSecret {name!r} reads its password from Secret {secret['name']!r} "
                f"(key {secret.get('key', 'password')!r}): keep that Secret in namespace {namespace!r}, labelled "
                "tcr.tencentcloudcr.com/credential-source=true"
            )
    return taken


# --------------------------------------------------------------------------------------------
# The check: what `helm template` makes of the values must be the objects read


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def rendered_differences(crs: Sequence[Mapping[str, Any]], documents: Sequence[Mapping[str, Any]]) -> list[str]:
    """Where the chart's ImagePullSecrets differ from the entries (names, scope, server, user, password)."""
    rendered = {str((d.get("metadata") or {}).get("name")): d for d in documents if d.get("kind") == "ImagePullSecret"}
    wanted = [str(cr["name"]) for cr in crs]
    differences = []
    if sorted(rendered) != sorted(wanted):
        differences.append(f"names {sorted(rendered)} instead of {sorted(wanted)}")
        return differences
    for cr in crs:
        doc = rendered[str(cr["name"])]
        spec = doc.get("spec") or {}
        docker = spec.get("docker") or {}
        ref = docker.get("passwordSecretRef") or {}
        checks: list[tuple[str, bool]] = [
            ("spec.namespaces", spec.get("namespaces") == cr["namespaces"]),
            ("spec.serviceAccounts", spec.get("serviceAccounts") == cr["serviceAccounts"]),
            ("spec.excludedNamespaces", spec.get("excludedNamespaces") == cr.get("excludedNamespaces")
             or (_blank(spec.get("excludedNamespaces")) and _blank(cr.get("excludedNamespaces")))),
            ("spec.namespaceSelector", (spec.get("namespaceSelector") or None) == cr.get("namespaceSelector")),
            ("spec.docker.server", docker.get("server") == cr["dockerServer"]),
            ("spec.docker.username", docker.get("username") == cr["dockerUsername"]),
        ]
        if "dockerPasswordSecret" in cr:
            secret = cr["dockerPasswordSecret"]
            checks.append(("spec.docker.passwordSecretRef", ref.get("name") == secret["name"]
                           and ref.get("key") == secret.get("key", "password")))
        else:
            checks.append(("spec.docker.password", rendered_password(docker, documents) == cr["dockerPassword"]))
        differences.extend(f"ImagePullSecret {cr['name']!r}: {where}" for where, same in checks if not same)
    return differences


def _where(path: helm.ValuesPath, crs: Sequence[Mapping[str, Any]]) -> tuple[str, bool]:
    """A values path as the object and field it came from, and whether its content may be shown."""
    if path[:2] == ("global", "imagePullSecretsCrs") and len(path) >= 3 and isinstance(path[2], int) \
            and path[2] < len(crs):
        name = crs[path[2]]["name"]
        key = str(path[3]) if len(path) >= 4 else ""
        field_name = VALUES_TO_FIELD.get(key, key or "spec")
        rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[4:])
        return f"ImagePullSecret {name!r}: {field_name}{rest}", key not in ("", "dockerPassword")
    if path[:2] == ("global", "hosts"):
        rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[2:])
        return f"hosts{rest} (ConfigMap {HOSTS_CONFIGMAP} or --host)", True
    return "/".join(str(p) for p in path), False


def schema_problems(values: Mapping[str, Any], schema: Mapping[str, Any], crs: Sequence[Mapping[str, Any]],
                    secrets: list[str]) -> list[str]:
    """The values against the values schema (``--schema``); a message quotes no password."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    problems = []
    for error in sorted(validator.iter_errors(values), key=lambda e: [str(p) for p in e.absolute_path]):
        where, shown = _where(tuple(error.absolute_path), crs)
        if shown:
            problems.append(f"{where}: the chart's values schema refuses it: {helm.scrub(error.message, secrets)}")
        else:
            problems.append(f"{where}: does not match the chart's values schema (rule {error.validator})")
    return problems


def webhook_problems(documents: Sequence[Mapping[str, Any]], crs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The webhook's rules on each ImagePullSecret the chart renders (as the chart's objects will meet them)."""
    from tcr_assistant.spec.validation import validate_image_pull_secret

    inline = {str(cr["name"]) for cr in crs if "dockerPassword" in cr}
    problems = []
    for doc in documents:
        if doc.get("kind") != "ImagePullSecret":
            continue
        name = str((doc.get("metadata") or {}).get("name"))
        for error in validate_image_pull_secret(doc):
            if name in inline and error.field.startswith("spec.docker.passwordSecretRef"):
                continue  # the chart's own credentials Secret: not the object's doing
            problems.append(f"ImagePullSecret {name!r}: {error.field}: {error.message}")
    return problems


def validate(values: Mapping[str, Any], text: str, schema: Mapping[str, Any], secrets: list[str]) -> list[str]:
    """The self-check of the values from the cluster: the values schema, ``helm template`` (the chart's schema
    and templates), the webhook's rules on what it renders, and that it renders what was read.

    Returns the problems ([] = valid); raises :class:`Failure` when the chart renders something else.
    """
    crs = values["global"]["imagePullSecretsCrs"]
    problems = schema_problems(values, schema, crs, secrets)
    rendered = helm.template(text, secrets)
    for schema_error in rendered.schema_errors:
        where, shown = _where(schema_error.path, crs)
        problem = (f"{where}: the chart's values schema refuses it (helm template): {schema_error.message}" if shown
                   else f"{where}: does not match the chart's values schema (helm template)")
        if not any(p.startswith(f"{where}:") for p in problems):
            problems.append(problem)
    for chart_error in rendered.chart_errors:
        where, _ = _where(chart_error.path, crs)
        problems.append(f"{where}: the chart refuses it: {chart_error.message}")
    if rendered.documents is None:
        if problems:
            return problems
        raise Failure(f"`helm template` cannot render the chart with these values: {rendered.failure}")
    problems.extend(p for p in webhook_problems(rendered.documents, crs) if p not in problems)
    if not problems:
        differences = rendered_differences(crs, rendered.documents)
        if differences:
            raise Failure("internal error: `helm template` renders other ImagePullSecrets than the cluster holds "
                          f"({'; '.join(differences)}): chart and wizard disagree")
    return problems
