"""Unit tests of config.json validation (hosts_updater.config): accepted shapes and clear errors."""

from __future__ import annotations

import json

import pytest

from hosts_updater.config import ConfigError, parse_config, refuse_domain
from hosts_updater.core import Entry


def parse(document: object) -> list[Entry]:
    config = parse_config(json.dumps(document).encode())
    assert config.refused == []
    return config.entries


def refused(document: object) -> tuple[list[Entry], list[str]]:
    config = parse_config(json.dumps(document).encode())
    return config.entries, config.refused


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


@pytest.mark.parametrize("ip", ["10.0.0.300", "10.0.0", "010.0.0.1", "example.com", "", "fe80::1%eth0"])
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


OK = {"domain": "ok.tencentcloudcr.com", "ip": "10.0.0.1"}


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("0.1.2.3", "0.0.0.0/8"),
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("169.254.0.23", "link-local"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("::ffff:10.0.0.1", "IPv4-mapped"),
    ],
)
def test_refused_ips_are_left_out_and_named(ip: str, reason: str) -> None:
    entries, messages = refused({"hosts": [OK, {"domain": "a.tencentcloudcr.com", "ip": ip}]})
    assert entries == [Entry("10.0.0.1", "ok.tencentcloudcr.com")]
    (message,) = messages
    assert message.startswith("hosts[1].ip: ")
    assert reason in message and "or remove the entry" in message


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("localhost", "loopback name"),
        ("LOCALHOST", "loopback name"),
        ("registry.localhost", "loopback name"),
        ("registry", "single-label"),
        ("kubernetes", "single-label"),
        ("metadata", "single-label"),
        ("kubernetes.default", "short name"),
        ("kubernetes.default.svc", "Service name"),
        ("kubernetes.default.svc.cluster.local", "under .local"),
        ("registry.kube-system.svc.k8s.example.com", "Service name"),
        ("registry.kube-system", "top-level label 'kube-system'"),
        ("node-1.cluster.local", "under .local"),
        ("metadata.tencentyun.com", "metadata"),
        ("METADATA.tencentyun.com", "metadata"),
        ("x.metadata.tencentyun.com", "metadata"),
        ("metadata.google.internal", "metadata"),
        ("metadata.goog", "metadata"),
        ("instance-data.ec2.internal", "metadata"),
        ("instance-data.ap-east-1.compute.internal", "metadata"),
    ],
)
def test_refused_domains_are_left_out_and_named(domain: str, reason: str) -> None:
    entries, messages = refused({"hosts": [{"domain": domain, "ip": "10.0.0.2"}, OK]})
    assert entries == [Entry("10.0.0.1", "ok.tencentcloudcr.com")]
    (message,) = messages
    assert message.startswith(f"hosts[0].domain: {domain.lower()!r} ")
    assert reason in message and "give the registry's domain" in message


@pytest.mark.parametrize(
    "domain",
    ["demo-vpc.tencentcloudcr.com", "a.b", "svc.example.com", "registry.corp", "ccr.ccs.tencentyun.com",
     "mirrors.tencentyun.com", "registry.xn--fiqs8s", "metadata.example.com", "my-instance-data.example.com"],
)
def test_ordinary_registry_names_pass(domain: str) -> None:
    assert refuse_domain(domain) is None


def test_a_disabled_refused_entry_is_not_reported_and_a_refused_one_owns_no_domain() -> None:
    hosts = [
        {"domain": "localhost", "ip": "10.0.0.9", "disabled": True},
        {"domain": "a.tencentcloudcr.com", "ip": "127.0.0.1"},
        {"domain": "a.tencentcloudcr.com", "ip": "10.0.0.3"},
    ]
    entries, messages = refused({"hosts": hosts})
    assert entries == [Entry("10.0.0.3", "a.tencentcloudcr.com")]
    assert [m.split(":")[0] for m in messages] == ["hosts[1].ip"]
