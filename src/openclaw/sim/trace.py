"""A request trace as arrays, read through the telemetry parsers, and its time-forward split.

Clients are interned to integer indices (``names[client[i]]`` is request ``i``'s client): the
replay's hot loop then indexes lists and dicts by small ints, never hashes strings.
Times stay integer microseconds since the epoch (UTC), as events store them, so the replay,
the feature code and the labels see the very same instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from openclaw.errors import IngestError
from openclaw.telemetry.events import EventBatch
from openclaw.telemetry.parsers import Format, parse_file

US: Final = 1_000_000
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
ObjArray = npt.NDArray[np.object_]


@dataclass(frozen=True, slots=True)
class Trace:
    """Requests in time order (ties keep file order)."""

    source: str
    names: tuple[str, ...]  #: client names, by index
    client: I32
    ts_us: I64
    status: npt.NDArray[np.int16]
    #: Response times, ms (NaN where unknown: access logs record none).
    response_ms: F64
    #: Lines the parsers refused (the replay uses what parsed; the count is reported).
    rejected: int = 0

    def __len__(self) -> int:
        return int(self.ts_us.size)

    @property
    def start_us(self) -> int:
        return int(self.ts_us[0])

    @property
    def end_us(self) -> int:
        return int(self.ts_us[-1])

    @property
    def whole_seconds(self) -> bool:
        """True when every timestamp is a whole second (old access logs): the replay then
        spreads each second's requests over it, or they would all arrive at once."""
        return bool(np.all(self.ts_us % US == 0))

    @property
    def response_times_known(self) -> F64:
        """The known response times, ms (empty for access logs)."""
        known: F64 = self.response_ms[np.isfinite(self.response_ms)]
        return known

    def split_us(self, train_fraction: float, *, window_us: int) -> int:
        """The first window boundary (epoch-aligned, as the features' windows are) at or after
        ``train_fraction`` of the trace's span: requests before it train, the rest is
        evaluated."""
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be within (0, 1), got {train_fraction!r}")
        cut = self.start_us + round(train_fraction * (self.end_us - self.start_us))
        split = -(-cut // window_us) * window_us
        if split >= self.end_us:
            raise ValueError("the trace is too short to leave a window to evaluate")
        return split

    @classmethod
    def from_batch(cls, batch: EventBatch, *, source: str, rejected: int = 0) -> Trace:
        if len(batch) == 0:
            raise IngestError(f"{source}: no request could be read")
        order = np.argsort(batch.ts_us, kind="stable")
        names, client = np.unique(batch.client_id[order], return_inverse=True)
        return cls(
            source=source,
            names=tuple(str(n) for n in names.tolist()),
            client=client.astype(np.int32),
            ts_us=batch.ts_us[order].astype(np.int64),
            status=batch.status_code[order].astype(np.int16),
            response_ms=batch.response_time_ms[order].astype(np.float64),
            rejected=rejected,
        )


def load_trace(path: str | Path, fmt: Format = "nasa-tsv") -> Trace:
    """Read a log file (any format of ``openclaw.telemetry.parsers``) into a :class:`Trace`.

    Raises IngestError when the file cannot be read or holds no request at all; lines that
    do not parse are skipped and counted (``Trace.rejected``), as ``openclaw ingest`` does.
    """
    batches: list[EventBatch] = []
    rejected = 0
    for chunk in parse_file(path, fmt):
        batches.append(chunk.batch)
        rejected += len(chunk.rejections)
    return Trace.from_batch(EventBatch.concat(batches), source=str(path), rejected=rejected)
