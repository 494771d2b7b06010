"""A stand-in for the Tencent Cloud TCR API: signatures checked, tokens with an expiry, and a
private registry that accepts each token exactly while it is valid.

``TcrStandIn`` answers ``CreateInstanceToken`` and ``DescribeInternalEndpoints`` the way the API
documents it (API 3.0: POST JSON, ``{"Response": {..., "RequestId": ...}}``; errors as
``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`` with HTTP 200). It checks each
request's ``X-TC-Action``, ``X-TC-Version``, ``X-TC-Region``, JSON parameters and the
TC3-HMAC-SHA256 ``Authorization`` header, whose signature it recomputes with the secret key
(the algorithm is reimplemented here from Tencent Cloud's documentation, not taken from the
SDK), and refuses a wrong key or a signature older than 5 minutes (``AuthFailure.*``). Protocol
problems the API would not even answer are also collected in ``problems`` for the tests.

Tokens: ``fixed_token`` (the values wizard's tests) answers every call with the same user and
token; without it each call issues a new one. A ``temp`` token lives ``token_lifetime`` seconds.
With a ``registry`` (``harness.registry.PrivateRegistry``), its htpasswd holds exactly the
tokens that are valid now: each token is issued under a user name of its own (htpasswd keeps one
password per user, TCR many tokens per user), and a timer takes each temp token out at its
expiry, so the registry refuses it from then on. ``mint_refusal`` answers ``CreateInstanceToken``
with that error code instead (a failing API).

STS (``AssumeRoleWithWebIdentity``, as the SDK's TKE OIDC provider calls it, unsigned): a request
with ``web_identity_token`` for ``role_arn`` and ``provider_id`` gets a temporary key and session
token, which ``CreateInstanceToken`` then accepts (signed with the temporary key, the session
token in ``X-TC-Token``) until it expires.

``serving`` answers on 127.0.0.1, or on a socket given to it (one bound in another network
namespace: ``bound_in_netns``), over HTTP or, with a ``tls`` context, HTTPS.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness import pki
from harness.registry import PrivateRegistry

SECRET_ID = "AKIDtestsecretid0000000000000000000"
SECRET_KEY = "tEsTsEcReTkEy+/=!9876543210abcdefgh"
REGION = "ap-guangzhou"
INSTANCE = "tcr-abcd1234"
ISSUED_USER = "100012345678"
ISSUED_TOKEN = 'eyJhbGciOiJSUzI1NiJ9.fake-"token":with\\odd#chars'
TOKEN_ID = "4f1c2d9e-token-id"

_AUTH_RE = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z]+)/tc3_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


def tc3_signature(secret_key: str, *, method: str, uri: str, query: str, headers: Mapping[str, str],
                  signed_headers: Sequence[str], payload: bytes, timestamp: int, service: str) -> str:
    """TC3-HMAC-SHA256 as documented (API 3.0 "Signature v3")."""
    # Header names and values in lower case, trimmed, one per line, in SignedHeaders order.
    canonical_headers = "".join(f"{name}:{headers[name].strip().lower()}\n" for name in signed_headers)
    canonical_request = "\n".join([
        method, uri, query, canonical_headers, ";".join(signed_headers), hashlib.sha256(payload).hexdigest(),
    ])
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join([
        "TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])

    def sign(key: bytes, message: str) -> bytes:
        return hmac.new(key, message.encode(), hashlib.sha256).digest()

    key = sign(sign(sign(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass
class Recorded:
    action: str
    headers: dict[str, str]
    params: dict[str, Any]


@dataclass(frozen=True)
class IssuedToken:
    username: str
    token: str = field(repr=False)
    expires_at: float | None  # epoch seconds; None: longterm


@dataclass
class TcrStandIn:
    """The TCR API for one account: instances per region, their access links, CAM denials, the
    tokens it issued."""

    secret_id: str = SECRET_ID
    secret_key: str = SECRET_KEY
    instances: dict[str, str] = field(default_factory=lambda: {INSTANCE: REGION})  # id -> region
    access_links: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    denied: dict[str, str] = field(default_factory=dict)  # action -> error code
    raw_answer: tuple[int, str, bytes] | None = None  # (status, content type, body) instead of the API
    fixed_token: tuple[str, str] | None = (ISSUED_USER, ISSUED_TOKEN)  # None: a new user and token per call
    token_lifetime: float = 3600.0  # seconds a temp token is valid
    mint_refusal: str | None = None  # an error code CreateInstanceToken answers with instead
    registry: PrivateRegistry | None = None  # its htpasswd holds the valid tokens
    issued: list[IssuedToken] = field(default_factory=list)
    other_users: dict[str, str] = field(default_factory=dict)  # kept in the htpasswd too (a pusher)
    _sync: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one htpasswd writer at a time
    requests: list[Recorded] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    web_identity_token: str = "oidc-token-of-the-controller"
    role_arn: str = "qcs::cam::uin/100012345678:roleName/tcr-token-minter"
    provider_id: str = "tke-oidc-provider"
    temporary_keys: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # id -> key, token, expiry
    port: int = 0
    host: str = "127.0.0.1"
    scheme: str = "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """host:port, as ``tokenFrom.tcr.endpoint`` takes it."""
        return f"{self.host}:{self.port}"

    def actions(self) -> list[str]:
        return [r.action for r in self.requests]

    # ---------------------------------------------------------------- request handling

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, bytes]:
        if self.raw_answer is not None:
            return self.raw_answer
        request_id = str(uuid.uuid4())
        lower = {k.lower(): v for k, v in headers.items()}
        action = lower.get("x-tc-action", "")
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = None
        self.requests.append(Recorded(action, dict(lower), params if isinstance(params, dict) else {}))
        if method != "POST" or path != "/":
            self.problems.append(f"{method} {path}: expected POST /")
        if lower.get("content-type") != "application/json":
            self.problems.append(f"Content-Type {lower.get('content-type')!r}, expected application/json")
        if action == "AssumeRoleWithWebIdentity":
            return self._assume_role_with_web_identity(params if isinstance(params, dict) else {}, lower, request_id)
        if lower.get("x-tc-version") != "2019-09-24":
            self.problems.append(f"X-TC-Version {lower.get('x-tc-version')!r}")
            return self._error("InvalidParameter", "version", request_id)
        if not isinstance(params, dict):
            self.problems.append("body is not a JSON object")
            return self._error("InvalidParameter", "body", request_id)

        auth = _AUTH_RE.fullmatch(lower.get("authorization", ""))
        if auth is None:
            self.problems.append(f"Authorization header malformed: {lower.get('authorization')!r}")
            return self._error("AuthFailure.InvalidAuthorization", "Authorization is invalid", request_id)
        secret_key = self._secret_key_of(auth["id"], lower.get("x-tc-token", ""))
        if secret_key is None:
            return self._error("AuthFailure.SecretIdNotFound", "The SecretId is not found", request_id)
        timestamp = int(lower.get("x-tc-timestamp", "0"))
        if abs(time.time() - timestamp) > 300:
            return self._error("AuthFailure.SignatureExpire", "Signature expired", request_id)
        if auth["service"] != "tcr" or auth["date"] != datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d"):
            self.problems.append(f"credential scope {auth['date']}/{auth['service']}")
        signed = auth["signed"].split(";")
        if "content-type" not in signed or "host" not in signed:
            self.problems.append(f"SignedHeaders {auth['signed']!r} lacks content-type or host")
        expected = tc3_signature(secret_key, method=method, uri=path, query="", headers=lower,
                                 signed_headers=signed, payload=body, timestamp=timestamp, service="tcr")
        if not hmac.compare_digest(expected, auth["signature"]):
            return self._error("AuthFailure.SignatureFailure",
                               "The provided credentials could not be validated", request_id)

        region = lower.get("x-tc-region", "")
        if action in self.denied:
            return self._error(self.denied[action],
                               f"you are not authorized to perform operation (tcr:{action})", request_id)
        handler: Callable[[dict[str, Any], str, str], tuple[int, str, bytes]] | None = {
            "CreateInstanceToken": self._create_instance_token,
            "DescribeInternalEndpoints": self._describe_internal_endpoints,
        }.get(action)
        if handler is None:
            self.problems.append(f"unexpected action {action!r}")
            return self._error("InvalidAction", f"action {action} not found", request_id)
        return handler(params, region, request_id)

    def _secret_key_of(self, secret_id: str, session_token: str) -> str | None:
        if secret_id == self.secret_id:
            return self.secret_key
        key, token, expiry = self.temporary_keys.get(secret_id, ("", "", 0.0))
        if key and hmac.compare_digest(token, session_token) and expiry > time.time():
            return key
        return None

    def _assume_role_with_web_identity(self, params: dict[str, Any], headers: Mapping[str, str],
                                       request_id: str) -> tuple[int, str, bytes]:
        if headers.get("x-tc-version") != "2018-08-13":
            self.problems.append(f"STS X-TC-Version {headers.get('x-tc-version')!r}")
        if (params.get("WebIdentityToken"), params.get("RoleArn"), params.get("ProviderId")) != (
                self.web_identity_token, self.role_arn, self.provider_id):
            return self._error("InvalidParameter.WebIdentityTokenError", "the web identity token is not valid",
                               request_id)
        duration = int(params.get("DurationSeconds") or 7200)
        expiry = time.time() + duration
        secret_id, key, token = f"AKIDtmp{secrets.token_hex(8)}", secrets.token_urlsafe(24), secrets.token_urlsafe(32)
        self.temporary_keys[secret_id] = (key, token, expiry)
        return self._ok({"Credentials": {"Token": token, "TmpSecretId": secret_id, "TmpSecretKey": key},
                         "ExpiredTime": int(expiry),
                         "Expiration": datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
                        request_id)

    def _instance(self, params: Mapping[str, Any], region: str) -> str | None:
        registry = params.get("RegistryId")
        if not isinstance(registry, str):
            self.problems.append(f"RegistryId {registry!r} is not a string")
            return None
        return registry if self.instances.get(registry) == region else None

    def _create_instance_token(self, params: dict[str, Any], region: str, request_id: str) -> tuple[int, str, bytes]:
        unknown = set(params) - {"RegistryId", "TokenType", "Desc"}
        if unknown:
            self.problems.append(f"CreateInstanceToken: unknown parameters {sorted(unknown)}")
        if params.get("TokenType", "temp") not in ("longterm", "temp"):
            return self._error("InvalidParameterValue", "TokenType must be longterm or temp", request_id)
        if self._instance(params, region) is None:
            return self._error("ResourceNotFound", f"instance {params.get('RegistryId')} not found", request_id)
        if self.mint_refusal is not None:
            return self._error(self.mint_refusal, "the token service is unavailable", request_id)
        longterm = params.get("TokenType") == "longterm"
        issued = self.issue(longterm)
        return self._ok({
            "Username": issued.username,
            "Token": issued.token,
            "ExpTime": 0 if issued.expires_at is None else int(issued.expires_at * 1000),
            "TokenId": TOKEN_ID if longterm else None,
        }, request_id)

    def issue(self, longterm: bool) -> IssuedToken:
        """A token as CreateInstanceToken issues it; the registry accepts it from now on."""
        expires_at = None if longterm else time.time() + self.token_lifetime
        if self.fixed_token is not None:
            username, token = self.fixed_token
        else:
            username, token = f"{ISSUED_USER}-{len(self.issued) + 1:04d}", secrets.token_urlsafe(24)
        issued = IssuedToken(username, token, expires_at)
        self.issued.append(issued)
        self.sync_registry()
        if expires_at is not None and self.registry is not None:
            timer = threading.Timer(max(0.0, expires_at - time.time()), self.sync_registry)
            timer.daemon = True
            timer.start()
        return issued

    def valid_tokens(self, now: float | None = None) -> dict[str, str]:
        """User name -> token, for every token not expired at ``now``."""
        at = time.time() if now is None else now
        return {t.username: t.token for t in self.issued if t.expires_at is None or t.expires_at > at}

    def sync_registry(self) -> None:
        """The registry's htpasswd := the valid tokens (none: a line nobody can use)."""
        if self.registry is not None:
            with self._sync:
                self.registry.set_users({**self.other_users, **self.valid_tokens()}
                                        or {"nobody": secrets.token_urlsafe(24)})

    def _describe_internal_endpoints(self, params: dict[str, Any], region: str,
                                     request_id: str) -> tuple[int, str, bytes]:
        unknown = set(params) - {"RegistryId"}
        if unknown:
            self.problems.append(f"DescribeInternalEndpoints: unknown parameters {sorted(unknown)}")
        registry = self._instance(params, region)
        if registry is None:
            return self._error("ResourceNotFound", f"instance {params.get('RegistryId')} not found", request_id)
        links = self.access_links.get(registry, [])
        return self._ok({"AccessVpcSet": links, "TotalCount": len(links)}, request_id)

    @staticmethod
    def _ok(payload: dict[str, Any], request_id: str) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps({"Response": {**payload, "RequestId": request_id}}).encode()

    @staticmethod
    def _error(code: str, message: str, request_id: str) -> tuple[int, str, bytes]:
        body = {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}}
        return 200, "application/json", json.dumps(body).encode()


@contextmanager
def serving(fake: TcrStandIn, *, tls: ssl.SSLContext | None = None,
            sock: socket.socket | None = None) -> Iterator[TcrStandIn]:
    """Serve ``fake`` in a thread: on ``sock`` (bound, not listening) or on 127.0.0.1 (an ephemeral
    port); over HTTPS with ``tls``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(*fake.handle("POST", self.path, dict(self.headers.items()), body))

        def do_GET(self) -> None:
            self._answer(*fake.handle("GET", self.path, dict(self.headers.items()), b""))

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=sock is None)
    if sock is not None:
        server.socket.close()
        server.socket = sock
        server.server_address = sock.getsockname()
        server.server_activate()
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    fake.host, fake.port = str(server.server_address[0]), int(server.server_address[1])
    fake.scheme = "https" if tls is not None else "http"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def socket_in_netns(netns: str) -> socket.socket:
    """A TCP socket made inside the network namespace at path ``netns`` (a socket keeps the namespace
    it was made in, for binding and connecting alike; this process's own stays as it was)."""
    result: list[socket.socket | BaseException] = []

    def make() -> None:  # in a thread of its own: setns changes the calling thread only
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(netns, os.O_RDONLY)
        try:
            if libc.setns(target, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), f"setns {netns}")
            try:
                result.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            finally:
                if libc.setns(own, 0x40000000) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        except BaseException as exc:
            result.append(exc)
        finally:
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if isinstance(result[-1], BaseException):
        raise result[-1]
    return result[-1]


def bound_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` inside the network namespace at path ``netns``."""
    sock = socket_in_netns(netns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def https_context(ca: pki.CertificateAuthority, directory: Path, ip: str = "127.0.0.1") -> ssl.SSLContext:
    """A server context whose certificate ``ca`` issued for ``ip`` (the CA's file: ``ca.crt`` there)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    cert, key = ca.issue(ip, ip_addresses=(ip,), server=True).write(directory, "tcr-api")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
