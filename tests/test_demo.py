"""``openclaw demo`` end to end on a shortened replay: the real trace, real training, a real
service on loopback, real HTTP; the report's figures are checked against the service's own
counters and its telemetry store."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import duckdb
import pytest

from openclaw.demo import DEFAULT_TRACE, resolve_trace
from openclaw.errors import IngestError
from openclaw.model import Registry
from openclaw.testing.cli import invoke
from openclaw.testing.traces import NASA

PNG = b"\x89PNG\r\n\x1a\n"


ROOT = Path(__file__).resolve().parent.parent
#: Where the quick command of docs/demo.md writes; the test runs it into a directory of its own.
DOC_WORKDIR = "/tmp/openclaw-demo"


def quick_command() -> list[str]:
    """The arguments of docs/demo.md's quick run (the ```sh block with --minutes)."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "docs" / "demo.md").read_text(), re.DOTALL)
    (block,) = [b for b in blocks if "--minutes" in b]
    args = shlex.split(block)
    assert args[:2] == [".venv/bin/openclaw", "demo"]
    return args[2:]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """docs/demo.md's quick run, exactly, but in a temporary directory."""
    workdir = tmp_path_factory.mktemp("demo") / "work"
    args = [a.replace(DOC_WORKDIR, str(workdir)) for a in quick_command()]
    assert "--workdir" in args
    assert "--json" in args
    code, out, err = invoke("demo", *args)
    assert code == 0, err
    return workdir, json.loads((workdir / "demo.json").read_text()), out


def test_every_request_was_answered_and_the_service_counted_the_same(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    workdir, doc, _ = demo
    legit, scraper = doc["classes"]
    assert legit["name"] == "legitimate clients"
    assert scraper["name"] == "the scraper"
    assert doc["replay"]["sent"] == doc["replay"]["planned"] == legit["sent"] + scraper["sent"]
    assert legit["sent"] > 500
    assert scraper["sent"] > 3000
    for row in (legit, scraper):
        assert row["other"] == 0
        assert row["admitted"] + row["throttled"] == row["sent"]
    # The client's count of 200s and 429s is the server's count of its decisions.
    assert doc["service_decisions"] == {
        "allowed": legit["admitted"] + scraper["admitted"],
        "denied": legit["throttled"] + scraper["throttled"],
    }
    # Each answer went back as telemetry: the service's store holds one event per request of
    # the replay, a 429 for each throttled one.
    con = duckdb.connect(str(workdir / "service-telemetry.duckdb"), read_only=True)
    try:
        row = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE status_code = 429), "
            "count(*) FILTER (WHERE client_id = 'scraper-1') "
            "FROM events WHERE ts_us >= ? AND ts_us < ?",
            [doc["replay"]["start_us"], doc["replay"]["end_us"]],
        ).fetchone()
    finally:
        con.close()
    assert row == (
        doc["replay"]["sent"],
        legit["throttled"] + scraper["throttled"],
        scraper["sent"],
    )


def test_the_scraper_is_contained_and_legitimate_clients_are_not(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    _, doc, out = demo
    legit, scraper = doc["classes"]
    assert scraper["share_throttled"] >= 0.9
    assert legit["share_throttled"] <= 0.02
    assert legit["clients_throttled"] < 0.05 * legit["clients"]
    assert doc["contained"]
    assert doc["untouched"]
    # The scraper starts on the model's default bucket (no prediction yet) and is on the
    # model's own bucket once it has a window of history; that admits less of it.
    sources = {s["source"]: s for s in scraper["by_source"]}
    assert set(sources) == {"model_default", "model"}
    assert sources["model"]["sent"] > sources["model_default"]["sent"]
    assert sources["model"]["throttled"] / sources["model"]["sent"] >= 0.95
    limits = doc["scraper_limits"]
    assert limits[0]["source"] == "model_default"
    assert limits[-1]["source"] == "model"
    assert limits[-1]["model_version"] == doc["model_version"]
    assert limits[-1]["capacity"] < 100
    # The report prints what the JSON holds.
    for row in (legit, scraper):
        assert f"{row['sent']:,}" in out
        assert f"{row['throttled']:,}" in out
        assert f"{100 * row['share_throttled']:.2f}%" in out
    assert "openclaw_decisions_total agree" in out
    assert "the scraper was contained: " in out
    untouched = "untouched" if legit["throttled"] == 0 else "nearly untouched"
    assert f"legitimate clients were {untouched}: " in out
    assert doc["model_version"] in out


def test_the_model_was_validated_registered_and_promoted(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    workdir, doc, _ = demo
    registry = Registry(workdir / "models")
    assert registry.alias("champion") == doc["model_version"]
    (entry,) = [e for e in registry.audit_log() if e.alias == "champion"]
    assert entry.reason.startswith("openclaw demo: validate ")
    assert ("passed" in entry.reason) == doc["validate"]["passed"]
    assert doc["validate"]["baseline"] == "static+gov"
    assert doc["validate"]["passed"] == (doc["validate"]["failures"] == [])
    assert doc["service_model_status"]["serving"] == doc["model_version"]
    assert 'default_tier = "default"' in (workdir / "policy.toml").read_text()


def test_the_plots_are_written(demo: tuple[Path, dict[str, Any], str]) -> None:
    workdir, doc, _ = demo
    assert [Path(p).name for p in doc["plots"]] == ["timeline.png", "clients.png"]
    for name in doc["plots"]:
        data = Path(name).read_bytes()
        assert Path(name).parent == workdir
        assert data.startswith(PNG)
        assert len(data) > 20_000


def test_a_missing_trace_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tsv"
    code, _, err = invoke("demo", str(missing), "--workdir", str(tmp_path / "w"))
    assert code == 2
    assert (
        err.strip()
        == f"openclaw demo: trace {missing} does not exist: give the path of an access log"
    )
    assert not (tmp_path / "w").exists()


def test_an_unreadable_trace_is_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tsv"
    garbage.write_text("host\ttime\tmethod\turl\tresponse\tbytes\nnot a line\nnor this\n")
    code, _, err = invoke("demo", str(garbage), "--workdir", str(tmp_path / "w"))
    assert code == 2
    assert err.splitlines()[-1] == f"openclaw demo: {garbage}: no request could be read"


def test_bad_options_are_a_clear_error(tmp_path: Path) -> None:
    code, _, err = invoke("demo", "--minutes", "20", "--lead-minutes", "20")
    assert code == 2
    assert "--lead-minutes must be at least 0 and below --minutes" in err


def test_the_default_trace_is_found_beside_the_checkout_or_named_when_absent(
    tmp_path: Path,
) -> None:
    assert resolve_trace(None, cwd=tmp_path) == NASA
    beside = tmp_path / "repo"
    (tmp_path / "shared" / "data" / "traces").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "traces" / DEFAULT_TRACE.name).write_text("x")
    beside.mkdir()
    found = resolve_trace(None, cwd=beside, beside_checkout=tmp_path / "none.tsv")
    assert found == (beside / DEFAULT_TRACE).resolve()
    with pytest.raises(IngestError) as caught:
        resolve_trace(None, cwd=tmp_path, beside_checkout=tmp_path / "none.tsv")
    message = str(caught.value)
    assert str((tmp_path / DEFAULT_TRACE).resolve()) in message
    assert str(tmp_path / "none.tsv") in message
    assert "openclaw demo PATH" in message


def test_a_missing_dependency_is_named_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "openclaw.demo.run.NEEDS", {"torch": "torch", "openclaw_no_such_module": "no-such-pkg"}
    )
    code, _, err = invoke("demo", "--workdir", str(tmp_path / "w"))
    assert code == 2
    assert err.strip() == (
        "openclaw demo: the demo needs no-such-pkg: pip install 'openclaw[train]' httpx "
        "(./scripts/setup installs everything)"
    )
    assert not (tmp_path / "w").exists()
