"""The report of a simulate run: ``report.md`` (the setup and the metrics table, mean ± 95% CI
across seeds) and PNG plots, per scenario:

``tradeoff_<scenario>.png``
    Legitimate requests throttled (x) against abusive requests admitted (left) and against
    SLO-violation seconds (right), one point per policy with its confidence intervals as error
    bars; with ``--sweep``, each sweepable policy's curve through its knob's values. Down and
    to the left is better.
``timeline_<scenario>.png``
    Admitted load, the backend's p99 latency and throttles per second over the evaluated
    part, for a few key policies (none, static+gov, the oracle) on the first seed; the
    injected episode is shaded, and a second column zooms in on it.

matplotlib is an optional extra (``openclaw[report]``), imported only when a report is
written, and drives no GUI: figures are drawn on the Agg canvas, never through pyplot.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from openclaw.sim.metrics import CORE, Summary, format_value
from openclaw.sim.policies import GOVERNED_SUFFIX
from openclaw.sim.replay import RunResult
from openclaw.sim.run import GridResult
from openclaw.sim.trace import Trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

F64 = npt.NDArray[np.float64]
US: Final = 1_000_000
#: The baselines drawn on the timelines, when they ran (with any model).
TIMELINE_POLICIES: Final = ("none", "static+gov", "oracle")
#: Bin widths (seconds) a timeline picks from: the smallest that keeps the bins few enough.
BINS_S: Final = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: The colour of each base policy (its ``+gov`` variant shares it, with another marker).
COLOURS: Final = {
    "none": "#7f7f7f",
    "static": "#1f77b4",
    "percentile": "#2ca02c",
    "persistence": "#9467bd",
    "oracle": "#d62728",
}
OTHER_COLOURS: Final = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
EPISODE_COLOUR: Final = "#ffbb78"
DPI: Final = 110


@dataclass(frozen=True, slots=True)
class ReportFiles:
    markdown: Path
    plots: tuple[Path, ...]


def timeline_policies(policies: Sequence[str]) -> tuple[str, ...]:
    """The policies whose timelines a report draws: the key baselines that ran, and every
    model (``model:...``, the point of the comparison), else the first three."""
    chosen = tuple(p for p in TIMELINE_POLICIES if p in policies)
    chosen += tuple(p for p in policies if p.startswith("model:") and p not in chosen)
    return chosen or tuple(policies[:3])


def keep_for_report(policies: Sequence[str], seeds: Sequence[int]) -> Callable[[RunResult], bool]:
    """The ``keep`` predicate of ``run_grid`` for a report: the timeline policies' runs of
    the first seed (the only full results a report needs; the rest are metrics)."""
    wanted = frozenset(timeline_policies(policies))
    first = seeds[0]
    return lambda r: r.seed == first and r.policy in wanted


# -- Markdown ------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(summaries: Sequence[Summary]) -> list[str]:
    """The metrics table: one row per (scenario, policy), mean ± 95% CI half-width."""
    head = ["scenario", "policy", *(heading for _, heading in CORE)]
    lines = [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---", "---"] + ["---:"] * len(CORE)) + " |",
    ]
    for s in summaries:
        cells = [s.scenario, s.policy] + [
            format_value(name, s.mean[name], s.ci[name]) for name, _ in CORE
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _utc(us: int) -> str:
    return dt.datetime.fromtimestamp(us / US, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _setup(grid: GridResult, trace: Trace, command: str) -> list[str]:
    c = grid.config
    cal = grid.calibration
    b = cal.backend
    r = c.replay
    p = r.policy
    g = p.governor
    window_us = round(c.window_s * US)
    split = trace.split_us(c.train_fraction, window_us=window_us)
    eval_h = (trace.end_us - split) / US / 3600
    rejected = f", {trace.rejected:,} lines rejected" if trace.rejected else ""
    speed = grid.attempts / grid.replay_s if grid.replay_s > 0 else 0.0
    lo, hi = r.jitter
    return [
        "## Setup",
        "",
        f"- **Command**: `{command}`",
        f"- **Trace**: `{trace.source}`: {len(trace):,} requests from {len(trace.names):,} "
        f"clients, {_utc(trace.start_us)} to {_utc(trace.end_us)}{rejected}.",
        f"- **Split**: the first {c.train_fraction:.0%} trains (up to the window boundary "
        f"{_utc(split)}); the remaining {eval_h:.1f} h are evaluated.",
        f"- **Amplification**: {cal.describe()}.",
        f"- **Backend**: {b.workers} workers, one FIFO queue, service times lognormal with "
        f"median {b.service_median_ms:g} ms and sigma {b.service_sigma:g} (or the trace's own "
        f"response times when it has them), queue timeout {b.queue_timeout_s:g} s (then a 5xx). "
        f"SLO: p99 latency <= {b.slo_p99_ms:g} ms and failed share <= {b.slo_error_rate:g} per "
        "second.",
        f"- **Windows**: {c.window_s:g} s, label horizon {c.horizon_s:g} s; buckets "
        + (
            "start full at every window boundary."
            if r.reset_each_window
            else "carry their state across windows."
        ),
        f"- **Retries** (legitimate clients only): up to {r.max_retries}, backoff "
        f"min({r.backoff_base_s:g} s x 2^k, {r.backoff_max_s:g} s) x U({lo:g}, {hi:g})"
        + (", at least Retry-After" if r.honour_retry_after else "")
        + f"; a Retry-After above {r.max_retry_wait_s:g} s drops the request.",
        f"- **Policies**: static budget {p.static_budget:g} of training requests; percentile "
        f"{p.percentile:g} x {p.percentile_margin:g}; persistence x {p.persistence_margin:g}; "
        f"new clients: quantile {p.default_quantile:g} of training first windows; governor "
        f"every {g.interval_s:g} s, x{g.decrease:g} when unhealthy (everyone after "
        f"{g.hot_grace} intervals), +{g.increase:g} when healthy, floor {g.floor:g}.",
        f"- **Seeds**: {', '.join(str(s) for s in grid.seeds)}.",
        f"- **Wall time**: {grid.wall_s:.1f} s for {len(grid.runs)} runs, "
        f"{grid.attempts:,} simulated requests (attempts); {speed:,.0f} per second in the "
        f"replay loop ({speed * 60 / 1e6:.1f} million per minute).",
        "",
    ]


def _notes(grid: GridResult) -> list[str]:
    lines = ["## What each scenario injected", ""]
    for scenario in grid.scenarios:
        for seed in grid.seeds:
            note = grid.notes.get((scenario, seed), "")
            lines.append(f"- `{scenario}`, seed {seed}: {note}")
    return [*lines, ""]


def _sweep_table(grid: GridResult) -> list[str]:
    rows = grid.sweep_summaries()
    if not rows:
        return []
    lines = [
        "## Sweeps",
        "",
        "Each sweepable policy replayed at other values of its knob (the points of the "
        "trade-off curves):",
        "",
        "| scenario | policy | knob | legit throttled | abuse admitted | SLO-violation s |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for knob, value, s in rows:
        cells = [
            s.scenario,
            s.policy,
            f"{knob}={value:g}",
            *(
                format_value(name, s.mean[name], s.ci[name])
                for name in ("legit_throttled", "abuse_admitted", "slo_violation_s")
            ),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return [*lines, ""]


def render_markdown(grid: GridResult, trace: Trace, *, command: str, plots: Sequence[Path]) -> str:
    n = len(grid.seeds)
    lines = [
        "# Replay report",
        "",
        "How to read it: `docs/evaluation.md`. Shares are of legitimate requests, legitimate "
        "clients, legitimate (client, window) pairs or abusive requests; SLO-violation seconds "
        "and goodput are per run. Every figure is the mean over seeds ± the half-width of its "
        "95% confidence interval (Student's t).",
        "",
        *_setup(grid, trace, command),
        f"## Metrics (mean ± 95% CI over {n} seed{'s' if n != 1 else ''})",
        "",
        *markdown_table(grid.summaries()),
        "",
        *_sweep_table(grid),
        *_notes(grid),
    ]
    if plots:
        lines += ["## Plots", ""]
        for scenario in grid.scenarios:
            mine = [p for p in plots if p.stem.endswith(f"_{scenario}")]
            if mine:
                lines += [f"### {scenario}", ""]
                lines += [f"![{p.stem}]({p.name})" for p in mine]
                lines.append("")
    return "\n".join(lines)


# -- plots ---------------------------------------------------------------------------------


def _colour(policy: str, others: dict[str, str]) -> str:
    base = policy.removesuffix(GOVERNED_SUFFIX)
    if base in COLOURS:
        return COLOURS[base]
    if base not in others:
        others[base] = OTHER_COLOURS[len(others) % len(OTHER_COLOURS)]
    return others[base]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _tradeoff_panel(
    ax: Axes,
    rows: Sequence[Summary],
    curves: dict[str, list[tuple[float, Summary]]],
    *,
    y: str,
    y_label: str,
    y_scale: float,
    others: dict[str, str],
) -> None:
    for policy, unordered in curves.items():
        points = sorted(unordered, key=lambda vs: vs[0])
        ax.plot(
            [100 * s.mean["legit_throttled"] for _, s in points],
            [y_scale * s.mean[y] for _, s in points],
            color=_colour(policy, others),
            linestyle="--" if policy.endswith(GOVERNED_SUFFIX) else "-",
            linewidth=1.0,
            alpha=0.6,
            marker=".",
            markersize=4,
        )
    # Policies at the same point (a governor that never acted) share one label.
    labels: dict[tuple[float, float], list[Summary]] = {}
    for s in rows:
        governed = s.policy.endswith(GOVERNED_SUFFIX)
        colour = _colour(s.policy, others)
        x = 100 * s.mean["legit_throttled"]
        yy = y_scale * s.mean[y]
        ax.errorbar(
            x,
            yy,
            xerr=100 * s.ci["legit_throttled"],
            yerr=y_scale * s.ci[y],
            fmt="s" if governed else "o",
            markersize=7,
            color=colour,
            markerfacecolor="white" if governed else colour,
            markeredgewidth=1.5,
            capsize=3,
            label=s.policy,
        )
        labels.setdefault((round(x, 3), round(yy, 3)), []).append(s)
    ax.set_xlabel("legitimate requests throttled (%)")
    ax.set_ylabel(y_label)
    # Room for the labels, and zero in sight even when every point is on it.
    right = max(ax.get_xlim()[1], 0.5)
    top = max(ax.get_ylim()[1], 5.0 if y_scale == 100 else 10.0)
    ax.set_xlim(-0.03 * right, 1.08 * right)
    ax.set_ylim(-0.03 * top, 1.05 * top)
    near_x = 0.15 * right
    near_y = 0.04 * top
    placed: list[tuple[float, float, int]] = []
    for (x, yy), same in sorted(labels.items()):
        # Labels of nearby points go on separate lines rather than on top of each other.
        level = 0
        while any(
            lv == level and abs(px - x) < near_x and abs(py - yy) < near_y for px, py, lv in placed
        ):
            level += 1
        placed.append((x, yy, level))
        ax.annotate(
            ", ".join(s.policy for s in same),
            (x, yy),
            xytext=(6, 5 + 10 * level),
            textcoords="offset points",
            fontsize=7,
            color=_colour(same[0].policy, others),
        )
    ax.grid(True, alpha=0.3)


def plot_tradeoff(grid: GridResult, scenario: str, path: Path) -> Path:
    rows = [s for s in grid.summaries() if s.scenario == scenario]
    curves: dict[str, list[tuple[float, Summary]]] = {}
    for _, value, s in grid.sweep_summaries():
        if s.scenario == scenario:
            curves.setdefault(s.policy, []).append((value, s))
    others: dict[str, str] = {}
    fig = _figure(13, 5.2)
    left, right = fig.subplots(1, 2)
    has_abuse = any(s.mean["abusive_requests"] > 0 for s in rows)
    _tradeoff_panel(
        left,
        rows,
        curves,
        y="abuse_admitted",
        y_label="abusive requests admitted (%)",
        y_scale=100.0,
        others=others,
    )
    if not has_abuse:
        left.text(
            0.5,
            0.5,
            "no abusive requests in this scenario",
            transform=left.transAxes,
            ha="center",
            va="center",
            color="#555555",
        )
    _tradeoff_panel(
        right,
        rows,
        curves,
        y="slo_violation_s",
        y_label="SLO-violation seconds",
        y_scale=1.0,
        others=others,
    )
    handles, labels = right.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="policy")
    n = len(grid.seeds)
    sweep = "; lines: each policy at other values of its knob" if curves else ""
    fig.suptitle(
        f"{scenario}: legitimate traffic throttled against what gets through\n"
        f"mean ± 95% CI over {n} seed{'s' if n != 1 else ''}; lower left is better; "
        f"hollow squares: with the governor{sweep}",
        fontsize=10,
    )
    fig.savefig(path)
    return path


def _bin_width(span_s: float, most: int) -> int:
    for width in BINS_S:
        if span_s / width <= most:
            return width
    return BINS_S[-1]


def _binned(values: npt.NDArray[Any], lo: int, hi: int, width: int, how: str) -> tuple[F64, F64]:
    """Per bin of ``width`` seconds over ``[lo, hi)``: bin starts (s) and the bins' mean per
    second (``mean``) or worst second (``max``, NaN for a bin with no value)."""
    part = values[lo:hi].astype(np.float64)
    n_bins = -(-part.size // width)
    pad = n_bins * width - part.size
    if how == "max":
        part = np.where(np.isnan(part), -np.inf, part)
        out = np.pad(part, (0, pad), constant_values=-np.inf).reshape(n_bins, width).max(axis=1)
        out[np.isneginf(out)] = np.nan
    else:
        sums = np.pad(part, (0, pad)).reshape(n_bins, width).sum(axis=1)
        counts = np.full(n_bins, float(width))
        if pad:
            counts[-1] = width - pad
        out = sums / counts
    return lo + np.arange(n_bins, dtype=np.float64) * width, out


def _timeline_column(
    axes: Sequence[Axes],
    runs: Sequence[RunResult],
    *,
    lo: int,
    hi: int,
    most_bins: int,
    unit_s: float,
    unit: str,
    slo_ms: float,
    episode: tuple[float, float] | None,
    others: dict[str, str],
) -> None:
    width = _bin_width(hi - lo, most_bins)
    for k, run in enumerate(runs):
        # Each line a little thinner than the one before, so a line under another one that
        # follows it (the oracle and no limit, when nothing is injected) still shows.
        line = 2.2 - 0.6 * min(k, 2)
        tl = run.timeline
        colour = _colour(run.policy, others)
        style = "--" if run.policy.endswith(GOVERNED_SUFFIX) else "-"
        for ax, values, how in (
            (axes[0], tl.admitted, "mean"),
            (axes[1], tl.p99_ms, "max"),
            (axes[2], tl.throttled, "mean"),
        ):
            x, y = _binned(values, lo, hi, width, how)
            ax.plot(x / unit_s, y, color=colour, linestyle=style, linewidth=line, label=run.policy)
    axes[0].set_ylabel(f"admitted /s\n(mean per {width} s)")
    axes[1].set_ylabel(f"p99 latency, ms\n(worst second per {width} s)")
    axes[1].set_yscale("log")
    axes[1].axhline(slo_ms, color="black", linestyle=":", linewidth=1.0, label="SLO")
    axes[2].set_ylabel(f"throttled /s\n(mean per {width} s)")
    axes[2].set_xlabel(unit)
    for ax in axes:
        if episode is not None:
            ax.axvspan(episode[0] / unit_s, episode[1] / unit_s, color=EPISODE_COLOUR, alpha=0.35)
        ax.set_xlim(lo / unit_s, hi / unit_s)
        ax.grid(True, alpha=0.3)


def plot_timeline(
    runs: Sequence[RunResult], path: Path, *, slo_ms: float, title: str
) -> Path | None:
    """Admitted load, p99 latency and throttles over the run, for ``runs`` (one scenario and
    seed); a zoomed second column on the episode when there is one. None: nothing to draw."""
    if not runs:
        return None
    span = math.ceil(runs[0].span_s)
    episode = runs[0].episode_s
    others: dict[str, str] = {}
    zoom = episode is not None and episode[1] - episode[0] < 0.5 * span
    fig = _figure(15 if zoom else 10, 8.5)
    grid = fig.subplots(3, 2 if zoom else 1, sharex="col", squeeze=False)
    _timeline_column(
        list(grid[:, 0]),
        runs,
        lo=0,
        hi=span,
        most_bins=700,
        unit_s=3600.0,
        unit="hours since the evaluated part began",
        slo_ms=slo_ms,
        episode=episode,
        others=others,
    )
    grid[0, 0].set_title("whole evaluated part (shaded: the injected episode)", fontsize=10)
    if zoom and episode is not None:
        length = episode[1] - episode[0]
        pad = max(0.25 * length, 300.0)
        lo = max(0, int(episode[0] - pad))
        hi = min(span, math.ceil(episode[1] + pad))
        _timeline_column(
            list(grid[:, 1]),
            runs,
            lo=lo,
            hi=hi,
            most_bins=400,
            unit_s=60.0,
            unit="minutes since the evaluated part began",
            slo_ms=slo_ms,
            episode=episode,
            others=others,
        )
        grid[0, 1].set_title("around the episode", fontsize=10)
    handles, labels = grid[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path)
    return path


def write_report(grid: GridResult, trace: Trace, directory: Path, *, command: str) -> ReportFiles:
    """``report.md`` and the plots into ``directory`` (created; files of the same names are
    replaced). Timelines need the runs ``keep_for_report`` kept."""
    directory.mkdir(parents=True, exist_ok=True)
    plots: list[Path] = []
    slo_ms = grid.config.replay.backend.slo_p99_ms
    shown = timeline_policies(grid.policies)
    first = grid.seeds[0] if grid.seeds else 0
    for scenario in grid.scenarios:
        plots.append(plot_tradeoff(grid, scenario, directory / f"tradeoff_{scenario}.png"))
        runs = [r for r in grid.kept if r.scenario == scenario and r.seed == first]
        runs.sort(key=lambda r: shown.index(r.policy) if r.policy in shown else len(shown))
        note = grid.notes.get((scenario, first), "")
        drawn = plot_timeline(
            runs,
            directory / f"timeline_{scenario}.png",
            slo_ms=slo_ms,
            title=f"{scenario}, seed {first}: {note}",
        )
        if drawn is not None:
            plots.append(drawn)
    markdown = directory / "report.md"
    markdown.write_text(render_markdown(grid, trace, command=command, plots=plots) + "\n")
    return ReportFiles(markdown, tuple(plots))
