"""``openclaw ingest FILE``: every trace into a real DuckDB file, re-imports, bad files, the
command line's errors; ``ingest_file`` into a real ClickHouse server."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import orjson
import pytest

from openclaw.errors import IngestError, TelemetryStoreError
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.events import Event, EventBatch
from openclaw.telemetry.ingest import ingest_file, redact
from openclaw.telemetry.parsers import Format
from openclaw.telemetry.stores import open_event_store
from openclaw.testing.cli import invoke
from openclaw.testing.clickhouse import ClickHouseServer
from openclaw.testing.traces import TRACES

#: (file, format, lines, accepted, rejected): the README's row counts; the Apache sample's
#: line 8899 ends inside its user agent (a cut line), which only the combined format notices.
TRACE_FILES = [
    ("nasa_19950801.tsv", "nasa-tsv", 33_997, 33_996, 0),
    ("nasa_19950701_head.tsv", "nasa-tsv", 10_000, 9_999, 0),
    ("apache_combined_sample.log", "combined", 10_000, 9_999, 1),
    ("apache_combined_sample.log", "clf", 10_000, 10_000, 0),
]


def ingest(*args: str) -> tuple[int, str, str]:
    return invoke("ingest", *args)


def summary_value(output: str, label: str) -> int:
    for line in output.splitlines():
        name, _, value = line.strip().rpartition("  ")
        if name.strip() == label:
            return int(value.strip().replace(",", ""))
    raise AssertionError(f"no {label!r} in:\n{output}")


def stored(url: str) -> int:
    store = open_event_store(url, settings=Settings())
    try:
        return store.count()
    finally:
        store.close()


@pytest.mark.parametrize("case", TRACE_FILES, ids=[f"{n}-{f}" for n, f, *_ in TRACE_FILES])
def test_every_trace_ingests_and_a_second_import_stores_nothing(
    tmp_path: Path, case: tuple[str, str, int, int, int]
) -> None:
    name, fmt, lines, accepted, rejected = case
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    code, out, err = ingest(str(TRACES / name), "--format", fmt, "--store", url)
    assert code == 0, err
    assert summary_value(out, "lines read") == lines
    assert summary_value(out, "accepted") == accepted
    assert summary_value(out, "stored (new)") == accepted
    assert summary_value(out, "rejected") == rejected
    assert stored(url) == accepted

    code, out, err = ingest(str(TRACES / name), "--format", fmt, "--store", url)
    assert code == 0, err
    assert summary_value(out, "stored (new)") == 0
    assert summary_value(out, "duplicates (already stored)") == accepted
    assert stored(url) == accepted


def test_the_apache_samples_cut_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = TRACES / "apache_combined_sample.log"
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    code, out, _ = ingest(str(path), "-f", "combined", "--store", url)
    assert code == 0
    assert summary_value(out, "bad_line") == 1
    assert f'{path}:8899: bad_line: expected "referer" "user-agent"' in out


def test_stored_events_are_the_lines(tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    code, _, _ = ingest(str(TRACES / "nasa_19950801.tsv"), "-f", "nasa-tsv", "--store", url)
    assert code == 0
    store = open_event_store(url, settings=Settings())
    try:
        batch = store.scan(since_us=807_249_601_000_000, until_us=807_249_602_000_000)
        assert [
            (e.client_id, e.status_code, e.route, e.method, e.bytes) for e in batch.events()
        ] == [
            (
                "in24.inetnebr.com",
                200,
                "/shuttle/missions/sts-68/news/sts-68-mcc-05.txt",
                "GET",
                1839,
            )
        ]
        assert store.time_range() == (807_249_601_000_000, 807_303_121_000_000)
    finally:
        store.close()


def _bad_file(tmp_path: Path) -> tuple[Path, list[int], dict[int, str]]:
    """A CLF file with one bad line of each kind between good ones, and a cut last line."""
    good = '10.1.1.{i} - - [01/Aug/1995:00:{m:02d}:01 -0400] "GET /p/{i} HTTP/1.0" 200 {i}'
    bad = {
        3: b"not a log line at all",
        5: good.format(i=5, m=5).replace("Aug", "Jux").encode(),
        7: good.format(i=7, m=7).replace(" 200 ", " 700 ").encode(),
        9: good.format(i=9, m=9).replace("/p/9", "/p/\xff\xfe").encode("latin-1"),
        11: good.format(i=11, m=11).replace("10.1.1.11", "h" * 300).encode(),
        13: b"",  # blank: skipped, not rejected
    }
    lines = [bad.get(i, good.format(i=i, m=i).encode()) for i in range(1, 16)]
    data = b"\n".join(lines) + b"\n" + good.format(i=16, m=16).encode()[:25]
    path = tmp_path / "bad.log"
    path.write_bytes(data)
    kept = [i for i in range(1, 16) if i not in bad]
    reasons = {
        3: "bad_line",
        5: "bad_timestamp",
        7: "out_of_range",
        9: "bad_line",
        11: "too_long",
        16: "bad_line",
    }
    return path, kept, reasons


def test_bad_lines_are_named_by_file_and_line_and_every_good_line_is_stored(
    tmp_path: Path,
) -> None:
    path, kept, reasons = _bad_file(tmp_path)
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    code, out, _ = ingest(str(path), "-f", "clf", "--store", url)
    assert code == 0
    assert summary_value(out, "accepted") == len(kept)
    assert summary_value(out, "rejected") == len(reasons)
    assert summary_value(out, "blank lines") == 1
    assert summary_value(out, "bad_line") == 3
    for line, reason in reasons.items():
        assert f"{path}:{line}: {reason}: " in out
    assert "not UTF-8" in out
    assert "truncated?" in out
    store = open_event_store(url, settings=Settings())
    try:
        clients = sorted(store.scan().client_id.tolist())
    finally:
        store.close()
    assert clients == sorted(f"10.1.1.{i}" for i in kept)


def test_jsonl_roundtrip_through_a_store(tmp_path: Path) -> None:
    events = [
        Event(
            f"e{i}",
            f"client-{i % 5}",
            1_700_000_000_000_000 + i * 1_000_003,
            200 + i % 3,
            response_time_ms=0.5 * i,
            route=f"/r/{i % 4}",
            method="GET" if i % 2 else None,
            bytes=i if i % 3 else None,
        )
        for i in range(500)
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"\n".join(
            orjson.dumps(
                {
                    "event_id": e.event_id,
                    "client_id": e.client_id,
                    "timestamp": e.ts_us / 1e6,
                    "status_code": e.status_code,
                    "response_time_ms": e.response_time_ms,
                    "route": e.route,
                    "method": e.method,
                    "bytes": e.bytes,
                }
            )
            for e in events
        )
    )
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    code, out, _ = ingest(str(path), "-f", "jsonl", "--store", url)
    assert code == 0
    assert summary_value(out, "stored (new)") == 500
    store = open_event_store(url, settings=Settings())
    try:
        back = list(store.scan().events())
    finally:
        store.close()
    key = lambda e: e.event_id  # noqa: E731
    assert sorted(back, key=key) == sorted(events, key=key)


def test_gzip_file_ingests_as_the_same_events(tmp_path: Path) -> None:
    gz = tmp_path / "head.tsv.gz"
    gz.write_bytes(gzip.compress((TRACES / "nasa_19950701_head.tsv").read_bytes()))
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    code, out, _ = ingest(str(gz), "-f", "nasa-tsv", "--store", url)
    assert code == 0
    assert summary_value(out, "stored (new)") == 9_999
    # the plain file is the same content: its lines are already there
    code, out, _ = ingest(str(TRACES / "nasa_19950701_head.tsv"), "-f", "nasa-tsv", "--store", url)
    assert summary_value(out, "duplicates (already stored)") == 9_999


# -- the command line's errors ------------------------------------------------------------------


def test_a_missing_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.log"
    code, out, err = ingest(str(missing), "-f", "clf", "--store", f"duckdb://{tmp_path / 'x.db'}")
    assert code == 2
    assert err.strip() == f"openclaw ingest: cannot read {missing}: No such file or directory"
    assert "Traceback" not in out + err


def test_a_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    code, _, err = ingest(str(tmp_path), "-f", "clf", "--store", f"duckdb://{tmp_path / 'x.db'}")
    assert code == 2
    assert f"cannot read {tmp_path}: Is a directory" in err


def test_an_unknown_or_missing_format_is_a_usage_error(tmp_path: Path) -> None:
    path = TRACES / "nasa_19950801.tsv"
    code, _, err = ingest(str(path), "--format", "w3c")
    assert code == 2
    assert "'w3c' is not one of" in err
    code, _, err = ingest(str(path))
    assert code == 2
    assert "--format" in err
    assert "required with FILE" in err
    code, _, err = ingest("--format", "clf")
    assert code == 2
    assert "FILE" in err


def test_a_file_of_another_format_names_the_file_and_line(tmp_path: Path) -> None:
    code, _, err = ingest(
        str(TRACES / "apache_combined_sample.log"),
        "-f",
        "nasa-tsv",
        "--store",
        f"duckdb://{tmp_path / 'x.db'}",
    )
    assert code == 2
    assert f"{TRACES / 'apache_combined_sample.log'}:1: not a nasa-tsv header" in err


def test_a_bad_store_url_is_an_error(tmp_path: Path) -> None:
    code, _, err = ingest(
        str(TRACES / "nasa_19950701_head.tsv"), "-f", "nasa-tsv", "--store", "postgres://x"
    )
    assert code == 2
    assert "unknown scheme" in err


def test_the_store_defaults_to_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "default.duckdb"
    monkeypatch.setenv("OPENCLAW_TELEMETRY_URL", f"duckdb://{db}")
    code, out, _ = ingest(str(TRACES / "nasa_19950701_head.tsv"), "-f", "nasa-tsv")
    assert code == 0
    assert f"-> duckdb://{db}" in out
    assert stored(f"duckdb://{db}") == 9_999


def test_redact_hides_a_password() -> None:
    assert redact("clickhouse://u:secret@h:9000/db") == "clickhouse://u:***@h:9000/db"
    assert redact("clickhouse://h:9000/db") == "clickhouse://h:9000/db"


# -- ingest_file ------------------------------------------------------------------------------


@pytest.mark.parametrize("background", [True, False])
def test_ingest_file_reports_progress_and_counts(tmp_path: Path, background: bool) -> None:
    path, kept, reasons = _bad_file(tmp_path)
    seen: list[int] = []
    store = open_event_store(f"duckdb://{tmp_path / 'e.duckdb'}", settings=Settings())
    try:
        summary = ingest_file(
            path,
            "clf",
            store,
            settings=Settings(),
            progress=seen.append,
            background=background,
            insert_events=3,
            chunk_bytes=4096,
        )
    finally:
        store.close()
    assert (summary.accepted, summary.stored, summary.duplicates) == (len(kept), len(kept), 0)
    assert summary.lines == 16
    assert summary.blank == 1
    assert summary.rejected == len(reasons)
    assert dict(summary.rejected_by_reason) == {
        "bad_line": 3,
        "bad_timestamp": 1,
        "out_of_range": 1,
        "too_long": 1,
    }
    assert [r.line for r in summary.first_rejections] == sorted(reasons)
    assert seen
    assert seen[-1] == path.stat().st_size


class FailingStore:
    """A real DuckDB store whose second insert fails, as a full disk would."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.inserts = 0
        self.threads: set[str] = set()

    def insert(self, batch: EventBatch) -> int:
        self.inserts += 1
        self.threads.add(threading.current_thread().name)
        if self.inserts == 2:
            raise TelemetryStoreError("disk full")
        return self.store.insert(batch)


@pytest.mark.parametrize("background", [True, False])
def test_a_store_failure_stops_the_import_and_keeps_what_was_committed(
    tmp_path: Path, background: bool
) -> None:
    store = open_event_store(f"duckdb://{tmp_path / 'e.duckdb'}", settings=Settings())
    failing = FailingStore(store)
    try:
        with pytest.raises(TelemetryStoreError, match="disk full"):
            ingest_file(
                TRACES / "nasa_19950801.tsv",
                "nasa-tsv",
                failing,  # type: ignore[arg-type]
                settings=Settings(),
                insert_events=5_000,
                background=background,
            )
        # the first insert is committed, nothing after the failed one
        assert 5_000 <= store.count() < 33_996
        assert failing.threads == ({"openclaw-ingest-insert"} if background else {"MainThread"})
        assert not [t for t in threading.enumerate() if t.name == "openclaw-ingest-insert"]
        # a rerun stores what is missing, nothing twice
        summary = ingest_file(TRACES / "nasa_19950801.tsv", "nasa-tsv", store, settings=Settings())
        assert summary.stored == 33_996 - summary.duplicates
        assert store.count() == 33_996
    finally:
        store.close()


def test_unreadable_file_raises_before_touching_the_store(tmp_path: Path) -> None:
    store = open_event_store(f"duckdb://{tmp_path / 'e.duckdb'}", settings=Settings())
    try:
        with pytest.raises(IngestError, match="nope"):
            ingest_file(tmp_path / "nope", "clf", store, settings=Settings())
        assert not [t for t in threading.enumerate() if t.name == "openclaw-ingest-insert"]
        assert store.count() == 0
    finally:
        store.close()


@pytest.mark.clickhouse
def test_ingest_into_clickhouse(clickhouse_server: ClickHouseServer) -> None:
    url = clickhouse_server.url_for("ingest_test")
    store = open_event_store(url, settings=Settings())
    try:
        fmt: Format = "nasa-tsv"
        first = ingest_file(TRACES / "nasa_19950701_head.tsv", fmt, store, settings=Settings())
        again = ingest_file(TRACES / "nasa_19950701_head.tsv", fmt, store, settings=Settings())
        assert (first.accepted, first.stored) == (9_999, 9_999)
        assert (again.stored, again.duplicates) == (0, 9_999)
        assert store.count() == 9_999
    finally:
        store.close()
        clickhouse_server.execute("DROP DATABASE IF EXISTS ingest_test")
