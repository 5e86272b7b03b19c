"""Supervised fine-tuning with LoRA through TRL's ``SFTTrainer``: configs built from the profile.

Notebook 01 runs :func:`train_sft_lora` in a fresh process (:func:`helpers.isolated.train_isolated`); later
notebooks that need an SFT adapter call :func:`ensure_sft_adapter`, which reuses ``outputs/sft_lora/<profile>``
or trains it the same way.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from .data import as_dataset, require_columns, sft_rows
from .paths import atomic_folder, outputs_dir
from .profiles import Profile

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def precision_kwargs(profile: Profile) -> dict:
    """Trainer precision flags: bf16 autocast on CPUs with native bf16, fp32 on other CPUs; T4 fp16; A100 bf16."""
    if not profile.needs_cuda:
        return {"use_cpu": True, "bf16": profile.precision == "bf16", "fp16": False}
    return {"bf16": profile.precision == "bf16", "fp16": profile.precision == "fp16"}


def lora_config(profile: Profile, **overrides) -> LoraConfig:
    """LoRA on every linear layer of the attention and MLP blocks, rank and alpha from the profile."""
    kwargs = dict(
        r=profile.lora_r,
        lora_alpha=profile.lora_alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )
    kwargs.update(overrides)
    return LoraConfig(**kwargs)


def common_trainer_kwargs(profile: Profile, output_dir: str | Path, steps: int, batch_size: int, learning_rate: float) -> dict:
    """Arguments every trainer config of the course shares (SFT, DPO): schedule, logging, precision, seeds."""
    return dict(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 12),
        max_length=profile.max_length,
        gradient_checkpointing=profile.gradient_checkpointing,
        logging_steps=max(1, steps // 20),
        save_strategy="no",
        report_to="none",
        seed=0,
        data_seed=0,
        **precision_kwargs(profile),
    )


def sft_config(profile: Profile, output_dir: str | Path, **overrides) -> SFTConfig:
    """An ``SFTConfig`` with the profile's steps, batch, learning rate, length and precision."""
    kwargs = common_trainer_kwargs(profile, output_dir, profile.sft_steps, profile.train_batch_size,
                                   profile.sft_learning_rate)
    kwargs["gradient_accumulation_steps"] = profile.grad_accum
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


def train_sft_lora(
    profile: Profile,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict] | None = None,
    output_dir: str | Path | None = None,
    peft_config: LoraConfig | None = None,
    callbacks: list | None = None,
    **config_overrides,
) -> SFTTrainer:
    """Fine-tune ``model`` with LoRA on prompt-completion ``rows`` (the profile's SFT rows by default).

    ``peft_config`` defaults to :func:`lora_config` of the profile; ``config_overrides`` go to
    :func:`sft_config` (e.g. ``max_steps=10``). Returns the trainer after ``train()``: ``trainer.model`` is the PEFT model and
    ``trainer.state.log_history`` holds the loss curve. Nothing is saved here; see
    :func:`save_adapter`.
    """
    rows = sft_rows(profile) if rows is None else rows
    require_columns(rows, ("prompt", "completion"), name="SFT training data")
    output_dir = output_dir or outputs_dir("trainer", f"sft_{profile.name}")
    trainer = SFTTrainer(
        model=model,
        args=sft_config(profile, output_dir, **config_overrides),
        train_dataset=as_dataset(rows),
        processing_class=tokenizer,
        peft_config=peft_config or lora_config(profile),
        callbacks=callbacks,
    )
    return run_trainer(trainer)


class FullLogitsLogProb:
    """What TRL's fused LM head computes, done the plain way on CPU: full logits, then ``log_softmax``.

    TRL's trainers score tokens through ``ChunkedLogProbFunction``, which projects the hidden states through
    the LM head in vocabulary chunks so that the ``(tokens, vocab)`` logits never exist at once. That saves GPU
    memory on long sequences and big vocabularies, and on a GPU it runs as a Triton kernel. On CPU it falls back
    to a tile-by-tile loop in torch, which took 60% of a DPO step and more than a quarter of an SFT step on our 135M
    model (49,152-token vocabulary, 2 cores). Here the logits of a batch are a few hundred MB, so on CPU this
    class computes them in one projection and one ``log_softmax``, the way the model's own ``lm_head`` and a
    cross-entropy would (projection in the trainer's bf16 autocast, ``log_softmax`` in fp32). Tensors on other
    devices go to TRL's function.

    Same call and outputs as TRL's ``ChunkedLogProbFunction.apply``: per-token log-probabilities, entropy,
    ``log(sum p^2)``, mean logit and whether the target is the argmax (``None`` where not requested).
    ``tests/test_training.py`` checks it against TRL's function, values and gradients.
    """

    def __init__(self, chunked) -> None:
        self.chunked = chunked

    def apply(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
              temperature: float, chunk_size: int, final_logit_softcapping: float | None = None,
              logit_scale: float = 1.0, outputs: tuple[str, ...] = ("log_probs",)):
        if hidden.device.type != "cpu":
            return self.chunked.apply(hidden, weight, bias, targets, temperature, chunk_size,
                                      final_logit_softcapping, logit_scale, outputs)
        z = F.linear(hidden, weight, bias).float()
        if logit_scale != 1.0:
            z = z * logit_scale
        if final_logit_softcapping is not None:
            z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
        if temperature != 1.0:
            z = z / temperature
        log_p = torch.log_softmax(z, dim=-1)  # one fused pass forward and backward
        log_probs = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
        with torch.no_grad():  # TRL marks these three non-differentiable
            log_sum_sq = torch.logsumexp(2 * log_p, dim=-1) if "log_sum_sq_probs" in outputs else None
            mean_logits = z.mean(-1) if "mean_logits" in outputs else None
            is_top1 = log_p.argmax(-1) == targets if "is_top1" in outputs else None
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1


@contextlib.contextmanager
def full_logits_head_on_cpu():
    """Within this block TRL's trainers score CPU tensors with :class:`FullLogitsLogProb` (on 2 cores, measured:
    SFT steps 1.8-1.9 s against 2.4-2.6 s, 4 DPO steps 29.8 s against 42.8 s); GPU tensors keep TRL's kernel.
    Restored on exit.

    If the installed TRL has no ``trl.trainer.utils._ChunkedLogProbFunction`` (it moved or was renamed), this
    warns and leaves TRL as it is: training is then slower on CPU, not different.
    """
    from trl.trainer import utils as trl_utils

    chunked = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if chunked is None or not hasattr(chunked, "apply"):
        warnings.warn("This TRL version has no trl.trainer.utils._ChunkedLogProbFunction: training keeps TRL's own "
                      "LM head, which is slower on CPU (same results).", stacklevel=3)
        yield
        return
    trl_utils._ChunkedLogProbFunction = FullLogitsLogProb(chunked)
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction = chunked


def run_record(trainer) -> dict:
    """What a finished run leaves to read later: steps, seconds, loss history, trainable parameters."""
    from .models import count_parameters

    steps = trainer.state.global_step
    seconds = getattr(trainer, "train_seconds", None)
    trainable, total = count_parameters(trainer.model)
    return {"steps": steps, "train_seconds": seconds,
            "seconds_per_step": seconds / max(1, steps) if seconds is not None else None,
            "trainable_params": trainable, "total_params": total, "log_history": trainer.state.log_history}


def fp32_trainable_weights(trainer) -> list[str]:
    """Cast bf16 trainable weights back to fp32 unless the trainer computes in bf16; returns their names.

    For a 4-/8-bit base model (QLoRA) TRL 1.16's ``SFTTrainer`` and ``DPOTrainer`` cast the LoRA weights to bf16,
    whatever the trainer's precision. With ``fp16=True`` (a T4) the gradient scaler would then have to unscale bf16
    gradients, which CUDA cannot do; on a CPU without native bf16 every LoRA product would run in emulated bf16,
    tens of times slower. So when ``bf16`` is off, the trainable weights go back to fp32 (the optimizer is built
    later, in ``train()``)."""
    if trainer.args.bf16:
        return []
    names = []
    for name, param in trainer.model.named_parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.float()
            names.append(name)
    return names


def run_trainer(trainer):
    """``trainer.train()`` (with :func:`full_logits_head_on_cpu`, after :func:`fp32_trainable_weights`), timed into
    ``trainer.train_seconds``, then :func:`unwrap_autocast`; returns the trainer."""
    fp32_trainable_weights(trainer)
    start = time.perf_counter()
    with full_logits_head_on_cpu():
        trainer.train()
    trainer.train_seconds = time.perf_counter() - start
    unwrap_autocast(trainer)
    return trainer


def unwrap_autocast(trainer) -> None:
    """Undo the mixed-precision wrapper Accelerate puts around ``model.forward`` during training.

    With ``bf16=True``/``fp16=True`` the trained model keeps running every forward pass in
    autocast after ``train()``. Evaluating it that way would compare a bf16 model with an fp32
    base model; after this call the model computes in its own dtype again.
    """
    trainer.model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def adapter_dir(profile: Profile, name: str = "sft_lora") -> Path:
    """Where the adapter ``name`` of this profile lives: ``outputs/<name>/<profile>``."""
    return outputs_dir(name) / profile.name


def save_adapter(trainer: SFTTrainer, profile: Profile, name: str = "sft_lora", info: dict | None = None) -> Path:
    """Save the trained adapter atomically under :func:`adapter_dir`, with a ``train_info.json`` holding
    :func:`run_record` (steps, time, loss history) and ``info``."""
    target = adapter_dir(profile, name)
    with atomic_folder(target) as tmp:
        trainer.model.save_pretrained(tmp)
        record = {"profile": profile.name, **run_record(trainer), **(info or {})}
        (tmp / "train_info.json").write_text(json.dumps(record, indent=1, default=float))
    return target


def missing_adapter_message(path: Path, name: str = "sft_lora") -> str:
    """The error text for a missing adapter: what is missing and how to produce it."""
    return (
        f"No '{name}' adapter at {path} (expected adapter_config.json there). Produce it by running "
        "notebooks/01_sft_lora.ipynb, or call helpers.training.ensure_sft_adapter(profile), "
        "which trains it with the same settings."
    )


def ensure_sft_adapter(profile: Profile, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Return the folder of this profile's SFT LoRA adapter, training it first if it is missing (in a fresh
    process, as notebook 01 does: :func:`helpers.isolated.train_isolated`). ``tokenizer`` is accepted for
    symmetry with the other ``ensure_*`` helpers; the training process loads its own."""
    target = adapter_dir(profile)
    if (target / "adapter_config.json").is_file():
        return target
    print(f"No SFT adapter for profile '{profile.name}' at {target}: training one now, as notebook 01 does.")
    from .isolated import train_isolated

    return Path(train_isolated(profile, "lora")["adapter"])


def ensure_merged(profile: Profile, adapter: Path, name: str, base_path: str | None = None,
                  tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """A full-precision model folder ``outputs/<name>/<profile>/``: ``adapter`` merged into the base
    (``base_path``, default the profile's model). Reused while it is newer than the adapter; written to a
    temporary folder first, so an interrupted save never leaves a half-written model."""
    from .models import load_model, load_tokenizer

    target = outputs_dir(name) / profile.name
    weights = target / "model.safetensors"
    if weights.is_file() and weights.stat().st_mtime >= (Path(adapter) / "adapter_config.json").stat().st_mtime:
        return target
    tokenizer = tokenizer or load_tokenizer(profile)
    merged = load_adapter(load_model(profile, base_path), adapter).merge_and_unload()
    with atomic_folder(target) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def ensure_sft_merged(profile: Profile, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """The SFT model with notebook 01's adapter merged in (the model notebooks 03-05 compress).

    Trains the adapter first if it is missing (:func:`ensure_sft_adapter`); see :func:`ensure_merged`.
    """
    return ensure_merged(profile, ensure_sft_adapter(profile, tokenizer), "sft_merged", tokenizer=tokenizer)


def load_adapter(model: PreTrainedModel, path: str | Path, adapter_name: str = "default", **kwargs):
    """Attach a saved LoRA adapter to ``model``; a clear error when the folder holds none."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(missing_adapter_message(path))
    return PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name, **kwargs)
