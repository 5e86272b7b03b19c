"""Shared helpers for the course notebooks.

Typical first cell of a notebook::

    from helpers import setup
    profile = setup("01_sft_lora")

Modules, one job each: ``profiles`` (hardware profile), ``hardware`` (CPU precision), ``colab`` (the setup cell's
install), ``models`` (load model/tokenizer), ``skills`` (the synthetic dataset and its checker), ``data`` (loaders and
normalisers), ``evaluation`` (generation, skill accuracy, perplexity), ``training`` (SFT configs and what every trainer
needs on the student's hardware), ``dpo`` (pairs, scoring, DPO config), ``quant`` and ``bnb`` (tested copies of the
quantization miniatures, GPTQModel), ``qlora``, ``artifacts`` (the manifest rule), ``pipeline`` (every artifact a
later notebook needs), ``isolated``, ``processes`` and ``forkserver`` (runs in a fresh process), ``measure`` (one
harness for every variant), ``comparison`` (models side by side, notebook 07's table), ``plots``, ``results`` (the
results contract), ``text`` (offline text), ``paths``.
"""

from __future__ import annotations

import logging
import os
import random
import warnings

from .profiles import Profile, get_profile

__all__ = ["Profile", "get_profile", "setup", "quiet", "seed_everything"]


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so that runs on one machine repeat."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def quiet() -> None:
    """Silence library warnings that say nothing actionable to a student (version notices, casts)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for pattern in (
        ".*MatMul8bitLt: inputs will be cast.*",
        ".*generation flags are not valid.*",
        ".*torch_dtype.*deprecated.*",
        ".*is an Enum subclass.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("transformers.generation.utils", "transformers.modeling_utils", "torchao",
                 "torch.utils._pytree", "bitsandbytes", "bitsandbytes.backends.cpu.ops", "tokenicer",
                 "tokenicer.tokenicer", "accelerate.utils.modeling", "transformers.distributed.tensor_parallel"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_gptqmodel()
    try:
        import pandas as pd

        pd.set_option("display.max_colwidth", 90)
        pd.set_option("display.width", 200)
    except ImportError:  # pragma: no cover
        pass


def quiet_gptqmodel() -> None:
    """Import GPTQModel once, with its start-up banner and notices swallowed.

    PEFT imports GPTQModel whenever it is installed, even to add a LoRA adapter to a plain model, and GPTQModel
    prints a logo, version table, a note about Python's GIL and the environment variables it sets. None of that is
    about the lesson. Its own log level then stays at warnings (:func:`helpers.quant.configure_gptqmodel`)."""
    import contextlib
    import importlib.util
    import io
    import sys

    if "gptqmodel" in sys.modules or importlib.util.find_spec("gptqmodel") is None:
        return
    os.environ.setdefault("GPTQMODEL_DISABLE_GIL_WARNING", "1")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from .quant import configure_gptqmodel

        configure_gptqmodel()


def setup(notebook: str, seed: int = 0, profile: Profile | None = None) -> Profile:
    """Pick the profile (or take ``profile``, as a child process does), seed everything, silence noise and print
    what runs and why.

    On the offline profiles (``tiny``, ``cpu``) it also switches the Hugging Face Hub off, so nothing
    tries the network.
    """
    profile = profile or get_profile()
    os.environ["COURSE_NOTEBOOK"] = notebook  # child processes (helpers.isolated) record who started them
    from .results import start_clock

    start_clock(notebook)  # write_results() records the notebook's time since here
    if not profile.needs_cuda:
        # tiny/cpu run offline by design: no Hub calls (set before transformers is imported by the notebook).
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(var, "1")
    quiet()
    seed_everything(seed)
    print(f"[{notebook}] {profile.summary()}")
    return profile
