"""Features in the service: the same rows as ``openclaw features``, from rolling per-client state.

The service feeds every telemetry batch it accepts to :meth:`OnlineFeatures.observe`; at each
window boundary (its injected clock decides when) it calls :meth:`OnlineFeatures.close_until`
and hands the rows to the policy. A window's rows are computed by the code the offline path
uses (:func:`openclaw.features.core.aggregate_events`, the NumPy twin of the stores' SQL, then
:func:`openclaw.features.core.assemble`), so training and serving cannot drift apart;
``tests/test_features_parity.py`` checks the rows against a store's.

State: the events of windows not yet closed (bounded by the traffic of one or two windows) and
each client's first-seen time. An event for a window already closed is late: it is counted in
``late_events`` and left out, since the rows of that window have been published and a late
change would make serving see what training never could.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from openclaw.features.core import (
    FeatureFrame,
    aggregate_events,
    assemble,
    duration_us,
)
from openclaw.settings import Settings
from openclaw.telemetry.events import EventBatch


@dataclass(frozen=True, slots=True)
class OnlineStats:
    open_windows: int
    buffered_events: int
    clients_seen: int
    late_events: int
    closed_windows: int


class OnlineFeatures:
    """Per-window feature rows from a stream of event batches.

    Not thread-safe: the service calls it from one task (the telemetry consumer).
    """

    def __init__(self, settings: Settings, *, keep_closed: int = 4) -> None:
        self.window_us = duration_us(settings.window_s)
        self.horizon_us = duration_us(settings.label_horizon_s)
        self._keep_closed = keep_closed
        self._open: dict[int, list[EventBatch]] = {}
        self._first_seen: dict[str, int] = {}
        self._closed: OrderedDict[int, FeatureFrame] = OrderedDict()
        #: Windows up to this index are closed; their events arriving now are late.
        self._closed_through: int | None = None
        self.late_events = 0

    def window_of(self, ts_us: int) -> int:
        return ts_us // self.window_us

    def observe(self, batch: EventBatch) -> int:
        """Take a batch of accepted events; returns how many were used (the rest were late)."""
        if len(batch) == 0:
            return 0
        win = batch.ts_us // self.window_us
        if self._closed_through is not None:
            timely = win > self._closed_through
            late = int(len(batch) - np.count_nonzero(timely))
            if late:
                self.late_events += late
                batch = batch.take(timely)
                win = win[timely]
                if len(batch) == 0:
                    return 0
        self._remember_first_seen(batch)
        windows = np.unique(win)
        if windows.size == 1:
            self._open.setdefault(int(windows[0]), []).append(batch)
        else:
            for w in windows.tolist():
                self._open.setdefault(int(w), []).append(batch.take(win == w))
        return len(batch)

    def _remember_first_seen(self, batch: EventBatch) -> None:
        clients, index = np.unique(batch.client_id, return_inverse=True)
        first = np.full(clients.size, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, index, batch.ts_us)
        seen = self._first_seen
        for client, ts in zip(clients.tolist(), first.tolist(), strict=True):
            known = seen.get(client)
            if known is None or ts < known:
                seen[client] = ts

    def close_window(self, window: int) -> FeatureFrame:
        """Close ``window`` (and every earlier open one) and return its rows."""
        for w in sorted(w for w in self._open if w <= window):
            self._finish(w)
        if self._closed_through is None or window > self._closed_through:
            self._closed_through = window
        frame = self._closed.get(window)
        if frame is None:
            frame = self._empty()
        return frame

    def close_until(self, now_us: int) -> list[FeatureFrame]:
        """Close every window that ended at or before ``now_us``; their rows, oldest first."""
        last = now_us // self.window_us - 1
        frames = [self._finish(w) for w in sorted(w for w in self._open if w <= last)]
        if self._closed_through is None or last > self._closed_through:
            self._closed_through = last
        return frames

    def rows_for(self, window: int) -> FeatureFrame:
        """The rows of a closed window still kept (the last ``keep_closed``); an empty frame
        for a closed window without events. KeyError for a window not closed yet."""
        frame = self._closed.get(window)
        if frame is not None:
            return frame
        if self._closed_through is not None and window <= self._closed_through:
            if self._closed and window < next(iter(self._closed)):
                raise KeyError(f"window {window} is closed and no longer kept")
            return self._empty()
        raise KeyError(f"window {window} is still open")

    def stats(self) -> OnlineStats:
        return OnlineStats(
            open_windows=len(self._open),
            buffered_events=sum(len(b) for parts in self._open.values() for b in parts),
            clients_seen=len(self._first_seen),
            late_events=self.late_events,
            closed_windows=len(self._closed),
        )

    def _finish(self, window: int) -> FeatureFrame:
        events = EventBatch.concat(self._open.pop(window))
        agg, ts = aggregate_events(events, window_us=self.window_us, first_seen_us=self._first_seen)
        frame = assemble(agg, ts, window_us=self.window_us, horizon_us=self.horizon_us)
        self._closed[window] = frame
        while len(self._closed) > self._keep_closed:
            self._closed.popitem(last=False)
        return frame

    def _empty(self) -> FeatureFrame:
        return FeatureFrame.empty(
            window_s=self.window_us / 1e6, label_horizon_s=self.horizon_us / 1e6
        )
