"""``openclaw bench model`` end to end at tiny sizes: every part runs for real (subprocesses,
a real artifact, a real registry, the app built), the report holds the figures, the JSON too."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from openclaw.bench.model import FLOOR_INFER, OURS_INFER, rss_bytes
from openclaw.cli import app


def test_bench_model_reports_every_part_with_its_peer(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    result = CliRunner().invoke(
        app,
        [
            "bench", "model", "--clients", "300", "--events", "2", "--repeats", "2",
            "--rounds", "1", "--json", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "clients predicted in under 200 ms" in result.output
    body = json.loads(out.read_text())
    assert body["network"] == "24-64-64-2"
    for setting in ("default threads", "1 thread"):
        timed = body["inference"][setting]
        assert timed[OURS_INFER]["samples"] == 2
        assert timed[FLOOR_INFER]["median_ms"] > 0
    # A report, not a gate: the verdict is given, whichever it is.
    assert body["inference_verdict"] in ("PASS", "FAIL")
    boundary = body["boundary"]
    assert boundary["tick_s"] > 0
    assert boundary["close_s"] > 0
    assert boundary["predict_s"] > 0
    memory = body["memory"]
    for mode in ("model", "static"):
        rss = memory[mode]["rss"]
        assert rss["buckets stored"] > rss["baseline"] > 10_000_000
        assert memory[mode]["total_bytes"] == rss["buckets stored"] - rss["baseline"]
    assert "boundary passed" in memory["model"]["rss"]


def test_an_unknown_part_is_refused() -> None:
    result = CliRunner().invoke(app, ["bench", "model", "--part", "gpu"])
    assert result.exit_code == 2
    assert "unknown part gpu" in result.output


def test_rss_reads_this_process() -> None:
    before, peak = rss_bytes()
    block = bytearray(64 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    after, _ = rss_bytes()
    assert after - before > 50 * 1024 * 1024
    assert peak >= before
