"""The GPU path without a GPU: what a T4 or an A100 run depends on, checked on the CPU with faked devices, recorded
calls, memory estimates and shape checks (issue: Colab first). ``scripts/gpu_check.py``'s CPU-side logic too."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.overrides import TorchFunctionMode

from helpers import dpo, measure, models, plots, quant, results, serving, text, training
from helpers.profiles import PROFILES

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 49152  # SmolLM2's vocabulary (t4: SmolLM2-360M, a100: SmolLM2-1.7B)


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny():
    profile = PROFILES["tiny"]
    return models.load_model(profile), models.load_tokenizer(profile)


def _pairs(n: int, long_every: int = 3) -> list[dict]:
    rows = []
    for i in range(n):
        answer = " ".join(["word"] * (60 if i % long_every == 0 else 4))
        rows.append({"prompt": [{"role": "user", "content": f"Question {i}?"}],
                     "chosen": [{"role": "assistant", "content": f"{answer} yes {i}"}],
                     "rejected": [{"role": "assistant", "content": f"no {i}"}]})
    return rows


# --- 1: held-out preference pairs: bounded memory, the training length filter -----------------------------------


def test_chunked_log_probabilities_equal_the_full_log_softmax():
    logits = torch.randn(3, 7, 50, dtype=torch.bfloat16)
    targets = torch.randint(0, 50, (3, 7))
    full = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    assert torch.allclose(dpo.token_logps(logits, targets, chunk=4), full, atol=1e-5)


class LargestFp32Vocab(TorchFunctionMode):
    """Records the largest fp32 tensor with the vocabulary as its last dimension that any operation returns."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.largest = vocab, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim() and t.shape[-1] == self.vocab:
                self.largest = max(self.largest, t.numel())
        return out


def test_pair_scoring_bounds_batches_and_never_holds_fp32_logits_of_a_whole_batch(tiny, monkeypatch):
    """A bf16 model returns bf16 logits; scoring may hold at most one chunk of them in fp32, and every batch stays
    within the token budget (the old code scored 16 pairs at once and copied their logits to fp32 twice)."""
    model, tok = tiny
    model = model.to(torch.bfloat16)
    try:
        pairs = _pairs(9)
        shapes = []
        forward = model.forward

        def recording(*args, **kwargs):
            shapes.append(tuple(kwargs["input_ids"].shape))
            return forward(*args, **kwargs)

        monkeypatch.setattr(model, "forward", recording)
        monkeypatch.setattr(dpo, "LOGP_CHUNK", 8)
        monkeypatch.setattr(dpo, "SCORING_TOKENS", 160)
        vocab = model.config.vocab_size
        with LargestFp32Vocab(vocab) as mode:
            scores = dpo.score_pairs(model, tok, pairs, batch_size=16)
        assert mode.largest <= 8 * vocab, f"an fp32 tensor of {mode.largest // vocab} positions x vocab was built"
        answer_passes = [s for s in shapes if s[0] > 0][1:]
        assert len({s[0] for s in answer_passes}) > 1, "long and short pairs should be batched apart"
        assert all(rows * width <= 160 or rows == 1 for rows, width in answer_passes), answer_passes
        # the same numbers as one pair at a time, in the input order
        one = [dpo.score_pairs(model, tok, [p], batch_size=1) for p in pairs[:3]]
        assert torch.allclose(scores.chosen[:3], torch.cat([o.chosen for o in one]), atol=0.1)
    finally:
        model.to(torch.float32)


def test_scoring_batches_respect_the_token_budget_and_cover_every_row():
    lengths = [1300, 40, 900, 35, 512, 512, 60, 2000]
    batches = dpo.scoring_batches(lengths, batch_size=16, max_tokens=2048)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 2048 for b in batches)


def test_scoring_memory_on_t4_shapes_stays_under_one_gb():
    """SmolLM2-360M on a T4: fp16 logits, vocabulary 49152, pairs up to the t4 profile's max_length (the filter) and
    a 1,300-token pair alone. Estimate under 1 GB per batch (the old path: 16 x 1300 x 49152 in fp16 plus two fp32
    copies, about 9 GB by the same arithmetic)."""
    length = PROFILES["t4"].max_length
    batches = dpo.scoring_batches([length] * 32 + [1300], batch_size=16)
    worst = max(dpo.scoring_memory_gb(len(b), max(([length] * 32 + [1300])[i] for i in b), VOCAB) for b in batches)
    assert worst < 1.0, worst
    old = dpo.scoring_memory_gb(16, 1300, VOCAB, chunk=16 * 1300) + 16 * 1300 * VOCAB * 4 / 1e9
    assert old > 9, old


def test_held_out_dataset_pairs_use_the_training_length_filter(tiny, capsys):
    _, tok = tiny
    t4 = dataclasses.replace(PROFILES["t4"], hub_data="fixtures", preference_test_rows=8)
    every = dpo.dataset_test_pairs(dataclasses.replace(t4, max_length=100_000), tok)
    lengths = sorted(max(len(tok.apply_chat_template(p["prompt"] + p[a], tokenize=True, return_dict=False))
                         for a in ("chosen", "rejected")) for p in every)
    cut = dataclasses.replace(t4, max_length=lengths[len(lengths) // 2])
    kept = dpo.dataset_test_pairs(cut, tok)
    assert 0 < len(kept) < len(every)
    assert f"{len(every) - len(kept)} of {len(every)} rows are longer than max_length" in capsys.readouterr().out


# --- 2: serving.reload on the profile's device and dtype --------------------------------------------------------


@pytest.mark.parametrize("name, device_map, dtype", [("t4", "auto", torch.float16), ("a100", "auto", torch.bfloat16),
                                                     ("tiny", None, torch.float32)])
def test_reload_loads_on_the_profiles_device_and_dtype(tmp_path, monkeypatch, name, device_map, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    calls = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda folder, **kw: calls.append(kw) or "model")
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda folder, **kw: "tokenizer")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert serving.reload(tmp_path, PROFILES[name]) == ("model", "tokenizer")
    assert calls[0].get("device_map") == device_map and calls[0]["dtype"] == dtype


# --- 3: each variant's dtype is recorded (AWQ runs in fp16 on CUDA) ------------------------------------------------


def test_variant_dtype_is_recorded_and_a_different_one_is_said(tiny, capsys):
    model, tok = tiny
    assert measure.variant_dtype(model, PROFILES["tiny"]) == ("float32", None)
    half = model.to(torch.float16)
    try:
        dtype, note = measure.variant_dtype(half, PROFILES["a100"])
        assert dtype == "float16" and "not the profile's bfloat16" in note and "AWQ" in note
        assert measure.variant_dtype(half, PROFILES["t4"]) == ("float16", None)
        harness = measure.Harness(tok, PROFILES["a100"], [], "")
        taken = {"perplexity": 9.0, "skill_accuracy": 0.5, "preference_accuracy": 0.5}
        harness.record("awq_w4", half, adopt=(taken, "elsewhere"), speed=False)
        assert harness.dtypes["awq_w4"] == "float16" and harness.outcomes["awq_w4"]["dtype"] == "float16"
        assert "awq_w4 runs in float16, not the profile's bfloat16" in capsys.readouterr().out
    finally:
        model.to(torch.float32)


def test_int8_layers_in_a_bf16_model_say_their_inputs_are_quantized_in_fp16():
    """bitsandbytes' MatMul8bitLt casts bf16 activations to fp16 before quantizing them: on an A100 (bf16) the int8 row
    says so; a bf16 model without int8 layers, and a CPU profile, say nothing."""
    class Linear8bitLt(torch.nn.Linear):   # the name bitsandbytes' layer has; the check reads the class name
        pass

    int8 = torch.nn.Sequential(Linear8bitLt(4, 4), torch.nn.Linear(4, 4)).to(torch.bfloat16)
    dtype, note = measure.variant_dtype(int8, PROFILES["a100"])
    assert dtype == "bfloat16" and "float16" in note and "MatMul8bitLt" in note
    assert measure.variant_dtype(torch.nn.Linear(4, 4).to(torch.bfloat16), PROFILES["a100"]) == ("bfloat16", None)
    assert measure.variant_dtype(int8, PROFILES["cpu"])[1] is None


# --- 4: full fine-tuning of an fp16 model with fp16=True -----------------------------------------------------------


def test_fp16_trainable_weights_become_fp32_so_the_gradient_scaler_can_unscale():
    trainable = torch.nn.Linear(4, 4).to(torch.float16)
    frozen = torch.nn.Linear(4, 4).to(torch.float16).requires_grad_(False)
    model = torch.nn.Sequential(trainable, frozen)

    def unscale():
        scaler = torch.amp.GradScaler("cpu")
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        loss = trainable.weight.float().sum() + trainable.bias.float().sum()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)

    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        unscale()   # what the T4 run of notebook 01's exercise 5 met
    trainable.zero_grad(set_to_none=True)
    fake = SimpleNamespace(args=SimpleNamespace(bf16=False, fp16=True), model=model)
    assert training.fp32_trainable_weights(fake) == ["0.weight", "0.bias"]
    assert trainable.weight.dtype == torch.float32 and frozen.weight.dtype == torch.float16
    unscale()


# --- 5: the namespaced WikiText id --------------------------------------------------------------------------------


def test_wikitext_is_read_from_its_namespaced_id(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a) or {"text": ["a ", "b"]})
    assert text.perplexity_text("wikitext") == "a b"
    assert calls[0][:2] == ("Salesforce/wikitext", "wikitext-2-raw-v1")


# --- 7: how many passes DPO makes over the pairs that fit ----------------------------------------------------------


def test_training_passes_count_the_rows_that_fit():
    config = SimpleNamespace(max_steps=100, per_device_train_batch_size=8, gradient_accumulation_steps=2)
    assert "1600 rows from the 800 that fit: 2.00 passes" in dpo.training_passes(config, 800, "DPO")


# --- 9: the notebook's own peak CUDA memory -----------------------------------------------------------------------


def test_notebook_peak_survives_per_variant_resets(monkeypatch):
    counter = {"peak": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: counter["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: counter.update(peak=0))
    monkeypatch.setattr(results, "_PEAK_BEFORE_RESETS", 0)
    counter["peak"] = 900e6       # training, before any variant
    measure.reset_variant_peak()
    counter["peak"] = 300e6       # the first variant
    measure.reset_variant_peak()
    counter["peak"] = 200e6       # the last variant
    assert measure.notebook_peak_cuda_mb() == pytest.approx(900)
    assert results.peak_cuda_mb() == pytest.approx(900)   # what write_results records in extra.runtime


def test_gpu_check_guard_keeps_the_kernel_peak_across_resets(monkeypatch, tmp_path):
    gpu_check = _gpu_check()
    counter = {"peak": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: counter["peak"])
    guard = gpu_check.Guard("tiny_t4", tmp_path / "g.json", device="cpu")
    counter["peak"] = 700e6
    guard.reset_peak(lambda: counter.update(peak=0))
    counter["peak"] = 100e6
    guard.write()
    assert json.loads((tmp_path / "g.json").read_text())["notebook_peak_cuda_mb"] == pytest.approx(700)


# --- 10: one GPU per rank under accelerate launch ----------------------------------------------------------------


def test_each_rank_loads_on_its_local_gpu(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert models.from_pretrained_kwargs(PROFILES["t4"])["device_map"] == "auto"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert models.from_pretrained_kwargs(PROFILES["t4"])["device_map"] == {"": 3}
    assert "device_map" not in models.from_pretrained_kwargs(PROFILES["tiny"])   # CPU profiles: no device map


# --- 11: the speed label names the device; GGUF rounding in 16-bit storage is measured and said -----------------


def test_speed_label_names_the_gpu(monkeypatch):
    assert plots.speed_label() == "tokens/s (this CPU)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-40GB")
    assert plots.speed_label() == "tokens/s (NVIDIA A100-SXM4-40GB)"
    cells = "".join("".join(c["source"]) for c in
                    json.loads((ROOT / "notebooks" / "05_bitsandbytes_int8_nf4.ipynb").read_text())["cells"])
    assert "plots.speed_label()" in cells and "tokens/s (this CPU)" not in cells


def test_gguf_q8_in_bf16_storage_reports_the_extra_rounding(tiny, capsys):
    model, _ = tiny
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        quant.gguf_model(model, "Q8_0")
        fp32 = model.gguf_storage
        assert fp32["stored_in"] == ["float32"] and fp32["storage_rel_rms_error"] == 0 and not capsys.readouterr().out
        model.load_state_dict(saved)
        quant.gguf_model(model.to(torch.bfloat16), "Q8_0")
        bf16 = model.gguf_storage
        assert bf16["storage_rel_rms_error"] > 0.2 * bf16["gguf_rel_rms_error"]   # same order as Q8_0's own error
        assert "Q8_0 simulated in bfloat16" in capsys.readouterr().out
    finally:
        model.to(torch.float32).load_state_dict(saved)


# --- scripts/gpu_check.py: arguments, shards, the guard's checks, the fp16 probe ----------------------------------


STEMS = ["01_sft_lora", "02_dpo", "03_gptq", "04_awq", "05_bitsandbytes_int8_nf4", "06_qlora", "07_method_comparison"]


def test_gpu_check_arguments():
    gpu_check = _gpu_check()
    known = {"t4": "tiny_t4", "a100": "tiny_a100"}
    args = gpu_check.parse_args(["t4", "01", "02"], STEMS, known)
    assert args["kinds"] == ["t4"] and args["notebooks"] == ["01_sft_lora", "02_dpo"] and not args["probe"]
    assert gpu_check.parse_args([], STEMS, known)["kinds"] == ["t4", "a100"]
    assert gpu_check.parse_args(["t4", "probe"], STEMS, known)["notebooks"] == []
    with pytest.raises(SystemExit, match="unknown argument 'v100'"):
        gpu_check.parse_args(["v100"], STEMS, known)


def test_gpu_check_shards_cover_every_notebook_within_a_slot():
    gpu_check = _gpu_check()
    shards = gpu_check.plan_shards(["t4", "a100"], STEMS)
    for kind in ("t4", "a100"):
        assert [s for sh in shards if sh["kind"] == kind for s in sh["notebooks"]] == STEMS
    assert all(sh["estimate_s"] <= gpu_check.SHARD_LIMIT_S for sh in shards)
    assert any(sh.get("probe") for sh in shards) and shards[0]["command"].startswith('make gpu-check ARGS="t4 01')


def test_gpu_check_refuses_bf16_under_tiny_t4_and_models_off_the_gpu():
    gpu_check = _gpu_check()
    bf16 = torch.nn.Linear(4, 4).to(torch.bfloat16)
    problems = gpu_check.model_problems(bf16, "tiny_t4")
    assert any("not on cuda" in p for p in problems) and any("bf16 tensor(s) under tiny_t4" in p for p in problems)
    assert gpu_check.model_problems(bf16, "tiny_a100", device="cpu") == []
    assert gpu_check.model_problems(torch.nn.Linear(4, 4).half().to("meta"), "tiny_t4", device="meta") == []
    guard = gpu_check.Guard("tiny_t4", Path("/dev/null"), device="cpu")
    with pytest.raises(AssertionError, match="bf16"):
        guard.check(bf16)
    assert gpu_check.output_problems({"logits": torch.zeros(1, dtype=torch.bfloat16)}, "tiny_t4")


def test_gpu_check_selection_beyond_a_slot_is_refused_with_the_plan(capsys):
    gpu_check = _gpu_check()
    assert gpu_check.main(["t4", "a100"]) == 2      # everything at once: refused before looking for a GPU
    out = capsys.readouterr().out
    assert "Run it in shards" in out and 'make gpu-check ARGS="t4 01' in out


def test_plain_gpu_check_runs_the_first_shard(capsys, monkeypatch):
    """`make gpu-check` with no selection runs the first T4 shard (one slot) and prints the rest; here it gets as far
    as looking for CUDA, which this machine lacks."""
    gpu_check = _gpu_check()
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu_check.main([])
    out = capsys.readouterr().out
    assert 'running the first shard (make gpu-check ARGS="t4 01 02' in out and 'ARGS="t4 05' in out


def test_fp16_probe_runs_on_the_tiny_model_and_skips_without_a_model():
    gpu_check = _gpu_check()
    skipped = gpu_check.fp16_overflow_probe(None, [], model_id="HuggingFaceTB/SmolLM2-360M-Instruct")
    assert skipped["status"] == "skipped" and "not available locally" in skipped["reason"]
    report = gpu_check.fp16_overflow_probe(str(models.tiny_model_dir()), [text.stdlib_text("eval", 6000)],
                                           device="cpu", seq=64, batch=2)
    n_layers = len(report["layers"]["float32"])
    assert report["status"] == "ok" and n_layers > 0 and len(report["layers"]["float16"]) == n_layers
    assert report["summary"]["nonfinite_fp16"] == 0 and report["summary"]["max_abs_loss_difference"] < 0.05
