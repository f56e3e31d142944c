"""The model registry: a local directory of immutable versions, two aliases, an audit log.

Layout (``settings.model_registry_path``, default ``./models``)::

    models/
      model-20250801/      a registered artifact: files read-only, never written again
      model-20250801-2/
      aliases.json         {"champion": "model-20250801", "challenger": null}
      audit.jsonl          append-only: one JSON object per line, who/when/what/from/to/why
      .lock                serialises writers (flock)
      .staging/            where a version is assembled before it is renamed into place

Rules:

* A version is written once. :meth:`Registry.register` copies a built artifact in (after
  verifying its checksums), names it ``model-YYYYMMDD[-N]`` with the next N of the day (a name
  ever used, even by a version since pruned, is never given again), verifies the copy, makes
  it read-only and renames it into place. Asking for a version that exists is refused.
* Aliases (``champion``, ``challenger``) live in ``aliases.json``, replaced atomically (a temp
  file, fsync, ``os.replace``): a reader sees the old file or the new one, never half.
* Every change is appended to ``audit.jsonl`` before the alias file moves: ``ts`` (UTC),
  ``who``, ``action`` (register, promote, rollback, prune, clear), ``alias``, ``from``, ``to``,
  ``reason``.
* Rollback returns the champion to the one before it: the audit log's promotions of
  ``champion`` form a stack (promote pushes, rollback pops), so rolling back twice goes two
  promotions back, not back and forth.
* Pruning keeps the newest N versions and never deletes an aliased version, nor the previous
  champion (what a rollback would return to).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from openclaw.errors import ArtifactError, RegistryError
from openclaw.model.artifact import (
    MANIFEST,
    Artifact,
    Manifest,
    check_version,
    is_version,
    load_artifact,
    next_version,
    version_key,
    with_version,
)

ALIASES: Final = ("champion", "challenger")
ALIAS_FILE: Final = "aliases.json"
AUDIT_FILE: Final = "audit.jsonl"
LOCK_FILE: Final = ".lock"
STAGING: Final = ".staging"

Action = Literal["register", "promote", "rollback", "prune", "clear"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts: str
    who: str
    action: Action
    alias: str | None
    from_version: str | None
    to_version: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "who": self.who,
            "action": self.action,
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> AuditEntry:
        return cls(
            ts=str(body["ts"]),
            who=str(body["who"]),
            action=body["action"],
            alias=body.get("alias"),
            from_version=body.get("from"),
            to_version=body.get("to"),
            reason=str(body.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class AliasChange:
    alias: str
    from_version: str | None
    to_version: str | None

    @property
    def changed(self) -> bool:
        return self.from_version != self.to_version


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    path: Path
    aliases: tuple[str, ...]
    #: None when the version failed verification (``error`` says why).
    manifest: Manifest | None
    error: str | None


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_read_only(directory: Path) -> None:
    for path in directory.iterdir():
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    directory.chmod(0o555)


def _set_writable(directory: Path) -> None:
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


class Registry:
    """A registry rooted at ``root``. ``wall_clock`` (epoch seconds) dates versions and audit
    entries; ``user`` is who the audit log names (default: the login name)."""

    def __init__(
        self,
        root: Path,
        *,
        wall_clock: Callable[[], float] = time.time,
        user: str | None = None,
    ) -> None:
        self.root = Path(root)
        self._wall_clock = wall_clock
        self._user = user

    # -- reading ----------------------------------------------------------------------------

    @property
    def alias_path(self) -> Path:
        return self.root / ALIAS_FILE

    def alias_stamp(self) -> tuple[int, int, int] | None:
        """(inode, mtime, size) of the alias file, None when it is absent: a watcher that sees
        the same stamp knows the aliases have not moved (every write replaces the file)
        without reading them."""
        try:
            st = os.stat(self.alias_path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    @property
    def audit_path(self) -> Path:
        return self.root / AUDIT_FILE

    def path_of(self, version: str) -> Path:
        return self.root / check_version(version)

    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if p.is_dir() and is_version(p.name)]
        return sorted(names, key=version_key)

    def aliases(self) -> dict[str, str | None]:
        """Alias -> version (None: unset). Raises RegistryError when the file is unreadable."""
        try:
            raw = self.alias_path.read_bytes()
        except FileNotFoundError:
            return dict.fromkeys(ALIASES)
        except OSError as exc:
            raise RegistryError(f"{self.alias_path}: cannot be read: {exc}") from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise RegistryError(f"{self.alias_path}: not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise RegistryError(f"{self.alias_path}: not a JSON object")
        out: dict[str, str | None] = {}
        for alias in ALIASES:
            value = body.get(alias)
            if value is not None and not (isinstance(value, str) and is_version(value)):
                raise RegistryError(f"{self.alias_path}: {alias} is {value!r}, not a version")
            out[alias] = value
        return out

    def alias(self, name: str) -> str | None:
        return self.aliases()[_check_alias(name)]

    def audit_log(self) -> list[AuditEntry]:
        try:
            text = self.audit_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        lines = text.split("\n")
        entries = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entries.append(AuditEntry.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines):
                    # A torn last line (a crash mid-append) without its newline: not an entry.
                    continue
                raise RegistryError(
                    f"{self.audit_path}:{number}: not an audit entry: {exc}"
                ) from exc
        return entries

    def champion_history(self) -> list[str]:
        """The rollback stack: champions in the order promoted, rolled-back ones popped; the
        last is the current champion."""
        stack: list[str] = []
        for entry in self.audit_log():
            if entry.alias != "champion":
                continue
            if entry.action == "promote" and entry.to_version is not None:
                stack.append(entry.to_version)
            elif entry.action == "rollback" and stack:
                stack.pop()
        return stack

    def load(self, version: str) -> Artifact:
        path = self.path_of(version)
        if not path.is_dir():
            raise ArtifactError(f"{path}: no such version in the registry", reason="missing")
        return load_artifact(path)

    def version_infos(self) -> list[VersionInfo]:
        """Every version, oldest first, verified, with the aliases that point to it."""
        aliases = self.aliases()
        out = []
        for version in self.versions():
            names = tuple(a for a in ALIASES if aliases[a] == version)
            try:
                manifest: Manifest | None = self.load(version).manifest
                error = None
            except ArtifactError as exc:
                manifest, error = None, str(exc)
            out.append(VersionInfo(version, self.path_of(version), names, manifest, error))
        return out

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._wall_clock(), dt.UTC)

    def _append(
        self,
        action: Action,
        *,
        alias: str | None,
        from_version: str | None,
        to_version: str | None,
        reason: str,
    ) -> AuditEntry:
        entry = AuditEntry(
            ts=self._now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            who=self._user or _default_user(),
            action=action,
            alias=alias,
            from_version=from_version,
            to_version=to_version,
            reason=reason,
        )
        line = json.dumps(entry.to_json(), ensure_ascii=False) + "\n"
        with self.audit_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def _write_aliases(self, aliases: dict[str, str | None]) -> None:
        tmp = self.root / f".{ALIAS_FILE}.{uuid.uuid4().hex}.tmp"
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump({a: aliases.get(a) for a in ALIASES}, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.alias_path)
        _fsync_dir(self.root)

    def _taken(self) -> set[str]:
        taken = set(self.versions())
        for entry in self.audit_log():
            taken.update(v for v in (entry.from_version, entry.to_version) if v is not None)
        return taken

    def register(self, source: Path, *, version: str | None = None, reason: str = "") -> str:
        """Copy the artifact at ``source`` in as a new version (allocated for today unless
        ``version`` is given); returns the version. Refuses a corrupt artifact, and a version
        that exists or ever existed."""
        artifact = load_artifact(Path(source))
        with self._locked():
            taken = self._taken()
            if version is None:
                version = next_version(taken, self._now().date())
            elif check_version(version) in taken:
                raise RegistryError(
                    f"{version} exists (or existed) in {self.root}: versions are immutable, "
                    "register under a new one"
                )
            staging = self.root / STAGING / f"{version}.{uuid.uuid4().hex}"
            staging.parent.mkdir(parents=True, exist_ok=True)
            try:
                staging.mkdir()
                for name in (*artifact.manifest.files, MANIFEST):
                    shutil.copyfile(artifact.directory / name, staging / name)
                if artifact.manifest.version != version:
                    with_version(staging, version)
                load_artifact(staging)  # the copy, verified before it becomes visible
                for path in staging.iterdir():
                    with path.open("rb") as fh:
                        os.fsync(fh.fileno())
                _set_read_only(staging)
                target = self.root / version
                if target.exists():
                    raise RegistryError(f"{target} exists: versions are immutable")
                staging.rename(target)
                _fsync_dir(self.root)
            except BaseException:
                if staging.exists():
                    _set_writable(staging)
                    shutil.rmtree(staging, ignore_errors=True)
                raise
            note = f"from {Path(source).resolve()}" + (f": {reason}" if reason else "")
            self._append(
                "register",
                alias=None,
                from_version=None,
                to_version=version,
                reason=note,
            )
        return version

    def promote(self, version: str, *, alias: str = "champion", reason: str) -> AliasChange:
        """Point ``alias`` at ``version`` (verified first). Promoting the challenger to
        champion also clears the challenger alias. Promoting what the alias already names
        changes nothing and logs nothing."""
        alias = _check_alias(alias)
        if not reason.strip():
            raise RegistryError("a promotion needs a reason (--reason)")
        self._verified(version)
        with self._locked():
            aliases = self.aliases()
            old = aliases[alias]
            if old == version:
                return AliasChange(alias, old, version)
            self._append(
                "promote", alias=alias, from_version=old, to_version=version, reason=reason
            )
            aliases[alias] = version
            if alias == "champion" and aliases["challenger"] == version:
                self._append(
                    "promote",
                    alias="challenger",
                    from_version=version,
                    to_version=None,
                    reason=f"promoted to champion: {reason}",
                )
                aliases["challenger"] = None
            self._write_aliases(aliases)
        return AliasChange(alias, old, version)

    def rollback(self, *, reason: str = "") -> AliasChange:
        """Return the champion to the previous champion (see the module docstring)."""
        with self._locked():
            current = self.aliases()["champion"]
            stack = self.champion_history()
            if current is None:
                raise RegistryError("no champion to roll back")
            if not stack or stack[-1] != current:
                raise RegistryError(
                    f"the audit log's champion ({stack[-1] if stack else 'none'}) is not the "
                    f"alias's ({current}): promote the intended version explicitly"
                )
            if len(stack) < 2:
                raise RegistryError(f"nothing to roll back to: {current} is the first champion")
            target = stack[-2]
            self._verified(target)
            self._append(
                "rollback",
                alias="champion",
                from_version=current,
                to_version=target,
                reason=reason or "rollback",
            )
            aliases = self.aliases()
            aliases["champion"] = target
            self._write_aliases(aliases)
        return AliasChange("champion", current, target)

    def clear(self, alias: str, *, reason: str) -> AliasChange:
        """Point ``alias`` at nothing (a rolled-back or aborted canary clears the challenger,
        so the service does not start the same version again). Audit logged."""
        alias = _check_alias(alias)
        if not reason.strip():
            raise RegistryError("clearing an alias needs a reason")
        with self._locked():
            aliases = self.aliases()
            old = aliases[alias]
            if old is None:
                return AliasChange(alias, None, None)
            self._append("clear", alias=alias, from_version=old, to_version=None, reason=reason)
            aliases[alias] = None
            self._write_aliases(aliases)
        return AliasChange(alias, old, None)

    def protected(self) -> set[str]:
        """Versions pruning never deletes: the aliased ones and the previous champion."""
        keep = {v for v in self.aliases().values() if v is not None}
        stack = self.champion_history()
        if len(stack) >= 2:
            keep.add(stack[-2])
        return keep

    def prune(self, *, keep: int, reason: str = "", dry_run: bool = False) -> list[str]:
        """Delete all but the ``keep`` newest versions, never a protected one; returns the
        versions deleted (or that would be, with ``dry_run``)."""
        if keep < 0:
            raise RegistryError(f"--keep must be >= 0, got {keep}")
        with self._locked():
            versions = self.versions()
            newest = set(versions[len(versions) - keep :]) if keep else set()
            protected = self.protected()
            doomed = [v for v in versions if v not in newest and v not in protected]
            if dry_run:
                return doomed
            for version in doomed:
                path = self.root / version
                _set_writable(path)
                shutil.rmtree(path)
                self._append(
                    "prune",
                    alias=None,
                    from_version=version,
                    to_version=None,
                    reason=reason or f"prune --keep {keep}",
                )
            _fsync_dir(self.root)
        return doomed

    def _verified(self, version: str) -> Artifact:
        if not is_version(version):
            raise RegistryError(f"not a model version: {version!r}")
        if not (self.root / version).is_dir():
            raise RegistryError(f"{version}: no such version in {self.root}")
        return self.load(version)


def _check_alias(alias: str) -> str:
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}: use {' or '.join(ALIASES)}")
    return alias
