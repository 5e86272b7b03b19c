"""One reuse rule for everything a notebook saves for later ones (adapters, merged models): a manifest.

Each saved folder holds ``manifest.json``: the *inputs* that decide its content (training settings, the weights
fingerprint of the adapter or model it was built from), who made it when, and the size and SHA-256 of each file.
A later notebook reuses the folder only when the inputs it would use today are equal to the recorded ones and
every file still matches its checksum, and says so; otherwise it rebuilds it.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .paths import atomic_folder, damaged_files, file_checksums

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
    (Path(folder) / MANIFEST).write_text(json.dumps({"inputs": inputs, "made_by": made_by, **record,
                                                     "files": file_checksums(folder)}, indent=1, default=str))


class ArtifactError(RuntimeError):
    """A saved folder (adapter, merged model, checkpoint) that is damaged; the message names the file and the fix."""


def read_manifest(folder: str | Path) -> dict | None:
    """The manifest of ``folder``, or ``None`` when it has none (not saved through :func:`artifact`). A manifest
    that cannot be read, or is not of the shape :func:`write_manifest` writes, comes back with ``"damaged"``: why."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return {"inputs": None, "made_by": "?", "damaged": f"{MANIFEST} is not valid JSON"}
    if not isinstance(manifest, dict) or "inputs" not in manifest:
        return {"inputs": None, "made_by": "?", "damaged": f"{MANIFEST} is not a manifest (no 'inputs')"}
    files = manifest.get("files") or {}
    if not isinstance(files, dict) or not all(isinstance(v, dict) and {"size", "sha256"} <= set(v) for v in files.values()):
        return {**manifest, "files": {}, "damaged": f"{MANIFEST} records its files in an unknown shape"}
    return manifest


def damage(folder: str | Path) -> list[str]:
    """The files of ``folder`` that no longer match the checksums its manifest recorded (missing, truncated,
    changed); empty when all match or when the manifest records none (folders saved before checksums)."""
    manifest = read_manifest(folder) or {}
    return damaged_files(folder, manifest.get("files") or {})


def verify(folder: str | Path, rebuild_hint: str) -> None:
    """Raise :class:`ArtifactError` naming each damaged file of ``folder`` and ``rebuild_hint`` (what to run)."""
    if problem := (read_manifest(folder) or {}).get("damaged"):
        raise ArtifactError(f"{folder}: {problem}, so its files cannot be checked. Delete {folder} and {rebuild_hint}.")
    if bad := damage(folder):
        raise ArtifactError(f"{', '.join(str(Path(folder) / b) for b in bad)}: damaged (size or checksum differs from "
                            f"what was saved; an interrupted copy or a disk error). Delete {folder} and {rebuild_hint}.")


def as_recorded(inputs: dict) -> dict:
    """``inputs`` as a manifest records them (a JSON round trip: tuples become lists, other values strings), so that
    they compare equal to what :func:`read_manifest` returns."""
    return json.loads(json.dumps(inputs, default=str))


def changed_inputs(wanted: dict, recorded: dict, expand: tuple[str, ...] = ()) -> list[str]:
    """The keys whose values differ between two manifests' inputs, sorted; a key in ``expand`` whose value is a dict
    is named field by field (``dpo_config.learning_rate``)."""
    recorded = recorded if isinstance(recorded, dict) else {}
    changed = []
    for key in sorted(set(wanted) | set(recorded)):
        a, b = wanted.get(key), recorded.get(key)
        if a == b:
            continue
        if key in expand and isinstance(a, dict):
            b = b if isinstance(b, dict) else {}
            changed += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            changed.append(key)
    return changed


def reusable(folder: str | Path, inputs: dict, what: str) -> bool:
    """True when ``folder`` was made from exactly ``inputs``; prints what is reused and from where, or why not."""
    manifest = read_manifest(folder)
    normalised = as_recorded(inputs)
    if manifest is None:
        print(f"{what}: nothing saved at {folder} yet; building it now.")
        return False
    if "damaged" in manifest:   # not "made from other inputs": nobody can tell what it was made from
        print(f"{what}: the one at {folder} cannot be checked ({manifest['damaged']}); rebuilding it.")
        return False
    if bad := damage(folder):
        print(f"{what}: the one at {folder} is damaged ({', '.join(bad)} no longer match(es) its checksum); "
              "rebuilding it.")
        return False
    if manifest["inputs"] != normalised:
        changed = changed_inputs(normalised, manifest["inputs"])
        print(f"{what}: the one at {folder} was made from other inputs ({', '.join(changed)}); rebuilding it.")
        return False
    print(f"{what}: reusing {folder}, made by {manifest['made_by']}")
    return True
