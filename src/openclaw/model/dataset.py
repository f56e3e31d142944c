"""Training pairs: what a client did in window ``k`` -> the bucket it needed in window ``k + 1``.

Rows come from the feature code (``openclaw.features``: one :class:`FeatureFrame` row per
(client, window) with events), so training sees exactly what serving computes.

Pairs
    For each client and window ``k`` with a row, the input is that row's features and the
    target the label ``(b*, r*)`` of the same client's row in window ``k + 1``. A pair exists
    only when the client is active in both windows. A client silent in ``k + 1`` needs the
    bucket ``(0, 0)``, and any bucket covers it; training on those zeros would pull the
    high quantile down towards zero wherever many clients leave (on the NASA trace about two
    rows in three have no successor) and so under-allocate the clients that do come back, the
    error that throttles legitimate traffic. So the model learns the need *given* that the
    client is active next, and coverage is stated for those pairs. What a silent client's
    bucket allows is the abuse side of the trade, bounded by the caps and the governor.
    Rows of the last window of the data have no next window to pair with and are dropped too
    (counted apart).

Inputs and targets
    Inputs are the window's features in :data:`FEATURE_NAMES` order. Counts, rates, envelopes,
    latencies, the coefficient of variation and ``seen_s`` are heavy-tailed (a few clients are
    thousands of times the median): they go through ``sign(x) log1p(|x|)`` first
    (:data:`LOG1P_FEATURES`), then every column is standardised with the mean and standard
    deviation of the *training* split only (:func:`fit_features`, stored in the manifest and
    applied by the very code serving uses, ``FeatureSpec.transform``). Targets are
    ``log1p(b*)`` and ``log1p(r*)``: multiplicative errors weigh alike for small and large
    clients.

Split
    By time, never at random: pairs are ordered by the window of their label and cut at window
    boundaries into train (the oldest), validation (chooses the epoch and calibrates) and test
    (the latest, touched by nothing but the final report), each about its share of the pairs.
    A pair's features come from the window before its label, so the first validation pair may
    read the last training window's features: features are known at prediction time, labels
    of the held-out windows never reach training.

Envelopes
    Calibration asks whether a bucket ``(cap, rate)`` admits the next window: ``b*(rate) <=
    cap``, with ``b*`` the envelope of ``openclaw.features.core``. :class:`StoreEnvelopes`
    computes it exactly from the arrival times in the telemetry store; :func:`knot_envelopes`
    bounds it from the next window's features alone (``b*`` is convex and falls in ``r``, so
    the chord between two known points lies above it: the points are ``(0, n)``, the three
    reference rates and ``(r*, b*)``), for data without arrival times (the benchmark's rows).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from openclaw.errors import TrainingError
from openclaw.features.core import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    REFERENCE_RATES,
    US,
    FeatureFrame,
    offsets_from_lengths,
    segmented_envelope,
)
from openclaw.model.artifact import FeatureSpec
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
IntP = npt.NDArray[np.intp]
ObjArray = npt.NDArray[np.object_]

#: Features that are log1p-scaled before standardisation (heavy-tailed, non-negative).
LOG1P_FEATURES: Final = frozenset(
    {
        "n_requests",
        "rate_mean",
        "peak_rate_1s",
        "peak_rate_10s",
        "peak_rate_60s",
        "bstar_r0_1",
        "bstar_r1",
        "bstar_r10",
        "burstiness_cv",
        "latency_p50_ms",
        "latency_p99_ms",
        "global_p99_ms",
        "seen_s",
        "r_star",
        "b_star",
    }
)
#: The network's outputs, in order: log1p(b*) and log1p(r*) of the next window.
TARGETS: Final = ("capacity", "refill_rate")
#: Envelope points known from a window's features: rate 0 (every request), the reference
#: rates, and the label's r*.
N_KNOTS: Final = 2 + len(REFERENCE_RATES)
#: Time covered by one store scan when computing exact envelopes (bounds memory).
SCAN_SLICE_S: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class PairSet:
    """Pairs (client, window k) -> need in window k + 1, ordered by the label's window."""

    client_id: ObjArray
    #: Window index k of the features; the label is window k + 1.
    window: I64
    #: (n, len(FEATURE_NAMES)) features of window k.
    X: F64
    #: (n, 2) the need of window k + 1: [b*, r*] (capacity, refill rate).
    need: F64
    #: (n, N_KNOTS) envelope points of window k + 1: rates ascending and b*(rate) at each.
    knot_rates: F64
    knot_caps: F64
    window_s: float
    label_horizon_s: float
    feature_names: tuple[str, ...] = field(default=FEATURE_NAMES)

    def __len__(self) -> int:
        return int(self.window.size)

    @property
    def window_us(self) -> int:
        return round(self.window_s * US)

    def take(self, index: IntP) -> PairSet:
        return PairSet(
            client_id=self.client_id[index],
            window=self.window[index],
            X=self.X[index],
            need=self.need[index],
            knot_rates=self.knot_rates[index],
            knot_caps=self.knot_caps[index],
            window_s=self.window_s,
            label_horizon_s=self.label_horizon_s,
            feature_names=self.feature_names,
        )

    def targets(self) -> F32:
        """(n, 2) float32 training targets: log1p(b*), log1p(r*)."""
        return np.log1p(self.need).astype(np.float32)

    def persistence(self) -> F64:
        """(n, 2) the window-k label [b*, r*]: what persistence predicts for window k + 1."""
        return np.column_stack(
            [self.X[:, FEATURE_INDEX["b_star"]], self.X[:, FEATURE_INDEX["r_star"]]]
        )


@dataclass(frozen=True, slots=True)
class PairCounts:
    """How the feature rows became pairs."""

    feature_rows: int
    pairs: int
    #: Rows whose client is silent in the next window (no pair, see the module docstring).
    silent_next: int
    #: Rows of the last window of the data: their next window is not in the data.
    last_window: int

    def as_dict(self) -> dict[str, int]:
        return {
            "feature_rows": self.feature_rows,
            "pairs": self.pairs,
            "silent_next": self.silent_next,
            "last_window": self.last_window,
        }


def _knots(frame: FeatureFrame, rows: IntP) -> tuple[F64, F64]:
    """Envelope points of the given rows, sorted by rate per row."""
    col = FEATURE_INDEX
    rates = np.empty((rows.size, N_KNOTS))
    caps = np.empty((rows.size, N_KNOTS))
    rates[:, 0] = 0.0
    caps[:, 0] = frame.X[rows, col["n_requests"]]
    for j, (rate, name) in enumerate(
        zip(REFERENCE_RATES, ("bstar_r0_1", "bstar_r1", "bstar_r10"), strict=True), start=1
    ):
        rates[:, j] = rate
        caps[:, j] = frame.X[rows, col[name]]
    rates[:, -1] = frame.r_star[rows]
    caps[:, -1] = frame.b_star[rows]
    order = np.argsort(rates, axis=1, kind="stable")
    return np.take_along_axis(rates, order, axis=1), np.take_along_axis(caps, order, axis=1)


#: The envelope points of some rows of a frame (the canary judges served windows with them).
knots_of: Final = _knots


def make_pairs(frame: FeatureFrame) -> tuple[PairSet, PairCounts]:
    """The pairs of a feature frame (any row order), ordered by (label window, client)."""
    if frame.feature_names != FEATURE_NAMES:
        raise TrainingError(
            f"features are schema {frame.schema_version!r} with other columns; this trainer "
            f"takes {FEATURE_SCHEMA_VERSION!r}"
        )
    window_us = round(frame.window_s * US)
    empty = np.empty(0, dtype=np.intp)
    if len(frame) == 0:
        rows, nxt = empty, empty
        silent = last = 0
    else:
        codes = np.unique(frame.client_id.astype(str), return_inverse=True)[1]
        window = frame.window_start_us // window_us
        order = np.lexsort((window, codes)).astype(np.intp)
        c = codes[order]
        w = window[order]
        follows = (c[1:] == c[:-1]) & (w[1:] == w[:-1] + 1)
        rows = order[:-1][follows]
        nxt = order[1:][follows]
        last = int(np.count_nonzero(window == window.max()))
        silent = len(frame) - rows.size - last
    # Ordered by the label's window, then client: the time split cuts this order.
    by_time = np.lexsort((frame.client_id[nxt].astype(str), frame.window_start_us[nxt]))
    rows, nxt = rows[by_time], nxt[by_time]
    knot_rates, knot_caps = _knots(frame, nxt)
    pairs = PairSet(
        client_id=frame.client_id[rows],
        window=(frame.window_start_us[rows] // window_us).astype(np.int64),
        X=frame.X[rows],
        need=np.column_stack([frame.b_star[nxt], frame.r_star[nxt]]),
        knot_rates=knot_rates,
        knot_caps=knot_caps,
        window_s=frame.window_s,
        label_horizon_s=frame.label_horizon_s,
    )
    counts = PairCounts(
        feature_rows=len(frame), pairs=len(pairs), silent_next=silent, last_window=last
    )
    return pairs, counts


# -- the time split ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Split:
    """Row indices of each slice (into a :class:`PairSet` ordered by label window) and the
    label windows where validation and test begin."""

    train: IntP
    validation: IntP
    test: IntP
    validation_from: int  #: first label window (index) of the validation slice
    test_from: int | None  #: first label window of the test slice (None: no test slice)

    def rows(self) -> dict[str, int]:
        return {
            "train": int(self.train.size),
            "validation": int(self.validation.size),
            "test": int(self.test.size),
        }


def time_split(pairs: PairSet, *, validation_fraction: float, test_fraction: float) -> Split:
    """Cut the pairs, ordered by their label's window, into train / validation / test at
    window boundaries, each close to its share of the pairs (a window is never shared)."""
    if not 0 < validation_fraction < 1 or not 0 <= test_fraction < 1:
        raise TrainingError("validation fraction must be in (0, 1) and test fraction in [0, 1)")
    if validation_fraction + test_fraction >= 1:
        raise TrainingError(
            f"validation ({validation_fraction}) and test ({test_fraction}) fractions leave "
            "nothing to train on"
        )
    label_window = pairs.window + 1
    if np.any(np.diff(label_window) < 0):
        raise TrainingError("pairs are not ordered by time (build them with make_pairs)")
    windows, starts = np.unique(label_window, return_index=True)
    n = len(pairs)
    needed = 3 if test_fraction > 0 else 2
    if windows.size < needed:
        raise TrainingError(
            f"{n} pairs in {windows.size} window(s): a time split needs pairs in at least "
            f"{needed} windows (more data, or a shorter OPENCLAW_WINDOW_S)"
        )

    def boundary(share: float, lowest: int, highest: int) -> int:
        """The window boundary (an index into ``windows``) nearest ``share`` of the rows."""
        j = int(np.argmin(np.abs(starts - share * n)))
        return min(max(j, lowest), highest)

    test_j = windows.size
    if test_fraction > 0:
        test_j = boundary(1 - test_fraction, 2, windows.size - 1)
    val_j = boundary(1 - test_fraction - validation_fraction, 1, test_j - 1)
    val_row = int(starts[val_j])
    test_row = int(starts[test_j]) if test_j < windows.size else n
    return Split(
        train=np.arange(0, val_row, dtype=np.intp),
        validation=np.arange(val_row, test_row, dtype=np.intp),
        test=np.arange(test_row, n, dtype=np.intp),
        validation_from=int(windows[val_j]),
        test_from=int(windows[test_j]) if test_j < windows.size else None,
    )


def fit_features(train_rows: F64) -> FeatureSpec:
    """The input normalisation, from the training rows only."""
    return FeatureSpec.fit(
        train_rows, FEATURE_NAMES, schema=FEATURE_SCHEMA_VERSION, log1p=LOG1P_FEATURES
    )


# -- envelopes of the next window -------------------------------------------------------------


class EnvelopeSource(Protocol):
    """``b*(rate)`` of each pair's next window: ``rates`` (n, m) -> (n, m)."""

    exact: bool

    def __call__(self, pairs: PairSet, rates: F64) -> F64: ...


def chord_bound(knot_rates: F64, knot_caps: F64, rates: F64) -> F64:
    """Per row, the piecewise-linear interpolation of its envelope points at ``rates`` (n, m):
    an upper bound of a convex, falling ``b*`` (exact at the points); beyond the last point,
    the last value (``b*`` only falls)."""
    q = np.asarray(rates, dtype=np.float64)
    n, k = knot_rates.shape
    if q.shape[0] != n:
        raise ValueError("one row of rates per pair")
    # j: how many points lie at or below each rate (at least 1: the first is rate 0).
    j = np.sum(q[:, :, None] >= knot_rates[:, None, :], axis=2)
    j = np.clip(j, 1, k)
    lo = j - 1
    hi = np.minimum(j, k - 1)
    lo_r = np.take_along_axis(knot_rates, lo, axis=1)
    hi_r = np.take_along_axis(knot_rates, hi, axis=1)
    lo_c = np.take_along_axis(knot_caps, lo, axis=1)
    hi_c = np.take_along_axis(knot_caps, hi, axis=1)
    span = hi_r - lo_r
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(span > 0, (q - lo_r) / np.where(span > 0, span, 1.0), 0.0)
    out: F64 = np.where(j >= k, knot_caps[:, -1:], lo_c + np.clip(t, 0.0, 1.0) * (hi_c - lo_c))
    return out


class KnotEnvelopes:
    """The envelope bounded from the next window's features (:func:`chord_bound`)."""

    exact = False

    def __call__(self, pairs: PairSet, rates: F64) -> F64:
        return chord_bound(pairs.knot_rates, pairs.knot_caps, rates)


knot_envelopes: Final = KnotEnvelopes()


class StoreEnvelopes:
    """The exact envelope from the arrival times in a telemetry store, read a day at a time.

    Every pair's next window must be in the store with the events its features were computed
    from (they were read from it); a pair whose window is missing raises TrainingError.
    """

    exact = True

    def __init__(self, store: EventStore, *, slice_s: float = SCAN_SLICE_S) -> None:
        self._store = store
        self._slice_s = slice_s

    def __call__(self, pairs: PairSet, rates: F64) -> F64:
        q = np.asarray(rates, dtype=np.float64)
        out = np.zeros(q.shape)
        if len(pairs) == 0:
            return out
        window_us = pairs.window_us
        label_window = pairs.window + 1
        per_slice = max(1, int(self._slice_s * US // window_us))
        first, end = int(label_window.min()), int(label_window.max()) + 1
        for lo in range(first, end, per_slice):
            hi = min(lo + per_slice, end)
            members = np.flatnonzero((label_window >= lo) & (label_window < hi))
            if members.size:
                out[members] = self._slice(
                    pairs, members, rates=q[members], lo=lo, hi=hi, window_us=window_us
                )
        return out

    def _slice(
        self, pairs: PairSet, members: IntP, *, rates: F64, lo: int, hi: int, window_us: int
    ) -> F64:
        batch = self._store.scan(since_us=lo * window_us, until_us=hi * window_us)
        names, codes = np.unique(batch.client_id.astype(str), return_inverse=True)
        win = batch.ts_us // window_us
        order = np.lexsort((batch.ts_us, win, codes))
        ts = batch.ts_us[order]
        key = codes[order].astype(np.int64) * (hi - lo) + (win[order] - lo)
        seg_start = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        seg_key = key[seg_start]
        seg_len = np.diff(np.append(seg_start, key.size))

        want_names = pairs.client_id[members].astype(str)
        at = np.searchsorted(names, want_names)
        known = at < names.size
        known[known] = names[at[known]] == want_names[known]
        want_key = at.astype(np.int64) * (hi - lo) + (pairs.window[members] + 1 - lo)
        seg = np.searchsorted(seg_key, want_key)
        found = known & (seg < seg_key.size)
        found[found] = seg_key[seg[found]] == want_key[found]
        if not np.all(found):
            miss = int(np.flatnonzero(~found)[0])
            raise TrainingError(
                f"the store has no events of client {want_names[miss]!r} in window "
                f"{int(pairs.window[members][miss]) + 1} (changed since the features were read?)"
            )
        lengths = seg_len[seg]
        offsets = offsets_from_lengths(lengths)
        gather = np.repeat(seg_start[seg] - offsets[:-1], lengths) + np.arange(offsets[-1])
        window_start = (pairs.window[members] + 1) * window_us
        rel_s = (ts[gather] - np.repeat(window_start, lengths)) / US
        return segmented_envelope(rel_s, offsets, rates)


def quota_needs(
    store: EventStore,
    *,
    since_us: int,
    until_us: int,
    window_us: int,
    rate: float,
    slice_s: float = SCAN_SLICE_S,
) -> tuple[F64, F64]:
    """Per (client, window) of the store's ``[since_us, until_us)``: the envelope ``b*(rate)``
    (what a per-window quota at that refill rate must hold) and the request count, read a day
    at a time (``openclaw.sim.policies.fit_quota`` takes them)."""
    needs: list[F64] = []
    counts: list[F64] = []
    per_slice = max(1, int(slice_s * US // window_us)) * window_us
    for lo in range(since_us // window_us * window_us, until_us, per_slice):
        batch = store.scan(since_us=max(lo, since_us), until_us=min(lo + per_slice, until_us))
        if not len(batch):
            continue
        codes = np.unique(batch.client_id.astype(str), return_inverse=True)[1]
        order = np.lexsort((batch.ts_us, codes))
        ts, client = batch.ts_us[order], codes[order].astype(np.int64)
        win = ts // window_us
        cut = np.flatnonzero((np.diff(win) != 0) | (np.diff(client) != 0)) + 1
        offsets = np.concatenate(([0], cut, [ts.size])).astype(np.intp)
        rel_s = (ts - np.repeat(win[offsets[:-1]] * window_us, np.diff(offsets))) / US
        needs.append(segmented_envelope(rel_s, offsets, np.array([rate]))[:, 0])
        counts.append(np.diff(offsets).astype(np.float64))
    if not needs:
        return np.empty(0), np.empty(0)
    return np.concatenate(needs), np.concatenate(counts)


# -- from a store ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataInfo:
    """Where the pairs came from, for the manifest."""

    source: str
    start: dt.datetime | None
    end: dt.datetime | None
    counts: PairCounts
    details: dict[str, Any] = field(default_factory=dict)


def utc(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / US, dt.UTC)


def data_range(
    store: EventStore,
    *,
    window_us: int,
    days: float | None,
    head: float | None = None,
) -> tuple[int, int] | None:
    """The whole windows to train on: the last ``days`` of the store (up to the end of the
    last event's window), then, with ``head``, only the first ``head`` share of that span,
    cut at the first window boundary at or after it (the split ``openclaw simulate
    --train-fraction`` makes, so a model can be trained on exactly the replay's training
    part). None when the store holds nothing."""
    bounds = store.time_range()
    if bounds is None:
        return None
    first_us, last_us = bounds
    until = (last_us // window_us + 1) * window_us
    since = first_us // window_us * window_us
    if days is not None:
        since = max(since, -(-(until - round(days * 86_400 * US)) // window_us) * window_us)
    if head is not None:
        if not 0 < head <= 1:
            raise TrainingError(f"head must be within (0, 1], got {head}")
        lo = max(first_us, since)
        cut = lo + round(head * (last_us - lo))
        until = min(until, -(-cut // window_us) * window_us)
    if until <= since:
        return None
    return since, until


Progress = Callable[[int, int], None]


def pairs_from_store(
    store: EventStore,
    *,
    settings: Settings,
    since_us: int,
    until_us: int,
    progress: Progress | None = None,
) -> tuple[PairSet, PairCounts]:
    """Features of the store's windows in ``[since_us, until_us)`` (the feature code's own
    extraction, windows and horizon from ``settings``), paired."""
    from openclaw.features.offline import extract_features

    frame = extract_features(
        store, settings=settings, since_us=since_us, until_us=until_us, progress=progress
    )
    return make_pairs(frame)
