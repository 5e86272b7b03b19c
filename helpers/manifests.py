"""What a saved adapter's manifest records (SFT, DPO, GRPO): the settings of the run that made it (build layer).

Two readings of the same thing, which must be equal for a later notebook to reuse an adapter
(:mod:`helpers.pipeline`, the manifest rule in :mod:`helpers.artifacts`):

- what a run that just finished used, read from its own objects (the ``DPOConfig``/``GRPOConfig``, the LoRA config,
  the rows it trained on): :func:`dpo_recipe_settings`, :func:`grpo_recipe_settings`; notebooks 02 and 08 and the
  scripts record this;
- what the profile's recipe would use, read without building a trainer and without reading a row (the rows' content
  hash is looked up by the data files' and the code's checksums): :func:`dpo_settings`, :func:`grpo_settings`.

An edited config cell, or your own rows, therefore give an adapter that the later notebooks do not take for the
profile's. The SFT adapter's are :func:`recipe_settings` (what ran: ``scripts/sft.py`` and, through
:func:`helpers.pipeline.handover`, notebook 01) and :func:`run_settings` (the profile's recipe).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

from . import dpo, grpo
from .artifacts import ROW_CODE, config_settings, content_hash, files_source, lora_settings, rows_hash
from .profiles import Profile, takes_profile
from .data import sft_rows
from .training import adapter_dir, check_kind, lora_config, run_record, sft_config_kwargs

DPO_FIELDS = ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
              "lr_scheduler_type", "warmup_steps", "max_length", "gradient_checkpointing", "bf16", "fp16", "seed",
              "data_seed", "beta", "loss_type", "loss_weights")   # the DPOConfig fields that decide an adapter
GRPO_FIELDS = ("max_steps", "num_generations", "per_device_train_batch_size", "gradient_accumulation_steps",
               "max_completion_length", "learning_rate", "beta", "loss_type", "scale_rewards", "epsilon",
               "temperature", "lr_scheduler_type", "warmup_steps", "gradient_checkpointing", "bf16", "fp16", "seed",
               "data_seed")   # the GRPOConfig fields that decide an adapter (not where logs go or how often)
GRPO_REWARD = "helpers.grpo.correctness_reward"   # what a GRPO adapter's answers were scored with


def dpo_recipe_settings(config, peft_config, pairs: Sequence[dict] | None, pairs_sha256: str | None = None) -> dict:
    """What decides a DPO adapter besides the SFT model it starts from, read from the objects the run was built
    from: the ``DPOConfig`` (or its keyword arguments), the LoRA config and the pairs it trained on (after the length
    check). ``pairs_sha256``: the pairs' content hash when it is known without them (then ``pairs`` is ``None``)."""
    from trl import DPOConfig

    return {"dpo_config": config_settings(config, DPOConfig, DPO_FIELDS), **lora_settings(peft_config),
            "pairs_sha256": pairs_sha256 or content_hash(list(pairs))}


@takes_profile
def pairs_source(profile: Profile) -> dict:
    """What the profile's DPO training pairs are made from, read without reading a row: the checksums of the data
    files (the skills split, or the local copy of the Hub dataset) and of the code that reads and checks them, the
    selection (split, row count, ``max_length``) and the tokenizer the length check uses (its files' checksums, or
    its Hub id). A Hub dataset read from the Hub itself (no local copy) is recorded by its id, split, row count and
    shuffle: the course pins no revision, so a dataset that changes on the Hub is not noticed here."""
    from . import data, hub_data
    from .models import model_path

    code = files_source(*ROW_CODE, dpo.__file__)
    tokenizer = model_path(profile)
    if Path(tokenizer).is_dir():
        tokenizer = files_source(*(f for f in sorted(Path(tokenizer).iterdir())
                                   if f.is_file() and f.suffix != ".safetensors" and f.name != "manifest.json"))
    selection = {"max_length": profile.max_length, "tokenizer": tokenizer, "code": code}
    if profile.preference_dataset == "skills":
        return {"data": files_source(Path(data.DATA_DIR) / "skills_dpo_train.jsonl"), "split": "dpo_train",
                "rows": profile.n_train, **selection}
    info = hub_data.spec(profile.preference_dataset)
    where = hub_data.source(profile.preference_dataset, profile.hub_data)
    origin = files_source(where) if where != profile.preference_dataset else {"hub": where}
    return {"data": origin, "dataset": profile.preference_dataset, "split": info.train, "rows": profile.preference_rows,
            "shuffle": [0, hub_data.SHUFFLE_BUFFER], **selection}


@takes_profile
def dpo_settings(profile: Profile, tokenizer=None) -> dict:
    """:func:`dpo_recipe_settings` of notebook 02's recipe on this profile: the profile's ``DPOConfig`` arguments (no
    config object is built: that would reset Accelerate's state), its LoRA config and its pairs after the length check.

    The pairs are recorded by their content hash, looked up by where they come from (:func:`pairs_source`,
    :func:`helpers.artifacts.rows_hash`): they are read, checked and tokenized (``tokenizer``, the profile's; loaded
    when not given) only the first time, so a reuse check reads no data and loads no tokenizer."""
    def pairs() -> list[dict]:
        from .models import load_tokenizer

        return dpo.check_lengths(tokenizer or load_tokenizer(profile), dpo.preference_rows(profile, "dpo_train"),
                                 profile.max_length)

    config = SimpleNamespace(**dpo.dpo_config_kwargs(profile, "unused"))
    return dpo_recipe_settings(config, lora_config(profile), None,
                               pairs_sha256=rows_hash("DPO training pairs", pairs_source(profile), pairs))


def grpo_recipe_settings(config, peft_config, rows: Sequence[dict] | None, reward: str = GRPO_REWARD,
                         prompts_sha256: str | None = None) -> dict:
    """What decides a GRPO adapter besides the SFT model it starts from, read from the objects the run was built
    from: the ``GRPOConfig`` (or its keyword arguments; a field left out counts as TRL's default), the LoRA config,
    the reward and the training prompts."""
    from trl import GRPOConfig

    return {"grpo_config": config_settings(config, GRPOConfig, GRPO_FIELDS), **lora_settings(peft_config),
            "reward": reward, "prompts_sha256": prompts_sha256 or content_hash(list(rows))}


@takes_profile
def grpo_settings(profile: Profile) -> dict:
    """:func:`grpo_recipe_settings` of notebook 08's recipe on this profile, from its ``GRPOConfig`` arguments (no
    config object is built: that would reset Accelerate's state) and its prompts, recorded by their content hash
    looked up by where they come from (the skills split's and the code's checksums, the count and the shuffle seed:
    :func:`helpers.artifacts.rows_hash`), so a reuse check reads no data."""
    from . import data

    source = {"data": files_source(Path(data.DATA_DIR) / f"skills_{grpo.TRAIN_SPLIT}.jsonl"),
              "split": grpo.TRAIN_SPLIT, "rows": profile.grpo_steps * profile.grpo_prompts_per_step, "seed": 0,
              "code": files_source(*ROW_CODE, grpo.__file__)}
    return grpo_recipe_settings(SimpleNamespace(**grpo.grpo_config_kwargs(profile, "unused")), lora_config(profile),
                                None, prompts_sha256=rows_hash("GRPO prompts", source, lambda: grpo.prompt_rows(profile)))


# ---------------------------------------------------------------------- the SFT adapter (notebook 01, scripts/sft.py)


def recipe_settings(model_id: str, peft_config: LoraConfig | None, args, rows: list[dict] | None,
                    kind: str = "lora", quant_type: str = "nf4", double_quant: bool = True,
                    start: dict | None = None, data_sha256: str | None = None) -> dict:
    """Everything that decides an SFT run's result, read from the objects the run is built from: base model, LoRA
    config (``None``: full fine-tuning), trainer settings, data, and for ``"qlora"`` the 4-bit format of the base.
    Two runs with equal settings train the same adapter (seeded); an adapter's manifest records them
    (:mod:`helpers.artifacts`). ``data_sha256``: the rows' content hash when it is known without them
    (:func:`run_settings`; then ``rows`` is ``None``)."""
    check_kind(kind)
    lora = {} if peft_config is None else lora_settings(peft_config)
    trainer = {k: getattr(args, k) for k in (
        "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_steps",
        "max_length", "gradient_checkpointing", "bf16", "fp16", "seed", "data_seed", "completion_only_loss")}
    settings = {"kind": kind, "model_id": model_id, **lora, **trainer,
                "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
                "data_sha256": data_sha256 or content_hash(rows)}
    if kind == "qlora":
        settings.update(quant_type=quant_type, double_quant=double_quant)
    if start:  # where training started, when not from the profile's base and a new adapter (e.g. LoftQ)
        settings["start"] = start
    return settings


def start_settings(base: str | Path | None = None, init_adapter: str | Path | None = None) -> dict | None:
    """What a run started from when it is not the profile's base and a new adapter: the weights fingerprints of
    the base folder and of the initial adapter (``None`` for a run that starts as notebook 01's does)."""
    from .paths import fingerprint

    start = {k: fingerprint(v) for k, v in (("base", base), ("init_adapter", init_adapter)) if v}
    return start or None


@takes_profile
def rows_source(profile: Profile) -> dict:
    """What the profile's SFT rows (:func:`helpers.data.sft_rows`) are made from, read without reading a row: the
    checksums of the skills split and of the code that reads it, the row count, and for a Hub chat mix its local
    copy's checksums (or, read from the Hub itself, its id, split, row count and shuffle: no revision is pinned)."""
    from . import data, hub_data

    found = {"data": files_source(Path(data.DATA_DIR) / "skills_sft_train.jsonl"), "split": "sft_train",
             "rows": profile.n_train, "code": files_source(*ROW_CODE)}
    if profile.sft_dataset != "skills":
        where = hub_data.source(profile.sft_dataset, profile.hub_data)
        found["mix"] = {"data": files_source(where) if where != profile.sft_dataset else {"hub": where},
                        "dataset": profile.sft_dataset, "split": hub_data.spec(profile.sft_dataset).train,
                        "rows": profile.sft_mix_rows, "shuffle": [0, hub_data.SHUFFLE_BUFFER]}
    return found


@takes_profile
def run_settings(profile: Profile, kind: str = "lora", learning_rate: float | None = None,
                 quant_type: str = "nf4", double_quant: bool = True, start: dict | None = None) -> dict:
    """:func:`recipe_settings` of notebook 01's recipe on this profile (``learning_rate`` overrides the profile's).
    Its rows are recorded by their content hash, looked up by where they come from (:func:`rows_source`,
    :func:`helpers.artifacts.rows_hash`): read only the first time, so a reuse check reads no data."""
    kwargs = sft_config_kwargs(profile, "unused", **({"learning_rate": learning_rate} if learning_rate else {}))
    args = SimpleNamespace(completion_only_loss=None, **kwargs)  # SFTConfig's values, without building one
    data_sha256 = rows_hash("SFT rows", rows_source(profile), lambda: sft_rows(profile))
    return recipe_settings(profile.model_id, lora_config(profile), args, None, kind, quant_type, double_quant, start,
                           data_sha256=data_sha256)


def save_adapter(trainer: SFTTrainer, profile: Profile, name: str = "sft_lora", info: dict | None = None,
                 inputs: dict | None = None, folder: str | Path | None = None) -> Path:
    """Save the trained adapter atomically in ``folder`` (default :func:`adapter_dir`), with a ``train_info.json``
    holding :func:`run_record` (steps, time, loss history) and ``info``, and a manifest of its ``inputs``
    (default :func:`run_settings` of a LoRA run; see :mod:`helpers.artifacts`)."""
    from .artifacts import artifact

    target = Path(folder) if folder else adapter_dir(profile, name)
    with artifact(target, run_settings(profile) if inputs is None else inputs) as tmp:
        trainer.model.save_pretrained(tmp)
        write_train_info(tmp, trainer, profile, info)
    return target


def write_train_info(folder: Path, trainer, profile: Profile, info: dict | None = None) -> None:
    """``train_info.json`` beside a saved adapter: the profile, :func:`helpers.training.run_record` (steps, seconds,
    loss history, parameters) and ``info``."""
    record = {"profile": profile.name, **run_record(trainer), **(info or {})}
    (Path(folder) / "train_info.json").write_text(json.dumps(record, indent=1, default=float))


__all__ = ["DPO_FIELDS", "GRPO_FIELDS", "GRPO_REWARD", "dpo_recipe_settings", "pairs_source", "dpo_settings",
           "grpo_recipe_settings", "grpo_settings",
           "recipe_settings", "start_settings", "rows_source", "run_settings", "save_adapter", "write_train_info"]
