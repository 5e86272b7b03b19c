"""Side-by-side comparisons of several models' answers to the same prompts."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from .evaluation import SkillReport


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
