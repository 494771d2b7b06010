"""The CRD's own rules (OpenAPI constraints + CEL) and validation.py must mean the same where
they overlap: no rule is written twice with different meanings.

Each case is sent to the real API server as a server-side dry-run create with the chart's CRD
and no webhook of ours, and to ``validate_image_pull_secret``:

- the API server refuses (422 Invalid) ⇒ Python refuses too (else the values wizard and the
  webhook would accept what the cluster refuses);
- Python refuses a field the CRD constrains ⇒ the API server refuses too (else the CRD is
  looser than the webhook on the same field: two meanings). Python may be stricter only on
  fields the CRD leaves unconstrained (the webhook covers those).

Cases: the shared BAD_CASES, valid variants, edge cases aimed at the seams (spaces, tabs,
Unicode, long parts, control characters), and hypothesis-generated near-valid specs.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from webhook_support import BAD_CASES, chart_crd, installed_crd, sample

from tcr_assistant.spec.validation import validate_image_pull_secret

pytestmark = pytest.mark.compat

CONSTRAINT_KEYS = ("x-kubernetes-validations", "pattern", "minLength", "maxLength", "enum", "format", "type")


@pytest.fixture(scope="module")
def crd(control_plane: Any, kube: client.ApiClient) -> Iterator[dict[str, Any]]:
    with installed_crd(chart_crd(), reuse_foreign=True) as installed:
        hooks = client.AdmissionregistrationV1Api(kube).list_validating_webhook_configuration()
        for config in hooks.items:
            for hook in config.webhooks or []:
                for rule in hook.rules or []:
                    if "tcr.tencentcloudcr.com" in (rule.api_groups or []) or "*" in (rule.api_groups or []):
                        raise AssertionError(f"webhook {hook.name} is registered for ImagePullSecrets: "
                                             "the CRD cannot be seen alone")
        yield installed


def api_verdict(kube: client.ApiClient, obj: dict[str, Any]) -> tuple[bool, str]:
    """(accepted, error text) of a server-side dry-run create."""
    api = client.CustomObjectsApi(kube)
    try:
        api.create_cluster_custom_object("tcr.tencentcloudcr.com", "v1", "imagepullsecrets", obj, dry_run="All")
    except ApiException as error:
        if error.status != 422:
            raise AssertionError(f"unexpected API answer {error.status}: {error.body}") from error
        return False, str(error.body)
    return True, ""


FIELD_PART = re.compile(r"\.?(?P<name>[A-Za-z]\w*)|\[(?P<index>\d+|'[^']*')\]")


def schema_node(crd: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """The schema nodes from the root down to ``field`` (a path like spec.docker.server, or
    spec.namespaceSelector.matchExpressions[0].values[1] and matchLabels['example.com/x'])."""
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    nodes = [node]
    for part in FIELD_PART.finditer(field):
        if part.group("name") and part.group("name") in node.get("properties", {}):
            node = node["properties"][part.group("name")]
        elif part.group("name") and "additionalProperties" not in node:
            node = {}
        else:  # a list item or a map value
            node = node.get("items") or node.get("additionalProperties") or {}
        nodes.append(node)
    return nodes


def crd_constrains(crd: dict[str, Any], field: str) -> bool:
    """Whether the CRD has its own rule for ``field`` (on the field, or a CEL rule above naming it)."""
    if field.startswith("metadata."):
        return True  # the API server validates names itself; the CRD adds the 246-character rule
    nodes = schema_node(crd, field)
    if any(key in nodes[-1] for key in CONSTRAINT_KEYS if key != "type"):
        return True
    leaf = [p.group("name") or "" for p in FIELD_PART.finditer(field) if p.group("name")][-1]
    parent_rules = [r.get("rule", "") for n in nodes[:-1] for r in n.get("x-kubernetes-validations", [])]
    return any(leaf in rule for rule in parent_rules) or leaf in nodes[-2].get("required", [])


def check(kube: client.ApiClient, crd: dict[str, Any], obj: dict[str, Any]) -> None:
    obj = json.loads(json.dumps(obj))
    obj["metadata"]["name"] = obj["metadata"].get("name") or f"parity-{uuid.uuid4().hex[:8]}"
    accepted, error = api_verdict(kube, obj)
    problems = validate_image_pull_secret(obj)
    if not accepted:
        assert problems, f"the API server refuses what validation.py accepts: {obj['spec']!r}\n{error}"
    else:
        constrained = [p for p in problems if crd_constrains(crd, p.field)]
        assert not constrained, f"validation.py refuses what the CRD accepts on a field it constrains: {constrained}"


TCR = {"instanceId": "tcr-abcd1234", "region": "ap-guangzhou", "apiKeySecretRef": {"name": "tcr-api-key"}}


def minted(username: str | None = None, password: str | None = None, **tcr: Any) -> dict[str, Any]:
    """A sample whose credential is minted (tokenFrom), with ``tcr`` changed (None: left out)."""
    fields = {k: v for k, v in {**TCR, **tcr}.items() if v is not None}
    return {"docker__username": username, "docker__password": password, "docker__tokenFrom": {"tcr": fields}}


TOKEN_FROM_CASES: list[tuple[str, dict[str, Any]]] = [
    ("minted", minted()),
    ("minted-web-identity", minted(apiKeySecretRef=None, webIdentity={})),
    ("minted-sts-endpoint", minted(apiKeySecretRef=None, webIdentity={"stsEndpoint": "sts.internal:8443"})),
    ("minted-longterm-endpoint", minted(tokenType="longterm", endpoint="tcr.internal.tencentcloudapi.com")),
    ("minted-with-username", minted(username="u")),
    ("minted-with-password", minted(password="p")),
    ("minted-both-key-sources", minted(webIdentity={})),
    ("minted-no-key-source", minted(apiKeySecretRef=None)),
    ("minted-instance-upper", minted(instanceId="tcr-ABCD")),
    ("minted-instance-prefix", minted(instanceId="abcd1234")),
    ("minted-no-region", minted(region=None)),
    ("minted-region-short", minted(region="gz")),
    ("minted-token-type", minted(tokenType="forever")),
    ("minted-endpoint-scheme", minted(endpoint="https://tcr.tencentcloudapi.com")),
    ("minted-endpoint-path", minted(endpoint="tcr.tencentcloudapi.com/v3")),
    ("minted-key-name", minted(apiKeySecretRef={"name": "Bad_Name"})),
]


EDGE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("valid", {}),
    ("ns-spaces", {"namespaces": " a ,  b "}),
    ("ns-tab", {"namespaces": "a,\tb"}),
    ("ns-star-spaces", {"namespaces": "  *  "}),
    ("ns-only-spaces", {"namespaces": "   "}),
    ("ns-63", {"namespaces": "a" * 63}),
    ("ns-unicode", {"namespaces": "\u00e4"}),
    ("sa-long-part", {"serviceAccounts": "a" * 64 + ".b"}),
    ("sa-253", {"serviceAccounts": ".".join(["a" * 63] * 4)[:253].rstrip(".")}),
    ("sa-254", {"serviceAccounts": "a" * 254}),
    ("excluded-spaces", {"excludedNamespaces": "  "}),
    ("server-63-label", {"docker__server": "a" * 63 + ".com"}),
    ("server-253", {"docker__server": ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])}),
    ("server-port-65535", {"docker__server": "a:65535"}),
    ("server-port-99999", {"docker__server": "a:99999"}),
    ("server-ipv4", {"docker__server": "10.1.2.3"}),
    ("server-nbsp", {"docker__server": "a\u00a0b"}),
    ("username-nbsp", {"docker__username": "\u00a0"}),
    ("username-line-sep", {"docker__username": "\u2028"}),
    ("username-control-char", {"docker__username": "a\u0001b"}),
    ("username-1024", {"docker__username": "u" * 1024}),
    ("username-inner-nbsp", {"docker__username": "a\u00a0b"}),
    ("username-zero-width", {"docker__username": "a\u200bb"}),
    ("username-inner-space", {"docker__username": "a b"}),
    ("ref-key-default", {"docker__password": None, "docker__passwordSecretRef": {"name": "n"}}),
    ("ref-name-long-part", {"docker__password": None, "docker__passwordSecretRef": {"name": "a" * 100}}),
    ("ref-and-empty-password", {"docker__password": "", "docker__passwordSecretRef": {"name": "n"}}),
    ("name-246", {"name": "a" * 246}),
    ("name-long-part", {"name": "a" * 100 + "." + "b" * 100}),
    ("selector-empty", {"namespaceSelector": {}}),
    ("selector-labels", {"namespaceSelector": {"matchLabels": {"team": "a", "example.com/env": ""}}}),
    ("selector-all-operators", {"namespaceSelector": {"matchExpressions": [
        {"key": "a", "operator": "In", "values": ["x"]}, {"key": "b", "operator": "NotIn", "values": ["y", "z"]},
        {"key": "c", "operator": "Exists"}, {"key": "d", "operator": "DoesNotExist", "values": []}]}}),
    ("selector-in-no-values", {"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
    ("selector-in-empty-values", {"namespaceSelector": {"matchExpressions": [
        {"key": "a", "operator": "NotIn", "values": []}]}}),
    ("selector-exists-values", {"namespaceSelector": {"matchExpressions": [
        {"key": "a", "operator": "Exists", "values": ["x"]}]}}),
    ("selector-operator", {"namespaceSelector": {"matchExpressions": [
        {"key": "a", "operator": "in", "values": ["x"]}]}}),
    ("selector-key-upper-prefix", {"namespaceSelector": {"matchLabels": {"Example.com/a": "x"}}}),
    ("selector-key-two-slashes", {"namespaceSelector": {"matchLabels": {"a/b/c": "x"}}}),
    ("selector-key-name-64", {"namespaceSelector": {"matchLabels": {"a" * 64: "x"}}}),
    ("selector-key-prefix-254", {"namespaceSelector": {"matchExpressions": [
        {"key": "a" * 254 + "/b", "operator": "Exists"}]}}),
    ("selector-key-empty", {"namespaceSelector": {"matchExpressions": [{"key": "", "operator": "Exists"}]}}),
    ("selector-value-64", {"namespaceSelector": {"matchLabels": {"a": "v" * 64}}}),
    ("selector-value-dash", {"namespaceSelector": {"matchExpressions": [
        {"key": "a", "operator": "In", "values": ["ok", "-no"]}]}}),
    ("selector-value-space", {"namespaceSelector": {"matchLabels": {"a": "x y"}}}),
    *TOKEN_FROM_CASES,
]


def build(changes: dict[str, Any]) -> dict[str, Any]:
    changes = dict(changes)
    name = changes.pop("name", "")
    obj = sample(name or "x", **changes)
    obj["metadata"]["name"] = name
    return obj


ALL_CASES = [(c[0], c[1]) for c in BAD_CASES] + EDGE_CASES


@pytest.mark.parametrize(
    "changes",
    [
        c[1]
        for c in ALL_CASES
    ],
    ids=[c[0] for c in ALL_CASES],
)
def test_same_verdict(kube: client.ApiClient, crd: dict[str, Any], changes: dict[str, Any]) -> None:
    check(kube, crd, build(changes))


near_valid_text = st.one_of(
    st.sampled_from(
        [
            "",
            "*",
            " * ",
            "a",
            "a,b",
            " a , b ",
            "a,,b",
            "*,a",
            "A",
            "a_b",
            "a.b",
            "a-",
            "-a",
            "a b",
            "default",
            "kube-system",
            "a" * 63,
            "x:1",
            "x:0",
            "x:65536",
            "https://x",
            "x/y",
            "u@x",
            "x.",
            ".x",
            "\t",
            "\u00e4",
        ]
    ),
    st.text(alphabet="ab-.,*: \t_A1", max_size=20),
)


@st.composite
def near_valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    obj = sample(f"parity-{draw(st.integers(0, 10**9))}")
    spec = obj["spec"]
    for key in draw(st.sets(st.sampled_from(["namespaces", "serviceAccounts", "excludedNamespaces"]))):
        spec[key] = draw(near_valid_text)
    docker = spec["docker"]
    for key in draw(st.sets(st.sampled_from(["server", "username", "password"]))):
        docker[key] = draw(near_valid_text)
    if draw(st.booleans()):
        docker["passwordSecretRef"] = {"name": draw(near_valid_text)}
        if draw(st.booleans()):
            docker["passwordSecretRef"]["key"] = draw(near_valid_text)
    if draw(st.booleans()):
        spec["namespaceSelector"] = draw(near_valid_selectors())
    return obj


label_text = st.one_of(st.sampled_from(["", "a", "a.b", "a_b", "A-1", "-a", "a-", "a/b", "x.io/a", "X.io/a", "a b",
                                        "a" * 63, "a" * 64, "a/b/c"]),
                       st.text(alphabet="ab-._/A1 ", max_size=12))


@st.composite
def near_valid_selectors(draw: st.DrawFn) -> dict[str, Any]:
    selector: dict[str, Any] = {}
    if draw(st.booleans()):
        selector["matchLabels"] = draw(st.dictionaries(label_text, label_text, max_size=3))
    if draw(st.booleans()):
        expressions = []
        for _ in range(draw(st.integers(0, 3))):
            expression: dict[str, Any] = {"key": draw(label_text),
                                          "operator": draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist",
                                                                            "in", ""]))}
            if draw(st.booleans()):
                expression["values"] = draw(st.lists(label_text, max_size=3))
            expressions.append(expression)
        selector["matchExpressions"] = expressions
    return selector


@settings(max_examples=120, deadline=None)
@given(obj=near_valid_specs())
def test_same_verdict_generated(kube: client.ApiClient, crd: dict[str, Any], obj: dict[str, Any]) -> None:
    # Known gaps cannot occur here: no control characters, no ServiceAccount part over 63 characters.
    check(kube, crd, obj)
