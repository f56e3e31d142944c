"""Import a log file into a telemetry store: ``openclaw ingest FILE --format ...``.

The parser (``telemetry.parsers``) reads the file in small chunks; their batches are joined
into inserts of about :data:`INSERT_EVENTS` events, which a background thread writes while the
main thread parses the next ones. Both sides hold the GIL most of the time, but the stores
spend part of each insert without it (DuckDB's execution and its write to disk, the
ClickHouse socket), and that part overlaps the parsing when a core is free. Measured
(``openclaw bench ingest``, 1,000,000 NASA lines, 2 cores): into DuckDB 647,000 events/s with
the thread against 538,000 inline, into ClickHouse 248,000 against 230,000. The hand-overs of
the GIL cost some CPU (440,000 events per CPU-second against 495,000), so with no idle core
the inline path (``background=False``) is as fast or a little faster.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from openclaw.errors import IngestError
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.events import EventBatch, Rejection
from openclaw.telemetry.parsers import CHUNK_BYTES, Format, Limits, parse_file

if TYPE_CHECKING:
    from rich.console import Console

#: Events per store insert: big enough that an insert's fixed cost (a query plan, the
#: anti-join's scan of its time range) is spread thin, small enough to bound memory.
INSERT_EVENTS: Final = 100_000
#: Rejections kept with their detail (all are counted).
FIRST_REJECTIONS: Final = 20
#: Inserts waiting for the store while the parser runs ahead.
_QUEUE_DEPTH: Final = 2

#: Called with the bytes of the file read so far (compressed bytes for ``.gz``).
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """What one import did. ``lines`` counts every line of the file: ``accepted +
    rejected + blank`` plus the header line of a TSV."""

    source: str
    format: Format
    lines: int
    blank: int
    accepted: int
    #: Accepted events the store did not have yet; the rest were duplicates.
    stored: int
    rejected_by_reason: Mapping[str, int]
    first_rejections: tuple[Rejection, ...]
    bytes_read: int
    seconds: float
    header: int = 0

    @property
    def duplicates(self) -> int:
        return self.accepted - self.stored

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def events_per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Inserter:
    """The background thread that writes batches; its first error stops it and is re-raised
    in the caller's thread."""

    store: EventStore
    pending: queue.Queue[EventBatch | None] = field(
        default_factory=lambda: queue.Queue(maxsize=_QUEUE_DEPTH)
    )
    stored: int = 0
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="openclaw-ingest-insert", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (batch := self.pending.get()) is not None:
            if self.error is not None:
                continue  # drain, so the producer never blocks on a dead consumer
            try:
                self.stored += self.store.insert(batch)
            except BaseException as exc:  # re-raised by check() in the caller's thread
                self.error = exc

    def put(self, batch: EventBatch) -> None:
        self.check()
        self.pending.put(batch)

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> int:
        """Wait for every batch to be stored; the count of new rows."""
        self.pending.put(None)
        if self.thread is not None:
            self.thread.join()
        self.check()
        return self.stored


def ingest_file(
    path: str | Path,
    fmt: Format,
    store: EventStore,
    *,
    settings: Settings,
    progress: Progress | None = None,
    insert_events: int = INSERT_EVENTS,
    chunk_bytes: int = CHUNK_BYTES,
    background: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> IngestSummary:
    """Parse ``path`` as ``fmt`` and store its events; bad lines are counted and reported,
    never stop the good ones. Raises IngestError when the file cannot be read at all, and
    TelemetryStoreError when the store fails (what was inserted before stays: a rerun of the
    same file stores only what is missing).

    ``background=False`` inserts in the caller's thread (the benchmark compares the two).
    """
    start = clock()
    chunks = parse_file(
        path,
        fmt,
        limits=Limits(max_client_id_length=settings.max_client_id_length),
        chunk_bytes=chunk_bytes,
    )
    lines = blank = accepted = position = 0
    header = 1 if fmt == "nasa-tsv" else 0
    reasons: Counter[str] = Counter()
    first: list[Rejection] = []
    waiting: list[EventBatch] = []
    waiting_events = 0
    inserter = _Inserter(store)
    stored = 0

    def flush() -> None:
        nonlocal waiting_events, stored
        if not waiting:
            return
        batch = waiting[0] if len(waiting) == 1 else EventBatch.concat(waiting)
        waiting.clear()
        waiting_events = 0
        if background:
            inserter.put(batch)
        else:
            stored += store.insert(batch)

    if background:
        inserter.start()
    try:
        with contextlib.closing(chunks):  # closes the file when the loop is left early
            for chunk in chunks:
                lines += chunk.lines
                blank += chunk.blank
                position = chunk.position
                for rejection in chunk.rejections:
                    reasons[rejection.reason] += 1
                    if len(first) < FIRST_REJECTIONS:
                        first.append(rejection)
                if len(chunk.batch):
                    accepted += len(chunk.batch)
                    waiting.append(chunk.batch)
                    waiting_events += len(chunk.batch)
                    if waiting_events >= insert_events:
                        flush()
                if progress is not None:
                    progress(position)
        flush()
    except BaseException:
        if background:
            # Still wait for the inserts in flight: what they commit is committed, and the
            # thread must not outlive the store it writes to. The error being raised is
            # the one to report, not a second one from the thread.
            with contextlib.suppress(BaseException):
                inserter.finish()
        raise
    if background:
        stored = inserter.finish()
    return IngestSummary(
        source=str(path),
        format=fmt,
        lines=lines,
        blank=blank,
        accepted=accepted,
        stored=stored,
        rejected_by_reason=MappingProxyType(dict(reasons)),
        first_rejections=tuple(first),
        bytes_read=position,
        seconds=clock() - start,
        header=min(header, lines),
    )


def file_size(path: str | Path) -> int:
    """The size of the file to import (the progress bar's total), or IngestError naming it."""
    try:
        return Path(path).stat().st_size
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror or exc}") from exc


# -- the command line (openclaw ingest FILE) -------------------------------------------------


def redact(url: str) -> str:
    """A store URL fit to print: a password in it is replaced by ``***``."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


def import_file(
    path: Path,
    fmt: Format,
    *,
    store_url: str,
    settings: Settings,
    console: Console,
    status_console: Console,
) -> IngestSummary:
    """What ``openclaw ingest FILE`` does: open the store, import with a progress bar (bytes
    read, on ``status_console``), print the summary on ``console``."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from openclaw.telemetry.stores import open_event_store

    total = file_size(path)
    store = open_event_store(store_url, settings=settings)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=status_console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"importing {path.name}", total=total)
            summary = ingest_file(
                path,
                fmt,
                store,
                settings=settings,
                progress=lambda done: bar.update(task, completed=done),
            )
    finally:
        store.close()
    render_summary(console, summary, store_url=store_url)
    return summary


def render_summary(console: Console, summary: IngestSummary, *, store_url: str) -> None:
    from rich.table import Table

    def line(text: str, style: str = "") -> None:
        # File names and details are literal text: no markup, no highlighting.
        console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    line(
        f"{summary.source} ({summary.format}) -> {redact(store_url)}: "
        f"{summary.accepted:,} events in {summary.seconds:.2f} s "
        f"({summary.events_per_second:,.0f} events/s)",
        "bold",
    )
    grid = Table(show_header=False, box=None, padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_row("lines read", f"{summary.lines:,}")
    grid.add_row("accepted", f"{summary.accepted:,}")
    grid.add_row("  stored (new)", f"{summary.stored:,}")
    grid.add_row("  duplicates (already stored)", f"{summary.duplicates:,}")
    grid.add_row("rejected", f"{summary.rejected:,}", style="bold red" if summary.rejected else "")
    for reason, count in sorted(summary.rejected_by_reason.items(), key=lambda kv: -kv[1]):
        grid.add_row(f"  {reason}", f"{count:,}")
    grid.add_row("blank lines", f"{summary.blank:,}")
    if summary.header:
        grid.add_row("header line", f"{summary.header:,}")
    console.print(grid)
    if summary.first_rejections:
        shown = len(summary.first_rejections)
        more = f" (of {summary.rejected:,})" if summary.rejected > shown else ""
        line(f"first {shown} rejected lines{more}:", "bold")
        for rejection in summary.first_rejections:
            line(str(rejection))
