"""Log files to columnar event batches: Common and Combined Log Format, JSON lines, NASA TSV.

A file is read in chunks of whole lines; each chunk becomes one :class:`EventBatch` of the
lines that parsed and a list of :class:`Rejection` (file, 1-based line, reason, detail) of
those that did not. A bad line never stops the good ones.

Speed is the point of the shape of this module (the target is 300,000 lines/s parsed *and*
stored, on a slow core: about 3 us a line). Nothing here runs Python code per field of a
line when it can be helped: a chunk is split in one call (``str.split`` of the whole chunk
for TSV, one ``re.findall`` over the chunk for the access logs), columns are sliced out of
that, and timestamps, numbers and checks run as NumPy operations on whole columns. The lines
a vectorised check refuses go through a careful per-line parser, which is the reference:
it decides whether the line is good and, if not, says why. The fast path only ever takes a
line the careful path would take, with the same values (a property test holds them equal).

Choices, per field:

* ``client_id`` is the host (or IP) of the log line.
* ``route`` is the URL path *without* the query string: the query carries ids and tokens
  of unbounded variety (and sometimes personal data) that would make every request its own
  route. An empty path is no route (None).
* ``method`` from the request line, upper-cased. A request line that is not
  ``METHOD target [protocol]`` (a TLS handshake sent to a plain-HTTP port, a scanner's
  junk) still is a request of that client, often the abusive kind: the event is kept with
  no method and no route.
* ``response_time_ms`` is None (NaN in the batch): access logs do not record it.
* ``bytes``: CLF's ``-`` is unknown (-1 in the batch, None in an Event).
* Event ids are ``L<hash of the file's first 4 KiB>:<line number>``. The identity of a file
  is its content, not its path: the same file imported twice, from another path, or
  gzipped, stores its lines once; a log rotated under the same name does not collide with
  the old one (which a path-based id would silently drop as "duplicates"). A file still
  shorter than 4 KiB that grows gets a new identity.

Lines: blank lines are skipped (counted, not rejected); a last line without a newline is
parsed like any other, and if it does not parse its rejection says it may be truncated; a
line that is not UTF-8 is rejected; a ``.gz`` file (recognised by its magic bytes) is read
through gzip, and ``\\r\\n`` line ends are accepted.
"""

from __future__ import annotations

import gc
import gzip
import re
import zlib
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Final, Literal, get_args

import numpy as np
import numpy.typing as npt
import orjson

from openclaw.errors import EventRejected, IngestError
from openclaw.telemetry.events import (
    MAX_METHOD_LENGTH,
    MAX_ROUTE_LENGTH,
    MAX_TS_US,
    MIN_TS_US,
    UNKNOWN_BYTES,
    Event,
    EventBatch,
    ObjArray,
    Rejection,
    RejectReason,
    event_id_prefix,
    object_array,
    validate_event,
)

Format = Literal["clf", "combined", "jsonl", "nasa-tsv"]
FORMATS: Final[tuple[Format, ...]] = get_args(Format)

#: Bytes parsed per chunk (about 3,400 NASA lines): the per-line lists of a chunk then stay
#: in the CPU's caches. Measured on the NASA TSV: 1.1 million lines/s at 64-512 KiB, 0.5-0.7
#: million at 2-8 MiB. Inserts join chunks into larger batches (telemetry.ingest).
CHUNK_BYTES: Final = 256 << 10
#: How much of the start of a file names it (see the module docstring).
IDENTITY_BYTES: Final = 4096
MAX_BYTES_VALUE: Final = 2**62
#: Longest digit string the fast path converts: int64 holds 18 digits safely.
_MAX_DIGITS: Final = 18
_GZIP_MAGIC: Final = b"\x1f\x8b"
_US: Final = 1_000_000

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one chunk of a file gave."""

    batch: EventBatch
    rejections: tuple[Rejection, ...]
    #: Lines of the file in this chunk: events, rejections, blank lines and the header.
    lines: int
    blank: int
    #: Bytes of the file read so far (of the compressed file for ``.gz``), for progress.
    position: int


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings the parsers need (``Settings.max_client_id_length``)."""

    max_client_id_length: int = 256


# -- small helpers -----------------------------------------------------------------------------


@contextmanager
def _collector_paused() -> Iterator[None]:
    """``re.findall`` makes a tuple per line, alive until the chunk's batch is built, so
    CPython's young collections walk them again and again: 8% of the CLF parse, measured
    (nothing for the TSV's one flat split). They hold no cycles; nothing is lost."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _reject(exc_reason: str) -> RejectReason:
    # EventRejected carries a plain str; every code raised in this module is a RejectReason.
    return exc_reason  # type: ignore[return-value]


def _snippet(line: str) -> str:
    return repr(line[:80] + ("..." if len(line) > 80 else ""))


def _ints(
    values: list[str], *, max_digits: int = _MAX_DIGITS, fixed: bool = True
) -> tuple[I64, Mask | None]:
    """Strings of ASCII digits to int64; the mask of good ones, None when all are.

    ``int()`` alone would accept ``" 12"``, ``"1_000"``, ``"+5"`` and Arabic-Indic digits,
    which the careful path refuses; the checks keep the two paths equal.
    """
    n = len(values)
    if fixed and (same_width := _fixed_width_ints(values, max_digits=max_digits)) is not None:
        return same_width, None
    joined = "".join(values)
    if (
        joined.isascii()
        and joined.isdigit()
        and "" not in values
        and max(map(len, values), default=0) <= max_digits
    ):
        return np.fromiter(map(int, values), np.int64, n), None
    ok = [v.isascii() and v.isdigit() and len(v) <= max_digits for v in values]
    out = np.fromiter(
        (int(v) if good else 0 for v, good in zip(values, ok, strict=True)), np.int64, n
    )
    return out, np.array(ok, dtype=np.bool_)


def _fixed_width_ints(values: list[str], *, max_digits: int) -> I64 | None:
    """The common case of :func:`_ints` without a Python call per value: every value the
    same number of ASCII digits (statuses; epoch seconds) is a few NumPy operations on the
    values joined by tabs. None when they are not all alike."""
    m = len(values)
    width = len(values[0]) if m else 0
    if not 0 < width <= max_digits:
        return None
    joined = "\t".join(values)
    # Values of equal width put the m - 1 tabs exactly at every (width + 1)-th place.
    if len(joined) != (width + 1) * m - 1 or not joined.isascii():
        return None
    if joined.count("\t") != m - 1:
        return None
    grid = np.frombuffer((joined + "\t").encode("ascii"), np.uint8).reshape(m, width + 1)
    if not (grid[:, width] == ord("\t")).all():
        return None
    digits = grid[:, :width]
    if not ((digits >= ord("0")) & (digits <= ord("9"))).all():
        return None
    out = np.zeros(m, dtype=np.int64)
    for k in range(width):
        out = out * 10 + (digits[:, k] - ord("0"))
    return out


def _digits(value: str, *, max_digits: int = _MAX_DIGITS) -> int | None:
    if value.isascii() and value.isdigit() and len(value) <= max_digits:
        return int(value)
    return None


# -- timestamps --------------------------------------------------------------------------------

MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER: Final = {name: i + 1 for i, name in enumerate(MONTHS)}
_MONTH_KEYS: Final = np.array(
    sorted((ord(m[0]) << 16) | (ord(m[1]) << 8) | ord(m[2]) for m in MONTHS), dtype=np.int64
)
_MONTH_OF_KEY: Final = np.array(
    [
        _MONTH_NUMBER[chr(k >> 16) + chr((k >> 8) & 0xFF) + chr(k & 0xFF)]
        for k in _MONTH_KEYS.tolist()
    ],
    dtype=np.int64,
)
_DAYS_IN_MONTH: Final = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)
#: ``dd/Mon/yyyy:HH:MM:SS +hhmm``: where its digits are, and its fixed characters.
CLF_TIME_LENGTH: Final = 26
_DIGIT_AT: Final = np.array([0, 1, 7, 8, 9, 10, 12, 13, 15, 16, 18, 19, 22, 23, 24, 25])
_FIXED_AT: Final = (
    (2, ord("/")),
    (6, ord("/")),
    (11, ord(":")),
    (14, ord(":")),
    (17, ord(":")),
    (20, ord(" ")),
)
_CLF_TIME = re.compile(
    r"(\d\d)/([A-Za-z]{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", re.ASCII
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def clf_time_us(text: str) -> int:
    """``01/Aug/1995:00:00:01 -0400`` to epoch microseconds (UTC), or EventRejected.

    The reference the vectorised :func:`clf_times_us` is held to; it goes through
    ``datetime`` so the two share no arithmetic.
    """
    m = _CLF_TIME.fullmatch(text)
    month = _MONTH_NUMBER.get(m.group(2)) if m else None
    if m is None or month is None:
        raise EventRejected(
            "bad_timestamp", f"time {text[:40]!r} is not dd/Mon/yyyy:HH:MM:SS +hhmm"
        )
    day, year, hour, minute, second, zh, zm = (int(m.group(i)) for i in (1, 3, 4, 5, 6, 8, 9))
    try:
        offset = timedelta(hours=zh, minutes=zm) * (-1 if m.group(7) == "-" else 1)
        when = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError as exc:
        raise EventRejected("bad_timestamp", f"time {text!r}: {exc}") from None
    ts_us = (when - _EPOCH) // timedelta(microseconds=1)
    if not MIN_TS_US <= ts_us <= MAX_TS_US:
        raise EventRejected("bad_timestamp", "timestamp is outside 1990..2100")
    return ts_us


def _days_from_civil(year: I64, month: I64, day: I64) -> I64:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    result: I64 = era * 146097 + doe - 719468
    return result


def clf_times_us(values: list[str]) -> tuple[I64, Mask]:
    """Many CLF times at once: epoch microseconds and the mask of those that are valid (and
    within 1990..2100). Invalid ones are 0; :func:`clf_time_us` says what is wrong."""
    n = len(values)
    joined = "".join(values)
    if len(joined) != CLF_TIME_LENGTH * n:
        filler = "?" * CLF_TIME_LENGTH  # fails the checks below, keeps rows aligned
        joined = "".join(v if len(v) == CLF_TIME_LENGTH else filler for v in values)
    # "replace" turns each non-ASCII character into one "?": the rows stay aligned.
    raw = np.frombuffer(joined.encode("ascii", "replace"), np.uint8).reshape(n, CLF_TIME_LENGTH)
    ok: Mask = np.ones(n, dtype=np.bool_)
    digit_bytes = raw[:, _DIGIT_AT]
    ok &= ((digit_bytes >= ord("0")) & (digit_bytes <= ord("9"))).all(axis=1)
    for at, char in _FIXED_AT:
        ok &= raw[:, at] == char
    ok &= (raw[:, 21] == ord("+")) | (raw[:, 21] == ord("-"))
    d = digit_bytes.astype(np.int64) - ord("0")
    day = d[:, 0] * 10 + d[:, 1]
    year = d[:, 2] * 1000 + d[:, 3] * 100 + d[:, 4] * 10 + d[:, 5]
    hour = d[:, 6] * 10 + d[:, 7]
    minute = d[:, 8] * 10 + d[:, 9]
    second = d[:, 10] * 10 + d[:, 11]
    zone_h = d[:, 12] * 10 + d[:, 13]
    zone_m = d[:, 14] * 10 + d[:, 15]
    key = (raw[:, 3].astype(np.int64) << 16) | (raw[:, 4].astype(np.int64) << 8) | raw[:, 5]
    pos = np.minimum(np.searchsorted(_MONTH_KEYS, key), len(_MONTH_KEYS) - 1)
    ok &= _MONTH_KEYS[pos] == key
    month = np.where(ok, _MONTH_OF_KEY[pos], 1)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _DAYS_IN_MONTH[month] + (leap & (month == 2))
    ok &= (day >= 1) & (day <= month_days) & (year >= 1)
    ok &= (hour < 24) & (minute < 60) & (second < 60) & (zone_h < 24) & (zone_m < 60)
    sign = np.where(raw[:, 21] == ord("-"), -1, 1)
    seconds = (
        _days_from_civil(year, month, day) * 86400
        + hour * 3600
        + minute * 60
        + second
        - sign * (zone_h * 3600 + zone_m * 60)
    )
    ts_us: I64 = seconds * _US
    ok &= (ts_us >= MIN_TS_US) & (ts_us <= MAX_TS_US)
    ts_us[~ok] = 0
    return ts_us, ok


def epoch_seconds_us(text: str) -> int:
    """``807249601`` or ``807249601.25`` (epoch seconds, UTC) to microseconds, exactly."""
    whole, dot, frac = text.partition(".")
    seconds = _digits(whole, max_digits=12)
    if seconds is None or (dot and not (frac.isascii() and frac.isdigit() and len(frac) <= 6)):
        raise EventRejected("bad_timestamp", f"time {text[:40]!r} is not epoch seconds")
    ts_us = seconds * _US + (int(frac.ljust(6, "0")) if dot else 0)
    if not MIN_TS_US <= ts_us <= MAX_TS_US:
        raise EventRejected("bad_timestamp", "timestamp is outside 1990..2100")
    return ts_us


# -- fields shared by the access-log formats ------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)
#: Methods the fast paths pass through unchanged; anything else goes the careful way.
_FAST_METHOD = re.compile(r"[A-Z]{1,16}", re.ASCII)


def method_of(token: str) -> str | None:
    """A request method (upper-cased) if ``token`` is an HTTP token that fits, else None."""
    if 0 < len(token) <= MAX_METHOD_LENGTH and _TOKEN.fullmatch(token):
        return token.upper()
    return None


def route_of(target: str) -> str | None:
    """The path of a request target: the query string is dropped; empty is None."""
    path = target.partition("?")[0]
    if len(path) > MAX_ROUTE_LENGTH:
        raise EventRejected("too_long", f"route is longer than {MAX_ROUTE_LENGTH} characters")
    return path or None


def client_of(host: str, limits: Limits) -> str:
    if not host:
        raise EventRejected("missing_field", "host (the client id) is empty")
    if len(host) > limits.max_client_id_length:
        raise EventRejected(
            "too_long", f"host is longer than {limits.max_client_id_length} characters"
        )
    return host


def status_of(text: str) -> int:
    value = _digits(text, max_digits=6)
    if value is None:
        raise EventRejected("bad_line", f"status {text[:20]!r} is not a number")
    if not 100 <= value <= 599:
        raise EventRejected("out_of_range", f"status {value} is not within 100..599")
    return value


def bytes_of(text: str) -> int:
    """A byte count; ``-`` (CLF) and empty are unknown, -1."""
    if text in ("-", ""):
        return UNKNOWN_BYTES
    value = _digits(text, max_digits=30)
    if value is None:
        raise EventRejected("bad_line", f"bytes {text[:20]!r} is not a number or -")
    if value > MAX_BYTES_VALUE:
        raise EventRejected("out_of_range", f"bytes {value} is above 2**62")
    return value


#: One parsed line: (line, client_id, ts_us, status, route, method, bytes).
Row = tuple[int, str, int, int, str | None, str | None, int]


# -- columns of a chunk ---------------------------------------------------------------------


@dataclass(slots=True)
class _Columns:
    """The good rows of a chunk, before event ids are given."""

    line: I64
    client: ObjArray
    ts_us: I64
    status: I64
    route: ObjArray
    method: ObjArray
    size: I64

    @classmethod
    def of_rows(cls, rows: list[Row]) -> _Columns:
        n = len(rows)
        if not n:
            empty = np.empty(0, dtype=np.int64)
            none = np.empty(0, dtype=object)
            return cls(empty, none, empty, empty, none, none, empty)
        line, client, ts, status, route, method, size = zip(*rows, strict=True)
        return cls(
            np.array(line, dtype=np.int64),
            object_array(list(client)),
            np.array(ts, dtype=np.int64),
            np.array(status, dtype=np.int64),
            object_array(list(route)),
            object_array(list(method)),
            np.array(size, dtype=np.int64),
        )

    def take(self, index: npt.NDArray[np.intp]) -> _Columns:
        return _Columns(
            self.line[index],
            self.client[index],
            self.ts_us[index],
            self.status[index],
            self.route[index],
            self.method[index],
            self.size[index],
        )

    def extend(self, other: _Columns) -> _Columns:
        if not len(other.line):
            return self
        return _Columns(
            *(np.concatenate([getattr(self, f), getattr(other, f)]) for f in self.__slots__)
        )

    def batch(self, prefix: str) -> EventBatch:
        n = len(self.line)
        return EventBatch(
            event_id=object_array([f"{prefix}{i}" for i in self.line.tolist()]),
            client_id=self.client,
            ts_us=self.ts_us,
            status_code=self.status.astype(np.int16),
            response_time_ms=np.full(n, np.nan),
            route=self.route,
            method=self.method,
            bytes=self.size,
        )


@dataclass(slots=True)
class _Careful:
    """The careful per-line path, run on the lines the fast path refused."""

    source: str
    first_line: int
    #: Index (in the chunk) of a last line that had no newline: maybe truncated.
    unterminated: int | None
    #: Indexes of lines already rejected (not UTF-8): not blank, not parsed again.
    rejected: frozenset[int]
    rows: list[Row]
    rejections: list[Rejection]
    blank: int = 0

    def reject(self, index: int, reason: RejectReason, detail: str) -> None:
        if index == self.unterminated:
            detail += " (the last line has no newline: truncated?)"
        self.rejections.append(Rejection(self.source, self.first_line + index, reason, detail))

    def run(self, lines: list[str], indexes: list[int], parse: _LineParser) -> None:
        for i in indexes:
            if i in self.rejected:
                continue
            line = lines[i]
            if not line or line.isspace():
                self.blank += 1
                continue
            try:
                self.rows.append(parse(self.first_line + i, line))
            except EventRejected as exc:
                self.reject(i, _reject(exc.reason), exc.detail)


class _LineParser:
    """The careful parse of one line of a format: a Row, or EventRejected."""

    def __call__(self, line_no: int, line: str) -> Row:
        raise NotImplementedError


# -- Common and Combined Log Format ----------------------------------------------------------

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_CLF_CAREFUL = re.compile(
    r"(\S+) (\S+) (\S+) \[([^\]]*)\] " + _QUOTED + r" (\S+) (\S+)(.*)", re.ASCII | re.DOTALL
)
_COMBINED_TAIL = re.compile(r' "(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*"(?: .*)?', re.DOTALL)
_CLF_TAIL = re.compile(r"(?: .*)?", re.DOTALL)


def _fast_access_pattern(*, combined: bool) -> re.Pattern[str]:
    """One alternative for the common line, a catch-all for the rest, so that ``findall``
    over a chunk gives exactly one tuple per line (the catch-all's group set means: go the
    careful way). Groups: host, time, method, path, status, bytes, catch-all."""
    quoted = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
    tail = f" {quoted} {quoted}" if combined else ""
    return re.compile(
        r"^(\S+) \S+ \S+ \[([^\]\n]*)\] "
        r'"([A-Z]{1,16}) ([^ ?"\\\n]*)(?:\?[^ "\\\n]*)?(?: HTTP/[0-9.]{1,5})?" '
        r"(\d{3}) (\d{1,18}|-)" + tail + r"(?: [^\n]*)?$"
        r"|^([^\n]*)$",
        re.ASCII | re.MULTILINE,
    )


class _AccessLine(_LineParser):
    def __init__(self, *, combined: bool, limits: Limits) -> None:
        self.combined = combined
        self.limits = limits
        self.name = "Combined Log Format" if combined else "Common Log Format"

    def __call__(self, line_no: int, line: str) -> Row:
        m = _CLF_CAREFUL.fullmatch(line)
        if m is None:
            raise EventRejected(
                "bad_line",
                f'not {self.name} (host ident user [time] "request" status bytes'
                + (' "referer" "user-agent"' if self.combined else "")
                + f"): {_snippet(line)}",
            )
        host, _ident, _user, when, request, status, size, tail = m.groups()
        tail_pattern = _COMBINED_TAIL if self.combined else _CLF_TAIL
        if not tail_pattern.fullmatch(tail):
            what = '"referer" "user-agent"' if self.combined else "end of line"
            raise EventRejected(
                "bad_line", f"expected {what} after the byte count: {_snippet(tail)}"
            )
        client = client_of(host, self.limits)
        ts_us = clf_time_us(when)
        code = status_of(status)
        nbytes = bytes_of(size)
        parts = request.split(" ")
        method = route = None
        if len(parts) in (2, 3):
            method = method_of(parts[0])
            if method is not None:
                route = route_of(parts[1])
        return (line_no, client, ts_us, code, route, method, nbytes)


def _parse_access(
    text: str, careful: _Careful, parse: _AccessLine, pattern: re.Pattern[str]
) -> _Columns:
    matches = pattern.findall(text)
    n = text.count("\n") + 1
    if len(matches) != n:  # cannot happen (one match per line); never trust it blindly
        careful.run(text.split("\n"), list(range(n)), parse)
        return _Columns.of_rows(careful.rows)
    host, when, method, path, status, size, _ = (list(c) for c in zip(*matches, strict=True))
    ok: Mask = np.ones(n, np.bool_)
    ts_us, ts_ok = clf_times_us(when)
    ok &= ts_ok
    codes, codes_ok = _ints(status)
    ok &= (codes >= 100) & (codes <= 599)
    if codes_ok is not None:
        ok &= codes_ok
    nbytes, bytes_ok = _byte_counts(size)
    ok &= bytes_ok
    if (clients_ok := _valid_clients(host, parse.limits.max_client_id_length)) is not None:
        ok &= clients_ok
    routes, routes_ok = _routes(path)
    if routes_ok is not None:
        ok &= routes_ok
    columns = _Columns(
        np.arange(careful.first_line, careful.first_line + n, dtype=np.int64),
        object_array(host),
        ts_us,
        codes,
        object_array(routes),
        object_array(method),
        nbytes,
    )
    if ok.all():
        return columns
    good = np.flatnonzero(ok)
    careful.run(text.split("\n"), np.flatnonzero(~ok).tolist(), parse)
    return columns.take(good).extend(_Columns.of_rows(careful.rows))


# -- NASA TSV ----------------------------------------------------------------------------------

#: Header names of the columns used, with the aliases other TSV exports use.
_TSV_COLUMNS: Final = {
    "host": ("host", "client", "client_id", "ip"),
    "time": ("time", "timestamp", "epoch"),
    "method": ("method",),
    "url": ("url", "path", "route"),
    "status": ("response", "status", "status_code"),
    "bytes": ("bytes", "size"),
}
_TSV_REQUIRED: Final = ("host", "time", "status")


@dataclass(frozen=True, slots=True)
class TsvLayout:
    """Where each used column is, from the header line; None for an absent optional one."""

    host: int
    time: int
    status: int
    method: int | None
    url: int | None
    bytes: int | None

    @property
    def needed(self) -> int:
        """Fields a line must have."""
        return 1 + max(
            i
            for i in (self.host, self.time, self.status, self.method, self.url, self.bytes)
            if i is not None
        )

    @classmethod
    def of_header(cls, header: str, source: str) -> TsvLayout:
        names = [name.strip().lower() for name in header.split("\t")]
        where: dict[str, int] = {}
        for column, aliases in _TSV_COLUMNS.items():
            for i, name in enumerate(names):
                if name in aliases:
                    where[column] = i
                    break
        missing = [c for c in _TSV_REQUIRED if c not in where]
        if missing:
            raise IngestError(
                f"{source}:1: not a nasa-tsv header (tab-separated column names with host, "
                f"time, response; missing {', '.join(missing)}): {_snippet(header)}"
            )
        return cls(
            host=where["host"],
            time=where["time"],
            status=where["status"],
            method=where.get("method"),
            url=where.get("url"),
            bytes=where.get("bytes"),
        )


class _TsvLine(_LineParser):
    def __init__(self, layout: TsvLayout, limits: Limits) -> None:
        self.layout = layout
        self.limits = limits

    def __call__(self, line_no: int, line: str) -> Row:
        fields = line.split("\t")
        lay = self.layout
        if len(fields) < lay.needed:
            raise EventRejected(
                "bad_line", f"{len(fields)} tab-separated fields, expected at least {lay.needed}"
            )
        client = client_of(fields[lay.host], self.limits)
        ts_us = epoch_seconds_us(fields[lay.time])
        code = status_of(fields[lay.status])
        method = route = None
        if lay.method is not None and fields[lay.method] not in ("", "-"):
            method = method_of(fields[lay.method])
        if lay.url is not None:
            route = route_of(fields[lay.url])
        nbytes = bytes_of(fields[lay.bytes]) if lay.bytes is not None else UNKNOWN_BYTES
        return (line_no, client, ts_us, code, route, method, nbytes)


def _line_shape(text: str) -> tuple[I64, I64, int]:
    """Tabs in each line of ``text``, the lines that have a ``?`` (a query string to drop),
    and the length of the longest line in bytes. Tab, newline and ``?`` are one byte in
    UTF-8 and never part of another character's bytes, so the encoded text tells the same
    as the text."""
    raw = np.frombuffer(text.encode(), np.uint8)
    ends = np.append(np.flatnonzero(raw == ord("\n")), len(raw))
    before = np.searchsorted(np.flatnonzero(raw == ord("\t")), ends)
    counts: I64 = np.diff(before, prepend=0)
    queries: I64 = np.unique(np.searchsorted(ends, np.flatnonzero(raw == ord("?"))))
    return counts, queries, int(np.diff(ends, prepend=-1).max()) - 1


def _valid_clients(host: list[str], limit: int, *, longest: int | None = None) -> Mask | None:
    """Hosts that are non-empty and short enough; None when all are. ``longest``: the
    longest line, when known (no field of a line is longer than the line)."""
    if "" not in host and (
        (longest is not None and longest <= limit) or max(map(len, host), default=0) <= limit
    ):
        return None
    return np.fromiter((0 < len(h) <= limit for h in host), np.bool_, len(host))


def _routes(
    paths: list[str], *, longest: int | None = None
) -> tuple[list[str | None], Mask | None]:
    """Paths as routes (empty: None) and the mask of those short enough; None when all are.
    ``longest`` as for :func:`_valid_clients`."""
    n = len(paths)
    ok = None
    short = longest is not None and longest <= MAX_ROUTE_LENGTH
    if not short and max(map(len, paths), default=0) > MAX_ROUTE_LENGTH:
        ok = np.fromiter((len(p) <= MAX_ROUTE_LENGTH for p in paths), np.bool_, n)
    routes: list[str | None] = [p or None for p in paths] if "" in paths else list(paths)
    return routes, ok


def _byte_counts(sizes: list[str]) -> tuple[I64, Mask]:
    """Byte counts, ``-`` or empty as unknown (-1), and the mask of valid ones."""
    n = len(sizes)
    unknown: Mask | None = None
    if "-" in sizes or "" in sizes:
        unknown = np.fromiter((s in ("-", "") for s in sizes), np.bool_, n)
        sizes = ["0" if s in ("-", "") else s for s in sizes]
    nbytes, ok = _ints(sizes, fixed=False)  # byte counts vary in width
    if unknown is not None:
        nbytes[unknown] = UNKNOWN_BYTES
    valid: Mask = nbytes <= MAX_BYTES_VALUE
    return nbytes, valid if ok is None else valid & ok


def _tsv_columns(
    flat: list[str],
    width: int,
    *,
    lines: I64,
    parse: _TsvLine,
    queries: list[int],
    longest: int,
) -> tuple[_Columns, Mask]:
    """The columns of lines that all have ``width`` fields, laid end to end in ``flat``:
    column k is every width-th field from k, no list per line, no zip."""
    lay = parse.layout
    m = len(lines)
    ok: Mask = np.ones(m, np.bool_)
    host = flat[lay.host :: width]
    limit = parse.limits.max_client_id_length
    if (clients_ok := _valid_clients(host, limit, longest=longest)) is not None:
        ok &= clients_ok
    # Whole seconds only here; a fraction goes the careful way.
    seconds, seconds_ok = _ints(flat[lay.time :: width], max_digits=12)
    ts_us = seconds * _US
    ok &= (ts_us >= MIN_TS_US) & (ts_us <= MAX_TS_US)
    if seconds_ok is not None:
        ok &= seconds_ok
    codes, codes_ok = _ints(flat[lay.status :: width], max_digits=6)
    ok &= (codes >= 100) & (codes <= 599)
    if codes_ok is not None:
        ok &= codes_ok
    nbytes = np.full(m, UNKNOWN_BYTES, np.int64)
    if lay.bytes is not None:
        nbytes, bytes_ok = _byte_counts(flat[lay.bytes :: width])
        ok &= bytes_ok
    methods: list[str | None] = [None] * m
    if lay.method is not None:
        methods = list(flat[lay.method :: width])
        odd = {v for v in set(methods) if not (v and _FAST_METHOD.fullmatch(v))}
        if odd:
            ok &= np.fromiter((v not in odd for v in methods), np.bool_, m)
    routes: list[str | None] = [None] * m
    if lay.url is not None:
        urls = flat[lay.url :: width]
        for j in queries:  # only the rows with a "?" somewhere, not every row
            urls[j] = urls[j].partition("?")[0]
        routes, routes_ok = _routes(urls, longest=longest)
        if routes_ok is not None:
            ok &= routes_ok
    columns = _Columns(
        lines, object_array(host), ts_us, codes, object_array(routes), object_array(methods), nbytes
    )
    return columns, ok


def _parse_tsv(text: str, careful: _Careful, parse: _TsvLine) -> _Columns:
    counts, query_lines, longest = _line_shape(text)
    n = len(counts)
    width = int(np.bincount(counts).argmax()) + 1  # fields of the most common line
    if width < parse.layout.needed:
        careful.run(text.split("\n"), list(range(n)), parse)
        return _Columns.of_rows(careful.rows)
    regular = counts == width - 1
    lines: list[str] | None = None
    if regular.all():
        index = np.arange(n)
        body = text
    else:
        lines = text.split("\n")
        index = np.flatnonzero(regular)
        body = "\n".join([lines[i] for i in index.tolist()])
    flat = body.replace("\n", "\t").split("\t")
    columns, ok = _tsv_columns(
        flat,
        width,
        lines=index.astype(np.int64) + careful.first_line,
        parse=parse,
        # rows (of the regular lines) with a "?"
        queries=np.flatnonzero(np.isin(index, query_lines)).tolist() if len(query_lines) else [],
        longest=longest,
    )
    refused = np.flatnonzero(~ok)
    if lines is None and not len(refused):
        return columns
    redo = sorted([*index[refused].tolist(), *np.flatnonzero(~regular).tolist()])
    careful.run(lines if lines is not None else text.split("\n"), redo, parse)
    return columns.take(np.flatnonzero(ok)).extend(_Columns.of_rows(careful.rows))


# -- JSON lines --------------------------------------------------------------------------------


def _parse_jsonl(
    text: str, careful: _Careful, prefix: str, limits: Limits
) -> tuple[EventBatch, int]:
    """Each line through ``validate_event``, exactly as HTTP ingest takes an event
    (``response_time_ms`` required); an event without an id gets the line's derived id."""
    events: list[Event] = []
    blank = 0
    for i, line in enumerate(text.split("\n")):
        if i in careful.rejected:
            continue
        if not line or line.isspace():
            blank += 1
            continue
        line_no = careful.first_line + i
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            careful.reject(i, "bad_json", f"not JSON: {exc}")
            continue
        try:
            events.append(
                validate_event(
                    record,
                    max_client_id_length=limits.max_client_id_length,
                    default_event_id=f"{prefix}{line_no}",
                )
            )
        except EventRejected as exc:
            careful.reject(i, _reject(exc.reason), exc.detail)
    return EventBatch.from_events(events), blank


# -- files -------------------------------------------------------------------------------------


def _decode(data: bytes) -> tuple[str, dict[int, str]]:
    """The chunk as text; a line that is not UTF-8 becomes empty and is listed with why."""
    try:
        return data.decode(), {}
    except UnicodeDecodeError:
        pass
    lines: list[str] = []
    bad: dict[int, str] = {}
    for i, raw in enumerate(data.split(b"\n")):
        try:
            lines.append(raw.decode())
        except UnicodeDecodeError as exc:
            lines.append("")
            bad[i] = f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
    return "\n".join(lines), bad


class ChunkParser:
    """Parses the chunks of one file, in order (the careful path needs line numbers)."""

    def __init__(self, fmt: Format, *, source: str, prefix: str, limits: Limits) -> None:
        if fmt not in FORMATS:
            raise IngestError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.source = source
        self.prefix = prefix
        self.limits = limits
        self.layout: TsvLayout | None = None
        self.next_line = 1
        self._access: _AccessLine | None = None
        self._pattern: re.Pattern[str] | None = None
        if fmt in ("clf", "combined"):
            self._access = _AccessLine(combined=fmt == "combined", limits=limits)
            self._pattern = _fast_access_pattern(combined=fmt == "combined")

    def parse_line(self, line: str, line_no: int) -> Row:
        """The careful path on one line (no newline): its row, or EventRejected.

        The reference the chunk parser is held to: on every line it takes, it gives the
        same row. For clf, combined and nasa-tsv (after the header); jsonl has no fast path.
        """
        if self._access is not None:
            return self._access(line_no, line)
        if self.layout is not None:
            return _TsvLine(self.layout, self.limits)(line_no, line)
        raise IngestError(f"{self.fmt}: no line parser before the header (or for jsonl)")

    def parse(self, data: bytes, *, final: bool, position: int = 0) -> Chunk:
        """``data``: whole lines without the last newline (when ``final``, the last line
        may have had none: it is the end of the file)."""
        with _collector_paused():
            return self._parse(data, final=final, position=position)

    def _parse(self, data: bytes, *, final: bool, position: int) -> Chunk:
        first = self.next_line
        if b"\r" in data:
            # The chunk was cut just before a newline: its last \r is a CRLF's too.
            data = data.replace(b"\r\n", b"\n").removesuffix(b"\r")
        reason: RejectReason = "bad_json" if self.fmt == "jsonl" else "bad_line"
        text, undecodable = _decode(data)
        n = text.count("\n") + 1
        self.next_line += n
        header = 0
        if self.fmt == "nasa-tsv" and self.layout is None:
            line, _, text = text.partition("\n")
            if 0 in undecodable:
                raise IngestError(f"{self.source}:1: the header line is not UTF-8")
            self.layout = TsvLayout.of_header(line, self.source)
            undecodable = {i - 1: why for i, why in undecodable.items()}
            header, first = 1, first + 1
            if n == 1:
                return Chunk(EventBatch.empty(), (), 1, 0, position)
        careful = _Careful(
            self.source,
            first,
            unterminated=n - header - 1 if final else None,
            rejected=frozenset(undecodable),
            rows=[],
            rejections=[],
        )
        for i, why in undecodable.items():
            careful.reject(i, reason, why)
        if self.fmt == "jsonl":
            batch, blank = _parse_jsonl(text, careful, self.prefix, self.limits)
        else:
            if self.fmt == "nasa-tsv":
                assert self.layout is not None
                columns = _parse_tsv(text, careful, _TsvLine(self.layout, self.limits))
            else:
                assert self._access is not None
                assert self._pattern is not None
                columns = _parse_access(text, careful, self._access, self._pattern)
            batch, blank = columns.batch(self.prefix), careful.blank
        rejections = sorted(careful.rejections, key=lambda r: r.line)
        return Chunk(batch, tuple(rejections), n, blank, position)


def parse_bytes(
    data: bytes,
    fmt: Format,
    *,
    source: str = "<bytes>",
    limits: Limits | None = None,
    prefix: str | None = None,
) -> Chunk:
    """A whole file's content at once (tests, small inputs): one chunk."""
    parser = ChunkParser(
        fmt,
        source=source,
        prefix=prefix if prefix is not None else event_id_prefix(data[:IDENTITY_BYTES]),
        limits=limits or Limits(),
    )
    if not data:
        return Chunk(EventBatch.empty(), (), 0, 0, 0)
    terminated = data.endswith(b"\n")
    return parser.parse(data[:-1] if terminated else data, final=not terminated, position=len(data))


def _open(path: Path, source: str) -> tuple[IO[bytes], IO[bytes]]:
    """The raw file (for progress) and the stream to read (the same, or through gzip)."""
    try:
        raw: IO[bytes] = path.open("rb")
        magic = raw.read(2)
        raw.seek(0)
    except OSError as exc:
        raise IngestError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if magic == _GZIP_MAGIC:
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw, raw


def parse_file(
    path: str | Path,
    fmt: Format,
    *,
    limits: Limits | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Generator[Chunk, None, None]:
    """The chunks of a file, in order.

    Raises IngestError at once when the format is unknown or the file cannot be opened, and
    while iterating when a ``.gz`` turns out corrupt or cut short (after the chunks before
    the damage) or reading fails.
    """
    source = str(path)
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    raw, stream = _open(Path(path), source)
    return _chunks(
        raw,
        stream,
        fmt=fmt,
        source=source,
        limits=limits or Limits(),
        chunk_bytes=max(chunk_bytes, IDENTITY_BYTES),
    )


def _chunks(
    raw: IO[bytes],
    stream: IO[bytes],
    *,
    fmt: Format,
    source: str,
    limits: Limits,
    chunk_bytes: int,
) -> Generator[Chunk, None, None]:
    with raw, stream:
        try:
            block = stream.read(chunk_bytes)
            if not block:
                return
            parser = ChunkParser(
                fmt, source=source, prefix=event_id_prefix(block[:IDENTITY_BYTES]), limits=limits
            )
            pending = b""
            while block:
                pending += block
                cut = pending.rfind(b"\n")
                if cut >= 0:  # else one line longer than a chunk: read on
                    data, pending = pending[:cut], pending[cut + 1 :]
                    yield parser.parse(data, final=False, position=raw.tell())
                block = stream.read(chunk_bytes)
            if pending:  # the last line, without a newline
                yield parser.parse(pending, final=True, position=raw.tell())
        except (OSError, EOFError, zlib.error) as exc:
            raise IngestError(f"cannot read {source}: {exc}") from exc
