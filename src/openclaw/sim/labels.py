"""Arrivals grouped into (client, window) segments with their labels ``(r*, b*)``.

The arithmetic is ``openclaw.features.core``'s (the sliding peak, the envelope, the label's
guard), called on many segments at once; nothing here redefines a label. Windows are
epoch-aligned like the features' (window ``k`` is ``[k W, (k+1) W)``), and envelopes are taken
on times relative to the window start, as the feature code does, because the replay starts
every bucket full at a window boundary (``replay`` explains why): a bucket ``(b, r)`` then
admits all of a segment's arrivals exactly when ``b >= b*(r)`` of the segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from openclaw.features.core import (
    label_capacity,
    offsets_from_lengths,
    segmented_envelope,
    segmented_sliding_peak,
)

US: Final = 1_000_000
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Offsets = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class WindowLabels:
    """One window's segments: per client with arrivals, their count and label."""

    window: int
    client: I64
    n: I64
    r_star: F64
    b_star: F64

    def __len__(self) -> int:
        return int(self.client.size)

    @classmethod
    def empty(cls, window: int) -> WindowLabels:
        return cls(window, np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0))


@dataclass(frozen=True, slots=True)
class Segments:
    """Arrivals sorted by (window, client, time), cut into (client, window) segments."""

    window: I64  #: per segment
    client: I64  #: per segment
    offsets: Offsets  #: segment i is arrivals ``offsets[i]:offsets[i+1]``
    rel_s: F64  #: per arrival: seconds since its window's start
    order: npt.NDArray[np.intp]  #: arrival j of the segments is input arrival ``order[j]``
    r_star: F64
    b_star: F64

    def __len__(self) -> int:
        return int(self.window.size)

    @property
    def n(self) -> I64:
        counts: I64 = np.diff(self.offsets).astype(np.int64)
        return counts

    def envelope_at(self, rates: npt.ArrayLike) -> F64:
        """``b*(r)`` of every segment at its own rate ``rates[i]``."""
        r = np.asarray(rates, dtype=np.float64)
        if r.shape != self.window.shape:
            raise ValueError("one rate per segment")
        if not len(self):
            return np.empty(0)
        out: F64 = segmented_envelope(self.rel_s, self.offsets, r[:, None])[:, 0]
        return out

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Segments:
        """A subset of the segments (their arrivals come along)."""
        idx = np.arange(len(self))[index]
        lengths = np.diff(self.offsets)[idx]
        starts = self.offsets[:-1][idx]
        arrivals = (
            np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)])
            if idx.size
            else np.empty(0, dtype=np.intp)
        ).astype(np.intp)
        return Segments(
            window=self.window[idx],
            client=self.client[idx],
            offsets=offsets_from_lengths(lengths),
            rel_s=self.rel_s[arrivals],
            order=self.order[arrivals],
            r_star=self.r_star[idx],
            b_star=self.b_star[idx],
        )

    def window_slices(self) -> dict[int, slice]:
        """Where each window's segments are (they are sorted by window)."""
        if not len(self):
            return {}
        cut = np.flatnonzero(np.diff(self.window)) + 1
        starts = np.concatenate(([0], cut))
        ends = np.concatenate((cut, [len(self)]))
        return {
            int(self.window[s]): slice(int(s), int(e))
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
        }

    def labels_of(self, window: int, where: slice | None) -> WindowLabels:
        if where is None:
            return WindowLabels.empty(window)
        return WindowLabels(
            window=window,
            client=self.client[where],
            n=self.n[where],
            r_star=self.r_star[where],
            b_star=self.b_star[where],
        )

    def per_window(self) -> list[WindowLabels]:
        return [self.labels_of(w, s) for w, s in self.window_slices().items()]


def segment(
    ts_us: npt.ArrayLike,
    client: npt.ArrayLike,
    *,
    window_us: int,
    horizon_us: int,
) -> Segments:
    """Group arrivals (any order) into (client, window) segments and label each one."""
    ts = np.asarray(ts_us, dtype=np.int64)
    cl = np.asarray(client, dtype=np.int64)
    if ts.shape != cl.shape:
        raise ValueError("one client per arrival")
    win = ts // window_us
    order = np.lexsort((ts, cl, win)).astype(np.intp)
    ts, cl, win = ts[order], cl[order], win[order]
    if ts.size:
        cut = np.flatnonzero((np.diff(win) != 0) | (np.diff(cl) != 0)) + 1
        starts = np.concatenate(([0], cut)).astype(np.intp)
    else:
        starts = np.empty(0, dtype=np.intp)
    offsets = np.append(starts, ts.size).astype(np.intp)
    seg_win = win[starts]
    rel_us = ts - np.repeat(seg_win * window_us, np.diff(offsets))
    rel_s = rel_us / US
    peak = segmented_sliding_peak(rel_us, offsets, horizon_us)
    r_star = peak / (horizon_us / US)
    if starts.size:
        b_star = label_capacity(segmented_envelope(rel_s, offsets, r_star[:, None])[:, 0])
    else:
        b_star = np.empty(0)
    return Segments(
        window=seg_win.astype(np.int64),
        client=cl[starts].astype(np.int64),
        offsets=offsets,
        rel_s=rel_s,
        order=order,
        r_star=r_star.astype(np.float64),
        b_star=b_star,
    )
