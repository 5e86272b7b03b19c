import json

import pytest
import torch

from helpers import manifests, profiles, training
from helpers.data import DataError, sft_rows
from helpers.models import load_model, load_model_and_tokenizer
from helpers.profiles import get_profile


@pytest.fixture(scope="module")
def trained():
    profile = get_profile("tiny")
    model, tok, _ = load_model_and_tokenizer(profile)
    trainer = training.train_sft_lora(profile, model, tok, sft_rows(profile)[:16], max_steps=3, logging_steps=1)
    return profile, tok, trainer


def test_precision_flags_per_profile(monkeypatch):
    cpu = get_profile("cpu")  # bf16 autocast only where this CPU computes bf16 natively (helpers.hardware)
    assert training.precision_kwargs(cpu) == {"use_cpu": True, "bf16": cpu.precision == "bf16", "fp16": False}
    # (an SFTConfig with fp16/bf16 on GPU cannot be built on a CPU machine: check the flags it gets)
    monkeypatch.setattr(profiles, "_cuda_info", lambda: (True, (7, 5), 15.0))
    t4 = get_profile("t4")
    assert training.precision_kwargs(t4) == {"bf16": False, "fp16": True} and t4.gradient_checkpointing
    monkeypatch.setattr(profiles, "_cuda_info", lambda: (True, (8, 0), 80.0))
    assert training.precision_kwargs(get_profile("a100")) == {"bf16": True, "fp16": False}


def test_sft_config_uses_current_trl_argument_names():
    cfg = training.sft_config(get_profile("cpu"), "/tmp/x")
    assert cfg.max_length == 256 and cfg.max_steps == 60 and cfg.learning_rate == 3e-4
    assert not hasattr(cfg, "max_seq_length")


def test_training_logs_loss_and_trains_only_lora(trained):
    _, _, trainer = trained
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(l > 0 for l in losses)
    names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_trained_model_runs_in_its_own_dtype_and_merges_exactly(trained):
    profile, tok, trainer = trained
    batch = tok(["hello there", "a longer prompt to pad"], return_tensors="pt", padding=True)
    with torch.no_grad():
        adapter_logits = trainer.model(**batch).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_logits = trainer.model(**batch).logits.float()
    # The autocast wrapper was removed after training: fp32 forward differs from a bf16 one ...
    assert not torch.allclose(adapter_logits, bf16_logits, atol=1e-6)
    import copy

    merged = copy.deepcopy(trainer.model).merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(**batch).logits
    # ... and the merged model equals the adapter model up to fp32 rounding.
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-4)


def test_save_reload_adapter_and_the_pipeline_reuses_it_only_with_its_settings(trained, capsys):
    from helpers import artifacts, pipeline

    profile, tok, trainer = trained
    path = manifests.save_adapter(trainer, profile, info={"note": "test"})  # manifest: notebook 01's settings
    assert (path / "adapter_config.json").is_file()
    assert json.loads((path / "train_info.json").read_text())["profile"] == "tiny"
    assert pipeline.sft_adapter(profile) == path  # reused, not retrained
    assert "SFT adapter: reusing" in capsys.readouterr().out
    assert artifacts.read_manifest(path)["inputs"] == json.loads(json.dumps(manifests.run_settings(profile)))
    assert not artifacts.reusable(path, manifests.run_settings(profile, learning_rate=0.5), "SFT adapter")
    assert "made from other inputs (learning_rate)" in capsys.readouterr().out
    reloaded = training.load_adapter(load_model(profile), path)
    batch = tok(["check"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, trainer.model(**batch).logits, atol=1e-5)


def test_missing_adapter_says_how_to_produce_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_sft_lora.ipynb.*pipeline.sft_adapter"):
        training.load_adapter(torch.nn.Linear(2, 2), tmp_path / "nowhere")


def test_training_data_without_columns_is_refused(trained):
    profile, tok, trainer = trained
    with pytest.raises(DataError, match="missing column"):
        training.train_sft_lora(profile, trainer.model, tok, [{"text": "x"}])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("outputs", [("log_probs",), ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")])
def test_full_logits_head_matches_trl_chunked_head(outputs, temperature):
    """The CPU replacement gives TRL's values and gradients (fp32: no rounding on either side)."""
    from trl.kernels import ChunkedLogProbFunction

    torch.manual_seed(0)
    hidden = torch.randn(40, 16, requires_grad=True)
    weight = torch.randn(300, 16) * 0.5
    targets = torch.randint(0, 300, (40,))
    targets[3] = int((hidden[3] @ weight.T).argmax())  # at least one target that is the argmax
    plain = training.FullLogitsLogProb(ChunkedLogProbFunction)
    got = plain.apply(hidden, weight, None, targets, temperature, 128, None, 1.0, outputs)
    want = ChunkedLogProbFunction.apply(hidden, weight, None, targets, temperature, 128, None, 1.0, outputs)
    for name, g, w in zip(("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"), got, want):
        assert (g is None) == (w is None) == (name not in outputs), name
        if g is not None:
            torch.testing.assert_close(g.float(), w.float(), rtol=1e-5, atol=1e-5, msg=name)
    if "is_top1" in outputs:
        assert bool(got[4][3])
    loss = lambda out: out[0].sum() + (out[1].sum() if out[1] is not None else 0)
    (grad_got,) = torch.autograd.grad(loss(got), hidden)
    (grad_want,) = torch.autograd.grad(loss(want), hidden)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-4, atol=1e-5)


def test_full_logits_head_is_used_only_inside_the_block(monkeypatch):
    from trl.trainer import utils as trl_utils

    original, use_triton = trl_utils._ChunkedLogProbFunction, trl_utils._use_triton
    with training.full_logits_head_on_cpu():
        assert isinstance(trl_utils._ChunkedLogProbFunction, training.FullLogitsLogProb)
        assert trl_utils._use_triton(torch.device("cpu"))
        assert trl_utils._use_triton(torch.device("cuda")) == use_triton(torch.device("cuda"))   # TRL's own answer
    assert trl_utils._ChunkedLogProbFunction is original and trl_utils._use_triton is use_triton
    assert not trl_utils._use_triton(torch.device("cpu"))
    monkeypatch.delattr(trl_utils, "_ChunkedLogProbFunction")
    with pytest.warns(UserWarning, match="slower on CPU"):
        with training.full_logits_head_on_cpu():
            pass


def test_inside_the_block_only_labelled_positions_are_scored_with_trls_loss_and_gradients(monkeypatch):
    """TRL's fused forward on CPU as TRL ships it (every position scored, then masked) against the same forward inside
    :func:`training.full_logits_head_on_cpu` (only positions with a label): same loss, log-probabilities and gradients,
    and the head sees only the labelled rows."""
    from trl.trainer.utils import add_fused_lm_head

    model = load_model(get_profile("tiny")).float()
    add_fused_lm_head(model)
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 12))
    attention = torch.ones_like(ids)
    attention[1, 8:] = 0  # padding
    labels = ids.clone()
    labels[:, :5] = -100  # a prompt
    labels[attention == 0] = -100

    def run():
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
        out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return out.loss.detach(), out.log_probs.detach(), grads

    loss_trl, logp_trl, grads_trl = run()
    rows = []
    apply = training.FullLogitsLogProb.apply
    monkeypatch.setattr(training.FullLogitsLogProb, "apply", lambda self, *a: rows.append(a[0].shape[0]) or apply(self, *a))
    with training.full_logits_head_on_cpu():
        loss, logp, grads = run()
    assert rows == [int((labels[:, 1:] != -100).sum())] and rows[0] < labels[:, 1:].numel()
    torch.testing.assert_close(loss, loss_trl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logp, logp_trl, rtol=1e-5, atol=1e-5)
    assert len(grads) == len(grads_trl)
    for g, w in zip(grads, grads_trl):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_training_on_cpu_scores_through_the_full_logits_head(monkeypatch):
    calls = []
    apply = training.FullLogitsLogProb.apply
    monkeypatch.setattr(training.FullLogitsLogProb, "apply", lambda self, *a: calls.append(a[0].device.type) or apply(self, *a))
    profile = get_profile("tiny")
    model, tok, _ = load_model_and_tokenizer(profile)
    training.train_sft_lora(profile, model, tok, sft_rows(profile)[:8], max_steps=1)
    assert calls and set(calls) == {"cpu"}


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_notebook_01_and_scripts_sft_build_the_same_recipe(name):
    """Notebook 01 writes its LoraConfig(...) and SFTConfig(...) out; scripts/sft.py (notebook 06, and the pipeline
    when 01 has not run) writes them again. Both must equal training.lora_config / sft_config."""
    import importlib.util
    from pathlib import Path

    from peft import LoraConfig
    from trl import SFTConfig

    from helpers.paths import outputs_dir
    from notebook_code import assignment

    profile = get_profile(name)
    out = str(outputs_dir("trainer", f"sft_{profile.name}"))
    scope = {"profile": profile, "training": training, "outputs_dir": outputs_dir, "LoraConfig": LoraConfig,
             "SFTConfig": SFTConfig}
    want_lora, want_args = training.lora_config(profile).to_dict(), training.sft_config(profile, out).to_dict()
    assert assignment("01_sft_lora", "peft_config", "LoraConfig", scope).to_dict() == want_lora
    assert assignment("01_sft_lora", "args", "SFTConfig", scope).to_dict() == want_args
    spec = importlib.util.spec_from_file_location("sft_script", Path(__file__).resolve().parent.parent / "scripts" / "sft.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    lora, args = script.recipe(profile, out)
    assert lora.to_dict() == want_lora and args.to_dict() == want_args


def test_full_fine_tuning_when_peft_config_is_none():
    profile = get_profile("tiny")
    model, tok, _ = load_model_and_tokenizer(profile)
    trainer = training.train_sft_lora(profile, model, tok, sft_rows(profile)[:8], peft_config=None, max_steps=1)
    params = list(trainer.model.parameters())
    assert sum(p.numel() for p in params if p.requires_grad) == sum(p.numel() for p in params) and not any("lora_" in n for n, _ in trainer.model.named_parameters())


def test_reading_the_settings_leaves_a_live_trainer_working(trained):
    """Building a TRL config resets Accelerate's state; the manifests are computed without building one."""
    from helpers import manifests

    profile, _, trainer = trained
    manifests.run_settings(profile)
    manifests.dpo_settings(profile)
    assert trainer.accelerator.device.type == "cpu"


@pytest.mark.parametrize("bf16", [True, False])
def test_eager_attention_only_while_training_in_bf16_on_cpu_and_the_same_outputs(bf16):
    """helpers.training.eager_attention_for_bf16_on_cpu: eager attention inside the block for a bf16 trainer on CPU
    (torch's fused attention has a slow bf16 backward there), sdpa again after it, and sdpa throughout in fp32; the
    two implementations give the same logits at every real position of a padded batch (a padding position's own
    output, which no loss reads, differs: it attends to nothing)."""
    from types import SimpleNamespace

    from peft import get_peft_model

    profile = get_profile("tiny")
    model = get_peft_model(load_model(profile), training.lora_config(profile))
    base = model.get_base_model()
    assert base.config._attn_implementation == "sdpa"
    ids = torch.randint(3, 100, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0   # left padding (generation, DPO's prompts)
    mask[2, 8:] = 0   # right padding (SFT's batches)

    def real_logits():
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits[mask == 1]

    fused = real_logits()
    trainer = SimpleNamespace(model=model, ref_model=None, args=SimpleNamespace(bf16=bf16))
    with training.eager_attention_for_bf16_on_cpu(trainer):
        assert base.config._attn_implementation == ("eager" if bf16 else "sdpa")
        inside = real_logits()
    assert base.config._attn_implementation == "sdpa"
    torch.testing.assert_close(inside, fused, rtol=1e-5, atol=1e-5)
