"""The value rules of an ImagePullSecret, defined once: limits and regular-expression building blocks.

``validation.py`` (the webhook, the values wizard) builds its expressions from these, and
``scripts/harness/gen_rules.py`` writes the same rules into the chart: the ``pattern`` and
``maxLength`` values of ``chart/values.schema.json`` and the marked (``# generated: …``) lines of
the CRD in ``chart/crds/``. Change a rule here, then run
``PYTHONPATH=scripts .venv/bin/python -m harness.gen_rules``; ``--check`` (run by the tests)
fails while the chart differs. Standard library only, no I/O.

The building blocks are regular expressions without anchors in the syntax that Python's ``re``,
ECMA-262 (JSON Schema ``pattern``) and RE2 (the API server's ``pattern`` and CEL ``matches()``)
read alike: character classes, ``?``, ``*``, ``{m,n}``, capturing groups. Where a literal ``.``
or ``*`` is needed, a :class:`Syntax` says how to write it: escaped (``\\.``) or, inside CEL
string literals, as a one-character class (``[.]``), which needs no backslash to be escaped twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tcr_assistant.spec.api import SECRET_PREFIX

__all__ = [
    "BRACKETED",
    "DNS1123_LABEL",
    "DNS1123_LABEL_MAX",
    "DNS1123_LABEL_SHAPE",
    "DNS1123_SUBDOMAIN_MAX",
    "ESCAPED",
    "INSTANCE_ID",
    "INSTANCE_ID_MAX",
    "LABEL_KEY_MAX",
    "LABEL_NAME",
    "LABEL_NAME_MAX",
    "LABEL_VALUE",
    "LIST_MAX",
    "MAX_NAME_LENGTH",
    "PASSWORD_MAX",
    "PORT",
    "PORT_MAX",
    "REGION",
    "REGION_MAX",
    "RESERVED_SECRET_KEYS",
    "SCHEME",
    "SECRET_KEY",
    "SECRET_KEY_MAX",
    "SELECTOR_EXPRESSIONS_MAX",
    "SELECTOR_LABELS_MAX",
    "SELECTOR_VALUES_MAX",
    "SERVER_MAX",
    "TOKEN_TYPES",
    "USERNAME_MAX",
    "Syntax",
    "all_items",
    "host",
    "label_key",
    "name_list",
    "non_capturing",
    "port_number",
    "subdomain",
]

# -- limits ----------------------------------------------------------------------------------

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
#: Longest ImagePullSecret name for which ``tcr.ips<name>`` is still a valid Secret name.
MAX_NAME_LENGTH = DNS1123_SUBDOMAIN_MAX - len(SECRET_PREFIX)
#: A Secret data key (Kubernetes' IsConfigMapKey).
SECRET_KEY_MAX = DNS1123_SUBDOMAIN_MAX
#: Data keys that are never valid, even though they match ``SECRET_KEY``.
RESERVED_SECRET_KEYS = (".", "..")
USERNAME_MAX = 1024
PASSWORD_MAX = 16384
#: ``tokenFrom.tcr.instanceId``: TCR names instances "tcr-" and 8 lower-case letters and digits.
INSTANCE_ID = "tcr-[a-z0-9]{1,32}"
INSTANCE_ID_MAX = 36
#: ``tokenFrom.tcr.region``: a Tencent Cloud region, e.g. ap-guangzhou, ap-shanghai-fsi.
REGION = "[a-z]{2,8}(-[a-z0-9]{1,20}){1,3}"
REGION_MAX = 64
#: ``tokenFrom.tcr.tokenType``: CreateInstanceToken's TokenType.
TOKEN_TYPES = ("temp", "longterm")
#: ``namespaces``, ``serviceAccounts``, ``excludedNamespaces``.
LIST_MAX = 16384
PORT_MAX = 65535
#: ``spec.docker.server``: a host name plus ``:PORT_MAX``.
SERVER_MAX = DNS1123_SUBDOMAIN_MAX + len(f":{PORT_MAX}")
#: A label's name part, and a label value (Kubernetes' IsQualifiedName / IsValidLabelValue).
LABEL_NAME_MAX = 63
#: A label key: a DNS subdomain prefix, '/', a name.
LABEL_KEY_MAX = DNS1123_SUBDOMAIN_MAX + 1 + LABEL_NAME_MAX
#: ``spec.namespaceSelector``: Kubernetes sets no limits; the CRD's CEL rules need bounds to be
#: admitted, and these are far above what a namespace selector uses.
SELECTOR_LABELS_MAX = 64
SELECTOR_EXPRESSIONS_MAX = 64
SELECTOR_VALUES_MAX = 256


# -- building blocks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Syntax:
    """How a literal ``.`` and ``*`` are written in a pattern."""

    dot: str
    star: str


#: Python ``re``, JSON Schema and OpenAPI ``pattern``.
ESCAPED = Syntax(dot=r"\.", star=r"\*")
#: Inside a CEL string literal in YAML: no backslash at all.
BRACKETED = Syntax(dot="[.]", star="[*]")

#: The shape of a DNS-1123 label, any length (Kubernetes object names limit only the whole name).
DNS1123_LABEL_SHAPE = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
#: A DNS-1123 label of at most ``DNS1123_LABEL_MAX`` characters (namespace names, host name parts).
DNS1123_LABEL = f"[a-z0-9]([-a-z0-9]{{0,{DNS1123_LABEL_MAX - 2}}}[a-z0-9])?"
#: A label name (the part after '/'), at most ``LABEL_NAME_MAX`` characters.
LABEL_NAME = f"[A-Za-z0-9]([-A-Za-z0-9_.]{{0,{LABEL_NAME_MAX - 2}}}[A-Za-z0-9])?"
#: A label value: empty, or a label name.
LABEL_VALUE = f"({LABEL_NAME})?"
#: A Secret data key (Kubernetes' IsConfigMapKey; length and ``RESERVED_SECRET_KEYS`` apart).
SECRET_KEY = "[-._a-zA-Z0-9]+"
#: A port's digits without leading zeros (the value, at most ``PORT_MAX``, is checked apart).
PORT = f"[1-9][0-9]{{0,{len(str(PORT_MAX)) - 1}}}"
#: A URL scheme and its ``://`` (refused in ``spec.docker.server``).
SCHEME = "[A-Za-z][-A-Za-z0-9+.]*://"


def subdomain(syntax: Syntax = ESCAPED) -> str:
    """A DNS-1123 subdomain (Kubernetes object names): labels of any length joined by dots."""
    return f"{DNS1123_LABEL_SHAPE}({syntax.dot}{DNS1123_LABEL_SHAPE})*"


def host(syntax: Syntax = ESCAPED) -> str:
    """A DNS host name: labels of at most ``DNS1123_LABEL_MAX`` characters joined by dots."""
    return f"{DNS1123_LABEL}({syntax.dot}{DNS1123_LABEL})*"


def label_key(syntax: Syntax = ESCAPED) -> str:
    """A label key: an optional DNS subdomain prefix and '/', then a label name (the prefix's
    length, at most ``DNS1123_SUBDOMAIN_MAX``, is checked apart)."""
    return f"({subdomain(syntax)}/)?{LABEL_NAME}"


def name_list(item: str) -> str:
    """One or more ``item``s separated by commas, spaces (U+0020) allowed around each."""
    return f" *{item} *( *, *{item} *)*"


def all_items(syntax: Syntax = ESCAPED) -> str:
    """A list that means "all": ``*`` or nothing, spaces allowed around."""
    return f" *{syntax.star}? *"


def port_number(maximum: int = PORT_MAX) -> str:
    """A group matching exactly the numbers 1 to ``maximum`` written without leading zeros.

    For 65535: ``([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])``:
    every shorter number, then the numbers as long as ``maximum``, digit by digit.
    """
    digits = str(maximum)
    width = len(digits)
    if width == 1:
        return f"([1-{digits}])"
    branches = [f"[1-9][0-9]{{0,{width - 2}}}" if width > 2 else "[1-9]"]
    for position, digit in enumerate(digits):
        prefix, rest = digits[:position], width - position - 1
        low, high = (1 if position == 0 else 0), int(digit) - (1 if rest else 0)
        if high < low:
            continue
        branch = prefix + (str(low) if low == high else f"[{low}-{high}]")
        if rest:
            branch += "[0-9]" + (f"{{{rest}}}" if rest > 1 else "")
        branches.append(branch)
    return "(" + "|".join(branches) + ")"


def non_capturing(pattern: str) -> str:
    """``pattern`` with every group made non-capturing (``(?:…)``), for Python's ``re``."""
    return re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern)
