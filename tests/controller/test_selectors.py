"""Label selectors: kubectl's syntax, the rules with the field named, and Kubernetes' matching."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support import property_settings
from tcr_assistant.spec import selectors
from tcr_assistant.spec.selectors import format_selector, from_object, parse, problems


@pytest.mark.parametrize(("text", "expected"), [
    ("", {}),
    ("team=a", {"matchLabels": {"team": "a"}}),
    ("team==a", {"matchLabels": {"team": "a"}}),
    ("team=a,env in (prod,stage)", {
        "matchLabels": {"team": "a"},
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "stage"]}]}),
    ("env notin (dev), tier!=db", {"matchExpressions": [
        {"key": "env", "operator": "NotIn", "values": ["dev"]},
        {"key": "tier", "operator": "NotIn", "values": ["db"]}]}),
    ("sandbox,!legacy", {"matchExpressions": [{"key": "sandbox", "operator": "Exists"},
                                              {"key": "legacy", "operator": "DoesNotExist"}]}),
    ("example.com/team = payments", {"matchLabels": {"example.com/team": "payments"}}),
    ("empty=", {"matchLabels": {"empty": ""}}),
])
def test_kubectl_syntax(text: str, expected: dict[str, Any]) -> None:
    assert parse(text) == expected
    assert problems(expected) == []


@pytest.mark.parametrize(("text", "message"), [
    ("team=a,", "trailing ','"),
    ("env in (prod", "expected ',' or ')'"),
    ("env in ()", "at least one value"),
    ("env in prod", "expected '('"),
    ("!env=prod", "takes no operator"),
    ("team=a,team=b", "both 'a' and 'b'"),
    ("Team_=x", "label key 'Team_' is not valid"),
    ("team=has space", "expected ',' between requirements"),
    ("team=-x", "label value '-x' is not valid"),
    ("=x", "expected a label key"),
    ("a/b/c=x", "label key 'a/b/c' is not valid"),
])
def test_kubectl_syntax_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(("selector", "path", "message"), [
    ({"matchLabels": {"bad key!": "x"}}, ".matchLabels", "label key 'bad key!' is not valid"),
    ({"matchLabels": {"team": "x" * 64}}, ".matchLabels.team", "at most 63"),
    ({"matchExpressions": [{"key": "env", "operator": "Near", "values": ["x"]}]}, ".matchExpressions[0].operator",
     "must be one of In, NotIn, Exists, DoesNotExist"),
    ({"matchExpressions": [{"key": "env", "operator": "In"}]}, ".matchExpressions[0].values", "at least one"),
    ({"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["x"]}]}, ".matchExpressions[0].values",
     "takes no values"),
    ({"matchExpressions": [{"key": "", "operator": "Exists"}]}, ".matchExpressions[0].key", "must not be empty"),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["ok", "no way"]}]},
     ".matchExpressions[0].values[1]", "is not valid"),
    ({"matchExpressions": "env"}, ".matchExpressions", "must be a list"),
    ("team=a", "", "must be an object"),
])
def test_problems_name_the_field(selector: Any, path: str, message: str) -> None:
    found = problems(selector)
    assert [p for p, m in found if p == path and message in m], found
    assert from_object(selector) is selectors.NOTHING
    assert not selectors.NOTHING.matches({})


def test_kubernetes_matching_rules() -> None:
    selector = from_object({"matchLabels": {"team": "a"}, "matchExpressions": [
        {"key": "env", "operator": "NotIn", "values": ["dev"]}, {"key": "legacy", "operator": "DoesNotExist"}]})
    assert selector is not None
    assert selector.matches({"team": "a"})  # NotIn holds when the label is absent
    assert selector.matches({"team": "a", "env": "prod"})
    assert not selector.matches({"team": "a", "env": "dev"})
    assert not selector.matches({"team": "b"})
    assert not selector.matches({"team": "a", "legacy": ""})
    assert from_object({}) == selectors.Selector()
    assert from_object({}).matches({"anything": "x"})  # type: ignore[union-attr]
    assert from_object(None) is None


NAME = st.from_regex(r"\A[a-z0-9]([-a-z0-9_.]{0,8}[a-z0-9])?\Z")
KEY = st.one_of(NAME, st.builds(lambda p, n: f"{p}.io/{n}", st.from_regex(r"\A[a-z]{1,6}\Z"), NAME))
VALUE = st.one_of(st.just(""), NAME)
EXPRESSION = st.one_of(
    st.builds(lambda k, o, v: {"key": k, "operator": o, "values": v}, KEY, st.sampled_from(["In", "NotIn"]),
              st.lists(NAME, min_size=1, max_size=3, unique=True)),
    st.builds(lambda k, o: {"key": k, "operator": o}, KEY, st.sampled_from(["Exists", "DoesNotExist"])),
)
SELECTOR = st.builds(
    lambda labels, expressions: {**({"matchLabels": labels} if labels else {}),
                                 **({"matchExpressions": expressions} if expressions else {})},
    st.dictionaries(KEY, VALUE, max_size=3), st.lists(EXPRESSION, max_size=3))
LABELS = st.dictionaries(KEY, VALUE, max_size=5)


def reference_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes' rules written out once more, independently of the module."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and not (key in labels and labels[key] in values):
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


@property_settings(100)
@given(SELECTOR, LABELS)
def test_parse_reads_back_what_format_writes_and_matching_agrees(selector: dict[str, Any],
                                                                 labels: dict[str, str]) -> None:
    assert problems(selector) == []
    text = format_selector(selector)
    back = parse(text)
    parsed, original = from_object(back), from_object(selector)
    assert parsed == original, text
    assert original is not None and original.matches(labels) == reference_matches(selector, labels)
    # a selected namespace's labels, by construction, match
    chosen = {**labels, **(selector.get("matchLabels") or {})}
    for expression in selector.get("matchExpressions") or []:
        if expression["operator"] == "In":
            chosen[expression["key"]] = expression["values"][0]
    assert original.matches(chosen) == reference_matches(selector, chosen)
