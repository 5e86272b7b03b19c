"""Bad input, round three: quantization, serving, the model cache, the Hub copies, the checker and perplexity, the
profile and the pipeline entry points check their inputs first and say what to do (the README's troubleshooting
table lists these messages). Every test here takes seconds: nothing is trained or quantized."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import hub_data, pipeline, quant, serving, skills, text
from helpers.data import DataError
from helpers.errors import OutputPathError
from helpers.evaluation import EvalInputError, perplexity
from helpers.model_cache import _cache_problem, _valid_cache
from helpers.models import ModelLoadError, load_model, tiny_model_dir
from helpers.paths import REPO_ROOT
from helpers.profiles import PROFILES, ProfileError, ProfileTypeError, get_profile
from helpers.skills import CheckerInputError, check_answer, mentions_answer

TINY = get_profile("tiny")
UF = "HuggingFaceH4/ultrafeedback_binarized"


# ----------------------------------------------------------------------------------------------------------------
# Quantization: a group size that fits, the folders checked before GPTQModel is imported
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group, widths, suggested", [
    (128, [576, 1536], [64, 32]),   # SmolLM2-135M
    (64, [96, 160], [32, 16]),      # 64 divides neither: the old message still suggested "64 or 32"
    (32, [48, 1536], [16, 8]),
])
def test_the_suggested_group_size_divides_every_width(group, widths, suggested):
    with pytest.raises(quant.QuantError) as err:
        quant.check_settings(4, group, widths)
    found = [int(g) for g in re.search(r"use group_size=(\d+) or (\d+)", str(err.value)).groups()]
    assert found == suggested and all(w % g == 0 for g in found for w in widths)
    assert quant.group_sizes_for([576, 1536]) == [64, 32, 16, 8]


def test_widths_no_power_of_two_divides_get_one_group_per_row():
    with pytest.raises(quant.QuantError, match=r"no power of two from 8 up divides every width \[36, 100\]: use "
                                               r"group_size=-1"):
        quant.check_settings(4, 32, [100, 36])


def test_one_group_per_row_works_on_any_width():
    """-1 (one group per row) was checked as if the row width were the group size: 576 was refused."""
    w = torch.randn(3, 576)
    assert quant.rtn_quantize(w, 4, -1).shape == w.shape
    assert quant.gptq_quantize(w, torch.eye(576), 4, -1).shape == w.shape


def test_bits_and_group_size_must_be_whole_numbers():
    with pytest.raises(quant.QuantError, match=r"group_size='64' is a str; pass a whole number"):
        quant.check_settings(4, "64")
    with pytest.raises(quant.QuantError, match=r"bits=4.0 is a float; pass a whole number"):
        quant.check_settings(4.0, 64)


@pytest.mark.parametrize("model_dir, message", [
    ("{tmp}/no_such_model", r"model folder: there is no folder .*no_such_model"),
    ("{tmp}/weights.safetensors", r"model folder: .*weights.safetensors is a file; give the folder"),
    ("{tmp}/adapter", r"model folder: .*adapter holds no config.json"),
])
def test_gptqmodel_quantize_checks_the_model_folder_before_reading_it(model_dir, message, tmp_path):
    """Without the check, AutoConfig raised a raw OSError (or quantized an adapter folder's missing model)."""
    (tmp_path / "weights.safetensors").write_text("x")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(quant.QuantError, match=message + r".*Give the folder of a full-precision model"):
        quant.gptqmodel_quantize(model_dir.format(tmp=tmp_path), tmp_path / "out", "gptq", 4, 32, ["some text"])
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.log").exists()


def test_gptqmodel_quantize_refuses_a_users_file_as_output_before_quantizing(tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    with pytest.raises(OutputPathError, match=r"notes.txt is an existing file.*Give out_dir a path"):
        quant.gptqmodel_quantize(tiny_model_dir(), out, "gptq", 4, 32, ["some text"])
    assert out.read_text() == "mine" and not (tmp_path / "notes.txt.log").exists()
    with pytest.raises(quant.QuantError, match="is the model folder itself"):
        quant.gptqmodel_quantize(tiny_model_dir(), tiny_model_dir(), "gptq", 4, 32, ["some text"])


def test_pipeline_quantized_checks_its_inputs_before_gptqmodel_is_imported(tmp_path):
    """In a fresh process: each bad input is refused in well under a second, and GPTQModel is never imported.
    Without the checks a missing folder raised FileNotFoundError from the fingerprint, a group size that does not
    divide the model's widths went as far as the quantization process, and the method and bits were checked only
    after GPTQModel was imported."""
    code = f"""
import json, sys, time
from helpers import pipeline
from helpers.models import tiny_model_dir
from helpers.profiles import get_profile
from helpers.quant import QuantError
tiny, model = get_profile("tiny"), tiny_model_dir()
cases = {{"missing": ({str(tmp_path / 'merged_modle')!r}, "gptq", 4, 32), "method": (model, "hqq", 4, 32),
         "bits": (model, "gptq", 5, 32), "group": (model, "gptq", 4, 128)}}
out = {{}}
for name, (folder, method, bits, group) in cases.items():
    start = time.perf_counter()
    try:
        pipeline.quantized(tiny, folder, method, bits, group, ["some calibration text"])
        out[name] = "accepted"
    except QuantError as exc:
        out[name] = [str(exc), time.perf_counter() - start]
out["gptqmodel imported"] = "gptqmodel" in sys.modules
print(json.dumps(out))
"""
    env = dict(os.environ, COURSE_ARTIFACTS=str(tmp_path / "artifacts"), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("gptqmodel imported") is False
    expected = {"missing": r"model folder: there is no folder .*merged_modle", "method": r"Unknown method 'hqq'; use",
                "bits": r"5-bit weights are not supported here; use one of", "group": r"group_size=128 does not divide "
                r"the input width of every layer \[64, 192\]; use group_size=64 or 32"}
    for name, pattern in expected.items():
        message, seconds = out[name]
        assert re.search(pattern, message), (name, message)
    assert not (tmp_path / "artifacts" / "outputs" / "quantized").exists()


# ----------------------------------------------------------------------------------------------------------------
# Serving: a file, a missing folder, a folder without config.json
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda t: t / "nowhere", r"there is no folder .*nowhere"),
    (lambda t: (t / "model.safetensors").write_text("x") and t / "model.safetensors", r"model.safetensors is a file"),
    (lambda t: (t / "empty").mkdir() or t / "empty", r"empty is a folder but holds no config.json"),
    (lambda t: (t / "lora").mkdir() or (t / "lora" / "adapter_config.json").write_text("{}") and t / "lora",
     r"lora holds no config.json \(an adapter folder is served merged"),
])
def test_serving_refuses_what_is_not_a_model_folder_before_loading(make, message, tmp_path):
    folder = make(tmp_path)
    for call in (serving.reload, serving.method_of, serving.serve_commands):
        with pytest.raises(ModelLoadError, match=message + r".*Give the folder of a saved model"):
            call(folder)
    if not Path(folder).is_dir():
        assert len(serving.serving_problems(folder)) == 1 and re.search(message, serving.serving_problems(folder)[0])


def test_serving_names_a_config_that_is_not_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match=r"config.json holds a JSON list, not a model config; save the model"):
        serving.method_of(tmp_path)
    assert any("holds a JSON list" in p for p in serving.serving_problems(tmp_path))


# ----------------------------------------------------------------------------------------------------------------
# The model cache and the base model
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", ["[1, 2]", '"files"', '{"files": [1]}', "null"])
def test_a_cache_manifest_of_the_wrong_json_shape_is_rebuilt(manifest, tmp_path, capsys):
    """A JSON list raised TypeError out of the cache check instead of rebuilding the cache."""
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "manifest.json").write_text(manifest)
    assert _cache_problem(folder) == "its manifest is unreadable"
    assert _valid_cache(folder) is False and not folder.exists()
    assert "cannot be used: its manifest is unreadable. Rebuilding it." in capsys.readouterr().out


def test_a_mistyped_model_folder_in_the_profile_fails_before_training(tmp_path, monkeypatch):
    """Without the check the training process started, then failed on the folder (a TrainingError with a log)."""
    (tmp_path / "my_model").mkdir()
    (tmp_path / "my_model" / "config.json").write_text("{}")
    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / "artifacts"))
    profile = dataclasses.replace(TINY, model_source="hub", model_id=str(tmp_path / "my_modle"))
    with pytest.raises(ModelLoadError, match=r"model_id '.*my_modle' cannot be loaded: there is no folder .*Did you "
                                             r"mean .*my_model\? Give the folder of a saved model"):
        pipeline.sft_adapter(profile)
    assert not (tmp_path / "artifacts" / "outputs").exists()   # refused before a training process started


def test_load_model_says_what_to_give(tmp_path):
    with pytest.raises(ModelLoadError, match=r"there is no folder .*nothing_here\. .*Give the folder of a saved model: "
                                             r"the one that holds config.json and the weights") as err:
        load_model(TINY, str(tmp_path / "nothing_here"))
    assert "Hub" not in str(err.value)   # a local folder, not a download


def test_dpo_merged_checks_the_dpo_data_before_building_the_sft_model(tmp_path, monkeypatch):
    """Without the check the SFT adapter was trained and merged first (seconds on tiny, minutes on a GPU)."""
    copy = tmp_path / "hub" / UF
    shutil.copytree(hub_data.FIXTURES_DIR / UF, copy)
    for path in (copy / "data").glob("test_prefs-*"):
        path.unlink()
    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.delenv(hub_data.HUB_DATA_ENV, raising=False)
    hub_data._READ.clear()
    profile = dataclasses.replace(TINY, hub_data=str(tmp_path / "hub"))
    with pytest.raises(DataError, match=r"local copy of HuggingFaceH4/ultrafeedback_binarized is incomplete"):
        pipeline.dpo_merged(profile)
    assert not (tmp_path / "artifacts" / "outputs").exists()   # no SFT adapter, no merged model


# ----------------------------------------------------------------------------------------------------------------
# A local Hub copy missing one split
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_card", [True, False])
@pytest.mark.parametrize("split", ["test_prefs", "train_prefs"])
def test_a_local_copy_missing_one_split_names_it_and_what_to_do(with_card, split, tmp_path):
    """datasets refused the whole copy with "Couldn't infer the same data file format for all splits", even when
    the split asked for was there."""
    copy = tmp_path / UF
    shutil.copytree(hub_data.FIXTURES_DIR / UF, copy)
    for path in (copy / "data").glob("test_prefs-*"):
        path.unlink()
    if not with_card:
        (copy / "README.md").unlink()
    hub_data._READ.clear()
    if not with_card and split == "train_prefs":   # no card: datasets reads each split on its own
        assert len(hub_data.stream_rows(UF, split, 2, str(tmp_path))) == 2
        return
    with pytest.raises(DataError) as err:
        hub_data.stream_rows(UF, split, 2, str(tmp_path))
    message = str(err.value)
    assert "'test_prefs'" in message and "Download the missing files there again" in message
    assert "data file format" not in message


def test_an_unknown_split_and_missing_columns_say_what_to_do():
    with pytest.raises(DataError, match=r"has no split 'test'; its splits are .*Use one of those \(the course trains "
                                        r"on 'train_prefs' and tests on 'test_prefs'\)"):
        hub_data.stream_rows(UF, "test", 2, "fixtures")


# ----------------------------------------------------------------------------------------------------------------
# The checker and perplexity
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("response, message", [
    (None, r"The response must be a string, got NoneType None \(None: the model's answer is missing"),
    (["Paris"], r"The response must be a string, got list \['Paris'\] \(a list: call the checker once per response"),
    (7, r"The response must be a string, got int 7\. Pass one string"),
])
def test_a_response_that_is_not_text_is_refused_saying_what_to_pass(response, message):
    for check in (check_answer, mentions_answer):
        with pytest.raises(CheckerInputError, match=message) as err:
            check(response, ["Paris"])
        assert isinstance(err.value, TypeError)


@pytest.mark.parametrize("answers, message", [
    ([4], r"answers\[0\] must be a string, got int 4\. Pass one string, e.g. \['4'\] \(write numbers as text\)"),
    ([], r"answers is an empty list: no response could be right\. Pass at least one"),
    (None, r"answers must be a list of accepted answers, got NoneType"),
    ("Paris", r"not the string 'Paris'.*Pass a list: \['Paris'\]"),
])
def test_answers_must_be_a_list_of_text(answers, message):
    with pytest.raises(CheckerInputError, match=message):
        check_answer("4", answers)
    assert check_answer("Paris.", ("Paris",)) and skills.normalize_answer("“Paris!”") == "paris"


@pytest.fixture(scope="module")
def tiny():
    from helpers.models import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(TINY)
    return model, tokenizer


@pytest.mark.parametrize("window", [1, 0, -5, 2.5, True])
def test_a_perplexity_window_under_two_tokens_is_refused(tiny, window):
    """window=1 ended in torch.cat() on an empty list, window=0 in range()'s 'arg 3 must not be zero'."""
    with pytest.raises(EvalInputError, match=r"window=.*: each window's first token is not predicted.*Pass window=512"):
        perplexity(*tiny, text.stdlib_text("eval", 400), window=window)
    assert perplexity(*tiny, "one two three four", window=2) > 0   # the smallest window that predicts a token


@pytest.mark.parametrize("given, message", [
    ("", r"the text given is empty\. Pass a longer text"),
    ([], r"the text given is empty\. Pass a longer text"),
    (["a passage", 3], r"text\[1\] is a int, not a string: pass one string or a list of strings"),
])
def test_empty_or_wrong_text_says_what_to_pass(tiny, given, message):
    with pytest.raises(EvalInputError, match=message):
        perplexity(*tiny, given)
    with pytest.raises(EvalInputError, match=r"max_tokens=1: at least 2 tokens"):
        perplexity(*tiny, "enough text here", max_tokens=1)


# ----------------------------------------------------------------------------------------------------------------
# The profile's two messages
# ----------------------------------------------------------------------------------------------------------------


def test_profile_messages_say_what_to_do():
    with pytest.raises(ProfileError, match=r"precision 'auto', which get_profile\(\) decides .*use the profile it "
                                           r"returns, get_profile\('cpu'\)"):
        PROFILES["cpu"].compute_dtype
    with pytest.raises(ProfileTypeError, match=r"needs a Profile, got int 3; pass the one helpers.profiles."
                                               r"get_profile\(\) returns"):
        quant.calibration_texts(3)


@pytest.mark.parametrize("case, message", [
    ("transformers config", r"transformers' GPTQConfig/AwqConfig describe a checkpoint to load.*from gptqmodel"),
    ("dict", r"config is a builtins.dict; pass GPTQModel's own"),
    ("a string for the function", r"quantize_with is a str, not a function: pass the function itself"),
    ("a function of another shape", r"cannot be called as quantize_with\(model_dir, out_dir, config, calibration"),
    ("bits", r"5-bit weights are not supported here"),
])
def test_quantized_with_refuses_a_config_or_function_it_cannot_use(case, message, tmp_path, monkeypatch):
    """Notebooks 03 and 04 hand the pipeline their own config object and quantizing function: a student who imports
    transformers' GPTQConfig (the one for loading), passes the function's name or result, or changes its parameters
    is told what to pass, before a model is loaded or a folder written."""
    from gptqmodel.quantization.config import GPTQConfig
    from transformers import GPTQConfig as TransformersGPTQConfig

    from helpers import pipeline, quant

    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / "artifacts"))
    config, quantize_with = GPTQConfig(bits=4, group_size=32), quant.quantize_model
    if case == "transformers config":
        config = TransformersGPTQConfig(bits=4, group_size=32)
    elif case == "dict":
        config = {"bits": 4, "group_size": 32}
    elif case == "a string for the function":
        quantize_with = "quantize_model"
    elif case == "a function of another shape":
        quantize_with = lambda model_dir, config: None   # noqa: E731
    elif case == "bits":
        config = GPTQConfig(bits=4, group_size=32)
        config.bits = 5
    with pytest.raises(quant.QuantError, match=message):
        pipeline.quantized_with(get_profile("tiny"), tiny_model_dir(), config, ["some calibration text"], quantize_with)
    assert not (tmp_path / "artifacts" / "outputs" / "quantized").exists()
