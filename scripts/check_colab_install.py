"""Would `pip install -r requirements.txt` keep Colab's torch? Asks pip's resolver, installs nothing.

For each torch version given (default: one older and one newer than the pinned one), this builds a throwaway
venv holding a *stand-in* torch of that version (an empty ``torch-X.dist-info`` with its METADATA: pip sees torch
X installed, nothing is downloaded), runs ``pip install --dry-run --report`` on ``requirements.txt`` and fails if
pip would install, upgrade or downgrade torch. It also lists the other packages pip would change (numpy, for
example: on Colab that change asks for a runtime restart, which the notebooks' setup cell announces).

Needs the package index (PyPI); run it by hand or with `make colab-check`, not in the offline tests.

    python scripts/check_colab_install.py                 # stand-ins 2.9.0 and 2.14.1
    python scripts/check_colab_install.py 2.10.0 2.12.1   # other versions
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VERSIONS = ("2.9.0", "2.14.1")


def stand_in_torch(site_packages: Path, version: str) -> None:
    """Make pip believe torch ``version`` is installed in ``site_packages`` (metadata only, no code)."""
    info = site_packages / f"torch-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def changes(report: dict) -> dict[str, str]:
    """``{package: version}`` that a pip ``--report`` would install (new, upgraded or downgraded)."""
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report.get("install", [])}


def torch_problem(report: dict, version: str) -> str | None:
    """Why the report fails the check (torch would change), or ``None``."""
    planned = changes(report).get("torch")
    if planned is None:
        return None
    return f"pip would replace the installed torch {version} with torch {planned}"


def check(version: str, requirements: Path) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="colab-check-") as tmp:
        env = Path(tmp) / "venv"
        venv.create(env, with_pip=True)
        python = env / "bin" / "python"
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        stand_in_torch(Path(purelib), version)
        report_path = Path(tmp) / "report.json"
        proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--dry-run", "--report",
                               str(report_path), "-r", str(requirements)], capture_output=True, text=True)
        if proc.returncode != 0:
            return False, f"torch {version}: pip could not resolve requirements.txt:\n{proc.stderr[-3000:]}"
        report = json.loads(report_path.read_text())
        problem = torch_problem(report, version)
        others = ", ".join(f"{k}=={v}" for k, v in sorted(changes(report).items()) if k in ("numpy", "protobuf"))
        if problem:
            return False, f"torch {version}: FAIL: {problem}"
        return True, f"torch {version}: ok, torch kept ({len(changes(report))} packages to install; {others or 'no numpy/protobuf'})"


def main(argv: list[str]) -> int:
    versions = argv or list(DEFAULT_VERSIONS)
    print(f"Python {sysconfig.get_python_version()}; resolving {ROOT / 'requirements.txt'} against stand-in torch {versions}")
    ok = True
    for version in versions:
        passed, message = check(version, ROOT / "requirements.txt")
        print(message, flush=True)
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
