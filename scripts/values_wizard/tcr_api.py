"""The two Tencent Cloud TCR API calls the values wizard makes, through the official SDK.

``CreateInstanceToken`` issues a registry credential (user name + token) for the user who owns
the API key; ``DescribeInternalEndpoints`` lists an instance's private-network access links
(``AccessVpcSet[].AccessIp`` is the registry's private IP). Both use
``tencentcloud-sdk-python-tcr`` (``tencentcloud.tcr.v20190924``), which signs requests with
TC3-HMAC-SHA256.

Every failure becomes :class:`TcrApiError`, a one-line message meant for a terminal: no
traceback, and never the secret key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

API_VERSION = "2019-09-24"
DEFAULT_ENDPOINT = "tcr.tencentcloudapi.com"
ENV_SECRET_ID = "TENCENTCLOUD_SECRET_ID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRET_KEY"
ENV_SESSION_TOKEN = "TENCENTCLOUD_SESSION_TOKEN"
ENV_ENDPOINT = "TCR_API_ENDPOINT"
DEFAULT_TIMEOUT = 30


class TcrApiError(Exception):
    """A failed API call, as one line a user can act on (never contains the secret key)."""

    def __init__(self, message: str, code: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True)
class InstanceToken:
    """What ``CreateInstanceToken`` returns (``token`` is the registry password: never print it)."""

    username: str
    token: str
    expires_at: int | None
    token_id: str | None

    def __repr__(self) -> str:
        return f"InstanceToken(username={self.username!r}, token=<hidden>, token_id={self.token_id!r})"


@dataclass(frozen=True)
class InternalEndpoint:
    """One private-network access link of an instance (``AccessVpc``)."""

    vpc_id: str
    subnet_id: str
    status: str
    ip: str


@dataclass(frozen=True)
class Endpoint:
    """Where the API is: host[:port] and the protocol (https unless told ``http://``)."""

    host: str
    protocol: str = "https"

    @classmethod
    def parse(cls, value: str) -> Endpoint:
        """``HOST[:PORT]``, ``https://HOST[:PORT]`` or ``http://HOST[:PORT]`` (no path)."""
        text = value.strip()
        protocol = "https"
        if "://" in text:
            parts = urlsplit(text)
            if parts.scheme not in ("http", "https"):
                raise ValueError(f"unsupported scheme {parts.scheme!r}: use http:// or https://")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError("must be HOST[:PORT] without a path")
            protocol, text = parts.scheme, parts.netloc
        if text == "" or "/" in text or any(c.isspace() for c in text) or "@" in text:
            raise ValueError("must be HOST[:PORT], optionally prefixed by http:// or https://")
        host, sep, port = text.rpartition(":")
        if sep and (not port.isdigit() or not 0 < int(port) < 65536 or host == ""):
            raise ValueError(f"has an invalid port {port!r}")
        return cls(host=text, protocol=protocol)

    def __str__(self) -> str:
        return f"{self.protocol}://{self.host}"


def _one_line(text: object, secret: str | None) -> str:
    line = " ".join(str(text).split())
    if secret:
        line = line.replace(secret, "<secret key>")
    return line


def _network_reason(message: object, secret: str | None) -> str:
    """The useful end of a requests/urllib3 error ("[Errno 111] Connection refused", "timed out", ...)."""
    text = _one_line(message, secret)
    errno = re.findall(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if errno:
        return errno[-1].strip()
    for phrase in ("Read timed out", "timed out", "Name or service not known", "certificate verify failed"):
        if phrase in text:
            return phrase
    return text[:200]


class TcrApi:
    """A TCR API client for one region, signing with one API key."""

    def __init__(
        self,
        secret_id: str,
        secret_key: str,
        region: str,
        *,
        endpoint: Endpoint | None = None,
        session_token: str | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> None:
        from tencentcloud.common import credential
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile
        from tencentcloud.tcr.v20190924 import tcr_client

        self._secret_key = secret_key
        self.region = region
        self.endpoint = endpoint or Endpoint(DEFAULT_ENDPOINT)
        try:
            cred = credential.Credential(secret_id, secret_key, session_token or None)
        except TencentCloudSDKException as exc:
            raise TcrApiError(
                f"invalid API key in {ENV_SECRET_ID} / {ENV_SECRET_KEY}: {_one_line(exc.message, secret_key)}",
                code=exc.code,
            ) from None
        http = HttpProfile(endpoint=self.endpoint.host, protocol=self.endpoint.protocol, reqTimeout=timeout)
        # English messages; no region breaker (it would hide network errors behind a fallback endpoint).
        profile = ClientProfile(httpProfile=http, language="en-US", disable_region_breaker=True)
        self._client: Any = tcr_client.TcrClient(cred, region, profile)

    def _call(self, action: str, params: dict[str, Any], instance_id: str) -> dict[str, Any]:
        """Call ``action`` and return its ``Response`` object, or raise TcrApiError."""
        import json

        from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

        try:
            body = self._client.call(action, params)
            payload = json.loads(body)
        except TencentCloudSDKException as exc:
            raise self._error(action, instance_id, exc) from None
        except ValueError:
            raise TcrApiError(
                f"{action} failed: the answer from {self.endpoint} is not JSON (is that the TCR API endpoint?)"
            ) from None
        except Exception as exc:  # the SDK wraps most failures, but not all (e.g. a body that is not JSON)
            raise TcrApiError(
                f"{action} failed: unexpected answer from {self.endpoint}: {_one_line(exc, self._secret_key)}"
            ) from None
        response = payload.get("Response") if isinstance(payload, dict) else None
        if not isinstance(response, dict):
            raise TcrApiError(f"{action} failed: the answer from {self.endpoint} has no Response object")
        error = response.get("Error")
        if isinstance(error, dict):  # the SDK only looks for errors when Content-Type is exactly JSON
            raise self._error_from(action, instance_id, str(error.get("Code")), error.get("Message"),
                                   response.get("RequestId"))
        return response

    def _error(self, action: str, instance_id: str, exc: Any) -> TcrApiError:
        code = str(exc.code or "")
        message = exc.message
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        if code == "ClientNetworkError":
            return TcrApiError(
                f"cannot reach the Tencent Cloud API at {self.endpoint}: {_network_reason(message, self._secret_key)}",
                code=code,
            )
        if code == "ServerNetworkError":
            return TcrApiError(
                f"{action} failed: the API at {self.endpoint} answered with an HTTP error: "
                f"{_one_line(message, self._secret_key)[:300]}",
                code=code,
            )
        return self._error_from(action, instance_id, code, message, exc.requestId)

    def _error_from(
        self, action: str, instance_id: str, code: str, message: Any, request_id: Any
    ) -> TcrApiError:
        detail = _one_line(message or "", self._secret_key)
        suffix = f" [{code}: {detail}" + (f"; RequestId {request_id}]" if request_id else "]")
        denied = code.startswith("UnauthorizedOperation") or code.endswith("Unauthorized")
        if denied or code == "AuthFailure.UnauthorizedOperation":
            text = (
                f"permission denied: the API key's user may not call tcr:{action} on instance {instance_id} "
                f"in region {self.region}; grant it in CAM (e.g. policy QcloudTCRFullAccess) or give the "
                "registry credentials yourself (--username with --password-stdin/--password-file)"
            )
        elif code.startswith("AuthFailure"):
            text = (
                f"Tencent Cloud refused the API key: check {ENV_SECRET_ID} and {ENV_SECRET_KEY} "
                "(and the system clock, signatures expire after 5 minutes)"
            )
        elif code.startswith("ResourceNotFound") or code == "InvalidParameter.ErrNoInstance" or code.startswith(
            "ResourceUnavailable"
        ):
            text = f"instance {instance_id} not found in region {self.region} (check --instance-id and --region)"
        elif code == "InvalidParameterValue.InvalidRegion" or code.startswith("UnsupportedRegion"):
            text = f"region {self.region} is not a TCR region (check --region)"
        else:
            text = f"{action} failed for instance {instance_id} in region {self.region}"
        return TcrApiError(text + suffix, code=code, request_id=str(request_id) if request_id else None)

    def create_instance_token(self, instance_id: str, token_type: str = "longterm", desc: str = "") -> InstanceToken:
        """``CreateInstanceToken``: a registry user name and token for the API key's user."""
        params: dict[str, Any] = {"RegistryId": instance_id, "TokenType": token_type}
        if desc:
            params["Desc"] = desc
        response = self._call("CreateInstanceToken", params, instance_id)
        username, token = response.get("Username"), response.get("Token")
        if not isinstance(username, str) or not username or not isinstance(token, str) or not token:
            raise TcrApiError(
                f"CreateInstanceToken for instance {instance_id} returned no Username/Token "
                f"(RequestId {response.get('RequestId')})"
            )
        expires = response.get("ExpTime")
        token_id = response.get("TokenId")
        return InstanceToken(
            username=username,
            token=token,
            expires_at=int(expires) if isinstance(expires, int | float) and expires else None,
            token_id=str(token_id) if token_id else None,
        )

    def describe_internal_endpoints(self, instance_id: str) -> list[InternalEndpoint]:
        """``DescribeInternalEndpoints``: the instance's private-network access links."""
        response = self._call("DescribeInternalEndpoints", {"RegistryId": instance_id}, instance_id)
        links = response.get("AccessVpcSet") or []
        if not isinstance(links, list):
            raise TcrApiError("DescribeInternalEndpoints returned an AccessVpcSet that is not a list")
        result = []
        for link in links:
            if isinstance(link, dict):
                result.append(
                    InternalEndpoint(
                        vpc_id=str(link.get("VpcId") or ""),
                        subnet_id=str(link.get("SubnetId") or ""),
                        status=str(link.get("Status") or ""),
                        ip=str(link.get("AccessIp") or ""),
                    )
                )
        return result


def from_environment(region: str, endpoint: str | None = None, environ: dict[str, str] | None = None) -> TcrApi:
    """A client with the API key from ``TENCENTCLOUD_SECRET_ID`` / ``TENCENTCLOUD_SECRET_KEY``.

    ``endpoint`` (else ``$TCR_API_ENDPOINT``, else tcr.tencentcloudapi.com) overrides where the
    API is. ``TENCENTCLOUD_SESSION_TOKEN`` is passed on for temporary keys.
    """
    env = os.environ if environ is None else environ
    secret_id = env.get(ENV_SECRET_ID, "")
    secret_key = env.get(ENV_SECRET_KEY, "")
    missing = [name for name, value in ((ENV_SECRET_ID, secret_id), (ENV_SECRET_KEY, secret_key)) if not value]
    if missing:
        raise TcrApiError(
            f"set {' and '.join(missing)} to a Tencent Cloud API key (console: CAM > API keys) "
            "to call the TCR API, or give the registry credentials yourself (--username with "
            "--password-stdin/--password-file)"
        )
    where = endpoint or env.get(ENV_ENDPOINT) or None
    parsed = None
    if where:
        try:
            parsed = Endpoint.parse(where)
        except ValueError as exc:
            raise TcrApiError(f"--endpoint / {ENV_ENDPOINT} {where!r}: {exc}") from None
    return TcrApi(secret_id, secret_key, region, endpoint=parsed, session_token=env.get(ENV_SESSION_TOKEN))
