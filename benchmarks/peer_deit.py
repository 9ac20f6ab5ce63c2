"""Is distillery's training loop at least as fast as the reference? Side by side with facebookresearch/deit.

Trains the same DeiT-Ti distilled student (patch 8, 32 px) by hard distillation from the same regnety_002
teacher weights on the digits ImageFolder, alternating runs of the reference's ``main.py`` and of our engine
(``python -m deit_core.train CONFIG``, as a job runs it), and prints each pair's training images/s and their
ratio (ours / reference; above 1 is faster) with the median over pairs. Both sides: batch 64, 2 threads
(``OMP_NUM_THREADS=2``), loader workers 0, fp32 on CPU, RandAugment rand-m9-mstd0.5-inc1, mixup 0.8, cutmix
1.0, label smoothing 0.1, random erasing 0.25, drop path 0.1, no repeated augmentation (1 process), no EMA,
and RandomCrop(32, padding=4) as the train crop (the reference's choice at 32 px; ``train.crop: padded``
here). The teacher is a randomly initialised regnety_002 (seed 0, 10 classes) saved once to a file both
sides load: the throughput does not depend on how good the teacher is.

What is timed: the training loop of each epoch, from the first batch request to the end of the last
optimizer step (loader, augmentation, mixup, teacher forward, student step), without evaluation,
checkpoints or start-up. Each side reports it itself: the reference's ``MetricLogger`` prints
``Epoch: [k] Total time: ... (S s / it)`` (images/s = batch / S; drop_last, so every step has a full
batch); ours emits a ``step`` event whose ``img_per_s`` covers the whole epoch when ``train.log_every``
is larger than the epoch (the engine's ``StepTimer`` window starts with the epoch). The first
``--skip-epochs`` epochs of every run are left out (first-call costs: allocator, lazy imports).

The reference is a LOCAL git mirror (``--reference``, e.g. /work/.mirror/facebookresearch+deit/repo); its
HEAD is exported with ``git archive`` into a temp dir (the mirror is never written) and patched there so it
runs with timm 1.x / torch 2.x on a CPU (:data:`REFERENCE_PATCHES`, each with its reason):

1. augment.py: timm 1.x renamed ``_pil_interp`` to ``str_to_pil_interp``.
2. models.py: timm 1.x's ``create_model`` passes ``pretrained_cfg``, ``pretrained_cfg_overlay`` and
   ``cache_dir`` to model entry points; the reference's pass them on to ``VisionTransformer``, which
   rejects them. The entry points now accept and drop them.
3. models.py + main.py: a ``--patch-size`` option (the entry points hard-code 16); patch 8 at 32 px
   gives 16 tokens, as our ``student.patch_size: 8``.
4. datasets.py: ``--data-set IMNET`` hard-codes 1000 classes; the class count is read from the
   ImageFolder (10 digits), as ours does, so the heads and the teacher match.
5. datasets.py: Pillow 13 refuses ``ImageOps.posterize`` to 0 bits, which timm's RandAugment asks for at
   the top magnitude (m9 + mstd noise reaches it) and raises mid-epoch; posterize keeps at least one bit,
   the same fix as ``deit_core.data``.
6. engine.py: ``torch.cuda.synchronize()`` after every step fails without CUDA; it runs only where
   CUDA is available.

    python benchmarks/peer_deit.py --reference /work/.mirror/facebookresearch+deit/repo --epochs 3 --pairs 3
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deit_core.data import _posterize_at_least_one_bit, _use_safe_posterize
from deit_core.layout import METRICS_FILE

STUDENT = "deit_tiny_distilled_patch16_224"
TEACHER = "regnety_002"
IMG_SIZE, PATCH_SIZE, BATCH, THREADS = 32, 8, 64, 2
AA, MIXUP, CUTMIX, REPROB, SMOOTHING, DROP_PATH = "rand-m9-mstd0.5-inc1", 0.8, 1.0, 0.25, 0.1, 0.1
REF_EPOCH_LINE = re.compile(r"^Epoch: \[(\d+)\] Total time: \S+ \(([0-9.]+) s / it\)", re.M)


@dataclass(frozen=True)
class Patch:
    """Replace every ``old`` in ``path`` with ``new``; ``old`` must occur (a changed reference fails loudly)."""

    path: str
    old: str
    new: str
    why: str


_ENTRY = "(pretrained=False, **kwargs):"
# deit_core.data's own fix, as source for the reference's datasets.py (written once, in deit_core.data).
_SAFE_POSTERIZE = "\n\n" + "\n\n".join(inspect.getsource(f) for f in (_posterize_at_least_one_bit, _use_safe_posterize)) \
    + "\n\n_use_safe_posterize()\n"
REFERENCE_PATCHES = (
    Patch("augment.py", "from timm.data.transforms import _pil_interp,",
          "from timm.data.transforms import str_to_pil_interp as _pil_interp,",
          "timm 1.x renamed _pil_interp to str_to_pil_interp"),
    Patch("models.py", _ENTRY, "(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, "
          "**kwargs):", "timm 1.x's create_model passes these to entry points; VisionTransformer rejects them"),
    Patch("models.py", "model = DistilledVisionTransformer(\n        patch_size=16,",
          "model = DistilledVisionTransformer(\n        patch_size=kwargs.pop('patch_size', 16),",
          "the distilled entry points hard-code patch 16; take --patch-size"),
    Patch("main.py", "    parser.add_argument('--input-size', default=224, type=int, help='images input size')\n",
          "    parser.add_argument('--input-size', default=224, type=int, help='images input size')\n"
          "    parser.add_argument('--patch-size', default=None, type=int, help='patch size override')\n",
          "a --patch-size option (patch 8 at 32 px, as the student here)"),
    Patch("main.py", "        img_size=args.input_size\n    )",
          "        img_size=args.input_size,\n        **({'patch_size': args.patch_size} if args.patch_size else {})\n    )",
          "pass --patch-size to the student"),
    Patch("datasets.py", "        dataset = datasets.ImageFolder(root, transform=transform)\n        nb_classes = 1000",
          "        dataset = datasets.ImageFolder(root, transform=transform)\n        nb_classes = len(dataset.classes)",
          "IMNET hard-codes 1000 classes; read them from the ImageFolder"),
    Patch("datasets.py", "from timm.data import create_transform\n",
          "from timm.data import create_transform\n" + _SAFE_POSTERIZE,
          "Pillow 13 refuses posterize to 0 bits, which RandAugment's m9 + mstd noise asks for (as deit_core.data)"),
    Patch("engine.py", "        torch.cuda.synchronize()",
          "        if torch.cuda.is_available():\n            torch.cuda.synchronize()",
          "torch.cuda.synchronize() fails without CUDA"),
)


def apply_patches(root: Path, patches=REFERENCE_PATCHES) -> None:
    """Apply ``patches`` to the files under ``root`` (a copy, never the mirror)."""
    for p in patches:
        f = root / p.path
        text = f.read_text()
        if p.old not in text:
            raise ValueError(f"{p.path}: patch '{p.why}' does not apply (text not found: {p.old[:60]!r})")
        f.write_text(text.replace(p.old, p.new))


def export_reference(git_dir: Path, dest: Path) -> str:
    """Extract the mirror's HEAD into ``dest`` with ``git archive`` (read-only on the mirror); its commit."""
    commit = subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = subprocess.Popen(["git", f"--git-dir={git_dir}", "archive", "--format=tar", commit], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
        tar.extractall(dest, filter="data")
    if archive.wait() != 0:
        raise RuntimeError(f"git archive of {git_dir} failed")
    return commit


def run_logged(cmd: list[str], cwd: Path | None = None) -> str:
    """Run ``cmd`` with 2 threads; its stdout, or an error with the end of its output."""
    done = subprocess.run(cmd, cwd=cwd, env=thread_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def thread_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "PYTHONWARNINGS": "ignore"}


def run_reference(ref: Path, data: Path, teacher: Path, epochs: int) -> list[float]:
    """One reference run; images/s of each epoch's training loop, read off its own log."""
    cmd = [sys.executable, "main.py", "--model", STUDENT, "--input-size", str(IMG_SIZE), "--patch-size", str(PATCH_SIZE),
           "--data-set", "IMNET", "--data-path", str(data), "--batch-size", str(BATCH), "--epochs", str(epochs),
           "--device", "cpu", "--num_workers", "0", "--no-pin-mem", "--no-model-ema", "--no-repeated-aug",
           "--aa", AA, "--mixup", str(MIXUP), "--cutmix", str(CUTMIX), "--reprob", str(REPROB),
           "--smoothing", str(SMOOTHING), "--drop-path", str(DROP_PATH), "--distillation-type", "hard",
           "--teacher-model", TEACHER, "--teacher-path", str(teacher), "--seed", "0"]
    return reference_rates(run_logged(cmd, cwd=ref), epochs)


def reference_rates(log: str, epochs: int) -> list[float]:
    """Images/s of each training epoch from the reference's stdout: its ``MetricLogger`` ends an epoch's
    loop with ``Epoch: [k] Total time: H:MM:SS (S s / it)`` (evaluation prints ``Test:`` lines instead)."""
    s_per_it = [float(m.group(2)) for m in REF_EPOCH_LINE.finditer(log)]
    if len(s_per_it) != epochs:
        raise RuntimeError(f"expected {epochs} 'Epoch: [k] Total time' lines from the reference, got {len(s_per_it)}")
    return [BATCH / s for s in s_per_it]


def our_config(data: Path, teacher: Path, epochs: int) -> dict:
    return {"kind": "distill",
            "data": {"train": str(data / "train"), "val": str(data / "val"), "img_size": IMG_SIZE, "crop_pct": 1.0},
            "student": {"model": STUDENT, "patch_size": PATCH_SIZE},
            "teacher": {"model": TEACHER, "checkpoint": str(teacher)},
            "distillation": {"type": "hard", "alpha": 0.5, "tau": 1.0, "teacher_cache": "off"},
            "train": {"epochs": epochs, "batch_size": BATCH, "aa": AA, "mixup": MIXUP, "cutmix": CUTMIX,
                      "reprob": REPROB, "smoothing": SMOOTHING, "drop_path": DROP_PATH, "crop": "padded",
                      "repeated_aug": False, "ema": False, "workers": 0, "seed": 0, "log_every": 100000,
                      "mixed_precision": "no"}}


def run_ours(work: Path, data: Path, teacher: Path, epochs: int, tag: str) -> list[float]:
    """One run of our engine as a job runs it; images/s of each epoch's training loop, from metrics.jsonl."""
    out = work / f"ours-{tag}"
    cfg = work / f"ours-{tag}.json"
    cfg.write_text(json.dumps(our_config(data, teacher, epochs), indent=2))
    run_logged([sys.executable, "-m", "deit_core.train", "--config", str(cfg), "--output", str(out)])
    events = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    rates = [e["img_per_s"] for e in events if e["event"] == "step" and e["step"] == e["steps_per_epoch"]]
    if len(rates) != epochs:
        raise RuntimeError(f"expected {epochs} end-of-epoch step events in {out / METRICS_FILE}, got {len(rates)}")
    return rates


def epoch_rate(rates: list[float], skip: int) -> float:
    """Images/s over the kept epochs (same images in each: total images / total time)."""
    kept = rates[skip:]
    return len(kept) / sum(1.0 / r for r in kept)


def summary(ratios: list[float]) -> str:
    """The median ratio with its spread and how many pairs went each way: on a shared machine one pair can
    swing by 10-20% either way, so a median alone would hide how sure it is."""
    faster = sum(r > 1.0 for r in ratios)
    return (f"median ratio (distillery / reference): {statistics.median(ratios):.3f} over {len(ratios)} pairs "
            f"(range {min(ratios):.3f}-{max(ratios):.3f}; distillery faster in {faster} of {len(ratios)})")


def cap_per_class(root: Path, per_class: int) -> None:
    """Keep the first ``per_class`` images (by name) of each class folder under ``root``: shorter epochs on a
    busy machine, the same images for both sides."""
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        for extra in sorted(class_dir.iterdir())[per_class:]:
            extra.unlink()


def prepare(work: Path, per_class: int | None) -> tuple[Path, Path]:
    """The digits ImageFolder at 32 px and the teacher weights file both sides load."""
    import torch

    from deit_core.data import write_digits_imagefolder
    from deit_core.models import build_model, teacher_kwargs

    data, teacher = work / "data", work / "teacher.pth"
    write_digits_imagefolder(data, img_size=IMG_SIZE)
    if per_class:
        for split in ("train", "val"):
            cap_per_class(data / split, per_class if split == "train" else max(per_class // 4, 1))
    torch.manual_seed(0)
    model = build_model(TEACHER, teacher_kwargs(len(list((data / "train").iterdir()))))
    torch.save({"model": model.state_dict()}, teacher)  # the reference reads checkpoint["model"]
    return data, teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="git directory of a facebookresearch/deit mirror")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each run")
    ap.add_argument("--skip-epochs", type=int, default=1, help="first epochs of each run left out of its rate")
    ap.add_argument("--pairs", type=int, default=3, help="alternating (reference, ours) pairs")
    ap.add_argument("--per-class", type=int, default=None,
                    help="keep this many training images per class (val: a quarter), for short epochs; default all")
    ap.add_argument("--keep", help="keep the work files (reference copy, runs) in this folder")
    args = ap.parse_args()
    if not 0 <= args.skip_epochs < args.epochs:
        ap.error("--skip-epochs must be at least 0 and less than --epochs")
    import timm
    import torch

    from deit_core.cpu_info import cpu_identity, describe

    with tempfile.TemporaryDirectory(prefix="peer_deit_") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ref = work / "reference"
        ref.mkdir()
        commit = export_reference(Path(args.reference), ref)
        apply_patches(ref)
        data, teacher = prepare(work, args.per_class)
        images = sum(1 for _ in (data / "train").rglob("*.png"))
        rows = []
        for pair in range(1, args.pairs + 1):
            r = epoch_rate(run_reference(ref, data, teacher, args.epochs), args.skip_epochs)
            o = epoch_rate(run_ours(work, data, teacher, args.epochs, str(pair)), args.skip_epochs)
            rows.append((pair, r, o))
            print(f"pair {pair}: reference {r:.1f} img/s, distillery {o:.1f} img/s", file=sys.stderr, flush=True)
    print(f"DeiT-Ti distilled (patch {PATCH_SIZE}) <- {TEACHER} (random init), digits {IMG_SIZE} px ({images} training "
          f"images, {images // BATCH} steps per epoch), batch {BATCH}, {THREADS} threads, workers 0, "
          f"epochs {args.skip_epochs + 1}-{args.epochs} of {args.epochs} per run")
    print(f"reference facebookresearch/deit {commit[:12]}; torch {torch.__version__}, timm {timm.__version__}; "
          f"CPU: {describe(cpu_identity(threads=THREADS))}; {datetime.date.today().isoformat()}")
    print("| pair | reference img/s | distillery img/s | ratio |")
    print("| --- | --- | --- | --- |")
    for pair, r, o in rows:
        print(f"| {pair} | {r:.1f} | {o:.1f} | {o / r:.3f} |")
    print(summary([o / r for _, r, o in rows]))


if __name__ == "__main__":
    main()
