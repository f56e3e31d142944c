"""The retraining pipeline (``openclaw pipeline``): extract, train, validate, register, package,
canary, each also a command of its own, every run recorded.

The steps call the code the single commands run; nothing is done twice over:

* **extract**: the data's last ``--days`` (``data_range``, as ``openclaw train`` cuts them) to
  ``features.parquet`` (``export_features``, as ``openclaw features``); the distribution of
  those rows (``distribution.json``) and the drift of its latest day (below).
* **train**: ``run_train`` on the same source and days (``openclaw train``); the artifact goes to
  ``model/`` in the run's directory.
* **validate**: the gate (``openclaw validate``): the new model against the champion, or
  ``pipeline_gate_baseline`` while there is none, with the governor on both sides when it is
  enabled. A failed check stops the run (:class:`GateRejected`, exit 1), naming every failed
  check and by how much.
* **register**: the artifact into the registry, once: the audit log entry names the run, so a
  step that crashed after registering finds its version again instead of registering twice.
* **package**: ``BUILDER --model VERSION_DIR --tag NAME:VERSION`` when ``buildah`` is on PATH and
  the builder script exists; otherwise recorded as skipped with the reason (not a failure).
* **canary**: the registry's ``challenger`` alias set to the new version (the service follows it
  and starts its canary); with a service URL, also the service's admin API.

Layout of ``PIPELINE_DIR`` (``--pipeline-dir``, ``OPENCLAW_PIPELINE_DIR``)::

    runs/RUN_ID/run.json          the record (below), rewritten atomically after every change
    runs/RUN_ID/features.parquet  extract's rows
    runs/RUN_ID/distribution.json deciles and shares of every feature over those rows
    runs/RUN_ID/model/model-...   the trained artifact (the registry holds the registered copy)
    runs/RUN_ID/gate.json         every check and replay of the gate
    runs/RUN_ID/package.log       the image builder's output
    baseline.json                 the retained drift baseline (see "Drift")
    drift.json                    the latest drift (read_drift reads it; the service shows it)
    metrics.prom                  for a node-exporter textfile collector

The record (``run.json``): ``inputs`` (data source, window, row counts, the settings that shape
the model and the gate, the code revision, each step's options), ``versions`` (the model
registered, the champion at the time, the gate's baseline, the image), ``metrics`` (training,
the gate's checks, drift), ``steps`` (each with ``status`` pending, running, done, skipped or
failed, ``started``, ``finished``, ``error``, ``outputs``), and ``outcome``: None while the run
can go on, then ``succeeded``, ``rejected`` (the gate) or ``failed`` (an error; ``reason``).

Re-running a step that is done (or skipped) and whose outputs exist does nothing but say so;
a step runs only after the steps before it. A single step without ``--run`` takes the latest
run still going on (``extract`` starts a new one when there is none); a run stopped by a
failure goes on only when named with ``--run``. A lock on the run's directory keeps two
processes from working on one run.

Drift
    Every extract computes the population stability index (:mod:`openclaw.rollout.drift`) of
    each feature over the latest day of the data (its last whole UTC day, or its last 24 hours
    when it holds no whole day) against the retained baseline, records it in the run, writes
    ``drift.json`` and exports it in ``metrics.prom``. The baseline is the distribution of the
    rows the *champion* was trained on: a run's own distribution is kept with the run, and
    ``baseline.json`` switches to it once the registry's champion is the version that run
    registered; until a first champion exists, the first run's own distribution stands in.
    Following the champion rather than the latest registered model is deliberate: drift asks
    how far today's traffic is from what the model *serving* it learned from, and a challenger
    that is rolled back, or a run the gate rejects, must not move that reference.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from openclaw.errors import GateRejected, OpenClawError, PipelineError
from openclaw.rollout.drift import (
    BASELINE_FORMAT,
    DRIFT_FILE,
    MODERATE,
    SIGNIFICANT,
    bins_from_json,
    bins_to_json,
    drift_document,
    feature_psi,
    fit_baseline,
    in_span,
    latest_day,
    read_json,
    worst,
    write_json,
)

if TYPE_CHECKING:
    from rich.console import Console

    from openclaw.model.registry import Registry
    from openclaw.settings import Settings
    from openclaw.telemetry.parsers import Format

STEPS: Final = ("extract", "train", "validate", "register", "package", "canary")
RUN_FORMAT: Final = "openclaw-pipeline-run-1"
RUNS: Final = "runs"
RUN_FILE: Final = "run.json"
LOCK_FILE: Final = ".lock"
FEATURES_FILE: Final = "features.parquet"
DISTRIBUTION_FILE: Final = "distribution.json"
MODEL_DIR: Final = "model"
GATE_FILE: Final = "gate.json"
PACKAGE_LOG: Final = "package.log"
BASELINE_FILE: Final = "baseline.json"
METRICS_FILE: Final = "metrics.prom"
#: Statuses of a step that lets the next one run.
COMPLETE: Final = frozenset({"done", "skipped"})
OUTCOMES: Final = ("succeeded", "rejected", "failed")
#: Run ids are directory names: no separators, no leading dot; Airflow's run ids
#: (``scheduled__2025-08-01T00:00:00+00:00``) fit.
_RUN_ID: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:+-]{0,127}$")
#: The longest an image build may take.
PACKAGE_TIMEOUT_S: Final = 3600.0
#: Lines of a failed build's log quoted in the error.
LOG_TAIL_LINES: Final = 15
#: Settings recorded with every run: what shapes the data, the model and the gate.
RECORDED_SETTINGS: Final = frozenset(
    {
        "window_s",
        "label_horizon_s",
        "train_days",
        "train_quantile",
        "train_coverage",
        "train_epochs",
        "train_batch_size",
        "train_learning_rate",
        "train_patience",
        "train_min_rate_factor",
        "train_hidden",
        "train_seed",
        "train_threads",
        "train_validation_fraction",
        "train_test_fraction",
        "slo_p99_ms",
        "slo_error_rate",
        "gate_tolerance",
        "gate_tolerance_slo_s",
        "gate_max_legit_throttled",
        "gate_max_abuse_admitted",
        "gate_max_slo_violation_s",
        "governor_enabled",
        "pipeline_gate_baseline",
        "model_min_capacity",
        "model_max_capacity",
        "model_min_refill_rate",
        "model_max_refill_rate",
    }
)


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataOptions:
    """Where the data comes from (extract; train checks it is the same)."""

    store_url: str | None = None  #: None with no trace: ``settings.telemetry_url``
    trace: Path | None = None
    fmt: Format = "nasa-tsv"
    days: float | None = None  #: None: ``settings.train_days``


@dataclass(frozen=True, slots=True)
class TrainStepOptions:
    seed: int | None = None
    epochs: int | None = None


@dataclass(frozen=True, slots=True)
class GateStepOptions:
    baseline: str | None = None  #: None: the champion, else ``settings.pipeline_gate_baseline``
    trace: Path | None = None  #: None: ``settings.gate_trace``
    fmt: Format = "nasa-tsv"
    scenarios: tuple[str, ...] | None = None  #: None: every scenario
    seeds: tuple[int, ...] | None = None  #: None: 0 1 2
    amplify: int | None = None
    train_fraction: float = 1 / 3


@dataclass(frozen=True, slots=True)
class StepOptions:
    data: DataOptions = field(default_factory=DataOptions)
    train: TrainStepOptions = field(default_factory=TrainStepOptions)
    gate: GateStepOptions = field(default_factory=GateStepOptions)
    service_url: str | None = None  #: None: ``settings.pipeline_service_url``


# -- the record ---------------------------------------------------------------------------------


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id) or run_id in {".", ".."}:
        raise PipelineError(
            f"not a run id: {run_id!r} (letters, digits and . _ : + -, at most 128, "
            "not starting with a dot or a dash)"
        )
    return run_id


def _iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _us_iso(us: int) -> str:
    return _iso(dt.datetime.fromtimestamp(us / 1e6, dt.UTC))


class Run:
    """One run's record (``run.json``) and directory."""

    def __init__(self, directory: Path, body: dict[str, Any]) -> None:
        self.directory = directory
        self.body = body

    @property
    def id(self) -> str:
        return str(self.body["run_id"])

    @property
    def path(self) -> Path:
        return self.directory / RUN_FILE

    @property
    def outcome(self) -> str | None:
        value = self.body.get("outcome")
        return None if value is None else str(value)

    def step(self, name: str) -> dict[str, Any]:
        steps: dict[str, dict[str, Any]] = self.body["steps"]
        return steps[name]

    def status(self, name: str) -> str:
        return str(self.step(name)["status"])

    def outputs(self, name: str) -> dict[str, Any]:
        outputs: dict[str, Any] = self.step(name).get("outputs") or {}
        return outputs

    def section(self, name: str) -> dict[str, Any]:
        part: dict[str, Any] = self.body.setdefault(name, {})
        return part

    def save(self, now: dt.datetime) -> None:
        self.body["updated_at"] = _iso(now)
        write_json(self.path, self.body)

    @classmethod
    def new(cls, directory: Path, run_id: str, now: dt.datetime) -> Run:
        body: dict[str, Any] = {
            "format": RUN_FORMAT,
            "run_id": run_id,
            "created_at": _iso(now),
            "updated_at": _iso(now),
            "finished_at": None,
            "outcome": None,
            "reason": None,
            "inputs": {},
            "versions": {},
            "metrics": {},
            "steps": {
                name: {
                    "status": "pending",
                    "started": None,
                    "finished": None,
                    "error": None,
                    "outputs": {},
                }
                for name in STEPS
            },
        }
        return cls(directory, body)

    @classmethod
    def load(cls, directory: Path) -> Run:
        body = read_json(directory / RUN_FILE)
        if body is None:
            raise PipelineError(f"{directory / RUN_FILE}: no such run record")
        if body.get("format") != RUN_FORMAT or not isinstance(body.get("steps"), dict):
            raise PipelineError(f"{directory / RUN_FILE}: not a pipeline run record")
        for name in STEPS:
            if not isinstance(body["steps"].get(name), dict):
                raise PipelineError(f"{directory / RUN_FILE}: no step {name!r}")
        return cls(directory, body)


def default_image_builder() -> Path:
    """``scripts/build-image`` of the checkout this code runs from."""
    # src/openclaw/rollout/pipeline.py -> the repository's root is three levels up.
    return Path(__file__).resolve().parents[3] / "scripts" / "build-image"


@dataclass(frozen=True, slots=True)
class StepResult:
    status: str  #: done or skipped
    outputs: dict[str, Any]
    note: str = ""


# -- the pipeline ------------------------------------------------------------------------------


class Pipeline:
    """The runs under ``root``. ``console`` gets what the steps report, ``status_console``
    progress bars; ``clock`` gives epoch seconds (run ids, timestamps)."""

    def __init__(
        self,
        root: Path,
        *,
        settings: Settings,
        registry: Registry,
        console: Console,
        status_console: Console | None = None,
        clock: Callable[[], float] = time.time,
        argv: Sequence[str] = (),
    ) -> None:
        self.root = Path(root)
        self.settings = settings
        self.registry = registry
        self.console = console
        self.status_console = status_console or console
        self._clock = clock
        self.argv = tuple(argv)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS

    # -- finding runs ------------------------------------------------------------------------

    def runs(self) -> list[Run]:
        """Every run with a readable record, oldest first."""
        if not self.runs_dir.is_dir():
            return []
        out: list[Run] = []
        for directory in self.runs_dir.iterdir():
            if not (directory / RUN_FILE).is_file():
                continue
            try:
                out.append(Run.load(directory))
            except PipelineError as exc:
                self.console.print(f"ignoring {directory}: {exc}", highlight=False)
        return sorted(out, key=lambda r: (str(r.body.get("created_at")), r.id))

    def get(self, run_id: str) -> Run:
        directory = self.runs_dir / check_run_id(run_id)
        if not (directory / RUN_FILE).is_file():
            raise PipelineError(f"no run {run_id!r} in {self.runs_dir}")
        return Run.load(directory)

    def latest_open(self) -> Run | None:
        """The newest run that can still go on (no outcome yet)."""
        going = [r for r in self.runs() if r.outcome is None]
        return going[-1] if going else None

    def target(self, run_id: str | None, *, first_step: str) -> Run | str | None:
        """The run a command works on, found but not created: an existing run, or the id of a
        run to create (None: a new id). ``first_step`` is ``run`` for the whole pipeline.

        A named run is that run, created when the command starts with extract (``run`` or
        ``extract``); no name is a new run for ``run``, else the latest run still going on
        (extract: a new one when there is none)."""
        starts = first_step in ("run", STEPS[0])
        if run_id is not None:
            directory = self.runs_dir / check_run_id(run_id)
            if (directory / RUN_FILE).is_file():
                return Run.load(directory)
            if not starts:
                raise PipelineError(
                    f"no run {run_id!r} in {self.runs_dir}: start it with `openclaw pipeline "
                    "run` or `openclaw pipeline extract`"
                )
            return run_id
        if first_step == "run":
            return None
        latest = self.latest_open()
        if latest is not None:
            return latest
        if starts:
            return None
        raise PipelineError(
            f"no run in progress in {self.runs_dir}: start one with `openclaw pipeline extract` "
            "(or `run`), or name one with --run"
        )

    def _create(self, run_id: str | None) -> Run:
        now = self._now()
        if run_id is None:
            run_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        directory = self.runs_dir / check_run_id(run_id)
        directory.mkdir(parents=True, exist_ok=True)
        run = Run.new(directory, run_id, now)
        run.save(now)
        return run

    # -- running steps -----------------------------------------------------------------------

    def check_inputs(self, steps: Sequence[str], options: StepOptions) -> None:
        """Refuse what cannot work before any run is created or step runs: both a store and a
        trace, a trace or gate trace that is not there."""
        data = options.data
        if "extract" in steps:
            if data.store_url is not None and data.trace is not None:
                raise PipelineError("give --store or --trace, not both")
            if data.trace is not None and not data.trace.is_file():
                raise PipelineError(f"{data.trace}: no such trace file (--trace)")
        if "validate" in steps:
            gate_trace = options.gate.trace or self.settings.gate_trace
            if not gate_trace.is_file():
                raise PipelineError(
                    f"{gate_trace}: no such trace file to replay in the gate "
                    "(--gate-trace or OPENCLAW_GATE_TRACE)"
                )

    def execute(
        self, run_id: str | None, steps: Sequence[str], options: StepOptions, *, whole: bool
    ) -> Run:
        """Run ``steps`` (in order) of a run; raises the first failure after recording it.
        ``whole``: the command is ``pipeline run`` (a new run unless ``run_id`` names one)."""
        target = self.target(run_id, first_step="run" if whole else steps[0])
        # Inputs are checked for the steps that will run, before a new run is created.
        pending = [
            s for s in steps if not isinstance(target, Run) or target.status(s) not in COMPLETE
        ]
        self.check_inputs(pending, options)
        run = target if isinstance(target, Run) else self._create(target)
        try:
            with self._locked(run):
                run = Run.load(run.directory)  # what another process may have written first
                self.console.print(f"run {run.id} ({run.directory})", highlight=False)
                for name in steps:
                    self._one(run, name, options)
        finally:
            self.export_metrics()
        return run

    @contextlib.contextmanager
    def _locked(self, run: Run) -> Iterator[None]:
        with (run.directory / LOCK_FILE).open("a") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PipelineError(f"run {run.id} is being worked on by another process") from None
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _one(self, run: Run, name: str, options: StepOptions) -> None:
        index = STEPS.index(name)
        for before in STEPS[:index]:
            if run.status(before) not in COMPLETE:
                error = run.step(before)["error"]
                raise PipelineError(
                    f"run {run.id}: {name} needs {before} first ({before} is "
                    f"{run.status(before)}" + (f": {error})" if error else ")")
                )
        step = run.step(name)
        if step["status"] in COMPLETE:
            if self._outputs_exist(run, name):
                self.console.print(
                    f"{name}: skipped, {step['status']} at {step['finished']}"
                    + (f" ({step['note']})" if step.get("note") else ""),
                    highlight=False,
                )
                return
            self.console.print(f"{name}: its outputs are gone, running it again", highlight=False)
        started = self._now()
        step.update(status="running", started=_iso(started), finished=None, error=None)
        run.body.update(outcome=None, reason=None, finished_at=None)
        run.save(started)
        t0 = time.perf_counter()
        try:
            result = getattr(self, f"_step_{name}")(run, options)
        except BaseException as exc:
            # Whatever stopped the step (an interrupt, a bug) is recorded before it goes on.
            now = self._now()
            error = str(exc) or type(exc).__name__
            step.update(status="failed", finished=_iso(now), error=error)
            outcome = "rejected" if isinstance(exc, GateRejected) else "failed"
            run.body.update(outcome=outcome, reason=f"{name}: {error}", finished_at=_iso(now))
            run.save(now)
            if isinstance(exc, (OSError, ValueError, subprocess.SubprocessError)) and not (
                isinstance(exc, OpenClawError)
            ):
                raise PipelineError(f"{name}: {error}") from exc
            raise
        now = self._now()
        step.update(
            status=result.status,
            finished=_iso(now),
            outputs=result.outputs,
            note=result.note,
            seconds=round(time.perf_counter() - t0, 3),
        )
        if all(run.status(s) in COMPLETE for s in STEPS):
            run.body.update(outcome="succeeded", reason=None, finished_at=_iso(now))
        run.save(now)
        self.console.print(
            f"{name}: {result.status} in {time.perf_counter() - t0:.1f} s"
            + (f" ({result.note})" if result.note else ""),
            highlight=False,
        )
        if run.outcome == "succeeded":
            self.console.print(f"run {run.id}: succeeded", highlight=False)

    def _outputs_exist(self, run: Run, name: str) -> bool:
        outputs = run.outputs(name)
        if name == "extract":
            return all((run.directory / f).is_file() for f in (FEATURES_FILE, DISTRIBUTION_FILE))
        if name == "train":
            return bool(outputs.get("artifact")) and Path(outputs["artifact"]).is_dir()
        if name == "validate":
            gate = run.section("metrics").get("gate") or {}
            return (run.directory / GATE_FILE).is_file() and gate.get("passed") is True
        if name in ("register", "canary"):
            version = run.section("versions").get("model")
            return bool(version) and self.registry.path_of(str(version)).is_dir()
        return True  # package: an image lives in the builder's store, not here

    # -- the steps ---------------------------------------------------------------------------

    def _source(self, data: DataOptions) -> tuple[str | None, str]:
        """The store URL to read (None for a trace) and how the record names the source
        (a store URL with its password redacted)."""
        from openclaw.telemetry.ingest import redact

        if data.trace is not None:
            return None, f"trace {data.trace.resolve()} ({data.fmt})"
        url = data.store_url or self.settings.telemetry_url
        return url, f"store {redact(url)}"

    def _step_extract(self, run: Run, options: StepOptions) -> StepResult:
        from openclaw.features.core import duration_us
        from openclaw.features.offline import export_features, read_parquet
        from openclaw.model.artifact import code_revision
        from openclaw.model.dataset import data_range
        from openclaw.telemetry.ingest import ingest_file, redact
        from openclaw.telemetry.stores import open_event_store

        settings = self.settings
        data = options.data
        days = data.days if data.days is not None else settings.train_days
        window_us = duration_us(settings.window_s)
        url, source = self._source(data)
        inputs = run.section("inputs")
        inputs.update(
            source=source,
            store_url=None if url is None else redact(url),
            trace=None if data.trace is None else str(data.trace.resolve()),
            format=data.fmt if data.trace is not None else None,
            days=days,
            settings=settings.model_dump(mode="json", include=set(RECORDED_SETTINGS)),
            code_revision=code_revision(),
            registry=str(self.registry.root.resolve()),
            pipeline_dir=str(self.root.resolve()),
        )
        rows: dict[str, Any] = {}
        features_path = run.directory / FEATURES_FILE
        with tempfile.TemporaryDirectory(prefix="openclaw-pipeline-") as tmp:
            if url is None:
                assert data.trace is not None
                # The trace is ingested as `openclaw train --trace` does it: into a throwaway
                # DuckDB file, the store the feature SQL runs in.
                url = f"duckdb://{Path(tmp) / 'trace.duckdb'}"
                store = open_event_store(url, settings=settings)
                try:
                    summary = ingest_file(
                        data.trace, data.fmt, store, settings=settings, background=False
                    )
                except BaseException:
                    store.close()
                    raise
                rows.update(trace_events=summary.accepted, trace_rejected_lines=summary.rejected)
            else:
                store = open_event_store(url, settings=settings)
            try:
                span = data_range(store, window_us=window_us, days=days)
                if span is None:
                    raise PipelineError(f"{source}: no events to train on")
                rows["events"] = store.count(since_us=span[0], until_us=span[1])
            finally:
                store.close()
            summary_f = export_features(
                url, features_path, settings=settings, since_us=span[0], until_us=span[1]
            )
        rows.update(
            feature_rows=summary_f.rows, clients=summary_f.clients, windows=summary_f.windows
        )
        since_us, until_us = span
        inputs["window"] = {
            "since": _us_iso(since_us),
            "until": _us_iso(until_us),
            "window_s": window_us / 1e6,
        }
        inputs["rows"] = rows
        frame = read_parquet(features_path)
        own = {
            "format": BASELINE_FORMAT,
            "run": run.id,
            "version": None,
            "window": inputs["window"],
            "rows": len(frame),
            "features": bins_to_json(fit_baseline(frame.X, frame.feature_names)),
        }
        write_json(run.directory / DISTRIBUTION_FILE, own)
        drift = self._drift(run, frame, span=span, window_us=window_us, own=own)
        note = f"{summary_f.rows:,} feature rows, {summary_f.clients:,} clients, {source}"
        top = drift.get("max")
        if top is not None:
            note += f"; drift: max PSI {top:.3f} ({drift['max_feature']})"
        return StepResult(
            "done",
            {
                "features": str(features_path),
                "distribution": str(run.directory / DISTRIBUTION_FILE),
            },
            note,
        )

    def _retained_baseline(self, own: dict[str, Any]) -> dict[str, Any]:
        """``baseline.json``, switched to the champion's training distribution when the
        champion is a version some run here registered (the rule in the module docstring);
        the first run's own distribution when there is none yet."""
        path = self.root / BASELINE_FILE
        current = read_json(path)
        champion = self.registry.alias("champion")
        if champion is not None and (current is None or current.get("version") != champion):
            for other in reversed(self.runs()):
                if other.section("versions").get("model") != champion:
                    continue
                theirs = read_json(other.directory / DISTRIBUTION_FILE)
                if theirs is not None:
                    body = {**theirs, "version": champion}
                    write_json(path, body)
                    return body
        if current is not None:
            return current
        write_json(path, own)
        return own

    def _drift(
        self,
        run: Run,
        frame: Any,
        *,
        span: tuple[int, int],
        window_us: int,
        own: dict[str, Any],
    ) -> dict[str, Any]:
        baseline_doc = self._retained_baseline(own)
        baseline = bins_from_json(baseline_doc.get("features") or {}, where=BASELINE_FILE)
        day_lo, day_hi, full = latest_day(*span)
        mask = in_span(frame.window_start_us, window_us, (day_lo, day_hi))
        values = feature_psi(baseline, frame.X[mask], frame.feature_names)
        now = self._now()
        details = {
            "latest_day": {
                "since": _us_iso(day_lo),
                "until": _us_iso(day_hi),
                "whole_day": full,
                "rows": int(mask.sum()),
            },
            "baseline": {
                "version": baseline_doc.get("version"),
                "run": baseline_doc.get("run"),
                "rows": baseline_doc.get("rows"),
                "window": baseline_doc.get("window"),
            },
        }
        doc = drift_document(values, run_id=run.id, computed_at=now, **details)
        write_json(self.root / DRIFT_FILE, doc)
        run.section("metrics")["drift"] = {k: v for k, v in doc.items() if k != "format"}
        top = worst(values)
        if top is not None and top[1] > MODERATE:
            level = "significant" if top[1] > SIGNIFICANT else "moderate"
            of = baseline_doc.get("version") or f"run {baseline_doc.get('run')}"
            self.console.print(
                f"drift: {level}: PSI {top[1]:.3f} on {top[0]} (the latest day against the "
                f"baseline of {of})",
                highlight=False,
            )
        return doc

    def _step_train(self, run: Run, options: StepOptions) -> StepResult:
        from openclaw.model.train import TrainOptions, render_report, run_train
        from openclaw.telemetry.ingest import redact

        inputs = run.section("inputs")
        trace = inputs.get("trace")
        url: str | None = None
        if trace is None:
            # The record keeps the URL with its password redacted: the real one comes from
            # this command's --store or the settings, and must be the one extract read.
            url = options.data.store_url or self.settings.telemetry_url
            if redact(url) != inputs.get("store_url"):
                raise PipelineError(
                    f"run {run.id} extracted from {inputs.get('store_url')}, not {redact(url)}: "
                    "give that store's --store"
                )
        fmt: Format = inputs.get("format") or "nasa-tsv"
        train = options.train
        inputs["train"] = asdict(train)
        report = run_train(
            TrainOptions(
                out=run.directory / MODEL_DIR,
                store_url=url,
                trace=None if trace is None else Path(trace),
                fmt=fmt,
                days=float(inputs["days"]),
                seed=train.seed,
                epochs=train.epochs,
            ),
            settings=self.settings,
            status_console=self.status_console,
            now=self._now(),
        )
        render_report(self.console, report)
        manifest = report.artifact.manifest
        details = manifest.data.details.get("training", {})
        run.section("metrics")["training"] = {
            "metrics": dict(manifest.metrics),
            "rows": dict(manifest.data.rows),
            "pairs": manifest.data.details.get("pairs"),
            "window": {
                "since": None if manifest.data.start is None else _iso(manifest.data.start),
                "until": None if manifest.data.end is None else _iso(manifest.data.end),
            },
            "epochs_run": details.get("epochs_run"),
            "best_epoch": details.get("best_epoch"),
            "weights_sha256": details.get("weights_sha256"),
            "seconds": round(report.seconds, 3),
        }
        directory = report.artifact.directory
        run.section("versions")["trained"] = manifest.version
        return StepResult(
            "done",
            {"artifact": str(directory)},
            f"{directory.name}, {manifest.data.rows.get('train', 0):,} training pairs",
        )

    def _gov(self) -> str:
        # The service runs the model under the governor when it is enabled: judge it so.
        return "+gov" if self.settings.governor_enabled else ""

    def _step_validate(self, run: Run, options: StepOptions) -> StepResult:
        from openclaw.sim.command import ALL_SCENARIOS, DEFAULT_SEEDS
        from openclaw.sim.validate import Options as GateOptions
        from openclaw.sim.validate import run as run_gate

        gate = options.gate
        artifact = Path(run.outputs("train")["artifact"])
        champion = self.registry.alias("champion")
        if gate.baseline is not None:
            baseline = gate.baseline
        elif champion is not None:
            baseline = f"{self.registry.path_of(champion)}{self._gov()}"
        else:
            baseline = self.settings.pipeline_gate_baseline
        trace = gate.trace or self.settings.gate_trace
        gate_options = GateOptions(
            candidate=f"{artifact}{self._gov()}",
            baseline=baseline,
            trace=trace,
            fmt=gate.fmt,
            scenarios=gate.scenarios or ALL_SCENARIOS,
            seeds=gate.seeds or DEFAULT_SEEDS,
            amplify=gate.amplify,
            train_fraction=gate.train_fraction,
            json_path=run.directory / GATE_FILE,
        )
        run.section("inputs")["gate"] = {
            **asdict(gate),
            "trace": str(trace.resolve()),
            "scenarios": list(gate_options.scenarios),
            "seeds": list(gate_options.seeds),
        }
        versions = run.section("versions")
        versions.update(champion=champion, baseline=baseline)
        verdict = run_gate(
            gate_options, settings=self.settings, argv=self.argv, console=self.console
        )
        failures = [c.reason() for c in verdict.failures]
        run.section("metrics")["gate"] = {
            "passed": verdict.passed,
            "candidate": verdict.candidate,
            "baseline": verdict.baseline,
            "scenarios": list(verdict.scenarios),
            "seeds": verdict.seeds,
            "failures": failures,
            "checks": [_finite_json(asdict(c) | {"passed": c.passed}) for c in verdict.checks],
        }
        if not verdict.passed:
            raise GateRejected(
                f"the gate failed {len(failures)} of {len(verdict.checks)} checks of "
                f"{verdict.candidate} against {verdict.baseline}: " + "; ".join(failures)
            )
        return StepResult(
            "done",
            {"gate": str(run.directory / GATE_FILE)},
            f"passed {len(verdict.checks)} checks against {verdict.baseline}",
        )

    def _registered_by(self, run: Run) -> str | None:
        """The version this run registered before, if the registry still holds it (found by
        the audit log, so a crash between registering and saving the record is no matter)."""
        marker = f"pipeline run {run.id}:"
        for entry in reversed(self.registry.audit_log()):
            if entry.action != "register" or entry.to_version is None:
                continue
            if marker in entry.reason and self.registry.path_of(entry.to_version).is_dir():
                return entry.to_version
        return None

    def _step_register(self, run: Run, options: StepOptions) -> StepResult:
        artifact = Path(run.outputs("train")["artifact"])
        versions = run.section("versions")
        version = self._registered_by(run)
        if version is not None:
            note = f"{version} (registered before by this run)"
        else:
            version = self.registry.register(
                artifact,
                reason=f"pipeline run {run.id}: passed the gate against {versions.get('baseline')}",
            )
            note = f"{version} in {self.registry.root}"
        versions["model"] = version
        # The first run's distribution stood in as the baseline: it now names its model.
        path = self.root / BASELINE_FILE
        baseline = read_json(path)
        if baseline is not None and baseline.get("run") == run.id and not baseline.get("version"):
            write_json(path, {**baseline, "version": version})
        return StepResult(
            "done", {"version": version, "path": str(self.registry.path_of(version))}, note
        )

    def _step_package(self, run: Run, options: StepOptions) -> StepResult:
        version = str(run.section("versions")["model"])
        builder = self.settings.pipeline_image_builder or default_image_builder()
        why_not = None
        if shutil.which("buildah") is None:
            why_not = "buildah is not on PATH"
        elif not builder.is_file():
            why_not = f"no image builder at {builder}"
        elif not os.access(builder, os.X_OK):
            why_not = f"{builder} is not executable"
        if why_not is not None:
            return StepResult("skipped", {"reason": why_not}, f"no image: {why_not}")
        tag = f"{self.settings.pipeline_image_name}:{version}"
        command = [
            str(builder),
            "--model",
            str(self.registry.path_of(version).resolve()),
            "--tag",
            tag,
        ]
        log = run.directory / PACKAGE_LOG
        self.console.print(f"package: {shlex.join(command)} (output in {log})", highlight=False)
        with log.open("wb") as fh:
            try:
                done = subprocess.run(  # noqa: S603 (our builder, our arguments, no shell)
                    command,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=PACKAGE_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise PipelineError(
                    f"{builder} took more than {PACKAGE_TIMEOUT_S:.0f} s (output in {log})"
                ) from exc
        if done.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()
            raise PipelineError(
                f"{shlex.join(command)} exited with {done.returncode}; the end of {log}: "
                + " | ".join(tail[-LOG_TAIL_LINES:])
            )
        run.section("versions")["image"] = tag
        return StepResult(
            "done", {"image": tag, "command": command, "log": str(log)}, f"built {tag}"
        )

    def _step_canary(self, run: Run, options: StepOptions) -> StepResult:
        version = str(run.section("versions")["model"])
        reason = f"pipeline run {run.id}: passed the gate against " + str(
            run.section("versions").get("baseline")
        )
        aliases = self.registry.aliases()
        outputs: dict[str, Any] = {"version": version}
        if aliases["champion"] == version:
            note = f"{version} already is the champion"
        else:
            change = self.registry.promote(version, alias="challenger", reason=reason)
            outputs["challenger_before"] = change.from_version
            note = f"challenger: {change.from_version or 'none'} -> {version}"
        run.section("versions")["challenger"] = version
        url = options.service_url or self.settings.pipeline_service_url
        if url:
            # Imported here: only this path talks HTTP.
            from openclaw.rollout.client import CanaryClient

            token = self.settings.admin_token
            client = CanaryClient(url, token.get_secret_value() if token is not None else "")
            outputs["service"] = {
                "url": url,
                "answer": client.start(version=version, reason=reason),
            }
            note += f"; canary started at {url}"
        return StepResult("done", outputs, note)

    # -- metrics -----------------------------------------------------------------------------

    def export_metrics(self) -> Path:
        """Write ``metrics.prom`` (see :func:`export_metrics`)."""
        return export_metrics(self.root, runs=self.runs())


def _finite_json(body: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity or NaN: such numbers become None."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in body.items()
    }


def export_metrics(root: Path, *, runs: Sequence[Run]) -> Path:
    """``PIPELINE_DIR/metrics.prom`` for node-exporter's textfile collector: the latest drift
    per feature, when runs last ended and succeeded, and the runs ended by outcome."""
    from prometheus_client import CollectorRegistry, write_to_textfile
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

    drift = read_json(root / DRIFT_FILE)
    ended = [r for r in runs if r.outcome in OUTCOMES]

    class Collector:
        def collect(self) -> Iterator[Metric]:
            psi = GaugeMetricFamily(
                "openclaw_feature_drift_psi",
                "Population stability index of each feature over the latest day of the data "
                "against the retained baseline (the champion's training data).",
                labels=["feature"],
            )
            top = GaugeMetricFamily(
                "openclaw_feature_drift_psi_max", "The largest PSI over the features."
            )
            when = GaugeMetricFamily(
                "openclaw_feature_drift_timestamp_seconds", "When the latest drift was computed."
            )
            if drift is not None:
                for name, value in sorted((drift.get("psi") or {}).items()):
                    psi.add_metric([name], float(value))
                if drift.get("max") is not None:
                    top.add_metric([], float(drift["max"]))
                stamp = _epoch(drift.get("computed_at"))
                if stamp is not None:
                    when.add_metric([], stamp)
            yield psi
            yield top
            yield when
            last = GaugeMetricFamily(
                "openclaw_pipeline_last_run_timestamp_seconds",
                "When the latest pipeline run ended, whatever its outcome.",
            )
            good = GaugeMetricFamily(
                "openclaw_pipeline_last_success_timestamp_seconds",
                "When the latest pipeline run that succeeded ended.",
            )
            finished = [(r.outcome, _epoch(r.body.get("finished_at"))) for r in ended]
            ends = [t for _, t in finished if t is not None]
            wins = [t for o, t in finished if t is not None and o == "succeeded"]
            if ends:
                last.add_metric([], max(ends))
            if wins:
                good.add_metric([], max(wins))
            yield last
            yield good
            total = CounterMetricFamily(
                "openclaw_pipeline_runs",
                "Pipeline runs ended, by outcome (succeeded, rejected by the gate, failed).",
                labels=["outcome"],
            )
            for outcome in OUTCOMES:
                total.add_metric([outcome], float(sum(r.outcome == outcome for r in ended)))
            yield total

    registry = CollectorRegistry()
    registry.register(Collector())
    root.mkdir(parents=True, exist_ok=True)
    path = root / METRICS_FILE
    write_to_textfile(str(path), registry)
    return path
