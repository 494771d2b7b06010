"""The connection to the API server: TLS and credentials from a kubeconfig or the Pod's
ServiceAccount, requests over one urllib3 pool.

Not the `kubernetes` package: importing it costs about 23 MiB of RSS (every API model), and
the controller sends raw JSON anyway (docs/DESIGN.md "The controller").
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0  # projected tokens rotate: read the file again this often
CONNECT_TIMEOUT = 10.0


class ConfigError(Exception):
    """No usable kubeconfig or in-cluster configuration (the message says what is missing)."""


@dataclass
class Credentials:
    """Where the API server is and how to talk to it."""

    server: str
    ca_pem: str | None = None  # None: the system's trust store
    insecure: bool = False
    client_cert_pem: str | None = None
    client_key_pem: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    tls_server_name: str | None = None


def _file_or_data(entry: Mapping[str, Any], key: str, base: Path) -> str | None:
    """``key-data`` (base64) or ``key`` (a file, relative to the kubeconfig's directory)."""
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(data).decode()
    path = entry.get(key)
    if path:
        return (base / str(path)).expanduser().read_text()
    return None


def _named(items: Sequence[Mapping[str, Any]] | None, name: str, what: str, source: Path) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return dict(item.get(what) or {})
    raise ConfigError(f"{source}: no {what} named {name!r}")


def from_kubeconfig(path: Path, context: str | None = None) -> Credentials:
    """The current (or the named) context of a kubeconfig file. Client certificates, bearer
    tokens and token files are supported; exec and auth-provider plugins are not."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from None
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"{path}: no current-context")
    ctx = _named(doc.get("contexts"), name, "context", path)
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster")), "cluster", path)
    user = _named(doc.get("users"), str(ctx.get("user")), "user", path) if ctx.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(f"{path}: user {ctx.get('user')!r} uses an exec or auth-provider plugin, which "
                          "tcr-assistant does not run; give it a client certificate or a token")
    base = path.parent
    server = str(cluster.get("server") or "")
    if not server:
        raise ConfigError(f"{path}: cluster {ctx.get('cluster')!r} has no server")
    token_file = user.get("tokenFile")
    return Credentials(
        server=server.rstrip("/"),
        ca_pem=_file_or_data(cluster, "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        client_cert_pem=_file_or_data(user, "client-certificate", base),
        client_key_pem=_file_or_data(user, "client-key", base),
        token=user.get("token"),
        token_file=str((base / str(token_file)).expanduser()) if token_file else None,
        tls_server_name=cluster.get("tls-server-name"),
    )


def in_cluster(directory: Path = SERVICE_ACCOUNT_DIR, env: Mapping[str, str] = os.environ) -> Credentials:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (directory / "token").exists():
        raise ConfigError("not running in a Pod (no KUBERNETES_SERVICE_HOST/PORT or no ServiceAccount token)")
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Credentials(server=f"https://{hostport}", ca_pem=(directory / "ca.crt").read_text(),
                       token_file=str(directory / "token"))


def load(kubeconfig: str | None = None) -> Credentials:
    """``kubeconfig`` when given; in-cluster when running in a Pod; else $KUBECONFIG (its first
    file) or ~/.kube/config."""
    if kubeconfig:
        return from_kubeconfig(Path(kubeconfig))
    with contextlib.suppress(ConfigError):
        return in_cluster()
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return from_kubeconfig(Path(first) if first else Path.home() / ".kube" / "config")


def ssl_context(creds: Credentials) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if creds.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif creds.ca_pem:
        ctx.load_verify_locations(cadata=creds.ca_pem)
    if creds.client_cert_pem and creds.client_key_pem:
        # ssl reads a client key only from a file: a private one, removed at once
        with tempfile.TemporaryDirectory(prefix="tcr-assistant-") as directory:
            cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
            for path, text in ((cert, creds.client_cert_pem), (key, creds.client_key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(text)
            ctx.load_cert_chain(cert, key)
    return ctx


class ApiClient:
    """HTTP(S) requests to one API server over a pool of ``pool_size`` connections."""

    def __init__(self, creds: Credentials, pool_size: int = 16, user_agent: str = "tcr-assistant") -> None:
        self.creds = creds
        self.server = creds.server
        url = urlsplit(creds.server)
        kwargs: dict[str, Any] = {"maxsize": pool_size, "block": False, "retries": False}
        if url.scheme == "https":
            kwargs["ssl_context"] = ssl_context(creds)
            if creds.tls_server_name:
                kwargs["server_hostname"] = creds.tls_server_name
        self.pool = urllib3.PoolManager(**kwargs)
        self.user_agent = user_agent
        self._token = creds.token
        self._token_read_at = -TOKEN_REREAD_SECONDS
        self._lock = threading.Lock()

    @classmethod
    def for_server(cls, server: str, pool_size: int = 16) -> ApiClient:
        """No credentials (tests, and plain-HTTP endpoints)."""
        return cls(Credentials(server=server.rstrip("/")), pool_size)

    def _bearer(self) -> str | None:
        if not self.creds.token_file:
            return self._token
        with self._lock:
            if time.monotonic() - self._token_read_at >= TOKEN_REREAD_SECONDS:
                self._token = Path(self.creds.token_file).read_text().strip()
                self._token_read_at = time.monotonic()
            return self._token

    def request(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] = 30.0,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """One request; ``stream``: the body is read by the caller (watches), who releases it."""
        url = self.server + path + (f"?{urlencode(list(query))}" if query else "")  # path: already quoted
        all_headers = {"User-Agent": self.user_agent, **(headers or {})}
        token = self._bearer()
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        connect, read = timeout if isinstance(timeout, tuple) else (min(CONNECT_TIMEOUT, timeout), timeout)
        return self.pool.request(
            method, url, body=body, headers=all_headers, preload_content=not stream,
            timeout=urllib3.Timeout(connect=connect, read=read), redirect=False,
        )

    def close(self) -> None:
        self.pool.clear()
