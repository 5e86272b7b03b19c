"""The CPU precision decision (helpers.hardware): bf16 only where the CPU computes it natively and fast."""

import json

import pytest

from helpers import hardware
from helpers.hardware import decide


def test_no_bf16_flag_means_fp32_without_timing():
    precision, reason = decide({"avx2", "fma", "avx512f"}, speedup=None)
    assert precision == "fp32" and "no native bf16" in reason


@pytest.mark.parametrize("flag", hardware.BF16_FLAGS)
def test_bf16_flag_and_fast_bf16_means_bf16(flag):
    precision, reason = decide({"avx2", flag}, speedup=4.2)
    assert precision == "bf16" and "4.2x faster" in reason


def test_bf16_flag_but_slow_bf16_means_fp32():
    """Flags can promise what the build or a virtual machine does not deliver: the timing has the last word."""
    precision, reason = decide({"avx512_bf16"}, speedup=0.03)
    assert precision == "fp32" and "not faster" in reason


@pytest.mark.parametrize("speedup,expected", [(3.0, "bf16"), (0.02, "fp32"), (None, "fp32")])
def test_unknown_flags_let_the_timing_decide(speedup, expected):
    assert decide(None, speedup)[0] == expected


def test_override_wins_and_bad_values_are_refused():
    assert decide({"avx2"}, None, override="bf16") == ("bf16", "set by COURSE_CPU_PRECISION=bf16")
    assert decide({"amx_bf16"}, 5.0, override="fp32")[0] == "fp32"
    with pytest.raises(ValueError, match="fp32 or bf16"):
        decide(None, None, override="fp16")


def test_cpu_flags_read_from_a_cpuinfo_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert hardware.cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}
    assert hardware.cpu_model(str(info)) == "Test CPU"
    assert hardware.cpu_flags(str(tmp_path / "missing")) is None


def _fresh(monkeypatch, **env):
    hardware.cpu_precision.cache_clear()
    for var in (hardware.OVERRIDE_VAR, hardware.DECIDED_VAR):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)


def test_machine_decision_uses_flags_and_timing_and_is_handed_to_children(monkeypatch):
    """Capability absent: fp32 with no timing at all. Present: the timing decides. The decision is exported."""
    timed = []
    monkeypatch.setattr(hardware, "bf16_speedup", lambda: timed.append(1) or 3.0)
    _fresh(monkeypatch)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    assert hardware.cpu_precision()[0] == "fp32" and timed == []
    assert json.loads(__import__("os").environ[hardware.DECIDED_VAR])[0] == "fp32"
    _fresh(monkeypatch)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert hardware.cpu_precision()[0] == "bf16" and timed == [1]
    # a child process inherits the parent's decision instead of timing again
    _fresh(monkeypatch, **{hardware.DECIDED_VAR: json.dumps(["fp32", "decided by the parent"])})
    assert hardware.cpu_precision() == ("fp32", "decided by the parent") and timed == [1]
    _fresh(monkeypatch, **{hardware.OVERRIDE_VAR: "bf16"})
    assert hardware.cpu_precision()[0] == "bf16"
    hardware.cpu_precision.cache_clear()


def test_bf16_speedup_is_a_positive_number_measured_quickly():
    import time

    start = time.perf_counter()
    speedup = hardware.bf16_speedup()
    assert speedup > 0 and time.perf_counter() - start < 5
