"""`make test`: the unit tests and the notebooks (on the `tiny` profile) side by side, in two pytest processes.

    python scripts/run_tests.py              # what `make test` runs
    python scripts/run_tests.py -x -q        # extra arguments go to both pytest runs

On 2 cores most of a test run waits on one core: Python imports, child processes starting, tokenizers. The two halves
(`tests/` and `notebooks/`, about half the time each) therefore run at once: the tests print here as they go; the
notebooks' report is printed when both are done. Each notebook runs in order, handing its artifacts to the next, as
in a student's session, and then notebook 05 runs a second time on what they left (tests/test_notebooks_run.py).
The exit status is the worse of the two. The model caches are built first, once, so the two processes never build
the same cache at the same time.

Each half gets half the cores for torch's thread pool (``OMP_NUM_THREADS``, unless you set it). With two processes
of two OpenMP threads each on 2 cores, the threads that wait at the end of a parallel region spin and take the core
from the other half's work: on a 2-core AMD EPYC with native bf16 (2026-12-03), one thread per half took `make test`
from 8.3 to 4.9 minutes (tests 6.9 -> 4.0, notebooks 8.2 -> 4.7), with the same 716 tests and 9 notebook runs passing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
# run again after the notebooks, on what they left (the student's second run): in the notebooks half, not in the tests'
SECOND_RUN = "tests/test_notebooks_run.py::test_notebook_runs_twice_in_a_row_with_identical_metrics"
NOTEBOOKS = [*PYTEST, "notebooks", SECOND_RUN, "--nbmake", "--nbmake-timeout=900", "--durations=0"]   # each notebook's time
TESTS = [*PYTEST, "tests", "--deselect", SECOND_RUN, "--durations=15"]   # the slowest tests


def build_model_caches() -> None:
    """The `tiny` model and SmolLM2-135M folders in the course's model cache (a no-op when they are there)."""
    sys.path.insert(0, str(ROOT))
    from helpers.models import packaged_model_dir, tiny_model_dir

    tiny_model_dir()
    packaged_model_dir()


def threads_per_half() -> int:
    """Torch threads for each of the two pytest processes: half the cores this process may use, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cores // 2)


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    env = dict(os.environ)   # as given: building the caches below imports the course, which sets variables of its own
    env.setdefault("OMP_NUM_THREADS", str(threads_per_half()))
    build_model_caches()
    with tempfile.NamedTemporaryFile("w+", prefix="notebooks-", suffix=".log", delete=False) as log:
        print(f"notebooks: running beside the tests (log: {log.name}); their report follows the tests'.", flush=True)
        notebooks = subprocess.Popen([*NOTEBOOKS, *argv], cwd=ROOT, env=env | {"COURSE_NOTEBOOKS_RAN": "1"}, stdout=log,
                                     stderr=subprocess.STDOUT)
        try:
            tests_rc = subprocess.call([*TESTS, *argv], cwd=ROOT, env=env)
            if notebooks.poll() is None:
                print("tests done; waiting for the notebooks ...", flush=True)
            notebooks_rc = notebooks.wait()
        except KeyboardInterrupt:
            notebooks.terminate()
            raise
    print(f"\n========== notebooks (pytest --nbmake, exit status {notebooks_rc}) ==========", flush=True)
    sys.stdout.write(Path(log.name).read_text(errors="replace"))
    os.unlink(log.name)
    minutes = (time.perf_counter() - start) / 60
    verdict = "passed" if tests_rc == notebooks_rc == 0 else "FAILED"
    print(f"\nmake test {verdict}: tests exit status {tests_rc}, notebooks exit status {notebooks_rc}, "
          f"{minutes:.1f} min in all", flush=True)
    return tests_rc or notebooks_rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
