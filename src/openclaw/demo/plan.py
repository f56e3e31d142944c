"""What the demo replays: the options, the trace, the slice and the tier default (pure)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from openclaw.errors import ConfigError, IngestError
from openclaw.settings import Settings

if TYPE_CHECKING:
    from openclaw.sim.trace import Trace
    from openclaw.telemetry.parsers import Format

US: Final = 1_000_000
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

#: Where the trace is by default: ``../shared/data/traces`` beside the checkout.
DEFAULT_TRACE: Final = Path("../shared/data/traces/nasa_19950801.tsv")
SCENARIO: Final = "scraper"
#: The calibration target the evaluation settled on (docs/evaluation.md).
DEMO_COVERAGE: Final = 0.98


@dataclass(frozen=True, slots=True)
class DemoOptions:
    trace: Path
    fmt: Format = "nasa-tsv"
    #: None: a new temporary directory, kept (the plots are there) and named in the report.
    workdir: Path | None = None
    #: Trace minutes replayed over HTTP (whole windows), of which ``lead_minutes`` before the
    #: scraper starts.
    minutes: float = 60.0
    lead_minutes: float = 10.0
    scraper_rps: float = 4.0
    seed: int = 0
    train_fraction: float = 0.5
    coverage: float = DEMO_COVERAGE
    #: Bounds of the HTTP part: requests (the replay is cut short, at a time, to fit) and
    #: wall seconds (the replay stops there and says so).
    max_requests: int = 40_000
    max_seconds: float = 180.0
    #: Copies of the trace the validation replay superposes (None: as ``openclaw validate``).
    validate_amplify: int | None = None
    json_path: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.lead_minutes < self.minutes:
            raise ConfigError(
                f"--lead-minutes must be at least 0 and below --minutes, got "
                f"{self.lead_minutes:g} and {self.minutes:g}"
            )
        if self.scraper_rps <= 0 or self.max_requests < 1 or self.max_seconds <= 0:
            raise ConfigError("the scraper's rate, max requests and max seconds must be > 0")
        if not 0 < self.train_fraction < 1:
            raise ConfigError(
                f"the train fraction must be within (0, 1), got {self.train_fraction}"
            )


def resolve_trace(
    given: Path | None, *, cwd: Path | None = None, beside_checkout: Path | None = None
) -> Path:
    """The trace to replay: ``given`` (relative to the working directory), else the NASA day
    beside the working directory or beside the checkout (``openclaw.testing.traces``),
    whichever exists. IngestError naming every place looked at when there is none."""
    if given is not None:
        if not given.is_file():
            why = "is a directory" if given.is_dir() else "does not exist"
            raise IngestError(f"trace {given} {why}: give the path of an access log")
        return given
    if beside_checkout is None:
        from openclaw.testing.traces import NASA

        beside_checkout = NASA
    here = ((cwd or Path.cwd()) / DEFAULT_TRACE).resolve()
    tried = list(dict.fromkeys([here, beside_checkout]))
    for path in tried:
        if path.is_file():
            return path
    raise IngestError(
        f"the default trace {DEFAULT_TRACE} was not found (looked at "
        f"{' and '.join(str(p) for p in tried)}): run from a checkout beside shared/, or give "
        "a trace: openclaw demo PATH"
    )


def utc(ts_us: int) -> str:
    """An epoch time in microseconds as the report prints it."""
    return dt.datetime.fromtimestamp(ts_us / US, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- the plan: what is replayed (pure) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """The requests the demo sends, and what the service is told before."""

    names: tuple[str, ...]
    #: The replay, in time order: client index, time (epoch us), scraper or not, and the
    #: trace's status (what the API answered, reported when the request is admitted).
    client: I64
    ts_us: I64
    scraper: Bool
    status: npt.NDArray[np.int16]
    #: The trace before the replay (training part and what follows it): warm-up telemetry.
    warm_client: I64
    warm_ts_us: I64
    warm_status: npt.NDArray[np.int16]
    start_us: int
    end_us: int
    window_us: int
    split_us: int
    #: The tier default (capacity, refill rate) of the policy file.
    default: tuple[float, float]
    scraper_name: str
    #: Requests in the slice before ``max_requests`` cut it.
    uncut: int

    def __len__(self) -> int:
        return int(self.ts_us.size)

    @property
    def scraper_index(self) -> int:
        return self.names.index(self.scraper_name)


def make_plan(trace: Trace, *, settings: Settings, options: DemoOptions) -> Plan:
    """The simulator's scraper scenario on the unamplified trace (the in-second spread and the
    scraper ``openclaw validate`` replays, seed for seed), and the slice the demo replays:
    ``lead_minutes`` before the scraper starts, ``minutes`` in all, at window boundaries."""
    from openclaw.sim.history import History
    from openclaw.sim.policies import PolicyConfig, new_client_default
    from openclaw.sim.scenarios import ScenarioConfig, ScraperConfig, build_demand, calibrate

    window_us = round(settings.window_s * US)
    demand = build_demand(
        trace,
        SCENARIO,
        options.seed,
        window_s=settings.window_s,
        horizon_s=settings.label_horizon_s,
        train_fraction=options.train_fraction,
        calibration=calibrate(
            trace, window_s=settings.window_s, train_fraction=options.train_fraction, amplify=1
        ),
        config=ScenarioConfig(scraper=ScraperConfig(rate_rps=options.scraper_rps)),
    )
    assert demand.episode_s is not None  # the scraper scenario always injects one

    def whole_windows(minutes: float) -> int:
        return -(-round(minutes * 60 * US) // window_us) * window_us

    episode_us = demand.start_us + round(demand.episode_s[0] * US)
    start = max(demand.start_us, episode_us - whole_windows(options.lead_minutes))
    end = min(start + whole_windows(options.minutes), demand.end_us)
    inside = (demand.ts_us >= start) & (demand.ts_us < end)
    uncut = int(inside.sum())
    if uncut > options.max_requests:
        end = int(demand.ts_us[np.flatnonzero(inside)[options.max_requests]])
        inside &= demand.ts_us < end
    if not inside.any():
        raise ConfigError(f"{trace.source}: no request to replay after the training part")
    before = (demand.ts_us >= demand.start_us) & (demand.ts_us < start)
    policy = PolicyConfig()
    history = History(
        names=demand.names, window_us=window_us, horizon_us=demand.horizon_us, train=demand.train
    )
    default = new_client_default(
        history, quantile=policy.default_quantile, margin=1.0, config=policy
    )
    return Plan(
        names=demand.names,
        client=demand.client[inside],
        ts_us=demand.ts_us[inside],
        scraper=~demand.legit[inside],
        status=demand.status[inside],
        warm_client=np.concatenate([demand.train_client, demand.client[before]]),
        warm_ts_us=np.concatenate([demand.train_ts_us, demand.ts_us[before]]),
        warm_status=np.concatenate([demand.train_status, demand.status[before]]),
        start_us=start,
        end_us=end,
        window_us=window_us,
        split_us=demand.start_us,
        default=default,
        scraper_name=demand.names[-1],
        uncut=uncut,
    )


def policy_toml(default: tuple[float, float]) -> str:
    """The policy file: one tier, for every client the model has no window of."""
    capacity, rate = default
    return (
        "# openclaw demo: what the simulator gives a client the model knows nothing of\n"
        "# (the 99th percentile of the training part's first-window labels).\n"
        'default_tier = "default"\n\n'
        "[tiers.default]\n"
        f"limits = [{{ capacity = {capacity!r}, refill_rate = {rate!r} }}]\n"
    )
