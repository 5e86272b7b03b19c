import pytest

from helpers.data import (
    DataError,
    load_skills,
    normalize_sft_row,
    read_jsonl,
    require_columns,
    skills_to_preference,
    skills_to_sft,
)


def test_missing_file_says_how_to_regenerate(tmp_path):
    with pytest.raises(DataError, match="not found.*python -m helpers.skills"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        read_jsonl(path)


def test_bad_line_reports_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3,,}\n')
    with pytest.raises(DataError, match=r"line 3: not valid JSON"):
        read_jsonl(path)


def test_non_object_line(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2: expected a JSON object, got list"):
        read_jsonl(path)


def test_missing_columns_names_missing_and_present():
    with pytest.raises(DataError) as err:
        require_columns([{"prompt": "x", "foo": 1}], ["prompt", "completion", "answer"], name="my data")
    msg = str(err.value)
    assert "['completion', 'answer']" in msg and "['foo', 'prompt']" in msg and "my data" in msg


def test_empty_dataset_is_an_error():
    with pytest.raises(DataError, match="empty"):
        require_columns([], ["prompt"])


def test_skills_split_missing_columns(tmp_path):
    (tmp_path / "skills_eval.jsonl").write_text('{"prompt": "p", "answer": "a"}\n')
    with pytest.raises(DataError, match="missing column"):
        load_skills("eval", data_dir=tmp_path)


def test_unknown_split():
    with pytest.raises(DataError, match="Valid splits: sft_train, dpo_train, eval"):
        load_skills("test")


def test_small_eval_sample_covers_every_skill():
    rows = load_skills("eval", 16)
    assert len(rows) == 16
    assert len({r["skill"] for r in rows}) == 8


def test_conversational_formats():
    row = load_skills("sft_train", 1)[0]
    sft = skills_to_sft(row)
    assert sft["prompt"] == [{"role": "user", "content": row["prompt"]}]
    assert sft["completion"] == [{"role": "assistant", "content": row["answer"]}]
    pref = skills_to_preference(row)
    assert pref["chosen"][0]["content"] == row["answer"] and pref["rejected"][0]["content"] == row["wrong"]


# Fixture rows shaped like the Hub schemas the GPU profiles load.
SMOLTALK_ROW = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                             {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]}
ALPACA_ROW = {"instruction": "Translate to French", "input": "cat", "output": "chat"}


def test_normalize_chat_messages_uses_last_assistant_turn():
    out = normalize_sft_row(SMOLTALK_ROW)
    assert out["completion"] == [{"role": "assistant", "content": "Hello!"}]
    assert [m["role"] for m in out["prompt"]] == ["system", "user"]


def test_normalize_alpaca_and_plain():
    out = normalize_sft_row(ALPACA_ROW)
    assert out["prompt"][0]["content"] == "Translate to French\n\ncat"
    assert out["completion"][0]["content"] == "chat"
    assert normalize_sft_row({"question": "2+2?", "answer": "4"})["completion"][0]["content"] == "4"
    conv = {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}
    assert normalize_sft_row(conv) == conv


def test_normalize_rejects_unknown_schema_and_assistantless_chat():
    with pytest.raises(DataError, match="Unrecognised SFT row with columns \\['text'\\]"):
        normalize_sft_row({"text": "hello"})
    with pytest.raises(DataError, match="assistant turn"):
        normalize_sft_row({"messages": [{"role": "user", "content": "hi"}]})
