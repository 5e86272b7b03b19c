"""Trainings in a fresh process: the report they leave, the progress lines, and when a saved run is reused."""

from __future__ import annotations

import json
import re

import pytest

from helpers import get_profile, isolated, training


@pytest.fixture(scope="module")
def qlora_run():
    from dataclasses import replace

    profile = replace(get_profile("tiny"), sft_steps=3)  # a changed profile: the child must train it, not "tiny"
    return profile, isolated.train_isolated(profile, "qlora", learning_rate=2 * profile.sft_learning_rate)


def test_isolated_run_reports_memory_time_settings_and_saves_an_adapter(qlora_run):
    profile, report = qlora_run
    assert report["steps"] == profile.sft_steps and report["kind"] == "qlora"
    assert report["peak_rss_mb"] > 100 and report["train_seconds"] > 0
    assert len(report["rss_by_step"]) == report["steps"] and report["rss_by_step"][-1] <= report["peak_rss_mb"]
    assert report["rss_by_step"] == sorted(report["rss_by_step"])  # the peak so far, step by step
    assert 0 < report["trainable_params"] < report["total_params"]
    assert any("loss" in h for h in report["log_history"])
    assert report["settings"] == isolated.run_settings(profile, "qlora", learning_rate=2 * profile.sft_learning_rate)
    rates = [h["learning_rate"] for h in report["log_history"] if "learning_rate" in h]
    assert max(rates) > profile.sft_learning_rate  # the override reached the trainer in the child process
    assert (training.adapter_dir(profile, "06_qlora") / "adapter_config.json").is_file()
    log = isolated.adapter_path(profile, "qlora").parent / "tiny_qlora.log"  # what the progress bar followed
    steps = [int(n) for n in re.findall(r"training step (\d+) of 3", log.read_text())]
    assert steps == list(range(1, profile.sft_steps + 1))


def test_a_saved_run_is_reused_only_with_the_same_settings(qlora_run, capsys):
    profile, report = qlora_run
    rate = 2 * profile.sft_learning_rate
    assert isolated.train_isolated(profile, "qlora", reuse=True, learning_rate=rate) == report  # same settings: no new training
    assert "reusing the run" in capsys.readouterr().out
    path = isolated.adapter_path(profile, "qlora") / isolated.REPORT
    changed = dict(report, settings=dict(report["settings"], learning_rate=1.0))
    path.write_text(json.dumps(changed))
    assert isolated.reusable_run(profile, "qlora", learning_rate=rate) is None
    assert "used other settings" in capsys.readouterr().out
    path.write_text(json.dumps({k: v for k, v in report.items() if k != "peak_rss_mb"}))
    assert isolated.reusable_run(profile, "qlora", learning_rate=rate) is None
    assert "inside a notebook kernel" in capsys.readouterr().out
    path.write_text(json.dumps(report))


def test_settings_change_with_what_decides_the_result():
    profile = get_profile("tiny")
    from dataclasses import replace

    base = isolated.run_settings(profile, "lora")
    assert isolated.run_settings(replace(profile, sft_steps=5), "lora") != base
    assert isolated.run_settings(replace(profile, lora_r=8), "lora") != base
    assert isolated.run_settings(profile, "qlora") != base
    assert isolated.run_settings(profile, "lora", learning_rate=profile.sft_learning_rate) == base
    assert isolated.run_settings(profile, "lora", learning_rate=0.5)["learning_rate"] == 0.5
    # LoRA at another learning rate must not overwrite notebook 01's adapter, which notebooks 02-07 build on
    assert isolated.adapter_path(profile, "lora").parent.name == "sft_lora"
    assert isolated.adapter_path(profile, "lora", learning_rate=0.5).parent.name == "06_lora"


def test_unknown_kind_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown kind 'int4-lora'.*'lora', 'qlora'"):
        isolated.train_isolated(get_profile("tiny"), "int4-lora")


def test_a_failing_child_raises_with_the_end_of_its_log():
    from dataclasses import replace

    missing = replace(get_profile("tiny"), model_source="hub", model_id="no-such/model")  # offline: cannot load
    with pytest.raises(isolated.TrainingError, match=r"(?s)failed \(exit 1\).*Could not load 'no-such/model'"):
        isolated.train_isolated(missing, "lora")
