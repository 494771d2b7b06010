"""Fixtures for the values-wizard suite: a fake TCR API on 127.0.0.1, no proxies, a work directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from values_support import FakeTcr, serving

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                   "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_and_no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK (and requests) read proxies from the environment: keep 127.0.0.1 direct.

    The wizard is always given its environment explicitly; a real API key in the developer's
    environment must never be used by a test.
    """
    for name in (*PROXY_VARIABLES, "TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TCR_API_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_tcr() -> Iterator[FakeTcr]:
    """The TCR API for one account with instance tcr-abcd1234 in ap-guangzhou, on 127.0.0.1."""
    with serving(FakeTcr()) as fake:
        yield fake
    assert fake.problems == [], f"the wizard sent requests the API would refuse: {fake.problems}"
