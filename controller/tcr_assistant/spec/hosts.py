"""The rule of a registry or API host (``spec.docker.server``, ``tokenFrom.tcr.endpoint``): a bare
host name, lower case, with an optional ``:port``. Standard library only, no I/O."""

from __future__ import annotations

import re

from tcr_assistant.spec import rules
from tcr_assistant.spec.names import dns_problem, show
from tcr_assistant.spec.rules import PORT_MAX

_PORT_RE = re.compile(rules.PORT)
_SCHEME_RE = re.compile("^" + rules.SCHEME)


def validate_server(server: str) -> str | None:
    """Why ``server`` is not a valid ``spec.docker.server`` (bare host, optional ``:port``), or None."""
    if not isinstance(server, str):
        return f"must be a string (a registry host name), not {type(server).__name__}"
    if server == "":
        return "must not be empty: give the registry host name, e.g. example.tencentcloudcr.com"
    if any(c.isspace() for c in server):
        return "must not contain spaces or other whitespace: give the bare registry host name"
    if any(not c.isprintable() for c in server):
        return "must not contain control characters: give the bare registry host name"
    scheme = _SCHEME_RE.match(server)
    if scheme is not None:
        return (
            f"must be a bare host name without a scheme: remove {show(scheme.group(0))} "
            "(e.g. example.tencentcloudcr.com)"
        )
    if "/" in server:
        return "must be a bare host name without a path: remove everything from the first '/'"
    if "@" in server:
        return "must be a bare host name without a user part ('user@'): put the user in spec.docker.username"
    if "?" in server or "#" in server:
        return "must be a bare host name without a query or fragment ('?', '#')"
    if server.startswith("["):
        return "must be a DNS host name (IPv6 literals are not supported)"
    host, sep, port = server.partition(":")
    if sep:
        if ":" in port:
            return "must be a host name with at most one ':port' (IPv6 literals are not supported)"
        if port == "":
            return f"has an empty port after ':': remove the ':' or give a port from 1 to {PORT_MAX}"
        if _PORT_RE.fullmatch(port) is None or int(port) > PORT_MAX:
            return f"has an invalid port {show(port)}: a port is a number from 1 to {PORT_MAX} without leading zeros"
    if host == "":
        return "must start with a host name before ':port'"
    if host.endswith("."):
        return f"host {show(host)} must not end with '.'"
    if "*" in host:
        return f"host {show(host)} must be an exact host name (no wildcards)"
    if any(c.isupper() for c in host):
        return f"host {show(host)} must be lower case (e.g. {show(host.lower())})"
    problem = dns_problem(host, "host", subdomain=True, dns_labels=True)
    if problem is not None:
        return f"must be a valid DNS host name: {problem}"
    return None
