"""Unit tests of the pure block logic (hosts_updater.core): exact bytes in, exact bytes out."""

from __future__ import annotations

import pytest

from hosts_updater.core import BEGIN, BEGIN_SEP, END, BlockError, Entry, entries_in, find_block, remove, render

A = Entry("10.0.0.12", "a.tencentcloudcr.com")
B = Entry("fd00::7", "b.tencentcloudcr.com")


def block(*entries: Entry, eol: bytes = b"\n", sep: bool = False) -> bytes:
    """Our block as render() writes it; ``sep`` = we added the line break before it."""
    body = b"".join(e.line() + eol for e in entries)
    return (BEGIN_SEP if sep else BEGIN) + eol + body + END + eol


def test_appends_block_to_lf_file_and_removes_it_exactly() -> None:
    original = b"127.0.0.1\tlocalhost\n::1 ip6-localhost ip6-loopback\n\n# comment\n"
    result = render(original, [A, B])
    assert result == original + block(A, B)
    assert remove(result) == original


def test_crlf_file_gets_crlf_block() -> None:
    original = b"127.0.0.1 localhost\r\n# c\r\n"
    result = render(original, [A])
    assert result == original + block(A, eol=b"\r\n")
    assert remove(result) == original


def test_missing_final_newline_is_added_flagged_and_taken_back() -> None:
    original = b"127.0.0.1 localhost\n10.1.1.1 last-line"
    result = render(original, [A])
    assert result == original + b"\n" + block(A, sep=True)
    assert remove(result) == original
    assert render(result, [B]) == original + b"\n" + block(B, sep=True)


def test_lines_appended_after_our_block_keep_their_own_line() -> None:
    original = b"127.0.0.1 localhost\n10.1.1.1 last-line"
    appended = render(original, [A]) + b"10.2.2.2 appended-later\n"  # echo ... >> /etc/hosts
    assert render(appended, [B]) == original + b"\n" + block(B, sep=True) + b"10.2.2.2 appended-later\n"
    assert remove(appended) == original + b"\n10.2.2.2 appended-later\n"  # not glued onto last-line


def test_missing_final_newline_crlf_and_trailing_cr() -> None:
    for original in (b"x\r\na\r", b"a\r", b"x\r\nlast"):
        result = render(original, [A])
        assert remove(result) == original, original
        assert entries_in(result) == [(A.ip, A.domain)]


def test_empty_file() -> None:
    assert render(b"", [A]) == block(A)
    assert remove(render(b"", [A])) == b""
    assert render(b"", []) == b""


def test_block_in_the_middle_is_updated_in_place() -> None:
    head = b"127.0.0.1 localhost\n"
    tail = b"# appended later by someone else\n10.9.9.9 other\n"
    result = render(head + block(A) + tail, [B, A])
    assert result == head + block(B, A) + tail
    assert remove(result) == head + tail


def test_other_tools_blocks_untouched() -> None:
    original = b"# BEGIN ANSIBLE MANAGED BLOCK\n1.2.3.4 x\n# END ANSIBLE MANAGED BLOCK\n"
    result = render(original, [A])
    assert result.startswith(original)
    assert remove(result) == original


def test_render_is_idempotent_and_reuses_the_block_line_ending() -> None:
    original = b"a\r\n" + block(A, eol=b"\r\n") + b"b\n"
    assert render(original, [A]) == original
    assert render(original, [A, B]) == b"a\r\n" + block(A, B, eol=b"\r\n") + b"b\n"


def test_empty_entries_remove_the_block() -> None:
    original = b"127.0.0.1 localhost\n"
    assert render(render(original, [A]), []) == original


def test_duplicates_collapse() -> None:
    assert render(b"", [A, A, B, A]) == block(A, B)


def test_markers_tolerate_trailing_whitespace() -> None:
    edited = b"x\n" + BEGIN + b" \t\n" + A.line() + b"\n" + END + b"  \n"
    assert render(edited, [B]) == b"x\n" + block(B)
    assert remove(edited) == b"x\n"


def test_marker_with_leading_text_is_not_ours() -> None:
    original = b"  " + BEGIN + b"\n"
    assert find_block(original) is None
    assert render(original, [A]) == original + block(A)


def test_final_newline_removed_by_someone_else_is_not_taken_from_the_user() -> None:
    """END without a line ending: kept so, and the user's line break before BEGIN stays."""
    edited = b"x\n" + BEGIN + b"\n" + A.line() + b"\n" + END
    assert remove(edited) == b"x\n"
    assert render(edited, [B]) == b"x\n" + BEGIN + b"\n" + B.line() + b"\n" + END


def test_crash_slack_after_end_is_dropped() -> None:
    with_eol = b"x\n" + block(A) + b"      "
    assert render(with_eol, [A]) == b"x\n" + block(A)
    assert remove(with_eol) == b"x\n"
    separated = b"x\n" + block(A, sep=True) + b"    "
    assert render(separated, [A]) == b"x\n" + block(A, sep=True)
    assert remove(separated) == b"x"
    no_eol = b"x\n" + BEGIN + b"\n" + A.line() + b"\n" + END + b"   "
    assert render(no_eol, [B]) == b"x\n" + BEGIN + b"\n" + B.line() + b"\n" + END


def test_lines_edited_inside_our_block_are_restored() -> None:
    tampered = b"x\n" + BEGIN + b"\n10.6.6.6 a.tencentcloudcr.com\n# note\n" + END + b"\n"
    assert render(tampered, [A]) == b"x\n" + block(A)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"x\n" + BEGIN + b"\n" + A.line() + b"\n", "line 2: BEGIN marker without a matching END"),
        (b"x\n" + END + b"\n", "line 2: END marker without a BEGIN"),
        (BEGIN + b"\n" + BEGIN + b"\n" + END + b"\n", "line 2: second BEGIN marker"),
        (block(A) + b"y\n" + block(B), "line 5: a second managed block"),
    ],
)
def test_damaged_blocks_are_refused(content: bytes, message: str) -> None:
    with pytest.raises(BlockError, match=message):
        render(content, [A])
    with pytest.raises(BlockError, match=message):
        remove(content)


def test_entries_in() -> None:
    assert entries_in(b"x\n") == []
    assert entries_in(render(b"x\n", [A, B])) == [(A.ip, A.domain), (B.ip, B.domain)]
