"""The model in the service: inference for 100,000 clients, the window boundary, the memory.

Three parts, each beside a peer measured in the same run:

1. **Inference**, one batch of ``--clients`` feature rows (100,000 by default) through a real
   artifact of the trainer's default architecture (24 -> 64 -> 64 -> 2, random weights):
   ``openclaw predict_batch`` is the full path (coercion, normalisation, MLP, output
   transform, calibration, clamping); the floor is the bare products of the same weights in
   NumPy on inputs already normalised; torch's forward of the same weights when torch is
   importable. OpenBLAS reads its thread count once, when NumPy loads, so each thread setting
   runs in a subprocess of its own (``OPENBLAS_NUM_THREADS`` and ``OMP_NUM_THREADS`` unset, or
   1); the subprocesses alternate across rounds. Target: under 200 ms.
2. **Window boundary** with ``--clients`` active clients of ``--events`` events each:
   ``LearnedPolicy.tick`` closing the window in the online features, observing the
   prediction error of the table in force, predicting every client in one batch, clipping to
   tier bounds and swapping the table. Timed in steady state: the boundary after a first one,
   so the table in force has predictions to be judged. Peer: ``OnlineFeatures.close_until``
   alone on the same events (the feature part).
3. **Memory**, in subprocesses reading ``VmRSS`` from ``/proc/self/status``: the app built in
   policy_mode model, a boundary passed with ``--clients`` active clients (their learned
   buckets in the table) and the memory store holding a bucket for each, against the same
   process before the app was built. Peer: the app in policy_mode static, its memory store
   holding as many buckets.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from openclaw.bench.limiter import (
    machine,
    print_line,
    report_console,
    rotation,
    verdict,
    write_json,
)

TARGET_MS: Final = 200.0
CLIENTS: Final = 100_000
EVENTS_PER_CLIENT: Final = 10
PARTS: Final = ("inference", "boundary", "memory")

OURS_INFER: Final = "openclaw predict_batch (full path)"
FLOOR_INFER: Final = "floor: NumPy matrix products"
TORCH_INFER: Final = "torch forward (no_grad)"
OURS_BOUNDARY: Final = "openclaw LearnedPolicy.tick"
PEER_BOUNDARY: Final = "peer: OnlineFeatures.close_until"
OURS_MEMORY: Final = "openclaw app, policy_mode model"
PEER_MEMORY: Final = "peer: app, policy_mode static"

#: name -> environment overrides of the inference subprocess (None: left as inherited).
THREADS: Final[dict[str, dict[str, str | None]]] = {
    "default threads": {"OPENBLAS_NUM_THREADS": None, "OMP_NUM_THREADS": None},
    "1 thread": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
}

POLICY: Final = b"""
default_tier = "free"

[tiers.free]
limits = [{ capacity = 20, refill_rate = 1 }]

[tiers.free.bounds]
min_capacity = 1
max_capacity = 100000
min_refill_rate = 0.01
max_refill_rate = 10000

[tiers.pro]
limits = [{ capacity = 500, refill_rate = 50 }]
"""

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Options:
    clients: int = CLIENTS
    events: int = EVENTS_PER_CLIENT
    repeats: int = 15
    rounds: int = 2
    parts: tuple[str, ...] = PARTS
    json_path: Path | None = None


def _median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1e3


# -- part 1: inference, in subprocesses ------------------------------------------------------


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def inference_worker(
    artifact: Path, *, group: str, clients: int, repeats: int, seed: int = 1
) -> dict[str, Any]:
    """One thread setting's samples (seconds per batch) for the contenders of ``group``:
    ``numpy`` (ours and the floor) or ``torch``, each group in a process of its own (torch's
    OpenMP threads spin after a forward and would slow whatever runs next)."""
    from openclaw.bench.train import random_pairs
    from openclaw.model.predictor import load_predictor

    predictor = load_predictor(artifact)
    assert predictor.features is not None
    rows = random_pairs(clients, seed=seed).X
    inputs = predictor.features.transform(rows)
    layers = [(layer.weight_t, layer.bias) for layer in predictor.network.layers]
    last = len(layers) - 1
    contenders: dict[str, Callable[[], object]] = {}
    torch_version: str | None = None
    if group == "numpy":

        def floor() -> object:
            h = inputs
            for i, (w, b) in enumerate(layers):
                h = h @ w
                if b is not None:
                    h += b
                if i < last:
                    np.maximum(h, 0.0, out=h)
            return h

        contenders[OURS_INFER] = lambda: predictor.predict_batch(rows)
        contenders[FLOOR_INFER] = floor
    else:
        try:
            import torch
        except ImportError:
            return {"samples": {}, "torch": None}
        torch_version = torch.__version__
        if os.environ.get("OMP_NUM_THREADS") == "1":
            torch.set_num_threads(1)
        net = torch.nn.Sequential()
        for i, (w, b) in enumerate(layers):
            linear = torch.nn.Linear(w.shape[0], w.shape[1], bias=b is not None)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                if b is not None:
                    linear.bias.copy_(torch.from_numpy(b))
            net.append(linear)
            if i < last:
                net.append(torch.nn.ReLU())
        net.eval()
        xt = torch.from_numpy(inputs)

        def forward() -> object:
            with torch.no_grad():
                return net(xt)

        contenders[TORCH_INFER] = forward
    names = list(contenders)
    for fn in contenders.values():  # warm-up: first-touch pages, BLAS threads started
        fn()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _, i in rotation(len(names), repeats):
        samples[names[i]].append(_timed(contenders[names[i]]))
    return {"samples": samples, "torch": torch_version}


def _env(overrides: dict[str, str | None]) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _worker(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    # Our own module under our own interpreter: nothing untrusted reaches the command line.
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "openclaw.bench.model", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {' '.join(args[:1])} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_inference(artifact: Path, options: Options, console: Console) -> dict[str, Any]:
    jobs = [(setting, group) for setting in THREADS for group in ("numpy", "torch")]
    samples: dict[str, dict[str, list[float]]] = {s: {} for s in THREADS}
    torch_version: str | None = None
    for r, i in rotation(len(jobs), options.rounds):
        setting, group = jobs[i]
        with console.status(f"inference, round {r + 1}/{options.rounds}: {group}, {setting}"):
            got = _worker(
                ["inference", group, str(artifact), str(options.clients), str(options.repeats)],
                _env(THREADS[setting]),
            )
        torch_version = got["torch"] or torch_version
        for contender, values in got["samples"].items():
            samples[setting].setdefault(contender, []).extend(values)
    return {"samples": samples, "torch": torch_version}


# -- part 2: the window boundary, in process -------------------------------------------------


def window_events(
    clients: int, per_client: int, *, window: int, window_s: float, seed: int, chunk: int = 5_000
) -> Iterator[Any]:
    """``per_client`` events for each of ``clients`` clients, spread over ``window``, as
    batches of ``chunk`` clients' events (the telemetry queue hands over flush-sized batches;
    making all events at once would leave the bench's own garbage in the RSS measured)."""
    from openclaw.telemetry.events import EventBatch, object_array

    rng = np.random.default_rng(seed)
    start_us = int(window * window_s * 1e6)
    for lo in range(0, clients, chunk):
        ids = object_array([f"client-{i:06d}" for i in range(lo, min(lo + chunk, clients))])
        n = ids.size * per_client
        yield EventBatch(
            event_id=object_array([f"e{window}-{lo}-{i}" for i in range(n)]),
            client_id=ids[rng.permutation(np.repeat(np.arange(ids.size), per_client))],
            ts_us=(start_us + np.sort(rng.integers(0, int(window_s * 1e6), n))).astype(np.int64),
            status_code=np.where(rng.random(n) < 0.001, 500, 200).astype(np.int16),
            response_time_ms=rng.lognormal(np.log(40.0), 0.6, n),
            route=np.full(n, None, dtype=object),
            method=np.full(n, None, dtype=object),
            bytes=np.full(n, -1, dtype=np.int64),
        )


def _feed(observers: Sequence[Any], batches: Iterable[Any]) -> None:
    """What the telemetry worker does with accepted batches: every observer sees each."""
    for batch in batches:
        for observer in observers:
            observer.observe(batch)


@dataclass(frozen=True, slots=True)
class BoundaryRound:
    tick_s: float
    predict_s: float
    first_tick_s: float
    close_s: float
    learned: int


def _service_settings(root: Path, **extra: Any) -> Any:
    from openclaw.settings import Settings

    (root / "policy.toml").write_bytes(POLICY)
    values: dict[str, Any] = {
        "policy_mode": "model",
        "policy_path": root / "policy.toml",
        "model_registry_path": root / "models",
        "telemetry_url": f"duckdb://{root / 'events.duckdb'}",
        "model_max_capacity": 1e6,
        "model_max_refill_rate": 1e5,
    }
    values.update(extra)
    return Settings(**values)


def _registry_with_champion(settings: Any, artifact: Path) -> None:
    from openclaw.model.registry import Registry

    registry = Registry(settings.model_registry_path, user="bench")
    if registry.alias("champion") is None:
        registry.promote(registry.register(artifact), reason="bench model")


def boundary_round(
    root: Path, artifact: Path, *, clients: int, per_client: int, seed: int
) -> BoundaryRound:
    from prometheus_client import CollectorRegistry

    from openclaw.clock import FakeClock
    from openclaw.features.online import OnlineFeatures
    from openclaw.policy.learned import LearnedPolicy
    from openclaw.policy.static import PolicyHolder

    settings = _service_settings(root)
    _registry_with_champion(settings, artifact)
    w = settings.window_s
    k = 20_000_000 // int(w)  # an epoch-aligned window in 2160
    first = list(window_events(clients, per_client, window=k, window_s=w, seed=seed))
    second = list(window_events(clients, per_client, window=k + 1, window_s=w, seed=seed + 1))

    clock = FakeClock(k * w + 1.0)
    online = OnlineFeatures(settings)
    policy = LearnedPolicy.from_settings(
        settings,
        PolicyHolder.from_file(settings.policy_path),
        online,
        metrics=CollectorRegistry(),
        clock=clock,
    )
    _feed(policy.observers, first)
    clock.now = (k + 1) * w + settings.policy_close_delay_s
    first_tick = _timed(policy.tick)
    _feed(policy.observers, second)
    clock.now = (k + 2) * w + settings.policy_close_delay_s
    tick = _timed(policy.tick)
    table = policy.current
    if table.window != k + 2 or len(table.learned) != clients:
        raise RuntimeError(
            f"the boundary learned {len(table.learned)} clients for window {table.window}, "
            f"expected {clients} for {k + 2}"
        )
    model = policy.models.model
    assert model is not None
    frame = online.rows_for(k + 1)
    predict = _timed(lambda: model.predict_batch(frame))

    # The peer: the same two windows through bare online features.
    peer = OnlineFeatures(settings)
    _feed([peer], first)
    peer.close_until((k + 1) * int(w * 1e6))
    _feed([peer], second)
    started = time.perf_counter()
    closed = peer.close_until((k + 2) * int(w * 1e6))
    close = time.perf_counter() - started
    if len(closed) != 1 or len(closed[0]) != clients:
        raise RuntimeError("the peer's close did not give one row per client")
    return BoundaryRound(tick, predict, first_tick, close, len(table.learned))


def run_boundary(artifact: Path, options: Options, console: Console) -> list[BoundaryRound]:
    rounds: list[BoundaryRound] = []
    for r in range(options.rounds):
        with (
            console.status(f"boundary, round {r + 1}/{options.rounds}"),
            tempfile.TemporaryDirectory(prefix="openclaw-bench-model-") as tmp,
        ):
            rounds.append(
                boundary_round(
                    Path(tmp),
                    artifact,
                    clients=options.clients,
                    per_client=options.events,
                    seed=7 + r,
                )
            )
    return rounds


# -- part 3: memory, in subprocesses ---------------------------------------------------------


def rss_bytes() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, in bytes."""
    found: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found["VmRSS"], found["VmHWM"]


def memory_worker(
    mode: str, root: Path, artifact: Path, *, clients: int, per_client: int
) -> dict[str, Any]:
    """RSS before the app, after building it, after the boundary (model mode), and with a
    bucket per client in the memory store."""
    import gc

    from openclaw.clock import FakeClock
    from openclaw.policy.learned import LearnedPolicy  # noqa: F401  (loaded before the baseline)
    from openclaw.service.server import build, close_telemetry

    settings = _service_settings(root, policy_mode=mode)
    if mode == "model":
        _registry_with_champion(settings, artifact)
    w = settings.window_s
    k = 20_000_000 // int(w)
    gc.collect()
    steps: dict[str, int] = {}
    steps["baseline"], _ = rss_bytes()
    clock = FakeClock(k * w + 1.0)
    built = build(settings, wall_clock=clock)
    gc.collect()
    steps["app built"], _ = rss_bytes()
    names = [f"client-{i:06d}" for i in range(clients)]
    if built.learned is not None:
        learned = built.learned
        _feed(
            learned.observers,
            window_events(clients, per_client, window=k, window_s=w, seed=3),
        )
        clock.now = (k + 1) * w + settings.policy_close_delay_s
        learned.tick()
        if len(learned.current.learned) != clients:
            raise RuntimeError(f"the table holds {len(learned.current.learned)} clients")
        gc.collect()
        steps["boundary passed"], _ = rss_bytes()
    source = built.source
    for name in names:
        built.store.take(name, source.current.limits_for(name))
    if len(built.store) != clients:  # type: ignore[arg-type]
        raise RuntimeError(f"the store holds {len(built.store)} buckets")  # type: ignore[arg-type]
    gc.collect()
    steps["buckets stored"], peak = rss_bytes()
    # What is live, beside what the allocator keeps of the close's peak (not part of the
    # total: a service does not trim either).
    trimmed = rss_bytes()[0] if _malloc_trim() else None
    close_telemetry(built.telemetry, built.telemetry.store, timeout_s=5.0)
    return {"mode": mode, "rss": steps, "peak": peak, "trimmed": trimmed}


def _malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: free heap pages back to the system; False without glibc."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0)) or True
    except (OSError, AttributeError):
        return False


def run_memory(artifact: Path, options: Options, console: Console) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for mode in ("model", "static"):
        with (
            console.status(f"memory: policy_mode {mode}"),
            tempfile.TemporaryDirectory(prefix="openclaw-bench-model-") as tmp,
        ):
            out[mode] = _worker(
                ["memory", mode, tmp, str(artifact), str(options.clients), str(options.events)],
                dict(os.environ),
            )
    return out


# -- the report ------------------------------------------------------------------------------


def _blas() -> str:
    try:
        config: Any = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except Exception:  # older NumPy: no dict form
        return "BLAS unknown"


def machine_line(torch_version: str | None) -> str:
    m = machine()
    torch_text = f"torch {torch_version}" if torch_version else "torch not measured"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"nproc={m.nproc}, Python {m.python}, {platform.platform(terse=True)}; NumPy "
        f"{np.__version__} ({_blas()}), {torch_text}; load average at the end {load}"
    )


def _mb(b: float) -> str:
    return f"{b / 1e6:,.1f}"


def _new_table() -> Table:
    table = Table()
    for name in ("part", "contender", "median", "min / per client", "x peer"):
        table.add_column(name, justify="left" if name in ("part", "contender") else "right")
    return table


def _report_inference(table: Table, inference: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting, by in inference["samples"].items():
        floor = _median_ms(by[FLOOR_INFER])
        out[setting] = {
            name: {
                "median_ms": _median_ms(s),
                "min_ms": min(s) * 1e3,
                "max_ms": max(s) * 1e3,
                "samples": len(s),
            }
            for name, s in by.items()
        }
        for name in (FLOOR_INFER, TORCH_INFER, OURS_INFER):
            if name in by:
                med = _median_ms(by[name])
                table.add_row(
                    f"inference, {setting}",
                    name,
                    f"{med:.1f} ms",
                    f"{min(by[name]) * 1e3:.1f} ms",
                    f"{med / floor:.2f}",
                )
    return out


def _report_boundary(table: Table, boundary: list[BoundaryRound], events: int) -> dict[str, Any]:
    tick = statistics.median(b.tick_s for b in boundary)
    close = statistics.median(b.close_s for b in boundary)
    predict = statistics.median(b.predict_s for b in boundary)
    first = statistics.median(b.first_tick_s for b in boundary)
    low_close = min(b.close_s for b in boundary)
    low_tick = min(b.tick_s for b in boundary)
    table.add_row("boundary", PEER_BOUNDARY, f"{close:.3f} s", f"{low_close:.3f} s", "1.00")
    table.add_row(
        "boundary", OURS_BOUNDARY, f"{tick:.3f} s", f"{low_tick:.3f} s", f"{tick / close:.2f}"
    )
    table.add_row("boundary", "  of which predict_batch", f"{predict:.3f} s", "", "")
    table.add_row("boundary", "  the first boundary (nothing to judge)", f"{first:.3f} s", "", "")
    return {
        "events_per_client": events,
        "tick_s": tick,
        "close_s": close,
        "predict_s": predict,
        "first_tick_s": first,
        "rounds": [
            {
                "tick_s": b.tick_s,
                "close_s": b.close_s,
                "predict_s": b.predict_s,
                "first_tick_s": b.first_tick_s,
            }
            for b in boundary
        ],
    }


def _report_memory(table: Table, memory: dict[str, dict[str, Any]], clients: int) -> dict[str, Any]:
    """Total: the final RSS over the baseline (imports done, no app); per client: over the
    app just built (the app's fixed cost, DuckDB's included, is not the clients')."""
    out: dict[str, Any] = {}
    for mode, label in (("static", PEER_MEMORY), ("model", OURS_MEMORY)):
        rss = memory[mode]["rss"]
        total = rss["buckets stored"] - rss["baseline"]
        per_client = (rss["buckets stored"] - rss["app built"]) / clients
        out[mode] = memory[mode] | {"total_bytes": total, "bytes_per_client": per_client}
        ratio = per_client / out["static"]["bytes_per_client"]
        table.add_row(
            "memory",
            label,
            f"{_mb(total)} MB",
            f"{per_client:,.0f} B",
            f"{ratio:.2f}",
        )
    return out


def run(options: Options, *, command: str, console: Console | None = None) -> dict[str, Any]:
    from openclaw.features.core import FEATURE_NAMES
    from openclaw.settings import Settings
    from openclaw.testing.models import build_artifact

    console = report_console(console)
    sizes = (len(FEATURE_NAMES), *Settings().train_hidden, 2)
    with tempfile.TemporaryDirectory(prefix="openclaw-bench-model-") as tmp:
        artifact = build_artifact(Path(tmp) / "build" / "model-20250801", sizes=sizes).directory
        parts = options.parts
        inference = run_inference(artifact, options, console) if "inference" in parts else None
        boundary = run_boundary(artifact, options, console) if "boundary" in parts else []
        memory = run_memory(artifact, options, console) if "memory" in parts else {}
    result: dict[str, Any] = {
        "command": command,
        "machine": machine_line(inference["torch"] if inference else None),
        "network": "-".join(map(str, sizes)),
        "clients": options.clients,
    }
    print_line(console, command, "bold")
    print_line(console, result["machine"])
    print_line(
        console,
        f"network {result['network']} (a real artifact, random weights); {options.clients:,} "
        f"clients, {options.events} events each at the boundary; {options.rounds} round(s), "
        f"{options.repeats} batches per inference process",
    )
    table = _new_table()
    if inference is not None:
        result["inference"] = _report_inference(table, inference)
    if boundary:
        result["boundary"] = _report_boundary(table, boundary, options.events)
    if memory:
        result["memory"] = _report_memory(table, memory, options.clients)
    console.print(table)
    for mode in memory:
        steps = ", ".join(f"{k} {_mb(v)} MB" for k, v in memory[mode]["rss"].items())
        peak = _mb(memory[mode]["peak"])
        trimmed = memory[mode]["trimmed"]
        after = "" if trimmed is None else f"; after malloc_trim(0) {_mb(trimmed)} MB"
        print_line(console, f"VmRSS, policy_mode {mode}: {steps}; peak {peak} MB{after}")
    if inference is not None:
        # The service runs with the threads its environment gives it: the default.
        ours = result["inference"]["default threads"][OURS_INFER]["median_ms"]
        passed = ours < TARGET_MS
        result["inference_target_ms"] = TARGET_MS
        result["inference_verdict"] = "PASS" if passed else "FAIL"
        text = (
            f"target: {options.clients:,} clients predicted in under {TARGET_MS:.0f} ms "
            f"(median, default threads): {ours:.1f} ms"
        )
        console.print(verdict(passed, text))
    write_json(options.json_path, result, console)
    return result


def _main(argv: list[str]) -> None:
    """Subprocess entry: ``inference GROUP ARTIFACT CLIENTS REPEATS`` or ``memory MODE ROOT ARTIFACT
    CLIENTS EVENTS``; prints one line of JSON."""
    if argv[0] == "inference":
        out = inference_worker(
            Path(argv[2]), group=argv[1], clients=int(argv[3]), repeats=int(argv[4])
        )
    elif argv[0] == "memory":
        out = memory_worker(
            argv[1], Path(argv[2]), Path(argv[3]), clients=int(argv[4]), per_client=int(argv[5])
        )
    else:
        raise SystemExit(f"unknown worker {argv[0]!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    _main(sys.argv[1:])
