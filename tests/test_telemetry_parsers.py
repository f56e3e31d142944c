"""The log parsers: each format's fields, bad lines, chunking, and the fast path held to the
careful per-line one."""

from __future__ import annotations

import gzip
import inspect
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openclaw.errors import EventRejected, IngestError
from openclaw.telemetry.events import Event, EventBatch, event_id_prefix
from openclaw.telemetry.parsers import (
    FORMATS,
    IDENTITY_BYTES,
    MONTHS,
    Chunk,
    ChunkParser,
    Format,
    Limits,
    clf_time_us,
    clf_times_us,
    parse_bytes,
    parse_file,
)
from openclaw.testing.traces import TRACES

NASA_HEADER = "host\tlogname\ttime\tmethod\turl\tresponse\tbytes\treferer\tuseragent"
#: 1995-08-01T04:00:01Z, the first line of nasa_19950801.tsv (00:00:01 EDT).
FIRST_NASA_US = 807_249_601_000_000


def events_of(chunk: Chunk) -> list[Event]:
    return list(chunk.batch.events())


def by_line(chunk: Chunk, prefix: str = "p:") -> dict[int, Event]:
    """Events by the line their derived id names (events with ids of their own left out)."""
    return {
        int(e.event_id.removeprefix(prefix)): e
        for e in chunk.batch.events()
        if e.event_id.startswith(prefix)
    }


def parse(text: str | bytes, fmt: Format, **kwargs: object) -> Chunk:
    data = text.encode() if isinstance(text, str) else text
    return parse_bytes(data, fmt, source="t.log", prefix="p:", **kwargs)  # type: ignore[arg-type]


def reasons(chunk: Chunk) -> dict[int, str]:
    return {r.line: r.reason for r in chunk.rejections}


# -- timestamps ---------------------------------------------------------------------------------


def test_clf_time_with_a_zone_offset_is_utc_microseconds_exactly() -> None:
    assert clf_time_us("01/Aug/1995:00:00:01 -0400") == FIRST_NASA_US
    assert clf_time_us("01/Aug/1995:04:00:01 +0000") == FIRST_NASA_US
    assert clf_time_us("01/Aug/1995:09:30:01 +0530") == FIRST_NASA_US
    # across a day, a month and a leap day
    assert clf_time_us("29/Feb/2016:23:59:59 -0100") == 1_456_793_999_000_000  # 1 Mar UTC
    assert clf_time_us("01/Mar/2016:00:59:59 +0100") == 1_456_790_399_000_000  # 29 Feb UTC
    assert clf_time_us("01/Mar/2016:00:00:00 +0000") == 1_456_790_400_000_000


@pytest.mark.parametrize(
    "text",
    [
        "31/Apr/1995:00:00:01 -0400",  # no such day
        "29/Feb/1995:00:00:01 -0400",  # not a leap year
        "01/aug/1995:00:00:01 -0400",  # month names are English, capitalised, as Apache writes
        "01/Aug/1995:24:00:01 -0400",
        "01/Aug/1995:00:60:01 -0400",
        "01/Aug/1995:00:00:60 -0400",
        "01/Aug/1995:00:00:01 -2400",  # an offset of a day or more
        "01/Aug/1995:00:00:01 0400",
        "01/Aug/1995 00:00:01 -0400",
        "1/Aug/1995:00:00:01 -0400",
        "01/Aug/1895:00:00:01 -0400",  # outside 1990..2100
        "01/Aug/1995:00:00:0\u0661 -0400",  # an Arabic-Indic digit
        "",
    ],
)
def test_bad_clf_times_are_rejected_by_both_paths(text: str) -> None:
    with pytest.raises(EventRejected) as caught:
        clf_time_us(text)
    assert caught.value.reason == "bad_timestamp"
    _, ok = clf_times_us([text, "01/Aug/1995:00:00:01 -0400"])
    assert ok.tolist() == [False, True]


@settings(max_examples=300, deadline=None)
@given(
    when=st.datetimes(
        min_value=datetime(1989, 12, 30), max_value=datetime(2100, 1, 2), timezones=st.none()
    ),
    offset_min=st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
)
def test_vectorised_clf_times_equal_the_datetime_reference(when: datetime, offset_min: int) -> None:
    when = when.replace(microsecond=0)
    sign = "-" if offset_min < 0 else "+"
    zone = f"{sign}{abs(offset_min) // 60:02d}{abs(offset_min) % 60:02d}"
    text = f"{when.day:02d}/{MONTHS[when.month - 1]}/{when.year:04d}:{when:%H:%M:%S} {zone}"
    aware = when.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    expected = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    in_range = 631_152_000_000_000 <= expected <= 4_102_444_800_000_000
    values, ok = clf_times_us([text])
    assert bool(ok[0]) == in_range
    if in_range:
        assert clf_time_us(text) == expected == int(values[0])
    else:
        with pytest.raises(EventRejected):
            clf_time_us(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789/:+- JFMASONDaugepctovy\u0661", min_size=26, max_size=26))
def test_vectorised_clf_times_never_accept_what_the_reference_refuses(text: str) -> None:
    values, ok = clf_times_us([text])
    try:
        expected = clf_time_us(text)
    except EventRejected:
        assert not ok[0]
    else:
        assert ok[0]
        assert int(values[0]) == expected


# -- Common and Combined Log Format ---------------------------------------------------------


CLF = (
    '199.72.81.55 - - [01/Jul/1995:00:00:01 -0400] "GET /history/apollo/ HTTP/1.0" 200 6245\n'
    'unicomp6.unicomp.net - - [01/Jul/1995:00:00:06 -0400] "GET /shuttle/countdown/ HTTP/1.0"'
    " 200 3985\n"
    'burger.letters.com - - [01/Jul/1995:00:00:12 -0400] "GET /images/NASA-logo.gif?x=1&y=2'
    ' HTTP/1.0" 304 -\n'
)


def test_clf_fields() -> None:
    chunk = parse(CLF, "clf")
    assert chunk.rejections == ()
    assert chunk.lines == 3
    events = by_line(chunk)
    assert events[1] == Event(
        event_id="p:1",
        client_id="199.72.81.55",
        ts_us=804_571_201_000_000,
        status_code=200,
        response_time_ms=None,
        route="/history/apollo/",
        method="GET",
        bytes=6245,
    )
    # the query string is dropped from the route; "-" bytes are unknown
    assert events[3].route == "/images/NASA-logo.gif"
    assert events[3].bytes is None
    assert events[3].status_code == 304
    assert math.isnan(float(chunk.batch.response_time_ms[0]))


def test_clf_request_lines_that_are_not_method_target_keep_the_event_without_them() -> None:
    text = (
        'a - - [01/Jul/1995:00:00:01 -0400] "-" 408 -\n'
        'b - - [01/Jul/1995:00:00:01 -0400] "\\x16\\x03\\x01" 400 226\n'
        'c - - [01/Jul/1995:00:00:01 -0400] "get /lower/case?q=1 HTTP/1.1" 200 1\n'
        'd - - [01/Jul/1995:00:00:01 -0400] "GET /old-style" 200 1\n'
        'e - - [01/Jul/1995:00:00:01 -0400] "POST /with \\"quote\\" HTTP/1.1" 200 1\n'
        'f - - [01/Jul/1995:00:00:01 -0400] "GET / HTTP/1.1" 200 1 extra fields\n'
    )
    chunk = parse(text, "clf")
    assert chunk.rejections == ()
    got = {e.client_id: (e.method, e.route) for e in events_of(chunk)}
    assert got == {
        "a": (None, None),
        "b": (None, None),
        "c": ("GET", "/lower/case"),
        "d": ("GET", "/old-style"),
        "e": (None, None),  # four words: not METHOD target protocol
        "f": ("GET", "/"),
    }


def test_combined_needs_referer_and_user_agent_and_takes_escaped_quotes() -> None:
    good = (
        '1.2.3.4 - frank [17/May/2015:10:05:03 +0000] "GET /a.png HTTP/1.1" 200 203023 '
        '"http://x/" "Mozilla/5.0 \\"quoted\\" (X11)"\n'
    )
    truncated = '1.2.3.4 - - [17/May/2015:10:05:43 +0000] "GET /b HTTP/1.1" 200 1 "-" "Mozil\n'
    chunk = parse(good + truncated + good, "combined")
    assert sorted(by_line(chunk)) == [1, 3]
    assert by_line(chunk)[1].ts_us == 1_431_857_103_000_000
    (rejection,) = chunk.rejections
    assert (rejection.source, rejection.line, rejection.reason) == ("t.log", 2, "bad_line")
    assert "referer" in rejection.detail
    # as CLF the same lines are all fine: the fields after the byte count are not CLF's
    assert len(parse(good + truncated + good, "clf").batch) == 3


def test_bad_access_log_lines_give_their_reason_and_never_stop_the_good_ones() -> None:
    good = '10.0.0.1 - - [01/Aug/1995:00:00:01 -0400] "GET /x HTTP/1.0" 200 10'
    lines = [
        good,
        "this is not a log line",
        good.replace("01/Aug", "41/Aug"),
        good.replace(" 200 ", " 999 "),
        good.replace(" 200 ", " 2x0 "),
        good.replace(" 10", " 99999999999999999999"),
        good.replace(" 10", " ten"),
        good.replace("10.0.0.1", "h" * 300),
        good.replace("/x", "/" + "r" * 3000),
        "",
        "   ",
        good,
    ]
    chunk = parse("\n".join(lines) + "\n", "clf")
    assert sorted(by_line(chunk)) == [1, 12]
    assert reasons(chunk) == {
        2: "bad_line",
        3: "bad_timestamp",
        4: "out_of_range",
        5: "bad_line",
        6: "out_of_range",
        7: "bad_line",
        8: "too_long",
        9: "too_long",
    }
    assert chunk.blank == 2
    assert chunk.lines == 12
    assert all(str(r).startswith(f"t.log:{r.line}: {r.reason}: ") for r in chunk.rejections)


def test_a_longer_client_id_limit_comes_from_the_limits() -> None:
    line = '{host} - - [01/Aug/1995:00:00:01 -0400] "GET /x HTTP/1.0" 200 10\n'
    text = line.format(host="h" * 300)
    assert reasons(parse(text, "clf")) == {1: "too_long"}
    assert len(parse(text, "clf", limits=Limits(max_client_id_length=300)).batch) == 1


# -- lines: blank, truncated, not UTF-8, CRLF -------------------------------------------------


def test_non_utf8_lines_are_rejected_with_their_line_and_the_rest_kept() -> None:
    good = b'10.0.0.1 - - [01/Aug/1995:00:00:01 -0400] "GET /x HTTP/1.0" 200 10'
    data = b"\n".join([good, good.replace(b"/x", b"/\xff\xfe"), good, b"\xc3(", good]) + b"\n"
    chunk = parse(data, "clf")
    assert sorted(by_line(chunk)) == [1, 3, 5]
    assert reasons(chunk) == {2: "bad_line", 4: "bad_line"}
    assert "not UTF-8: byte 0xff at column 49" in chunk.rejections[0].detail
    assert chunk.blank == 0


def test_a_truncated_last_line_is_rejected_and_says_so() -> None:
    good = '10.0.0.1 - - [01/Aug/1995:00:00:01 -0400] "GET /x HTTP/1.0" 200 10\n'
    chunk = parse(good + good[:30], "clf")
    assert sorted(by_line(chunk)) == [1]
    (rejection,) = chunk.rejections
    assert rejection.line == 2
    assert "truncated?" in rejection.detail
    # a complete last line without its newline is simply the last line
    assert len(parse(good + good.rstrip("\n"), "clf").batch) == 2


def test_crlf_line_ends_are_accepted() -> None:
    text = CLF.replace("\n", "\r\n")
    assert events_of(parse(text, "clf")) == events_of(parse(CLF, "clf"))
    tsv = f"{NASA_HEADER}\r\nh\t-\t807249601\tGET\t/\t200\t5\r\n"
    assert len(parse(tsv, "nasa-tsv").batch) == 1


# -- NASA TSV -----------------------------------------------------------------------------------


def test_nasa_tsv_fields_and_header() -> None:
    text = (
        f"{NASA_HEADER}\n"
        "in24.inetnebr.com\t-\t807249601\tGET\t/shuttle/missions/sts-68/news/sts-68-mcc-05.txt"
        "\t200\t1839\t\t\n"
        "uplherc.upl.com\t-\t807249607.25\tHEAD\t/cgi-bin/imagemap/countdown?99,176\t304\t0\t\t\n"
    )
    chunk = parse(text, "nasa-tsv")
    assert chunk.rejections == ()
    assert chunk.lines == 3  # the header counts as a line of the file
    events = by_line(chunk)
    assert sorted(events) == [2, 3]  # file line numbers, the header being line 1
    assert events[2] == Event(
        event_id="p:2",
        client_id="in24.inetnebr.com",
        ts_us=FIRST_NASA_US,
        status_code=200,
        route="/shuttle/missions/sts-68/news/sts-68-mcc-05.txt",
        method="GET",
        bytes=1839,
    )
    assert events[3].ts_us == 807_249_607_250_000  # fractional seconds, exactly
    assert events[3].route == "/cgi-bin/imagemap/countdown"
    assert events[3].method == "HEAD"


def test_nasa_tsv_bad_lines() -> None:
    good = "h\t-\t807249601\tGET\t/x\t200\t5\t\t"
    lines = [
        NASA_HEADER,
        good,
        "h\t-\t807249601",  # too few fields
        good.replace("807249601", "soon"),
        good.replace("807249601", "807249601000"),  # milliseconds: outside 1990..2100
        good.replace("\t200\t", "\t99\t"),
        good.replace("\t5\t", "\t-\t"),  # unknown bytes is fine
        "h\t-\t807249601\tGET\t/x\t200\t5",  # fewer (but enough) fields than most lines
        good.replace("\tGET\t", "\tget\t"),  # the careful path upper-cases it
        "\t-\t807249601\tGET\t/x\t200\t5\t\t",  # no host
        good,
    ]
    chunk = parse("\n".join(lines), "nasa-tsv")
    assert sorted(by_line(chunk)) == [2, 7, 8, 9, 11]
    assert reasons(chunk) == {
        3: "bad_line",
        4: "bad_timestamp",
        5: "bad_timestamp",
        6: "out_of_range",
        10: "missing_field",
    }
    assert by_line(chunk)[7].bytes is None
    assert by_line(chunk)[9].method == "GET"


def test_a_file_without_a_nasa_tsv_header_is_an_ingest_error_naming_it() -> None:
    with pytest.raises(IngestError, match=r"t\.log:1: not a nasa-tsv header"):
        parse("h\t-\t807249601\tGET\t/x\t200\t5\n", "nasa-tsv")


def test_tsv_header_aliases() -> None:
    chunk = parse("ip\tstatus\tepoch\n10.0.0.1\t503\t807249601\n", "nasa-tsv")
    (event,) = events_of(chunk)
    assert (event.client_id, event.status_code, event.ts_us) == ("10.0.0.1", 503, FIRST_NASA_US)
    assert (event.method, event.route, event.bytes) == (None, None, None)


# -- JSON lines ---------------------------------------------------------------------------------


def test_jsonl_validates_like_http_ingest() -> None:
    lines = [
        {"client_id": "a", "timestamp": 807249601, "status_code": 200, "response_time_ms": 12.5},
        {
            "client_id": "b",
            "timestamp": "1995-08-01T00:00:01-04:00",
            "status_code": 404,
            "response_time_ms": 1,
            "event_id": "mine",
            "method": "get",
            "route": "/r",
            "bytes": 7,
        },
        {"client_id": "c", "timestamp": 807249601, "status_code": 200},  # no response time
        {
            "client_id": "d",
            "timestamp": 807249601,
            "status_code": 200,
            "response_time_ms": 1,
            "colour": "red",
        },
        {
            "client_id": "e",
            "timestamp": "1995-08-01T00:00:01",
            "status_code": 200,
            "response_time_ms": 1,
        },
        ["not", "an", "object"],
    ]
    text = "\n".join(orjson.dumps(x).decode() for x in lines) + '\n{"client_id": "f", "tim\n\n'
    chunk = parse(text, "jsonl")
    events = by_line(chunk)
    assert sorted(events) == [1]  # line 2 has an id of its own
    assert events[1].response_time_ms == 12.5
    (own,) = [e for e in events_of(chunk) if e.event_id == "mine"]
    assert own == Event("mine", "b", FIRST_NASA_US, 404, 1.0, "/r", "GET", 7)
    assert reasons(chunk) == {
        3: "missing_field",
        4: "unknown_field",
        5: "bad_timestamp",
        6: "bad_json",
        7: "bad_json",
    }
    assert chunk.blank == 1


def test_jsonl_roundtrip() -> None:
    events = [
        Event(
            f"id-{i}",
            f"client-{i % 7}",
            FIRST_NASA_US + i * 1_234_567,
            200 + i % 300,
            response_time_ms=i * 0.25,
            route=f"/r/{i}" if i % 3 else None,
            method="POST" if i % 2 else None,
            bytes=i * 10 if i % 5 else None,
        )
        for i in range(200)
    ]
    lines = []
    for i, e in enumerate(events):
        record = {
            "event_id": e.event_id,
            "client_id": e.client_id,
            # both forms a timestamp may take, exact to the microsecond
            "timestamp": e.ts_us / 1e6
            if i % 2
            else datetime.fromtimestamp(e.ts_us / 1e6, UTC).isoformat(),
            "status_code": e.status_code,
            "response_time_ms": e.response_time_ms,
            "route": e.route,
            "method": e.method,
            "bytes": e.bytes,
        }
        lines.append(orjson.dumps(record))
    chunk = parse(b"\n".join(lines), "jsonl")
    assert chunk.rejections == ()
    assert sorted(events_of(chunk), key=lambda e: e.event_id) == sorted(
        events, key=lambda e: e.event_id
    )


# -- files: chunks, ids, gzip -----------------------------------------------------------------


def _messy_clf(lines: int) -> bytes:
    out = []
    for i in range(lines):
        line = (
            f"host{i % 97}.example - - [01/Aug/1995:{i // 3600 % 24:02d}:{i // 60 % 60:02d}:"
            f'{i % 60:02d} -0400] "GET /page/{i}?q={i} HTTP/1.0" 200 {i}'
        ).encode()
        if i % 101 == 7:
            line = line.replace(b"GET", b"G\xffT")
        elif i % 103 == 5:
            line = b""
        elif i % 107 == 3:
            line = line.replace(b"200", b"abc")
        out.append(line)
    return b"\n".join(out) + b"\n"


def test_chunk_boundaries_change_nothing(tmp_path: Path) -> None:
    data = _messy_clf(5000)
    path = tmp_path / "access.log"
    path.write_bytes(data)
    whole = parse_bytes(data, "clf", source=str(path))
    chunks = list(parse_file(path, "clf", chunk_bytes=IDENTITY_BYTES))
    assert len(chunks) > 50
    joined = EventBatch.concat([c.batch for c in chunks])
    assert list(joined.events()) == list(whole.batch.events())
    assert [r for c in chunks for r in c.rejections] == list(whole.rejections)
    assert sum(c.lines for c in chunks) == whole.lines == 5000
    assert sum(c.blank for c in chunks) == whole.blank > 0
    assert chunks[-1].position == len(data)
    assert [c.position for c in chunks] == sorted(c.position for c in chunks)
    # the line numbers are the file's
    lines = data.split(b"\n")
    for rejection in whole.rejections:
        bad = lines[rejection.line - 1]
        assert b"\xff" in bad or b"abc" in bad


def test_a_line_longer_than_a_chunk(tmp_path: Path) -> None:
    long_route = "/" + "a" * 2000
    text = f'h - - [01/Aug/1995:00:00:01 -0400] "GET {long_route} HTTP/1.0" 200 1\n' * 5
    path = tmp_path / "long.log"
    path.write_text(text)
    chunks = list(parse_file(path, "clf", chunk_bytes=IDENTITY_BYTES))
    assert sum(len(c.batch) for c in chunks) == 5
    assert {e.route for c in chunks for e in c.batch.events()} == {long_route}


def test_event_ids_name_the_content_not_the_path(tmp_path: Path) -> None:
    data = _messy_clf(300)
    a, b = tmp_path / "a.log", tmp_path / "b" / "a.log"
    b.parent.mkdir()
    a.write_bytes(data)
    b.write_bytes(data)
    gz = tmp_path / "a.log.gz"
    gz.write_bytes(gzip.compress(data))
    ids = [[e for c in parse_file(p, "clf") for e in c.batch.event_id.tolist()] for p in (a, b, gz)]
    assert ids[0] == ids[1] == ids[2]
    assert ids[0][0] == event_id_prefix(data[:IDENTITY_BYTES]) + "1"
    # a rotated log under the same name: other content, other ids
    a.write_bytes(data.replace(b"host", b"HOST"))
    rotated = [e for c in parse_file(a, "clf") for e in c.batch.event_id.tolist()]
    assert not set(rotated) & set(ids[0])


def test_gzip_gives_the_same_events_and_progress_in_compressed_bytes(tmp_path: Path) -> None:
    data = (TRACES / "nasa_19950701_head.tsv").read_bytes()
    gz = tmp_path / "head.tsv.gz"
    gz.write_bytes(gzip.compress(data))
    plain = list(parse_file(TRACES / "nasa_19950701_head.tsv", "nasa-tsv"))
    packed = list(parse_file(gz, "nasa-tsv"))
    assert list(EventBatch.concat([c.batch for c in packed]).events()) == list(
        EventBatch.concat([c.batch for c in plain]).events()
    )
    assert packed[-1].position == gz.stat().st_size


def test_a_cut_gzip_file_is_an_ingest_error_after_the_good_part(tmp_path: Path) -> None:
    data = gzip.compress((TRACES / "nasa_19950801.tsv").read_bytes())
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(data[: len(data) // 2])
    chunks = parse_file(cut, "nasa-tsv")
    got = 0
    error: IngestError | None = None
    try:
        for chunk in chunks:
            got += len(chunk.batch)
    except IngestError as exc:
        error = exc
    assert error is not None
    assert f"cannot read {cut}: " in str(error)
    assert got > 10_000  # the chunks before the damage came through
    assert inspect.getgeneratorstate(chunks) == "GEN_CLOSED"  # ... and its file is closed


def test_unreadable_sources_are_ingest_errors(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"nope\.log: No such file"):
        parse_file(tmp_path / "nope.log", "clf")
    with pytest.raises(IngestError, match="Is a directory"):
        parse_file(tmp_path, "clf")
    with pytest.raises(IngestError, match="unknown format 'w3c'"):
        parse_file(TRACES / "nasa_19950801.tsv", "w3c")  # type: ignore[arg-type]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    assert list(parse_file(path, "clf")) == []


@pytest.mark.parametrize(
    ("name", "fmt", "accepted"),
    [
        ("nasa_19950801.tsv", "nasa-tsv", 33_996),
        ("nasa_19950701_head.tsv", "nasa-tsv", 9_999),
        ("apache_combined_sample.log", "combined", 9_999),
        ("apache_combined_sample.log", "clf", 10_000),
    ],
)
def test_the_traces_parse(name: str, fmt: Format, accepted: int) -> None:
    chunks = list(parse_file(TRACES / name, fmt))
    batch = EventBatch.concat([c.batch for c in chunks])
    assert len(batch) == accepted
    assert len(set(batch.event_id.tolist())) == accepted
    assert batch.ts_us.min() >= 631_152_000_000_000
    assert set(batch.method.tolist()) <= {"GET", "HEAD", "POST", "OPTIONS"}
    assert all(r is None or (r.startswith("/") and "?" not in r) for r in batch.route.tolist())


# -- the fast path against the careful one ------------------------------------------------------


def mostly(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A field that is good nine times in ten: a line has seven fields, and a line with
    one bad field tells nothing about how the others are taken."""
    return st.integers(0, 9).flatmap(lambda k: bad if k == 0 else good)


_HOSTS = mostly(
    st.sampled_from(["10.0.0.1", "a.example", "x\u00e9y"]), st.sampled_from(["", "h" * 257])
)
_TIMES = mostly(
    st.datetimes(min_value=datetime(1989, 12, 1), max_value=datetime(2100, 2, 1)).map(
        lambda d: f"{d.day:02d}/{MONTHS[d.month - 1]}/{d.year}:{d:%H:%M:%S} -0400"
    ),
    st.sampled_from(["31/Feb/2000:00:00:00 +0000", "01/Aug/1995:00:00:01", "-", "x" * 26]),
)
_REQUESTS = mostly(
    st.sampled_from(["GET /a HTTP/1.0", "GET /a?b=c HTTP/1.1", "HEAD / HTTP/1.0", "GET /a"]),
    st.sampled_from(
        [
            "get /lower HTTP/1.0",
            "GET  HTTP/1.0",
            "GET ?q HTTP/1.0",
            "-",
            "",
            "GET /sp ace HTTP/1.0",
            'GET /\\"q\\" HTTP/1.0',
            "VERYLONGMETHODNAME1 /x HTTP/1.0",
            "GET /" + "r" * 2100 + " HTTP/1.0",
            "GET /caf\u00e9 HTTP/1.0",
        ]
    ),
)
# Edges on both sides: 100 and 599 are statuses, 99 and 600 are not.
_STATUS = mostly(
    st.sampled_from(["200", "404", "100", "599"]),
    st.sampled_from(["99", "600", "2000", "abc", "-", "\uff10"]),
)
_BYTES = mostly(
    st.sampled_from(["0", "1234", "-", "4611686018427387904"]),  # up to 2**62
    st.sampled_from(["", "x", "4611686018427387905", "99999999999999999999", "+1"]),
)
_TAILS = st.sampled_from(
    ["", ' "-" "UA"', ' "http://r/" "Mozilla \\"x\\""', ' "-" "cut', " 123", ' "-"']
)
_EPOCHS = mostly(
    st.integers(631_152_000, 4_102_444_800).map(str),
    st.one_of(
        st.integers(0, 631_151_999).map(str),
        st.integers(4_102_444_801, 10**13).map(str),
        st.sampled_from(["807249601.5", "807249601.", "-1", "1e9", " 807249601", "٣"]),
    ),
)
_METHODS = mostly(
    st.sampled_from(["GET", "HEAD", "POST"]), st.sampled_from(["post", "", "-", "M-SEARCH", "G T"])
)
_URLS = mostly(
    st.sampled_from(["/a", "/a?b", "/caf\u00e9"]), st.sampled_from(["", "?q", "/" + "r" * 2100])
)


@st.composite
def access_lines(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 15)) == 0:
        return draw(st.sampled_from(["", "  ", "junk", "[x]"]))
    return (
        f"{draw(_HOSTS)} - {draw(st.sampled_from(['-', 'frank']))} [{draw(_TIMES)}] "
        f'"{draw(_REQUESTS)}" {draw(_STATUS)} {draw(_BYTES)}{draw(_TAILS)}'
    )


@st.composite
def tsv_lines(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 15)) == 0:
        return draw(st.sampled_from(["", "a\tb", "\t\t\t\t\t\t\t\t"]))
    fields = [
        draw(_HOSTS),
        "-",
        draw(_EPOCHS),
        draw(_METHODS),
        draw(_URLS),
        draw(_STATUS),
        draw(_BYTES),
        "",
        "",
    ]
    return "\t".join(fields[: draw(st.sampled_from([7, 9, 9, 9]))])


def _assert_fast_equals_careful(fmt: Format, lines: list[str], header: int) -> None:
    text = "\n".join(lines)
    chunk = parse(text, fmt)
    parser = ChunkParser(fmt, source="t.log", prefix="p:", limits=Limits())
    if header:
        parser.parse(lines[0].encode(), final=False)
    expected_rows = {}
    expected_rejected = set()
    for i, line in enumerate(lines[header:], start=1 + header):
        if not line or line.isspace():
            continue
        try:
            expected_rows[i] = parser.parse_line(line, i)
        except EventRejected:
            expected_rejected.add(i)
    got = by_line(chunk)
    assert set(got) == set(expected_rows)
    assert set(reasons(chunk)) == expected_rejected
    for i, (_, client, ts_us, status, route, method, size) in expected_rows.items():
        event = got[i]
        assert (event.client_id, event.ts_us, event.status_code) == (client, ts_us, status)
        assert (event.route, event.method) == (route, method)
        assert event.bytes == (None if size == -1 else size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(access_lines(), min_size=1, max_size=40), combined=st.booleans())
def test_access_fast_path_equals_careful_path(lines: list[str], combined: bool) -> None:
    _assert_fast_equals_careful("combined" if combined else "clf", lines, header=0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(tsv_lines(), min_size=1, max_size=40))
def test_tsv_fast_path_equals_careful_path(lines: list[str]) -> None:
    _assert_fast_equals_careful("nasa-tsv", [NASA_HEADER, *lines], header=1)


def test_formats_are_the_cli_choices() -> None:
    from openclaw.cli import INGEST_FORMATS

    assert INGEST_FORMATS == FORMATS


def test_batches_are_typed_as_stores_expect() -> None:
    batch = parse(CLF, "clf").batch
    assert batch.ts_us.dtype == np.int64
    assert batch.status_code.dtype == np.int16
    assert batch.bytes.dtype == np.int64
    assert batch.response_time_ms.dtype == np.float64
    assert batch.client_id.dtype == object
