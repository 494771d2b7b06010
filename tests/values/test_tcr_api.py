"""Automatic credentials (--issue-token) and --private-ip auto against a local stand-in of the TCR API."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from values_support import (
    INSTANCE,
    ISSUED_TOKEN,
    ISSUED_USER,
    SECRET_KEY,
    TOKEN_ID,
    FakeTcr,
    api_env,
    run,
)

from values_wizard import PROG, tcr_api

REPO = Path(__file__).resolve().parents[2]
PUBLIC = "demo.tencentcloudcr.com"
VPC = "demo-vpc.tencentcloudcr.com"
# The stand-in speaks plain http: the flag that allows it (a real endpoint is https).
INSECURE = "--insecure-http-endpoint"
TOKEN_ARGS = ["--registry", PUBLIC, "--registry", VPC, "--issue-token", "--instance-id", INSTANCE,
              "--region", "ap-guangzhou", INSECURE]


def running_link(ip: str, vpc: str = "vpc-a1b2c3d4", status: str = "Running") -> dict[str, str]:
    return {"VpcId": vpc, "SubnetId": "subnet-0001", "Status": status, "AccessIp": ip}


def assert_secret_free(text: str) -> None:
    assert ISSUED_TOKEN not in text
    assert SECRET_KEY not in text
    assert "Traceback" not in text


def test_issue_token_writes_the_issued_user_and_token(fake_tcr: FakeTcr, tmp_path: Path) -> None:
    out = tmp_path / "values.yaml"
    result = run([*TOKEN_ARGS, "-o", str(out)], env=api_env(fake_tcr))
    assert result.status == 0, result.stderr
    assert fake_tcr.actions() == ["CreateInstanceToken"]
    (request,) = fake_tcr.requests
    assert request.headers["x-tc-action"] == "CreateInstanceToken"
    assert request.headers["x-tc-version"] == "2019-09-24"
    assert request.headers["x-tc-region"] == "ap-guangzhou"
    assert request.headers["authorization"].startswith("TC3-HMAC-SHA256 Credential=AKID")  # verified by the fake
    assert request.params == {"RegistryId": INSTANCE, "TokenType": "longterm", "Desc": "tcr-addon"}
    values = yaml.safe_load(out.read_text())
    crs = values["global"]["imagePullSecretsCrs"]
    assert [(cr["name"], cr["dockerUsername"], cr["dockerPassword"]) for cr in crs] == [
        (f"{INSTANCE}-public", ISSUED_USER, ISSUED_TOKEN),
        (f"{INSTANCE}-vpc", ISSUED_USER, ISSUED_TOKEN),
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert result.stdout == ""
    assert_secret_free(result.stderr)
    assert f"issued a longterm token for user {ISSUED_USER} (token id {TOKEN_ID}" in result.stderr


def test_temporary_token_short_region_and_endpoint_option(fake_tcr: FakeTcr) -> None:
    env = api_env(fake_tcr)
    del env["TCR_API_ENDPOINT"]
    args = ["--registry", PUBLIC, "--issue-token", "--instance-id", INSTANCE, "--region", "gz",
            "--token-type", "temp", "--endpoint", fake_tcr.endpoint, INSECURE]
    result = run(args, env=env)
    assert result.status == 0, result.stderr
    (request,) = fake_tcr.requests
    assert request.headers["x-tc-region"] == "ap-guangzhou"
    assert request.params == {"RegistryId": INSTANCE, "TokenType": "temp", "Desc": "tcr-addon"}
    assert yaml.safe_load(result.stdout)["global"]["cluster"] == {"region": "gz", "longregion": "ap-guangzhou"}
    assert "token id" not in result.stderr  # temporary tokens have none


def test_options_are_checked_before_a_token_is_issued(fake_tcr: FakeTcr) -> None:
    result = run([*TOKEN_ARGS, "--namespaces", "a,,b"], env=api_env(fake_tcr))
    assert result.status == 2
    assert "--namespaces: " in result.stderr
    assert fake_tcr.requests == []


def test_a_token_issued_but_not_written_is_named(fake_tcr: FakeTcr, tmp_path: Path) -> None:
    result = run([*TOKEN_ARGS, "-o", str(tmp_path / "no-such-dir" / "v.yaml")], env=api_env(fake_tcr))
    assert result.status == 1
    assert f"note: token {TOKEN_ID} was issued but not written" in result.stderr
    assert_secret_free(result.stderr)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


API_ERRORS = [
    # (how the account / request is set up, words expected in the single error line)
    ("wrong-secret-key", "refused the API key"),
    ("unknown-secret-id", "refused the API key"),
    ("UnauthorizedOperation", "permission denied"),
    ("AuthFailure.UnauthorizedOperation", "permission denied"),
    ("UnauthorizedOperation.ErrorTcrUnauthorized", "permission denied"),
    ("unknown-instance", "instance tcr-zzzz9999 not found in region ap-guangzhou"),
    ("other-region", "instance tcr-abcd1234 not found in region ap-shanghai"),
    ("network", "Connection refused"),
    ("http-500", "answered with an HTTP error"),
    ("not-json", "is not JSON"),
    ("no-api-key", "set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY"),
    ("bad-endpoint", "--endpoint / TCR_API_ENDPOINT"),
]


@pytest.mark.parametrize(("case", "words"), API_ERRORS, ids=[c[0] for c in API_ERRORS])
def test_api_errors_are_one_clear_line(fake_tcr: FakeTcr, case: str, words: str) -> None:
    env = api_env(fake_tcr)
    args = list(TOKEN_ARGS)
    if case == "wrong-secret-key":
        env["TENCENTCLOUD_SECRET_KEY"] = SECRET_KEY[::-1]
    elif case == "unknown-secret-id":
        env["TENCENTCLOUD_SECRET_ID"] = "AKIDunknown"
    elif case.startswith(("UnauthorizedOperation", "AuthFailure.")):
        fake_tcr.denied["CreateInstanceToken"] = case
    elif case == "unknown-instance":
        args[args.index(INSTANCE)] = "tcr-zzzz9999"
    elif case == "other-region":
        args[args.index("ap-guangzhou")] = "ap-shanghai"
    elif case == "network":
        env["TCR_API_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    elif case == "http-500":
        fake_tcr.raw_answer = (500, "text/html", b"<html>internal server error</html>")
    elif case == "not-json":
        fake_tcr.raw_answer = (200, "application/json", b"<html>captive portal</html>")
    elif case == "no-api-key":
        env = {}
    elif case == "bad-endpoint":
        env["TCR_API_ENDPOINT"] = "ftp://127.0.0.1:21"
    result = run(args, env=env)
    assert result.status == 1, result.stderr
    assert result.stdout == ""
    assert len(result.errors) == 1, result.stderr
    assert result.errors[0].startswith(f"{PROG}: error: ")
    assert words in result.errors[0], result.stderr
    assert_secret_free(result.stderr)
    assert SECRET_KEY[::-1] not in result.stderr


def test_api_error_codes_and_request_ids_are_shown(fake_tcr: FakeTcr) -> None:
    fake_tcr.denied["CreateInstanceToken"] = "UnauthorizedOperation"
    result = run(TOKEN_ARGS, env=api_env(fake_tcr))
    assert "[UnauthorizedOperation: you are not authorized to perform operation (tcr:CreateInstanceToken); " \
           "RequestId " in result.stderr


def test_private_ip_auto_looks_up_the_access_link_before_issuing(fake_tcr: FakeTcr) -> None:
    fake_tcr.access_links[INSTANCE] = [running_link("10.0.0.42")]
    result = run([*TOKEN_ARGS, "--private-ip", "auto"], env=api_env(fake_tcr))
    assert result.status == 0, result.stderr
    assert fake_tcr.actions() == ["DescribeInternalEndpoints", "CreateInstanceToken"]
    describe = fake_tcr.requests[0]
    assert describe.params == {"RegistryId": INSTANCE}
    assert describe.headers["x-tc-version"] == "2019-09-24" and describe.headers["x-tc-region"] == "ap-guangzhou"
    assert yaml.safe_load(result.stdout)["global"]["hosts"] == [{"domain": VPC, "ip": "10.0.0.42", "disabled": False}]
    assert "private-network IP 10.0.0.42" in result.stderr


def test_private_ip_auto_with_a_password_makes_no_token(fake_tcr: FakeTcr) -> None:
    fake_tcr.access_links[INSTANCE] = [running_link("10.0.0.42"), running_link("10.0.0.42", "vpc-other")]
    result = run(["--registry", VPC, "--username", "u", "--password-stdin", "--private-ip", "auto",
                  "--instance-id", INSTANCE, "--region", "ap-guangzhou", INSECURE], stdin="pw",
                 env=api_env(fake_tcr))
    assert result.status == 0, result.stderr
    assert fake_tcr.actions() == ["DescribeInternalEndpoints"]
    assert yaml.safe_load(result.stdout)["global"]["hosts"][0]["ip"] == "10.0.0.42"


def test_private_ip_auto_choices(fake_tcr: FakeTcr) -> None:
    base = [*TOKEN_ARGS, "--private-ip", "auto"]
    fake_tcr.access_links[INSTANCE] = [running_link("10.0.0.42", "vpc-a"), running_link("10.1.0.9", "vpc-b"),
                                       running_link("10.2.0.1", "vpc-c", status="Creating")]
    several = run(base, env=api_env(fake_tcr))
    assert several.status == 1
    assert "vpc-a=10.0.0.42, vpc-b=10.1.0.9" in several.stderr and "--vpc-id" in several.stderr
    assert "CreateInstanceToken" not in fake_tcr.actions()  # nothing issued when the lookup fails

    chosen = run([*base, "--vpc-id", "vpc-b"], env=api_env(fake_tcr))
    assert chosen.status == 0, chosen.stderr
    assert yaml.safe_load(chosen.stdout)["global"]["hosts"][0]["ip"] == "10.1.0.9"

    pending = run([*base, "--vpc-id", "vpc-c"], env=api_env(fake_tcr))
    assert pending.status == 1 and "no running private-network access link" in pending.stderr

    elsewhere = run([*base, "--vpc-id", "vpc-zzz"], env=api_env(fake_tcr))
    assert elsewhere.status == 1 and "no private-network access link in VPC vpc-zzz" in elsewhere.stderr

    fake_tcr.access_links[INSTANCE] = []
    none = run(base, env=api_env(fake_tcr))
    assert none.status == 1 and "--host DOMAIN=IP" in none.stderr
    for result in (several, pending, elsewhere, none):
        assert len(result.errors) == 1
        assert_secret_free(result.stderr)


def test_private_ip_auto_denied(fake_tcr: FakeTcr) -> None:
    fake_tcr.denied["DescribeInternalEndpoints"] = "UnauthorizedOperation"
    result = run([*TOKEN_ARGS, "--private-ip", "auto"], env=api_env(fake_tcr))
    assert result.status == 1
    assert "may not call tcr:DescribeInternalEndpoints" in result.stderr
    assert fake_tcr.actions() == ["DescribeInternalEndpoints"]


def test_endpoint_parsing() -> None:
    assert tcr_api.Endpoint.parse("127.0.0.1:8080") == tcr_api.Endpoint("127.0.0.1:8080", "https")
    assert tcr_api.Endpoint.parse("http://127.0.0.1:8080/") == tcr_api.Endpoint("127.0.0.1:8080", "http")
    assert tcr_api.Endpoint.parse("tcr.ap-guangzhou.tencentcloudapi.com").protocol == "https"
    for bad in ("", "ftp://x", "http://x/path", "x:0", "x:port", "user@x", "a b"):
        with pytest.raises(ValueError):
            tcr_api.Endpoint.parse(bad)


def test_issued_token_repr_hides_the_token() -> None:
    token = tcr_api.InstanceToken("u", "s3cr3t", None, None)
    assert "s3cr3t" not in repr(token)


def test_script_issues_a_token(fake_tcr: FakeTcr, tmp_path: Path) -> None:
    """The real entry point, as a user runs it: API key and endpoint from the environment."""
    out = tmp_path / "values.yaml"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(api_env(fake_tcr))
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "values"), *TOKEN_ARGS, "-o", str(out)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert_secret_free(proc.stdout + proc.stderr)
    assert yaml.safe_load(out.read_text())["global"]["imagePullSecretsCrs"][0]["dockerPassword"] == ISSUED_TOKEN
