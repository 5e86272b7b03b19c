"""Serving what the course builds: which config fields the loaders read, the commands, and a reload check.

A merged model is an ordinary transformers folder. A GPTQ or AWQ checkpoint carries its format in
``config.json["quantization_config"]``; transformers (through GPTQModel) and vLLM pick their kernels from it:

- GPTQ: ``quant_method="gptq"``, ``bits``, ``group_size``, ``sym``, ``desc_act`` and ``checkpoint_format`` ("gptq");
- AWQ: ``quant_method="awq"``, ``bits``, ``group_size``, ``zero_point`` (False: symmetric) and ``version`` ("gemm").

:func:`serving_problems` checks a folder for them and for the tokenizer and chat template a server needs;
:func:`reload` loads a folder the way a transformers server does.
"""

from __future__ import annotations

from pathlib import Path

SERVING_FIELDS = {
    "gptq": ("quant_method", "bits", "group_size", "sym", "desc_act", "checkpoint_format"),
    "awq": ("quant_method", "bits", "group_size", "zero_point", "version"),
}
NEEDED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def folder_problem(folder: str | Path) -> str | None:
    """Why ``folder`` is not a saved model folder a server can read (``None`` when it holds ``config.json``): it does
    not exist (with the nearest names that do), it is a file, or it holds no ``config.json`` (an adapter, a failed
    save). :func:`helpers.models.local_folder_problem` with one more rule: a name shaped like a Hub id is no excuse."""
    from .paths import saved_model_problem

    return saved_model_problem(folder, "", " (an adapter folder is served merged: pipeline.merged)")


def model_folder(folder: str | Path) -> Path:
    """``folder`` as a Path when it is a saved model folder (:func:`folder_problem`); otherwise
    :class:`~helpers.models.ModelLoadError` saying what is there and what to do, before anything is loaded."""
    from .models import ModelLoadError
    from .paths import as_sentence

    if problem := folder_problem(folder):
        raise ModelLoadError(f"{as_sentence(problem)} Give the folder of a saved "
                             "model (config.json, tokenizer and *.safetensors), e.g. what pipeline.dpo_merged(profile) "
                             "or pipeline.quantized(...) returns.")
    return Path(folder).expanduser()


def quantization_config(folder: str | Path) -> dict | None:
    """``config.json``'s ``quantization_config`` of a saved model (``None`` for a full-precision one)."""
    from .models import ModelLoadError
    from .paths import read_config_json

    return read_config_json(model_folder(folder), ModelLoadError).get("quantization_config")


def method_of(folder: str | Path) -> str:
    """``"gptq"``, ``"awq"``, or ``"full precision"``."""
    config = quantization_config(folder)
    return config.get("quant_method", "unknown") if config else "full precision"


def serving_fields(folder: str | Path) -> dict:
    """The fields the loaders read, as saved (missing ones as ``None``)."""
    config = quantization_config(folder) or {}
    return {k: config.get(k) for k in SERVING_FIELDS.get(method_of(folder), ())}


def serving_problems(folder: str | Path) -> list[str]:
    """What a server would miss in ``folder``: files (weights, tokenizer, chat template) and quantization fields."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():   # a file, or nothing there: that is the one problem
        return [folder_problem(folder)]
    problems = [f"no {name}" for name in NEEDED_FILES if not (folder / name).is_file()]
    if not list(folder.glob("*.safetensors")):
        problems.append("no *.safetensors weights")
    if (folder / "config.json").is_file():
        from .models import ModelLoadError

        try:
            method = method_of(folder)
        except ModelLoadError as exc:   # config.json is not a JSON object
            return [*problems, str(exc)]
        if method not in ("full precision", *SERVING_FIELDS):
            problems.append(f"quant_method {method!r} is neither gptq nor awq")
        problems += [f"quantization_config has no {k!r}" for k, v in serving_fields(folder).items() if v is None]
    return problems


def describe(folder: str | Path) -> dict:
    """What a server reads in ``folder``: its ``format`` (:func:`method_of`), the quantization fields the loaders read
    (:func:`serving_fields`), and what it would miss (``missing``: :func:`serving_problems`, or "nothing")."""
    return {"format": method_of(folder), **serving_fields(folder),
            "missing": "; ".join(serving_problems(folder)) or "nothing"}


def serve_commands(folder: str | Path) -> dict[str, str]:
    """How to serve ``folder`` with vLLM (an OpenAI-compatible server; it reads the format from the config) and with
    transformers in Python, and where to run them (``run from``): the folder is written relative to the course's
    artifacts folder (:func:`helpers.paths.artifacts_root`) when it is inside it, else in full."""
    from .paths import artifacts_root

    method = method_of(folder)
    folder, root = Path(folder).expanduser().resolve(), artifacts_root().resolve()
    inside = folder.is_relative_to(root)
    written = folder.relative_to(root) if inside else folder
    vllm = f"vllm serve {written}" + (f" --quantization {method}" if method in SERVING_FIELDS else "")
    python = (f"AutoModelForCausalLM.from_pretrained('{written}', device_map='auto')"
              + ("  # GPTQModel + optimum installed" if method in SERVING_FIELDS else ""))
    return {"run from": str(root) if inside else "anywhere", "vLLM": vllm, "transformers": python}


def reload(folder: str | Path, profile=None):
    """``(model, tokenizer)`` loaded from ``folder`` with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``,
    as a transformers server loads them (GPTQ and AWQ through GPTQModel's kernels), on the profile's device and in
    its dtype (:func:`helpers.models.from_pretrained_kwargs`: ``device_map`` on a GPU, a GPTQ/AWQ kernel that needs no
    nvcc build). ``profile``: the one :func:`helpers.profiles.get_profile` picks when not given."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import from_pretrained_kwargs
    from .profiles import get_profile

    folder = model_folder(folder)   # a file, a missing folder, no config.json: said before transformers is asked
    kwargs = from_pretrained_kwargs(profile or get_profile(), str(folder))
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs), AutoTokenizer.from_pretrained(folder)
