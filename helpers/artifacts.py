"""One reuse rule for everything a notebook saves for later ones (adapters, merged models): a manifest.

Each saved folder holds ``manifest.json``: the *inputs* that decide its content (training settings, the weights
fingerprint of the adapter or model it was built from) and who made it when. A later notebook reuses the folder
only when the inputs it would use today are equal to the recorded ones, and says so; otherwise it rebuilds it.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .paths import atomic_folder

MANIFEST = "manifest.json"


def content_hash(value, length: int = 16) -> str:
    """A short SHA-256 of ``value``'s JSON form (keys sorted): how a manifest records data it does not copy
    (training rows, preference pairs, calibration text)."""
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


@contextmanager
def artifact(folder: str | Path, inputs: dict) -> Iterator[Path]:
    """Write the artifact ``folder`` atomically: yield a temporary folder to save into; on success it replaces
    ``folder``, with ``manifest.json`` recording ``inputs`` and who made it (the notebook or script, and when)."""
    with atomic_folder(Path(folder)) as tmp:
        yield tmp
        write_manifest(tmp, inputs)


def write_manifest(folder: str | Path, inputs: dict, **record) -> None:
    """Write ``folder``'s manifest after the fact, for a folder another process saved atomically (a quantized
    checkpoint); ``record`` adds facts about the making of it (e.g. the seconds it took)."""
    made_by = f"{os.environ.get('COURSE_NOTEBOOK', 'a Python session')} ({time.strftime('%Y-%m-%d %H:%M:%S')})"
    (Path(folder) / MANIFEST).write_text(json.dumps({"inputs": inputs, "made_by": made_by, **record}, indent=1,
                                                    default=str))


def read_manifest(folder: str | Path) -> dict | None:
    """The manifest of ``folder``, or ``None`` when it has none (not saved through :func:`artifact`)."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def reusable(folder: str | Path, inputs: dict, what: str) -> bool:
    """True when ``folder`` was made from exactly ``inputs``; prints what is reused and from where, or why not."""
    manifest = read_manifest(folder)
    normalised = json.loads(json.dumps(inputs, default=str))
    if manifest is None:
        print(f"{what}: nothing saved at {folder} yet; building it now.")
        return False
    if manifest["inputs"] != normalised:
        changed = sorted(k for k in set(normalised) | set(manifest["inputs"])
                         if normalised.get(k) != manifest["inputs"].get(k))
        print(f"{what}: the one at {folder} was made from other inputs ({', '.join(changed)}); rebuilding it.")
        return False
    print(f"{what}: reusing {folder}, made by {manifest['made_by']}")
    return True
