"""Parse and validate ``config.json`` (ConfigMap ``updater-config``).

Format (the chart writes ``global.hosts`` as is)::

    {"hosts": [{"domain": "example.tencentcloudcr.com", "ip": "10.0.0.12", "disabled": false}]}

Rules (any violation is a :class:`ConfigError` naming the entry and field; nothing is applied):

* top level: an object whose only key is ``hosts``; ``hosts`` is a list, or ``null``/missing
  (= no entries). Duplicate JSON keys and non-standard numbers (NaN, Infinity) are rejected.
* entry: an object with keys among ``domain``, ``ip``, ``disabled``.
  ``disabled`` is a JSON boolean (``null`` or missing = false).
  ``domain`` is a DNS host name (letters, digits, hyphens; labels of 1-63; 253 at most; the last
  label not all digits; no trailing dot, no wildcard, no port); written in lower case.
  ``ip`` is an IPv4 or IPv6 address (no zone index, not unspecified, not multicast); written in
  its canonical form. Surrounding whitespace is ignored.
  A disabled entry may leave ``domain``/``ip`` empty or missing; when given they are still checked.
* one domain may map to one IP only (among enabled entries); repeating the same pair is fine.
"""

from __future__ import annotations

import ipaddress
import json
import re

from .core import Entry

TYPE_CHECKING = False  # avoids importing typing at run time (RSS budget)
if TYPE_CHECKING:
    from typing import Any

MAX_CONFIG_BYTES = 1 << 20
TOP_KEYS = frozenset({"hosts"})
ENTRY_KEYS = frozenset({"domain", "ip", "disabled"})
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ConfigError(Exception):
    """The configuration is unusable; the message names the offending entry and field."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def _bad_constant(name: str) -> Any:
    raise ConfigError(f"{name} is not a valid JSON number")


def check_domain(value: str) -> str | None:
    """Why ``value`` (already stripped, lower-cased) is not a host name, or ``None``."""
    if not value:
        return "is empty"
    if len(value) > 253:
        return f"is {len(value)} characters long (at most 253)"
    labels = value.split(".")
    for label in labels:
        if not label:
            return "has an empty label (leading, trailing or double dot)"
        if not _LABEL.match(label):
            return (
                f"has an invalid label {label!r} (letters, digits and inner hyphens only, 1-63 characters; "
                "no scheme, port, path or wildcard)"
            )
    if labels[-1].isdigit():
        return "ends in an all-digit label (looks like an address, not a name)"
    return None


def check_ip(value: str) -> tuple[str | None, str]:
    """(reason it is not usable or ``None``, canonical text)."""
    if "%" in value:
        return "has a zone index (not supported in a hosts file)", value
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "is not an IPv4 or IPv6 address", value
    if address.is_unspecified:
        return "is the unspecified address", value
    if address.is_multicast:
        return "is a multicast address", value
    return None, str(address)


def _text(entry: dict[str, Any], key: str, where: str, required: bool) -> str:
    value = entry.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}.{key}: missing (required unless the entry is disabled)")
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: must be a string, got {json.dumps(value)}")
    return value.strip()


def parse_config(raw: bytes) -> list[Entry]:
    """The enabled entries of ``raw`` (deduplicated, in file order) or :class:`ConfigError`."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config is {len(raw)} bytes (at most {MAX_CONFIG_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"config is not UTF-8: {error}") from None
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_bad_constant)
    except json.JSONDecodeError as error:
        raise ConfigError(f"config is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f'config must be a JSON object like {{"hosts": [...]}}, got {type(document).__name__}')
    unknown = sorted(set(document) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(map(repr, unknown))} (allowed: 'hosts')")
    hosts = document.get("hosts")
    if hosts is None:
        return []
    if not isinstance(hosts, list):
        raise ConfigError(f"hosts: must be a list, got {json.dumps(hosts)[:80]}")

    entries: list[Entry] = []
    owner: dict[str, tuple[str, int]] = {}  # domain -> (ip, index)
    for index, item in enumerate(hosts):
        where = f"hosts[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be an object with domain, ip, disabled; got {json.dumps(item)[:80]}")
        unknown = sorted(set(item) - ENTRY_KEYS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: 'domain', 'ip', 'disabled')"
            )
        disabled = item.get("disabled")
        if disabled is None:
            disabled = False
        if not isinstance(disabled, bool):
            raise ConfigError(f"{where}.disabled: must be true or false, got {json.dumps(disabled)}")
        domain = _text(item, "domain", where, required=not disabled).lower()
        ip = _text(item, "ip", where, required=not disabled)
        if domain or not disabled:
            reason = check_domain(domain)
            if reason:
                raise ConfigError(f"{where}.domain: {item.get('domain')!r} {reason}")
        if ip or not disabled:
            reason, ip = check_ip(ip)
            if reason:
                raise ConfigError(f"{where}.ip: {item.get('ip')!r} {reason}")
        if disabled:
            continue
        previous = owner.get(domain)
        if previous is not None and previous[0] != ip:
            raise ConfigError(
                f"{where}: domain {domain!r} maps to {ip} but hosts[{previous[1]}] maps it to {previous[0]} "
                "(one IP per domain)"
            )
        if previous is None:
            owner[domain] = (ip, index)
            entries.append(Entry(ip=ip, domain=domain))
    return entries
