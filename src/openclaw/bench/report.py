"""``openclaw bench report``: every benchmark in one run, written to ``docs/benchmarks.md``.

Each benchmark runs as its own command (``openclaw bench NAME ... --json FILE``) in a process
of its own, one after the other, so none inherits another's heap, threads or servers, and the
command printed above its table is exactly what reproduces it. The report reads each one's
JSON and puts every figure beside the peer measured in the same run: the value, the peer's
value, their ratio, the target and PASS or FAIL. A benchmark that fails (a missing tool, a
server that did not start) is recorded as an error in its section; the others still run.

Parsing the JSON (``rows_*``) and writing the Markdown (``render``) are pure functions of
their inputs; the shell (``run``) gathers the machine, the date and the commit.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

#: The report's default destination, relative to the repository's root.
DOCUMENT: Final = Path("docs/benchmarks.md")

#: Units whose values are counts per second or bytes: printed as whole numbers.
_COUNT_UNITS: Final = ("decisions/s", "requests/s", "events/s", "events/s per core", "B/client")


@dataclass(frozen=True, slots=True)
class Row:
    """One figure of ours beside its peer, measured in the same run."""

    figure: str
    ours: str
    value: float
    peer: str
    peer_value: float
    unit: str
    ratio: float  # ours / peer, in ``unit``; paired round by round where the bench pairs
    ratio_low: float | None = None  # the lowest and highest per-round ratio, when paired
    ratio_high: float | None = None
    target: str = ""
    passed: bool | None = None


@dataclass(frozen=True, slots=True)
class Bench:
    """One benchmark as the report runs it."""

    name: str
    title: str
    args: tuple[str, ...]  # after ``openclaw bench NAME``, for the full report
    quick_args: tuple[str, ...]
    estimate_s: float  # the full run on a 2-core machine, for the report's forecast
    rows: Callable[[Mapping[str, Any]], tuple[list[Row], list[str]]]
    ratio_meaning: str

    def command(self, *, quick: bool) -> str:
        return shlex.join(
            ["openclaw", "bench", self.name, *(self.quick_args if quick else self.args)]
        )


@dataclass(frozen=True, slots=True)
class BenchResult:
    name: str
    title: str
    command: str
    ratio_meaning: str
    seconds: float
    load_before: float
    rows: tuple[Row, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Meta:
    """Where and when the report ran."""

    command: str
    date: str
    commit: str
    machine: str
    cpu: str
    libraries: str
    load_start: float
    load_end: float
    seconds: float
    quick: bool


# -- reading each benchmark's JSON ----------------------------------------------------------


def _paired(ours: Sequence[float], peer: Sequence[float]) -> tuple[float, float, float]:
    """Median, lowest and highest of ``ours[i] / peer[i]`` (rounds run back to back)."""
    values = [a / b if b > 0 else math.nan for a, b in zip(ours, peer, strict=True)]
    return statistics.median(values), min(values), max(values)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def _row_paired(
    figure: str,
    ours: tuple[str, Sequence[float]],
    peer: tuple[str, Sequence[float]],
    unit: str,
    *,
    target: str = "",
    passed: bool | None = None,
) -> Row:
    med, low, high = _paired(ours[1], peer[1])
    return Row(
        figure=figure,
        ours=ours[0],
        value=statistics.median(ours[1]),
        peer=peer[0],
        peer_value=statistics.median(peer[1]),
        unit=unit,
        ratio=med,
        ratio_low=low if len(ours[1]) > 1 else None,
        ratio_high=high if len(ours[1]) > 1 else None,
        target=target,
        passed=passed,
    )


def rows_limiter(payload: Mapping[str, Any]) -> tuple[list[Row], list[str]]:
    """Every openclaw contender against every peer of its table, paired per round."""
    rows: list[Row] = []
    notes: list[str] = []
    for table in payload["tables"]:
        results = {r["contender"]: r["rounds"] for r in table["results"]}
        targets = {
            (q["contender"], q["baseline"]): (q["target"], q["passed"])
            for q in table["ratios"]
            if q["target"] is not None
        }
        ours = [name for name in results if name.startswith("openclaw")]
        peers = [name for name in results if not name.startswith("openclaw")]
        for name in ours:
            for peer in peers:
                target, passed = targets.get((name, peer), (None, None))
                rows.append(
                    _row_paired(
                        table["title"],
                        (name, results[name]),
                        (peer, results[peer]),
                        "decisions/s",
                        target="" if target is None else f"ratio >= {target:g}x",
                        passed=passed,
                    )
                )
        notes += [f"{table['title']}: {note}" for note in table["notes"]]
    return rows, notes


def rows_http(payload: Mapping[str, Any]) -> tuple[list[Row], list[str]]:
    from openclaw.bench.http import (
        BATCH_TARGET,
        BATCHED,
        CEILING,
        P99_TARGET_MS,
        RATE,
        THROUGHPUT_TARGET,
    )

    rows: list[Row] = []
    rate = payload["options"]["rate"]
    for store, tables in payload["stores"].items():

        def values(
            table: str, name: str, key: str, tables: Mapping[str, Any] = tables
        ) -> list[float]:
            return [float(run[key]) for run in tables[table][name]]

        saturated = _row_paired(
            f"single decisions, saturated ({store})",
            (RATE, values("throughput", RATE, "rate")),
            (CEILING, values("throughput", CEILING, "rate")),
            "requests/s",
            target=f"ratio >= {THROUGHPUT_TARGET:g}x",
        )
        rows.append(_with_pass(saturated, saturated.ratio >= THROUGHPUT_TARGET))
        for q, target in (("p99_ms", P99_TARGET_MS), ("p50_ms", None)):
            row = _row_paired(
                f"latency at {rate:,.0f} requests/s, {q[:-3]} ({store})",
                (RATE, values("fixed_rate", RATE, q)),
                (CEILING, values("fixed_rate", CEILING, q)),
                "ms",
                target="" if target is None else f"< {target:g} ms",
            )
            rows.append(row if target is None else _with_pass(row, row.value < target))
        batch = _row_paired(
            f"batch decisions ({store})",
            (BATCHED, values("batch", BATCHED, "rate")),
            (f"{RATE} (one decision a request)", values("throughput", RATE, "rate")),
            "decisions/s",
            target=f">= {BATCH_TARGET:,.0f} decisions/s",
        )
        rows.append(_with_pass(batch, batch.value >= BATCH_TARGET))
    return rows, []


def _with_pass(row: Row, passed: bool) -> Row:
    return replace(row, passed=passed)


def rows_grpc(payload: Mapping[str, Any]) -> tuple[list[Row], list[str]]:
    peer = payload["peer"]
    target = payload["target_p99_ms"]
    results = payload["results"]
    rows: list[Row] = []
    for name, runs in results.items():
        if name == peer:
            continue
        for q in ("p99_ms", "p50_ms"):
            row = _row_paired(
                f"ShouldRateLimit latency at {payload['rate']:,.0f}/s, {q[:-3]}",
                (name, [r[q] for r in runs]),
                (peer, [r[q] for r in results[peer]]),
                "ms",
                target=f"< {target:g} ms" if q == "p99_ms" else "",
            )
            rows.append(_with_pass(row, row.value < target) if q == "p99_ms" else row)
    errors = sum(r["errors"] for runs in results.values() for r in runs)
    notes = [
        f"load generator: {payload['generator']}; {errors} errors in all runs",
    ]
    return rows, notes


def rows_ingest(payload: Mapping[str, Any]) -> tuple[list[Row], list[str]]:
    from openclaw.bench.ingest import CLICKHOUSE_PEER, DUCKDB_PEER

    rows: list[Row] = []
    notes: list[str] = []
    for part in payload["parts"]:
        by_name = {c["contender"]: c for c in part["contenders"]}
        peer_name = next(n for n in (DUCKDB_PEER, CLICKHOUSE_PEER) if n in by_name)
        peer = by_name[peer_name]
        for name, c in by_name.items():
            if name == peer_name:
                continue
            target = c["target"]
            rows.append(
                Row(
                    figure=part["title"],
                    ours=name,
                    value=c["events_per_s"],
                    peer=peer_name,
                    peer_value=peer["events_per_s"],
                    unit="events/s",
                    ratio=c["ratio_to_peer"],
                    target="" if target is None else f">= {target:,.0f} events/s",
                    passed=c["passed"],
                )
            )
        notes += [f"{part['title']}: {note}" for note in part["notes"]]
    notes.append(f"{payload['lines']:,} lines, {payload['rounds']} round(s)")
    return rows, notes


def rows_telemetry_http(payload: Mapping[str, Any]) -> tuple[list[Row], list[str]]:
    from openclaw.bench.telemetry_http import (
        CEILING,
        INGEST,
        INSERT,
        PARSE,
        TARGET,
        backpressure_note,
    )

    runs = payload["runs"]

    def values(name: str, key: str) -> tuple[str, list[float]]:
        return name, [float(r[key]) for r in runs[name]]

    headline = _row_paired(
        "NDJSON events through HTTP",
        values(INGEST, "events_per_s"),
        values(CEILING, "events_per_s"),
        "events/s",
        target=f">= {TARGET:,.0f} events/s",
    )
    rows = [
        _with_pass(headline, headline.value >= TARGET),
        _row_paired(
            "CPU cost: the endpoint against the parser alone",
            values(INGEST, "events_per_s_per_core"),
            values(PARSE, "events_per_s_per_core"),
            "events/s per core",
        ),
        _row_paired(
            "CPU cost: the endpoint against the store alone",
            values(INGEST, "events_per_s_per_core"),
            values(INSERT, "events_per_s_per_core"),
            "events/s per core",
        ),
    ]
    notes = [
        f"verified after SIGTERM: {payload['accepted']:,} events accepted, "
        f"{payload['stored']:,} stored",
        backpressure_note(payload["runs"][INGEST]),
    ]
    return rows, notes


def rows_features(payload: Mapping[str, Any]) -> tuple[list[Row], list[str]]:
    from openclaw.bench.features import OURS, PEER, TARGET_EVENTS

    events = payload["events"]
    scaled = "" if events == TARGET_EVENTS else " (scaled linearly)"
    row = Row(
        figure=f"feature extraction of {events:,} events, seconds",
        ours=OURS,
        value=statistics.median(payload["ours_s"]),
        peer=PEER,
        peer_value=statistics.median(payload["peer_s"]),
        unit="s",
        ratio=_ratio(statistics.median(payload["ours_s"]), statistics.median(payload["peer_s"])),
        target=f"{TARGET_EVENTS:,} events in < {payload['target_s']:g} s{scaled}",
        passed=payload["verdict"] == "PASS",
    )
    notes = [f"{payload['rows']:,} (client, window) rows, {payload['rounds']} round(s)"]
    return [row], notes


def rows_sim(payload: Mapping[str, Any]) -> tuple[list[Row], list[str]]:
    from openclaw.bench.sim import PEER

    contenders = {c["name"]: c for c in payload["contenders"]}
    per_s = payload["target_per_min"] / 60.0

    def rates(c: Mapping[str, Any]) -> list[float]:
        return [n / s if s > 0 else 0.0 for n, s in zip(c["requests"], c["seconds"], strict=True)]

    rows = []
    for name, c in contenders.items():
        if name == PEER:
            continue
        row = _row_paired(
            "simulated requests per second of wall time",
            (name, rates(c)),
            (PEER, rates(contenders[PEER])),
            "requests/s",
            target=f">= {payload['target_per_min']:,} per minute",
        )
        rows.append(_with_pass(row, row.value >= per_s))
    notes = [
        f"{payload['trace']}, scenario {payload['scenario']}, seed {payload['seed']}, "
        f"x{payload['amplify']}: {payload['first_attempts']:,} first attempts; "
        f"{payload['rounds']} round(s)"
    ]
    return rows, notes


def rows_train(payload: Mapping[str, Any]) -> tuple[list[Row], list[str]]:
    from openclaw.bench.train import FLOOR_TORCH, OURS, TARGET_ROWS

    rounds = payload["rounds"]
    floor = [r["floor_torch_s"] for r in rounds]
    scaled = "" if payload["rows"] == TARGET_ROWS else " (scaled linearly)"
    whole = _row_paired(
        f"training on {payload['rows']:,} pairs, seconds",
        (OURS, [r["ours_s"] for r in rounds]),
        (FLOOR_TORCH, floor),
        "s",
        target=f"{TARGET_ROWS:,} pairs in < {payload['target_s']:g} s{scaled}",
    )
    passes = _row_paired(
        f"training on {payload['rows']:,} pairs, seconds",
        (f"{OURS} (passes only)", [r["fit_s"] for r in rounds]),
        (FLOOR_TORCH, floor),
        "s",
    )
    notes = [
        f"{payload['epochs']} passes of batches of {payload['batch']}; weights sha256 "
        + ", ".join(sorted({r["weights_sha256"][:16] for r in rounds}))
    ]
    return [_with_pass(whole, payload["verdict"] == "PASS"), passes], notes


def rows_model(payload: Mapping[str, Any]) -> tuple[list[Row], list[str]]:
    from openclaw.bench.model import (
        FLOOR_INFER,
        OURS_BOUNDARY,
        OURS_INFER,
        OURS_MEMORY,
        PEER_BOUNDARY,
        PEER_MEMORY,
        TORCH_INFER,
    )

    rows: list[Row] = []
    clients = payload["clients"]
    for setting, by in payload.get("inference", {}).items():
        floor = by[FLOOR_INFER]["median_ms"]
        for name in (OURS_INFER, TORCH_INFER):
            if name not in by:
                continue
            value = by[name]["median_ms"]
            targeted = name == OURS_INFER and setting == "default threads"
            rows.append(
                Row(
                    figure=f"inference of {clients:,} clients, {setting}",
                    ours=name,
                    value=value,
                    peer=FLOOR_INFER,
                    peer_value=floor,
                    unit="ms",
                    ratio=_ratio(value, floor),
                    target=f"< {payload['inference_target_ms']:g} ms" if targeted else "",
                    passed=payload["inference_verdict"] == "PASS" if targeted else None,
                )
            )
    if "boundary" in payload:
        b = payload["boundary"]
        rows.append(
            _row_paired(
                f"window boundary, {clients:,} clients x {b['events_per_client']} events",
                (OURS_BOUNDARY, [r["tick_s"] for r in b["rounds"]]),
                (PEER_BOUNDARY, [r["close_s"] for r in b["rounds"]]),
                "s",
            )
        )
    if "memory" in payload:
        m = payload["memory"]
        ours, peer = m["model"]["bytes_per_client"], m["static"]["bytes_per_client"]
        rows.append(
            Row(
                figure=f"service memory (RSS) with {clients:,} active clients",
                ours=OURS_MEMORY,
                value=ours,
                peer=PEER_MEMORY,
                peer_value=peer,
                unit="B/client",
                ratio=_ratio(ours, peer),
            )
        )
    return rows, [f"network {payload['network']}; {payload['machine']}"]


# -- the benchmarks -------------------------------------------------------------------------

BENCHES: Final[tuple[Bench, ...]] = (
    Bench(
        name="limiter",
        title="limiter: decisions per second of the token-bucket engine",
        args=("--redis", "auto"),
        quick_args=("--duration", "0.02", "--rounds", "1", "--redis", "auto"),
        estimate_s=40,
        rows=rows_limiter,
        ratio_meaning="ours / peer decisions per second, paired round by round: above 1 is faster",
    ),
    Bench(
        name="http",
        title="http: the Rating API over loopback HTTP",
        args=("--redis", "auto"),
        quick_args=(
            *("--seconds", "1", "--fixed-seconds", "0.5", "--rate", "200", "--rounds", "1"),
            *("--redis", "auto"),
        ),
        estimate_s=130,
        rows=rows_http,
        ratio_meaning="ours / peer in the figure's unit: above 1 is faster for rates, slower "
        "for latencies",
    ),
    Bench(
        name="grpc",
        title="grpc: Envoy's ShouldRateLimit latency at a fixed rate",
        args=("--redis", "auto"),
        quick_args=("--rate", "200", "--seconds", "0.5", "--rounds", "1", "--redis", "auto"),
        estimate_s=60,
        rows=rows_grpc,
        ratio_meaning="ours / the bare servicer's latency: what a decision adds (above 1 is "
        "slower)",
    ),
    Bench(
        name="ingest",
        title="ingest: log import into DuckDB and ClickHouse",
        args=("--clickhouse", "auto"),
        quick_args=("--lines", "1000", "--rounds", "1", "--clickhouse", "auto"),
        estimate_s=90,
        rows=rows_ingest,
        ratio_meaning="ours / the store's native loader, events per second: above 1 is faster",
    ),
    Bench(
        name="telemetry-http",
        title="telemetry-http: NDJSON telemetry ingest over HTTP",
        args=(),
        quick_args=("--seconds", "1", "--rounds", "1", "--events", "100"),
        estimate_s=60,
        rows=rows_telemetry_http,
        ratio_meaning="ours / peer in the figure's unit: above 1 is faster",
    ),
    Bench(
        name="features",
        title="features: feature extraction of 10 million events",
        args=(),
        quick_args=("--events", "20000", "--clients", "500", "--hours", "1"),
        estimate_s=45,
        rows=rows_features,
        ratio_meaning="ours / peer seconds: how many times the floor's time ours takes",
    ),
    Bench(
        name="sim",
        title="sim: replay speed of the simulator",
        args=(),
        quick_args=("--rounds", "1", "--policy", "static", "--amplify", "1"),
        estimate_s=25,
        rows=rows_sim,
        ratio_meaning="ours / the bare engine loop, requests per second: below 1 is what the "
        "replay adds",
    ),
    Bench(
        name="train",
        title="train: training time for a million (client, window) pairs",
        args=(),
        quick_args=("--rows", "1000", "--epochs", "1"),
        estimate_s=30,
        rows=rows_train,
        ratio_meaning="ours / the forward-only floor, seconds: how many times the floor's "
        "time ours takes",
    ),
    Bench(
        name="model",
        title="model: inference for 100,000 clients, the window boundary, service memory",
        args=(),
        quick_args=("--clients", "100", "--events", "1", "--repeats", "1", "--rounds", "1"),
        estimate_s=60,
        rows=rows_model,
        ratio_meaning="ours / peer in the figure's unit (ms, s, bytes): above 1 costs more",
    ),
)


def find(names: Sequence[str]) -> tuple[Bench, ...]:
    """The benchmarks named (all of them for none), in the report's order."""
    from openclaw.errors import ConfigError

    known = {b.name: b for b in BENCHES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown benchmark {', '.join(unknown)}: use one of {', '.join(known)}")
    return tuple(b for b in BENCHES if not names or b.name in names)


# -- the gRPC benchmark's JSON (its run returns results; the CLI writes them) ---------------


def grpc_payload(
    results: Mapping[str, Sequence[Any]],
    *,
    command: str,
    rate: float,
    seconds: float,
    rounds: int,
    redis: str,
    generator: str,
) -> dict[str, Any]:
    """What ``openclaw bench grpc --json FILE`` writes."""
    from openclaw.bench.grpc import PEER, TARGET_P99_MS
    from openclaw.bench.limiter import machine

    return {
        "command": command,
        "machine": machine().to_json(),
        "rate": rate,
        "seconds": seconds,
        "rounds": rounds,
        "redis": redis,
        "generator": generator,
        "peer": PEER,
        "target_p99_ms": TARGET_P99_MS,
        "results": {
            name: [asdict(r) | {"achieved_rate": r.achieved_rate} for r in runs]
            for name, runs in results.items()
        },
    }


# -- writing the document -------------------------------------------------------------------


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit in _COUNT_UNITS:
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:.2f}"


def _ratio_text(row: Row) -> str:
    if math.isnan(row.ratio):
        return "n/a"
    text = f"{row.ratio:.2f}x"
    if row.ratio_low is not None and row.ratio_high is not None:
        text += f" ({row.ratio_low:.2f} - {row.ratio_high:.2f})"
    return text


def _result(passed: bool | None) -> str:
    return "" if passed is None else ("**PASS**" if passed else "**FAIL**")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


_HEADER: Final = "figure | openclaw | value | peer | peer value | ratio | target | result |"
_RULE: Final = "--- | --- | --- | --- | --- | --- | --- | --- |"
#: Before each command: the documentation's command test (tests/test_docs_commands.py) runs
#: every command block of docs/ unless told why not.
NOT_RUN: Final = (
    "<!-- not-run: a benchmark, minutes of load; `openclaw bench report` runs it "
    "(tests/test_bench_report.py runs it with --quick) -->"
)


def _row_cells(row: Row) -> str:
    cells = (
        row.figure,
        row.ours,
        f"{_number(row.value, row.unit)} {row.unit}",
        row.peer,
        f"{_number(row.peer_value, row.unit)} {row.unit}",
        _ratio_text(row),
        row.target,
        _result(row.passed),
    )
    return " | ".join(_cell(c) for c in cells) + " |"


def render(meta: Meta, results: Sequence[BenchResult]) -> str:
    """The Markdown report."""
    lines = ["# Benchmarks", ""]
    lines.append(f"<!-- Written by `{meta.command}`: run it again rather than edit this file. -->")
    lines.append("")
    if meta.quick:
        lines += [
            "> **Quick run** (`--quick`): every benchmark shortened to check that the report "
            "works. The figures are not representative; targets are judged on tiny inputs.",
            "",
        ]
    lines += [
        "Every benchmark of the project, run one after the other by one command, each in a "
        "process of its own. Each figure stands beside its **peer measured in the same run** "
        "(another library, a native loader, a floor or ceiling of the same stack) with their "
        "ratio: the machine is shared and noisy, so a figure alone means little. The targets "
        "are the ones each benchmark prints; `bench/README.md` explains every benchmark. Above "
        "each table is the command that measured it (the report adds `--json FILE` to read the "
        "figures).",
        "",
        "| | |",
        "| --- | --- |",
        f"| command | `{meta.command}` |",
        f"| date | {meta.date} |",
        f"| commit | {meta.commit} |",
        f"| machine | {_cell(meta.machine)} |",
        f"| CPU | {_cell(meta.cpu)} |",
        f"| libraries | {_cell(meta.libraries)} |",
        f"| load average | {meta.load_start:.2f} at the start, {meta.load_end:.2f} at the end |",
        f"| duration | {_duration(meta.seconds)} |",
        "",
        "## Summary",
        "",
        "Every figure with a target; the sections below have every figure.",
        "",
        f"| benchmark | {_HEADER}",
        f"| --- | {_RULE}",
    ]
    for r in results:
        link = f"[{r.name}](#{_anchor(r.title)})"
        if r.error is not None:
            lines.append(f"| {link} | **ERROR**: {_cell(r.error.splitlines()[0])} |" + " |" * 7)
        lines += [f"| {link} | {_row_cells(row)}" for row in r.rows if row.target]
    for r in results:
        lines += ["", f"## {r.title}", "", NOT_RUN, "", "```sh", r.command, "```", ""]
        lines.append(
            f"Ran for {_duration(r.seconds)}, load average {r.load_before:.2f} at its start. "
            f"Ratio: {r.ratio_meaning}."
        )
        lines.append("")
        if r.error is not None:
            lines += [f"**ERROR**: {r.error.splitlines()[0]}", "", "```text", r.error, "```"]
            continue
        lines += [f"| {_HEADER}", f"| {_RULE}"]
        lines += [f"| {_row_cells(row)}" for row in r.rows]
        if r.notes:
            lines.append("")
            lines += [f"- {_cell(note)}" for note in r.notes]
    return "\n".join(lines) + "\n"


def _anchor(title: str) -> str:
    """The id GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def to_json(meta: Meta, results: Sequence[BenchResult]) -> dict[str, Any]:
    return {"meta": asdict(meta), "benchmarks": [asdict(r) for r in results]}


# -- running --------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - a fixed git command
        ["git", "-C", str(root), *args],  # noqa: S607 - git from PATH, as a developer runs it
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def commit_of(root: Path) -> str:
    """The checkout's commit, and whether tracked files differ from it (read-only: no
    ``git status``, which may rewrite the index)."""
    try:
        head = _git(root, "rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = _git(root, "diff", "--no-ext-diff", "--quiet", "HEAD", "--").returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    sha = head.stdout.strip()
    return f"`{sha}`" + (" with uncommitted changes" if dirty else "")


def cpu_description() -> str:
    """The CPU model and the memory, from /proc (Linux), else what platform knows."""
    model = platform.processor() or platform.machine()
    memory = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.1f} GiB of memory"
                break
    except OSError:
        pass
    return f"{model}{memory}"


def _bench_argv(bench: Bench, *, quick: bool, json_path: Path) -> list[str]:
    # The same typer app as the ``openclaw`` script, from this interpreter: the report works
    # from any checkout or virtualenv without the script on PATH.
    args = bench.quick_args if quick else bench.args
    return [
        sys.executable,
        "-c",
        "from openclaw.cli import app; app(prog_name='openclaw')",
        "bench",
        bench.name,
        *args,
        "--json",
        str(json_path),
    ]


def run_bench(
    bench: Bench, *, quick: bool, workdir: Path, echo: Callable[[str], None]
) -> BenchResult:
    """Run one benchmark in a process of its own, its output passed to ``echo`` line by line,
    and read its JSON into rows. Any failure becomes the result's ``error``."""
    json_path = workdir / f"{bench.name}.json"
    load = os.getloadavg()[0]
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=25)
    base = BenchResult(
        name=bench.name,
        title=bench.title,
        command=bench.command(quick=quick),
        ratio_meaning=bench.ratio_meaning,
        seconds=0.0,
        load_before=load,
    )
    try:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            _bench_argv(bench, quick=quick, json_path=json_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        return replace(base, error=f"could not start: {exc}")
    assert proc.stdout is not None  # stdout=PIPE above
    with proc:
        for line in proc.stdout:
            echo(line.rstrip("\n"))
            tail.append(line.rstrip("\n"))
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        output = "\n".join(tail)
        return replace(
            base, seconds=seconds, error=f"exit code {proc.returncode}\n{output}".rstrip()
        )
    try:
        payload = json.loads(json_path.read_text())
        rows, notes = bench.rows(payload)
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        return replace(
            base,
            seconds=seconds,
            error=f"could not read its results ({type(exc).__name__}: {exc})",
        )
    return replace(base, seconds=seconds, rows=tuple(rows), notes=tuple(notes))


@dataclass(frozen=True, slots=True)
class Options:
    out: Path = DOCUMENT
    quick: bool = False
    only: tuple[str, ...] = ()
    json_path: Path | None = None
    # The checkout the package runs from (src/openclaw/bench/report.py), for its commit.
    root: Path = field(default_factory=lambda: Path(__file__).resolve().parents[3])

    def command_line(self) -> str:
        """The command these options are, as a user types it (from the options, not argv:
        the report states what produced it wherever it runs from)."""
        args = ["openclaw", "bench", "report", *(["--quick"] if self.quick else [])]
        for name in self.only:
            args += ["--only", name]
        args += ["--out", str(self.out)]
        if self.json_path is not None:
            args += ["--json", str(self.json_path)]
        return shlex.join(args)


def forecast(benches: Sequence[Bench], *, quick: bool) -> float:
    """Seconds the run is expected to take (the full estimates; a quick run is ~1/6)."""
    total = sum(b.estimate_s for b in benches)
    return total / 6 if quick else total


def run(options: Options, *, command: str, echo: Callable[[str], None]) -> tuple[str, bool]:
    """Run the benchmarks, write the report (and the JSON), and return the Markdown and
    whether every benchmark ran (targets missed do not count: they are in the report)."""
    from openclaw.bench.limiter import machine
    from openclaw.errors import ConfigError

    benches = find(options.only)
    if not options.out.parent.is_dir():
        # Before the benchmarks, not after minutes of them.
        raise ConfigError(f"{options.out}: its directory {options.out.parent} does not exist")
    info = machine()
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    expected = _duration(forecast(benches, quick=options.quick))
    echo(
        f"running {len(benches)} benchmarks, about {expected} on a 2-core machine: "
        f"{', '.join(b.name for b in benches)}"
    )
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="openclaw-bench-report-") as tmp:
        for i, bench in enumerate(benches, 1):
            echo(f"\n[{i}/{len(benches)}] {bench.command(quick=options.quick)}")
            result = run_bench(bench, quick=options.quick, workdir=Path(tmp), echo=echo)
            if result.error is not None:
                echo(f"[{i}/{len(benches)}] {bench.name}: ERROR {result.error.splitlines()[0]}")
            results.append(result)
    meta = Meta(
        command=command,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit_of(options.root),
        machine=info.describe(),
        cpu=cpu_description(),
        libraries=info.libraries(),
        load_start=load_start,
        load_end=os.getloadavg()[0],
        seconds=time.monotonic() - started,
        quick=options.quick,
    )
    text = render(meta, results)
    options.out.write_text(text)
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(to_json(meta, results), indent=2) + "\n")
    return text, all(r.error is None for r in results)
