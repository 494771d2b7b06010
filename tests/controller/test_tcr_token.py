"""Minting a registry token for ``spec.docker.tokenFrom.tcr``: the helper process calls the TCR API
stand-in (TC3 signatures checked, HTTPS with a private CA) through the official SDK, with an API key
or the TKE Pod identity (OIDC web identity through STS); its failures are named and carry no
secret; and the pure decisions of when to mint."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import pki
from harness.tcr_standin import INSTANCE, REGION, SECRET_ID, SECRET_KEY, TcrStandIn, https_context, serving
from tcr_assistant.tcrtoken import decision
from tcr_assistant.tcrtoken.decision import HeldToken, MintedToken, MintSource

CA = pki.CertificateAuthority("tcr-api-test-ca")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TcrStandIn]:
    with serving(TcrStandIn(fixed_token=None, token_lifetime=600), tls=https_context(CA, tmp_path / "tls")) as running:
        yield running
    assert running.problems == []


def run_helper(request: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "tcr_assistant.tcrtoken.helper"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    for secret in (SECRET_KEY, "wrong-key-never-shown"):
        assert secret not in proc.stdout + proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def request(api: TcrStandIn, tmp_path: Path, **source: Any) -> dict[str, Any]:
    return {"source": {"instanceId": INSTANCE, "region": REGION, "tokenType": "temp", "endpoint": api.address,
                       **source},
            "apiKey": {"secretId": SECRET_ID, "secretKey": SECRET_KEY}, "caFile": str(tmp_path / "tls" / "ca.crt"),
            "timeout": 10}


def test_the_helper_mints_a_temp_token_with_its_expiry(api: TcrStandIn, tmp_path: Path) -> None:
    answer = run_helper(request(api, tmp_path))
    issued = api.issued[-1]
    assert (answer["username"], answer["token"]) == (issued.username, issued.token)
    assert issued.expires_at is not None and answer["expiresAt"] == pytest.approx(issued.expires_at, abs=0.01)
    assert api.requests[-1].params == {"RegistryId": INSTANCE, "TokenType": "temp", "Desc": "tcr-assistant"}


def test_the_helper_leaves_nothing_in_its_temporary_directory(api: TcrStandIn, tmp_path: Path) -> None:
    """The CA bundle it writes goes with the mint: the controller's /tmp does not grow per renewal."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert "token" in run_helper(request(api, tmp_path), {"TMPDIR": str(scratch)})
    assert list(scratch.iterdir()) == []


def test_a_longterm_token_has_no_expiry(api: TcrStandIn, tmp_path: Path) -> None:
    answer = run_helper(request(api, tmp_path, tokenType="longterm"))
    assert answer["expiresAt"] is None and answer["token"] == api.issued[-1].token


def test_failures_are_named_and_carry_no_secret(api: TcrStandIn, tmp_path: Path) -> None:
    wrong = request(api, tmp_path)
    wrong["apiKey"]["secretKey"] = "wrong-key-never-shown"
    assert run_helper(wrong)["error"]["reason"] == "APIKeyRefused"
    api.denied["CreateInstanceToken"] = "UnauthorizedOperation"
    denied = run_helper(request(api, tmp_path))["error"]
    assert denied["reason"] == "NotPermitted" and "tcr:CreateInstanceToken" in denied["message"]
    api.denied.clear()
    assert run_helper(request(api, tmp_path, instanceId="tcr-missing0"))["error"]["reason"] == "InstanceNotFound"
    api.mint_refusal = "InternalError"
    assert run_helper(request(api, tmp_path))["error"]["reason"] == "MintFailed"
    assert api.issued == []


def test_the_api_is_https_only_and_its_certificate_checked(api: TcrStandIn, tmp_path: Path) -> None:
    untrusted = request(api, tmp_path)
    untrusted["caFile"] = None
    error = run_helper(untrusted)["error"]
    assert error["reason"] == "APIUnreachable", error
    closed = run_helper(request(api, tmp_path, endpoint="127.0.0.1:9"))["error"]
    assert closed["reason"] == "APIUnreachable" and "127.0.0.1:9" in closed["message"]
    assert api.issued == []


def test_the_tke_pod_identity_mints_through_sts(api: TcrStandIn, tmp_path: Path) -> None:
    token_file = tmp_path / "oidc-token"
    token_file.write_text(api.web_identity_token)
    env = {"TKE_REGION": REGION, "TKE_PROVIDER_ID": api.provider_id, "TKE_ROLE_ARN": api.role_arn,
           "TKE_WEB_IDENTITY_TOKEN_FILE": str(token_file)}
    web = {**request(api, tmp_path, stsEndpoint=api.address), "apiKey": None}
    answer = run_helper(web, env)
    assert answer["token"] == api.issued[-1].token
    assert [r.action for r in api.requests] == ["AssumeRoleWithWebIdentity", "CreateInstanceToken"]
    assert api.requests[-1].headers["authorization"].startswith("TC3-HMAC-SHA256 Credential=AKIDtmp")
    token_file.write_text("someone-elses-token")
    assert run_helper(web, env)["error"]["reason"] == "MintFailed"
    missing = run_helper(web, {"TKE_ROLE_ARN": ""})["error"]
    assert missing["reason"] == "WebIdentityUnavailable" and "TKE_" in missing["message"]


# -- the decisions ---------------------------------------------------------------------------------

SOURCE = MintSource(INSTANCE, REGION, "temp", decision.DEFAULT_ENDPOINT, "tcr-api-key", None)


def held(source: MintSource, issued: float, expires: float | None) -> HeldToken:
    data = decision.secret_data(MintedToken("user", "token", expires), source, issued)
    token = decision.held_token(data)
    assert token is not None
    return token


def test_the_source_takes_the_defaults() -> None:
    spec = {"docker": {"tokenFrom": {"tcr": {"instanceId": INSTANCE, "region": REGION,
                                             "apiKeySecretRef": {"name": "tcr-api-key"}}}}}
    assert decision.mint_source(spec) == SOURCE
    assert decision.mint_source({"docker": {"password": "x"}}) is None


def test_a_temp_token_is_renewed_at_half_its_lifetime_and_a_longterm_one_never() -> None:
    token = held(SOURCE, 1000.0, 1600.0)
    assert decision.seconds_until_mint(SOURCE, None, 1000.0) == 0.0
    assert decision.seconds_until_mint(SOURCE, token, 1100.0) == pytest.approx(200.0)
    assert decision.seconds_until_mint(SOURCE, token, 1400.0) == 0.0
    longterm = MintSource(INSTANCE, REGION, "longterm", decision.DEFAULT_ENDPOINT, "tcr-api-key", None)
    assert decision.seconds_until_mint(longterm, held(longterm, 1000.0, None), 10**9) is None
    # another source (instance, type, endpoint, key) mints again at once
    other = MintSource("tcr-other000", REGION, "temp", decision.DEFAULT_ENDPOINT, "tcr-api-key", None)
    assert decision.seconds_until_mint(other, token, 1100.0) == 0.0


@given(issued=st.floats(0, 2e9), lifetime=st.floats(1, 1e6), now=st.floats(0, 2e9))
def test_renewal_leaves_half_the_lifetime(issued: float, lifetime: float, now: float) -> None:
    token = held(SOURCE, issued, issued + lifetime)
    wait = decision.seconds_until_mint(SOURCE, token, now)
    assert wait is not None and wait >= 0
    # issuedAt and expiresAt are kept to the millisecond
    assert (token.expires_at or 0) - (now + wait) >= lifetime * decision.RENEW_FRACTION - 0.01 or wait == 0


def test_retries_back_off_to_a_ceiling() -> None:
    assert [decision.retry_after(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert decision.retry_after(50) == decision.RETRY_MAX


def test_a_secret_not_in_our_shape_holds_no_token() -> None:
    assert decision.held_token(None) is None
    assert decision.held_token({"username": "dXNlcg=="}) is None
    assert decision.held_token({"username": "dXNlcg==", "password": "!!", "issuedAt": "MQ=="}) is None
    good = decision.secret_data(MintedToken("user", "token", None), SOURCE, 5.0)
    assert decision.held_token({**good, "issuedAt": base64.b64encode(b"soon").decode()}) is None


def test_the_token_secret_is_owned_by_its_image_pull_secret_and_never_a_password_reference() -> None:
    ips = {"metadata": {"name": "mine", "uid": "u-1"}}
    body = decision.secret_body(ips, "tcr-assistant-system", {})
    assert body["metadata"]["name"] == "tcr.tokmine"
    assert body["metadata"]["labels"]["tcr.tencentcloudcr.com/credential-source"] == "minted"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert "/" in decision.state_key("tcr.tokmine")  # no Secret name has one: no passwordSecretRef reaches it
    assert "password" not in repr(MintedToken("u", "password", None))
