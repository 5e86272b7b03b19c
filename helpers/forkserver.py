"""A fresh process per training without importing torch, transformers, TRL and PEFT again each time.

Notebook 06 trains each arm in its own process (peak memory belongs to a whole process), and the pipeline trains
notebook 01's, 02's and 08's adapters the same way. Every such process used to start a new Python interpreter and
import the libraries again: about 7 s on a 2-core machine, more than a whole training on the ``tiny`` profile.

This module is the *fork server* (as Python's ``multiprocessing`` forkserver, or Android's zygote): one process
imports the libraries once and then waits; for each run it forks, and the fork, a new process with the imports
already done, runs the script (``runpy``, with the script's ``sys.argv``) and writes its output to the run's log.
Each run still has a process of its own: its memory, its peak RSS (pages it shares with the server are resident
in it and counted, as a fresh interpreter's imports are), its exit code.

Used only where forking is safe: on Linux, with no CUDA GPU visible (CUDA cannot be used in a forked child), and
while the server runs no Python thread but its main one (checked after its imports; otherwise it reports that it
cannot serve and :func:`helpers.processes.run_python` starts fresh interpreters, as it does everywhere else). The
native threads that the imports start (torch's idle OpenMP workers, the background thread of the jemalloc that
pyarrow bundles) are rebuilt in the child by their libraries' fork handlers: ``tests/test_forkserver.py`` checks
that a forked child's matrix product still uses every core. ``COURSE_FORKSERVER=0`` turns it off.

Protocol, one JSON line each way on the server's stdin/stdout: ``{"args": [script, ...], "log": path, "cwd": path}``
→ ``{"pid": n}``, then ``{"pid": n, "code": exit code}`` when the run's process ends. A server idle for
:data:`IDLE_S` seconds exits; the next run starts another.
"""

from __future__ import annotations

import json
import os
import select
import sys

IDLE_S = float(os.environ.get("COURSE_FORKSERVER_IDLE_S", 300))   # a server with no run for this long exits (it
                                                                    # holds the libraries' memory, about 0.6 GB)

PRELOAD = (  # what scripts/sft.py, dpo.py and grpo.py import; transformers and TRL load lazily, so name the classes
    "import torch",
    "from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback",
    "from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training",
    "from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer",
    "import helpers.training, helpers.dpo, helpers.grpo, helpers.isolated, helpers.manifests",
)


def read_line(fd: int, pending: bytearray, timeout_s: float | None) -> bytes | None:
    """The next line from the pipe ``fd``, read unbuffered so that ``select`` sees all that is waiting (``pending``
    keeps what came after it); ``None`` when ``timeout_s`` passes first, ``b""`` when the other side has gone. Both
    ends of the protocol read with it."""
    while b"\n" not in pending:
        if not select.select([fd], [], [], timeout_s)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        pending += chunk
    end = pending.index(b"\n")
    line = bytes(pending[:end])
    del pending[:end + 1]
    return line


def _run_child(args: list[str], log: str, cwd: str) -> None:
    """In the forked child: output to ``log``, the script's argv and folder, run it, exit with its code after the
    shutdown a normal interpreter does (``atexit`` functions, logging's flush)."""
    import atexit
    import logging
    import runpy
    import signal
    import traceback

    signal.signal(signal.SIGINT, signal.default_int_handler)   # the server ignores Ctrl-C; a run stops on it
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdout = open(1, "w", buffering=1, closefd=False, encoding=sys.__stdout__.encoding or "utf-8",
                          errors="backslashreplace")
        sys.stderr = open(2, "w", buffering=1, closefd=False, encoding=sys.__stderr__.encoding or "utf-8",
                          errors="backslashreplace")
        os.chdir(cwd)
        script = os.path.abspath(args[0])
        sys.argv = [script, *args[1:]]
        sys.path[0] = os.path.dirname(script)   # as `python script.py` sets it
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        if isinstance(stop.code, int) or stop.code is None:
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            logging.shutdown()
        except BaseException:
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve() -> None:
    """The server's loop (``python -m helpers.forkserver``): import, say whether it can serve, then fork per run."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a kernel's Interrupt goes to its whole process group: not for us
    out = os.fdopen(os.dup(1), "w", buffering=1)   # the protocol's channel; fd 1 and 2 go to stderr's target
    requests = os.dup(0)                           # read unbuffered, so that select() sees every waiting request
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    preload = os.environ.get("COURSE_FORKSERVER_PRELOAD")   # a test's shorter list (import lines, ";"-separated)
    for line in preload.split(";") if preload else PRELOAD:
        exec(line, {})
    import threading

    if threading.active_count() != 1:   # a fork copies only the thread that forks: a lock another holds stays held
        out.write(json.dumps({"ready": False, "why": f"{threading.active_count()} threads after the imports"}) + "\n")
        return
    out.write(json.dumps({"ready": True}) + "\n")
    pending = bytearray()
    while line := read_line(requests, pending, IDLE_S):   # None: idle, give the memory back; b"": the kernel has gone
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            out.close()
            os.close(requests)
            _run_child(request["args"], request["log"], request["cwd"])
        out.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"pid": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
