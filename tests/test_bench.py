"""scripts/bench.py: its arithmetic (work, rate, share of the limit) and its FLOP counts on the tiny model. No timing
is asserted: shares depend on the machine and the day."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402


def test_row_is_work_over_time_over_the_limit():
    limits = {"matmul_gflops": {"fp32": 100.0, "bf16": 400.0}, "bandwidth_gbs": 20.0}
    r = bench.row("x", 2.0, flops=200e9, bytes_moved=10e9, precision="bf16", limits=limits)
    assert r["achieved_gflops"] == 100.0 and r["share_of_matmul_limit"] == 0.25
    assert r["achieved_gbs"] == 5.0 and r["share_of_bandwidth"] == 0.25
    assert "share_of_matmul_limit" not in bench.row("x", 1.0, flops=1e9)
    # the roofline: 200 GFLOP at 400 GFLOP/s = 0.5 s against 10 GB at 20 GB/s = 0.5 s; more bytes make it
    # bandwidth-bound
    assert r["roofline_bound"] == "compute" and r["share_of_roofline"] == 0.25
    r = bench.row("x", 2.0, flops=200e9, bytes_moved=16e9, precision="bf16", limits=limits)
    assert r["roofline_bound"] == "bandwidth" and r["share_of_roofline"] == 0.4
    assert bench.roofline(1e9, 1.0, 1.0, 1.0) == (1.0, "compute")


def test_counted_flops_of_a_matmul_are_exact():
    import torch

    a, b = torch.randn(32, 64), torch.randn(64, 16)
    assert bench.counted_flops(lambda: a @ b) == 2 * 32 * 64 * 16


def test_the_counted_sft_step_is_four_times_n_t_on_tiny():
    """A LoRA step = forward (2·N·T) + the backward pass through the frozen weights (2·N·T), except the LM head (H
    parameters), which scores only the C labelled positions, the completions (TRL does this on a GPU;
    helpers.training.full_logits_head_on_cpu on a CPU): 4·(N − H)·T + 4·H·C. The count the step timer takes on the
    tiny model lies within that rule for the batch's shortest and longest rows; the head is most of tiny's
    parameters, so a head that scored every position would overshoot it."""
    from helpers import data, models, training
    from helpers.profiles import get_profile

    profile = get_profile("tiny")
    tokenizer = models.load_tokenizer(profile)
    rows = data.sft_rows(profile)[:8]
    count = lambda messages, gen=False: len(tokenizer.apply_chat_template(messages, add_generation_prompt=gen,
                                                                           return_dict=False))
    lengths = [count(r["prompt"] + r["completion"]) for r in rows]
    completions = [count(r["prompt"] + r["completion"]) - count(r["prompt"], True) for r in rows]
    model = models.load_model(profile)
    n = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight.numel()
    timer = bench.StepTimer(count_step=2)
    training.train_sft_lora(profile, model, tokenizer, rows, max_steps=2, callbacks=[timer.callback], logging_steps=2)
    assert len(timer.times) == 1 and timer.flops > 0
    batch = profile.train_batch_size
    rule = lambda t, c: 4 * batch * ((n - head) * t + head * c)
    assert 0.8 * rule(min(lengths), min(completions)) <= timer.flops <= 1.3 * rule(max(lengths), max(completions))
    assert timer.flops < 0.8 * 4 * n * batch * min(lengths), "the LM head scored every position"


def test_unknown_paths_are_refused_with_the_list(capsys):
    with pytest.raises(SystemExit):
        bench.main(["sft", "--quick"])
    assert "sft_step" in capsys.readouterr().err


def test_readme_shows_the_committed_bench():
    import json

    from sync_estimates import BENCH_END, BENCH_START, BENCH_FILES, bench_section

    block = bench_section()
    assert all(f"`make bench` on `cpu`" in block for _ in BENCH_FILES) and block.count("| path |") == sum(
        (ROOT / "results" / name).is_file() for name in BENCH_FILES)
    assert f"{BENCH_START}\n{block}{BENCH_END}" in (ROOT / "README.md").read_text(), \
        "README bench table is stale: run python scripts/sync_estimates.py"
