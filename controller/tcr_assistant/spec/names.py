"""Kubernetes' name rules, pure: DNS-1123 labels and subdomains as apimachinery checks them, and the
comma lists of names an ImagePullSecret's spec holds (``parse_name_list_strict``). Messages quote
the value (shortened) and say what is expected."""

from __future__ import annotations

import re
from typing import Literal

from tcr_assistant.spec import rules
from tcr_assistant.spec.rules import DNS1123_LABEL_MAX, DNS1123_SUBDOMAIN_MAX

# Same expressions as Kubernetes' apimachinery (validation.IsDNS1123Label / IsDNS1123Subdomain).
# The length checks run before the expressions, so matching is linear.
DNS1123_LABEL_RE = re.compile(rules.non_capturing(rules.DNS1123_LABEL_SHAPE))
DNS1123_SUBDOMAIN_RE = re.compile(rules.non_capturing(rules.subdomain()))

ListKind = Literal["namespace", "serviceaccount"]

_SHOWN_MAX = 64


def show(value: str) -> str:
    """Quote a user-supplied value for a message, shortened (never used for passwords)."""
    if len(value) > _SHOWN_MAX:
        value = value[: _SHOWN_MAX - 1] + "…"
    return repr(value) if any(not c.isprintable() for c in value) else f'"{value}"'


def is_dns1123_label(value: str) -> bool:
    return 0 < len(value) <= DNS1123_LABEL_MAX and DNS1123_LABEL_RE.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """Kubernetes' IsDNS1123Subdomain: at most 253 characters; no limit per dot-separated part."""
    return 0 < len(value) <= DNS1123_SUBDOMAIN_MAX and DNS1123_SUBDOMAIN_RE.fullmatch(value) is not None


def dns_problem(value: str, what: str, *, subdomain: bool, dns_labels: bool = False) -> str | None:
    """Why ``value`` is not a DNS-1123 label/subdomain, or None when it is.

    ``dns_labels``: also limit each dot-separated part to 63 characters (real DNS host names;
    Kubernetes object names have no such limit).
    """
    limit = DNS1123_SUBDOMAIN_MAX if subdomain else DNS1123_LABEL_MAX
    kind = "DNS-1123 subdomain" if subdomain else "DNS-1123 label"
    shape = (
        "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        if subdomain
        else "lower-case letters, digits and '-', starting and ending with a letter or digit"
    )
    if value == "":
        return f"{what} must not be empty"
    if len(value) > limit:
        return f"{what} {show(value)} is {len(value)} characters long; a {kind} has at most {limit}"
    if subdomain:
        if dns_labels and any(len(label) > DNS1123_LABEL_MAX for label in value.split(".")):
            return f"{what} {show(value)}: each dot-separated part has at most {DNS1123_LABEL_MAX} characters"
        ok = DNS1123_SUBDOMAIN_RE.fullmatch(value) is not None
    else:
        ok = DNS1123_LABEL_RE.fullmatch(value) is not None
    if not ok:
        hint = ""
        if any(c.isupper() for c in value):
            hint = " (upper case is not allowed)"
        elif "_" in value:
            hint = " (underscores are not allowed)"
        elif any(c.isspace() for c in value):
            hint = " (spaces are not allowed)"
        return f"{what} {show(value)} is not a valid {kind}: use {shape}{hint}"
    return None


def parse_name_list_strict(
    value: str | None,
    kind: ListKind = "namespace",
    *,
    allow_all: bool = True,
) -> list[str] | None:
    """Parse a ``namespaces`` / ``serviceAccounts`` / ``excludedNamespaces`` list.

    Returns None for "all" (``*``, the empty string, or None), else the list of exact names
    in order, with spaces around items trimmed. With ``allow_all=False`` (for
    ``excludedNamespaces``) empty/None give ``[]`` and ``*`` is refused. ``kind`` chooses
    the item rule: ``namespace`` items are DNS-1123 labels, ``serviceaccount`` items
    DNS-1123 subdomains. Raises ValueError with a message saying what is expected.
    """
    if kind not in ("namespace", "serviceaccount"):
        raise ValueError(f"unknown list kind {kind!r}")
    if value is None:
        return None if allow_all else []
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    what = "namespace" if kind == "namespace" else "ServiceAccount name"
    expected = (
        '"*" or empty for all, or a comma-separated list of exact names'
        if allow_all
        else "empty for none, or a comma-separated list of exact names"
    )
    stripped = value.strip(" ")
    if stripped == "":
        return None if allow_all else []
    if stripped == "*":
        if allow_all:
            return None
        raise ValueError(f'"*" is not allowed here; expected {expected}')
    names: list[str] = []
    for position, raw in enumerate(value.split(","), start=1):
        item = raw.strip(" ")
        if item == "":
            raise ValueError(f"item {position} is empty (stray comma?); expected {expected}")
        if item == "*":
            if allow_all:
                raise ValueError(f'"*" must stand alone, not mixed with names; expected {expected}')
            raise ValueError(f'"*" is not allowed here; expected {expected}')
        problem = dns_problem(item, what, subdomain=kind == "serviceaccount")
        if problem is not None:
            raise ValueError(f"{problem}; expected {expected}")
        names.append(item)
    return names
