"""Latency of Envoy's ``ShouldRateLimit`` at a fixed request rate, against a bare servicer.

Open-loop load: requests are sent on a schedule (``rate`` per second), whatever the answers
do, as Envoy sends them, so a slow server shows up as latency instead of hiding behind a
slower send rate. The server runs in a process of its own; the peer measured in the same run
is the same gRPC server with a servicer that answers OK without deciding anything, so the
ratio isolates what a decision costs. Every request is recorded, none dropped.

Two load generators. ``h2load`` (nghttp2's HTTP/2 load tool, C; the gRPC sibling of wrk)
sends the framed request bodies itself and logs every request's latency; on two shared
cores it leaves the server a core, as Envoy in front of a real deployment would. ``python``
(gRPC's C core driven from Python) needs nothing installed but competes with the server for
the cores: at 2,000/s it costs about as much as the server does, and its own scheduling delay
shows up as latency.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

PEER: Final = "bare servicer (answers OK, decides nothing)"


@dataclass(frozen=True, slots=True)
class LatencyResult:
    contender: str
    sent: int
    seconds: float
    errors: int
    over_limit: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def _serve(kind: str, store_url: str, conn: Connection) -> None:
    """Child process: serve until told to stop; report the port first."""
    import grpc
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    from openclaw.limiter import create_store
    from openclaw.policy.static import PolicyHolder
    from openclaw.service.grpc import start_grpc_server
    from openclaw.service.server import tune_gc
    from openclaw.settings import Settings

    class Bare(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
        async def ShouldRateLimit(self, request: Any, context: Any) -> Any:  # noqa: N802
            return rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)

    async def main() -> None:
        # As `openclaw serve` runs, for both contenders: start-up objects frozen out of
        # collections, young ones collected less often.
        tune_gc()
        if kind == "bare":
            server = grpc.aio.server()
            rls_pb2_grpc.add_RateLimitServiceServicer_to_server(Bare(), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
        else:
            store = create_store(Settings(store_url=store_url))
            holder = PolicyHolder.from_file(None)
            server, port = await start_grpc_server(
                store, lambda: holder.current, host="127.0.0.1", port=0
            )
        conn.send(port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop(grace=1)

    asyncio.run(main())


def _check_answers(port: int) -> None:
    """One call through a real gRPC client, which reads the status trailers h2load ignores."""
    import grpc
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    request = rls_pb2.RateLimitRequest(domain="bench")
    request.descriptors.add().entries.add(key="client_id", value="check")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=5)
    if answer.overall_code != rls_pb2.RateLimitResponse.OK:
        raise RuntimeError(f"the server answered {answer.overall_code} to a first request")


def _load(port: int, *, rate: float, seconds: float, clients: int) -> tuple[list[float], int, int]:
    """Send on schedule with the blocking stub's futures: gRPC's C core does the I/O, so
    Python spends tens of microseconds per request and the generator is not the bottleneck."""
    import threading

    import grpc
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    latencies: list[float] = []
    counts = {"errors": 0, "over": 0}
    lock = threading.Lock()
    requests = []
    for i in range(clients):
        req = rls_pb2.RateLimitRequest(domain="bench")
        req.descriptors.add().entries.add(key="client_id", value=f"client-{i}")
        requests.append(req)
    total = int(rate * seconds)
    done = threading.Semaphore(0)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit
        call(requests[0], timeout=5)  # connect before the clock starts

        def finished(future: Any, sent: float) -> None:
            took = time.perf_counter() - sent
            with lock:
                if future.exception() is not None:
                    counts["errors"] += 1
                else:
                    latencies.append(took)
                    counts["over"] += (
                        future.result().overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
                    )
            done.release()

        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            future = call.future(requests[i % clients], timeout=5)
            future.add_done_callback(lambda f, sent=sent: finished(f, sent))
        for _ in range(total):
            done.acquire(timeout=30)
    return latencies, counts["errors"], counts["over"]


def framed_request(client: str) -> bytes:
    """One ShouldRateLimit request as gRPC puts it on the wire: a 5-byte prefix (not
    compressed, big-endian length) and the serialized RateLimitRequest."""
    from envoy.service.ratelimit.v3 import rls_pb2

    request = rls_pb2.RateLimitRequest(domain="bench")
    request.descriptors.add().entries.add(key="client_id", value=client)
    payload: bytes = request.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


#: h2load sends one body per process, so each process is one client key.
H2LOAD_KEYS: Final = 8


def _load_h2load(port: int, *, rate: float, seconds: float) -> tuple[list[float], int, int]:
    """Send with ``H2LOAD_KEYS`` h2load processes, one connection and one key each, at
    ``rate / H2LOAD_KEYS`` requests per second each, up to 100 in flight per connection (so a
    slow answer delays no later send). Latencies come from h2load's per-request log."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    h2load = shutil.which("h2load")
    if h2load is None:
        raise RuntimeError(
            "h2load not found: apt-get install nghttp2-client, or --generator python"
        )
    per = rate / H2LOAD_KEYS
    count = max(1, int(per * seconds))
    url = f"http://127.0.0.1:{port}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    latencies: list[float] = []
    errors = 0
    with tempfile.TemporaryDirectory(prefix="openclaw-h2load-") as tmp:
        work = Path(tmp)
        procs = []
        for k in range(H2LOAD_KEYS):
            body = work / f"request-{k}.bin"
            body.write_bytes(framed_request(f"client-{k}"))
            log = work / f"log-{k}.tsv"
            cmd = [
                h2load, "-n", str(count), "-c", "1", "-m", "100", "--rps", f"{per:g}",
                "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
                "--log-file", str(log), url,
            ]  # fmt: skip
            # The command is ours: h2load's path, numbers and files of our temporary directory.
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)  # noqa: S603
            procs.append((proc, log))
        for proc, log in procs:
            out, _ = proc.communicate(timeout=seconds * 3 + 30)
            if proc.returncode != 0:
                raise RuntimeError(f"h2load failed ({proc.returncode}): {out[-500:]}")
            for row in log.read_text().splitlines():
                _, status, micros = row.split("\t")[:3]
                if status == "200":
                    latencies.append(int(micros) / 1e6)
                else:
                    errors += 1
            errors += max(0, count - sum(1 for _ in log.read_text().splitlines()))
    # h2load checks HTTP status only; gRPC's own status is in trailers it does not read. The
    # caller checks the server answered OK once with a real client before the load.
    return latencies, errors, -1


def measure(
    contender: str,
    kind: str,
    store_url: str,
    *,
    rate: float,
    seconds: float,
    clients: int,
    generator: str = "h2load",
) -> LatencyResult:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(kind, store_url, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the gRPC server did not start within 60 s")
        port = parent.recv()
        _check_answers(port)
        started = time.perf_counter()
        if generator == "h2load":
            latencies, errors, over = _load_h2load(port, rate=rate, seconds=seconds)
        else:
            latencies, errors, over = _load(port, rate=rate, seconds=seconds, clients=clients)
        elapsed = time.perf_counter() - started
    finally:
        parent.send("stop")
        proc.join(timeout=20)
        if proc.is_alive():
            proc.kill()
    ms = sorted(x * 1000 for x in latencies) or [float("nan")]
    return LatencyResult(
        contender=contender,
        sent=len(latencies) + errors,
        seconds=elapsed,
        errors=errors,
        over_limit=over,
        p50_ms=statistics.median(ms),
        p99_ms=ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        max_ms=ms[-1],
    )


TARGET_P99_MS: Final = 5.0


def run(
    *,
    rate: float,
    seconds: float,
    rounds: int,
    redis: str,
    command: str,
    generator: str = "h2load",
    console: Any = None,
) -> dict[str, list[LatencyResult]]:
    """Every round measures every contender in turn; the report is the median over rounds."""
    from contextlib import ExitStack

    from rich.console import Console
    from rich.table import Table

    from openclaw.bench.limiter import machine, redis_target

    console = console or Console()
    results: dict[str, list[LatencyResult]] = {}
    with ExitStack() as stack:
        target = redis_target(redis, stack)
        contenders = [(PEER, "bare", ""), ("openclaw, memory store", "openclaw", "memory://")]
        if target is not None:
            contenders.append(("openclaw, Redis store", "openclaw", target.url))
        for _ in range(rounds):
            for name, kind, url in contenders:
                result = measure(
                    name, kind, url, rate=rate, seconds=seconds, clients=1000, generator=generator
                )
                results.setdefault(name, []).append(result)

    console.print(f"\n$ {command}")
    console.print(f"machine: {machine().describe()}")
    who = (
        f"h2load, {H2LOAD_KEYS} processes of one connection and one client key each"
        if generator == "h2load"
        else "Python (gRPC futures), 1000 client keys"
    )
    console.print(
        f"load: open loop, {rate:,.0f} ShouldRateLimit/s for {seconds} s from {who}; "
        f"{rounds} rounds; server and load generator in separate processes"
    )
    table = Table(title="gRPC ShouldRateLimit latency (median over rounds)")
    for column in ("contender", "sent/s", "errors", "p50 ms", "p99 ms", "max ms", "p99 x peer"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    peer_p99 = statistics.median(r.p99_ms for r in results[PEER])
    for name, runs in results.items():
        p99 = statistics.median(r.p99_ms for r in runs)
        verdict = ""
        if name != PEER:
            verdict = " PASS" if p99 < TARGET_P99_MS else " FAIL"
        table.add_row(
            name,
            f"{statistics.median(r.achieved_rate for r in runs):,.0f}",
            str(sum(r.errors for r in runs)),
            f"{statistics.median(r.p50_ms for r in runs):.2f}",
            f"{p99:.2f}{verdict}",
            f"{statistics.median(r.max_ms for r in runs):.1f}",
            f"{p99 / peer_p99:.2f}x",
        )
    console.print(table)
    console.print(
        f"  target: p99 < {TARGET_P99_MS} ms at {rate:,.0f}/s (a quarter of Envoy's 20 ms)"
    )
    return results
