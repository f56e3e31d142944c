"""`openclaw bench report`: every benchmark in one document, each figure beside its peer.

The report runs once, with --quick (every benchmark shortened, its servers started as in the
full run); the tests check its structure, never a speed: speeds are the benchmarks' business.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from openclaw.bench.report import BENCHES, Bench, render, run_bench
from openclaw.testing.cli import invoke

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any], str]:
    """Exit code, the Markdown, the JSON and the console output of one quick report, run from
    the checkout (the benchmarks' default trace is ../shared, beside it)."""
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        code, stdout, stderr = invoke(
            "bench", "report", "--quick", "--out", str(out / "b.md"), "--json", str(out / "b.json")
        )
    payload = json.loads((out / "b.json").read_text())
    return code, (out / "b.md").read_text(), payload, stdout + stderr


def test_every_benchmark_ran_and_is_in_the_report(
    quick: tuple[int, str, dict[str, Any], str],
) -> None:
    code, text, payload, output = quick
    errors = {b["name"]: b["error"] for b in payload["benchmarks"] if b["error"]}
    assert not errors, errors
    assert code == 0, output[-3000:]
    assert [b["name"] for b in payload["benchmarks"]] == [b.name for b in BENCHES]
    for bench in BENCHES:
        assert f"\n## {bench.title}\n" in text
        # The exact command, as a shell block, right under the heading.
        assert f"```sh\n{bench.command(quick=True)}\n```" in text
        assert bench.command(quick=True).startswith(f"openclaw bench {bench.name} ")


def test_every_figure_has_its_peer_and_a_ratio(
    quick: tuple[int, str, dict[str, Any], str],
) -> None:
    _, text, payload, _ = quick
    for bench in payload["benchmarks"]:
        assert bench["rows"], f"{bench['name']} reported no figure"
        targets = 0
        for row in bench["rows"]:
            where = f"{bench['name']}: {row['figure']}: {row['ours']}"
            assert row["peer"], where
            assert row["peer"] != row["ours"], where
            for key in ("value", "peer_value", "ratio"):
                assert isinstance(row[key], float | int), where
                assert math.isfinite(row[key]), f"{where}: {key} {row[key]}"
            assert row["peer_value"] > 0, where
            # One round each in a quick run: a paired ratio is the ratio of the two figures.
            assert math.isclose(row["ratio"], row["value"] / row["peer_value"], rel_tol=1e-6), where
            if row["target"]:
                targets += 1
                assert row["passed"] in (True, False), where
            else:
                assert row["passed"] is None, where
        assert targets >= 1, f"{bench['name']} judged no figure against a target"
    # In the Markdown: a table row per figure, with the peer, its ratio and the verdict.
    lines = text.splitlines()
    for bench in payload["benchmarks"]:
        for row in bench["rows"]:
            start = f"| {row['figure']} | {row['ours']} | "
            found = [line for line in lines if line.startswith(start) and row["peer"] in line]
            assert found, start
            assert any(re.search(r" \| \d[\d,.]*x \| ", line) for line in found), found
    assert "**PASS**" in text or "**FAIL**" in text


def test_the_report_says_where_when_and_how(quick: tuple[int, str, dict[str, Any], str]) -> None:
    _, text, payload, _ = quick
    meta = payload["meta"]
    assert meta["quick"] is True
    assert "**Quick run**" in text
    assert re.search(r"\| command \| `openclaw bench report --quick --out \S+b\.md", text)
    assert re.search(r"\| date \| \d{4}-\d\d-\d\d \d\d:\d\d UTC \|", text)
    assert re.search(r"\| commit \| `[0-9a-f]{40}`", text)
    assert re.search(r"\| machine \| nproc=\d+, Python 3\.\d+", text)
    assert "| CPU | " in text
    assert re.search(r"\| libraries \| limits \d", text)
    # Each benchmark's block is marked for the documentation's command test, with a reason.
    assert text.count("<!-- not-run: a benchmark") == len(BENCHES)


def test_a_benchmark_that_fails_is_an_error_with_its_output(tmp_path: Path) -> None:
    broken = Bench(
        name="sim",
        title="sim, broken",
        args=("--rounds", "0"),
        quick_args=("--rounds", "0"),
        estimate_s=1,
        rows=lambda payload: ([], []),
        ratio_meaning="",
    )
    lines: list[str] = []
    result = run_bench(broken, quick=False, workdir=tmp_path, echo=lines.append)
    assert result.error is not None
    assert result.error.startswith("exit code 2")
    assert "--rounds" in result.error  # typer's message, from the benchmark's own output
    assert any("--rounds" in line for line in lines)  # passed through as it ran
    assert result.rows == ()


def test_the_command_exits_1_and_the_report_names_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From a directory without ../shared beside it, the simulator's default trace is missing.
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, stderr = invoke("bench", "report", "--only", "sim", "--out", "r.md")
    assert code == 1
    assert "some benchmarks did not run" in stderr
    text = (work / "r.md").read_text()
    assert "**ERROR**: exit code" in text
    assert "nasa_19950801.tsv" in text
    assert "## sim: replay speed of the simulator" in text
    assert "```sh\nopenclaw bench sim\n```" in text


def test_bad_options_fail_before_any_benchmark(tmp_path: Path) -> None:
    code, _, stderr = invoke("bench", "report", "--only", "limiterz", "--out", str(tmp_path / "r"))
    assert code == 2
    assert "unknown benchmark limiterz" in stderr
    code, _, stderr = invoke("bench", "report", "--out", str(tmp_path / "no" / "r.md"))
    assert code == 2
    assert "does not exist" in stderr
    assert not (tmp_path / "r").exists()


def test_render_without_benchmarks_is_still_a_report() -> None:
    from openclaw.bench.report import Meta

    meta = Meta(
        command="openclaw bench report",
        date="2026-01-01 00:00 UTC",
        commit="`" + "0" * 40 + "`",
        machine="nproc=2",
        cpu="x",
        libraries="limits 1",
        load_start=1.0,
        load_end=2.0,
        seconds=75.0,
        quick=False,
    )
    text = render(meta, [])
    assert text.startswith("# Benchmarks\n")
    assert "| duration | 1 min 15 s |" in text
    assert "Quick run" not in text
