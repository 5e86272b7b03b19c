"""The results contract: ``results/<notebook>.json`` files that notebook 07 and the README read.

Schema::

    {"notebook": str, "profile": str, "model": str, "wall_seconds": float, "n_eval": int,
     "variants": {variant_name: {metric: number}}, "extra": {...optional free-form...}}

Metric names come from one vocabulary, :data:`METRICS`; an unknown name is an error.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from .paths import results_dir

METRICS: dict[str, str] = {
    "skill_accuracy": "fraction of held-out skill prompts answered exactly right (0-1)",
    "preference_accuracy": "fraction of held-out pairs where the implicit reward ranks chosen above rejected (0-1)",
    "perplexity": "exp(mean token NLL) on the held-out text",
    "size_mb": "size on disk, MB (1e6 bytes)",
    "footprint_mb": "memory taken by the weights, MB",
    "load_seconds": "time to load the model, s",
    "tokens_per_second": "generation throughput, tokens/s",
    "train_seconds": "wall time of training or quantization, s",
    "peak_rss_mb": "peak resident memory of the process, MB",
    "peak_cuda_mb": "peak CUDA memory allocated by torch during the run, MB (GPU profiles)",
}
REQUIRED_KEYS = ("notebook", "profile", "model", "wall_seconds", "n_eval", "variants")


class ResultsError(ValueError):
    """A results file or record that does not follow the contract; the message names the file (or the value) and
    what to do."""


WRITE_FIX = "; nothing was written. Fix the measurement before recording it."   # ends a refused value's message


# The values each metric can take: (lowest, highest), both included.
RANGES: dict[str, tuple[float, float]] = {
    "skill_accuracy": (0.0, 1.0), "preference_accuracy": (0.0, 1.0), "perplexity": (1.0, math.inf),
    "size_mb": (0.0, math.inf), "footprint_mb": (0.0, math.inf), "load_seconds": (0.0, math.inf),
    "tokens_per_second": (0.0, math.inf), "train_seconds": (0.0, math.inf), "peak_rss_mb": (0.0, math.inf),
    "peak_cuda_mb": (0.0, math.inf),
}


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (Python, numpy or a one-element torch tensor), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1:
        return _number(value.item())
    return None


def validate(record: Mapping[str, Any]) -> None:
    """Raise :class:`ResultsError` unless ``record`` follows the contract: known metric names, and every value a
    finite number inside its metric's range (an accuracy of 1.7, an infinite or NaN perplexity are refused)."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ResultsError(f"Results record is missing {missing}; required keys: {list(REQUIRED_KEYS)}. Write records "
                           "with write_results(), which fills them.")
    wall, n_eval = _number(record["wall_seconds"]), record["n_eval"]
    if wall is None or not 0 <= wall < math.inf:
        raise ResultsError(f"wall_seconds must be a finite number of seconds, 0 or more; got {record['wall_seconds']!r}. "
                           "Leave wall_seconds out: write_results() measures it from setup().")
    if isinstance(n_eval, bool) or not isinstance(n_eval, numbers.Integral) or n_eval < 0:
        raise ResultsError(f"n_eval must be the number of evaluation prompts (a whole number), got {n_eval!r}. Pass "
                           "len(eval_rows), or 0 when the notebook evaluated no prompts.")
    variants = record["variants"]
    if not isinstance(variants, Mapping) or not variants:
        raise ResultsError("Results record has no variants: give at least one {variant: {metric: value}}.")
    for name, metrics in variants.items():
        if not isinstance(metrics, Mapping):
            raise ResultsError(f"Variant '{name}' must map metric names to numbers, got {type(metrics).__name__}.")
        for metric, value in metrics.items():
            if metric not in METRICS:
                raise ResultsError(
                    f"Unknown metric '{metric}' in variant '{name}'. Valid metrics: {', '.join(METRICS)}; use one of "
                    "them, or put other numbers in extra={...}."
                )
            if value is None:
                continue
            number = _number(value)
            if number is None:
                raise ResultsError(f"Metric '{metric}' of variant '{name}' must be a number, got {value!r}. Pass a "
                                   "number (float(value)), or None when it was not measured.")
            low, high = RANGES[metric]
            if not math.isfinite(number) or not low <= number <= high:
                raise ResultsError(
                    f"Metric '{metric}' of variant '{name}' is {number!r}, outside its range [{low}, {high}] "
                    f"({METRICS[metric]}): the measurement went wrong (a NaN or infinite loss, a count used as a "
                    f"fraction){WRITE_FIX}"
                )


def runtime(profile=None) -> dict[str, Any]:
    """Where and how a notebook ran: device, precision and why, CPU model, torch version, and on CUDA the
    process's peak CUDA memory so far. Every results file carries it (``extra.runtime``)."""
    import torch

    from .hardware import cpu_model

    info: dict[str, Any] = {"cpu": cpu_model(), "torch": torch.__version__}
    if profile is not None and not isinstance(profile, str):
        info.update(device=profile.device, precision=profile.precision, precision_reason=profile.precision_reason)
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), peak_cuda_mb=round(peak_cuda_mb(), 1))
    return info


_PEAK_BEFORE_RESETS = 0  # bytes: the largest CUDA peak seen before any reset_variant_peak() in this process


def reset_variant_peak() -> None:
    """Start a new per-variant peak of CUDA memory (:mod:`helpers.measure` measures each variant's own) without
    losing the process's: the peak so far is folded into :func:`peak_cuda_mb` before torch's counter is reset."""
    import torch

    global _PEAK_BEFORE_RESETS
    _PEAK_BEFORE_RESETS = max(_PEAK_BEFORE_RESETS, torch.cuda.max_memory_allocated())
    torch.cuda.reset_peak_memory_stats()


def peak_cuda_mb() -> float | None:
    """Peak CUDA memory torch allocated in this process (the notebook's kernel) since it started, MB, across the
    per-variant resets of :func:`reset_variant_peak`; ``None`` without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return max(_PEAK_BEFORE_RESETS, torch.cuda.max_memory_allocated()) / 1e6


def weights_id(weights) -> str:
    """What identifies a model's weights in a results file: a model folder's content hash
    (:func:`helpers.paths.fingerprint`), a profile's base model (:func:`helpers.model_cache.base_fingerprint`), or a
    text that already is one (a string naming no folder)."""
    from .profiles import Profile

    if isinstance(weights, Profile):
        from .model_cache import base_fingerprint

        return base_fingerprint(weights)
    if isinstance(weights, Path) or Path(str(weights)).is_dir():
        from .paths import fingerprint

        return fingerprint(weights)
    return str(weights)


def write_results(
    notebook: str,
    profile,
    variants: Mapping[str, Mapping[str, float]],
    *,
    n_eval: int,
    extra: Mapping[str, Any] | None = None,
    model: str | None = None,
    wall_seconds: float | None = None,
    folder: Path | None = None,
    model_dir: str | Path | None = None,
    variant_weights: Mapping[str, Any] | None = None,
) -> Path:
    """Validate and write ``results/<notebook>.json`` atomically; return its path.

    ``variants``: ``{variant: {metric: value}}`` (:data:`METRICS`); ``n_eval``: how many held-out prompts each accuracy
    is over. ``profile`` is the :class:`~helpers.profiles.Profile` the notebook ran with (or its name): the file records
    its name, its model (unless ``model`` names another), and :func:`runtime` (device, precision and why) in
    ``extra.runtime``. ``wall_seconds``: the notebook's time, by default since its ``setup()``. When ``extra`` holds
    per-prompt ``outcomes``, the file also records each variant's 95% accuracy interval
    (:func:`helpers.comparison.accuracy_intervals`), which the README's table shows.

    ``model_dir``: the model folder the variants were measured on (or made from); ``variant_weights``: the folder of a
    variant measured on other weights (the profile itself for its base model). The file records which weights they
    were (:func:`weights_id`, as ``extra.model_fingerprint`` and ``extra.variant_fingerprints``), so that a later
    notebook reuses a row only for the same weights (:func:`helpers.comparison.measured_before`)."""
    from .profiles import Profile

    if not isinstance(profile, (str, Profile)):
        raise ResultsError(f"write_results() needs the Profile the notebook ran with (or its name), got {profile!r:.60}. "
                           "Pass the profile setup() returned.")
    if isinstance(variants, str):   # the order before variants came third: (notebook, profile, model, seconds, n, variants)
        raise ResultsError(f"write_results() got the text {variants!r:.40} where the variants go. Pass them third: "
                           "write_results(notebook, profile, variants, n_eval=..., extra=...); the model is the profile's "
                           "unless model= names another, and the time is measured from setup().")
    if model is None:
        if not isinstance(profile, Profile):
            raise ResultsError(f"write_results() got the profile's name {profile!r}, not the Profile: pass model= too.")
        model = profile.model_id
    if wall_seconds is None:
        wall_seconds = seconds_since_setup(notebook)
    if extra and "outcomes" in extra and "accuracy_intervals" not in extra:
        from .stats import accuracy_intervals

        extra = {**extra, "accuracy_intervals": accuracy_intervals(extra["outcomes"])}
    probe = {"notebook": notebook, "profile": "", "model": model, "wall_seconds": wall_seconds, "n_eval": n_eval,
             "variants": variants}
    validate(probe)  # before anything is rounded or written
    record = {
        "notebook": notebook,
        "profile": profile if isinstance(profile, str) else profile.name,
        "model": model,
        "wall_seconds": round(_number(wall_seconds), 1),
        "n_eval": int(n_eval),
        "variants": {k: {m: _rounded(v) for m, v in d.items() if v is not None}
                     for k, d in variants.items()},  # None = not measured here (e.g. peak CUDA memory on a CPU): left out
        "extra": {"python": platform.python_version(), "written": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "runtime": runtime(profile), **(extra or {}),
                  **({"model_fingerprint": weights_id(model_dir)} if model_dir is not None else {}),
                  **({"variant_fingerprints": {k: weights_id(v) for k, v in variant_weights.items()}} if variant_weights else {})},
    }
    validate(record)
    folder = folder or results_dir()
    path = folder / f"{notebook}.json"
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=2, allow_nan=False, default=_plain)
            handle.write("\n")
        os.replace(tmp, path)
    except (TypeError, ValueError) as exc:  # NaN, infinity or an object JSON cannot hold, inside ``extra``
        raise ResultsError(f"results/{notebook}.json was not written: {exc}. Its 'extra' may hold only text, finite "
                           "numbers, lists and dicts: convert other values (str(value), float(value)) or leave them out.") from exc
    finally:
        if os.path.exists(tmp):  # the write failed: leave no temporary file behind
            os.unlink(tmp)
    return path


def _plain(value: Any) -> float:
    """JSON's fallback for numpy and torch scalars in ``extra``; anything else is refused."""
    number = _number(value)
    if number is None:
        raise TypeError(f"{type(value).__name__} {value!r:.40} is not JSON")
    return number


def _rounded(value: Any) -> float | int:
    """A metric as plain JSON: numpy and torch scalars become Python numbers, floats keep six decimals."""
    number = _number(value)
    return number if isinstance(value, int) and not isinstance(value, bool) else round(number, 6)


def read_results(notebook: str, folder: Path | None = None) -> dict[str, Any] | None:
    """The validated record of ``notebook``, or ``None`` when that notebook has not written one."""
    path = (folder or results_dir()) / f"{notebook}.json"
    if not path.is_file():
        return None
    rerun = f"Delete it and run notebook {notebook} again (it writes a new one), or restore it from git."
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path} is not valid JSON ({getattr(exc, 'msg', exc)}). {rerun}") from exc
    if not isinstance(record, dict):
        raise ResultsError(f"{path} holds a JSON {type(record).__name__}, not a results record (an object with "
                           f"{', '.join(REQUIRED_KEYS)}). {rerun}")
    try:
        validate(record)
        extra = record.get("extra", {})
        if not isinstance(extra, Mapping):
            raise ResultsError(f"'extra' must be an object of named values, got {type(extra).__name__}; write it as "
                               "a dict (write_results(..., extra={...})).")
    except ResultsError as exc:   # the file on disk is named, and what to do about it
        raise ResultsError(f"{path}: {str(exc).removesuffix(WRITE_FIX).rstrip('.')}. {rerun}") from None
    return record


_SETUP_AT: dict[str, float] = {}   # notebook -> time.perf_counter() when setup() ran


def start_clock(notebook: str) -> None:
    """Start ``notebook``'s wall clock (``setup()`` does): :func:`write_results` records the time since."""
    _SETUP_AT[notebook] = time.perf_counter()


def seconds_since_setup(notebook: str) -> float:
    """Seconds since ``setup(notebook)`` ran in this process."""
    if notebook not in _SETUP_AT:
        raise ResultsError(f"No clock for {notebook}: run setup({notebook!r}) at the top of the notebook (it starts "
                           "the clock), or pass wall_seconds= to write_results().")
    return time.perf_counter() - _SETUP_AT[notebook]


def peak_memory_mb() -> dict[str, float | None]:
    """The run's peak memory so far, as results metrics: ``peak_rss_mb`` (:func:`peak_rss_mb`) and ``peak_cuda_mb``
    (:func:`peak_cuda_mb`, ``None`` without CUDA: :func:`write_results` leaves it out)."""
    return {"peak_rss_mb": peak_rss_mb(), "peak_cuda_mb": peak_cuda_mb()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux/macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


UNITS = {"skill_accuracy": "skill acc.", "preference_accuracy": "pref. acc.", "perplexity": "perplexity",
         "size_mb": "size (MB)", "footprint_mb": "memory (MB)", "load_seconds": "load (s)",
         "tokens_per_second": "tokens/s", "train_seconds": "train/quant (s)", "peak_rss_mb": "peak RSS (MB)",
         "peak_cuda_mb": "peak CUDA (MB)"}


def results_markdown(folder: Path) -> str:
    """A Markdown table of every ``<notebook>.json`` in ``folder``: one row per variant, one column per metric.

    The README's results section is this text verbatim (``python scripts/update_readme.py``), and a
    test checks that they agree, so every number in the README comes from a results file.
    """
    records = [read_results(path.stem, folder) for path in sorted(folder.glob("[0-9][0-9]_*.json"))]
    if not records:
        return "_No results yet: run `make run`._\n"
    used = [m for m in METRICS if any(m in v for r in records for v in r["variants"].values())]
    header = ["notebook", "profile", "variant"] + [UNITS[m] for m in used]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        intervals = r.get("extra", {}).get("accuracy_intervals", {})
        for name, metrics in r["variants"].items():
            cells = [r["notebook"], r["profile"], name] + [_fmt(m, metrics.get(m)) for m in used]
            if name in intervals and "skill_accuracy" in used:  # the skill accuracy's 95% interval, where recorded
                low, high = intervals[name]
                cells[3 + used.index("skill_accuracy")] += f" ({100 * low:.1f}–{100 * high:.1f})"
            lines.append("| " + " | ".join(cells) + " |")
    notes = [f"`{r['notebook']}`: n_eval = {r['n_eval']}, {_precision(r)}notebook wall time {r['wall_seconds']:.0f} s"
             for r in records]
    return ("\n".join(lines) + "\n\nSkill accuracy in brackets: its 95% interval (Wilson), where the notebook recorded "
            "per-prompt outcomes; differences between variants, with their own intervals, are in each results file's "
            "`extra.comparisons`.\n\n" + "; ".join(notes) + ".\n" + run_times_markdown(folder))


def run_times_markdown(folder: Path) -> str:
    """The per-notebook wall times that ``make run`` recorded in ``course_run_times.json``, as a table."""
    path = folder / "course_run_times.json"
    if not path.is_file():
        return ""
    times = json.loads(path.read_text())
    runs = sorted(times)
    notebooks = sorted({name for recs in times.values() for name in recs})
    lines = ["", "Wall time of each notebook under `make run` (`results/course_run_times.json`), in seconds, per profile",
             "and the precision it ran in (bf16 on CPUs with native bf16, fp32 on others):", "",
             "| notebook | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for name in notebooks:
        cells = [times[r].get(name) for r in runs]
        lines.append(f"| {name} | " + " | ".join("–" if c is None else f"{c['seconds']:.0f}"
                                                   + ("" if c["status"] == "ok" else f" ({c['status']})")
                                                   + (" (r)" if c.get("reused_from_earlier_runs") else "")
                                                   for c in cells) + " |")
    totals = [sum(c["seconds"] for c in times[r].values()) for r in runs]
    lines.append("| **all** | " + " | ".join(f"**{t:.0f}** ({t / 60:.1f} min)" for t in totals) + " |")
    lines.append("")
    for r in runs:
        dates = sorted({c.get("date", "?") for c in times[r].values()})
        cpus = sorted({c.get("cpu", "?") for c in times[r].values()})
        rates = {}   # the matrix-product rate measured just before each notebook: the yardstick to scale by
        for c in times[r].values():
            for kind, value in (c.get("matmul_gflops") or {}).items():
                rates.setdefault(kind, []).append(value)
        measured = "; matrix products measured before each notebook: " + ", ".join(
            f"{kind} {min(v):,.0f}-{max(v):,.0f} GFLOP/s" for kind, v in sorted(rates.items())) if rates else \
            "; matrix-product rate not recorded for this run"
        lines.append(f"- `{r}`: {', '.join(dates)}; {'; '.join(cpus)}{measured}")
    reused = {(r, name): c["reused_from_earlier_runs"] for r in runs for name, c in times[r].items()
              if c.get("reused_from_earlier_runs")}
    if reused:
        lines += ["", "(r): the notebook reused what an earlier run had made with the same inputs, so making it is not in "
                  "this time (a quantized checkpoint records the seconds it took: the results file's `train_seconds`):"]
        lines += [f"- {r} {name}: {_reused_summary(items)}" for (r, name), items in reused.items()]
    lines += ["", "To scale a time to your machine, divide by the ratio of your rate to the one measured here "
              "(`make bench` measures it); the matrix products are not the only work, so this is a first guess."]
    return "\n".join(lines) + "\n"


def _reused_summary(items: list[str]) -> str:
    """``["GPTQ w4 checkpoint (made by 03_gptq, ...)", ...]`` as "4 GPTQ checkpoints, merged model 'dpo_merged'"."""
    import re
    from collections import Counter

    kinds = Counter(re.sub(r" w\d+ checkpoint", " checkpoint", item.split(" (made by")[0]) for item in items)
    return ", ".join(f"{n} {kind}s" if n > 1 else kind for kind, n in kinds.items())


def _precision(record: Mapping[str, Any]) -> str:
    """"precision bf16, " from a results file's ``extra.runtime`` (files written before it was recorded: "")."""
    precision = record.get("extra", {}).get("runtime", {}).get("precision")
    return f"precision {precision}, " if precision else ""


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    if metric.endswith("accuracy"):
        return f"{value:.1%}"
    if metric == "perplexity":
        return f"{value:.2f}"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
