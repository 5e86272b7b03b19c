import pytest

from helpers import comparison
from helpers.paths import fingerprint
from helpers.results import write_results


def test_measured_before_reuses_only_same_profile_and_weights(tmp_path, capsys):
    write_results("03_gptq", "cpu", {"baseline": {"perplexity": 10.0}}, n_eval=10, model="m", wall_seconds=1.0,
                  extra={"model_fingerprint": "abc"}, folder=tmp_path)
    metrics, source, _ = comparison.measured_before("03_gptq", "baseline", "cpu", "abc", folder=tmp_path)
    assert metrics == {"perplexity": 10.0} and source.startswith("03_gptq (")
    cases = [("03_gptq", "baseline", "cpu", "xyz", "other weights"),
             ("03_gptq", "baseline", "tiny", "abc", "profile 'cpu'"),
             ("03_gptq", "gptq_w4", "cpu", "abc", "no variant 'gptq_w4'"),
             ("05_bitsandbytes_int8_nf4", "int8", "cpu", "abc", "no results yet")]
    for notebook, variant, profile, print_, reason in cases:
        assert comparison.measured_before(notebook, variant, profile, print_, folder=tmp_path) is None
        assert reason in capsys.readouterr().out


def test_measured_before_checks_a_variant_against_its_own_fingerprint(tmp_path, capsys):
    write_results("02_dpo", "cpu", {"sft_lora": {"skill_accuracy": 0.5}, "dpo": {"skill_accuracy": 0.4}}, n_eval=10, model="m", wall_seconds=1.0,
                  extra={"variant_fingerprints": {"sft_lora": "sft"}}, folder=tmp_path)
    assert comparison.measured_before("02_dpo", "sft_lora", "cpu", "sft", folder=tmp_path)[0] == {"skill_accuracy": 0.5}
    assert comparison.measured_before("02_dpo", "dpo", "cpu", "sft", folder=tmp_path) is None  # no fingerprint of its own
    assert "other weights" in capsys.readouterr().out


def test_fingerprint_follows_the_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    first = fingerprint(tmp_path)
    assert fingerprint(tmp_path) == first and len(first) == 16
    (tmp_path / "model.safetensors").write_bytes(b"weights-2")
    assert fingerprint(tmp_path) != first
    with pytest.raises(FileNotFoundError, match="safetensors"):
        fingerprint(tmp_path / "missing")


def _outcome(bits):
    return {"correct": "".join("1" if b else "0" for b in bits)}


def test_compare_pairs_corrects_for_the_number_of_intervals_it_computes(capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random(289) < 0.5
    b = a.copy()
    b[np.flatnonzero(~a)[:20]] = True
    b[np.flatnonzero(a)[:6]] = False            # +20 / -6 prompts: clear at 95%, not once 48 intervals share the 5%
    outcomes = {"a": _outcome(a), "b": _outcome(b), "c": _outcome(a), "untested": {}}
    pairs = [("a", "b"), ("a", "c"), ("a", "untested")]
    assert comparison.interval_count(outcomes, pairs) == 2
    plain = comparison.compare_pairs(outcomes, pairs)
    assert "no per-prompt outcomes" in capsys.readouterr().out
    corrected = comparison.compare_pairs(outcomes, pairs * 24, multiplicity=True)   # 48 intervals
    assert plain["b vs a"]["skill_accuracy"]["clear"] and not corrected["b vs a"]["skill_accuracy"]["clear"]
    assert corrected["b vs a"]["skill_accuracy"]["level"] == pytest.approx(1 - 0.05 / 48)
    assert comparison.level_of(plain) == 0.95 and comparison.level_of(corrected) == pytest.approx(1 - 0.05 / 48)
    table = comparison.pairs_table(corrected)
    assert "skill: 99.9% interval" in table.columns and not any("McNemar" in c for c in table.columns)
    assert "(99.9% interval)" in comparison.verdict(corrected, "b vs a", "skill_accuracy")
    assert comparison.verdict(plain, "b vs a", "skill_accuracy").startswith("higher, +4.8 points")
    assert comparison.direction(plain, "b vs a", "skill_accuracy") == 1
    assert comparison.direction(plain, "c vs a", "skill_accuracy") == 0
    assert comparison.direction(plain, "c vs a", "perplexity") is None


def _entry(difference, low, high):
    return {"difference": difference, "low": low, "high": high, "level": 0.95, "clear": low > 0 or high < 0}


def _ratio(ratio, low, high):
    return {"ratio": ratio, "low": low, "high": high, "level": 0.95, "clear": low > 1 or high < 1}


def test_home_advantage_says_yes_no_or_not_clearly():
    fits = {"chat vs doc": {"skill_accuracy": _entry(0.07, 0.02, 0.12), "perplexity": _ratio(1.2, 1.1, 1.3)}}
    assert "? yes" in comparison.home_advantage(fits, "doc", "chat", "GPTQ")
    against = {"chat vs doc": {"skill_accuracy": _entry(-0.076, -0.135, -0.017), "perplexity": _ratio(1.05, 1.02, 1.08)}}
    sentence = comparison.home_advantage(against, "doc", "chat", "AWQ")
    assert sentence.startswith("AWQ") and "? no: chat calibration is clearly worse on the chat skills" in sentence
    noise = {"chat vs doc": {"skill_accuracy": _entry(0.01, -0.04, 0.06), "perplexity": _ratio(1.0, 0.98, 1.02)}}
    assert "not clearly" in comparison.home_advantage(noise, "doc", "chat", "AWQ")
    assert "not measured" in comparison.home_advantage({}, "doc", "chat", "AWQ")


def test_conclusion_is_computed_from_the_verdicts():
    metrics = {"base": {"skill_accuracy": 0.0}, "sft_lora": {"skill_accuracy": 0.6},
               "dpo": {"skill_accuracy": 0.585, "footprint_mb": 538.0},
               "dpo_gptq_w4": {"skill_accuracy": 0.53, "footprint_mb": 171.0},
               "dpo_int8": {"skill_accuracy": 0.56, "footprint_mb": 220.0},
               "dpo_rtn_w4": {"skill_accuracy": 0.44, "footprint_mb": 538.0},
               "dpo_gguf_q4_1": {"skill_accuracy": 0.0, "footprint_mb": 538.0}}
    comparisons = {"dpo vs sft_lora": {"skill_accuracy": _entry(-0.014, -0.07, 0.04)},
                   "dpo_gptq_w4 vs dpo": {"skill_accuracy": _entry(-0.055, -0.10, 0.01)},
                   "dpo_int8 vs dpo": {"skill_accuracy": _entry(-0.02, -0.06, 0.01)},
                   "dpo_rtn_w4 vs dpo": {"skill_accuracy": _entry(-0.145, -0.2, -0.08)},
                   "dpo_gguf_q4_1 vs dpo": {"skill_accuracy": _entry(-0.585, -0.64, -0.53)},
                   "dpo_gptq_w4 vs dpo_rtn_w4": {"skill_accuracy": _entry(0.09, 0.03, 0.15), "perplexity": _ratio(0.79, 0.74, 0.85)},
                   "dpo_gguf_q4_1 vs base": {"skill_accuracy": _entry(0.0, 0.0, 0.0), "perplexity": _ratio(0.998, 0.99, 1.002)}}
    text = comparison.conclusion(metrics, comparisons)
    assert "dpo_gptq_w4, dpo_int8 show no clear loss, and dpo_rtn_w4, dpo_gguf_q4_1 lose clearly" in text
    assert "smallest in memory among those that keep it is dpo_gptq_w4: 171 MB" in text   # rtn/gguf: simulated
    assert "GPTQ against RTN (same bits, group size and grid): skill accuracy higher" in text
    assert "Q4_1 erased the fine-tuning" in text and "Bonferroni" not in text
    comparisons["dpo_gguf_q4_1 vs dpo"]["skill_accuracy"] = _entry(-0.01, -0.05, 0.03)
    comparisons["dpo_gguf_q4_1 vs base"]["skill_accuracy"] = _entry(0.57, 0.5, 0.63)
    assert "Q4_1 did not erase the fine-tuning" in comparison.conclusion(metrics, comparisons)
    comparisons["dpo_gguf_q4_1 vs dpo"]["skill_accuracy"] = _entry(-0.3, -0.36, -0.24)
    assert "erased part of the fine-tuning" in comparison.conclusion(metrics, comparisons)


def test_notebook_07s_earlier_rows_list_a_quantized_row_only_where_its_notebook_chose_one(tmp_path):
    from helpers import measure, pipeline
    from helpers.profiles import get_profile

    tiny = get_profile("tiny")
    sft, tuned = tmp_path / "sft", tmp_path / "tuned"
    chosen = {"gptq": {"variant": "gptq_w4_chat"}, "awq": {"variant": None}}
    rows = pipeline.earlier_rows(tiny, sft, tuned, chosen, 4)
    assert rows["dpo_gptq_w4"] == ("03_gptq", "gptq_w4_chat", tuned)
    assert "dpo_awq_w4" not in rows                       # 04 chose none: measured in 07
    assert rows["base"] == ("01_sft_lora", "base", tiny) and rows["sft_lora"] == ("02_dpo", "sft_lora", sft)
    harness = measure.Harness(None, tiny, [], "", earlier=rows)
    assert harness.earlier["dpo"] == ("03_gptq", "baseline", tuned)
