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
    [(False, None, "cpu"), (True, (7, 5), "t4"), (True, (7, 0), "t4"), (True, (8, 0), "a100"), (True, (9, 0), "a100")],
)
def test_detection_with_faked_gpu(monkeypatch, available, cap, expected):
    fake_cuda(monkeypatch, available, cap, 15.0 if available else None)
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
    assert PROFILES["cpu"].eval_autocast and PROFILES["tiny"].eval_autocast
    assert not PROFILES["t4"].eval_autocast and not PROFILES["a100"].eval_autocast


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
    """The t4 profile (picked on a faked compute-capability-7.5 device) fits a 15 GB T4, the a100 one 40 GB;
    without gradient checkpointing neither would leave a safe margin."""
    from helpers.profiles import PROFILES, training_memory_gb

    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setattr(profiles, "_cuda_info", lambda: (True, (7, 5), 15.0))
    t4 = profiles.get_profile()
    assert t4.name == "t4" and t4.precision == "fp16" and t4.gradient_checkpointing
    assert training_memory_gb(t4)["total"] < 0.6 * 15
    assert training_memory_gb(t4, gradient_checkpointing=False)["total"] > 0.8 * 15
    a100 = PROFILES["a100"]
    assert a100.gradient_checkpointing and training_memory_gb(a100)["total"] < 0.6 * 40
    assert training_memory_gb(a100, gradient_checkpointing=False)["total"] > 40
    with pytest.raises(profiles.ProfileError, match="No shape on record"):
        training_memory_gb(PROFILES["tiny"])


def test_4bit_compute_dtype_follows_the_gpu():
    import torch

    assert PROFILES["t4"].compute_dtype_4bit == torch.float16  # no bf16 below compute capability 8.0
    assert PROFILES["a100"].compute_dtype_4bit == torch.bfloat16
    assert PROFILES["cpu"].compute_dtype_4bit == torch.bfloat16
