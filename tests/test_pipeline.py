"""``openclaw pipeline``: a whole run on a slice of the NASA trace leaves a complete record, a
registered model, the challenger alias and drift in metrics.prom; a re-run does nothing; the
steps one by one (with a fake image builder on PATH); a failed gate stops the run with its
reason; bad input is named; the drift baseline follows the champion.

Real data, few epochs: each training is a few seconds (the model is not the point here)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from rich.console import Console

from openclaw.model.registry import Registry
from openclaw.rollout.drift import read_drift
from openclaw.rollout.pipeline import (
    BASELINE_FILE,
    DISTRIBUTION_FILE,
    STEPS,
    Pipeline,
    Run,
    StepOptions,
)
from openclaw.settings import Settings
from openclaw.testing.cli import invoke
from openclaw.testing.models import build_artifact
from openclaw.testing.traces import NASA, TRACES

HEAD = TRACES / "nasa_19950701_head.tsv"
#: The gate on one scenario and one seed of the small trace: a second, not minutes.
GATE = (
    "--gate-trace", str(HEAD), "--gate-scenario", "scraper", "--gate-seed", "0",
    "--gate-amplify", "2",
)  # fmt: skip
FAST = ("--epochs", "3")


def places(root: Path) -> tuple[str, ...]:
    return ("--pipeline-dir", str(root / "pipeline"), "--registry", str(root / "models"))


def no_builder(root: Path) -> dict[str, str]:
    """Settings that make the package step skip: no image is ever built by the tests."""
    return {"OPENCLAW_PIPELINE_IMAGE_BUILDER": str(root / "no-such-builder")}


def record(root: Path, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        (root / "pipeline" / "runs" / run_id / "run.json").read_text()
    )
    return body


def run_ids(root: Path) -> list[str]:
    runs = root / "pipeline" / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def metrics(root: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (root / "pipeline" / "metrics.prom").read_text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@dataclass(frozen=True)
class Done:
    root: Path
    run_id: str
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Done:
    root = tmp_path_factory.mktemp("first")
    code, stdout, stderr = invoke(
        "pipeline", "run", *places(root), "--trace", str(HEAD), *FAST, *GATE, env=no_builder(root)
    )
    (run_id,) = run_ids(root)
    return Done(root, run_id, code, stdout, stderr)


def test_a_run_does_every_step_and_leaves_a_complete_record(first: Done) -> None:
    assert first.code == 0, first.stdout + first.stderr
    body = record(first.root, first.run_id)
    assert body["outcome"] == "succeeded"
    assert body["finished_at"] is not None
    assert [body["steps"][s]["status"] for s in STEPS] == [
        "done", "done", "done", "done", "skipped", "done",
    ]  # fmt: skip
    for name in STEPS:
        step = body["steps"][name]
        assert step["started"] <= step["finished"]
        assert step["error"] is None
    # Inputs: the source, the window, row counts, settings, code revision.
    inputs = body["inputs"]
    assert inputs["source"] == f"trace {HEAD.resolve()} (nasa-tsv)"
    assert inputs["rows"]["trace_events"] == inputs["rows"]["events"] == 9_999
    assert inputs["rows"]["feature_rows"] > 1000
    assert inputs["window"] == {
        "since": "1995-07-01T04:00:00Z", "until": "1995-07-01T07:40:00Z", "window_s": 300.0,
    }  # fmt: skip
    assert inputs["settings"]["gate_max_legit_throttled"] == 0.1
    assert inputs["code_revision"].startswith("openclaw ")
    assert inputs["train"]["epochs"] == 3
    assert inputs["gate"]["scenarios"] == ["scraper"]
    # Versions: registered, and the challenger; no champion at the time.
    versions = body["versions"]
    registry = Registry(first.root / "models")
    assert registry.versions() == [versions["model"]]
    assert registry.aliases() == {"champion": None, "challenger": versions["model"]}
    assert versions["champion"] is None
    assert versions["baseline"] == "persistence+gov"
    assert "image" not in versions
    # The gate's checks and the training metrics.
    gate = body["metrics"]["gate"]
    assert gate["passed"] is True
    assert gate["checks"]
    assert all(c["passed"] for c in gate["checks"])
    assert {c["metric"] for c in gate["checks"]} >= {"legit_throttled", "abuse_admitted"}
    training = body["metrics"]["training"]
    assert training["epochs_run"] == 3
    assert training["rows"]["train"] > 0
    assert "val_coverage" in training["metrics"]
    # Package: skipped with the reason, not a failure.
    package = body["steps"]["package"]
    assert package["outputs"]["reason"].startswith("no image builder at ")
    assert "no-such-builder" in package["outputs"]["reason"]
    assert "package: skipped in" in first.stdout


def test_the_first_run_measures_drift_against_its_own_data(first: Done) -> None:
    drift = record(first.root, first.run_id)["metrics"]["drift"]
    # Less than a day of data: the latest "day" is all of it, and the first run's own
    # distribution is the baseline, so nothing has moved.
    assert drift["latest_day"]["whole_day"] is False
    assert drift["latest_day"]["since"] == "1995-07-01T04:00:00Z"
    assert drift["baseline"]["run"] == first.run_id
    # Measured at extract, before the run's model existed; register then named it.
    assert drift["baseline"]["version"] is None
    assert len(drift["psi"]) == 24
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in drift["psi"].values())
    assert read_drift(first.root / "pipeline") == drift["psi"]
    baseline = json.loads((first.root / "pipeline" / BASELINE_FILE).read_text())
    assert baseline["run"] == first.run_id
    assert baseline["version"] == record(first.root, first.run_id)["versions"]["model"]
    assert len(baseline["features"]["n_requests"]["proportions"]) >= 2


def test_metrics_prom_parses_with_drift_and_run_counts(first: Done) -> None:
    samples = metrics(first.root)
    psi = {
        dict(k[1])["feature"]: v for k, v in samples.items() if k[0] == "openclaw_feature_drift_psi"
    }
    assert len(psi) == 24
    assert psi["n_requests"] == pytest.approx(0.0, abs=1e-9)
    assert ("openclaw_feature_drift_psi_max", ()) in samples
    assert samples[("openclaw_pipeline_runs_total", (("outcome", "succeeded"),))] == 1
    assert samples[("openclaw_pipeline_runs_total", (("outcome", "rejected"),))] == 0
    assert samples[("openclaw_pipeline_runs_total", (("outcome", "failed"),))] == 0
    ended = Run.load(first.root / "pipeline" / "runs" / first.run_id).body["finished_at"]
    assert samples[("openclaw_pipeline_last_run_timestamp_seconds", ())] == pytest.approx(
        dt.datetime.fromisoformat(ended.replace("Z", "+00:00")).timestamp()
    )
    assert (
        samples[("openclaw_pipeline_last_success_timestamp_seconds", ())]
        == samples[("openclaw_pipeline_last_run_timestamp_seconds", ())]
    )


def test_running_a_finished_run_again_does_nothing(first: Done) -> None:
    assert first.code == 0
    before = json.loads(json.dumps(record(first.root, first.run_id)))
    audit = (first.root / "models" / "audit.jsonl").read_text()
    code, stdout, stderr = invoke(
        "pipeline", "run", "--run", first.run_id, *places(first.root), "--trace", str(HEAD),
        *FAST, *GATE, env=no_builder(first.root),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    for name in STEPS:
        assert f"{name}: skipped, " in stdout
    assert "data: trace" not in stdout  # no training report: nothing was trained
    again = record(first.root, first.run_id)
    assert again["steps"] == before["steps"]
    assert again["versions"] == before["versions"]
    # One registration, one alias move: nothing was registered or promoted a second time.
    assert (first.root / "models" / "audit.jsonl").read_text() == audit
    assert len(Registry(first.root / "models").versions()) == 1
    # A single step of it too.
    code, stdout, _ = invoke("pipeline", "register", "--run", first.run_id, *places(first.root))
    assert code == 0
    assert "register: skipped, done at" in stdout
    assert (first.root / "models" / "audit.jsonl").read_text() == audit


def fake_tools(directory: Path, *, exit_code: int = 0) -> tuple[Path, Path]:
    """A ``buildah`` that does nothing and a builder script that writes its arguments to
    ``args.txt`` and exits with ``exit_code``: pure stand-ins, no image is built."""
    directory.mkdir(exist_ok=True)
    buildah = directory / "buildah"
    buildah.write_text("#!/bin/sh\nexit 0\n")
    builder = directory / "build-image"
    builder.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > '{directory / 'args.txt'}'\n"
        "echo building\n"
        + ("echo 'Error: no space left on device' >&2\n" if exit_code else "")
        + f"exit {exit_code}\n"
    )
    for path in (buildah, builder):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return builder, directory / "args.txt"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_steps_one_by_one_with_an_image_builder(tmp_path: Path) -> None:
    where = places(tmp_path)
    base_env = no_builder(tmp_path)
    code, stdout, stderr = invoke("pipeline", "extract", *where, "--trace", str(HEAD), env=base_env)
    assert code == 0, stdout + stderr
    (run_id,) = run_ids(tmp_path)
    assert record(tmp_path, run_id)["outcome"] is None
    # A step before its predecessor is refused, naming what is missing.
    code, _, stderr = invoke("pipeline", "register", *where)
    assert code == 2
    assert f"run {run_id}: register needs train first (train is pending)" in stderr
    # Without --run, each step takes the run still going on.
    for args in (("train", *FAST), ("validate", *GATE), ("register",)):
        code, stdout, stderr = invoke("pipeline", *args, *where, env=base_env)
        assert code == 0, stdout + stderr
        assert f"run {run_id} " in stdout
    version = record(tmp_path, run_id)["versions"]["model"]
    # A builder that fails: the step fails with the end of its log; the run stops.
    builder, args_file = fake_tools(tmp_path / "bin", exit_code=3)
    env = {
        "OPENCLAW_PIPELINE_IMAGE_BUILDER": str(builder),
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    code, stdout, stderr = invoke("pipeline", "package", *where, env=env)
    assert code == 2, stdout + stderr
    assert "exited with 3" in stderr
    assert "no space left on device" in stderr
    body = record(tmp_path, run_id)
    assert body["outcome"] == "failed"
    assert body["steps"]["package"]["status"] == "failed"
    # A stopped run goes on only when named.
    code, _, stderr = invoke("pipeline", "package", *where, env=env)
    assert code == 2
    assert "no run in progress" in stderr
    fake_tools(tmp_path / "bin", exit_code=0)
    code, stdout, stderr = invoke("pipeline", "package", "--run", run_id, *where, env=env)
    assert code == 0, stdout + stderr
    model_dir = tmp_path / "models" / version
    assert args_file.read_text().splitlines() == [
        "--model", str(model_dir), "--tag", f"openclaw:{version}",
    ]  # fmt: skip
    body = record(tmp_path, run_id)
    assert body["versions"]["image"] == f"openclaw:{version}"
    assert body["steps"]["package"]["status"] == "done"
    assert "building" in Path(body["steps"]["package"]["outputs"]["log"]).read_text()
    assert body["outcome"] is None
    # The canary through a service that does not answer: the step fails naming the URL, but
    # the challenger alias (which the service follows by itself) is set.
    url = f"http://127.0.0.1:{closed_port()}"
    code, _, stderr = invoke(
        "pipeline", "canary", "--run", run_id, *where, "--service-url", url,
        env={"OPENCLAW_ADMIN_TOKEN": "s3cret-token"},
    )  # fmt: skip
    assert code == 2
    assert url in stderr
    assert "s3cret-token" not in stderr
    assert Registry(tmp_path / "models").alias("challenger") == version
    code, stdout, stderr = invoke("pipeline", "canary", "--run", run_id, *where)
    assert code == 0, stdout + stderr
    body = record(tmp_path, run_id)
    assert body["outcome"] == "succeeded"
    assert body["steps"]["canary"]["outputs"]["version"] == version
    assert "s3cret-token" not in json.dumps(body)
    code, stdout, _ = invoke("pipeline", "status", *where)
    assert code == 0
    assert f"run {run_id}: succeeded" in stdout
    assert f"image openclaw:{version}" in stdout


def test_a_failed_gate_stops_the_run_with_its_reason_and_registers_nothing(
    tmp_path: Path,
) -> None:
    # No abuse admitted at all: no limit can pass that (a scraper's first requests get in).
    env = {**no_builder(tmp_path), "OPENCLAW_GATE_MAX_ABUSE_ADMITTED": "0"}
    # A new run named by the caller (as Airflow names its runs).
    run_id = "scheduled__1995-07-02T00:00:00+00:00"
    code, stdout, stderr = invoke(
        "pipeline", "run", "--run", run_id, *places(tmp_path), "--trace", str(HEAD), *FAST,
        *GATE, env=env,
    )  # fmt: skip
    assert code == 1, stdout + stderr
    assert "the gate failed" in stderr
    assert "scraper: abuse admitted " in stderr
    assert "is above the bound 0.00% (OPENCLAW_GATE_MAX_ABUSE_ADMITTED)" in stderr
    assert run_ids(tmp_path) == [run_id]
    body = record(tmp_path, run_id)
    assert body["outcome"] == "rejected"
    assert body["reason"].startswith("validate: the gate failed")
    assert body["steps"]["validate"]["status"] == "failed"
    assert "OPENCLAW_GATE_MAX_ABUSE_ADMITTED" in body["steps"]["validate"]["error"]
    assert [body["steps"][s]["status"] for s in ("register", "package", "canary")] == [
        "pending"
    ] * 3
    gate = body["metrics"]["gate"]
    assert gate["passed"] is False
    failed = [c for c in gate["checks"] if not c["passed"]]
    assert any(c["metric"] == "abuse_admitted" and c["kind"] == "bound" for c in failed)
    assert all(c["worse_by"] > c["allowed"] for c in failed)
    assert Registry(tmp_path / "models").versions() == []
    assert Registry(tmp_path / "models").aliases() == {"champion": None, "challenger": None}
    samples = metrics(tmp_path)
    assert samples[("openclaw_pipeline_runs_total", (("outcome", "rejected"),))] == 1
    assert ("openclaw_pipeline_last_success_timestamp_seconds", ()) not in samples
    # Registering a rejected model is refused.
    code, _, stderr = invoke("pipeline", "register", "--run", run_id, *places(tmp_path))
    assert code == 2
    assert "register needs validate first (validate is failed: the gate failed" in stderr
    assert Registry(tmp_path / "models").versions() == []


def test_bad_input_is_named_and_starts_no_run(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tsv"
    code, _, stderr = invoke("pipeline", "run", *places(tmp_path), "--trace", str(missing))
    assert code == 2
    assert f"openclaw pipeline run: {missing}: no such trace file (--trace)" in stderr
    assert run_ids(tmp_path) == []
    code, _, stderr = invoke(
        "pipeline", "run", *places(tmp_path), "--trace", str(HEAD), "--gate-trace",
        str(tmp_path / "gate.tsv"),
    )  # fmt: skip
    assert code == 2
    assert "gate.tsv: no such trace file to replay in the gate" in stderr
    code, _, stderr = invoke("pipeline", "train", "--run", "nosuch", *places(tmp_path))
    assert code == 2
    assert "no run 'nosuch'" in stderr
    code, _, stderr = invoke("pipeline", "extract", "--run", "../escape", *places(tmp_path))
    assert code == 2
    assert "not a run id: '../escape'" in stderr
    code, _, stderr = invoke("pipeline", "validate", *places(tmp_path))
    assert code == 2
    assert "no run in progress" in stderr
    code, _, stderr = invoke(
        "pipeline", "extract", *places(tmp_path), "--store", f"duckdb://{tmp_path / 'e.duckdb'}"
    )
    assert code == 2
    assert "no events to train on" in stderr
    (failed,) = run_ids(tmp_path)
    assert record(tmp_path, failed)["outcome"] == "failed"
    assert record(tmp_path, failed)["steps"]["extract"]["status"] == "failed"


def test_drift_of_a_new_day_against_the_retained_baseline(first: Done, tmp_path: Path) -> None:
    """A copy of the first run's state: an extract of another day of the same server measures
    its drift against the first run's data (the retained baseline)."""
    assert first.code == 0
    shutil.copytree(first.root / "pipeline", tmp_path / "pipeline")
    shutil.copytree(first.root / "models", tmp_path / "models")
    code, stdout, stderr = invoke(
        "pipeline", "extract", "--run", "august", *places(tmp_path), "--trace", str(NASA),
        env=no_builder(tmp_path),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    drift = record(tmp_path, "august")["metrics"]["drift"]
    assert drift["baseline"]["run"] == first.run_id
    # August 1st runs from 04:00 to 18:52 UTC, July's slice from 04:00 to 07:40: the hours,
    # the client histories and the traffic all moved.
    assert drift["max"] > 0.25
    assert drift["psi"][drift["max_feature"]] == drift["max"]
    assert drift["psi"]["hour_sin"] > 0.25
    assert "drift: significant" in stdout
    assert read_drift(tmp_path / "pipeline") == drift["psi"]
    samples = metrics(tmp_path)
    assert samples[("openclaw_feature_drift_psi_max", ())] == pytest.approx(drift["max"])
    assert samples[("openclaw_feature_drift_psi", (("feature", "hour_sin"),))] == pytest.approx(
        drift["psi"]["hour_sin"]
    )
    # The extract-only run is still going on: it counts in no outcome.
    assert samples[("openclaw_pipeline_runs_total", (("outcome", "succeeded"),))] == 1
    assert record(tmp_path, "august")["outcome"] is None


def test_the_baseline_follows_the_champion(tmp_path: Path) -> None:
    """baseline.json is the training distribution of the champion, when a run here registered
    it; a challenger does not move it; without a champion the first run's stands in."""
    registry = Registry(tmp_path / "models")
    settings = Settings()
    pipeline = Pipeline(
        tmp_path / "pipeline",
        settings=settings,
        registry=registry,
        console=Console(quiet=True),
    )
    versions = []
    for seed, name in ((1, "one"), (2, "two")):
        artifact = build_artifact(tmp_path / "built" / f"model-2025080{seed}", seed=seed)
        versions.append(registry.register(artifact.directory, reason="test"))
        run = Run.new(tmp_path / "pipeline" / "runs" / name, name, pipeline._now())
        run.directory.mkdir(parents=True)
        run.section("versions")["model"] = versions[-1]
        run.save(pipeline._now())
        (run.directory / DISTRIBUTION_FILE).write_text(
            json.dumps({"run": name, "version": None, "rows": seed, "features": {}})
        )

    def own(run_id: str) -> dict[str, Any]:
        return {"run": run_id, "version": None, "rows": 0, "features": {}}

    # No champion, no baseline yet: this run's own distribution becomes it.
    assert pipeline._retained_baseline(own("first"))["run"] == "first"
    assert json.loads((tmp_path / "pipeline" / BASELINE_FILE).read_text())["run"] == "first"
    # A challenger does not move it; nor does a later run while there is no champion.
    registry.promote(versions[1], alias="challenger", reason="test")
    assert pipeline._retained_baseline(own("later"))["run"] == "first"
    # The champion is run two's model: its distribution becomes the baseline.
    registry.promote(versions[1], alias="champion", reason="test")
    body = pipeline._retained_baseline(own("later"))
    assert (body["run"], body["version"], body["rows"]) == ("two", versions[1], 2)
    # Rolled back to run one's model: the baseline follows.
    registry.promote(versions[0], alias="champion", reason="test")
    assert pipeline._retained_baseline(own("later"))["run"] == "one"
    # A champion no run here registered leaves the baseline as it was.
    stranger = build_artifact(tmp_path / "built" / "model-20250809", seed=9)
    version = registry.register(stranger.directory, reason="by hand")
    registry.promote(version, alias="champion", reason="test")
    assert pipeline._retained_baseline(own("later"))["run"] == "one"


def test_package_is_skipped_without_buildah(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder, args_file = fake_tools(tmp_path / "bin")
    (tmp_path / "bin" / "buildah").unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    settings = Settings(pipeline_image_builder=builder)
    pipeline = Pipeline(
        tmp_path / "pipeline",
        settings=settings,
        registry=Registry(tmp_path / "models"),
        console=Console(quiet=True),
    )
    run = Run.new(tmp_path / "run", "r", pipeline._now())
    run.section("versions")["model"] = "model-20250801"
    result = pipeline._step_package(run, StepOptions())
    assert result.status == "skipped"
    assert result.outputs == {"reason": "buildah is not on PATH"}
    assert not args_file.exists()


SERVICE_POLICY = """
default_tier = "free"

[tiers.free]
limits = [{ capacity = 100, refill_rate = 10 }]
"""


def test_the_canary_step_starts_the_services_canary(tmp_path: Path) -> None:
    """With --service-url, the canary step calls the real service's admin API: the service
    (policy_mode model, not following the alias by itself here) runs the new model in shadow."""
    import httpx

    from openclaw.service.server import BackgroundServer, build

    token = "pipeline-admin-token"
    registry = Registry(tmp_path / "models")
    built_champion = build_artifact(tmp_path / "built" / "model-20250801")
    champion = registry.register(built_champion.directory, reason="by hand")
    registry.promote(champion, reason="the first model")
    (tmp_path / "policy.toml").write_text(SERVICE_POLICY)
    settings = Settings(
        policy_mode="model",
        policy_path=tmp_path / "policy.toml",
        model_registry_path=tmp_path / "models",
        telemetry_url=f"duckdb://{tmp_path / 'events.duckdb'}",
        admin_token=SecretStr(token),
        canary_auto_start=False,
    )
    server = BackgroundServer(build(settings).app, settings).start()
    try:
        code, stdout, stderr = invoke(
            "pipeline", "run", *places(tmp_path), "--trace", str(HEAD), *FAST, *GATE,
            "--baseline", "persistence+gov", "--service-url", server.url,
            env={**no_builder(tmp_path), "OPENCLAW_ADMIN_TOKEN": token},
        )  # fmt: skip
        assert code == 0, stdout + stderr
        (run_id,) = run_ids(tmp_path)
        body = record(tmp_path, run_id)
        version = body["versions"]["model"]
        assert body["versions"]["champion"] == champion
        answer = body["steps"]["canary"]["outputs"]["service"]["answer"]
        assert answer["canary"]["version"] == version
        assert answer["canary"]["phase"] == "shadow"
        status = httpx.get(
            f"{server.url}/api/v1/admin/canary",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        assert status["champion"] == champion
        assert status["canary"]["version"] == version
        assert (
            status["canary"]["reason"]
            == f"pipeline run {run_id}: passed the gate against persistence+gov"
        )
        assert token not in json.dumps(body)
    finally:
        server.stop()


def test_extract_and_train_from_a_store_read_the_same_window(tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    code, _, stderr = invoke("ingest", str(HEAD), "--format", "nasa-tsv", "--store", url)
    assert code == 0, stderr
    where = places(tmp_path)
    code, stdout, stderr = invoke("pipeline", "extract", *where, "--store", url, "--days", "0.1")
    assert code == 0, stdout + stderr
    (run_id,) = run_ids(tmp_path)
    inputs = record(tmp_path, run_id)["inputs"]
    assert inputs["source"] == f"store {url}"
    # The last 0.1 days (2.4 h) of whole windows, up to the end of the last event's window.
    assert inputs["window"] == {
        "since": "1995-07-01T05:20:00Z", "until": "1995-07-01T07:40:00Z", "window_s": 300.0,
    }  # fmt: skip
    assert 0 < inputs["rows"]["events"] < 9_999
    # Train must read the store extract read: the record keeps the URL, the caller gives it.
    code, _, stderr = invoke("pipeline", "train", *where, *FAST)
    assert code == 2
    assert f"extracted from {url}, not duckdb://openclaw-telemetry.duckdb" in stderr
    assert record(tmp_path, run_id)["outcome"] == "failed"
    code, stdout, stderr = invoke(
        "pipeline", "train", "--run", run_id, *where, "--store", url, *FAST
    )
    assert code == 0, stdout + stderr
    body = record(tmp_path, run_id)
    assert body["outcome"] is None
    assert body["metrics"]["training"]["window"] == {
        "since": "1995-07-01T05:20:00Z", "until": "1995-07-01T07:40:00Z",
    }  # fmt: skip
