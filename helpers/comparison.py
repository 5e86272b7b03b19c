"""Comparing models: their answers side by side and per skill (every notebook), and notebook 07's table of every
method (earlier results collected, one table with units, the trade-offs plotted)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from .evaluation import SkillReport
from .paths import results_dir
from .results import UNITS, read_results, weights_id
from .stats import accuracy_intervals  # noqa: F401  (the notebooks' name for it: comparison.accuracy_intervals)

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
        out.update(report.outcomes)
    if pair_scores is not None:
        from .dpo import ranking_wins

        out["preferred"] = "".join("1" if w else "0" for w in ranking_wins(pair_scores).tolist())
    return out


def _measured_metrics(oa: Mapping, ob: Mapping) -> list[str]:
    """The metrics both variants recorded per-prompt outcomes for (so that a paired interval can be computed)."""
    found = []
    if oa.get("correct") and ob.get("correct"):
        found.append("skill_accuracy")
    if oa.get("preferred") and ob.get("preferred"):
        found.append("preference_accuracy")
    if oa.get("ppl_block_nll") and ob.get("ppl_block_nll"):
        found.append("perplexity")
    return found


def interval_count(outcomes: Mapping[str, Mapping], pairs: Sequence[tuple[str, str]]) -> int:
    """How many intervals :func:`compare_pairs` computes for ``pairs``: one per pair and metric both variants recorded."""
    return sum(len(_measured_metrics(outcomes.get(a, {}), outcomes.get(b, {}))) for a, b in pairs)


class Comparisons(dict):
    """What :func:`compare_pairs` returns: ``{"b vs a": {metric: interval}}`` (a plain dict in a results file), which
    also reads itself out: :meth:`table`, :meth:`verdict`, and the level its intervals were computed at."""

    def table(self) -> pd.DataFrame:
        """Each difference with its interval, and whether it is clear of noise (:func:`pairs_table`)."""
        return pairs_table(self)

    def verdict(self, name: str, metric: str, show_level: bool = True) -> str:
        """One phrase for prose on ``metric`` in comparison ``name`` (:func:`verdict`)."""
        return verdict(self, name, metric, show_level)

    @property
    def level(self) -> float | None:
        """The level every interval here was computed at (:func:`level_of`)."""
        return level_of(self)

    @property
    def level_text(self) -> str:
        """That level as a reader sees it: ``95%``, ``99.69%``."""
        return level_text(self.level)

    @property
    def n_intervals(self) -> int:
        """How many intervals were computed: one per pair and metric both variants recorded."""
        return sum(len(entry) for entry in self.values())


def compare_pairs(outcomes: Mapping[str, Mapping], pairs: Sequence[tuple[str, str]], level: float = 0.95,
                  multiplicity: bool = False) -> Comparisons:
    """For each ``(a, b)``: ``b``'s skill (and preference) accuracy minus ``a``'s on the same prompts (paired bootstrap
    interval) and ``b``'s perplexity divided by ``a``'s on the same text (block-bootstrap interval); keyed
    ``"b vs a"``. Variants without recorded outcomes are skipped (and said so).

    Every interval is at ``level``; with ``multiplicity=True`` the level is shared out over all the intervals computed
    here (:func:`helpers.stats.bonferroni_level`), so that every verdict holds together with probability ``level``.
    Each entry records the level it was computed at. The result reads itself out: ``.table()``, ``.verdict(name,
    metric)``, ``.level_text`` (:class:`Comparisons`)."""
    from . import stats

    if multiplicity:
        level = stats.bonferroni_level(max(1, interval_count(outcomes, pairs)), level)
    out = Comparisons()
    for a, b in pairs:
        oa, ob = outcomes.get(a, {}), outcomes.get(b, {})
        entry = {}
        for metric in _measured_metrics(oa, ob):
            if metric == "perplexity":
                entry[metric] = stats.perplexity_ratio(oa["ppl_block_nll"], ob["ppl_block_nll"], ob["ppl_block_tokens"],
                                                       level=level)
            else:
                key = "correct" if metric == "skill_accuracy" else "preferred"
                entry[metric] = stats.paired_difference([c == "1" for c in oa[key]], [c == "1" for c in ob[key]],
                                                        level=level)
        if not entry:
            print(f"{b} vs {a}: no per-prompt outcomes recorded for both, so no interval.")
            continue
        out[f"{b} vs {a}"] = entry
    return out


def level_of(comparisons: Mapping[str, Mapping]) -> float | None:
    """The level the intervals of ``comparisons`` were computed at (``None`` when they differ or none is recorded;
    results written before levels were recorded are 95%)."""
    levels = {entry.get("level", 0.95) for pair in comparisons.values() for entry in pair.values()}
    return levels.pop() if len(levels) == 1 else None


def level_text(level: float | None) -> str:
    """A level as a reader sees it: ``95%``, ``99.69%``."""
    return "mixed-level" if level is None else f"{100 * level:.4g}%"


def pairs_table(comparisons: Mapping[str, Mapping]) -> pd.DataFrame:
    """:func:`compare_pairs` as a table to read: each difference with its interval, and whether it is clear of
    noise (the interval excludes no change). One statistic per question: the interval gives the verdict."""
    interval = f"{level_text(level_of(comparisons))} interval"
    rows = {}
    for name, entry in comparisons.items():
        row = {}
        if d := entry.get("skill_accuracy"):
            row["skill acc. Δ (points)"] = f"{100 * d['difference']:+.1f}"
            row[f"skill: {interval}"] = f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            row["skill: clear?"] = "yes" if d["clear"] else "no (noise)"
        if d := entry.get("preference_accuracy"):
            row["pref. acc. Δ (points)"] = f"{100 * d['difference']:+.1f}"
            row[f"pref.: {interval}"] = f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            row["pref.: clear?"] = "yes" if d["clear"] else "no (noise)"
        if r := entry.get("perplexity"):
            row["perplexity ×"] = f"{r['ratio']:.3f}"
            row[f"perplexity: {interval}"] = f"[{r['low']:.3f}, {r['high']:.3f}]"
            row["perplexity: clear?"] = "yes" if r["clear"] else "no (noise)"
        rows[name] = row
    table = pd.DataFrame(rows).T
    order = ["skill acc. Δ (points)", f"skill: {interval}", "skill: clear?", "pref. acc. Δ (points)",
             f"pref.: {interval}", "pref.: clear?", "perplexity ×", f"perplexity: {interval}", "perplexity: clear?"]
    return table[[c for c in order if c in table]].fillna("–")


def verdict(comparisons: Mapping[str, Mapping], name: str, metric: str, show_level: bool = True) -> str:
    """One phrase for prose: how ``metric`` changed in comparison ``name`` and whether that is clear of noise (its
    interval, whose level is named when it is not 95%, unless ``show_level`` is false)."""
    entry = comparisons.get(name, {}).get(metric)
    if entry is None:
        return "not measured"
    level = entry.get("level", 0.95)
    tag = "" if abs(level - 0.95) < 1e-12 or not show_level else f" ({level_text(level)} interval)"
    if metric.endswith("accuracy"):
        size = f"{100 * entry['difference']:+.1f} points [{100 * entry['low']:+.1f}, {100 * entry['high']:+.1f}]"
        direction = "higher" if entry["difference"] > 0 else "lower"
    else:
        size = f"×{entry['ratio']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"
        direction = "worse" if entry["ratio"] > 1 else "better"
    return (f"{direction}, {size}" if entry["clear"] else f"no clear difference ({size})") + tag


def direction(comparisons: Mapping[str, Mapping], name: str, metric: str) -> int | None:
    """+1 when ``metric`` is clearly *better* in comparison ``name`` (``"b vs a"``: b better than a), -1 when clearly
    worse, 0 when the interval holds no change, ``None`` when not measured. Better: higher accuracy, lower perplexity."""
    entry = comparisons.get(name, {}).get(metric)
    if entry is None:
        return None
    if not entry["clear"]:
        return 0
    up = entry["difference"] > 0 if metric.endswith("accuracy") else entry["ratio"] < 1
    return 1 if up else -1


def home_advantage(comparisons: Mapping[str, Mapping], docstrings: str, chat: str, method: str) -> str:
    """Whether a calibrated method fits the text it was calibrated on, from the comparison ``"<chat> vs <docstrings>"``:
    chat calibration clearly better on the chat skills *and* docstring calibration clearly better on the docstring
    perplexity ("yes"), either one clearly the other way ("no"), else "not clearly". One sentence, with the numbers."""
    name = f"{chat} vs {docstrings}"
    if name not in comparisons:
        return f"{method}: chat against docstring calibration not measured."
    skill, ppl = direction(comparisons, name, "skill_accuracy"), direction(comparisons, name, "perplexity")
    if skill == 1 and ppl == -1:
        answer = "yes: each calibration wins on its own kind of text"
    elif skill == -1 or ppl == 1:
        answer = ("no: chat calibration is clearly " + " and ".join(
            w for w, d in (("worse on the chat skills", skill == -1), ("better on the docstrings", ppl == 1)) if d))
    else:
        answer = "not clearly (the intervals hold no change)"
    return (f"{method}, chat against docstring calibration: skill accuracy "
            f"{verdict(comparisons, name, 'skill_accuracy')}; perplexity on docstrings "
            f"{verdict(comparisons, name, 'perplexity')}. Does each fit the text it was calibrated on? {answer}.")


def conclusion(metrics: Mapping[str, Mapping[str, float]], comparisons: Mapping[str, Mapping], reference: str = "dpo",
               tuned_from: str = "sft_lora", base: str = "base", simulated: Sequence[str] = ("rtn", "gguf")) -> str:
    """This run's answer to "which method, when", in sentences computed from ``metrics`` and the intervals of
    ``comparisons`` (notebook 07's pairs: ``"<variant> vs <reference>"`` for every compressed variant, the calibrated
    methods against RTN, and the GGUF Q4_1 row against the base). Nothing in it is typed: every direction is a verdict
    of an interval, so the paragraph changes when the numbers do."""
    def pct(name, metric="skill_accuracy"):
        return f"{100 * metrics[name][metric]:.1f}%"

    def own_memory(name):
        return not any(s in name for s in simulated) and metrics[name].get("footprint_mb") is not None

    out = []
    tuned = f"{reference} vs {tuned_from}"
    if tuned in comparisons:
        out.append(f"Preference tuning ({reference} against {tuned_from}): preference accuracy "
                   f"{verdict(comparisons, tuned, 'preference_accuracy', show_level=False)}; skill accuracy "
                   f"{verdict(comparisons, tuned, 'skill_accuracy', show_level=False)}.")
    rl = f"grpo vs {tuned_from}"
    if rl in comparisons:
        against = f"; against {reference}: {verdict(comparisons, f'grpo vs {reference}', 'skill_accuracy', show_level=False)}" \
            if f"grpo vs {reference}" in comparisons else ""
        out.append(f"Reinforcement learning with the checker as reward (grpo against {tuned_from}): skill accuracy "
                   f"{verdict(comparisons, rl, 'skill_accuracy', show_level=False)}{against}.")
    compressed = [n for n in metrics if n.startswith(f"{reference}_") and f"{n} vs {reference}" in comparisons]
    keep = [n for n in compressed if direction(comparisons, f"{n} vs {reference}", "skill_accuracy") in (0, 1)]
    lose = [n for n in compressed if direction(comparisons, f"{n} vs {reference}", "skill_accuracy") == -1]
    if compressed:
        out.append(f"Against the tuned model's skill accuracy ({pct(reference)}), "
                   f"{', '.join(keep) or 'no compressed variant'} show{'s' if len(keep) == 1 else ''} no clear loss, and "
                   f"{', '.join(lose) or 'none'} lose{'s' if len(lose) == 1 else ''} clearly.")
        real = [n for n in keep if own_memory(n)]
        if real and own_memory(reference):
            best = min(real, key=lambda n: metrics[n]["footprint_mb"])
            out.append(f"The smallest in memory among those that keep it is {best}: {metrics[best]['footprint_mb']:.0f} MB "
                       f"of weights against {metrics[reference]['footprint_mb']:.0f} MB (rows simulated in full precision "
                       "are left out: their memory is not their own).")
        else:
            out.append("No variant that holds its own memory (simulated rows left out) keeps the skill accuracy "
                       "without a clear loss.")
    for a, b, label in ((f"{reference}_rtn", f"{reference}_gptq", "GPTQ against RTN"),
                        (f"{reference}_rtn", f"{reference}_awq", "AWQ against RTN"),
                        (f"{reference}_awq", f"{reference}_gptq", "GPTQ against AWQ")):
        name = next((k for k in comparisons if k.startswith(b) and f" vs {a}" in k), None)
        if name:
            out.append(f"{label} (same bits, group size and grid): skill accuracy "
                       f"{verdict(comparisons, name, 'skill_accuracy', show_level=False)}; perplexity {verdict(comparisons, name, 'perplexity', show_level=False)}.")
    q41 = f"{reference}_gguf_q4_1"
    if q41 in metrics and f"{q41} vs {base}" in comparisons and f"{q41} vs {reference}" in comparisons:
        vs_tuned = direction(comparisons, f"{q41} vs {reference}", "skill_accuracy")
        vs_base = direction(comparisons, f"{q41} vs {base}", "skill_accuracy")
        if vs_tuned == -1 and vs_base == 0:
            what = "erased the fine-tuning: its skill accuracy is not clearly different from the base model's"
        elif vs_tuned == -1:
            what = "erased part of the fine-tuning: clearly below the tuned model, clearly above the base"
        else:
            what = "did not erase the fine-tuning: no clear loss against the tuned model"
        out.append(f"Re-quantizing the tuned model to GGUF Q4_1 {what} ({pct(q41)} against {pct(base)} for the base and "
                   f"{pct(reference)} tuned; perplexity against the base {verdict(comparisons, f'{q41} vs {base}', 'perplexity', show_level=False)}).")
    level = level_of(comparisons)
    if level is not None and abs(level - 0.95) > 1e-12:
        out.append(f"Every verdict here comes from a {level_text(level)} interval, so that all of them hold together "
                   "with 95% confidence (Bonferroni).")
    return " ".join(out)


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


def earlier_record(notebook: str, profile_name: str, weights, folder: Path | None = None) -> dict | None:
    """``results/<notebook>.json`` when that notebook measured on this profile and on these weights (a model folder,
    or :func:`helpers.results.weights_id` of one), else ``None``: what a later notebook may take from it."""
    record = read_results(notebook, folder)
    if record and record["profile"] == profile_name and record["extra"].get("model_fingerprint") == weights_id(weights):
        return record
    return None


def calibration_choice(notebook: str, profile_name: str, weights, folder: Path | None = None) -> dict:
    """The calibration ``notebook`` (03 for GPTQ, 04 for AWQ) measured best on these weights (a model folder) and this
    profile (:func:`choose_calibration`), or, when it has not, docstrings (``stdlib``, the notebooks' default), saying so."""
    record = earlier_record(notebook, profile_name, weights, folder)
    if record and record["extra"].get("calibration_choice"):
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


def measured_before(notebook: str, variant: str, profile_name: str, weights,
                    folder: Path | None = None) -> tuple[dict[str, float], str, dict] | None:
    """``(metrics, source, outcomes)`` of ``variant`` from ``results/<notebook>.json`` when that notebook measured it on
    this profile and on these exact weights (``weights``: a model folder, the profile for its base model, or
    :func:`helpers.results.weights_id` of one; compared with the record's ``variant_fingerprints[variant]``, else its
    ``model_fingerprint``); otherwise ``None``, and the
    reason is printed, so the caller measures it itself."""
    record = read_results(notebook, folder)
    problem = None
    if record is None:
        problem = f"{notebook} has written no results yet"
    elif record["profile"] != profile_name:
        problem = f"{notebook}'s results are for profile '{record['profile']}'"
    elif record["extra"].get("variant_fingerprints", {}).get(variant, record["extra"].get("model_fingerprint")) != weights_id(weights):
        problem = f"{notebook} measured other weights (the tuned model has changed since)"
    elif variant not in record["variants"]:
        problem = f"{notebook} has no variant '{variant}'"
    if problem:
        print(f"{variant}: {problem}; measuring it here.")
        return None
    return (dict(record["variants"][variant]), f"{notebook} ({record['extra'].get('written', '?')})",
            record["extra"].get("outcomes", {}).get(variant, {}))


def comparison_table(metrics: Mapping[str, Mapping[str, float]], reference: str,
                     also: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """One row per variant, columns with units, accuracies in %, plus what each keeps of ``reference``'s accuracy.
    ``also``: more rows, shown with the same units but not set against ``reference`` (e.g. another notebook's
    training runs, measured on other weights)."""
    table = pd.DataFrame(metrics).T
    for col in ("skill_accuracy", "preference_accuracy"):
        if col in table:
            table[col] = 100 * table[col]
    ref = table.loc[reference]
    if "skill_accuracy" in table:
        table["skill retained (%)"] = 100 * table["skill_accuracy"] / ref["skill_accuracy"]
    if "perplexity" in table:
        table["perplexity × tuned"] = table["perplexity"] / ref["perplexity"]
    table = table.rename(columns=COLUMNS)
    for name, row in (also or {}).items():
        for metric, value in row.items():
            table.loc[name, COLUMNS[metric]] = 100 * value if metric.endswith("accuracy") else value
    return table


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
