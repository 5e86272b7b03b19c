"""scripts/cut_cost.py: what halving the evaluation would cost, computed from the committed results, and the README
saying what it computes."""

import importlib.util
from pathlib import Path

from helpers import stats

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("cut_cost", ROOT / "scripts" / "cut_cost.py")
cut_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cut_cost)


def test_the_readme_states_what_the_committed_results_give():
    text = cut_cost.summary(cut_cost.analyse())
    readme = (ROOT / "README.md").read_text()
    section = readme.split(cut_cost.START, 1)[1].split(cut_cost.END, 1)[0].strip()
    assert section == text, "README's cutcost section is stale: run `python scripts/cut_cost.py --readme`"


def test_halving_recomputes_at_the_committed_level_and_can_change_a_verdict():
    # 40 prompts: b right on 8 more than a; every other prompt keeps half the evidence
    a = {"correct": "0" * 40}
    b = {"correct": "1" * 8 + "0" * 32}
    full = stats.paired_difference([False] * 40, [True] * 8 + [False] * 32)
    half = cut_cost.halved("skill_accuracy", full, a, b)
    assert half["level"] == full["level"] and half["n"] == 20
    assert half["high"] - half["low"] > full["high"] - full["low"]
    assert cut_cost.halved("skill_accuracy", full, {}, b) is None      # outcomes not recorded: no recomputation
    blocks = {"ppl_block_nll": [10.0, 11.0, 10.5, 10.2], "ppl_block_tokens": [5, 5, 5, 5]}
    ratio = cut_cost.halved("perplexity", {"level": 0.95}, blocks, blocks)
    assert ratio["ratio"] == 1.0 and ratio["blocks"] == 2
