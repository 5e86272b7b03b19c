"""The quantization miniatures against the library, and the settings checks."""

from __future__ import annotations

import contextlib
import json
import types
from pathlib import Path

import pytest
import torch

from helpers import get_profile, models, quant, text


@pytest.fixture(scope="module")
def real_layer():
    """Weights and activations of one real layer of SmolLM2-135M (the cpu profile's model) on real text."""
    profile = get_profile("cpu")
    tok = models.load_tokenizer(profile)
    model = models.load_model(profile)
    name = quant.probe_layer(model)
    x_cal = quant.layer_inputs(model, tok, text.stdlib_samples("calibration", 16), name)
    x_eval = quant.layer_inputs(model, tok, text.stdlib_samples("eval", 8), name)
    return model.get_submodule(name).weight.detach(), x_cal, x_eval


def _correlated(n=768, d=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) * 0.3
    x[:, :4] *= 8  # a few loud input channels, as in real LLM activations
    w = torch.randn(64, d, generator=g) * 0.05
    return w, x


def test_rtn_matches_gptqmodel_awq_pseudo_quantizer():
    from gptqmodel.looper.awq_processor import AWQProcessor

    w, _ = _correlated()
    for bits, group in [(4, 32), (3, 64), (8, 128)]:
        fake = types.SimpleNamespace(qcfg=types.SimpleNamespace(group_size=group, sym=False, bits=bits))
        lib, _, _ = AWQProcessor.pseudo_quantize_tensor(fake, w.clone())
        assert torch.allclose(quant.rtn_quantize(w, bits, group), lib, atol=1e-6)


def test_rtn_levels_and_error_shrink_with_bits():
    w, _ = _correlated()
    q3 = quant.rtn_quantize(w, 3, 32)
    for row in q3.reshape(-1, 32)[:10]:
        assert row.unique().numel() <= 8
    errors = [float(((w - quant.rtn_quantize(w, b, 32)) ** 2).sum()) for b in (2, 3, 4, 8)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 1000


def test_gptq_close_to_gptqmodel_and_better_than_rtn():
    from gptqmodel.quantization.config import GPTQConfig
    from gptqmodel.quantization.gptq import GPTQ

    quant.configure_gptqmodel()
    w, x = _correlated()
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    cfg = GPTQConfig(bits=4, group_size=32, sym=True, desc_act=False, act_group_aware=False, damp_percent=0.01,
                     damp_auto_increment=0.0025)
    lib = GPTQ(lin, cfg)
    lib.quantizer.configure(perchannel=True)
    with torch.no_grad():
        lib.add_batch(x.unsqueeze(0), lin(x).unsqueeze(0))
    lib_w = lib.quantize()[0].detach()
    ours = quant.gptq_quantize(w, quant.hessian(x), 4, 32, sym=True, damp=0.01)
    err_lib, err_ours = quant.output_error(w, lib_w, x), quant.output_error(w, ours, x)
    err_rtn = quant.output_error(w, quant.rtn_quantize(w, 4, 32, sym=True), x)
    assert abs(err_ours - err_lib) / err_lib < 0.10
    assert err_ours < 0.7 * err_rtn


@pytest.mark.parametrize("bits", [4, 3])
def test_gptq_beats_rtn_on_held_out_activations_of_a_real_layer(real_layer, bits):
    w, x_cal, x_eval = real_layer
    g = 64
    gptq = quant.gptq_quantize(w, quant.hessian(x_cal), bits, g)
    rtn = quant.rtn_quantize(w, bits, g)
    assert quant.output_error(w, gptq, x_eval) < 0.8 * quant.output_error(w, rtn, x_eval)
    # GPTQ trades weight error for output error
    assert ((w - gptq) ** 2).sum() > ((w - rtn) ** 2).sum()


def test_awq_scaling_beats_rtn_on_held_out_activations():
    w, x = _correlated(n=1536)
    x_cal, x_eval = x[:768], x[768:]
    for bits in (4, 3):
        found = quant.awq_quantize(w, x_cal, bits, 32)
        rtn_err = quant.output_error(w, quant.rtn_quantize(w, bits, 32), x_eval)
        assert found.alpha > 0
        assert found.errors[0.0] == pytest.approx(quant.output_error(w, quant.rtn_quantize(w, bits, 32), x_cal), rel=1e-5)
        assert quant.output_error(w, found.weight, x_eval) < 0.9 * rtn_err


def test_awq_beats_rtn_on_held_out_activations_of_a_real_layer(real_layer):
    w, x_cal, x_eval = real_layer
    for bits in (4, 3):
        found = quant.awq_quantize(w, x_cal, bits, 64)
        assert quant.output_error(w, found.weight, x_eval) < 0.9 * quant.output_error(w, quant.rtn_quantize(w, bits, 64), x_eval)


@pytest.mark.parametrize(
    "bits, group, widths, match",
    [(5, 64, [], "5-bit"), (4, 48, [], "power of two"), (4, 128, [576, 1536], "does not divide"), (4, 0, [], "group_size=0")],
)
def test_unsupported_settings_say_what_to_use(bits, group, widths, match):
    with pytest.raises(quant.QuantError, match=match):
        quant.check_settings(bits, group, widths)


def test_gpu_only_backend_on_cpu_names_the_cpu_backend():
    with pytest.raises(quant.QuantError, match="AWQ_TORCH"):
        quant.check_backend("AWQ_GEMM", cuda_available=False)
    with pytest.raises(quant.QuantError, match="GPTQ_TORCH"):
        quant.check_backend("MARLIN", cuda_available=False)
    quant.check_backend("MARLIN", cuda_available=True)
    quant.check_backend("GPTQ_TORCH", cuda_available=False)


def test_unknown_method_and_empty_calibration(tmp_path):
    with pytest.raises(quant.QuantError, match="Unknown method"):
        quant.gptqmodel_config("squeezellm", 4, 64)
    with pytest.raises(quant.QuantError, match="calibration set is empty"):
        quant.gptqmodel_quantize(tmp_path, tmp_path / "out", "gptq", 4, 64, [])


def test_a_failing_quantization_says_where_the_log_is_and_leaves_no_checkpoint(tmp_path):
    """GPTQModel's output goes to a log beside the checkpoint: when it fails, its own error reaches the notebook with
    a note naming that log, and no half-written folder is left."""
    import shutil

    from helpers import get_profile, pipeline
    from helpers.models import tiny_model_dir

    broken = tmp_path / "config_only"
    broken.mkdir()
    shutil.copy(tiny_model_dir() / "config.json", broken / "config.json")   # no tokenizer, and weights that are not
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception) as err:
        pipeline.quantized(get_profile("tiny"), broken, "gptq", 4, 32, text.stdlib_samples("calibration", 2))
    notes = " ".join(getattr(err.value, "__notes__", []))
    assert "GPTQModel's output for this quantization is in" in notes and ".log" in notes
    log = Path(notes.split(" is in ")[1].rstrip("."))
    assert log.is_file() and not log.with_suffix("").exists()


def test_gptq_config_one_forward_per_block_unless_asked():
    assert quant.gptqmodel_config("gptq", 4, 64).true_sequential is False
    assert quant.gptqmodel_config("gptq", 4, 64, true_sequential=True).true_sequential is True
    assert quant.gptqmodel_config("gptq", 3, 64).bits == 3


def test_awq_clip_patch_targets_existing_internals():
    """The clip-search switch patches GPTQModel internals: fail here (not in a notebook) if they move."""
    import inspect

    from gptqmodel.looper.awq_processor import AWQProcessor

    assert "n_sample_token" in inspect.signature(AWQProcessor._compute_best_clip).parameters
    assert "self.apply_clip" in inspect.getsource(AWQProcessor)
    original = AWQProcessor.__init__
    with quant.awq_clip_search(False, 64):
        assert AWQProcessor.__init__ is not original
    assert AWQProcessor.__init__ is original


def test_rtn_model_quantizes_decoder_layers_only():
    profile = get_profile("tiny")
    model = models.load_model(profile)
    head = model.lm_head.weight.detach().clone()
    q_proj = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    quant.rtn_model(model, 3, 32)
    assert torch.equal(model.lm_head.weight, head)
    new = model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(new, q_proj)
    assert new.reshape(-1, 32)[0].unique().numel() <= 8


def test_calibration_sources(tmp_path):
    profile = get_profile("tiny")
    generic = quant.calibration_texts(profile)
    assert len(generic) == profile.quant_calibration_samples
    assert all(0 < len(t) <= profile.quant_calibration_chars for t in generic)
    assert not set(generic) & set(text.stdlib_samples("eval", 500))
    tok = models.load_tokenizer(profile)
    chat = quant.calibration_texts(profile, "skills", tok)
    assert len(chat) == profile.quant_calibration_samples and "<|im_start|>" in chat[0]
    n_tokens = lambda texts: [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    # the same token budget per passage, so a comparison of the two differs only in the kind of text
    assert all(abs(c - g) <= 2 for c, g in zip(n_tokens(chat), n_tokens(generic)))
    with pytest.raises(quant.QuantError, match="Unknown calibration source"):
        quant.calibration_texts(profile, "c4")


def test_dequantized_weight_cache_same_outputs_and_restored(tmp_path):
    """The cache used for quality measurements changes no output, is used inside the block and is gone after."""
    from helpers.models import tiny_model_dir

    profile = get_profile("tiny")
    tok = models.load_tokenizer(profile)
    out = tmp_path / "gptq_w3"
    quant.gptqmodel_quantize(tiny_model_dir(), out, "gptq", 3, profile.quant_group_size,
                             text.stdlib_samples("calibration", 8))
    model = models.load_model(profile, str(out))
    layers = [m for m in model.modules() if hasattr(m, "_cache_enabled")]
    assert layers, "GPTQModel's torch kernel layers no longer have the `_cache_enabled` flag this helper sets"
    ids = tok("def f(x): return x", return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(ids).logits
        with quant.dequantized_weight_cache(model):
            assert all(m._cache_enabled for m in layers)
            first, second = model(ids).logits, model(ids).logits   # the second call reads the cache
            assert all(m._cached_weights for m in layers)
        assert not any(m._cache_enabled or m._cached_weights for m in layers)
    assert torch.equal(plain, first) and torch.equal(plain, second)


def test_dequantized_weight_cache_leaves_layers_off_the_cpu_alone():
    """On a GPU the cache would add a dense copy of every quantized weight to the variant's peak memory: only layers
    whose packed weights are in CPU memory are switched (a `meta` tensor stands in for a GPU's here)."""
    class Layer(torch.nn.Module):
        def __init__(self, device):
            super().__init__()
            self.register_buffer("qweight", torch.zeros(4, 4, dtype=torch.int32, device=device))
            self._cache_enabled, self.cleared = False, 0

        def clear_weight_cache(self):
            self.cleared += 1

    model = torch.nn.Sequential(Layer("cpu"), Layer("meta"))
    with quant.dequantized_weight_cache(model):
        assert model[0]._cache_enabled and not model[1]._cache_enabled
    assert not model[0]._cache_enabled and (model[0].cleared, model[1].cleared) == (1, 0)


def test_layer_inputs_are_what_the_layer_sees_in_a_full_forward_pass():
    profile = get_profile("tiny")
    tok = models.load_tokenizer(profile)
    model = models.load_model(profile)
    name = "model.layers.0.self_attn.q_proj"    # the first of the tiny model's two blocks
    texts = text.stdlib_samples("eval", 3)
    full, later_calls = [], []
    hooks = [model.get_submodule(name).register_forward_hook(lambda _m, inp, _o: full.append(inp[0].reshape(-1, inp[0].shape[-1])))]
    with torch.no_grad():
        for t in texts:
            model(**tok(t, return_tensors="pt", truncation=True, max_length=256))
    hooks[0].remove()
    last = model.model.layers[-1]
    hooks = last.register_forward_hook(lambda *_: later_calls.append(1))
    got = quant.layer_inputs(model, tok, texts, name)
    hooks.remove()
    assert torch.equal(got, torch.cat(full).float())
    assert later_calls == []    # each forward pass stopped at the layer
    assert not model.get_submodule(name)._forward_pre_hooks    # and the hook is gone


@pytest.mark.parametrize("method,bits,expected", [("gptq", 4, "gptq_triton"), ("gptq", 3, "gptq_torch"),
                                                  ("awq", 4, "awq_torch")])
def test_cuda_kernels_need_no_nvcc_and_reach_from_pretrained(tmp_path, method, bits, expected):
    """On CUDA the course asks for Triton or torch kernels (no nvcc build), for GPTQModel and for transformers'
    from_pretrained alike (a loading-only quantization config)."""
    import json as _json

    from helpers.models import _gptq_awq_loading_config

    assert quant.default_backend(method, bits, cuda=True).value == expected
    assert quant.default_backend(method, bits, cuda=False).value in ("gptq_torch", "awq_torch")
    (tmp_path / "config.json").write_text(_json.dumps({"quantization_config": {"quant_method": method, "bits": bits}}))
    loading = _gptq_awq_loading_config(str(tmp_path))
    from gptqmodel import BACKEND
    from gptqmodel.utils.backend import normalize_backend

    backend = loading.get_loading_attributes()["backend"]
    assert normalize_backend(getattr(backend, "value", backend), quant_method=method) == BACKEND(expected)  # as GPTQModel reads it
    (tmp_path / "config.json").write_text(_json.dumps({"model_type": "llama"}))
    assert _gptq_awq_loading_config(str(tmp_path)) is None


def _logit_error(profile, folder) -> float:
    """Relative error of a quantized tiny model's logits against the full-precision model's, on held-out text."""
    tok = models.load_tokenizer(profile)
    ids = tok(text.stdlib_samples("eval", 1)[0][:600], return_tensors="pt").input_ids
    with torch.no_grad():
        ref = models.load_model(profile)(ids).logits
        out = models.load_model(profile, str(folder))(ids).logits
    return float((out - ref).norm() / ref.norm())


@pytest.fixture
def fp32_cpu(monkeypatch):
    """This process and its children decide fp32, as on a CPU without native bf16."""
    from helpers import hardware

    monkeypatch.setenv(hardware.OVERRIDE_VAR, "fp32")
    monkeypatch.delenv(hardware.DECIDED_VAR, raising=False)  # restored after the test
    hardware.cpu_precision.cache_clear()
    yield get_profile("tiny")
    hardware.cpu_precision.cache_clear()


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_quantization_on_cpus_without_native_bf16(tmp_path, fp32_cpu, method):
    """Where the CPU decides fp32, GPTQ and AWQ quantize in fp32 (AWQ with the fix of the next test). Through
    from_pretrained the checkpoints run in the model's fp32 and stay close to the
    full-precision model (tiny, 4 bits: relative logit error 0.07-0.08 measured); GPTQModel's own loader runs its
    kernels in bf16, the 16-bit dtype they support."""
    profile = fp32_cpu
    assert quant.default_dtype("gptq") == torch.float32 and quant.default_dtype("awq") == torch.float32
    assert quant.kernel_dtype() == torch.bfloat16
    out = tmp_path / method
    quant.gptqmodel_quantize(models.tiny_model_dir(), out, method, 4, profile.quant_group_size,
                             text.stdlib_samples("calibration", 8), awq_clip=False)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert _logit_error(profile, out) < 0.12
    model = quant.load_gptqmodel(out, method)
    assert quant.kernels_in(model) == (["AwqTorchLinear"] if method == "awq" else ["TorchLinear"])
    ids = models.load_tokenizer(profile)("def f(x): return x", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_gptqmodel_awq_in_fp32_is_fixed_by_the_master_copy_patch(tmp_path, fp32_cpu, monkeypatch):
    """GPTQModel 7.6's AWQ in fp32 on a CPU restores its weights from a "copy" that is the weight itself
    (:func:`quant.awq_fp32_master_copy`): about twice the logit error of bf16 on tiny (0.17 against 0.08) and a
    broken SmolLM2-135M (perplexity above 1e8). With the patch, fp32 is as good as bf16, and AWQ quantizes in fp32
    on CPUs without native bf16 (several times faster there). If the unpatched check starts to fail, GPTQModel has
    fixed it: the patch can go."""
    profile = fp32_cpu
    assert quant.default_dtype("awq") == torch.float32

    def error(dtype, name):
        out = tmp_path / name
        quant.gptqmodel_quantize(models.tiny_model_dir(), out, "awq", 4, profile.quant_group_size,
                                 text.stdlib_samples("calibration", 8), awq_clip=False, dtype=dtype)
        return _logit_error(profile, out)

    errors = {"bf16": error(torch.bfloat16, "bf16"), "fp32 patched": error(torch.float32, "fp32")}
    monkeypatch.setattr(quant, "awq_fp32_master_copy", lambda dtype: contextlib.nullcontext())
    errors["fp32 unpatched"] = error(torch.float32, "fp32_unpatched")
    assert errors["fp32 patched"] < 1.25 * errors["bf16"], errors
    assert errors["fp32 unpatched"] > 1.5 * errors["bf16"], errors


def test_awq_fp32_patch_is_scoped_and_refuses_a_changed_gptqmodel(monkeypatch):
    from gptqmodel.looper.awq_processor import AWQProcessor

    original = AWQProcessor.__dict__["_compute_best_scale"]
    with quant.awq_fp32_master_copy(torch.bfloat16):
        assert AWQProcessor.__dict__["_compute_best_scale"] is original      # bf16 (and fp16) copy for real
    with quant.awq_fp32_master_copy(torch.float32):
        assert AWQProcessor.__dict__["_compute_best_scale"] is not original
    assert AWQProcessor.__dict__["_compute_best_scale"] is original
    monkeypatch.setattr(quant, "AWQ_MASTER_COPY", "an expression GPTQModel does not contain")
    with pytest.raises(quant.QuantError, match="no longer contains"):
        with quant.awq_fp32_master_copy(torch.float32):
            pass
    assert AWQProcessor.__dict__["_compute_best_scale"] is original


def test_pipeline_shares_a_checkpoint_between_notebooks_that_ask_for_the_same_one(capsys):
    """03 writes its GPTQ settings out, 04 and 07 ask with GPTQModel's defaults: the same inputs, one checkpoint."""
    from helpers import artifacts, pipeline
    from helpers.profiles import get_profile

    profile = get_profile("tiny")
    calibration = text.stdlib_samples("calibration", 4)
    model_dir = models.tiny_model_dir()
    first, seconds = pipeline.quantized(profile, model_dir, "gptq", 4, profile.quant_group_size, calibration,
                                        sym=True, desc_act=False, act_group_aware=True, true_sequential=False)
    assert (first / "config.json").is_file() and seconds > 0
    assert artifacts.read_manifest(first)["seconds"] == seconds
    capsys.readouterr()
    again, again_seconds = pipeline.quantized(profile, model_dir, "gptq", 4, profile.quant_group_size, calibration)
    assert again == first and again_seconds == seconds and "reusing" in capsys.readouterr().out
    other = pipeline.quantize_inputs(model_dir, "gptq", 4, profile.quant_group_size, calibration, sym=False)
    assert other != pipeline.quantize_inputs(model_dir, "gptq", 4, profile.quant_group_size, calibration)
    assert pipeline.quantize_inputs(model_dir, "gptq", 4, profile.quant_group_size, calibration[:2])["calibration_sha256"] \
        != artifacts.read_manifest(first)["inputs"]["calibration_sha256"]


@pytest.mark.parametrize("notebook", ["03_gptq", "04_awq"])
def test_the_cells_quantize_model_is_the_course_function(notebook):
    """Notebooks 03 and 04 write GPTQModel's calls out in a cell; notebook 07, the warm-ups and the script use
    quant.quantize_model. Equal code, equal checkpoints: the pipeline shares them only while the two are equal."""
    import ast

    from notebook_code import code_cells

    defs = [node for cell in code_cells(notebook) for node in ast.parse(cell).body
            if isinstance(node, ast.FunctionDef) and node.name == "quantize_model"]
    assert len(defs) == 1, f"{notebook} should define quantize_model once, in its GPTQModel cell"
    assert quant.code_key_of(defs[0]) == quant.code_key(quant.quantize_model), (
        f"{notebook}'s quantize_model differs from helpers.quant.quantize_model: change both")
    source = ast.unparse(defs[0])
    assert all(call in source for call in ("GPTQModel.load(", ".quantize(calibration", ".save("))


def test_an_edited_quantize_function_or_config_is_not_mistaken_for_the_courses(capsys):
    """The manifest comes from what ran: the config object, the calibration text and the quantizing function's code.
    A student's edited function (another batch size) or config quantizes again instead of reusing the course's
    checkpoint, and says why; the unedited copy, with another docstring and comments, reuses it."""
    from gptqmodel.quantization.config import GPTQConfig

    from helpers import pipeline
    from helpers.profiles import get_profile

    def quantize_model(model_dir, out_dir, config, calibration, dtype, backend):
        """A cell's copy, other docstring."""
        from gptqmodel import GPTQModel
        model = GPTQModel.load(str(model_dir), config, dtype=dtype)   # other comments
        model.quantize(calibration, batch_size=4, backend=backend)
        model.save(str(out_dir))

    def edited(model_dir, out_dir, config, calibration, dtype, backend):
        from gptqmodel import GPTQModel
        model = GPTQModel.load(str(model_dir), config, dtype=dtype)
        model.quantize(calibration, batch_size=1, backend=backend)
        model.save(str(out_dir))

    assert quant.code_key(quantize_model) == quant.code_key(quant.quantize_model) != quant.code_key(edited)
    profile = get_profile("tiny")
    calibration, model_dir = text.stdlib_samples("calibration", 4), models.tiny_model_dir()
    config = GPTQConfig(bits=4, group_size=profile.quant_group_size, sym=True, true_sequential=False)
    course, _ = pipeline.quantized(profile, model_dir, "gptq", 4, profile.quant_group_size, calibration, sym=True)
    capsys.readouterr()
    same, _ = pipeline.quantized_with(profile, model_dir, config, calibration, quantize_model)
    assert same == course and "reusing" in capsys.readouterr().out
    mine, _ = pipeline.quantized_with(profile, model_dir, config, calibration, edited)
    assert mine != course and (mine / "config.json").is_file() and "reusing" not in capsys.readouterr().out
    other = GPTQConfig(bits=4, group_size=profile.quant_group_size, sym=True, true_sequential=True)
    assert pipeline.config_inputs(model_dir, other, calibration, quantize_with=quantize_model) != \
        pipeline.config_inputs(model_dir, config, calibration, quantize_with=quantize_model)


def test_notebooks_03_04_07_quantize_with_one_set_of_settings():
    """The comparisons isolate the method only if every notebook passes the same settings to GPTQModel, and
    RTN rounds on the same (symmetric) grid."""
    from notebook_code import assignment, code_cells

    gptq_03 = assignment("03_gptq", "gptq_settings", "sym", {})
    gptq_04 = assignment("04_awq", "gptq_settings", "sym", {"SYM": True})
    settings_07 = assignment("07_method_comparison", "settings", "sym", {})
    assert gptq_03 == gptq_04 == settings_07["gptq"]
    assert settings_07["awq"] == assignment("04_awq", "awq_settings", "sym", {"SYM": True}) == {"sym": gptq_03["sym"]}
    cells_03 = "\n".join(code_cells("03_gptq"))
    assert "gptq_quantize(W, H, bits, GROUP, sym=SYM, damp=DAMP)" in cells_03     # the miniature, same settings
    assert "rtn_model(models.load_model(profile, str(model_dir)), bits, GROUP, sym=SYM)" in cells_03
    assert "rtn_model(load_tuned(), BITS, GROUP, sym=True)" in "\n".join(code_cells("07_method_comparison"))


def test_notebook_07_gguf_miniatures_match_the_gguf_package_bit_for_bit():
    import torch

    from notebook_code import definitions

    ns = definitions("07_method_comparison", "q4_0", "q4_1", "q8_0", scope={"torch": torch})
    torch.manual_seed(0)
    halves = torch.tensor([127.0, 0.5, 1.5, -2.5, 3.5, -0.5] + [0.0] * 26).reshape(1, 32)   # Q8_0: d = 1, exact halves
    for w in (torch.randn(64, 576) * 0.05, torch.randn(8, 1536), torch.zeros(2, 64), halves):
        for name in ("q4_0", "q4_1", "q8_0"):
            ours = ns[name](w)
            assert torch.equal(ours, quant.gguf_fake_quantize(w, name.upper())), name


def test_gguf_model_rounds_only_the_decoder_layers_and_gives_the_format_bits():
    import torch

    from helpers import models

    model = models.load_model(get_profile("tiny"))
    embed = model.model.embed_tokens.weight.clone()
    layer = model.model.layers[0].mlp.down_proj
    before = layer.weight.clone()
    quant.gguf_model(model, "Q4_0")
    assert torch.equal(model.model.embed_tokens.weight, embed)
    assert torch.equal(layer.weight, quant.gguf_fake_quantize(before, "Q4_0"))
    assert [quant.gguf_bits_per_weight(t) for t in quant.GGUF_TYPES] == [4.5, 5.0, 8.5]
    with pytest.raises(quant.QuantError, match="Unknown GGUF type"):
        quant.gguf_model(model, "Q2_K")


def test_in_a_notebook_kernel_gptqmodels_output_goes_to_the_log_not_the_cell(tmp_path):
    """GPTQModel draws progress with logbar, which in a Jupyter kernel writes through IPython's display, past any
    redirection of stdout. In a real kernel, a quantization through the pipeline leaves the cell with our one
    progress bar (at its end: every layer done) and one line, and GPTQModel's output in the log."""
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    code = f"""
import os
os.environ["COURSE_ARTIFACTS"] = {str(tmp_path / "artifacts")!r}
os.environ.pop("PYTEST_CURRENT_TEST", None)   # as in a student's kernel: GPTQModel draws nothing under pytest
from helpers import get_profile, models, pipeline, text
folder, seconds = pipeline.quantized(get_profile("tiny"), models.tiny_model_dir(), "gptq", 4, 32,
                                     text.stdlib_samples("calibration", 4))
print("log:", f"{{folder}}.log")
"""
    nb = new_notebook(cells=[new_code_cell(code)])
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(Path(__file__).resolve().parent.parent)}}).execute()
    outputs = nb.cells[0].outputs
    text_out = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "quantize_config" not in text_out and "tokenicer" not in text_out and "Writing model shards" not in \
        text_out, text_out[-2000:]
    bars = [o.data["text/plain"] for o in outputs if o.get("output_type") == "display_data"]
    assert len(bars) == 1 and bars[0].startswith("GPTQ w4 g32"), bars
    widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert {(m["state"].get("value"), m["state"].get("max")) for m in widgets.values()
            if m["model_name"] == "FloatProgressModel"} == {(2.0, 2.0)}    # tiny's 2 layers, both reported done
    log = Path(text_out.split("log: ")[1].split()[0])
    assert "Content of saved `config.json`" in log.read_text(errors="ignore")


def test_the_default_kernel_follows_the_profiles_device_not_the_machines(monkeypatch):
    """COURSE_PROFILE=cpu on a GPU runtime keeps the CPU's kernel with the CPU's dtype (fp32 needs the torch kernels:
    GPTQ_TRITON computes in fp16/bf16 only); a GPU profile asks for Triton."""
    from helpers import profiles

    monkeypatch.setattr(profiles, "get_profile", lambda *a, **k: profiles.PROFILES["t4"])
    assert quant.default_backend("gptq", 4).value == "gptq_triton"
    monkeypatch.setattr(profiles, "get_profile", lambda *a, **k: profiles.PROFILES["cpu"])
    assert quant.default_backend("gptq", 4).value == "gptq_torch"
    assert quant.default_backend("awq", 4).value == "awq_torch"
