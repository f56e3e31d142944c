"""Throwaway ``clickhouse-server`` processes on loopback, for tests and benchmarks.

A real server (Debian's 18.16 package), not a mock, from a minimal config written to its own
directory: it listens on 127.0.0.1 only, on one free port for the native protocol, and opens
no HTTP or interserver port (18.16 opens those only when the config names a port). The
packaged service is not used and need not run.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final
from xml.sax.saxutils import escape

from openclaw.errors import ConfigError
from openclaw.testing.redis import free_port

_CANDIDATES: Final = ("/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")

_CONFIG: Final = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{workdir}/clickhouse-server.log</log>
    <errorlog>{workdir}/clickhouse-server.err.log</errorlog>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{port}</tcp_port>
  <path>{workdir}/data/</path>
  <tmp_path>{workdir}/tmp/</tmp_path>
  <user_files_path>{workdir}/user_files/</user_files_path>
  <format_schema_path>{workdir}/format_schemas/</format_schema_path>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
</yandex>
"""

_USERS: Final = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""


def clickhouse_binary() -> list[str]:
    """The command that runs the server: ``clickhouse-server``, or ``clickhouse server``."""
    for path in _CANDIDATES:
        if Path(path).is_file():
            return [path]
    found = shutil.which("clickhouse-server")
    if found:
        return [found]
    found = shutil.which("clickhouse")
    if found:
        return [found, "server"]
    raise ConfigError(
        "clickhouse-server is not installed: install it "
        "(Debian: apt-get install clickhouse-server), or put `clickhouse` on PATH"
    )


@dataclass
class ClickHouseServer:
    """One ``clickhouse-server`` process on 127.0.0.1:``port``, its data under ``workdir``."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _output: IO[bytes] | None = field(default=None, repr=False, init=False)

    @property
    def url(self) -> str:
        return self.url_for("default")

    def url_for(self, database: str) -> str:
        """The URL of another database on this server (the store creates it)."""
        return f"clickhouse://127.0.0.1:{self.port}/{database}"

    def start(self, *, timeout: float = 30.0) -> ClickHouseServer:
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        workdir = escape(str(self.workdir.resolve()))
        config = self.workdir / "config.xml"
        config.write_text(_CONFIG.format(workdir=workdir, port=self.port))
        (self.workdir / "users.xml").write_text(_USERS)
        self._output = (self.workdir / "clickhouse-server.out").open("wb")
        # The binary is a fixed path or a PATH lookup and every argument is ours.
        self.proc = subprocess.Popen(  # noqa: S603
            [*clickhouse_binary(), f"--config-file={config}"],
            cwd=self.workdir,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def execute(self, query: str) -> list[tuple[object, ...]]:
        """Run one query over a fresh connection (for tests that look behind the store)."""
        from clickhouse_driver import Client

        client = Client("127.0.0.1", port=self.port, connect_timeout=2, send_receive_timeout=30)
        try:
            rows: list[tuple[object, ...]] = client.execute(query)
            return rows
        finally:
            client.disconnect()

    def _wait_ready(self, timeout: float) -> None:
        from clickhouse_driver import errors

        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"clickhouse-server on port {self.port} exited "
                    f"({self.proc.returncode}): {self._log_tail()}"
                )
            try:
                if self.execute("SELECT 1") == [(1,)]:
                    return
            except (errors.Error, OSError, EOFError) as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(
            f"clickhouse-server on port {self.port} did not answer within {timeout}s "
            f"({last}): {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        parts = []
        for name in ("clickhouse-server.out", "clickhouse-server.err.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._output is not None:
            self._output.close()
            self._output = None


def start_clickhouse(workdir: Path | None = None, *, timeout: float = 30.0) -> ClickHouseServer:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="openclaw-clickhouse-"))
    return ClickHouseServer(port=free_port(), workdir=workdir).start(timeout=timeout)
