"""Feature extraction from a DuckDB telemetry file, against the floor any feature code pays.

The workload: ``--events`` synthetic events (10 million by default) from many clients of
heavy-tailed size, arriving in bursts over ``--hours`` hours, with a status mix and response
times (some unknown), generated with vectorised NumPy and written straight into a DuckDB file
with the telemetry store's schema (the store's own idempotent insert is the ingest benchmark's
subject, not this one's).

Contenders, each run once per round, alternating, the median over rounds reported:

* **peer: GROUP BY (client, window) count**: ``SELECT client_id, ts_us // W, count(*) FROM
  events GROUP BY ALL``, fetched as NumPy: one pass over the table producing one row per
  (client, window), the least any per-(client, window) feature code does;
* **openclaw features**: ``openclaw.features.offline.extract_features`` on the same store,
  every feature and label, with its time split by phase.

The run checks that both produce the same number of rows before it reports.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from openclaw.features.core import duration_us
from openclaw.features.offline import extract_features
from openclaw.settings import Settings
from openclaw.telemetry.stores import open_event_store

TARGET_S: Final = 60.0
TARGET_EVENTS: Final = 10_000_000
#: 2021-03-01 00:00 UTC: an arbitrary, window-aligned start.
START_US: Final = 1_614_556_800_000_000
PEER: Final = "peer: GROUP BY (client, window) count"
OURS: Final = "openclaw features"


@dataclass(frozen=True, slots=True)
class Options:
    events: int = TARGET_EVENTS
    clients: int = 200_000
    hours: float = 24.0
    rounds: int = 1
    seed: int = 7
    db: Path | None = None
    json_path: Path | None = None


def generate(
    n_events: int, *, n_clients: int, span_s: float, seed: int
) -> dict[str, npt.NDArray[Any]]:
    """Columns of ``n_events`` synthetic events, ordered by time: client index, ts_us, status,
    response time (NaN: unknown). Bursts of geometric size (mean 8) at uniform starts, gaps
    inside a burst exponential (mean 0.25 s, one in ten a pause of mean 5 s); clients chosen
    by Pareto weights, so a few are huge and most are small."""
    rng = np.random.default_rng(seed)
    span_us = int(span_s * 1e6)
    weights = rng.pareto(1.2, n_clients) + 1.0
    weights /= weights.sum()
    # A quarter more bursts than the mean needs, so their sizes surely add up to n_events.
    n_bursts = n_events // 8 * 5 // 4 + 64
    sizes = rng.geometric(1 / 8, n_bursts)
    ends = np.cumsum(sizes)
    if ends[-1] < n_events:
        sizes[-1] += n_events - int(ends[-1])
        ends[-1] = n_events
    keep = int(np.searchsorted(ends, n_events)) + 1
    sizes = sizes[:keep]
    sizes[-1] -= int(ends[keep - 1]) - n_events
    burst_client = rng.choice(n_clients, size=keep, p=weights).astype(np.int32)
    burst_start = rng.integers(0, span_us, keep, dtype=np.int64)
    gaps = rng.exponential(250_000.0, n_events)
    pause = rng.random(n_events) < 0.1
    gaps[pause] = rng.exponential(5_000_000.0, int(pause.sum()))
    first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    gaps[first] = 0.0
    gaps_us = gaps.astype(np.int64)
    within = np.cumsum(gaps_us)
    within -= np.repeat(within[first], sizes)
    burst = np.repeat(np.arange(keep), sizes)
    ts = np.minimum(START_US + burst_start[burst] + within, START_US + span_us - 1)
    client = burst_client[burst]
    status = rng.choice(
        np.array([200, 201, 304, 404, 429, 500, 503], dtype=np.int16),
        size=n_events,
        p=[0.86, 0.03, 0.04, 0.03, 0.02, 0.015, 0.005],
    )
    rt = rng.lognormal(np.log(40.0), 0.8, n_events)
    rt[rng.random(n_events) < 0.05] = np.nan
    order = np.argsort(ts, kind="stable")
    return {"client": client[order], "ts_us": ts[order], "status": status[order], "rt": rt[order]}


def write_duckdb(
    path: Path, columns: dict[str, npt.NDArray[Any]], *, chunk: int = 2_000_000
) -> None:
    """The events into a new DuckDB file with the store's schema (ids made by DuckDB)."""
    import duckdb

    from openclaw.telemetry.duckdb import SCHEMA

    con = duckdb.connect(str(path))
    try:
        con.execute(SCHEMA)
        n = columns["ts_us"].size
        for lo in range(0, n, chunk):
            part = {name: values[lo : lo + chunk] for name, values in columns.items()}
            part["i"] = np.arange(lo, lo + part["ts_us"].size, dtype=np.int64)
            con.register("_bench_batch", part)
            con.execute(
                "INSERT INTO events SELECT 'e' || i::VARCHAR, "
                "'client-' || lpad(client::VARCHAR, 6, '0'), ts_us, status, "
                "nullif(rt, 'NaN'::DOUBLE), NULL, 'GET', NULL FROM _bench_batch"
            )
            con.unregister("_bench_batch")
        con.execute("CHECKPOINT")
    finally:
        con.close()


@contextmanager
def _database(options: Options) -> Iterator[Path]:
    if options.db is not None:
        yield options.db
        return
    with tempfile.TemporaryDirectory(prefix="openclaw-bench-features-") as tmp:
        yield Path(tmp) / "events.duckdb"


@dataclass(frozen=True, slots=True)
class Measured:
    events: int
    rows: int
    peer_s: list[float]
    ours_s: list[float]
    phases: list[dict[str, float]]


def _prepare(path: Path, options: Options, console: Console) -> None:
    if path.exists():
        console.print(f"using the existing events in {path}")
        return
    t0 = time.perf_counter()
    with console.status(f"generating {options.events:,} events"):
        columns = generate(
            options.events,
            n_clients=options.clients,
            span_s=options.hours * 3600,
            seed=options.seed,
        )
    gen_s = time.perf_counter() - t0
    with console.status(f"writing them to {path}"):
        write_duckdb(path, columns)
    console.print(
        f"generated {options.events:,} events in {gen_s:.1f} s, wrote {path} in "
        f"{time.perf_counter() - t0 - gen_s:.1f} s"
    )


def _measure(path: Path, options: Options, settings: Settings, console: Console) -> Measured:
    window_us = duration_us(settings.window_s)
    store = open_event_store(f"duckdb://{path}", settings=settings)
    try:
        n_events = store.count()
        peer_s: list[float] = []
        ours_s: list[float] = []
        phases: list[dict[str, float]] = []
        rows = peer_rows = 0
        for r in range(options.rounds):
            with console.status(f"round {r + 1}/{options.rounds}: {PEER}"):
                t0 = time.perf_counter()
                cols = store.query(
                    "SELECT client_id, ts_us // %(w)s AS win, count(*) AS n "
                    "FROM events GROUP BY client_id, win",
                    {"w": window_us},
                )
                peer_s.append(time.perf_counter() - t0)
                peer_rows = int(cols["n"].size)
                del cols
            with console.status(f"round {r + 1}/{options.rounds}: {OURS}"):
                timings: dict[str, float] = {}
                t0 = time.perf_counter()
                frame = extract_features(store, settings=settings, timings=timings)
                ours_s.append(time.perf_counter() - t0)
                phases.append(timings)
                rows = len(frame)
                del frame
            if rows != peer_rows:
                raise RuntimeError(f"features made {rows} rows, the peer {peer_rows}")
    finally:
        store.close()
    return Measured(n_events, rows, peer_s, ours_s, phases)


def run(options: Options, *, command: str, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    settings = Settings()
    cores = os.cpu_count() or 1
    with _database(options) as path:
        _prepare(path, options, console)
        m = _measure(path, options, settings, console)
    n_events = m.events
    peer = statistics.median(m.peer_s)
    ours = statistics.median(m.ours_s)
    phase = {k: statistics.median(p.get(k, 0.0) for p in m.phases) for k in m.phases[0]}
    machine = f"nproc={cores}, Python {platform.python_version()}, {platform.platform()}"
    console.print(f"[bold]{command}[/bold]")
    console.print(
        f"{machine}; {n_events:,} events, {options.clients:,} clients drawn, "
        f"{options.hours:g} h, {m.rows:,} (client, window) rows of {settings.window_s:g} s; "
        f"median of {options.rounds} round(s)"
    )
    table = Table()
    for name in ("contender", "seconds", "events/s", "events/s per core", "x peer time"):
        table.add_column(name, justify="left" if name == "contender" else "right")
    for name, secs in ((PEER, peer), (OURS, ours)):
        rate = n_events / secs
        table.add_row(
            name, f"{secs:.2f}", f"{rate:,.0f}", f"{rate / cores:,.0f}", f"{secs / peer:.1f}"
        )
    console.print(table)
    console.print(
        "phases of openclaw features (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phase.items())
    )
    scaled = ours * TARGET_EVENTS / max(n_events, 1)
    verdict = "PASS" if scaled < TARGET_S else "FAIL"
    console.print(
        f"target: {TARGET_EVENTS:,} events in under {TARGET_S:.0f} s: "
        f"{scaled:.1f} s{' (scaled linearly)' if n_events != TARGET_EVENTS else ''} {verdict}"
    )
    result = {
        "command": command,
        "machine": machine,
        "events": n_events,
        "rows": m.rows,
        "rounds": options.rounds,
        "peer_s": m.peer_s,
        "ours_s": m.ours_s,
        "phases": m.phases,
        "events_per_s": n_events / ours,
        "events_per_s_per_core": n_events / ours / cores,
        "peer_events_per_s": n_events / peer,
        "target_s": TARGET_S,
        "verdict": verdict,
    }
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(result, indent=2))
    return result
