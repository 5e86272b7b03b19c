"""The from-scratch miniatures the notebooks write out in their cells must compute exactly what the tested copies in
helpers compute (those copies are checked against TRL, GPTQModel and bitsandbytes in test_dpo, test_quant and
test_bnb). Notebook 01's LoRA layer is checked against PEFT directly in test_lora."""

import pytest
import torch

from helpers import bnb, dpo, quant
from notebook_code import definitions


def test_notebook_02_dpo_loss():
    nb = definitions("02_dpo", "dpo_loss", scope={"torch": torch})
    torch.manual_seed(0)
    logps = [torch.randn(6) * 5 - 20 for _ in range(4)]
    for beta in (0.1, 0.25, 2.0):
        for ours, theirs in zip(nb["dpo_loss"](*logps, beta), dpo.dpo_loss(*logps, beta=beta)):
            assert torch.equal(ours, theirs)
    same = torch.tensor([-3.0, -9.0])
    assert nb["dpo_loss"](same, same, same, same, 0.1)[0].item() == pytest.approx(0.6931472)  # log 2 at step 0


@pytest.mark.parametrize("bits,group,sym", [(4, 64, False), (3, 64, False), (4, 32, True), (2, 128, True)])
def test_notebook_03_rtn_and_gptq(bits, group, sym):
    nb = definitions("03_gptq", "group_grid", "fake_quantize", "rtn_quantize", "hessian", "gptq_quantize",
                     scope={"torch": torch})
    torch.manual_seed(bits + group)
    w, x = torch.randn(48, 256), torch.randn(300, 256) * torch.rand(256) * 3
    x[:, 5] = 0  # a dead input: GPTQ zeroes its column
    assert torch.equal(nb["rtn_quantize"](w, bits, group, sym), quant.rtn_quantize(w, bits, group, sym))
    h = nb["hessian"](x)
    assert torch.equal(h, quant.hessian(x))
    for act_order in (False, True):
        assert torch.equal(nb["gptq_quantize"](w, h, bits, group, sym, act_order=act_order),
                           quant.gptq_quantize(w, h, bits, group, sym, act_order=act_order))
    assert torch.equal(nb["gptq_quantize"](w, h, bits, group, sym, damp=0.1),
                       quant.gptq_quantize(w, h, bits, group, sym, damp=0.1))


@pytest.mark.parametrize("sym", [False, True])
def test_notebook_04_awq_search(sym):
    nb = definitions("04_awq", "output_error", "awq_quantize", scope={"torch": torch, "quant": quant})
    torch.manual_seed(1)
    w, x = torch.randn(64, 128), torch.randn(200, 128) * (torch.rand(128) * 4) ** 2
    ours, theirs = nb["awq_quantize"](w, x, 4, 32, n_grid=10, sym=sym), quant.awq_quantize(w, x, 4, 32, n_grid=10, sym=sym)
    assert ours.alpha == theirs.alpha and ours.errors == theirs.errors
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.scales, theirs.scales)
    assert nb["output_error"](w, ours.weight, x) == quant.output_error(w, theirs.weight, x)


def test_notebook_05_int8_and_nf4():
    nb = definitions("05_bitsandbytes_int8_nf4", "absmax_quantize", "absmax_int8_matmul", "outlier_columns",
                     "llm_int8_matmul", "nf4_code", "quantize_4bit_blockwise", scope={"torch": torch})
    torch.manual_seed(2)
    x, w = torch.randn(12, 96), torch.randn(40, 96)
    x[:, 7] = 25.0  # an outlier feature
    assert torch.equal(nb["outlier_columns"](x), bnb.outlier_columns(x))
    assert torch.equal(nb["absmax_int8_matmul"](x, w), bnb.absmax_int8_matmul(x, w))
    for threshold in (6.0, 100.0):
        assert torch.equal(nb["llm_int8_matmul"](x, w, threshold), bnb.llm_int8_matmul(x, w, threshold))
    assert torch.equal(nb["nf4_code"](), bnb.nf4_code())
    code = bnb.nf4_code()
    assert torch.equal(nb["quantize_4bit_blockwise"](w.flatten(), code), bnb.quantize_4bit_blockwise(w.flatten(), code))


def test_a_changed_miniature_is_caught():
    """The comparison is real: a notebook function that differs is not equal to the helpers' one."""
    nb = definitions("03_gptq", "group_grid", "fake_quantize", "rtn_quantize", scope={"torch": torch})
    w = torch.randn(8, 64)
    assert not torch.equal(nb["rtn_quantize"](w, 4, 64, sym=True), quant.rtn_quantize(w, 4, 64, sym=False))
