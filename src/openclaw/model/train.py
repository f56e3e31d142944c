"""Training the bucket model (``openclaw train``): a small network in PyTorch, calibrated, written
as an artifact that NumPy runs.

The steps (:func:`train_model`), on pairs from :mod:`openclaw.model.dataset`:

1. Normalisation from the training slice (``FeatureSpec.fit``; the same ``transform`` serving
   runs builds the inputs here, so training and serving cannot drift apart).
2. An MLP (``features -> hidden... -> 2``, ReLU) on targets ``log1p(b*)``, ``log1p(r*)`` with
   the pinball loss at ``quantile`` (0.9 by default): an under-allocation costs nine times an
   over-allocation of the same size. Adam; the output bias starts at the training targets'
   quantile. After every pass the validation loss is measured; the weights of the best pass
   are kept, and training stops ``patience`` passes after it (the learning curve shows both
   losses: on small data sets the validation loss turns up after a few dozen passes).
3. Calibration on the validation slice, in the serving arithmetic (the NumPy network, ``expm1``,
   factors, then the output bounds): a grid of refill-rate factors (``min_rate_factor`` .. 8:
   the least over-allocation lies at ever lower rates with ever larger capacities, a
   per-window quota, which only works if buckets refill at each window boundary; the floor
   keeps a real refill rate); for each, the capacity
   factor that makes the calibrated bucket admit the next window (``b*(rate) <= capacity``,
   the envelope of ``openclaw.features.core``) for a ``coverage`` share of the pairs, chosen as
   the conformal rank ``ceil((n + 1) coverage)`` of the factors each pair needs (so that on
   fresh, exchangeable data the coverage holds in expectation); of those pairs of factors,
   the one with the least over-allocation (the mean log ratio of ``capacity + rate W``, what
   a bucket can admit in a window, to the same of the need).
4. Metrics on validation and, when there is one, the test slice: pinball loss (and the loss of
   two baselines: the best constant, the training targets' quantile, and persistence, the
   current window's label), coverage, under-allocation, over-allocation; and persistence
   calibrated by the same procedure, the ablation the model must beat at equal coverage.
5. The learned policy's defaults (:func:`policy_defaults`, ``openclaw train`` only): the
   per-window quotas served to clients without a prediction, fitted on every request of the
   training span, written into the calibration's details for the service and the replay.

Reproducible: ``seed`` seeds the initialisation and the shuffling, torch runs deterministic
algorithms on ``threads`` threads, so the same data, seed and thread count give the same
weights byte for byte (:attr:`Fitted.checksum`).

torch is imported inside the functions that train: importing this module does not need it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from openclaw.errors import ModelError, TrainingError
from openclaw.model.artifact import (
    Artifact,
    Calibration,
    DataWindow,
    FeatureSpec,
    OutputSpec,
    next_version,
    write_artifact,
)
from openclaw.model.dataset import (
    TARGETS,
    DataInfo,
    EnvelopeSource,
    PairCounts,
    PairSet,
    Split,
    StoreEnvelopes,
    data_range,
    fit_features,
    make_pairs,
    quota_needs,
    time_split,
    utc,
)
from openclaw.model.network import MLP, mlp_from_state_dict
from openclaw.model.predictor import OutputBounds

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from openclaw.settings import Settings
    from openclaw.telemetry.base import EventStore
    from openclaw.telemetry.parsers import Format

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: Refill-rate factors the calibration tries: four per doubling up to this (1 included), down
#: to ``min_rate_factor``.
MAX_RATE_FACTOR: Final = 8.0
RATE_STEPS_PER_DOUBLING: Final = 4
#: A capacity factor is never below this (when the floor alone covers every pair).
MIN_FACTOR: Final = 1e-6
#: Relative headroom on a calibrated factor: ``(need / base) * base`` can round below need.
FACTOR_HEADROOM: Final = 1e-9
#: Optimiser steps the automatic epoch count aims at, and its bounds.
AUTO_STEPS: Final = 2000
AUTO_EPOCHS: Final = (5, 200)
#: A pass takes at least this many steps (the batch shrinks on small data sets).
MIN_STEPS_PER_EPOCH: Final = 16
MIN_BATCH: Final = 32
LEARNING_CURVE: Final = "learning_curve.png"
PREFIX: Final = {"validation": "val", "test": "test"}


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters (defaults: the settings' ``train_*``)."""

    quantile: float = 0.9
    coverage: float = 0.95
    epochs: int | None = None
    batch_size: int = 1024
    learning_rate: float = 1e-3
    hidden: tuple[int, ...] = (64, 64)
    seed: int = 0
    threads: int = 1
    patience: int = 20
    min_rate_factor: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.quantile < 1 or not 0 < self.coverage < 1:
            raise TrainingError("quantile and coverage must be within (0, 1)")
        if self.epochs is not None and self.epochs < 1:
            raise TrainingError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.threads < 1 or self.learning_rate <= 0:
            raise TrainingError("batch size, threads and learning rate must be positive")
        if self.patience < 1 or not 0 < self.min_rate_factor <= 1:
            raise TrainingError("patience must be >= 1 and min_rate_factor within (0, 1]")
        if any(h < 1 for h in self.hidden):
            raise TrainingError(f"hidden widths must be >= 1, got {self.hidden}")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, seed: int | None = None, epochs: int | None = None
    ) -> TrainConfig:
        return cls(
            quantile=settings.train_quantile,
            coverage=settings.train_coverage,
            epochs=epochs if epochs is not None else settings.train_epochs,
            batch_size=settings.train_batch_size,
            learning_rate=settings.train_learning_rate,
            hidden=tuple(settings.train_hidden),
            seed=seed if seed is not None else settings.train_seed,
            threads=settings.train_threads,
            patience=settings.train_patience,
            min_rate_factor=settings.train_min_rate_factor,
        )

    def rate_factors(self) -> tuple[float, ...]:
        """The grid of refill-rate factors: powers of 2^(1/4) from ``min_rate_factor`` (always
        included) to :data:`MAX_RATE_FACTOR`."""
        top = round(math.log2(MAX_RATE_FACTOR) * RATE_STEPS_PER_DOUBLING)
        low = math.log2(self.min_rate_factor) * RATE_STEPS_PER_DOUBLING
        steps = range(math.ceil(low - 1e-9), top + 1)
        grid = {2.0 ** (k / RATE_STEPS_PER_DOUBLING) for k in steps} | {self.min_rate_factor}
        return tuple(sorted(grid))


# -- the network in torch ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Curve:
    """Mean pinball loss per pass: training (over the pass's steps) and validation (after it)."""

    train_loss: tuple[float, ...]
    validation_loss: tuple[float, ...]
    best_epoch: int  #: 1-based: the pass whose weights were kept


@dataclass(frozen=True, slots=True)
class Fitted:
    """Trained weights as a NumPy state_dict (``nn.Sequential`` names: ``0.weight`` ...)."""

    weights: dict[str, F32]
    curve: Curve
    epochs: int
    batch_size: int
    steps: int
    seconds: float

    @property
    def checksum(self) -> str:
        return weights_checksum(self.weights)


def weights_checksum(weights: Mapping[str, npt.NDArray[Any]]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def effective_batch(n_rows: int, batch_size: int) -> int:
    """The batch, shrunk on small data sets so that a pass takes a few steps."""
    return max(1, min(batch_size, max(MIN_BATCH, math.ceil(n_rows / MIN_STEPS_PER_EPOCH))))


def auto_epochs(n_rows: int, batch: int) -> int:
    steps = max(1, math.ceil(n_rows / batch))
    low, high = AUTO_EPOCHS
    return min(max(math.ceil(AUTO_STEPS / steps), low), high)


@contextlib.contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Deterministic algorithms on ``threads`` threads, restored afterwards (the settings are
    process-wide)."""
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(was_threads)


def build_torch_network(n_inputs: int, hidden: tuple[int, ...]) -> Any:
    """``nn.Sequential(Linear, ReLU, ..., Linear)``: its state_dict names are what the artifact
    stores and :mod:`openclaw.model.network` runs."""
    from torch import nn

    sizes = (n_inputs, *hidden, len(TARGETS))
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _pinball_torch(pred: Any, target: Any, tau: float) -> Any:
    diff = target - pred
    return (diff * tau).maximum(diff * (tau - 1.0)).mean()


#: ``progress(epoch, epochs, train_loss, validation_loss)`` after each pass.
EpochProgress = Callable[[int, int, float, float], None]


def _one_pass(net: Any, optimiser: Any, xs: Any, ys: Any, *, batch: int, tau: float) -> float:
    """One pass over shuffled rows; the mean training loss over its steps."""
    import torch

    net.train()
    total = torch.zeros((), dtype=torch.float64)
    for lo in range(0, int(xs.shape[0]), batch):
        xb, yb = xs[lo : lo + batch], ys[lo : lo + batch]
        loss = _pinball_torch(net(xb), yb, tau)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += loss.detach().double() * xb.shape[0]
    return float(total) / int(xs.shape[0])


def fit_network(
    x_train: F32,
    y_train: F32,
    x_val: F32,
    y_val: F32,
    *,
    config: TrainConfig,
    progress: EpochProgress | None = None,
) -> Fitted:
    """Train the MLP on normalised inputs and log targets; keep the best pass's weights, stop
    after ``config.patience`` passes without a better validation loss."""
    import torch

    n = int(x_train.shape[0])
    if n == 0 or x_val.shape[0] == 0:
        raise TrainingError("training and validation need at least one pair each")
    batch = effective_batch(n, config.batch_size)
    epochs = config.epochs or auto_epochs(n, batch)
    tau = config.quantile
    started = time.perf_counter()
    with deterministic_torch(config.threads):
        torch.manual_seed(config.seed)
        net = build_torch_network(int(x_train.shape[1]), config.hidden)
        with torch.no_grad():
            # Start at the best constant: the first passes learn the features, not the level.
            start = np.quantile(y_train, tau, axis=0).astype(np.float32)
            net[-1].bias.copy_(torch.from_numpy(start))
        optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
        shuffle = torch.Generator().manual_seed(config.seed)
        xt, yt, xv, yv = (
            torch.from_numpy(np.ascontiguousarray(a)) for a in (x_train, y_train, x_val, y_val)
        )
        train_curve: list[float] = []
        val_curve: list[float] = []
        best_loss, best_epoch = math.inf, 0
        best_state: dict[str, Any] = {}
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=shuffle)
            train_loss = _one_pass(net, optimiser, xt[order], yt[order], batch=batch, tau=tau)
            net.eval()
            with torch.no_grad():
                val_loss = float(_pinball_torch(net(xv), yv, tau))
            train_curve.append(train_loss)
            val_curve.append(val_loss)
            if val_loss < best_loss or not best_state:
                best_loss, best_epoch = val_loss, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            if progress is not None:
                progress(epoch, epochs, train_loss, val_loss)
            if epoch - best_epoch >= config.patience:
                break
    weights = {k: np.ascontiguousarray(v.numpy(), dtype=np.float32) for k, v in best_state.items()}
    return Fitted(
        weights=weights,
        curve=Curve(tuple(train_curve), tuple(val_curve), best_epoch),
        epochs=len(train_curve),
        batch_size=batch,
        steps=len(train_curve) * math.ceil(n / batch),
        seconds=time.perf_counter() - started,
    )


# -- calibration and metrics, in the serving arithmetic ---------------------------------------


def pinball(pred: npt.ArrayLike, target: npt.ArrayLike, tau: float) -> float:
    """Mean pinball loss over every element."""
    diff = np.asarray(target, dtype=np.float64) - np.asarray(pred, dtype=np.float64)
    if diff.size == 0:
        return math.nan
    return float(np.mean(np.maximum(tau * diff, (tau - 1.0) * diff)))


def conformal_rank(n: int, coverage: float) -> int:
    """``ceil((n + 1) coverage)``: the order statistic a conformal bound at ``coverage`` takes;
    TrainingError when ``n`` pairs are too few to state it."""
    k = math.ceil((n + 1) * coverage - 1e-9)
    if k > n:
        least = math.ceil(coverage / (1.0 - coverage) - 1e-9)
        raise TrainingError(
            f"{n} validation pairs cannot state a coverage of {coverage:g}: at least {least} "
            "are needed (more data, a larger OPENCLAW_TRAIN_VALIDATION_FRACTION, or a lower "
            "OPENCLAW_TRAIN_COVERAGE)"
        )
    return k


def _clamp(values: F64, low: float, high: float) -> F64:
    out = np.where(np.isnan(values), low, values)
    return np.clip(out, low, high)


@dataclass(frozen=True, slots=True)
class Calibrated:
    """Factors (capacity, refill rate) and what they achieve on the slice they came from."""

    capacity: float
    refill_rate: float
    coverage: float  #: achieved on the calibration slice
    rank: int
    objective: float  #: mean log over-allocation at the chosen factors


def calibrate(
    base: F64,
    pairs: PairSet,
    *,
    envelopes: EnvelopeSource,
    coverage: float,
    bounds: OutputBounds,
    rate_factors: tuple[float, ...],
) -> Calibrated:
    """Factors for uncalibrated buckets ``base`` (n, 2) [capacity, rate] (see the module
    docstring, step 3), the rate's among ``rate_factors``."""
    n = len(pairs)
    rank = conformal_rank(n, coverage)
    grid = np.asarray(rate_factors)
    rates = _clamp(base[:, 1:2] * grid[None, :], bounds.min_refill_rate, bounds.max_refill_rate)
    env = envelopes(pairs, rates)
    base_cap = base[:, 0:1]
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.where(env <= bounds.min_capacity, 0.0, env / base_cap)
    needed = np.where((env > bounds.max_capacity) | np.isnan(needed), np.inf, needed)
    factor = np.sort(needed, axis=0)[rank - 1] * (1.0 + FACTOR_HEADROOM)
    factor = np.maximum(factor, MIN_FACTOR)
    caps = _clamp(base_cap * factor[None, :], bounds.min_capacity, bounds.max_capacity)
    w = pairs.window_s
    granted = caps + rates * w
    need = pairs.need[:, 0:1] + pairs.need[:, 1:2] * w
    with np.errstate(divide="ignore"):
        cost = np.mean(np.log(granted / need), axis=0)
    cost = np.where(np.isfinite(factor), cost, np.inf)
    if not np.any(np.isfinite(cost)):
        raise TrainingError(
            "no calibration reaches the coverage: the needs exceed the output bounds "
            "(OPENCLAW_MODEL_MAX_CAPACITY / _MAX_REFILL_RATE)"
        )
    j = int(np.argmin(cost))
    achieved = float(np.mean(caps[:, j] >= env[:, j]))
    return Calibrated(
        capacity=float(factor[j]),
        refill_rate=float(grid[j]),
        coverage=achieved,
        rank=rank,
        objective=float(cost[j]),
    )


def buckets(base: F64, factors: tuple[float, float], bounds: OutputBounds) -> F64:
    """(n, 2) [capacity, refill_rate]: what the predictor serves for these uncalibrated
    outputs (factors, then the bounds)."""
    out = base * np.asarray(factors)
    return bounds.clamp(out)


@dataclass(frozen=True, slots=True)
class Allocation:
    coverage: float
    over_mean: float
    over_median: float


def allocation(bucket: F64, pairs: PairSet, *, envelopes: EnvelopeSource) -> Allocation:
    """Coverage (the bucket admits the next window) and over-allocation (``cap + rate W``
    over the need's ``b* + r* W``) of buckets for the pairs."""
    if len(pairs) == 0:
        return Allocation(math.nan, math.nan, math.nan)
    env = envelopes(pairs, bucket[:, 1:2])[:, 0]
    w = pairs.window_s
    ratio = (bucket[:, 0] + bucket[:, 1] * w) / (pairs.need[:, 0] + pairs.need[:, 1] * w)
    return Allocation(
        coverage=float(np.mean(bucket[:, 0] >= env)),
        over_mean=float(np.mean(ratio)),
        over_median=float(np.median(ratio)),
    )


# -- the whole training -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trained:
    spec: FeatureSpec
    fitted: Fitted
    network: MLP
    calibration: Calibration
    persistence: Calibrated
    metrics: dict[str, float | None]
    config: TrainConfig
    split: Split
    window_s: float
    seconds: float


def network_outputs(network: MLP, spec: FeatureSpec, x: F64) -> F64:
    """The network's raw outputs (log1p space) for raw feature rows, as serving computes them."""
    if x.shape[0] == 0:
        return np.empty((0, network.n_outputs))
    return network.forward(spec.transform(x)).astype(np.float64)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def train_model(
    pairs: PairSet,
    split: Split,
    *,
    config: TrainConfig,
    envelopes: EnvelopeSource,
    bounds: OutputBounds,
    progress: EpochProgress | None = None,
) -> Trained:
    """Normalise, train, calibrate and measure (see the module docstring)."""
    started = time.perf_counter()
    train, val = pairs.take(split.train), pairs.take(split.validation)
    if len(train) == 0:
        raise TrainingError("no pair to train on")
    conformal_rank(len(val), config.coverage)  # fail before training, not after
    spec = fit_features(train.X)
    y_train, y_val = train.targets(), val.targets()
    fitted = fit_network(
        spec.transform(train.X),
        y_train,
        spec.transform(val.X),
        y_val,
        config=config,
        progress=progress,
    )
    network = mlp_from_state_dict(fitted.weights, source="trained weights")
    raw_val = network_outputs(network, spec, val.X)
    grid = config.rate_factors()
    cal = calibrate(
        np.expm1(raw_val),
        val,
        envelopes=envelopes,
        coverage=config.coverage,
        bounds=bounds,
        rate_factors=grid,
    )
    persistence = calibrate(
        val.persistence(),
        val,
        envelopes=envelopes,
        coverage=config.coverage,
        bounds=bounds,
        rate_factors=grid,
    )
    uncalibrated = allocation(
        buckets(np.expm1(raw_val), (1.0, 1.0), bounds), val, envelopes=envelopes
    )
    constant = np.quantile(y_train, config.quantile, axis=0)
    metrics: dict[str, float | None] = {}
    slices = {"validation": (val, raw_val)}
    if split.test.size:
        test = pairs.take(split.test)
        slices["test"] = (test, network_outputs(network, spec, test.X))
    for name, (part, raw) in slices.items():
        p = PREFIX[name]
        y = part.targets()
        model = allocation(
            buckets(np.expm1(raw), (cal.capacity, cal.refill_rate), bounds),
            part,
            envelopes=envelopes,
        )
        persist = allocation(
            buckets(part.persistence(), (persistence.capacity, persistence.refill_rate), bounds),
            part,
            envelopes=envelopes,
        )
        values = {
            f"{p}_pinball": pinball(raw, y, config.quantile),
            f"{p}_coverage": model.coverage,
            f"{p}_under_allocation": 1.0 - model.coverage,
            f"{p}_over_allocation_mean": model.over_mean,
            f"{p}_over_allocation_median": model.over_median,
            f"{p}_pinball_constant": pinball(
                np.broadcast_to(constant, y.shape), y, config.quantile
            ),
            f"{p}_pinball_persistence": pinball(np.log1p(part.persistence()), y, config.quantile),
            f"{p}_persistence_coverage": persist.coverage,
            f"{p}_persistence_over_allocation_mean": persist.over_mean,
            f"{p}_persistence_over_allocation_median": persist.over_median,
        }
        metrics.update({k: _finite_or_none(v) for k, v in values.items()})
    metrics["val_coverage_uncalibrated"] = _finite_or_none(uncalibrated.coverage)
    calibration = Calibration(
        method="conformal-envelope",
        factors={"capacity": cal.capacity, "refill_rate": cal.refill_rate},
        coverage=config.coverage,
        details={
            "slice": "validation",
            "pairs": len(val),
            "rank": cal.rank,
            "achieved_coverage": cal.coverage,
            "admits": "b*(refill_rate) <= capacity on the next window (envelope of "
            "openclaw.features.core), after the output bounds",
            "envelope": "exact, from the store's arrival times"
            if envelopes.exact
            else "chord upper bound from the next window's features",
            "rate_factor_grid": list(grid),
            "objective": "least mean log of (capacity + rate W) / (b* + r* W)",
            "objective_value": cal.objective,
            "uncalibrated_coverage": uncalibrated.coverage,
            "persistence_factors": {
                "capacity": persistence.capacity,
                "refill_rate": persistence.refill_rate,
            },
        },
    )
    return Trained(
        spec=spec,
        fitted=fitted,
        network=network,
        calibration=calibration,
        persistence=persistence,
        metrics=metrics,
        config=config,
        split=split,
        window_s=pairs.window_s,
        seconds=time.perf_counter() - started,
    )


def predict_trained(trained: Trained, x: F64, bounds: OutputBounds) -> F64:
    """(n, 2) [capacity, refill_rate] the trained model serves for raw feature rows."""
    factors = trained.calibration.factors
    raw = network_outputs(trained.network, trained.spec, x)
    return buckets(np.expm1(raw), (factors["capacity"], factors["refill_rate"]), bounds)


# -- the artifact ---------------------------------------------------------------------------


def plot_learning_curve(curve: Curve, path: Path, *, quantile: float, title: str) -> None:
    """Training and validation loss per pass, the kept pass marked, as a PNG."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise TrainingError(
            "the learning curve needs matplotlib: pip install 'openclaw[train]'"
        ) from exc
    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = np.arange(1, len(curve.train_loss) + 1)
    ax.plot(epochs, curve.train_loss, label="train", color="tab:blue")
    ax.plot(epochs, curve.validation_loss, label="validation", color="tab:orange")
    ax.axvline(
        curve.best_epoch, color="grey", linestyle=":", label=f"kept: epoch {curve.best_epoch}"
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"pinball loss (quantile {quantile:g}, log1p targets)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def training_details(trained: Trained) -> dict[str, Any]:
    import torch

    fitted = trained.fitted
    return {
        **asdict(trained.config),
        "hidden": list(trained.config.hidden),
        "epochs_run": fitted.epochs,
        "best_epoch": fitted.curve.best_epoch,
        "batch_size_used": fitted.batch_size,
        "steps": fitted.steps,
        "fit_seconds": round(fitted.seconds, 3),
        "loss": "pinball on log1p(b*), log1p(r*)",
        "optimiser": "Adam",
        "torch": torch.__version__,
        "weights_sha256": fitted.checksum,
    }


def write_model(
    parent: Path,
    trained: Trained,
    *,
    data: DataInfo,
    since_us: int | None,
    until_us: int | None,
    now: dt.datetime,
    revision: str | None = None,
) -> Artifact:
    """The artifact ``parent/model-YYYYMMDD[-N]`` (the next free name of the day): weights,
    model.pt, manifest and learning curve."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = [p.name for p in parent.iterdir()]
    version = next_version(taken, now.date())
    split = trained.split
    window_us = round(trained.window_s * 1_000_000)

    def at(window: int | None) -> str | None:
        return None if window is None else utc(window * window_us).isoformat()

    details = {
        **data.details,
        "source": data.source,
        "pairs": data.counts.as_dict(),
        "validation_from": at(split.validation_from),
        "test_from": at(split.test_from),
        "training": training_details(trained),
    }
    window = DataWindow(
        start=utc(since_us) if since_us is not None else data.start,
        end=utc(until_us) if until_us is not None else data.end,
        rows=split.rows(),
        details=details,
    )
    with tempfile.TemporaryDirectory(prefix="openclaw-train-") as tmp:
        curve_png = Path(tmp) / LEARNING_CURVE
        plot_learning_curve(
            trained.fitted.curve,
            curve_png,
            quantile=trained.config.quantile,
            title=f"{version}: {split.rows()['train']:,} training pairs, "
            f"seed {trained.config.seed}",
        )
        return write_artifact(
            parent / version,
            trained.fitted.weights,
            features=trained.spec,
            calibration=trained.calibration,
            output=OutputSpec(names=TARGETS, transform="expm1"),
            data=window,
            metrics=trained.metrics,
            version=version,
            created_at=now,
            revision=revision,
            write_pt=True,
            extra_files={LEARNING_CURVE: curve_png},
        )


def check_artifact(artifact: Artifact, trained: Trained, x: F64, bounds: OutputBounds) -> float:
    """Load the written artifact the way serving does and compare its predictions with the
    trainer's on ``x``; returns the largest relative difference, raises when it is not tiny."""
    from openclaw.model.predictor import load_predictor

    if x.shape[0] == 0:
        return 0.0
    predictor = load_predictor(artifact.directory, bounds=bounds)
    served = predictor.predict_batch(x)
    expected = predict_trained(trained, x, bounds)
    scale = np.maximum(np.abs(expected), 1e-6)
    worst = float(np.max(np.abs(served - expected) / scale))
    if not worst <= 1e-5:
        raise ModelError(
            f"{artifact.directory}: the artifact predicts differently from the trainer "
            f"(relative difference {worst:.3g})"
        )
    return worst


# -- the command: openclaw train ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainOptions:
    out: Path
    store_url: str | None = None
    trace: Path | None = None
    fmt: Format = "nasa-tsv"
    days: float | None = None
    head: float | None = None
    seed: int | None = None
    epochs: int | None = None


@dataclass(frozen=True, slots=True)
class TrainReport:
    artifact: Artifact
    trained: Trained
    data: DataInfo
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)


def _open_data(
    options: TrainOptions,
    *,
    settings: Settings,
    stack: contextlib.ExitStack,
    bar: Progress,
    details: dict[str, Any],
) -> tuple[EventStore, str]:
    """The store to train from: the given one, or the trace ingested into a temporary DuckDB
    file (removed when ``stack`` closes)."""
    from openclaw.telemetry.ingest import file_size, ingest_file, redact
    from openclaw.telemetry.stores import open_event_store

    if options.trace is None:
        assert options.store_url is not None
        store = open_event_store(options.store_url, settings=settings)
        stack.callback(store.close)
        return store, f"store {redact(options.store_url)}"
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="openclaw-train-")))
    store = open_event_store(f"duckdb://{tmp / 'trace.duckdb'}", settings=settings)
    stack.callback(store.close)
    task = bar.add_task(f"ingesting {options.trace.name}", total=file_size(options.trace), note="")
    summary = ingest_file(
        options.trace,
        options.fmt,
        store,
        settings=settings,
        progress=lambda done: bar.update(task, completed=done),
    )
    bar.remove_task(task)
    details["trace_events"] = summary.accepted
    details["trace_rejected_lines"] = summary.rejected
    return store, f"trace {options.trace.name} ({options.fmt})"


def _pairs_of(
    store: EventStore,
    *,
    settings: Settings,
    span: tuple[int, int],
    bar: Progress,
    source: str,
) -> tuple[PairSet, PairCounts]:
    from openclaw.features.offline import extract_features

    since_us, until_us = span
    task = bar.add_task("features", total=until_us - since_us, note="")
    frame = extract_features(
        store,
        settings=settings,
        since_us=since_us,
        until_us=until_us,
        progress=lambda done, total: bar.update(task, completed=done, total=total),
    )
    bar.remove_task(task)
    pairs, counts = make_pairs(frame)
    if len(pairs) == 0:
        raise TrainingError(
            f"{source}: {counts.feature_rows} feature rows but no client active in two "
            "consecutive windows: nothing to learn from"
        )
    return pairs, counts


def run_train(
    options: TrainOptions,
    *,
    settings: Settings,
    status_console: Console | None = None,
    now: dt.datetime | None = None,
) -> TrainReport:
    """``openclaw train``: data (a store, or a trace ingested into a temporary DuckDB file),
    pairs, training, the artifact, and a check that it loads and predicts as trained."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from openclaw.features.core import duration_us

    if (options.trace is None) == (options.store_url is None):
        raise TrainingError("train on a store URL or on a trace file, one of the two")
    config = TrainConfig.from_settings(settings, seed=options.seed, epochs=options.epochs)
    bounds = OutputBounds.from_settings(settings)
    now = now or dt.datetime.now(dt.UTC)
    window_us = duration_us(settings.window_s)
    days = options.days if options.days is not None else settings.train_days
    started = time.perf_counter()
    phases: dict[str, float] = {}
    details: dict[str, Any] = {
        "window_s": window_us / 1_000_000,
        "label_horizon_s": settings.label_horizon_s,
        "days": days,
        "head": options.head,
    }
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=status_console or Console(stderr=True),
                transient=True,
            )
        )
        store, source = _open_data(
            options, settings=settings, stack=stack, bar=bar, details=details
        )
        phases["ingest"] = time.perf_counter() - started
        span = data_range(store, window_us=window_us, days=days, head=options.head)
        if span is None:
            raise TrainingError(f"{source}: no events to train on")
        t0 = time.perf_counter()
        pairs, counts = _pairs_of(store, settings=settings, span=span, bar=bar, source=source)
        phases["features"] = time.perf_counter() - t0
        split = time_split(
            pairs,
            validation_fraction=settings.train_validation_fraction,
            test_fraction=settings.train_test_fraction,
        )
        task = bar.add_task("training", total=None, note="")

        def on_epoch(epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
            bar.update(
                task,
                completed=epoch,
                total=epochs,
                note=f"epoch {epoch}/{epochs}  train {train_loss:.4f}  val {val_loss:.4f}",
            )

        t0 = time.perf_counter()
        trained = train_model(
            pairs,
            split,
            config=config,
            envelopes=StoreEnvelopes(store),
            bounds=bounds,
            progress=on_epoch,
        )
        bar.remove_task(task)
        phases["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        trained = with_policy_defaults(
            trained, policy_defaults(store, span=span, window_us=window_us)
        )
        phases["defaults"] = time.perf_counter() - t0
    since_us, until_us = span
    data = DataInfo(
        source=source, start=utc(since_us), end=utc(until_us), counts=counts, details=details
    )
    t0 = time.perf_counter()
    artifact = write_model(
        options.out, trained, data=data, since_us=since_us, until_us=until_us, now=now
    )
    check_artifact(artifact, trained, pairs.X[split.validation], bounds)
    phases["write"] = time.perf_counter() - t0
    return TrainReport(
        artifact=artifact,
        trained=trained,
        data=data,
        seconds=time.perf_counter() - started,
        phases=phases,
    )


def policy_defaults(store: EventStore, *, span: tuple[int, int], window_us: int) -> dict[str, Any]:
    """What the learned policy serves clients without a prediction (``openclaw.sim.policies``,
    "The tier default" and "The unhealthy-backend mode"), fitted on the training span: the
    smallest per-window quotas that throttle at most the learned policy's budget (healthy
    backend) and the static policy's (unhealthy) of its requests. The manifest carries them
    (``calibration.details.policy_defaults``) for the service; a replay fits the same on its
    training part."""
    from openclaw.sim.policies import PolicyConfig, fit_quota

    policy = PolicyConfig()
    rate = policy.static_rate_grid[0]
    since_us, until_us = span
    need, n = quota_needs(
        store, since_us=since_us, until_us=until_us, window_us=window_us, rate=rate
    )

    def quota(budget: float) -> dict[str, float]:
        return {
            "budget": budget,
            "capacity": fit_quota(need, n, budget=budget),
            "refill_rate": rate,
        }

    return {
        "tier_default": quota(policy.model_budget),
        "unhealthy_default": quota(policy.static_budget),
        "segments": int(need.size),
        "requests": int(n.sum()),
        "fit": "smallest per-window quota (capacity at the refill rate) whose (client, window) "
        "segments needing more hold at most the budget of the requests",
    }


def with_policy_defaults(trained: Trained, defaults: Mapping[str, Any]) -> Trained:
    """``trained`` with ``defaults`` in its calibration's details."""
    from dataclasses import replace

    cal = trained.calibration
    details = {**cal.details, "policy_defaults": dict(defaults)}
    return replace(trained, calibration=replace(cal, details=details))


def render_report(console: Console, report: TrainReport) -> None:
    """The summary ``openclaw train`` prints: data, training, metrics, the artifact."""
    from rich.table import Table

    trained = report.trained
    fitted = trained.fitted
    rows = trained.split.rows()
    counts = report.data.counts
    console.print(
        f"data: {report.data.source}, {counts.feature_rows:,} (client, window) rows -> "
        f"{counts.pairs:,} pairs (client active in the next window; {counts.silent_next:,} "
        f"silent next, {counts.last_window:,} in the last window); train {rows['train']:,}, "
        f"validation {rows['validation']:,}, test {rows['test']:,}"
    )
    console.print(
        f"trained: {fitted.epochs} epochs of {fitted.batch_size} rows ({fitted.steps:,} steps), "
        f"kept epoch {fitted.curve.best_epoch}, {fitted.seconds:.1f} s; "
        f"weights sha256 {fitted.checksum[:16]}"
    )
    factors = trained.calibration.factors
    console.print(
        f"calibrated: capacity x{factors['capacity']:.3g}, refill rate "
        f"x{factors['refill_rate']:.3g} for coverage {trained.config.coverage:g} "
        f"({trained.calibration.details.get('envelope')})"
    )
    defaults = trained.calibration.details.get("policy_defaults")
    if defaults is not None:
        tier, unhealthy = defaults["tier_default"], defaults["unhealthy_default"]
        console.print(
            f"defaults (clients without a prediction): a quota of {tier['capacity']:.1f} "
            f"requests per window (budget {tier['budget']:.1%} of the training requests), "
            f"{unhealthy['capacity']:.1f} after an unhealthy window (budget "
            f"{unhealthy['budget']:.1%})"
        )
    table = Table(title="metrics (pairs whose client is active in the next window)")
    table.add_column("metric")
    table.add_column("validation", justify="right")
    table.add_column("test", justify="right")
    names = sorted({k.split("_", 1)[1] for k in trained.metrics if k.startswith("val_")})
    order = [
        "pinball",
        "pinball_constant",
        "pinball_persistence",
        "coverage_uncalibrated",
        "coverage",
        "under_allocation",
        "over_allocation_mean",
        "over_allocation_median",
        "persistence_coverage",
        "persistence_over_allocation_mean",
        "persistence_over_allocation_median",
    ]
    names = [n for n in order if n in names] + [n for n in names if n not in order]

    def cell(key: str) -> str:
        value = trained.metrics.get(key)
        return "-" if value is None else f"{value:.4f}"

    for name in names:
        table.add_row(name, cell(f"val_{name}"), cell(f"test_{name}"))
    console.print(table)
    console.print(
        f"wrote {report.artifact.directory} ({', '.join(sorted(report.artifact.manifest.files))})"
        f" in {report.seconds:.1f} s"
    )


def pairs_and_split(frame: Any, *, settings: Settings) -> tuple[PairSet, PairCounts, Split]:
    """Pairs of a feature frame and their time split per the settings (tests, tools)."""
    pairs, counts = make_pairs(frame)
    split = time_split(
        pairs,
        validation_fraction=settings.train_validation_fraction,
        test_fraction=settings.train_test_fraction,
    )
    return pairs, counts, split
