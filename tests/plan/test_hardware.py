"""The hardware table: every figure sourced, formats fall back as documented, the CPU measured or given."""

import json

import pytest

from trillion.plan import hardware
from trillion.plan.hardware import FALLBACK, HARDWARE, cpu_hardware, get_hardware

REQUIRED = ("memory", "bandwidth", "scale_up", "scale_up_size", "scale_out")


@pytest.mark.parametrize("name", list(HARDWARE))
def test_every_figure_names_its_source(name):
    hw = HARDWARE[name]
    for key in REQUIRED:
        if getattr(hw, key) is not None:
            assert hw.sources.get(key), f"{name}.{key} has no source"
    for fmt in hw.flops:
        assert hw.sources.get(fmt), f"{name} {fmt} throughput has no source"
    assert hw.memory > 0 and hw.bandwidth > 0 and hw.scale_up_size >= 1


def test_figures_match_the_reference_table():
    # shared/reference/formats-and-hardware.md, by hand
    assert HARDWARE["950pr"].memory == 128e9 and HARDWARE["950pr"].bandwidth == 1.6e12
    assert HARDWARE["950dt"].memory == 144e9 and HARDWARE["950dt"].bandwidth == 4e12
    assert HARDWARE["950dt"].flops["fp8"] == 1e15 and HARDWARE["950dt"].flops["fp4"] == 2e15
    assert HARDWARE["950dt"].scale_up_size == 8192
    assert HARDWARE["910c"].bandwidth == 3.2e12 and HARDWARE["910c"].scale_up_size == 384
    assert HARDWARE["h800"].memory == 80e9 and HARDWARE["h800"].flops["fp8"] == 1980e12
    assert HARDWARE["h200"].bandwidth == 4.8e12
    assert HARDWARE["b200"].flops["fp4"] == 9e15
    # both-directions link figures halved: NVLink 400 / 900 / 1800 GB/s, Lingqu 2 TB/s
    assert [HARDWARE[n].scale_up for n in ("h800", "h200", "b200", "950dt")] == [200e9, 450e9, 900e9, 1e12]


def test_formats_fall_back_down_the_chain():
    assert HARDWARE["h200"].peak("fp4") == (1980e12, "fp8")
    assert HARDWARE["910c"].peak("fp8") == (752e12, "bf16")  # no FP8 on the 910C
    assert HARDWARE["910c"].peak("int8") == (1504e12, "int8")
    assert HARDWARE["950dt"].peak("hif8") == (1e15, "hif8")
    assert HARDWARE["b200"].peak("int8") == (2.25e15, "bf16")
    with pytest.raises(ValueError, match="lists no throughput for fp32"):
        HARDWARE["h800"].peak("fp32")
    assert all(chain[0] == fmt for fmt, chain in FALLBACK.items())


def test_unknown_hardware_is_refused():
    with pytest.raises(ValueError, match="unknown hardware 'tpu'; known: 950pr, 950dt, 910c, h800, h200, b200, cpu"):
        get_hardware("tpu")


def test_cpu_figures_given_are_not_measured(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(hardware, "measure_bandwidth", lambda: pytest.fail("measured although given"))
    monkeypatch.setattr(hardware, "measure_flops", lambda: pytest.fail("measured although given"))
    hw = cpu_hardware(20e9, 100e9)
    assert (hw.bandwidth, hw.flops) == (20e9, {"fp32": 100e9}) and hw.scale_up_size == 1
    assert hw.sources["bandwidth"].startswith("given") and hw.memory > 0


def test_cpu_measurement_is_cached_per_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(hardware, "measure_bandwidth", lambda: calls.append("bw") or 12e9)
    monkeypatch.setattr(hardware, "measure_flops", lambda: calls.append("flops") or 50e9)
    first = cpu_hardware()
    second = cpu_hardware()
    assert calls == ["bw", "flops"]  # the second call read the cache
    assert first.bandwidth == second.bandwidth == 12e9 and second.flops["fp32"] == 50e9
    stored = json.loads((tmp_path / "trillion" / "cpu.json").read_text())
    assert list(stored.values()) == [{"bandwidth": 12e9, "flops": 50e9}]
    assert "measured" in second.sources["bandwidth"]
