"""Comparing models: their answers side by side and per skill (every notebook), and notebook 07's table of every
method (earlier results collected, one table with units, the trade-offs plotted)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from .evaluation import SkillReport
from .paths import results_dir
from .results import UNITS, read_results

# metric -> column name with its unit: the results vocabulary's labels, accuracies shown in %
COLUMNS = {m: f"{label} (%)" if m.endswith("accuracy") else label for m, label in UNITS.items()}



def side_by_side(reports: Mapping[str, SkillReport], n: int | None = 12, per_skill: bool = True) -> pd.DataFrame:
    """A DataFrame with one row per prompt and, for each model, its answer and a ✓/✗ column.

    ``reports`` maps a model name (``"base"``, ``"sft_lora"``) to a :class:`SkillReport` computed on
    the same evaluation rows. With ``per_skill`` the ``n`` rows are spread over the skills.
    """
    if not reports:
        raise ValueError("side_by_side() needs at least one report.")
    names = list(reports)
    first = reports[names[0]].rows
    for name in names[1:]:
        if [r["prompt"] for r in reports[name].rows] != [r["prompt"] for r in first]:
            raise ValueError(f"Report '{name}' was computed on different prompts than '{names[0]}'.")
    index = list(range(len(first)))
    if n is not None and n < len(first):
        if per_skill:
            skills = sorted({r["skill"] for r in first})
            buckets = {s: [i for i in index if first[i]["skill"] == s] for s in skills}
            index = []
            k = 0
            while len(index) < n:
                bucket = buckets[skills[k % len(skills)]]
                depth = k // len(skills)
                if depth < len(bucket):
                    index.append(bucket[depth])
                k += 1
                if k > n * len(skills) + len(first):
                    break
        else:
            index = index[:n]
    table = {"skill": [first[i]["skill"] for i in index], "prompt": [first[i]["prompt"] for i in index],
             "expected": [first[i]["answer"] for i in index]}
    for name in names:
        rows = reports[name].rows
        table[name] = [rows[i]["response"] for i in index]
        table[f"{name} ✓"] = ["✓" if rows[i]["correct"] else "✗" for i in index]
    return pd.DataFrame(table)


def accuracy_table(reports: Mapping[str, SkillReport]) -> pd.DataFrame:
    """Accuracy per skill (rows) and model (columns), with an 'all' row; also the lenient mention rate."""
    data = {name: {**rep.per_skill, "all (exact)": rep.accuracy, "all (mentions answer)": rep.mention_rate}
            for name, rep in reports.items()}
    return pd.DataFrame(data).round(3)

def earlier_results(profile_name: str, folder: Path | None = None) -> pd.DataFrame:
    """Every variant of every ``results/NN_*.json`` (notebooks 01-06) measured on ``profile_name``.

    One row per (notebook, variant); columns are metric names. Records of other profiles are skipped
    (their numbers are not comparable), and reported.
    """
    folder = folder or results_dir()
    rows, other = [], []
    for path in sorted(folder.glob("0[1-6]_*.json")):
        record = read_results(path.stem, folder)
        if record["profile"] != profile_name:
            other.append(f"{path.stem} ({record['profile']})")
            continue
        rows += [{"notebook": record["notebook"], "variant": name, **metrics} for name, metrics in record["variants"].items()]
    if other:
        print(f"Skipped results of other profiles: {', '.join(other)}")
    return pd.DataFrame(rows)


def measured_before(notebook: str, variant: str, profile_name: str, model_fingerprint: str,
                    folder: Path | None = None) -> tuple[dict[str, float], str] | None:
    """``(metrics, source)`` of ``variant`` from ``results/<notebook>.json`` when that notebook measured it on
    this profile and on these exact weights (the record's ``variant_fingerprints[variant]``, else its
    ``model_fingerprint``); otherwise ``None``, and the
    reason is printed, so the caller measures it itself."""
    record = read_results(notebook, folder)
    problem = None
    if record is None:
        problem = f"{notebook} has written no results yet"
    elif record["profile"] != profile_name:
        problem = f"{notebook}'s results are for profile '{record['profile']}'"
    elif record["extra"].get("variant_fingerprints", {}).get(variant, record["extra"].get("model_fingerprint")) != model_fingerprint:
        problem = f"{notebook} measured other weights (the tuned model has changed since)"
    elif variant not in record["variants"]:
        problem = f"{notebook} has no variant '{variant}'"
    if problem:
        print(f"{variant}: {problem}; measuring it here.")
        return None
    return dict(record["variants"][variant]), f"{notebook} ({record['extra'].get('written', '?')})"


def comparison_table(metrics: Mapping[str, Mapping[str, float]], reference: str) -> pd.DataFrame:
    """One row per variant, columns with units, accuracies in %, plus what each keeps of ``reference``'s accuracy."""
    table = pd.DataFrame(metrics).T
    for col in ("skill_accuracy", "preference_accuracy"):
        if col in table:
            table[col] = 100 * table[col]
    ref = table.loc[reference]
    if "skill_accuracy" in table:
        table["skill retained (%)"] = 100 * table["skill_accuracy"] / ref["skill_accuracy"]
    if "perplexity" in table:
        table["perplexity × tuned"] = table["perplexity"] / ref["perplexity"]
    return table.rename(columns=COLUMNS)


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats on both coordinates (lower is better on both)."""
    front = []
    for name, (x, y) in points.items():
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for n2, (x2, y2) in points.items() if n2 != name):
            front.append(name)
    return sorted(front, key=lambda n: points[n][0])


def plot_pareto(table: pd.DataFrame, x: str, y: str, title: str, filename: str | None = None):
    """Scatter of ``y`` against ``x`` with labels, the Pareto front joined by a line (lower-left is better)."""
    import matplotlib.pyplot as plt

    from .plots import save

    data = table[[x, y]].dropna()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(data[x], data[y], color="#4C72B0")
    for name, row in data.iterrows():
        ax.annotate(name, (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front({n: (r[x], r[y]) for n, r in data.iterrows()})
    ax.plot(data.loc[front, x], data.loc[front, y], "--", color="#C44E52", label="Pareto front")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if filename:
        save(fig, filename)
    return fig
