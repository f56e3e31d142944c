"""Every command in the README and docs/*.md runs, as written, in a fresh clone-like directory.

Each fenced block tagged ``bash``, ``sh``, ``shell`` or ``console`` is a command block: its
commands (for ``console``, the lines after ``$ ``, with their ``\\`` continuations; output
lines are not checked) run with ``bash -e -o pipefail`` in a temporary directory that looks
like a fresh clone: the checkout's tracked files and ``.venv`` linked in, ``../shared`` beside
it, ``.venv/bin`` first on PATH, and no ``OPENCLAW_*`` variable set. Each must exit 0.

An HTML comment right above a block (invisible on the rendered page) says how to treat it:

* ``<!-- not-run: REASON -->``: not run, because it needs a cluster, runs for minutes, runs
  until stopped, or shows a failure on purpose. The reason is required, and listed by
  ``test_not_run_block_says_why``.
* ``<!-- serve: [VAR=VALUE ...] [openclaw serve options] -->``: run while ``openclaw serve``
  with those settings answers, started by the test on a free port; ``127.0.0.1:8080`` in the
  block means that server. A line of the block that starts the server in the background
  (``openclaw serve ... &``) is the test's server: it is checked to carry the marker's
  settings, not run again. The server must then stop on SIGTERM within 30 s.
* ``<!-- file: NAME -->`` above a data block (the policy file, say): written to NAME in the
  working directory of every command block of the same document.

Every fenced block must name its language, and a block that opens with a ``$ `` command line
must be ``console``, so no command escapes the test by its tag. Python blocks must compile;
JSON, TOML and YAML blocks must parse.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from openclaw.testing.redis import free_port

ROOT = Path(__file__).resolve().parent.parent
COMMAND_LANGUAGES = frozenset({"bash", "sh", "shell", "console"})
#: Seconds a block may run: long runs are marked not-run instead.
TIMEOUT_S = 180.0
#: The address the docs give for ``openclaw serve``; serve blocks get the test's server.
DOC_ADDRESSES = ("127.0.0.1:8080", "localhost:8080")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not-run|serve|file)\s*:(?P<value>.*?)-->\s*$")
_ANY_MARKER = re.compile(r"^\s*<!--\s*(not-run|serve|file)\b")
_BACKGROUND_SERVE = re.compile(r"(^|\s)(\S*/)?openclaw serve\b.*&\s*$")


@dataclass(frozen=True, slots=True)
class Block:
    doc: str  # relative to the repository's root
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str | None = None  # "not-run", "serve" or "file"
    value: str = ""  # the marker's reason, serve settings or file name

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def is_command(self) -> bool:
        return self.language in COMMAND_LANGUAGES


@dataclass(frozen=True, slots=True)
class Problem:
    where: str
    what: str


def parse(doc: str, text: str) -> tuple[list[Block], list[Problem]]:
    """The fenced blocks of a Markdown text with their markers, and what is wrong with the
    markers (a marker not right above a block)."""
    blocks: list[Block] = []
    problems: list[Problem] = []
    lines = text.splitlines()
    pending: tuple[str, str, int] | None = None  # a marker waiting for its block
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line)
        if marker is not None:
            if pending is not None:
                problems.append(Problem(f"{doc}:{pending[2]}", "a marker with no block under it"))
            pending = (marker.group("kind"), marker.group("value").strip(), i + 1)
            i += 1
            continue
        if _ANY_MARKER.match(line):
            problems.append(Problem(f"{doc}:{i + 1}", f"malformed marker: {line.strip()}"))
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and pending is not None:
                problems.append(Problem(f"{doc}:{pending[2]}", "a marker with no block under it"))
                pending = None
            i += 1
            continue
        indent, ticks = len(fence.group("indent")), fence.group("fence")
        info = fence.group("info").strip()
        closing = re.compile(rf"^[ \t]*{re.escape(ticks[0])}{{{len(ticks)},}}\s*$")
        body: list[str] = []
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            # Strip the fence's indentation (a block inside a list item), no more.
            body.append(re.sub(rf"^[ \t]{{0,{indent}}}", "", lines[i]))
            i += 1
        i += 1  # the closing fence
        kind, value = (pending[0], pending[1]) if pending is not None else (None, "")
        language = info.split()[0].lower() if info else ""
        blocks.append(Block(doc, i - len(body) - 1, language, "\n".join(body) + "\n", kind, value))
        pending = None
    if pending is not None:
        problems.append(Problem(f"{doc}:{pending[2]}", "a marker with no block under it"))
    return blocks, problems


def commands(block: Block) -> list[str]:
    """The shell commands of a block: a console block's ``$`` lines with continuations."""
    if block.language != "console":
        return [block.text]
    out: list[str] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        i += 1
        if not stripped.startswith("$ "):
            continue
        command = [stripped[2:]]
        while command[-1].endswith("\\") and i < len(lines):
            command.append(lines[i])
            i += 1
        out.append("\n".join(command))
    return out


def problems_of(block: Block) -> list[str]:
    """What a block breaks of the conventions, whatever it holds."""
    found: list[str] = []
    if not block.language:
        found.append("the fence names no language (```sh, ```console, ```text...)")
    first = next((line.lstrip() for line in block.text.splitlines() if line.strip()), "")
    if not block.is_command and first.startswith("$ "):
        found.append(
            "it opens with a `$ ` command line: tag it ```console (and mark it "
            "<!-- not-run: why --> if it cannot run in a test)"
        )
    if block.marker == "not-run" and len(block.value) < 10:
        found.append(f"<!-- not-run --> needs a reason that says why, got {block.value!r}")
    if block.marker in ("not-run", "serve") and not block.is_command:
        found.append(f"<!-- {block.marker}: --> is for command blocks, this is {block.language!r}")
    if block.marker == "file" and (block.is_command or not re.fullmatch(r"[\w.-]+", block.value)):
        found.append("<!-- file: NAME --> names a plain file and sits above a data block")
    if block.is_command and block.marker != "not-run" and not commands(block):
        found.append("a console block without a `$ ` command line")
    return found


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def collect() -> tuple[list[Block], list[Problem]]:
    blocks: list[Block] = []
    problems: list[Problem] = []
    for path in documents():
        found, wrong = parse(str(path.relative_to(ROOT)), path.read_text())
        blocks += found
        problems += wrong
    return blocks, problems


BLOCKS, MARKER_PROBLEMS = collect()
RUN = [b for b in BLOCKS if b.is_command and b.marker != "not-run"]
NOT_RUN = [b for b in BLOCKS if b.marker == "not-run"]
PYTHON = [b for b in BLOCKS if b.language in ("python", "py")]
DATA = [b for b in BLOCKS if b.language in ("json", "toml", "yaml", "yml")]


# -- the clone-like working directory ------------------------------------------------------


def _tracked_top_level() -> set[str]:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"],
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:  # not a checkout: whatever is there
        return {p.name for p in ROOT.iterdir() if p.name != ".git"}
    return {name.split("/", 1)[0] for name in listed.stdout.decode().split("\0") if name}


def clone_like(tmp: Path, doc: str) -> Path:
    """A directory that looks like a fresh clone (tracked files, the venvs), with
    ``../shared`` beside it and the document's ``file:`` blocks written in it."""
    work = tmp / "openclaw"
    work.mkdir()
    names = _tracked_top_level() | {p.name for p in ROOT.glob(".venv*")}
    for name in sorted(names):
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (tmp / "shared").symlink_to(shared)
    for block in BLOCKS:
        if block.doc == doc and block.marker == "file":
            (work / block.value).write_text(block.text)
    return work


def environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
    env["PATH"] = f"{work / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextmanager
def serving(work: Path, env: dict[str, str], settings: str) -> Iterator[str]:
    """``openclaw serve`` with a serve marker's settings, on a free port; its address."""
    words = shlex.split(settings)
    assignments = [w for w in words if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w)]
    options = [w for w in words if w not in assignments]
    port = free_port()
    log = (work.parent / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(work / ".venv" / "bin" / "openclaw"), "serve", *options, "--port", str(port)],
        cwd=work,
        env={**env, **dict(a.split("=", 1) for a in assignments)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"openclaw serve {settings} exited: {_tail(log.name)}"
            try:
                if httpx.get(f"http://{address}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"openclaw serve never got ready: {log.name}"
            time.sleep(0.1)
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        code: int | None = None
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    # uvicorn re-raises the SIGTERM it handled once it has shut down (as test_service_serve).
    assert code in (0, -signal.SIGTERM), f"openclaw serve did not stop ({code}): {_tail(log.name)}"


def _tail(path: str, lines: int = 30) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def script_of(block: Block, address: str | None) -> str:
    """What runs: the block's commands, a serve block's addresses pointed at the test's
    server and its own background ``openclaw serve`` line left to the test."""
    out: list[str] = []
    for command in commands(block):
        lines = []
        for line in command.splitlines():
            if address is not None and _BACKGROUND_SERVE.search(line):
                missing = [w for w in shlex.split(block.value) if w not in shlex.split(line)]
                assert not missing, f"{block.id}: the serve marker has {missing} the line lacks"
                continue
            aimed = line
            for doc_address in DOC_ADDRESSES if address is not None else ():
                aimed = aimed.replace(doc_address, str(address))
            lines.append(aimed)
        out.append("\n".join(lines))
    return "\n".join(out) + "\n"


def run_script(script: str, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Output to files, not pipes: a server the block leaves in the background would hold a
    # pipe open, and reading it to the end would wait for the timeout.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=work,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # one group: whatever it leaves behind is stopped with it
        )
        note = ""
        try:
            code = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = -9
            note = f"\n(killed after {TIMEOUT_S:g} s: mark the block <!-- not-run: why -->)"
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace") + note
    return subprocess.CompletedProcess(proc.args, code, stdout, stderr)


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_command_block_runs(block: Block, tmp_path: Path) -> None:
    work = clone_like(tmp_path, block.doc)
    env = environment(work)
    with contextmanager_or_none(block, work, env) as address:
        script = script_of(block, address)
        done = run_script(script, work, env)
    assert done.returncode == 0, (
        f"{block.id} exited {done.returncode}\n--- script\n{script}--- stdout (end)\n"
        f"{done.stdout[-3000:]}\n--- stderr (end)\n{done.stderr[-3000:]}"
    )


@contextmanager
def contextmanager_or_none(block: Block, work: Path, env: dict[str, str]) -> Iterator[str | None]:
    if block.marker != "serve":
        yield None
        return
    with serving(work, env, block.value) as address:
        yield address


@pytest.mark.parametrize("block", NOT_RUN, ids=[b.id for b in NOT_RUN])
def test_not_run_block_says_why(block: Block) -> None:
    assert block.is_command, f"{block.id}: not-run marks a command block"
    assert len(block.value) >= 10, f"{block.id}: <!-- not-run: REASON --> needs a reason"


def test_every_block_follows_the_conventions() -> None:
    wrong = [f"{p.where}: {p.what}" for p in MARKER_PROBLEMS]
    wrong += [f"{b.id}: {what}" for b in BLOCKS for what in problems_of(b)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_compiles(block: Block) -> None:
    compile(block.text, block.id, "exec")


@pytest.mark.parametrize("block", DATA, ids=[b.id for b in DATA])
def test_data_block_parses(block: Block) -> None:
    if block.language == "json":
        json.loads(block.text)
    elif block.language == "toml":
        tomllib.loads(block.text)
    else:
        yaml.safe_load(block.text)


# -- the parser, on text of its own -------------------------------------------------------

SAMPLE = """\
Intro.

<!-- not-run: needs a Kubernetes cluster -->
```sh
kubectl apply -f deploy/
```

1. A list item:

   <!-- serve: OPENCLAW_ENFORCE=true --policy policy.toml -->
   ```console
   $ curl -X POST http://127.0.0.1:8080/api/v1/rate \\
       -d '{"client_id": "a"}'
   {"allowed": true}
   $ OPENCLAW_ENFORCE=true .venv/bin/openclaw serve --policy policy.toml &
   ```

<!-- file: policy.toml -->
````toml
default_tier = "free"
````

```
$ echo untagged
```
<!-- not-run: -->
Not a block.
"""


def test_the_parser_finds_blocks_markers_and_indented_fences() -> None:
    blocks, problems = parse("x.md", SAMPLE)
    assert [(b.line, b.language, b.marker) for b in blocks] == [
        (4, "sh", "not-run"),
        (11, "console", "serve"),
        (19, "toml", "file"),
        (23, "", None),
    ]
    assert blocks[0].value == "needs a Kubernetes cluster"
    assert blocks[1].value == "OPENCLAW_ENFORCE=true --policy policy.toml"
    assert blocks[2].text == 'default_tier = "free"\n'
    assert [(p.where, p.what) for p in problems] == [("x.md:26", "a marker with no block under it")]
    assert problems_of(blocks[3]) == [
        "the fence names no language (```sh, ```console, ```text...)",
        "it opens with a `$ ` command line: tag it ```console (and mark it "
        "<!-- not-run: why --> if it cannot run in a test)",
    ]


def test_console_commands_and_serve_blocks() -> None:
    blocks, _ = parse("x.md", SAMPLE)
    serve = blocks[1]
    assert commands(serve) == [
        'curl -X POST http://127.0.0.1:8080/api/v1/rate \\\n    -d \'{"client_id": "a"}\'',
        "OPENCLAW_ENFORCE=true .venv/bin/openclaw serve --policy policy.toml &",
    ]
    assert script_of(serve, "127.0.0.1:5555") == (
        'curl -X POST http://127.0.0.1:5555/api/v1/rate \\\n    -d \'{"client_id": "a"}\'\n\n'
    )
    lying = Block("x.md", 1, "console", "$ .venv/bin/openclaw serve &\n", "serve", "--grpc-port 1")
    with pytest.raises(AssertionError, match="--grpc-port"):
        script_of(lying, "127.0.0.1:5555")


def test_a_failing_command_fails_and_its_leftovers_are_stopped(tmp_path: Path) -> None:
    done = run_script("sleep 300 &\necho $! > pid\nfalse\necho never\n", tmp_path, dict(os.environ))
    assert done.returncode == 1
    assert "never" not in done.stdout
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, f"the block's background sleep ({pid}) still runs"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status
