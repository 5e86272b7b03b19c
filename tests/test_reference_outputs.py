"""The notebooks carry the outputs of the reference run (`make run` on `cpu`): scripts/reference_outputs.py cleans and
labels them, and these tests check that every committed output comes from the current code of its cell."""

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
INFO = {"profile": "cpu", "precision": "bf16", "date": "2026-12-03", "cpu": "Some CPU, 2 cores, native bf16",
        "matmul_gflops": {"bf16": 812.4, "fp32": 201.3}, "seconds": 150.0}


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


ro = _script("reference_outputs")


def assert_outputs_current(path: Path):
    """What the check of the committed notebooks asserts, on any notebook file."""
    stale = ro.stale_cells(nbformat.read(path, as_version=4))
    assert not stale, (f"{path.name} shows outputs that do not come from the current code of its cells:\n"
                       f"{ro.describe(path.name, stale)}\nRefresh them with {ro.refresh(path.name)}.")


def synthetic(root: Path):
    """A small executed notebook with what a real run leaves: paths of this machine, a tqdm bar redrawn across
    messages with colours, a widget view, a figure, an HTML table, timing metadata."""
    site = sysconfig.get_paths()["purelib"]
    home = os.path.expanduser("~")
    bar = {"b1": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_h1", "IPY_MODEL_p1", "IPY_MODEL_h2"]}},
           "h1": {"model_name": "HTMLModel", "state": {"value": "Loading\u2007weights:\u2007100%"}},
           "p1": {"model_name": "FloatProgressModel", "state": {"value": 3.0, "max": 3.0}},
           "h2": {"model_name": "HTMLModel", "state": {"value": "\u20073/3\u2007[00:01&lt;00:00]"}}}
    nb = new_notebook(metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"state": bar}}})
    nb.cells = [
        new_markdown_cell("# 99 · Test\n\n<!-- colab-install:start -->\nInstall notice.\n<!-- colab-install:end -->"),
        new_code_cell("print(paths)", execution_count=1, outputs=[
            new_output("stream", name="stdout", text=f"saved to {root}/outputs/sft_lora/tiny\n"
                                                      f"cache {home}/.cache/llm-course-kit/models\n"
                                                      f"scratch /tmp/tmpab12cd/run.json and /work/other/x.txt\n"),
            new_output("stream", name="stderr", text=f"{site}/transformers/trainer.py:12: FutureWarning: old\n"),
        ]),
        new_code_cell("train()", execution_count=2, outputs=[
            new_output("stream", name="stderr", text="\r  0%|          | 0/10 [00:00<?, ?it/s]"),
            new_output("stream", name="stderr", text="\x1b[32m\r 50%|#####     | 5/10\x1b[0m"),
            new_output("stream", name="stderr", text="\r100%|##########| 10/10 [00:02<00:00]\n"),
            new_output("stream", name="stdout", text="loss 1.23\n"),
        ]),
        new_code_cell("show()", execution_count=3, outputs=[
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a1"},
                                             "text/plain": "Loading: 100%|##########| 3/3"}),
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a2"}}),
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "b1"},
                                             "text/plain": "Loading weights:   0%|          | 0/3 [00:00<?, ?it/s]"}),
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "gone"},
                                             "text/plain": "score:   0%|          | 0/19 [00:00<?, ?it/s]"}),
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "gone2"},
                                             "text/plain": "Writing model shards: 0it [00:00, ?it/s]"}),
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a3"},
                                             "text/plain": "VBox(children=(Label(value='a widget'),))"}),
            new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"}),
            new_output("execute_result", execution_count=3,
                       data={"text/html": f"<table><tr><td>{root}/results/x.json</td></tr></table>",
                             "text/plain": "   a\n0  1"}),
        ]),
        new_code_cell("fail()", execution_count=4, outputs=[
            new_output("error", ename="ValueError", evalue=f"bad file {root}/data/x.csv",
                       traceback=[f"\x1b[0;31mFile {site}/torch/nn/modules/module.py:1\x1b[0m", "ValueError: bad"]),
        ]),
    ]
    for cell in nb.cells[1:]:
        cell.metadata["execution"] = {"iopub.execute_input": "2026-12-03T10:00:00.000Z"}
    return nb


def all_output_text(nb) -> str:
    return "\n".join(ro.output_text(o) for c in nb.cells for o in c.get("outputs", []))


def test_clean_scrubs_paths_progress_bars_widgets_and_timing(tmp_path):
    root = tmp_path / "llm-course-kit"
    nb = ro.clean(synthetic(root), root)
    text = all_output_text(nb)
    assert not ro.MACHINE_PATH.search(text), ro.MACHINE_PATH.search(text).group(0)
    assert str(root) not in text and str(tmp_path) not in text and os.path.expanduser("~") + "/" not in text
    paths, train, show, fail = nb.cells[1:]
    assert paths.outputs[0].text == ("saved to ./outputs/sft_lora/tiny\ncache ~/.cache/llm-course-kit/models\n"
                                     "scratch <tmp>/run.json and <work>/x.txt\n")
    assert paths.outputs[1].text == "<site-packages>/transformers/trainer.py:12: FutureWarning: old\n"
    # the three redraws of the bar are one line, its final state, without colours; stdout stays apart
    assert [(o.name, o.text) for o in train.outputs] == [("stderr", "100%|##########| 10/10 [00:02<00:00]\n"),
                                                         ("stdout", "loss 1.23\n")]
    # widget views dropped: a progress bar shows its final state where it was saved and is dropped where it was
    # not (its text would say 0%); another widget keeps its text; the figure and the table kept
    assert [sorted(o.data) for o in show.outputs] == [["text/plain"], ["text/plain"], ["image/png", "text/plain"],
                                                      ["text/html", "text/plain"]]
    assert show.outputs[0].data["text/plain"] == "Loading weights: 100%|██████████| 3/3 [00:01<00:00]"
    assert show.outputs[1].data["text/plain"] == "VBox(children=(Label(value='a widget'),))"
    assert show.outputs[2].data["image/png"] == PNG
    assert "./results/x.json" in show.outputs[3].data["text/html"]
    assert fail.outputs[0].evalue == "bad file ./data/x.csv"
    assert "<site-packages>/torch/nn/modules/module.py" in fail.outputs[0].traceback[0]
    assert "widgets" not in nb.metadata
    assert all("execution" not in c.metadata for c in nb.cells)
    nbformat.validate(nb)


def test_clean_handles_raw_json_with_lists_of_lines(tmp_path):
    """The CLI and the sync scripts read notebooks as JSON, where texts are lists of lines."""
    root = tmp_path / "repo"
    raw = json.loads(nbformat.writes(synthetic(root)))
    assert isinstance(raw["cells"][1]["outputs"][0]["text"], list)
    text = all_output_text(nbformat.from_dict(ro.clean(raw, root)))
    assert "./outputs/sft_lora/tiny" in text and not ro.MACHINE_PATH.search(text)


def test_reclean_takes_the_outputs_again_from_the_executed_copy_where_the_code_is_the_same(tmp_path):
    root = tmp_path / "llm-course-kit"
    executed = synthetic(root)
    committed = ro.stamp(ro.clean(copy.deepcopy(executed), root), INFO)
    for cell in committed.cells[1:]:
        cell.outputs = []                                 # what an older clean() left
    committed.cells[2].source = "train(steps=5)"          # edited since: its (empty) outputs stay
    assert ro.reclean(committed, executed) == 3
    assert all(committed.cells[i].outputs for i in (1, 3, 4)) and not committed.cells[2].outputs
    assert committed.metadata[ro.META_KEY] == INFO


def test_collapse_progress_keeps_plain_lines():
    assert ro.collapse_progress("a\nb\r\nc\rd\n") == "a\nb\nd\n"
    assert ro.collapse_progress("x 1\rx 2\r") == "x 2"


def test_stamp_labels_the_run_and_stale_cells_finds_edits(tmp_path):
    nb = ro.clean(synthetic(tmp_path), tmp_path)
    assert ro.stale_cells(nb) == [(None, ro.stale_cells(nb)[0][1])]   # nothing recorded yet
    ro.stamp(nb, INFO)
    first = nb.cells[0].source
    assert first.startswith("# 99 · Test\n\n<!-- colab-install:start -->\nInstall notice.\n<!-- colab-install:end -->")
    assert first.endswith(ro.NOTE_END) and first.count(ro.NOTE_START) == 1
    assert "Some CPU, 2 cores, native bf16" in first and "812 GFLOP/s bf16, 201 GFLOP/s fp32" in first
    assert "2026-12-03" in first and "2.5 min" in first and "`cpu` profile" in first
    assert nb.metadata[ro.META_KEY] == INFO
    assert all(len(c.metadata[ro.META_KEY]["source_sha256"]) == 16 for c in nb.cells if c.cell_type == "code")
    assert ro.stale_cells(nb) == []

    # a later run refreshes the note where it is and leaves the rest of the cell alone
    nb.cells[0].source = first + "\n\nA line another script added."
    ro.stamp(nb, {**INFO, "date": "2026-12-09", "seconds": 900.0})
    assert nb.cells[0].source.count(ro.NOTE_START) == 1 and "2026-12-09" in nb.cells[0].source
    assert nb.cells[0].source.endswith("A line another script added.") and "15 min" in nb.cells[0].source

    # round trip through the file: nbformat's lists of lines hash like the joined source
    path = tmp_path / "99_test.ipynb"
    ro.write(nb, path)
    assert path.read_text().endswith("}\n")
    assert_outputs_current(path)

    edited = nbformat.read(path, as_version=4)
    edited.cells[2].source += "\nprint('more')"
    edited.cells.append(new_code_cell("new()"))
    assert ro.stale_cells(edited) == [(2, "edited since the reference run"),
                                      (5, "not in the reference run (no source hash)")]
    edited.cells[0].source = edited.cells[0].source.replace("Some CPU", "Other CPU")
    assert ro.stale_cells(edited)[0][0] == 0


def test_stale_message_names_notebook_cells_and_command(tmp_path):
    path = tmp_path / "03_gptq.ipynb"
    nb = ro.stamp(ro.clean(synthetic(tmp_path), tmp_path), INFO)
    nb.cells[3].source = "show(again)"
    ro.write(nb, path)
    with pytest.raises(AssertionError) as err:
        assert_outputs_current(path)
    message = str(err.value)
    assert "03_gptq.ipynb: cell 3: edited since the reference run" in message
    assert "make run" in message and "python scripts/run_course.py 03" in message


def test_cli_check_and_clean(tmp_path):
    stamped, bare = tmp_path / "01_a.ipynb", tmp_path / "02_b.ipynb"
    ro.write(ro.stamp(ro.clean(synthetic(tmp_path), tmp_path), INFO), stamped)
    ro.write(synthetic(tmp_path), bare)
    script = [sys.executable, str(ROOT / "scripts" / "reference_outputs.py")]
    ok = subprocess.run(script + ["check", str(stamped)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(script + ["check", str(stamped), str(bare)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "02_b.ipynb: whole notebook" in bad.stdout
    assert "python scripts/run_course.py 02" in bad.stdout
    dirty = tmp_path / "03_c.ipynb"
    ro.write(synthetic(ROOT), dirty)
    assert str(ROOT) in all_output_text(nbformat.read(dirty, as_version=4))
    done = subprocess.run(script + ["clean", str(dirty)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = all_output_text(nbformat.read(dirty, as_version=4))
    assert str(ROOT) not in text and "./outputs/sft_lora/tiny" in text


def fake_reference(path: Path):
    """A committed notebook as `make run` on cpu would leave it, with made-up outputs (no kernel runs)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
        cell.outputs = [new_output("stream", name="stdout", text=f"made-up output of cell {i}\n")]
    return nb


def test_run_course_writes_the_reference_notebook_and_refuses_a_changed_file(tmp_path):
    rc = _script("run_course")
    target = tmp_path / NOTEBOOKS[0].name
    target.write_text(NOTEBOOKS[0].read_text())
    executed = fake_reference(target)
    executed.cells[1].outputs[0].text = f"installed into {sysconfig.get_paths()['purelib']}\n"
    assert rc.write_reference(target, copy.deepcopy(executed), INFO)
    written = nbformat.read(target, as_version=4)
    assert written.metadata[ro.META_KEY] == INFO and "<site-packages>" in written.cells[1].outputs[0].text
    assert_outputs_current(target)

    executed.cells[-1].source += "\n# edited while the notebook ran"
    before = target.read_text()
    assert not rc.write_reference(target, executed, INFO)
    assert target.read_text() == before


def test_sync_scripts_keep_outputs_metadata_and_the_note(tmp_path):
    sync_notebooks, sync_estimates = _script("sync_notebooks"), _script("sync_estimates")
    from helpers.colab import repository_url

    for path in NOTEBOOKS:
        nb = ro.stamp(fake_reference(path), INFO)
        raw = json.loads(nbformat.writes(nb))
        outputs = [c.get("outputs") for c in raw["cells"]]
        raw = sync_estimates.synced_notebook(sync_notebooks.synced(raw, path.name, repository_url(ROOT)), path.stem)
        assert [c.get("outputs") for c in raw["cells"]] == outputs, path.name
        assert raw["metadata"][ro.META_KEY] == INFO, path.name
        assert ro.stale_cells(nbformat.from_dict(raw)) == [], path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_come_from_the_current_code(path):
    """Fails until `make run` on the cpu profile has written the reference outputs, and after any code cell changes."""
    assert_outputs_current(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_show_no_progress_bar_frozen_at_its_first_draw(path):
    """A widget's text fallback is its first draw: a bar at 0% reads as a stalled run. scripts/reference_outputs.py
    shows the final state instead, or drops the bar."""
    nb = nbformat.read(path, as_version=4)
    frozen = [(i, out.data["text/plain"][:60]) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
              for out in cell.outputs if out.get("output_type") == "display_data"
              and re.search(r"(?<!\d)0%\||(?<!\d)0it \[", ro._text(out.get("data", {}).get("text/plain", "")))]
    assert not frozen, f"{path.name}: progress bars shown at their first draw: {frozen[:5]}"


@pytest.mark.parametrize("text,leak", [
    ("saved to /work/main/outputs", True), ("see /home/alice/x.py", True), ("/tmp/tmpab12/run.json", True),
    ("/root/.cache/huggingface", True), ("/opt/venv/lib/python3.11/site-packages/torch/x.py", True),
    ("C:\\Users\\bob\\x.py", True), ("<td>/work/main/results/x.json</td>", True),
    ("./outputs/sft_lora/tiny", False), ("<site-packages>/torch/x.py", False),
    ("~/.cache/llm-course-kit", False), ("<tmp>/run.json", False), ("https://example.org/home/page", False),
    ("3/10 batches, ratio 1/2", False),
])
def test_machine_path_pattern(text, leak):
    """The pattern tests/test_notebooks_static.py uses on committed outputs: it catches what clean removes."""
    assert bool(ro.MACHINE_PATH.search(text)) == leak


def test_drop_frozen_bars_removes_only_a_bars_first_draw():
    nb = new_notebook(cells=[new_code_cell("x", outputs=[
        new_output("display_data", data={"text/plain": "score:   0%|          | 0/19 [00:00<?, ?it/s]"}),
        new_output("display_data", data={"text/plain": "Writing model shards: 0it [00:00, ?it/s]"}),
        new_output("display_data", data={"text/plain": "GPTQ w4: 100%|██████████| 30/30 [01:28<00:00]"}),
        new_output("display_data", data={"text/plain": "score: 0%|", "text/html": "<b>a table</b>"}),
        new_output("stream", name="stdout", text="accuracy 10%| of 20\n")])])
    assert ro.drop_frozen_bars(nb) == 2
    assert [o.get("data", {}).get("text/plain", o.get("text")) for o in nb.cells[0].outputs] == [
        "GPTQ w4: 100%|██████████| 30/30 [01:28<00:00]", "score: 0%|", "accuracy 10%| of 20\n"]


def test_a_notebook_that_reused_an_earlier_runs_artifacts_is_marked_in_the_run_time_table(tmp_path):
    """run_course records what a notebook reused that was made before the run started (the pipeline's "reusing ...,
    made by ... (time)" lines), and the README's run-time table marks that notebook (r) and lists what it reused."""
    import json

    import nbformat

    from helpers.results import run_times_markdown

    rc = _script("run_course")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=(
        "GPTQ w4 checkpoint: reusing ./outputs/quantized/cpu/gptq_w4_g64_ab, made by 03_gptq (2026-12-01 10:00:00)\n"
        "lora run: reusing ./outputs/06_lora/cpu, made by 06_qlora: lora, fresh process (2026-12-01 11:00:00)\n"
        "SFT adapter: reusing ./outputs/sft_lora/cpu, made by 01_sft_lora (2026-12-02 09:30:00)\n"))]
    nb.cells.append(cell)
    reused = rc.reused_from_earlier_runs(nb, "2026-12-02 09:00:00")
    assert reused == ["GPTQ w4 checkpoint (made by 03_gptq, 2026-12-01 10:00:00)",
                      "lora run (made by 06_qlora: lora, fresh process, 2026-12-01 11:00:00)"]   # not this run's SFT
    times = {"cpu-fp32": {"03_gptq": {"seconds": 400.0, "status": "ok", "date": "2026-12-02", "cpu": "c",
                                      "matmul_gflops": {"fp32": 150.0}, "reused_from_earlier_runs": reused},
                          "01_sft_lora": {"seconds": 200.0, "status": "ok", "date": "2026-12-02", "cpu": "c",
                                          "matmul_gflops": {"fp32": 150.0}}}}
    (tmp_path / "course_run_times.json").write_text(json.dumps(times))
    table = run_times_markdown(tmp_path)
    assert "| 03_gptq | 400 (r) |" in table and "| 01_sft_lora | 200 |" in table
    assert "- cpu-fp32 03_gptq: GPTQ checkpoint, lora run" in table
