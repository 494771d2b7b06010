"""Property tests (hypothesis) of render/remove and of the in-place writer on random hosts files.

Default runs use a modest number of examples (the whole directory stays well under a minute);
`make test-long` runs the round trip and the one-answer property with 10,000 (hypothesis profile `long`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosts_updater.config import ConfigError, parse_config
from hosts_updater.core import (
    BEGIN,
    BEGIN_SEP,
    END,
    Entry,
    detect_eol,
    entries_in,
    find_block,
    reconcile,
    remove,
    render,
)
from hosts_updater.fileio import HostsFile
from support import property_settings

OPTIONS: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
FAST = settings(max_examples=100, **OPTIONS)

realistic_lines = st.sampled_from(
    [
        b"127.0.0.1 localhost",
        b"127.0.1.1\tnode-1.cluster.local node-1",
        b"::1     localhost ip6-localhost ip6-loopback",
        b"fe00::0 ip6-localnet",
        b"ff02::1\tip6-allnodes",
        b"# The following lines are desirable for IPv6 capable hosts",
        b"#",
        b"",
        b"   ",
        b"\t",
        b"10.0.0.12 a.tencentcloudcr.com  # someone else's line for our domain",
        b"# BEGIN ANSIBLE MANAGED BLOCK",
        b"# END ANSIBLE MANAGED BLOCK",
        b"# BEGIN tcr-addon hosts-updater",  # close to, but not, our marker
        b"169.254.0.1 metadata.tencentyun.com",
    ]
)
random_lines = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))


def _not_marker(line: bytes) -> bool:
    return line.rstrip(b" \t\r") not in (BEGIN, BEGIN_SEP, END)


lines = st.one_of(realistic_lines, random_lines).filter(_not_marker)


@st.composite
def hosts_files(draw: st.DrawFn) -> bytes:
    """Random hosts files without our block: any eols (LF, CRLF, mixed), final newline or not."""
    body = draw(st.lists(lines, max_size=12))
    eols = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(body), max_size=len(body)))
    if draw(st.booleans()):
        eols = [eols[0]] * len(eols) if eols else eols
    data = b"".join(line + eol for line, eol in zip(body, eols, strict=True))
    no_final_newline = draw(st.booleans())
    if body and no_final_newline:
        data = data[: -len(eols[-1])]
    return data


domains = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,6}){0,3}\.[a-z]{2,5}\Z")
ips = st.one_of(
    st.ip_addresses(v=4, network="10.0.0.0/8").map(str),
    st.ip_addresses(v=6, network="fd00::/8").map(str),
)
entry_lists = st.lists(st.builds(Entry, ip=ips, domain=domains), max_size=5)


def _dedupe(entries: list[Entry]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for entry in entries:
        if (entry.ip, entry.domain) not in out:
            out.append((entry.ip, entry.domain))
    return out


def check_round_trip(original: bytes, first: list[Entry], second: list[Entry]) -> None:
    assert find_block(original) is None
    applied = render(original, first)
    # apply then remove gives the original bytes, whatever the entries
    assert remove(applied) == original
    # the entries are there, in order, without duplicates
    assert entries_in(applied) == _dedupe(first)
    # applying again changes nothing (so the writer writes once)
    assert render(applied, first) == applied
    # changing the config equals applying the new one to the original; no trace of the old
    assert render(applied, second) == render(original, second)
    if first:
        # every byte of the original is still there, unchanged, before our block
        block = find_block(applied)
        assert block is not None
        assert applied[: block.sep_start] == original[: block.sep_start]
        assert block.sep_start == len(original)
        assert applied[block.start : block.stop].count(b"\n") == len(_dedupe(first)) + 1 + block.end_eol
    else:
        assert applied == original


@property_settings(100, **OPTIONS)
@given(original=hosts_files(), first=entry_lists, second=entry_lists)
def test_round_trip(original: bytes, first: list[Entry], second: list[Entry]) -> None:
    check_round_trip(original, first, second)


@FAST
@given(head=hosts_files(), tail=hosts_files(), first=entry_lists.filter(bool), second=entry_lists)
def test_block_between_other_lines_keeps_them(
    head: bytes, tail: bytes, first: list[Entry], second: list[Entry]
) -> None:
    """Someone appended lines after our block: updates and removal keep their bytes.

    Exception by design: a trailing run of spaces without a line ending right after our END line
    is crash slack from a shrinking write (see hosts_updater.core) and is dropped.
    """
    if tail and not tail.strip(b" "):
        tail = b"#" + tail
    with_block = render(head, first)
    if not with_block.endswith(b"\n"):
        with_block += b"\n"
    combined = with_block + tail
    updated = render(combined, second)
    assert updated.startswith(head)
    assert updated.endswith(tail)
    # the line break we added after a head without a final newline stays while lines follow,
    # so that removal does not glue the tail's first line onto the head's last line
    expected = head if not tail else head + (b"" if not head or head.endswith(b"\n") else detect_eol(head)) + tail
    assert remove(updated) == expected
    assert remove(combined) == expected


@FAST
@given(original=hosts_files(), entries=entry_lists.filter(bool), drop=st.data())
def test_lines_removed_from_our_block_come_back(original: bytes, entries: list[Entry], drop: st.DataObject) -> None:
    applied = render(original, entries)
    block = find_block(applied)
    assert block is not None
    inner = applied[block.start : block.stop].split(b"\n")
    victim = drop.draw(st.integers(1, len(_dedupe(entries))))  # one of our entry lines (0 is BEGIN)
    tampered = applied[: block.start] + b"\n".join(inner[:victim] + inner[victim + 1 :]) + applied[block.stop :]
    assert render(tampered, entries) == applied


@FAST
@given(old=st.binary(max_size=9000), new=st.binary(max_size=9000))
def test_writer_reaches_exactly_the_new_content(tmp_path: Path, old: bytes, new: bytes) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(old)
    inode = path.stat().st_ino
    with HostsFile(str(path)) as hosts:
        hosts.write(old, new)
    assert path.read_bytes() == new
    assert path.stat().st_ino == inode  # in place, never replaced


@FAST
@given(original=hosts_files(), first=entry_lists, second=entry_lists)
def test_applying_twice_writes_once(tmp_path: Path, original: bytes, first: list[Entry], second: list[Entry]) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(original)
    with HostsFile(str(path)) as hosts:
        wrote = hosts.apply(lambda data: render(data, first))
        assert wrote == bool(first)
        stamp = os.stat(path).st_mtime_ns
        assert not hosts.apply(lambda data: render(data, first))
        assert hosts.writes == int(bool(first))
        assert os.stat(path).st_mtime_ns == stamp
        hosts.apply(lambda data: render(data, second))
        assert path.read_bytes() == render(original, second)
        hosts.apply(remove)
    assert path.read_bytes() == original


def _is_address(field: bytes) -> bool:
    """Written apart from hosts_updater.core on purpose: the C library's inet_aton is the
    reference for the legacy IPv4 forms."""
    text = field.decode("latin-1")
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(text)
        return True
    except (OSError, ValueError):
        return False


def answers(data: bytes, domain: str) -> int:
    """How many lines of ``data`` answer ``domain`` (first field an address, the name a later
    field before any ``#``; case and one trailing dot ignored)."""
    count = 0
    for line in data.split(b"\n"):
        fields = line.partition(b"#")[0].split()
        if len(fields) >= 2 and _is_address(fields[0]):
            count += any(field.lower().removesuffix(b".") == domain.encode() for field in fields[1:])
    return count


legacy_ipv4 = st.sampled_from([b"10.1", b"012.0.0.12", b"0x0a.0.0.12", b"167772172", b"0", b"10.0.0.999", b"08.0.0.1"])


@st.composite
def foreign_lines(draw: st.DrawFn, entries: list[Entry]) -> bytes:
    """A line someone else wrote, often for one of ``entries``' names, sometimes only in a comment."""
    address = draw(
        st.one_of(
            st.sampled_from([entry.ip.encode() for entry in entries] or [b"10.0.0.1"]),
            ips.map(str.encode),
            legacy_ipv4,
            st.sampled_from([b"fe80::1%eth0", b"registry", b"#10.0.0.1", b""]),
        )
    )
    pool = [entry.domain for entry in entries] + ["other.example.com", "node-1"]
    names = draw(st.lists(st.sampled_from(pool), min_size=0, max_size=3))
    mangled = [(name.upper() if draw(st.booleans()) else name) + ("." if draw(st.booleans()) else "") for name in names]
    separator = draw(st.sampled_from([b" ", b"\t", b"  \t"]))
    line = separator.join([address, *(name.encode() for name in mangled)])
    if draw(st.booleans()):
        line += draw(st.sampled_from([b" # ", b"#", b"\t# was "])) + draw(st.sampled_from(pool)).encode()
    return line


@st.composite
def files_with_others_lines(draw: st.DrawFn, entries: list[Entry]) -> bytes:
    final_newline = draw(st.booleans())
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    body: list[bytes] = draw(st.lists(st.one_of(lines, foreign_lines(entries)), max_size=8))
    data = b"".join(line + eol for line in body)
    return data if final_newline or not body else data[: -len(eol)]


entry_sets = st.dictionaries(domains, ips, max_size=4).map(lambda pairs: [Entry(ip, d) for d, ip in pairs.items()])


def check_one_answer_per_name(data: st.DataObject, entries: list[Entry]) -> None:
    # our block as an earlier pass left it: often with lines for the names others now answer
    previous = data.draw(
        st.one_of(st.just(entries), st.lists(st.sampled_from(entries)) if entries else st.just([]), entry_lists),
        label="previous",
    )
    head = data.draw(files_with_others_lines(entries), label="head")
    tail = data.draw(files_with_others_lines(entries), label="tail")
    if tail and not tail.strip(b" "):
        tail = b"#" + tail  # a space-only tail after END is crash slack, ours by design
    if not previous:  # no block yet: the whole file is the part before ours
        head, tail = head + tail, b""
    elif tail and head and not head.endswith(b"\n"):
        head += b"\n"
    original = (render(head, previous) if previous else head) + tail
    updated, findings = reconcile(original, entries)
    for entry in entries:
        others = answers(head, entry.domain) + answers(tail, entry.domain)
        # one answer per name: ours only where no line of others answers it
        assert answers(updated, entry.domain) == max(1, others), entry
        assert (entry.ip, entry.domain) in entries_in(updated) or others
        assert sum(finding.entry == entry for finding in findings) == others
    lines_after = updated.split(b"\n")
    for finding in findings:
        assert answers(lines_after[finding.line - 1], finding.entry.domain) == 1
    # every byte outside our block is unchanged
    block = find_block(updated)
    if block is None:
        assert updated == head + tail
    else:
        assert updated[: block.sep_start] == head
        assert updated[block.stop :] == tail
    assert reconcile(updated, entries) == (updated, findings)  # stable: the next pass writes nothing


@property_settings(100, **OPTIONS)
@given(data=st.data(), entries=entry_sets)
def test_each_configured_name_gets_one_answer(data: st.DataObject, entries: list[Entry]) -> None:
    check_one_answer_per_name(data, entries)


@FAST
@given(field=st.text(alphabet="0123456789abcdefxX.:%", min_size=1, max_size=20))
def test_what_counts_as_an_address_matches_the_c_library(field: str) -> None:
    line = field.encode() + b" a.tencentcloudcr.com\n"
    _, findings = reconcile(line, [Entry("10.0.0.12", "a.tencentcloudcr.com")])
    assert bool(findings) == _is_address(field.encode())
    if findings and not field.count(":"):
        assert findings[0].address == socket.inet_ntoa(socket.inet_aton(field))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
entry_like = st.fixed_dictionaries(
    {},
    optional={
        "domain": st.one_of(domains, st.text(max_size=30), st.integers()),
        "ip": st.one_of(ips, st.text(max_size=30), st.none()),
        "disabled": st.one_of(st.booleans(), st.none(), st.text(max_size=5)),
        "extra": json_values,
    },
)


@FAST
@given(
    document=st.one_of(
        json_values,
        st.fixed_dictionaries({"hosts": st.lists(entry_like, max_size=5)}),
        st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    )
)
def test_config_parser_only_ever_raises_config_error(document: object) -> None:
    raw = document.encode() if isinstance(document, str) else json.dumps(document).encode()
    try:
        config = parse_config(raw)
    except ConfigError as error:
        assert str(error)
        return
    entries = config.entries
    assert all(message.startswith("hosts[") for message in config.refused)
    for entry in entries:  # whatever was accepted renders and round-trips
        assert render(b"", [entry]) != b""
    assert remove(render(b"x\n", entries)) == b"x\n"
    assert len({e.domain for e in entries}) == len(entries)  # one IP per domain
