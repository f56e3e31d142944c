"""``openclaw simulate --report``: the Markdown, the plots, and what they are drawn from."""

from __future__ import annotations

import json
import struct
import sys
import types
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from openclaw.features.core import FeatureFrame
from openclaw.sim.report import _binned, keep_for_report, timeline_policies
from openclaw.sim.run import SimConfig, run_grid
from openclaw.sim.scenarios import SCENARIOS, build_demand, calibrate
from openclaw.sim.trace import Trace, load_trace
from openclaw.testing.cli import invoke
from openclaw.testing.traces import TRACES

HEAD = TRACES / "nasa_19950701_head.tsv"
SCENARIOS_RUN = ("scraper", "capacity_drop")
POLICIES_RUN = ("none", "static", "static+gov", "oracle")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def simulate(*args: str) -> tuple[int, str, str]:
    return invoke("simulate", *args)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small report: two scenarios, four policies, two seeds, with the sweeps."""
    out = tmp_path_factory.mktemp("report")
    args = ["--trace", str(HEAD), "--amplify", "2", "--seed", "0", "--seed", "1", "--sweep"]
    for s in SCENARIOS_RUN:
        args += ["--scenario", s]
    for p in POLICIES_RUN:
        args += ["--policy", p]
    code, stdout, stderr = simulate(*args, "--report", str(out))
    assert code == 0, stderr
    assert f"report: {out / 'report.md'}" in stdout
    return out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_report_writes_markdown_json_and_a_plot_pair_per_scenario(report_dir: Path) -> None:
    names = sorted(p.name for p in report_dir.iterdir())
    expected = {"report.md", "runs.json"}
    for s in SCENARIOS_RUN:
        expected |= {f"tradeoff_{s}.png", f"timeline_{s}.png"}
    assert set(names) == expected


def test_the_plots_are_real_pngs_with_something_drawn(report_dir: Path) -> None:
    import matplotlib.image

    for png in report_dir.glob("*.png"):
        width, height = png_size(png)
        assert width >= 1000, (png, width)
        assert height >= 500, (png, height)
        assert png.stat().st_size > 30_000, png  # axes, lines, labels: not an empty canvas
        pixels = (matplotlib.image.imread(png)[..., :3] * 255).astype(np.uint32)
        rgb = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
        # Not one flat colour: many distinct shades (lines, text, shading).
        assert np.unique(rgb).size > 50, png


def test_the_markdown_has_the_setup_and_a_row_per_scenario_and_policy(report_dir: Path) -> None:
    md = (report_dir / "report.md").read_text()
    runs = json.loads((report_dir / "runs.json").read_text())
    assert "trace x2" in md
    assert "**Seeds**: 0, 1." in md
    assert "- **Command**: `" in md
    assert "SLO: p99 latency <= 200 ms" in md
    assert "Wall time" in md
    metrics = md.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in metrics.splitlines() if line.startswith("| ")]
    for scenario in SCENARIOS_RUN:
        for policy in POLICIES_RUN:
            mine = [r for r in rows if r.startswith(f"| {scenario} | {policy} | ")]
            assert len(mine) == 1, (scenario, policy)
    # The table's figures are the runs' means: no limit admits every abusive request...
    none = next(r for r in rows if r.startswith("| scraper | none | "))
    assert "| 100.00% ± 0.00 |" in none
    # ...and the oracle throttles nothing legitimate.
    oracle = next(r for r in rows if r.startswith("| scraper | oracle | "))
    assert oracle.split(" | ")[2] == "0.00% ± 0.00"
    summaries = {(s["scenario"], s["policy"]): s for s in runs["summaries"]}
    static = summaries[("scraper", "static")]
    assert f"{100 * static['mean']['legit_throttled']:.2f}%" in next(
        r for r in rows if r.startswith("| scraper | static | ")
    )
    for s in SCENARIOS_RUN:
        assert f"![tradeoff_{s}](tradeoff_{s}.png)" in md
        assert f"![timeline_{s}](timeline_{s}.png)" in md


def test_the_sweeps_give_each_sweepable_policy_its_curve(report_dir: Path) -> None:
    md = (report_dir / "report.md").read_text()
    runs = json.loads((report_dir / "runs.json").read_text())
    assert "## Sweeps" in md
    budgets = {p["value"] for p in runs["sweeps"] if p["policy"] == "static"}
    assert budgets == {0.001, 0.003, 0.03, 0.1}  # the configured 0.01 is the grid's own run
    assert {p["policy"] for p in runs["sweeps"]} == {"static", "static+gov"}
    # A tighter budget throttles more of the trace: the curve is a trade-off, not noise.
    sweep = {
        (p["value"], p["seed"]): p
        for p in runs["sweeps"]
        if p["policy"] == "static" and p["scenario"] == "scraper"
    }
    for seed in (0, 1):
        assert sweep[(0.001, seed)]["legit_throttled"] <= sweep[(0.1, seed)]["legit_throttled"]
    rows = [r for r in md.splitlines() if r.startswith("| scraper | static | static_budget=")]
    assert len(rows) == 5  # four swept values and the configured one


def test_report_without_matplotlib_fails_before_replaying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, stdout, stderr = simulate(
        "--trace", str(HEAD), "--amplify", "2", "--seed", "0", "--report", str(tmp_path / "r")
    )
    assert code == 2
    assert "--report needs matplotlib" in stderr
    assert "calibration" not in stdout  # nothing ran
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def trace() -> Trace:
    return load_trace(HEAD, "nasa-tsv")


def test_each_scenarios_episode_covers_what_it_injected(trace: Trace) -> None:
    calibration = calibrate(trace, window_s=300.0, amplify=2)
    for scenario in SCENARIOS:
        d = build_demand(
            trace, scenario, 0, window_s=300.0, horizon_s=60.0, calibration=calibration
        )
        if scenario == "trace":
            assert d.episode_s is None
            continue
        assert d.episode_s is not None
        lo, hi = d.episode_s
        assert 0 <= lo < hi <= d.span_s
        abusive = (d.ts_us[~d.legit] - d.start_us) / 1e6
        assert np.all((abusive >= lo) & (abusive < hi)), scenario
        if scenario == "capacity_drop":
            (drop,) = d.drops
            assert (drop.start_s, drop.end_s) == (lo, hi)


def test_only_the_timeline_policies_of_the_first_seed_are_kept(trace: Trace) -> None:
    policies = ("static", "static+gov", "oracle", "none")
    assert timeline_policies(policies) == ("none", "static+gov", "oracle")
    assert timeline_policies(("static", "model:m-1", "none", "model:m-1+gov")) == (
        "none",
        "model:m-1",
        "model:m-1+gov",
    )
    assert timeline_policies(("percentile", "persistence", "static", "x")) == (
        "percentile",
        "persistence",
        "static",
    )
    grid = run_grid(
        trace,
        scenarios=["scraper"],
        policies=policies,
        seeds=[3, 4],
        config=SimConfig(amplify=2),
        keep=keep_for_report(policies, [3, 4]),
    )
    assert sorted((r.policy, r.seed) for r in grid.kept) == [
        ("none", 3),
        ("oracle", 3),
        ("static+gov", 3),
    ]
    assert all(r.episode_s == grid.episodes[("scraper", 3)] for r in grid.kept)


def test_binning_means_per_second_and_worst_seconds_without_warnings() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    x, mean = _binned(values, 0, 5, 2, "mean")
    assert x.tolist() == [0.0, 2.0, 4.0]
    assert mean.tolist() == [1.5, 3.5, 5.0]  # the last bin holds one second
    p99 = np.array([np.nan, np.nan, 120.0, np.nan, 90.0, 300.0])
    x, worst = _binned(p99, 0, 6, 2, "max")
    assert np.isnan(worst[0])  # no request completed: no latency, not 0 ms
    assert worst[1:].tolist() == [120.0, 300.0]
    x, part = _binned(values, 1, 4, 2, "mean")
    assert x.tolist() == [1.0, 3.0]
    assert part.tolist() == [2.5, 4.0]


class Doubler:
    """A "model": each client's last window times two."""

    def predict(
        self, features: FeatureFrame
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return features.column("b_star") * 2.0, features.column("r_star") * 2.0


def test_a_model_directory_runs_in_simulate_and_gets_a_timeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path issue 6 plugs into: ``--policy DIR`` loads ``openclaw.model.load_bucket_model``."""
    loaded: list[Path] = []
    module = types.ModuleType("openclaw.model")

    def load_bucket_model(path: Path) -> Doubler:
        loaded.append(path)
        return Doubler()

    module.load_bucket_model = load_bucket_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "openclaw.model", module)
    artifact = tmp_path / "model-20240101"
    artifact.mkdir()
    out = tmp_path / "report"
    code, _, stderr = simulate(
        "--trace", str(HEAD), "--amplify", "2", "--seed", "0", "--scenario", "runaway",
        "--policy", "none", "--policy", str(artifact), "--policy", f"{artifact}+gov",
        "--report", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert loaded == [artifact, artifact]  # once per name, not once per run
    md = (out / "report.md").read_text()
    for name in ("none", "model:model-20240101", "model:model-20240101+gov"):
        assert f"| runaway | {name} | " in md
    runs = json.loads((out / "runs.json").read_text())
    model = next(r for r in runs["runs"] if r["policy"] == "model:model-20240101")
    assert 0 < model["legit_throttled"] < 0.2
    assert (out / "timeline_runaway.png").stat().st_size > 30_000
