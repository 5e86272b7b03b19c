import re

import pytest

from helpers import profiles
from helpers.profiles import PROFILES, ProfileError, detect_profile_name, get_profile


def fake_cuda(monkeypatch, available, cap=None, mem=None):
    monkeypatch.setattr(profiles, "_cuda_info", lambda: (available, cap, mem))


def test_unknown_profile_lists_valid_names(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "h100-super")
    with pytest.raises(ProfileError) as err:
        get_profile()
    msg = str(err.value)
    assert "h100-super" in msg
    for name in PROFILES:
        assert name in msg


def test_env_var_overrides_detection(monkeypatch):
    fake_cuda(monkeypatch, False)
    monkeypatch.setenv("COURSE_PROFILE", "TINY")
    p = get_profile()
    assert p.name == "tiny" and "COURSE_PROFILE" in p.reason


@pytest.mark.parametrize(
    "available,cap,expected",
    [(False, None, "cpu"), (True, (7, 5), "t4"), (True, (7, 0), "t4"), (True, (8, 0), "a100"), (True, (9, 0), "a100"),
     (True, (8, 9), "l4")],
)
def test_detection_with_faked_gpu(monkeypatch, available, cap, expected):
    memory = {"t4": 15.0, "l4": 22.0, "a100": 39.4}.get(expected)   # GiB, as torch reports the cards
    fake_cuda(monkeypatch, available, cap, memory)
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert detect_profile_name()[0] == expected
    p = get_profile()
    assert p.name == expected and p.reason.startswith("auto-detected")


def test_t4_is_fp16_and_a100_bf16(monkeypatch):
    fake_cuda(monkeypatch, True, (7, 5), 15.0)
    assert get_profile("t4").precision == "fp16"
    fake_cuda(monkeypatch, True, (8, 0), 80.0)
    assert get_profile("a100").precision == "bf16"


def test_gpu_profile_on_cpu_machine_is_a_clear_error(monkeypatch):
    fake_cuda(monkeypatch, False)
    with pytest.raises(ProfileError, match="needs a CUDA GPU.*COURSE_PROFILE=cpu"):
        get_profile("t4")


def test_a100_profile_refused_on_t4(monkeypatch):
    fake_cuda(monkeypatch, True, (7, 5), 15.0)
    with pytest.raises(ProfileError, match="bf16"):
        get_profile("a100")


def test_cpu_profiles_load_fp32_weights():
    import torch

    assert PROFILES["cpu"].torch_dtype == torch.float32
    assert PROFILES["tiny"].device == "cpu"


@pytest.mark.parametrize("name,hidden", [("cpu", 576), ("t4", 960), ("a100", 2048), ("tiny", 64)])
def test_quant_group_size_divides_hidden_size(name, hidden):
    assert hidden % PROFILES[name].quant_group_size == 0


def test_eval_autocast_only_on_bf16_cpu_profiles(monkeypatch):
    from dataclasses import replace

    assert not PROFILES["t4"].eval_autocast and not PROFILES["a100"].eval_autocast
    assert replace(PROFILES["cpu"], precision="bf16").eval_autocast
    assert not replace(PROFILES["cpu"], precision="fp32").eval_autocast


@pytest.mark.parametrize("decided", ["fp32", "bf16"])
def test_cpu_profiles_take_the_precision_the_hardware_decides(monkeypatch, decided):
    """Every dtype a CPU profile chooses follows the decision: trainer flags, evaluation autocast, bitsandbytes'
    compute dtype and GPTQModel's dtype."""
    import torch

    from helpers import hardware
    from helpers.training import precision_kwargs

    fake_cuda(monkeypatch, False)
    monkeypatch.setattr(hardware, "cpu_precision", lambda: (decided, "faked for the test"))
    for name in ("cpu", "tiny"):
        p = get_profile(name)
        assert p.precision == decided and p.precision_reason == "faked for the test"
        assert f"precision {decided}: faked for the test" in p.summary()
        assert p.eval_autocast == (decided == "bf16")
        assert precision_kwargs(p) == {"use_cpu": True, "bf16": decided == "bf16", "fp16": False}
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[decided]
        assert p.compute_dtype_4bit == dtype and p.compute_dtype == dtype
        assert p.torch_dtype == torch.float32  # weights stay fp32 on CPU; bf16 is autocast only


def test_unresolved_precision_is_refused():
    with pytest.raises(ProfileError, match="get_profile"):
        PROFILES["cpu"].compute_dtype


def test_gpu_check_profiles_are_tiny_on_cuda(monkeypatch):
    fake_cuda(monkeypatch, True, (8, 0), 80.0)
    t4, a100 = get_profile("tiny_t4"), get_profile("tiny_a100")
    assert (t4.precision, a100.precision) == ("fp16", "bf16") and t4.needs_cuda and a100.needs_cuda
    assert t4.model_source == a100.model_source == "tiny" and t4.sft_steps == PROFILES["tiny"].sft_steps
    fake_cuda(monkeypatch, True, (7, 5), 15.0)
    with pytest.raises(ProfileError, match="bf16"):
        get_profile("tiny_a100")
    fake_cuda(monkeypatch, False)
    with pytest.raises(ProfileError, match="needs a CUDA GPU"):
        get_profile("tiny_t4")


def test_setup_switches_the_hub_off_on_offline_profiles(monkeypatch, capsys):
    import helpers

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COURSE_PROFILE", "tiny")
    profile = helpers.setup("test")
    import os

    assert profile.name == "tiny" and os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert "profile 'tiny'" in capsys.readouterr().out


def test_gpu_profiles_fit_their_memory_with_the_settings_they_use(monkeypatch):
    """The t4 profile (picked on a faked compute-capability-7.5 device) fits a 15 GB T4, the a100 one 40 GB, with
    room to spare; without gradient checkpointing the margin would be thin (under 40% of the card left)."""
    from helpers.profiles import PROFILES, training_memory_gb

    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setattr(profiles, "_cuda_info", lambda: (True, (7, 5), 15.0))
    t4 = profiles.get_profile()
    assert t4.name == "t4" and t4.precision == "fp16" and t4.gradient_checkpointing
    assert training_memory_gb(t4)["total"] < 0.6 * 15
    assert training_memory_gb(t4, gradient_checkpointing=False)["total"] > 0.6 * 15
    a100 = PROFILES["a100"]
    assert a100.gradient_checkpointing and training_memory_gb(a100)["total"] < 0.6 * 40
    assert training_memory_gb(a100, gradient_checkpointing=False)["total"] > 0.6 * 40
    with pytest.raises(profiles.ProfileError, match="No shape on record"):
        training_memory_gb(PROFILES["tiny"])


def test_4bit_compute_dtype_follows_the_gpu():
    import torch

    assert PROFILES["t4"].compute_dtype_4bit == torch.float16  # no bf16 below compute capability 8.0
    assert PROFILES["a100"].compute_dtype_4bit == torch.bfloat16


@pytest.mark.parametrize("change,named", [({"sft_steps": -3}, "sft_steps=-3"), ({"train_batch_size": 0}, "train_batch_size=0"),
                                          ({"sft_learning_rate": 0.0}, "sft_learning_rate=0.0"),
                                          ({"precision": "fp8"}, "precision='fp8'"), ({"n_eval": -1}, "n_eval=-1")])
def test_values_no_run_can_use_are_refused_when_the_profile_is_built(change, named):
    from dataclasses import replace

    with pytest.raises(ProfileError, match=re.escape(named)):
        replace(PROFILES["tiny"], **change)


def test_the_whole_profile_survives_the_trip_to_a_child_process(monkeypatch):
    from dataclasses import replace

    from helpers.profiles import Profile

    fake_cuda(monkeypatch, False)
    changed = replace(get_profile("cpu"), sft_steps=7, train_batch_size=2, precision="fp32", quant_bits=(3,))
    back = Profile.from_json(changed.to_json())
    assert back == changed and back.precision_reason == changed.precision_reason and back.quant_bits == (3,)
