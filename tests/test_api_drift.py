"""API-drift guard: every keyword argument our code passes to a library constructor or config must exist.

Course notebooks usually break because a library renamed an argument (`max_seq_length` -> `max_length`,
`tokenizer=` -> `processing_class=`, `load_in_4bit=` removed from `from_pretrained`). This test reads the
helpers and the notebooks' code cells, finds calls to the library APIs below (directly, or through the
helpers that forward `**overrides` into them), and checks each keyword against the installed signature.
A rename fails here with the argument and the call site, instead of in a student's Colab.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _targets() -> dict[str, set[str]]:
    """Callable name -> accepted keyword names, from the installed libraries."""
    from bitsandbytes.nn import Linear8bitLt
    from gptqmodel import GPTQModel
    from gptqmodel.models.base import BaseQModel
    from gptqmodel.quantization.config import AWQConfig, GPTQConfig
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    def params(obj) -> set[str]:
        if dataclasses.is_dataclass(obj):
            return {f.name for f in dataclasses.fields(obj)}
        return set(inspect.signature(obj).parameters)

    sft, dpo = params(SFTConfig), params(DPOConfig)
    return {
        "SFTConfig": sft, "DPOConfig": dpo, "SFTTrainer": params(SFTTrainer), "DPOTrainer": params(DPOTrainer),
        "LoraConfig": params(LoraConfig), "BitsAndBytesConfig": params(BitsAndBytesConfig.__init__),
        "GPTQConfig": params(GPTQConfig), "AWQConfig": params(AWQConfig),
        "prepare_model_for_kbit_training": params(prepare_model_for_kbit_training),
        "Linear8bitLt": params(Linear8bitLt.__init__),
        # GPTQModel.load forwards **kwargs to from_pretrained (to quantize) or from_quantized (a checkpoint)
        "GPTQModel.load": params(GPTQModel.load)
        | (params(BaseQModel.from_pretrained) & params(BaseQModel.from_quantized)),
        "quantize": params(BaseQModel.quantize),
        # helpers that forward **overrides into a TRL config: their extra keywords must be config fields
        "sft_config": sft, "train_sft_lora": sft, "dpo_config": dpo, "train_dpo": dpo,
    }


HELPER_OWN_PARAMS = {  # keywords the forwarding helpers take themselves
    "sft_config": {"profile", "output_dir"},
    "train_sft_lora": {"profile", "model", "tokenizer", "rows", "output_dir", "peft_config", "callbacks"},
    "dpo_config": {"profile", "output_dir"},
    "train_dpo": {"profile", "model", "tokenizer", "pairs", "peft_config", "output_dir", "callbacks"},
}


def _sources() -> list[tuple[str, str]]:
    files = [(str(p.relative_to(ROOT)), p.read_text())
             for p in sorted((ROOT / "helpers").glob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                files.append((f"{nb.relative_to(ROOT)} cell {cell.get('id')}", src))
    return files


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        if isinstance(f.value, ast.Name) and f.value.id == "GPTQModel":
            return f"GPTQModel.{f.attr}"
        return f.attr
    return None


def find_calls() -> list[tuple[str, int, str, str]]:
    """(site, line, callable, keyword) for every literal keyword passed to a watched callable."""
    targets = _targets()
    found = []
    for site, src in _sources():
        try:
            tree = ast.parse(src)
        except SyntaxError:  # notebook magics
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (name := _call_name(node)) in targets:
                for kw in node.keywords:
                    if kw.arg is not None and kw.arg not in HELPER_OWN_PARAMS.get(name, set()):
                        found.append((site, node.lineno, name, kw.arg))
    return found


def test_the_guard_finds_the_calls_it_should():
    calls = {(name, kw) for _, _, name, kw in find_calls()}
    for expected in [("BitsAndBytesConfig", "bnb_4bit_quant_type"), ("SFTTrainer", "processing_class"),
                     ("DPOTrainer", "processing_class"), ("LoraConfig", "target_modules"), ("train_dpo", "learning_rate")]:
        assert expected in calls, f"the drift guard no longer sees {expected}: update find_calls()"


def test_every_keyword_exists_in_the_installed_library():
    targets = _targets()
    unknown = [f"{site}:{line}: {name}(... {kw}=...) - '{kw}' is not an argument of the installed {name}"
               for site, line, name, kw in find_calls() if kw not in targets[name]]
    assert not unknown, "Library API drift:\n" + "\n".join(unknown)


def test_trainer_kwargs_built_by_helpers_exist():
    """Keywords assembled in dictionaries (common_trainer_kwargs, precision_kwargs) go to both TRL configs."""
    from helpers import training
    from helpers.profiles import PROFILES

    targets = _targets()
    for name, profile in PROFILES.items():
        kwargs = training.common_trainer_kwargs(profile, "out", 1, 1, 1e-4) | training.precision_kwargs(profile)
        for config in ("SFTConfig", "DPOConfig"):
            missing = sorted(set(kwargs) - targets[config])
            assert not missing, f"profile {name}: {config} has no argument(s) {missing}"


@pytest.mark.parametrize("removed", ["max_seq_length", "max_prompt_length", "tokenizer", "load_in_4bit", "load_in_8bit"])
def test_known_removed_arguments_are_not_used(removed):
    """The renames that break most course notebooks: none of them may appear as a keyword anywhere."""
    sites = [f"{site}:{line} {name}" for site, line, name, kw in find_calls() if kw == removed and name != "BitsAndBytesConfig"]
    assert not sites, f"'{removed}=' is used at {sites}"
