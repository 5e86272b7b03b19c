"""Where things live: the repository, the artifacts a run writes, and the model cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"

ARTIFACTS_ENV = "COURSE_ARTIFACTS"
CACHE_ENV = "COURSE_CACHE"


def artifacts_root() -> Path:
    """Root under which ``results/``, ``figures/`` and ``outputs/`` are written.

    The repository itself by default; the test suite points ``COURSE_ARTIFACTS`` at a
    temporary folder so that test runs never overwrite the committed reference results.
    """
    return Path(os.environ.get(ARTIFACTS_ENV) or REPO_ROOT)


def results_dir() -> Path:
    """Folder of machine-readable results (``results/<notebook>.json``)."""
    return _mk(artifacts_root() / "results")


def figures_dir() -> Path:
    """Folder of PNG figures written by the notebooks."""
    return _mk(artifacts_root() / "figures")


def outputs_dir(*parts: str) -> Path:
    """Folder for large run products (adapters, merged models, executed notebooks); never committed."""
    return _mk(artifacts_root().joinpath("outputs", *parts))


def cache_dir() -> Path:
    """Model cache shared by all notebooks (``COURSE_CACHE``, default ``~/.cache/llm-course-kit``)."""
    return _mk(Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llm-course-kit"))


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary folder beside ``target``; when the block succeeds it
    replaces ``target``, when it fails it is removed. An interrupted write never leaves a half-written
    ``target`` (an adapter, a merged model, a quantized checkpoint, a cache)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(folder: str | Path) -> str:
    """A short content hash of a model folder's weight files (``*.safetensors``, sorted by name).

    Results files record it, so notebook 07 reuses a measurement only when it was taken on these exact weights.
    """
    import hashlib

    digest = hashlib.sha256()
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"No *.safetensors weights in {folder}: is it a saved model folder?")
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def helper_env() -> dict[str, str]:
    """This process's environment with the repository root on ``PYTHONPATH``, for ``python -m helpers.<module>``
    child processes (notebook 06's isolated trainings, GPTQModel's quantizations)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
