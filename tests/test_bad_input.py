"""Bad input on purpose, as a hostile but fair user gives it: every case must end in an error that says what is
wrong and what to do (asserted on the message), and leave nothing behind on disk.

The README's troubleshooting table lists these messages.
"""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from helpers import artifacts, data, dpo, evaluation, models, quant, training
from helpers.data import DataError, assistant, user
from helpers.models import ModelLoadError
from helpers.paths import OWNED_MARKER, REPO_ROOT, atomic_folder
from helpers.profiles import ProfileError, ProfileTypeError, get_profile
from helpers.results import ResultsError, write_results
from helpers.skills import check_answer, mentions_answer

TINY = get_profile("tiny")
CPU = get_profile("cpu")


def sft(prompt="What is 2+2?", completion="4"):
    return {"prompt": user(prompt), "completion": assistant(completion)}


def pair(prompt="Pick one.", chosen="a", rejected="b"):
    return {"prompt": user(prompt), "chosen": assistant(chosen), "rejected": assistant(rejected)}


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders a failed write could leave behind."""
    return sorted(p.name for p in Path(folder).rglob("*") if ".tmp" in p.name or ".old-" in p.name)


# ----------------------------------------------------------------------------------------------------------------
# Rows: every row is checked, and the error names the row and what to do
# ----------------------------------------------------------------------------------------------------------------


def test_missing_completion_in_a_later_row_is_named():
    rows = [sft() for _ in range(8)]
    del rows[4]["completion"]
    with pytest.raises(DataError) as err:
        data.check_sft_rows(rows)
    msg = str(err.value)
    assert "1 of 8 rows are unusable" in msg and "row 4: missing column(s) ['completion']" in msg
    assert "normalize_sft_row" in msg  # what to do


def test_non_string_message_content_is_named():
    rows = [sft(), {"prompt": [{"role": "user", "content": 42}], "completion": assistant("x")}]
    with pytest.raises(DataError, match=r"row 1: 'prompt'\[0\]\['content'\] must be text, got int 42"):
        data.check_sft_rows(rows)


@pytest.mark.parametrize("row, problem", [
    (sft(prompt="   "), r"row 1: 'prompt'\[0\] has empty content"),
    (sft(completion=""), r"row 1: 'completion'\[0\] has empty content"),
    ({"prompt": "What is 2+2?", "completion": assistant("4")}, r"'prompt' is a string, where a list of messages belongs"),
    ({"prompt": user("q"), "completion": user("4")}, r"'completion'\[0\] has role 'user'; here it must be one of \['assistant'\]"),
    ({"prompt": user("q"), "completion": []}, r"'completion' must be a non-empty list"),
    ({"prompt": user("q"), "completion": ["4"]}, r"'completion'\[0\] is not a \{'role': ..., 'content': ...\} message"),
])
def test_bad_sft_rows(row, problem):
    with pytest.raises(DataError, match=problem) as err:
        data.check_sft_rows([sft(), row])
    assert "Each row needs 'prompt'" in str(err.value)


def test_many_bad_rows_are_counted_not_all_printed():
    rows = [sft(completion="") for _ in range(12)]
    with pytest.raises(DataError) as err:
        data.check_sft_rows(rows)
    msg = str(err.value)
    assert "12 of 12 rows are unusable" in msg and "... and 7 more" in msg and msg.count("has empty content") == 5


@pytest.mark.parametrize("rows", ["What is 2+2?", {"prompt": user("q"), "completion": assistant("a")}])
def test_a_string_or_a_dict_where_the_rows_belong_is_refused(rows):
    with pytest.raises(TypeError, match="must be a list"):
        data.check_sft_rows(rows)


def test_non_utf8_byte_names_file_and_line(tmp_path):
    path = tmp_path / "skills_eval.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"skills_eval.jsonl, line 2: not UTF-8 text \(byte 0xe9.*Save the file as UTF-8"):
        data.read_jsonl(path)


def _skills_file(tmp_path, **changes):
    row = dict(data.load_skills("eval")[0], **changes)
    good = data.load_skills("eval")[1]
    (tmp_path / "skills_eval.jsonl").write_text(json.dumps(good) + "\n\n" + json.dumps(row) + "\n")


@pytest.mark.parametrize("changes, problem", [
    ({"answers": "Paris"}, r"line 3: 'answers' is the string 'Paris'.*write \['Paris'\]"),
    ({"answers": []}, r"line 3: 'answers' must be a non-empty list"),
    ({"prompt": ""}, r"line 3: 'prompt' is empty"),
    ({"case_sensitive": "yes"}, r"line 3: 'case_sensitive' must be true or false"),
    ({"wrong": None}, r"line 3: 'wrong' must be text, got NoneType"),
])
def test_bad_skills_file_names_the_line(tmp_path, changes, problem):
    _skills_file(tmp_path, **changes)
    with pytest.raises(DataError, match=problem) as err:
        data.load_skills("eval", data_dir=tmp_path)
    assert "python -m helpers.skills" in str(err.value)


def test_answers_as_a_string_is_refused_by_the_checker():
    with pytest.raises(TypeError, match=r"list of accepted answers such as \['Paris'\]"):
        check_answer("a", "Paris")  # would have scored 'a' (a letter of 'Paris') as correct
    with pytest.raises(TypeError, match="one character at a time"):
        mentions_answer("a", "Paris")


def test_evaluation_rows_are_checked_before_generating():
    rows = [{"prompt": "Capital of France?", "answers": "Paris", "skill": "capital"}]
    with pytest.raises(DataError, match=r"row 0: 'answers' is the string 'Paris'"):
        evaluation.evaluate_skills(None, None, rows)  # refused before any model is touched


@pytest.mark.parametrize("prompts, error, message", [
    ("What is the capital of France?", TypeError, r"single string.*Wrap it in a list"),
    (["ok", "  "], ValueError, r"Prompt 1 cannot be generated from: it is empty"),
    ([[{"role": "user"}]], ValueError, r"Prompt 0 .*not a \{'role'"),
    ([], ValueError, r"got no prompts"),
])
def test_generate_refuses_bad_prompts(prompts, error, message):
    with pytest.raises(error, match=message):
        evaluation.generate(None, None, prompts)


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer(TINY)


def test_rows_longer_than_max_length_are_counted_and_left_out(tokenizer, capsys):
    rows = [sft(), sft(prompt="word " * 200), sft()]
    kept = data.within_length(tokenizer, rows, 64)
    assert len(kept) == 2
    assert "1 of 3 rows are longer than max_length=64 tokens" in capsys.readouterr().out


def test_all_rows_too_long_is_an_error(tokenizer):
    with pytest.raises(DataError, match=r"all 2 rows are longer than max_length=16 tokens.*Raise max_length"):
        data.within_length(tokenizer, [sft(), sft()], 16)


def test_dpo_pairs_too_long_are_counted(tokenizer, capsys):
    kept = dpo.check_lengths(tokenizer, [pair(), pair(rejected="word " * 200)], 64)
    assert len(kept) == 1 and "1 of 2 rows are longer than max_length=64" in capsys.readouterr().out


def test_empty_prompt_in_preference_pairs_is_refused():
    with pytest.raises(DataError, match=r"row 1: 'prompt'\[0\] has empty content"):
        dpo.clean_pairs([pair(), pair(prompt="")])


# ----------------------------------------------------------------------------------------------------------------
# Hub normalisers: malformed rows of each schema are refused with the row's index and the rule
# ----------------------------------------------------------------------------------------------------------------

HH = "\n\nHuman: What is 2+2?\n\nAssistant: {}"


@pytest.mark.parametrize("row, rule", [
    ({"chosen": "\n\nAssistant: 4", "rejected": "\n\nAssistant: 5"}, "no 'Human:' turn"),
    ({"chosen": HH.format("4"), "rejected": "\n\nHuman: What is 3+3?\n\nAssistant: 5"},
     "differ before their last 'Assistant:' turn"),
    ({"chosen": HH.format("4"), "rejected": "\n\nHuman: What is 2+2?"}, "must end with an 'Assistant:' turn"),
    ({"prompt": "Name a prime.", "chosen": ["Name a prime.", "7"], "rejected": ["Name a prime.", "9"]},
     r"'chosen'\[0\] is not a \{'role'"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "7"}],
      "rejected": [{"role": "user", "content": "other q"}, {"role": "assistant", "content": "9"}]},
     "differ before their last assistant message"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "q"}],
      "rejected": [{"role": "user", "content": "q"}]}, "must end with an assistant message"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, r"'chosen'\[0\] has empty content"),
])
def test_preference_normaliser_refuses_malformed_rows(row, rule):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, row]
    with pytest.raises(DataError, match=rule) as err:
        dpo.normalize_preference_rows(rows, "UltraFeedback sample")
    assert "UltraFeedback sample: 1 of 2 rows break their schema" in str(err.value) and "row 1:" in str(err.value)


@pytest.mark.parametrize("row, rule", [
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "needs a user turn followed by an assistant turn"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}, "must be text"),
    ({"messages": "Hello"}, "'messages' is a string"),
    ({"instruction": "Add 2 and 2.", "output": ""}, "Alpaca row: 'output' is empty"),
    ({"instruction": "Add 2 and 2.", "input": 7, "output": "4"}, "'input' must be text or absent"),
    ({"question": "q", "answer": ""}, r"'completion'\[0\] has empty content"),
    ({"text": "free text"}, "Unrecognised SFT row"),
])
def test_sft_normaliser_refuses_malformed_rows(row, rule):
    with pytest.raises(DataError, match=rule) as err:
        data.normalize_rows([{"question": "q", "answer": "a"}, row], data.normalize_sft_row, "chat set")
    assert "row 1:" in str(err.value) and "Fix or drop those rows" in str(err.value)


# ----------------------------------------------------------------------------------------------------------------
# Profiles: every value, and the type
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"sft_steps": 0}, r"sft_steps=0 \(a whole number above 0, e.g. 60\)"),
    ({"sft_steps": -3}, r"sft_steps=-3 \(a whole number above 0"),
    ({"train_batch_size": 0}, r"train_batch_size=0 .*e.g. 8"),
    ({"ppl_window": 2.5}, r"ppl_window=2.5 \(a whole number"),
    ({"max_length": -1}, r"max_length=-1"),
    ({"dpo_learning_rate": float("nan")}, r"dpo_learning_rate=nan \(a number above 0"),
    ({"quant_group_size": 128}, r"quant_group_size=128 does not divide the input width 576 .*e.g. 64 does"),
    ({"quant_group_size": 48}, r"quant_group_size=48 \(a power of two"),
    ({"quant_bits": (5,)}, r"quant_bits=\(5,\)"),
    ({"n_eval": 0}, r"n_eval=0 \(None for all rows"),
])
def test_profile_values_are_refused_with_the_field_and_a_valid_value(changes, message):
    with pytest.raises(ProfileError, match=message):
        replace(CPU, **changes)


@pytest.mark.parametrize("call", [
    lambda: data.sft_rows("cpu"),
    lambda: models.load_model("tiny"),
    lambda: training.lora_config("cpu"),
    lambda: quant.calibration_texts("cpu"),
])
def test_a_profile_name_where_the_profile_belongs(call):
    with pytest.raises(ProfileTypeError, match=r"needs a Profile, got str .*get_profile\('(cpu|tiny)'\)"):
        call()


def test_trainer_overrides_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match=r"max_steps=0.*each must be a number above 0"):
        training.sft_config_kwargs(TINY, tmp_path, max_steps=0)
    with pytest.raises(ValueError, match=r"learning_rate=-0.1"):
        dpo.dpo_config_kwargs(TINY, tmp_path, learning_rate=-0.1)


@pytest.mark.parametrize("argv, message", [
    (["--max-steps", "0"], "0 must be above 0"),
    (["--learning-rate", "nan"], "nan must be above 0"),
    (["--lora-r", "four"], "'four' is not a whole number"),
])
def test_sft_script_refuses_bad_arguments(argv, message, capsys):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import sft
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    with pytest.raises(SystemExit) as exc:
        sft.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Caches and saved artifacts: checked by content, damaged ones rebuilt or refused, no temporary folder left
# ----------------------------------------------------------------------------------------------------------------


def test_damage_that_keeps_the_size_is_found_and_the_cache_rebuilt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    path = models.tiny_model_dir()
    weights = path / "model.safetensors"
    size, good = weights.stat().st_size, weights.read_bytes()
    with weights.open("r+b") as handle:  # same size, different bytes: a size check would pass
        handle.seek(size - 4096)
        handle.write(b"\xff" * 4096)
    models.tiny_model_dir()
    out = capsys.readouterr().out
    assert "cannot be used: model.safetensors do(es) not match the checksum" in out and "Rebuilding it" in out
    assert weights.read_bytes() == good and leftovers(tmp_path) == []


def test_a_killed_write_leaves_a_folder_the_next_write_removes(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"model.tmp-{dead.stdout.strip()}-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"0" * 1000)
    alive = tmp_path / f"model.tmp-{os.getppid()}-xyz789"  # a write still running in another process: kept
    alive.mkdir()
    with atomic_folder(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert "left by an interrupted write" in capsys.readouterr().out
    assert not stale.exists() and alive.exists()
    alive.rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_write_keeps_the_old_folder_and_leaves_nothing(tmp_path):
    target = tmp_path / "adapter"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("killed halfway")
    assert (target / "a.txt").read_text() == "old" and leftovers(tmp_path) == []


WRITER = """
import os, sys
from pathlib import Path
from helpers.paths import atomic_folder
failures = 0
for i in range(40):
    try:
        with atomic_folder(Path(sys.argv[1])) as tmp:
            for k in range(10):
                (tmp / f"part{k}.bin").write_bytes(os.urandom(10000))
    except Exception as exc:
        failures += 1
print(failures)
"""


def test_two_processes_writing_one_folder_at_once_both_succeed(tmp_path):
    target = tmp_path / "shared"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    failures = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert failures == [0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]
    assert sorted(p.name for p in target.iterdir()) == sorted([OWNED_MARKER] + [f"part{k}.bin" for k in range(10)])


def _saved_adapter(folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model

    model = models.load_model(TINY)
    peft = get_peft_model(model, training.lora_config(TINY))
    with artifacts.artifact(folder, {"what": "test"}) as tmp:
        peft.save_pretrained(tmp)
    return folder


def test_a_truncated_adapter_is_named_with_the_fix(tmp_path, capsys):
    folder = _saved_adapter(tmp_path / "sft_lora")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(artifacts.ArtifactError, match=r"adapter_model.safetensors: damaged .*Delete .*run the notebook"):
        training.load_adapter(models.load_model(TINY), folder)
    assert not artifacts.reusable(folder, {"what": "test"}, "SFT adapter")
    assert "is damaged (adapter_model.safetensors" in capsys.readouterr().out


def test_truncated_weights_without_a_manifest_name_the_folder(tmp_path):
    folder = tmp_path / "merged"
    models.load_model(TINY).save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(ModelLoadError, match=r"weights in .*merged cannot be read .*truncated or damaged. Delete"):
        models.load_model(TINY, str(folder))


def test_a_mistyped_local_folder_is_not_blamed_on_the_hub(tmp_path):
    (tmp_path / "sft_merged").mkdir()
    (tmp_path / "sft_merged" / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError) as err:
        models.load_model(TINY, str(tmp_path / "sft_mergd"))
    msg = str(err.value)
    assert "there is no folder" in msg and "Did you mean" in msg and "sft_merged" in msg and "Hub" not in msg


def test_a_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="holds no config.json, so it is not a saved model"):
        models.load_model(TINY, str(tmp_path))


# ----------------------------------------------------------------------------------------------------------------
# Results: only finite values in range; numpy scalars are numbers; a failed write leaves nothing
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metrics, message", [
    ({"skill_accuracy": 1.7}, r"'skill_accuracy' of variant 'base' is 1.7, outside its range \[0.0, 1.0\]"),
    ({"perplexity": float("inf")}, r"'perplexity' .* is inf"),
    ({"preference_accuracy": float("nan")}, r"is nan"),
    ({"perplexity": 0.5}, r"outside its range \[1.0, inf\]"),
    ({"size_mb": -3}, r"'size_mb' .* is -3.0"),
])
def test_results_out_of_range_are_refused_and_nothing_is_written(tmp_path, metrics, message):
    with pytest.raises(ResultsError, match=message) as err:
        write_results("99_demo", "tiny", {"base": metrics}, n_eval=10, model="m", wall_seconds=1, folder=tmp_path)
    assert "Fix the measurement" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_numpy_scalars_are_numbers(tmp_path):
    path = write_results("99_demo", "tiny", {"base": {"skill_accuracy": np.float32(0.5), "size_mb": np.float64(1.25)}}, n_eval=np.int64(10), model="m", wall_seconds=np.float64(3.0),
                         extra={"mean": np.float32(0.25)}, folder=tmp_path)
    record = json.loads(path.read_text())
    assert record["variants"]["base"] == {"skill_accuracy": 0.5, "size_mb": 1.25} and record["extra"]["mean"] == 0.25


def test_a_failed_write_leaves_no_temporary_file_and_the_old_results(tmp_path):
    path = write_results("99_demo", "tiny", {"base": {"skill_accuracy": 0.5}}, n_eval=10, model="m", wall_seconds=1, folder=tmp_path)
    before = path.read_text()
    with pytest.raises(ResultsError, match=r"was not written: .*may hold only text, finite numbers"):
        write_results("99_demo", "tiny", {"base": {"skill_accuracy": 0.6}}, n_eval=10, model="m", wall_seconds=1, extra={"model": object()},
                      folder=tmp_path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["99_demo.json"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_eval=-1), "n_eval must be the number of evaluation prompts"),
    (dict(wall_seconds=float("nan")), "wall_seconds must be a finite number"),
    (dict(profile=None), "needs the Profile the notebook ran with"),
])
def test_results_header_values_are_checked(tmp_path, kwargs, message):
    args = dict(notebook="99_demo", profile="tiny", model="m", wall_seconds=1, n_eval=10,
                variants={"base": {"skill_accuracy": 0.5}}, folder=tmp_path) | kwargs
    with pytest.raises(ResultsError, match=message):
        write_results(**args)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# Quantization inputs
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("calibration, error, message", [
    ("one long passage of text", TypeError, "must be a list, not a single string"),
    ([], quant.QuantError, "calibration set is empty"),
    (["fine", "  ", 3], quant.QuantError, r"passages \[1, 2\] are empty or not text"),
])
def test_bad_calibration_sets_are_refused_before_quantizing(tmp_path, calibration, error, message):
    with pytest.raises(error, match=message):
        quant.gptqmodel_quantize(tmp_path / "model", tmp_path / "out", "gptq", 4, 32, calibration)
    assert list(tmp_path.iterdir()) == []
