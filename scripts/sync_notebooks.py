"""Write what helpers/colab.py decides into the files that carry it: each notebook's setup cell (with the extras
that notebook installs) and the install notice at the end of its first Markdown cell (restart or not, the Google
Drive opt-in), the Colab badges (notebooks and README) from the repository URL in pyproject.toml
([project.urls] Repository), and constraints-colab.txt from constraints.txt. Run it after changing any of these
sources; tests/test_colab.py and tests/test_notebooks_static.py fail while a file is out of step.

    python scripts/sync_notebooks.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.colab import (COLAB_CONSTRAINTS, colab_badge, colab_constraints, repository_url,  # noqa: E402
                           setup_cell, with_install_notice)

BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
README_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^)]*?/notebooks/([0-9][0-9]_[^)]+\.ipynb)")


def synced(nb: dict, name: str, url: str) -> dict:
    cells = nb["cells"]
    first = BADGE.sub(colab_badge(url, name), "".join(cells[0]["source"]))
    cells[0]["source"] = with_install_notice(first, name).splitlines(keepends=True)
    code = next(c for c in cells if c["cell_type"] == "code")
    code["source"] = setup_cell(url, name).splitlines(keepends=True)
    return nb


def main() -> int:
    url = repository_url(ROOT)
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        before = json.dumps(nb)
        nb = synced(nb, path.name, url)
        if json.dumps(nb) != before:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            print(f"updated {path.name}")
    constraints = colab_constraints((ROOT / "constraints.txt").read_text())
    target = ROOT / COLAB_CONSTRAINTS
    if not target.exists() or target.read_text() != constraints:
        target.write_text(constraints)
        print(f"updated {COLAB_CONSTRAINTS}")
    readme = ROOT / "README.md"
    text = README_LINK.sub(lambda m: colab_badge(url, m.group(1)).split("](")[-1].rstrip(")"), readme.read_text())
    if text != readme.read_text():
        readme.write_text(text)
        print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
