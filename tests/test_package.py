"""The shape of the helpers package: no import cycle (counting imports inside functions too)."""

import ast
from pathlib import Path

HELPERS = Path(__file__).resolve().parent.parent / "helpers"


def import_graph() -> dict[str, set[str]]:
    """module -> the helpers modules it imports anywhere in its code (top level or inside a function)."""
    modules = {p.stem for p in HELPERS.glob("*.py")}
    graph = {}
    for name in modules:
        deps = set()
        for node in ast.walk(ast.parse((HELPERS / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 1 or module == "helpers" or module.startswith("helpers."):
                    head = module.removeprefix("helpers").lstrip(".").split(".")[0]
                    deps |= {head} if head else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("helpers.")}
        graph[name] = (deps & modules) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_helpers_have_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in helpers: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "isolated" in import_graph()["pipeline"] and "training" in import_graph()["isolated"]


def test_no_gptqmodel_banner_in_a_notebook_that_only_adds_lora():
    """PEFT imports GPTQModel whenever it is installed; setup() swallows its start-up banner and notices."""
    import subprocess
    import sys

    code = ("from helpers import quiet; quiet()\n"
            "import torch; from peft import LoraConfig, get_peft_model\n"
            "m = torch.nn.Sequential(); m.add_module('q_proj', torch.nn.Linear(4, 4))\n"
            "get_peft_model(m, LoraConfig(r=2, target_modules=['q_proj'])); print('LoRA added')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=HELPERS.parent)
    assert out.returncode == 0 and "LoRA added" in out.stdout, out.stderr[-2000:]
    assert "GPT-QModel" not in out.stdout + out.stderr and "GIL is enabled" not in out.stdout + out.stderr
