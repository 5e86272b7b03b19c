"""The direction between the package's two layers (helpers/layers.py): lesson code, in helpers/ and in the notebooks'
code cells, takes from the build layer only the names of its API; the crossings still listed only shrink."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

from helpers import layers

ROOT = Path(__file__).resolve().parent.parent
MODULES = {p.stem for p in (ROOT / "helpers").glob("*.py")}


def helpers_uses(source: str, relative: bool) -> set[tuple[str, str]]:
    """(module, name) for every name that ``source`` takes from a helpers module: ``from helpers.m import name`` (or
    ``from .m import name`` where ``relative``), ``from helpers import m`` then ``m.name``, ``import helpers.m``."""
    tree = ast.parse(source)
    uses, aliases = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if relative and node.level == 1:
                base = module
            elif node.level == 0 and (module == "helpers" or module.startswith("helpers.")):
                base = module.removeprefix("helpers").lstrip(".")
            else:
                continue
            for alias in node.names:
                if not base and alias.name in MODULES:
                    aliases[alias.asname or alias.name] = alias.name
                else:
                    uses.add((base.split(".")[0] or "__init__", alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("helpers.") and alias.asname:
                    aliases[alias.asname] = alias.name.split(".")[1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            uses.add((aliases[node.value.id], node.attr))
    return uses


def lesson_sources() -> dict[str, tuple[str, bool]]:
    """Every lesson module's source, and every notebook's code cells (shell and magic lines left out)."""
    sources = {f"helpers/{m}.py": ((ROOT / "helpers" / f"{m}.py").read_text(), True) for m in layers.LESSON}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        lines = [line for c in cells for line in "".join(c["source"]).splitlines()
                 if not line.lstrip().startswith(("%", "!"))]
        sources[f"notebooks/{nb.name}"] = ("\n".join(lines), False)
    return sources


def crossings() -> dict[str, set[str]]:
    found = {}
    for site, (source, relative) in lesson_sources().items():
        names = {f"{m}.{n}" for m, n in helpers_uses(source, relative)
                 if m in layers.BUILD and n not in layers.BUILD_API.get(m, ())}
        if names:
            found[site] = names
    return found


def test_every_module_is_in_one_layer():
    lesson, build = set(layers.LESSON), set(layers.BUILD)
    assert not lesson & build, f"in both layers: {sorted(lesson & build)}"
    assert MODULES == lesson | build, (f"helpers/ modules in no layer: {sorted(MODULES - lesson - build)}; listed but "
                                       f"missing: {sorted(lesson | build - MODULES)} (helpers/layers.py)")


def test_the_build_layers_api_exists():
    missing = [f"{m}.{n}" for m, names in layers.BUILD_API.items() for n in names
               if not hasattr(importlib.import_module("helpers" if m == "__init__" else f"helpers.{m}"), n)]
    assert not missing, f"helpers/layers.py BUILD_API names that do not exist: {missing}"


def test_lesson_code_takes_only_the_build_layers_api():
    found, listed = crossings(), {site: set(names) for site, names in layers.CROSSINGS.items()}
    new = {site: sorted(names - listed.get(site, set())) for site, names in found.items()}
    gone = {site: sorted(names - found.get(site, set())) for site, names in listed.items()}
    new, gone = {k: v for k, v in new.items() if v}, {k: v for k, v in gone.items() if v}
    assert not new, ("lesson code reaching into the build layer's internals (use a name of helpers/layers.py "
                     f"BUILD_API, or move the code to the layer it belongs to): {new}")
    assert not gone, f"these crossings are gone: remove them from helpers/layers.py CROSSINGS: {gone}"


@pytest.mark.parametrize("source, expected", [
    ("from .paths import fingerprint, outputs_dir", {("paths", "fingerprint"), ("paths", "outputs_dir")}),
    ("from . import artifacts\nartifacts.reusable(1)", {("artifacts", "reusable")}),
    ("from helpers import pipeline as p\np.dpo_run_inputs()", {("pipeline", "dpo_run_inputs")}),
    ("from helpers.paths import fingerprint", {("paths", "fingerprint")}),
    ("from helpers import setup", {("__init__", "setup")}),
])
def test_the_reader_finds_each_way_of_taking_a_name(source, expected):
    relative = source.startswith("from .")
    assert helpers_uses(source, relative) == expected


# A lesson cell shows the method, not the build system's bookkeeping: saving an adapter goes through
# pipeline.handover, a results file records its weights through write_results(model_dir=..., variant_weights=...),
# and an earlier notebook's measurement is found by its model folder (comparison.measured_before).
BOOKKEEPING = __import__("re").compile(r"fingerprint|manifest|reusable|run_inputs|reuse_line|\bartifacts\.")
# notebooks whose cells still do (each waits for its next reference run): this set only shrinks
STILL_KEEPING_BOOKS: dict[str, str] = {}   # 06's LoftQ manifest went to pipeline.loftq_start


def bookkeeping_lines(notebook: Path) -> list[str]:
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    return [line.strip() for c in cells for line in "".join(c["source"]).splitlines() if BOOKKEEPING.search(line)]


def test_no_lesson_cell_names_fingerprints_manifests_or_reuse_maps():
    found = {nb.stem: bookkeeping_lines(nb) for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    new = {k: v for k, v in found.items() if v and k not in STILL_KEEPING_BOOKS}
    gone = sorted(k for k in STILL_KEEPING_BOOKS if not found.get(k))
    assert not new, f"cells naming the build system's bookkeeping (use pipeline.handover, write_results' model_dir): {new}"
    assert not gone, f"these notebooks no longer do: remove them from STILL_KEEPING_BOOKS: {gone}"


def test_the_bookkeeping_check_finds_a_fingerprint_in_a_cell(tmp_path):
    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["t = fingerprint(model_dir)\n", "x = 1\n"]},
                                        {"cell_type": "markdown", "source": ["a manifest"]}]}))
    assert bookkeeping_lines(nb) == ["t = fingerprint(model_dir)"]


# Distinct helpers names each notebook's code cells use (module.name), and how many of those are the build layer's
# (setup, the Colab install, where files go, the pipeline's hand-overs, the results file, the solutions runner).
# The aim is 20 or fewer in all; a notebook that teaches several miniatures, each beside its tested copy (02's DPO
# scoring and losses, 08's GRPO pieces), is above it. The ceilings only go down: lower one when a notebook needs fewer.
NAMES_CEILING = {"01": (28, 7), "02": (38, 9), "03": (29, 7), "04": (29, 6), "05": (19, 5), "06": (26, 10),
                 "07": (33, 9), "08": (34, 11)}


def notebook_names() -> dict[str, set[tuple[str, str]]]:
    return {site.split("/")[1][:2]: helpers_uses(source, relative) for site, (source, relative) in lesson_sources().items()
            if site.startswith("notebooks/")}


def test_each_notebook_calls_few_helpers_and_fewer_of_the_build_layer():
    counts = {nb: (len(names), sum(m in layers.BUILD for m, _ in names)) for nb, names in notebook_names().items()}
    over = {nb: c for nb, c in counts.items() if any(a > b for a, b in zip(c, NAMES_CEILING.get(nb, (20, 5))))}
    assert not over, f"(all names, build-layer names) above their ceilings {NAMES_CEILING}: {over}"
