"""Run every fenced code block of the documentation (docs/**/*.md and README.md).

Conventions (docs/contributing.md has the same text for writers):

* **Every block says what it is.** The info string names a language; a bare fence fails. Known
  languages: ``python``/``py``, ``pycon`` (a ``>>>`` session), ``bash``/``sh``/``shell``,
  ``console`` (``$ command`` lines followed by their expected output), ``toml``, ``json``,
  ``text`` (diagrams, wire formats, sample output: not run). Anything else needs a ``file`` or
  ``skip`` directive.
* **A page runs top to bottom.** Python blocks share one namespace per page, in a separate
  process (``__name__ == "__main__"``), with the page's working directory as current directory
  and first on ``sys.path``. That directory is a fresh copy of the repository, so shell
  commands written for the repository root (``python examples/echo.py``) work as shown.
* **Servers.** A block may start a server and block in ``start()`` (``Server(...).start()``,
  ``gev serve ...``): once it listens, the next block runs while it keeps serving. Servers keep
  running until the page ends; then they are stopped with ``Server.stop()`` or SIGTERM, and must
  stop cleanly. Servers listen on the page's *documented ports*: the numbers 1833-1839, 6379,
  8000, 8080, 8443 and 9001-9009 written anywhere in a page's blocks are replaced, per page, by free
  ephemeral ports, so every server and client of the page agree and nothing collides with other
  tests. Give each server of a page a port of its own (1833, then 1834, ...). A block that
  listens on any other port (an address left to its default, say) fails. Unix sockets alike:
  the *documented socket paths* ``/tmp/gev-NAME.sock`` are replaced, per page, by a path in a
  directory of the page's own, so parallel test runs never share a socket file.
* **Builds** of gev packages in shell blocks are pure (``GEV_BUILD_PURE=1``): the compiled build
  is tested by ``hatch run compiled:test``.
* **Errors.** A Python block fails on an exception, and on a record at ERROR or above logged
  while it ran (a handler that raised is logged, not raised). A shell block fails on a non-zero
  exit status (``bash -eu -o pipefail``).
* **Directives** go on the line before a fence: ``<!-- snippet: MODE [ARGS] -->``.

  - ``file PATH`` -- write the block to PATH in the page's directory instead of running it
    (Python is compiled, TOML parsed, JSON loaded first). Later blocks use it.
  - ``serve`` (shell) -- run in the background; it must listen on every documented port and
    every ``unix:PATH`` socket it names (or, naming none, on some documented port), and keep
    running until the page ends.
  - ``venv`` (shell, combinable with ``serve``) -- run with a fresh virtual environment of the
    page first on ``PATH`` (``python`` and ``pip`` are its own; no gev package installed). Shell
    blocks that install packages must use it: the test environment is never modified.
  - ``ci`` (shell) -- too slow or too recursive to run here (``hatch test``): every command must
    be one that ``.ci/run`` executes (same words, in order; ``$PY`` stands for ``python``).
  - ``dry-run`` (shell) -- a long-running tool (a benchmark): each command is run with
    ``--dry-run`` appended, which must check every argument and exit 0 without doing the work.
  - ``output`` (``text``) -- expected output of the previous block that ran: each non-blank line
    must appear in it, in order (``...`` matches anything).
  - ``signature`` (Python) -- a ``def`` line without a body (the hook reference): compiled only.
  - ``requires=CMD[,CMD]`` -- the block needs these programs (haproxy, openssl, ...): without
    them the rest of the section (up to the next heading) is skipped, except under ``CI=true``,
    where it fails (``tools/install-system-deps.sh`` installs them).
  - ``timeout=SECONDS`` -- instead of 120 s (600 s with ``venv``).
  - ``skip REASON`` -- not run; reported as a skipped test with the reason. For code that cannot
    run here at all (another language's toolchain); never for code that merely fails.

* **Hidden blocks** set up or check what a visible block needs without cluttering the page:
  an HTML comment ``<!-- snippet-code: LANG [directives]``, the code on the following lines, and
  ``-->`` on a line of its own. It runs exactly like a visible block. Use it for a client that
  proves a server answers, or to generate a module the text only mentions (``user_pb2``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli along
    import tomli as tomllib  # type: ignore[no-redef]
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KERNEL = Path(__file__).resolve().with_name("snippet_kernel.py")

DOC_PORTS = [*range(1833, 1840), 6379, 8000, 8080, 8443, *range(9001, 9010)]
_PORT_RE = re.compile(r"(?<![\d.])(" + "|".join(map(str, DOC_PORTS)) + r")(?!\d)")
# Documented Unix socket paths: replaced per page by a path in a private directory.
_SOCK_RE = re.compile(r"/tmp/(gev-[\w.-]+\.sock)\b")

PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell"}
KNOWN = PYTHON | SHELL | {"pycon", "console", "toml", "json", "text"}
MODES = {"run", "file", "serve", "venv", "ci", "dry-run", "output", "signature", "skip"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*snippet:\s*(?P<args>.*?)\s*-->\s*$")
_HIDDEN = re.compile(r"^\s*<!--\s*snippet-code:\s*(?P<args>.*?)\s*$")
_HEADING = re.compile(r"^#{1,6}\s")
_INSTALL = re.compile(r"\b(pip|uv)\b[^\n]*\binstall\b")


def doc_files() -> list[Path]:
    """The Markdown files whose code blocks are tested."""
    return [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    section: int
    hidden: bool = False
    mode: str = "run"
    arg: str = ""
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


class SnippetError(AssertionError):
    pass


def _directive(text: str, where: str) -> tuple[str, str, dict[str, str]]:
    words = shlex.split(text)
    mode, arg, flags = "run", "", {}
    rest = []
    for w in words:
        if "=" in w and w.split("=", 1)[0] in ("requires", "timeout"):
            k, v = w.split("=", 1)
            flags[k] = v
        elif w in ("serve", "venv") and mode != "skip":
            flags[w] = "1"
        else:
            rest.append(w)
    if rest:
        mode, rest = rest[0], rest[1:]
        if mode not in MODES:
            raise SnippetError(f"{where}: unknown snippet directive {mode!r}")
        arg = " ".join(rest)
    if "serve" in flags and mode == "run":
        mode = "serve"
    if mode in ("file", "skip") and not arg:
        raise SnippetError(f"{where}: '{mode}' needs an argument")
    return mode, arg, flags


def parse(path: Path) -> list[Block]:
    """Every fenced block of ``path`` (and every hidden ``snippet-code`` block), in order."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    section = 0
    pending: tuple[str, str, dict[str, str]] | None = None
    i = 0
    rel = path.relative_to(ROOT)
    while i < len(lines):
        line = lines[i]
        where = f"{rel}:{i + 1}"
        if _HEADING.match(line):
            section += 1
        m = _DIRECTIVE.match(line)
        if m:
            pending = _directive(m["args"], where)
            i += 1
            continue
        m = _HIDDEN.match(line)
        if m:
            words = m["args"].split(None, 1)
            if not words:
                raise SnippetError(f"{where}: snippet-code needs a language")
            mode, arg, flags = _directive(words[1] if len(words) > 1 else "", where)
            end = i + 1
            while end < len(lines) and lines[end].strip() != "-->":
                end += 1
            if end == len(lines):
                raise SnippetError(f"{where}: snippet-code block without a closing '-->' line")
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(path, i + 1, words[0], code, section, True, mode, arg, flags))
            i = end + 1
            continue
        m = _FENCE.match(line)
        if m and not m["info"].strip().startswith("`"):
            indent, fence = m["indent"], m["fence"]
            info = m["info"].strip()
            lang = info.split()[0].strip("{}.").lower() if info else ""
            body = []
            j = i + 1
            close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
            while j < len(lines) and not close.match(lines[j]):
                text = lines[j]
                body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
                j += 1
            if j == len(lines):
                raise SnippetError(f"{where}: unclosed code fence")
            mode, arg, flags = pending or ("run", "", {})
            code = "\n".join(body) + "\n"
            blocks.append(Block(path, i + 1, lang, code, section, False, mode, arg, flags))
            pending = None
            i = j + 1
            continue
        if line.strip() and pending is not None:
            raise SnippetError(f"{where}: a snippet directive must come right before a fence")
        i += 1
    return blocks


def check_static(block: Block) -> None:
    """What can be told without running anything: known language, valid directive."""
    if block.mode == "skip":
        return
    if not block.lang:
        raise SnippetError(f"{block.where}: code block without a language (use ```text for prose)")
    if block.lang not in KNOWN and block.mode != "file":
        raise SnippetError(
            f"{block.where}: language {block.lang!r} is not run by the docs tests; use one of"
            f" {sorted(KNOWN)}, or a 'file' or 'skip' directive"
        )
    allowed = {
        "run": True,
        "file": True,
        "serve": block.lang in SHELL,
        "ci": block.lang in SHELL,
        "dry-run": block.lang in SHELL,
        "output": block.lang == "text",
        "signature": block.lang in PYTHON,
    }
    if not allowed.get(block.mode, False):
        raise SnippetError(
            f"{block.where}: directive {block.mode!r} does not apply to {block.lang}"
        )
    if "venv" in block.flags and block.lang not in SHELL | {"console"}:
        raise SnippetError(f"{block.where}: 'venv' applies to shell blocks only")


# ---------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def unix_open(address: str) -> bool:
    """Whether something accepts on a Unix socket: a path, or ``@name`` (Linux abstract)."""
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(0.5)
            s.connect(target)
        return True
    except OSError:
        return False


_UNIX_RE = re.compile(r"\bunix:([^\s'\"]+)")


def copy_repository(dest: Path) -> None:
    """The repository's files (tracked and untracked, not ignored) copied to ``dest``."""
    files: list[str] | None = None
    if (ROOT / ".git").exists() and shutil.which("git"):
        proc = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
        )
        if proc.returncode == 0:
            files = [f for f in proc.stdout.decode().split("\0") if f]
    if files is None:
        junk = shutil.ignore_patterns(".git", "site", "dist", "build", "__pycache__", ".build")
        shutil.copytree(ROOT, dest, ignore=junk, dirs_exist_ok=True)
        return
    for name in files:
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def ci_commands() -> list[list[str]]:
    """Every command line of .ci/run, as words, with ``$PY`` spelled ``python``."""
    text = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r'"?\$\{?PY\}?"?', "python", line)
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            if words:
                out.append(words)
    return out


def _is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(w == h for h in it) for w in needle)


def shell_commands(code: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blanks dropped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def expect_lines(expected: str, actual: str, where: str) -> None:
    pos = 0
    norm = " ".join
    haystack = actual.splitlines()
    for want in (ln.strip() for ln in expected.splitlines()):
        if not want:
            continue
        if want == "...":
            continue
        pattern = re.compile(
            r"\s*".join(re.escape(part).replace(r"\.\.\.", ".*") for part in want.split())
        )
        while pos < len(haystack) and not pattern.search(norm(haystack[pos].split())):
            pos += 1
        if pos == len(haystack):
            raise SnippetError(f"{where}: expected output line not found: {want!r}\n{actual}")
        pos += 1


# ------------------------------------------------------------------------------ running a page


class Kernel:
    """The page's Python process (tests/snippet_kernel.py), driven over a pipe."""

    def __init__(self, cwd: Path, log: Path) -> None:
        self.log = log.open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(KERNEL)],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )

    def call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout + 30
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=1.0):
                    line = self.proc.stdout.readline()
                    if not line:
                        break
                    if line.startswith("@@snippet "):
                        return json.loads(line[len("@@snippet ") :])  # type: ignore[no-any-return]
                elif self.proc.poll() is not None:
                    break
        self.close()
        raise SnippetError(f"the Python process of the page died or hung; see {self.log.name}")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class PageRun:
    def __init__(self, path: Path, tmp: Path) -> None:
        self.path = path
        self.tmp = tmp
        self.work = tmp / "work"
        self.work.mkdir()
        copy_repository(self.work)
        self.ports = {p: free_port() for p in DOC_PORTS}
        # Short on purpose (a Unix socket path has ~100 bytes at most): not under tmp_path.
        self.sockdir = Path(tempfile.mkdtemp(prefix="gev-docs-"))
        self.kernel: Kernel | None = None
        self.venv: Path | None = None
        self.background: list[tuple[Block, subprocess.Popen[bytes], Path]] = []
        self.last_output = ""
        self.skipped: list[str] = []
        self.ci = os.environ.get("CI", "").lower() == "true"

    # ---------------------------------------------------------------------------- plumbing

    def substitute(self, code: str) -> str:
        code = _SOCK_RE.sub(lambda m: str(self.sockdir / m.group(1)), code)
        return _PORT_RE.sub(lambda m: str(self.ports[int(m.group(1))]), code)

    def named_ports(self, code: str) -> list[int]:
        return sorted({self.ports[int(m)] for m in _PORT_RE.findall(code)})

    def env(self, block: Block) -> dict[str, str]:
        path = [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        # Packages built by the pages come out pure: compiling them with mypyc on every page
        # would cost minutes, and the compiled build has a CI step of its own.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GEV_BUILD_PURE": "1"}
        env.pop("VIRTUAL_ENV", None)
        if "venv" in block.flags:
            path.insert(0, str(self.make_venv() / "bin"))
            env["VIRTUAL_ENV"] = str(self.make_venv())
        env["PATH"] = os.pathsep.join(path)
        return env

    def make_venv(self) -> Path:
        if self.venv is None:
            venv = self.tmp / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            self.venv = venv
        return self.venv

    def kernel_call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.kernel is None:
            self.kernel = Kernel(self.work, self.tmp / "kernel.log")
            self.kernel_call({"op": "ports", "ports": sorted(self.ports.values())}, 30)
        return self.kernel.call(request, timeout)

    # ---------------------------------------------------------------------------- sections

    def stop_servers(self) -> None:
        problems = []
        if self.kernel is not None:
            reply = self.kernel_call({"op": "stop"}, 60)
            if reply["status"] != "ok":
                problems.append(reply.get("error", "stopping the servers failed"))
        for block, proc, log in self.background:
            if proc.poll() is not None:
                problems.append(
                    f"{block.where}: the server exited early with {proc.returncode}:\n"
                    + log.read_text()[-3000:]
                )
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                problems.append(f"{block.where}: did not stop within 30 s of SIGTERM")
                continue
            if code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
                problems.append(
                    f"{block.where}: exited with {code} after SIGTERM:\n" + log.read_text()[-3000:]
                )
        self.background.clear()
        if problems:
            raise SnippetError("\n".join(problems))

    def close(self) -> None:
        for _, proc, _ in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.kernel is not None:
            self.kernel.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    # ---------------------------------------------------------------------------- blocks

    def missing(self, block: Block) -> list[str]:
        needs = [c for c in block.flags.get("requires", "").split(",") if c]
        return [c for c in needs if shutil.which(c) is None]

    def run(self, block: Block) -> None:
        check_static(block)
        if block.mode == "skip":
            return
        code = self.substitute(block.code)
        timeout = float(block.flags.get("timeout", 600 if "venv" in block.flags else 120))
        if block.mode == "file":
            self.write_file(block, code)
        elif block.mode == "signature":
            compile(code.rstrip() + ":\n    ...\n", block.where, "exec")
        elif block.mode == "ci":
            self.check_ci(block)
        elif block.mode == "dry-run":
            dry = "\n".join(f"{c} --dry-run" for c in shell_commands(code))
            self.run_shell(block, dry, timeout)
        elif block.mode == "output":
            expect_lines(block.code, self.last_output, block.where)
        elif block.lang in PYTHON or block.lang == "pycon":
            self.run_python(block, code, timeout)
        elif block.lang in SHELL:
            self.run_shell(block, code, timeout)
        elif block.lang == "console":
            self.run_console(block, code, timeout)
        elif block.lang == "toml":
            tomllib.loads(code)
        elif block.lang == "json":
            json.loads(code)
        # text: documentation, not code

    def write_file(self, block: Block, code: str) -> None:
        rel = Path(block.arg)
        if rel.is_absolute() or ".." in rel.parts:
            raise SnippetError(f"{block.where}: file path must be relative: {block.arg}")
        if rel.suffix == ".py":
            compile(code, block.where, "exec")
        elif rel.suffix == ".toml":
            tomllib.loads(code)
        elif rel.suffix == ".json":
            json.loads(code)
        target = self.work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)

    def check_ci(self, block: Block) -> None:
        ci = ci_commands()
        for command in shell_commands(block.code):
            for part in re.split(r"&&|\|\||;", command):
                words = shlex.split(part, comments=True)
                if words and not any(_is_subsequence(words, c) for c in ci):
                    raise SnippetError(f"{block.where}: .ci/run does not run {part.strip()!r}")

    def run_python(self, block: Block, code: str, timeout: float) -> None:
        doctest = block.lang == "pycon" or code.lstrip().startswith(">>>")
        reply = self.kernel_call(
            {
                "op": "exec",
                "code": code,
                "where": block.where,
                "doctest": doctest,
                "timeout": timeout,
            },
            timeout,
        )
        self.last_output = reply.get("stdout", "")
        if reply["status"] == "error":
            raise SnippetError(f"{block.where}: {reply['error']}")

    def run_shell(self, block: Block, code: str, timeout: float) -> None:
        if "venv" not in block.flags and _INSTALL.search(code):
            raise SnippetError(
                f"{block.where}: installs packages: mark it 'venv' (the test environment is"
                " never modified)"
            )
        cmd = ["bash", "-eu", "-o", "pipefail", "-c", code]
        if block.mode == "serve":
            log = self.tmp / f"serve-{block.line}.log"
            proc = subprocess.Popen(
                cmd,
                cwd=self.work,
                env=self.env(block),
                stdin=subprocess.DEVNULL,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.background.append((block, proc, log))
            # The ports the block names, or else any documented port it opens (one given in a
            # file that an earlier block wrote).
            ports = self.named_ports(block.code)
            sockets = _UNIX_RE.findall(code)
            closed = [p for p in self.ports.values() if not port_open(p)]

            def listening() -> bool:
                if ports or sockets:
                    return all(map(port_open, ports)) and all(map(unix_open, sockets))
                return any(map(port_open, closed))

            deadline = time.monotonic() + timeout
            while not listening():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SnippetError(
                        f"{block.where}: not listening on {ports + sockets or 'a documented port'}"
                        f" (exit status {proc.poll()}):\n" + log.read_text()[-3000:]
                    )
                time.sleep(0.1)
            return
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.work,
                env=self.env(block),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise SnippetError(f"{block.where}: still running after {timeout:.0f} s") from exc
        self.last_output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise SnippetError(
                f"{block.where}: exit status {proc.returncode}\n{self.last_output[-4000:]}"
            )

    def run_console(self, block: Block, code: str, timeout: float) -> None:
        commands: list[tuple[str, list[str]]] = []
        for line in code.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
            elif line.strip():
                raise SnippetError(f"{block.where}: console blocks start with '$ command'")
        for command, expected in commands:
            sub = Block(block.path, block.line, "bash", command, block.section, flags=block.flags)
            self.run_shell(sub, command, timeout)
            expect_lines("\n".join(expected), self.last_output, block.where)


def skipped_blocks() -> list[Block]:
    """Every block marked ``skip``, to be reported as a skipped test with its reason."""
    return [b for path in doc_files() for b in parse(path) if b.mode == "skip"]


def run_page(path: Path, tmp: Path) -> list[str]:
    """Run every block of one page; returns why sections were skipped (a missing program)."""
    page = PageRun(path, tmp)
    skipped: list[str] = []
    try:
        skip_section: int | None = None
        for block in parse(path):
            if skip_section == block.section:
                continue
            missing = page.missing(block)
            if missing:
                msg = f"{block.where}: needs {', '.join(missing)} (tools/install-system-deps.sh)"
                if page.ci:
                    raise SnippetError(msg)
                skipped.append(msg)
                skip_section = block.section
                continue
            if block.mode == "skip":
                continue  # reported by a test of its own (skipped_blocks)
            page.run(block)
        page.stop_servers()
    finally:
        page.close()
    return skipped


def run_in_tempdir(path: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="gev-docs-") as tmp:
        return run_page(path, Path(tmp))
