"""Direct Preference Optimization: preference data, a from-scratch loss, preference accuracy, TRL's trainer.

The DPO loss for a prompt x with chosen answer y_w and rejected answer y_l is::

    L = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

where log pi(y|x) is the *sum* of the log-probabilities of the answer tokens. ``beta * (log pi - log pi_ref)``
is the policy's *implicit reward*. In this course the policy is the SFT model plus a new LoRA adapter
and the reference is the same model with that adapter switched off.
"""

from __future__ import annotations


from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from peft import LoraConfig
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from .data import (DataError, as_dataset, check_preference_rows, hub_preferences, load_skills, require_columns,
                   require_sequence, skills_to_preference, within_length)
from .data import normalize_preference_row, normalize_preference_rows  # noqa: F401  (their old home; now in data)
from .evaluation import autocast_context, batch_cache, pad_after_prefix, rate_by, shared_prefix_cache
from .paths import outputs_dir
from .profiles import Profile, takes_profile
from .training import check_overrides, common_trainer_kwargs, full_logits_head_on_cpu, lora_config, run_trainer

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def _text(messages) -> str:
    """The text of an answer (a string or a list of messages), for the equal/empty test; malformed parts count
    as no text, and :func:`helpers.data.check_preference_rows` names them afterwards."""
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list):
        return " ".join(m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    return ""


def clean_pairs(rows: Sequence[dict], name: str = "preference data", verbose: bool = True) -> list[dict]:
    """Drop pairs whose chosen and rejected answers are equal or empty, say how many were dropped, and check
    every remaining row (:func:`helpers.data.check_preference_rows`).

    Such pairs carry no preference signal (equal) or no answer at all (empty); training on them
    silently would only add noise. Raises :class:`DataError` if nothing is left.
    """
    rows = list(require_sequence(rows, name, '[{"prompt": [...], "chosen": [...], "rejected": [...]}]'))
    require_columns(rows, PREFERENCE_COLUMNS, name=name)
    kept, equal, empty = [], 0, 0
    for row in rows:
        chosen, rejected = _text(row["chosen"]).strip(), _text(row["rejected"]).strip()
        if not chosen or not rejected:
            empty += 1
        elif chosen == rejected:
            equal += 1
        else:
            kept.append(row)
    if (equal or empty) and verbose:
        print(f"{name}: dropped {equal} pair(s) with chosen == rejected and {empty} with an empty answer; "
              f"{len(kept)} of {len(rows)} kept.")
    if not kept:
        raise DataError(f"{name}: no usable preference pairs left ({equal} equal, {empty} empty). "
                        "Each pair needs two different, non-empty answers.")
    return check_preference_rows(kept, name)


@takes_profile
def preference_rows(profile: Profile, split: str = "dpo_train", n: int | None = None) -> list[dict]:
    """The profile's preference pairs. ``dpo_train``: what DPO trains on, the skills pairs or, when
    ``profile.preference_dataset`` names a Hub dataset, its training pairs (:mod:`helpers.hub_data`). ``eval``: the
    held-out skills pairs, every profile's common yardstick (the Hub dataset's own test pairs:
    :func:`dataset_test_pairs`)."""
    if split == "dpo_train" and profile.preference_dataset != "skills":
        pairs = hub_preferences(profile, "train")
        return clean_pairs(pairs[:n] if n else pairs, name=f"{profile.preference_dataset} training pairs")
    if n is None and split == "dpo_train":
        n = profile.n_train
    elif n is None:
        n = profile.n_eval
    return clean_pairs([skills_to_preference(r) for r in load_skills(split, n)], name=f"skills {split} pairs")


@takes_profile
def dataset_test_pairs(profile: Profile, tokenizer: PreTrainedTokenizerBase | None = None) -> list[dict] | None:
    """The held-out pairs of the profile's Hub preference dataset (its test split) that fit in the ``max_length``
    DPO trains with, or ``None`` when DPO trains on the skills pairs (whose held-out pairs are
    ``preference_rows(profile, "eval")``).

    The length filter is the training one (:func:`check_lengths`): pairs longer than ``max_length`` are counted,
    said and left out, so the held-out score measures the same kind of pair the model trained on, and scoring
    never meets a 1,000-token answer that training never saw (``tokenizer``: the profile's when not given)."""
    if profile.preference_dataset == "skills":
        return None
    name = f"{profile.preference_dataset} test pairs"
    pairs = clean_pairs(hub_preferences(profile, "test"), name=name)
    if tokenizer is None:
        from .models import load_tokenizer

        tokenizer = load_tokenizer(profile)
    return check_lengths(tokenizer, pairs, dpo_config_kwargs(profile, "unused")["max_length"], name=name)


# ------------------------------------------------------------------------------------------
# The loss from scratch
# ------------------------------------------------------------------------------------------


def _encode(tokenizer: PreTrainedTokenizerBase, prompt: list[dict], completion: list[dict]) -> tuple[list[int], int]:
    """Token ids of prompt+completion through the chat template, and where the completion starts."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=False)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("The chat template does not extend the prompt with the completion token by token.")
    return list(full_ids), len(prompt_ids)


LOGP_CHUNK = 1024          # positions whose log-softmax is computed at once (fp32): 1024 x 49152 x 4 B = 0.2 GB
SCORING_TOKENS = 4096      # tokens (rows x padded length) per scoring batch: bounds the logits the model returns


def token_logps(logits: torch.Tensor, targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``log softmax(logits)[target]`` per position, in fp32, computed ``chunk`` positions at a time.

    ``logits`` is ``[..., vocab]`` in the model's dtype and ``targets`` has its leading shape. Only one chunk is
    ever held in fp32 (``chunk x vocab``, default :data:`LOGP_CHUNK`), never an fp32 copy of the whole
    ``[batch, length, vocab]`` tensor."""
    chunk = chunk or LOGP_CHUNK
    flat, ids = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    out = torch.empty(ids.shape, dtype=torch.float32, device=logits.device)
    for start in range(0, flat.shape[0], chunk):
        part = flat[start:start + chunk].float()
        out[start:start + chunk] = part.gather(-1, ids[start:start + chunk, None]).squeeze(-1) - part.logsumexp(-1)
    return out.reshape(targets.shape)


def scoring_batches(lengths: Sequence[int], batch_size: int = 16, max_tokens: int | None = None) -> list[list[int]]:
    """Indices of the rows to score together: by length (similar lengths share a batch, little padding), at most
    ``batch_size`` rows and at most ``max_tokens`` tokens per batch counted as rows x the longest row (a row
    longer than ``max_tokens`` goes alone; default :data:`SCORING_TOKENS`). This bounds the logits a batch makes:
    ``max_tokens x vocab`` values."""
    max_tokens = max_tokens or SCORING_TOKENS
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda j: lengths[j]):
        batch = batches[-1] if batches else None
        if batch and len(batch) < batch_size and (len(batch) + 1) * lengths[i] <= max_tokens:
            batch.append(i)
        else:
            batches.append([i])
    return batches


def scoring_memory_gb(rows: int, length: int, vocab: int, dtype_bytes: int = 2, chunk: int | None = None) -> float:
    """Estimated GB the log-probabilities of one scoring batch take on top of the model (an estimate, not a
    measurement): the logits the model returns (``rows x length x vocab`` in its dtype) plus one fp32 chunk and
    the same again for ``logsumexp``'s temporary. Attention and the key/value cache, small next to these at a
    49k vocabulary, are left out."""
    chunk = chunk or LOGP_CHUNK
    return (rows * length * vocab * dtype_bytes + 2 * min(chunk, rows * length) * vocab * 4) / 1e9


@torch.no_grad()
def completion_logps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[dict]],
    completions: Sequence[list[dict]],
    batch_size: int = 16,
    desc: str | None = None,
    autocast: bool = False,
) -> torch.Tensor:
    """Sum of log pi(token) over the completion tokens of each (prompt, completion), as a float tensor.

    Plain torch: one forward pass per batch, ``log_softmax`` of the logits, the log-probability of
    each next token, masked to the completion (which ends with the end-of-turn token).
    ``autocast=True`` runs the forward pass in bf16 autocast (CPU profiles use it for speed).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    everything = [_encode(tokenizer, p, c) for p, c in zip(prompts, completions)]
    out = torch.zeros(len(everything))
    try:
        with autocast_context(autocast):  # one context for all batches, so the weights are cast to bf16 once
            for rows in tqdm(scoring_batches([len(ids) for ids, _ in everything], batch_size), desc=desc,
                             disable=desc is None, leave=False):
                encoded = [everything[i] for i in rows]
                width = max(len(ids) for ids, _ in encoded)
                input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
                attention = torch.zeros_like(input_ids)
                mask = torch.zeros_like(input_ids, dtype=torch.bool)
                for i, (ids, cut) in enumerate(encoded):  # right padding
                    input_ids[i, : len(ids)] = torch.tensor(ids)
                    attention[i, : len(ids)] = 1
                    mask[i, cut: len(ids)] = True
                logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
                # log-softmax only where it is needed (the positions that predict a completion token), in chunks
                target_mask = mask[:, 1:].to(device)
                token_logp = token_logps(logits[:, :-1][target_mask], input_ids[:, 1:].to(device)[target_mask])
                sums = torch.zeros(len(encoded), device=device)
                sums.index_add_(0, target_mask.nonzero()[:, 0], token_logp)
                out[rows] = sums.cpu()
                del logits
    finally:
        model.train(was_training)
    return out


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sigmoid DPO loss (mean over pairs) and the implicit rewards of chosen and rejected answers."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards, rejected_rewards


def chosen_nll(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[dict], policy_chosen: torch.Tensor) -> torch.Tensor:
    """The SFT term some profiles add to the DPO loss: the mean negative log-likelihood per token of the chosen
    answers (TRL's ``loss_type=["sigmoid", "sft"]``; RPO, Pang et al. 2024). ``policy_chosen`` holds each chosen
    answer's summed log-probability (:func:`score_pairs`)."""
    n_tokens = sum(len(ids) - cut for ids, cut in (_encode(tokenizer, p["prompt"], p["chosen"]) for p in pairs))
    return -policy_chosen.sum() / n_tokens


@dataclass
class PairScores:
    """Summed completion log-probabilities of chosen and rejected answers under one model, and how many tokens
    each answer has (``None`` when unknown)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor | None = None
    rejected_tokens: torch.Tensor | None = None


def score_pairs(model, tokenizer, pairs: Sequence[dict], batch_size: int = 16, desc: str | None = None,
                autocast: bool = False) -> PairScores:
    """Log-probabilities of every pair's chosen and rejected answer under ``model``.

    The same numbers as :func:`completion_logps` on (prompt, chosen) and (prompt, rejected), about three times
    as fast: the tokens all prompts start with (the chat template's system prompt) go through the model once,
    each pair's prompt once, and both answers continue from the key/value cache.

    Memory is bounded whatever the answers' lengths: pairs of similar length are scored together, at most
    ``batch_size`` of them and :data:`SCORING_TOKENS` tokens per batch (:func:`scoring_batches`), and the
    log-softmax runs in chunks (:func:`token_logps`); :func:`scoring_memory_gb` estimates the peak.
    """
    was_training = model.training
    model.eval()
    encoded = [(_encode(tokenizer, p["prompt"], p["chosen"]), _encode(tokenizer, p["prompt"], p["rejected"])) for p in pairs]
    for (ids_c, cut_c), (ids_r, cut_r) in encoded:
        if ids_c[:cut_c] != ids_r[:cut_r]:
            raise ValueError("Chosen and rejected answers of a pair must follow the same prompt.")
    chosen, rejected = torch.zeros(len(encoded)), torch.zeros(len(encoded))
    # a batch's tokens: its prompt (after the shared prefix) plus the longer of the two answers
    sizes = [max(len(ids_c), cut_c + len(ids_r) - cut_r) for (ids_c, cut_c), (ids_r, cut_r) in encoded]
    try:
        with autocast_context(autocast):  # one context for all batches, so the weights are cast to bf16 once
            prefix, cache = shared_prefix_cache(model, [ids[:cut] for (ids, cut), _ in encoded])
            for rows in tqdm(scoring_batches(sizes, batch_size), desc=desc, disable=desc is None, leave=False):
                c, r = _pair_logps(model, tokenizer.pad_token_id, [encoded[i] for i in rows], prefix, cache)
                chosen[rows], rejected[rows] = c, r
    finally:
        model.train(was_training)
    lengths = torch.tensor([[len(ids_c) - cut_c, len(ids_r) - cut_r] for (ids_c, cut_c), (ids_r, cut_r) in encoded])
    return PairScores(chosen, rejected, lengths[:, 0], lengths[:, 1])


def _positions(mask: torch.Tensor, last: int) -> torch.Tensor:
    """Position ids of the last ``last`` columns of a padded batch: real tokens counted along each row."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -last:]


@torch.no_grad()
def _pair_logps(model, pad: int, encoded: Sequence[tuple[tuple[list[int], int], tuple[list[int], int]]],
                prefix: Sequence[int], prefix_kv) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of :func:`score_pairs`: the prompts after the shared ``prefix`` (whose cache is ``prefix_kv``)
    padded so that they all end where the answers begin, run once; each answer continues from a cache cropped
    back to the prompt. Position ids come from the attention mask, so the padding changes no score. Runs in
    the caller's autocast context, if any."""
    device = next(model.parameters()).device
    shared = len(prefix)
    prompt_ids, prompt_mask = pad_after_prefix(prefix, [ids[shared:cut] for (ids, cut), _ in encoded], pad)
    width = prompt_ids.shape[1]
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    cache = batch_cache(prefix_kv, len(encoded)) if prefix_kv is not None else None
    out = model(input_ids=prompt_ids[:, shared:], attention_mask=prompt_mask, past_key_values=cache,
                position_ids=_positions(prompt_mask, width - shared), use_cache=True, logits_to_keep=1)
    first_logits, cache = out.logits[:, -1], out.past_key_values
    sums = []
    for side in (0, 1):
        answers = [enc[side][0][enc[side][1]:] for enc in encoded]
        length = max(map(len, answers))
        answer_ids = torch.full((len(encoded), length), pad, dtype=torch.long)
        answer_mask = torch.zeros_like(answer_ids)
        for i, ids in enumerate(answers):  # right padding after the answer
            answer_ids[i, : len(ids)] = torch.tensor(ids)
            answer_mask[i, : len(ids)] = 1
        answer_ids, answer_mask = answer_ids.to(device), answer_mask.to(device)
        if cache.get_seq_length() > width:  # forget the previous answer
            cache.crop(width - cache.get_seq_length())
        mask = torch.cat([prompt_mask, answer_mask], dim=1)
        logits = model(input_ids=answer_ids, attention_mask=mask, past_key_values=cache,
                       position_ids=_positions(mask, length), use_cache=True).logits
        # position t of the answer is predicted by the token before it: the prompt's last token for t = 0
        token_logp = torch.cat([token_logps(first_logits, answer_ids[:, 0])[:, None],
                                token_logps(logits[:, :-1], answer_ids[:, 1:])], dim=1)
        del logits
        sums.append((token_logp * answer_mask).sum(dim=1).cpu())
    return sums[0], sums[1]


def implicit_wins(policy: PairScores, reference: PairScores) -> torch.Tensor:
    """Per pair: does the implicit reward against ``reference`` rank chosen above rejected? (beta does not matter)"""
    return (policy.chosen - reference.chosen) - (policy.rejected - reference.rejected) > 0


def ranking_wins(scores: PairScores, per_token: bool = False) -> torch.Tensor:
    """Per pair: is the chosen answer more likely than the rejected one? With ``per_token``, compare the mean
    log-probability per answer token instead of the sum: a summed log-probability favours short answers, since
    every token adds a negative term."""
    if not per_token:
        return scores.chosen > scores.rejected
    if scores.chosen_tokens is None:
        raise ValueError("These scores carry no answer lengths; compute them with dpo.score_pairs.")
    return scores.chosen / scores.chosen_tokens > scores.rejected / scores.rejected_tokens


def implicit_reward_accuracy(policy: PairScores, reference: PairScores) -> float:
    """Fraction of pairs whose implicit reward ranks chosen above rejected (beta does not matter)."""
    return float(implicit_wins(policy, reference).float().mean())


# ------------------------------------------------------------------------------------------
# TRL
# ------------------------------------------------------------------------------------------


@takes_profile
def dpo_config_kwargs(profile: Profile, output_dir, **overrides) -> dict:
    """The keyword arguments of :func:`dpo_config` (see :func:`helpers.training.sft_config_kwargs`)."""
    kwargs = common_trainer_kwargs(profile, output_dir, profile.dpo_steps, profile.dpo_batch_size,
                                   profile.dpo_learning_rate)
    kwargs["beta"] = profile.dpo_beta
    if profile.dpo_sft_weight:  # DPO + NLL of the chosen answers: keeps their likelihood (and the skills) up
        kwargs["loss_type"] = ["sigmoid", "sft"]
        kwargs["loss_weights"] = [1.0, profile.dpo_sft_weight]
    # No warmup: a LoRA adapter over tens of steps does not need it, and without it notebook 02 can compare
    # learning rates step for step on identical batches.
    kwargs["warmup_steps"] = 0
    kwargs.update(check_overrides(overrides))
    return kwargs


@takes_profile
def dpo_config(profile: Profile, output_dir, **overrides) -> DPOConfig:
    """A ``DPOConfig`` from the profile (current names: no ``max_prompt_length``; ``max_length`` only)."""
    return DPOConfig(**dpo_config_kwargs(profile, output_dir, **overrides))


def check_lengths(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[dict], max_length: int,
                  name: str = "DPO training pairs") -> list[dict]:
    """The pairs whose prompt and both answers fit in ``max_length`` tokens; the others are counted and left out
    (truncation would cut their answers), and none fitting is an error (:func:`helpers.data.within_length`)."""
    return within_length(tokenizer, pairs, max_length, name, answers=("chosen", "rejected"))


@takes_profile
def train_dpo(
    profile: Profile,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[dict],
    peft_config: LoraConfig | None = None,
    output_dir=None,
    callbacks: list | None = None,
    **config_overrides,
) -> DPOTrainer:
    """Train a new LoRA adapter with DPO on ``pairs``; the reference is ``model`` with the adapter disabled."""
    pairs = clean_pairs(pairs, name="DPO training pairs")
    config = dpo_config(profile, output_dir or outputs_dir("trainer", f"dpo_{profile.name}"), **config_overrides)
    pairs = check_lengths(tokenizer, pairs, config.max_length)
    print(training_passes(config, len(pairs), "DPO"))
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=as_dataset(list(pairs)),
        processing_class=tokenizer,
        peft_config=peft_config or lora_config(profile),
        callbacks=callbacks,
    )
    return run_trainer(trainer)


def training_passes(config, n_rows: int, what: str = "training") -> str:
    """One line: how many rows ``config``'s steps draw (steps x batch x accumulation) and how many passes over the
    ``n_rows`` rows that fit that is, so "one pass" is not claimed where the length filter left half the rows out."""
    drawn = config.max_steps * config.per_device_train_batch_size * config.gradient_accumulation_steps
    return (f"{what}: {config.max_steps} steps draw {drawn} rows from the {n_rows} that fit: "
            f"{drawn / n_rows:.2f} passes over them.")


@torch.no_grad()
def trl_loss_on_first_pairs(trainer: DPOTrainer, n: int) -> tuple[float, list[dict]]:
    """TRL's own DPO loss on the first ``n`` rows of its (tokenised) training set, and those pairs.

    The rows go through the trainer's collator and ``compute_loss`` exactly as in training, so the
    number can be compared with :func:`dpo_loss` computed from scratch on the returned pairs.
    """
    rows = [trainer.train_dataset[i] for i in range(n)]
    pairs = [{k: r[k] for k in PREFERENCE_COLUMNS} for r in rows]
    model_inputs = [{k: v for k, v in r.items() if k not in PREFERENCE_COLUMNS} for r in rows]
    batch = trainer.data_collator(model_inputs)
    device = next(trainer.model.parameters()).device
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        with full_logits_head_on_cpu():  # the LM head the trainer trains with (see helpers.training.run_trainer)
            loss = trainer.compute_loss(trainer.model, batch)
    finally:
        trainer.model.train(was_training)
    return float(loss), pairs


def ranking_accuracy(scores: PairScores, per_token: bool = False) -> float:
    """Fraction of pairs where the model gives the chosen answer a higher log-probability than the rejected one.

    This is the implicit-reward ranking against a reference that rates both answers equally; it is the
    course's ``preference_accuracy``, usable for any model (base, tuned or quantized).
    """
    return float(ranking_wins(scores, per_token).float().mean())


def ranking_by_skill(scores: PairScores, skills: Sequence[str], per_token: bool = False) -> dict[str, float]:
    """:func:`ranking_accuracy` per skill label."""
    return rate_by(ranking_wins(scores, per_token).tolist(), skills)


def implicit_by_skill(policy: PairScores, reference: PairScores, skills: Sequence[str]) -> dict[str, float]:
    """:func:`implicit_reward_accuracy` per skill label."""
    return rate_by(implicit_wins(policy, reference).tolist(), skills)
