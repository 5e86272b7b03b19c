"""Real datasets, offline: the Hub loaders run end to end on the course's copies in each dataset's exact Hub schema,
the chat-template split of multi-turn pairs, and your own JSONL/CSV data with a column mapping."""

import dataclasses
import json

import pytest
from datasets import load_dataset

from helpers import data, dpo, hub_data, hub_fixtures, training
from helpers.data import DataError
from helpers.models import load_model_and_tokenizer
from helpers.paths import DATA_DIR
from helpers.profiles import PROFILES, ProfileError, get_profile

UF, HH, CHAT = "HuggingFaceH4/ultrafeedback_binarized", "Anthropic/hh-rlhf", "HuggingFaceH4/ultrachat_200k"


# --- the fixtures are in the Hub's schema, and are what the generator writes -----------------------------------

@pytest.mark.parametrize("dataset_id", sorted(hub_data.DATASETS))
def test_fixture_has_the_hub_splits_columns_and_types(dataset_id):
    info = hub_data.DATASETS[dataset_id]
    loaded = load_dataset(hub_data.source(dataset_id, "fixtures"))
    assert tuple(loaded) == info.splits                                 # the Hub's split names, in the card's order
    for split in info.splits:
        assert loaded[split].column_names == list(info.columns)
        assert loaded[split].features == hub_fixtures._features(dataset_id)   # list<struct<content, role>>, float64, ...


def test_fixtures_are_what_the_generator_writes(tmp_path):
    hub_fixtures.write_fixtures(tmp_path)
    for path in sorted(tmp_path.rglob("*.*")):
        shipped = hub_data.FIXTURES_DIR / path.relative_to(tmp_path)
        assert shipped.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), shipped


def test_source_is_the_hub_id_unless_a_local_copy_is_named(monkeypatch, tmp_path):
    monkeypatch.delenv(hub_data.HUB_DATA_ENV, raising=False)
    assert hub_data.source(UF) == UF                                    # what Colab runs
    assert hub_data.source(UF, "fixtures") == str(hub_data.FIXTURES_DIR / UF)
    monkeypatch.setenv(hub_data.HUB_DATA_ENV, str(tmp_path))
    with pytest.raises(DataError, match="No local copy of HuggingFaceH4/ultrafeedback_binarized"):
        hub_data.source(UF)


def test_unknown_dataset_and_split_are_refused():
    with pytest.raises(DataError, match="does not know the dataset 'someone/else'"):
        hub_data.stream_rows("someone/else", "train", 4)
    with pytest.raises(DataError, match="has no split 'train'; its splits are"):
        hub_data.stream_rows(UF, "train", 4, "fixtures")


# --- the profile's data path: tiny reads the GPU profiles' datasets from the fixtures --------------------------

def test_gpu_profiles_name_real_datasets():
    for name in ("t4", "a100"):
        p = PROFILES[name]
        assert (p.sft_dataset, p.preference_dataset) == (CHAT, UF)
        assert p.sft_mix_rows > 0 and p.preference_rows >= p.dpo_steps * p.dpo_batch_size and p.preference_test_rows > 0


def test_t4_profile_reads_its_datasets():
    from helpers.models import load_tokenizer

    t4 = dataclasses.replace(PROFILES["t4"], hub_data="fixtures", sft_mix_rows=10, preference_rows=20,
                             preference_test_rows=8, n_train=30)
    rows = data.sft_rows(t4)
    assert len(rows) == 30 + 10 and rows[-1]["completion"][0]["role"] == "assistant"
    tokenizer = load_tokenizer(PROFILES["tiny"])   # SmolLM2's tokenizer, offline
    train, test = dpo.preference_rows(t4, "dpo_train"), dpo.dataset_test_pairs(t4, tokenizer)
    assert len(test) == 8 and 18 <= len(train) <= 20   # the tie in the sample, if drawn, is dropped by clean_pairs
    assert not {p["prompt"][-1]["content"] for p in train} & {p["prompt"][-1]["content"] for p in test}


def test_skills_profiles_have_no_dataset_test_pairs():
    assert dpo.dataset_test_pairs(dataclasses.replace(PROFILES["cpu"])) is None


def test_switch_preference_dataset_by_environment(monkeypatch):
    monkeypatch.setenv("COURSE_PREFERENCE_DATASET", HH)
    profile = get_profile("tiny")
    assert profile.preference_dataset == HH and "COURSE_PREFERENCE_DATASET" in profile.reason
    pairs = dpo.preference_rows(profile, "dpo_train")
    assert any(len(p["prompt"]) == 3 for p in pairs)   # the transcripts with an opening exchange
    monkeypatch.setenv("COURSE_PREFERENCE_DATASET", "ultrafeedback")
    with pytest.raises(ProfileError, match="preference_dataset='ultrafeedback'"):
        get_profile("tiny")


def test_hub_rows_that_break_the_schema_are_reported_and_left_out(capsys):
    pairs = data.hub_preference_rows(HH, "train", 48, "fixtures")
    out = capsys.readouterr().out
    assert len(pairs) == 47 and "1 of 48 rows cannot be used" in out
    assert "differ before their last 'Assistant:' turn" in out and "drop the row" in out


def test_multi_turn_chat_rows_keep_their_first_exchange(capsys):
    """Hub chat rows are cut after their first answer (whole conversations would mostly exceed max_length), and the
    kept share is said and recorded; a chat row given directly still trains on its last answer."""
    from helpers import hub_data

    raw = hub_data.stream_rows(CHAT, "train_sft", 48, "fixtures")
    multi_turn = sum(sum(m["role"] == "assistant" for m in r["messages"]) > 1 for r in raw)
    rows = data.hub_sft_rows(CHAT, "train_sft", 48, "fixtures")
    assert multi_turn and all([m["role"] for m in r["prompt"]] in (["user"], ["system", "user"]) for r in rows)
    kept = hub_data.KEPT[f"{CHAT} [train_sft]"]
    assert kept["rows_cut"] == multi_turn and 0 < kept["turns_kept_share"] < 1
    assert f"{multi_turn} of 48 rows had more" in capsys.readouterr().out
    last = data.normalize_sft_row(raw[next(i for i, r in enumerate(raw) if len(r["messages"]) > 2)])
    assert last["prompt"][-1]["role"] == "user" and len(last["prompt"]) >= 3


# --- chat templates: how a multi-turn pair is split into prompt and answers -------------------------------------

HISTORY = [{"role": "user", "content": "Hi, a quick question?"}, {"role": "assistant", "content": "Sure."},
           {"role": "user", "content": "What is the capital of Peru?"}]


def test_multi_turn_ultrafeedback_row_splits_before_the_last_answer():
    row = {"prompt": "What is the capital of Peru?", "chosen": HISTORY + [{"role": "assistant", "content": "Lima"}],
           "rejected": HISTORY + [{"role": "assistant", "content": "Cusco"}], "score_chosen": 9.0, "score_rejected": 2.0}
    out = data.normalize_preference_row(row)
    assert out == {"prompt": HISTORY, "chosen": [{"role": "assistant", "content": "Lima"}],
                   "rejected": [{"role": "assistant", "content": "Cusco"}]}


def test_multi_turn_hh_row_splits_before_the_last_answer():
    head = "\n\nHuman: Hi, a quick question?\n\nAssistant: Sure.\n\nHuman: What is the capital of Peru?"
    out = data.normalize_preference_row({"chosen": head + "\n\nAssistant: Lima", "rejected": head + "\n\nAssistant: Cusco"})
    assert out["prompt"] == HISTORY and out["chosen"][0]["content"] == "Lima" and out["rejected"][0]["content"] == "Cusco"


@pytest.mark.parametrize("shape", ["ultrafeedback", "hh-rlhf"])
def test_histories_that_diverge_before_the_last_turn_are_refused(shape):
    other = [dict(HISTORY[0]), {"role": "assistant", "content": "No."}, dict(HISTORY[2])]
    if shape == "ultrafeedback":
        row = {"prompt": "What is the capital of Peru?", "chosen": HISTORY + [{"role": "assistant", "content": "Lima"}],
               "rejected": other + [{"role": "assistant", "content": "Cusco"}]}
    else:
        def text(msgs):
            return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in msgs)
        row = {"chosen": text(HISTORY) + "\n\nAssistant: Lima", "rejected": text(other) + "\n\nAssistant: Cusco"}
    with pytest.raises(data.RowError, match="differ before their last") as err:
        data.normalize_preference_row(row)
    assert "same conversation" in err.value.fix


def test_chat_template_extends_the_prompt_with_the_answer():
    _, tok, _ = load_model_and_tokenizer(get_profile("tiny"))
    prompt = tok.apply_chat_template(HISTORY, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(HISTORY + [{"role": "assistant", "content": "Lima"}], tokenize=False)
    assert full.startswith(prompt) and full[len(prompt):].startswith("Lima<|im_end|>")
    assert prompt.count("<|im_start|>user") == 2 and prompt.endswith("<|im_start|>assistant\n")


# --- your own data ----------------------------------------------------------------------------------------------

SFT_MAP = {"prompt": "question", "completion": "reply"}
PREF_MAP = {"prompt": "instruction", "chosen": "good", "rejected": "bad"}


def test_own_csv_with_a_column_mapping(capsys):
    rows = data.load_own(DATA_DIR / "examples" / "my_sft.csv", "sft", SFT_MAP)
    out = capsys.readouterr().out
    assert len(rows) == 12 and rows[0]["completion"] == [{"role": "assistant", "content": "Nairobi"}]
    assert "line 10: 'reply' is empty or missing" in out and "line 12: 5 cells where the header names 3" in out
    assert "fill it in" in out and "quote cells that contain commas" in out


def test_own_jsonl_preferences_report_every_bad_line(capsys):
    rows = data.load_own(DATA_DIR / "examples" / "my_preferences.jsonl", "preference", PREF_MAP)
    out = capsys.readouterr().out
    assert len(rows) == 10 and "3 of 13 rows cannot be used" in out
    for line, rule in ((8, "chosen and rejected are the same answer"), (9, "'bad' is empty or missing"), (11, "not valid JSON")):
        assert f"line {line}: {rule}" in out


def test_own_data_system_column_and_refusals(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"q": "2+2?", "a": "4", "sys": "Answer briefly."}) + "\n", encoding="utf-8")
    row = data.load_own(path, "sft", {"prompt": "q", "completion": "a", "system": "sys"})[0]
    assert row["prompt"][0] == {"role": "system", "content": "Answer briefly."}
    with pytest.raises(DataError, match=r"no column 'answer' \(for 'completion'\)"):
        data.load_own(path, "sft", {"prompt": "q", "completion": "answer"})
    with pytest.raises(DataError, match="columns maps \\['chosen'\\], which sft rows do not have"):
        data.load_own(path, "sft", {"chosen": "a"})
    empty = tmp_path / "empty.csv"
    empty.write_text("question,reply\n,\n ,\n", encoding="utf-8")
    with pytest.raises(DataError, match="none of its 2 rows can be used"):
        data.load_own(empty, "sft", SFT_MAP)
    text = tmp_path / "mine.txt"
    text.write_text("question reply\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"read \.jsonl .* or \.csv"):
        data.load_own(text, "sft", SFT_MAP)


def test_own_data_trains_with_the_sft_recipe():
    profile = get_profile("tiny")
    model, tok, _ = load_model_and_tokenizer(profile)
    rows = data.load_own(DATA_DIR / "examples" / "my_sft.csv", "sft", SFT_MAP)
    trainer = training.train_sft_lora(profile, model, tok, rows, max_steps=1)
    assert trainer.state.global_step == 1 and len(trainer.train_dataset) == 12


# --- DPO on UltraFeedback-shaped data, held-out preference accuracy on its test split -------------------------

def test_tiny_dpo_on_ultrafeedback_reports_held_out_preference_accuracy():
    profile = get_profile("tiny")
    assert profile.preference_dataset == UF and profile.hub_data == "fixtures"
    model, tok, _ = load_model_and_tokenizer(profile)
    train, test = dpo.preference_rows(profile, "dpo_train"), dpo.dataset_test_pairs(profile)
    trainer = dpo.train_dpo(profile, model, tok, train, max_steps=2)
    assert len(trainer.train_dataset) == len(train) and trainer.state.global_step == 2
    scores = dpo.score_pairs(trainer.model, tok, test)
    accuracy = dpo.ranking_accuracy(scores)
    assert len(scores.chosen) == len(test) == profile.preference_test_rows
    assert accuracy == float((scores.chosen > scores.rejected).float().mean())


def test_a_hub_dataset_offline_without_a_copy_says_what_to_do(monkeypatch):
    monkeypatch.delenv(hub_data.HUB_DATA_ENV, raising=False)
    with pytest.raises(DataError, match="Could not read Anthropic/hh-rlhf .*COURSE_HUB_DATA.*COURSE_PREFERENCE_DATASET=skills"):
        hub_data.stream_rows(HH, "train", 4)   # HF_DATASETS_OFFLINE=1 in the tests: the Hub cannot be reached
