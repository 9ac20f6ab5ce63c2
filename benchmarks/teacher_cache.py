"""What does the teacher-output cache save? A student epoch with the live teacher against the same
student reading the cache, in one run, where the teacher is at least half of the distillation step.

Three real ``python -m deit_core.train`` runs on the same config: a ``teacher_outputs`` job that
fills the cache, a student with ``distillation.teacher_cache: off`` (the live teacher) and the same
student with ``auto`` (reads the cache). Prints the epoch times and their ratio, the teacher's
share of the live step, the cache's size per epoch (and what each stored form would take), the
students' val top-1, and the error of fp16 and top-k logits against the fp32 logits it stored.

CPU (default): DeiT-Ti (patch 8) at the digits' 32 px against a large RegNetY teacher (random
weights unless ``--teacher-checkpoint``: the timing does not depend on them; equal top-1 does not
either). GPU preset (``--gpu``): DeiT-S + RegNetY-160 at 224 px, bf16, on the digits upsampled to
224 px.

    python benchmarks/teacher_cache.py --out var/bench/teacher-cache
    python benchmarks/teacher_cache.py --gpu --out var/bench/teacher-cache-gpu

``--fingerprint`` instead measures what the key's dataset fingerprints cost (no training): a first
scan (every file's bytes hashed), the same while filling the memo, and a re-scan that the memo
answers (stat only; the last column is a bare stat walk, what the old path/size/mtime
fingerprint cost), on the digits at 32 px and on a generated folder (``--files`` files of
``--file-kib`` KiB). The files were just written, so the first scans read from the page cache:
a cold first scan also waits for the disk.

    python benchmarks/teacher_cache.py --fingerprint --out var/bench/fingerprint
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from deit_core.layout import METRICS_FILE

CPU = {"student": "deit_tiny_distilled_patch16_224", "patch_size": 8, "teacher": "regnety_160", "img_size": 32,
       "batch_size": 64, "precision": "no"}
GPU = {"student": "deit_small_distilled_patch16_224", "patch_size": None, "teacher": "regnety_160", "img_size": 224,
       "batch_size": 128, "precision": "bf16"}


def run(cfg: dict, out: Path, store: Path) -> tuple[list[dict], float]:
    out.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg, indent=2))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deit_core.train", "--config", str(path), "--output", str(out),
                    "--teacher-cache-dir", str(store)], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return [json.loads(x) for x in (out / METRICS_FILE).read_text().splitlines()], wall


def epoch_seconds(events: list[dict]) -> float:
    """Steady-state seconds per training epoch: from the first step's event to each epoch's last
    step, scaled to the whole epoch (log_every is 1, so every step has an event); mean over epochs."""
    steps = [e for e in events if e["event"] == "step"]
    per_epoch = []
    for ep in sorted({e["epoch"] for e in steps}):
        s = [e for e in steps if e["epoch"] == ep]
        n = s[-1]["steps_per_epoch"]
        per_epoch.append((s[-1]["time"] - s[0]["time"]) * n / max(n - 1, 1))
    return sum(per_epoch) / len(per_epoch)


def logits_error(cache: Path, topks: tuple[int, ...]) -> dict[str, float]:
    """fp16 and top-k (deit_core.teacher_cache's reconstruction) against the stored fp32 logits, on
    epoch 1's rows: mean KL(p || p_approx) at tau 1 and how often the argmax changes."""
    import torch
    import torch.nn.functional as F

    logits = torch.load(cache / "e0000-r000.pt", weights_only=True)["logits"].float()
    logp = F.log_softmax(logits, dim=1)

    def kl(approx: torch.Tensor) -> float:
        return float(F.kl_div(F.log_softmax(approx, dim=1), logp, reduction="batchmean", log_target=True))

    out = {"fp16": kl(logits.half().float())}
    for k in topks:
        k = min(k, logits.shape[1])
        top = logits.topk(k, dim=1)
        rest = (logits.sum(1) - top.values.sum(1)) / max(logits.shape[1] - k, 1)
        approx = rest.half().float()[:, None].expand_as(logits).clone()
        approx.scatter_(1, top.indices, top.values.half().float())
        out[f"top-{k}"] = kl(approx)
    return out


def generated_folder(root: Path, files: int, kib: int) -> Path:
    """``files`` random files of ``kib`` KiB in 100 class folders (made once; re-used when present)."""
    if not root.exists():
        tmp = root.with_name(root.name + ".tmp")
        for i in range(files):
            d = tmp / "train" / f"{i % 100:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:06d}.jpg").write_bytes(os.urandom(kib << 10))
        tmp.rename(root)
    return root / "train"


def best_scan(folder: Path, memo: Path | None, fresh: bool, repeats: int):
    """(best seconds, the scan) over ``repeats`` scans; ``fresh``: the memo is deleted before each."""
    from deit_core.teacher_cache.fingerprint import scan

    times, result = [], None
    for _ in range(repeats):
        if fresh and memo is not None:
            memo.unlink(missing_ok=True)
        t0 = time.perf_counter()
        result = scan(folder, memo)
        times.append(time.perf_counter() - t0)
    return min(times), result


def stat_walk_seconds(folder: Path, repeats: int) -> float:
    """Best seconds of a walk that only stats every file: what the old path/size/mtime fingerprint cost."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for dirpath, _dirs, names in os.walk(folder, followlinks=True):
            for name in names:
                os.stat(os.path.join(dirpath, name))
        times.append(time.perf_counter() - t0)
    return min(times)


def fingerprint_table(folders: dict[str, Path], out: Path, repeats: int = 3) -> None:
    """Seconds (best of ``repeats``) per scan of each folder: no memo, filling a fresh memo, memo hit."""
    from deit_core.teacher_cache.fingerprint import MEMO_FILE, SETTLE_NS

    time.sleep(SETTLE_NS / 1e9)  # files younger than the settle window are never memoized
    print("| data | files | MiB | first scan, no memo (s) | first scan, filling the memo (s) | re-scan, memo hit (s) "
          "| files read on re-scan | speed-up | stat-only walk (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, folder in folders.items():
        memo = out / f"memo-{label.split()[0]}" / MEMO_FILE
        memo.parent.mkdir(parents=True, exist_ok=True)
        plain_s, plain = best_scan(folder, None, False, repeats)
        fill_s, _ = best_scan(folder, memo, True, repeats)
        hit_s, hit = best_scan(folder, memo, False, repeats)
        assert hit.fingerprint == plain.fingerprint
        print(f"| {label} | {plain.files} | {plain.hashed_bytes / 2**20:.1f} | {plain_s:.3f} | {fill_s:.3f} | {hit_s:.3f} "
              f"| {hit.hashed_files} | {plain_s / hit_s:.0f}x | {stat_walk_seconds(folder, repeats):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="var/bench/teacher-cache")
    ap.add_argument("--gpu", action="store_true", help="DeiT-S + RegNetY-160 at 224 px, bf16 (a CUDA machine)")
    ap.add_argument("--teacher", help="RegNetY teacher (default: regnety_160)")
    ap.add_argument("--teacher-checkpoint", help="teacher weights (default: random, seeded)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--type", default="soft", choices=("soft", "hard"))
    ap.add_argument("--store", default="fp32", choices=("argmax", "fp16", "fp32", "topk"))
    ap.add_argument("--fingerprint", action="store_true", help="only measure the dataset fingerprints' scans")
    ap.add_argument("--files", type=int, default=5000, help="--fingerprint: files in the generated folder")
    ap.add_argument("--file-kib", type=int, default=32, help="--fingerprint: KiB per generated file")
    args = ap.parse_args()
    preset = dict(GPU if args.gpu else CPU)
    preset["teacher"] = args.teacher or preset["teacher"]
    preset["batch_size"] = args.batch_size or preset["batch_size"]
    out = Path(args.out)
    data = out / f"data-{preset['img_size']}"
    if not data.exists():
        from deit_core.data import write_digits_imagefolder

        write_digits_imagefolder(data, img_size=preset["img_size"])
    if args.fingerprint:
        generated = generated_folder(out / f"generated-{args.files}x{args.file_kib}k", args.files, args.file_kib)
        fingerprint_table({f"digits {preset['img_size']} px, train": data / "train",
                           f"generated {args.files} x {args.file_kib} KiB": generated}, out)
        return
    checkpoint = args.teacher_checkpoint
    if checkpoint is None:
        import timm
        import torch
        from safetensors.torch import save_file

        checkpoint = str(out / f"{preset['teacher']}-random.safetensors")
        if not Path(checkpoint).exists():
            torch.manual_seed(0)
            model = timm.create_model(preset["teacher"], num_classes=10)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
    # the DeiT recipe's augmentation (RandAugment, erasing, mixup, cutmix): the teacher sees mixed crops
    train = {"epochs": args.epochs, "batch_size": preset["batch_size"], "warmup_epochs": 0, "workers": 0, "log_every": 1,
             "mixed_precision": preset["precision"], "scale_min": 0.5}
    student = {"model": preset["student"], **({"patch_size": preset["patch_size"]} if preset["patch_size"] else {})}
    base = {"data": {"train": str(data / "train"), "val": str(data / "val"), "img_size": preset["img_size"], "crop_pct": 1.0},
            "teacher": {"model": preset["teacher"], "checkpoint": checkpoint}, "train": train}
    dist = {"type": args.type, "teacher_cache_store": args.store}
    store = out / "store"
    stamp = time.strftime("%H%M%S")
    outputs, outputs_wall = run({"kind": "teacher_outputs", **base, "distillation": dist}, out / f"outputs-{stamp}", store)
    live, live_wall = run({"kind": "distill", **base, "student": student, "distillation": {**dist, "teacher_cache": "off"}},
                          out / f"live-{stamp}", store)
    cached, cached_wall = run({"kind": "distill", **base, "student": student, "distillation": dist},
                              out / f"cached-{stamp}", store)

    hit = [e for e in cached if e["event"] == "teacher_cache"]
    assert [e["status"] for e in hit] == ["hit", "read"] and hit[1]["live_batches"] == 0, hit
    written = next(e for e in outputs if e["event"] == "teacher_cache" and e["status"] in ("written", "exists"))
    manifest = json.loads((Path(written["path"]) / "manifest.json").read_text())
    start = next(e for e in live if e["event"] == "start")
    live_s, cached_s, teacher_s = epoch_seconds(live), epoch_seconds(cached), epoch_seconds(outputs)
    done_live, done_cached = (next(e for e in ev if e["event"] == "done") for ev in (live, cached))

    from deit_core.teacher_cache.store import human, row_bytes

    rows = start["steps_per_epoch"] * preset["batch_size"] * start["processes"]
    print(f"{preset['student']} (patch {preset['patch_size'] or 16}) from {preset['teacher']} at {preset['img_size']} px, "
          f"batch {preset['batch_size']}, {start['steps_per_epoch']} steps/epoch, {args.epochs} epochs, {start['device']}, "
          f"{args.type} distillation, cache store {args.store}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| run | s / epoch (steady) | wall s (whole run) | val top-1 |")
    print("|---|---|---|---|")
    print(f"| teacher_outputs (teacher only, inference) | {teacher_s:.2f} | {outputs_wall:.1f} | - |")
    print(f"| student, live teacher | {live_s:.2f} | {live_wall:.1f} | {done_live['val_top1']:.2f} |")
    print(f"| student, cached teacher outputs | {cached_s:.2f} | {cached_wall:.1f} | {done_cached['val_top1']:.2f} |")
    print(f"speed-up of the student epoch: {live_s / cached_s:.2f}x; the teacher's share of the live step "
          f"~ {teacher_s / live_s:.0%} (teacher_outputs epoch / live student epoch)")
    print(f"cache: {manifest['name']}, {human(manifest['bytes'])} for {manifest['epochs']} epochs "
          f"({human(manifest['bytes'] / manifest['epochs'])} per epoch, {rows} rows per epoch)")
    forms = ("argmax", "fp16", "fp32", "topk")
    print("per epoch by stored form: " + ", ".join(f"{f} {human(rows * row_bytes(f, 10, 5))}" for f in forms) + " (top-5)")
    if manifest["store"] == "fp32":
        err = logits_error(Path(written["path"]), (1, 2, 5))
        print("mean KL(teacher || stored form) at tau 1, epoch 1 (0 = rounding noise): "
              + ", ".join(f"{k} {max(v, 0.0):.1e}" for k, v in err.items()))
    same = all(done_live[k] == done_cached[k] for k in ("val_top1", "loss"))
    print(f"equal final loss and val top-1 (live vs cached): {same}")


if __name__ == "__main__":
    main()
