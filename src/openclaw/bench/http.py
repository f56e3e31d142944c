"""The Rating API over HTTP on loopback: ``openclaw serve`` in a process of its own, loaded by
external tools so the load generator never shares Python's interpreter with the server.

Three parts, each round running every contender back to back (the first rotates):

* throughput: ``wrk`` saturating ``GET /api/v1/rate`` (client ids cycled by a Lua script)
  against the same server's bare JSON endpoint ``/healthz``, the ceiling of the stack
  (uvicorn, Starlette, one Python process) with no decision in it;
* fixed rate: an open-loop generator (Node, built-in modules only: wrk cannot hold a rate,
  and autocannon's ``--overallRate`` sends each second's quota as a burst) sends requests on
  a schedule and times each from the moment it was due, so queueing shows up as latency;
* batch: ``wrk`` posting ``/api/v1/rate/batch`` bodies of ``BATCH`` decisions.

With ``--redis`` the same three run again on a server whose store is Redis
(``OPENCLAW_STORE_URL``). Figures are medians over rounds; ratios are paired within a round.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from openclaw.bench.limiter import (
    command_line,
    machine,
    print_line,
    redis_target,
    report_console,
    rotation,
    verdict,
    write_json,
)
from openclaw.errors import ConfigError
from openclaw.testing.redis import free_port

__all__ = ["Options", "command_line", "run"]

#: Distinct client ids the single-decision load cycles through.
KEYS: Final = 10_000
#: Decisions per batch request, and distinct batch bodies (so BATCH * BODIES client ids).
BATCH: Final = 1000
BODIES: Final = 100
#: wrk connections (one wrk thread: the server is one Python process, on one core).
CONNECTIONS: Final = 16
BATCH_CONNECTIONS: Final = 4
#: Sockets the fixed-rate generator may open; requests wait for one when all are busy.
FIXED_SOCKETS: Final = 64
FIXED_WARMUP_S: Final = 0.5

THROUGHPUT_TARGET: Final = 0.6  # GET /api/v1/rate / /healthz, requests per second
P99_TARGET_MS: Final = 10.0  # GET /api/v1/rate at the fixed rate
BATCH_TARGET: Final = 200_000.0  # decisions per second through /api/v1/rate/batch

CEILING: Final = "GET /healthz (ceiling)"
RATE: Final = "GET /api/v1/rate"
BATCHED: Final = f"POST /api/v1/rate/batch ({BATCH} per request)"

RATE_PATH: Final = "/api/v1/rate?client_id=http-bench-"
POLICY: Final = """\
# Every bench request is allowed: a billion per second per client.
[tiers.default]
limits = [{ capacity = 1e9, refill_rate = 1e9 }]
"""

#: wrk's ``done``: the summary as one JSON line, which ``wrk_summary`` reads.
WRK_DONE: Final = """\
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'OPENCLAW {"requests":%d,"us":%d,"errors":%d,"non2xx":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""

#: wrk: one GET per call, the client id cycled over KEYS.
WRK_GET: Final = (
    """\
local prefix = os.getenv("OPENCLAW_BENCH_PATH")
local keys = tonumber(os.getenv("OPENCLAW_BENCH_KEYS"))
local n = 0
function request()
  n = n + 1
  if keys > 0 then
    return wrk.format("GET", prefix .. (n % keys))
  end
  return wrk.format("GET", prefix)
end
"""
    + WRK_DONE
)

#: wrk: batch bodies built once per thread, posted in turn.
WRK_BATCH: Final = (
    """\
local size = tonumber(os.getenv("OPENCLAW_BENCH_BATCH"))
local count = tonumber(os.getenv("OPENCLAW_BENCH_BODIES"))
local bodies = {}
local n = 0
function init(args)
  for b = 0, count - 1 do
    local parts = {}
    for i = 0, size - 1 do
      parts[#parts + 1] = string.format('{"client_id":"http-bench-b%d"}', b * size + i)
    end
    bodies[#bodies + 1] = '{"requests":[' .. table.concat(parts, ",") .. ']}'
  end
end
function request()
  n = n + 1
  return wrk.format("POST", "/api/v1/rate/batch", {["Content-Type"] = "application/json"},
                    bodies[(n % #bodies) + 1])
end
"""
    + WRK_DONE
)

#: Node, built-in modules only: open-loop requests on a fixed schedule, each timed from the
#: moment it was due (not sent), so a stalled server cannot hide behind a slower send rate.
FIXED_RATE_JS: Final = r"""
import http from 'node:http';
import { createHistogram } from 'node:perf_hooks';

const [base, path, keysArg, rateArg, secondsArg, socketsArg, warmupArg] = process.argv.slice(2);
const url = new URL(base);
const keys = Number(keysArg), rate = Number(rateArg), seconds = Number(secondsArg);
const warmup = Math.round(Number(warmupArg) * rate);
const total = warmup + Math.round(rate * seconds);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(socketsArg) });
const hist = createHistogram();
let sent = 0, finished = 0, errors = 0, non2xx = 0, measuredStart = 0n, last = 0n;
const start = process.hrtime.bigint();
const due = (i) => start + BigInt(Math.round((i * 1e9) / rate));

function report() {
  const q = (p) => hist.count ? hist.percentile(p) / 1e6 : null;
  const s = Number(last - measuredStart) / 1e9;
  process.stdout.write('OPENCLAW ' + JSON.stringify({
    sent: total - warmup, completed: hist.count, errors, non2xx, seconds: s,
    p50: q(50), p90: q(90), p99: q(99), p999: q(99.9), max: hist.count ? hist.max / 1e6 : null,
  }) + '\n');
  agent.destroy();
  process.exit(0);
}

function finish(i, ok) {
  finished++;
  const now = process.hrtime.bigint();
  if (i >= warmup) {
    if (ok) hist.record(Math.max(1, Number(now - due(i))));
    last = now;
  }
  if (finished === total) report();
}

function fire(i) {
  if (i === warmup) measuredStart = due(i);
  const p = keys > 0 ? path + (i % keys) : path;
  const req = http.request({ host: url.hostname, port: url.port, path: p, agent }, (res) => {
    const ok = res.statusCode >= 200 && res.statusCode < 300;
    if (!ok && i >= warmup) non2xx++;
    res.on('data', () => {});
    res.on('end', () => finish(i, ok));
  });
  req.on('error', () => { if (i >= warmup) errors++; finish(i, false); });
  req.end();
}

function tick() {
  const now = process.hrtime.bigint();
  while (sent < total && due(sent) <= now) fire(sent++);
  if (sent < total) setTimeout(tick, 1);
}
setTimeout(report, (Number(warmupArg) + seconds + 20) * 1000).unref();
tick();
"""


# -- options and results ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    seconds: float = 3.0  # each wrk run
    fixed_seconds: float = 4.0  # each fixed-rate run (after FIXED_WARMUP_S)
    rate: float = 5000.0  # requests per second of the fixed-rate part
    rounds: int = 3
    redis: str = "none"  # "none", "auto" or a redis:// URL
    json_path: Path | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """One tool run: requests (or decisions) per second and its latency percentiles (ms)."""

    rate: float
    p50_ms: float
    p99_ms: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Rounds:
    """Every contender's runs, in round order."""

    runs: dict[str, list[Run]] = field(default_factory=dict)

    def add(self, name: str, run: Run) -> None:
        self.runs.setdefault(name, []).append(run)

    def median(self, name: str, attr: str) -> float:
        return statistics.median(self.values(name, attr))

    def values(self, name: str, attr: str) -> list[float]:
        return [r.extra[attr] if attr in r.extra else getattr(r, attr) for r in self.runs[name]]

    def ratio(self, top: str, bottom: str, attr: str = "rate") -> list[float]:
        return [
            a / b if b > 0 else 0.0
            for a, b in zip(self.values(top, attr), self.values(bottom, attr), strict=True)
        ]


def find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise ConfigError("wrk is not on PATH (Debian: apt-get install wrk)")
    return wrk


@dataclass(frozen=True, slots=True)
class Tools:
    wrk: str
    node: str

    @staticmethod
    def find() -> Tools:
        wrk, node = find_wrk(), shutil.which("node")
        if node is None:
            raise ConfigError("node is not on PATH (Debian: apt-get install nodejs; >= 18)")
        return Tools(wrk, node)

    def versions(self) -> str:
        def output(*argv: str) -> str:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
            return done.stdout + done.stderr

        wrk, node = output(self.wrk, "-v"), output(self.node, "--version")
        return f"{wrk.splitlines()[0].split(' [')[0]}; node {node.strip()}"


# -- the server under test ----------------------------------------------------------------


@contextmanager
def serve_process(
    workdir: Path, port: int, *, env: dict[str, str], args: Sequence[str] = (), stop_s: float = 20
) -> Iterator[subprocess.Popen[bytes]]:
    """``openclaw serve`` on 127.0.0.1:``port`` in a process of its own (``env`` added to
    ours), ready once ``/readyz`` answers; SIGTERM when the block ends (it shuts down
    gracefully), killed if it takes longer than ``stop_s``."""
    log = (workdir / f"serve-{port}.log").open("wb")
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(  # noqa: S603 - our argv, not a shell line
        [sys.executable, "-c", "from openclaw.cli import app; app()", *serve],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"openclaw serve exited with {proc.returncode}: {log.name}")
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"openclaw serve did not get ready in 30 s: {log.name}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(stop_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def serving(store_url: str, workdir: Path) -> Iterator[str]:
    """The server under test, with the bench policy, checked to allow before it is used."""
    policy = workdir / "policy.toml"
    policy.write_text(POLICY)
    port = free_port()
    env = {
        "OPENCLAW_STORE_URL": store_url,
        # A telemetry file of its own: a DuckDB file has one writing process at a time.
        "OPENCLAW_TELEMETRY_URL": f"duckdb://{workdir / f'telemetry-{port}.duckdb'}",
    }
    with serve_process(workdir, port, env=env, args=["--policy", str(policy)]):
        base = f"http://127.0.0.1:{port}"
        check_allows(base)
        yield base


def check_allows(base: str) -> None:
    """The workload must be what it says (every decision allowed, from the store asked for)
    before any figure is taken."""
    # base is the http://127.0.0.1 URL of the server we started
    with urllib.request.urlopen(f"{base}{RATE_PATH}probe", timeout=5) as answer:  # noqa: S310
        body = json.loads(answer.read())
    if body.get("allowed") is not True:
        raise RuntimeError(f"the bench policy did not allow: {body}")
    request = urllib.request.Request(  # noqa: S310
        f"{base}/api/v1/rate/batch",
        data=json.dumps({"requests": [{"client_id": f"probe-{i}"} for i in range(10)]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        decisions = json.loads(answer.read())["decisions"]
    if len(decisions) != 10 or not all(d["allowed"] for d in decisions):
        raise RuntimeError(f"the batch endpoint did not allow all 10: {decisions}")


# -- the load generators -------------------------------------------------------------------


def wrk_summary(out: str, what: str, err: str = "") -> dict[str, Any]:
    """The ``OPENCLAW {json}`` line a load generator printed (WRK_DONE, FIXED_RATE_JS)."""
    for line in out.splitlines():
        if line.startswith("OPENCLAW "):
            parsed: dict[str, Any] = json.loads(line.removeprefix("OPENCLAW "))
            return parsed
    raise RuntimeError(f"{what} printed no summary:\n{out[-2000:]}{err[-2000:]}")


def run_wrk(
    wrk_path: str, script: Path, base: str, *, seconds: float, connections: int, env: dict[str, str]
) -> dict[str, Any]:
    """One wrk run (one thread, ``seconds`` rounded to whole seconds, at least one) of a
    script ending in WRK_DONE; its summary, unchecked."""
    args = [wrk_path, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    done = subprocess.run(  # noqa: S603 - our argv, not a shell line
        [*args, "-s", str(script), base],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=seconds + 60,
        check=False,
    )
    return wrk_summary(done.stdout, "wrk", done.stderr)


def wrk(
    tools: Tools, script: Path, base: str, *, seconds: float, connections: int, env: dict[str, str]
) -> dict[str, Any]:
    summary = run_wrk(tools.wrk, script, base, seconds=seconds, connections=connections, env=env)
    if summary["errors"] or summary["non2xx"]:
        raise RuntimeError(f"wrk saw {summary['errors']} errors, {summary['non2xx']} non-2xx")
    return summary


def wrk_run(summary: dict[str, Any], per_request: int = 1) -> Run:
    seconds = summary["us"] / 1e6
    return Run(
        summary["requests"] * per_request / seconds,
        summary["p50"] / 1000,
        summary["p99"] / 1000,
    )


def fixed_rate(
    tools: Tools, script: Path, base: str, *, path: str, keys: int, options: Options
) -> Run:
    args = [base, path, str(keys), f"{options.rate:g}", f"{options.fixed_seconds:g}"]
    done = subprocess.run(  # noqa: S603 - our argv, not a shell line
        [tools.node, str(script), *args, str(FIXED_SOCKETS), f"{FIXED_WARMUP_S:g}"],
        capture_output=True,
        text=True,
        timeout=options.fixed_seconds + 60,
        check=False,
    )
    s = wrk_summary(done.stdout, "the fixed-rate generator")
    if s["errors"] or s["non2xx"] or s["completed"] != s["sent"]:
        raise RuntimeError(
            f"fixed rate on {path}: {s['completed']} of {s['sent']} answered, "
            f"{s['errors']} errors, {s['non2xx']} non-2xx"
        )
    return Run(
        s["completed"] / s["seconds"],
        s["p50"],
        s["p99"],
        {"p90_ms": s["p90"], "p999_ms": s["p999"], "max_ms": s["max"]},
    )


# -- one store ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreReport:
    store: str
    throughput: Rounds
    fixed: Rounds
    batch: Rounds


def measure_store(
    store_url: str,
    label: str,
    *,
    tools: Tools,
    workdir: Path,
    options: Options,
    progress: Callable[[str], None],
) -> StoreReport:
    get_lua, batch_lua, js = workdir / "get.lua", workdir / "batch.lua", workdir / "fixed.mjs"
    get_lua.write_text(WRK_GET)
    batch_lua.write_text(WRK_BATCH)
    js.write_text(FIXED_RATE_JS)
    throughput, fixed, batch = Rounds(), Rounds(), Rounds()
    with serving(store_url, workdir) as base:
        ceiling_env = {"OPENCLAW_BENCH_PATH": "/healthz", "OPENCLAW_BENCH_KEYS": "0"}
        rate_env = {"OPENCLAW_BENCH_PATH": RATE_PATH, "OPENCLAW_BENCH_KEYS": str(KEYS)}
        batch_env = {"OPENCLAW_BENCH_BATCH": str(BATCH), "OPENCLAW_BENCH_BODIES": str(BODIES)}
        # Warm-up: connections, the buckets of every client id, the server's caches.
        progress(f"{label}: warming up")
        wrk(tools, get_lua, base, seconds=1, connections=CONNECTIONS, env=rate_env)
        wrk(tools, batch_lua, base, seconds=1, connections=BATCH_CONNECTIONS, env=batch_env)

        def saturated(name: str, env: dict[str, str]) -> Callable[[], None]:
            """One saturated wrk run of GET ``name`` (the ceiling or a decision)."""

            def run_once() -> None:
                result = wrk(
                    tools,
                    get_lua,
                    base,
                    seconds=options.seconds,
                    connections=CONNECTIONS,
                    env=env,
                )
                throughput.add(name, wrk_run(result))

            return run_once

        contenders: list[tuple[str, Callable[[], None]]] = [
            (CEILING, saturated(CEILING, ceiling_env)),
            (RATE, saturated(RATE, rate_env)),
            (
                BATCHED,
                lambda: batch.add(
                    BATCHED,
                    wrk_run(
                        wrk(
                            tools,
                            batch_lua,
                            base,
                            seconds=options.seconds,
                            connections=BATCH_CONNECTIONS,
                            env=batch_env,
                        ),
                        BATCH,
                    ),
                ),
            ),
            (
                f"fixed rate {CEILING}",
                lambda: fixed.add(
                    CEILING, fixed_rate(tools, js, base, path="/healthz", keys=0, options=options)
                ),
            ),
            (
                f"fixed rate {RATE}",
                lambda: fixed.add(
                    RATE, fixed_rate(tools, js, base, path=RATE_PATH, keys=KEYS, options=options)
                ),
            ),
        ]
        for r, i in rotation(len(contenders), options.rounds):
            name, step = contenders[i]
            progress(f"{label}: round {r + 1}/{options.rounds}: {name}")
            step()
    return StoreReport(label, throughput, fixed, batch)


# -- report ---------------------------------------------------------------------------------


def _header(console: Console, command: str, tools: str, workload: str, rounds: str) -> None:
    console.print()
    print_line(console, f"$ {command}", "bold")
    print_line(console, f"machine: {machine().describe()}")
    print_line(console, f"tools: {tools}; server: openclaw serve (uvicorn, one process), loopback")
    print_line(console, f"workload: {workload}")
    print_line(console, f"rounds: {rounds}")


def _ms(x: float) -> str:
    return f"{x:.2f}"


def _spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(min(values))} - {fmt(max(values))}"


def render(
    console: Console, report: StoreReport, options: Options, command: str, tools: str
) -> None:
    t, f, b = report.throughput, report.fixed, report.batch
    rounds = options.rounds
    # throughput
    _header(
        console,
        command,
        tools,
        f"{report.store} store; wrk -t1 -c{CONNECTIONS} for {options.seconds:g} s per run; "
        f"GET /api/v1/rate cycles {KEYS:,} client ids, every decision allowed",
        f"{rounds}, each running every contender (throughput, batch, fixed rate) once",
    )
    grid = Table(title=f"Single decisions, saturated ({report.store} store)", title_justify="left")
    for col in ("contender", "requests/s\n(median)", "spread", "p50 ms", "p99 ms"):
        grid.add_column(col, justify="left" if col == "contender" else "right")
    grid.add_column(f"x {CEILING}\n(min - max)", justify="right")
    ratio = t.ratio(RATE, CEILING)
    ok = statistics.median(ratio) >= THROUGHPUT_TARGET
    for name in (CEILING, RATE):
        rates = t.values(name, "rate")
        cell: Text | str = ""
        if name == RATE:
            cell = Text(f"{statistics.median(ratio):.2f}x\n({min(ratio):.2f} - {max(ratio):.2f})\n")
            cell.append_text(verdict(ok, f"target >= {THROUGHPUT_TARGET:g}x"))
        grid.add_row(
            name,
            f"{statistics.median(rates):,.0f}",
            _spread(rates, lambda x: f"{x:,.0f}"),
            _ms(t.median(name, "p50_ms")),
            _ms(t.median(name, "p99_ms")),
            cell,
        )
    console.print(grid)
    print_line(
        console,
        "  note: p50/p99 are wrk's at saturation: queueing, not the latency at a given load "
        "(that is the fixed-rate table)",
        "dim",
    )
    console.print(
        Text.assemble(
            f"  {RATE} / {CEILING} = {statistics.median(ratio):.2f}x ",
            verdict(ok, f"target >= {THROUGHPUT_TARGET:g}x"),
        )
    )
    # fixed rate
    _header(
        console,
        command,
        tools,
        f"{report.store} store; {options.rate:,.0f} requests/s on a fixed schedule (open loop, "
        f"Node http, up to {FIXED_SOCKETS} keep-alive sockets) for {options.fixed_seconds:g} s "
        f"after a {FIXED_WARMUP_S:g} s warm-up; latency from when each request was due",
        f"{rounds}, interleaved with the other tables' runs",
    )
    grid = Table(
        title=f"Latency at {options.rate:,.0f} requests/s ({report.store} store)",
        title_justify="left",
    )
    cols = ("contender", "achieved/s", "p50 ms", "p90 ms", "p99 ms\n(median)")
    for col in (*cols, "p99 ms\n(min - max)", "p99.9 ms", "max ms\n(worst)"):
        grid.add_column(col, justify="left" if col == "contender" else "right")
    p99 = f.median(RATE, "p99_ms")
    fixed_ok = p99 < P99_TARGET_MS
    for name in (CEILING, RATE):
        p99s = f.values(name, "p99_ms")
        cell = Text(_spread(p99s, _ms))
        if name == RATE:
            cell.append("\n")
            cell.append_text(verdict(fixed_ok, f"target < {P99_TARGET_MS:g} ms"))
        grid.add_row(
            name,
            f"{f.median(name, 'rate'):,.0f}",
            _ms(f.median(name, "p50_ms")),
            _ms(f.median(name, "p90_ms")),
            _ms(f.median(name, "p99_ms")),
            cell,
            _ms(f.median(name, "p999_ms")),
            _ms(max(f.values(name, "max_ms"))),
        )
    console.print(grid)
    console.print(
        Text.assemble(
            f"  {RATE} p99 at {options.rate:,.0f}/s = {p99:.2f} ms ",
            verdict(fixed_ok, f"target < {P99_TARGET_MS:g} ms"),
        )
    )
    # batch
    _header(
        console,
        command,
        tools,
        f"{report.store} store; wrk -t1 -c{BATCH_CONNECTIONS} for {options.seconds:g} s per run "
        f"posting {BODIES} bodies of {BATCH} client ids in turn ({BATCH * BODIES:,} ids), "
        "every decision allowed",
        f"{rounds}, interleaved with the other tables' runs",
    )
    grid = Table(title=f"Batch decisions ({report.store} store)", title_justify="left")
    for col in ("contender", "decisions/s\n(median)", "spread", "p50 ms\n(request)", "p99 ms"):
        grid.add_column(col, justify="left" if col == "contender" else "right")
    grid.add_column(f"x {RATE}\ndecisions/s", justify="right")
    decisions = b.values(BATCHED, "rate")
    batch_ok = statistics.median(decisions) >= BATCH_TARGET
    versus = [
        x / y if y > 0 else 0.0 for x, y in zip(decisions, t.values(RATE, "rate"), strict=True)
    ]
    cell = Text(f"{statistics.median(decisions):,.0f}\n")
    cell.append_text(verdict(batch_ok, f"target >= {BATCH_TARGET:,.0f}"))
    grid.add_row(
        BATCHED,
        cell,
        _spread(decisions, lambda x: f"{x:,.0f}"),
        _ms(b.median(BATCHED, "p50_ms")),
        _ms(b.median(BATCHED, "p99_ms")),
        f"{statistics.median(versus):.1f}x\n({min(versus):.1f} - {max(versus):.1f})",
    )
    console.print(grid)
    console.print(
        Text.assemble(
            f"  {BATCHED}: {statistics.median(decisions):,.0f} decisions/s ",
            verdict(batch_ok, f"target >= {BATCH_TARGET:,.0f}"),
        )
    )


def to_json(reports: Sequence[StoreReport], options: Options, command: str) -> dict[str, Any]:
    def table(rounds: Rounds) -> dict[str, Any]:
        return {
            name: [
                {"rate": r.rate, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, **r.extra} for r in runs
            ]
            for name, runs in rounds.runs.items()
        }

    return {
        "command": command,
        "machine": machine().to_json(),
        "options": {
            "seconds": options.seconds,
            "fixed_seconds": options.fixed_seconds,
            "rate": options.rate,
            "rounds": options.rounds,
            "redis": options.redis,
        },
        "stores": {
            r.store: {
                "throughput": table(r.throughput),
                "fixed_rate": table(r.fixed),
                "batch": table(r.batch),
            }
            for r in reports
        },
    }


def run(options: Options, *, command: str, console: Console | None = None) -> list[StoreReport]:
    """Every store the options ask for; each store's tables print as soon as it is done.
    Missed targets print FAIL; they do not raise."""
    console = report_console(console)
    tools = Tools.find()
    versions = tools.versions()
    reports: list[StoreReport] = []
    with ExitStack() as stack:
        target = redis_target(options.redis, stack)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="openclaw-http-")))
        status = stack.enter_context(Console(stderr=True).status("starting"))
        stores = [("memory://", "memory")]
        if target is not None:
            stores.append((target.url, f"redis ({target.where}, redis-server {target.version})"))
        for url, label in stores:
            report = measure_store(
                url, label, tools=tools, workdir=workdir, options=options, progress=status.update
            )
            reports.append(report)
            status.stop()
            render(console, report, options, command, versions)
            status.start()
    write_json(options.json_path, to_json(reports, options, command), console)
    return reports
