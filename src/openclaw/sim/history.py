"""What a policy may know at a window boundary: the past, as the service's telemetry saw it.

The replay hands over each finished window's attempts (every request that reached the
limiter: retries, throttled and abusive ones included, with the status and latency the
service would have recorded). Labels and features are computed only when a policy asks, so
the policies that learn nothing online (none, static, the oracle) cost nothing here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from openclaw.features.core import FeatureFrame, aggregate_events, assemble
from openclaw.sim.labels import Segments, WindowLabels, segment
from openclaw.telemetry.events import UNKNOWN_BYTES, EventBatch

US: Final = 1_000_000
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Attempts:
    """One finished window's attempts, in time order."""

    window: int
    client: list[int]
    ts_us: list[int]
    status: list[int]
    latency_ms: list[float]  #: NaN where the limiter answered (throttled)


class History:
    """The training part's labels, then every finished window's (in time order)."""

    def __init__(
        self,
        *,
        names: tuple[str, ...],
        window_us: int,
        horizon_us: int,
        train: Segments,
        last_train: Attempts | None = None,
        traffic_scale: float = 1.0,
    ) -> None:
        self.names = names
        self.window_us = window_us
        self.horizon_us = horizon_us
        self.train = train
        #: ``traffic_share`` is multiplied by this (the trace's copies in an amplified replay):
        #: a model trained on the trace saw each client's share of one copy's traffic, not of
        #: k copies' (k times smaller), so without it every share it is fed is off by k.
        self.traffic_scale = traffic_scale
        self._windows = train.per_window()
        self._pending: list[Attempts] = []
        #: The training part's last window, so the first evaluated window has features too.
        self._last: Attempts | None = last_train
        self._index: dict[str, int] | None = None
        self._first_seen: dict[int, int] = {}
        if len(train):
            first_us = train.window * window_us + np.rint(train.rel_s[train.offsets[:-1]] * US)
            for c, us in zip(
                train.client.tolist(), first_us.astype(np.int64).tolist(), strict=True
            ):
                self._first_seen.setdefault(c, us)

    @classmethod
    def of_training(
        cls,
        *,
        names: tuple[str, ...],
        window_us: int,
        horizon_us: int,
        train: Segments,
        ts_us: I64,
        client: I64,
        status: npt.NDArray[np.int16],
        traffic_scale: float = 1.0,
    ) -> History:
        """The history before the first evaluated window, from the training requests."""
        last = None
        if ts_us.size:
            window = int(ts_us[-1]) // window_us
            inside = ts_us >= window * window_us
            last = Attempts(
                window=window,
                client=client[inside].tolist(),
                ts_us=ts_us[inside].tolist(),
                status=status[inside].tolist(),
                latency_ms=[math.nan] * int(inside.sum()),
            )
        return cls(
            names=names,
            window_us=window_us,
            horizon_us=horizon_us,
            train=train,
            last_train=last,
            traffic_scale=traffic_scale,
        )

    @property
    def n_clients(self) -> int:
        return len(self.names)

    def index_of(self, name: str) -> int:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        return self._index[name]

    def add(self, attempts: Attempts) -> None:
        """The replay: a window has finished."""
        self._pending.append(attempts)
        self._last = attempts

    @property
    def windows(self) -> list[WindowLabels]:
        """Labels ``(r*, b*)`` per client of every finished window (empty windows included
        after the training part)."""
        for raw in self._pending:
            self._windows.append(self._fold(raw))
        self._pending.clear()
        return self._windows

    def _fold(self, raw: Attempts) -> WindowLabels:
        if not raw.client:
            return WindowLabels.empty(raw.window)
        ts = np.array(raw.ts_us, np.int64)
        seg = segment(
            ts,
            np.array(raw.client, np.int64),
            window_us=self.window_us,
            horizon_us=self.horizon_us,
        )
        first = ts[seg.order[seg.offsets[:-1]]]
        seen = self._first_seen
        for c, us in zip(seg.client.tolist(), first.tolist(), strict=True):
            seen.setdefault(c, us)
        return WindowLabels(raw.window, seg.client, seg.n, seg.r_star, seg.b_star)

    def features_of_last(self) -> FeatureFrame:
        """Features of the last finished window by ``openclaw.features.core``, the code the
        service runs (one row per client that sent anything in it)."""
        self.windows  # noqa: B018 (folds pending windows: the first-seen times)
        raw = self._last
        window_s = self.window_us / US
        horizon_s = self.horizon_us / US
        if raw is None or not raw.client:
            return FeatureFrame.empty(window_s=window_s, label_horizon_s=horizon_s)
        n = len(raw.client)
        names = np.array(self.names, dtype=object)
        batch = EventBatch(
            event_id=np.full(n, "", dtype=object),
            client_id=names[np.array(raw.client, np.int64)],
            ts_us=np.array(raw.ts_us, np.int64),
            status_code=np.array(raw.status, np.int16),
            response_time_ms=np.array(raw.latency_ms, np.float64),
            route=np.full(n, None, dtype=object),
            method=np.full(n, None, dtype=object),
            bytes=np.full(n, UNKNOWN_BYTES, np.int64),
        )
        seen = {self.names[c]: us for c, us in self._first_seen.items()}
        agg, ts = aggregate_events(batch, window_us=self.window_us, first_seen_us=seen)
        frame = assemble(agg, ts, window_us=self.window_us, horizon_us=self.horizon_us)
        if self.traffic_scale != 1.0:
            share = frame.feature_names.index("traffic_share")
            frame.X[:, share] = np.minimum(frame.X[:, share] * self.traffic_scale, 1.0)
        return frame
