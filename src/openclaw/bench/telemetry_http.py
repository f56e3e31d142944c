"""HTTP NDJSON telemetry ingest: ``POST /api/v1/telemetry`` into ``openclaw serve`` with its
embedded DuckDB store, over loopback, loaded by ``wrk``; events per second, and per core of
the server's CPU time.

Contenders, each round running every one back to back (the first rotates):

* ``POST /api/v1/telemetry``: bodies of ``--events`` NDJSON events (unique ids, timestamps
  moving forward like a live feed) from a Lua ``request()``; the server parses, validates,
  queues, and its worker thread writes 10,000-event batches into the DuckDB file;
* ceiling: the same bodies posted to ``/healthz`` on the same server, which answers 405
  without reading them: what uvicorn and Starlette cost to carry those bytes, with no
  parsing and no store;
* in-process, in this process while the server idles: ``parse_ndjson`` on one body (the
  parser alone), and ``DuckDBEventStore.insert`` of 10,000-event batches into a file of
  its own (the store alone).

After the last round the server is stopped with SIGTERM and its DuckDB file opened: it
must hold exactly the events the server counted as accepted, or the run fails.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from openclaw.bench.http import WRK_DONE, find_wrk, run_wrk, serve_process
from openclaw.bench.limiter import (
    command_line,
    cpu_seconds,
    machine,
    print_line,
    report_console,
    rotation,
    verdict,
    write_json,
)
from openclaw.testing.redis import free_port

__all__ = ["Options", "command_line", "run"]

TARGET: Final = 50_000.0  # events per second through POST /api/v1/telemetry
INGEST: Final = "POST /api/v1/telemetry -> DuckDB"
CEILING: Final = "POST /healthz, same bodies (405, unread)"
PARSE: Final = "in-process: parse_ndjson (1 thread)"
INSERT: Final = "in-process: DuckDB insert, 10,000-event batches"
#: Events per in-process insert: the server's telemetry_batch_size default.
INSERT_BATCH: Final = 10_000
T0: Final = 1_750_000_000.0

#: wrk: each request a body of EVENTS lines with ids unique across runs and requests.
WRK_NDJSON: Final = (
    """\
local size = tonumber(os.getenv("OPENCLAW_BENCH_EVENTS"))
local path = os.getenv("OPENCLAW_BENCH_PATH")
local run = os.getenv("OPENCLAW_BENCH_RUN")
local t0 = tonumber(os.getenv("OPENCLAW_BENCH_T0"))
local heads, tails = {}, {}
local n = 0
function init(args)
  for i = 1, size do
    heads[i] = string.format('","client_id":"bench-%d","timestamp":', i % 500)
    local status = 200
    if i % 50 == 0 then status = 503 end
    tails[i] = string.format(
      ',"response_time_ms":%d.5,"status_code":%d,"route":"/api/items/{id}","method":"GET",'
      .. '"bytes":%d}', 5 + i % 97, status, 200 + i)
  end
end
function request()
  n = n + 1
  local ts = string.format("%.6f", t0 + n * 0.02)
  local prefix = '{"event_id":"' .. run .. "-" .. n .. "-"
  local parts = {}
  for i = 1, size do
    parts[i] = prefix .. i .. heads[i] .. ts .. tails[i]
  end
  return wrk.format("POST", path, {["Content-Type"] = "application/x-ndjson"},
                    table.concat(parts, "\\n"))
end
"""
    + WRK_DONE
)


@dataclass(frozen=True, slots=True)
class Options:
    seconds: float = 3.0  # each wrk run, and each in-process run
    rounds: int = 3
    events: int = 1000  # events per request body
    connections: int = 4
    json_path: Path | None = None


@dataclass(frozen=True, slots=True)
class Run:
    events_per_s: float
    cpu_cores: float  # CPU seconds of the measured process per wall second
    p50_ms: float | None = None
    p99_ms: float | None = None
    #: Bodies answered 503 queue_full (backpressure: the store fell behind), of ``bodies``.
    refused: int = 0
    bodies: int = 0

    @property
    def per_core(self) -> float:
        return self.events_per_s / self.cpu_cores if self.cpu_cores > 0 else 0.0


@dataclass
class Results:
    runs: dict[str, list[Run]] = field(default_factory=dict)
    accepted: int = 0
    stored: int = 0

    def add(self, name: str, run: Run) -> None:
        self.runs.setdefault(name, []).append(run)

    def values(self, name: str, attr: str) -> list[float]:
        return [float(getattr(r, attr) or 0.0) for r in self.runs[name]]

    def median(self, name: str, attr: str) -> float:
        return statistics.median(self.values(name, attr))


# -- the server ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    base: str
    pid: int
    events_file: Path


@contextmanager
def serving(workdir: Path) -> Iterator[Server]:
    """``openclaw serve`` on a free loopback port with a fresh DuckDB telemetry file; SIGTERM
    at the end (which writes every queued event)."""
    port = free_port()
    events_file = workdir / "telemetry.duckdb"
    env = {
        "OPENCLAW_STORE_URL": "memory://",
        "OPENCLAW_TELEMETRY_URL": f"duckdb://{events_file}",
    }
    with serve_process(workdir, port, env=env, stop_s=60) as proc:
        yield Server(f"http://127.0.0.1:{port}", proc.pid, events_file)


def accepted_events(base: str) -> int:
    """The server's own count of events it accepted over HTTP (from /metrics)."""
    return _http_counter(base, 'openclaw_telemetry_events_accepted_total{source="http"}')


def queue_full_events(base: str) -> int:
    """The server's own count of events it refused over HTTP because its queue was full."""
    return _http_counter(
        base, 'openclaw_telemetry_events_rejected_total{reason="queue_full",source="http"}'
    )


def _http_counter(base: str, series: str) -> int:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return round(float(line.rsplit(" ", 1)[1]))
    return 0


def stored_events(events_file: Path) -> tuple[int, int]:
    import duckdb

    with duckdb.connect(str(events_file), read_only=True) as con:
        row = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# -- the load --------------------------------------------------------------------------------


def wrk_ndjson(
    wrk: str,
    script: Path,
    server: Server,
    *,
    path: str,
    run_id: str,
    options: Options,
    expect_status: int,
) -> Run:
    env = {
        "OPENCLAW_BENCH_EVENTS": str(options.events),
        "OPENCLAW_BENCH_PATH": path,
        "OPENCLAW_BENCH_RUN": run_id,
        "OPENCLAW_BENCH_T0": f"{T0:.6f}",
    }
    ingest = expect_status < 300
    full_before = queue_full_events(server.base) if ingest else 0
    cpu_before = cpu_seconds(server.pid)
    summary = run_wrk(
        wrk, script, server.base, seconds=options.seconds, connections=options.connections, env=env
    )
    cpu = cpu_seconds(server.pid) - cpu_before
    bad = summary["non2xx"] if ingest else summary["requests"] - summary["non2xx"]
    refused = 0
    if ingest and bad:
        # A 503 queue_full is the endpoint's backpressure (the store fell behind for a while:
        # a DuckDB checkpoint stalls its writer for seconds), not an error: a client retries
        # later. Any other answer is an error; the server's own counter tells them apart.
        # wrk does not count the answers still in flight when it stops (one a connection at
        # most), which the server did count.
        full = queue_full_events(server.base) - full_before
        if full % options.events == 0 and 0 <= full // options.events - bad <= options.connections:
            refused, bad = bad, 0
    if summary["errors"] or bad:
        raise RuntimeError(
            f"wrk on {path}: {summary['errors']} socket errors, {bad} answers other than "
            f"{expect_status}" + (" (or 503 queue_full)" if ingest else "")
        )
    wall = summary["us"] / 1e6
    return Run(
        (summary["requests"] - refused) * options.events / wall,  # what was accepted
        cpu / wall,
        summary["p50"] / 1000,
        summary["p99"] / 1000,
        refused=refused,
        bodies=summary["requests"],
    )


# -- in-process peers --------------------------------------------------------------------------


def ndjson_body(events: int, *, run: str) -> bytes:
    lines = [
        orjson.dumps(
            {
                "event_id": f"{run}-{i}",
                "client_id": f"bench-{i % 500}",
                "timestamp": T0 + i * 0.001,
                "response_time_ms": 5.5 + i % 97,
                "status_code": 503 if i % 50 == 0 else 200,
                "route": "/api/items/{id}",
                "method": "GET",
                "bytes": 200 + i,
            }
        )
        for i in range(events)
    ]
    return b"\n".join(lines)


def timed(step: Callable[[], int], seconds: float) -> Run:
    """Call ``step`` (it returns the events it handled) for about ``seconds``."""
    events = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        events += step()
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            break
    return Run(events / wall, (time.process_time() - cpu0) / wall)


def parse_run(options: Options) -> Run:
    from openclaw.service.telemetry import parse_ndjson

    body = ndjson_body(options.events, run="parse")

    def step() -> int:
        parsed = parse_ndjson(body, max_client_id_length=256, id_prefix="p-")
        return len(parsed.batch)

    return timed(step, options.seconds)


def insert_run(workdir: Path, round_no: int, options: Options) -> Run:
    from openclaw.service.telemetry import parse_ndjson
    from openclaw.settings import Settings
    from openclaw.telemetry.events import EventBatch
    from openclaw.telemetry.stores import open_event_store

    template = parse_ndjson(
        ndjson_body(INSERT_BATCH, run="x"), max_client_id_length=256, id_prefix="p-"
    ).batch
    store = open_event_store(
        f"duckdb://{workdir / f'insert-{round_no}.duckdb'}", settings=Settings()
    )
    counter = 0

    def step() -> int:
        nonlocal counter
        counter += 1
        # Fresh ids and a later time range per batch, as a live feed gives the store.
        batch = EventBatch(
            **{
                **{name: getattr(template, name) for name in EventBatch.__slots__},
                "event_id": template.event_id + f"-{counter}",
                "ts_us": template.ts_us + counter * 10_000_000,
            }
        )
        return store.insert(batch)

    try:
        return timed(step, options.seconds)
    finally:
        store.close()


# -- the run -------------------------------------------------------------------------------------


def measure(options: Options, workdir: Path, progress: Callable[[str], None]) -> Results:
    wrk = find_wrk()
    script = workdir / "ndjson.lua"
    script.write_text(WRK_NDJSON)
    results = Results()
    with serving(workdir) as server:
        progress("warming up")
        warm = Options(seconds=1, events=options.events, connections=options.connections)
        wrk_ndjson(
            wrk,
            script,
            server,
            path="/api/v1/telemetry",
            run_id="w",
            options=warm,
            expect_status=202,
        )
        steps: list[tuple[str, Callable[[int], Run]]] = [
            (
                INGEST,
                lambda r: wrk_ndjson(
                    wrk,
                    script,
                    server,
                    path="/api/v1/telemetry",
                    run_id=f"r{r}",
                    options=options,
                    expect_status=202,
                ),
            ),
            (
                CEILING,
                lambda r: wrk_ndjson(
                    wrk,
                    script,
                    server,
                    path="/healthz",
                    run_id=f"c{r}",
                    options=options,
                    expect_status=405,
                ),
            ),
            (PARSE, lambda r: parse_run(options)),
            (INSERT, lambda r: insert_run(workdir, r, options)),
        ]
        for r, i in rotation(len(steps), options.rounds):
            name, step = steps[i]
            progress(f"round {r + 1}/{options.rounds}: {name}")
            results.add(name, step(r))
        # Let the queue drain before reading the count, so the shutdown has little to write.
        time.sleep(1.5)
        results.accepted = accepted_events(server.base)
        progress("SIGTERM, then counting the stored events")
    results.stored, distinct = stored_events(server.events_file)
    if results.stored != results.accepted or distinct != results.stored:
        raise RuntimeError(
            f"the server accepted {results.accepted:,} events but its file holds "
            f"{results.stored:,} ({distinct:,} distinct ids)"
        )
    return results


def render(console: Console, results: Results, options: Options, command: str) -> None:
    import duckdb

    m = machine()
    console.print()
    print_line(console, f"$ {command}", "bold")
    print_line(
        console,
        f"machine: nproc={m.nproc}, Python {m.python}, {m.platform}; duckdb {duckdb.__version__}",
    )
    print_line(
        console,
        f"workload: wrk -t1 -c{options.connections} for {max(1, round(options.seconds))} s "
        f"per run, bodies of {options.events:,} NDJSON events (unique ids), server: openclaw "
        "serve (uvicorn, one process; telemetry_batch_size 10,000, flush interval 1 s) on a "
        "fresh DuckDB file; wrk and the server share the machine's cores",
    )
    print_line(console, f"rounds: {options.rounds}, each running every contender once")
    grid = Table(title="Telemetry ingest over HTTP", title_justify="left")
    for col in (
        "contender",
        "events/s\n(median)",
        "spread",
        "CPU cores\nused",
        "events/s\nper core",
        "p50 ms\n(request)",
        "p99 ms",
    ):
        grid.add_column(col, justify="left" if col == "contender" else "right")
    grid.add_column("x ceiling\n(min - max)", justify="right")
    ingest = results.values(INGEST, "events_per_s")
    ceiling = results.values(CEILING, "events_per_s")
    ratio = [a / b if b else 0.0 for a, b in zip(ingest, ceiling, strict=True)]
    ok = statistics.median(ingest) >= TARGET
    for name in (INGEST, CEILING, PARSE, INSERT):
        rates = results.values(name, "events_per_s")
        cell: Text | str = f"{statistics.median(rates):,.0f}"
        if name == INGEST:
            cell = Text(f"{statistics.median(rates):,.0f}\n")
            cell.append_text(verdict(ok, f"target >= {TARGET:,.0f}"))
        p50 = results.runs[name][0].p50_ms
        grid.add_row(
            name,
            cell,
            f"{min(rates):,.0f} - {max(rates):,.0f}",
            f"{results.median(name, 'cpu_cores'):.2f}",
            f"{results.median(name, 'per_core'):,.0f}",
            "" if p50 is None else f"{results.median(name, 'p50_ms'):.1f}",
            "" if p50 is None else f"{results.median(name, 'p99_ms'):.1f}",
            f"{statistics.median(ratio):.2f}x\n({min(ratio):.2f} - {max(ratio):.2f})"
            if name == INGEST
            else "",
        )
    console.print(grid)
    console.print(
        Text.assemble(
            f"  {INGEST}: {statistics.median(ingest):,.0f} events/s "
            f"({results.median(INGEST, 'per_core'):,.0f} per core of server CPU) ",
            verdict(ok, f"target >= {TARGET:,.0f}"),
        )
    )
    print_line(
        console,
        f"  verified after SIGTERM: the server accepted {results.accepted:,} events over the "
        f"whole run and its DuckDB file holds {results.stored:,}, each id once",
    )
    runs = [{"refused_bodies": r.refused, "bodies": r.bodies} for r in results.runs[INGEST]]
    print_line(console, "  " + backpressure_note(runs))


def backpressure_note(runs: Sequence[Mapping[str, Any]]) -> str:
    """The measured runs' 503 queue_full answers, in one sentence (terminal and report)."""
    refused = sum(int(r.get("refused_bodies", 0)) for r in runs)
    bodies = sum(int(r.get("bodies", 0)) for r in runs)
    return (
        f"backpressure: {refused:,} of {bodies:,} measured bodies answered 503 queue_full (the "
        "queue was full while the store caught up; not counted as ingested)"
    )


def to_json(results: Results, options: Options, command: str) -> dict[str, Any]:
    return {
        "command": command,
        "machine": machine().to_json(),
        "options": {
            "seconds": options.seconds,
            "rounds": options.rounds,
            "events": options.events,
            "connections": options.connections,
        },
        "runs": {
            name: [
                {
                    "events_per_s": r.events_per_s,
                    "cpu_cores": r.cpu_cores,
                    "events_per_s_per_core": r.per_core,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "refused_bodies": r.refused,
                    "bodies": r.bodies,
                }
                for r in runs
            ]
            for name, runs in results.runs.items()
        },
        "accepted": results.accepted,
        "stored": results.stored,
    }


def run(options: Options, *, command: str, console: Console | None = None) -> Results:
    """Measure and print; a missed target prints FAIL, it does not raise."""
    console = report_console(console)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="openclaw-tel-")))
        status = stack.enter_context(Console(stderr=True).status("starting"))
        results = measure(options, workdir, status.update)
    render(console, results, options, command)
    write_json(options.json_path, to_json(results, options, command), console)
    return results
