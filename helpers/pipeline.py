"""Every artifact a later notebook builds on, made or reused by one rule (:mod:`helpers.artifacts`).

- :func:`sft_adapter`: notebook 01's LoRA adapter (``outputs/sft_lora/<profile>``); if it is missing or was
  trained with other settings, ``scripts/sft.py`` trains it with notebook 01's recipe in a fresh process.
- :func:`sft_merged`: that adapter merged into the base (the model notebooks 02, 06 and 07 start from).
- :func:`dpo_merged`: notebook 02's DPO adapter merged into the SFT model (the model notebooks 03-05 and 07
  compress); the DPO adapter is trained here with notebook 02's settings if it is missing or was trained on
  another SFT model.
- :func:`grpo_merged`: notebook 08's GRPO adapter merged into the SFT model (a row of notebook 07's table); trained
  here with notebook 08's recipe (``scripts/grpo.py``) if it is missing or was trained otherwise.
- :func:`quantized`: a GPTQ or AWQ checkpoint, in a folder named after its inputs, so that notebooks 03, 04 and
  07 share a checkpoint whenever they ask for the same one.

Each function prints what it reused and from where, or what it builds and why.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from transformers import PreTrainedTokenizerBase

from .artifacts import artifact, as_recorded, changed_inputs, content_hash, read_manifest, reusable, write_manifest
from .cost import rebuild_note
from .processes import show_source  # noqa: F401  (the code that fresh process runs, shown in the notebook)
from .paths import fingerprint, outputs_dir
from .profiles import Profile, takes_profile


@takes_profile
def sft_adapter(profile: Profile) -> Path:
    """Notebook 01's SFT LoRA adapter for this profile, trained now (``scripts/sft.py``) unless a saved one has
    today's settings (:func:`helpers.manifests.run_settings`)."""
    from .isolated import train_isolated
    from .models import check_base_model
    from .manifests import run_settings
    from .training import adapter_dir

    check_base_model(profile)   # a mistyped model folder fails here, not in the training process
    folder = adapter_dir(profile)
    if reusable(folder, run_settings(profile), "SFT adapter"):
        return folder
    print(rebuild_note(profile, "sft"), flush=True)
    return Path(train_isolated(profile, "lora", folder=folder)["adapter"])


@takes_profile
def merged(profile: Profile, adapter: Path, name: str, base_path: str | None = None,
           tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """A full-precision model folder ``outputs/<name>/<profile>/``: ``adapter`` merged into the base
    (``base_path``, default the profile's model). Its manifest records the adapter's and the base's weights
    fingerprints, so a retrained adapter is merged again."""
    from .models import base_fingerprint, load_model, load_tokenizer
    from .training import load_adapter

    target = outputs_dir(name) / profile.name
    inputs = {"adapter": fingerprint(adapter),
              "base": fingerprint(base_path) if base_path else base_fingerprint(profile)}
    if reusable(target, inputs, f"merged model '{name}'"):
        return target
    tokenizer = tokenizer or load_tokenizer(profile)
    model = load_adapter(load_model(profile, base_path), adapter).merge_and_unload()
    with artifact(target, inputs) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def loftq_start(profile: Profile, peft_model, tokenizer: PreTrainedTokenizerBase) -> Path:
    """Save notebook 06's LoftQ starting point for ``scripts/sft.py --base ... --init-adapter ...`` to
    ``outputs/06_loftq_init/<profile>/``: ``base/`` holds the model with Q in place of every LoRA target weight (not
    merged: loaded in NF4 again it stays Q), ``adapter/`` the adapter that starts at A, B. ``peft_model`` is
    unloaded by this (its LoRA layers removed). Saved on every run: building it takes seconds, and the QLoRA run
    trained from it is reused only while these files hold the same weights (:func:`helpers.manifests.start_settings`
    fingerprints them), so an edited LoftQ cell trains again."""
    from .models import base_fingerprint

    folder = outputs_dir("06_loftq_init") / profile.name
    with artifact(folder, {"base": base_fingerprint(profile), "made_from": "notebook 06's LoftQ cell"}) as tmp:
        peft_model.save_pretrained(tmp / "adapter")
        peft_model.unload().save_pretrained(tmp / "base")
        tokenizer.save_pretrained(tmp / "base")
    return folder


@takes_profile
def sft_merged(profile: Profile, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """The base model with notebook 01's adapter merged in (:func:`sft_adapter`, :func:`merged`)."""
    return merged(profile, sft_adapter(profile), "sft_merged", tokenizer=tokenizer)


@takes_profile
def dpo_inputs(profile: Profile, sft_dir: Path, tokenizer: PreTrainedTokenizerBase | None = None) -> dict:
    """What notebook 02's recipe on this profile would record for its DPO adapter: trainer settings, LoRA config and
    pairs (:func:`helpers.manifests.dpo_settings`), and the SFT model it starts from."""
    from .manifests import dpo_settings

    return {"sft_model": fingerprint(sft_dir), **dpo_settings(profile, tokenizer)}


def dpo_run_inputs(config, peft_config, pairs, sft_dir: Path) -> dict:
    """What decided a DPO adapter that was just trained, read from the run's own ``DPOConfig``, LoRA config and
    pairs: the manifest notebook 02 writes. Equal to :func:`dpo_inputs` only when the run used notebook 02's recipe."""
    from .manifests import dpo_recipe_settings

    return {"sft_model": fingerprint(sft_dir), **dpo_recipe_settings(config, peft_config, pairs)}


def _reuse_line(wanted: dict, adapter: Path, config_key: str, trained_in: str, later: tuple[str, str, str]) -> str:
    """Whether the later notebooks will take the adapter saved at ``adapter`` for ``trained_in``'s (its manifest
    equals ``wanted``, the profile's recipe), and if not, which settings differ (``config_key``'s field by field).
    ``later``: who reuses it, what they do instead, and the pipeline function that does it."""
    who, instead, function = later
    changed = changed_inputs(as_recorded(wanted), (read_manifest(adapter) or {}).get("inputs"), expand=(config_key,))
    if not changed:
        return f"{who} will reuse this adapter: it was trained with {trained_in}'s recipe for this profile."
    return (f"Not the profile's recipe ({', '.join(changed)} differ): {who.lower()} will not take this adapter for "
            f"{trained_in}'s; {instead} one with the profile's recipe (helpers.pipeline.{function}).")


@takes_profile
def dpo_reuse_line(profile: Profile, sft_dir: Path, adapter: Path, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """Whether notebooks 03-07 will reuse the DPO adapter saved at ``adapter`` (its manifest equals what notebook
    02's recipe on this profile records), and if not, which settings differ."""
    return _reuse_line(dpo_inputs(profile, sft_dir, tokenizer), adapter, "dpo_config", "notebook 02",
                       ("Notebooks 03-07", "they train", "dpo_merged"))


@takes_profile
def dpo_merged(profile: Profile, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """The fully tuned model (SFT, then DPO, both merged) as a full-precision folder.

    Uses notebook 02's DPO adapter (``outputs/dpo/<profile>``) when it was trained on today's SFT model, else
    trains it with notebook 02's recipe in a fresh process (``scripts/dpo.py``)."""
    from .isolated import dpo_isolated
    from .manifests import dpo_settings
    from .models import check_base_model
    from .training import adapter_dir

    check_base_model(profile)
    # the DPO pairs checked before the SFT model is built (minutes on a GPU); read only when they are new
    # (dpo_settings looks their hash up by the data files' checksums), and the tokenizer loaded only to merge
    settings = dpo_settings(profile, tokenizer)
    sft_dir = sft_merged(profile, tokenizer)
    adapter = adapter_dir(profile, "dpo")
    if not reusable(adapter, {"sft_model": fingerprint(sft_dir), **settings}, "DPO adapter"):   # = dpo_inputs
        print(rebuild_note(profile, "dpo"), flush=True)
        dpo_isolated(profile, sft_dir, adapter)
    return merged(profile, adapter, "dpo_merged", base_path=str(sft_dir), tokenizer=tokenizer)


@takes_profile
def grpo_inputs(profile: Profile, sft_dir: Path) -> dict:
    """What notebook 08's recipe on this profile records for its GRPO adapter (:func:`helpers.manifests.grpo_settings`)
    and the SFT model it starts from."""
    from .manifests import grpo_settings

    return {"sft_model": fingerprint(sft_dir), **grpo_settings(profile)}


def grpo_run_inputs(config, peft_config, rows, sft_dir: Path) -> dict:
    """What decided a GRPO adapter that was just trained, read from the run's own ``GRPOConfig``, LoRA config and
    prompts: the manifest notebook 08 writes. Equal to :func:`grpo_inputs` only when the run used the profile's recipe."""
    from .manifests import grpo_recipe_settings

    return {"sft_model": fingerprint(sft_dir), **grpo_recipe_settings(config, peft_config, rows)}


@takes_profile
def grpo_reuse_line(profile: Profile, sft_dir: Path, adapter: Path) -> str:
    """Whether notebook 07 will reuse the GRPO adapter saved at ``adapter``, and if not, which settings differ."""
    return _reuse_line(grpo_inputs(profile, sft_dir), adapter, "grpo_config", "notebook 08",
                       ("Notebook 07", "it trains", "grpo_merged"))


def run_inputs(trainer, rows, base: str | Path) -> tuple[dict, str]:
    """The manifest of the adapter ``trainer`` has just trained, read from what ran: its ``args`` (an ``SFTConfig``,
    ``DPOConfig`` or ``GRPOConfig``), the LoRA config on ``trainer.model``, the ``rows`` it trained on, and ``base``
    (notebook 01: the base model's id; 02 and 08: the SFT model's folder, by its weights fingerprint); and which
    kind of run it was (``"sft"``, ``"dpo"`` or ``"grpo"``)."""
    from trl import DPOConfig, GRPOConfig

    from .manifests import recipe_settings

    peft_config = trainer.model.peft_config["default"]
    if isinstance(trainer.args, DPOConfig):
        return dpo_run_inputs(trainer.args, peft_config, rows, Path(base)), "dpo"
    if isinstance(trainer.args, GRPOConfig):
        return grpo_run_inputs(trainer.args, peft_config, rows, Path(base)), "grpo"
    return recipe_settings(str(base), peft_config, trainer.args, rows), "sft"


@contextmanager
def handover(folder: str | Path, trainer, rows, base: str | Path, profile: Profile) -> Iterator[Path]:
    """Save the adapter ``trainer`` has just trained for the later notebooks: yields a temporary folder to save it into
    (``trainer.model.save_pretrained(tmp)``); when the block ends, adds ``train_info.json`` (steps, seconds, losses)
    and the manifest of what ran (:func:`run_inputs`), moves the folder into place as ``folder``, and prints whether
    the later notebooks will reuse it: only when what ran is the profile's recipe (an edited config cell, or your own
    rows, give an adapter they will not take for it, and they say which settings differ)."""
    from .manifests import write_train_info

    inputs, kind = run_inputs(trainer, rows, base)
    with artifact(folder, inputs) as tmp:
        yield tmp
        write_train_info(tmp, trainer, profile)
    print(reuse_line(profile, kind, Path(folder), base, getattr(trainer, "processing_class", None)))


def train_isolated(profile: Profile, kind: str = "lora", **kwargs) -> dict:
    """``python scripts/sft.py [--qlora]`` in a fresh process: notebook 06's LoRA and QLoRA runs, reused when what they
    would run has not changed (:func:`helpers.isolated.train_isolated`, whose arguments it takes)."""
    from .isolated import train_isolated as train   # imported here: it brings TRL, which the quantization notebooks skip

    return train(profile, kind, **kwargs)


@takes_profile
def reuse_line(profile: Profile, kind: str, adapter: Path, base: str | Path,
               tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """Whether the later notebooks will reuse the ``kind`` adapter saved at ``adapter`` (its manifest equals what the
    profile's recipe records), and if not, which settings differ."""
    from .manifests import run_settings

    if kind == "sft":
        return _reuse_line(run_settings(profile), adapter, "", "notebook 01",
                           ("Notebooks 02-08", "they train", "sft_adapter"))
    if kind == "dpo":
        return dpo_reuse_line(profile, Path(base), adapter, tokenizer)
    return grpo_reuse_line(profile, Path(base), adapter)


@takes_profile
def grpo_merged(profile: Profile, tokenizer: PreTrainedTokenizerBase | None = None, build: bool = True) -> Path | None:
    """The SFT model with notebook 08's GRPO adapter merged in, as a full-precision folder.

    Uses notebook 08's adapter (``outputs/grpo/<profile>``) when its manifest equals notebook 08's recipe on today's
    SFT model, else trains it with that recipe in a fresh process (``scripts/grpo.py``); with ``build=False`` it
    says what is missing and how long building it would take, and returns None instead."""
    from .isolated import grpo_isolated
    from .models import check_base_model
    from .training import adapter_dir

    check_base_model(profile)
    sft_dir = sft_merged(profile, tokenizer)
    adapter = adapter_dir(profile, "grpo")
    if not reusable(adapter, grpo_inputs(profile, sft_dir), "GRPO adapter"):
        if not build:
            print(f"No GRPO model yet: notebook 08's adapter for this profile is not in {adapter}, or was trained "
                  "otherwise. Run notebook 08 first (or pass build=True). "
                  + rebuild_note(profile, "grpo", doing="Building"), flush=True)
            return None
        print(rebuild_note(profile, "grpo"), flush=True)
        grpo_isolated(profile, sft_dir, adapter)
    return merged(profile, adapter, "grpo_merged", base_path=str(sft_dir), tokenizer=tokenizer)


QUANT_SETTINGS = ("bits", "group_size", "sym", "desc_act", "act_group_aware", "damp_percent", "true_sequential",
                  "static_groups", "mse", "format", "lm_head")  # the GPTQModel config fields that decide a checkpoint


def quantize_inputs(model_dir: Path, method: str, bits: int, group_size: int, calibration: list[str],
                    awq_clip: bool = True, awq_clip_tokens: int = 512, quantize_with=None, **settings) -> dict:
    """What decides a GPTQ/AWQ checkpoint (:func:`config_inputs`), from a method and its settings."""
    from . import quant

    config = quant.gptqmodel_config(method, bits, group_size, **settings)
    return config_inputs(model_dir, config, calibration, awq_clip, awq_clip_tokens, quantize_with)


def config_inputs(model_dir: Path, config, calibration: list[str], awq_clip: bool = True, awq_clip_tokens: int = 512,
                  quantize_with=None) -> dict:
    """What decides a GPTQ/AWQ checkpoint, read from the objects that make it: the weights, the GPTQModel config
    (its resolved fields, so an explicit default equals an omitted one), the calibration text, AWQ's clipping search,
    and the code of the function that quantizes (:func:`helpers.quant.code_key`: a cell's unedited copy of
    :func:`helpers.quant.quantize_model` is the same code; an edited one is not)."""
    from . import quant

    method = _method(config)
    resolved = {k: str(getattr(v, "value", v)) for k in QUANT_SETTINGS if (v := getattr(config, k, None)) is not None}
    return {"model": fingerprint(model_dir), "method": method, **resolved,
            "dtype": str(quant.default_dtype(method)).removeprefix("torch."),
            "awq_clip": [awq_clip, awq_clip_tokens] if method == "awq" else None,
            "calibration_sha256": content_hash(list(calibration)),
            "code_sha256": content_hash(quant.code_key(quantize_with or quant.quantize_model))}


def _method(config) -> str:
    return str(getattr(config.quant_method, "value", config.quant_method)).lower()


@takes_profile
def quantized(profile: Profile, model_dir: Path, method: str, bits: int, group_size: int, calibration: list[str],
              awq_clip: bool = True, awq_clip_tokens: int = 512, **settings) -> tuple[Path, float]:
    """A GPTQModel checkpoint of ``model_dir`` (``method`` "gptq" or "awq"; ``settings`` go to its config) and the
    seconds its quantization took: :func:`quantized_with` with :func:`helpers.quant.gptqmodel_config`'s config
    and :func:`helpers.quant.quantize_model`. Checks the settings, folder and text before GPTQModel is imported."""
    from .quant import check_calibration, check_inputs, gptqmodel_config

    check_calibration(calibration)
    check_inputs(model_dir, method, bits, group_size)
    return quantized_with(profile, model_dir, gptqmodel_config(method, bits, group_size, **settings), calibration,
                          awq_clip=awq_clip, awq_clip_tokens=awq_clip_tokens)


@takes_profile
def quantized_with(profile: Profile, model_dir: Path, config, calibration: list[str], quantize_with=None,
                   awq_clip: bool = True, awq_clip_tokens: int = 512) -> tuple[Path, float]:
    """The checkpoint that ``quantize_with(model_dir, out_dir, config, calibration, dtype, backend)`` (default
    :func:`helpers.quant.quantize_model`) makes from ``config`` (a GPTQModel ``GPTQConfig`` or ``AWQConfig``), and
    the seconds it took: reused when a checkpoint from the same inputs exists (:func:`config_inputs`), else made
    now, in this process (:func:`helpers.quant.run_quantization`), into a temporary folder renamed when complete.
    GPTQModel's own output goes to ``<folder>.log``; the notebook shows one progress bar (decoder layers done)
    instead."""
    import contextlib

    from tqdm.auto import tqdm
    from transformers import AutoConfig

    from .paths import atomic_folder
    from .quant import QuantError, awq_clip_problem, check_calibration, check_inputs, check_quantize_call, run_quantization

    method = check_quantize_call(config, quantize_with)   # GPTQModel's config and a function of the right shape
    check_calibration(calibration)
    check_inputs(model_dir, method, config.bits, config.group_size)
    if method == "awq" and awq_clip and (problem := awq_clip_problem(model_dir)):
        raise QuantError(problem)
    inputs = config_inputs(model_dir, config, calibration, awq_clip, awq_clip_tokens, quantize_with)
    name = f"{method}_w{config.bits}_g{config.group_size}_{content_hash(inputs, 10)}"
    folder = outputs_dir("quantized", profile.name) / name
    what = f"{method.upper()} w{config.bits} checkpoint"
    if reusable(folder, inputs, what):
        return folder, read_manifest(folder)["seconds"]
    log_path = Path(f"{folder}.log")
    n_layers = AutoConfig.from_pretrained(str(model_dir)).num_hidden_layers
    desc = f"{method.upper()} w{config.bits} g{config.group_size}"
    bar = tqdm(total=n_layers, desc=desc, unit="layer")   # before the redirection: it draws in the notebook

    def on_layer(index: int) -> None:
        bar.n = min(n_layers, index + 1)
        bar.refresh()

    try:
        with atomic_folder(folder) as tmp, open(log_path, "w") as log:
            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    seconds = run_quantization(model_dir, tmp, config, calibration, quantize_with, awq_clip=awq_clip,
                                               awq_clip_tokens=awq_clip_tokens, on_layer=on_layer)
            except Exception as exc:
                exc.add_note(f"GPTQModel's output for this quantization is in {log_path}.")
                raise
    finally:
        bar.close()
    write_manifest(folder, inputs, seconds=seconds)
    from .quant import default_backend, default_dtype, dir_size_mb

    print(f"{desc}: made in {seconds:.0f} s (load, quantize, save) in {str(default_dtype(method)).removeprefix('torch.')} "
          f"with GPTQModel's {default_backend(method, config.bits).name} kernels, {dir_size_mb(folder):.1f} MB on disk; "
          f"GPTQModel's output is in {log_path}")
    return folder, seconds


def earlier_rows(profile: Profile, sft_dir: Path, tuned_dir: Path, choice: dict, bits: int) -> dict[str, tuple]:
    """Notebook 07's rows that an earlier notebook measured before: 07's variant name -> (that notebook, its name for
    the variant, the weights it measured: a model folder, or the profile for its base model). ``choice`` is 07's
    calibration choice per method (:func:`helpers.comparison.calibration_choice`); its GPTQ and AWQ rows are listed
    only when notebooks 03 and 04 chose a variant. The harness (:class:`helpers.measure.Harness`, ``earlier=``) takes
    a row from there only when that notebook measured these very weights on this profile, and says why not
    otherwise."""
    rows = {"base": ("01_sft_lora", "base", profile),            # the profile's base model: skill accuracy
            "sft_lora": ("02_dpo", "sft_lora", sft_dir),         # skill and preference accuracy
            "dpo": ("03_gptq", "baseline", tuned_dir), f"dpo_rtn_w{bits}": ("03_gptq", f"rtn_w{bits}", tuned_dir),
            "dpo_int8": ("05_bitsandbytes_int8_nf4", "int8", tuned_dir),
            "dpo_nf4": ("05_bitsandbytes_int8_nf4", "nf4_dq", tuned_dir)}
    for method, notebook in (("gptq", "03_gptq"), ("awq", "04_awq")):
        if choice.get(method, {}).get("variant"):
            rows[f"dpo_{method}_w{bits}"] = (notebook, choice[method]["variant"], tuned_dir)
    return rows


__all__ = ["sft_adapter", "merged", "sft_merged", "dpo_merged", "dpo_inputs", "dpo_run_inputs", "dpo_reuse_line",
           "grpo_merged", "grpo_inputs", "grpo_run_inputs", "grpo_reuse_line", "handover", "run_inputs", "reuse_line",
           "quantized", "quantized_with", "quantize_inputs", "config_inputs", "earlier_rows"]
