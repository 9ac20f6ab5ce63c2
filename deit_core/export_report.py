"""Measuring exported models: accuracy on a val folder, agreement, latency, checksums, the printed table.

Kept apart from the conversion code so the benchmark script and the export command measure the
same way: the exported models get [0,1] images (they normalize inside), the fp32 eager model gets
the normalized tensor, exactly like the engine's eval transform.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import torch

from . import cpu_info, latency
from .files import sha256_file
from .preprocess import resize_and_crop

Predictor = Callable[[torch.Tensor], torch.Tensor]


class ValFolderError(ValueError):
    """The --val folder cannot be used; the message says why."""


@dataclass
class ValSet:
    """A val ImageFolder resized to the model's input, with labels mapped to the model's class order."""

    path: Path
    dataset: Any
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def resolve_val_dir(path: str | os.PathLike) -> Path:
    """``--val`` may be an ImageFolder root holding ``val/`` or the val folder itself."""
    p = Path(path)
    if (p / "val").is_dir():
        return p / "val"
    return p


def load_val(path: str | os.PathLike, classes: Sequence[str], img_size: int, crop_pct: float) -> ValSet:
    """Open the val folder; refuse one that is unreadable or has classes the model does not know.

    Images get training's eval resize and center crop (:mod:`deit_core.preprocess`), so the parity
    gate measures the accuracy the run reported, on the input an app is told to produce.
    """
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    root = resolve_val_dir(path)
    if not root.is_dir():
        raise ValFolderError(f"--val {path}: no such directory (expected an ImageFolder root with val/, or val/ itself)")
    tf = T.Compose([*resize_and_crop(img_size, crop_pct), T.ToTensor()])
    try:
        ds = ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, OSError, RuntimeError) as e:
        raise ValFolderError(f"--val {root} is not a readable ImageFolder (class sub-folders of images): {e}") from e
    unknown = [c for c in ds.classes if c not in classes]
    if unknown:
        raise ValFolderError(f"--val {root} has classes {unknown[:5]} that the model does not predict "
                             f"(model classes: {list(classes)[:10]}...)")
    index = {c: i for i, c in enumerate(classes)}
    targets = torch.tensor([index[ds.classes[t]] for t in ds.targets], dtype=torch.long)
    return ValSet(root, ds, targets)


def iter_images(val: ValSet, batch_size: int = 32):
    """Yield ``(images in [0,1], targets)`` batches in file order; unreadable images raise ValFolderError."""
    for start in range(0, len(val), batch_size):
        idx = range(start, min(start + batch_size, len(val)))
        try:
            images = torch.stack([val.dataset[i][0] for i in idx])
        except (OSError, ValueError) as e:
            raise ValFolderError(f"--val {val.path}: cannot read an image near index {start}: {e}") from e
        yield images, val.targets[start:start + len(idx)]


def predict_batches(predictors: dict[str, tuple[Predictor, bool]], val: ValSet,
                    batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Logits of every predictor on the whole val set in one pass over the images.

    ``predictors`` maps a name to ``(fn, batched)``; a predictor that is not batched (the exported
    files, made for batch 1) is called image by image.
    """
    out: dict[str, list[torch.Tensor]] = {name: [] for name in predictors}
    with torch.no_grad():
        for images, _ in iter_images(val, batch_size):
            for name, (fn, batched) in predictors.items():
                if batched:
                    out[name].append(fn(images).float())
                else:
                    out[name].append(torch.cat([fn(images[i:i + 1]).float() for i in range(len(images))]))
    return {name: torch.cat(chunks) for name, chunks in out.items()}


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Percentage of samples whose target is among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)
    return round(100.0 * hits.float().mean().item(), 3)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Percentage of samples where two models pick the same top-1 class."""
    return round(100.0 * (a.argmax(1) == b.argmax(1)).float().mean().item(), 3)


def latency_ms(fn: Predictor, example: torch.Tensor, runs: int = 50, warmup: int = 10, threads: int = 1,
               pool: Callable[[int], ContextManager[int | None]] | None = None) -> dict[str, Any]:
    """Median, p10, p90 and spread (:func:`deit_core.latency.summarize`) of ``runs`` timed batch-1 calls
    on ``threads`` threads, after warm-up (1: what one phone core sees).

    torch's intra-op pool (eager, TorchScript, the Lite Interpreter) is set with ``torch.set_num_threads``.
    A runtime with its own pool (ExecuTorch) passes ``pool``: a context manager that sets it to
    ``threads`` and yields the count it really has (None if unknown). ``threads`` in the result is the
    count read back while timing, not the one asked for. A predictor whose program binds that pool
    when loaded (:class:`deit_core.mobile.PteRunner`) has ``reloaded()``: the copy loaded inside the
    context is the one timed, and it is dropped before the pool is restored (the original would run
    on a freed pool).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = []
    try:
        with (pool(threads) if pool is not None else contextlib.nullcontext(None)) as pool_threads:
            used = torch.get_num_threads() if pool is None else pool_threads
            timed = fn.reloaded() if pool is not None and hasattr(fn, "reloaded") else fn
            with torch.no_grad():
                for _ in range(warmup):
                    timed(example)
                for _ in range(max(1, runs)):
                    t0 = time.perf_counter()
                    timed(example)
                    times.append((time.perf_counter() - t0) * 1000.0)
            del timed
    finally:
        torch.set_num_threads(before)
    return {**latency.summarize(times), "threads": used,
            "thread_pool": "torch intra-op" if pool is None else "executorch"}


def latency_comparison(variants: dict[str, dict[str, Any]], fp32_lite: dict[str, Any] | None,
                       fp32_pte: dict[str, Any] | None = None) -> dict[str, Any]:
    """int8 against fp32 within the same runtime (eager: ``int8`` vs ``fp32``; Lite Interpreter: ``ptl``
    vs the fp32 model converted the same way; ExecuTorch: ``pte`` vs the fp32 model lowered to XNNPACK;
    both references timed only) and every int8 file against fp32 eager. Each entry is
    :func:`deit_core.latency.speedup`'s: ``speedup`` (fp32 median / int8 median), ``speedup_range``
    (over the two p10-p90 spreads) and ``same_speed`` (the spreads overlap); None when a side is missing.

    Why both: on a CPU with AMX, fp32 eager is fast and a ``.pte`` can be slower than it while still
    2x faster than the fp32 ``.pte``; the same-runtime ratio says what int8 buys, the other what the
    file buys over running the checkpoint as it is."""
    lat = {name: v.get("latency_ms") for name, v in variants.items()}
    return {"same_runtime": {"eager": latency.speedup(lat.get("fp32"), lat.get("int8")),
                             "lite_interpreter": latency.speedup(fp32_lite, lat.get("ptl")),
                             "executorch": latency.speedup(fp32_pte, lat.get("pte"))},
            "vs_fp32_eager": {name: latency.speedup(lat.get("fp32"), lat.get(name))
                              for name in ("int8", "ptl", "pte") if lat.get(name)}}


RUNTIMES = (("eager", "eager"), ("lite_interpreter", ".ptl"), ("executorch", ".pte"))


def speedup_lines(timing: dict[str, Any] | None) -> list[str]:
    """The report's ``latency.int8_vs_fp32`` as two lines: int8 against fp32 in the same runtime, and
    each int8 file against fp32 eager, each ratio with its range over the spreads (empty without it)."""
    cmp = (timing or {}).get("int8_vs_fp32")
    if not cmp:
        return []
    same = cmp.get("same_runtime") or {}
    inside = [f"{words} {latency.speedup_text(same[key])}" for key, words in RUNTIMES if same.get(key)]
    missing = [f"{words} not measured (no fp32 {words} reference: see latency.fp32_{words[1:]}_missing)"
               for key, words in RUNTIMES[1:] if not same.get(key) and (cmp.get("vs_fp32_eager") or {}).get(words[1:])]
    vs_eager = [f"{'int8 eager' if k == 'int8' else '.' + k} {latency.speedup_text(e)}"
                for k, e in (cmp.get("vs_fp32_eager") or {}).items() if e]
    lines = []
    if inside or missing:
        lines.append("int8 vs fp32, same runtime: " + "; ".join(inside + missing))
    if vs_eager:
        lines.append("int8 vs fp32 eager: " + "; ".join(vs_eager))
    return lines


def file_entries(directory: Path, exclude: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file in ``directory`` (the report cannot checksum itself)."""
    return {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(directory.iterdir()) if p.is_file() and p.name not in exclude}


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def format_table(variants: dict[str, dict[str, Any]], fp32_bytes: int | None = None, cpu: dict[str, Any] | None = None,
                 timing: dict[str, Any] | None = None) -> str:
    """The fp32 / int8 / .ptl / .pte comparison as a fixed-width text table; latency is the median and the
    p10-p90 spread of the timed runs. With the report's ``latency`` block (``timing``) the fp32
    references converted like the .ptl / .pte (timed only, not shipped) get a row each and the
    int8-vs-fp32 speed-ups follow, within each runtime and against fp32 eager. The footer names the
    CPU, its ISA features, the thread count and the torch version: a latency means nothing without them."""
    head = f"{'model':<11}{'top-1':>8}{'top-5':>8}{'agree':>8}{'p50 ms':>9}{'p10-p90 ms':>15}{'size MB':>9}{'ratio':>7}"
    lines = [head, "-" * len(head)]
    rows = list(variants.items())
    for ref in ("ptl", "pte"):
        if (timing or {}).get(f"fp32_{ref}"):
            rows.append((f"{ref} fp32*", {"latency_ms": timing[f"fp32_{ref}"]}))  # type: ignore[index]
    for name, v in rows:
        lat = v.get("latency_ms") or {}
        size = v.get("size_bytes")
        ratio = size / fp32_bytes if size and fp32_bytes else None
        spread = "-" if lat.get("p90") is None else f"{_fmt(lat.get('p10', lat.get('p50')))}-{_fmt(lat.get('p90'))}"
        lines.append(f"{name:<11}{_fmt(v.get('top1')):>8}{_fmt(v.get('top5')):>8}{_fmt(v.get('agreement_top1')):>8}"
                     f"{_fmt(lat.get('p50')):>9}{spread:>15}"
                     f"{_fmt(size / 1e6 if size else None, '.3f'):>9}{_fmt(ratio, '.3f'):>7}")
    if len(rows) > len(variants):
        lines.append("* the fp32 model converted like the int8 file: timed only, not shipped")
    runs = next((v["latency_ms"].get("runs") for v in variants.values() if v.get("latency_ms")), None)
    if cpu is not None or runs is not None:
        lines.append(f"latency: batch 1, {runs} timed runs on {cpu_info.describe(cpu)}")
    lines += speedup_lines(timing)
    return "\n".join(lines)
