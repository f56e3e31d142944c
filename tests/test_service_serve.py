"""``openclaw serve`` as an operator runs it: embedded defaults, SIGTERM, SIGHUP, no torch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openclaw.testing.redis import free_port

BIN = Path(sys.executable).parent


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"openclaw serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("openclaw serve did not become healthy")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "openclaw"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield proc, url, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_serve_runs_on_embedded_defaults(serve: tuple[subprocess.Popen[bytes], str, int]) -> None:
    _, url, _ = serve
    r = httpx.get(f"{url}/api/v1/rate", params={"client_id": "a"})
    assert r.status_code == 200
    assert r.json()["policy"] == {"name": "static", "version": "built-in"}
    assert r.headers["RateLimit-Policy"] == '"default";q=100;w=10'
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_sigterm_lets_the_request_in_flight_finish(
    serve: tuple[subprocess.Popen[bytes], str, int],
) -> None:
    proc, url, port = serve
    body = b'{"client_id": "inflight", "cost": 3}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Headers and half the body: the request is in flight when SIGTERM arrives.
        sock.sendall(
            b"POST /api/v1/rate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None, "the server quit with a request in flight"
        # New connections are refused while the old one finishes.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/healthz", timeout=1)
        sock.sendall(body[10:])
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert b'"client_id":"inflight"' in reply
    assert b'"remaining":97.0' in reply
    # uvicorn re-raises the signal once shut down, so the exit is "terminated by SIGTERM".
    assert proc.wait(15) in (0, -signal.SIGTERM)


def test_sighup_and_file_changes_reload_the_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[tiers.default]\nlimits = [{ capacity = 10, refill_rate = 1 }]\n")
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "openclaw"), "serve", "--port", str(port), "--policy", str(policy)],
        cwd=tmp_path,  # its telemetry DuckDB file goes there, not into the checkout
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)

        def capacity() -> float:
            limits = httpx.get(f"{url}/api/v1/params/a").json()["limits"]
            return float(limits[0]["capacity"])

        assert capacity() == 10.0
        policy.write_text("[tiers.default]\nlimits = [{ capacity = 20, refill_rate = 1 }]\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while capacity() != 20.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert capacity() == 20.0
        # A change without a signal is picked up by the file watcher (it polls every 2 s).
        policy.write_text("[tiers.default]\nlimits = [{ capacity = 30, refill_rate = 1 }]\n")
        deadline = time.monotonic() + 10
        while capacity() != 30.0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert capacity() == 30.0
        # A bad file keeps the policy in force, and the server keeps serving.
        policy.write_text("[tiers.default]\nlimits = []\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert proc.poll() is None
        assert capacity() == 30.0
    finally:
        proc.terminate()
        proc.wait(15)


def test_serve_with_a_bad_policy_file_exits_with_the_reason(tmp_path: Path) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text("[tiers.default]\nlimits = [{ capacity = -1, refill_rate = 1 }]\n")
    result = subprocess.run(
        [str(BIN / "openclaw"), "serve", "--port", str(free_port()), "--policy", str(policy)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "bad.toml" in result.stderr
    assert "capacity" in result.stderr


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "OPENCLAW_HTTP_PORT": "99999", "OPENCLAW_FAILURE_MODE": "maybe"}
    result = subprocess.run(
        [str(BIN / "openclaw"), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr  # no traceback
    by_variable = {line.split(":")[1].split()[-1]: line for line in lines}
    assert "65535" in by_variable["OPENCLAW_HTTP_PORT"]
    assert "'open', 'closed' or 'local'" in by_variable["OPENCLAW_FAILURE_MODE"]


def test_serving_never_imports_torch() -> None:
    code = (
        "import sys; import openclaw.cli, openclaw.service.server, openclaw.service.app; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
