"""scripts/values --mint-in-cluster: dockerTokenFrom entries, the token minted by the controller in the
cluster; the wizard itself calls no API for them (the TCR API stand-in records every request)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import jsonschema
import pytest
import yaml
from values_support import INSTANCE, SECRET_KEY, FakeTcr, TerminalIO, api_env, helm_template, run, serving

from harness.pki import CertificateAuthority
from harness.tcr_standin import https_context
from tcr_assistant.spec.validation import validate_image_pull_secret
from values_wizard import PROG

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "chart" / "values.schema.json"
PUBLIC = "demo.tencentcloudcr.com"
VPC = "demo-vpc.tencentcloudcr.com"
MINT = ["--mint-in-cluster", "--instance-id", INSTANCE, "--region", "ap-guangzhou"]


def schema_check(values: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    assert [e.message for e in validator.iter_errors(values)] == []


def rendered_image_pull_secrets(values_file: Path) -> list[dict[str, Any]]:
    """The chart's ImagePullSecrets for ``values_file``; each must pass the webhook's rules."""
    found = [doc for doc in helm_template(values_file) if doc["kind"] == "ImagePullSecret"]
    for doc in found:
        assert validate_image_pull_secret(doc) == []
    return found


def entry(name: str, server: str, tcr: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "namespaces": "*", "serviceAccounts": "*", "type": "docker", "dockerServer": server,
            "dockerTokenFrom": {"tcr": tcr}}


def test_api_key_secret_writes_token_from_without_user_or_password(fake_tcr: FakeTcr, tmp_path: Path) -> None:
    out = tmp_path / "values.yaml"
    # The API key and the stand-in's endpoint are in the environment: a call would reach it.
    result = run(["--registry", PUBLIC, "--registry", VPC, *MINT, "--api-key-secret", "tcr-api-key",
                  "-o", str(out)], env=api_env(fake_tcr))
    assert result.status == 0, result.stderr
    assert fake_tcr.requests == []
    tcr = {"instanceId": INSTANCE, "region": "ap-guangzhou", "tokenType": "temp",
           "apiKeySecretRef": {"name": "tcr-api-key"}}
    values = yaml.safe_load(out.read_text())
    assert values == {
        "global": {
            "cluster": {"region": "gz", "longregion": "ap-guangzhou"},
            "imagePullSecretsCrs": [entry(f"{INSTANCE}-public", PUBLIC, tcr), entry(f"{INSTANCE}-vpc", VPC, tcr)],
            "hosts": [],
        }
    }
    schema_check(values)
    rendered = rendered_image_pull_secrets(out)
    assert [doc["metadata"]["name"] for doc in rendered] == [f"{INSTANCE}-public", f"{INSTANCE}-vpc"]
    assert [doc["spec"]["docker"] for doc in rendered] == [
        {"server": PUBLIC, "tokenFrom": {"tcr": tcr}}, {"server": VPC, "tokenFrom": {"tcr": tcr}}]
    text = out.read_text()
    assert "dockerUsername" not in text and "dockerPassword" not in text
    assert "keep this file private" not in text
    # How to make the API key's Secret, with no secret value in it.
    lines = result.stderr.splitlines()
    assert "  kubectl -n tcr-assistant-system create secret generic tcr-api-key "\
           "--from-literal=secretId=… --from-literal=secretKey=…" in lines
    assert "  kubectl -n tcr-assistant-system label secret tcr-api-key "\
           "tcr.tencentcloudcr.com/credential-source=true" in lines
    assert fake_tcr.secret_id not in result.stderr + text and SECRET_KEY not in result.stderr + text
    assert "Pod identity" not in result.stderr


def test_web_identity_endpoint_token_type_and_short_region(fake_tcr: FakeTcr, tmp_path: Path) -> None:
    terminal = TerminalIO()  # no password in the values: a terminal may show them
    result = run(["--registry", VPC, "--mint-in-cluster", "--instance-id", INSTANCE, "--region", "gz",
                  "--web-identity", "--token-type", "longterm",
                  "--endpoint", "https://tcr.internal.tencentcloudapi.com:8443"],
                 env=api_env(fake_tcr), stdout=terminal)
    assert result.status == 0, result.stderr
    assert fake_tcr.requests == []
    values = yaml.safe_load(terminal.getvalue())
    tcr = {"instanceId": INSTANCE, "region": "ap-guangzhou", "tokenType": "longterm",
           "endpoint": "tcr.internal.tencentcloudapi.com:8443", "webIdentity": {}}
    assert values["global"]["imagePullSecretsCrs"] == [entry(f"{INSTANCE}-vpc", VPC, tcr)]
    assert values["global"]["cluster"] == {"region": "gz", "longregion": "ap-guangzhou"}
    schema_check(values)
    out = tmp_path / "values.yaml"
    out.write_text(terminal.getvalue())
    (rendered,) = rendered_image_pull_secrets(out)
    assert rendered["spec"]["docker"] == {"server": VPC, "tokenFrom": {"tcr": tcr}}
    assert "kubectl" not in result.stderr
    assert "bind its ServiceAccount tcr-assistant-controller-manager to a CAM role" in result.stderr
    assert "TCR_API_ENDPOINT" not in result.stderr  # --endpoint given: nothing to point out


@pytest.mark.parametrize(("extra", "token_type"), [([], "temp"), (["--token-type", "temp"], "temp"),
                                                   (["--token-type", "longterm"], "longterm")])
def test_token_type_defaults_to_temp(extra: list[str], token_type: str) -> None:
    result = run(["--registry", PUBLIC, *MINT, "--web-identity", *extra])
    assert result.status == 0, result.stderr
    (cr,) = yaml.safe_load(result.stdout)["global"]["imagePullSecretsCrs"]
    assert cr["dockerTokenFrom"]["tcr"]["tokenType"] == token_type


def test_tcr_api_endpoint_of_the_environment_is_not_written(fake_tcr: FakeTcr) -> None:
    """That variable points the wizard's own calls; the controller's endpoint is given with --endpoint."""
    result = run(["--registry", PUBLIC, *MINT, "--api-key-secret", "tcr-api-key"], env=api_env(fake_tcr))
    assert result.status == 0, result.stderr
    (cr,) = yaml.safe_load(result.stdout)["global"]["imagePullSecretsCrs"]
    assert "endpoint" not in cr["dockerTokenFrom"]["tcr"]
    assert "note: TCR_API_ENDPOINT is not written into the values: give --endpoint" in result.stderr
    assert fake_tcr.requests == []


@pytest.fixture
def https_tcr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTcr]:
    """The stand-in over HTTPS (--mint-in-cluster refuses plain http), its CA the one the SDK trusts."""
    tls = https_context(CertificateAuthority("tcr-addon-values-test-ca"), tmp_path / "tls")
    monkeypatch.setattr(certifi, "where", lambda: str(tmp_path / "tls" / "ca.crt"))  # the SDK's CA bundle
    with serving(FakeTcr(), tls=tls) as fake:
        yield fake
    assert fake.problems == [], f"the wizard sent requests the API would refuse: {fake.problems}"


def test_private_ip_auto_is_the_only_api_call(https_tcr: FakeTcr) -> None:
    """--private-ip auto still looks the IP up (read-only); no token is created from here."""
    https_tcr.access_links[INSTANCE] = [{"VpcId": "vpc-a1b2c3d4", "SubnetId": "subnet-0001", "Status": "Running",
                                         "AccessIp": "10.0.0.42"}]
    env = {"TENCENTCLOUD_SECRET_ID": https_tcr.secret_id, "TENCENTCLOUD_SECRET_KEY": https_tcr.secret_key}
    result = run(["--registry", VPC, *MINT, "--web-identity", "--private-ip", "auto",
                  "--endpoint", https_tcr.address], env=env)
    assert result.status == 0, result.stderr
    assert https_tcr.actions() == ["DescribeInternalEndpoints"]
    values = yaml.safe_load(result.stdout)
    assert values["global"]["hosts"] == [{"domain": VPC, "ip": "10.0.0.42", "disabled": False}]
    (cr,) = values["global"]["imagePullSecretsCrs"]
    assert cr["dockerTokenFrom"]["tcr"]["endpoint"] == https_tcr.address
    assert "dockerUsername" not in cr and "dockerPassword" not in cr


TOO_LONG_ID = "tcr-" + "a" * 33
REFUSED = [
    # (arguments, option the message must name, words in the message)
    (["--registry", PUBLIC, *MINT], "--mint-in-cluster", "--api-key-secret NAME"),
    (["--registry", PUBLIC, *MINT, "--api-key-secret", "k", "--web-identity"], "--web-identity",
     "not with --api-key-secret"),
    (["--registry", PUBLIC, *MINT, "--web-identity", "--username", "u"], "--username", "not with --mint-in-cluster"),
    (["--registry", PUBLIC, *MINT, "--web-identity", "--insecure-http-endpoint"], "--insecure-http-endpoint",
     "HTTPS only"),
    (["--registry", PUBLIC, *MINT, "--web-identity", "--endpoint", "http://tcr.tencentcloudapi.com"], "--endpoint",
     "HTTPS only"),
    (["--registry", PUBLIC, *MINT, "--web-identity", "--endpoint", "tcr.tencentcloudapi.com/v3"], "--endpoint",
     "HOST[:PORT]"),
    (["--registry", PUBLIC, *MINT, "--web-identity", "--endpoint", "TCR.tencentcloudapi.com"], "--endpoint",
     "lower case"),
    (["--registry", PUBLIC, *MINT, "--api-key-secret", "Bad_Name"], "--api-key-secret", "Bad_Name"),
    (["--registry", PUBLIC, *MINT, "--web-identity", "--token-description", "x"], "--token-description",
     "only goes with --issue-token"),
    (["--registry", PUBLIC, *MINT, "--web-identity", "--instance-id", TOO_LONG_ID], "--instance-id", "not valid"),
    (["--registry", PUBLIC, *MINT, "--web-identity", "--region", "ap-" + "x" * 21], "--region", "not valid"),
    (["--registry", PUBLIC, "--mint-in-cluster", "--web-identity", "--region", "gz"], "--instance-id",
     "required with --mint-in-cluster"),
    (["--registry", PUBLIC, "--mint-in-cluster", "--web-identity", "--instance-id", INSTANCE], "--region",
     "required with --mint-in-cluster"),
    (["--registry", PUBLIC, "--username", "u", "--password-stdin", "--api-key-secret", "k"], "--api-key-secret",
     "only goes with --mint-in-cluster"),
    (["--registry", PUBLIC, "--username", "u", "--password-stdin", "--web-identity"], "--web-identity",
     "only goes with --mint-in-cluster"),
    (["--registry", PUBLIC, "--username", "u", "--password-stdin", "--token-type", "temp"], "--token-type",
     "only goes with --issue-token or --mint-in-cluster"),
    (["--from-cluster", "--mint-in-cluster"], "--mint-in-cluster", "not with --from-cluster"),
]


@pytest.mark.parametrize(("args", "option", "words"), REFUSED, ids=[" ".join(c[0][2:])[-60:] for c in REFUSED])
def test_refused_combinations_exit_2_naming_the_option(fake_tcr: FakeTcr, args: list[str], option: str,
                                                       words: str) -> None:
    result = run(args, stdin="pw", env=api_env(fake_tcr))
    assert result.status == 2, result.stderr
    assert result.stdout == ""
    assert any(line.startswith(f"{PROG}: error: {option}: ") and words in line for line in result.errors), (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert fake_tcr.requests == []


def test_mint_and_a_password_source_are_a_usage_error() -> None:
    for source in (["--password-stdin"], ["--existing-secret", "s"], ["--issue-token"]):
        result = run(["--registry", PUBLIC, *MINT, "--web-identity", *source])
        assert result.status == 2
        assert "not allowed with argument" in result.stderr


def test_help_describes_minting_in_the_cluster() -> None:
    result = run(["--help"])
    assert result.status == 0
    text = " ".join(result.stdout.split())  # argparse wraps the help
    for words in ("--mint-in-cluster", "dockerTokenFrom", "--api-key-secret NAME", "--web-identity",
                  "temp (default, renewed by the controller)", "Not with --mint-in-cluster"):
        assert words in text, words
