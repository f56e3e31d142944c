"""``openclaw features`` and ``openclaw bench features``, run as the installed command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from openclaw.features.core import US
from openclaw.features.offline import extract_features, read_parquet
from openclaw.settings import Settings
from openclaw.telemetry.events import EventBatch
from openclaw.telemetry.stores import open_event_store
from openclaw.testing.clickhouse import ClickHouseServer

BIN = Path(sys.executable).parent
#: 2024-01-01 00:00 UTC.
T0 = 1_704_067_200 * US


def objects(values: list[object]) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def events(n: int = 3_000, *, hours: float = 2.0) -> EventBatch:
    rng = np.random.default_rng(11)
    return EventBatch(
        event_id=objects([f"cli-{i}" for i in range(n)]),
        client_id=objects([f"c{k}" for k in rng.integers(0, 30, n)]),
        ts_us=T0 + rng.integers(0, int(hours * 3600 * US), n),
        status_code=rng.choice([200, 404, 429, 500], n).astype(np.int16),
        response_time_ms=rng.exponential(30.0, n),
        route=objects([None] * n),
        method=objects([None] * n),
        bytes=np.full(n, -1, dtype=np.int64),
    )


def fill(url: str, batch: EventBatch) -> None:
    store = open_event_store(url, settings=Settings())
    try:
        store.insert(batch)
    finally:
        store.close()


def openclaw(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "openclaw"), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def summary_numbers(stdout: str) -> tuple[int, int, int]:
    found = re.search(r"([\d,]+) rows, ([\d,]+) clients, ([\d,]+) windows", stdout)
    assert found, stdout
    rows, clients, windows = (int(g.replace(",", "")) for g in found.groups())
    return rows, clients, windows


def test_features_to_parquet(tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    batch = events()
    fill(url, batch)
    out = tmp_path / "features.parquet"
    result = openclaw("features", "--store", url, "--out", out)
    assert result.returncode == 0, result.stderr
    rows, clients, windows = summary_numbers(result.stdout)
    assert clients == len(set(batch.client_id.tolist()))
    assert windows == 24  # two hours of 300 s windows
    assert "2024-01-01T00:00:00Z .. 2024-01-01T01:55:00Z" in result.stdout
    frame = read_parquet(out)
    assert len(frame) == rows
    store = open_event_store(url, settings=Settings())
    try:
        expected = extract_features(store, settings=Settings())
    finally:
        store.close()
    assert np.array_equal(frame.X, expected.X)
    assert frame.client_id.tolist() == expected.client_id.tolist()


def test_range_and_window_options(tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    fill(url, events())
    out = tmp_path / "f.parquet"
    # 00:15 is not a 600 s boundary: moved forward to 00:20; 01:00 is one.
    result = openclaw(
        "features",
        "--store",
        url,
        "--out",
        out,
        "--window",
        "600",
        "--since",
        "2024-01-01T00:15:00Z",
        "--until",
        "2024-01-01T01:00:00+00:00",
    )
    assert result.returncode == 0, result.stderr
    frame = read_parquet(out)
    assert frame.window_s == 600.0
    starts = sorted(set(frame.window_start_us.tolist()))
    assert starts == [T0 + k * 600 * US for k in (2, 3, 4, 5)]
    assert summary_numbers(result.stdout)[2] == 4


def test_store_from_the_environment_and_an_empty_range(tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    fill(url, events())
    out = tmp_path / "empty.parquet"
    result = openclaw(
        "features",
        "--out",
        out,
        "--since",
        "2030-01-01T00:00:00Z",
        env={"OPENCLAW_TELEMETRY_URL": url},
    )
    assert result.returncode == 0, result.stderr
    assert summary_numbers(result.stdout) == (0, 0, 0)
    assert len(read_parquet(out)) == 0


def test_bad_input_exits_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    result = openclaw("features", "--store", url, "--out", out, "--since", "yesterday")
    assert result.returncode == 2
    assert "--since" in result.stderr
    assert "yesterday" in result.stderr
    result = openclaw("features", "--store", url, "--out", out, "--until", "2024-01-01T00:00")
    assert result.returncode == 2
    assert "UTC offset" in result.stderr
    result = openclaw("features", "--store", "postgres://db/x", "--out", out)
    assert result.returncode == 2
    assert "postgres://db/x" in result.stderr
    assert not out.exists()


@pytest.mark.clickhouse
def test_features_from_clickhouse(clickhouse_server: ClickHouseServer, tmp_path: Path) -> None:
    database = f"test_{uuid.uuid4().hex[:12]}"
    url = clickhouse_server.url_for(database)
    try:
        fill(url, events(1_000, hours=1.0))
        out = tmp_path / "ch.parquet"
        result = openclaw("features", "--store", url, "--out", out)
        assert result.returncode == 0, result.stderr
        assert summary_numbers(result.stdout)[2] == 12
        duck = f"duckdb://{tmp_path / 'events.duckdb'}"
        fill(duck, events(1_000, hours=1.0))
        assert (
            openclaw("features", "--store", duck, "--out", tmp_path / "d.parquet").returncode == 0
        )
        a, b = read_parquet(out), read_parquet(tmp_path / "d.parquet")
        order_a = np.lexsort((a.window_start_us, a.client_id.astype(str)))
        order_b = np.lexsort((b.window_start_us, b.client_id.astype(str)))
        assert np.array_equal(a.X[order_a], b.X[order_b])
    finally:
        clickhouse_server.execute(f"DROP DATABASE IF EXISTS {database}")


def test_bench_features_runs_and_reports(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    result = openclaw(
        "bench",
        "features",
        "--events",
        "20000",
        "--clients",
        "300",
        "--hours",
        "1",
        "--json",
        report,
    )
    assert result.returncode == 0, result.stderr
    assert "openclaw features" in result.stdout
    assert "GROUP BY" in result.stdout
    data = json.loads(report.read_text())
    assert data["events"] == 20_000
    assert data["rows"] > 0
    assert data["events_per_s"] > 0
    assert data["verdict"] in {"PASS", "FAIL"}
