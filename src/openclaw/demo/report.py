"""The report: the traffic table, where the limits came from, the plots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from openclaw.demo.drive import (
    MODEL,
    MODEL_DEFAULT,
    OVERRIDE,
    SOURCES,
    TIER,
    Limits,
    Measured,
)
from openclaw.demo.plan import US, DemoOptions, Plan, utc

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from openclaw.sim.validate import Verdict

#: The verdict's words: the scraper is contained when at least this share of its requests
#: were throttled; legitimate clients are nearly untouched when at most this share were.
CONTAINED: Final = 0.9
UNTOUCHED: Final = 0.02
TIMELINE_PNG: Final = "timeline.png"
CLIENTS_PNG: Final = "clients.png"

CLASSES: Final = ("legitimate clients", "the scraper")


@dataclass(frozen=True, slots=True)
class SourceRow:
    source: str
    sent: int
    throttled: int


@dataclass(frozen=True, slots=True)
class ClassRow:
    name: str
    clients: int
    sent: int
    admitted: int
    throttled: int
    other: int  #: neither 200 nor 429 (none expected)
    clients_throttled: int  #: clients with at least one request throttled
    by_source: tuple[SourceRow, ...]

    @property
    def share_throttled(self) -> float:
        return self.throttled / self.sent if self.sent else 0.0


def class_rows(measured: Measured) -> list[ClassRow]:
    """The report's rows: what the HTTP answers said, per class."""
    rows = []
    for name, mask in zip(CLASSES, (~measured.scraper, measured.scraper), strict=True):
        status = measured.status[mask]
        client = measured.client[mask]
        source = measured.source[mask]
        throttled = status == 429
        rows.append(
            ClassRow(
                name=name,
                clients=int(np.unique(client).size),
                sent=int(mask.sum()),
                admitted=int(np.count_nonzero(status == 200)),
                throttled=int(np.count_nonzero(throttled)),
                other=int(np.count_nonzero((status != 200) & ~throttled)),
                clients_throttled=int(np.unique(client[throttled]).size),
                by_source=tuple(
                    SourceRow(
                        s,
                        int(np.count_nonzero(source == k)),
                        int(np.count_nonzero((source == k) & throttled)),
                    )
                    for k, s in enumerate(SOURCES)
                    if np.any(source == k)
                ),
            )
        )
    return rows


# -- the report --------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def traffic_table(rows: Sequence[ClassRow]) -> Table:
    from rich.table import Table

    table = Table(
        title="traffic over HTTP, counted from the answers (200 admitted, 429 throttled)",
        title_justify="left",
    )
    headings = (
        "class",
        "clients",
        "sent",
        "admitted (200)",
        "throttled (429)",
        "other",
        "share throttled",
        "clients throttled",
    )
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "class" else "right")
    for r in rows:
        table.add_row(
            r.name,
            f"{r.clients:,}",
            f"{r.sent:,}",
            f"{r.admitted:,}",
            f"{r.throttled:,}",
            f"{r.other:,}",
            _pct(r.share_throttled),
            f"{r.clients_throttled:,}",
        )
    return table


def source_table(rows: Sequence[ClassRow], *, version: str, default: tuple[float, float]) -> Table:
    from rich.table import Table

    table = Table(title="where the limits came from", title_justify="left")
    for heading in ("class", "limits", "requests", "throttled", "share throttled"):
        table.add_column(heading, justify="left" if heading in ("class", "limits") else "right")
    label = {
        MODEL: f"model {version}",
        TIER: f"tier default ({default[0]:.3g}, then {default[1]:.3g}/s)",
        OVERRIDE: "static override",
        MODEL_DEFAULT: f"model {version}'s default (no prediction yet)",
    }
    for r in rows:
        for s in r.by_source:
            table.add_row(
                r.name,
                label[s.source],
                f"{s.sent:,}",
                f"{s.throttled:,}",
                _pct(_share(s.throttled, s.sent)),
            )
    return table


def scraper_limits(measured: Measured, plan: Plan) -> list[tuple[int, Limits]]:
    """The scraper's limits under each table it sent under: (table window, limits)."""
    index = plan.scraper_index
    return sorted((w, lim) for (c, w), lim in measured.limits.items() if c == index)


def plot(measured: Measured, plan: Plan, directory: Path) -> list[Path]:
    """``timeline.png``: per minute of trace time, each class's admitted and throttled
    requests, and the scraper's bucket per window; ``clients.png``: each client's share of
    throttled requests against its requests sent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [directory / TIMELINE_PNG, directory / CLIENTS_PNG]
    for draw, path in zip((_timeline, _clients), paths, strict=True):
        fig = draw(plt, measured, plan)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return paths


def _timeline(plt: Any, measured: Measured, plan: Plan) -> Any:
    minute_us = 60 * US
    minute = (measured.ts_us - plan.start_us) // minute_us
    n_min = int(-(-(plan.end_us - plan.start_us) // minute_us))
    ok = measured.status == 200
    denied = measured.status == 429
    x = np.arange(n_min)
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    for ax, name, mask in zip(
        axes[:2], CLASSES, (~measured.scraper, measured.scraper), strict=True
    ):
        adm = np.bincount(minute[mask & ok], minlength=n_min)[:n_min]
        thr = np.bincount(minute[mask & denied], minlength=n_min)[:n_min]
        ax.bar(x, adm, width=1.0, align="edge", color="tab:green", label="admitted (200)")
        ax.bar(
            x, thr, width=1.0, align="edge", bottom=adm, color="tab:red", label="throttled (429)"
        )
        sent = int(mask.sum())
        share = _share(int(np.count_nonzero(mask & denied)), sent)
        ax.set_title(f"{name}: {sent:,} requests, {_pct(share)} throttled", loc="left")
        ax.set_ylabel("requests per minute")
        ax.legend(loc="upper left")
    ax = axes[2]
    window_min = plan.window_us / minute_us
    scraper_ts = measured.ts_us[measured.scraper]
    first_us = int(scraper_ts[0]) if scraper_ts.size else plan.start_us
    for w, lim in scraper_limits(measured, plan):
        # A table is in force from its window's start (plus the close delay) until the next
        # one; the scraper's first table starts with its first request.
        lo = (max(w * plan.window_us, first_us) - plan.start_us) / minute_us
        hi = ((w + 1) * plan.window_us - plan.start_us) / minute_us
        ax.hlines(
            [lim.capacity, lim.refill_rate * 60],
            lo,
            min(hi, n_min),
            colors="tab:blue" if lim.source == MODEL else "tab:gray",
            linestyles=["solid", "dashed"],
            linewidth=2.5,
        )
    ax.set_yscale("log")
    ax.set_ylabel("requests")
    ax.set_title(
        "the scraper's bucket: capacity (solid) and refill per minute (dashed); "
        "grey the tier default, blue the model's",
        loc="left",
    )
    ax.set_xlabel(f"minutes of trace time from {utc(plan.start_us)}")
    for a in axes:
        for k in np.arange(0.0, n_min + 1e-9, window_min):
            a.axvline(k, color="black", alpha=0.15, linewidth=0.8)
    fig.tight_layout()
    return fig


def _clients(plt: Any, measured: Measured, plan: Plan) -> Any:
    fig, ax = plt.subplots(figsize=(8, 5))
    clients, inverse = np.unique(measured.client, return_inverse=True)
    per_sent = np.bincount(inverse)
    denied = (measured.status == 429).astype(np.float64)
    share = np.bincount(inverse, weights=denied) / np.maximum(per_sent, 1)
    is_scraper = clients == plan.scraper_index
    ax.scatter(
        per_sent[~is_scraper],
        100 * share[~is_scraper],
        s=12,
        alpha=0.6,
        color="tab:blue",
        label=f"legitimate clients ({int(np.count_nonzero(~is_scraper)):,})",
    )
    ax.scatter(
        per_sent[is_scraper],
        100 * share[is_scraper],
        s=150,
        marker="*",
        color="tab:red",
        label="the scraper",
    )
    ax.set_xscale("log")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("requests sent in the replay")
    ax.set_ylabel("% throttled (429)")
    ax.set_title("each client: requests sent and the share throttled", loc="left")
    ax.legend(loc="center left")
    fig.tight_layout()
    return fig


# -- the result ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoResult:
    workdir: Path
    plan: Plan
    measured: Measured
    rows: list[ClassRow]
    model_version: str
    verdict: Verdict
    plots: list[Path]
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def contained(self) -> bool:
        scraper = self.rows[1]
        return scraper.sent > 0 and scraper.share_throttled >= CONTAINED

    @property
    def untouched(self) -> bool:
        return self.rows[0].share_throttled <= UNTOUCHED

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        m = self.measured
        return {
            "workdir": str(self.workdir),
            "model_version": self.model_version,
            "validate": {
                "passed": self.verdict.passed,
                "candidate": self.verdict.candidate,
                "baseline": self.verdict.baseline,
                "failures": [c.reason() for c in self.verdict.failures],
            },
            "replay": {
                "start": utc(plan.start_us),
                "end": utc(plan.end_us),
                "start_us": plan.start_us,
                "end_us": plan.end_us,
                "planned": m.planned,
                "sent": m.sent,
                "stopped_early": m.stopped_early,
                "windows": m.windows,
                "wall_s": m.wall_s,
            },
            "tier_default": {"capacity": plan.default[0], "refill_rate": plan.default[1]},
            "classes": [asdict(r) | {"share_throttled": r.share_throttled} for r in self.rows],
            "scraper_limits": [{"window": w} | asdict(lim) for w, lim in scraper_limits(m, plan)],
            "service_decisions": m.decisions,
            "service_model_status": m.model_status,
            "contained": self.contained,
            "untouched": self.untouched,
            "plots": [str(p) for p in self.plots],
            "seconds": self.seconds,
            "stages": self.stages,
        }


def render(result: DemoResult, console: Console, *, options: DemoOptions) -> None:
    """The report: the traffic, where the limits came from, the service's own counts, the
    verdict, the files."""
    plan = result.plan
    m = result.measured
    legit, scraper = result.rows
    console.print(traffic_table(result.rows))
    console.print(source_table(result.rows, version=result.model_version, default=plan.default))
    span_s = (plan.end_us - plan.start_us) / US
    rate = m.sent / m.wall_s if m.wall_s else 0.0
    console.print(
        f"replay: {span_s / 60:.0f} min of trace time from {utc(plan.start_us)}, "
        f"{m.windows} windows of {plan.window_us / US / 60:g} min, in {m.wall_s:.1f} s "
        f"({rate:,.0f} requests/s, {span_s / m.wall_s if m.wall_s else 0:.0f} times the "
        "trace's speed)",
        highlight=False,
    )
    if m.stopped_early:
        console.print(
            f"[bold yellow]stopped at the time bound ({options.max_seconds:g} s) after "
            f"{m.sent:,} of {m.planned:,} requests[/bold yellow]"
        )
    if plan.uncut > len(plan):
        console.print(
            f"the replay was cut at {utc(plan.end_us)} to stay within "
            f"{options.max_requests:,} requests ({plan.uncut:,} in the whole slice)",
            highlight=False,
        )
    answers = legit.admitted + scraper.admitted, legit.throttled + scraper.throttled
    counted = m.decisions.get("allowed", 0.0), m.decisions.get("denied", 0.0)
    agree = "agree" if (float(answers[0]), float(answers[1])) == counted else "DISAGREE"
    console.print(
        f"the service's own openclaw_decisions_total {agree}: {counted[0]:,.0f} allowed, "
        f"{counted[1]:,.0f} denied",
        highlight=False,
    )
    governor = m.model_status.get("governor", {})
    console.print(
        f"model: {result.model_version}, champion of {result.workdir / 'models'} (validate "
        f"against static+gov: {'passed' if result.verdict.passed else 'FAILED'}, see above); "
        f"governor multiplier at the end: {governor.get('all', 1.0):g}",
        highlight=False,
    )
    steps = scraper_limits(m, plan)
    model_steps = [(w, lim) for w, lim in steps if lim.source == MODEL]
    if model_steps:
        first_w = model_steps[0][0]
        first_t = first_w * plan.window_us
        scraper_start = int(m.ts_us[m.scraper][0])
        caps = [lim.capacity for _, lim in model_steps]
        rates = [lim.refill_rate for _, lim in model_steps]
        before = (
            "the model's default" if steps[0][1].source == MODEL_DEFAULT else "the tier default"
        )
        console.print(
            f"the scraper: {before} for its first {(first_t - scraper_start) / US / 60:.1f}"
            f" min, then the model's bucket: capacity {min(caps):.3g} to {max(caps):.3g}, "
            f"refill {min(rates):.3g} to {max(rates):.3g}/s",
            highlight=False,
        )
    elif steps:
        console.print("the scraper: the tier default throughout (the model never predicted it)")
    contained = "contained" if result.contained else f"NOT contained (below {_pct(CONTAINED)})"
    if not result.untouched:
        untouched = f"NOT nearly untouched (above {_pct(UNTOUCHED)})"
    elif legit.throttled == 0:
        untouched = "untouched"
    else:
        untouched = "nearly untouched"
    console.print(
        f"verdict: the scraper was {contained}: {_pct(scraper.share_throttled)} of its requests "
        f"throttled; legitimate clients were {untouched}: {_pct(legit.share_throttled)} of "
        f"their requests throttled, {legit.clients_throttled:,} of {legit.clients:,} clients at "
        "least once",
        highlight=False,
    )
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.stages.items())
    console.print(
        f"plots: {', '.join(str(p) for p in result.plots)}\n"
        f"work directory: {result.workdir}\n"
        f"took {result.seconds:.1f} s ({stages})",
        highlight=False,
    )
