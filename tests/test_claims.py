"""The registered claims about this course's numbers (helpers/claims.py) hold on the committed reference results,
still stand in the prose they were registered for, and can fail."""

from __future__ import annotations

import copy

import pytest

from helpers import claims

RESULTS = claims.load_results()


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.id)
def test_claim_holds_on_the_committed_reference_results(claim):
    [(_, status, detail)] = claims.evaluate(RESULTS, [claim])
    assert status == "holds", f"{claim.id} ({claim.where}) {status}: {detail}"


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.id)
def test_claim_still_stands_in_its_prose(claim):
    assert claim.fragment in claims.markdown_of(claim.where), (
        f"{claim.id}: the registered sentence is no longer in {claim.where}'s Markdown; update its fragment in "
        "helpers/claims.py (or remove the claim if the sentence went)")


def test_ids_are_unique_and_every_claim_says_what_to_do():
    ids = [c.id for c in claims.CLAIMS]
    assert len(ids) == len(set(ids))
    assert all(c.on_failure and c.needs for c in claims.CLAIMS)


def test_altered_results_make_claims_fail():
    r = copy.deepcopy(RESULTS)
    r["07_method_comparison"]["variants"]["dpo_gguf_q4_1"]["skill_accuracy"] = 0.55   # Q4_1 kept the tuning
    r["06_qlora"]["variants"]["qlora"]["peak_rss_mb"] = 1000.0                          # RSS shows a saving
    failed = {c.id for c, _ in claims.check(r)}
    assert {"07-q4_1-erased-tuning", "06-rss-cannot-show"} <= failed
    assert not claims.check(RESULTS)


def test_missing_keys_fail_and_other_profiles_are_not_checked():
    r = copy.deepcopy(RESULTS)
    del r["03_gptq"]["extra"]["layer_experiment"]
    r["05_bitsandbytes_int8_nf4"]["profile"] = "tiny"
    by_id = {c.id: (status, detail) for c, status, detail in claims.evaluate(r)}
    assert by_id["03-gptq-weight-vs-output-error"][0] == "FAILS" and "KeyError" in by_id["03-gptq-weight-vs-output-error"][1]
    assert by_id["05-small-model-outlier"][0] == "not checked"


def test_cli_prints_each_claim_and_exits_1_on_a_failure(tmp_path, capsys):
    import json

    for stem, data in RESULTS.items():
        (tmp_path / f"{stem}.json").write_text(json.dumps(data))
    assert claims.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("holds") == len(claims.CLAIMS)
    bad = copy.deepcopy(RESULTS["03_gptq"])
    bad["variants"]["rtn_asym_w4"]["perplexity"] = 99.0
    (tmp_path / "03_gptq.json").write_text(json.dumps(bad))
    assert claims.main([str(tmp_path)]) == 1
    assert "FAILS       03-symmetric-coarser" in capsys.readouterr().out
