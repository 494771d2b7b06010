"""Property tests: any username and password the webhook accepts survive the values file unchanged.

The mapping of the webhook's and the schema's verdicts to options is pure and gets many examples;
the whole wizard, which renders the chart with `helm template` (0.1-0.3 s a run), gets fewer.
"""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from values_support import run

from support import property_settings
from tcr_assistant.spec.validation import validate_spec
from values_wizard import check, helm
from values_wizard.cli import build_parser
from values_wizard.plan import Credentials, make_plan, make_values
from values_wizard.render import yaml_quote

# Every code point except surrogates (which cannot be encoded), so also line breaks, NEL, BOM, quotes.
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=80)
PRINTABLE = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=60)
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Each example runs `helm template` once or twice.
THROUGH_HELM = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERVER = "demo.tencentcloudcr.com"
SCHEMA = json.loads(check.DEFAULT_SCHEMA.read_text())


def accepted(username: str, password: str) -> bool:
    spec = {"docker": {"server": SERVER, "username": username, "password": password}}
    return validate_spec(spec) == []


# Longer texts than ANY_TEXT's: 10,000 examples in `make test-long`.
@property_settings(100, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.text(st.characters(codec="utf-8"), max_size=400))
def test_yaml_quote_round_trips_any_text(value: str) -> None:
    quoted = yaml_quote(value)
    assert quoted.isascii() and "\n" not in quoted
    assert yaml.safe_load(f"key: {quoted}\n") == {"key": value}


@FAST
@given(username=ANY_TEXT)
def test_problems_name_the_username_exactly_when_the_webhook_refuses_it(username: str) -> None:
    """The pure part of the check: the webhook's verdict on the rendered object and the schema's, per option."""
    plan = make_plan(build_parser().parse_args(["--registry", SERVER, f"--username={username}", "--password-stdin"]),
                     None)
    creds = Credentials(username, password="pw")
    rendered = {"apiVersion": "tcr.tencentcloudcr.com/v1", "kind": "ImagePullSecret", "metadata": {"name": "demo"},
                "spec": {"namespaces": "*", "serviceAccounts": "*",
                         "docker": {"server": SERVER, "username": username, "password": "pw"}}}
    problems = [*check.webhook_problems([rendered], plan, creds),
                *check.schema_problems(make_values(plan, creds), SCHEMA, plan, creds)]
    assert bool(problems) == (not accepted(username, "pw")), problems
    assert {option for option, _ in problems} <= {"--username"}


@FAST
@given(password=ANY_TEXT.filter(lambda p: len(p) >= helm.SCRUB_MIN_LENGTH))
def test_helm_messages_never_show_the_password(password: str) -> None:
    plan = make_plan(build_parser().parse_args(["--registry", SERVER, "--username=u", "--password-stdin"]), None)
    creds = Credentials("u", password=password)
    # helm quotes a value as written or escaped.
    for shown in (password, json.dumps(password)[1:-1], password.encode("unicode_escape").decode("ascii")):
        said = f"'{shown}' does not match pattern '^x$'"
        scrubbed = helm.scrub(said, check.secrets_of(creds))
        assert shown not in scrubbed
        rendered = helm.Rendered(schema_errors=[
            helm.SchemaError(("global", "imagePullSecretsCrs", 0, "dockerPassword"), said),
            helm.SchemaError(("global", "imagePullSecretsCrs", 0, "namespaces"), scrubbed),
        ])
        (password_option, about_password), (namespaces_option, about_namespaces) = check.helm_problems(
            rendered, plan, creds)
        assert password_option == "--password-stdin" and "pattern" not in about_password
        assert namespaces_option == "--namespaces" and about_namespaces.endswith(scrubbed)


@THROUGH_HELM
@given(username=PRINTABLE.filter(lambda u: ":" not in u and u.strip() != ""), password=ANY_TEXT.filter(bool))
def test_wizard_round_trips_printable_usernames_and_any_password(username: str, password: str) -> None:
    if not accepted(username, password):
        return  # the webhook would refuse it; the wizard must then refuse too (checked below)
    # One trailing LF or CRLF on stdin is dropped (like docker login): add one when the password ends in LF.
    stdin = password + "\n" if password.endswith("\n") else password
    result = run(["--registry", SERVER, f"--username={username}", "--password-stdin"], stdin=stdin)
    # Status 0 also means the chart rendered user name and password unchanged (the wizard checks it).
    assert result.status == 0, result.stderr
    (cr,) = yaml.safe_load(result.stdout)["global"]["imagePullSecretsCrs"]
    assert (cr["dockerUsername"], cr["dockerPassword"]) == (username, password)
    if len(password.strip()) >= 8:  # short ones could match any text by chance
        assert password.strip() not in result.stderr


@THROUGH_HELM
@given(username=ANY_TEXT)
def test_wizard_refuses_exactly_what_the_webhook_refuses(username: str) -> None:
    result = run(["--registry", SERVER, f"--username={username}", "--password-stdin"], stdin="pw")
    assert (result.status == 0) == accepted(username, "pw"), result.stderr
    if result.status != 0:
        assert result.errors and all(": error: --username: " in line for line in result.errors), result.stderr
