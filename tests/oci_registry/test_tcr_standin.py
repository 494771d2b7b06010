"""The TCR API stand-in with a real registry: a token it issues through the official SDK's signed
call works on the registry exactly while the stand-in says it is valid; a refusal to mint
issues nothing; a wrong key is refused before anything is issued."""

from __future__ import annotations

import base64
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from harness import registry
from harness.tcr_standin import INSTANCE, REGION, SECRET_ID, SECRET_KEY, TcrStandIn, serving
from values_wizard.tcr_api import Endpoint, TcrApi, TcrApiError

LIFETIME = 3.0  # seconds: long enough for the calls below, short enough to wait for


def status_of(reg: registry.PrivateRegistry, username: str, password: str) -> int:
    request = urllib.request.Request(f"https://{reg.listen}/v2/")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10,
                                    context=ssl.create_default_context(cafile=str(reg.ca_file))) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def standin(make_registry: Callable[..., registry.PrivateRegistry]) -> Iterator[TcrStandIn]:
    reg = make_registry()
    with serving(TcrStandIn(fixed_token=None, token_lifetime=LIFETIME, registry=reg)) as running:
        yield running
    assert running.problems == []


def client(standin: TcrStandIn, secret_key: str = SECRET_KEY) -> TcrApi:
    return TcrApi(SECRET_ID, secret_key, REGION, endpoint=Endpoint.parse(standin.endpoint), timeout=10)


def test_a_temp_token_works_on_the_registry_exactly_while_it_is_valid(standin: TcrStandIn) -> None:
    reg = standin.registry
    assert reg is not None
    first = client(standin).create_instance_token(INSTANCE, "temp")
    assert first.expires_at is not None and abs(first.expires_at / 1000 - (time.time() + LIFETIME)) < 2
    assert status_of(reg, first.username, first.token) == 200
    second = client(standin).create_instance_token(INSTANCE, "temp")  # a renewal, before the first lapses
    assert (second.username, second.token) != (first.username, first.token) and second.expires_at is not None
    assert status_of(reg, first.username, first.token) == 200 and status_of(reg, second.username, second.token) == 200
    deadline = first.expires_at / 1000 + 1.5
    while time.time() < deadline and status_of(reg, first.username, first.token) == 200:
        time.sleep(0.1)
    assert status_of(reg, first.username, first.token) == 401, "refused once expired"
    assert time.time() >= first.expires_at / 1000, "not before"
    assert status_of(reg, second.username, second.token) == 200 or time.time() >= second.expires_at / 1000


def test_a_longterm_token_stays(standin: TcrStandIn) -> None:
    reg = standin.registry
    assert reg is not None
    token = client(standin).create_instance_token(INSTANCE, "longterm")
    assert token.expires_at is None
    time.sleep(LIFETIME + 0.5)
    assert status_of(reg, token.username, token.token) == 200


def test_a_refusal_to_mint_and_a_wrong_key_issue_nothing(standin: TcrStandIn) -> None:
    standin.mint_refusal = "InternalError"
    with pytest.raises(TcrApiError) as refused:
        client(standin).create_instance_token(INSTANCE, "temp")
    assert refused.value.code == "InternalError"
    standin.mint_refusal = None
    with pytest.raises(TcrApiError) as wrong_key:
        client(standin, secret_key="not" + SECRET_KEY).create_instance_token(INSTANCE, "temp")
    assert wrong_key.value.code == "AuthFailure.SignatureFailure"
    assert standin.issued == [] and standin.valid_tokens() == {}
