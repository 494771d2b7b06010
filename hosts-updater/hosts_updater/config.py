"""Parse and validate ``config.json`` (ConfigMap ``updater-config``).

Format (the chart writes ``global.hosts`` as is)::

    {"hosts": [{"domain": "example.tencentcloudcr.com", "ip": "10.0.0.12", "disabled": false}]}

Two kinds of problem, two outcomes:

*Malformed* (a :class:`ConfigError` naming the entry and field; nothing is applied):

* top level: an object whose only key is ``hosts``; ``hosts`` is a list, or ``null``/missing
  (= no entries). Duplicate JSON keys and non-standard numbers (NaN, Infinity) are rejected.
* entry: an object with keys among ``domain``, ``ip``, ``disabled``.
  ``disabled`` is a JSON boolean (``null`` or missing = false).
  ``domain`` is a DNS host name (letters, digits, hyphens; labels of 1-63; 253 at most; the last
  label not all digits; no trailing dot, no wildcard, no port); written in lower case.
  ``ip`` is an IPv4 or IPv6 address (no zone index); written in its canonical form.
  Surrounding whitespace is ignored.
  A disabled entry may leave ``domain``/``ip`` empty or missing; when given they are still checked.
* one domain may map to one IP only (among enabled entries); repeating the same pair is fine.

*Refused* (well-formed, but a line no node should get: :func:`refuse_domain`, :func:`refuse_ip`):
the entry is left out and reported in :attr:`Config.refused`; the other entries still apply.
A disabled entry writes nothing, so it is never refused.
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
_TOP_LABEL = re.compile(r"^([a-z]+|xn--[a-z0-9-]+)$")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_DO = "; give the registry's domain and its private-network IP, or remove the entry"

#: Cloud metadata services' names: the name and every name under it is refused (instance
#: credentials and user data are served there; a redirect would hand them to someone else).
#: Tencent Cloud, Google Cloud (both of its names); AWS's names all start with ``instance-data``.
METADATA_NAMES = ("metadata.tencentyun.com", "metadata.google.internal", "metadata.goog")
METADATA_FIRST_LABELS = ("instance-data",)
#: Top-level labels that are never a registry's: ``localhost`` (RFC 6761, loopback), ``local``
#: (RFC 6762 mDNS, and the default cluster domain ``cluster.local``), ``default`` (the
#: namespace: ``<service>.default`` is a Service's short name inside a cluster).
REFUSED_TOP_LABELS = {
    "localhost": "is a loopback name (localhost and *.localhost)",
    "local": "is under .local (mDNS and the default cluster domain cluster.local)",
    "default": "looks like a Service's short name <service>.default (namespace default)",
}


class ConfigError(Exception):
    """The configuration is unusable; the message names the offending entry and field."""


class Config:
    """What a config file asks for: the ``entries`` to write and the entries ``refused`` (one
    message each, naming the entry, the field and what to do).

    A plain class rather than a dataclass: importing ``dataclasses`` costs ~1.6 MiB of RSS.
    """

    __slots__ = ("entries", "refused")

    def __init__(self, entries: list[Entry], refused: list[str]) -> None:
        self.entries = entries
        self.refused = refused


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


def refuse_domain(domain: str) -> str | None:
    """Why a well-formed, lower-case host name is no registry domain to write on a node, or ``None``.

    Refused: single-label names, ``localhost`` and ``*.localhost``, ``*.local`` (so
    ``cluster.local``), Service names (a ``svc`` label after the first: ``<service>.<namespace>.svc``
    with any cluster domain after it), ``<service>.default``, a top-level label that is not
    letters (or an ``xn--`` IDN label), as ``<service>.<namespace>`` with a namespace such as
    ``kube-system`` would be, and the cloud metadata names (:data:`METADATA_NAMES`).
    """
    labels = domain.split(".")
    top = labels[-1]
    if top in REFUSED_TOP_LABELS:
        return REFUSED_TOP_LABELS[top]
    if len(labels) == 1:
        return "is a single-label name (a short host or Service name), not a registry domain"
    if "svc" in labels[1:]:
        return "is a cluster-internal Service name (a 'svc' label: <service>.<namespace>.svc[.<cluster domain>])"
    if labels[0] in METADATA_FIRST_LABELS or any(
        domain == name or domain.endswith("." + name) for name in METADATA_NAMES
    ):
        return "is a cloud metadata service name"
    if not _TOP_LABEL.match(top):
        return f"has top-level label {top!r}, which is not a public suffix's form (letters, or xn--)"
    return None


def refuse_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` is no unicast address a registry can listen on, or ``None``.

    Refused: unspecified and 0.0.0.0/8, loopback, link-local (169.254.0.0/16 and fe80::/10: the
    cloud metadata addresses 169.254.0.23 and 169.254.169.254 are in it), multicast, the broadcast
    address 255.255.255.255, reserved ranges (240.0.0.0/4; IPv6's reserved blocks) and
    IPv4-mapped IPv6 addresses (whose IPv4 address these rules would have to judge instead).
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"is an IPv4-mapped IPv6 address: write the IPv4 address {address.ipv4_mapped} itself"
    if address.is_unspecified:
        return "is the unspecified address"
    if isinstance(address, ipaddress.IPv4Address) and address.packed[0] == 0:
        return "is in 0.0.0.0/8 ('this network'), not a host's address"
    if address.is_loopback:
        return "is a loopback address (it would point the name at the node itself)"
    if address.is_link_local:
        return (
            "is a link-local address (169.254.0.0/16, fe80::/10: where the cloud metadata service "
            "169.254.0.23 / 169.254.169.254 is)"
        )
    if address.is_multicast:
        return "is a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address == _BROADCAST:
        return "is the broadcast address"
    if address.is_reserved:
        return "is in a reserved range (240.0.0.0/4, or a reserved IPv6 block)"
    return None


def check_ip(value: str) -> tuple[str | None, ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    """(reason it is not an address or ``None``, the address)."""
    if "%" in value:
        return "has a zone index (not supported in a hosts file)", None
    try:
        return None, ipaddress.ip_address(value)
    except ValueError:
        return "is not an IPv4 or IPv6 address", None


def _text(entry: dict[str, Any], key: str, where: str, required: bool) -> str:
    value = entry.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}.{key}: missing (required unless the entry is disabled)")
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: must be a string, got {json.dumps(value)}")
    return value.strip()


def parse_config(raw: bytes) -> Config:
    """The enabled entries of ``raw`` (deduplicated, in file order) and the refused ones, or
    :class:`ConfigError` when ``raw`` is malformed."""
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
        return Config([], [])
    if not isinstance(hosts, list):
        raise ConfigError(f"hosts: must be a list, got {json.dumps(hosts)[:80]}")

    entries: list[Entry] = []
    refused: list[str] = []
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
        address = None
        if ip or not disabled:
            reason, address = check_ip(ip)
            if reason:
                raise ConfigError(f"{where}.ip: {item.get('ip')!r} {reason}")
        if disabled:
            continue
        assert address is not None
        ip = str(address)
        reason = refuse_domain(domain)
        if reason:
            refused.append(f"{where}.domain: {domain!r} {reason}{_DO}")
            continue
        reason = refuse_ip(address)
        if reason:
            refused.append(f"{where}.ip: {ip!r} {reason}{_DO}")
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
    return Config(entries, refused)
