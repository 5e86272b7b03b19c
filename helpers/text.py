"""Plain English text that exists offline on every machine: Python standard-library docstrings.

Perplexity evaluation and quantization calibration need text that was not used for training
and that needs no download. The docstrings of the standard library are such a text. The
evaluation and calibration texts come from *disjoint* module lists, so a quantizer calibrated
on one is measured on the other. Docstrings differ a little between Python versions; results
files record the Python version.
"""

from __future__ import annotations

import importlib
import inspect
import re

EVAL_MODULES = (
    "argparse", "collections", "json", "logging", "pathlib", "subprocess", "textwrap", "typing",
    "unittest", "datetime", "decimal", "fractions", "heapq", "inspect", "pickle", "threading",
)
CALIBRATION_MODULES = (
    "asyncio", "email.message", "http.client", "random", "statistics", "string", "itertools",
    "functools", "shutil", "tarfile", "zipfile", "csv", "socket", "urllib.parse", "os", "calendar",
)


def _docstrings(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    docs = [inspect.getdoc(module) or ""]
    for name in sorted(vars(module)):
        obj = getattr(module, name)
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            docs.append(inspect.getdoc(obj) or "")
            if inspect.isclass(obj):
                for attr in sorted(vars(obj)):
                    member = vars(obj)[attr]
                    if not attr.startswith("_") and inspect.isfunction(member):
                        docs.append(inspect.getdoc(member) or "")
    # Keep prose paragraphs: drop doctest lines and very short fragments.
    cleaned = []
    for doc in docs:
        lines = [ln for ln in doc.splitlines() if not ln.lstrip().startswith((">>>", "..."))]
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        if len(text) >= 80:
            cleaned.append(text)
    return cleaned


def stdlib_text(split: str = "eval", max_chars: int | None = None) -> str:
    """The held-out (``split="eval"``) or calibration (``split="calibration"``) docstring text."""
    modules = {"eval": EVAL_MODULES, "calibration": CALIBRATION_MODULES}.get(split)
    if modules is None:
        raise ValueError(f"Unknown text split '{split}'; use 'eval' or 'calibration'.")
    text = "\n\n".join(doc for m in modules for doc in _docstrings(m))
    return text[:max_chars] if max_chars else text


def stdlib_samples(split: str = "calibration", n: int = 128, min_chars: int = 200) -> list[str]:
    """``n`` separate docstring passages (at least ``min_chars`` long) for quantization calibration."""
    modules = {"eval": EVAL_MODULES, "calibration": CALIBRATION_MODULES}.get(split)
    if modules is None:
        raise ValueError(f"Unknown text split '{split}'; use 'eval' or 'calibration'.")
    docs = [d for m in modules for d in _docstrings(m) if len(d) >= min_chars]
    return docs[:n]


WIKITEXT = "Salesforce/wikitext"  # the Hub's namespaced id (the bare "wikitext" is a legacy alias)


def perplexity_text(profile_text: str, max_chars: int | None = None) -> str:
    """The perplexity text named by a profile: ``"stdlib"`` offline, ``"wikitext"`` (WikiText-2 test) on GPU."""
    if profile_text == "stdlib":
        return stdlib_text("eval", max_chars)
    if profile_text == "wikitext":
        from datasets import load_dataset

        rows = load_dataset(WIKITEXT, "wikitext-2-raw-v1", split="test")["text"]
        text = "".join(rows)
        return text[:max_chars] if max_chars else text
    raise ValueError(f"Unknown perplexity text '{profile_text}'; use 'stdlib' or 'wikitext'.")
