"""The on-device models: normalization inside, int8 Linear layers, Lite Interpreter ``.ptl`` and ExecuTorch ``.pte``.

Each function does one conversion step and returns plain data describing what it did, so that
:mod:`deit_core.export` can put every decision (engine, layers kept fp32, passes skipped) in the report.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import logging
import os
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

# Classifier heads stay fp32 by default: together they hold ~0.1% of a DeiT's weights (int8 saves a
# few KB) but they write the logits directly, so their rounding error is never averaged away.
from .export_cli import DEFAULT_KEEP_FP32  # noqa: E402

TORCHSCRIPT_METHODS = ("trace", "script")


class MobileError(RuntimeError):
    """A conversion step failed; the message says which step and why."""


class NormalizedClassifier(nn.Module):
    """Takes a float 1x3xHxW RGB image in [0,1], normalizes it with the training mean/std, returns logits.

    Why inside the model: a phone app feeds camera pixels; a forgotten or mismatched normalization
    is the most common silent accuracy loss on device, so the exported file owns it.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def quant_engine(machine: str | None = None) -> str:
    """The quantized kernel library for this platform: qnnpack on ARM (phones), fbgemm on x86."""
    machine = (machine or platform.machine()).lower()
    supported = list(torch.backends.quantized.supported_engines)
    wanted = ["qnnpack"] if machine.startswith(("arm", "aarch")) else ["fbgemm", "x86"]
    for name in wanted + ["qnnpack", "fbgemm", "x86"]:
        if name in supported:
            return name
    raise MobileError(f"no quantized engine available on {machine}; torch supports {supported}")


@contextlib.contextmanager
def using_engine(engine: str) -> Iterator[None]:
    """Set ``torch.backends.quantized.engine`` for the duration of an export, then restore it."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def parse_patterns(text: str | None) -> tuple[str, ...]:
    """``"head,head_dist"`` -> ``("head", "head_dist")``; ``None`` -> the default; ``""`` -> none kept."""
    if text is None:
        return DEFAULT_KEEP_FP32
    return tuple(p.strip() for p in text.split(",") if p.strip())


@dataclass
class QuantPlan:
    """Which Linear layers become int8 and which stay fp32 (by module name)."""

    quantize: list[str]
    keep_fp32: list[str]
    patterns: tuple[str, ...]
    quantized_params: int = 0
    total_params: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "quantized_linear": self.quantize, "kept_fp32_linear": self.keep_fp32,
            "keep_fp32_patterns": list(self.patterns),
            "quantized_param_fraction": round(self.quantized_params / max(1, self.total_params), 4),
        }


def plan_quantization(model: nn.Module, keep_fp32: Sequence[str] = DEFAULT_KEEP_FP32) -> QuantPlan:
    """Split the model's Linear layers by the fnmatch patterns in ``keep_fp32``."""
    plan = QuantPlan([], [], tuple(keep_fp32))
    plan.total_params = sum(p.numel() for p in model.parameters())
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        if any(fnmatch.fnmatchcase(name, pat) for pat in keep_fp32):
            plan.keep_fp32.append(name)
        else:
            plan.quantize.append(name)
            plan.quantized_params += mod.weight.numel()
    return plan


_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def strip_dropout(model: nn.Module) -> int:
    """Replace dropout modules by ``nn.Identity`` in place; returns how many.

    In eval mode they do nothing, but a traced module keeps them as ``aten::dropout`` calls that
    the phone runtime must still ship and run (graph passes only remove them after freezing).
    """
    count = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, _DROPOUT_TYPES):
                setattr(parent, name, nn.Identity())
                count += 1
    return count


def quantize_int8(model: nn.Module, plan: QuantPlan) -> nn.Module:
    """An inference copy of ``model``: dropout removed, the planned Linear layers dynamic int8.

    qint8 weights as in the DeiT mobile tutorial. Dynamic quantization needs no calibration data:
    weights are int8 once, activations are quantized per call from their own range. The input
    model is left untouched.
    """
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    spec = {name: default_dynamic_qconfig for name in plan.quantize}
    inference = copy.deepcopy(model).eval()
    strip_dropout(inference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(inference, qconfig_spec=spec, dtype=torch.qint8)


@dataclass
class ScriptResult:
    """A TorchScript module that the Lite Interpreter has loaded and run, and how it was made."""

    module: torch.jit.ScriptModule
    method: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ptl_variant: str = "frozen"
    ptl_sizes: dict[str, int] = field(default_factory=dict)


def xnnpack_enabled() -> bool:
    """Whether this torch build has XNNPACK (``optimize_for_mobile`` needs it; x86 wheels lack it)."""
    import torch.backends.xnnpack

    return bool(torch.backends.xnnpack.enabled)


def _to_torchscript(model: nn.Module, example: torch.Tensor, method: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if method == "trace":
            return torch.jit.trace(model, example, check_trace=False)
        if method == "script":
            return torch.jit.script(model)
    raise MobileError(f"unknown TorchScript method {method!r}; use one of {TORCHSCRIPT_METHODS}")


def _optimize(scripted: torch.jit.ScriptModule) -> tuple[torch.jit.ScriptModule, list[str], list[str]]:
    """Clean up for inference and freeze; run ``optimize_for_mobile`` only where XNNPACK exists.

    Without XNNPACK the portable part is still done: dropout is removed from the graph and
    ``torch.jit.freeze`` inlines the weights as constants and folds conv-bn/add/mul.
    """
    passes, skipped = [], []
    remove_dropout = getattr(torch._C, "_jit_pass_remove_dropout", None)
    if remove_dropout is not None:
        try:
            remove_dropout(scripted._c)
            passes.append("remove dropout")
        except RuntimeError as e:
            skipped.append(f"remove dropout failed ({str(e).splitlines()[0][:160]})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(scripted.eval())
    passes.append("torch.jit.freeze (constants inlined, conv-bn/add/mul folded)")
    if xnnpack_enabled():
        from torch.utils.mobile_optimizer import optimize_for_mobile

        try:
            frozen = optimize_for_mobile(frozen)
            passes.append("optimize_for_mobile (XNNPACK prepack, fusions)")
        except RuntimeError as e:
            skipped.append(f"optimize_for_mobile failed ({str(e).splitlines()[0][:160]}); kept the frozen module")
    else:
        skipped.append("optimize_for_mobile: this torch build has no XNNPACK (torch.backends.xnnpack.enabled "
                       "is False, as on x86 wheels); XNNPACK prepacking and fusions skipped, freeze/fold/"
                       "remove-dropout done instead")
    return frozen, passes, skipped


def _save_smallest_ptl(candidates: dict[str, torch.jit.ScriptModule], ptl_path: Path) -> tuple[str, dict[str, int]]:
    """Save each candidate for the Lite Interpreter and keep the smallest file.

    Why: ``_save_for_lite_interpreter`` stores the int8 packed weights of a *frozen* module twice
    (10.9 MB instead of 6.1 MB for DeiT-Ti, measured with torch 2.14), so the unfrozen module can be
    the better phone file even though the frozen one is the better server file.
    """
    # each candidate is saved under the final file name: the archive inside is named after it
    paths = {name: ptl_path.parent / f".{name}" / ptl_path.name for name in candidates}
    sizes: dict[str, int] = {}
    try:
        for name, module in candidates.items():
            paths[name].parent.mkdir(exist_ok=True)
            save_ptl(module, paths[name])
            sizes[name] = paths[name].stat().st_size
        best = min(sizes, key=sizes.__getitem__)
        os.replace(paths[best], ptl_path)
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)
            if path.parent.exists():
                path.parent.rmdir()
    return best, sizes


LITE_DEPRECATED = "Lite Interpreter is deprecated"  # torch >= 2.9 warns on every load (Future- and DeprecationWarning)


def load_ptl(path: str | Path) -> Any:
    """Load a ``.ptl`` with the Lite Interpreter (what a phone runs). torch's warning that the Lite
    Interpreter is deprecated (use ExecuTorch) is filtered here, that one only: the ``.ptl`` is shipped
    on purpose next to the ExecuTorch ``.pte``, and the warning printed above the demo's result."""
    from torch.jit.mobile import _load_for_lite_interpreter

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LITE_DEPRECATED, category=FutureWarning)
        warnings.filterwarnings("ignore", message=LITE_DEPRECATED, category=DeprecationWarning)
        return _load_for_lite_interpreter(str(path))


def save_ptl(module: torch.jit.ScriptModule, path: str | Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module._save_for_lite_interpreter(str(path))


def to_lite_interpreter(model: nn.Module, example: torch.Tensor, ptl_path: Path,
                        methods: Sequence[str] = TORCHSCRIPT_METHODS) -> ScriptResult:
    """Convert, optimize and save ``model`` as ``.ptl``, trying ``methods`` in order until one loads.

    Why several: ``torch.jit.script`` of a timm ViT saves a ``.ptl`` that the Lite Interpreter then
    refuses to load, while ``torch.jit.trace`` loads; other models may only script. Each attempt is
    accepted only after the saved file was loaded back and run on ``example``.
    """
    attempts: list[dict[str, Any]] = []
    for method in methods:
        try:
            scripted = _to_torchscript(model, example, method)
            frozen, passes, skipped = _optimize(scripted)
            chosen, sizes = _save_smallest_ptl({"frozen": frozen, "unfrozen": scripted}, ptl_path)
            with torch.no_grad():
                load_ptl(ptl_path)(example)
        except Exception as e:  # noqa: BLE001 - any failure means: try the next method, and record why
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            log.info("TorchScript via %s did not give a loadable .ptl: %s", method, msg)
            attempts.append({"method": method, "ok": False, "error": msg})
            ptl_path.unlink(missing_ok=True)
            continue
        attempts.append({"method": method, "ok": True})
        if chosen != "frozen":
            skipped.append(f"freeze for the .ptl: the {chosen} module saves smaller for the Lite Interpreter "
                           f"({sizes}); model_int8.pt is frozen")
        return ScriptResult(frozen, method, attempts, passes, skipped, ptl_variant=chosen, ptl_sizes=sizes)
    raise MobileError("no TorchScript method produced a .ptl the Lite Interpreter loads: "
                      + "; ".join(f"{a['method']}: {a['error']}" for a in attempts))


def ptl_runtime_stamp(path: str | Path) -> dict[str, Any]:
    """Bytecode version and operator list: what a phone's runtime must support to load the file."""
    from torch.jit.mobile import _export_operator_list, _get_model_bytecode_version

    return {"ptl_bytecode_version": int(_get_model_bytecode_version(str(path))),
            "ptl_operators": sorted(_export_operator_list(load_ptl(path)))}


def executorch_status(deep: bool = True) -> tuple[bool, str]:
    """Whether the optional ExecuTorch extra is usable (``pip install distillery[executorch]``).

    ``deep=False`` only looks the package up (importing executorch costs ~15 s on a small CPU).
    """
    import importlib.util

    if importlib.util.find_spec("executorch") is None:
        return False, "executorch is not installed; install distillery[executorch] for model.pte"
    if deep:
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer  # noqa: F401
            from executorch.exir import to_edge_transform_and_lower  # noqa: F401
            from executorch.runtime import Runtime  # noqa: F401
        except Exception as e:  # noqa: BLE001 - a broken install is as absent as a missing one
            return False, f"executorch is not importable ({type(e).__name__}: {e}); reinstall distillery[executorch]"
    try:
        from importlib.metadata import version

        return True, version("executorch")
    except Exception:  # noqa: BLE001
        return True, "unknown"


def _pt2e_functions() -> tuple[Callable, Callable]:
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
    return prepare_pt2e, convert_pt2e


def export_pte(wrapped_fp32: nn.Module, quantize_names: Sequence[str], example: torch.Tensor,
               calibration: Sequence[torch.Tensor], pte_path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """ExecuTorch export: torch.export -> int8 PT2E (XNNPACK, per-channel dynamic) -> XNNPACK delegate.

    Only the Linear layers named in ``quantize_names`` (relative to ``wrapped_fp32``) are annotated,
    so the same layers stay fp32 as in the ``.ptl``. Returns the PT2E reference module (quantize/
    dequantize ops in eager), which is what the ``.pte`` must agree with, and a description.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    prepare_pt2e, convert_pt2e = _pt2e_functions()
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    quantizer = XNNPACKQuantizer()
    for name in quantize_names:
        quantizer.set_module_name(name, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(wrapped_fp32.eval(), (example,)).module()
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for x in calibration:
                prepared(x)
        reference = convert_pt2e(prepared)
    _lower_to_pte(reference, example, pte_path)
    info = {"quantizer": "XNNPACKQuantizer symmetric per-channel dynamic int8",
            "partitioner": "XnnpackPartitioner", "quantized_linear": len(quantize_names)}
    return reference, info


def _lower_to_pte(module: nn.Module, example: torch.Tensor, pte_path: Path) -> None:
    """torch.export ``module`` and lower it to the XNNPACK delegate; the program is written to ``pte_path``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, (example,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    pte_path.write_bytes(lowered.buffer)


def export_pte_fp32(wrapped_fp32: nn.Module, example: torch.Tensor, pte_path: Path) -> None:
    """The fp32 model lowered to XNNPACK like the shipped ``.pte`` but not quantized: a reference that
    is timed only (never shipped), so int8 vs fp32 can be given within ExecuTorch itself.

    Why: on a CPU with AMX, PyTorch eager's fp32 matmuls are faster than XNNPACK's, so a ``.pte``
    can be slower than fp32 eager while still being faster than the fp32 ``.pte``; only the
    same-runtime ratio says what int8 buys inside the runtime an app ships.
    """
    _lower_to_pte(wrapped_fp32.eval(), example, pte_path)


@contextlib.contextmanager
def executorch_threads(n: int) -> Iterator[int | None]:
    """Size ExecuTorch's own threadpool (XNNPACK's kernels run on it, not on torch's intra-op pool) to
    ``n`` threads for the duration, then restore it; yields the count it really has.

    Why: ExecuTorch starts its pool at one thread per core and ``torch.set_num_threads`` does not
    touch it, so a ``.pte`` timed "on one thread" would otherwise use every core. The API is
    ``executorch.extension.pybindings.portable_lib._unsafe_reset_threadpool`` (experimental in
    executorch 1.5.1; "unsafe" only while a method runs on the pool, which nothing does here).
    If it is missing, the pool is left alone and the yielded count is what it reports (None if unknown).
    """
    try:
        from executorch.extension.pybindings import portable_lib as et
    except ImportError:
        yield None
        return
    get = getattr(et, "_threadpool_get_thread_count", None)
    reset = getattr(et, "_unsafe_reset_threadpool", None)
    before = get() if get is not None else None
    if reset is None or before is None:
        yield before
        return
    reset(n)
    try:
        yield get()
    finally:
        reset(before)


class PteRunner:
    """Runs a ``.pte`` through ``executorch.runtime`` like a tensor-in, tensor-out module.

    The XNNPACK delegate binds ExecuTorch's threadpool when the method is loaded, so a runner loaded
    before :func:`executorch_threads` resized the pool would run on the freed one (seen: a segfault in
    ``execute`` timing a 224 px DeiT-Ti, heap corruption found later by malloc with a 32 px one). A
    timing inside that context therefore runs :meth:`reloaded`, a runner loaded on the pool that exists.
    """

    def __init__(self, path: str | Path):
        from executorch.runtime import Runtime

        self.path = Path(path)
        self._program = Runtime.get().load_program(str(path))
        self._method = self._program.load_method("forward")

    def reloaded(self) -> "PteRunner":
        """The same program loaded again, bound to ExecuTorch's threadpool as it is now."""
        return PteRunner(self.path)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self._method.execute([x.contiguous()])
        return out[0]
