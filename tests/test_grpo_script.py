"""scripts/grpo.py: notebook 08's GRPO recipe as a script (the same GRPOConfig as the notebook's cell, bad arguments
refused before any model is loaded, one real step on `tiny` that saves an adapter with its manifest)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.profiles import get_profile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script():
    """scripts/grpo.py as a module (it imports scripts/sft.py, next to it)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location("grpo_script", ROOT / "scripts" / "grpo.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_script_builds_notebook_08s_grpo_config(script, name):
    """Notebook 08 writes its GRPOConfig(...) out; the script must train with the same settings."""
    from trl import GRPOConfig

    from helpers import training
    from helpers.paths import outputs_dir
    from notebook_code import assignment

    profile = get_profile(name)
    out = str(outputs_dir("trainer", f"grpo_{profile.name}"))
    scope = {"GRPOConfig": GRPOConfig, "profile": profile, "training": training, "outputs_dir": outputs_dir}
    cell = assignment("08_grpo", "config", "GRPOConfig", scope)
    peft_config, config = script.recipe(profile, out)
    assert config.to_dict() == cell.to_dict()
    assert peft_config.to_dict() == training.lora_config(profile).to_dict()


def test_options_reach_the_grpo_config(script):
    args = script.parse_args(["--profile", "tiny", "--max-steps", "3", "--learning-rate", "2e-4", "--beta", "0.04",
                              "--num-generations", "8"])
    _, config = script.recipe(args.profile_obj)
    profile = get_profile("tiny")
    assert (config.max_steps, config.learning_rate, config.beta, config.num_generations) == (3, 2e-4, 0.04, 8)
    assert config.per_device_train_batch_size == profile.grpo_prompts_per_step * 8   # prompts x answers per step
    assert (config.beta, config.num_generations) != (profile.grpo_beta, profile.grpo_num_generations)


@pytest.mark.parametrize("case, argv, message", [
    ("file", [], "--output-dir"),
    ("new", ["--num-generations", "1"], "grpo_num_generations=1"),
    ("new", ["--beta", "-0.1"], "must be 0 or more"),
])
def test_bad_arguments_are_refused_before_any_model_is_loaded(script, monkeypatch, tmp_path, capsys, case, argv,
                                                              message):
    from helpers import models, pipeline

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded or built before the arguments were checked")

    monkeypatch.setattr(models, "load_model", no_model)
    monkeypatch.setattr(pipeline, "sft_merged", no_model)
    target = tmp_path / "out"
    if case == "file":
        target.write_text("my notes")
    with pytest.raises(SystemExit) as exc:
        script.main(["--profile", "tiny", "--output-dir", str(target), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    if case == "file":
        assert target.read_text() == "my notes"   # left as it was
    else:
        assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if case == "file" else [])


def test_one_step_on_tiny_saves_the_adapter_with_its_manifest(tmp_path):
    from helpers import models
    from helpers.paths import fingerprint

    model_dir = models.model_path(get_profile("tiny"))   # the tiny base model stands in for notebook 01's
    env = {**os.environ, "COURSE_ARTIFACTS": str(tmp_path / "artifacts"), "COURSE_PROFILE": "tiny",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "scripts/grpo.py", "--profile", "tiny", "--model", str(model_dir),
                           "--max-steps", "1", "--beta", "0.04"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    adapter = tmp_path / "artifacts" / "outputs" / "grpo" / "tiny"   # training.adapter_dir(profile, "grpo")
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    inputs = json.loads((adapter / "manifest.json").read_text())["inputs"]
    assert inputs["sft_model"] == fingerprint(model_dir)
    assert inputs["grpo_config"]["max_steps"] == 1 and inputs["grpo_config"]["beta"] == 0.04
    assert inputs["reward"] == "helpers.grpo.correctness_reward"
    info = json.loads((adapter / "train_info.json").read_text())
    assert info["kind"] == "grpo" and info["steps"] == 1 and info["prompts"] > 0


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_the_grpo_manifest_records_what_ran(name, tmp_path):
    """Notebook 08 saves its adapter with pipeline.grpo_run_inputs(config, peft_config, rows, sft_dir): equal to what
    notebook 07 asks of notebook 08's adapter (pipeline.grpo_inputs, computed without building a GRPOConfig) when the
    cell ran the profile's recipe, and different when a student edited the GRPOConfig cell or the prompts."""
    from dataclasses import replace

    from trl import GRPOConfig

    from helpers import grpo, pipeline, training
    from helpers.paths import outputs_dir
    from notebook_code import assignment

    profile = get_profile(name)
    sft_dir = tmp_path / "sft"
    sft_dir.mkdir()
    (sft_dir / "model.safetensors").write_bytes(b"weights")
    scope = {"GRPOConfig": GRPOConfig, "profile": profile, "training": training, "outputs_dir": outputs_dir}
    cell = assignment("08_grpo", "config", "GRPOConfig", scope)   # the notebook's own GRPOConfig(...) call
    rows, peft = grpo.prompt_rows(profile), training.lora_config(profile)
    wanted = pipeline.grpo_inputs(profile, sft_dir)
    assert pipeline.grpo_run_inputs(cell, peft, rows, sft_dir) == wanted
    edited = GRPOConfig(**grpo.grpo_config_kwargs(profile, tmp_path / "o", learning_rate=cell.learning_rate * 10))
    assert pipeline.grpo_run_inputs(edited, peft, rows, sft_dir)["grpo_config"]["learning_rate"] == cell.learning_rate * 10
    assert pipeline.grpo_run_inputs(edited, peft, rows, sft_dir) != wanted
    assert pipeline.grpo_run_inputs(cell, peft, rows[:-1], sft_dir) != wanted   # other prompts
    assert pipeline.grpo_run_inputs(cell, training.lora_config(replace(profile, lora_r=2 * profile.lora_r)), rows,
                                    sft_dir) != wanted


def test_notebook_07_refuses_an_edited_grpo_adapter_and_says_why(tmp_path, monkeypatch, capsys):
    """An adapter trained with another learning rate is not taken for notebook 08's: the reuse line names the setting,
    and grpo_merged(build=False) (notebook 07 on a GPU runtime) returns None with what to do, training nothing."""
    from types import SimpleNamespace

    from helpers import grpo, pipeline, training
    from helpers.artifacts import write_manifest

    profile = get_profile("tiny")
    sft_dir, adapter = tmp_path / "sft", tmp_path / "grpo"
    for d in (sft_dir, adapter):
        d.mkdir()
    (sft_dir / "model.safetensors").write_bytes(b"weights")
    write_manifest(adapter, pipeline.grpo_inputs(profile, sft_dir))
    assert "will reuse" in pipeline.grpo_reuse_line(profile, sft_dir, adapter)
    edited = SimpleNamespace(**grpo.grpo_config_kwargs(profile, "unused", learning_rate=10 * profile.grpo_learning_rate))
    write_manifest(adapter, pipeline.grpo_run_inputs(edited, training.lora_config(profile), grpo.prompt_rows(profile), sft_dir))
    line = pipeline.grpo_reuse_line(profile, sft_dir, adapter)
    assert "Not the profile's recipe" in line and "grpo_config.learning_rate" in line

    monkeypatch.setattr(pipeline, "sft_merged", lambda profile, tokenizer=None: sft_dir)
    monkeypatch.setattr(training, "adapter_dir", lambda profile, name="sft_lora": adapter)
    import helpers.isolated as isolated
    monkeypatch.setattr(isolated, "grpo_isolated", lambda *a, **k: pytest.fail("build=False must not train"))
    assert pipeline.grpo_merged(profile, build=False) is None
    out = capsys.readouterr().out
    assert "No GRPO model yet" in out and "Run notebook 08 first" in out
