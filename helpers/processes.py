"""Run a course script in a fresh Python process, with a progress bar that follows its log.

Used where a result belongs to a whole process: the peak memory of a training (notebook 06, ``scripts/sft.py``), and
the pipeline's trainings of an adapter a later notebook needs (``scripts/sft.py``, ``dpo.py``, ``grpo.py``). Where
forking is safe the process comes from :mod:`helpers.forkserver`.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .paths import helper_env


@contextmanager
def follow_log(path: Path, pattern: re.Pattern, total: int, desc: str, unit: str, zero_based: bool = False) -> Iterator[None]:
    """Show one progress bar while a child process writes ``path``: the bar follows the last number that
    ``pattern``'s first group finds in the log (the child's step or layer counter; ``zero_based`` when the
    first item is numbered 0)."""
    from tqdm.auto import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    done = threading.Event()
    bar = tqdm(total=total, desc=desc, unit=unit)

    def follow() -> None:
        while not done.wait(1.0):
            found = pattern.findall(path.read_text(errors="ignore")) if path.exists() else []
            if found:
                bar.n = min(total, int(found[-1]) + zero_based)
                bar.refresh()

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        bar.n = total
        bar.close()


def run_python(args: list[str], log: Path, timeout_s: int | None = None) -> int:
    """Run ``python <args>`` from the current folder with the repository importable (output appended to
    ``log``); return its exit code (-1 after ``timeout_s``). Where forking is safe the process is forked from
    :mod:`helpers.forkserver`, which has imported the libraries once; elsewhere it is a new interpreter."""
    for _ in range(2):
        server = _forkserver()
        if server is None:
            break
        try:
            return server.run(args, log, timeout_s)
        except _ServerGone:   # it exited (idle) as the run was sent: once more, with a new server
            continue
    with open(log, "a") as out:
        try:
            return subprocess.run([sys.executable, *args], cwd=os.getcwd(), env=helper_env(),
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n[stopped after {timeout_s} s]\n")
            return -1


class _ServerGone(RuntimeError):
    """The fork server had exited before it took the run."""


class _ForkServer:
    """The client side of :mod:`helpers.forkserver`: one server per environment, folder and helpers code, started on
    first use. Any reply it does not expect (a run interrupted twice, a server that stopped answering) ends this
    server: the next run starts another, so client and server never read each other's lines out of step."""

    READY_TIMEOUT_S = 600

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.process = subprocess.Popen([sys.executable, "-m", "helpers.forkserver"], env=key[0],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._pending = bytearray()
        hello = self._line(self.READY_TIMEOUT_S)
        answer = json.loads(hello) if hello else {"ready": False, "why": "no answer from the server"}
        self.ready, self.why = bool(answer.get("ready")), answer.get("why", "")
        if not self.ready:
            self.close()

    def _line(self, timeout_s: float | None) -> str | None:
        """The server's next line (:func:`helpers.forkserver.read_line`); ``None`` when ``timeout_s`` passes first,
        ``""`` when the server has gone."""
        from .forkserver import read_line

        line = read_line(self.process.stdout.fileno(), self._pending, timeout_s)
        return None if line is None else line.decode()

    def alive(self) -> bool:
        return self.ready and self.process.poll() is None

    def run(self, args: list[str], log: Path, timeout_s: int | None) -> int:
        request = {"args": args, "log": str(Path(log).resolve()), "cwd": os.getcwd()}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except OSError:
            raise _ServerGone()
        started = self._line(None)
        if not started:
            raise _ServerGone()
        pid = json.loads(started)["pid"]
        stopped = False
        try:
            while (line := self._line(None if stopped else timeout_s)) is None:
                _kill(pid)   # past timeout_s: the server reports the killed process's code next
                stopped = True
        except BaseException:   # interrupted (Kernel → Interrupt): stop the run, as subprocess.run stops its child
            _kill(pid)
            reply = self._line(30)   # the killed run's exit code, so that the next run reads its own replies
            if not reply or json.loads(reply).get("pid") != pid:
                self.close()         # out of step: this server is done, the next run starts a new one
            raise
        if not line:
            raise RuntimeError(f"The fork server stopped while running {args[0]}; see {log}.")
        reply = json.loads(line)
        if reply.get("pid") != pid:
            self.close()
            raise RuntimeError(f"The fork server answered for another run than {args[0]}; run it again.")
        if stopped:
            with open(log, "a") as out:
                out.write(f"\n[stopped after {timeout_s} s]\n")
            return -1
        return reply["code"]

    def close(self) -> None:
        """Stop the server (it exits when its input closes; killed if it does not within 30 s)."""
        self.ready = False
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:   # it had already ended
        pass


_SERVER: _ForkServer | None = None
_NOT_FORKABLE: str | None = None   # why a server of this kernel could not serve (then no other is tried)


def _server_key() -> tuple:
    """What a forked run inherits from the server and a new interpreter would take afresh: the environment, the
    folder (``sys.path`` starts there), and the helpers package's code (an edited module needs a new server)."""
    from .paths import REPO_ROOT

    code = tuple(sorted((f.name, f.stat().st_mtime_ns) for f in (REPO_ROOT / "helpers").glob("*.py")))
    return helper_env(), os.getcwd(), code


def _forkserver() -> _ForkServer | None:
    """This kernel's fork server, or ``None`` where a fork is not safe: not Linux, a CUDA GPU visible,
    ``COURSE_FORKSERVER=0``, or a server that could not serve on this machine (it said why)."""
    global _SERVER
    if sys.platform != "linux" or os.environ.get("COURSE_FORKSERVER", "1") == "0" or _NOT_FORKABLE:
        return None
    import torch

    if torch.cuda.is_available():
        return None
    key = _server_key()
    if _SERVER is not None and (_SERVER.key != key or not _SERVER.alive()):
        _SERVER.close()
        _SERVER = None
    if _SERVER is None:
        _SERVER = _ForkServer(key)
        if not _SERVER.ready:
            _not_forkable(_SERVER.why)
            _SERVER = None
    return _SERVER


def _not_forkable(why: str) -> None:
    global _NOT_FORKABLE
    _NOT_FORKABLE = why or "unknown"
    print(f"Trainings in a fresh process start a new Python interpreter each ({_NOT_FORKABLE}).", file=sys.stderr)


@atexit.register
def _close_server() -> None:
    if _SERVER is not None:
        _SERVER.close()




def log_tail(log: Path, lines: int) -> str:
    """The last ``lines`` lines of a child process's log, for the error message when it failed."""
    return "\n".join(log.read_text(errors="ignore").strip().splitlines()[-lines:])


def show_source(script: str, *names: str) -> None:
    """Print the functions ``names`` of ``script`` (a path from the repository root, e.g. ``scripts/sft.py``): the
    code a fresh-process run executes, shown in the notebook that starts it."""
    import ast

    from .paths import REPO_ROOT

    source = (REPO_ROOT / script).read_text()
    found = {node.name: ast.get_source_segment(source, node) for node in ast.parse(source).body
             if isinstance(node, ast.FunctionDef)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{script} has no function {missing}; it has {sorted(found)}.")
    print(f"# {script}\n\n" + "\n\n\n".join(found[n] for n in names))
