"""Run pieces of a notebook's code cells in a test: the classes and functions a lesson writes out (its miniatures)
and single assignments (the configs it builds), so the tests check the code the student reads."""

from __future__ import annotations

import ast
import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def code_cells(notebook: str) -> list[str]:
    """The code cells of ``notebooks/<notebook>.ipynb``, as source text."""
    nb = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def definitions(notebook: str, *names: str, scope: dict | None = None) -> dict:
    """Execute the cells' imports and the definitions of ``names`` (classes or functions) in a fresh namespace
    (``scope`` adds names the cells take from earlier ones); return it."""
    nodes, found = [], set()
    for cell in code_cells(notebook):
        for node in ast.parse(cell).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not _is_course_setup(node):
                nodes.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
                nodes.append(node)
                found.add(node.name)
    missing = set(names) - found
    assert not missing, f"{notebook} defines no {sorted(missing)} in its code cells"
    namespace = dict(scope or {})
    exec(compile(ast.Module(nodes, []), notebook, "exec"), namespace)
    return namespace


def assignment(notebook: str, target: str, contains: str, scope: dict) -> object:
    """Execute the one statement ``<target> = ...`` whose right side mentions ``contains``; return the value."""
    statements = [node for cell in code_cells(notebook) for node in ast.parse(cell).body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == target
                  and contains in ast.unparse(node.value)]
    assert len(statements) == 1, f"{notebook}: expected one '{target} = {contains}(...)', found {len(statements)}"
    namespace = dict(scope)
    exec(compile(ast.Module(statements, []), notebook, "exec"), namespace)
    return namespace[target]


def _is_course_setup(node: ast.AST) -> bool:
    """The setup cell's Colab imports need the notebook's own globals; the course's helpers import fine."""
    return isinstance(node, ast.ImportFrom) and node.module == "helpers.colab"
