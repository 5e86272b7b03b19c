"""Trainings in a fresh process (scripts/sft.py): the report they leave, the progress lines, and when a saved run
is reused."""

from __future__ import annotations

import json
import re

import pytest

from helpers import artifacts, get_profile, isolated, manifests, training


@pytest.fixture(scope="module")
def qlora_run():
    from dataclasses import replace

    profile = replace(get_profile("tiny"), sft_steps=3)  # a changed profile: the child must train it, not "tiny"
    return profile, isolated.train_isolated(profile, "qlora", learning_rate=2 * profile.sft_learning_rate)


def test_isolated_run_reports_memory_time_settings_and_saves_an_adapter(qlora_run):
    profile, report = qlora_run
    rate = 2 * profile.sft_learning_rate
    assert report["steps"] == profile.sft_steps and report["kind"] == "qlora"
    assert report["peak_rss_mb"] > 100 and report["train_seconds"] > 0
    assert len(report["rss_by_step"]) == report["steps"] and report["rss_by_step"][-1] <= report["peak_rss_mb"]
    assert report["rss_by_step"] == sorted(report["rss_by_step"])  # the peak so far, step by step
    assert 0 < report["trainable_params"] < report["total_params"]
    assert any("loss" in h for h in report["log_history"])
    folder = isolated.adapter_path(profile, "qlora", rate)
    assert folder.parent.name == "06_qlora_lr0.002" and report["adapter"] == str(folder)
    assert artifacts.read_manifest(folder)["inputs"] == json.loads(json.dumps(
        manifests.run_settings(profile, "qlora", learning_rate=rate)))
    rates = [h["learning_rate"] for h in report["log_history"] if "learning_rate" in h]
    assert max(rates) > profile.sft_learning_rate  # the override reached the trainer in the child process
    assert (folder / "adapter_config.json").is_file()
    log = folder.parent / f"{folder.name}_qlora.log"  # what the progress bar followed
    steps = [int(n) for n in re.findall(r"training step (\d+) of 3", log.read_text())]
    assert steps == list(range(1, profile.sft_steps + 1))


def test_a_saved_run_is_reused_only_with_the_same_settings(qlora_run, capsys):
    profile, report = qlora_run
    rate = 2 * profile.sft_learning_rate
    assert isolated.train_isolated(profile, "qlora", reuse=True, learning_rate=rate) == report  # same settings: no new training
    assert "qlora run: reusing" in capsys.readouterr().out
    folder = isolated.adapter_path(profile, "qlora", rate)
    manifest = json.loads((folder / artifacts.MANIFEST).read_text())
    changed = dict(manifest, inputs=dict(manifest["inputs"], learning_rate=1.0))
    (folder / artifacts.MANIFEST).write_text(json.dumps(changed))
    assert isolated.reusable_run(profile, "qlora", learning_rate=rate) is None
    assert "made from other inputs (learning_rate)" in capsys.readouterr().out
    (folder / artifacts.MANIFEST).write_text(json.dumps(manifest))
    assert isolated.reusable_run(profile, "qlora", learning_rate=rate, quant_type="fp4") is None  # another base


def test_settings_change_with_what_decides_the_result():
    profile = get_profile("tiny")
    from dataclasses import replace

    base = manifests.run_settings(profile, "lora")
    assert manifests.run_settings(replace(profile, sft_steps=5), "lora") != base
    assert manifests.run_settings(replace(profile, lora_r=8), "lora") != base
    assert manifests.run_settings(profile, "qlora") != base
    assert manifests.run_settings(profile, "qlora", quant_type="fp4") != manifests.run_settings(profile, "qlora")
    assert manifests.run_settings(profile, "lora", learning_rate=profile.sft_learning_rate) == base
    assert manifests.run_settings(profile, "lora", learning_rate=0.5)["learning_rate"] == 0.5
    # notebook 06's runs never overwrite notebook 01's adapter, which notebooks 02-07 build on
    assert isolated.adapter_path(profile, "lora").parent.name == "06_lora"
    assert isolated.adapter_path(profile, "qlora", quant_type="fp4", double_quant=False, lora_r=8).parent.name == \
        "06_qlora_fp4_no_dq_r8"


def test_unknown_kind_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown kind 'int4-lora'.*'lora', 'qlora'"):
        isolated.train_isolated(get_profile("tiny"), "int4-lora")


def test_a_failing_child_raises_with_the_end_of_its_log():
    from dataclasses import replace

    missing = replace(get_profile("tiny"), model_source="hub", model_id="no-such/model")  # offline: cannot load
    with pytest.raises(isolated.TrainingError, match=r"(?s)failed \(exit 1\).*Could not load 'no-such/model'"):
        isolated.train_isolated(missing, "lora")


def test_the_notebooks_show_the_scripts_they_run(capsys):
    from helpers.processes import show_source

    show_source("scripts/sft.py", "load_base", "main")
    out = capsys.readouterr().out
    assert "BitsAndBytesConfig(" in out and "SFTTrainer(" in out and "trainer.train()" in out
    with pytest.raises(ValueError, match="has no function"):
        show_source("scripts/sft.py", "nowhere")
