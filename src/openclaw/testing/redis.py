"""Throwaway ``redis-server`` processes on loopback, for tests and benchmarks.

Real servers, not mocks: a single node, or a Redis Cluster of real nodes whose slots are
assigned with ``CLUSTER ADDSLOTSRANGE`` and joined with ``CLUSTER MEET``. Every server binds
127.0.0.1 on a free port, keeps no data on disk, and is stopped by ``stop()``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from openclaw.errors import ConfigError

if TYPE_CHECKING:
    import redis

CLUSTER_SLOTS = 16384


# A cluster node also listens on its port + 10000 (the cluster bus), so its port must leave
# room for that.
CLUSTER_BUS_OFFSET = 10000
_MAX_CLUSTER_PORT = 65535 - CLUSTER_BUS_OFFSET


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, cluster: bool = False) -> int:
    """A port nothing listens on right now (and, for a cluster node, its bus port too)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not cluster:
            return port
        port = 20000 + port % (_MAX_CLUSTER_PORT - 20000)
        if _can_bind(port) and _can_bind(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free loopback port found")


def redis_binary(name: str = "redis-server") -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(
            f"{name} is not on PATH: install it (Debian: apt-get install redis-server)"
        )
    return path


@dataclass
class RedisServer:
    """One ``redis-server`` process. ``kill()`` and ``start()`` again keep the port."""

    port: int
    workdir: Path
    cluster: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 10.0) -> RedisServer:
        args = [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / f"redis-{self.port}.log"),
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{self.port}.conf",
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
        # The binary comes from PATH lookup and every argument is ours: nothing untrusted.
        self.proc = subprocess.Popen(  # noqa: S603
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready(timeout)
        return self

    @contextlib.contextmanager
    def client(self) -> Iterator[redis.Redis]:
        """A fresh redis-py client, closed on exit."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            yield client
        finally:
            client.close()

    def command(self, *args: str | int) -> str:
        """Run one command over a fresh connection and return the reply as text."""
        with self.client() as client:
            reply = client.execute_command(*args)  # type: ignore[no-untyped-call]
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = self.workdir / f"redis-{self.port}.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server on port {self.port} exited: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, connections drop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class RedisCluster:
    """A cluster of real masters on loopback, slots split evenly, no replicas."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        """Any node will do: the client discovers the rest."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis(workdir: Path | None = None) -> RedisServer:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="openclaw-redis-"))
    return RedisServer(port=free_port(), workdir=workdir).start()


def start_cluster(
    masters: int = 3, workdir: Path | None = None, *, timeout: float = 30.0
) -> RedisCluster:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="openclaw-cluster-"))
    nodes: list[RedisServer] = []
    try:
        for _ in range(masters):
            nodes.append(
                RedisServer(port=free_port(cluster=True), workdir=workdir, cluster=True).start()
            )
        per = CLUSTER_SLOTS // masters
        for i, node in enumerate(nodes):
            first = i * per
            last = CLUSTER_SLOTS - 1 if i == masters - 1 else first + per - 1
            node.command("CLUSTER", "ADDSLOTSRANGE", first, last)
        for node in nodes[1:]:
            nodes[0].command("CLUSTER", "MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [node.command("CLUSTER", "INFO") for node in nodes]
            if all(
                "cluster_state:ok" in info and f"cluster_known_nodes:{masters}" in info
                for info in infos
            ):
                return RedisCluster(nodes)
            time.sleep(0.1)
        raise TimeoutError(f"the {masters}-node cluster did not converge within {timeout}s")
    except BaseException:
        for node in nodes:
            node.stop()
        raise
