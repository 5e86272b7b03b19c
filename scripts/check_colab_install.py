"""What would the notebooks' install do on Colab? Asks pip's resolver (``--dry-run --report``), installs nothing.

For each torch version (default: 2.8.0, 2.9.0, 2.10.0 and the newest on PyPI) it builds a throwaway venv on
Python 3.12 holding *stand-ins* of what Colab's runtime ships: torch at that version and, at the versions of
Colab's GPU runtime (:data:`COLAB_SHIPS`), numpy and the other packages the course's install touches. A stand-in is
an empty ``NAME-X.dist-info`` with its METADATA: pip sees the package installed, nothing is downloaded. In each
venv it asks pip what the setup cell's one command (``helpers.colab.pip_args``: ``-r requirements.txt -c
constraints-colab.txt -e <course>[extras]``) would do, for both install sets:

- ``base`` (notebooks 01, 02, 05, 06, 08): must not install or replace torch or any CUDA package, and must not
  change numpy (so these notebooks need no restart);
- ``quant`` (03, 04, 07, with GPTQModel): must not touch torch or the CUDA stack; GPTQModel's numpy pin replaces
  Colab's numpy, which the notebooks announce as one restart.

pip runs without this machine's pip configuration (``PIP_CONFIG_FILE=/dev/null``: a cap on torch, a constraint
file and local wheel folders would not be there on Colab), keeping only its certificate and index settings.
Needs the package index (PyPI): run it by hand or with ``make colab-check``, not in the offline tests.

    python scripts/check_colab_install.py                          # the four default torch stand-ins
    python scripts/check_colab_install.py --torch 2.11.0 --python python3.13
    python scripts/check_colab_install.py --bare                   # stand-in torch and numpy only
"""

from __future__ import annotations

import argparse
import configparser
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.colab import COLAB_CONSTRAINTS, QUANT_NOTEBOOKS, normalized, pip_args  # noqa: E402

DEFAULT_TORCH = ("2.8.0", "2.9.0", "2.10.0", "newest")
COLAB_PIP = "24.1.2"   # the pip of Colab's runtime
SETS = {"base": (), "quant": ("quant",)}
FORBIDDEN = re.compile(r"^(torch|torchvision|torchaudio|torchcodec|triton|nvidia-.*|cuda-.*)$")

# Colab's GPU runtime (its published pip freeze, 2026-08): the versions of the packages it ships that the course's
# install can touch. torch is the row's stand-in instead.
COLAB_SHIPS = """
numpy==2.1.3 pandas==2.2.3 matplotlib==3.10.0 pillow==11.3.0 requests==2.32.4 urllib3==2.5.0 certifi==2026.7.22
idna==3.18 charset-normalizer==3.4.9 protobuf==5.29.6 psutil==5.9.5 pyarrow==18.1.0 python-dateutil==2.9.0.post0
six==1.17.0 packaging==26.3 typing_extensions==4.16.0 PyYAML==6.0.3 Jinja2==3.1.6 MarkupSafe==3.0.3
Pygments==2.21.0 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1 filelock==3.32.3 fsspec==2025.3.0 tqdm==4.67.3
regex==2025.11.3 tzdata==2026.3 contourpy==1.3.3 cycler==0.12.1 fonttools==4.63.0 kiwisolver==1.5.0
pyparsing==3.3.2 threadpoolctl==3.6.0 click==8.4.2 rich==13.9.4 markdown-it-py==4.2.0 mdurl==0.1.2
pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.8.0 typing-inspection==0.4.4 anyio==4.14.2 h11==0.16.0
typer==0.27.1 shellingham==1.5.4 annotated-doc==0.0.5 truststore==0.10.4 xxhash==4.0.1 dill==0.3.8
multiprocess==0.70.16 httpx2==2.10.0 httpcore2==2.10.0 hf-xet==1.6.0 huggingface_hub==1.27.0 safetensors==0.8.0
tokenizers==0.22.2 transformers==5.15.0 accelerate==1.14.0 peft==0.20.0 datasets==4.0.0 torchao==0.10.0
"""


def colab_ships() -> dict[str, str]:
    return dict(pin.split("==") for pin in COLAB_SHIPS.split())


def stand_in(site_packages: Path, name: str, version: str) -> None:
    """Make pip believe ``name`` ``version`` is installed in ``site_packages`` (metadata only, no code)."""
    info = site_packages / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


stand_in_torch = lambda site_packages, version: stand_in(site_packages, "torch", version)  # noqa: E731


def changes(report: dict) -> dict[str, str]:
    """``{package: version}`` that a pip ``--report`` would install (new, upgraded or downgraded); names lower case
    as pip compares them, the course's own package left out."""
    found = {normalized(item["metadata"]["name"]): item["metadata"]["version"] for item in report.get("install", [])}
    found.pop("llm-course-kit", None)
    return found


def torch_problem(report: dict, version: str) -> str | None:
    """Why the report fails the check because of torch (it would change), or ``None``."""
    planned = changes(report).get("torch")
    if planned is None:
        return None
    return f"pip would replace the installed torch {version} with torch {planned}"


def torch_needed_by(report: dict, version: str) -> list[str]:
    """``"name X needs torch<spec>"`` for each planned package whose own requirement on torch the installed torch
    ``version`` does not meet: why pip would replace it."""
    try:
        from packaging.requirements import Requirement
    except ImportError:   # pip carries its own copy
        from pip._vendor.packaging.requirements import Requirement
    found = []
    for item in report.get("install", []):
        for text in item["metadata"].get("requires_dist") or []:
            requirement = Requirement(text)
            if normalized(requirement.name) != "torch" or "extra" in str(requirement.marker or ""):
                continue
            if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
                found.append(f"{item['metadata']['name']} {item['metadata']['version']} needs torch{requirement.specifier}")
    return found


def verdict(report: dict, installed: dict[str, str], install_set: str) -> tuple[bool, str, list[str]]:
    """``(passed, verdict, replaced)`` of one pip report. ``installed``: the stand-ins ``{name: version}``;
    ``replaced``: ``"name old -> new"`` for each stand-in pip would change."""
    plan = changes(report)
    have = {normalized(k): v for k, v in installed.items()}
    replaced = [f"{name} {have[name]} -> {new}" for name, new in sorted(plan.items()) if name in have and have[name] != new]
    forbidden = [f"{name} {plan[name]}" for name in sorted(plan) if FORBIDDEN.match(name)]
    if forbidden:
        why = torch_needed_by(report, have["torch"]) if "torch" in have else []
        because = f" (torch {have['torch']} cannot stay: {'; '.join(why)})" if why else ""
        return False, "FAIL: would install " + ", ".join(forbidden) + because, replaced
    numpy = plan.get("numpy")
    if numpy and "numpy" in have and numpy != have["numpy"]:
        if install_set == "base":
            return False, f"FAIL: changes numpy {have['numpy']} -> {numpy} (a restart)", replaced
        return True, f"ok, one restart (numpy {have['numpy']} -> {numpy}, announced)", replaced
    return True, "ok, no restart", replaced


def resolution_problem(stderr: str) -> str:
    """The lines of pip's failure that say which requirement cannot be met."""
    keep = [line.strip() for line in stderr.splitlines()
            if re.search(r"depends on|requires|conflict|requested|Could not find|No matching|ResolutionImpossible",
                         line)]
    return "; ".join(keep[:8]) or stderr.strip()[-600:]


def clean_pip_env() -> dict[str, str]:
    """The environment for pip as on Colab: no pip configuration files and no ``PIP_*`` setting of this machine,
    except its certificate and index (needed to reach PyPI from here)."""
    keep = {"PIP_CERT", "PIP_INDEX_URL", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in keep}
    for conf in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", str(Path.home() / ".config/pip/pip.conf"),
                 str(Path.home() / ".pip/pip.conf")):
        parser = configparser.ConfigParser()
        try:
            parser.read(conf)
        except configparser.Error:
            continue
        for section in ("global", "install"):
            if parser.has_option(section, "cert"):
                env.setdefault("PIP_CERT", parser.get(section, "cert"))
            if parser.has_option(section, "index-url"):
                env.setdefault("PIP_INDEX_URL", parser.get(section, "index-url"))
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def newest_torch(python: str, env: dict[str, str]) -> str:
    out = subprocess.run([python, "-m", "pip", "index", "versions", "torch"], capture_output=True, text=True,
                         env=env, timeout=300)
    found = re.search(r"Available versions:\s*([^\s,]+)", out.stdout)
    if not found:
        raise SystemExit(f"could not ask PyPI for torch's versions:\n{out.stderr[-1000:]}")
    return found.group(1)


def find_python(asked: str | None) -> str:
    if asked:
        return asked
    found = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.12.*/bin/python3.12")))
    return found[-1] if found else (shutil.which("python3.12") or "python3.12")


def course_copy(folder: Path) -> Path:
    """What the setup cell clones, copied: pip builds the course's metadata there, not in this checkout."""
    course = folder / "course"
    course.mkdir()
    for name in ("pyproject.toml", "requirements.txt", COLAB_CONSTRAINTS):
        shutil.copy(ROOT / name, course / name)
    shutil.copytree(ROOT / "helpers", course / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    return course


def check(python: str, torch: str, bare: bool, env: dict[str, str]) -> list[dict]:
    """One venv with the stand-ins, pip's plan for each install set."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="colab-check-") as tmp:
        tmp = Path(tmp)
        venv = tmp / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True, env=env)
        vpython = str(venv / "bin" / "python")
        subprocess.run([vpython, "-m", "pip", "install", "-q", f"pip=={COLAB_PIP}"], check=True, env=env,
                       capture_output=True)
        purelib = Path(subprocess.run([vpython, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                      capture_output=True, text=True, check=True).stdout.strip())
        installed = {"numpy": colab_ships()["numpy"]} if bare else colab_ships()
        installed["torch"] = torch
        for name, version in installed.items():
            stand_in(purelib, name, version)
        course = course_copy(tmp)
        for install_set, extras in SETS.items():
            report_path = tmp / f"report-{install_set}.json"
            proc = subprocess.run([vpython, "-m", "pip", "install", "--quiet", "--dry-run", "--report",
                                   str(report_path), *pip_args(course, extras)], capture_output=True, text=True,
                                  env=env, timeout=1800)
            row = {"torch": torch, "set": install_set}
            if proc.returncode != 0:
                row.update(passed=False, verdict="FAIL: cannot be satisfied: " + resolution_problem(proc.stderr),
                           new=0, replaced=[])
            else:
                report = json.loads(report_path.read_text())
                passed, said, replaced = verdict(report, installed, install_set)
                row.update(passed=passed, verdict=said, replaced=replaced,
                           new=len([n for n in changes(report) if normalized(n) not in
                                    {normalized(k) for k in installed}]))
            rows.append(row)
            print(f"  torch {torch:8} {install_set:5} {row['verdict']}", flush=True)
    return rows


def table(rows: list[dict], python_version: str, bare: bool) -> str:
    stand_ins = "torch and numpy" if bare else "torch and Colab's packages"
    lines = [f"Python {python_version}, pip {COLAB_PIP}, stand-ins: {stand_ins} (numpy {colab_ships()['numpy']})",
             "| torch stand-in | set (notebooks) | new packages | stand-ins replaced | verdict |",
             "|---|---|---|---|---|"]
    who = {"base": "base (01 02 05 06 08)", "quant": "quant (" + " ".join(n[:2] for n in QUANT_NOTEBOOKS) + ")"}
    for row in rows:
        lines.append(f"| {row['torch']} | {who[row['set']]} | {row['new']} | {len(row['replaced'])} | "
                     f"{row['verdict']} |")
    lines.append("")
    for install_set in SETS:   # the stand-ins each set replaces, once per distinct list
        lists: dict[tuple, list[str]] = {}
        for row in rows:
            if row["set"] == install_set and row["replaced"]:
                lists.setdefault(tuple(row["replaced"]), []).append(row["torch"])
        for replaced, torches in lists.items():
            lines.append(f"{install_set}, torch stand-in {', '.join(torches)}: replaces " + ", ".join(replaced))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", nargs="+", default=list(DEFAULT_TORCH), help="stand-in torch versions ('newest')")
    parser.add_argument("--python", help="the interpreter to build the venvs with (default: pyenv's 3.12)")
    parser.add_argument("--bare", action="store_true", help="stand-ins for torch and numpy only")
    args = parser.parse_args(argv)
    env = clean_pip_env()
    python = find_python(args.python)
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True, env=env).stdout.strip()
    versions = [newest_torch(python, env) if v == "newest" else v for v in args.torch]
    print(f"{python} (Python {version}); stand-in torch {', '.join(versions)}; asking PyPI ...", flush=True)
    rows = [row for torch in versions for row in check(python, torch, args.bare, env)]
    print()
    print(table(rows, version, args.bare))
    failed = [r for r in rows if not r["passed"]]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
