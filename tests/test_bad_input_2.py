"""Bad input, round two: no path the course did not write is ever replaced, every error says what to do, and the
scripts check their arguments, paths and data before any model is loaded (measured: a refusal takes seconds).

The README's troubleshooting table lists these messages.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import data, dpo, isolated
from helpers.data import DataError, assistant, user
from helpers.errors import OutputPathError, RowError
from helpers.paths import OWNED_MARKER, REPO_ROOT, atomic_folder
from helpers.profiles import get_profile
from helpers.results import ResultsError, read_results, write_results

TINY = get_profile("tiny")
SCRIPTS = REPO_ROOT / "scripts"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob("*") if ".tmp" in p.name or ".old-" in p.name)


def script(name: str):
    """``scripts/<name>.py`` imported as a module (its parse_args, without running it)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(SCRIPTS))


def run_script(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run a script in a fresh process, artifacts under ``tmp_path``; the process and its wall seconds."""
    env = dict(os.environ, COURSE_ARTIFACTS=str(tmp_path / "artifacts"), COURSE_PROFILE="tiny", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=300)
    return proc, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------------------
# 1. Data loss: the atomic swap replaces only what the course wrote, and the scripts refuse before training
# ----------------------------------------------------------------------------------------------------------------


def test_a_file_where_the_folder_goes_is_refused_before_the_write_and_kept(tmp_path):
    target = tmp_path / "my_notes.txt"
    target.write_text("a week of notes")
    ran = []
    with pytest.raises(OutputPathError, match=r"my_notes.txt is an existing file.*nothing was done.*Give the output "
                                              r"folder a path that does not exist yet"):
        with atomic_folder(target) as tmp:
            ran.append(tmp)
    assert ran == [] and target.read_text() == "a week of notes" and leftovers(tmp_path) == []


def test_a_folder_the_course_did_not_write_is_refused_and_kept(tmp_path):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.tex").write_text("draft")
    with pytest.raises(OutputPathError, match=r"thesis is a folder the course did not write \(it holds 1 entry: "
                                              r"chapter1.tex\).*move what is there out of the way"):
        with atomic_folder(target):
            pass
    assert (target / "chapter1.tex").read_text() == "draft" and leftovers(tmp_path) == []


def test_a_link_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / OWNED_MARKER).write_text("")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OutputPathError, match=r"link is a link"):
        with atomic_folder(link):
            pass
    assert link.is_symlink() and real.is_dir()


def test_the_course_replaces_its_own_folders_and_empty_ones(tmp_path):
    own = tmp_path / "adapter"
    with atomic_folder(own) as tmp:
        (tmp / "a.txt").write_text("v1")
    assert (own / OWNED_MARKER).is_file()
    with atomic_folder(own) as tmp:   # written by the course: replaced
        (tmp / "a.txt").write_text("v2")
    assert (own / "a.txt").read_text() == "v2"
    empty = tmp_path / "made_by_mkdir"
    empty.mkdir()
    with atomic_folder(empty) as tmp:
        (tmp / "a.txt").write_text("x")
    older = tmp_path / "older_artifact"   # saved by the course before the marker: it has a manifest
    older.mkdir()
    (older / "manifest.json").write_text("{}")
    with atomic_folder(older) as tmp:
        (tmp / "a.txt").write_text("y")
    assert (empty / "a.txt").read_text() == "x" and (older / "a.txt").read_text() == "y"
    assert leftovers(tmp_path) == []


def test_a_file_that_appears_during_the_write_is_kept(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(OutputPathError, match="existing file"):
        with atomic_folder(target) as tmp:
            (tmp / "w.bin").write_text("weights")
            target.write_text("saved by another program meanwhile")
    assert target.read_text() == "saved by another program meanwhile" and leftovers(tmp_path) == []


def test_the_fresh_process_training_refuses_a_users_folder_before_starting(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("a,b\n1,2\n")
    with pytest.raises(OutputPathError, match=r"results.csv is an existing file.*Give folder= a path"):
        isolated.train_isolated(TINY, folder=target)
    assert target.read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize("argv", [
    ["scripts/sft.py", "--profile", "tiny", "--output-dir", "{file}"],
    ["scripts/dpo.py", "--profile", "tiny", "--output-dir", "{file}"],
    ["scripts/quantize.py", "{model}", "{file}", "--bits", "4", "--group-size", "32"],
])
def test_scripts_refuse_an_existing_file_as_output_in_seconds(argv, tmp_path):
    from helpers.models import tiny_model_dir

    user_file = tmp_path / "my_file.txt"
    user_file.write_text("keep me")
    args = [a.format(file=user_file, model=tiny_model_dir()) for a in argv]
    proc, seconds = run_script(args, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "my_file.txt is an existing file" in proc.stderr and "Writing there would delete it" in proc.stderr
    assert user_file.read_text() == "keep me"
    assert not (tmp_path / "artifacts" / "outputs" / "sft_lora").exists()   # nothing was built or trained


# ----------------------------------------------------------------------------------------------------------------
# 2. Lines end at "\n": a U+2028 inside a JSON string is text, not a line break; "\r\n" still works
# ----------------------------------------------------------------------------------------------------------------


def test_a_line_separator_inside_a_json_string_keeps_the_row_and_the_line_numbers(tmp_path, capsys):
    path = tmp_path / "pasted.jsonl"
    rows = [{"prompt": "Summarise:\u2028first line\u2028second", "completion": "Two lines.\u2029End\x85."},
            {"prompt": "Q2", "completion": "A2"}]
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n{broken\r\n",
                    encoding="utf-8")
    records, lines, problems, columns = data.read_records(path)
    assert records == rows and lines == [1, 2] and columns == ["prompt", "completion"]
    assert [p["row"] for p in problems] == ["line 3"]
    kept = data.load_own(path, "sft")
    assert kept[0]["prompt"][0]["content"] == rows[0]["prompt"] and len(kept) == 2
    assert "line 3: not valid JSON" in capsys.readouterr().out


def test_a_line_separator_inside_a_csv_cell_is_text(tmp_path):
    path = tmp_path / "pasted.csv"
    path.write_text("question,reply\r\n\"one\u2028two\",yes\r\nthree,no\r\n", encoding="utf-8")
    records, lines, problems, _ = data.read_records(path)
    assert [r["question"] for r in records] == ["one\u2028two", "three"] and lines == [2, 3] and problems == []


# ----------------------------------------------------------------------------------------------------------------
# 3. Two of the course's columns mapped to one column of the file: refused
# ----------------------------------------------------------------------------------------------------------------


def test_two_course_columns_mapped_to_one_file_column_are_refused(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "Why?", "answer": "Because."}\n')
    with pytest.raises(DataError, match=r"columns maps 'prompt' and 'completion' to the same column 'question'.*"
                                        r"Map each of the course's columns to a different column"):
        data.load_own(path, "sft", {"prompt": "question", "completion": "question"})
    with pytest.raises(DataError, match=r"'chosen' and 'rejected' to the same column 'answer'"):
        data.load_own(path, "preference", {"prompt": "question", "chosen": "answer", "rejected": "answer"})


def test_the_dpo_script_refuses_a_column_mapped_twice():
    with pytest.raises(SystemExit) as exc:
        script("dpo").parse_args(["--profile", "tiny", "--data", "x.jsonl", "--columns", "prompt=q,prompt=r"])
    assert exc.value.code == 2


# ----------------------------------------------------------------------------------------------------------------
# 4. RowError's message carries its remedy
# ----------------------------------------------------------------------------------------------------------------


def test_a_row_error_shows_the_rule_and_the_fix():
    err = RowError("'answer' is empty", fix="fill it in, or drop the row")
    assert str(err) == "'answer' is empty. What to do: fill it in, or drop the row."
    with pytest.raises(RowError) as raised:
        data.normalize_sft_row({"q": "x", "a": "y"})
    assert "Unrecognised SFT row" in str(raised.value) and "What to do: map your columns" in str(raised.value)
    with pytest.raises(RowError, match=r"needs 'chosen' and 'rejected'.*What to do: map your columns"):
        data.normalize_preference_row({"prompt": "p", "chosen": "a"})


# ----------------------------------------------------------------------------------------------------------------
# 5. One remedy in the same words; library errors caught first; checks before expensive work
# ----------------------------------------------------------------------------------------------------------------


def test_sft_and_dpo_paths_say_what_to_do_about_a_missing_column_in_the_same_words():
    sft_rows = [{"prompt": user("a"), "completion": assistant("b")}, {"prompt": user("c")}]
    pairs = [{"prompt": user("a"), "chosen": assistant("b"), "rejected": assistant("c")}, {"prompt": user("c")}]
    remedy = "add what is missing to every row, or let data.normalize_sft_row / data.normalize_preference_row"
    with pytest.raises(DataError) as sft_err:
        data.check_sft_rows(sft_rows)
    with pytest.raises(DataError) as dpo_err:
        dpo.clean_pairs(pairs)
    for err in (sft_err, dpo_err):
        assert "row 1: missing column(s)" in str(err.value) and remedy in str(err.value)


def test_a_utf16_file_is_named_as_utf16(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("question,reply\nwhy,because\n", encoding="utf-16")
    with pytest.raises(DataError, match=r"not UTF-8 text .*Save the file as UTF-8 \(it looks like UTF-16"):
        data.read_records(path)


def test_all_rows_refused_names_the_first_row_its_rule_and_what_to_do(tmp_path):
    path = tmp_path / "same.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "a"}) + "\n" for i in range(3)))
    with pytest.raises(DataError, match=r"none of its 3 rows can be used.*first problem \(line 1\): chosen and "
                                        r"rejected are the same answer\. What to do: drop the row"):
        data.load_own(path, "preference")


def test_a_preference_file_without_rejected_is_refused_naming_the_mapping(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"q": "a", "good": "b", "bad": "c"}\n')
    with pytest.raises(DataError, match=r"no column 'rejected' and columns maps none to it; its columns are "
                                        r"\['q', 'good', 'bad'\]\. Add it to the mapping"):
        data.load_own(path, "preference", {"prompt": "q", "chosen": "good"})


def test_dpo_script_checks_its_data_before_building_the_sft_model(tmp_path):
    """Without the fix the SFT model was built first (20 s on tiny, minutes on a GPU profile)."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"q": "a", "good": "b", "bad": "c"}\n')
    proc, seconds = run_script(["scripts/dpo.py", "--profile", "tiny", "--data", str(path),
                                "--columns", "prompt=q,chosen=good"], tmp_path)
    assert proc.returncode == 2 and "no column 'rejected'" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "artifacts" / "outputs" / "sft_lora").exists()


@pytest.mark.parametrize("argv, message", [
    (["--profile-json", "{tmp}/nowhere.json"], r"--profile-json .*nowhere.json: no such file\. Write one with"),
    (["--profile-json", "{tmp}/list.json"], r"list.json is not a saved profile .*Write it with profile.to_json\(\)"),
    (["--profile", "tiny", "--init-adapter", "{tmp}"], r"--init-adapter .*: no adapter_config.json there"),
    (["--profile", "tiny", "--base", "{tmp}/list.json"], r"--base: .*list.json is a file; give the folder"),
])
def test_sft_script_checks_paths_before_loading(argv, message, tmp_path, capsys):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(SystemExit) as exc:
        script("sft").parse_args([a.format(tmp=tmp_path) for a in argv])
    assert exc.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)


@pytest.mark.parametrize("kwargs, message", [
    (dict(bits=5), r"5-bit weights are not supported here; use one of"),
    (dict(group_size=128), r"group_size=128 does not divide"),
    (dict(method="hqq"), r"method='hqq': use one of gptq, awq"),
    (dict(dtype="half"), r"dtype='half': use one of bfloat16"),
    (dict(model_dir="{tmp}/missing_model"), r"model folder: there is no folder"),
])
def test_quantize_checks_its_settings_before_loading_the_model(kwargs, message, tmp_path):
    from helpers.models import tiny_model_dir
    from helpers.quant import QuantError

    args = dict(model_dir=str(tiny_model_dir()), out_dir=str(tmp_path / "out"), method="gptq", bits=4, group_size=32,
                dtype="bfloat16") | {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(QuantError, match=message):
        script("quantize").check_args(**args)


@pytest.mark.parametrize("content, message", [
    ("[]", r"99_demo.json holds a JSON list, not a results record.*Delete it and run notebook 99_demo again"),
    ('{"notebook": "99_demo"}', r"99_demo.json: Results record is missing .*Delete it and run notebook 99_demo"),
])
def test_a_damaged_results_file_is_named_with_what_to_do(content, message, tmp_path):
    (tmp_path / "99_demo.json").write_text(content)
    with pytest.raises(ResultsError, match=message):
        read_results("99_demo", folder=tmp_path)


def test_a_nan_metric_on_disk_names_the_file(tmp_path):
    path = write_results("99_demo", "tiny", {"base": {"perplexity": 12.0}}, n_eval=10, model="m", wall_seconds=1, folder=tmp_path)
    path.write_text(path.read_text().replace("12.0", "NaN"))
    with pytest.raises(ResultsError) as err:
        read_results("99_demo", folder=tmp_path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "is nan" in msg and "run notebook 99_demo again" in msg
    assert "nothing was written" not in msg


# ----------------------------------------------------------------------------------------------------------------
# Every raise of the course's own error classes says what to do (its message template, read from the source)
# ----------------------------------------------------------------------------------------------------------------

OWN_ERRORS = {"DataError", "RowError", "ResultsError", "QuantError", "ArtifactError", "ModelLoadError", "ProfileError",
              "ProfileTypeError", "OutputPathError", "TrainingError", "CheckerInputError", "EvalInputError"}
REMEDY = __import__("re").compile(
    r"\b(use|give|run|delete|set|fix|save|map|add|drop|write|pass|call|raise|rebuild|move|regenerate|restore|fill|"
    r"leave|shorten|convert|check)\b", __import__("re").I)
REMEDY_NAMES = {"fix", "rerun", "WRITE_FIX", "REGENERATE"}   # variables that hold what to do
# the files whose messages this test holds to the rule (the scripts, data and results layers, the atomic swap)
CHECKED = ["helpers/data.py", "helpers/errors.py", "helpers/results.py", "helpers/paths.py", "helpers/artifacts.py",
           "helpers/isolated.py", "scripts/sft.py", "scripts/dpo.py", "scripts/quantize.py", "scripts/grpo.py", "helpers/grpo.py",
           "helpers/quant.py", "helpers/serving.py", "helpers/models.py", "helpers/hub_data.py", "helpers/evaluation.py",
           "helpers/skills.py", "helpers/pipeline.py", "helpers/profiles.py"]


def remedy_problems(path: Path) -> list[str]:
    """Each ``raise OwnError(...)`` in ``path`` whose literal message text names no action (RowError: no fix)."""
    import ast

    problems = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        name = getattr(node.exc.func, "id", getattr(node.exc.func, "attr", None))
        if name not in OWN_ERRORS:
            continue
        if name == "RowError":
            if not any(k.arg == "fix" for k in node.exc.keywords) and len(node.exc.args) < 2:
                problems.append(f"{path.name}:{node.lineno}: RowError without fix=")
            continue
        literal = " ".join(n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        forwarded = len(node.exc.args) == 1 and isinstance(node.exc.args[0], ast.Name)   # raise X(problem): built above
        named = {n.id for n in ast.walk(node.exc) if isinstance(n, ast.Name)}   # a remedy kept in a variable
        if not forwarded and not REMEDY.search(literal) and not named & REMEDY_NAMES:
            problems.append(f"{path.name}:{node.lineno}: {literal[:100]!r}")
    return problems


def test_every_error_message_of_the_checked_files_says_what_to_do():
    problems = [p for name in CHECKED for p in remedy_problems(REPO_ROOT / name)]
    assert problems == [], "messages without a remedy:\n" + "\n".join(problems)


def test_the_remedy_check_finds_a_message_without_one(tmp_path):
    path = tmp_path / "example.py"
    path.write_text("def f(x):\n    raise DataError(f'{x} is wrong.')\n\ndef g(x):\n    raise DataError(f'{x} is wrong; "
                    "give a list.')\n\ndef h():\n    raise RowError('bad row')\n")
    assert [p.split(":")[1] for p in remedy_problems(path)] == ["2", "8"]


@pytest.mark.parametrize("content, reason", [
    ("{not json", "manifest.json is not valid JSON"),
    ("[1, 2]", r"manifest.json is not a manifest \(no 'inputs'\)"),
    ('{"inputs": {"a": 1}, "made_by": "x", "files": ["w.bin"]}', "manifest.json records its files in an unknown shape"),
])
def test_a_damaged_manifest_is_rebuilt_for_that_reason_not_other_inputs(content, reason, tmp_path, capsys):
    from helpers import artifacts

    folder = tmp_path / "merged"
    with artifacts.artifact(folder, {"a": 1}) as tmp:
        (tmp / "w.bin").write_text("weights")
    (folder / artifacts.MANIFEST).write_text(content)
    assert not artifacts.reusable(folder, {"a": 1}, "merged model")
    out = capsys.readouterr().out
    assert __import__("re").search(f"cannot be checked \\({reason}\\); rebuilding it", out) and "other inputs" not in out
    with pytest.raises(artifacts.ArtifactError, match=f"{reason}.*Delete .* and run it again"):
        artifacts.verify(folder, "run it again")
