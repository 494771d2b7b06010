"""Pure hosts-file transformation: keep our entries between two marker lines, touch nothing else.

Layout of our block inside a hosts file::

    [separator] BEGIN eol  (ip SP domain eol)*  END eol [slack]

* ``BEGIN``/``END`` are the marker comments below; a line matches a marker when it equals it
  after trailing spaces, tabs and carriage returns are stripped.
* ``eol`` is the file's own line ending (``\\r\\n`` when its first line ends so, else ``\\n``);
  once a block exists, its BEGIN line's ending is reused so the block stays self-consistent.
* When we append to a file that lacks a final newline we add one line ending (the
  *separator*) before our block and say so in the BEGIN line (:data:`BEGIN_SEP`); END still
  gets its line ending, so lines others append later (``echo … >> /etc/hosts``) start on a
  line of their own. :func:`remove` drops the separator again when our block is the end of the
  file, restoring the original bytes exactly; when others appended lines after our block it
  keeps it, or removal would glue their first line onto the original last line.
* END without a line ending (someone stripped the final newline) is kept that way.
* *Slack*: a shrinking in-place write pads the file with ASCII spaces before truncating it
  (see :mod:`hosts_updater.fileio`). If a crash leaves them, they sit right after END (on the
  END line when it has no line ending, else as a final space-only line without a line ending);
  they are counted as part of our block and dropped by the next :func:`render`/:func:`remove`.

Every byte outside the block span is preserved exactly by :func:`render` and :func:`remove`.

Lines written by others (:func:`reconcile`): a non-comment line outside our block whose first
field is an address and whose later fields include a configured domain already answers that
name, so our block leaves that domain out (one name, one answer); the caller reports it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

BEGIN = b"# BEGIN tcr-addon hosts-updater (managed, do not edit)"
#: BEGIN when we added the line break that ends the line before it (the file had no final newline).
BEGIN_SEP = b"# BEGIN tcr-addon hosts-updater (managed, do not edit; line break above added)"
END = b"# END tcr-addon hosts-updater"
_STRIP = b" \t\r"


class Entry:
    """One enabled mapping, already validated and normalised (see :mod:`hosts_updater.config`).

    A plain class rather than a dataclass: importing ``dataclasses`` costs ~1.6 MiB of RSS.
    """

    __slots__ = ("domain", "ip")

    def __init__(self, ip: str, domain: str) -> None:
        self.ip = ip
        self.domain = domain

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and (self.ip, self.domain) == (other.ip, other.domain)

    def __hash__(self) -> int:
        return hash((self.ip, self.domain))

    def __repr__(self) -> str:
        return f"Entry(ip={self.ip!r}, domain={self.domain!r})"

    def line(self) -> bytes:
        return f"{self.ip} {self.domain}".encode("ascii")


class BlockError(Exception):
    """The file holds a damaged or ambiguous managed block; we refuse to touch it."""


class Block:
    """Where our block is: ``start`` (BEGIN line), ``stop`` (past END, its line ending and any
    slack), ``sep_start`` (``start``, or ``start - len(eol)`` when a separator we added precedes
    BEGIN), ``eol`` (the BEGIN line's line ending), ``end_eol`` (END has a line ending),
    ``begin`` (the BEGIN marker used: :data:`BEGIN` or :data:`BEGIN_SEP`)."""

    __slots__ = ("begin", "end_eol", "eol", "sep_start", "start", "stop")

    def __init__(self, start: int, stop: int, sep_start: int, eol: bytes, end_eol: bool, begin: bytes) -> None:
        self.start = start
        self.stop = stop
        self.sep_start = sep_start
        self.eol = eol
        self.end_eol = end_eol
        self.begin = begin


def _lines(data: bytes) -> list[tuple[int, int, int]]:
    """(start, content_end, line_end) per line; content excludes ``\\n`` or ``\\r\\n``."""
    out: list[tuple[int, int, int]] = []
    pos, size = 0, len(data)
    while pos < size:
        nl = data.find(b"\n", pos)
        if nl < 0:
            out.append((pos, size, size))
            break
        content_end = nl - 1 if nl > pos and data[nl - 1] == 0x0D else nl
        out.append((pos, content_end, nl + 1))
        pos = nl + 1
    return out


def detect_eol(data: bytes) -> bytes:
    """The file's line ending: that of its first line, ``\\n`` when it has none."""
    nl = data.find(b"\n")
    return b"\r\n" if nl > 0 and data[nl - 1] == 0x0D else b"\n"


def find_block(data: bytes) -> Block | None:
    """Locate our block; ``None`` when absent; :class:`BlockError` when damaged or repeated."""
    begin: tuple[int, int, int, int, bytes] | None = None  # (line number, start, content_end, line_end, marker)
    found: Block | None = None
    lines = _lines(data)
    for number, (start, content_end, line_end) in enumerate(lines, 1):
        text = data[start:content_end].rstrip(_STRIP)
        if text in (BEGIN, BEGIN_SEP):
            if begin is not None:
                raise BlockError(
                    f"line {number}: second BEGIN marker before the END of the block opened on line {begin[0]}"
                )
            if found is not None:
                raise BlockError(f"line {number}: a second managed block (the first ends before it)")
            begin = (number, start, content_end, line_end, text)
        elif text == END:
            if begin is None:
                raise BlockError(f"line {number}: END marker without a BEGIN marker before it")
            _, b_start, b_content_end, b_line_end, marker = begin
            eol = data[b_content_end:b_line_end]
            end_eol = line_end > content_end
            stop = line_end
            rest = data[line_end:]
            if end_eol and rest and not rest.strip(b" "):
                stop = len(data)  # crash slack: a final space-only line without a line ending
            sep_start = b_start
            if marker == BEGIN_SEP and b_start >= len(eol) and data[b_start - len(eol) : b_start] == eol:
                sep_start = b_start - len(eol)
            found = Block(b_start, stop, sep_start, eol, end_eol, marker)
            begin = None
    if begin is not None:
        raise BlockError(
            f"line {begin[0]}: BEGIN marker without a matching END marker "
            "(the managed block is damaged; fix or delete it by hand)"
        )
    return found


def _dedupe(entries: Iterable[Entry]) -> list[Entry]:
    seen: set[Entry] = set()
    out: list[Entry] = []
    for entry in entries:
        if entry not in seen:
            seen.add(entry)
            out.append(entry)
    return out


def _body(entries: list[Entry], eol: bytes) -> bytes:
    return b"".join(entry.line() + eol for entry in entries)


def remove(original: bytes) -> bytes:
    """The file without our block (and without the separator we added); unchanged if absent."""
    block = find_block(original)
    if block is None:
        return original
    if block.stop == len(original):
        return original[: block.sep_start]
    return original[: block.start] + original[block.stop :]


def render(original: bytes, entries: Iterable[Entry]) -> bytes:
    """The file with exactly ``entries`` in our block; no entries means no block at all."""
    wanted = _dedupe(entries)
    if not wanted:
        return remove(original)
    block = find_block(original)
    if block is not None:
        eol = block.eol
        end = END + (eol if block.end_eol else b"")
        return original[: block.start] + block.begin + eol + _body(wanted, eol) + end + original[block.stop :]
    eol = detect_eol(original)
    text = BEGIN + eol + _body(wanted, eol) + END
    if not original:
        return text + eol
    if original.endswith(b"\n"):
        return original + text + eol
    # no final newline: add one, and say so (BEGIN_SEP) so that remove() can take it back
    return original + eol + BEGIN_SEP + text[len(BEGIN) :] + eol


def entries_in(data: bytes) -> list[tuple[str, str]]:
    """(ip, domain) pairs currently inside our block (for tests and logs)."""
    block = find_block(data)
    if block is None:
        return []
    out: list[tuple[str, str]] = []
    for start, content_end, _ in _lines(data[block.start : block.stop])[1:]:
        body = data[block.start + start : block.start + content_end]
        fields = body.split()
        if len(fields) == 2 and not body.startswith(b"#"):
            out.append((fields[0].decode("ascii", "replace"), fields[1].decode("ascii", "replace")))
    return out


class Finding:
    """A line outside our block that answers a configured ``entry``'s domain: ``line`` is its
    1-based number in the file :func:`reconcile` returns, ``address`` its address (canonical
    form), ``conflict`` true when that is not the configured address."""

    __slots__ = ("address", "conflict", "entry", "line")

    def __init__(self, entry: Entry, line: int, address: str) -> None:
        self.entry = entry
        self.line = line
        self.address = address
        self.conflict = address != _canonical(entry.ip)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Finding) and (self.entry, self.line, self.address) == (
            other.entry,
            other.line,
            other.address,
        )

    def __hash__(self) -> int:
        return hash((self.entry, self.line, self.address))

    def __repr__(self) -> str:
        return f"Finding(entry={self.entry!r}, line={self.line}, address={self.address!r})"


_DIGITS = {8: frozenset(b"01234567"), 10: frozenset(b"0123456789"), 16: frozenset(b"0123456789abcdefABCDEF")}
_LAST_PART_MAX = (0, 0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)  # by number of parts, as inet_aton


def _inet_aton(field: bytes) -> int | None:
    """The IPv4 address of a legacy ``inet_aton`` form (``10.1``, ``0x0a.0.0.1``, ``012.0.0.1``
    octal), or ``None``. musl's hosts parser accepts these, so they answer a name too."""
    parts = field.split(b".")
    if len(parts) > 4:
        return None
    values: list[int] = []
    for part in parts:
        if part[:2] in (b"0x", b"0X"):
            digits, base = part[2:], 16
        elif part[:1] == b"0":
            digits, base = part, 8
        else:
            digits, base = part, 10
        if not digits or not _DIGITS[base].issuperset(digits):
            return None
        values.append(int(digits, base))
    *head, last = values
    if any(value > 0xFF for value in head) or last > _LAST_PART_MAX[len(values)]:
        return None
    return sum(value << (24 - 8 * index) for index, value in enumerate(head)) | last


def _address(field: bytes) -> str | None:
    """The canonical address a hosts line's first field gives, or ``None`` when it gives none.

    Deliberately the union of what resolvers accept (glibc, musl, Go): IPv4, IPv6 with or
    without a zone, and the legacy IPv4 forms, so that no answer for a name is overlooked.
    """
    try:
        return str(ipaddress.ip_address(field.decode("latin-1")))
    except ValueError:
        pass
    value = _inet_aton(field)
    return None if value is None else str(ipaddress.IPv4Address(value))


def _canonical(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _name_key(name: bytes) -> bytes:
    """Names compare as resolvers compare them: ASCII case-insensitive, a trailing dot ignored."""
    name = name.lower()
    return name[:-1] if name.endswith(b".") else name


def foreign_answers(data: bytes, entries: Iterable[Entry]) -> list[Finding]:
    """Lines outside our block that answer a domain of ``entries``, in file order.

    A line answers a name when, with everything from its first ``#`` on dropped, its first
    field is an address (:func:`_address`) and a later field is the name. Raises
    :class:`BlockError` like :func:`find_block`.
    """
    by_name: dict[bytes, list[Entry]] = {}
    for entry in _dedupe(entries):
        by_name.setdefault(_name_key(entry.domain.encode("utf-8")), []).append(entry)
    block = find_block(data)
    out: list[Finding] = []
    for number, (start, content_end, _) in enumerate(_lines(data), 1):
        if block is not None and block.start <= start < block.stop:
            continue
        fields = data[start:content_end].split(b"#", 1)[0].split()
        if len(fields) < 2:
            continue
        address = _address(fields[0])
        if address is None:
            continue
        seen: set[bytes] = set()
        for field in fields[1:]:
            key = _name_key(field)
            if key in by_name and key not in seen:
                seen.add(key)
                out.extend(Finding(entry, number, address) for entry in by_name[key])
    return out


def reconcile(original: bytes, entries: Iterable[Entry]) -> tuple[bytes, list[Finding]]:
    """:func:`render` ``entries`` except those whose domain a line outside our block already
    answers (one name, one answer; a line of ours for it is dropped), and those lines.

    The findings' line numbers are those of the returned content (the lines outside our block
    are the same lines, but our block may sit before them and change size).
    """
    wanted = _dedupe(entries)
    answered = {_name_key(finding.entry.domain.encode("utf-8")) for finding in foreign_answers(original, wanted)}
    updated = render(original, [entry for entry in wanted if _name_key(entry.domain.encode("utf-8")) not in answered])
    return updated, foreign_answers(updated, wanted)
