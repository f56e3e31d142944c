"""Open a telemetry store from its URL.

``duckdb://relative/path.duckdb``, ``duckdb:///abs/path.duckdb``, ``duckdb://:memory:``;
``clickhouse://[user[:password]@]host[:port]/database`` (the native protocol, port 9000 by
default). The backends are imported when a URL asks for them: ClickHouse's driver is an extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from openclaw.errors import ConfigError
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore


def _open_duckdb(url: str, settings: Settings) -> EventStore:
    from openclaw.telemetry.duckdb import DuckDBEventStore

    path = url.removeprefix("duckdb://")
    if not path:
        raise ConfigError(
            f"telemetry URL {url!r} names no file: use duckdb://relative/path.duckdb, "
            "duckdb:///absolute/path.duckdb or duckdb://:memory:"
        )
    return DuckDBEventStore(path, settings=settings)


def _open_clickhouse(url: str, settings: Settings) -> EventStore:
    from openclaw.telemetry.clickhouse import ClickHouseEventStore, parse_clickhouse_url

    return ClickHouseEventStore(parse_clickhouse_url(url), settings=settings)


#: URL scheme -> factory of a store (not yet with its schema; ``open_event_store`` adds it).
TELEMETRY_BACKENDS: Final[dict[str, Callable[[str, Settings], EventStore]]] = {
    "duckdb": _open_duckdb,
    "clickhouse": _open_clickhouse,
}


def open_event_store(url: str, *, settings: Settings) -> EventStore:
    """The store ``url`` names, its schema created. A bad URL raises ConfigError naming it;
    a store that cannot be reached or opened raises TelemetryStoreError."""
    scheme, sep, _ = url.partition("://")
    factory = TELEMETRY_BACKENDS.get(scheme) if sep else None
    if factory is None:
        raise ConfigError(
            f"telemetry URL {url!r}: unknown scheme; expected one of "
            + ", ".join(f"{name}://" for name in TELEMETRY_BACKENDS)
        )
    store = factory(url, settings)
    try:
        store.create_schema()
    except BaseException:
        store.close()
        raise
    return store
