"""bitsandbytes miniatures against the library, and the config builder."""

from __future__ import annotations

import warnings

import pytest
import torch

from helpers import bnb


def test_nf4_code_matches_bitsandbytes_table():
    import bitsandbytes.functional as F

    ours = bnb.nf4_code()
    table = F.get_4bit_type("nf4", device="cpu")
    assert ours.shape == (16,) and torch.allclose(ours, table, atol=1e-6)
    assert (ours == 0).sum() == 1 and ours.min() == -1 and ours.max() == 1
    # quantiles of a normal: levels are denser near zero than at the ends
    gaps = ours.diff()
    assert gaps[7] < gaps[0] and gaps[7] < gaps[-1]


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_blockwise_4bit_matches_bitsandbytes(quant_type):
    import bitsandbytes.functional as F

    w = torch.randn(192, 128, generator=torch.Generator().manual_seed(1)) * 0.02
    q, state = F.quantize_4bit(w, blocksize=64, quant_type=quant_type)
    lib = F.dequantize_4bit(q, state)
    ours = bnb.quantize_4bit_blockwise(w, F.get_4bit_type(quant_type, device="cpu"), 64)
    assert torch.allclose(lib, ours, atol=1e-7)


def test_nf4_fits_normal_weights_better_than_fp4_and_int4():
    import bitsandbytes.functional as F

    w = torch.randn(64 * 400, generator=torch.Generator().manual_seed(2))
    err = {name: bnb.relative_error(w, bnb.quantize_4bit_blockwise(w, code))
           for name, code in [("nf4", bnb.nf4_code()), ("fp4", F.get_4bit_type("fp4", device="cpu")),
                              ("int4", torch.linspace(-1, 1, 16))]}
    assert err["nf4"] < min(err["int4"], err["fp4"])


def _outlier_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 128, generator=g)
    x[:, 5] *= 40  # one outlier feature dimension in every token
    w = torch.randn(96, 128, generator=g) * 0.05
    return x, w


def test_llm_int8_decomposition_fixes_outliers_and_matches_bitsandbytes():
    import bitsandbytes as bnb_lib

    x, w = _outlier_case()
    assert bnb.outlier_columns(x).tolist() == [5]
    ref = x @ w.T
    absmax = bnb.relative_error(ref, bnb.absmax_int8_matmul(x, w))
    ours = bnb.llm_int8_matmul(x, w)
    layer = bnb_lib.nn.Linear8bitLt(128, 96, bias=False, has_fp16_weights=False, threshold=6.0)
    layer.weight = bnb_lib.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = layer.to("cpu")(x).float()
    assert bnb.relative_error(ref, ours) < absmax / 5
    assert bnb.relative_error(ref, lib) < absmax / 3  # the library also rounds activations to fp16 on CPU
    assert bnb.relative_error(lib, ours) < 0.01  # same algorithm


def test_without_outliers_absmax_equals_decomposition():
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(3)).clamp(-5, 5)
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(bnb.absmax_int8_matmul(x, w), bnb.llm_int8_matmul(x, w))


def test_bnb_configs_and_unknown_kind():
    from transformers import BitsAndBytesConfig

    c = bnb.bnb_config("int8")
    assert isinstance(c, BitsAndBytesConfig) and c.load_in_8bit and c.llm_int8_threshold == 6.0
    c = bnb.bnb_config("nf4_dq", torch.float16)
    assert c.load_in_4bit and c.bnb_4bit_quant_type == "nf4" and c.bnb_4bit_use_double_quant
    assert c.bnb_4bit_compute_dtype == torch.float16
    assert bnb.bnb_config("fp4").bnb_4bit_quant_type == "fp4" and not bnb.bnb_config("nf4").bnb_4bit_use_double_quant
    with pytest.raises(bnb.BnbError, match="Unknown bitsandbytes variant 'int4'"):
        bnb.bnb_config("int4")


def test_double_quant_stores_smaller_block_statistics():
    """At a real layer size (SmolLM2's 1536 x 576 MLP), double quantization shrinks the scales ~4x."""
    import bitsandbytes.functional as F

    from helpers.measure import _quant_state_bytes

    w = torch.randn(1536, 576) * 0.02
    sizes = {}
    for dq in (False, True):
        _, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=dq)
        sizes[dq] = _quant_state_bytes(state, set())
    assert sizes[False] == w.numel() // 64 * 4 + 16 * 4  # one fp32 scale per block + the 16-value code
    assert sizes[True] < sizes[False] / 2


def test_footprint_counts_4bit_weights_and_scales():
    from helpers import get_profile, measure, models

    profile = get_profile("tiny")
    base = models.load_model(profile)
    nf4 = models.load_model(profile, quantization_config=bnb.bnb_config("nf4"))
    linear = sum(m.weight.numel() for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n)
    expected_saving = linear * 4 - linear / 2 - linear / 64 * 4  # fp32 -> 4 bits + one fp32 scale per 64
    saving = (measure.footprint_mb(base) - measure.footprint_mb(nf4)) * 1e6
    assert abs(saving - expected_saving) / expected_saving < 0.02


@pytest.mark.parametrize("notebook,name", [("05_bitsandbytes_int8_nf4", "configs"), ("06_qlora", "nf4_config")])
def test_notebook_configs_are_the_ones_the_helpers_build(notebook, name):
    """Notebooks 05 and 06 write their BitsAndBytesConfig(...) calls out; notebook 07 and the QLoRA training
    processes use bnb.bnb_config. Both must describe the same quantization (the notebook's assignment is run here)."""
    import ast
    import json
    from pathlib import Path

    import torch
    from transformers import BitsAndBytesConfig

    nb = json.loads((Path(__file__).resolve().parent.parent / "notebooks" / f"{notebook}.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    statement = next(node for cell in cells for node in ast.parse(cell).body
                     if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name)
    for compute in (torch.float32, torch.bfloat16, torch.float16):
        scope = {"COMPUTE": compute, "BitsAndBytesConfig": BitsAndBytesConfig}
        exec(compile(ast.Module([statement], []), notebook, "exec"), scope)
        found = scope[name] if name == "configs" else {"nf4_dq": scope[name]}
        assert set(found) <= set(bnb.KINDS)
        for kind, config in found.items():
            assert config.to_dict() == bnb.bnb_config(kind, compute).to_dict(), kind
