import json
import re

import pytest

from helpers.data import load_skills
from helpers.paths import DATA_DIR
from helpers.skills import SKILLS, check_answer, generate_splits, mentions_answer, normalize_answer, to_jsonl


@pytest.mark.parametrize(
    "response,answers,ok",
    [
        ("Paris", ["Paris"], True),
        ("paris.", ["Paris"], True),
        ('"Paris"', ["Paris"], True),
        ("  **Paris**  ", ["Paris"], True),
        ("Bogotá", ["Bogota"], True),  # accents folded
        ("Washington, D.C.", ["Washington", "Washington, D.C."], True),
        ("The capital of France is Paris.", ["Paris"], False),  # a sentence is not the answer
        ("Paris, France", ["Paris"], False),
        ("Pariss", ["Paris"], False),
        ("", ["Paris"], False),
        ("New  Delhi", ["New Delhi"], True),  # inner whitespace collapsed
        ("42", ["42"], True),
        ("420", ["42"], False),
        ("cats", ["cat"], False),
    ],
)
def test_check_answer_rules(response, answers, ok):
    assert check_answer(response, answers) is ok


def test_case_sensitive_mode():
    assert check_answer("GREEN APPLE", ["GREEN APPLE"], case_sensitive=True)
    assert not check_answer("Green Apple", ["GREEN APPLE"], case_sensitive=True)
    assert normalize_answer("ÉTÉ!", case_sensitive=False) == "ete"


def test_mentions_answer_is_word_bounded():
    assert mentions_answer("The capital of France is Paris.", ["Paris"])
    assert not mentions_answer("I like cats", ["cat"])
    assert not mentions_answer("sub-Paris", ["Paris"])
    assert mentions_answer("It is 58.", ["58"]) and not mentions_answer("It is 580.", ["58"])


def test_generation_is_deterministic_and_matches_shipped_files():
    a, b = generate_splits(), generate_splits()
    assert a == b
    for split, rows in a.items():
        shipped = (DATA_DIR / f"skills_{split}.jsonl").read_text(encoding="utf-8")
        assert shipped == to_jsonl(rows), f"data/skills_{split}.jsonl is stale: run `python -m helpers.skills`"


def test_sizes_and_skill_coverage():
    splits = generate_splits()
    assert len(SKILLS) >= 5
    assert len(splits["eval"]) >= 200
    for split in splits.values():
        assert {r["skill"] for r in split} == set(SKILLS)


def _operands(row):
    """Words and numbers of the prompt that are not part of the skill's phrasing."""
    return set(re.findall(r"'([^']+)'", row["prompt"])) | set(re.findall(r"\b\d+\b", row["prompt"]))


def test_eval_operands_and_phrasings_never_in_training():
    splits = generate_splits()
    train = splits["sft_train"] + splits["dpo_train"]
    train_prompts = {r["prompt"] for r in train}
    train_ops = set().union(*(_operands(r) for r in train))
    train_answers = {a.lower() for r in train for a in r["answers"]}
    for row in splits["eval"]:
        assert row["prompt"] not in train_prompts
        assert not (_operands(row) & train_ops), row
        if row["skill"] in ("capital", "antonym", "plural", "past_tense"):
            assert row["answer"].lower() not in train_answers, row
    for row in splits["eval"]:
        for template in SKILLS[row["skill"]].train_templates:
            assert not _template_regex(template).fullmatch(row["prompt"]), (template, row["prompt"])


def _template_regex(template):
    return re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)))


def test_template_regex_recognises_its_own_phrasing():
    row = generate_splits()["sft_train"][0]
    assert any(_template_regex(t).fullmatch(row["prompt"]) for t in SKILLS[row["skill"]].train_templates)


def test_rejected_answers_are_wrong_and_differ_from_chosen():
    for rows in generate_splits().values():
        for row in rows:
            assert row["wrong"] and row["wrong"] != row["answer"]
            assert not check_answer(row["wrong"], row["answers"], row["case_sensitive"])
            assert check_answer(row["answer"], row["answers"], row["case_sensitive"])


def test_shipped_files_load_with_all_columns():
    rows = load_skills("eval")
    assert len(rows) == sum(1 for _ in (DATA_DIR / "skills_eval.jsonl").open())
    assert all(isinstance(r["answers"], list) for r in rows)
    json.dumps(rows)
