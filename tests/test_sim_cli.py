"""``openclaw simulate``: the table, the JSON, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from openclaw.testing.cli import invoke
from openclaw.testing.traces import TRACES

HEAD = TRACES / "nasa_19950701_head.tsv"


def simulate(*args: str) -> tuple[int, str, str]:
    return invoke("simulate", *args)


def test_simulate_prints_the_metrics_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "runs.json"
    code, stdout, stderr = simulate(
        "--trace", str(HEAD), "--format", "nasa-tsv",
        "--scenario", "scraper", "--scenario", "trace",
        "--policy", "none", "--policy", "oracle", "--policy", "static+gov",
        "--seed", "0", "--seed", "1", "--amplify", "2", "--json", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert "calibration: trace x2" in stdout
    assert "scraper (seed 0): one new client at 4.0/s" in stdout
    for heading in ("legit throttled", "abuse admitted", "SLO-violation s", "goodput /s"):
        assert heading in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("│ scraper")]
    assert len(rows) == 3
    none_row = next(r for r in rows if "│ none " in r)
    assert "100.00% ± 0.00" in none_row  # no limit admits every abusive request
    assert "million/min" in stdout
    doc = json.loads(out.read_text())
    assert len(doc["runs"]) == 2 * 3 * 2
    oracle = [r for r in doc["runs"] if r["policy"] == "oracle"]
    assert all(r["legit_throttled"] == 0.0 and r["abuse_admitted"] == 0.0 for r in oracle)
    assert doc["amplify"] == 2


def test_an_unknown_scenario_or_policy_is_a_clear_error() -> None:
    code, _, stderr = simulate("--trace", str(HEAD), "--scenario", "dos")
    assert code == 2
    assert "unknown scenario 'dos'" in stderr
    code, _, stderr = simulate("--trace", str(HEAD), "--policy", "none+gov")
    assert code == 2
    assert "governor needs a finite" in stderr


def test_a_missing_trace_is_a_clear_error(tmp_path: Path) -> None:
    code, _, stderr = simulate("--trace", str(tmp_path / "nope.tsv"))
    assert code == 2
    assert "cannot read" in stderr
    assert "nope.tsv" in stderr
