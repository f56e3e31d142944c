"""Log import: events per second of ``openclaw ingest`` into DuckDB and ClickHouse, beside
each store's own native loader measured in the same run on the same file.

The input is the NASA trace (``nasa_19950801.tsv``, 33,996 requests) repeated with each copy
shifted by one more day, to ``--lines`` lines, written once to a temporary directory as the
same TSV (and, for one more contender, as Common Log Format). Every round runs every
contender back to back (the first rotates from round to round), each into a fresh DuckDB file
or ClickHouse database, and the report is the median over rounds.

Contenders:

* DuckDB: ``ingest_file`` (parse, validate, insert with the background insert thread),
  the same with inserts in the parsing thread, the same events as CLF, the parser alone
  (no store), and the peer, DuckDB's native ``read_csv`` of the TSV into a table.
* ClickHouse (``--clickhouse auto`` starts a throwaway server; or a ``clickhouse://`` URL):
  ``ingest_file`` into the ClickHouse store, and the peer, ``clickhouse-client`` running
  ``INSERT ... FORMAT TabSeparatedWithNames`` with the TSV on its standard input.

Every contender's result is checked before it counts: all ``--lines`` events stored, none
rejected. "Per core" divides by the CPU time the run used (this process's threads, plus the
ClickHouse server's and ``clickhouse-client``'s when they are ours to measure), so a loader
that spreads over both cores does not look faster per core than it is.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

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
from openclaw.errors import ConfigError
from openclaw.settings import Settings
from openclaw.telemetry.ingest import ingest_file
from openclaw.telemetry.parsers import MONTHS, Format, parse_file

__all__ = ["Options", "command_line", "run"]

DUCKDB_TARGET: Final = 300_000.0
CLICKHOUSE_TARGET: Final = 100_000.0
DEFAULT_LINES: Final = 1_000_000
DEFAULT_ROUNDS: Final = 3
DEFAULT_TRACE: Final = Path("../shared/data/traces/nasa_19950801.tsv")
DAY_S: Final = 86_400

OURS: Final = "openclaw ingest -> DuckDB"
OURS_INLINE: Final = "openclaw ingest -> DuckDB, inserts inline"
OURS_CLF: Final = "openclaw ingest -> DuckDB, CLF"
PARSE_ONLY: Final = "openclaw parser alone (no store)"
DUCKDB_PEER: Final = "DuckDB read_csv (native)"
OURS_CH: Final = "openclaw ingest -> ClickHouse"
OURS_CH_INLINE: Final = "openclaw ingest -> ClickHouse, inserts inline"
CLICKHOUSE_PEER: Final = "clickhouse-client INSERT FORMAT TSV (native)"

_TSV_HEADER: Final = "host\tlogname\ttime\tmethod\turl\tresponse\tbytes\treferer\tuseragent\n"
_PEER_TABLE_CH: Final = """
CREATE TABLE {db}.nasa (
    host String, logname String, time Int64, method String, url String,
    response Int16, bytes Int64, referer String, useragent String
) ENGINE = MergeTree ORDER BY (host, time)
"""
_PEER_COLUMNS_DUCKDB: Final = (
    "{'host': 'VARCHAR', 'logname': 'VARCHAR', 'time': 'BIGINT', 'method': 'VARCHAR', "
    "'url': 'VARCHAR', 'response': 'SMALLINT', 'bytes': 'BIGINT', 'referer': 'VARCHAR', "
    "'useragent': 'VARCHAR'}"
)
_PEER_LOAD_DUCKDB: Final = (
    "CREATE TABLE nasa AS SELECT * FROM read_csv($path, delim = '\t', header = true, "  # noqa: S608
    f"columns = {_PEER_COLUMNS_DUCKDB})"
)


@dataclass(frozen=True, slots=True)
class Options:
    lines: int = DEFAULT_LINES
    rounds: int = DEFAULT_ROUNDS
    clickhouse: str = "none"  # "none", "auto" or a clickhouse:// URL
    trace: Path = DEFAULT_TRACE
    json_path: Path | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """One import: events stored in ``wall_s``, using ``cpu_s`` of CPU time."""

    events: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def per_core(self) -> float:
        return self.events / self.cpu_s if self.cpu_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    how: str
    #: Imports the workload once (into a fresh store) and returns what it measured; raises
    #: when the result is wrong (events missing or rejected).
    run: Callable[[int], Run]
    target: float | None = None
    peer: bool = False


@dataclass(frozen=True, slots=True)
class Measured:
    contender: Contender
    runs: tuple[Run, ...]

    def median(self, attr: str) -> float:
        return float(statistics.median(float(getattr(r, attr)) for r in self.runs))

    def spread(self, attr: str) -> tuple[float, float]:
        values = [getattr(r, attr) for r in self.runs]
        return min(values), max(values)


@dataclass(frozen=True, slots=True)
class Part:
    title: str
    notes: tuple[str, ...]
    measured: tuple[Measured, ...]

    def peer(self) -> Measured | None:
        return next((m for m in self.measured if m.contender.peer), None)

    def ratio(self, m: Measured) -> tuple[float, float, float] | None:
        """Median, min and max over rounds of ``m``'s rate / the peer's, paired per round."""
        peer = self.peer()
        if peer is None:
            return None
        values = [a.rate / b.rate for a, b in zip(m.runs, peer.runs, strict=True) if b.rate]
        return statistics.median(values), min(values), max(values)


# -- the workload -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    tsv: Path
    clf: Path
    lines: int


def build_workload(trace: Path, lines: int, workdir: Path) -> Workload:
    """The trace repeated, each copy one more day later, cut to ``lines`` lines."""
    try:
        text = trace.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the trace {trace}: {exc.strerror or exc} (--trace names it; the "
            "default is relative to the repository root)"
        ) from exc
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    if not rows or len(rows[0]) < 7:
        raise ConfigError(f"{trace} is not a NASA TSV trace (host, -, time, method, url, ...)")
    times = np.array([int(r[2]) for r in rows], dtype=np.int64)
    copies = -(-lines // len(rows))
    tsv_lines: list[str] = []
    clf_lines: list[str] = []
    for k in range(copies):
        shifted = times + k * DAY_S
        iso = np.datetime_as_string(shifted.astype("datetime64[s]")).tolist()
        for r, t, when in zip(rows, shifted.tolist(), iso, strict=True):
            tsv_lines.append(f"{r[0]}\t-\t{t}\t{r[3]}\t{r[4]}\t{r[5]}\t{r[6]}\t\t\n")
            stamp = f"{when[8:10]}/{MONTHS[int(when[5:7]) - 1]}/{when[:4]}:{when[11:19]} +0000"
            clf_lines.append(f'{r[0]} - - [{stamp}] "{r[3]} {r[4]} HTTP/1.0" {r[5]} {r[6]}\n')
            if len(tsv_lines) == lines:
                break
    tsv = workdir / "nasa-repeated.tsv"
    tsv.write_text(_TSV_HEADER + "".join(tsv_lines))
    clf = workdir / "nasa-repeated.log"
    clf.write_text("".join(clf_lines))
    return Workload(tsv, clf, len(tsv_lines))


# -- measuring ----------------------------------------------------------------------------------


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(
    work: Callable[[], int], *, server_pid: int | None = None, children: bool = False
) -> Run:
    """Time ``work`` (which returns the events it stored): wall clock, and the CPU time of
    this process, of the server process if given, and of waited-for children if asked."""
    import gc

    gc.collect()  # garbage of the previous contender is not this one's to collect

    def cpu() -> float:
        total = time.process_time()
        if server_pid is not None:
            total += cpu_seconds(server_pid)
        if children:
            total += _children_cpu()
        return total

    cpu0, wall0 = cpu(), time.perf_counter()
    events = work()
    wall = time.perf_counter() - wall0
    return Run(events, wall, cpu() - cpu0)


def _expect(name: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError(f"{name}: stored {got:,} events, expected {want:,}")


def duckdb_contenders(workload: Workload, workdir: Path, settings: Settings) -> list[Contender]:
    import duckdb

    from openclaw.telemetry.stores import open_event_store

    n = workload.lines

    def fresh(name: str, r: int) -> Path:
        path = workdir / f"{name}-{r}.duckdb"
        path.unlink(missing_ok=True)
        return path

    def ours(source: Path, fmt: Format, name: str, *, background: bool) -> Callable[[int], Run]:
        def run(r: int) -> Run:
            path = fresh(name, r)

            def work() -> int:
                store = open_event_store(f"duckdb://{path}", settings=settings)
                try:
                    summary = ingest_file(
                        source, fmt, store, settings=settings, background=background
                    )
                finally:
                    store.close()  # in the timing: the file is complete only when closed
                if summary.rejected:
                    raise RuntimeError(f"{name}: {summary.rejected} lines rejected")
                return summary.stored

            result = measured(work)
            _expect(name, result.events, n)
            path.unlink()
            return result

        return run

    def parse_only(r: int) -> Run:
        del r
        result = measured(lambda: sum(len(c.batch) for c in parse_file(workload.tsv, "nasa-tsv")))
        _expect(PARSE_ONLY, result.events, n)
        return result

    def peer(r: int) -> Run:
        path = fresh("peer", r)

        def work() -> int:
            con = duckdb.connect(str(path))
            try:
                con.execute(_PEER_LOAD_DUCKDB, {"path": str(workload.tsv)})
                row = con.execute("SELECT count(*) FROM nasa").fetchone()
            finally:
                con.close()
            return int(row[0]) if row else 0

        result = measured(work)
        _expect(DUCKDB_PEER, result.events, n)
        path.unlink()
        return result

    return [
        Contender(
            OURS,
            "parse + validate + insert, inserts on a background thread (the default)",
            ours(workload.tsv, "nasa-tsv", "ours", background=True),
            target=DUCKDB_TARGET,
        ),
        Contender(
            OURS_INLINE,
            "the same, inserts in the parsing thread (background=False)",
            ours(workload.tsv, "nasa-tsv", "inline", background=False),
        ),
        Contender(
            OURS_CLF,
            "the same events as Common Log Format lines",
            ours(workload.clf, "clf", "clf", background=True),
        ),
        Contender(PARSE_ONLY, "parse_file of the TSV, batches dropped", parse_only),
        Contender(
            DUCKDB_PEER,
            "CREATE TABLE AS SELECT * FROM read_csv(TSV) in a fresh file: C++, multi-threaded, "
            "no validation or duplicate check",
            peer,
            peer=True,
        ),
    ]


@dataclass(slots=True)
class ClickHouseTarget:
    url: str  # a database of the server, whose name the runs replace
    where: str
    server_pid: int | None
    host: str
    port: int
    user: str
    password: str
    created: list[str] = field(default_factory=list)

    def database_url(self, database: str) -> str:
        from urllib.parse import quote

        auth = f"{quote(self.user)}:{quote(self.password)}@" if self.password else ""
        return f"clickhouse://{auth}{self.host}:{self.port}/{database}"

    def execute(self, query: str) -> list[tuple[Any, ...]]:
        from clickhouse_driver import Client

        client = Client(
            self.host, port=self.port, user=self.user, password=self.password,
            connect_timeout=5, send_receive_timeout=300,
        )  # fmt: skip
        try:
            rows: list[tuple[Any, ...]] = client.execute(query)
            return rows
        finally:
            client.disconnect()

    def fresh_database(self, name: str) -> str:
        database = f"openclaw_bench_{name}_{uuid.uuid4().hex[:8]}"
        self.created.append(database)
        return database

    def drop(self, database: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {database}")
        if database in self.created:
            self.created.remove(database)


def clickhouse_target(option: str, stack: ExitStack) -> ClickHouseTarget | None:
    """What ``--clickhouse`` names, reachable, or ConfigError before any measuring."""
    if option == "none":
        return None
    if option == "auto":
        from openclaw.testing.clickhouse import start_clickhouse

        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="openclaw-ch-")))
        server = start_clickhouse(workdir)
        stack.callback(server.stop)
        assert server.proc is not None
        target = ClickHouseTarget(
            server.url, f"throwaway on 127.0.0.1:{server.port}", server.proc.pid,
            "127.0.0.1", server.port, "default", "",
        )  # fmt: skip
    elif option.startswith("clickhouse://"):
        from openclaw.telemetry.clickhouse import parse_clickhouse_url

        url = parse_clickhouse_url(option)
        target = ClickHouseTarget(
            option, f"given server at {url.host}:{url.port}", None,
            url.host, url.port, url.user, url.password,
        )  # fmt: skip
    else:
        raise ConfigError(f"--clickhouse takes none, auto or a clickhouse:// URL, not {option!r}")
    try:
        target.execute("SELECT 1")
    except Exception as exc:
        raise ConfigError(
            f"cannot reach ClickHouse ({target.where}): {type(exc).__name__}: {exc}"
        ) from exc

    def drop_leftovers() -> None:
        for database in list(target.created):
            target.drop(database)

    stack.callback(drop_leftovers)
    return target


def clickhouse_client_command() -> list[str] | None:
    found = shutil.which("clickhouse-client")
    if found:
        return [found]
    found = shutil.which("clickhouse")
    return [found, "client"] if found else None


def clickhouse_contenders(
    workload: Workload, target: ClickHouseTarget, settings: Settings, notes: list[str]
) -> list[Contender]:
    from openclaw.telemetry.stores import open_event_store

    n = workload.lines

    def ours(name: str, *, background: bool) -> Callable[[int], Run]:
        def run(r: int) -> Run:
            del r
            database = target.fresh_database("ours")

            def work() -> int:
                store = open_event_store(target.database_url(database), settings=settings)
                try:
                    summary = ingest_file(
                        workload.tsv, "nasa-tsv", store, settings=settings, background=background
                    )
                finally:
                    store.close()
                if summary.rejected:
                    raise RuntimeError(f"{name}: {summary.rejected} lines rejected")
                return summary.stored

            result = measured(work, server_pid=target.server_pid)
            rows = target.execute(f"SELECT count() FROM {database}.events")  # noqa: S608 (ours)
            _expect(name, int(rows[0][0]), n)
            target.drop(database)
            return result

        return run

    contenders = [
        Contender(
            OURS_CH,
            "parse + validate + insert (stored-id check, then the new rows), inserts on a "
            "background thread (the default)",
            ours(OURS_CH, background=True),
            target=CLICKHOUSE_TARGET,
        ),
        Contender(
            OURS_CH_INLINE,
            "the same, inserts in the parsing thread",
            ours(OURS_CH_INLINE, background=False),
        ),
    ]
    client = clickhouse_client_command()
    if client is None:
        notes.append("no clickhouse-client (or clickhouse) on PATH: no native peer")
        return contenders

    def peer(r: int) -> Run:
        del r
        database = target.fresh_database("peer")
        target.execute(f"CREATE DATABASE {database}")
        target.execute(_PEER_TABLE_CH.format(db=database))
        command = [
            *client,
            f"--host={target.host}",
            f"--port={target.port}",
            f"--user={target.user}",
            f"--query=INSERT INTO {database}.nasa FORMAT TabSeparatedWithNames",
        ]
        env = {**os.environ, "CLICKHOUSE_PASSWORD": target.password} if target.password else None
        if target.password:
            command.append(f"--password={target.password}")

        def work() -> int:
            with workload.tsv.open("rb") as stdin:
                done = subprocess.run(  # noqa: S603 (our binary, our arguments)
                    command, stdin=stdin, capture_output=True, check=False, env=env
                )
            if done.returncode != 0:
                raise RuntimeError(f"{CLICKHOUSE_PEER} failed: {done.stderr.decode()[-500:]}")
            return n

        result = measured(work, server_pid=target.server_pid, children=True)
        rows = target.execute(f"SELECT count() FROM {database}.nasa")  # noqa: S608 (ours)
        _expect(CLICKHOUSE_PEER, int(rows[0][0]), n)
        target.drop(database)
        return result

    contenders.append(
        Contender(
            CLICKHOUSE_PEER,
            f"{Path(client[0]).name} --query 'INSERT INTO nasa FORMAT TabSeparatedWithNames' "
            "< TSV, into a MergeTree table of its columns (no duplicate check)",
            peer,
            peer=True,
        )
    )
    return contenders


def run_rounds(
    contenders: Sequence[Contender], rounds: int, progress: Callable[[str], None]
) -> tuple[Measured, ...]:
    runs: dict[str, list[Run]] = {c.name: [] for c in contenders}
    for r, i in rotation(len(contenders), rounds):
        contender = contenders[i]
        progress(f"round {r + 1}/{rounds}: {contender.name}")
        runs[contender.name].append(contender.run(r))
    return tuple(Measured(c, tuple(runs[c.name])) for c in contenders)


# -- report -------------------------------------------------------------------------------------


def _verdict(m: Measured) -> Text | None:
    target = m.contender.target
    if target is None:
        return None
    return verdict(m.median("rate") >= target, f"target >= {target:,.0f}/s")


def render(console: Console, part: Part, *, header: Sequence[str]) -> None:
    console.print()
    for text in header:
        print_line(console, text)
    grid = Table(title=part.title, title_justify="left", show_lines=True)
    grid.add_column("contender", min_width=30, max_width=58)
    grid.add_column("events/s\n(median)", justify="right", no_wrap=True)
    grid.add_column("spread\n(min - max)", justify="right", no_wrap=True)
    grid.add_column("CPU cores\nused", justify="right", no_wrap=True)
    grid.add_column("events/s\nper core", justify="right", no_wrap=True)
    peer = part.peer()
    if peer is not None:
        grid.add_column("x peer\n(min - max)", justify="right", no_wrap=True)
    for m in part.measured:
        low, high = m.spread("rate")
        cells: list[Text | str] = [
            Text.assemble((m.contender.name, "bold"), "\n", (m.contender.how, "dim")),
            f"{m.median('rate'):,.0f}",
            f"{low:,.0f} - {high:,.0f}",
            f"{m.median('cores'):.2f}",
            f"{m.median('per_core'):,.0f}",
        ]
        if peer is not None:
            ratio = part.ratio(m)
            cells.append(
                "" if ratio is None else f"{ratio[0]:.2f}x\n({ratio[1]:.2f} - {ratio[2]:.2f})"
            )
        verdict = _verdict(m)
        if verdict is not None:
            cells[1] = Text.assemble(cells[1], "\n", verdict)
        grid.add_row(*cells)
    console.print(grid)
    if peer is not None:
        print_line(console, f"  peer: {peer.contender.name}, measured in the same rounds", "dim")
    for note in part.notes:
        print_line(console, f"  note: {note}", "dim")
    for m in part.measured:
        verdict = _verdict(m)
        if verdict is not None:
            console.print(
                Text.assemble(
                    f"  {m.contender.name}: {m.median('rate'):,.0f} events/s "
                    f"({m.median('per_core'):,.0f} per core) ",
                    verdict,
                )
            )


def to_json(part: Part) -> dict[str, Any]:
    return {
        "title": part.title,
        "notes": list(part.notes),
        "contenders": [
            {
                "contender": m.contender.name,
                "how": m.contender.how,
                "events_per_s": m.median("rate"),
                "events_per_s_per_core": m.median("per_core"),
                "cpu_cores": m.median("cores"),
                "target": m.contender.target,
                "passed": None
                if m.contender.target is None
                else m.median("rate") >= m.contender.target,
                "ratio_to_peer": None if (q := part.ratio(m)) is None else q[0],
                "rounds": [
                    {"events": r.events, "wall_s": r.wall_s, "cpu_s": r.cpu_s} for r in m.runs
                ],
            }
            for m in part.measured
        ],
    }


def run(options: Options, *, command: str, console: Console | None = None) -> list[Part]:
    """Build the input, run every part, print each table as it completes; targets that fail
    are printed as FAIL, they do not raise."""
    import duckdb

    console = report_console(console)
    status_console = Console(stderr=True)
    settings = Settings()
    info = machine()
    parts: list[Part] = []
    with ExitStack() as stack:
        # First, so a wrong --clickhouse fails in seconds, not after the DuckDB part.
        target = clickhouse_target(options.clickhouse, stack)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="openclaw-bench-")))
        status = stack.enter_context(status_console.status("building the input"))
        workload = build_workload(options.trace, options.lines, workdir)
        size = workload.tsv.stat().st_size
        header = [
            f"$ {command}",
            f"machine: nproc={info.nproc}, Python {info.python}, {info.platform}; "
            f"load average {os.getloadavg()[0]:.2f} at the start (the cores are shared)",
            f"libraries: duckdb {duckdb.__version__}, numpy {np.__version__}",
            f"workload: {workload.lines:,} lines ({size / 1e6:,.0f} MB TSV): {options.trace.name} "
            f"repeated, each copy one day later; {options.rounds} rounds, each running every "
            "contender once into a fresh store",
        ]

        def progress(message: str) -> None:
            status.update(message)

        measured_duckdb = run_rounds(
            duckdb_contenders(workload, workdir, settings),
            options.rounds,
            lambda s: progress(f"duckdb: {s}"),
        )
        duck = Part(
            "Log import into DuckDB, events/s",
            (
                "ours and the CLF contender insert with the store's duplicate check "
                "(an anti-join on event_id within the batch's time range); the peer loads the "
                "file's columns as they are",
                f"inserts of {100_000:,} events; the parser reads 256 KiB chunks",
            ),
            measured_duckdb,
        )
        parts.append(duck)
        status.stop()
        render(console, duck, header=header)
        if target is not None:
            status.start()
            notes = [
                f"ClickHouse {target.execute('SELECT version()')[0][0]}, {target.where}; "
                "client and server share the machine"
                + ("" if target.server_pid else " (server CPU not counted: not ours to see)")
            ]
            contenders = clickhouse_contenders(workload, target, settings, notes)
            ch = Part(
                "Log import into ClickHouse, events/s",
                tuple(notes),
                run_rounds(contenders, options.rounds, lambda s: progress(f"clickhouse: {s}")),
            )
            parts.append(ch)
            status.stop()
            render(console, ch, header=[])
    payload = {
        "command": command,
        "lines": options.lines,
        "rounds": options.rounds,
        "parts": [to_json(p) for p in parts],
    }
    write_json(options.json_path, payload, console)
    return parts
