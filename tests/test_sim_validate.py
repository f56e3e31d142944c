"""``openclaw validate``: the gate fails a worse candidate with its reason, passes an equal one,
holds absolute bounds whatever the baseline does, and takes a model directory."""

from __future__ import annotations

import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from openclaw.errors import ConfigError
from openclaw.features.core import FeatureFrame
from openclaw.settings import Settings
from openclaw.sim.metrics import RunMetrics
from openclaw.sim.policies import Governed, ModelPolicy, PolicyConfig, resolve_policy
from openclaw.sim.run import run_grid, sim_config
from openclaw.sim.trace import load_trace
from openclaw.sim.validate import GateConfig, Options, judge, replay_both
from openclaw.testing.cli import invoke
from openclaw.testing.traces import TRACES

HEAD = TRACES / "nasa_19950701_head.tsv"
SMALL = ("--trace", str(HEAD), "--amplify", "2", "--seed", "0", "--seed", "1")


def validate(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return invoke("validate", *args, env=env)


def fail_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("FAIL ")]


def test_a_candidate_worse_than_its_baseline_fails_naming_the_metric() -> None:
    code, stdout, stderr = validate(
        "--candidate", "none", "--baseline", "static+gov", "--scenario", "scraper", *SMALL
    )
    assert code == 1, stderr
    lines = fail_lines(stdout)
    assert any(
        line.startswith("FAIL scraper: abuse admitted 100.00% against the baseline's")
        and "worse by" in line
        for line in lines
    ), lines
    assert "FAIL: none against static+gov" in stdout


def test_a_policy_against_itself_passes_with_a_verdict_table() -> None:
    code, stdout, stderr = validate(
        "--candidate", "static+gov", "--baseline", "static+gov",
        "--scenario", "scraper", "--scenario", "trace", *SMALL,
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert fail_lines(stdout) == []
    assert "PASS: static+gov is no worse than static+gov" in stdout
    table = [line for line in stdout.splitlines() if line.startswith("│ ")]
    assert [line.split("│")[1].strip() for line in table] == ["scraper", "trace"]
    assert all("pass" in line for line in table)


def test_an_absolute_bound_fails_even_when_the_baseline_is_worse() -> None:
    # persistence is worse than static+gov on the scraper on every metric, yet static+gov
    # admits more abuse than the (tightened) bound.
    code, stdout, stderr = validate(
        "--candidate", "static+gov", "--baseline", "persistence", "--scenario", "scraper",
        *SMALL, env={"OPENCLAW_GATE_MAX_ABUSE_ADMITTED": "0.01"},
    )  # fmt: skip
    assert code == 1, stderr
    lines = fail_lines(stdout)
    assert lines, stdout
    assert all("above the bound" in line for line in lines), lines
    assert any(
        "abuse admitted" in line and "OPENCLAW_GATE_MAX_ABUSE_ADMITTED" in line for line in lines
    )
    # With the default bound it passes: the failure was the bound, not the comparison.
    code, stdout, _ = validate(
        "--candidate", "static+gov", "--baseline", "persistence", "--scenario", "scraper", *SMALL
    )
    assert code == 0, stdout


def test_unknown_policies_are_usage_errors_before_any_replay(tmp_path: Path) -> None:
    code, _, stderr = validate("--candidate", "magic", "--baseline", "static", *SMALL)
    assert code == 2
    assert "unknown policy 'magic'" in stderr
    assert "model directory" in stderr
    code, _, stderr = validate(
        "--candidate", "static", "--baseline", "static", "--trace", str(tmp_path / "nope.tsv")
    )
    assert code == 2
    assert "nope.tsv" in stderr


def runs(policy: str, metric: str, values: list[float], **fixed: float) -> list[RunMetrics]:
    base = RunMetrics(
        scenario="s",
        policy=policy,
        seed=0,
        legit_requests=1000,
        legit_throttled=0.0,
        legit_dropped=0.0,
        legit_clients=100,
        clients_throttled=0.0,
        under_allocated=0.0,
        abusive_requests=0,
        abuse_admitted=0.0,
        slo_violation_s=0,
        goodput_rps=10.0,
        attempts=1000,
        wall_s=0.1,
    )
    base = replace(base, **fixed)  # type: ignore[arg-type]
    return [replace(base, seed=k, **{metric: v}) for k, v in enumerate(values)]  # type: ignore[arg-type]


STRICT = GateConfig(tolerance=0.0, tolerance_slo_s=0.0)


def test_a_difference_within_the_noise_across_seeds_passes_a_consistent_one_fails() -> None:
    base = runs("b", "legit_throttled", [0.010, 0.030, 0.020])
    noisy = runs("c", "legit_throttled", [0.030, 0.012, 0.040])  # +2.0, -1.8, +2.0 points
    assert judge(noisy, base, STRICT).passed
    steady = runs("c", "legit_throttled", [0.030, 0.051, 0.039])  # +2.0, +2.1, +1.9 points
    verdict = judge(steady, base, STRICT)
    assert not verdict.passed
    (failure,) = verdict.failures
    assert failure.metric == "legit_throttled"
    assert "legit throttled" in failure.reason()
    assert "worse by 2.00 points" in failure.reason()
    # The tolerance from the settings lets a small, steady excess through.
    assert judge(steady, base, replace(STRICT, tolerance=0.025)).passed


def test_goodput_counts_the_other_way_and_its_tolerance_is_relative() -> None:
    base = runs("b", "goodput_rps", [10.0, 10.0])
    more = runs("c", "goodput_rps", [12.0, 12.0])
    assert judge(more, base, STRICT).passed
    less = runs("c", "goodput_rps", [9.9, 9.9])  # 1% less
    verdict = judge(less, base, STRICT)
    assert [c.metric for c in verdict.failures] == ["goodput_rps"]
    assert judge(less, base, replace(STRICT, tolerance=0.011)).passed


def test_bounds_are_judged_on_the_candidates_mean_and_abuse_only_where_there_is_abuse() -> None:
    gate = GateConfig(max_legit_throttled=0.05, max_abuse_admitted=0.1, max_slo_violation_s=60)
    calm = runs("c", "slo_violation_s", [0, 0])
    assert not any(
        c.metric == "abuse_admitted" and c.kind == "bound" for c in judge(calm, calm, gate).checks
    )
    hot = runs("c", "slo_violation_s", [50, 90])  # mean 70 s > 60 s, though no worse than itself
    verdict = judge(hot, hot, gate)
    (failure,) = verdict.failures
    assert failure.kind == "bound"
    assert failure.reason() == (
        "s: SLO-violation s 70 is above the bound 60 (OPENCLAW_GATE_MAX_SLO_VIOLATION_S)"
    )
    abusive = runs("c", "abuse_admitted", [0.2, 0.2], abusive_requests=100)
    assert [c.metric for c in judge(abusive, abusive, gate).failures] == ["abuse_admitted"]


def test_the_two_sides_must_cover_the_same_runs() -> None:
    with pytest.raises(ValueError, match="same scenarios"):
        judge(runs("c", "legit_throttled", [0.0, 0.0]), runs("b", "legit_throttled", [0.0]), STRICT)


def test_the_gate_and_the_slo_come_from_the_settings() -> None:
    settings = Settings(
        slo_p99_ms=60.0, slo_error_rate=0.05, gate_tolerance=0.02, gate_max_slo_violation_s=5.0
    )
    backend = sim_config(settings).replay.backend
    assert (backend.slo_p99_ms, backend.slo_error_rate) == (60.0, 0.05)
    gate = GateConfig.from_settings(settings)
    assert (gate.tolerance, gate.max_slo_violation_s) == (0.02, 5.0)
    # A tighter SLO judges the same replay harshly: service times alone break 60 ms at p99.
    trace = load_trace(HEAD, "nasa-tsv")
    loose = run_grid(trace, scenarios=["trace"], policies=["none"], seeds=[0],
                     config=replace(sim_config(Settings()), amplify=2))  # fmt: skip
    tight = run_grid(trace, scenarios=["trace"], policies=["none"], seeds=[0],
                     config=replace(sim_config(settings), amplify=2))  # fmt: skip
    assert loose.metrics[0].slo_violation_s == 0
    assert tight.metrics[0].slo_violation_s > 100


class Doubler:
    """A "model": each client's last window times two."""

    def predict(
        self, features: FeatureFrame
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return features.column("b_star") * 2.0, features.column("r_star") * 2.0


def test_a_model_directory_is_a_candidate(tmp_path: Path) -> None:
    artifact = tmp_path / "model-7"
    artifact.mkdir()
    seen: list[Path] = []

    def loader(path: Path) -> Doubler:
        seen.append(path)
        return Doubler()

    spec = resolve_policy(str(artifact), model_loader=loader)
    assert spec.name == "model:model-7"
    policy = spec.build(PolicyConfig(), None)  # type: ignore[arg-type]
    assert isinstance(policy, ModelPolicy)
    governed = resolve_policy(f"{artifact}+gov", model_loader=loader)
    assert governed.name == "model:model-7+gov"
    assert isinstance(governed.build(PolicyConfig(), None), Governed)  # type: ignore[arg-type]

    options = Options(
        candidate=str(artifact), baseline="persistence", trace=HEAD, scenarios=("runaway",),
        seeds=(0,), amplify=2,
    )  # fmt: skip
    verdict, grid = replay_both(options, settings=Settings(), model_loader=loader)
    assert verdict.candidate == "model:model-7"
    assert verdict.baseline == "persistence"
    assert seen[0] == artifact
    cand = next(m for m in grid.metrics if m.policy == "candidate")
    base = next(m for m in grid.metrics if m.policy == "baseline")
    # Doubling the last window is persistence's own rule: the same buckets for every client
    # seen last window, so the two throttle nearly alike (new clients' defaults differ).
    assert cand.legit_throttled > 0
    assert abs(cand.legit_throttled - base.legit_throttled) < 0.01


def test_the_default_model_loader_is_openclaw_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys_modules(), "openclaw.model", types.ModuleType("openclaw.model"))
    with pytest.raises(ConfigError, match="no model loader is installed"):
        resolve_policy(str(tmp_path))
    module = types.ModuleType("openclaw.model")
    module.load_bucket_model = lambda path: Doubler()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys_modules(), "openclaw.model", module)
    spec = resolve_policy(str(tmp_path))
    assert spec.name == f"model:{tmp_path.name}"


def sys_modules() -> dict[str, object]:
    import sys

    return sys.modules  # type: ignore[return-value]
