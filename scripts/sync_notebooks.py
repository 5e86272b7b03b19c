"""Write the shared setup cell and the Colab badges (notebooks and README) from one source: the repository URL in
pyproject.toml ([project.urls] Repository). Run it after changing that URL or the cell (helpers/colab.py);
tests/test_notebooks_static.py fails while a notebook is out of step.

    python scripts/sync_notebooks.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.colab import colab_badge, repository_url, setup_cell  # noqa: E402

BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
README_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^)]*?/notebooks/([0-9][0-9]_[^)]+\.ipynb)")


def synced(nb: dict, name: str, url: str) -> dict:
    cells = nb["cells"]
    first = "".join(cells[0]["source"])
    cells[0]["source"] = BADGE.sub(colab_badge(url, name), first).splitlines(keepends=True)
    code = next(c for c in cells if c["cell_type"] == "code")
    code["source"] = setup_cell(url).splitlines(keepends=True)
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
    readme = ROOT / "README.md"
    text = README_LINK.sub(lambda m: colab_badge(url, m.group(1)).split("](")[-1].rstrip(")"), readme.read_text())
    if text != readme.read_text():
        readme.write_text(text)
        print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
