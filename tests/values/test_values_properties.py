"""Property tests: any username and password the webhook accepts survive the values file unchanged."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from values_support import run

from harness import values as wizard
from tcr_assistant.validation import validate_spec

# Every code point except surrogates (which cannot be encoded), so also line breaks, NEL, BOM, quotes.
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=80)
PRINTABLE = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=60)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def accepted(username: str, password: str) -> bool:
    spec = {"docker": {"server": "demo.tencentcloudcr.com", "username": username, "password": password}}
    return validate_spec(spec) == []


@FAST
@given(value=ANY_TEXT)
def test_yaml_quote_round_trips_any_text(value: str) -> None:
    quoted = wizard.yaml_quote(value)
    assert quoted.isascii() and "\n" not in quoted
    assert yaml.safe_load(f"key: {quoted}\n") == {"key": value}


@FAST
@given(username=PRINTABLE.filter(lambda u: ":" not in u and u.strip() != ""), password=ANY_TEXT.filter(bool))
def test_wizard_round_trips_printable_usernames_and_any_password(username: str, password: str) -> None:
    if not accepted(username, password):
        return  # the webhook would refuse it; the wizard must then refuse too (checked below)
    # One trailing LF or CRLF on stdin is dropped (like docker login): add one when the password ends in LF.
    stdin = password + "\n" if password.endswith("\n") else password
    result = run(["--registry", "demo.tencentcloudcr.com", f"--username={username}", "--password-stdin"],
                 stdin=stdin)
    assert result.status == 0, result.stderr
    (cr,) = yaml.safe_load(result.stdout)["global"]["imagePullSecretsCrs"]
    assert (cr["dockerUsername"], cr["dockerPassword"]) == (username, password)
    if len(password.strip()) >= 8:  # short ones could match any text by chance
        assert password.strip() not in result.stderr


@FAST
@given(username=ANY_TEXT)
def test_wizard_refuses_exactly_what_the_webhook_refuses(username: str) -> None:
    result = run(["--registry", "demo.tencentcloudcr.com", f"--username={username}", "--password-stdin"], stdin="pw")
    assert (result.status == 0) == accepted(username, "pw"), result.stderr
    if result.status != 0:
        assert result.errors and all(": error: --username: " in line for line in result.errors), result.stderr


@pytest.mark.long
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.text(st.characters(codec="utf-8"), max_size=400))
def test_yaml_quote_round_trips_long(value: str) -> None:
    assert yaml.safe_load(f"key: {wizard.yaml_quote(value)}\n") == {"key": value}
