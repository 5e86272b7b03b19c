"""Where things live: the repository, the artifacts a run writes, and the model cache."""

from __future__ import annotations

import json
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


OWNED_MARKER = ".written-by-course"   # in every folder atomic_folder writes: the course may replace it later


def replace_problem(target: str | Path) -> str | None:
    """Why the course must not replace ``target`` with a folder it writes (``None`` when it may: nothing there, an
    empty folder, or a folder the course wrote, which carries :data:`OWNED_MARKER` or a ``manifest.json``)."""
    target = Path(target)
    if target.is_symlink():
        return f"{target} is a link (to {os.readlink(target)}), not a folder the course wrote"
    if not target.exists():
        return None
    if not target.is_dir():
        return f"{target} is an existing file, not a folder"
    entries = sorted(p.name for p in target.iterdir())
    if not entries or OWNED_MARKER in entries or "manifest.json" in entries:
        return None
    return (f"{target} is a folder the course did not write (it holds {len(entries)} "
            f"{'entry' if len(entries) == 1 else 'entries'}: "
            f"{', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''})")


def check_replaceable(target: str | Path, option: str = "the output folder") -> Path:
    """``target`` as a Path when the course may write a folder there; otherwise
    :class:`~helpers.errors.OutputPathError` saying what is there and what to do. Call it before any work."""
    from .errors import OutputPathError

    if problem := replace_problem(target):
        raise OutputPathError(f"{problem}. Writing there would delete it, so nothing was done. Give {option} a path "
                              "that does not exist yet (or a folder the course wrote before), or move what is there "
                              "out of the way.")
    return Path(target)


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary folder beside ``target``; when the block succeeds it
    replaces ``target``, when it fails it is removed. An interrupted write never leaves a half-written
    ``target`` (an adapter, a merged model, a quantized checkpoint, a cache).

    - It replaces only what the course wrote: an existing file, a link or a non-empty folder without
      :data:`OWNED_MARKER` (or a manifest) is refused with :class:`~helpers.errors.OutputPathError`, before the block
      runs and again before the swap.

    - The temporary folder's name carries the writer's process id. A write killed outright (no ``finally`` runs)
      leaves it behind; the next write of the same target removes it once that process is gone, and says so.
    - Two processes finishing the same target at once swap it in one after the other (a file lock), so neither
      fails and the target is always one complete write.
    """
    target = check_replaceable(target)   # never removes what the course did not write: refused before the work
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        (tmp / OWNED_MARKER).write_text("Written by the course (helpers.paths.atomic_folder); it replaces this "
                                        "folder when it rebuilds it.\n")
        yield tmp
        with _folder_lock(target):
            check_replaceable(target)   # again: something may have appeared there while the block ran
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f"{target.name}.old-{os.getpid()}-", dir=target.parent))
                os.replace(target, old / "replaced")  # out of the way in one rename, removed below
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary folders that killed writes of ``target`` left beside it (their process is gone);
    return them."""
    removed = []
    for pattern in (f"{target.name}.tmp-*", f"{target.name}.old-*"):
        for path in Path(target).parent.glob(pattern):
            pid = path.name[len(target.name) + 5:].split("-")[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
                shutil.rmtree(path, ignore_errors=True)
                print(f"Removed {path} ({size:.0f} MB), left by an interrupted write (process {pid} is gone).")
                removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def _folder_lock(target: Path) -> Iterator[None]:
    """An exclusive lock between processes on the folder that holds ``target`` (``fcntl.flock``; none where fcntl
    is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: one writer at a time is the user's job there
        yield
        return
    fd = os.open(target.parent, os.O_RDONLY)  # the parent folder itself: no lock file is left behind
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _hash_into(digest, path: Path):
    """Feed the bytes of ``path`` into ``digest`` (a ``hashlib`` object) in 16 MB blocks; return it."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest


RACY_SECONDS = 2.0   # a file changed this recently is hashed again every time (see _stat_key)


def _stat_key(path: Path, now: float) -> tuple | None:
    """What identifies the content of ``path`` without reading it: resolved path, device, inode, size, modification
    and status-change times (``st_ctime_ns``: any write, ``os.utime`` or ``cp -p`` over it sets it to now, so a file
    whose mtime was put back still gets a new key). ``None`` when the file changed in the last :data:`RACY_SECONDS`
    before ``now``: a write of the same size within one tick of the file system's clock would keep the key, so such
    a file is hashed again each time (git's "racily clean" rule)."""
    stat = path.stat()
    if max(stat.st_mtime_ns, stat.st_ctime_ns) > (now - RACY_SECONDS) * 1e9:
        return None
    return (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


_HASHES: dict[tuple, str] = {}   # in this process: (kind, stat keys) -> hash


def _hash_store() -> Path:
    return cache_dir() / "hashes"


def _remembered(kind: str, keys: tuple, compute) -> str:
    """``compute()`` (a hash of files), remembered under ``keys`` (their :func:`_stat_key`) in this process and in
    ``<COURSE_CACHE>/hashes`` for later processes, so a file that did not change is never hashed twice; computed
    afresh when a key is ``None`` (a file changed just now) or when nothing was remembered."""
    import hashlib

    if any(k is None for k in keys):
        return compute()
    key = (kind, keys)
    if key in _HASHES:
        return _HASHES[key]
    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    stored = _hash_store() / f"{name}.json"
    try:
        record = json.loads(stored.read_text())
        if record.get("key") == json.loads(json.dumps(key)):
            _HASHES[key] = record["hash"]
            return record["hash"]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    value = _HASHES[key] = compute()
    try:   # written atomically; a cache that cannot be written only costs the hashing next time
        stored.parent.mkdir(parents=True, exist_ok=True)
        tmp = stored.with_name(f"{stored.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "hash": value}))
        os.replace(tmp, stored)
    except OSError:
        pass
    return value


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of ``path``'s bytes, read once while the file stays the same (:func:`_remembered`)."""
    import hashlib
    import time

    path = Path(path)
    return _remembered("sha256", (_stat_key(path, time.time()),),
                       lambda: _hash_into(hashlib.sha256(), path).hexdigest())


def fingerprint(folder: str | Path) -> str:
    """A short content hash of a model folder's weight files (``*.safetensors``, sorted by name).

    Results files record it, so notebook 07 reuses a measurement only when it was taken on these exact weights.
    Computed once while the files stay the same (same size, times and inode: :func:`_stat_key`), in this process
    and across processes, so a reuse check hashes no weights that did not change.
    """
    import hashlib
    import time

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"No *.safetensors weights in {folder}: is it a saved model folder?")

    def compute() -> str:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode())
            _hash_into(digest, path)
        return digest.hexdigest()[:16]

    now = time.time()
    return _remembered("fingerprint", tuple(_stat_key(path, now) for path in files), compute)


def file_checksums(folder: str | Path) -> dict[str, dict]:
    """Size and SHA-256 of every file in ``folder`` (not in sub-folders), what a manifest records so that later
    damage is found by content, not only by size."""
    return {path.name: {"size": path.stat().st_size, "sha256": file_sha256(path)}
            for path in sorted(Path(folder).iterdir()) if path.is_file() and path.name != "manifest.json"}


def damaged_files(folder: str | Path, recorded: dict[str, dict]) -> list[str]:
    """The files of ``folder`` that are missing or differ from ``recorded`` (:func:`file_checksums`); an empty
    list when all match. A file is hashed once while its size, times and inode stay the same (:func:`file_sha256`):
    any write to it, even one that keeps its size, makes it hashed again."""
    damaged = []
    for name, want in recorded.items():
        path = Path(folder) / name
        if not path.is_file() or path.stat().st_size != want["size"] or file_sha256(path) != want["sha256"]:
            damaged.append(name)
    return damaged


# Set by torchrun / `accelerate launch` for each worker; a child of a worker must not inherit them, or it would
# wait to join the workers' process group (a single-process child of a 2-process DDP run hangs)
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                   "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


def helper_env() -> dict[str, str]:
    """This process's environment with the repository root on ``PYTHONPATH``, for ``python -m helpers.<module>``
    child processes (notebook 06's isolated trainings, GPTQModel's quantizations): one process of its own, outside
    any distributed run that started this one."""
    env = {k: v for k, v in os.environ.items()
           if k not in DISTRIBUTED_ENV and not k.startswith(("TORCHELASTIC_", "ACCELERATE_"))}
    return dict(env, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_folder_problem(name: str | Path) -> str | None:
    """Why ``name`` cannot be loaded as a local model folder, when it names one (``None`` when it is a valid
    folder or looks like a Hub id such as ``org/model``): a mistyped folder is reported as such, with the
    closest names that do exist, instead of as a failed download."""
    import difflib

    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() or (path / "adapter_config.json").is_file() else (
            f"{path} is a folder but holds no config.json, so it is not a saved model (a save that failed, or the "
            "wrong folder)")
    if path.exists():
        return f"{path} is a file; give the folder that holds config.json and the weights"
    parts = Path(text).parts
    hub_like = (len(parts) in (1, 2) and not text.startswith((".", "/", "~"))
                and (len(parts) == 1 or not Path(parts[0]).is_dir()))
    if hub_like:
        return None
    parent = path.parent
    near = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=3) if parent.is_dir() else []
    hint = f" Did you mean {', '.join(str(parent / n) for n in near)}?" if near else (
        f" {parent} does not exist either." if not parent.is_dir() else "")
    return f"there is no folder {path}.{hint}"


def as_sentence(text: str) -> str:
    """``text`` ended as one sentence: a trailing question mark kept, trailing periods made one (for problems that
    a message continues with what to do)."""
    return text if text.endswith("?") else f"{text.rstrip('.')}."


def saved_model_problem(folder: str | Path, missing: str, no_config: str) -> str | None:
    """Why ``folder`` is not a saved model folder (``None`` when it holds ``config.json``):
    :func:`local_folder_problem`, and where that lets a Hub-shaped name through, "there is no folder" followed by
    ``missing``; a folder without ``config.json`` is followed by ``no_config`` (both: the caller's words in
    parentheses, e.g. what to do instead)."""
    path = Path(folder).expanduser()
    problem = local_folder_problem(path)
    if problem is None and not path.is_dir():
        problem = f"there is no folder {path}{missing}"
    elif problem is None and not (path / "config.json").is_file():
        problem = f"{path} holds no config.json{no_config}"
    return problem


def read_config_json(folder: str | Path, error: type[Exception] = ValueError) -> dict:
    """``folder/config.json`` as a dict, without loading the model; an unreadable file or one that is not a JSON
    object raises ``error`` (the caller's error class) saying what to do."""
    path = Path(folder).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise error(f"{path} is not valid JSON ({exc}); save the model again (model.save_pretrained, or the pipeline "
                    "function that made it) or give another folder.") from None
    if not isinstance(config, dict):
        raise error(f"{path} holds a JSON {type(config).__name__}, not a model config; save the model again "
                    "(model.save_pretrained, or the pipeline function that made it) or give another folder.")
    return config
