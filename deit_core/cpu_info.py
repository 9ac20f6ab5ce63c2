"""Which CPU a latency was measured on: its model name and the vector ISA features that change the
picture (AVX2, AVX-512, VNNI, AMX), recorded beside every latency.

Why: the same int8 model is several times faster on a CPU with AVX-512 VNNI or AMX than on one with
AVX2 only, so a latency without the CPU that measured it cannot be compared with another. Read from
``/proc/cpuinfo`` (Linux) with :func:`platform.processor` as the fallback for the name, and the
kernel set PyTorch dispatches to (``torch.backends.cpu.get_cpu_capability()``, e.g. ``AVX512``)
when torch is importable. Nothing from the service.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

# The flags that matter for int8/fp32 inference kernels, in the order they are shown.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
             "asimd", "sve")
CPUINFO = Path("/proc/cpuinfo")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name and the known ISA flags of the first processor block of ``/proc/cpuinfo`` text."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and model is None:
            model = value.strip() or None
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags]}


def torch_capability() -> str | None:
    """The kernel ISA PyTorch dispatches to (``DEFAULT``, ``AVX2``, ``AVX512``...), None without torch."""
    try:
        import torch
        return str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError, RuntimeError):
        return None


def torch_version() -> str | None:
    """The torch release timing the latency (its kernels change between releases), None without torch."""
    try:
        import torch
        return str(torch.__version__)
    except ImportError:
        return None


def cpu_identity(threads: int | None = None, cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """``{"model", "isa", "torch_capability", "torch", "machine", "threads"}`` of this host (``threads``:
    the count the latency was timed on, as given by the caller; ``torch``: its version)."""
    try:
        info = parse_cpuinfo(cpuinfo.read_text())
    except OSError:
        info = {"model": None, "isa": []}
    return {"model": info["model"] or platform.processor() or None, "isa": info["isa"],
            "torch_capability": torch_capability(), "torch": torch_version(), "machine": platform.machine() or None,
            "threads": threads}


def describe(cpu: dict[str, Any] | None) -> str:
    """One line for a table footer: ``Intel(R) Xeon(R) ... (avx2, avx512f), 1 thread, torch 2.14.1``
    (the torch version when recorded: a report written before it was has none)."""
    if not cpu:
        return "CPU not recorded"
    isa = ", ".join(cpu.get("isa") or []) or "no AVX2/AVX-512/AMX"
    threads = cpu.get("threads")
    tail = "" if threads is None else f", {threads} thread{'s' if threads != 1 else ''}"
    version = f", torch {cpu['torch']}" if cpu.get("torch") else ""
    return f"{cpu.get('model') or 'unknown CPU'} ({isa}){tail}{version}"
