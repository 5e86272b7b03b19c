"""One measurement harness for every model variant (quantized, tuned, baseline): the same numbers, the same way.

:func:`measure_variant` returns a dict with metric names from :data:`helpers.results.METRICS`, ready for
:func:`helpers.results.write_results`, plus the :class:`~helpers.evaluation.SkillReport` for side-by-side tables.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .comparison import outcomes_of
from .evaluation import SkillReport, autocast_context, evaluate_skills, token_losses
from .stats import blocks
from .profiles import Profile
from .quant import dequantized_weight_cache
from .results import peak_cuda_mb as notebook_peak_cuda_mb, reset_variant_peak  # noqa: F401 (re-exported: the notebook's peak)

SPEED_PROMPT = "Explain in two sentences why the sky is blue."
ADOPTABLE = ("perplexity", "skill_accuracy", "preference_accuracy")  # depend on the weights only, not on the process


def variant_dtype(model, profile: Profile) -> tuple[str, str | None]:
    """The dtype ``model`` computes in (its floating-point weights' dtype) and, when that is not the profile's
    compute dtype, a line saying so: transformers casts AWQ models to fp16 on CUDA whatever dtype was asked
    (``quantizers/quantizer_awq.py``, ``update_dtype``), so on an A100 (bf16) the AWQ rows run in fp16; and
    bitsandbytes' int8 layers quantize bf16 inputs in fp16, so the A100's int8 row says so."""
    dtype = getattr(model, "dtype", None) or next(
        (p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.float32)
    name = str(dtype).removeprefix("torch.")
    try:
        wanted = str(profile.compute_dtype).removeprefix("torch.")
    except Exception:  # a profile whose precision is still "auto"
        return name, None
    if profile.needs_cuda and name == "bfloat16" and any(type(m).__name__ == "Linear8bitLt" for m in model.modules()):
        return name, ("runs in bfloat16, but its int8 layers quantize their inputs in float16: bitsandbytes casts bf16 "
                      "activations to fp16 first (bitsandbytes/autograd/_functions.py, MatMul8bitLt)")
    if not profile.needs_cuda or name == wanted:
        return name, None
    return name, (f"runs in {name}, not the profile's {wanted}"
                  + (" (transformers casts AWQ models to fp16 on CUDA)" if name == "float16" else "")
                  + ": its numbers are measured in " + name)


def footprint_mb(model: PreTrainedModel) -> float:
    """Bytes held by the model's parameters *and* buffers (packed int weights, scales, zeros), in MB.

    ``model.get_memory_footprint()`` can miss quantization state kept outside parameters; this counts
    every tensor the module tree owns, each storage once.
    """
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        key = tensor.untyped_storage().data_ptr() if tensor.device.type != "meta" else id(tensor)
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    for module in model.modules():  # bitsandbytes keeps 4-bit statistics on the weight's quant_state
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            total += _quant_state_bytes(state, seen)
    return total / 1e6


def _quant_state_bytes(state, seen: set) -> int:
    """Bytes of a bitsandbytes QuantState (block scales, lookup code, nested state of double quantization);
    tensors shared between layers (the 16-value code) are counted once."""
    total = 0
    for name in ("absmax", "code", "offset"):
        t = getattr(state, name, None)
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.numel() * t.element_size()
    nested = getattr(state, "state2", None)
    return total + (_quant_state_bytes(nested, seen) if nested is not None else 0)


@torch.no_grad()
def tokens_per_second(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    new_tokens: int = 16,
    repeats: int = 3,
    autocast: bool = False,
    prompt: str = SPEED_PROMPT,
) -> float:
    """Median greedy-decoding throughput (batch 1, exactly ``new_tokens`` new tokens) over ``repeats`` runs.

    One untimed warm-up run comes first (kernel compilation, caches).
    """
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True).to(next(model.parameters()).device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    rates = []
    with autocast_context(autocast):
        model.generate(**ids, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})
        for _ in range(repeats):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(**ids, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            rates.append(new_tokens / (time.perf_counter() - start))
    return statistics.median(rates)


def preference_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[dict],
                        name: str = "model", autocast: bool = False, outcomes: dict | None = None) -> float:
    """Fraction of preference pairs where ``model`` makes the chosen answer more likely than the rejected one;
    a dict passed as ``outcomes`` receives each pair's result (``preferred``, for paired intervals)."""
    from .dpo import ranking_accuracy, score_pairs

    with dequantized_weight_cache(model):
        scores = score_pairs(model, tokenizer, pairs, desc=f"{name} pairs", autocast=autocast)
    if outcomes is not None:
        outcomes.update(outcomes_of(pair_scores=scores))
    return ranking_accuracy(scores)


def timed_load(loader: Callable[[], PreTrainedModel]) -> tuple[PreTrainedModel, float]:
    """Call ``loader`` and return ``(model, seconds)``."""
    start = time.perf_counter()
    model = loader()
    return model, time.perf_counter() - start


def measure_variant(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    profile: Profile,
    eval_rows: Sequence[dict],
    ppl_text: str,
    *,
    name: str = "model",
    size_path: str | Path | None = None,
    load_seconds: float | None = None,
    autocast: bool = False,
    speed: bool = True,
    preference_pairs: Sequence[dict] | None = None,
    skip: Collection[str] = (),
    outcomes: dict | None = None,
) -> tuple[dict[str, float], SkillReport | None]:
    """Perplexity, skill accuracy, footprint, tokens/s (and size on disk / load time when given) of one variant.

    With ``preference_pairs`` it also gives the preference accuracy: the fraction of pairs where the model
    makes the chosen answer more likely than the rejected one (as in notebook 02). ``skip`` names quality
    metrics not to measure (any of :data:`ADOPTABLE`: see :meth:`Harness.record`); the skill report is
    ``None`` when the skill accuracy is skipped. A dict passed as ``outcomes`` receives what the intervals of
    :mod:`helpers.stats` need: each prompt right or wrong (``correct``) and the perplexity text's losses summed per
    block (``ppl_block_nll``, ``ppl_block_tokens``).
    """
    from .quant import dir_size_mb

    unknown = set(skip) - set(ADOPTABLE)
    if unknown:
        raise ValueError(f"Cannot skip {sorted(unknown)}: only {', '.join(map(repr, ADOPTABLE))} can be taken from elsewhere.")
    model.eval()
    dtype, note = variant_dtype(model, profile)
    if note:
        print(f"{name} {note}.")
    if outcomes is not None:
        outcomes["dtype"] = dtype  # recorded with the variant's outcomes (results' extra.outcomes)
    on_cuda = next(model.parameters()).device.type == "cuda"
    metrics = {"footprint_mb": footprint_mb(model)}  # before any forward pass: bitsandbytes' CPU path repacks 4-bit weights on first use
    if on_cuda:  # peak CUDA memory while this variant is evaluated (its weights are already resident)
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        reset_variant_peak()  # the notebook's own peak is kept: notebook_peak_cuda_mb()
        resident = torch.cuda.memory_allocated() / 1e6
        if resident > 1.2 * metrics["footprint_mb"] + 50:
            print(f"{name}: {resident - metrics['footprint_mb']:.0f} MB of CUDA memory besides this model's weights "
                  "are still allocated (an earlier model left loaded?); its peak includes them.")
    report = None
    with dequantized_weight_cache(model):  # same outputs, without unpacking GPTQ weights on every call
        if "perplexity" not in skip:
            with autocast_context(autocast):
                losses = token_losses(model, tokenizer, ppl_text, profile.ppl_window, profile.ppl_max_tokens,
                                      desc=f"{name} perplexity")
            metrics["perplexity"] = math.exp(float(losses.double().mean()))
            if outcomes is not None:
                sums, counts = blocks(losses.double().numpy())
                outcomes.update(ppl_block_nll=[round(float(v), 4) for v in sums], ppl_block_tokens=counts.astype(int).tolist())
        if "skill_accuracy" not in skip:
            report = evaluate_skills(model, tokenizer, eval_rows, profile.max_new_tokens, profile.eval_batch_size,
                                     desc=f"{name} skills", autocast=autocast)
            metrics["skill_accuracy"] = report.accuracy
            if outcomes is not None:
                outcomes.update(outcomes_of(report))
    if speed:  # outside the cache: the speed of the quantized kernel as deployed
        metrics["tokens_per_second"] = tokens_per_second(model, tokenizer, autocast=autocast)
    if preference_pairs and "preference_accuracy" not in skip:  # uses the cache itself
        metrics["preference_accuracy"] = preference_accuracy(model, tokenizer, preference_pairs, name, autocast, outcomes)
    if on_cuda:
        metrics["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 1e6
    if size_path is not None:
        metrics["size_mb"] = dir_size_mb(size_path)
    if load_seconds is not None:
        metrics["load_seconds"] = load_seconds
    return metrics, report


@dataclass
class Harness:
    """:func:`measure_variant` with a notebook's shared arguments fixed, so every variant is measured the same way.

    It measures on the profile's held-out prompts and text unless given others (``eval_rows``, ``ppl_text``).
    :meth:`record` stores each variant's metrics in ``metrics`` (ready for ``results.write_results``) and its
    skill report in ``reports`` (for ``comparison.side_by_side``).
    """

    tokenizer: PreTrainedTokenizerBase
    profile: Profile
    eval_rows: Sequence[dict] | None = None   # default: the profile's held-out prompts (helpers.data.eval_rows)
    ppl_text: str | None = None               # default: the profile's held-out text (helpers.text.perplexity_text)
    autocast: bool = False
    preference_pairs: Sequence[dict] | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    reports: dict[str, SkillReport] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)  # per variant: the dtype it computed in (AWQ: fp16 on CUDA)
    outcomes: dict[str, dict] = field(default_factory=dict)  # per variant: what helpers.stats needs for intervals
    # per variant: (notebook, variant name, weights) measured before; record_or_reuse takes it when the weights agree
    earlier: Mapping[str, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.eval_rows is None:
            from .data import eval_rows

            self.eval_rows = eval_rows(self.profile)
        if self.ppl_text is None:
            from .text import perplexity_text

            self.ppl_text = perplexity_text(self.profile.perplexity_text)

    def accuracy_intervals(self) -> dict[str, list[float]]:
        """Each recorded variant's 95% interval of skill accuracy (:func:`helpers.comparison.accuracy_intervals`)."""
        from .stats import accuracy_intervals

        return accuracy_intervals(self.outcomes)

    def measure(self, model: PreTrainedModel, name: str, **kwargs) -> tuple[dict[str, float], SkillReport | None]:
        """Measure ``model`` the way every variant here is measured, without recording it (an exercise's one-off, a
        side experiment): :func:`measure_variant`'s ``(metrics, report)``; ``kwargs`` as there (``speed``, ``skip``,
        ``outcomes``, ``size_path``)."""
        return measure_variant(model, self.tokenizer, self.profile, self.eval_rows, self.ppl_text, name=name,
                               autocast=self.autocast, preference_pairs=self.preference_pairs, **kwargs)

    def record(self, name: str, model: PreTrainedModel, adopt: tuple[Mapping[str, float], str] | None = None,
               **kwargs) -> dict[str, float]:
        """Measure ``model`` as variant ``name`` (:meth:`measure`) and record it; ``kwargs`` go to
        :func:`measure_variant` (``size_path``, ``load_seconds``, ``speed``). Returns the variant's metrics.

        ``adopt=(metrics, source, outcomes)`` takes the quality numbers in ``metrics`` (perplexity, skill and preference
        accuracy: :data:`ADOPTABLE`) from an earlier notebook's measurement of the same weights, measured the
        same way (``source`` names it), instead of measuring them again; everything else (memory, speed, load
        time) is measured here, in this process."""
        taken = {k: v for k, v in (adopt[0] if adopt else {}).items() if k in ADOPTABLE}
        outcomes = dict(adopt[2]) if adopt and len(adopt) > 2 and adopt[2] else {}
        metrics, report = self.measure(model, name, skip=tuple(taken), outcomes=outcomes, **kwargs)
        self.outcomes[name] = outcomes
        self.dtypes[name] = outcomes.get("dtype", "")
        self.metrics[name] = {**metrics, **taken}
        if report is not None:
            self.reports[name] = report
        self.sources[name] = "measured here"
        if taken:
            self.sources[name] += f" ({' and '.join(k.replace('_', ' ') for k in taken)} from {adopt[1]})"
        return self.metrics[name]

    def record_or_reuse(self, name: str, load: Callable[[], PreTrainedModel],
                        reuse: tuple[Mapping[str, float], str] | None = None, timed: bool = True,
                        earlier: tuple[str, str, object] | None = None, **kwargs) -> dict[str, float]:
        """Measure the model ``load`` returns as variant ``name`` (timing the load when ``timed``), or take what an
        earlier notebook measured of it.

        ``earlier=(notebook, variant, weights)`` says where the variant was measured before and on which weights (a
        model folder, or the profile for its base model; default: the harness's ``earlier`` entry for ``name``);
        :func:`helpers.comparison.measured_before` finds it only when that notebook measured these very weights on
        this profile, and prints why not otherwise. A complete
        earlier row (perplexity included: notebooks 03-05) is taken whole, with the preference accuracy added here
        when it lacks one; an accuracy-only row (notebooks 01 and 02) gives its quality numbers, and memory, load time
        and speed are measured here. ``reuse`` holds ``(metrics, source, outcomes)`` already looked up: taken whole."""
        earlier = earlier if earlier is not None else self.earlier.get(name)
        if earlier is not None:
            from .comparison import measured_before

            notebook, variant, weights = earlier
            found = measured_before(notebook, variant, self.profile.name, weights)
            if found and "perplexity" in found[0]:
                reuse = found
            elif found:
                kwargs["adopt"] = found
        if reuse:
            return self.adopt(name, *reuse, load=load)
        if not timed:
            return self.record(name, load(), **kwargs)
        model, seconds = timed_load(load)
        return self.record(name, model, load_seconds=seconds, **kwargs)

    def adopt(self, name: str, metrics: Mapping[str, float], source: str, outcomes: Mapping | None = None,
              load: Callable[[], PreTrainedModel] | None = None) -> dict[str, float]:
        """Take ``metrics`` (and the per-prompt ``outcomes`` behind them, for intervals) that an earlier notebook
        measured (``source``) for variant ``name``, measured the same way; with ``load`` and this harness's
        preference pairs, add the preference accuracy if it is missing."""
        self.metrics[name] = dict(metrics)
        self.outcomes[name] = dict(outcomes or {})
        self.sources[name] = source
        if load is not None and self.preference_pairs and "preference_accuracy" not in metrics:
            model = load()
            self.metrics[name]["preference_accuracy"] = preference_accuracy(
                model, self.tokenizer, self.preference_pairs, name, self.autocast, self.outcomes[name])
            self.sources[name] += " (+ preference accuracy here)"
            del model
        return self.metrics[name]
