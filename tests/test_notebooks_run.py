"""Notebooks as a student runs them: offline with the network blocked, twice in a row, reproducibly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_network_is_blocked_here_and_in_child_processes():
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("huggingface.co", 443), timeout=2)
    code = "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 443), timeout=2)\nexcept OSError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=60).stdout
    assert "blocked" in out


def _run_notebook(name: str, artifacts: Path) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    env_before = os.environ.get("COURSE_ARTIFACTS")
    os.environ["COURSE_ARTIFACTS"] = str(artifacts)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        os.environ["COURSE_ARTIFACTS"] = env_before or ""
    return json.loads((artifacts / "results" / f"{name}.json").read_text())


QUALITY = ("perplexity", "skill_accuracy", "preference_accuracy")


AFTER_THE_NOTEBOOKS = os.environ.get("COURSE_NOTEBOOKS_RAN") == "1"   # scripts/run_tests.py: the notebooks half ran them


def test_notebook_runs_twice_in_a_row_with_identical_metrics(tmp_path):
    """The second run reuses outputs/ (adapters, merged models; notebook 05 quantizes at load time, so nothing of
    it is cached); on the tiny profile every quality metric must repeat exactly (times and memory may differ).
    Notebook 05 is the cheapest notebook that builds on both earlier adapters and measures five variants; the reuse
    of quantized checkpoints is tested in tests/test_quant.py.

    `make test` runs this test in its notebooks half, after notebooks 01-08 ran there in order: the first run is
    theirs (its results file), the second runs now on what they left. Run alone, it runs the notebook twice in a
    temporary folder (the first run then also trains the adapters it builds on)."""
    name = "05_bitsandbytes_int8_nf4"
    artifacts = Path(os.environ["COURSE_ARTIFACTS"]) if AFTER_THE_NOTEBOOKS else tmp_path
    earlier = artifacts / "results" / f"{name}.json"
    first = json.loads(earlier.read_text()) if AFTER_THE_NOTEBOOKS and earlier.is_file() else _run_notebook(name, artifacts)
    second = _run_notebook(name, artifacts)
    assert first["profile"] == "tiny" and len(first["variants"]) >= 5

    def quality(record):
        return {v: {k: m[k] for k in QUALITY if k in m} for v, m in record["variants"].items()}

    assert quality(first) == quality(second)
    assert len({m["perplexity"] for m in first["variants"].values()}) > 1  # the variants really differ
