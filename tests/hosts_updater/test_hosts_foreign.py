"""Lines written by others for a configured domain (hosts_updater.core.reconcile): one name, one
answer. Exact bytes in, exact bytes and findings out."""

from __future__ import annotations

import pytest

from hosts_updater.core import BEGIN, BEGIN_SEP, END, BlockError, Entry, Finding, reconcile, remove, render

A = Entry("10.0.0.12", "a.tencentcloudcr.com")
B = Entry("fd00::7", "b.tencentcloudcr.com")
HEAD = b"127.0.0.1\tlocalhost\n::1 ip6-localhost ip6-loopback\n"


def block(*entries: Entry, eol: bytes = b"\n", sep: bool = False) -> bytes:
    body = b"".join(e.line() + eol for e in entries)
    return (BEGIN_SEP if sep else BEGIN) + eol + body + END + eol


def test_without_lines_of_others_it_renders() -> None:
    assert reconcile(HEAD, [A, B]) == (render(HEAD, [A, B]), [])


def test_same_address_line_of_others_answers_the_name_and_ours_is_not_written() -> None:
    original = HEAD + b"10.0.0.12 a.tencentcloudcr.com\n"
    updated, findings = reconcile(original, [A, B])
    assert updated == original + block(B)
    assert findings == [Finding(A, 3, "10.0.0.12")]
    assert not findings[0].conflict


def test_different_address_is_a_conflict_and_the_other_entries_are_still_written() -> None:
    original = HEAD + b"10.0.0.99 a.tencentcloudcr.com\n"
    updated, findings = reconcile(original, [A, B])
    assert updated == original + block(B)
    assert [(f.entry, f.line, f.address, f.conflict) for f in findings] == [(A, 3, "10.0.0.99", True)]


@pytest.mark.parametrize(
    ("line", "address", "conflict"),
    [
        (b"fd00:0:0::7 b.tencentcloudcr.com", "fd00::7", False),  # compared as addresses, not as text
        (b"fd00::8 b.tencentcloudcr.com", "fd00::8", True),
        (b"10.0.0.7 b.tencentcloudcr.com", "10.0.0.7", True),  # any address family
        (b"fe80::1%eth0 b.tencentcloudcr.com", "fe80::1%eth0", True),  # zone: musl and Go read it
    ],
)
def test_ipv6_lines_of_others(line: bytes, address: str, conflict: bool) -> None:
    original = HEAD + line + b"\n"
    updated, findings = reconcile(original, [A, B])
    assert updated == original + block(A)
    assert [(f.entry, f.address, f.conflict) for f in findings] == [(B, address, conflict)]


def test_ipv4_line_of_others_for_an_ipv6_entry_and_the_reverse() -> None:
    original = HEAD + b"fd00::12 a.tencentcloudcr.com\n10.0.0.7 b.tencentcloudcr.com\n"
    updated, findings = reconcile(original, [A, B])
    assert updated == original  # both answered elsewhere: no block at all
    assert [(f.entry, f.line, f.address, f.conflict) for f in findings] == [
        (A, 3, "fd00::12", True),
        (B, 4, "10.0.0.7", True),
    ]


def test_name_among_several_names_on_a_line() -> None:
    original = HEAD + b"10.0.0.12\tregistry   a.tencentcloudcr.com\tb.tencentcloudcr.com alias\n"
    updated, findings = reconcile(original, [A, B])
    assert updated == original
    assert [(f.entry, f.line, f.conflict) for f in findings] == [(A, 3, False), (B, 3, True)]


@pytest.mark.parametrize("name", [b"A.TencentCloudCR.com", b"a.tencentcloudcr.com.", b"A.TENCENTCLOUDCR.COM."])
def test_case_and_trailing_dot_are_ignored(name: bytes) -> None:
    original = HEAD + b"10.0.0.12 " + name + b"\n"
    updated, findings = reconcile(original, [A])
    assert updated == original
    assert findings == [Finding(A, 3, "10.0.0.12")]


@pytest.mark.parametrize(
    "line",
    [
        b"# 10.0.0.99 a.tencentcloudcr.com",
        b"#10.0.0.99 a.tencentcloudcr.com",
        b"   # 10.0.0.99 a.tencentcloudcr.com",
        b"10.0.0.99 other.example.com # was a.tencentcloudcr.com",
        b"10.0.0.99 other.example.com #a.tencentcloudcr.com",
        b"10.0.0.99#a.tencentcloudcr.com",
        b"a.tencentcloudcr.com 10.0.0.99",  # first field not an address
        b"10.0.0.999 a.tencentcloudcr.com",
        b"registry a.tencentcloudcr.com",
        b"10.0.0.99",
        b"10.0.0.99 a.tencentcloudcr.com.example.com xa.tencentcloudcr.com a.tencentcloudcr.co",
        b"10.0.0.99 a.tencentcloudcr.com..",
    ],
)
def test_lines_that_do_not_answer_the_name(line: bytes) -> None:
    original = HEAD + line + b"\n"
    assert reconcile(original, [A]) == (original + block(A), [])


@pytest.mark.parametrize(
    ("field", "address"),
    [(b"012.0.0.12", "10.0.0.12"), (b"10.12", "10.0.0.12"), (b"0x0a.0.0.12", "10.0.0.12"), (b"167772172", "10.0.0.12")],
)
def test_legacy_ipv4_forms_answer_too(field: bytes, address: str) -> None:
    """musl (and inet_aton) read these; we must not add a second answer beside them."""
    original = HEAD + field + b" a.tencentcloudcr.com\n"
    updated, findings = reconcile(original, [A])
    assert updated == original
    assert [(f.address, f.conflict) for f in findings] == [(address, False)]


def test_a_line_of_others_appearing_later_removes_ours_and_nothing_else() -> None:
    ours = render(HEAD, [A, B])
    assert ours == HEAD + block(A, B)
    later = ours + b"10.0.0.99 a.tencentcloudcr.com # added by an administrator\n"
    updated, findings = reconcile(later, [A, B])
    assert updated == HEAD + block(B) + b"10.0.0.99 a.tencentcloudcr.com # added by an administrator\n"
    assert [(f.entry, f.line, f.conflict) for f in findings] == [(A, 6, True)]  # its number after the update
    # the only entry answered elsewhere: our block goes, their line stays byte for byte
    updated, findings = reconcile(render(HEAD, [A]) + b"10.0.0.12 a.tencentcloudcr.com\n", [A])
    assert updated == HEAD + b"10.0.0.12 a.tencentcloudcr.com\n"
    assert findings == [Finding(A, 3, "10.0.0.12")]


def test_a_line_of_others_disappearing_brings_ours_back() -> None:
    with_theirs = HEAD + b"10.0.0.99 a.tencentcloudcr.com\n"
    updated, _ = reconcile(with_theirs, [A, B])
    assert updated == with_theirs + block(B)
    gone = HEAD + block(B)  # they deleted their line
    assert reconcile(gone, [A, B]) == (HEAD + block(A, B), [])


def test_crlf_file() -> None:
    original = b"127.0.0.1 localhost\r\n10.0.0.99 A.tencentcloudcr.com.\r\n# x\r\n"
    updated, findings = reconcile(original, [A, B])
    assert updated == original + block(B, eol=b"\r\n")
    assert [(f.entry, f.line, f.address, f.conflict) for f in findings] == [(A, 2, "10.0.0.99", True)]
    assert remove(updated) == original


def test_file_without_final_newline_whose_last_line_answers() -> None:
    original = HEAD + b"10.0.0.12 a.tencentcloudcr.com"
    updated, findings = reconcile(original, [A, B])
    assert updated == original + b"\n" + block(B, sep=True)
    assert findings == [Finding(A, 3, "10.0.0.12")]
    assert remove(updated) == original


def test_lines_inside_our_block_are_ours_not_others() -> None:
    ours = render(HEAD, [A, B])
    assert reconcile(ours, [A, B]) == (ours, [])
    tampered = ours.replace(A.line(), b"10.0.0.99 a.tencentcloudcr.com")  # edited inside our block: restored
    assert reconcile(tampered, [A, B]) == (ours, [])


def test_every_line_of_others_is_reported() -> None:
    original = HEAD + b"10.0.0.12 a.tencentcloudcr.com\n10.0.0.99 a.tencentcloudcr.com A.tencentcloudcr.com\n"
    updated, findings = reconcile(original, [A])
    assert updated == original
    assert [(f.line, f.address, f.conflict) for f in findings] == [(3, "10.0.0.12", False), (4, "10.0.0.99", True)]


def test_damaged_block_is_still_refused() -> None:
    with pytest.raises(BlockError, match="BEGIN marker without a matching END"):
        reconcile(HEAD + BEGIN + b"\n10.0.0.99 a.tencentcloudcr.com\n", [A])
