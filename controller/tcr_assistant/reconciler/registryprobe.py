"""Does the registry accept a credential? Ask its ``/v2/`` endpoint, as ``docker login`` does.

Basic auth first; a registry that answers 401 with a ``Bearer`` challenge (Harbor, TCR) gets the
token flow: the same credential, as Basic auth, to the challenge's realm, then ``/v2/`` with the
token it returns. The registry's name resolves as on the nodes: through the hosts entries the
chart gives (``--registry-address NAME=IP``), else DNS.

The credential goes only where the nodes would send it, and nowhere an ImagePullSecret's author
could aim it inside the cluster's own machinery: an address that is loopback, link-local (the
cloud metadata service), multicast, unspecified or reserved is refused before any connection,
for the registry and for the realm alike; a realm must be HTTPS; redirects are not followed.
Answers are reduced to a reason and a short message: no body, header or credential is kept.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from urllib.parse import urlencode, urlsplit

import urllib3

from tcr_assistant.reconciler.credcheck import (
    ACCEPTED,
    ADDRESS_REFUSED,
    REFUSED,
    TLS_ERROR,
    UNEXPECTED,
    UNREACHABLE,
    ProbeResult,
)

TIMEOUT = 5.0
MAX_TOKEN_ANSWER = 1 << 20  # bytes read of a token answer

_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate: Bearer realm="…",service="…"`` -> ("bearer", {realm, service, …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {key.lower(): (quoted if quoted else bare) for key, quoted, bare in _PARAM.findall(rest)}
    return scheme.lower(), params


def split_server(server: str) -> tuple[str, int]:
    """A ``spec.docker.server`` (``host``, ``host:port``, with or without ``https://``) -> (host, port)."""
    text = server.strip()
    if "://" in text:
        text = urlsplit(text).netloc
    text = text.split("/", 1)[0]
    if text.startswith("["):  # [v6]:port
        host, _, port = text[1:].partition("]")
        return host, int(port[1:]) if port.startswith(":") else 443
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host:
        return host, int(port)
    return text, 443


def address_refused(address: str) -> str | None:
    """Why the credential must not be sent to ``address`` (an IP), or None."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for refused, what in ((ip.is_loopback, "loopback"), (ip.is_link_local, "link-local (cloud metadata)"),
                          (ip.is_multicast, "multicast"), (ip.is_unspecified, "unspecified"),
                          (ip.is_reserved, "reserved")):
        if refused:
            return f"{address} is a {what} address"
    return None


def token_url(params: Mapping[str, str]) -> str | None:
    """The realm's URL with ``service`` and ``scope`` as the registry asked; None unless HTTPS."""
    realm = params.get("realm", "")
    parts = urlsplit(realm)
    if parts.scheme != "https" or not parts.hostname:
        return None
    query = {key: params[key] for key in ("service", "scope") if params.get(key)}
    if not query:
        return realm
    return realm + ("&" if parts.query else "?") + urlencode(query)


Resolve = Callable[[str, int], list[str]]


def dns(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


class RegistryProbe:
    def __init__(self, addresses: Mapping[str, str] | None = None, ca_file: str | None = None,
                 timeout: float = TIMEOUT, resolve: Resolve = dns) -> None:
        self.addresses = dict(addresses or {})
        self.ca_file = ca_file
        self.timeout = timeout
        self.resolve = resolve

    def check(self, server: str, username: str, password: str) -> ProbeResult:
        basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        host, port = split_server(server)
        try:
            status, challenge, _ = self._get(host, port, "/v2/", basic)
            scheme, params = parse_challenge(challenge)
            if status == 401 and scheme == "bearer":
                return self._token_flow(host, port, params, basic)
            return self._judge(status, f"{host}:{port}/v2/")
        except _Refused as refused:
            return ProbeResult(ADDRESS_REFUSED, str(refused))
        except (ssl.SSLError, urllib3.exceptions.SSLError) as exc:
            return ProbeResult(TLS_ERROR, f"TLS with {host}:{port} failed: {_network_reason(exc)}")
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            return ProbeResult(UNREACHABLE, f"cannot reach {host}:{port}: {_network_reason(exc)}")

    def _token_flow(self, host: str, port: int, params: Mapping[str, str], basic: str) -> ProbeResult:
        url = token_url(params)
        if url is None:
            return ProbeResult(UNEXPECTED, f"{host}:{port} asks for a token from a realm that is not HTTPS")
        parts = urlsplit(url)
        realm_host, realm_port = parts.hostname or "", parts.port or 443
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        status, _, body = self._get(realm_host, realm_port, path, basic)
        if status in (401, 403):
            return ProbeResult(REFUSED, f"the token service {realm_host} refused the credential (HTTP {status})")
        if status != 200:
            return ProbeResult(UNEXPECTED, f"the token service {realm_host} answered HTTP {status}")
        try:
            answer = json.loads(body)
            token = str(answer.get("token") or answer.get("access_token") or "")
        except (ValueError, AttributeError):
            token = ""
        if not token:
            return ProbeResult(UNEXPECTED, f"the token service {realm_host} answered without a token")
        status, _, _ = self._get(host, port, "/v2/", f"Bearer {token}")
        return self._judge(status, f"{host}:{port}/v2/ with its token")

    @staticmethod
    def _judge(status: int, what: str) -> ProbeResult:
        if 200 <= status < 300:
            return ProbeResult(ACCEPTED, f"{what} accepted the credential")
        if status in (401, 403):
            return ProbeResult(REFUSED, f"{what} refused the credential (HTTP {status})")
        return ProbeResult(UNEXPECTED, f"{what} answered HTTP {status}")

    def _address(self, host: str, port: int) -> str:
        if host in self.addresses:
            candidates = [self.addresses[host]]
        else:
            try:
                ipaddress.ip_address(host)
                candidates = [host]
            except ValueError:
                candidates = self.resolve(host, port)
        if not candidates:
            raise OSError(f"{host} does not resolve")
        for address in candidates:
            why = address_refused(address)
            if why is not None:
                raise _Refused(f"{host} resolves to {why}: the credential is not sent there")
        return candidates[0]

    def _get(self, host: str, port: int, path: str, authorization: str) -> tuple[int, str, bytes]:
        """(status, the WWW-Authenticate header, the body's first MAX_TOKEN_ANSWER bytes)."""
        address = self._address(host, port)
        pool = urllib3.HTTPSConnectionPool(
            address, port, server_hostname=host, assert_hostname=host, cert_reqs="CERT_REQUIRED",
            ca_certs=self.ca_file, timeout=urllib3.Timeout(self.timeout), retries=False, maxsize=1)
        try:
            response = pool.request("GET", path, redirect=False, preload_content=False, headers={
                "Host": host if port == 443 else f"{host}:{port}", "Authorization": authorization,
                "User-Agent": "tcr-assistant registry check"})
            try:
                body = response.read(MAX_TOKEN_ANSWER)
                return response.status, str(response.headers.get("WWW-Authenticate") or ""), body
            finally:
                response.release_conn()
        finally:
            pool.close()


class _Refused(Exception):
    pass


def _ssl_reason(exc: BaseException) -> str:
    """"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: …", wherever in the chain."""
    match = re.search(r"\[SSL: [A-Z_]+\][^'\")\]]*", str(exc))
    return match.group(0).strip()[:200] if match else type(exc).__name__


def _network_reason(exc: BaseException) -> str:
    """The end of a urllib3 error chain ("Connection refused", "timed out"), never a URL's query."""
    inner: BaseException | None = exc
    while isinstance(inner, urllib3.exceptions.HTTPError) and getattr(inner, "reason", None) is not None:
        inner = getattr(inner, "reason", None)
    text = str(inner or exc)
    if isinstance(inner, ssl.SSLError | urllib3.exceptions.SSLError) or "[SSL: " in text:
        return _ssl_reason(inner or exc)
    match = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if match:
        return match.group(0).strip()
    if "timed out" in text.lower():
        return "timed out"
    return type(inner or exc).__name__
