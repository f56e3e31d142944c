"""The model registry on real directories: immutable versions, aliases, audit log, rollback,
pruning, and the CLI over them."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openclaw.cli import app
from openclaw.errors import ArtifactError, RegistryError
from openclaw.model import Registry, load_artifact
from openclaw.testing.models import build_artifact

AUG9 = dt.datetime(2025, 8, 9, 10, 0, tzinfo=dt.UTC).timestamp()
AUG10 = dt.datetime(2025, 8, 10, 10, 0, tzinfo=dt.UTC).timestamp()


class WallClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A built, unregistered artifact."""
    return build_artifact(tmp_path / "build" / "model-20250801", write_pt=True).directory


def _registry(tmp_path: Path, clock: WallClock | None = None) -> Registry:
    return Registry(tmp_path / "models", wall_clock=clock or WallClock(AUG9), user="alice")


def _registered(registry: Registry, built: Path, n: int) -> list[str]:
    return [registry.register(built) for _ in range(n)]


def test_registering_copies_verifies_names_and_freezes(tmp_path: Path, built: Path) -> None:
    clock = WallClock(AUG9)
    registry = _registry(tmp_path, clock)
    assert registry.register(built, reason="nightly") == "model-20250809"
    assert registry.register(built) == "model-20250809-2"
    clock.now = AUG10
    assert registry.register(built) == "model-20250810"
    assert registry.versions() == ["model-20250809", "model-20250809-2", "model-20250810"]

    path = registry.path_of("model-20250809-2")
    artifact = load_artifact(path)  # every checksum verified
    assert artifact.version == "model-20250809-2"
    source = load_artifact(built)
    assert source.version == "model-20250801"  # the source is left as it was
    assert artifact.manifest.files == source.manifest.files
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in built.iterdir())
    for file in path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o444
    assert stat.S_IMODE(path.stat().st_mode) == 0o555
    assert not list((registry.root / ".staging").iterdir())

    entry = registry.audit_log()[0]
    assert entry.action == "register"
    assert entry.to_version == "model-20250809"
    assert entry.who == "alice"
    assert entry.ts == "2025-08-09T10:00:00.000000Z"
    assert entry.reason == f"from {built.resolve()}: nightly"


def test_a_version_is_written_once(tmp_path: Path, built: Path) -> None:
    registry = _registry(tmp_path)
    registry.register(built, version="model-20250801")
    with pytest.raises(RegistryError, match=r"model-20250801 exists.*immutable"):
        registry.register(built, version="model-20250801")
    # A pruned version's name is never given to another model.
    assert registry.register(built) == "model-20250809"
    registry.prune(keep=0)
    assert registry.versions() == []
    with pytest.raises(RegistryError, match="model-20250809 exists \\(or existed\\)"):
        registry.register(built, version="model-20250809")
    assert registry.register(built) == "model-20250809-2"


def test_a_corrupt_artifact_is_not_registered(tmp_path: Path, built: Path) -> None:
    weights = built / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    registry = _registry(tmp_path)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        registry.register(built)
    assert registry.versions() == []
    assert registry.audit_log() == []


def test_promote_moves_the_alias_atomically_and_logs_it(tmp_path: Path, built: Path) -> None:
    registry = _registry(tmp_path)
    v1, v2 = _registered(registry, built, 2)
    assert registry.aliases() == {"champion": None, "challenger": None}

    change = registry.promote(v1, reason="first model")
    assert (change.from_version, change.to_version, change.changed) == (None, v1, True)
    registry.promote(v2, alias="challenger", reason="try it")
    assert json.loads(registry.alias_path.read_text()) == {"champion": v1, "challenger": v2}
    assert not registry.promote(v1, reason="again").changed  # a no-op, not logged

    change = registry.promote(v2, reason="canary passed")
    assert (change.from_version, change.to_version) == (v1, v2)
    # The challenger that became champion is no longer the challenger.
    assert registry.aliases() == {"champion": v2, "challenger": None}
    log = [
        (e.action, e.alias, e.from_version, e.to_version, e.reason)
        for e in registry.audit_log()
        if e.action != "register"
    ]
    assert log == [
        ("promote", "champion", None, v1, "first model"),
        ("promote", "challenger", None, v2, "try it"),
        ("promote", "champion", v1, v2, "canary passed"),
        ("promote", "challenger", v2, None, "promoted to champion: canary passed"),
    ]
    assert all(e.who == "alice" for e in registry.audit_log())
    assert not [p for p in registry.root.iterdir() if p.name.endswith(".tmp")]


def test_promote_refuses_what_it_cannot_serve(tmp_path: Path, built: Path) -> None:
    registry = _registry(tmp_path)
    (v1,) = _registered(registry, built, 1)
    with pytest.raises(RegistryError, match="no such version"):
        registry.promote("model-20250101", reason="typo")
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.promote(v1, reason="  ")
    with pytest.raises(RegistryError, match="unknown alias 'prod'"):
        registry.promote(v1, alias="prod", reason="x")
    with pytest.raises(RegistryError, match="not a model version"):
        registry.promote("latest", reason="x")
    # Corrupted after registration (read-only files do not stop root): refused, alias kept.
    weights = registry.path_of(v1) / "weights.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(b"\x00" + weights.read_bytes()[1:])
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        registry.promote(v1, reason="x")
    assert registry.aliases()["champion"] is None


def test_rollback_walks_back_the_promotions(tmp_path: Path, built: Path) -> None:
    registry = _registry(tmp_path)
    a, b, c = _registered(registry, built, 3)
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback()
    for v in (a, b, c):
        registry.promote(v, reason=f"ship {v}")
    assert registry.champion_history() == [a, b, c]

    change = registry.rollback(reason="p99 regressed")
    assert (change.from_version, change.to_version) == (c, b)
    assert registry.alias("champion") == b
    assert registry.rollback().to_version == a  # two promotions back, not back and forth
    with pytest.raises(RegistryError, match=f"nothing to roll back to: {a} is the first"):
        registry.rollback()
    last = registry.audit_log()[-1]
    assert (last.action, last.alias, last.from_version, last.to_version, last.reason) == (
        "rollback",
        "champion",
        b,
        a,
        "rollback",
    )
    registry.promote(c, reason="fixed")
    assert registry.rollback().to_version == a


def test_the_audit_log_is_append_only(tmp_path: Path, built: Path) -> None:
    registry = _registry(tmp_path)
    v1, v2 = _registered(registry, built, 2)
    registry.promote(v1, reason="one")
    before = registry.audit_path.read_bytes()
    registry.promote(v2, reason="two")
    registry.rollback(reason="three")
    after = registry.audit_path.read_bytes()
    assert after.startswith(before)
    lines = after.decode().splitlines()
    assert len(lines) == 5
    for line in lines:
        body = json.loads(line)
        assert set(body) == {"ts", "who", "action", "alias", "from", "to", "reason"}
    # A torn last line (a crash mid-append) is not an entry; a torn earlier one is an error.
    with registry.audit_path.open("a") as fh:
        fh.write('{"ts": "2025-')
    assert len(registry.audit_log()) == 5
    registry.audit_path.write_text('{"ts"\n' + after.decode())
    with pytest.raises(RegistryError, match=r"audit\.jsonl:1: not an audit entry"):
        registry.audit_log()


def test_prune_keeps_the_newest_the_aliased_and_the_rollback_target(
    tmp_path: Path, built: Path
) -> None:
    registry = _registry(tmp_path)
    v1, v2, v3, v4, v5, v6 = _registered(registry, built, 6)
    registry.promote(v1, reason="a")
    registry.promote(v2, reason="b")  # v1: the previous champion, the rollback target
    registry.promote(v3, alias="challenger", reason="c")

    assert registry.prune(keep=1, dry_run=True) == [v4, v5]
    assert len(registry.versions()) == 6
    assert registry.prune(keep=1, reason="disk") == [v4, v5]
    assert registry.versions() == [v1, v2, v3, v6]
    pruned = [e for e in registry.audit_log() if e.action == "prune"]
    assert [(e.from_version, e.reason) for e in pruned] == [(v4, "disk"), (v5, "disk")]

    assert registry.prune(keep=0) == [v6]
    assert registry.versions() == [v1, v2, v3]
    assert registry.rollback().to_version == v1  # the target survived pruning


def test_the_alias_file_is_validated(tmp_path: Path, built: Path) -> None:
    registry = _registry(tmp_path)
    registry.root.mkdir(parents=True)
    registry.alias_path.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        registry.aliases()
    registry.alias_path.write_text('{"champion": "../../etc"}')
    with pytest.raises(RegistryError, match="not a version"):
        registry.alias("champion")


def test_the_cli_lists_promotes_rolls_back_and_prunes(tmp_path: Path, built: Path) -> None:
    runner = CliRunner()
    reg = ["--registry", str(tmp_path / "models")]

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    v1 = run("models", "register", str(built), *reg).strip()
    v2 = run("models", "register", str(built), *reg).strip()
    assert v1.startswith("model-")
    assert v2 == f"{v1}-2"
    assert run("promote", v1, "--reason", "first", *reg).strip() == f"champion: none -> {v1}"
    assert run("promote", v2, "--reason", "better", *reg).strip() == f"champion: {v1} -> {v2}"
    listing = run("models", *reg)
    assert v1 in listing
    assert f"{v2}" in listing
    assert "champion" in listing
    assert "pinball=0.12" in listing
    assert run("rollback", "--reason", "bad p99", *reg).strip() == f"champion: {v2} -> {v1}"
    log = run("models", "log", *reg)
    assert "bad p99" in log
    assert "rollback" in log
    # Rolled back from, v2 is neither aliased nor a rollback target any more.
    assert run("models", "prune", "--keep", "0", "--dry-run", *reg).strip() == (
        f"would delete: {v2}"
    )
    assert run("models", "prune", "--keep", "0", *reg).strip() == f"deleted: {v2}"
    assert "nothing to delete" in run("models", "prune", "--keep", "0", *reg)

    failed = runner.invoke(app, ["promote", "model-20200101", "--reason", "x", *reg])
    assert failed.exit_code == 2
    assert "no such version" in failed.output
    missing_reason = runner.invoke(app, ["promote", v2, *reg])
    assert missing_reason.exit_code != 0
    assert "--reason" in missing_reason.output
