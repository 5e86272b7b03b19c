"""GRPO (notebook 08): the skills checker as a verifiable reward for TRL's ``GRPOTrainer``.

- :func:`prompt_rows`: the training prompts (the skills split DPO trains on, mixed across skills), each with its
  accepted answers as extra columns, which ``GRPOTrainer`` hands to the reward functions as keyword arguments;
- :func:`correctness_reward`: 1.0 when :func:`helpers.skills.check_answer` accepts the completion, else 0.0;
  :func:`brevity_reward`: a format reward that can be gamed (exercise 4 of notebook 08);
- :class:`RewardLog`: wraps a reward function and keeps every group it scored, for the per-skill share of groups
  whose rewards do not vary (those teach GRPO nothing) and the reward spread within groups;
- :func:`grpo_config_kwargs`: the ``GRPOConfig`` arguments of notebook 08's cell, from the profile (a test keeps
  the cell equal to them); :func:`train_grpo` is the one-call version for the exercises;
- :class:`PhaseTimer`: where a training step's time goes (generation, scoring, the rest).

Notebook 08 writes the miniature (group-relative advantages, the clipped token-level loss) in its own cells;
``tests/test_grpo.py`` checks them against TRL's trainer.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

from .data import load_skills, user
from .paths import outputs_dir
from .profiles import Profile, takes_profile
from .skills import check_answer

TRAIN_SPLIT = "dpo_train"  # the prompts DPO trains on: held out from the evaluation split like every training split


@takes_profile
def prompt_rows(profile: Profile, n: int | None = None, seed: int = 0) -> list[dict]:
    """``n`` training prompts (default: one pass of the profile's GRPO run, ``grpo_steps x grpo_prompts_per_step``),
    shuffled with ``seed`` so that every step mixes skills (several passes when ``n`` exceeds the split). Columns: ``prompt`` (chat messages), ``answers``,
    ``case_sensitive`` and ``skill`` (the last three reach the reward functions)."""
    rows = load_skills(TRAIN_SPLIT)
    random.Random(seed).shuffle(rows)
    n = n or profile.grpo_steps * profile.grpo_prompts_per_step
    if n > len(rows):  # more than one pass (the GPU profiles): the prompts again, in another order
        print(f"GRPO: {n} prompts from {len(rows)} distinct ones ({n / len(rows):.1f} passes)")
        rows = [r for k in range(-(-n // len(rows))) for r in random.Random(seed + k).sample(rows, len(rows))]
    return [{"prompt": user(r["prompt"]), "answers": list(r["answers"]), "case_sensitive": bool(r.get("case_sensitive")),
             "skill": r["skill"]} for r in rows[:n]]


def completion_text(completion) -> str:
    """The text of one completion: TRL passes a string for text prompts and a list of messages for chat prompts."""
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"] if completion else ""


def correctness_reward(completions: Sequence, answers: Sequence[Sequence[str]], case_sensitive: Sequence[bool] | None = None,
                       **kwargs) -> list[float]:
    """1.0 for each completion the course's checker accepts (the exact, normalised answer), else 0.0."""
    case_sensitive = case_sensitive or [False] * len(completions)
    return [float(check_answer(completion_text(c), list(a), bool(cs)))
            for c, a, cs in zip(completions, answers, case_sensitive)]


def brevity_reward(completions: Sequence, max_words: int = 3, **kwargs) -> list[float]:
    """1.0 for a one-line completion of at most ``max_words`` words, right or wrong: a format reward that a model
    can satisfy without ever answering correctly (exercise 4 of notebook 08)."""
    out = []
    for c in completions:
        text = completion_text(c).strip()
        out.append(float(bool(text) and "\n" not in text and len(text.split()) <= max_words))
    return out


class RewardLog:
    """A reward function that records what it scored: each call is one generation batch, whose completions come in
    groups of ``num_generations`` consecutive rows, one group per prompt (TRL's sampler repeats each prompt)."""

    def __init__(self, fn: Callable[..., list[float]], num_generations: int) -> None:
        self.fn, self.num_generations = fn, num_generations
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)  # the name TRL logs the reward under
        self.batches: list[dict] = []
        self.seconds = 0.0

    def __call__(self, completions, **kwargs) -> list[float]:
        start = time.perf_counter()
        rewards = self.fn(completions=completions, **kwargs)
        self.seconds += time.perf_counter() - start
        self.batches.append({"skill": list(kwargs.get("skill") or ["?"] * len(rewards)), "reward": list(rewards),
                             "prompt": list(kwargs.get("prompts") or []),
                             "completion": [completion_text(c) for c in completions]})
        return rewards

    def groups(self) -> list[tuple[int, str, list[float]]]:
        """``(call, skill, rewards of the group)`` for every group scored so far."""
        g = self.num_generations
        return [(i, b["skill"][j], b["reward"][j:j + g])
                for i, b in enumerate(self.batches) for j in range(0, len(b["reward"]), g)]

    def within_group_std(self) -> list[float]:
        """Per call (training step): the mean over its groups of the reward's standard deviation within a group
        (population std, as a group's spread; TRL's ``reward_std`` is the spread over the whole batch)."""
        per_call: dict[int, list[float]] = {}
        for call, _, rewards in self.groups():
            per_call.setdefault(call, []).append(statistics.pstdev(rewards))
        return [statistics.fmean(v) for _, v in sorted(per_call.items())]

    def by_skill(self) -> dict[str, dict[str, float]]:
        """Per skill: groups seen, mean reward, and the shares of groups that were all right, all wrong, or had
        zero variance either way (a zero-variance group has all advantages 0: it moves nothing)."""
        out: dict[str, dict[str, float]] = {}
        for skill in sorted({s for _, s, _ in self.groups()}):
            gs = [r for _, s, r in self.groups() if s == skill]
            out[skill] = {"groups": len(gs), "mean reward": statistics.fmean(x for r in gs for x in r),
                          "all right": sum(min(r) == 1.0 for r in gs) / len(gs),
                          "all wrong": sum(max(r) == 0.0 for r in gs) / len(gs),
                          "zero variance": sum(max(r) == min(r) for r in gs) / len(gs)}
        return out

    def zero_variance_share(self) -> float:
        gs = self.groups()
        return sum(max(r) == min(r) for _, _, r in gs) / len(gs) if gs else float("nan")


@takes_profile
def grpo_config_kwargs(profile: Profile, output_dir: str | Path | None = None, **overrides) -> dict:
    """The ``GRPOConfig`` arguments of notebook 08's cell: ``grpo_prompts_per_step`` prompts x ``grpo_num_generations``
    completions per step (``per_device_train_batch_size`` counts completions), short completions that stop at the
    end token, the profile's learning rate and beta, TRL's default loss ("dapo") and group scaling, written out."""
    from .training import check_overrides, precision_kwargs

    kwargs = dict(
        output_dir=str(output_dir or outputs_dir("trainer", f"grpo_{profile.name}")),
        max_steps=profile.grpo_steps,
        num_generations=profile.grpo_num_generations,
        per_device_train_batch_size=profile.grpo_prompts_per_step * profile.grpo_num_generations,
        max_completion_length=profile.grpo_max_completion_length,
        learning_rate=profile.grpo_learning_rate,
        beta=profile.grpo_beta,
        loss_type="dapo", scale_rewards="group", epsilon=0.2, temperature=1.0,
        lr_scheduler_type="constant", warmup_steps=0,
        gradient_checkpointing=profile.gradient_checkpointing, logging_steps=1,
        save_strategy="no", report_to="none", seed=0, data_seed=0,
        **precision_kwargs(profile),
    )
    kwargs.update(check_overrides(overrides))
    return kwargs


class PhaseTimer:
    """Time spent in a ``GRPOTrainer``'s phases: ``generate`` (sampling the completions), ``score`` (the reward
    functions, from their :class:`RewardLog`), ``rollout`` (generation, scoring and the log-probabilities TRL needs
    before the update) and the rest of each step (forward and backward of the loss, optimizer)."""

    def __init__(self, trainer, reward_logs: Sequence[RewardLog] = ()) -> None:
        self.trainer, self.reward_logs = trainer, list(reward_logs)
        self.seconds = {"generate": 0.0, "rollout": 0.0}
        for attr, key in (("_generate", "generate"), ("_generate_and_score_completions", "rollout")):
            original = getattr(trainer, attr)

            def timed(*args, _original=original, _key=key, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds[_key] += time.perf_counter() - start

            setattr(trainer, attr, timed)

    def summary(self) -> dict[str, float]:
        """Seconds per step in each phase (``train_seconds`` from :func:`helpers.training.run_trainer`)."""
        steps = max(1, self.trainer.state.global_step)
        total = getattr(self.trainer, "train_seconds", None) or 0.0
        score = sum(r.seconds for r in self.reward_logs)
        rollout = self.seconds["rollout"]
        return {"step": total / steps, "generation": self.seconds["generate"] / steps, "scoring": score / steps,
                "other rollout (log-probs)": max(0.0, rollout - self.seconds["generate"] - score) / steps,
                "loss, backward, optimizer": max(0.0, total - rollout) / steps}


def loss_batch(trainer, prompts: Sequence, completions: Sequence[str]) -> dict:
    """The tensors ``GRPOTrainer`` scores a batch with, for given prompts (chat messages) and completion texts:
    prompts through the chat template, left-padded; completions tokenised and ended with the end token, right-padded
    (what TRL builds after sampling)."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    tok = trainer.processing_class
    p_ids = [torch.tensor(tok.apply_chat_template(list(p), add_generation_prompt=True, tokenize=True, return_dict=True)
                          ["input_ids"]) for p in prompts]
    c_ids = [torch.tensor(tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]) for c in completions]
    prompt_ids = pad_sequence(p_ids, batch_first=True, padding_value=tok.pad_token_id, padding_side="left")
    prompt_mask = pad_sequence([torch.ones_like(t) for t in p_ids], batch_first=True, padding_side="left")
    completion_ids = pad_sequence(c_ids, batch_first=True, padding_value=tok.pad_token_id)
    completion_mask = pad_sequence([torch.ones_like(t) for t in c_ids], batch_first=True)
    device = trainer.accelerator.device
    return {k: v.to(device) for k, v in dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                                             completion_ids=completion_ids, completion_mask=completion_mask).items()}


def token_logps(trainer, batch: dict, adapter: bool = True):
    """Per-token log-probabilities of the batch's completion tokens, computed by TRL's own function (the trainer's
    model; ``adapter=False``: with the LoRA adapter switched off, i.e. the reference). No gradient."""
    import contextlib

    import torch

    model = trainer.model
    off = model.disable_adapter() if not adapter else contextlib.nullcontext()
    with torch.no_grad(), off:
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1), batch["completion_ids"].size(1))
    return logps


def trl_loss(trainer, batch: dict, advantages, old_logps, ref_logps=None) -> float:
    """The loss TRL's ``GRPOTrainer`` computes (``_compute_loss``, the trainer's ``loss_type`` and ``beta``) on
    ``batch`` with the given advantages and log-probabilities of the sampling policy (and of the reference when
    ``beta > 0``), as one training step with one batch per generation would."""
    import torch

    advantages = torch.as_tensor(advantages, device=batch["completion_mask"].device)   # on the GPU with the batch
    inputs = dict(batch, advantages=advantages, old_per_token_logps=old_logps,
                  num_items_in_batch=batch["completion_mask"].sum())
    if trainer.beta != 0.0:
        inputs["ref_per_token_logps"] = ref_logps
    if getattr(trainer, "current_gradient_accumulation_steps", None) is None:
        trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
    was_training = trainer.model.training
    trainer.model.train()
    try:
        with torch.no_grad():
            return float(trainer._compute_loss(trainer.model, inputs))
    finally:
        trainer.model.train(was_training)


def skill_differences(a_rows: Sequence[dict], b_rows: Sequence[dict]) -> dict[str, dict]:
    """Per skill: ``b``'s accuracy minus ``a``'s on that skill's prompts (the same prompts, evaluation rows of two
    :class:`~helpers.evaluation.SkillReport`), with its paired 95% interval (:func:`helpers.stats.paired_difference`)."""
    from . import stats

    if [r["prompt"] for r in a_rows] != [r["prompt"] for r in b_rows]:
        raise ValueError("skill_differences() needs two evaluations of the same prompts.")
    out = {}
    for skill in sorted({r["skill"] for r in a_rows}):
        idx = [i for i, r in enumerate(a_rows) if r["skill"] == skill]
        out[skill] = stats.paired_difference([a_rows[i]["correct"] for i in idx], [b_rows[i]["correct"] for i in idx])
    return out


@takes_profile
def train_grpo(profile: Profile, model, tokenizer, rows: list[dict] | None = None, reward_funcs: Sequence | None = None,
               peft_config=None, callbacks: list | None = None, **overrides):
    """Notebook 08's recipe in one call, on ``model`` (a new LoRA adapter from the profile unless ``peft_config``
    is given): returns the trainer after training, with ``trainer.reward_logs`` (one :class:`RewardLog` per reward
    function) and ``trainer.phases`` (:class:`PhaseTimer`). ``overrides`` go to ``GRPOConfig`` (e.g. ``beta=0.04``);
    ``callbacks`` to the trainer (``make bench`` times each step with one)."""
    from trl import GRPOConfig, GRPOTrainer

    from .data import as_dataset
    from .training import lora_config, run_trainer

    config = GRPOConfig(**grpo_config_kwargs(profile, **overrides))
    rows = prompt_rows(profile, config.max_steps * config.per_device_train_batch_size // config.num_generations) \
        if rows is None else rows
    logs = [RewardLog(f, config.num_generations) for f in (reward_funcs or [correctness_reward])]
    trainer = GRPOTrainer(model=model, reward_funcs=logs, args=config, train_dataset=as_dataset(rows),
                          processing_class=tokenizer, peft_config=peft_config or lora_config(profile),
                          callbacks=callbacks)
    trainer.reward_logs, trainer.phases = logs, PhaseTimer(trainer, logs)
    return run_trainer(trainer)


__all__ = ["TRAIN_SPLIT", "prompt_rows", "completion_text", "correctness_reward", "brevity_reward", "RewardLog",
           "grpo_config_kwargs", "PhaseTimer", "loss_batch", "token_logps", "trl_loss",
           "skill_differences", "train_grpo"]
