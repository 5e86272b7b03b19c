"""Rewrite the README's results section from results/*.json (run after `make run`)."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.results import results_markdown  # noqa: E402

START, END = "<!-- results:start -->", "<!-- results:end -->"


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    table = results_markdown(ROOT / "results")
    new = re.sub(f"{START}.*?{END}", lambda _: f"{START}\n{table}{END}", text, flags=re.S)
    readme.write_text(new)
    print("README results section updated" if new != text else "README already up to date")


if __name__ == "__main__":
    main()
