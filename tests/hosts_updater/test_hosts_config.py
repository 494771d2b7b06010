"""Unit tests of config.json validation (hosts_updater.config): accepted shapes and clear errors."""

from __future__ import annotations

import json

import pytest

from hosts_updater.config import ConfigError, parse_config
from hosts_updater.core import Entry


def parse(document: object) -> list[Entry]:
    return parse_config(json.dumps(document).encode())


def test_tke_shape() -> None:
    document = {
        "hosts": [
            {"domain": "tcr-abc.tencentcloudcr.com", "ip": "10.0.0.12", "disabled": False},
            {"domain": "TCR-ABC-vpc.tencentcloudcr.com", "ip": " 172.16.0.5 ", "disabled": False},
            {"domain": "off.tencentcloudcr.com", "ip": "10.0.0.13", "disabled": True},
            {"domain": "v6.tencentcloudcr.com", "ip": "FD00:0:0::0001"},
        ]
    }
    assert parse(document) == [
        Entry("10.0.0.12", "tcr-abc.tencentcloudcr.com"),
        Entry("172.16.0.5", "tcr-abc-vpc.tencentcloudcr.com"),
        Entry("fd00::1", "v6.tencentcloudcr.com"),
    ]


@pytest.mark.parametrize("document", [{}, {"hosts": None}, {"hosts": []}])
def test_empty_configs(document: object) -> None:
    assert parse(document) == []


def test_disabled_entry_may_be_blank_and_null_disabled_is_false() -> None:
    assert parse({"hosts": [{"domain": "", "ip": "", "disabled": True}, {"disabled": True}]}) == []
    assert parse({"hosts": [{"domain": "a.b", "ip": "10.0.0.1", "disabled": None}]}) == [Entry("10.0.0.1", "a.b")]


def test_same_pair_twice_is_fine_and_disabled_conflict_is_ignored() -> None:
    hosts = [
        {"domain": "a.b", "ip": "10.0.0.1"},
        {"domain": "A.B", "ip": "10.0.0.1"},
        {"domain": "a.b", "ip": "10.0.0.2", "disabled": True},
    ]
    assert parse({"hosts": hosts}) == [Entry("10.0.0.1", "a.b")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b"hosts: []", "not valid JSON"),
        (b"\xff", "not UTF-8"),
        (b"[]", "must be a JSON object"),
        (b'{"hosts": [], "hosts": []}', "duplicate key 'hosts'"),
        (b'{"hosts": [], "extra": 1}', "unknown key.*'extra'"),
        (b'{"hosts": {"domain": "a.b"}}', "hosts: must be a list"),
        (b'{"hosts": ["a.b 10.0.0.1"]}', r"hosts\[0\]: must be an object"),
        (b'{"hosts": [{"domain": "a.b", "ip": "10.0.0.1", "enabled": true}]}', r"hosts\[0\]: unknown key.*'enabled'"),
        (b'{"hosts": [{"domain": "a.b", "ip": "10.0.0.1", "disabled": "false"}]}', r"hosts\[0\]\.disabled: must be"),
        (b'{"hosts": [{"domain": "a.b", "ip": NaN}]}', "NaN is not a valid JSON number"),
        (b'{"hosts": [{"domain": "a.b"}]}', r"hosts\[0\]\.ip: missing"),
        (b'{"hosts": [{"ip": "10.0.0.1"}]}', r"hosts\[0\]\.domain: missing"),
        (b'{"hosts": [{"domain": "a.b", "ip": 167772161}]}', r"hosts\[0\]\.ip: must be a string"),
    ],
)
def test_structural_errors(raw: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


@pytest.mark.parametrize(
    "ip", ["10.0.0.300", "10.0.0", "010.0.0.1", "example.com", "", "fe80::1%eth0", "0.0.0.0", "::", "224.0.0.1"]
)
def test_bad_ips_name_the_entry(ip: str) -> None:
    hosts = [{"domain": "ok.example.com", "ip": "10.0.0.1"}, {"domain": "a.example.com", "ip": ip}]
    with pytest.raises(ConfigError, match=r"hosts\[1\]\.ip: "):
        parse({"hosts": hosts})


@pytest.mark.parametrize(
    "domain",
    [
        "https://a.tencentcloudcr.com",
        "a.tencentcloudcr.com:443",
        "a.tencentcloudcr.com/path",
        "*.tencentcloudcr.com",
        "a_b.example.com",
        "a.example.com.",
        ".a.example.com",
        "a..b",
        "-a.example.com",
        "a-.example.com",
        "1.2.3.4",
        "a b.com",
        "x" * 64 + ".com",
        ".".join(["abcdefghi"] * 26),
        "",
        "ünï.example.com",
    ],
)
def test_bad_domains_name_the_entry(domain: str) -> None:
    with pytest.raises(ConfigError, match=r"hosts\[0\]\.domain: "):
        parse({"hosts": [{"domain": domain, "ip": "10.0.0.1"}]})


def test_disabled_entries_are_still_checked_when_filled_in() -> None:
    with pytest.raises(ConfigError, match=r"hosts\[0\]\.ip: '10.0.0.300'"):
        parse({"hosts": [{"domain": "a.b", "ip": "10.0.0.300", "disabled": True}]})


def test_two_ips_for_one_domain_are_refused() -> None:
    hosts = [
        {"domain": "a.b", "ip": "10.0.0.1"},
        {"domain": "x.y", "ip": "10.0.0.3"},
        {"domain": "A.b", "ip": "10.0.0.2"},
    ]
    with pytest.raises(
        ConfigError, match=r"hosts\[2\]: domain 'a.b' maps to 10.0.0.2 but hosts\[0\] maps it to 10.0.0.1"
    ):
        parse({"hosts": hosts})


def test_oversized_config() -> None:
    with pytest.raises(ConfigError, match="at most"):
        parse_config(b" " * (1 << 20) + b"{}")
