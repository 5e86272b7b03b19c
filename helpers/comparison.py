"""Comparing models: their answers side by side and per skill (every notebook), and notebook 07's table of every
method (earlier results collected, one table with units, the trade-offs plotted)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

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

def outcomes_of(report: SkillReport | None = None, pair_scores=None) -> dict:
    """Per-prompt outcomes of one variant, for :func:`compare_pairs`: each skill prompt right or wrong (``correct``,
    from a :class:`SkillReport`) and each preference pair ranked right or wrong (``preferred``, from
    :func:`helpers.dpo.score_pairs`' scores), as strings of 0s and 1s."""
    out = {}
    if report is not None:
        out["correct"] = "".join("1" if row["correct"] else "0" for row in report.rows)
    if pair_scores is not None:
        from .dpo import ranking_wins

        out["preferred"] = "".join("1" if w else "0" for w in ranking_wins(pair_scores).tolist())
    return out


def accuracy_intervals(outcomes: Mapping[str, Mapping], key: str = "correct") -> dict[str, list[float]]:
    """The 95% Wilson interval of each variant's skill accuracy (``key="correct"``) or preference accuracy
    (``key="preferred"``), from its recorded per-prompt outcomes."""
    from . import stats

    out = {}
    for name, o in outcomes.items():
        if o.get(key):
            out[name] = list(stats.wilson_interval(o[key].count("1"), len(o[key])))
    return out


def compare_pairs(outcomes: Mapping[str, Mapping], pairs: Sequence[tuple[str, str]]) -> dict[str, dict]:
    """For each ``(a, b)``: ``b``'s skill accuracy minus ``a``'s on the same prompts (paired bootstrap interval,
    McNemar p-value) and ``b``'s perplexity divided by ``a``'s on the same text (block-bootstrap interval); keyed
    ``"b vs a"``. Variants without recorded outcomes are skipped (and said so)."""
    from . import stats

    out = {}
    for a, b in pairs:
        oa, ob = outcomes.get(a, {}), outcomes.get(b, {})
        entry = {}
        if oa.get("correct") and ob.get("correct"):
            entry["skill_accuracy"] = stats.paired_difference([c == "1" for c in oa["correct"]],
                                                              [c == "1" for c in ob["correct"]])
        if oa.get("preferred") and ob.get("preferred"):
            entry["preference_accuracy"] = stats.paired_difference([c == "1" for c in oa["preferred"]],
                                                                   [c == "1" for c in ob["preferred"]])
        if oa.get("ppl_block_nll") and ob.get("ppl_block_nll"):
            entry["perplexity"] = stats.perplexity_ratio(oa["ppl_block_nll"], ob["ppl_block_nll"], ob["ppl_block_tokens"])
        if not entry:
            print(f"{b} vs {a}: no per-prompt outcomes recorded for both, so no interval.")
            continue
        out[f"{b} vs {a}"] = entry
    return out


def pairs_table(comparisons: Mapping[str, Mapping]) -> pd.DataFrame:
    """:func:`compare_pairs` as a table to read: each difference with its 95% interval, and whether it is clear of
    noise (the interval excludes no change)."""
    rows = {}
    for name, entry in comparisons.items():
        row = {}
        if d := entry.get("skill_accuracy"):
            row["skill acc. Δ (points)"] = f"{100 * d['difference']:+.1f}"
            row["95% interval"] = f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            row["McNemar p"] = round(d["p_value"], 4)
            row["skill: clear?"] = "yes" if d["clear"] else "no (noise)"
        if d := entry.get("preference_accuracy"):
            row["pref. acc. Δ (points)"] = f"{100 * d['difference']:+.1f}"
            row["95% interval  "] = f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            row["pref.: clear?"] = "yes" if d["clear"] else "no (noise)"
        if r := entry.get("perplexity"):
            row["perplexity ×"] = f"{r['ratio']:.3f}"
            row["95% interval "] = f"[{r['low']:.3f}, {r['high']:.3f}]"
            row["perplexity: clear?"] = "yes" if r["clear"] else "no (noise)"
        rows[name] = row
    table = pd.DataFrame(rows).T
    order = ["skill acc. Δ (points)", "95% interval", "McNemar p", "skill: clear?", "pref. acc. Δ (points)",
             "95% interval  ", "pref.: clear?", "perplexity ×", "95% interval ", "perplexity: clear?"]
    return table[[c for c in order if c in table]].fillna("–")


def verdict(comparisons: Mapping[str, Mapping], name: str, metric: str) -> str:
    """One phrase for prose: how ``metric`` changed in comparison ``name`` and whether that is clear of noise."""
    entry = comparisons[name].get(metric)
    if entry is None:
        return "not measured"
    if metric.endswith("accuracy"):
        size = f"{100 * entry['difference']:+.1f} points [{100 * entry['low']:+.1f}, {100 * entry['high']:+.1f}]"
        direction = "higher" if entry["difference"] > 0 else "lower"
    else:
        size = f"×{entry['ratio']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"
        direction = "worse" if entry["ratio"] > 1 else "better"
    return f"{direction}, {size}" if entry["clear"] else f"no clear difference ({size})"


def choose_calibration(metrics: Mapping[str, Mapping[str, float]], outcomes: Mapping[str, Mapping],
                       candidates: Mapping[str, str]) -> dict:
    """Pick the calibration to deploy from ``candidates`` (calibration source -> variant measured with it): the
    highest skill accuracy, the metric of the chat prompts the tuned model serves. The reason says whether that
    win is clear of noise against every other candidate, and whether the same calibration also has the lowest
    perplexity (so whether one calibration wins on both metrics)."""
    from . import stats

    by_skill = max(candidates, key=lambda c: metrics[candidates[c]]["skill_accuracy"])
    by_ppl = min(candidates, key=lambda c: metrics[candidates[c]]["perplexity"])
    others = [c for c in candidates if c != by_skill]

    def correct(c):
        return [x == "1" for x in outcomes[candidates[c]]["correct"]]

    def blocks_of(c):
        return outcomes[candidates[c]]["ppl_block_nll"]

    skill_clear = all(stats.paired_difference(correct(c), correct(by_skill))["clear"] for c in others)
    tokens = outcomes[candidates[by_ppl]]["ppl_block_tokens"]
    ppl_clear = all(stats.perplexity_ratio(blocks_of(c), blocks_of(by_ppl), tokens)["clear"]
                    for c in candidates if c != by_ppl)
    acc = {c: f"{100 * metrics[v]['skill_accuracy']:.1f}%" for c, v in candidates.items()}
    reason = (f"'{by_skill}' calibration has the highest skill accuracy ({', '.join(f'{c} {a}' for c, a in acc.items())}), "
              + ("clearly above every other (95% intervals exclude no difference)" if skill_clear else
                 "but not clearly: its difference from at least one other is within noise")
              + f"; the lowest perplexity comes with '{by_ppl}' calibration"
              + (" (clearly)" if ppl_clear else " (not clearly)") + ". "
              + ("One calibration wins on both metrics." if by_skill == by_ppl and skill_clear and ppl_clear else
                 "No calibration wins clearly on both metrics.")
              + f" Deployed: '{by_skill}', for the skills the tuned model is for.")
    return {"source": by_skill, "variant": candidates[by_skill], "skill_clear": skill_clear, "best_perplexity": by_ppl,
            "perplexity_clear": ppl_clear, "reason": reason}


def calibration_choice(notebook: str, profile_name: str, model_fingerprint: str, folder: Path | None = None) -> dict:
    """The calibration ``notebook`` (03 for GPTQ, 04 for AWQ) measured best on these weights and this profile
    (:func:`choose_calibration`), or, when it has not, docstrings (``stdlib``, the notebooks' default), saying so."""
    record = read_results(notebook, folder)
    if (record and record["profile"] == profile_name and record["extra"].get("model_fingerprint") == model_fingerprint
            and record["extra"].get("calibration_choice")):
        return record["extra"]["calibration_choice"]
    return {"source": "stdlib", "variant": None,
            "reason": f"{notebook} has not compared calibrations on these weights (profile {profile_name}), so the "
                      "default, docstrings ('stdlib'); run it to choose by measurement."}


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
                    folder: Path | None = None) -> tuple[dict[str, float], str, dict] | None:
    """``(metrics, source, outcomes)`` of ``variant`` from ``results/<notebook>.json`` when that notebook measured it on
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
    return (dict(record["variants"][variant]), f"{notebook} ({record['extra'].get('written', '?')})",
            record["extra"].get("outcomes", {}).get(variant, {}))


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
