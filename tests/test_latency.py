"""deit_core.latency (median and spread, "the same speed") and deit_core.cpu_info, on crafted numbers."""
from __future__ import annotations

import pytest
import torch

from deit_core import cpu_info, export_report, latency


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
    assert cpu["torch"] == torch.__version__
    assert cpu_info.describe(cpu) == ("Intel(R) Xeon(R) Platinum 8480+ (avx2, fma, avx512f, avx512_vnni, amx_tile, amx_int8), "
                                      f"1 thread, torch {torch.__version__}")
    assert cpu_info.describe(None) == "CPU not recorded"


def test_cpu_identity_survives_a_missing_cpuinfo(tmp_path):
    cpu = cpu_info.cpu_identity(threads=2, cpuinfo=tmp_path / "absent")
    assert cpu["isa"] == [] and cpu["threads"] == 2
    assert cpu_info.describe({"model": "Apple M2", "isa": [], "threads": 2}) == "Apple M2 (no AVX2/AVX-512/AMX), 2 threads"


# --------------------------------------------------------------- int8 vs fp32: ratios with their spreads

FP32 = {"p50": 23.4, "p10": 22.0, "p90": 25.0}
INT8 = {"p50": 16.1, "p10": 15.5, "p90": 17.0}


def test_a_speedup_carries_its_range_over_both_spreads():
    entry = latency.speedup(FP32, INT8)
    assert entry == {"speedup": 1.45, "speedup_range": [round(22.0 / 17.0, 2), round(25.0 / 15.5, 2)], "same_speed": False}
    assert latency.speedup_text(entry) == "1.45x faster (1.29-1.61)"
    assert latency.speedup(FP32, None) is None and latency.speedup({"p50": 0.0}, INT8) is None


def test_a_slower_file_is_said_slower_and_overlapping_spreads_are_the_same_speed():
    pte = {"p50": 30.3, "p10": 29.0, "p90": 32.0}
    assert latency.speedup_text(latency.speedup(FP32, pte)) == "1.30x slower (1.16-1.45)"
    close = {"p50": 24.0, "p10": 23.0, "p90": 26.0}
    assert latency.speedup_text(latency.speedup(FP32, close)) == "the same speed (0.85-1.09x)"


def test_a_speedup_recorded_before_its_range_shows_the_ratio_alone():
    assert latency.speedup_text({"speedup": 2.1, "same_speed": False}) == "2.10x faster"
    assert latency.speedup_text({"speedup": 1.02, "same_speed": True}) == "the same speed (1.02x)"
    # named comparisons read as English: "as" for the same speed, "than" otherwise
    assert latency.speedup_text({"speedup": 1.02, "same_speed": True}, "its fp32 .ptl") == \
        "the same speed (1.02x) as its fp32 .ptl"
    assert latency.speedup_text({"speedup": 2.0}, "fp32 eager") == "2.00x faster than fp32 eager"
    assert latency.speedup_text(None, "fp32 eager") == "not measured against fp32 eager"
    assert latency.speedup_text(None) == "not measured"


def _variants(**lat):
    return {name: {"latency_ms": {**v, "runs": 50, "threads": 1}} for name, v in lat.items()}


def test_the_comparison_gives_each_runtime_and_fp32_eager():
    pte, fp32_pte, ptl, fp32_ptl = ({"p50": 26.7, "p10": 26.0, "p90": 27.5}, {"p50": 36.1, "p10": 35.0, "p90": 37.0},
                                    {"p50": 15.3, "p10": 15.0, "p90": 15.9}, {"p50": 24.0, "p10": 23.5, "p90": 24.8})
    cmp = export_report.latency_comparison(_variants(fp32=FP32, int8=INT8, ptl=ptl, pte=pte), fp32_ptl, fp32_pte)
    same, eager = cmp["same_runtime"], cmp["vs_fp32_eager"]
    assert same["eager"] == latency.speedup(FP32, INT8)
    assert same["lite_interpreter"] == latency.speedup(fp32_ptl, ptl)
    assert same["executorch"]["speedup"] == 1.35 and same["executorch"]["same_speed"] is False
    # the .pte is slower than fp32 eager (spreads 22.0-25.0 and 26.0-27.5 apart) yet faster than the fp32 .pte
    assert eager["pte"] == {"speedup": 0.88, "speedup_range": [0.8, 0.96], "same_speed": False}
    assert set(eager) == {"int8", "ptl", "pte"}
    no_refs = export_report.latency_comparison(_variants(fp32=FP32, int8=INT8, ptl=ptl), None)
    assert no_refs["same_runtime"]["lite_interpreter"] is None and no_refs["same_runtime"]["executorch"] is None


def test_the_printed_table_names_the_cpu_and_gives_both_ratios():
    pte, fp32_pte = {"p50": 26.7, "p10": 26.0, "p90": 27.5}, {"p50": 36.1, "p10": 35.0, "p90": 37.0}
    ptl = {"p50": 15.3, "p10": 15.0, "p90": 15.9}
    variants = _variants(fp32=FP32, int8=INT8, ptl=ptl, pte=pte)
    timing = {"fp32_ptl": None, "fp32_ptl_missing": "fp32 .ptl reference not built: RuntimeError: x",
              "fp32_pte": {**fp32_pte, "runs": 50, "threads": 1},
              "int8_vs_fp32": export_report.latency_comparison(variants, None, fp32_pte)}
    cpu = {"model": "AMD EPYC 9B14", "isa": ["avx2", "avx512f"], "threads": 1, "torch": "2.14.1"}
    text = export_report.format_table(variants, 21_548_000, cpu, timing)
    lines = text.splitlines()
    assert any(line.startswith("pte fp32*") and "36.10" in line and "35.00-37.00" in line for line in lines)
    assert not any(line.startswith("ptl fp32*") for line in lines)
    assert "latency: batch 1, 50 timed runs on AMD EPYC 9B14 (avx2, avx512f), 1 thread, torch 2.14.1" in lines
    assert ("int8 vs fp32, same runtime: eager 1.45x faster (1.29-1.61); .pte 1.35x faster (1.27-1.42); "
            ".ptl not measured (no fp32 .ptl reference: see latency.fp32_ptl_missing)") in lines
    assert "int8 vs fp32 eager: int8 eager 1.45x faster (1.29-1.61); .ptl 1.53x faster (1.38-1.67); " \
           ".pte 1.14x slower (1.04-1.25)" in lines
    # without the latency block (an old report) the table is the variants and the CPU line only
    assert not [line for line in export_report.format_table(variants, None, cpu).splitlines() if "vs fp32" in line]
