"""The training scripts under `accelerate launch`: two CPU processes with DDP (gloo), adapters in the notebooks'
format that notebook 02's code loads, and accelerate config files that parse."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from helpers import dpo, models, pipeline
from helpers.paths import REPO_ROOT
from helpers.profiles import get_profile

CONFIGS = REPO_ROOT / "configs"
ACCELERATE = Path(sys.executable).with_name("accelerate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, output: Path, *args: str) -> dict:
    """``accelerate launch --config_file configs/cpu_ddp_2proc.yaml scripts/<script> --profile tiny``; its report."""
    command = [str(ACCELERATE), "launch", "--config_file", str(CONFIGS / "cpu_ddp_2proc.yaml"),
               "--main_process_port", str(_free_port()), str(REPO_ROOT / "scripts" / script),
               "--profile", "tiny", "--output-dir", str(output), *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=os.environ.copy())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (out.stdout + out.stderr).count("adapter saved in") == 1   # one process writes it
    return json.loads((output / "train_info.json").read_text())


def tensors(folder: Path) -> dict:
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.fixture(scope="module")
def ddp_sft(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp") / "sft"
    return folder, launch("sft.py", folder)


def test_two_cpu_processes_train_sft_with_ddp_over_gloo(ddp_sft):
    folder, report = ddp_sft
    profile = get_profile("tiny")
    assert report["num_processes"] == 2 and report["backend"] == "gloo"
    assert report["global_batch"] == 2 * profile.train_batch_size and report["steps"] == profile.sft_steps
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["inputs"]["num_processes"] == 2   # never taken for notebook 01's one-process adapter


def test_ddp_adapter_has_the_notebooks_format_and_loads_in_notebook_02s_code(ddp_sft):
    folder, _ = ddp_sft
    profile = get_profile("tiny")
    notebook_adapter = pipeline.sft_adapter(profile)            # notebook 01's adapter (one process)
    assert tensors(folder) == tensors(notebook_adapter)
    ours, theirs = (json.loads((f / "adapter_config.json").read_text()) for f in (folder, notebook_adapter))
    for key in ("r", "lora_alpha", "peft_type", "task_type", "base_model_name_or_path"):
        assert ours[key] == theirs[key], key
    assert sorted(ours["target_modules"]) == sorted(theirs["target_modules"])   # saved from a set: any order
    merged = pipeline.merged(profile, folder, "ddp_sft_merged")  # notebook 02's section 3: merge, then load
    tokenizer = models.load_tokenizer(profile)
    scores = dpo.score_pairs(models.load_model(profile, str(merged)), tokenizer, dpo.preference_rows(profile, "eval"))
    assert scores.chosen.isfinite().all() and len(scores.chosen) == profile.n_eval


def test_two_cpu_processes_train_dpo(tmp_path):
    report = launch("dpo.py", tmp_path / "dpo")
    assert report["num_processes"] == 2 and report["backend"] == "gloo" and report["kind"] == "dpo"
    assert tensors(tmp_path / "dpo") == tensors(pipeline.sft_adapter(get_profile("tiny")))


@pytest.mark.parametrize("name, kind", [("cpu_ddp_2proc", "MULTI_GPU"), ("multi_gpu_ddp", "MULTI_GPU"),
                                        ("fsdp", "FSDP"), ("deepspeed_zero3", "DEEPSPEED")])
def test_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert str(config.distributed_type).endswith(kind)
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 3


def test_readme_launch_commands_name_existing_configs_and_scripts():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Scaling out", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"configs/[\w.]+\.yaml", section)) | set(re.findall(r"scripts/\w+\.py", section))
    assert {"configs/fsdp.yaml", "configs/deepspeed_zero3.yaml", "configs/cpu_ddp_2proc.yaml"} <= named
    assert all((REPO_ROOT / path).is_file() for path in named), named


def test_children_of_a_distributed_worker_run_on_their_own(monkeypatch):
    """A worker of `accelerate launch` that starts a fresh process (scripts/dpo.py building notebook 01's adapter
    with scripts/sft.py) must not hand it the workers' RANK / WORLD_SIZE / MASTER_PORT: the child would wait forever
    to join their process group."""
    from helpers.paths import helper_env

    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "29500", "LOCAL_RANK": "0",
                       "TORCHELASTIC_RUN_ID": "x", "ACCELERATE_MIXED_PRECISION": "no"}.items():
        monkeypatch.setenv(key, value)
    env = helper_env()
    assert not {"RANK", "WORLD_SIZE", "MASTER_PORT", "LOCAL_RANK", "TORCHELASTIC_RUN_ID",
                "ACCELERATE_MIXED_PRECISION"} & set(env)
    assert env["HF_HUB_OFFLINE"] == "1" and str(REPO_ROOT) in env["PYTHONPATH"]
