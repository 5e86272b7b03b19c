"""Every sentence of the course's prose that states how this course's own measured numbers compare, registered with
the condition on the results that makes it true.

A sentence in a notebook's Markdown or in the README that compares measured numbers is either printed by a cell
from the computed verdict (it then changes with the numbers), or registered here: the notebook (or README), the
exact fragment of the sentence as it stands there, the results files it reads, and a condition on them. The
condition is checked against the reference run's results (`results/*.json`, profile `cpu`):

- ``tests/test_claims.py`` checks every claim on the committed results, and that every fragment is still in its file;
- ``make run`` (``scripts/run_course.py``) re-checks them after a run on the `cpu` profile and prints any claim
  that no longer holds, with what to do;
- ``python -m helpers.claims`` prints every claim with *holds* or *FAILS* and exits 1 on a failure.

When a claim fails, the prose is wrong for these numbers: rewrite the sentence (or have a cell print the verdict
instead) and change or remove its entry here. Claims are about the `cpu` reference run; results from another
profile are reported as *not checked*, never as holding.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PROFILE = "cpu"
Results = dict  # results file stem ("06_qlora") -> its parsed JSON; "course_run_times" -> that file


@dataclass(frozen=True)
class Claim:
    id: str
    where: str                      # notebook stem ("06_qlora") or "README.md"
    fragment: str                   # exact text as it stands in that file's Markdown
    needs: tuple[str, ...]          # results files the condition reads (stems)
    holds: Callable[[Results], bool]
    on_failure: str                 # what to do when it no longer holds


# --------------------------------------------------------------------------- accessors

def var(r: Results, nb: str, variant: str, metric: str) -> float:
    return r[nb]["variants"][variant][metric]


def cmp(r: Results, nb: str, name: str, metric: str = "skill_accuracy") -> dict:
    """A paired comparison recorded by a notebook (``extra.comparisons[name][metric]``: difference or ratio, low,
    high, clear)."""
    return r[nb]["extra"]["comparisons"][name][metric]


def ppl_ratio(r: Results, nb: str, variant: str, reference: str) -> float:
    return var(r, nb, variant, "perplexity") / var(r, nb, reference, "perplexity")


def _layer(r: Results, method: str, bits: int = 4) -> dict:
    return next(row for row in r["03_gptq"]["extra"]["layer_experiment"]["rows"]
                if row["method"] == method and row["bits"] == bits)


def _int8(r: Results, which: str) -> dict:
    return next(row for row in r["05_bitsandbytes_int8_nf4"]["extra"]["int8_miniature"] if row["input"] == which)


# Perplexity ratios (4-bit, to fp16) in the papers the notebooks quote: AWQ paper, Table 4, Llama-2-7B, g128.
PAPER_7B = {"rtn_w4": 5.73 / 5.47, "gptq_w4": 5.69 / 5.47, "awq_w4": 5.60 / 5.47}
N_EVAL = 289
FEW_PROMPTS = 5 / N_EVAL   # "a few prompts"


CLAIMS: list[Claim] = [
    # ------------------------------------------------------------------ 01
    Claim("01-capital-hardest", "01_sft_lora",
          "A skill that needs facts the model lacks (the capital of a small country, an irregular verb it never saw) "
          "cannot be fixed by format",
          ("01_sft_lora",),
          lambda r: (lambda s: min(s, key=s.get))(r["01_sft_lora"]["extra"]["per_skill"]["sft_lora"]) == "capital",
          "Capitals are no longer the hardest skill after SFT: name the skill the chart shows, or drop the example."),
    Claim("01-bf16-flips-few", "01_sft_lora",
          "Under bf16 autocast a handful of the held-out answers can flip",
          ("01_sft_lora", "02_dpo"),
          lambda r: abs(var(r, "01_sft_lora", "sft_lora", "skill_accuracy")
                        - var(r, "02_dpo", "sft_lora", "skill_accuracy")) <= FEW_PROMPTS,
          "The SFT model (adapter on, notebook 01) and merged (notebook 02) now differ by more than a few prompts: "
          "look for a merge bug before rewording."),
    # ------------------------------------------------------------------ 02
    Claim("02-base-near-zero", "02_dpo",
          "the base model's skill accuracy is near zero because it answers in full sentences",
          ("01_sft_lora", "02_dpo"),
          lambda r: var(r, "02_dpo", "base", "skill_accuracy") < 0.05
          and r["01_sft_lora"]["extra"]["mention_rate"]["base"] > 0.2,
          "The base model now scores above 5%, or rarely mentions the answer: rewrite the sentence (and the README's)."),
    Claim("02-dpo-skill-close-to-sft", "02_dpo",
          "DPO only reshapes which answers the model prefers, so overall skill accuracy is expected to stay close to SFT's",
          ("02_dpo",),
          lambda r: not cmp(r, "02_dpo", "dpo vs sft_lora")["clear"],
          "DPO moved skill accuracy beyond the noise: say so, and what the learning rate and β did."),
    Claim("02-merge-few-prompts", "02_dpo",
          "so their `dpo`/`baseline` skill accuracy can differ from this one by a few prompts too",
          ("02_dpo", "03_gptq"),
          lambda r: abs(var(r, "02_dpo", "dpo", "skill_accuracy") - var(r, "03_gptq", "baseline", "skill_accuracy"))
          <= FEW_PROMPTS,
          "DPO unmerged (02) and merged (03) differ by more than a few prompts: look for a merge bug."),
    Claim("02-merge-below-interval", "02_dpo",
          "the paired intervals of either notebook are far wider than such a difference",
          ("02_dpo", "03_gptq"),
          lambda r: (lambda c: c["high"] - c["low"])(cmp(r, "02_dpo", "dpo vs sft_lora"))
          > 3 * abs(var(r, "02_dpo", "dpo", "skill_accuracy") - var(r, "03_gptq", "baseline", "skill_accuracy")),
          "The merge difference is no longer small next to the intervals: rewrite *Merged or not*."),
    # ------------------------------------------------------------------ 03
    Claim("03-gptq-weight-vs-output-error", "03_gptq",
          "so its *weight* error is expected to be larger than RTN's, and its *output* error smaller",
          ("03_gptq",),
          lambda r: _layer(r, "GPTQ")["weight error"] > _layer(r, "RTN")["weight error"]
          and _layer(r, "GPTQ")["output error (held-out)"] < _layer(r, "RTN")["output error (held-out)"],
          "On the layer of section 3 GPTQ no longer trades weight error for output error: check the compact GPTQ."),
    Claim("03-symmetric-coarser", "03_gptq",
          "so it rounds more coarsely than the asymmetric one (compare our two RTN columns)",
          ("03_gptq",),
          lambda r: all(var(r, "03_gptq", f"rtn_asym_w{b}", "perplexity") < var(r, "03_gptq", f"rtn_w{b}", "perplexity")
                        for b in (3, 4)),
          "Symmetric RTN is no longer worse than asymmetric RTN in perplexity: rewrite *What to read from it*."),
    # ------------------------------------------------------------------ 04
    Claim("04-activation-channels", "04_awq",
          "channels chosen by *activation* matter more than channels chosen by weight, and scaling recovers much of "
          "that benefit",
          ("04_awq",),
          lambda r: (lambda e: e["RTN, top 1% channels by |activation| kept fp16"]
                     < e["RTN, top 1% channels by |weight| kept fp16"]
                     and next(v for k, v in e.items() if k.startswith("AWQ scaling")) < e["RTN"])(
              r["04_awq"]["extra"]["layer_experiment"]["errors"]),
          "The one-layer experiment no longer reproduces the paper's finding: rewrite section 3's *Reading it*."),
    Claim("04-small-model-costs-more", "04_awq",
          "a 135M model has far less redundancy, so every method costs more",
          ("03_gptq", "04_awq"),
          lambda r: all(ppl_ratio(r, "04_awq", v, "baseline") > PAPER_7B[v] for v in PAPER_7B),
          "A method lost no more perplexity here than on the paper's 7B model: rewrite section 6's *Reading it*."),
    # ------------------------------------------------------------------ 05
    Claim("05-small-model-outlier", "05_bitsandbytes_int8_nf4",
          "Even a small model can have a few large activations",
          ("05_bitsandbytes_int8_nf4",),
          lambda r: _int8(r, "real activations")["outlier dims (|x| ≥ 6)"] >= 1
          and _int8(r, "real activations")["LLM.int8(): RMS error"]
          < _int8(r, "real activations")["absmax int8: RMS error"],
          "The layer's real activations no longer cross the threshold, or the decomposition no longer lowers the "
          "error there: rewrite the text under the int8 table (and exercise 2)."),
    Claim("05-nf4-close-to-nf4dq", "05_bitsandbytes_int8_nf4",
          "NF4 + double quantization close to NF4 with less memory",
          ("05_bitsandbytes_int8_nf4",),
          lambda r: var(r, "05_bitsandbytes_int8_nf4", "nf4_dq", "footprint_mb")
          < var(r, "05_bitsandbytes_int8_nf4", "nf4", "footprint_mb"),
          "Double quantization no longer shows less memory: check measure.footprint_mb."),
    # ------------------------------------------------------------------ 06
    Claim("06-rss-cannot-show", "06_qlora",
          "Peak RSS on a CPU is not a measure that can show it",
          ("06_qlora",),
          lambda r: var(r, "06_qlora", "qlora", "peak_rss_mb") > 0.95 * var(r, "06_qlora", "lora", "peak_rss_mb"),
          "QLoRA's peak RSS is now clearly below LoRA's: the text can let RSS show the saving."),
    Claim("06-nf4-slower-on-cpu", "06_qlora",
          "Time per step: on a CPU the NF4 path dequantizes every weight block in every step, with no fused kernel",
          ("06_qlora",),
          lambda r: r["06_qlora"]["extra"]["qlora"]["seconds_per_step"] > r["06_qlora"]["extra"]["lora"]["seconds_per_step"],
          "QLoRA is no longer slower per step than LoRA on this CPU: rewrite the sentence."),
    Claim("06-merge-into-4bit-lossy", "06_qlora",
          "(c) carries a second, NF4 rounding error on top",
          ("06_qlora",),
          lambda r: (lambda d: d["(c) merged into 4-bit"]["max |Δ logit| vs (a)"]
                     > d["(b) merged, dequantized base"]["max |Δ logit| vs (a)"]
                     and d["(c) merged into 4-bit"]["same next token as (a)"]
                     < d["(b) merged, dequantized base"]["same next token as (a)"])(
              r["06_qlora"]["extra"]["deploy_logit_check"]),
          "Merging into the 4-bit weights is no longer worse than merging into the dequantized base: check section 4."),
    # ------------------------------------------------------------------ 07
    Claim("07-q4_1-erased-tuning", "07_method_comparison",
          "In the reference `cpu` run it did",
          ("07_method_comparison",),
          lambda r: var(r, "07_method_comparison", "dpo_gguf_q4_1", "skill_accuracy")
          <= var(r, "07_method_comparison", "base", "skill_accuracy") + 0.02
          and abs(ppl_ratio(r, "07_method_comparison", "dpo_gguf_q4_1", "base") - 1) < 0.02,
          "Q4_1 no longer lands back on the base model: remove the sentence about the reference run."),
    Claim("07-q8_0-near-lossless", "07_method_comparison",
          "Q8_0 is expected to be near-lossless",
          ("07_method_comparison",),
          lambda r: not cmp(r, "07_method_comparison", "dpo_gguf_q8_0 vs dpo")["clear"]
          and ppl_ratio(r, "07_method_comparison", "dpo_gguf_q8_0", "dpo") < 1.01,
          "Q8_0 now costs accuracy or perplexity beyond noise: look for a bug in the Q8_0 function first."),
    Claim("07-small-model-costs-more", "07_method_comparison",
          "A 135M model has little redundancy, so every method can cost more here than the papers' 7B numbers suggest",
          ("07_method_comparison",),
          lambda r: all(ppl_ratio(r, "07_method_comparison", f"dpo_{v}", "dpo") > PAPER_7B[v] for v in PAPER_7B),
          "A method lost no more perplexity here than on the paper's 7B model: rewrite the bullet."),
    Claim("07-lora-rows-from-06", "07_method_comparison",
          "The LoRA/QLoRA rows come from notebook 06's results file (same profile), where they were measured",
          ("06_qlora", "07_method_comparison"),
          lambda r: all(r["07_method_comparison"]["variants"][f"{v}_06"] == r["06_qlora"]["variants"][v]
                        for v in ("lora", "qlora", "qlora_loftq")),
          "07's LoRA/QLoRA rows differ from 06's results: rerun 07 after 06."),
    # ------------------------------------------------------------------ 08
    Claim("08-all-wrong-skills-stay", "08_grpo",
          "skills whose groups are mostly all wrong (knowledge the small model lacks) stay where they were",
          ("08_grpo",),
          lambda r: (lambda x: all(not x["per_skill_differences"]["grpo vs sft_lora"][skill]["clear"]
                                   for skill, g in x["groups_by_skill"].items() if g["all wrong"] > 0.5))(
              r["08_grpo"]["extra"]),
          "GRPO moved a skill whose groups were mostly all wrong beyond noise: rewrite *Reading the numbers*."),
    # ------------------------------------------------------------------ README
    Claim("readme-base-zero", "README.md",
          "The base model scores 0% because it answers in full\nsentences",
          ("01_sft_lora",),
          lambda r: var(r, "01_sft_lora", "base", "skill_accuracy") == 0.0
          and r["01_sft_lora"]["extra"]["mention_rate"]["base"] > 0.2,
          "The base model no longer scores 0%: rewrite the README's sentence under the results table."),
]


# --------------------------------------------------------------------------- checking

def load_results(results_dir: str | Path | None = None) -> Results:
    """Every results file of ``results_dir`` (default: the repository's results/) by stem."""
    folder = Path(results_dir) if results_dir else ROOT / "results"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _checkable(r: Results, claim: Claim) -> str | None:
    """None when the claim can be checked on ``r``, else why not."""
    for stem in claim.needs:
        if stem not in r:
            return f"results/{stem}.json is missing"
        profile = r[stem].get("profile", REFERENCE_PROFILE) if stem != "course_run_times" else REFERENCE_PROFILE
        if profile != REFERENCE_PROFILE:
            return f"results/{stem}.json is from profile {profile!r}, not the reference {REFERENCE_PROFILE!r}"
    return None


def evaluate(results: Results, claims: list[Claim] | None = None) -> list[tuple[Claim, str, str]]:
    """(claim, status, detail) for every claim: status "holds", "FAILS" or "not checked"."""
    out = []
    for claim in CLAIMS if claims is None else claims:
        why = _checkable(results, claim)
        if why:
            out.append((claim, "not checked", why))
            continue
        try:
            ok = bool(claim.holds(results))
            detail = "" if ok else claim.on_failure
        except (KeyError, StopIteration, TypeError, ZeroDivisionError) as exc:
            ok, detail = False, (f"the results lack what the condition reads ({type(exc).__name__}: {exc}); "
                                 + claim.on_failure)
        out.append((claim, "holds" if ok else "FAILS", detail))
    return out


def check(results: Results, claims: list[Claim] | None = None) -> list[tuple[Claim, str]]:
    """The claims that no longer hold on ``results``, each with what to do."""
    return [(c, detail) for c, status, detail in evaluate(results, claims) if status == "FAILS"]


def markdown_of(where: str, root: Path = ROOT) -> str:
    """The Markdown a claim's fragment must stand in: a notebook's Markdown cells joined, or the README."""
    if where == "README.md":
        return (root / "README.md").read_text()
    nb = json.loads((root / "notebooks" / f"{where}.ipynb").read_text())
    return "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def report(results: Results) -> tuple[str, int]:
    """The printed check and the number of failures."""
    lines, failures = [], 0
    for claim, status, detail in evaluate(results):
        failures += status == "FAILS"
        text = " ".join(claim.fragment.split())
        lines.append(f"{status:<11} {claim.id} ({claim.where}): \"{text[:90]}{'…' if len(text) > 90 else ''}\""
                     + (f"\n            -> {detail}" if detail else ""))
    return "\n".join(lines), failures


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text, failures = report(load_results(argv[0] if argv else None))
    print(text)
    print(f"\n{len(CLAIMS) - failures} of {len(CLAIMS)} claims hold or are not checked; {failures} FAIL."
          if failures else f"\nNo claim fails ({len(CLAIMS)} registered).")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
