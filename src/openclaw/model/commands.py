"""What ``openclaw models``, ``promote`` and ``rollback`` print: tables and one-line reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from openclaw.model.registry import AliasChange, AuditEntry, Registry, VersionInfo

if TYPE_CHECKING:
    from openclaw.settings import Settings

#: Metrics shown per version in the listing (the manifest holds them all).
SHOWN_METRICS = 4


def open_registry(path: Path | None, settings: Settings | None = None) -> Registry:
    """The registry at ``path``, or the settings' ``model_registry_path``."""
    if path is None:
        if settings is None:
            from openclaw.settings import Settings

            settings = Settings()
        path = settings.model_registry_path
    return Registry(path)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def versions_table(infos: Sequence[VersionInfo], *, root: Path) -> Table:
    table = Table(title=f"models in {root}", title_justify="left")
    table.add_column("version")
    table.add_column("aliases")
    table.add_column("created (UTC)")
    table.add_column("rows", justify="right")
    table.add_column("metrics")
    table.add_column("status")
    for info in infos:
        manifest = info.manifest
        if manifest is None:
            table.add_row(info.version, ", ".join(info.aliases), "", "", "", f"BAD: {info.error}")
            continue
        metrics = list(manifest.metrics.items())
        shown = ", ".join(f"{k}={_number(v)}" for k, v in metrics[:SHOWN_METRICS])
        if len(metrics) > SHOWN_METRICS:
            shown += f", +{len(metrics) - SHOWN_METRICS} more"
        table.add_row(
            info.version,
            ", ".join(info.aliases),
            manifest.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(sum(manifest.data.rows.values())),
            shown,
            "ok",
        )
    return table


def audit_table(entries: Sequence[AuditEntry]) -> Table:
    table = Table(title="audit log", title_justify="left")
    for column in ("when (UTC)", "who", "action", "alias", "from", "to", "why"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e.ts,
            e.who,
            e.action,
            e.alias or "",
            e.from_version or "-",
            e.to_version or "-",
            e.reason,
        )
    return table


def describe_change(change: AliasChange) -> str:
    if not change.changed:
        return f"{change.alias} already is {change.to_version}: nothing changed"
    return f"{change.alias}: {change.from_version or 'none'} -> {change.to_version or 'none'}"
