"""The worked solutions of a notebook's exercises, read from the notebook itself and run in its namespace.

Each notebook ends with a "Solutions" section: markdown cells holding one collapsible block per exercise::

    <details><summary><b>Exercise 2</b> · a title</summary>

    ```python
    code a student can paste into a new cell
    ```
    The explanation.
    </details>

:func:`solution_blocks` reads those blocks back; :func:`run_solutions` executes each in the notebook's namespace, so
that ``make test`` (the ``tiny`` profile) runs every worked solution the students read. A block whose first line is
``# needs a CUDA GPU`` is skipped, with a printed line saying so, where torch sees no CUDA device.

Short runs: a solution is written at the size a student runs. To keep the test suite fast, ``run_solutions`` accepts
``overrides``: names of the namespace replaced while the solutions run (for example ``profile`` by a copy with
``dpo_steps=1``) and restored afterwards. The runner prints each override, so a short run never passes for a full one.
"""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any

from .paths import REPO_ROOT

__all__ = ["GPU_MARK", "SolutionError", "solution_blocks", "run_solutions"]

GPU_MARK = "# needs a CUDA GPU"

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_DETAILS = re.compile(r"<details>\s*<summary>(.*?)</summary>(.*?)</details>", re.DOTALL)
_PYTHON = re.compile(r"```python[ \t]*\n(.*?)```", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


class SolutionError(RuntimeError):
    """A worked solution failed; the message names the exercise and the notebook, the cause is chained."""


def _notebook_path(notebook: str | Path) -> Path:
    """``"02_dpo"`` -> ``<repo>/notebooks/02_dpo.ipynb``; a path to an ``.ipynb`` file is taken as it is."""
    path = Path(notebook)
    if path.suffix == ".ipynb":
        found = path
    else:
        found = REPO_ROOT / "notebooks" / f"{notebook}.ipynb"
    if not found.is_file():
        raise FileNotFoundError(f"No notebook {found}: give a notebook's name as in notebooks/ (e.g. '02_dpo') "
                                f"or the path of an .ipynb file.")
    return found


def _solutions_markdown(cells: list[dict]) -> str:
    """The markdown of the Solutions section: from the heading that contains "Solutions" to the next heading of the
    same or a higher level (code cells in between are skipped)."""
    parts: list[str] = []
    level = None
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        kept: list[str] = []
        fenced = False                      # a "# comment" inside a ``` fence is code, not a heading
        for line in source.splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
            heading = None if fenced else _HEADING.match(line)
            if heading and level is None and "solutions" in heading.group(2).lower():
                level = len(heading.group(1))
                continue
            if heading and level is not None and len(heading.group(1)) <= level:
                parts.extend(kept)
                return "\n".join(parts)
            if level is not None:
                kept.append(line)
        parts.extend(kept)
    if level is None:
        raise ValueError("The notebook has no markdown heading containing 'Solutions'.")
    return "\n".join(parts)


def solution_blocks(notebook: str | Path) -> list[tuple[str, str]]:
    """``(title, code)`` for each ``<details>`` block of the notebook's Solutions section, in order.

    ``title`` is the summary without its HTML (``"Exercise 2 · a title"``); ``code`` is the block's ```python
    fences joined by a blank line. ``notebook`` is a name from ``notebooks/`` (``"02_dpo"``) or an ``.ipynb`` path.
    A block without a ```python fence raises ``ValueError``: every exercise has a solution that runs."""
    path = _notebook_path(notebook)
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    blocks = []
    for summary, body in _DETAILS.findall(_solutions_markdown(cells)):
        title = html.unescape(_TAG.sub("", summary)).strip()
        code = "\n\n".join(c.strip("\n") for c in _PYTHON.findall(body))
        if not code.strip():
            raise ValueError(f"{title} in {path.name} has no ```python block: write the solution as code.")
        blocks.append((title, code + "\n"))
    if not blocks:
        raise ValueError(f"The Solutions section of {path.name} holds no <details> block.")
    return blocks


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


def run_solutions(notebook: str | Path, namespace: dict[str, Any], overrides: dict[str, Any] | None = None) -> None:
    """Execute every worked solution of ``notebook`` in ``namespace`` (pass the notebook's ``globals()``).

    Prints one line per solution: how long it ran, or "not run here: needs a CUDA GPU" for a block marked
    ``# needs a CUDA GPU`` on a machine without one. ``overrides`` replace names of the namespace while the
    solutions run (e.g. ``{"profile": dataclasses.replace(profile, dpo_steps=1)}`` for short trainings); they are
    printed first and the original values are restored afterwards. A failing solution raises
    :class:`SolutionError`, naming the exercise and the notebook, chained to the original exception."""
    name = Path(notebook).stem
    blocks = solution_blocks(notebook)
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        print(f"[solutions of {name}] short run: {key} replaced by {_describe(key, value, namespace)}")
    missing = object()
    saved = {key: namespace.get(key, missing) for key in overrides}
    namespace.update(overrides)
    cuda = _cuda_available()
    try:
        for title, code in blocks:
            if code.lstrip().startswith(GPU_MARK) and not cuda:
                print(f"{title}: not run here: needs a CUDA GPU")
                continue
            start = time.perf_counter()
            try:
                exec(compile(code, f"<{name}: {title}>", "exec"), namespace)
            except Exception as error:
                raise SolutionError(f"The worked solution of {title} in notebook {name} failed: "
                                    f"{type(error).__name__}: {error}. Fix the block in the notebook's Solutions "
                                    f"section.") from error
            print(f"{title}: ran in {time.perf_counter() - start:.1f} s")
    finally:
        for key, value in saved.items():
            if value is missing:
                namespace.pop(key, None)
            else:
                namespace[key] = value


def _describe(key: str, value: Any, namespace: dict[str, Any]) -> str:
    """What an override changes: for a dataclass, the fields that differ from the namespace's value."""
    import dataclasses

    old = namespace.get(key)
    if dataclasses.is_dataclass(value) and type(old) is type(value):
        changed = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                   if getattr(value, f.name) != getattr(old, f.name)}
        return "a copy with " + ", ".join(f"{k}={v!r}" for k, v in changed.items()) if changed else "an equal copy"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
