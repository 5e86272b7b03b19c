"""Notebook hygiene: outputs only from the labelled reference run and free of machine paths, small files, the same
setup cell and a Colab badge everywhere."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


MAX_NOTEBOOK_BYTES = 3_000_000


def _reference_outputs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_outputs", ROOT / "scripts" / "reference_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_only_from_the_reference_run(path):
    """Committed outputs come from `make run` on the cpu profile, which labels them; none from a session by hand."""
    ro = _reference_outputs()
    nb = nbformat.read(path, as_version=4)
    ran = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    if ran:
        info = nb.metadata.get(ro.META_KEY)
        assert info, (f"{path.name}: cells {ran} carry outputs but the notebook has no reference-run metadata: clear "
                      f"them, or refresh the notebook with {ro.refresh(path.name)}")
        assert info["profile"] == ro.REFERENCE_PROFILE, f"{path.name}: outputs from profile {info['profile']}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_carry_no_machine_path(path):
    ro = _reference_outputs()
    nb = nbformat.read(path, as_version=4)
    roots = {str(ROOT), str(ROOT.resolve())}
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = ro.output_text(out)
            found = ro.MACHINE_PATH.search(text) or next((r for r in roots if r in text), None)
            assert not found, (f"{path.name}, cell {i}: an output names a path of the machine that ran it "
                               f"({found if isinstance(found, str) else found.group(0)!r}): run "
                               f"`python scripts/reference_outputs.py clean notebooks/{path.name}`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_file_stays_small(path):
    size = path.stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, (f"{path.name} is {size / 1e6:.1f} MB (limit {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB): "
                                       "an output is too large (a figure at high dpi, a long log?)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_and_shared_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    from helpers.colab import repository_url, setup_cell

    reference = setup_cell(repository_url(ROOT), path.name)   # the same in every notebook but for its pip extras
    assert next(c.source for c in nb.cells if c.cell_type == "code") == reference
    badge = re.search(r"colab\.research\.google\.com/github/[^)]+/notebooks/([^)]+\.ipynb)", nb.cells[0].source)
    assert badge and badge.group(1) == path.name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_results_table_matches_results_files():
    import re as _re

    from helpers.results import results_markdown

    readme = (ROOT / "README.md").read_text()
    section = _re.search(r"<!-- results:start -->\n(.*?)<!-- results:end -->", readme, _re.S)
    assert section, "README lacks the results markers"
    assert section.group(1) == results_markdown(ROOT / "results"), "run `python scripts/update_readme.py`"


def test_gpu_check_refuses_clearly_without_cuda():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "needs a CUDA GPU" in out.stderr


def test_colab_check_flags_a_torch_change():
    """The install check's verdict from pip's --report (the resolver itself needs PyPI: `make colab-check`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cci", ROOT / "scripts" / "check_colab_install.py")
    cci = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cci)
    keep = {"install": [{"metadata": {"name": "numpy", "version": "2.2.6"}}]}
    replace = {"install": [{"metadata": {"name": "Torch", "version": "2.14.1"}}, *keep["install"]]}
    assert cci.torch_problem(keep, "2.9.0") is None
    assert "torch 2.14.1" in cci.torch_problem(replace, "2.9.0")
    assert cci.changes(replace) == {"torch": "2.14.1", "numpy": "2.2.6"}
