"""scripts/values without the API: rendering, schema, the webhook's rules, option errors, secrecy."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from values_support import TerminalIO, helm_template, run

from tcr_assistant.spec.validation import validate_image_pull_secret
from values_wizard import PROG
from values_wizard.render import yaml_quote

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "chart" / "values.schema.json"
PASSWORD = 'Pa"ss:w0rd\'#{{x}}\n second line\\ \t&*!'
PUBLIC = "demo.tencentcloudcr.com"
VPC = "demo-vpc.tencentcloudcr.com"


def schema_check(values: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    errors = [e.message for e in validator.iter_errors(values)]
    assert errors == []


def password_args(*extra: str) -> list[str]:
    return ["--registry", PUBLIC, "--username", "100012345678", "--password-stdin", *extra]


def test_console_defaults_two_domains_render_tke_shape(tmp_path: Path) -> None:
    out = tmp_path / "values.yaml"
    result = run(["--registry", PUBLIC, "--registry", VPC, "--instance-id", "tcr-abcd1234", "--region", "ap-guangzhou",
                  "--username", "100012345678", "--password-stdin", "--host", f"{VPC}=10.0.0.10", "-o", str(out)],
                 stdin=PASSWORD + "\n")
    assert result.status == 0, result.stderr
    values = yaml.safe_load(out.read_text())
    assert values == {
        "global": {
            "cluster": {"region": "gz", "longregion": "ap-guangzhou"},
            "imagePullSecretsCrs": [
                {"name": "tcr-abcd1234-public", "namespaces": "*", "serviceAccounts": "*", "type": "docker",
                 "dockerServer": PUBLIC, "dockerUsername": "100012345678", "dockerPassword": PASSWORD},
                {"name": "tcr-abcd1234-vpc", "namespaces": "*", "serviceAccounts": "*", "type": "docker",
                 "dockerServer": VPC, "dockerUsername": "100012345678", "dockerPassword": PASSWORD},
            ],
            "hosts": [{"domain": VPC, "ip": "10.0.0.10", "disabled": False}],
        }
    }
    schema_check(values)
    rendered = [doc for doc in helm_template(out) if doc["kind"] == "ImagePullSecret"]
    assert [doc["metadata"]["name"] for doc in rendered] == ["tcr-abcd1234-public", "tcr-abcd1234-vpc"]
    for doc in rendered:
        assert validate_image_pull_secret(doc) == []
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "keep this file private" in out.read_text()
    assert result.stdout == ""
    assert PASSWORD.splitlines()[0] not in result.stderr
    assert "tcr-abcd1234-public, tcr-abcd1234-vpc" in result.stderr


def test_scope_existing_secret_and_names(tmp_path: Path) -> None:
    out = tmp_path / "v.yaml"
    result = run(["--registry", "registry.example.com:5000", "--name", "corp", "--username", "robot",
                  "--existing-secret", "tcr-credentials:token", "--namespaces", "team-a, team-b",
                  "--service-accounts", "default,builder", "--exclude-namespaces", "kube-system", "-o", str(out)])
    assert result.status == 0, result.stderr
    values = yaml.safe_load(out.read_text())
    (cr,) = values["global"]["imagePullSecretsCrs"]
    assert cr == {"name": "corp", "namespaces": "team-a, team-b", "serviceAccounts": "default,builder",
                  "excludedNamespaces": "kube-system", "type": "docker", "dockerServer": "registry.example.com:5000",
                  "dockerUsername": "robot", "dockerPasswordSecret": {"name": "tcr-credentials", "key": "token"}}
    assert values["global"]["hosts"] == []
    assert values["global"]["cluster"] == {"region": "", "longregion": ""}
    schema_check(values)
    # No password in it: the file keeps the ordinary mode (umask applies), and no warning header.
    assert stat.S_IMODE(out.stat().st_mode) & 0o644 == 0o644 & ~_umask()
    assert "keep this file private" not in out.read_text()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_namespace_selector_in_kubectl_syntax_becomes_a_label_selector(tmp_path: Path) -> None:
    out = tmp_path / "v.yaml"
    result = run(password_args("--namespace-selector", "team=payments, env in (prod,stage), !example.com/legacy",
                               "-o", str(out)), stdin=PASSWORD)
    assert result.status == 0, result.stderr
    values = yaml.safe_load(out.read_text())
    (cr,) = values["global"]["imagePullSecretsCrs"]
    assert cr["namespaceSelector"] == {
        "matchLabels": {"team": "payments"},
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "stage"]},
                             {"key": "example.com/legacy", "operator": "DoesNotExist"}]}
    schema_check(values)
    (rendered,) = [d for d in helm_template(out) if d["kind"] == "ImagePullSecret"]
    assert rendered["spec"]["namespaceSelector"] == cr["namespaceSelector"]
    assert validate_image_pull_secret(rendered) == []
    assert "--namespace-selector serves only if its labels match" in result.stderr


def test_existing_secret_default_key_and_derived_names() -> None:
    result = run(["--registry", "demo.tencentcloudcr.com", "--registry", "other.example.com",
                  "--username", "u", "--existing-secret", "creds"])
    assert result.status == 0, result.stderr
    crs = yaml.safe_load(result.stdout)["global"]["imagePullSecretsCrs"]
    assert [cr["name"] for cr in crs] == ["demo", "other.example.com"]
    assert crs[0]["dockerPasswordSecret"] == {"name": "creds"}


def test_private_ip_goes_to_vpc_domains_and_host_overrides() -> None:
    result = run([*password_args("--registry", VPC, "--registry", "x-vpc.tencentcloudcr.com:443",
                                 "--private-ip", "10.0.0.7", "--host", "x-vpc.tencentcloudcr.com=10.9.9.9")],
                 stdin="pw")
    assert result.status == 0, result.stderr
    hosts = yaml.safe_load(result.stdout)["global"]["hosts"]
    assert hosts == [
        {"domain": "x-vpc.tencentcloudcr.com", "ip": "10.9.9.9", "disabled": False},
        {"domain": VPC, "ip": "10.0.0.7", "disabled": False},
    ]


def test_private_ip_without_vpc_domain_covers_every_registry() -> None:
    result = run(password_args("--private-ip", "10.0.0.7"), stdin="pw")
    assert result.status == 0, result.stderr
    assert yaml.safe_load(result.stdout)["global"]["hosts"] == [{"domain": PUBLIC, "ip": "10.0.0.7", "disabled": False}]


def test_host_for_another_domain_is_a_warning() -> None:
    result = run(password_args("--host", "mirror.example.com=10.1.2.3"), stdin="pw")
    assert result.status == 0
    assert "warning: --host mirror.example.com" in result.stderr


def test_password_file_drops_one_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("line1\nline2\n\n", encoding="utf-8")
    result = run(["--registry", PUBLIC, "--username", "u", "--password-file", str(secret)])
    assert result.status == 0, result.stderr
    assert yaml.safe_load(result.stdout)["global"]["imagePullSecretsCrs"][0]["dockerPassword"] == "line1\nline2\n"


def test_refuses_to_print_a_password_to_a_terminal() -> None:
    terminal = TerminalIO()
    result = run(password_args(), stdin="secret-on-screen", stdout=terminal)
    assert result.status == 2
    assert "secret-on-screen" not in terminal.getvalue() + result.stderr
    assert "-o: refusing to print a password to the terminal" in result.stderr
    # Without a password (existing Secret) the terminal is fine.
    terminal = TerminalIO()
    assert run(["--registry", PUBLIC, "--username", "u", "--existing-secret", "s"], stdout=terminal).status == 0
    assert "dockerPasswordSecret" in terminal.getvalue()


# ------------------------------------------------------------------------------------ bad options

BAD_OPTIONS = [
    # (arguments after the valid base, stdin, option the message must name, words in the message)
    (["--registry", "https://demo.tencentcloudcr.com"], "--registry", "scheme"),
    (["--registry", "Demo.tencentcloudcr.com"], "--registry", "lower case"),
    (["--registry", "demo.tencentcloudcr.com/ns"], "--registry", "path"),
    (["--registry", VPC], "--registry", "given twice"),
    (["--name", "Bad_Name"], "--name", "Bad_Name"),
    (["--name", "#x"], "--name", "'#x'"),
    (["--name", "a: b"], "--name", "'a: b'"),
    (["--registry", PUBLIC, "--name", "one"], "--name", "one --name per --registry"),
    (["--registry", "other-vpc.tencentcloudcr.com", "--instance-id", "tcr-abcd1234"], "--registry",
     "both be ImagePullSecret 'tcr-abcd1234-vpc'"),
    (["--namespaces", "a,,b"], "--namespaces", "empty"),
    (["--namespaces", "*,team-a"], "--namespaces", "stand alone"),
    (["--namespaces", "Team_A"], "--namespaces", "Team_A"),
    (["--service-accounts", "a b"], "--service-accounts", "a b"),
    (["--exclude-namespaces", "*"], "--exclude-namespaces", "not allowed"),
    (["--namespace-selector", "team=a,"], "--namespace-selector", "a trailing ','"),
    (["--namespace-selector", "env in (prod"], "--namespace-selector", "expected ',' or ')'"),
    (["--namespace-selector", "Team_=a"], "--namespace-selector", "label key 'Team_' is not valid"),
    (["--namespace-selector", "team=-a"], "--namespace-selector", "label value '-a' is not valid"),
    (["--host", "no-equals-sign"], "--host", "DOMAIN=IP"),
    (["--host", f"{VPC}=999.1.1.1"], "--host", "IPv4"),
    (["--host", f"{VPC}=fd00::1"], "--host", "IPv4"),
    (["--host", f"{VPC}:443=10.0.0.1"], "--host", "without ':port'"),
    (["--host", "HTTPS://x=10.0.0.1"], "--host", "scheme"),
    (["--host", f"{VPC}=10.0.0.1", "--host", f"{VPC}=10.0.0.2"], "--host", "twice"),
    (["--private-ip", "10.0.0.256"], "--private-ip", "IPv4"),
    (["--region", "Guangzhou!"], "--region", "not a Tencent Cloud region"),
    (["--instance-id", "abcd"], "--instance-id", "tcr-xxxxxxxx"),
    (["--private-ip", "auto"], "--instance-id", "required with --private-ip auto"),
    (["--private-ip", "auto", "--instance-id", "tcr-abcd1234"], "--region", "required with --private-ip auto"),
    (["--vpc-id", "vpc-1"], "--vpc-id", "only goes with --private-ip auto"),
    (["--token-type", "temp"], "--token-type", "only goes with --issue-token"),
    (["--token-description", "x"], "--token-description", "only goes with --issue-token"),
    (["--schema", "/nonexistent/values.schema.json"], "--schema", "does not exist"),
]


@pytest.mark.parametrize(("extra", "option", "words"), BAD_OPTIONS, ids=[" ".join(c[0])[:60] for c in BAD_OPTIONS])
def test_bad_option_exits_2_naming_it(extra: list[str], option: str, words: str) -> None:
    result = run(["--registry", VPC, "--username", "100012345678", "--password-stdin", *extra], stdin=PASSWORD)
    assert result.status == 2, result.stderr
    assert result.stdout == ""
    assert any(line.startswith(f"{PROG}: error: {option}: ") and words in line for line in result.errors), (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert PASSWORD.splitlines()[0] not in result.stderr


CREDENTIAL_ERRORS = [
    ([], "", "--registry", "at least one registry"),
    (["--registry", PUBLIC, "--username", "u"], "", "--password-stdin", "give the credentials"),
    (["--registry", PUBLIC, "--password-stdin"], "pw", "--username", "is required"),
    (["--registry", PUBLIC, "--username", "a:b", "--password-stdin"], "pw", "--username", "':'"),
    (["--registry", PUBLIC, "--username", "   ", "--password-stdin"], "pw", "--username", "empty"),
    (["--registry", PUBLIC, "--username", "u", "--password-stdin"], "\n", "--password-stdin", "empty"),
    (["--registry", PUBLIC, "--username", "u", "--password-file", "/nonexistent/pw"], "", "--password-file",
     "cannot read"),
    (["--registry", PUBLIC, "--username", "u", "--existing-secret", "Bad Name"], "", "--existing-secret",
     "Bad Name"),
    (["--registry", PUBLIC, "--username", "u", "--existing-secret", "ok:bad/key"], "", "--existing-secret",
     "bad/key"),
    (["--registry", PUBLIC, "--username", "u", "--existing-secret", "ok:"], "", "--existing-secret", "empty"),
    (["--registry", PUBLIC, "--username", "u", "--issue-token"], "", "--username", "not with --issue-token"),
    (["--registry", PUBLIC, "--issue-token", "--region", "gz"], "", "--instance-id", "required with --issue-token"),
    (["--registry", PUBLIC, "--issue-token", "--instance-id", "tcr-abcd1234"], "", "--region", "required"),
]


@pytest.mark.parametrize(("args", "stdin", "option", "words"), CREDENTIAL_ERRORS,
                         ids=[" ".join(c[0])[-50:] or "nothing" for c in CREDENTIAL_ERRORS])
def test_bad_credentials_exit_2_naming_the_option(args: list[str], stdin: str, option: str, words: str) -> None:
    result = run(args, stdin=stdin)
    assert result.status == 2, result.stderr
    assert any(line.startswith(f"{PROG}: error: {option}: ") and words in line for line in result.errors), (
        result.stderr
    )


def test_invalid_password_file_encoding(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes(b"\xff\xfe\x00bad")
    result = run(["--registry", PUBLIC, "--username", "u", "--password-file", str(secret)])
    assert result.status == 2
    assert "--password-file: " in result.stderr and "UTF-8" in result.stderr


def test_two_password_sources_are_a_usage_error() -> None:
    result = run(["--registry", PUBLIC, "--username", "u", "--password-stdin", "--existing-secret", "s"])
    assert result.status == 2
    assert "not allowed with argument" in result.stderr


def test_no_password_flag_exists() -> None:
    result = run(["--registry", PUBLIC, "--username", "u", "--password", "hunter2"])
    assert result.status == 2
    assert "unrecognized arguments" in result.stderr or "ambiguous option" in result.stderr


def test_all_problems_are_reported_at_once() -> None:
    result = run(["--registry", "HTTPS://X", "--username", "a:b", "--password-stdin", "--namespaces", "a,,b"],
                 stdin=PASSWORD)
    assert result.status == 2
    options = {line.split(": ")[2] for line in result.errors}
    assert options == {"--registry", "--username", "--namespaces"}


def test_schema_is_read_at_run_time(tmp_path: Path) -> None:
    """The wizard applies the schema it is given: a stricter one refuses what the chart's allows."""
    schema = json.loads(SCHEMA.read_text())
    item = schema["properties"]["global"]["properties"]["imagePullSecretsCrs"]["items"]
    item["properties"]["dockerUsername"]["maxLength"] = 3
    item["properties"]["dockerPassword"]["maxLength"] = 3
    strict = tmp_path / "schema.json"
    strict.write_text(json.dumps(schema))
    result = run([*password_args(), "--schema", str(strict)], stdin=PASSWORD)
    assert result.status == 2
    assert any(line.startswith(f"{PROG}: error: --username: ") and "100012345678" in line
               for line in result.errors), result.stderr
    assert any(line.startswith(f"{PROG}: error: --password-stdin: ") for line in result.errors)
    assert PASSWORD.splitlines()[0] not in result.stderr  # jsonschema's own message would quote the value


def test_output_file_replaces_an_existing_file_with_mode_0600(tmp_path: Path) -> None:
    out = tmp_path / "values.yaml"
    out.write_text("old")
    out.chmod(0o644)
    assert run([*password_args(), "-o", str(out)], stdin="pw").status == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert yaml.safe_load(out.read_text())["global"]["imagePullSecretsCrs"][0]["dockerPassword"] == "pw"
    assert [p.name for p in tmp_path.iterdir()] == ["values.yaml"]  # no temporary file left


def test_unwritable_output_is_status_1(tmp_path: Path) -> None:
    result = run([*password_args(), "-o", str(tmp_path / "missing-dir" / "v.yaml")], stdin="pw")
    assert result.status == 1
    assert "error: -o " in result.stderr


@pytest.mark.parametrize("value", ["plain", "", 'q"uo\'te', "back\\slash", "new\nline", "tab\t", " lead", "trail ",
                                   "#hash", "key: value", "- item", "{{ x }}", "null", "true", "0x10", "1e3", "~",
                                   "é", "\u2028", "\x85", "\x7f", "\x00", "\ufeff", "😀", "\U0010ffff"])
def test_yaml_quote_reads_back(value: str) -> None:
    quoted = yaml_quote(value)
    assert quoted.isascii() and quoted.isprintable()
    assert yaml.safe_load(f"k: {quoted}\n") == {"k": value}


# ------------------------------------------------------------------------------ the real entry point


def script(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_")}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "values"), *args], input=stdin, text=True,
                          capture_output=True, timeout=60, env=env, check=False)


def test_script_help_lists_the_console_steps() -> None:
    proc = script("--help")
    assert proc.returncode == 0
    for option in ("--registry", "--name", "--username", "--password-stdin", "--password-file", "--existing-secret",
                   "--issue-token", "--instance-id", "--region", "--namespaces", "--service-accounts",
                   "--exclude-namespaces", "--host", "--private-ip", "--endpoint", "--output"):
        assert option in proc.stdout
    assert "--password " not in proc.stdout


def test_script_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "values.yaml"
    proc = script("--registry", PUBLIC, "--username", "u", "--password-stdin", "-o", str(out), stdin=PASSWORD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and PASSWORD.splitlines()[0] not in proc.stderr
    assert yaml.safe_load(out.read_text())["global"]["imagePullSecretsCrs"][0]["dockerPassword"] == PASSWORD
    bad = script("--registry", "https://x", "--username", "u", "--password-stdin", stdin=PASSWORD)
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"{PROG}: error: --registry: ") and "Traceback" not in bad.stderr


@pytest.mark.parametrize(("extra", "namespace", "warning"), [
    ([], None, None),
    (["--namespaces", "default,team-a"], None, None),
    (["--namespaces", "team-a, team-b"], "team-a", None),
    (["--namespaces", "team-a,team-b", "--exclude-namespaces", "team-a"], "team-b", None),
    (["--exclude-namespaces", "default"], None, "checks namespace default"),
    (["--service-accounts", "builder"], None, "checks ServiceAccount default"),
])
def test_helm_test_namespace_follows_the_scope(extra: list[str], namespace: str | None, warning: str | None) -> None:
    result = run(password_args(*extra), stdin="pw")
    assert result.status == 0, result.stderr
    values = yaml.safe_load(result.stdout)
    assert values.get("tests", {}).get("namespace") == namespace
    if namespace is not None:
        schema_check(values)
    assert ("warning: `helm test`" in result.stderr) == (warning is not None)
    if warning:
        assert warning in result.stderr


@pytest.mark.parametrize("name", ["123", "null", "true"])
def test_names_yaml_would_read_as_other_types_stay_names(tmp_path: Path, name: str) -> None:
    """The chart quotes the name, so a valid name that looks like a number or null stays a name."""
    out = tmp_path / "values.yaml"
    result = run(password_args("--name", name, "-o", str(out)), stdin=PASSWORD + "\n")
    assert result.status == 0, result.stderr
    rendered = [doc for doc in helm_template(out) if doc["kind"] == "ImagePullSecret"]
    assert [doc["metadata"]["name"] for doc in rendered] == [name]
