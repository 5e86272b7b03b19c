"""helpers.exercises: reading the worked solutions out of a notebook and running them."""

from __future__ import annotations

import dataclasses
import json

import pytest

from helpers import exercises


def _notebook(tmp_path, solutions_markdown, after="## Summary\nDone."):
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "## Exercises\n1. Add one.\n2. Double it.\n3. Break it.\n4. GPU."},
        {"cell_type": "code", "metadata": {}, "source": "x = 1", "outputs": [], "execution_count": None},
        *({"cell_type": "markdown", "metadata": {}, "source": s} for s in solutions_markdown),
        {"cell_type": "code", "metadata": {}, "source": "exercises.run_solutions(...)", "outputs": [],
         "execution_count": None},
        {"cell_type": "markdown", "metadata": {}, "source": after + "\n<details><summary>Not a solution</summary>\n"
                                                                     "```python\nraise SystemExit\n```\n</details>"},
    ]
    path = tmp_path / "99_synthetic.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def _block(n, title, *code, prose="Why it works."):
    fences = "\n".join(f"```python\n{c}\n```" for c in code)
    return f"<details><summary><b>Exercise {n}</b> · {title}</summary>\n\n{fences}\n{prose}\n</details>\n"


GOOD = ["## Solutions\n\nIntro.\n\n" + _block(1, "add one", "y = x + 1") + "\n" + _block(2, "double", "z = 2 * y", "w = z"),
        _block(3, "gpu", "# needs a CUDA GPU\nimport torch\nv = torch.ones(1, device='cuda')")]


def test_blocks_are_read_in_order_with_titles_and_joined_code(tmp_path):
    blocks = exercises.solution_blocks(_notebook(tmp_path, GOOD))
    assert [t for t, _ in blocks] == ["Exercise 1 · add one", "Exercise 2 · double", "Exercise 3 · gpu"]
    assert blocks[1][1] == "z = 2 * y\n\nw = z\n"
    assert all("SystemExit" not in code for _, code in blocks)   # the section ends at the next heading


def test_run_executes_in_the_namespace_and_marks_gpu_blocks(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(exercises, "_cuda_available", lambda: False)
    namespace = {"x": 1}
    exercises.run_solutions(_notebook(tmp_path, GOOD), namespace)
    assert (namespace["y"], namespace["w"]) == (2, 4)
    assert "v" not in namespace
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Exercise 1 · add one: ran in ") and lines[0].endswith(" s")
    assert lines[2] == "Exercise 3 · gpu: not run here: needs a CUDA GPU"


def test_a_failing_block_names_exercise_and_notebook(tmp_path):
    bad = ["## Solutions\n" + _block(1, "add one", "y = x + 1") + _block(2, "broken", "z = undefined_name")]
    with pytest.raises(exercises.SolutionError, match=r"Exercise 2 · broken in notebook 99_synthetic") as caught:
        exercises.run_solutions(_notebook(tmp_path, bad), {"x": 1})
    assert isinstance(caught.value.__cause__, NameError)


def test_overrides_are_printed_and_restored(tmp_path, capsys):
    @dataclasses.dataclass
    class P:
        steps: int = 10
        name: str = "tiny"

    nb = _notebook(tmp_path, ["## Solutions\n" + _block(1, "steps", "seen = profile.steps")])
    namespace = {"profile": P()}
    exercises.run_solutions(nb, namespace, overrides={"profile": P(steps=1)})
    assert namespace["seen"] == 1 and namespace["profile"].steps == 10
    assert "profile replaced by a copy with steps=1" in capsys.readouterr().out


def test_a_block_without_code_and_a_missing_section_are_errors(tmp_path):
    with pytest.raises(ValueError, match="Exercise 1 · prose only in 99_synthetic.ipynb has no ```python block"):
        exercises.solution_blocks(_notebook(tmp_path, ["## Solutions\n" + _block(1, "prose only")]))
    with pytest.raises(ValueError, match="no markdown heading containing 'Solutions'"):
        exercises.solution_blocks(_notebook(tmp_path, ["## Answers\n" + _block(1, "x", "y = 1")]))
    with pytest.raises(FileNotFoundError, match="notebooks/"):
        exercises.solution_blocks("00_no_such_notebook")


def test_every_course_notebook_has_a_solution_per_exercise():
    import re

    for name in ("01_sft_lora", "02_dpo", "03_gptq", "04_awq", "05_bitsandbytes_int8_nf4", "06_qlora",
                 "07_method_comparison", "08_grpo"):
        cells = json.loads((exercises.REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
        text = next("".join(c["source"]) for c in cells
                    if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## Exercises"))
        numbers = [int(n) for n in re.findall(r"^(\d+)\. ", text, flags=re.MULTILINE)]
        titles = [t for t, _ in exercises.solution_blocks(name)]
        assert [t.split(" · ")[0] for t in titles] == [f"Exercise {n}" for n in numbers], name
