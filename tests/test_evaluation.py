import math

import pytest
import torch

from helpers import evaluation
from helpers.data import load_skills
from helpers.models import load_model_and_tokenizer
from helpers.profiles import get_profile


@pytest.fixture(scope="module")
def tiny():
    model, tok, _ = load_model_and_tokenizer(get_profile("tiny"))
    return model, tok


def test_generate_keeps_order_and_restores_padding_side(tiny):
    model, tok = tiny
    prompts = ["short", "a much longer prompt " * 5, [{"role": "user", "content": "chat form"}]]
    side = tok.padding_side
    batched = evaluation.generate(model, tok, prompts, max_new_tokens=4, batch_size=2, progress=False)
    single = [evaluation.generate(model, tok, [p], max_new_tokens=4, progress=False)[0] for p in prompts]
    assert batched == single  # left padding and re-ordering do not change greedy outputs
    assert tok.padding_side == side


def test_shared_prefix_length_leaves_a_token_per_row():
    assert evaluation.shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert evaluation.shared_prefix_length([[1, 2], [1, 2, 3]]) == 1   # each row keeps at least one token
    assert evaluation.shared_prefix_length([[7, 8, 9]]) == 0            # nothing to share with
    assert evaluation.shared_prefix_length([[1, 2], [3, 4]]) == 0


def test_generate_with_prefix_cache_gives_the_same_answers(tiny, monkeypatch):
    model, tok = tiny
    prompts = [r["prompt"] for r in load_skills("eval", 10)]
    assert evaluation.shared_prefix_length(evaluation.prompt_token_ids(tok, prompts)) >= evaluation.MIN_SHARED_PREFIX
    cached = evaluation.generate(model, tok, prompts, max_new_tokens=8, batch_size=4, progress=False)
    monkeypatch.setattr(evaluation, "MIN_SHARED_PREFIX", 10**6)   # every prompt computed in full
    assert evaluation.generate(model, tok, prompts, max_new_tokens=8, batch_size=4, progress=False) == cached


def test_generate_rejects_empty(tiny):
    with pytest.raises(ValueError, match="no prompts"):
        evaluation.generate(*tiny, [])


def test_evaluate_skills_scores_with_the_checker(tiny, monkeypatch):
    rows = load_skills("eval", 8)
    canned = [r["answer"] if i % 2 == 0 else f"The answer is {r['answer']}." for i, r in enumerate(rows)]
    monkeypatch.setattr(evaluation, "generate", lambda *a, **k: canned)
    report = evaluation.evaluate_skills(*tiny, rows)
    assert report.accuracy == 0.5
    assert report.mention_rate == 1.0
    assert set(report.per_skill) == {r["skill"] for r in rows}
    assert [r["correct"] for r in report.rows] == [True, False] * 4


def test_evaluate_skills_rejects_empty(tiny):
    with pytest.raises(ValueError, match="evaluation set given to evaluate_skills.* is empty"):
        evaluation.evaluate_skills(*tiny, [])


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tiny):
    model, tok = tiny
    import copy

    uniform = copy.deepcopy(model)
    with torch.no_grad():
        uniform.lm_head.weight.zero_()  # tied: zero logits everywhere -> uniform distribution
    ppl = evaluation.perplexity(uniform, tok, "The quick brown fox jumps over the lazy dog. " * 20, window=32)
    assert math.isclose(ppl, len(tok), rel_tol=1e-3)


def test_perplexity_matches_exp_loss_on_one_window(tiny):
    model, tok = tiny
    text = "Return a new list containing all items from the iterable in ascending order."
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = math.exp(model(input_ids=ids, labels=ids).loss.item())
    assert math.isclose(evaluation.perplexity(model, tok, text, window=512), expected, rel_tol=1e-5)


def test_perplexity_needs_text(tiny):
    with pytest.raises(ValueError, match="at least two tokens"):
        evaluation.perplexity(*tiny, "")


def test_harness_measures_every_variant_alike_and_keeps_reports(tiny):
    from helpers import measure, text

    model, tok = tiny
    profile = get_profile("tiny")
    rows = load_skills("eval", 6)
    harness = measure.Harness(tok, profile, rows, text.stdlib_text("eval", 4000), autocast=True)
    direct, _ = measure.measure_variant(model, tok, profile, rows, text.stdlib_text("eval", 4000), autocast=True, speed=False)
    got = harness.record("a", model, speed=False, load_seconds=1.5)
    assert set(harness.metrics) == set(harness.reports) == {"a"}
    assert got["perplexity"] == pytest.approx(direct["perplexity"]) and got["load_seconds"] == 1.5
    assert len(harness.reports["a"].rows) == len(rows) and "tokens_per_second" not in got


def test_harness_adopts_quality_numbers_but_measures_the_rest_here(tiny, monkeypatch):
    from helpers import measure, text

    model, tok = tiny
    profile = get_profile("tiny")
    harness = measure.Harness(tok, profile, load_skills("eval", 6), text.stdlib_text("eval", 4000), autocast=True)
    calls = []
    monkeypatch.setattr(measure, "evaluate_skills", lambda *a, **k: calls.append("skills"))
    got = harness.record("b", model, adopt=({"skill_accuracy": 0.25, "tokens_per_second": 1e9}, "01_sft_lora (today)"),
                         speed=False, load_seconds=2.0)
    assert calls == []                                           # the skill evaluation did not run ...
    assert got["skill_accuracy"] == 0.25 and got["perplexity"] > 1  # ... perplexity did, here
    assert "tokens_per_second" not in got and got["load_seconds"] == 2.0  # only quality numbers are adopted
    assert "b" not in harness.reports
    assert harness.sources["b"] == "measured here (skill accuracy from 01_sft_lora (today))"
    with pytest.raises(ValueError, match="only 'perplexity', 'skill_accuracy', 'preference_accuracy'"):
        measure.measure_variant(model, tok, profile, [], "", skip=("footprint_mb",))


def test_harness_takes_an_earlier_row_only_on_the_same_weights(tiny, monkeypatch, tmp_path):
    """record_or_reuse(earlier=(notebook, variant, weights)): a complete row measured on these weights is taken whole,
    an accuracy-only row gives its quality numbers (the rest measured here), and a row of other weights is measured
    again: what notebook 07's table does with notebooks 01-05's rows."""
    from helpers import measure, results, text

    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path))
    model, tok = tiny
    profile = get_profile("tiny")
    results.write_results("03_gptq", profile, {"baseline": {"perplexity": 9.0, "skill_accuracy": 0.5}}, n_eval=6, model="m", wall_seconds=1.0,
                          model_dir="weights-a")
    results.write_results("01_sft_lora", profile, {"base": {"skill_accuracy": 0.25}}, n_eval=6, model="m", wall_seconds=1.0,
                          variant_weights={"base": "weights-b"})
    harness = measure.Harness(tok, profile, load_skills("eval", 6), text.stdlib_text("eval", 4000))
    whole = harness.record_or_reuse("dpo", lambda: model, earlier=("03_gptq", "baseline", "weights-a"), speed=False)
    assert whole == {"perplexity": 9.0, "skill_accuracy": 0.5} and harness.sources["dpo"].startswith("03_gptq")
    quality = harness.record_or_reuse("base", lambda: model, earlier=("01_sft_lora", "base", "weights-b"), speed=False)
    assert quality["skill_accuracy"] == 0.25 and quality["perplexity"] > 1 and "load_seconds" in quality
    assert harness.sources["base"].startswith("measured here (skill accuracy from 01_sft_lora")
    other = harness.record_or_reuse("dpo2", lambda: model, earlier=("03_gptq", "baseline", "weights-c"), speed=False)
    assert other["perplexity"] != 9.0 and harness.sources["dpo2"] == "measured here"
