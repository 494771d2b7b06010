"""Label selectors (``metav1.LabelSelector``): their rules, matching, and kubectl's text form.

``spec.namespaceSelector`` of an ImagePullSecret is a standard LabelSelector::

    matchLabels: {team: payments}                 # each label must be present with that value
    matchExpressions:                            # and each expression must hold
      - {key: env, operator: In, values: [prod, stage]}
      - {key: sandbox, operator: DoesNotExist}

Operators mean what they mean in Kubernetes: ``In`` (label present, value listed), ``NotIn``
(label absent, or its value not listed), ``Exists``, ``DoesNotExist``. An empty selector
matches every namespace. :func:`parse` reads kubectl's syntax (``team=a,env in (prod,stage)``,
``env!=dev``, ``sandbox``, ``!sandbox``) into that shape, as ``metav1.ParseToLabelSelector``
does. Standard library only, no I/O, never raises except :func:`parse` (``ValueError``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tcr_assistant.spec import rules

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_WITH_VALUES = ("In", "NotIn")

LABEL_NAME_RE = re.compile(rules.non_capturing(rules.LABEL_NAME))
LABEL_KEY_RE = re.compile(rules.non_capturing(rules.label_key()))
LABEL_VALUE_RE = re.compile(rules.non_capturing(rules.LABEL_VALUE))


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        return value is None  # DoesNotExist


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector; hashable and comparable (requirements sorted), so plans can compare it."""

    requirements: tuple[Requirement, ...] = ()
    valid: bool = True  # False: the object did not pass the rules; such a selector matches nothing

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.valid and all(r.matches(labels) for r in self.requirements)


NOTHING = Selector(valid=False)


# -- rules ------------------------------------------------------------------------------------


def key_problem(key: Any) -> str | None:
    """Why ``key`` is not a label key (an optional DNS subdomain prefix and '/', then a name)."""
    if not isinstance(key, str):
        return f"a label key must be a string, not {type(key).__name__}"
    if key == "":
        return "a label key must not be empty"
    prefix, slash, name = key.rpartition("/")
    if len(name) > rules.LABEL_NAME_MAX:
        return f"label key {key!r}: the name part has at most {rules.LABEL_NAME_MAX} characters"
    if slash and len(prefix) > rules.DNS1123_SUBDOMAIN_MAX:
        return f"label key {key!r}: the prefix has at most {rules.DNS1123_SUBDOMAIN_MAX} characters"
    if LABEL_KEY_RE.fullmatch(key) is None:
        return (f"label key {key!r} is not valid: an optional DNS subdomain prefix and '/', then a name of "
                "letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
    return None


def value_problem(value: Any) -> str | None:
    """Why ``value`` is not a label value (empty, or up to 63 letters, digits, '-', '_', '.')."""
    if not isinstance(value, str):
        return f"a label value must be a string, not {type(value).__name__}"
    if len(value) > rules.LABEL_NAME_MAX:
        return f"label value {value[:20]!r}… has {len(value)} characters; at most {rules.LABEL_NAME_MAX}"
    if LABEL_VALUE_RE.fullmatch(value) is None:
        return (f"label value {value!r} is not valid: empty, or letters, digits, '-', '_' and '.', starting "
                "and ending with a letter or digit")
    return None


def problems(selector: Any) -> list[tuple[str, str]]:
    """(path below the selector, message) for each problem; [] when ``selector`` is valid."""
    if not isinstance(selector, Mapping):
        return [("", f"must be an object with matchLabels and/or matchExpressions, not {type(selector).__name__}")]
    found: list[tuple[str, str]] = []
    labels = selector.get("matchLabels")
    if labels is not None:
        if not isinstance(labels, Mapping):
            found.append((".matchLabels", f"must be an object of label key: value, not {type(labels).__name__}"))
        else:
            if len(labels) > rules.SELECTOR_LABELS_MAX:
                found.append((".matchLabels", f"has {len(labels)} labels; at most {rules.SELECTOR_LABELS_MAX}"))
            # Paths as the API server writes them for the CRD: a bad key on the map, a bad
            # value on matchLabels.<key>.
            for key, value in labels.items():
                problem = key_problem(key)
                if problem is not None:
                    found.append((".matchLabels", problem))
                elif (problem := value_problem(value)) is not None:
                    found.append((f".matchLabels.{key}", problem))
    expressions = selector.get("matchExpressions")
    if expressions is not None:
        if not isinstance(expressions, Sequence) or isinstance(expressions, str):
            found.append((".matchExpressions", f"must be a list, not {type(expressions).__name__}"))
        else:
            if len(expressions) > rules.SELECTOR_EXPRESSIONS_MAX:
                found.append((".matchExpressions",
                              f"has {len(expressions)} expressions; at most {rules.SELECTOR_EXPRESSIONS_MAX}"))
            for index, expression in enumerate(expressions):
                found += [(f".matchExpressions[{index}]{path}", message)
                          for path, message in _expression_problems(expression)]
    return found


def _expression_problems(expression: Any) -> list[tuple[str, str]]:
    if not isinstance(expression, Mapping):
        return [("", f"must be an object with key, operator and values, not {type(expression).__name__}")]
    found: list[tuple[str, str]] = []
    problem = key_problem(expression.get("key"))
    if problem is not None:
        found.append((".key", problem))
    operator = expression.get("operator")
    values = expression.get("values")
    if operator not in OPERATORS:
        found.append((".operator", f"must be one of {', '.join(OPERATORS)}, not {operator!r}"))
        return found
    if values is not None and (not isinstance(values, Sequence) or isinstance(values, str)):
        return [*found, (".values", f"must be a list of label values, not {type(values).__name__}")]
    values = list(values or [])
    if operator in _WITH_VALUES and not values:
        found.append((".values", f"operator {operator} needs at least one value"))
    if operator not in _WITH_VALUES and values:
        found.append((".values", f"operator {operator} takes no values; remove them"))
    if len(values) > rules.SELECTOR_VALUES_MAX:
        found.append((".values", f"has {len(values)} values; at most {rules.SELECTOR_VALUES_MAX}"))
    for index, value in enumerate(values):
        problem = value_problem(value)
        if problem is not None:
            found.append((f".values[{index}]", problem))
    return found


# -- from the API object -----------------------------------------------------------------------


def from_object(selector: Any) -> Selector | None:
    """The selector of ``spec.namespaceSelector``; None when absent (matches all); :data:`NOTHING`
    when it breaks the rules (the webhook refuses those; one that got past it serves no namespace)."""
    if selector is None:
        return None
    if problems(selector):
        return NOTHING
    requirements = [Requirement(str(k), "In", frozenset([str(v)]))
                    for k, v in (selector.get("matchLabels") or {}).items()]
    requirements += [Requirement(e["key"], e["operator"], frozenset(e.get("values") or ()))
                     for e in selector.get("matchExpressions") or ()]
    return Selector(tuple(sorted(requirements, key=lambda r: (r.key, r.operator, sorted(r.values)))))


# -- kubectl's syntax -------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<op>==|!=|=|\(|\)|,|!)|(?P<word>[^\s!=(),]+))")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip() == "":
                break
            raise ValueError(f"unexpected {text[position:].strip()[:20]!r}")
        tokens.append(match.group("op") or match.group("word"))
        position = match.end()
    return tokens


def parse(text: str) -> dict[str, Any]:
    """kubectl's selector syntax -> a LabelSelector object (``{}`` for the empty string).

    ``k=v`` and ``k==v`` go to matchLabels (a key given twice with different values cannot
    match anything and is refused); ``k!=v`` is NotIn [v]; ``k in (a,b)``, ``k notin (a,b)``;
    ``k`` is Exists and ``!k`` DoesNotExist. Raises ValueError saying what is wrong and where.
    """
    tokens = _tokens(text)
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    index = 0

    def take() -> str | None:
        nonlocal index
        token = tokens[index] if index < len(tokens) else None
        index += 1
        return token

    def peek() -> str | None:
        return tokens[index] if index < len(tokens) else None

    while index < len(tokens):
        negated = peek() == "!"
        if negated:
            take()
        key = take()
        if key is None or key in ("==", "!=", "=", "(", ")", ",", "!"):
            raise ValueError(f"expected a label key, found {key or 'the end'!r}")
        problem = key_problem(key)
        if problem is not None:
            raise ValueError(problem)
        following = peek()
        if negated:
            if following not in (None, ","):
                raise ValueError(f"'!{key}' means the label is absent; it takes no operator ({following!r})")
            expressions.append({"key": key, "operator": "DoesNotExist"})
        elif following in (None, ","):
            expressions.append({"key": key, "operator": "Exists"})
        elif following in ("=", "==", "!="):
            take()
            value = peek()
            if value in (None, ","):
                value = ""  # `k=` selects an empty value, as kubectl reads it
            else:
                take()
            assert value is not None
            problem = value_problem(value)
            if problem is not None:
                raise ValueError(problem)
            if following == "!=":
                expressions.append({"key": key, "operator": "NotIn", "values": [value]})
            elif labels.get(key, value) != value:
                raise ValueError(f"label {key!r} is required to equal both {labels[key]!r} and {value!r}")
            else:
                labels[key] = value
        elif following in ("in", "notin"):
            take()
            if take() != "(":
                raise ValueError(f"expected '(' after '{key} {following}'")
            values: list[str] = []
            while True:
                value = take()
                if value is None:
                    raise ValueError(f"missing ')' after '{key} {following} ('")
                if value == ")" and not values:
                    raise ValueError(f"'{key} {following} ()' needs at least one value")
                problem = value_problem(value)
                if problem is not None:
                    raise ValueError(problem)
                values.append(value)
                separator = take()
                if separator == ")":
                    break
                if separator != ",":
                    raise ValueError(f"expected ',' or ')' in the values of {key!r}, found {separator or 'the end'!r}")
            expressions.append({"key": key, "operator": "In" if following == "in" else "NotIn", "values": values})
        else:
            raise ValueError(f"expected '=', '==', '!=', 'in' or 'notin' after {key!r}, found {following!r}")
        separator = take()
        if separator not in (None, ","):
            raise ValueError(f"expected ',' between requirements, found {separator!r}")
        if separator == "," and peek() is None:
            raise ValueError("a trailing ',' ends the selector")
    result: dict[str, Any] = {}
    if labels:
        result["matchLabels"] = labels
    if expressions:
        result["matchExpressions"] = expressions
    return result


def format_selector(selector: Mapping[str, Any]) -> str:
    """A LabelSelector object in kubectl's syntax (the inverse of :func:`parse` for valid ones)."""
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or ():
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {'in' if operator == 'In' else 'notin'} ({','.join(values)})")
    return ",".join(parts)
