"""What a smaller evaluation would cost: every paired comparison of the reference results, recomputed on half the data.

The course's budget on a CPU without native bf16 is 45 minutes, and `make run` takes longer (README, *Results of the
reference run*). Most of a notebook's time is evaluation: 289 held-out prompts (skill and preference accuracy) and
4,096 tokens of held-out text (perplexity) per variant. Halving either would save time; this script says what it
would cost, from the per-prompt and per-block outcomes the results files already hold (no model is run):

- **prompts**: every other prompt (so each skill keeps half its prompts), the paired bootstrap interval of each
  skill and preference accuracy difference computed again at the level it was computed at;
- **perplexity text**: the first half of the text's blocks, the block-bootstrap interval of each perplexity ratio
  computed again.

For each it prints how much wider the intervals get (median ratio of widths) and which verdicts ("clear" or not)
would change. `--readme` writes that summary into README.md between the `cutcost` markers;
`tests/test_cut_cost.py` checks that the README says what the committed results give.

    python scripts/cut_cost.py            # the table, every verdict that would change
    python scripts/cut_cost.py --readme   # and the README's summary
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.comparison import compare_pairs  # noqa: E402

START, END = "<!-- cutcost:start -->", "<!-- cutcost:end -->"


def records(results_dir: Path = ROOT / "results", profile: str = "cpu") -> list[tuple[str, dict]]:
    """(notebook, its results record) for every results file of ``profile``, each read once."""
    found = []
    for path in sorted(results_dir.glob("0*.json")):
        record = json.loads(path.read_text())
        record = record.get(profile, record)
        if record.get("profile", profile) == profile:
            found.append((path.stem, record))
    return found


def half_outcomes(outcomes: dict) -> dict:
    """Half of one variant's recorded outcomes: every other prompt (so each skill keeps half its prompts), and the
    first half of the perplexity text's blocks."""
    half = {key: outcomes[key][::2] for key in ("correct", "preferred") if key in outcomes}
    if "ppl_block_nll" in outcomes:
        n = len(outcomes["ppl_block_nll"]) // 2
        half |= {key: outcomes[key][:n] for key in ("ppl_block_nll", "ppl_block_tokens")}
    return half


def halved_entry(level: float, oa: dict, ob: dict) -> dict:
    """One comparison (``b`` against ``a``) recomputed on half of both variants' outcomes by the notebooks' own
    :func:`helpers.comparison.compare_pairs`, at ``level``: metric -> its interval, for every metric both recorded."""
    return compare_pairs({"a": half_outcomes(oa), "b": half_outcomes(ob)}, [("a", "b")], level=level).get("b vs a", {})


def halved(metric: str, committed: dict, oa: dict, ob: dict) -> dict | None:
    """One metric of a comparison recomputed on half the data, at the level it was computed at; ``None`` when the
    outcomes it needs were not recorded."""
    return halved_entry(committed.get("level", 0.95), oa, ob).get(metric)


def analyse(results_dir: Path = ROOT / "results", profile: str = "cpu") -> dict:
    """Per kind of cut ("prompts", "perplexity text"): how many comparisons, the median ratio of interval widths
    (half over full), and the comparisons whose verdict would change; and the number of prompts evaluated."""
    out = {kind: {"n": 0, "widths": [], "changed": []} for kind in ("prompts", "perplexity text")}
    found = records(results_dir, profile)
    n_eval = {record.get("n_eval") for _, record in found} - {None}
    out["sizes"] = {"n_eval": n_eval.pop() if len(n_eval) == 1 else "/".join(map(str, sorted(n_eval)))}
    for notebook, record in found:
        outcomes = record.get("extra", {}).get("outcomes", {})
        for name, entry in record.get("extra", {}).get("comparisons", {}).items():
            b, a = name.split(" vs ")
            if a not in outcomes or b not in outcomes or not entry:
                continue
            halves = halved_entry(next(iter(entry.values())).get("level", 0.95), outcomes[a], outcomes[b])
            for metric, committed in entry.items():
                if metric not in halves:
                    continue
                half = halves[metric]
                kind = out["perplexity text" if metric == "perplexity" else "prompts"]
                kind["n"] += 1
                full_width = committed["high"] - committed["low"]
                if full_width > 0:
                    kind["widths"].append((half["high"] - half["low"]) / full_width)
                if bool(half["clear"]) != bool(committed["clear"]):
                    kind["changed"].append({"notebook": notebook, "comparison": name, "metric": metric,
                                            "full": committed, "half": half})
    for kind in (out["prompts"], out["perplexity text"]):
        kind["median_width_ratio"] = statistics.median(kind.pop("widths")) if kind["n"] else None
    return out


def _interval(entry: dict, metric: str) -> str:
    if metric == "perplexity":
        return f"×{entry['ratio']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"
    return f"{100 * entry['difference']:+.1f} [{100 * entry['low']:+.1f}, {100 * entry['high']:+.1f}] points"


def summary(analysis: dict, profile: str = "cpu") -> str:
    """The README's paragraph: one line per cut, then each verdict it would change."""
    from helpers.profiles import get_profile

    sizes = analysis.get("sizes", {})
    lines = []
    half_text = get_profile(profile).ppl_max_tokens // 2
    for kind, what in (("prompts", f"half the {sizes.get('n_eval', '?')} prompts (every other one)"),
                       ("perplexity text", f"half the perplexity text (its first {half_text:,} tokens)")):
        a = analysis[kind]
        if not a["n"]:
            continue
        lines.append(f"- **{what}**: intervals {a['median_width_ratio']:.2f}× as wide (median over {a['n']} "
                     f"comparisons); {len(a['changed'])} of {a['n']} verdicts would change:")
        for c in a["changed"]:
            now = "clear" if c["full"]["clear"] else "not clear"
            lines.append(f"  - {c['notebook']}, {c['comparison']}, {c['metric'].replace('_', ' ')}: {now} at "
                         f"{_interval(c['full'], c['metric'])}, {'not clear' if now == 'clear' else 'clear'} at "
                         f"{_interval(c['half'], c['metric'])}")
    return "\n".join(lines)


def write_readme(text: str, readme: Path = ROOT / "README.md") -> bool:
    """Put ``text`` between the cutcost markers; True when the README changed."""
    old = readme.read_text()
    if START not in old or END not in old:
        raise SystemExit(f"{readme.name} has no {START} ... {END} markers.")
    head, rest = old.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{text}\n{END}{tail}"
    if new != old:
        readme.write_text(new)
    return new != old


def main(argv: list[str]) -> int:
    text = summary(analyse())
    print(text)
    if "--readme" in argv:
        print("README.md", "updated" if write_readme(text) else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
