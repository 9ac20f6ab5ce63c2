"""deit_core.latency (median and spread, "the same speed") and deit_core.cpu_info, on crafted numbers."""
from __future__ import annotations

import pytest

from deit_core import cpu_info, latency


def test_summarize_gives_median_spread_and_count():
    times = [float(t) for t in range(1, 22)]  # 1..21 ms
    s = latency.summarize(times)
    assert s == {"p50": 11.0, "p10": 3.0, "p90": 19.0, "spread": 16.0, "runs": 21}
    assert latency.summarize([2.5]) == {"p50": 2.5, "p10": 2.5, "p90": 2.5, "spread": 0.0, "runs": 1}
    with pytest.raises(ValueError):
        latency.summarize([])


def test_overlapping_spreads_are_the_same_speed():
    a = {"p50": 1.72, "p10": 1.70, "p90": 1.79}
    b = {"p50": 1.76, "p10": 1.74, "p90": 1.80}
    assert latency.same_speed(a, b) and latency.same_speed(b, a)
    assert not latency.faster(a, b) and not latency.faster(b, a)


def test_separate_spreads_are_faster_and_slower():
    fast = {"p50": 1.7, "p10": 1.6, "p90": 1.9}
    slow = {"p50": 5.3, "p10": 4.8, "p90": 6.0}
    assert not latency.same_speed(fast, slow)
    assert latency.faster(fast, slow) and not latency.faster(slow, fast)
    assert latency.ratio(slow, fast) == pytest.approx(3.12)


def test_touching_spreads_are_the_same_speed_and_unknown_is_neither():
    assert latency.same_speed({"p50": 1.0, "p10": 0.9, "p90": 1.1}, {"p50": 1.2, "p10": 1.1, "p90": 1.3})
    assert not latency.same_speed(None, {"p50": 1.0})
    assert not latency.faster(None, {"p50": 1.0})
    assert latency.ratio({"p50": 0}, {"p50": 1.0}) is None


def test_a_report_without_p10_uses_p50_to_p90():
    old = {"p50": 2.0, "p90": 2.4}
    assert latency.interval(old) == (2.0, 2.4)
    assert latency.same_speed(old, {"p50": 2.5, "p10": 2.35, "p90": 2.6})
    assert latency.faster({"p50": 1.0, "p90": 1.5}, old) is True  # 1.5 < 2.0


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_vnni amx_tile amx_int8
processor\t: 1
model name\t: something else
flags\t\t: fpu
"""


def test_cpu_model_and_isa_come_from_the_first_processor(tmp_path):
    assert cpu_info.parse_cpuinfo(CPUINFO) == {"model": "Intel(R) Xeon(R) Platinum 8480+",
                                               "isa": ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"]}
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO)
    cpu = cpu_info.cpu_identity(threads=1, cpuinfo=f)
    assert cpu["model"] == "Intel(R) Xeon(R) Platinum 8480+" and cpu["threads"] == 1 and "amx_tile" in cpu["isa"]
    assert cpu_info.describe(cpu) == ("Intel(R) Xeon(R) Platinum 8480+ (avx2, fma, avx512f, avx512_vnni, amx_tile, amx_int8), "
                                      "1 thread")
    assert cpu_info.describe(None) == "CPU not recorded"


def test_cpu_identity_survives_a_missing_cpuinfo(tmp_path):
    cpu = cpu_info.cpu_identity(threads=2, cpuinfo=tmp_path / "absent")
    assert cpu["isa"] == [] and cpu["threads"] == 2
    assert cpu_info.describe({"model": "Apple M2", "isa": [], "threads": 2}) == "Apple M2 (no AVX2/AVX-512/AMX), 2 threads"
