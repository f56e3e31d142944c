"""``openclaw bench sim``: it runs, measures every contender on the same demand, and reports."""

from __future__ import annotations

import json
from pathlib import Path

from openclaw.testing.cli import invoke
from openclaw.testing.traces import TRACES

HEAD = TRACES / "nasa_19950701_head.tsv"


def bench_sim(*args: str) -> tuple[int, str, str]:
    return invoke("bench", "sim", *args)


def test_bench_sim_measures_the_replay_against_the_bare_engine(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    code, stdout, stderr = bench_sim(
        "--trace", str(HEAD), "--amplify", "2", "--scenario", "scraper", "--rounds", "2",
        "--policy", "none", "--policy", "static+gov", "--json", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    for name in ("peer: bare engine loop", "replay none", "replay static+gov"):
        assert name in stdout
    assert "target: every replay >= 1,000,000 simulated requests per minute" in stdout
    doc = json.loads(out.read_text())
    peer, none, governed = doc["contenders"]
    n = doc["first_attempts"]
    assert n > 1000
    # The peer decides every first attempt once; no limit replays exactly those; a limit
    # adds the retries of what it throttled.
    assert peer["requests"] == [n, n]
    assert none["requests"] == [n, n]
    assert all(r > n for r in governed["requests"])
    assert all(c["requests_per_s"] > 0 for c in doc["contenders"])
    assert doc["verdict"] in {"PASS", "FAIL"}


def test_bench_sim_refuses_an_unknown_policy_or_scenario() -> None:
    code, _, stderr = bench_sim("--trace", str(HEAD), "--policy", "magic")
    assert code == 2
    assert "unknown policy 'magic'" in stderr
    code, _, stderr = bench_sim("--trace", str(HEAD), "--scenario", "dos")
    assert code == 2
    assert "unknown scenario 'dos'" in stderr
