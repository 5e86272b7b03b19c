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
from typing import Callable, Iterator, Sequence

from .paths import REPO_ROOT, atomic_folder, cache_dir, damaged_files, file_checksums, file_sha256

MANIFEST = "manifest.json"


def content_hash(value, length: int = 16) -> str:
    """A short SHA-256 of ``value``'s JSON form (keys sorted): how a manifest records data it does not copy
    (training rows, preference pairs, calibration text)."""
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


ROW_CODE = ("helpers/data.py", "helpers/hub_data.py")   # the code that reads, checks and normalises training rows


def config_settings(config, config_class, fields: Sequence[str]) -> dict:
    """The ``fields`` of a trainer config as a manifest records them: read from ``config`` (a config object or a
    namespace of its keyword arguments; a field left out counts as ``config_class``'s default), enums by their
    values, tuples as lists. What DPO's and GRPO's manifests hold of their ``DPOConfig``/``GRPOConfig``."""
    import dataclasses

    def plain(value):
        value = getattr(value, "value", value)   # enums (lr_scheduler_type) as their names
        return list(value) if isinstance(value, (list, tuple)) else value

    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(config_class) if f.name in fields
                and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)}
    return {k: plain(getattr(config, k, defaults.get(k))) for k in fields}


def lora_settings(peft_config) -> dict:
    """What a manifest records of a LoRA config: rank, alpha, dropout and the target modules."""
    return {"lora_r": peft_config.r, "lora_alpha": peft_config.lora_alpha, "lora_dropout": peft_config.lora_dropout,
            "lora_targets": sorted(peft_config.target_modules)}


def files_source(*paths: str | Path) -> dict[str, str]:
    """The SHA-256 of each file (of every file under a folder), by path: what identifies the data files a run's rows
    come from without reading their rows (each file is hashed once while it stays the same: :func:`file_sha256`).
    A path that does not exist is recorded as ``"missing"``."""
    found = {}
    for path in map(Path, paths):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for file in files:
            name = str(file.relative_to(REPO_ROOT)) if file.is_relative_to(REPO_ROOT) else str(file)
            found[name] = file_sha256(file) if file.is_file() else "missing"
    return found


_ROW_HASHES: dict[str, str] = {}   # in this process: content_hash(source) -> content hash of the rows


def rows_hash(what: str, source: dict, rows: Callable[[], Sequence]) -> str:
    """``content_hash(list(rows()))`` (what a manifest records of a run's rows), looked up by ``source`` instead of
    computed when it was computed before from the same source: ``source`` holds the checksums of the data files the
    rows come from and of the code that reads them (:func:`files_source`, :data:`ROW_CODE`) and the selection (split,
    counts, ``max_length``, tokenizer). Only the first time (or after a data file, the code or the selection changed)
    are the rows read, checked and hashed; the hash is then recorded in ``<COURSE_CACHE>/row_hashes`` for later
    processes. So a reuse check reads no data, and a manifest still records the rows themselves: an adapter trained on
    other rows (notebook 02's own data) differs from the profile's."""
    key = content_hash({"what": what, **source}, 32)
    if key in _ROW_HASHES:
        return _ROW_HASHES[key]
    stored = cache_dir() / "row_hashes" / f"{key}.json"
    try:
        record = json.loads(stored.read_text())
        if isinstance(record, dict) and record.get("source") == json.loads(json.dumps(source, default=str)):
            _ROW_HASHES[key] = record["hash"]
            return record["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = _ROW_HASHES[key] = content_hash(list(rows()))
    try:   # written atomically; a record that cannot be written only costs reading the rows next time
        stored.parent.mkdir(parents=True, exist_ok=True)
        tmp = stored.with_name(f"{stored.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"what": what, "source": source, "hash": value}, indent=1, default=str))
        os.replace(tmp, stored)
    except OSError:
        pass
    return value


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
