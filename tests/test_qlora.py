"""QLoRA helpers: the dequantized copy is the base the adapter saw; merging into 4-bit is lossy."""

from __future__ import annotations

import pytest
import torch

from helpers import bnb, get_profile, models, qlora, training


def test_dequantized_copy_holds_exactly_the_nf4_weights():
    profile = get_profile("tiny")
    tok = models.load_tokenizer(profile)
    nf4 = models.load_model(profile, quantization_config=bnb.bnb_config("nf4", torch.float32))
    fp = qlora.dequantized_copy(nf4, models.load_model(profile))
    import bitsandbytes.functional as F

    layer = nf4.model.layers[0].mlp.down_proj
    assert torch.equal(fp.model.layers[0].mlp.down_proj.weight, F.dequantize_4bit(layer.weight.data, layer.weight.quant_state))
    ids = tok(["The quick brown fox jumps over the lazy dog."], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(nf4(**ids).logits, fp(**ids).logits, atol=5e-3)  # the CPU 4-bit path rounds internally


def test_dequantized_copy_refuses_a_model_without_4bit_layers():
    profile = get_profile("tiny")
    with pytest.raises(ValueError, match="No 4-bit layers"):
        qlora.dequantized_copy(models.load_model(profile), models.load_model(profile))


def test_qlora_base_is_frozen_nf4_and_unknown_kind_is_refused():
    from bitsandbytes.nn import Linear4bit

    profile = get_profile("tiny")
    model = qlora.load_for_training(profile, "qlora")
    assert isinstance(model.model.layers[0].self_attn.q_proj, Linear4bit)
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="Unknown kind"):
        qlora.load_for_training(profile, "int4-lora")


def test_dequantized_copy_refuses_weights_repacked_by_a_cpu_forward_pass():
    """bitsandbytes repacks 4-bit weights for its CPU kernel on the first forward pass; dequantizing those
    bytes as if they were the original layout gives garbage, so the helper must refuse with a clear message."""
    profile = get_profile("tiny")
    nf4 = models.load_model(profile, quantization_config=bnb.bnb_config("nf4"))
    tok = models.load_tokenizer(profile)
    with torch.no_grad():
        nf4(**tok(["hello there"], return_tensors="pt"))
    if not getattr(nf4.model.layers[0].self_attn.q_proj.weight.quant_state, "packing_format_for_cpu", False):
        pytest.skip("this CPU's bitsandbytes path does not repack (no AVX-512 bf16)")
    with pytest.raises(ValueError, match="freshly loaded"):
        qlora.dequantized_copy(nf4, models.load_model(profile))



@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_qlora_adapters_keep_fp32_master_weights_in_every_precision(precision):
    """TRL casts a 4-bit model's LoRA weights to bf16. run_trainer casts them back to fp32 before the optimizer
    exists, in every precision: fp16 on a T4 (the gradient scaler cannot unscale bf16 gradients), fp32 on a CPU
    without native bf16 (emulated bf16 is slow), bf16 (autocast computes in bf16; the updates need fp32 weights)."""
    from dataclasses import replace

    from trl import SFTTrainer

    from helpers.data import as_dataset, sft_rows

    profile = replace(get_profile("tiny"), precision=precision)
    tok = models.load_tokenizer(profile)
    trainer = SFTTrainer(model=qlora.load_for_training(profile, "qlora"),
                         args=training.sft_config(profile, "/tmp/qlora-dtype", max_steps=1),
                         train_dataset=as_dataset(sft_rows(profile)[:8]), processing_class=tok,
                         peft_config=training.lora_config(profile))
    trainable = lambda: {p.dtype for p in trainer.model.parameters() if p.requires_grad}  # noqa: E731
    assert trainable() == {torch.bfloat16}, "TRL no longer casts QLoRA adapters to bf16: revisit fp32_trainable_weights"
    training.run_trainer(trainer)
    assert trainable() == {torch.float32}
    assert trainer.state.global_step == 1


def test_bf16_trainer_gets_fp32_master_weights_for_a_full_fine_tuning():
    """An A100 profile loads the model in bf16 and trains with bf16=True: a full fine-tuning at 2e-5 in bf16 weights
    would round most updates away (half the bf16 spacing of a weight of 0.01 is 3e-5), so the weights go to fp32."""
    from types import SimpleNamespace

    model = torch.nn.Sequential(torch.nn.Linear(4, 4).to(torch.bfloat16))
    fake = SimpleNamespace(args=SimpleNamespace(bf16=True, fp16=False), model=model)
    weight = torch.full((4, 4), 0.01, dtype=torch.bfloat16)
    assert torch.equal(weight + 2e-5, weight)   # the update lost in bf16 ...
    assert training.fp32_trainable_weights(fake) == ["0.weight", "0.bias"]
    assert model[0].weight.dtype == torch.float32 and not torch.equal(weight.float() + 2e-5, weight.float())   # ... kept


def test_fp16_trainer_gets_fp32_adapters():
    """The T4 path (fp16=True) cannot be built on a CPU; the rule it relies on is the trainer's bf16 flag."""
    from types import SimpleNamespace

    lora = torch.nn.Linear(4, 4).to(torch.bfloat16)
    frozen = torch.nn.Linear(4, 4).to(torch.bfloat16).requires_grad_(False)
    model = torch.nn.Sequential(lora, frozen)
    fake = SimpleNamespace(args=SimpleNamespace(bf16=False, fp16=True), model=model)
    assert training.fp32_trainable_weights(fake) == ["0.weight", "0.bias"]
    assert lora.weight.dtype == torch.float32 and frozen.weight.dtype == torch.bfloat16


def test_notebook_06_loftq_equals_the_tested_copy_and_follows_peft_s_steps():
    """06's LoftQ miniature equals helpers.qlora.loftq_init bit for bit; with scaling 1 and no double quantization
    it is PEFT's ``loftq_init`` (which runs on a GPU only): bitsandbytes NF4, then PEFT's own SVD split of the
    residual, alternated ``iters`` times."""
    import bitsandbytes.functional as F
    import torch
    from peft.utils.loftq_utils import _low_rank_decomposition

    from helpers import qlora
    from notebook_code import definitions

    ns = definitions("06_qlora", "loftq_init", scope={"torch": torch, "qlora": qlora})
    torch.manual_seed(0)
    w = torch.randn(96, 128) * 0.02
    for args in [(8, 2.0, 1, True), (4, 1.0, 3, False)]:
        a, b = ns["loftq_init"](w, *args), qlora.loftq_init(w, *args)
        assert all(torch.equal(x, y) for x, y in zip(a, b))

    def peft_steps(weight, rank, iters):   # peft.utils.loftq_utils.loftq_init, with the device moves left out
        res = weight.clone()
        for i in range(iters):
            q, state = F.quantize_4bit(res, blocksize=64, quant_type="nf4", compress_statistics=False)
            deq = F.dequantize_4bit(q, state)
            out = _low_rank_decomposition(weight - deq, reduced_rank=rank)
            if i + 1 == iters:
                break
            res = weight - out["L"] @ out["R"]
        return deq, out["R"], out["L"]

    q, A, B = qlora.loftq_init(w, 8, 1.0, 3, double_quant=False)
    q_p, A_p, B_p = peft_steps(w, 8, 3)
    assert torch.equal(q, q_p)
    assert torch.allclose(B @ A, B_p @ A_p, atol=1e-6)
    plain = ((w - qlora.nf4_round_trip(w)) ** 2).sum()
    q, A, B = qlora.loftq_init(w, 8, 2.0, 1)
    assert ((w - q - 2.0 * B @ A) ** 2).sum() < plain   # the adapter absorbs part of NF4's error before training


def test_loftq_start_saves_the_same_weights_twice_so_the_run_after_it_is_reused():
    """pipeline.loftq_start saves on every run; the QLoRA run trained from it is reused while the saved weights are
    the same (manifests.start_settings fingerprints them), and trained again when the start changes."""
    from peft import get_peft_model

    from helpers import pipeline
    from helpers.manifests import start_settings

    profile = get_profile("tiny")
    tokenizer = models.load_tokenizer(profile)

    def start(shift: float):
        peft_model = get_peft_model(models.load_model(profile), training.lora_config(profile))
        for module in peft_model.modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                # as the LoftQ cell does: A and B replaced (get_peft_model's A is random, its B zero)
                module.lora_A["default"].weight.data = torch.full_like(module.lora_A["default"].weight, 0.01 + shift)
                module.lora_B["default"].weight.data = torch.full_like(module.lora_B["default"].weight, 0.02)
        folder = pipeline.loftq_start(profile, peft_model, tokenizer)
        assert (folder / "base" / "config.json").is_file() and (folder / "adapter" / "adapter_config.json").is_file()
        return start_settings(folder / "base", folder / "adapter")

    first, again, other = start(0.0), start(0.0), start(0.5)
    assert first == again
    assert other["init_adapter"] != first["init_adapter"] and other["base"] == first["base"]


@pytest.mark.parametrize("compute", [torch.float32, torch.bfloat16])
def test_nf4_layers_compute_in_their_compute_dtype_on_cpu(compute):
    """bitsandbytes switches 4-bit layers to a bf16 kernel in eval mode on CPUs with AVX-512-BF16, whatever the
    compute dtype; models.load_model keeps fp32 layers in fp32 (so an fp32 NF4 model's logits equal those of its
    dequantized fp32 copy), and leaves bf16 ones on bitsandbytes' faster path."""
    from bitsandbytes.functional import has_avx512bf16
    from bitsandbytes.nn import Linear4bit

    profile = get_profile("tiny")
    model = models.load_model(profile, quantization_config=bnb.bnb_config("nf4", compute)).eval()
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert layers and all(m.support_avx512bf16_for_cpu == (compute == torch.bfloat16 and has_avx512bf16())
                          for m in layers)
    if compute == torch.float32:
        ids = models.load_tokenizer(profile)("def f(x): return x + 1", return_tensors="pt").input_ids
        exact = qlora.dequantized_copy(model, models.load_model(profile)).eval()
        with torch.no_grad():
            assert torch.allclose(model(ids).logits, exact(ids).logits, atol=1e-4)
