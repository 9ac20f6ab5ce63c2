"""Mobile export: a run's ``final/`` -> int8 ``.ptl`` (+ ``.pte``, TorchScript), verified, measured, checksummed.

``distillery export --model DIR/final --output OUT [--val PATH] [--max-drop 1.0] [--gate-alpha 0.05] [--force] [--no-pte]``

Everything is written to a temp directory next to ``OUT`` and renamed into place only once every
file was loaded back and agreed with the int8 eager model, so ``OUT`` is either complete or absent.
With ``--val``, every measured model's per-image predictions are written beside the report
(``predictions.<variant>.json``, deit_core/predictions.py). The parity gate fails an int8 file
whose drop below fp32 on ``--val`` is both larger than ``--max-drop`` points and significant
(McNemar's exact p <= ``--gate-alpha`` on the same images): a bare points threshold on a few hundred
images fails near-chance models on noise (5 of 360 images is 1.4 points, p = 0.06). A failed
export, report included, goes to ``OUT.rejected/`` instead and ``OUT`` is not created. Exit codes:
0 success, 1 export failure, 2 bad input, 3 parity gate failure.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import cpu_info, latency, mobile, paired_stats, preprocess
from . import export_report as rep
from .export_cli import add_arguments  # noqa: F401  (the CLI's arguments live apart: no torch import)
from .files import replace_dir, temp_dir_beside, write_json_atomic
from .layout import (
    EXIT_BAD_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARITY_GATE,
    FINAL_CONFIG,
    FINAL_WEIGHTS,
    LABELS,
    PTE,
    PTL,
    REJECTED_SUFFIX,
    REPORT,
    TORCHSCRIPT,
)
from .predictions import export_predictions_name, predictions_document, relative_images, write_predictions
from .preprocess import LEGACY_CROP_PCT

log = logging.getLogger(__name__)

REPORT_VERSION = 1


class ExportError(RuntimeError):
    """The export failed; exit code 1."""

    exit_code = EXIT_FAILED


class BadInputError(ExportError):
    """The final/ directory, the --val folder or the output directory cannot be used; exit code 2."""

    exit_code = EXIT_BAD_CONFIG


class VerificationError(ExportError):
    """An exported file did not reproduce the int8 eager model; nothing was written to OUT."""


class ParityGateError(ExportError):
    """int8 accuracy fell significantly and more than --max-drop points below fp32; the output is kept at OUT.rejected/."""

    exit_code = EXIT_PARITY_GATE

    def __init__(self, message: str, rejected_dir: Path, report: dict[str, Any]):
        super().__init__(message)
        self.rejected_dir = rejected_dir
        self.report = report


@dataclass
class ExportOptions:
    """Knobs of one export; the defaults are what the service uses after every training job."""

    val: str | None = None
    max_drop: float = 1.0
    gate_alpha: float = 0.05
    force: bool = False
    pte: bool = True
    fp32_pte: bool = True  # the fp32 .pte reference, timed only: int8 vs fp32 inside ExecuTorch
    keep_fp32: tuple[str, ...] = mobile.DEFAULT_KEEP_FP32
    latency_runs: int = 50
    latency_warmup: int = 10
    latency_threads: int = 1
    verify_samples: int = 8
    torchscript_methods: tuple[str, ...] = mobile.TORCHSCRIPT_METHODS
    engine: str | None = None
    seed: int = 0


# ---------------------------------------------------------------------------------------------- input


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse to touch an existing non-empty OUT unless --force (then it is replaced only on success)."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--output {out} exists and is not a directory; choose another path")
    if out.parent.exists() and not out.parent.is_dir():
        raise BadInputError(f"--output {out}: {out.parent} is not a directory; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BadInputError(f"--output {out} exists and is not empty; pass --force to replace it, or choose another path")


def load_checked(final_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``final/`` with :func:`deit_core.models.load_final`, turning each failure into a BadInputError that names it."""
    from safetensors import SafetensorError

    from .config import ConfigError
    from .models import FINAL_CONFIG, FINAL_WEIGHTS, load_final, num_outputs

    if not final_dir.is_dir():
        raise BadInputError(f"--model {final_dir}: no such directory (expected a run's final/ directory)")
    try:
        model, cfg = load_final(final_dir)
    except SafetensorError as e:
        raise BadInputError(f"{final_dir / FINAL_WEIGHTS} is corrupt or not a safetensors file ({e}); "
                            f"re-run the training job or restore the file") from e
    except (FileNotFoundError, ConfigError, ValueError) as e:
        raise BadInputError(f"--model {final_dir}: {e}") from e
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise BadInputError(f"{final_dir / FINAL_CONFIG} does not match {FINAL_WEIGHTS} "
                            f"({' '.join(first[:3])[:400]}); the config and the weights come from different models") from e
    classes = list(cfg["classes"])
    if num_outputs(model) != len(classes):
        raise BadInputError(f"{final_dir / FINAL_CONFIG} lists {len(classes)} classes but the model predicts "
                            f"{num_outputs(model)}; the config and the weights come from different runs")
    kw_size = cfg.get("model_kwargs", {}).get("img_size")
    if kw_size is not None and int(kw_size) != int(cfg["img_size"]):
        raise BadInputError(f"{final_dir / FINAL_CONFIG}: img_size {cfg['img_size']} differs from "
                            f"model_kwargs.img_size {kw_size}")
    for key in ("mean", "std"):
        if len(cfg[key]) != 3:
            raise BadInputError(f"{final_dir / FINAL_CONFIG}: {key} must have 3 values (RGB), got {cfg[key]}")
    crop_pct_of(cfg, final_dir / FINAL_CONFIG)
    return model, cfg


def load_val_checked(path: str, classes: Sequence[str], img_size: int, crop_pct: float) -> rep.ValSet:
    try:
        val = rep.load_val(path, classes, img_size, crop_pct)
    except rep.ValFolderError as e:
        raise BadInputError(str(e)) from e
    if len(val) == 0:
        raise BadInputError(f"--val {val.path} holds no images")
    return val


# ------------------------------------------------------------------------------------- verification


def sample_inputs(img_size: int, n: int, seed: int, val: rep.ValSet | None) -> list[torch.Tensor]:
    """Fixed inputs for verification: seeded random [0,1] images plus the first val images."""
    g = torch.Generator().manual_seed(seed)
    samples = [torch.rand(1, 3, img_size, img_size, generator=g) for _ in range(max(1, n))]
    if val is not None:
        for images, _ in rep.iter_images(val, batch_size=n):
            samples += [images[i:i + 1] for i in range(len(images))]
            break
    return samples


def reference_outputs(ref_fn: rep.Predictor | list[torch.Tensor], samples: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of the reference on every sample (a list is passed through, so it is computed once)."""
    if isinstance(ref_fn, list):
        return ref_fn
    with torch.no_grad():
        return [ref_fn(x).float() for x in samples]


def compare_outputs(what: str, got_fn: rep.Predictor, ref_fn: rep.Predictor | list[torch.Tensor], samples: Sequence[torch.Tensor],
                    rel_tol: float, allow_near_ties: bool = False) -> dict[str, Any]:
    """Check ``got_fn`` reproduces ``ref_fn``: same top-1 on every sample and logits within tolerance.

    The tolerance is ``rel_tol`` times the largest reference logit magnitude (at least 1). With
    ``allow_near_ties`` a different top-1 is accepted only when the reference scores both classes
    within that tolerance (different int8 kernels may break an exact tie either way).
    """
    worst, mismatched = 0.0, []
    with torch.no_grad():
        for i, (x, ref) in enumerate(zip(samples, reference_outputs(ref_fn, samples))):
            got = got_fn(x).float()
            if got.shape != ref.shape:
                raise VerificationError(f"{what}: output shape {tuple(got.shape)} differs from the int8 eager "
                                        f"model's {tuple(ref.shape)}")
            tol = rel_tol * max(1.0, ref.abs().max().item())
            diff = (got - ref).abs().max().item()
            worst = max(worst, diff / max(1.0, ref.abs().max().item()))
            g, r = int(got.argmax()), int(ref.argmax())
            tie = allow_near_ties and (ref[0, r] - ref[0, g]).item() <= tol
            if (g != r and not tie) or diff > tol:
                mismatched.append(f"sample {i}: top-1 {g} vs {r}, max |diff| {diff:.4g} > {tol:.4g}" if diff > tol
                                  else f"sample {i}: top-1 {g} vs {r}")
    if mismatched:
        raise VerificationError(f"{what} does not reproduce the int8 eager model: {'; '.join(mismatched[:3])}. "
                                f"The file was not published; report this with the model's config.json")
    return {"samples": len(samples), "max_rel_diff": round(worst, 8), "rel_tol": rel_tol, "top1_equal": True}


# ------------------------------------------------------------------------------------------- output


def crop_pct_of(cfg: dict[str, Any], where: Path | str = FINAL_CONFIG) -> float:
    """The final/'s eval crop; a final/ from before crop_pct was recorded was evaluated on the whole image."""
    value = cfg.get("crop_pct", LEGACY_CROP_PCT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise BadInputError(f"{where}: crop_pct must be a number in (0, 1], got {value!r}")
    return float(value)


def labels_document(cfg: dict[str, Any]) -> dict[str, Any]:
    """What an app needs to feed the model and read its output, preprocessing included."""
    size = int(cfg["img_size"])
    crop_pct = crop_pct_of(cfg)
    interpolation = cfg.get("interpolation", "bicubic")
    prep = preprocess.describe(size, crop_pct, interpolation)
    return {
        "classes": list(cfg["classes"]), "num_classes": len(cfg["classes"]),
        "input": {"shape": [1, 3, size, size], "dtype": "float32", "layout": "NCHW", "color": "RGB", "range": [0.0, 1.0]},
        "img_size": size, "mean": list(cfg["mean"]), "std": list(cfg["std"]),
        "interpolation": interpolation, "crop_pct": crop_pct, "resize_size": prep["resize_shorter_side"],
        "preprocessing": prep,
        "output": "1 x num_classes logits, in the order of classes (softmax for probabilities)",
        "description": (f"Input: a float32 1x3x{size}x{size} RGB image: resize the shorter side to "
                        f"{prep['resize_shorter_side']} ({interpolation}), center-crop {size}x{size}, values in [0,1] "
                        "(pixel/255), NOT normalized: the model subtracts mean and divides by std itself."),
    }


def runtime_stamp(ptl_path: Path, engine: str, executorch_version: str | None) -> dict[str, Any]:
    import timm
    import torchvision

    stamp = {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
             "executorch": executorch_version, "python": platform.python_version(),
             "platform": f"{platform.system()} {platform.machine()}", "quantized_engine": engine,
             "xnnpack": mobile.xnnpack_enabled()}
    stamp.update(mobile.ptl_runtime_stamp(ptl_path))
    return stamp


def publish(tmp: Path, out: Path) -> None:
    """Move the finished temp dir to OUT; an old OUT (allowed by --force) is removed only afterwards."""
    replace_dir(tmp, out)
    stale = out.with_name(out.name + REJECTED_SUFFIX)
    if stale.exists():
        log.info("removing %s left by an earlier rejected export", stale)
        shutil.rmtree(stale, ignore_errors=True)


def reject(tmp: Path, out: Path) -> Path:
    """Keep a gate-failed output for inspection at OUT.rejected/ (replacing an older one)."""
    rejected = out.with_name(out.name + REJECTED_SUFFIX)
    if rejected.exists():
        shutil.rmtree(rejected)
    os.replace(tmp, rejected)
    return rejected


# ---------------------------------------------------------------------------------------- the steps


GATED = ("ptl", "pte")  # the shipped int8 files; "int8" (eager) is what they are verified against


def _gate(variants: dict[str, dict[str, Any]], predictions: dict[str, list[int]], labels: list[int] | None,
          max_drop: float, alpha: float) -> dict[str, Any]:
    """Parity gate: fail a shipped int8 file (.ptl, and .pte if built) only when its top-1 drop below fp32
    is larger than ``max_drop`` points AND significant (McNemar's exact p <= ``alpha``, int8 vs fp32 on
    the same images). ``alpha`` 1 judges the bare drop.

    Per file the report keeps the drop (fp32 - int8, points), its 95% interval over images, p, ``b``
    (images right in fp32 and wrong in int8), ``c`` (the reverse) and ``n_images``.
    """
    if labels is None:
        return {"checked": False, "passed": None, "max_drop": max_drop, "alpha": alpha,
                "reason": "no --val given; accuracy not measured"}
    fp32 = variants["fp32"]["top1"]
    checks = {}
    for name in GATED:
        if name in predictions:
            cmp = paired_stats.compare(predictions["fp32"], predictions[name], labels)  # gain of fp32 over int8 = drop
            checks[name] = {"drop": cmp.gain, "drop_ci95": list(cmp.ci95), "mcnemar_p": cmp.mcnemar_p, "b": cmp.b,
                            "c": cmp.c, "n_images": cmp.n_images,
                            "failed": cmp.gain > max_drop and cmp.mcnemar_p <= alpha}
    reasons = [_gate_sentence(name, c, variants[name]["top1"], fp32, max_drop, alpha) for name, c in checks.items()]
    failed = [name for name, c in checks.items() if c["failed"]]
    return {"checked": True, "passed": not failed, "max_drop": max_drop, "alpha": alpha, "fp32_top1": fp32,
            "drops": {name: c["drop"] for name, c in checks.items()}, "files": checks,
            "discordant": "b: images right in fp32 and wrong in the int8 file; c: right in the int8 file and wrong in fp32",
            "reason": "; ".join(r for name, r in zip(checks, reasons) if name in failed) or "; ".join(reasons)}


def _gate_sentence(name: str, c: dict[str, Any], top1: float, fp32: float, max_drop: float, alpha: float) -> str:
    evidence = (f"95% CI {c['drop_ci95'][0]:+.2f} to {c['drop_ci95'][1]:+.2f} pt, McNemar p = {c['mcnemar_p']:.3g}, "
                f"{c['b']} images right in fp32 only and {c['c']} in .{name} only, of {c['n_images']}")
    if c["failed"]:
        return (f".{name} top-1 {top1:.2f}% is {c['drop']:.2f} points below fp32 {fp32:.2f}% (allowed {max_drop}), "
                f"a significant drop ({evidence}; p <= {alpha})")
    if c["drop"] > max_drop:
        return (f".{name} is {c['drop']:.2f} points below fp32, more than {max_drop} but not significantly "
                f"({evidence}; p > {alpha})")
    return f".{name} within max_drop {max_drop} ({c['drop']:+.2f} points below fp32; {evidence})"


def _measure(predictors: dict[str, tuple[rep.Predictor, bool]], val: rep.ValSet | None, example: torch.Tensor,
             opts: ExportOptions) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
    """Accuracy and per-image top-1 (if val) and batch-1 latency on ``opts.latency_threads`` threads of
    every variant (the row records the count really used); fp32 gets normalized input.
    Returns (variants, top-1 class per val image of each variant)."""
    variants: dict[str, dict[str, Any]] = {name: {} for name in predictors}
    predictions: dict[str, list[int]] = {}
    if val is not None:
        logits = rep.predict_batches(predictors, val)
        for name, lg in logits.items():
            variants[name].update(top1=rep.topk_accuracy(lg, val.targets, 1), top5=rep.topk_accuracy(lg, val.targets, 5),
                                  agreement_top1=rep.agreement(lg, logits["fp32"]))
            predictions[name] = lg.argmax(1).tolist()
    for name, (fn, _) in predictors.items():
        pool = mobile.executorch_threads if name == "pte" else None  # ExecuTorch has its own threadpool
        variants[name]["latency_ms"] = rep.latency_ms(fn, example, opts.latency_runs, opts.latency_warmup,
                                                      opts.latency_threads, pool)
    return variants, predictions


def _fp32_reference_latency(model: nn.Module, cfg: dict[str, Any], example: torch.Tensor, opts: ExportOptions,
                            runtime: str) -> tuple[dict[str, Any] | None, str | None]:
    """The fp32 model converted like the shipped int8 file of ``runtime`` ("ptl": the Lite Interpreter;
    "pte": ExecuTorch XNNPACK), timed like it and never shipped, so the report can give int8 vs fp32
    within one runtime. Returns (latency, None) or (None, why not)."""
    fp32 = mobile.NormalizedClassifier(model, cfg["mean"], cfg["std"]).eval()
    with tempfile.TemporaryDirectory(prefix=f"fp32-{runtime}-") as d:
        path = Path(d) / (PTL if runtime == "ptl" else PTE)
        try:
            if runtime == "ptl":
                mobile.to_lite_interpreter(fp32, example, path, opts.torchscript_methods)
                fn, pool = mobile.load_ptl(path), None
            else:
                mobile.export_pte_fp32(fp32, example, path)
                fn, pool = mobile.PteRunner(path), mobile.executorch_threads
        except Exception as e:  # noqa: BLE001 - a reference timing only; the report says why it is missing
            return None, f"fp32 .{runtime} reference not built: {type(e).__name__}: {e}"
        return rep.latency_ms(fn, example, opts.latency_runs, opts.latency_warmup, opts.latency_threads, pool), None


def _latency_block(model: nn.Module, cfg: dict[str, Any], variants: dict[str, dict[str, Any]], example: torch.Tensor,
                   opts: ExportOptions) -> dict[str, Any]:
    """How latency was measured and the int8-vs-fp32 speedups (within a runtime and against fp32 eager).

    The fp32 ``.pte`` reference is built only when the int8 ``.pte`` was (the ExecuTorch lowering is
    the slow part of an export; ``--no-pte`` skips both)."""
    fp32_lite, why = _fp32_reference_latency(model, cfg, example, opts, "ptl")
    if "pte" not in variants:
        fp32_pte, why_pte = None, "no int8 .pte was built, so no fp32 .pte reference either"
    elif not opts.fp32_pte:
        fp32_pte, why_pte = None, "--no-fp32-pte given"
    else:
        fp32_pte, why_pte = _fp32_reference_latency(model, cfg, example, opts, "pte")
    runs = variants["fp32"]["latency_ms"]["runs"]
    return {"batch": 1, "runs": runs, "warmup": opts.latency_warmup, "threads": variants["fp32"]["latency_ms"]["threads"],
            "min_runs": latency.MIN_RUNS, "enough_runs": runs >= latency.MIN_RUNS,
            "same_speed_rule": "two latencies whose p10-p90 spreads overlap are the same speed",
            "fp32_ptl": fp32_lite, "fp32_ptl_missing": why, "fp32_pte": fp32_pte, "fp32_pte_missing": why_pte,
            "int8_vs_fp32": rep.latency_comparison(variants, fp32_lite, fp32_pte)}


def _write_predictions(tmp: Path, predictions: dict[str, list[int]], val: rep.ValSet, classes: Sequence[str]) -> dict[str, str]:
    """``predictions.<variant>.json`` for every measured variant (paths relative to the val folder); returns variant -> file."""
    images = relative_images(val.dataset.samples, val.path)
    labels = val.targets.tolist()
    names = {}
    for variant, preds in predictions.items():
        names[variant] = export_predictions_name(variant)
        write_predictions(tmp / names[variant], predictions_document(variant, images, labels, preds, classes))
    return names


def _quantize(model: nn.Module, cfg: dict[str, Any], opts: ExportOptions,
              report: dict[str, Any]) -> tuple[nn.Module, mobile.QuantPlan]:
    """The int8 eager model (normalization inside) and the plan of what was quantized, recorded in the report."""
    plan = mobile.plan_quantization(model, opts.keep_fp32)
    int8 = mobile.NormalizedClassifier(mobile.quantize_int8(model, plan), cfg["mean"], cfg["std"]).eval()
    report["quantization"] = {
        "method": "torch.ao.quantization.quantize_dynamic, qint8 per-tensor weights, activations quantized per call",
        "engine": torch.backends.quantized.engine, **plan.as_dict(),
        "stayed_fp32": "the kept_fp32_linear layers and every non-Linear op: input normalization, patch embedding "
                       "(Conv2d), position embeddings, LayerNorm, attention matmul/softmax, GELU",
    }
    if not plan.quantize:
        report["skipped"].append(f"int8: no Linear layer quantized (all matched --keep-fp32 {','.join(plan.patterns)}); "
                                 "the int8 files hold fp32 weights")
    return int8, plan


def _write_torchscript(int8: nn.Module, samples: list[torch.Tensor], tmp: Path, opts: ExportOptions,
                       report: dict[str, Any]) -> Any:
    """model.ptl and model_int8.pt, each loaded back and checked against the int8 eager model."""
    t0 = time.perf_counter()
    script = mobile.to_lite_interpreter(int8, samples[0], tmp / PTL, opts.torchscript_methods)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(script.module, str(tmp / TORCHSCRIPT))
        server = torch.jit.load(str(tmp / TORCHSCRIPT))
    report["torchscript"] = {"method": script.method, "attempts": script.attempts, "passes": script.passes,
                             "ptl_module": script.ptl_variant, "ptl_candidate_bytes": script.ptl_sizes,
                             "seconds": round(time.perf_counter() - t0, 2)}
    report["skipped"] += script.skipped
    ptl = mobile.load_ptl(tmp / PTL)
    expected = reference_outputs(int8, samples)
    report["verification"] = {"ptl": compare_outputs(".ptl (Lite Interpreter)", ptl, expected, samples, 1e-3),
                              TORCHSCRIPT: compare_outputs(TORCHSCRIPT, server, expected, samples, 1e-3)}
    return ptl


def _write_pte(fp32: nn.Module, plan: mobile.QuantPlan, samples: list[torch.Tensor], tmp: Path,
               report: dict[str, Any]) -> mobile.PteRunner:
    """model.pte through ExecuTorch, loaded back and checked against its PT2E reference."""
    t0 = time.perf_counter()
    names = [f"model.{n}" for n in plan.quantize]  # fp32 is wrapped: its Linear layers live under "model."
    reference, info = mobile.export_pte(fp32, names, samples[0], samples[:4], tmp / PTE)
    runner = mobile.PteRunner(tmp / PTE)
    # XNNPACK's int8 kernels differ from the reference's fp32 emulation: a top-1 may differ only on a near tie
    report["verification"]["pte"] = compare_outputs(".pte (ExecuTorch XNNPACK)", runner, reference, samples, 0.05,
                                                    allow_near_ties=True)
    report["pte"] = {**info, "seconds": round(time.perf_counter() - t0, 2),
                     "reference": "PT2E converted module (quantize/dequantize in eager) of the same layers"}
    return runner


def _build(model: nn.Module, cfg: dict[str, Any], tmp: Path, val: rep.ValSet | None, opts: ExportOptions,
           report: dict[str, Any]) -> dict[str, tuple[rep.Predictor, bool]]:
    """Quantize, write and verify every file in ``tmp``; returns the predictors to measure."""
    fp32 = mobile.NormalizedClassifier(model, cfg["mean"], cfg["std"]).eval()
    int8, plan = _quantize(model, cfg, opts, report)
    samples = sample_inputs(int(cfg["img_size"]), opts.verify_samples, opts.seed, val)
    ptl = _write_torchscript(int8, samples, tmp, opts, report)
    predictors: dict[str, tuple[rep.Predictor, bool]] = {
        "fp32": (lambda x: model((x - fp32.mean) / fp32.std), True), "int8": (int8, True), "ptl": (ptl, False)}
    ok, et_version = mobile.executorch_status(deep=opts.pte)
    report["runtime_executorch"] = et_version if ok else None
    if not opts.pte:
        report["skipped"].append("model.pte: --no-pte given")
    elif not ok:
        report["skipped"].append(f"model.pte: {et_version}")
    else:
        predictors["pte"] = (_write_pte(fp32, plan, samples, tmp, report), False)
    write_json_atomic(tmp / LABELS, labels_document(cfg))
    return predictors


def export_final(final_dir: str | os.PathLike, out_dir: str | os.PathLike, opts: ExportOptions | None = None) -> dict[str, Any]:
    """Export ``final_dir`` to ``out_dir``; returns the report (also written as ``OUT/report.json``).

    Raises:
        BadInputError: unusable final/, --val or output directory (nothing written).
        VerificationError / ExportError: a conversion or check failed (nothing written).
        ParityGateError: accuracy gate failed; the output is at ``OUT.rejected/``, OUT not created.
    """
    opts = opts or ExportOptions()
    started = time.perf_counter()
    final, out = Path(final_dir), Path(out_dir)
    check_output_dir(out, opts.force)
    model, cfg = load_checked(final)
    val = load_val_checked(opts.val, cfg["classes"], int(cfg["img_size"]), crop_pct_of(cfg)) if opts.val else None
    tmp = temp_dir_beside(out)
    engine = opts.engine or mobile.quant_engine()
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION, "skipped": [],
        "model": {"final_dir": str(final.resolve()), "architecture": cfg["architecture"], "kind": cfg.get("kind"),
                  "classes": list(cfg["classes"]), "img_size": int(cfg["img_size"]), "mean": cfg["mean"], "std": cfg["std"],
                  "crop_pct": crop_pct_of(cfg), "resize_size": preprocess.resize_size(int(cfg["img_size"]), crop_pct_of(cfg)),
                  "fp32_weights_bytes": (final / FINAL_WEIGHTS).stat().st_size},
        "val": {"path": str(val.path), "images": len(val)} if val else None,
    }
    try:
        with mobile.using_engine(engine), torch.no_grad():
            predictors = _build(model, cfg, tmp, val, opts, report)
            example = sample_inputs(int(cfg["img_size"]), 1, opts.seed, None)[0]
            variants, predictions = _measure(predictors, val, example, opts)
        sizes = {"fp32": final / FINAL_WEIGHTS, "int8": tmp / TORCHSCRIPT, "ptl": tmp / PTL, "pte": tmp / PTE}
        for name, v in variants.items():
            v["size_bytes"] = sizes[name].stat().st_size
            v["file"] = sizes[name].name
        report["variants"] = variants
        report["cpu"] = cpu_info.cpu_identity(threads=variants["fp32"]["latency_ms"]["threads"])
        report["latency"] = _latency_block(model, cfg, variants, example, opts)
        report["predictions"] = _write_predictions(tmp, predictions, val, cfg["classes"]) if val is not None else {}
        report["gate"] = _gate(variants, predictions, val.targets.tolist() if val is not None else None,
                               opts.max_drop, opts.gate_alpha)
        report["runtime"] = runtime_stamp(tmp / PTL, engine, report.pop("runtime_executorch"))
        report["files"] = rep.file_entries(tmp)
        report["elapsed_s"] = round(time.perf_counter() - started, 2)
        write_json_atomic(tmp / REPORT, report)
        if report["gate"]["passed"] is False:
            rejected = reject(tmp, out)
            raise ParityGateError(f"parity gate failed: {report['gate']['reason']}; the output is kept at {rejected} "
                                  f"for inspection (keep more layers fp32 with --keep-fp32, raise --max-drop or lower "
                                  f"--gate-alpha)",
                                  rejected, report)
        publish(tmp, out)
    except ExportError:
        raise
    except rep.ValFolderError as e:
        raise BadInputError(str(e)) from e
    except Exception as e:
        raise ExportError(f"export of {final} failed: {type(e).__name__}: {e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return report


# ---------------------------------------------------------------------------------------------- CLI


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    if not math.isfinite(args.max_drop):  # negative is allowed: it demands int8 beat fp32 (a strict policy, or a test)
        raise BadInputError(f"--max-drop must be a finite number of top-1 points, got {args.max_drop}")
    alpha = getattr(args, "gate_alpha", ExportOptions.gate_alpha)
    if not 0.0 < alpha <= 1.0:
        raise BadInputError(f"--gate-alpha must be a significance level in (0, 1], got {alpha}")
    if args.latency_runs < 1:
        raise BadInputError(f"--latency-runs must be >= 1, got {args.latency_runs}")
    return ExportOptions(val=args.val, max_drop=args.max_drop, gate_alpha=alpha, force=args.force, pte=args.pte,
                         fp32_pte=getattr(args, "fp32_pte", True),
                         keep_fp32=mobile.parse_patterns(args.keep_fp32), latency_runs=args.latency_runs,
                         latency_warmup=min(10, max(1, args.latency_runs // 5)))


def print_summary(report: dict[str, Any], out: Path) -> None:
    print(rep.format_table(report["variants"], report["model"]["fp32_weights_bytes"], report.get("cpu"),
                           report.get("latency")))
    gate = report["gate"]
    verdict = "not checked" if not gate["checked"] else ("passed" if gate["passed"] else "FAILED")
    print(f"parity gate: {verdict} ({gate['reason']})")
    for s in report["skipped"]:
        print(f"skipped: {s}")
    print(f"wrote {', '.join(report['files'])} and {REPORT} to {out}")


ERROR_KINDS = {ParityGateError: "parity_gate", BadInputError: "config", ExportError: "export"}


def error_document(e: ExportError) -> dict[str, Any]:
    """``--error-file``'s content: why the export failed, for the worker (as training's ``error`` event).

    ``kind`` is ``parity_gate`` (exit 3), ``config`` (bad arguments or inputs, exit 2) or ``export``
    (any other failure, exit 1); ``error`` is one readable sentence, the one printed on stderr.
    """
    kind = next(k for cls, k in ERROR_KINDS.items() if isinstance(e, cls))
    return {"error": " ".join(str(e).split()), "kind": kind, "exit_code": e.exit_code}


def main(args: argparse.Namespace) -> int:
    """``distillery export``: 0 on success, 3 on a parity gate failure, 2 on bad input, 1 otherwise.

    On failure the reason also goes, as JSON written atomically, to ``--error-file`` if given.
    """
    error_file = getattr(args, "error_file", None)
    if error_file:
        Path(error_file).unlink(missing_ok=True)  # a stale reason from an earlier attempt must not survive a success
    try:
        report = export_final(args.model, args.output, options_from_args(args))
    except ExportError as e:
        if isinstance(e, ParityGateError):
            print(rep.format_table(e.report["variants"], e.report["model"]["fp32_weights_bytes"], e.report.get("cpu"),
                                   e.report.get("latency")))
        error = e
    except Exception as e:  # noqa: BLE001 - whatever escaped export_final still gets a reason and exit 1
        log.exception("export failed")
        error = ExportError(f"export of {args.model} failed: {type(e).__name__}: {e}")
    else:
        print_summary(report, Path(args.output))
        return EXIT_OK
    print(f"error: {error}", file=sys.stderr)
    if error_file:
        path = Path(error_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, error_document(error))
    return error.exit_code
