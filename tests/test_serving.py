"""Each deployable checkpoint the course saves (merged model, GPTQ, AWQ) carries what serving engines read, and
transformers reloads it and generates."""

import json

import pytest

from helpers import evaluation, get_profile, pipeline, serving, text


@pytest.fixture(scope="module")
def checkpoints():
    profile = get_profile("tiny")
    merged = pipeline.dpo_merged(profile)            # what notebook 07 deploys: SFT, then DPO, merged
    calibration = text.stdlib_samples("calibration", 4)
    gptq, _ = pipeline.quantized(profile, merged, "gptq", 4, profile.quant_group_size, calibration,
                                 sym=True, desc_act=False, act_group_aware=True, true_sequential=False)
    awq, _ = pipeline.quantized(profile, merged, "awq", 4, profile.quant_group_size, calibration, awq_clip=False,
                                sym=True)
    return {"merged": merged, "gptq": gptq, "awq": awq}


def test_checkpoints_carry_the_fields_the_loaders_read(checkpoints):
    group = get_profile("tiny").quant_group_size
    assert serving.method_of(checkpoints["merged"]) == "full precision"
    assert serving.serving_fields(checkpoints["gptq"]) == {"quant_method": "gptq", "bits": 4, "group_size": group,
                                                           "sym": True, "desc_act": False, "checkpoint_format": "gptq"}
    assert serving.serving_fields(checkpoints["awq"]) == {"quant_method": "awq", "bits": 4, "group_size": group,
                                                          "zero_point": False, "version": "gemm"}
    for name, folder in checkpoints.items():
        assert serving.serving_problems(folder) == [], name


@pytest.mark.parametrize("name", ["merged", "gptq", "awq"])
def test_transformers_reloads_each_checkpoint_and_generates(checkpoints, name):
    model, tokenizer = serving.reload(checkpoints[name])   # as a transformers server loads it
    answer = evaluation.generate(model, tokenizer, ["What is the capital of Peru?"], max_new_tokens=4, progress=False)[0]
    kernels = {type(m).__name__ for m in model.modules()}
    assert isinstance(answer, str) and model.generation_config is not None
    assert ("Linear" in kernels) if name == "merged" else any(k != "Linear" and "Linear" in k for k in kernels)


def test_a_missing_field_or_file_is_reported(checkpoints, tmp_path):
    import shutil

    broken = tmp_path / "gptq"
    shutil.copytree(checkpoints["gptq"], broken)
    config = json.loads((broken / "config.json").read_text())
    del config["quantization_config"]["checkpoint_format"]
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "chat_template.jinja").unlink()
    assert serving.serving_problems(broken) == ["no chat_template.jinja",
                                                "quantization_config has no 'checkpoint_format'"]
    assert serving.serve_commands(checkpoints["awq"])["vLLM"].endswith("--quantization awq")


def test_describe_and_commands_read_the_folder(checkpoints, tmp_path, monkeypatch):
    described = serving.describe(checkpoints["gptq"])
    assert described["format"] == "gptq" and described["missing"] == "nothing" and described["bits"] == 4
    monkeypatch.setenv("COURSE_ARTIFACTS", str(checkpoints["awq"].parent))   # the folder is inside the artifacts root
    inside = serving.serve_commands(checkpoints["awq"])
    assert inside["run from"] == str(checkpoints["awq"].parent.resolve())
    assert inside["vLLM"] == f"vllm serve {checkpoints['awq'].name} --quantization awq"
    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / "elsewhere"))
    outside = serving.serve_commands(checkpoints["merged"])
    assert outside["run from"] == "anywhere" and outside["vLLM"] == f"vllm serve {checkpoints['merged'].resolve()}"
