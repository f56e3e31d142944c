"""Fixtures: real redis-server processes, a real 3-master Redis Cluster and a real
clickhouse-server on loopback; telemetry stores of both backends."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.stores import open_event_store
from openclaw.testing.clickhouse import ClickHouseServer, start_clickhouse
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


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """One real clickhouse-server for the session; tests keep apart by database."""
    server = start_clickhouse(tmp_path_factory.mktemp("clickhouse"))
    yield server
    server.stop()


@pytest.fixture(
    params=[
        pytest.param("duckdb", id="duckdb"),
        pytest.param("clickhouse", id="clickhouse", marks=pytest.mark.clickhouse),
    ]
)
def event_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty telemetry store's URL, once per backend: a DuckDB file in tmp_path, or a
    database of its own on the session's ClickHouse server (dropped afterwards)."""
    if request.param == "duckdb":
        yield f"duckdb://{tmp_path / 'events.duckdb'}"
        return
    server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
    database = f"test_{uuid.uuid4().hex[:12]}"
    yield server.url_for(database)
    server.execute(f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture
def event_store(event_store_url: str) -> Iterator[EventStore]:
    """An open, empty telemetry store with its schema, once per backend."""
    store = open_event_store(event_store_url, settings=Settings())
    yield store
    store.close()


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
