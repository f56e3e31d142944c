"""Where each client's bucket comes from in a replay: the policies compared, behind one protocol.

At every window boundary the replay asks the policy for an :class:`Allocation` (a bucket per
listed client, a default for the rest) given the :class:`History`: the training part's labels
and the labels of every *finished* window as the limiter saw it (every attempt, retries and
abuse included, as the service's telemetry would record them). Nothing of the window about to
start is in it; only the hindsight oracle reads the future, by construction.

Policies (``make_policy`` names):

``none``         unlimited.
``static``       one ``(r, b)`` for everyone, by grid search on the training part: for each
                 rate ``r`` of a log grid, the smallest ``b`` such that the (client, window)
                 segments with ``b*(r) > b`` hold at most ``static_budget`` of the training
                 requests (an upper bound on the requests that bucket throttles: a segment with
                 ``b*(r) <= b`` loses none); of those, the one with the smallest admission bound
                 per window ``b + r W`` (the most one client can get through in a window).
``percentile``   per client, the ``percentile`` quantile of its own windows' ``r*`` and ``b*``
                 (all its active windows so far) times ``percentile_margin``.
``persistence``  per client active in the last finished window, that window's ``(r*, b*)``
                 times ``persistence_margin`` (the model's key ablation: the same information).
``oracle``       the hindsight oracle: each legitimate client's exact label ``(r*, b*)`` of its
                 legitimate requests in the window about to start, read from the future; every
                 other client gets nothing. It throttles no legitimate request (buckets start
                 full at each window, see ``replay``).
``X+gov``        policy X under the AIMD governor (:class:`GovernorConfig`).
``model``        :class:`ModelPolicy`: any object with ``predict(FeatureFrame) -> (capacity,
                 refill_rate)`` fed the features of the last finished window computed by
                 ``openclaw.features.core``, the service's path (the bare hook).
``PATH``         a model directory written by ``openclaw train``: :class:`LearnedModelPolicy`,
                 the hook with what the service's learned policy does around the model
                 (below); a model without the trainer's defaults runs as the bare hook.

Unseen clients (``percentile``, ``persistence``, the bare ``model`` hook) get a default: the
``default_quantile`` of the ``r*`` and ``b*`` of clients' *first* windows in the training
part (what a new client needs), times the policy's margin. Every finite bucket is floored at
``min_capacity`` tokens and one request per label horizon.

The learned policy (:class:`LearnedModelPolicy`), as the service runs it
(``openclaw.policy.learned``): the model's buckets under five rules, each kept because a
development replay measured what it does (docs/evaluation.md, "The model against the
baselines"):

* **The tier default** for every client the model has no prediction for (new, or silent in
  the last window: on the NASA day most (client, window) pairs): the smallest per-window
  quota (``fit_quota``: the static grid search at its lowest rate) that throttles at most
  ``model_budget`` of the training requests (0.1%, the evaluation's goal). ``openclaw
  train`` fits it on the model's training data and writes it in the manifest, where the
  service reads it; so does the replay (``manifest_defaults``), or, for a model without
  them, it fits them on its own training part.
* **The floor**: a learned bucket that admits less in a window (``b + r W``) than the tier
  default is raised to it, so a client the model knows is never worse off than one it does
  not. (A model trained on a few nights of one server extrapolates badly to a day of it; the
  floor bounds what that costs legitimate clients.)
* **The quota**: every bucket is served as a per-window quota, capacity ``b + r W`` and the
  tier default's refill rate (the static bucket's shape). Buckets start full at every window
  boundary (``replay``), so a quota admits every arrival pattern the bucket ``(b, r)``
  admits; but under the governor a scaled quota stays drained for the rest of the window,
  where a scaled rate would keep refilling it.
* **The refusal guard**: a client more than ``model_guard_refused`` of whose attempts in the
  last window were refused (429) kept sending after being told to stop, which a legitimate
  client (it retries a few times, after waiting) does not; its next bucket holds at most
  ``model_guard_keep`` of what it was let through in the last window (at least
  ``min_capacity``), at the default's refill rate, whatever the model says. The features say
  what a client did, not whether it listened: this is what stops a runaway client or a
  scraper the model would otherwise extrapolate from.
* **The unhealthy-backend mode**: after a window whose p99 latency or 5xx share broke the
  SLO (``model_slo_*``: the features ``global_p99_ms`` and ``global_5xx_frac``), the default
  is the quota at the static policy's budget (``static_budget``, 1%) and learned buckets are
  not floored: the generous default is what a healthy backend can afford; an overloaded one
  gets each client's predicted need, which the governor then scales.
"""

from __future__ import annotations

import bisect
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt

from openclaw.errors import ConfigError
from openclaw.features.core import FeatureFrame, label_capacity, segmented_envelope
from openclaw.policy.governor import GovernorConfig
from openclaw.policy.rules import Rules, manifest_defaults, serve_buckets
from openclaw.policy.rules import backend_unhealthy as unhealthy_window
from openclaw.sim.history import History
from openclaw.sim.labels import Segments

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
US: Final = 1_000_000
GOVERNED_SUFFIX: Final = "+gov"


@dataclass(frozen=True, slots=True)
class Allocation:
    """The buckets of one window: ``(capacity[i], refill_rate[i])`` for ``client[i]``, and
    ``default`` for every other client (None: unlimited)."""

    client: I64
    capacity: F64
    refill_rate: F64
    default: tuple[float, float] | None

    @classmethod
    def unlimited(cls) -> Allocation:
        empty = np.empty(0)
        return cls(np.empty(0, np.int64), empty, empty, None)

    @classmethod
    def uniform(cls, capacity: float, refill_rate: float) -> Allocation:
        empty = np.empty(0)
        return cls(np.empty(0, np.int64), empty, empty, (capacity, refill_rate))

    def dense(self, n_clients: int) -> tuple[F64, F64]:
        """Capacity and refill rate of every client index; ``inf`` capacity is unlimited."""
        cap_d, rate_d = self.default if self.default is not None else (math.inf, math.inf)
        cap = np.full(n_clients, cap_d, dtype=np.float64)
        rate = np.full(n_clients, rate_d, dtype=np.float64)
        cap[self.client] = self.capacity
        rate[self.client] = self.refill_rate
        return cap, rate


@runtime_checkable
class Policy(Protocol):
    @property
    def name(self) -> str: ...

    def begin(self, history: History) -> None:
        """Learn from the training part (``history.windows`` holds only its windows) and
        forget any earlier run."""
        ...

    def params_for(self, window: int, history: History) -> Allocation:
        """The buckets of window ``window`` (called for each window in order)."""
        ...


class BucketModel(Protocol):
    """What the model hook takes: one ``(capacity, refill_rate)`` per feature row."""

    def predict(self, features: FeatureFrame) -> tuple[F64, F64]: ...


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    static_budget: float = 0.01
    static_rate_grid: tuple[float, float, int] = (1 / 600, 50.0, 96)
    percentile: float = 0.95
    percentile_margin: float = 2.0
    persistence_margin: float = 2.0
    default_quantile: float = 0.99
    min_capacity: float = 1.0
    governor: GovernorConfig = field(default_factory=GovernorConfig)
    #: The learned policy (``LearnedModelPolicy``): the share of training requests its tier
    #: default may throttle (``fit_quota``'s budget).
    model_budget: float = 0.001
    #: Raise learned buckets that admit less per window than the tier default to it.
    model_floor: bool = True
    #: Serve each learned bucket as a per-window quota: capacity ``b + r W``, the tier
    #: default's rate.
    model_quota: bool = True
    #: The refusal guard: a client with more than this share of its last window's attempts
    #: refused gets at most ``model_guard_keep`` of what it was admitted (1.0: no guard).
    model_guard_refused: float = 0.5
    model_guard_keep: float = 0.5
    #: The unhealthy-backend mode: after a window whose p99 latency or 5xx share broke the
    #: SLO (``OPENCLAW_SLO_P99_MS``, ``OPENCLAW_SLO_ERROR_RATE``, whose defaults these are),
    #: the default is the quota at ``static_budget`` and learned buckets are not floored.
    model_unhealthy_mode: bool = True
    model_slo_p99_ms: float = 200.0
    model_slo_error_rate: float = 0.01


def _floored(cap: F64, rate: F64, config: PolicyConfig, horizon_us: int) -> tuple[F64, F64]:
    return (
        np.maximum(cap, config.min_capacity),
        np.maximum(rate, 1.0 / (horizon_us / US)),
    )


def new_client_default(
    history: History, *, quantile: float, margin: float, config: PolicyConfig
) -> tuple[float, float]:
    """What a client with no history gets: the quantile of training first windows' labels."""
    train = history.train
    if not len(train):
        return (config.min_capacity, 1.0 / (history.horizon_us / US))
    # Segments are sorted by (window, client): a client's first row is its first window.
    _, first = np.unique(train.client, return_index=True)
    r = float(np.quantile(train.r_star[first], quantile)) * margin
    b = float(np.quantile(train.b_star[first], quantile)) * margin
    cap, rate = _floored(np.array([b]), np.array([r]), config, history.horizon_us)
    return float(cap[0]), float(rate[0])


class NoLimit:
    name = "none"

    def begin(self, history: History) -> None:
        pass

    def params_for(self, window: int, history: History) -> Allocation:
        return Allocation.unlimited()


@dataclass(frozen=True, slots=True)
class StaticFit:
    capacity: float
    refill_rate: float
    #: Share of training requests in segments this bucket would throttle (<= the budget).
    throttled_bound: float


def fit_static(train: Segments, *, budget: float, rates: F64, window_s: float) -> StaticFit:
    """The grid search of ``static`` (the module docstring gives the objective)."""
    if not len(train):
        raise ValueError("static: the training part is empty")
    n = train.n.astype(np.float64)
    total = float(n.sum())
    env = segmented_envelope(train.rel_s, train.offsets, rates)  # (segments, rates)
    best: StaticFit | None = None
    best_bound = math.inf
    for k, r in enumerate(rates.tolist()):
        e = env[:, k]
        order = np.argsort(-e, kind="stable")
        spent = np.cumsum(n[order])
        # The segments we may afford to throttle: the largest needs, while within budget.
        skip = int(np.searchsorted(spent, budget * total, side="right"))
        b = float(label_capacity(e[order[skip]])) if skip < e.size else 1.0
        b = max(b, 1.0)
        bound = b + r * window_s
        if bound < best_bound:
            thrown = float(n[e > b].sum()) / total
            best, best_bound = StaticFit(b, float(r), thrown), bound
    assert best is not None
    return best


def fit_quota(need: F64, requests: F64, *, budget: float) -> float:
    """The smallest per-window quota (a capacity at a fixed, negligible refill rate) such that
    the (client, window) segments needing more (``need``: their envelope at that rate) hold at
    most ``budget`` of the ``requests``: ``fit_static`` at one rate, from arrays a caller may
    gather a slice at a time (the trainer does, over a store)."""
    need = np.asarray(need, dtype=np.float64)
    n = np.asarray(requests, dtype=np.float64)
    if not need.size:
        return 1.0
    order = np.argsort(-need, kind="stable")
    spent = np.cumsum(n[order])
    skip = int(np.searchsorted(spent, budget * float(n.sum()), side="right"))
    quota = float(label_capacity(need[order[skip]])) if skip < need.size else 1.0
    return max(quota, 1.0)


def tier_defaults(train: Segments, config: PolicyConfig) -> tuple[float, float, float]:
    """The learned policy's two defaults fitted on training segments: ``(rate, quota at
    model_budget, quota at static_budget)``, the rate the lowest of ``static_rate_grid``."""
    rate = config.static_rate_grid[0]
    if not len(train):
        return rate, config.min_capacity, config.min_capacity
    need = segmented_envelope(train.rel_s, train.offsets, np.array([rate]))[:, 0]
    n = train.n.astype(np.float64)
    return (
        rate,
        fit_quota(need, n, budget=config.model_budget),
        fit_quota(need, n, budget=config.static_budget),
    )


class StaticBest:
    name = "static"

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.fit: StaticFit | None = None

    def begin(self, history: History) -> None:
        lo, hi, m = self.config.static_rate_grid
        self.fit = fit_static(
            history.train,
            budget=self.config.static_budget,
            rates=np.geomspace(lo, hi, m),
            window_s=history.window_us / US,
        )

    def params_for(self, window: int, history: History) -> Allocation:
        if self.fit is None:
            raise RuntimeError("static: begin() was not called")
        return Allocation.uniform(self.fit.capacity, self.fit.refill_rate)


def _quantile(ordered: list[float], q: float) -> float:
    """``np.quantile``'s default (linear) on a sorted list, without NumPy's per-call cost
    (the percentile policy takes thousands of small quantiles per window)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    if lo + 1 >= len(ordered):
        return ordered[-1]
    return ordered[lo] + (ordered[lo + 1] - ordered[lo]) * (pos - lo)


class Percentile:
    name = "percentile"

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self._seen = 0
        self._r: dict[int, list[float]] = {}
        self._b: dict[int, list[float]] = {}
        self._cap = np.empty(0)
        self._rate = np.empty(0)
        self._known = np.empty(0, np.bool_)
        self._default: tuple[float, float] = (1.0, 1.0)

    def begin(self, history: History) -> None:
        self._seen = 0
        self._r.clear()
        self._b.clear()
        n = history.n_clients
        self._cap = np.zeros(n)
        self._rate = np.zeros(n)
        self._known = np.zeros(n, np.bool_)
        c = self.config
        self._default = new_client_default(
            history, quantile=c.default_quantile, margin=c.percentile_margin, config=c
        )
        self._catch_up(history)

    def _catch_up(self, history: History) -> None:
        c = self.config
        windows = history.windows
        changed: set[int] = set()
        for labels in windows[self._seen :]:
            for cl, r, b in zip(
                labels.client.tolist(), labels.r_star.tolist(), labels.b_star.tolist(), strict=True
            ):
                bisect.insort(self._r.setdefault(cl, []), r)
                bisect.insort(self._b.setdefault(cl, []), b)
                changed.add(cl)
        self._seen = len(windows)
        if not changed:
            return
        q, m = c.percentile, c.percentile_margin
        who = np.fromiter(changed, np.int64, len(changed))
        self._cap[who] = [_quantile(self._b[cl], q) * m for cl in who.tolist()]
        self._rate[who] = [_quantile(self._r[cl], q) * m for cl in who.tolist()]
        self._known[who] = True

    def params_for(self, window: int, history: History) -> Allocation:
        self._catch_up(history)
        clients = np.flatnonzero(self._known)
        cap, rate = _floored(
            self._cap[clients], self._rate[clients], self.config, history.horizon_us
        )
        return Allocation(clients.astype(np.int64), cap, rate, self._default)


class Persistence:
    name = "persistence"

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self._default: tuple[float, float] = (1.0, 1.0)

    def begin(self, history: History) -> None:
        c = self.config
        self._default = new_client_default(
            history, quantile=c.default_quantile, margin=c.persistence_margin, config=c
        )

    def params_for(self, window: int, history: History) -> Allocation:
        m = self.config.persistence_margin
        last = history.windows[-1] if history.windows else None
        if last is None or last.window != window - 1:
            return Allocation(np.empty(0, np.int64), np.empty(0), np.empty(0), self._default)
        cap, rate = _floored(last.b_star * m, last.r_star * m, self.config, history.horizon_us)
        return Allocation(last.client, cap, rate, self._default)


class Oracle:
    """The hindsight oracle (module docstring). ``legit`` are the legitimate requests'
    (client, window) segments of the evaluated part: the future, known in advance."""

    name = "oracle"

    def __init__(self, legit: Segments) -> None:
        self._by_window = legit.window_slices()
        self._legit = legit

    def begin(self, history: History) -> None:
        pass

    def params_for(self, window: int, history: History) -> Allocation:
        where = self._by_window.get(window)
        if where is None:
            return Allocation.uniform(0.0, 0.0)
        seg = self._legit
        return Allocation(seg.client[where], seg.b_star[where], seg.r_star[where], (0.0, 0.0))


class ModelPolicy:
    """The hook for a model: ``model.predict(features)`` gives a bucket per feature row (one
    row per client active in the last finished window); others get the new-client default."""

    def __init__(
        self, model: BucketModel, *, config: PolicyConfig, name: str = "model", margin: float = 1.0
    ) -> None:
        self.model = model
        self.config = config
        self.name = name
        self.margin = margin
        self._default: tuple[float, float] = (1.0, 1.0)

    def begin(self, history: History) -> None:
        c = self.config
        self._default = new_client_default(
            history, quantile=c.default_quantile, margin=self.margin, config=c
        )

    def params_for(self, window: int, history: History) -> Allocation:
        return self._allocate(history.features_of_last(), history)

    def _allocate(self, frame: FeatureFrame, history: History) -> Allocation:
        if not len(frame):
            return Allocation(np.empty(0, np.int64), np.empty(0), np.empty(0), self._default)
        cap, rate = self.model.predict(frame)
        cap = np.asarray(cap, dtype=np.float64)
        rate = np.asarray(rate, dtype=np.float64)
        if cap.shape != (len(frame),) or rate.shape != (len(frame),):
            raise ValueError(f"{self.name}: predict must return one capacity and rate per row")
        if not (np.all(np.isfinite(cap)) and np.all(np.isfinite(rate))):
            raise ValueError(f"{self.name}: predict returned a non-finite bucket")
        clients = np.fromiter(
            (history.index_of(str(n)) for n in frame.client_id), np.int64, len(frame)
        )
        cap, rate = _floored(cap, rate, self.config, history.horizon_us)
        cap, rate = self._adjust(frame, cap, rate, history)
        return Allocation(clients, cap, rate, self._default)

    def _adjust(
        self, frame: FeatureFrame, cap: F64, rate: F64, history: History
    ) -> tuple[F64, F64]:
        """What a subclass does to the floored buckets (rows of ``frame``); nothing here."""
        return cap, rate


def backend_unhealthy(frame: FeatureFrame, config: PolicyConfig) -> bool:
    """Whether the window ``frame`` describes broke the SLO as a whole: its p99 latency
    (``global_p99_ms``, 0 when no latency is known) or its 5xx share above the bound."""
    if not len(frame):
        return False
    return unhealthy_window(
        float(frame.column("global_p99_ms")[0]),
        float(frame.column("global_5xx_frac")[0]),
        slo_p99_ms=config.model_slo_p99_ms,
        slo_error_rate=config.model_slo_error_rate,
    )


class LearnedModelPolicy(ModelPolicy):
    """The learned policy as the service runs it: the model's buckets under the rules of the
    module docstring (the tier default, the floor, the quota, the refusal guard, the
    unhealthy-backend mode; their knobs are ``PolicyConfig.model_*``)."""

    def __init__(
        self, model: BucketModel, *, config: PolicyConfig, name: str = "model", margin: float = 1.0
    ) -> None:
        super().__init__(model, config=config, name=name, margin=margin)
        self.tier_default: tuple[float, float] = (1.0, 1.0)
        self.unhealthy_default: tuple[float, float] = (1.0, 1.0)
        #: Whether the last ``params_for`` saw an unhealthy backend (its rules then).
        self.unhealthy = False

    def begin(self, history: History) -> None:
        carried = manifest_defaults(self.model)
        if carried is not None:
            self.tier_default, self.unhealthy_default = carried
        else:
            rate, generous, tight = tier_defaults(history.train, self.config)
            self.tier_default = (generous, rate)
            self.unhealthy_default = (tight, rate)
        self._default = self.tier_default
        self.unhealthy = False

    def params_for(self, window: int, history: History) -> Allocation:
        frame = history.features_of_last()
        self.unhealthy = self.config.model_unhealthy_mode and backend_unhealthy(frame, self.config)
        self._default = self.unhealthy_default if self.unhealthy else self.tier_default
        return self._allocate(frame, history)

    def _adjust(
        self, frame: FeatureFrame, cap: F64, rate: F64, history: History
    ) -> tuple[F64, F64]:
        c = self.config
        # The service's rules, the same function (openclaw.policy.rules).
        return serve_buckets(
            cap,
            rate,
            refused=frame.column("frac_429"),
            n_requests=frame.column("n_requests"),
            default=self._default,
            window_s=history.window_us / US,
            unhealthy=self.unhealthy,
            rules=Rules(
                floor=c.model_floor,
                quota=c.model_quota,
                guard_refused=c.model_guard_refused,
                guard_keep=c.model_guard_keep,
                min_capacity=c.min_capacity,
            ),
        )


class Governed:
    """Policy ``base`` under the AIMD governor; the replay runs the multiplier."""

    def __init__(self, base: Policy, config: GovernorConfig) -> None:
        if isinstance(base, NoLimit | Governed):
            raise ValueError(f"the governor needs a finite base policy, not {base.name!r}")
        self.base = base
        self.config = config
        self.name: str = base.name + GOVERNED_SUFFIX

    def begin(self, history: History) -> None:
        self.base.begin(history)

    def params_for(self, window: int, history: History) -> Allocation:
        return self.base.params_for(window, history)


BASE_POLICIES: Final = ("none", "static", "percentile", "persistence", "oracle")
DEFAULT_POLICIES: Final = (
    "none",
    "static",
    "percentile",
    "persistence",
    "static+gov",
    "percentile+gov",
    "persistence+gov",
    "oracle",
)


def make_policy(name: str, *, config: PolicyConfig, legit: Segments | None = None) -> Policy:
    """A policy by name (``BASE_POLICIES``, each but ``none`` and ``oracle`` with ``+gov``).
    ``legit``: the legitimate segments of the run, which only the oracle reads."""
    if name.endswith(GOVERNED_SUFFIX):
        return Governed(
            make_policy(name[: -len(GOVERNED_SUFFIX)], config=config, legit=legit),
            config.governor,
        )
    if name == "none":
        return NoLimit()
    if name == "static":
        return StaticBest(config)
    if name == "percentile":
        return Percentile(config)
    if name == "persistence":
        return Persistence(config)
    if name == "oracle":
        if legit is None:
            raise ValueError("the oracle needs the run's legitimate segments")
        return Oracle(legit)
    raise ValueError(f"unknown policy {name!r}: use one of {', '.join(BASE_POLICIES)} (+gov)")


def check_policy_names(names: Sequence[str]) -> None:
    """Raise ValueError naming the first unknown policy (before any replay runs)."""
    for name in names:
        base = name.removesuffix(GOVERNED_SUFFIX)
        if base not in BASE_POLICIES:
            raise ValueError(
                f"unknown policy {name!r}: use one of {', '.join(BASE_POLICIES)} (+gov)"
            )
        if base != name and base in ("none", "oracle"):
            raise ValueError(f"{name!r}: the governor needs a finite, non-oracle base policy")


# -- resolving what a command names: a policy, or a model artifact -----------------------

#: Builds a fresh policy for one run from the run's policy settings and its legitimate
#: segments (only the oracle reads them).
PolicyBuilder = Callable[[PolicyConfig, Segments], Policy]
#: Turns a model artifact (a directory) into what the hook takes.
ModelLoader = Callable[[Path], BucketModel]
#: The knob of ``PolicyConfig`` a trade-off sweep varies, per base policy.
SWEEP_KNOBS: Final = {
    "static": "static_budget",
    "percentile": "percentile_margin",
    "persistence": "persistence_margin",
}


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A policy as a command names it (``resolve_policy``): its label in tables, and how to
    build a fresh one for each run."""

    name: str
    build: PolicyBuilder
    #: The ``PolicyConfig`` field a sweep varies (None: nothing to sweep).
    knob: str | None = None


def default_model_loader(path: Path) -> BucketModel:
    """``openclaw.model.load_bucket_model(path)``, imported only when a path is named (the
    model package brings its own dependencies)."""
    try:
        module = importlib.import_module("openclaw.model")
    except ModuleNotFoundError as exc:
        if exc.name not in ("openclaw.model", "openclaw"):
            raise
        module = None
    loader = getattr(module, "load_bucket_model", None)
    if loader is None:
        raise ConfigError(
            f"{path}: a model directory, but no model loader is installed "
            "(openclaw.model.load_bucket_model)"
        )
    return cast(BucketModel, loader(path))


def resolve_policy(spec: str, *, model_loader: ModelLoader | None = None) -> PolicySpec:
    """A policy name (``make_policy``'s) or the path of a model artifact, either with
    ``+gov`` for the governor. A model is loaded once, here; each run gets a fresh
    :class:`LearnedModelPolicy` around it (a :class:`ModelPolicy`, the bare hook, when the
    model carries no ``policy_defaults``: not written by ``openclaw train``), labelled
    ``model:<directory name>``.

    Raises ValueError for a name that is neither, before any replay runs."""
    base = spec.removesuffix(GOVERNED_SUFFIX)
    governed = base != spec
    if base in BASE_POLICIES:
        check_policy_names([spec])
        name = spec
        return PolicySpec(
            spec,
            lambda config, legit: make_policy(name, config=config, legit=legit),
            SWEEP_KNOBS.get(base),
        )
    path = Path(base)
    if not path.exists():
        raise ValueError(
            f"unknown policy {spec!r}: use one of {', '.join(BASE_POLICIES)} (+gov), "
            "or the path of a model directory"
        )
    model = (model_loader or default_model_loader)(path)
    label = f"model:{path.resolve().name}"

    # Only an artifact of openclaw train carries the defaults the learned policy's rules rest
    # on; anything else (a bare state_dict, a test's hook) runs as the bare hook.
    kind = LearnedModelPolicy if manifest_defaults(model) is not None else ModelPolicy

    def build(config: PolicyConfig, legit: Segments) -> Policy:
        policy: Policy = kind(model, config=config, name=label)
        return Governed(policy, config.governor) if governed else policy

    return PolicySpec(label + (GOVERNED_SUFFIX if governed else ""), build)
