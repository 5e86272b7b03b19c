"""The fork server behind helpers.processes.run_python: a forked run behaves as `python script.py` would."""

import os
import signal
import sys
import time

import pytest

from helpers import processes

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server runs on Linux only")

SCRIPT = """
import os, sys
import torch
print("argv", sys.argv[1:], "path0", sys.path[0] == os.path.dirname(os.path.abspath(__file__)), "cwd", os.getcwd())
x = torch.randn(512, 512)
print("threads", torch.get_num_threads(), "sum", float((x @ x).exp().clamp(max=1).sum() > 0), flush=True)
if sys.argv[1] == "fail":
    raise ValueError("a bad value")
if sys.argv[1] == "exit":
    sys.exit(3)
if sys.argv[1] == "sleep":
    import time
    time.sleep(60)
"""


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    import torch

    if torch.cuda.is_available() or os.environ.get("COURSE_FORKSERVER") == "0":
        pytest.skip("the fork server is off here (a CUDA GPU, or COURSE_FORKSERVER=0): runs start new interpreters")
    path = tmp_path_factory.mktemp("forkserver") / "child.py"
    path.write_text(SCRIPT)
    return path


def test_a_forked_run_is_the_script_with_its_argv_folder_and_all_cores(script, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    log = tmp_path / "ok.log"
    assert processes.run_python([str(script), "ok", "--flag"], log, timeout_s=120) == 0
    server = processes._forkserver()
    assert server is not None and server.alive(), "the fork server should serve on Linux without a CUDA GPU"
    text = log.read_text()
    assert "argv ['ok', '--flag'] path0 True cwd " + str(tmp_path) in text
    assert f"threads {torch.get_num_threads()} sum 1.0" in text   # the OpenMP pool is rebuilt in the fork


def test_exit_codes_tracebacks_and_the_timeout_come_back_as_from_a_fresh_interpreter(script, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_FORKSERVER_PRELOAD", "import torch")   # a server that starts in seconds
    assert processes.run_python([str(script), "exit"], tmp_path / "exit.log", timeout_s=120) == 3
    assert processes.run_python([str(script), "fail"], tmp_path / "fail.log", timeout_s=120) == 1
    assert "ValueError: a bad value" in (tmp_path / "fail.log").read_text()
    assert processes.run_python([str(script), "sleep"], tmp_path / "sleep.log", timeout_s=1) == -1
    assert "[stopped after 1 s]" in (tmp_path / "sleep.log").read_text()
    assert processes.run_python([str(script), "ok"], tmp_path / "after.log", timeout_s=120) == 0   # still serving


def test_a_new_environment_gets_a_new_server_an_idle_one_exits_and_the_switch_turns_it_off(script, tmp_path,
                                                                                              monkeypatch):
    monkeypatch.setenv("COURSE_FORKSERVER_PRELOAD", "import torch")
    first = processes._forkserver()
    monkeypatch.setenv("COURSE_FORKSERVER_IDLE_S", "2")   # what the children see changed: a server started with it
    second = processes._forkserver()
    assert second is not first and second.key[0]["COURSE_FORKSERVER_IDLE_S"] == "2"
    assert not first.alive()
    assert processes.run_python([str(script), "exit"], tmp_path / "idle.log", timeout_s=120) == 3
    deadline = time.monotonic() + 60
    while second.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not second.alive(), "a server idle for COURSE_FORKSERVER_IDLE_S seconds should have exited"
    assert processes.run_python([str(script), "exit"], tmp_path / "again.log", timeout_s=120) == 3   # a new server
    assert processes._forkserver() is not second
    monkeypatch.setenv("COURSE_FORKSERVER", "0")
    assert processes._forkserver() is None
    assert processes.run_python([str(script), "exit"], tmp_path / "plain.log", timeout_s=120) == 3   # a new interpreter
    assert os.environ["COURSE_FORKSERVER"] == "0"


def test_an_interrupted_run_is_stopped_and_the_next_run_reads_its_own_replies(script, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_FORKSERVER_PRELOAD", "import torch")
    server = processes._forkserver()
    real_line = server._line
    calls = []

    def interrupted_line(timeout_s):   # the student presses Interrupt while the run sleeps
        calls.append(timeout_s)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_line(timeout_s)

    monkeypatch.setattr(server, "_line", interrupted_line)
    with pytest.raises(KeyboardInterrupt):
        processes.run_python([str(script), "sleep"], tmp_path / "interrupted.log", timeout_s=120)
    monkeypatch.setattr(server, "_line", real_line)
    assert processes.run_python([str(script), "exit"], tmp_path / "next.log", timeout_s=120) == 3
    os.kill(server.process.pid, signal.SIGINT)   # Jupyter's Interrupt reaches the kernel's whole process group
    time.sleep(1)
    assert server.alive(), "the server should ignore Ctrl-C; the run it forked stops on it"
