"""Device-correct code without a GPU: the from-scratch miniatures with weights on another device ("meta", which
refuses to mix with CPU tensors as CUDA does), and notebook cells that move their inputs to the model's device."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from helpers import bnb, quant

ROOT = Path(__file__).resolve().parent.parent


class StrictDevices(TorchFunctionMode):
    """What CUDA enforces and the meta device does not always (``cpu @ meta`` even succeeds): no operation may mix
    tensors of two devices (0-dim tensors excepted, as on CUDA), and no integer matmul off the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors if t.dim() > 0}
        if len(devices) > 1 and getattr(func, "__name__", "") not in ("to", "copy_"):
            raise RuntimeError(f"{getattr(func, '__name__', func)} mixes tensors on {sorted(devices)}")
        if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm):
            for t in tensors:
                if t.device.type != "cpu" and not t.dtype.is_floating_point:
                    raise RuntimeError(f"integer matmul ({t.dtype}) on {t.device}: CUDA cannot do it")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def layer():
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    x = torch.randn(40, 64)
    x[:, 3] *= 20  # an outlier feature
    return w.to("meta"), x  # weights on the "GPU", activations from layer_inputs on the CPU


def test_tensor_miniatures_return_results_on_the_weights_device(layer):
    w, x = layer
    with StrictDevices():
        results = {
            "rtn_quantize": quant.rtn_quantize(w, 4, 32),
            "gptq_quantize": quant.gptq_quantize(w, quant.hessian(x), 4, 32),
            "gptq_quantize act_order": quant.gptq_quantize(w, quant.hessian(x), 3, 32, act_order=True),
            "absmax_int8_matmul": bnb.absmax_int8_matmul(x, w),
            "quantize_4bit_blockwise": bnb.quantize_4bit_blockwise(w, bnb.nf4_code()),
        }
    for name, out in results.items():
        assert out.device.type == "meta", name


@pytest.mark.parametrize("call", [
    lambda w, x: quant.output_error(w, quant.rtn_quantize(w, 4, 32), x),
    lambda w, x: quant.awq_quantize(w, x, 4, 32, n_grid=2),
    lambda w, x: bnb.llm_int8_matmul(x, w),
])
def test_scalar_miniatures_only_fail_where_meta_has_no_data(layer, call):
    """These read numbers (an error, the outlier columns), which a meta tensor does not hold: the only failure
    allowed is that one, never a mix of devices."""
    w, x = layer
    try:
        with StrictDevices():
            call(w, x)
    except (NotImplementedError, RuntimeError) as exc:
        msg = str(exc)
        assert "mixes tensors" not in msg and "integer matmul" not in msg, msg


def test_miniatures_give_the_same_numbers_when_inputs_change_device(layer):
    """Moving activations to the weights' device changes nothing on one device (CPU here)."""
    w, x = layer
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(bnb.absmax_int8_matmul(x, w), bnb.absmax_int8_matmul(x.clone(), w.clone()))
    ref = quant.awq_quantize(w, x, 4, 32, n_grid=4)
    assert ref.weight.device == w.device and 0 <= ref.alpha <= 1


def _code_cells():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                yield path.name, i, "".join(cell["source"])


def test_notebook_tensors_follow_the_model_to_its_device():
    """Statically: every tokenizer call that returns tensors is moved with ``.to(<model>.device)`` in the same
    statement, and every weight a miniature takes from a model is copied to the CPU (``.cpu()``)."""
    problems = []
    for name, i, source in _code_cells():
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        tree = ast.parse("\n".join(lines))
        for node in ast.walk(tree):
            if not isinstance(node, ast.stmt) or isinstance(node, (ast.FunctionDef, ast.For, ast.If, ast.With)):
                continue
            text = ast.get_source_segment("\n".join(lines), node) or ""
            if 'return_tensors="pt"' in text and ".device)" not in text:
                problems.append(f"{name} cell {i}: tensors from the tokenizer are not moved to the model's device")
            if ".weight.detach()" in text and ".cpu()" not in text:
                problems.append(f"{name} cell {i}: a weight taken for a miniature stays on the model's device")
    assert not problems, "\n".join(problems)
