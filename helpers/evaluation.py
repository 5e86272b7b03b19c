"""Evaluation: chat-template generation, skill accuracy with the checker, and perplexity."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import check_eval_rows, message_problem, require_sequence
from .skills import check_answer, mentions_answer


class EvalInputError(ValueError):
    """An evaluation input that cannot be measured (no prompts, a window too short, no text); the message says what
    to pass instead."""


def autocast_context(enabled: bool):
    """bf16 autocast on CPU when ``enabled`` (about 2x faster on CPUs with AVX-512 bf16), else a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def rate_by(flags: Iterable[bool], keys: Sequence[str]) -> dict[str, float]:
    """Mean of boolean ``flags`` grouped by ``keys`` (e.g. accuracy per skill), keys sorted."""
    flags = list(flags)
    if len(flags) != len(keys):
        raise EvalInputError(f"{len(keys)} skill labels for {len(flags)} pairs; pass one label per flag, in the same "
                             "order.")
    groups: dict[str, list[bool]] = {}
    for flag, key in zip(flags, keys):
        groups.setdefault(key, []).append(bool(flag))
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


MIN_SHARED_PREFIX = 8  # tokens; a shorter common prefix is not worth a separate forward pass


def shared_prefix_length(token_lists: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens that every list shares, leaving at least one token of each list after it.

    Chat prompts rendered with the same template share their start: SmolLM2's template inserts the same
    system prompt (24 tokens) before every user turn, half of a typical evaluation prompt.
    """
    if len(token_lists) < 2:
        return 0
    limit = min(len(ids) for ids in token_lists) - 1
    first, n = token_lists[0], 0
    while n < limit and all(ids[n] == first[n] for ids in token_lists):
        n += 1
    return n


@torch.no_grad()
def prefix_cache(model: PreTrainedModel, prefix: Sequence[int]):
    """Key/value cache of ``prefix`` (batch of one), to be copied into every batch that starts with it. Runs in
    the caller's autocast context, if any."""
    ids = torch.tensor([list(prefix)], device=next(model.parameters()).device)
    return model(input_ids=ids, use_cache=True).past_key_values


def shared_prefix_cache(model: PreTrainedModel, token_lists: Sequence[Sequence[int]]) -> tuple[list[int], object | None]:
    """The prefix every list of token ids starts with and its key/value cache, or ``([], None)`` when the
    shared part is shorter than :data:`MIN_SHARED_PREFIX` tokens (then every row is computed in full). Runs in
    the caller's autocast context, if any."""
    shared = shared_prefix_length(token_lists)
    if shared < MIN_SHARED_PREFIX:
        return [], None
    prefix = list(token_lists[0][:shared])
    return prefix, prefix_cache(model, prefix)


def batch_cache(cache, batch_size: int):
    """A copy of a batch-of-one ``cache`` repeated ``batch_size`` times (the original stays untouched)."""
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(batch_size)
    return cache


def pad_after_prefix(prefix: Sequence[int], rests: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` for rows ``prefix + rest``, with the padding between the two.

    The rests are left-padded, so every row ends where generation (or the answer) begins; the padding is
    masked out, and position ids taken from the mask (as ``generate`` does) run on across it, so each row is
    the same sequence it would be without padding.
    """
    width = max(map(len, rests))
    ids = torch.full((len(rests), len(prefix) + width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[:, : len(prefix)] = torch.tensor(list(prefix), dtype=torch.long)
    mask[:, : len(prefix)] = 1
    for i, rest in enumerate(rests):
        ids[i, ids.shape[1] - len(rest):] = torch.tensor(list(rest), dtype=torch.long)
        mask[i, ids.shape[1] - len(rest):] = 1
    return ids, mask


def _prompt_messages(prompt: str | list[dict]) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def check_prompts(prompts) -> list:
    """The prompts as a list, each a non-empty string or a valid list of chat messages; a single string (which
    would be read one character at a time) or an empty prompt is refused with its index."""
    prompts = require_sequence(prompts, "prompts", "['What is the capital of France?']")
    if not prompts:
        raise EvalInputError("generate() got no prompts: pass at least one prompt string or message list.")
    for i, p in enumerate(prompts):
        problem = (None if p.strip() else "it is empty") if isinstance(p, str) else message_problem(p, "prompt")
        if problem:
            raise EvalInputError(f"Prompt {i} cannot be generated from: {problem}. Give a non-empty string or a list "
                                 "of {'role', 'content'} messages.")
    return prompts


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str | list[dict]]) -> list[list[int]]:
    """Token ids of each prompt (a user message string or a list of chat messages) as the model sees it:
    through the chat template, ending with the assistant's turn header."""
    prompts = check_prompts(prompts)
    texts = [tokenizer.apply_chat_template(_prompt_messages(p), tokenize=False, add_generation_prompt=True) for p in prompts]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list[dict]],
    max_new_tokens: int = 24,
    batch_size: int = 32,
    desc: str = "generating",
    progress: bool = True,
    autocast: bool = False,
) -> list[str]:
    """Greedy-decode an answer for each prompt, formatted with the tokenizer's chat template.

    A prompt is either a user message string or a list of chat messages. Prompts run in batches, padded so
    that each ends where its answer begins; the tokens all prompts start with (the template's system prompt)
    are run once and their key/value cache is copied into every batch (prefix caching, as serving engines
    do; same answers, about half the prompt tokens to compute here). The decoded continuation (special
    tokens removed, whitespace stripped) is returned in the original order.
    """
    prompts = check_prompts(prompts)
    was_training = model.training
    model.eval()
    token_ids = prompt_token_ids(tokenizer, prompts)
    # Sort by length so each batch pads little; restore the order at the end.
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    outputs: list[str] = [""] * len(token_ids)
    device = next(model.parameters()).device
    try:
        with autocast_context(autocast):  # one context for all batches, so the weights are cast to bf16 once
            # The tokens every prompt starts with (the chat template's system prompt) go through the model once.
            prefix, cache = shared_prefix_cache(model, token_ids)
            for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
                idx = order[start : start + batch_size]
                input_ids, mask = pad_after_prefix(prefix, [token_ids[i][len(prefix):] for i in idx], tokenizer.pad_token_id)
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    past_key_values=batch_cache(cache, len(idx)) if cache is not None else None,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                for i, row in zip(idx, out[:, input_ids.shape[1] :]):
                    outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return outputs


@dataclass
class SkillReport:
    """Per-item outcome of a skill evaluation plus the aggregate numbers."""

    rows: list[dict]
    accuracy: float
    mention_rate: float
    per_skill: dict[str, float]
    seconds: float
    per_skill_mentions: dict[str, float] = field(default_factory=dict)

    @property
    def outcomes(self) -> dict[str, str]:
        """Each prompt right (1) or wrong (0), in order: ``{"correct": "0110..."}``, what
        :func:`helpers.comparison.compare_pairs` pairs prompt by prompt (and a results file records)."""
        return {"correct": "".join("1" if row["correct"] else "0" for row in self.rows)}

    def __repr__(self) -> str:  # keeps notebook output short
        return f"SkillReport(accuracy={self.accuracy:.3f}, n={len(self.rows)}, per_skill={self.per_skill})"


def evaluate_skills(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    eval_rows: Sequence[dict],
    max_new_tokens: int = 24,
    batch_size: int = 32,
    desc: str = "skill eval",
    autocast: bool = False,
) -> SkillReport:
    """Generate an answer for every evaluation row and score it with :func:`check_answer`.

    ``eval_rows`` are rows of the skills eval split (keys ``prompt``, ``answers``, ``skill``,
    ``case_sensitive``). ``autocast`` runs generation in bf16 autocast on CPU. Returns a :class:`SkillReport` with exact-match accuracy (the skill
    accuracy), the lenient "mentions the answer" rate and accuracy per skill.
    """
    eval_rows = check_eval_rows(eval_rows, "evaluation set given to evaluate_skills()")
    start = time.perf_counter()
    responses = generate(model, tokenizer, [r["prompt"] for r in eval_rows], max_new_tokens, batch_size, desc,
                         autocast=autocast)
    rows = []
    for r, resp in zip(eval_rows, responses):
        cs = bool(r.get("case_sensitive", False))
        rows.append(
            {
                "skill": r["skill"],
                "prompt": r["prompt"],
                "answer": r["answers"][0],
                "response": resp,
                "correct": check_answer(resp, r["answers"], cs),
                "mentions": mentions_answer(resp, r["answers"], cs),
            }
        )
    skills = [r["skill"] for r in rows]
    return SkillReport(
        rows=rows,
        accuracy=sum(r["correct"] for r in rows) / len(rows),
        mention_rate=sum(r["mentions"] for r in rows) / len(rows),
        per_skill={k: round(v, 3) for k, v in rate_by((r["correct"] for r in rows), skills).items()},
        seconds=time.perf_counter() - start,
        per_skill_mentions={k: round(v, 3) for k, v in rate_by((r["mentions"] for r in rows), skills).items()},
    )


@torch.no_grad()
def token_losses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str | Iterable[str],
    window: int = 512,
    max_tokens: int | None = None,
    desc: str = "perplexity",
) -> torch.Tensor:
    """The negative log-likelihood of every predicted token of ``text``, scored in non-overlapping windows of
    ``window`` tokens (each window on its own; its first token is not predicted). :func:`perplexity` is
    ``exp`` of their mean; :mod:`helpers.stats` turns them into intervals."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise EvalInputError(f"window={window!r}: each window's first token is not predicted, so a window must hold at "
                             "least 2 tokens (and scores little below a few hundred). Pass window=512 (the default) "
                             "or the profile's max_length.")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2):
        raise EvalInputError(f"max_tokens={max_tokens!r}: at least 2 tokens are needed to predict one. Pass a whole "
                             "number of 2 or more, or None to score all of the text.")
    if not isinstance(text, str):
        texts = require_sequence(text, "text", "['first passage', 'second passage']")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise EvalInputError(f"text[{bad[0]}] is a {type(texts[bad[0]]).__name__}, not a string: pass one string "
                                 "or a list of strings (e.g. text.stdlib_samples('eval', 8)).")
        text = "\n\n".join(texts)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if ids.numel() < 2:
        raise EvalInputError(f"perplexity() needs at least two tokens of text; the text given is "
                             f"{'empty' if not text.strip() else f'{ids.numel()} token long'}. Pass a longer text (a "
                             "few thousand tokens give a stable number, e.g. text.stdlib_samples('eval', 8)).")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    try:
        for start in tqdm(range(0, ids.numel(), window), desc=desc, leave=False):
            chunk = ids[start : start + window].unsqueeze(0).to(device)
            if chunk.shape[1] < 2:
                break
            logits = model(input_ids=chunk).logits[0, :-1].float()
            losses.append(torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="none").cpu())
    finally:
        model.train(was_training)
    return torch.cat(losses)


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str | Iterable[str],
    window: int = 512,
    max_tokens: int | None = None,
    desc: str = "perplexity",
) -> float:
    """Perplexity of ``text`` in non-overlapping windows of ``window`` tokens.

    The text (or texts joined by blank lines) is tokenised once and cut into consecutive
    windows; each window is scored independently, the token-level negative log-likelihoods
    are averaged, and ``exp(mean NLL)`` is returned (:func:`token_losses`). ``max_tokens`` caps the tokens scored.
    """
    return math.exp(float(token_losses(model, tokenizer, text, window, max_tokens, desc).double().mean()))
