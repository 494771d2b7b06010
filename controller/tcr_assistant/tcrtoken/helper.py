"""Mints one registry token with the TCR API's ``CreateInstanceToken``, through Tencent Cloud's
official SDK, in a process of its own (``python -m tcr_assistant.tcrtoken.helper``): the SDK and
``requests`` (about 20 MiB) leave with it, never staying in the controller's memory.

Reads a JSON request on stdin and writes one JSON answer on stdout, exit status 0 both ways:
``{"username", "token", "expiresAt"}`` (epoch seconds, null for a longterm token) or
``{"error": {"reason", "message"}}``. The request: ``source`` (instanceId, region, tokenType,
endpoint, stsEndpoint), ``apiKey`` (secretId, secretKey; null: the TKE Pod identity, OIDC web
identity through STS, from the ``TKE_*`` variables TKE sets in the Pod), ``caFile`` (also trusted
for the API hosts, besides the public CAs) and ``timeout`` (seconds per request). Secrets come on
stdin only; no message carries the secret key or the token.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

TCR_API_VERSION = "2019-09-24"


class MintError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _scrub(text: object, secrets: list[str]) -> str:
    line = " ".join(str(text).split())
    for secret in secrets:
        if secret:
            line = line.replace(secret, "<hidden>")
    return line[:300]


def _trust(ca_file: str | None, directory: str) -> None:
    """Trust ``ca_file`` as well as the public CAs, for every request the SDK makes (its STS call
    builds its own profile, so the bundle is given where both look: certifi). The bundle is
    written in ``directory``, which goes when the mint is done."""
    if not ca_file:
        return
    import certifi

    bundle = os.path.join(directory, "ca-bundle.pem")
    with open(certifi.where()) as public, open(ca_file) as private, open(bundle, "w") as out:
        out.write(public.read() + "\n" + private.read())
    certifi.where = lambda: bundle


def _credential(api_key: Mapping[str, str] | None, sts_endpoint: str | None) -> Any:
    from tencentcloud.common import credential

    if api_key is not None:
        return credential.Credential(api_key.get("secretId", ""), api_key.get("secretKey", ""))
    try:
        cred = credential.DefaultTkeOIDCRoleArnProvider().get_credentials()
    except OSError as exc:
        raise MintError("WebIdentityUnavailable", f"no TKE Pod identity in the controller's Pod: {exc} "
                        "(bind its ServiceAccount to a CAM role, or use apiKeySecretRef)") from None
    if sts_endpoint:
        cred.endpoint = sts_endpoint
    return cred


def _classify(code: str, message: str, source: Mapping[str, Any]) -> MintError:
    where = f"instance {source.get('instanceId')} in region {source.get('region')}"
    if code == "ClientNetworkError":
        errno = re.findall(r"\[Errno -?\d+\] [^'\")\]]+", message)
        detail = errno[-1].strip() if errno else message[:200]
        return MintError("APIUnreachable", f"cannot reach the TCR API at {source.get('endpoint')}: {detail}")
    if code.startswith("UnauthorizedOperation") or code == "AuthFailure.UnauthorizedOperation":
        return MintError("NotPermitted", f"the API credentials may not call tcr:CreateInstanceToken on {where} "
                                         f"[{code}]: grant it in CAM (see the README's policy)")
    if code.startswith("AuthFailure"):
        return MintError("APIKeyRefused", f"Tencent Cloud refused the API credentials [{code}: {message}]")
    if code.startswith("ResourceNotFound") or code.startswith("ResourceUnavailable"):
        return MintError("InstanceNotFound", f"{where} was not found [{code}]")
    return MintError("MintFailed", f"CreateInstanceToken failed for {where} [{code}: {message}]")


def mint(request: Mapping[str, Any]) -> dict[str, Any]:
    source = request.get("source") or {}
    api_key = request.get("apiKey")
    secrets = [str((api_key or {}).get("secretKey") or "")]
    timeout = int(request.get("timeout") or 20)
    with tempfile.TemporaryDirectory(prefix="tcr-token-") as directory:
        _trust(request.get("caFile"), directory)
        return _mint(source, api_key, timeout, secrets)


def _mint(source: Mapping[str, Any], api_key: Mapping[str, str] | None, timeout: int,
          secrets: list[str]) -> dict[str, Any]:
    from tencentcloud.common.common_client import CommonClient
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile

    try:
        cred = _credential(api_key, source.get("stsEndpoint"))
        http = HttpProfile(endpoint=source.get("endpoint"), reqTimeout=timeout)
        # English messages; no region breaker (it would hide network errors behind a fallback host).
        profile = ClientProfile(httpProfile=http, language="en-US", disable_region_breaker=True)
        client = CommonClient("tcr", TCR_API_VERSION, cred, str(source.get("region")), profile)
        params = {"RegistryId": source.get("instanceId"), "TokenType": source.get("tokenType") or "temp",
                  "Desc": "tcr-assistant"}
        answer = client.call_json("CreateInstanceToken", params)
    except TencentCloudSDKException as exc:
        code, message = str(exc.code or ""), exc.message
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise _classify(code, _scrub(message, secrets), source) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # the STS answer, a body that is not JSON
        raise MintError("MintFailed", f"unexpected answer from the API: {type(exc).__name__}: "
                                      f"{_scrub(exc, secrets)}") from None
    response = answer.get("Response") if isinstance(answer, Mapping) else None
    if not isinstance(response, Mapping):
        raise MintError("MintFailed", "the API's answer has no Response object")
    error = response.get("Error")
    if isinstance(error, Mapping):
        raise _classify(str(error.get("Code") or ""), _scrub(error.get("Message") or "", secrets), source)
    username, token, expires = response.get("Username"), response.get("Token"), response.get("ExpTime")
    if not isinstance(username, str) or not username or not isinstance(token, str) or not token:
        raise MintError("MintFailed", f"CreateInstanceToken returned no Username and Token "
                                      f"(RequestId {response.get('RequestId')})")
    # ExpTime is in milliseconds since the epoch; 0 or absent for a longterm token.
    expires_at = float(expires) / 1000 if isinstance(expires, int | float) and expires > 0 else None
    return {"username": username, "token": token, "expiresAt": expires_at}


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        answer = mint(request)
    except MintError as exc:
        answer = {"error": {"reason": exc.reason, "message": exc.message}}
    except ValueError:
        answer = {"error": {"reason": "MintFailed", "message": "the helper's request is not JSON"}}
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
