"""ModelHolder: follows the champion alias; a bad new champion leaves the current one serving,
counted and logged."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from openclaw.clock import FakeClock
from openclaw.model import BucketPredictor, ModelHolder, OutputBounds, Registry
from openclaw.testing.models import build_artifact

BOUNDS = OutputBounds(min_capacity=1.0, max_capacity=1e6, min_refill_rate=0.0, max_refill_rate=1e5)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models", user="ops")


def _version(registry: Registry, tmp_path: Path, seed: int) -> str:
    built = build_artifact(tmp_path / f"build{seed}" / "model-20250801", seed=seed)
    return registry.register(built.directory)


def _failures(metrics: CollectorRegistry, reason: str) -> float:
    value = metrics.get_sample_value("openclaw_model_load_failures_total", {"reason": reason})
    assert value is not None
    return value


def _serving(holder: ModelHolder) -> BucketPredictor:
    model = holder.model
    assert model is not None
    return model


def _holder(registry: Registry, metrics: CollectorRegistry, clock: FakeClock) -> ModelHolder:
    return ModelHolder(registry, metrics=metrics, bounds=BOUNDS, clock=clock, retry_interval_s=30.0)


def test_the_holder_follows_the_champion(registry: Registry, tmp_path: Path) -> None:
    metrics = CollectorRegistry()
    holder = _holder(registry, metrics, FakeClock())
    assert holder.reload_if_changed() is False  # no registry yet, nothing to serve
    assert holder.model is None

    v1 = _version(registry, tmp_path, 1)
    v2 = _version(registry, tmp_path, 2)
    registry.promote(v1, reason="first")
    assert holder.reload_if_changed() is True
    assert holder.version == v1
    assert holder.reload_if_changed() is False  # unchanged alias: nothing loaded again
    x = np.random.default_rng(0).lognormal(0, 1, (4, 24))
    before = _serving(holder).predict_batch(x)

    registry.promote(v2, reason="second")
    assert holder.reload_if_changed() is True
    assert holder.version == v2
    assert not np.array_equal(_serving(holder).predict_batch(x), before)
    registry.rollback(reason="back")
    assert holder.reload_if_changed() is True
    assert holder.version == v1
    assert metrics.get_sample_value("openclaw_model_reloads_total") == 3.0
    assert _failures(metrics, "checksum") == 0.0


def test_a_corrupt_new_champion_leaves_the_current_one_serving(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = CollectorRegistry()
    clock = FakeClock()
    holder = _holder(registry, metrics, clock)
    good = _version(registry, tmp_path, 1)
    bad = _version(registry, tmp_path, 2)
    registry.promote(good, reason="good")
    assert holder.reload_if_changed()
    # The bad one is corrupted after it was promoted (a disk error, a hand edit).
    registry.promote(bad, reason="new")
    weights = registry.path_of(bad) / "weights.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-4] + b"\xff\xff\xff\xff")

    with caplog.at_level(logging.WARNING, logger="openclaw.model"):
        assert holder.reload_if_changed() is False
    assert holder.version == good
    assert _failures(metrics, "checksum") == 1.0
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert f"cannot load {bad} (checksum)" in message
    assert "checksum mismatch" in message
    assert f"still serving {good}" in message

    # Not retried (nor counted) at every check; retried once the interval has passed.
    assert holder.reload_if_changed() is False
    assert _failures(metrics, "checksum") == 1.0
    clock.advance(31.0)
    assert holder.reload_if_changed() is False
    assert _failures(metrics, "checksum") == 2.0
    assert holder.version == good

    fixed = _version(registry, tmp_path, 3)
    registry.promote(fixed, reason="fixed")
    assert holder.reload_if_changed() is True
    assert holder.version == fixed


def test_a_missing_version_and_a_broken_alias_file_are_counted(
    registry: Registry, tmp_path: Path
) -> None:
    metrics = CollectorRegistry()
    holder = _holder(registry, metrics, FakeClock())
    good = _version(registry, tmp_path, 1)
    gone = _version(registry, tmp_path, 2)
    registry.promote(good, reason="good")
    assert holder.reload_if_changed()

    registry.promote(gone, reason="new")
    path = registry.path_of(gone)
    path.chmod(0o755)
    shutil.rmtree(path)
    assert holder.reload_if_changed() is False
    assert _failures(metrics, "missing") == 1.0
    assert holder.version == good

    registry.alias_path.write_text("{garbage")
    assert holder.reload_if_changed() is False
    assert _failures(metrics, "alias") == 1.0
    assert holder.version == good
    out = _serving(holder).predict_batch(np.ones((2, 24)))
    assert np.isfinite(out).all()
