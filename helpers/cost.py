"""A cost model: how long each notebook takes and how much GPU memory it needs, estimated from the profile's sizes.

Nothing here runs a model. Each notebook is listed as the work it does (:func:`notebook_work`): training steps,
generation for the skills evaluation, scoring of preference pairs, perplexity windows, GPTQ/AWQ passes, model loads,
and, on a fresh runtime, whatever it must first rebuild from earlier notebooks. Each piece of work is turned into
seconds on a :class:`Device` by three rates written once in :data:`DEVICES`:

- matrix products at an *effective* rate (a share of the datasheet peak: the assumptions are in ``DEVICES``);
- token-by-token decoding at ``max(weights / memory bandwidth, per-step overhead)``;
- downloads and the install at a fixed rate.

Memory is the largest of the phases' peaks (:func:`notebook_memory_gb`). The GPU numbers are **estimates**: no GPU
has measured them. ``scripts/cost_check.py`` runs the same model for the ``cpu`` profile, with a CPU "device" built
from the matrix-product rate the machine measures, against the notebooks' measured times, so the model's error is
known on the hardware we have (README, "Cost model"). ``tests/test_cost.py`` checks the arithmetic and fails when a
notebook on ``t4`` needs more than 15 minutes or 13 GB, or on ``a100`` more than 15 minutes or 35 GB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .profiles import MODEL_SHAPES, PROFILES, Profile

# FLOPs per token and parameter (Kaplan et al., 2020, section 2.1; the 6·N·T rule of thumb): a forward pass is
# 2·N·T. LoRA training needs the gradient with respect to the activations (another 2·N·T) but not with respect to
# the frozen weights, so 4·N·T; gradient checkpointing runs the forward pass again: +2·N·T.
FORWARD = 2.0
BACKWARD_LORA = 2.0

# Lengths in tokens (prompt + answer after the chat template, its default system prompt included), measured on the
# course's files with the SmolLM2 tokenizer (tests/test_cost.py recomputes them). Rows from the Hub (chat, UltraFeedback) are counted at the profile's max_length: batches are
# padded to their longest row, so this is the upper bound a plan needs.
SKILLS_ROW_TOKENS = 64      # the longest skills row (mean 51): a batch is padded to its longest
SKILLS_PAIR_TOKENS = 64     # prompt + one answer of a skills pair, longest (mean 51)
EVAL_PROMPT_TOKENS = 49     # an evaluation prompt with the generation prompt (mean)
EVAL_PROMPTS = 289
EVAL_PAIRS = 289
SPEED_RUNS = 4          # helpers.measure.tokens_per_second: one warm-up + 3 timed runs of max_new_tokens at batch 1
AWQ_GRID = 20           # AWQ's scale search: 20 values of alpha per group of layers (Lin et al., 2024, section 3.2)
AWQ_GROUPS = 4          # scaled groups per decoder layer: q/k/v, o, gate/up, down
AWQ_CLIP_GRID = 10      # clipping ratios tried per layer (GPTQModel's AWQ: max_shrink 0.5 in steps of 0.05)
AWQ_CLIP_TOKENS = 512
GPTQ_PASSES = 2         # GPTQModel runs each decoder layer on the calibration tokens before and after quantizing it
CHARS_PER_TOKEN = 4.0   # calibration passages are cut to quant_calibration_chars characters


@dataclass(frozen=True)
class Device:
    """The rates a plan needs. ``measured`` says whether they were measured on the machine (CPU) or assumed."""

    name: str
    matmul_tflops: float        # effective dense 16-bit matrix-product rate reached by training and scoring
    bandwidth_gbs: float        # memory bandwidth that token-by-token decoding is bound by
    step_overhead_s: float      # Python and kernel-launch time of one forward call (decoding is bound by it on GPUs)
    memory_gb: float            # what the plan may use (the notebook limit, not the card's size)
    download_mbs: float = 0.0   # Hub download rate; 0: the model is on disk
    install_s: float = 0.0      # the notebook's pip install on a fresh runtime
    quant_layer_overhead_s: float = 0.4   # GPTQModel's per-module bookkeeping and packing, per quantized Linear
    measured: bool = False
    source: str = ""


# The assumptions, written once. Peaks from NVIDIA's datasheets (T4: 65 TFLOPS fp16 tensor, 320 GB/s; L4: 121
# TFLOPS fp16/bf16 dense, 300 GB/s; A100 40 GB: 312 TFLOPS bf16 dense, 1,555 GB/s). Effective rates: about a quarter
# to a third of the peak, what Hugging Face training of models of this size reaches (T4 16-23 and A100 95-125 TFLOPS
# effective, the range the course plans with; the low end is used). Decoding overhead: eager transformers runs a
# 24-32-layer model's forward call in about 20-30 ms of Python and kernel launches whatever the batch.
# Colab's Hub downloads: 50-100 MB/s; 50 is used. The install (pip on a fresh Colab runtime): about 2 minutes.
DEVICES: dict[str, Device] = {
    "t4": Device("T4 (16 GB, fp16)", matmul_tflops=16.0, bandwidth_gbs=250.0, step_overhead_s=0.030, memory_gb=13.0,
                 download_mbs=50.0, install_s=120.0, source="estimate: datasheet peaks x assumed efficiency"),
    "l4": Device("L4 (24 GB, bf16)", matmul_tflops=30.0, bandwidth_gbs=240.0, step_overhead_s=0.025, memory_gb=20.0,
                 download_mbs=50.0, install_s=120.0, source="estimate: datasheet peaks x assumed efficiency"),
    "a100": Device("A100 (40 GB, bf16)", matmul_tflops=95.0, bandwidth_gbs=1200.0, step_overhead_s=0.020,
                   memory_gb=35.0, download_mbs=50.0, install_s=120.0,
                   source="estimate: datasheet peaks x assumed efficiency"),
}

# The limits a notebook is planned to: one free Colab T4 session (about 15 minutes of a student's time, within
# the T4's memory with room for fragmentation) and the same time on the bigger cards.
TIME_LIMIT_S = 15 * 60
NOTEBOOKS = ("01_sft_lora", "02_dpo", "03_gptq", "04_awq", "05_bitsandbytes_int8_nf4", "06_qlora",
             "07_method_comparison", "08_grpo")
# What each notebook needs from earlier ones (helpers.pipeline), rebuilt on a fresh runtime unless kept on Drive.
NEEDS = {"01_sft_lora": (), "02_dpo": ("sft",), "03_gptq": ("sft", "dpo"), "04_awq": ("sft", "dpo"),
         "05_bitsandbytes_int8_nf4": ("sft", "dpo"), "06_qlora": ("sft",), "07_method_comparison": ("sft", "dpo"),
         "08_grpo": ("sft", "dpo")}


def cpu_device(matmul_gflops: float, bandwidth_gbs: float = 20.0, step_overhead_s: float = 0.06,
               efficiency: float = 0.45) -> Device:
    """A CPU as a :class:`Device`: ``matmul_gflops`` measured at the model's shapes in the precision the profile
    runs in (:func:`helpers.hardware.matmul_gflops`); training and scoring reach ``efficiency`` of it."""
    return Device("CPU", matmul_tflops=matmul_gflops * efficiency / 1000, bandwidth_gbs=bandwidth_gbs,
                  step_overhead_s=step_overhead_s, memory_gb=24.0, quant_layer_overhead_s=0.15, measured=True,
                  source=f"measured matmul rate {matmul_gflops:.0f} GFLOP/s x assumed efficiency {efficiency}")


@dataclass(frozen=True)
class Work:
    """One piece of a notebook: FLOPs of matrix products, decoding steps, bytes downloaded, fixed seconds."""

    what: str
    flops: float = 0.0
    decode_steps: int = 0
    mb_download: float = 0.0
    seconds: float = 0.0
    quant_modules: int = 0
    rebuild: bool = False     # made by an earlier notebook; kept on Drive, it is not redone


@dataclass
class Estimate:
    notebook: str
    profile: str
    device: str
    seconds: float
    memory_gb: float
    items: list[tuple[str, float]] = field(default_factory=list)   # (what, seconds)
    rebuild_seconds: float = 0.0
    measured_rates: bool = False

    @property
    def minutes(self) -> float:
        return self.seconds / 60

    def line(self) -> str:
        kind = "estimate" if not self.measured_rates else "model with measured rates"
        rebuilt = f", of which {self.rebuild_seconds / 60:.1f} min rebuilding earlier notebooks" if self.rebuild_seconds else ""
        return (f"{self.notebook} on {self.profile} ({self.device}): {self.minutes:.1f} min{rebuilt}, "
                f"peak {self.memory_gb:.1f} GB ({kind})")


def shape(profile: Profile) -> dict:
    """The profile's model shape from :data:`helpers.profiles.MODEL_SHAPES` (params, hidden, layers, vocab, widths,
    and the derived ``linear_params``, ``mlp``)."""
    key = profile.model_id.split(" ")[0]
    if key not in MODEL_SHAPES or "params" not in MODEL_SHAPES[key]:
        key = "HuggingFaceTB/SmolLM2-135M-Instruct"   # tiny: planned as the 135M model (its own cost is negligible)
    s = dict(MODEL_SHAPES[key])
    h, m = s["widths"]
    s["mlp"] = m
    s["linear_params"] = s["layers"] * (4 * h * h + 3 * h * m)   # q,k,v,o (k,v narrower with GQA: an upper bound) + MLP
    s["modules"] = 7 * s["layers"]
    return s


def _bytes_per_weight(profile: Profile) -> int:
    return 4 if profile.precision in ("fp32", "auto") and not profile.needs_cuda else 2


def sft_tokens_per_step(profile: Profile, chat: bool | None = None) -> int:
    """Tokens in one SFT step (batch × padded length): skills rows, or the profile's max_length when chat rows are
    mixed in (a batch is padded to its longest row)."""
    chat = profile.sft_dataset != "skills" if chat is None else chat
    length = profile.max_length if chat else min(profile.max_length, SKILLS_ROW_TOKENS)
    return profile.train_batch_size * profile.grad_accum * length


def dpo_tokens_per_step(profile: Profile) -> int:
    """Tokens of both answers' sequences in one DPO step."""
    length = profile.max_length if profile.preference_dataset != "skills" else min(profile.max_length, SKILLS_PAIR_TOKENS)
    return profile.dpo_batch_size * 2 * length


def sft_training(profile: Profile, steps: int | None = None, what: str = "SFT training", rebuild: bool = False) -> Work:
    n = shape(profile)["params"]
    per_token = FORWARD + BACKWARD_LORA + (FORWARD if profile.gradient_checkpointing else 0)
    steps = profile.sft_steps if steps is None else steps
    return Work(what, flops=per_token * n * sft_tokens_per_step(profile) * steps, decode_steps=steps, rebuild=rebuild)


def dpo_training(profile: Profile, steps: int | None = None, what: str = "DPO training", rebuild: bool = False) -> Work:
    """Policy forward + backward on chosen and rejected, and the reference's forward (the adapter switched off)."""
    n = shape(profile)["params"]
    per_token = FORWARD + BACKWARD_LORA + (FORWARD if profile.gradient_checkpointing else 0) + FORWARD
    steps = profile.dpo_steps if steps is None else steps
    return Work(what, flops=per_token * n * dpo_tokens_per_step(profile) * steps, decode_steps=steps, rebuild=rebuild)


def skills_eval(profile: Profile, what: str = "skills evaluation (289 prompts)", rebuild: bool = False) -> Work:
    n = shape(profile)["params"]
    prompts = profile.n_eval or EVAL_PROMPTS
    batches = math.ceil(prompts / profile.eval_batch_size)
    return Work(what, flops=FORWARD * n * prompts * (EVAL_PROMPT_TOKENS + profile.max_new_tokens),
                decode_steps=batches * profile.max_new_tokens, rebuild=rebuild)


def pair_scoring(profile: Profile, pairs: int = EVAL_PAIRS, length: int | None = None, what: str = "pair scoring") -> Work:
    n = shape(profile)["params"]
    length = length or SKILLS_PAIR_TOKENS
    return Work(what, flops=FORWARD * n * pairs * 2 * length, decode_steps=math.ceil(pairs / 16) * 2)


def perplexity(profile: Profile) -> Work:
    n = shape(profile)["params"]
    return Work("perplexity", flops=FORWARD * n * profile.ppl_max_tokens,
                decode_steps=math.ceil(profile.ppl_max_tokens / profile.ppl_window))


def speed(profile: Profile) -> Work:
    return Work("tokens/s", decode_steps=SPEED_RUNS * profile.max_new_tokens)


def measured_variant(profile: Profile, name: str, with_speed: bool = True, pairs: bool = False) -> list[Work]:
    """helpers.measure: perplexity, the skills evaluation, tokens/s (and preference pairs in 07) of one variant."""
    items = [replace(perplexity(profile), what=f"{name}: perplexity"),
             replace(skills_eval(profile), what=f"{name}: skills evaluation")]
    if with_speed:
        items.append(replace(speed(profile), what=f"{name}: tokens/s"))
    if pairs:
        items.append(replace(pair_scoring(profile), what=f"{name}: preference pairs"))
    return items


def calibration_tokens(profile: Profile) -> int:
    return int(profile.quant_calibration_samples * profile.quant_calibration_chars / CHARS_PER_TOKEN)


def gptq_quantization(profile: Profile, what: str = "GPTQ quantization") -> Work:
    """GPTQModel: each layer run on the calibration tokens before and after it is quantized; per Linear, the Hessian
    (2·T·d_in²) and the column-by-column solve (about 2·d_in²·d_out, in fp32 at a quarter of the 16-bit rate)."""
    s = shape(profile)
    t = calibration_tokens(profile)
    h, m = s["widths"]
    layer_linears = [(h, h)] * 4 + [(h, m)] * 2 + [(m, h)]   # (d_in, d_out)
    hessian = sum(2 * t * d_in ** 2 for d_in, _ in layer_linears)
    solve = 4 * sum(2 * d_in ** 2 * d_out for d_in, d_out in layer_linears)   # fp32: counted 4x
    flops = GPTQ_PASSES * FORWARD * s["linear_params"] * t + s["layers"] * (hessian + solve)
    return Work(what, flops=flops, quant_modules=s["modules"], decode_steps=2 * s["layers"])


def awq_quantization(profile: Profile, clip: bool | None = None, what: str = "AWQ quantization") -> Work:
    """AWQ's scale search: for each of 4 groups per layer, AWQ_GRID forward passes of the group's Linears on the
    calibration tokens; its clipping search (``awq_clip``): AWQ_CLIP_GRID passes of each Linear on 512 tokens."""
    s = shape(profile)
    t = calibration_tokens(profile)
    clip = profile.awq_clip if clip is None else clip
    flops = AWQ_GRID * FORWARD * s["linear_params"] * t + GPTQ_PASSES * FORWARD * s["linear_params"] * t
    if clip:
        flops += AWQ_CLIP_GRID * FORWARD * s["linear_params"] * AWQ_CLIP_TOKENS
    return Work(what, flops=flops, quant_modules=s["modules"], decode_steps=AWQ_GRID * AWQ_GROUPS * s["layers"])


def model_load(profile: Profile, what: str = "load the model", download: bool = False) -> Work:
    s = shape(profile)
    mb = 2 * s["params"] / 1e6 if download and profile.model_source == "hub" else 0.0
    return Work(what, mb_download=mb, seconds=2.0 + s["params"] / 1e9 * 3.0)


def grpo_training(profile: Profile) -> list[Work]:
    """GRPO (notebook 08): per step, one batched generation of prompts × num_generations completions (one decoding
    step per completion token), then the policy's forward and backward on those sequences (and the reference's
    forward when ``beta > 0``)."""
    n = shape(profile)["params"]
    seqs = profile.grpo_prompts_per_step * profile.grpo_num_generations
    tokens = seqs * (EVAL_PROMPT_TOKENS + profile.grpo_max_completion_length)
    per_token = FORWARD + BACKWARD_LORA + (FORWARD if profile.gradient_checkpointing else 0) + (FORWARD if profile.grpo_beta else 0)
    steps = profile.grpo_steps
    return [Work("GRPO: generation", flops=FORWARD * n * tokens * steps,
                 decode_steps=steps * profile.grpo_max_completion_length),
            Work("GRPO: loss and backward", flops=per_token * n * tokens * steps, decode_steps=steps)]


def rebuild_work(profile: Profile, needs: tuple[str, ...]) -> list[Work]:
    """What a fresh runtime rebuilds before the lesson (helpers.pipeline): notebook 01's adapter (SFT training, then
    merged and saved), notebook 02's DPO adapter (its main recipe only), notebook 08's GRPO adapter, each merged and
    saved."""
    items = []
    if "sft" in needs:
        items += [sft_training(profile, what="rebuild: notebook 01's SFT adapter", rebuild=True),
                  replace(model_load(profile), what="rebuild: merge and save the SFT model", rebuild=True)]
    if "dpo" in needs:
        items += [dpo_training(profile, what="rebuild: notebook 02's DPO adapter", rebuild=True),
                  replace(model_load(profile), what="rebuild: merge and save the DPO model", rebuild=True)]
    if "grpo" in needs:
        items += [replace(w, what=f"rebuild: notebook 08's {w.what}", rebuild=True) for w in grpo_training(profile)]
        items += [replace(model_load(profile), what="rebuild: merge and save the GRPO model", rebuild=True)]
    return items


def notebook_work(profile: Profile, notebook: str) -> list[Work]:
    """The work of ``notebook`` on ``profile``, read from the notebook's code (keep in step with it): on a fresh
    runtime, including what it rebuilds (``rebuild=True``) and the first download of the model."""
    p = profile
    hub_pairs = p.preference_dataset != "skills"
    items = [model_load(p, "download and load the model", download=True)]
    if notebook == "01_sft_lora":
        items += [skills_eval(p, "base model: skills evaluation"), sft_training(p),
                  skills_eval(p, "tuned model: skills evaluation")]
    elif notebook == "02_dpo":
        items += rebuild_work(p, NEEDS[notebook])
        pairs_test = p.preference_test_rows if hub_pairs else 0
        items += [model_load(p, "load base and SFT models"),
                  pair_scoring(p, what="SFT: held-out skills pairs"), dpo_training(p),
                  pair_scoring(p, what="DPO: held-out skills pairs")]
        if pairs_test:
            items += [pair_scoring(p, pairs_test, p.max_length, what=f"SFT and DPO: {pairs_test} dataset test pairs"),
                      pair_scoring(p, pairs_test, p.max_length, what="(second model)")]
        items += [skills_eval(p, f"{who}: skills evaluation") for who in ("base", "SFT", "DPO")]
        items += [dpo_training(p, p.dpo_steps, what="section 7: the other DPO recipe"),
                  pair_scoring(p, what="other recipe: held-out skills pairs"),
                  skills_eval(p, "other recipe: skills evaluation"),
                  dpo_training(p, 3, what="section 8: 3 steps at TRL's default learning rate")]
    elif notebook == "03_gptq":
        items += rebuild_work(p, NEEDS[notebook])
        items += [gptq_quantization(p, f"GPTQ w{b}") for b in p.quant_bits]
        items += measured_variant(p, "baseline")
        for b in p.quant_bits:
            items += measured_variant(p, f"RTN w{b}", with_speed=False) + measured_variant(p, f"RTN asym w{b}", with_speed=False)
            items += measured_variant(p, f"GPTQ w{b}")
        for source in p.calibration_sources:
                items += [gptq_quantization(p, f"calibration study: GPTQ on {source} text")]
                items += measured_variant(p, f"GPTQ ({source} calibration)", with_speed=False)
        items += [Work("kernels: GPTQModel's loader", decode_steps=4 * p.max_new_tokens, seconds=10.0)]
    elif notebook == "04_awq":
        items += rebuild_work(p, NEEDS[notebook])
        items += [awq_quantization(p), gptq_quantization(p, "GPTQ (notebook 03's checkpoint, rebuilt)")]
        items += [w for v in ("baseline", "AWQ", "GPTQ") for w in measured_variant(p, v)]
        items += measured_variant(p, "RTN", with_speed=False)
        if not p.awq_clip:
            items += [awq_quantization(p, clip=True, what="AWQ with its clipping search")]
            items += measured_variant(p, "AWQ + clip", with_speed=False)
        for source in p.calibration_sources:
                items += [awq_quantization(p, what=f"calibration study: AWQ on {source} text")]
                items += measured_variant(p, f"AWQ ({source} calibration)")
        items += [Work("kernels: GPTQModel's loader", decode_steps=4 * p.max_new_tokens, seconds=10.0)]
    elif notebook == "05_bitsandbytes_int8_nf4":
        items += rebuild_work(p, NEEDS[notebook])
        for v in ("baseline", "int8", "nf4", "nf4_dq", "fp4"):
            items += [model_load(p, f"{v}: load")] + measured_variant(p, v)
    elif notebook == "06_qlora":
        items += rebuild_work(p, NEEDS[notebook])
        items += [sft_training(p, what="LoRA (scripts/sft.py)"),
                  replace(sft_training(p, what="QLoRA (scripts/sft.py --qlora)"), seconds=0.0),
                  sft_training(p, what="QLoRA from a LoftQ start")]
        items += [skills_eval(p, f"{k}: skills evaluation") for k in ("LoRA", "QLoRA", "QLoRA + LoftQ")]
        items += [dpo_training(p, min(p.dpo_steps, 8), what="DPO on the NF4 SFT model (a few steps)")]
    elif notebook == "07_method_comparison":
        items += rebuild_work(p, NEEDS[notebook])
        if not p.needs_cuda:   # on a GPU runtime 07 takes the GRPO row only from notebook 08 (BUILD_MISSING_GRPO)
            items += rebuild_work(p, ("grpo",))
        items += [gptq_quantization(p, "GPTQ (notebook 03's checkpoint, rebuilt)"),
                  awq_quantization(p, what="AWQ (notebook 04's checkpoint, rebuilt)")]
        for v in ("base", "SFT", "DPO", "GRPO", "GPTQ", "AWQ"):
            items += [model_load(p, f"{v}: load")] + measured_variant(p, v, pairs=True)
        for v in ("RTN", "GGUF Q4_0", "GGUF Q4_1", "GGUF Q8_0"):
            items += [model_load(p, f"{v}: load")] + measured_variant(p, v, with_speed=False, pairs=True)
        items += [replace(skills_eval(p), what=f"serving check: {v} reloaded", flops=0.0,
                          decode_steps=p.max_new_tokens) for v in ("merged", "GPTQ", "AWQ")]
    elif notebook == "08_grpo":
        items += rebuild_work(p, NEEDS[notebook])
        items += [model_load(p, "load the SFT model")] + grpo_training(p)
        items += [skills_eval(p, f"{who}: skills evaluation") for who in ("SFT", "SFT -> DPO", "SFT -> GRPO")]
    else:
        raise ValueError(f"Unknown notebook {notebook!r}; one of {', '.join(NOTEBOOKS)}.")
    return items


def seconds_of(work: Work, profile: Profile, device: Device) -> float:
    """Seconds of one piece of work on ``device``: matrix products at the effective rate, decoding steps at the
    larger of the weights' read time and the per-step overhead, downloads at the device's rate, fixed seconds."""
    weights_gb = _bytes_per_weight(profile) * shape(profile)["params"] / 1e9
    per_step = max(device.step_overhead_s, weights_gb / device.bandwidth_gbs)
    download = work.mb_download / device.download_mbs if work.mb_download and device.download_mbs else 0.0
    return (work.flops / (device.matmul_tflops * 1e12) + work.decode_steps * per_step + download + work.seconds
            + work.quant_modules * device.quant_layer_overhead_s)


def notebook_memory_gb(profile: Profile, notebook: str) -> dict[str, float]:
    """Peak GPU memory (GB) of each phase of ``notebook``; ``"peak"`` is the largest.

    Phases: SFT training (:func:`helpers.profiles.training_memory_gb`); DPO training (one copy of the weights, the
    reference being the adapter switched off; activations of chosen and rejected; their logits in 16 bits plus an
    fp32 log-softmax); scoring pairs (16 pairs at a time, logits in fp32 chunks of helpers.dpo); evaluation and
    perplexity (one window's logits); and the models a notebook holds at once (02: base, SFT and the DPO adapter;
    07: one variant at a time).
    """
    from .profiles import training_memory_gb

    s = shape(profile)
    b = 2  # 16-bit weights on GPUs
    weights = b * s["params"] / 1e9
    context = 0.5
    sft = training_memory_gb(profile)["total"]
    dpo_seqs = 2 * profile.dpo_batch_size
    dpo_len = profile.max_length
    per_layer = 34 * dpo_seqs * dpo_len * s["hidden"]
    acts = (s["layers"] * 2 * dpo_seqs * dpo_len * s["hidden"] + per_layer) if profile.gradient_checkpointing else s["layers"] * per_layer
    dpo_logits = dpo_seqs * dpo_len * s["vocab"] * (2 + 4 + 4)   # 16-bit logits, fp32 log-softmax and its gradient
    lora = 0.01 * s["params"] * 16
    dpo = weights + (lora + acts + dpo_logits) / 1e9 + context
    scoring_len = profile.max_length
    score = weights + 16 * scoring_len * s["vocab"] * 4 / 1e9 * 0.25 + context   # fp32 log-softmax in 4 chunks
    ppl = weights + profile.ppl_window * s["vocab"] * (2 + 4) / 1e9 + context
    held = {"02_dpo": 2, "06_qlora": 2}.get(notebook, 1)
    phases = {"SFT training": sft if notebook in ("01_sft_lora", "06_qlora") or NEEDS.get(notebook) else 0.0,
              "DPO training": dpo + (held - 1) * weights if notebook == "02_dpo" or "dpo" in NEEDS.get(notebook, ()) else 0.0,
              "scoring pairs": score + (held - 1) * weights if notebook in ("02_dpo", "07_method_comparison") else 0.0,
              "evaluation and perplexity": ppl + (held - 1) * weights}
    if notebook == "08_grpo" or (notebook == "07_method_comparison" and not profile.needs_cuda):
        seqs = profile.grpo_prompts_per_step * profile.grpo_num_generations
        length = EVAL_PROMPT_TOKENS + profile.grpo_max_completion_length
        grpo_acts = s["layers"] * 34 * seqs * length * s["hidden"] / (8 if profile.gradient_checkpointing else 1)
        phases["GRPO training"] = weights + (lora + grpo_acts + seqs * length * s["vocab"] * (2 + 4 + 4)) / 1e9 + context
    if notebook in ("03_gptq", "04_awq", "07_method_comparison"):
        t = calibration_tokens(profile)
        phases["quantization"] = weights + (t * s["hidden"] * 4 * 4 + s["mlp"] ** 2 * 4 * 2) / 1e9 + context
    phases["peak"] = max(phases.values())
    return phases


def estimate(profile: Profile, notebook: str, device: Device | None = None, fresh_runtime: bool = True,
             install: bool = True) -> Estimate:
    """Seconds and peak memory of ``notebook`` on ``profile``. ``fresh_runtime``: earlier notebooks' artifacts are
    rebuilt (a new Colab runtime without Drive); False: they are reused (kept on Drive, or made earlier in this
    runtime). The install is counted when ``install`` and the device has one."""
    device = device or DEVICES[_device_key(profile)]
    items, total, rebuild = [], 0.0, 0.0
    for work in notebook_work(profile, notebook):
        if work.rebuild and not fresh_runtime:
            continue
        s = seconds_of(work, profile, device)
        items.append((work.what, s))
        total += s
        rebuild += s if work.rebuild else 0.0
    if install and device.install_s:
        items.insert(0, ("install", device.install_s))
        total += device.install_s
    return Estimate(notebook, profile.name, device.name, total, notebook_memory_gb(profile, notebook)["peak"], items,
                    rebuild, device.measured)


def _device_key(profile: Profile) -> str:
    key = profile.name.removeprefix("tiny_")
    if key not in DEVICES:
        raise ValueError(f"No device rates for profile {profile.name!r}: pass device=cpu_device(measured GFLOP/s).")
    return key


def plan(profile_names=("t4", "l4", "a100"), fresh_runtime: bool = True) -> list[Estimate]:
    """Every notebook on every GPU profile: the table the README shows."""
    return [estimate(PROFILES[name], nb, fresh_runtime=fresh_runtime) for name in profile_names for nb in NOTEBOOKS]


def budget_line(notebook: str, profile_names=("t4", "l4", "a100")) -> str:
    """One line for a notebook's budget: the estimate on each GPU profile, fresh runtime and with Drive (the
    notebooks' "On a GPU" line, written by scripts/sync_estimates.py)."""
    parts = []
    for name in profile_names:
        fresh = estimate(PROFILES[name], notebook)
        kept = estimate(PROFILES[name], notebook, fresh_runtime=False)
        parts.append(f"`{name}` about {fresh.minutes:.0f} min on a fresh runtime"
                     + (f" ({kept.minutes:.0f} with artifacts kept on Drive)" if fresh.rebuild_seconds else "")
                     + f", peak {fresh.memory_gb:.0f} GB")
    return "; ".join(parts) + "."


def notebooks() -> tuple[str, ...]:
    """The notebooks the cost model plans (every numbered notebook of the course)."""
    return NOTEBOOKS


__all__ = ["Device", "DEVICES", "Work", "Estimate", "NOTEBOOKS", "NEEDS", "TIME_LIMIT_S", "cpu_device",
           "notebook_work", "notebook_memory_gb", "seconds_of", "estimate", "plan", "budget_line", "notebooks", "shape",
           "rebuild_note", "rebuild_minutes",
           "sft_tokens_per_step", "dpo_tokens_per_step", "calibration_tokens"]


def rebuild_minutes(profile: Profile, what: str) -> tuple[float, str]:
    """Minutes to rebuild an earlier notebook's model (``what``: "sft", "dpo" or "grpo") on this profile, estimated
    (on a CPU from the matrix-product rate measured now), and where the rates come from."""
    if profile.needs_cuda:
        device = DEVICES[_device_key(profile)]
    else:
        from .hardware import matmul_gflops

        device = cpu_device(matmul_gflops("bf16" if profile.precision == "bf16" else "fp32"))
    return sum(seconds_of(w, profile, device) for w in rebuild_work(profile, (what,))) / 60, device.source


def rebuild_note(profile: Profile, what: str, doing: str = "Rebuilding") -> str:
    """The line a notebook prints before it rebuilds an earlier notebook's model (``what``: "sft", "dpo" or "grpo"):
    what, and about how long on this profile (:func:`rebuild_minutes`). ``doing``: "Rebuilding", or "Building" for
    a model the notebook does not build unless asked."""
    label = {"sft": "notebook 01's SFT adapter", "dpo": "notebook 02's DPO adapter",
             "grpo": "notebook 08's GRPO adapter"}[what]
    if profile.model_source == "tiny":
        return f"{doing} {label} (the tiny model: seconds)."
    minutes, source = rebuild_minutes(profile, what)
    keep = (" To skip this on the next runtime, keep the course's artifacts on Google Drive (the setup cell's "
            "opt-in)." if profile.needs_cuda else "")
    return (f"{doing} {label} with its notebook's recipe: about {max(minutes, 0.1):.1f} min on this machine "
            f"(estimated by helpers.cost, {source}).{keep}")
