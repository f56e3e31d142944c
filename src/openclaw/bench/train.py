"""Training time for a million (client, window) pairs, against the forward pass over the same rows.

The workload: ``--rows`` pairs (1,000,000 by default) with the feature schema's 24 columns and a
next-window need, drawn at random but shaped like real rows (heavy-tailed request counts, peaks
and envelopes consistent with them, a next window that follows the current one with noise), over
2016 windows (a week of 5-minute windows) so the time split works as on real data. Feature
extraction is not part of it (``openclaw bench features`` measures that).

Contenders, each run once per round, the median over rounds reported:

* **floor: torch forward only**: the same network (``nn.Sequential`` of the same widths) in
  torch, over the same normalised training rows, in the same batches, for as many passes as
  training made, under ``torch.no_grad()``: what any training of this network pays before
  gradients and the optimiser;
* **floor: NumPy forward, one pass**: the trained network in NumPy (the serving code) over all
  rows once, for scale;
* **openclaw train_model**: everything ``openclaw train`` does after the features: the
  normalisation, the passes (forward, backward, Adam), the validation loss after each, the
  calibration (with the chord bound of the envelope: random rows have no arrival times) and the
  metrics. The target, under 60 s, is on this.

Rows/s counts training rows times passes per second of the contender.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from openclaw.features.core import FEATURE_INDEX, FEATURE_NAMES
from openclaw.model.dataset import PairSet, knot_envelopes, time_split
from openclaw.model.predictor import OutputBounds
from openclaw.settings import Settings

TARGET_S: Final = 60.0
TARGET_ROWS: Final = 1_000_000
WINDOWS: Final = 2016
OURS: Final = "openclaw train_model"
FLOOR_TORCH: Final = "floor: torch forward only"
FLOOR_NUMPY: Final = "floor: NumPy forward, one pass"

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Options:
    rows: int = TARGET_ROWS
    epochs: int | None = None
    rounds: int = 1
    seed: int = 11
    json_path: Path | None = None


def _window_shape(
    rng: np.random.Generator, count: F64, window_s: float
) -> tuple[F64, F64, F64, F64]:
    """Peaks (1 s, 10 s, 60 s as rates) and a spread ``s`` for a window of ``count`` requests:
    the envelope is modelled as ``b*(r) = max(1, count - r W s)`` (convex and falling)."""
    p1 = np.maximum(1.0, np.round(count * rng.beta(1.0, 8.0, count.size)))
    p10 = np.maximum(p1, np.round(count * rng.beta(2.0, 5.0, count.size)))
    p60 = np.maximum(
        np.maximum(p10, np.ceil(count * 60.0 / window_s)),
        np.round(count * rng.beta(3.0, 3.0, count.size)),
    )
    spread = rng.uniform(0.05, 1.0, count.size)
    return p1, p10 / 10.0, p60 / 60.0, spread


def _envelope(count: F64, spread: F64, rate: F64 | float, window_s: float) -> F64:
    return np.maximum(1.0, count - np.asarray(rate) * window_s * spread)


def random_pairs(
    n: int, *, seed: int = 0, window_s: float = 300.0, label_horizon_s: float = 60.0
) -> PairSet:
    """``n`` pairs with the feature schema, ordered by window (see the module docstring)."""
    rng = np.random.default_rng(seed)
    level = rng.lognormal(math.log(6.0), 1.5, n)
    count = 1.0 + rng.poisson(level).astype(np.float64)
    p1, p10, p60, spread = _window_shape(rng, count, window_s)
    window = np.sort(rng.integers(0, WINDOWS, n)).astype(np.int64)
    hour = (window * window_s / 3600.0) % 24.0
    status = rng.dirichlet([30.0, 2.0, 0.5, 0.3, 1.0], n)
    x = np.zeros((n, len(FEATURE_NAMES)))
    col = FEATURE_INDEX
    r_star = p60
    columns: dict[str, F64] = {
        "n_requests": count,
        "rate_mean": count / window_s,
        "peak_rate_1s": p1,
        "peak_rate_10s": p10,
        "peak_rate_60s": p60,
        "bstar_r0_1": _envelope(count, spread, 0.1, window_s),
        "bstar_r1": _envelope(count, spread, 1.0, window_s),
        "bstar_r10": _envelope(count, spread, 10.0, window_s),
        "burstiness_cv": rng.lognormal(0.0, 0.5, n),
        "frac_2xx": status[:, 0],
        "frac_4xx": status[:, 1],
        "frac_5xx": status[:, 2],
        "frac_429": status[:, 3],
        "latency_p50_ms": rng.lognormal(math.log(40.0), 0.5, n),
        "latency_p99_ms": rng.lognormal(math.log(200.0), 0.7, n),
        "frac_latency_unknown": rng.beta(0.5, 8.0, n),
        "traffic_share": count / (count.mean() * 500.0),
        "global_p99_ms": rng.lognormal(math.log(150.0), 0.3, n),
        "global_5xx_frac": rng.beta(1.0, 200.0, n),
        "hour_sin": np.sin(2 * math.pi * hour / 24.0),
        "hour_cos": np.cos(2 * math.pi * hour / 24.0),
        "seen_s": rng.uniform(window_s, 30 * 86_400.0, n),
        "r_star": r_star,
        "b_star": _envelope(count, spread, r_star, window_s),
    }
    for name, values in columns.items():
        x[:, col[name]] = values
    # The next window: the same client, its level drifting, its shape redrawn.
    count_next = 1.0 + rng.poisson(level * rng.lognormal(0.0, 0.6, n)).astype(np.float64)
    _, _, p60_next, spread_next = _window_shape(rng, count_next, window_s)
    b_next = _envelope(count_next, spread_next, p60_next, window_s)
    knot_rates = np.column_stack(
        [np.zeros(n), np.full(n, 0.1), np.ones(n), np.full(n, 10.0), p60_next]
    )
    knot_caps = np.column_stack(
        [
            count_next,
            _envelope(count_next, spread_next, 0.1, window_s),
            _envelope(count_next, spread_next, 1.0, window_s),
            _envelope(count_next, spread_next, 10.0, window_s),
            b_next,
        ]
    )
    order = np.argsort(knot_rates, axis=1, kind="stable")
    clients = np.array([f"client-{i:07d}" for i in rng.integers(0, n // 4 + 1, n)], dtype=object)
    return PairSet(
        client_id=clients,
        window=window,
        X=x,
        need=np.column_stack([b_next, p60_next]),
        knot_rates=np.take_along_axis(knot_rates, order, axis=1),
        knot_caps=np.take_along_axis(knot_caps, order, axis=1),
        window_s=window_s,
        label_horizon_s=label_horizon_s,
    )


@dataclass(frozen=True, slots=True)
class Round:
    ours_s: float
    fit_s: float
    epochs: int
    batch: int
    floor_torch_s: float
    floor_numpy_s: float
    metrics: dict[str, float | None]
    checksum: str


def _floor_torch(
    x: npt.NDArray[np.float32], *, hidden: tuple[int, ...], batch: int, passes: int, threads: int
) -> float:
    import torch

    from openclaw.model.train import build_torch_network, deterministic_torch

    with deterministic_torch(threads):
        torch.manual_seed(0)
        net = build_torch_network(int(x.shape[1]), hidden)
        net.eval()
        xt = torch.from_numpy(x)
        started = time.perf_counter()
        with torch.no_grad():
            for _ in range(passes):
                for lo in range(0, xt.shape[0], batch):
                    net(xt[lo : lo + batch])
        return time.perf_counter() - started


def _round(pairs: PairSet, options: Options, settings: Settings, console: Console, r: int) -> Round:
    from openclaw.model.train import TrainConfig, network_outputs, train_model

    config = TrainConfig.from_settings(settings, epochs=options.epochs)
    split = time_split(
        pairs,
        validation_fraction=settings.train_validation_fraction,
        test_fraction=settings.train_test_fraction,
    )
    with console.status(f"round {r}/{options.rounds}: {OURS} on {len(pairs):,} pairs"):
        started = time.perf_counter()
        trained = train_model(
            pairs,
            split,
            config=config,
            envelopes=knot_envelopes,
            bounds=OutputBounds.from_settings(settings),
        )
        ours = time.perf_counter() - started
    fitted = trained.fitted
    x_train = trained.spec.transform(pairs.X[split.train])
    with console.status(f"round {r}/{options.rounds}: {FLOOR_TORCH}"):
        floor_torch = _floor_torch(
            x_train,
            hidden=config.hidden,
            batch=fitted.batch_size,
            passes=fitted.epochs,
            threads=config.threads,
        )
    with console.status(f"round {r}/{options.rounds}: {FLOOR_NUMPY}"):
        started = time.perf_counter()
        network_outputs(trained.network, trained.spec, pairs.X)
        floor_numpy = time.perf_counter() - started
    return Round(
        ours_s=ours,
        fit_s=fitted.seconds,
        epochs=fitted.epochs,
        batch=fitted.batch_size,
        floor_torch_s=floor_torch,
        floor_numpy_s=floor_numpy,
        metrics=trained.metrics,
        checksum=fitted.checksum,
    )


def run(options: Options, *, command: str, console: Console | None = None) -> dict[str, Any]:
    import torch

    console = console or Console()
    settings = Settings()
    with console.status(f"drawing {options.rows:,} pairs"):
        pairs = random_pairs(options.rows, seed=options.seed, window_s=settings.window_s)
    split = time_split(
        pairs,
        validation_fraction=settings.train_validation_fraction,
        test_fraction=settings.train_test_fraction,
    )
    n_train = int(split.train.size)
    rounds = [_round(pairs, options, settings, console, r + 1) for r in range(options.rounds)]
    ours = statistics.median(x.ours_s for x in rounds)
    fit = statistics.median(x.fit_s for x in rounds)
    floor_torch = statistics.median(x.floor_torch_s for x in rounds)
    floor_numpy = statistics.median(x.floor_numpy_s for x in rounds)
    epochs, batch = rounds[0].epochs, rounds[0].batch
    cores = os.cpu_count() or 1
    machine = (
        f"nproc={cores}, Python {platform.python_version()}, torch {torch.__version__} on "
        f"{settings.train_threads} thread(s), {platform.platform()}"
    )
    console.print(f"[bold]{command}[/bold]")
    console.print(
        f"{machine}; {len(pairs):,} pairs (train {n_train:,}, validation "
        f"{split.validation.size:,}, test {split.test.size:,}), network "
        f"{len(FEATURE_NAMES)}-{'-'.join(map(str, settings.train_hidden))}-2, {epochs} passes "
        f"of batches of {batch}; median of {options.rounds} round(s)"
    )
    table = Table()
    for name in ("contender", "seconds", "rows/s", "x floor time"):
        table.add_column(name, justify="left" if name == "contender" else "right")
    passes_rows = n_train * epochs
    table.add_row(FLOOR_TORCH, f"{floor_torch:.2f}", f"{passes_rows / floor_torch:,.0f}", "1.0")
    table.add_row(FLOOR_NUMPY, f"{floor_numpy:.2f}", f"{len(pairs) / floor_numpy:,.0f}", "")
    table.add_row(
        f"{OURS} (passes only)",
        f"{fit:.2f}",
        f"{passes_rows / fit:,.0f}",
        f"{fit / floor_torch:.1f}",
    )
    table.add_row(OURS, f"{ours:.2f}", f"{passes_rows / ours:,.0f}", f"{ours / floor_torch:.1f}")
    console.print(table)
    m = rounds[0].metrics
    console.print(
        "sanity (validation): pinball {:.4f} against the constant's {:.4f}; coverage {:.3f}".format(
            m.get("val_pinball") or math.nan,
            m.get("val_pinball_constant") or math.nan,
            m.get("val_coverage") or math.nan,
        )
    )
    scaled = ours * TARGET_ROWS / len(pairs)
    verdict = "PASS" if scaled < TARGET_S else "FAIL"
    console.print(
        f"target: {TARGET_ROWS:,} pairs trained in under {TARGET_S:.0f} s: {scaled:.1f} s"
        f"{' (scaled linearly)' if len(pairs) != TARGET_ROWS else ''} {verdict}"
    )
    result: dict[str, Any] = {
        "command": command,
        "machine": machine,
        "rows": len(pairs),
        "train_rows": n_train,
        "epochs": epochs,
        "batch": batch,
        "rounds": [
            {
                "ours_s": x.ours_s,
                "fit_s": x.fit_s,
                "floor_torch_s": x.floor_torch_s,
                "floor_numpy_s": x.floor_numpy_s,
                "weights_sha256": x.checksum,
            }
            for x in rounds
        ],
        "ours_s": ours,
        "rows_per_s": passes_rows / ours,
        "floor_rows_per_s": passes_rows / floor_torch,
        "target_s": TARGET_S,
        "verdict": verdict,
    }
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(result, indent=2))
    return result
