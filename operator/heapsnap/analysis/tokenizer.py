"""Incremental tokenizer for the V8 heap snapshot JSON, fed bytes split anywhere.

A snapshot is one JSON object whose big members are flat integer arrays (``nodes``,
``edges``, ``locations``...) followed by ``strings``. The numbers are parsed with numpy
a chunk at a time, carrying a token cut by the chunk boundary over to the next chunk;
strings are handed out as runs of raw (still escaped) complete strings, decoded only
when a consumer asks for one.
Memory stays at one chunk plus one partial token, whatever the snapshot's size.

Both consumers, the streaming summary and the full reader, receive the pieces through
the :class:`SnapshotVisitor` protocol, so there is only one parser.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from heapsnap.errors import SnapshotFormatError

__all__ = [
    "INT_SECTIONS",
    "IntArray",
    "SnapshotTokenizer",
    "SnapshotVisitor",
    "StringRun",
    "decode_string",
    "parse_ints",
]

IntArray = npt.NDArray[np.int64]


def _c_parser() -> Callable[[bytes | memoryview, IntArray], int] | None:
    try:
        from heapsnap.analysis import _cints
    except ImportError:  # pragma: no cover - installed without a C compiler: numpy parses
        return None
    return _cints.parse


#: ``_cints.parse``: the C loop that parses numbers (see _cints.c).
_c_parse = _c_parser()

#: Members that are flat arrays of non-negative integers.
INT_SECTIONS = frozenset({"nodes", "edges", "locations", "samples", "trace_function_infos"})
#: Members that are nested arrays of integers, skipped without being parsed.
_NESTED_SECTIONS = frozenset({"trace_tree"})
#: A small JSON member (the ``snapshot`` header) may not be larger than this.
_MAX_SMALL_VALUE = 64 * 1024 * 1024

_WHITESPACE = b" \t\r\n"
#: Bytes of numbers parsed per numpy pass (see ``_emit_ints``).
_SLICE = 256 * 1024
#: Bytes of strings or nested arrays scanned per numpy pass: chunks of any size may be fed.
_WINDOW = 128 * 1024
_STRING_GAP_CLASS = np.zeros(256, dtype=bool)
_STRING_GAP_CLASS[list(b", \t\r\n")] = True
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_COMMA, _NEWLINE, _ZERO, _NINE = b",\n09"
# Byte classes in a numeric array: 1 digit, 2 separator, 0 anything else.
_NUM_CLASS = np.zeros(256, dtype=np.uint8)
_NUM_CLASS[ord("0") : ord("9") + 1] = 1
for _sep in b", \t\r\n":
    _NUM_CLASS[_sep] = 2


def decode_string(raw: bytes) -> str:
    """One JSON string's text from its bytes between the quotes."""
    if b"\\" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    try:
        value = json.loads(b'"' + raw + b'"')
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SnapshotFormatError(
            f"heap snapshot string {raw[:40]!r} is not a valid JSON string: the file is corrupt"
        ) from None
    if not isinstance(value, str):  # pragma: no cover - json.loads of a quoted text is a str
        raise SnapshotFormatError("heap snapshot string is not a string: the file is corrupt")
    return value


class StringRun:
    """Complete strings from one chunk: ``data[starts[i]:ends[i]]`` is string ``i``, escaped.

    ``gap`` is what the file has between the previous run and this one (a comma and
    white space, as V8 wrote them), so that a writer can give the bytes back as they were.
    """

    __slots__ = ("data", "ends", "gap", "starts")

    def __init__(
        self, data: bytes, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], gap: bytes = b""
    ) -> None:
        self.data = data
        self.starts = starts
        self.ends = ends
        self.gap = gap

    def __len__(self) -> int:
        return int(self.starts.size)

    def get(self, i: int) -> str:
        return decode_string(self.data[int(self.starts[i]) : int(self.ends[i])])


class SnapshotVisitor(Protocol):
    """What the tokenizer hands out, in file order."""

    def header(self, snapshot: dict[str, Any]) -> None:
        """The ``snapshot`` member: ``meta``, ``node_count``, ``edge_count``..."""

    def wants_values(self, section: str) -> bool:
        """True to receive the numbers of ``section``; otherwise they are only counted."""

    def ints(self, section: str, values: IntArray) -> None:
        """The next numbers of an integer section (any count, not aligned to records).

        ``values`` is a view of a buffer the tokenizer reuses: copy what must outlive the call.
        """

    def count(self, section: str, n: int) -> None:
        """The next ``n`` numbers of a section the visitor did not want values of."""

    def strings(self, first_index: int, run: StringRun) -> None:
        """The next complete strings of ``strings``, the first being at ``first_index``."""

    def end_section(self, section: str) -> None:
        """A member ended."""


def parse_ints(data: bytes | memoryview, section: str = "nodes", out: IntArray | None = None) -> IntArray:
    """Every integer in ``data``, which holds whole numbers separated by commas or spaces.

    With ``out`` (room for ``len(data) // 2 + 1`` numbers) the result is a view of it.
    """
    if _c_parse is not None:
        if out is None or out.size < len(data) // 2 + 1:
            out = np.empty(len(data) // 2 + 1, dtype=np.int64)
        count = _c_parse(data, out)
        if count >= 0:
            return out[:count]
    else:
        # numpy's C text parser is ~9x faster than the vectorised digit arithmetic below;
        # it stops at anything unexpected, and the slow path then names the bad byte.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                text = (data if isinstance(data, bytes) else bytes(data)).lstrip(b", \t\r\n")
                fast: IntArray = np.fromstring(text, dtype=np.int64, sep=",")
            except (DeprecationWarning, ValueError):
                pass
            else:
                # A lone 0 may stand for blank input, and the parser clamps what overflows.
                if fast.size > 1 and int(fast.min()) >= 0 and int(fast.max()) < 10**18:
                    return fast
    return _parse_ints_exactly(data, section)


def _parse_ints_exactly(data: bytes | memoryview, section: str) -> IntArray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return np.empty(0, dtype=np.int64)
    classes = _NUM_CLASS[raw]
    if not classes.all():
        bad = int(np.flatnonzero(classes == 0)[0])
        char = chr(raw[bad])
        raise SnapshotFormatError(
            f"heap snapshot member {section!r} holds {char!r} where only integers may be: "
            "the file is not a V8 heap snapshot or is corrupt; take the snapshot again"
        )
    where = np.flatnonzero(classes == 1)
    if where.size == 0:
        return np.empty(0, dtype=np.int64)
    digits = raw[where].astype(np.int64) - ord("0")
    breaks = np.flatnonzero(np.diff(where) != 1) + 1
    starts = np.empty(breaks.size + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = breaks
    ends = np.empty_like(starts)
    ends[:-1] = breaks
    ends[-1] = where.size
    lengths = ends - starts
    if int(lengths.max()) > 18:
        raise SnapshotFormatError(
            f"heap snapshot member {section!r} holds an integer of more than 18 digits: "
            "the file is corrupt; take the snapshot again"
        )
    exponents = np.repeat(ends - 1, lengths) - np.arange(where.size, dtype=np.int64)
    values: IntArray = np.add.reduceat(digits * _POW10[exponents], starts)
    return values


def _count_ints(data: bytes | memoryview, section: str) -> int:
    """How many numbers ``data`` holds, without their values.

    Four vectorised passes (~2.5 GB/s) check that it holds only digits, commas and
    newlines and count the commas; anything else goes to the parser, which reads spaces
    and names a bad byte. An empty element (``1,,2``) counts as a number here; the
    section's count check (edges against the nodes' edge_count) then refuses the file.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return 0
    commas = int(np.count_nonzero(raw == _COMMA))
    below_digits = int(np.count_nonzero(raw < _ZERO))
    if int(raw.max()) > _NINE or below_digits != commas + int(np.count_nonzero(raw == _NEWLINE)):
        return int(parse_ints(data, section).size)
    # Separators before the first number and after the last one separate nothing.
    head, tail = 0, raw.size
    while head < tail and raw[head] < _ZERO:
        head += 1
    while tail > head and raw[tail - 1] < _ZERO:
        tail -= 1
    if head == tail:
        return 0
    return commas - int(np.count_nonzero(raw[:head] == _COMMA) + np.count_nonzero(raw[tail:] == _COMMA)) + 1


def _unescaped_quotes(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
    """Positions of ``"`` not escaped by an odd run of backslashes."""
    quotes = np.flatnonzero(raw == ord('"'))
    suspect = quotes[(quotes > 0) & (raw[np.maximum(quotes - 1, 0)] == ord("\\"))]
    if suspect.size == 0:
        return quotes
    # Only quotes right after a backslash need their backslash run counted.
    run = np.zeros(suspect.size, dtype=np.int64)
    active = np.ones(suspect.size, dtype=bool)
    step = 1
    while active.any():
        at = suspect - step
        active &= at >= 0
        active[active] = raw[at[active]] == ord("\\")
        run += active
        step += 1
    escaped = suspect[run % 2 == 1]
    kept: npt.NDArray[np.intp] = np.setdiff1d(quotes, escaped, assume_unique=True)
    return kept


class SnapshotTokenizer:
    """Feeds a :class:`SnapshotVisitor` from bytes of a heap snapshot split anywhere."""

    def __init__(self, visitor: SnapshotVisitor) -> None:
        self._visitor = visitor
        # The numbers of one slice are parsed into this, and handed out as a view of it.
        self._scratch = np.empty(_SLICE // 2 + 32, dtype=np.int64)
        self._pending = b""
        self._state = "start"
        self._section = ""
        self._string_index = 0
        self._string_gap = b""
        self._depth = 0
        self._seen: list[str] = []
        self.bytes_fed = 0

    @property
    def sections(self) -> list[str]:
        """The members read so far, in order."""
        return list(self._seen)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        if not chunk:
            return
        self.bytes_fed += len(chunk)
        data = bytes(chunk)
        pos = 0
        if self._pending and self._state == "ints":
            # Finish the number cut by the previous chunk without copying this chunk.
            while pos < len(data) and 48 <= data[pos] <= 57:
                pos += 1
            if pos == len(data):
                self._pending += data
                return
            self._emit_ints(memoryview(self._pending + data[:pos]))
        elif self._pending:
            data = self._pending + data
        self._pending = b""
        end = len(data)
        while pos < end:
            step = getattr(self, f"_in_{self._state}")
            new_pos = step(data, pos)
            if new_pos is None:
                self._pending = data[pos:]
                if len(self._pending) > _MAX_SMALL_VALUE:
                    raise SnapshotFormatError(
                        f"heap snapshot member {self._section or 'header'!r} is not valid JSON "
                        "within 64 MiB: the file is not a V8 heap snapshot"
                    )
                return
            pos = new_pos

    def finish(self) -> None:
        """Raise :class:`SnapshotFormatError` unless the whole object was read."""
        if self._state != "done":
            where = f"inside {self._section!r}" if self._section else "before any member"
            if self._state == "start":
                raise SnapshotFormatError("the heap snapshot is empty: no bytes were read")
            raise SnapshotFormatError(
                f"the heap snapshot ends early ({self.bytes_fed} bytes, {where}): "
                "the file is truncated; take or copy the snapshot again"
            )

    # Each state takes the data and a position and returns the next position, or None
    # when it needs more bytes (the tail from the position is then carried over).

    def _in_start(self, data: bytes, pos: int) -> int | None:
        pos = _skip_ws(data, pos)
        if pos == len(data):
            return pos
        if data[pos] != ord("{"):
            raise SnapshotFormatError(
                "the file is not a V8 heap snapshot: it does not start with a JSON object "
                "('{'); give a .heapsnapshot file (gzip is detected by itself)"
            )
        self._state = "key"
        return pos + 1

    def _in_key(self, data: bytes, pos: int) -> int | None:
        pos = _skip_ws(data, pos)
        if pos == len(data):
            return pos
        char = data[pos]
        if char == ord(","):
            return pos + 1
        if char == ord("}"):
            self._state = "done"
            self._section = ""
            return pos + 1
        if char != ord('"'):
            raise self._syntax(data, pos, "a member name")
        close = data.find(b'"', pos + 1)
        colon = data.find(b":", close + 1) if close >= 0 else -1
        if colon < 0:
            return None
        value = _skip_ws(data, colon + 1)
        if value == len(data):
            return None
        key = data[pos + 1 : close].decode("ascii", "replace")
        self._section = key
        self._seen.append(key)
        if key in INT_SECTIONS or key in _NESTED_SECTIONS or key == "strings":
            if data[value] != ord("["):
                raise self._syntax(data, value, f"an array for {key!r}")
            self._depth = 1
            self._state = "ints" if key in INT_SECTIONS else "nested" if key != "strings" else "strings"
            return value + 1
        self._state = "value"
        return value

    def _in_value(self, data: bytes, pos: int) -> int | None:
        text = data[pos:].decode("utf-8", "replace")
        try:
            value, length = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError:
            return None
        if self._section == "snapshot":
            if not isinstance(value, dict):
                raise SnapshotFormatError(
                    "heap snapshot member 'snapshot' is not an object: the file is not a V8 heap snapshot"
                )
            self._visitor.header(value)
        self._visitor.end_section(self._section)
        self._state = "key"
        return pos + len(text[:length].encode("utf-8"))

    def _in_ints(self, data: bytes, pos: int) -> int | None:
        close = data.find(b"]", pos)
        if close < 0:
            cut = len(data)
            # The last number may continue in the next chunk: keep its digits back.
            while cut > pos and 48 <= data[cut - 1] <= 57:
                cut -= 1
            if cut == pos:
                return None
            self._emit_ints(memoryview(data)[pos:cut])
            return cut
        self._emit_ints(memoryview(data)[pos:close])
        self._visitor.end_section(self._section)
        self._state = "key"
        return close + 1

    def _emit_ints(self, view: memoryview) -> None:
        # Slicing at separators bounds the numbers parsed at once (and the numpy passes'
        # temporaries) whatever the chunk size fed.
        start = 0
        while len(view) - start > _SLICE:
            cut = start + _SLICE
            while cut < len(view) and 48 <= view[cut] <= 57:
                cut += 1
            self._emit_slice(view[start:cut])
            start = cut
        self._emit_slice(view[start:])

    def _emit_slice(self, view: memoryview) -> None:
        section = self._section
        if self._visitor.wants_values(section):
            values = parse_ints(view, section, self._scratch)
            if values.size:
                self._visitor.ints(section, values)
        else:
            n = _count_ints(view, section)
            if n:
                self._visitor.count(section, n)

    def _in_nested(self, data: bytes, pos: int) -> int | None:
        count = min(len(data) - pos, _WINDOW)  # the running depth takes 8 bytes per byte
        raw = np.frombuffer(data, dtype=np.uint8, offset=pos, count=count)
        step = (raw == ord("[")).astype(np.int64) - (raw == ord("]"))
        depth = self._depth + np.cumsum(step)
        closed = np.flatnonzero(depth == 0)
        if closed.size == 0:
            self._depth = int(depth[-1])
            return pos + count
        self._visitor.end_section(self._section)
        self._state = "key"
        return pos + int(closed[0]) + 1

    def _in_strings(self, data: bytes, pos: int) -> int | None:
        # A window at a time bounds the temporaries (quote positions, gaps); it grows only
        # while it holds no whole string.
        window = _WINDOW
        while True:
            raw = np.frombuffer(data, dtype=np.uint8, offset=pos, count=min(len(data) - pos, window))
            quotes = _unescaped_quotes(raw)
            brackets = np.flatnonzero(raw == ord("]"))
            # A bracket preceded by an even number of quotes is outside every string.
            outside = brackets[np.searchsorted(quotes, brackets) % 2 == 0]
            end = int(outside[0]) if outside.size else -1
            if end >= 0:
                quotes = quotes[quotes < end]
            complete = quotes.size - quotes.size % 2
            if end >= 0 or complete or pos + raw.size == len(data):
                break
            window *= 2
        stop = end if end >= 0 else int(quotes[complete]) if quotes.size > complete else raw.size
        self._check_between_strings(raw[:stop], quotes[:complete])
        gap_from = pos
        if complete:
            first, last = int(quotes[0]), int(quotes[complete - 1]) + 1
            starts = quotes[0:complete:2].astype(np.int64) + (1 - first)
            ends = quotes[1:complete:2].astype(np.int64) - first
            self._add_gap(data[pos : pos + first])
            run = StringRun(data[pos + first : pos + last], starts, ends, self._string_gap)
            self._string_gap = b""
            self._visitor.strings(self._string_index, run)
            self._string_index += len(run)
            gap_from = pos + last
        if end >= 0:
            self._string_gap = b""
            self._visitor.end_section("strings")
            self._state = "key"
            return pos + end + 1
        if stop < raw.size:
            # A string continues past what was read: carry it over from its opening quote.
            if stop == 0:
                return None
            self._add_gap(data[gap_from : pos + stop])
            return pos + stop
        self._add_gap(data[gap_from : pos + raw.size])
        return pos + raw.size

    def _add_gap(self, piece: bytes) -> None:
        """Keep what stands between two strings (checked: commas and white space) for the
        next run; an unusually long stretch is cut down to its comma."""
        if piece:
            self._string_gap += piece
            if len(self._string_gap) > 64:
                self._string_gap = b"," if b"," in self._string_gap else b""

    def _check_between_strings(self, raw: npt.NDArray[np.uint8], quotes: npt.NDArray[np.intp]) -> None:
        """Outside the strings there may only be commas and whitespace."""
        starts = np.concatenate(([0], quotes[1::2] + 1))
        ends = np.concatenate((quotes[0::2], [raw.size]))
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return
        offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        gaps = raw[np.arange(total) + offsets]
        if not bool(_STRING_GAP_CLASS[gaps].all()):
            raise SnapshotFormatError(
                "heap snapshot member 'strings' holds something other than strings: "
                "the file is corrupt; take the snapshot again"
            )

    def _in_done(self, data: bytes, pos: int) -> int | None:
        if data[pos:].strip(_WHITESPACE):
            raise SnapshotFormatError(
                "the heap snapshot has bytes after its closing '}': the file is corrupt "
                "or two snapshots were concatenated"
            )
        return len(data)

    def _syntax(self, data: bytes, pos: int, expected: str) -> SnapshotFormatError:
        got = data[pos : pos + 20].decode("ascii", "replace")
        return SnapshotFormatError(
            f"the heap snapshot is not valid: expected {expected} at byte "
            f"{self.bytes_fed - len(data) + pos}, found {got!r}; the file is not a V8 heap snapshot"
        )


def _skip_ws(data: bytes, pos: int) -> int:
    end = len(data)
    while pos < end and data[pos] in _WHITESPACE:
        pos += 1
    return pos
