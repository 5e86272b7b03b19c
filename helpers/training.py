"""Supervised fine-tuning with LoRA through TRL's ``SFTTrainer``: the configs notebook 01 writes out, built from
the profile, and what every trainer of the course needs on the student's hardware (:func:`hardware_fixes`).

Notebook 01 builds its ``LoraConfig``, ``SFTConfig`` and ``SFTTrainer`` in its own cells (tests keep them equal to
:func:`lora_config` and :func:`sft_config`); ``scripts/sft.py`` is the same recipe as a script, which notebook 06
and :func:`helpers.pipeline.sft_adapter` run in a fresh process. :func:`train_sft_lora` is the one-call version
for the exercises.
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

from .data import as_dataset, sft_rows, within_length
from .paths import outputs_dir
from .profiles import Profile, takes_profile

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KINDS = ("lora", "qlora")  # LoRA on the full-precision base, LoRA on a 4-bit base
PROFILE_LORA = object()    # train_sft_lora's default adapter: lora_config(profile)


def check_kind(kind: str) -> None:
    """Refuse anything but ``"lora"`` and ``"qlora"``, naming both."""
    if kind not in KINDS:
        raise ValueError(f"Unknown kind '{kind}'; use one of {KINDS}.")


@takes_profile
def precision_kwargs(profile: Profile) -> dict:
    """Trainer precision flags: bf16 autocast on CPUs with native bf16, fp32 on other CPUs; T4 fp16; A100 bf16."""
    if not profile.needs_cuda:
        return {"use_cpu": True, "bf16": profile.precision == "bf16", "fp16": False}
    return {"bf16": profile.precision == "bf16", "fp16": profile.precision == "fp16"}


@takes_profile
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


@takes_profile
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


@takes_profile
def sft_config_kwargs(profile: Profile, output_dir: str | Path, **overrides) -> dict:
    """The keyword arguments of :func:`sft_config` (building a TRL config object resets Accelerate's state, which
    breaks a trainer that already exists; code that only needs the settings reads these)."""
    kwargs = common_trainer_kwargs(profile, output_dir, profile.sft_steps, profile.train_batch_size,
                                   profile.sft_learning_rate)
    kwargs["gradient_accumulation_steps"] = profile.grad_accum
    kwargs.update(check_overrides(overrides))
    return kwargs


POSITIVE_OVERRIDES = ("max_steps", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
                      "max_length", "beta", "logging_steps")


def check_overrides(overrides: dict) -> dict:
    """Refuse trainer-config overrides no run can use (``max_steps=0`` would train one step, ``-3`` three epochs),
    naming the argument and what it must be."""
    bad = [f"{k}={v!r}" for k, v in overrides.items() if k in POSITIVE_OVERRIDES
           and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"))]
    if bad:
        raise ValueError(f"Trainer settings no run can use: {', '.join(bad)}; each must be a number above 0 "
                         "(steps, batch sizes and lengths whole numbers), e.g. max_steps=10.")
    return overrides


@takes_profile
def sft_config(profile: Profile, output_dir: str | Path, **overrides) -> SFTConfig:
    """An ``SFTConfig`` with the profile's steps, batch, learning rate, length and precision."""
    return SFTConfig(**sft_config_kwargs(profile, output_dir, **overrides))


@takes_profile
def train_sft_lora(
    profile: Profile,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict] | None = None,
    output_dir: str | Path | None = None,
    peft_config: LoraConfig | None = PROFILE_LORA,
    callbacks: list | None = None,
    **config_overrides,
) -> SFTTrainer:
    """Fine-tune ``model`` with LoRA on prompt-completion ``rows`` (the profile's SFT rows by default): notebook
    01's cells in one call.

    ``peft_config`` defaults to :func:`lora_config` of the profile; ``peft_config=None`` fine-tunes every weight
    (full fine-tuning: use a learning rate near 2e-5). ``config_overrides`` go to
    :func:`sft_config` (e.g. ``max_steps=10``). Returns the trainer after ``train()``: ``trainer.model`` is the PEFT model and
    ``trainer.state.log_history`` holds the loss curve. Nothing is saved here; see
    :func:`helpers.manifests.save_adapter`.
    """
    rows = sft_rows(profile) if rows is None else rows
    output_dir = output_dir or outputs_dir("trainer", f"sft_{profile.name}")
    args = sft_config(profile, output_dir, **config_overrides)
    rows = within_length(tokenizer, rows, args.max_length)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=as_dataset(rows),
        processing_class=tokenizer,
        peft_config=lora_config(profile) if peft_config is PROFILE_LORA else peft_config,
        callbacks=callbacks,
    )
    return run_trainer(trainer)


class FullLogitsLogProb:
    """What TRL's fused LM head computes, done the plain way on CPU: full logits, then ``log_softmax``.

    TRL's trainers score tokens through ``ChunkedLogProbFunction``, which projects the hidden states through
    the LM head in vocabulary chunks so that the ``(tokens, vocab)`` logits never exist at once. That saves GPU
    memory on long sequences and big vocabularies, and on a GPU it runs as a Triton kernel. On CPU it falls back
    to a tile-by-tile loop in torch, which took a large share of every step on our 135M model (49,152-token
    vocabulary, 2 cores; ``notes/under_the_hood.md``). Here the logits of a batch are a few hundred MB, so on CPU this
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
    """Within this block TRL's trainers score CPU tensors with :class:`FullLogitsLogProb` (faster on CPU:
    ``notes/under_the_hood.md``); GPU tensors keep TRL's kernel.
    Also within this block, CPU tensors are scored only where a label counts (the completion tokens), as TRL
    does on a GPU: TRL 1.16 decides this with ``_use_triton(device)`` in its fused forward
    (``trl/trainer/utils.py``), so on CPU it scores every position, prompt and padding included, and masks the
    result afterwards. Same loss and gradients (``tests/test_training.py``); on our GRPO step the scoring and
    backward took about half the time.
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
    use_triton = getattr(trl_utils, "_use_triton", None)
    trl_utils._ChunkedLogProbFunction = FullLogitsLogProb(chunked)
    if use_triton is not None:
        trl_utils._use_triton = _compact_on_cpu(use_triton)
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction = chunked
        if use_triton is not None:
            trl_utils._use_triton = use_triton


def _compact_on_cpu(use_triton):
    """TRL's ``_use_triton`` test, answering "yes, score only the labelled positions" for CPU tensors too."""
    def compact(device) -> bool:
        return torch.device(device).type == "cpu" or use_triton(device)
    return compact


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
    """Cast 16-bit trainable weights to fp32, the master copy mixed-precision training keeps; returns their names.
    Frozen weights keep their dtype (that is where the memory is); bf16 or fp16 autocast still computes the products
    in 16 bits.

    - bf16 trainable weights: for a 4-/8-bit base model (QLoRA) TRL 1.16's ``SFTTrainer`` and ``DPOTrainer`` cast
      the LoRA weights to bf16, whatever the trainer's precision. With ``fp16=True`` (a T4) the gradient scaler would
      then have to unscale bf16 gradients, which CUDA cannot do; on a CPU without native bf16 every LoRA product
      would run in emulated bf16, tens of times slower; and with ``bf16=True`` (an A100, a CPU with native bf16) an
      update of size lr x Adam's step smaller than half the bf16 spacing of a weight (about 0.4% of it) rounds to
      nothing: a full fine-tuning at 2e-5 would leave most weights of a bf16 model unchanged, and QLoRA's adapters
      would train in another precision than LoRA's (PEFT keeps those in fp32).
    - fp16 trainable weights: a model loaded in fp16 (the T4 profile) and trained in full (no LoRA) has fp16
      gradients, which the ``fp16=True`` gradient scaler refuses ("Attempting to unscale FP16 gradients",
      ``torch/amp/grad_scaler.py``); without a scaler, fp16 updates of size lr x grad round to nothing.

    The optimizer is built later, in ``train()``, so it sees the fp32 weights. Full fine-tuning of a 16-bit model
    then keeps fp32 weights for all of it (4 bytes a parameter, plus Adam's 8)."""
    cast = {torch.float16, torch.bfloat16}
    names = []
    for name, param in trainer.model.named_parameters():
        if param.requires_grad and param.dtype in cast:
            param.data = param.data.float()
            names.append(name)
    return names


@contextlib.contextmanager
def eager_attention_for_bf16_on_cpu(trainer):
    """Within this block a model that trains in bf16 on a CPU computes attention with transformers' ``"eager"``
    implementation (matrix products and a softmax) instead of ``"sdpa"``; restored on exit, so evaluation keeps
    ``"sdpa"``.

    On CPU, torch's fused attention (``_scaled_dot_product_flash_attention_for_cpu``) has a slow backward pass in
    bf16: on a 2-core AMD EPYC with native bf16 (2026-12-03, notebook 01's SFT step on ``cpu``, batch 8) it took
    9.4 ms a layer against 2.2 ms in fp32, 17% of the step (torch.profiler), and the step took 1.78 s with it, 1.43 s
    with eager attention. In fp32 the fused kernel is not slower (2.21 s against 2.10 s), so fp32 training, and
    every GPU, keep it: their results are unchanged."""
    models = [trainer.model, getattr(trainer, "ref_model", None)]
    bases = [m.get_base_model() if hasattr(m, "get_base_model") else m for m in models if m is not None]
    switch = [b for b in bases if trainer.args.bf16 and b.device.type == "cpu"
              and getattr(b.config, "_attn_implementation", None) == "sdpa" and hasattr(b, "set_attn_implementation")]
    for base in switch:
        base.set_attn_implementation("eager")
    try:
        yield
    finally:
        for base in switch:
            base.set_attn_implementation("sdpa")


@contextlib.contextmanager
def hardware_fixes(trainer):
    """Wrap ``trainer.train()`` in this block to train right on the student's hardware (details in the README's
    "Under the hood"):

    - trainable 16-bit weights go to fp32, the master copy (:func:`fp32_trainable_weights`);
    - on CPU, TRL's chunked LM head is replaced by the plain computation (:func:`full_logits_head_on_cpu`);
    - on CPU in bf16, attention is computed eagerly, not by torch's fused kernel
      (:func:`eager_attention_for_bf16_on_cpu`);
    - afterwards the model computes in its own dtype again (:func:`unwrap_autocast`), ready to evaluate.

    The training time goes to ``trainer.train_seconds``."""
    fp32_trainable_weights(trainer)
    start = time.perf_counter()
    with full_logits_head_on_cpu(), eager_attention_for_bf16_on_cpu(trainer):
        yield trainer
    trainer.train_seconds = time.perf_counter() - start
    unwrap_autocast(trainer)


def run_trainer(trainer):
    """``trainer.train()`` inside :func:`hardware_fixes`; returns the trainer."""
    with hardware_fixes(trainer):
        trainer.train()
    return trainer


def unwrap_autocast(trainer) -> None:
    """Undo the mixed-precision wrapper Accelerate puts around ``model.forward`` during training.

    With ``bf16=True``/``fp16=True`` the trained model keeps running every forward pass in
    autocast after ``train()``. Evaluating it that way would compare a bf16 model with an fp32
    base model; after this call the model computes in its own dtype again.
    """
    trainer.model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


@takes_profile
def adapter_dir(profile: Profile, name: str = "sft_lora") -> Path:
    """Where the adapter ``name`` of this profile lives: ``outputs/<name>/<profile>``."""
    return outputs_dir(name) / profile.name


def missing_adapter_message(path: Path, name: str = "sft_lora") -> str:
    """The error text for a missing adapter: what is missing and how to produce it."""
    return (
        f"No '{name}' adapter at {path} (expected adapter_config.json there). Produce it by running "
        "notebooks/01_sft_lora.ipynb, or call helpers.pipeline.sft_adapter(profile), "
        "which trains it with the same settings (scripts/sft.py)."
    )


def load_adapter(model: PreTrainedModel, path: str | Path, adapter_name: str = "default", **kwargs):
    """Attach a saved LoRA adapter to ``model``; a clear error when the folder holds none."""
    from peft import PeftModel

    from .artifacts import verify

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(missing_adapter_message(path))
    verify(path, "run the notebook that trained it again (01 for sft_lora, 02 for dpo, 06 for its runs)")
    try:
        return PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name, **kwargs)
    except Exception as exc:
        from .models import unreadable_weights

        raise unreadable_weights(exc, path) or exc
