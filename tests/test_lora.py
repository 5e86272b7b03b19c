"""Notebook 01's from-scratch LoRA layer (the class written out in its cell), against PEFT's LoRA layer."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from notebook_code import definitions

LoRALinear = definitions("01_sft_lora", "LoRALinear", scope={"torch": torch})["LoRALinear"]


def _peft_twin(base: torch.nn.Linear, ours: LoRALinear):
    wrapper = torch.nn.Sequential()
    wrapper.add_module("proj", torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None))
    wrapper.proj.load_state_dict(base.state_dict())
    model = get_peft_model(wrapper, LoraConfig(r=ours.r, lora_alpha=ours.alpha, target_modules=["proj"]))
    layer = model.base_model.model.proj
    layer.lora_A["default"].weight.data.copy_(ours.A.data)
    layer.lora_B["default"].weight.data.copy_(ours.B.data)
    return layer


@pytest.mark.parametrize("r,alpha,bias", [(4, 8, False), (16, 32, True), (8, 8, False)])
def test_from_scratch_lora_matches_peft(r, alpha, bias):
    torch.manual_seed(0)
    base = torch.nn.Linear(576, 192, bias=bias)
    ours = LoRALinear(base, r=r, alpha=alpha)
    x = torch.randn(5, 576)
    assert torch.equal(ours(x), base(x))  # B = 0 at init: exactly the frozen layer
    torch.nn.init.normal_(ours.B, std=0.05)
    peft_layer = _peft_twin(base, ours)
    with torch.no_grad():
        assert torch.allclose(ours(x), peft_layer(x), atol=1e-5)
        assert torch.allclose(x @ ours.merged_weight().T + (base.bias if bias else 0), ours(x), atol=1e-4)
    # PEFT's own merge gives the same matrix as ours
    peft_layer.merge()
    assert torch.allclose(peft_layer.base_layer.weight, ours.merged_weight(), atol=1e-6)


def test_only_adapter_trains_and_fraction():
    base = torch.nn.Linear(576, 576, bias=False)
    ours = LoRALinear(base, r=16, alpha=32)
    assert [n for n, p in ours.named_parameters() if p.requires_grad] == ["A", "B"]
    assert ours.trainable_fraction() == pytest.approx(16 * (576 + 576) / 576**2)


def test_rank_must_be_positive():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(torch.nn.Linear(4, 4), r=0)
