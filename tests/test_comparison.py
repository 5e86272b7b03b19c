import pytest

from helpers import comparison
from helpers.paths import fingerprint
from helpers.results import write_results


def test_measured_before_reuses_only_same_profile_and_weights(tmp_path, capsys):
    write_results("03_gptq", "cpu", "m", 1.0, 10, {"baseline": {"perplexity": 10.0}},
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
    write_results("02_dpo", "cpu", "m", 1.0, 10, {"sft_lora": {"skill_accuracy": 0.5}, "dpo": {"skill_accuracy": 0.4}},
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
