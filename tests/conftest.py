"""Fixtures: real redis-server processes and a real 3-master Redis Cluster on loopback."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from openclaw.testing.redis import RedisCluster, RedisServer, start_cluster, start_redis

# Compiled by mypyc (setup.py). After an edit the old .so would shadow the new source and the
# tests would pass against code that no longer exists.
COMPILED_MODULES = ("openclaw.limiter.core", "openclaw.limiter.memory")


def pytest_sessionstart(session: pytest.Session) -> None:
    for name in COMPILED_MODULES:
        module = importlib.import_module(name)
        built = Path(module.__file__ or "")
        if built.suffix != ".so":
            continue
        source = built.with_name(name.rsplit(".", 1)[1] + ".py")
        if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
            pytest.exit(f"{built.name} is older than {source}: run ./scripts/setup to recompile", 2)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = start_cluster(3, tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, for tests that kill it."""
    server = start_redis(tmp_path)
    yield server
    server.kill()


@pytest.fixture
def key() -> str:
    """A key no other test uses (the servers are shared by the session)."""
    return f"k-{uuid.uuid4().hex[:12]}"
