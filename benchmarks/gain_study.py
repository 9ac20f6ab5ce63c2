"""Is distillation's gain real? A teacher, then DeiT-Ti students with and without it, over seeds, with paired statistics.

One run per setting proves nothing on a few hundred images: the same student trained alone moves by
several points from seed to seed, so a single +4 can be noise. This study measures the gain the way
a practitioner would have to trust it:

- scikit-learn's digits re-split into a small stratified train set (``--train-per-class``) and a large
  held-out set (all the rest: 1,397 images at 40 per class), written as ImageFolders with the
  preprocessing of ``deit_core.data.write_digits_imagefolder`` (8x8 -> 0..255, bilinear to ``--img-size``);
- one RegNetY teacher trained on the train set alone (its held-out top-1 and parameters reported);
- per seed, the student trained alone (``distillation.type: none``, the baseline) and one student per
  distillation setting, same seed (same initial weights and augmented batches), so the comparison is paired;
  the distilled students of one seed read the teacher's outputs from one teacher-output cache
  (``--teacher-cache-dir``, fp32 logits), written by the first of them;
- every model's per-image predictions on the held-out images (JSON), and per seed the gain (student minus
  baseline top-1), a paired bootstrap 95% interval and McNemar's exact p (scipy); across seeds the mean gain
  and a Student-t 95% interval;
- each run's wall time, its child CPU seconds, training img/s and ``os.getloadavg()``, plus the CPU model
  (``lscpu``), its avx512/amx flags and the thread count, because the machine may be shared: the
  estimated idle time of a run is its CPU seconds over the cores it may use.

Every run is a real ``python -m deit_core.train`` (one process, ``OMP_NUM_THREADS`` threads). The engine
evaluates its ``data.val`` after every epoch; here that is a one-image-per-class probe taken from the
train set, so the held-out images are evaluated once, on the final weights (the ones the service exports),
by this script. Finished runs are kept under ``--work`` and reused, so a study can be extended run by run.

    python benchmarks/gain_study.py --quick                       # smoke test, about a minute
    python benchmarks/gain_study.py --seeds 0,1,2 --settings hard:0.5,soft:0.5:1,soft:0.9:4 --epochs 40
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: deit_core is imported below
    sys.path.insert(0, str(ROOT))

from deit_core.layout import FINAL_CONFIG, FINAL_DIR, METRICS_FILE  # noqa: E402  (after the sys.path line)

STUDENT = {"model": "deit_tiny_distilled_patch16_224"}
# The demo's recipe (server/demo.py) for digits at 32 px: no flips (a flipped 2 is not a 2), mild crops, no
# mixup or RandAugment, one process, so repeated augmentation is off anyway; lr is per 512 images (scaled).
RECIPE = {"aa": None, "mixup": 0, "cutmix": 0, "reprob": 0, "smoothing": 0.1, "hflip": 0, "scale_min": 0.5,
          "drop_path": 0.0, "workers": 0, "warmup_epochs": 1, "log_every": 1, "repeated_aug": False,
          "mixed_precision": "no"}
BOOTSTRAP = 10000
SHOWN_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


@dataclass(frozen=True)
class Setting:
    """One student recipe: ``none`` (the baseline) or hard/soft distillation with alpha, tau, KL reduction."""

    type: str
    alpha: float = 0.5
    tau: float = 1.0
    kl_reduction: str = "batchmean"

    @property
    def name(self) -> str:
        if self.type == "none":
            return "baseline"
        if self.type == "hard":
            return f"hard-a{self.alpha:g}"
        return f"soft-a{self.alpha:g}-t{self.tau:g}-{self.kl_reduction}"

    def distillation(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "alpha": self.alpha, "tau": self.tau, "kl_reduction": self.kl_reduction}
        if self.type != "none":  # one fp32 cache per seed serves hard and soft students alike
            d.update(teacher_cache="auto", teacher_cache_store="fp32")
        return d


def parse_setting(text: str) -> Setting:
    """``hard:ALPHA`` or ``soft:ALPHA:TAU[:batchmean|deit]``, e.g. ``hard:0.5``, ``soft:0.9:4:deit``."""
    parts = text.strip().split(":")
    kind = parts[0]
    try:
        if kind == "hard" and len(parts) == 2:
            return Setting("hard", float(parts[1]))
        if kind == "soft" and len(parts) in (3, 4):
            red = parts[3] if len(parts) == 4 else "batchmean"
            if red not in ("batchmean", "deit"):
                raise ValueError(red)
            return Setting("soft", float(parts[1]), float(parts[2]), red)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"--settings: {text!r} is not hard:ALPHA or soft:ALPHA:TAU[:batchmean|deit]")


# --- data -----------------------------------------------------------------------------------------

def write_split(root: Path, per_class: int, img_size: int, split_seed: int) -> dict[str, int]:
    """``train/`` (``per_class`` images of each digit), ``heldout/`` (all the others) and ``probe/`` (the
    first train image of each digit: the engine's per-epoch val, kept tiny so it costs nothing): the
    demo's re-split (deit_core.data.write_digits_resplit), reused when present."""
    if (root / "heldout").is_dir():
        return {s: sum(1 for _ in (root / s).rglob("*.png")) for s in ("train", "heldout", "probe")}
    from deit_core.data import write_digits_resplit

    try:
        return write_digits_resplit(root, per_class, img_size, split_seed, heldout_name="heldout", probe_name="probe")
    except ValueError as e:
        raise SystemExit(f"--train-per-class {per_class}: {e}") from None


# --- runs -----------------------------------------------------------------------------------------

def train_run(cfg: dict, out: Path, cache_dir: Path, threads: int) -> dict[str, Any]:
    """One ``python -m deit_core.train``; returns its timings and engine events (reused when already done)."""
    record = out / "study-run.json"
    if record.exists() and (out / FINAL_DIR / FINAL_CONFIG).exists():
        return json.loads(record.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).unlink(missing_ok=True)
    path = out / "study-config.json"
    path.write_text(json.dumps(cfg, indent=2))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    before, load0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deit_core.train", "--config", str(path), "--output", str(out),
                           "--teacher-cache-dir", str(cache_dir)], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after, load1 = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()
    if proc.returncode:
        raise SystemExit(f"training run {out} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    events = [json.loads(x) for x in (out / METRICS_FILE).read_text().splitlines()]
    ips = sorted(e["img_per_s"] for e in events if e["event"] == "step" and e["epoch"] > 1 and e["img_per_s"] > 0)
    cache = next((e for e in events if e["event"] == "teacher_cache"), {})
    start = next(e for e in events if e["event"] == "start")
    rec = {
        "wall_s": round(wall, 2),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in load1],
        "train_img_per_s_median": round(ips[len(ips) // 2], 1) if ips else None,
        "train_img_per_s_p90": round(ips[int(0.9 * (len(ips) - 1))], 1) if ips else None,
        "train_images_per_epoch": start["steps_per_epoch"] * start["global_batch"], "epochs": start["epochs"],
        "teacher_cache": cache.get("status"), "threads": threads,
    }
    rec["idle_estimate_s"] = idle_estimate(rec)
    record.write_text(json.dumps(rec, indent=2))
    return rec


def idle_estimate(rec: dict[str, Any], cores: int = 2) -> float:
    """Wall time of this run on ``cores`` idle cores (the demo's 2 processes, one per core): its CPU seconds
    over the cores. On a shared machine CPU seconds grow little while wall time grows a lot; with one
    thread per run no OpenMP thread spins waiting for a descheduled sibling, so CPU seconds stay honest."""
    return round(rec["cpu_s"] / cores, 1)


def heldout_predictions(final: Path, heldout: Path) -> tuple[list[int], list[int], float]:
    """(labels, predictions, img/s) of a final/ model on the held-out ImageFolder, as the engine predicts:
    a distilled student averages its two heads' logits. img/s is per CPU second of this process (its
    torch threads: ``--threads``), which a busy machine inflates far less than wall time."""
    import torch

    from deit_core.data import eval_transform, image_folder
    from deit_core.engine import student_heads
    from deit_core.models import load_final

    model, meta = load_final(final)
    ds = image_folder(str(heldout), "heldout")
    if ds.classes != meta["classes"]:
        raise SystemExit(f"{final} predicts classes {meta['classes']}, the held-out set has {ds.classes}")
    ds.transform = eval_transform(meta["img_size"], meta["crop_pct"], meta["mean"], meta["std"])
    loader = torch.utils.data.DataLoader(ds, batch_size=256, shuffle=False)
    labels, preds, t0 = [], [], time.process_time()
    with torch.inference_mode():
        for images, y in loader:
            if meta.get("distilled"):
                cls_logits, dist_logits = student_heads(model, images)
                logits = (cls_logits + dist_logits) / 2
            else:
                logits = model(images)
            labels += y.tolist()
            preds += logits.argmax(1).tolist()
    return labels, preds, len(labels) / max(time.process_time() - t0, 1e-9)


def params_of(final: Path) -> int:
    from deit_core.models import load_final

    model, _ = load_final(final)
    return sum(p.numel() for p in model.parameters())


# --- statistics -----------------------------------------------------------------------------------

def paired_stats(labels: list[int], student: list[int], baseline: list[int], seed: int = 0) -> dict[str, float]:
    """Gain in points, its paired bootstrap 95% interval (images resampled) and McNemar's exact p."""
    import numpy as np
    from scipy.stats import binomtest

    y = np.asarray(labels)
    s, b = (np.asarray(student) == y).astype(float), (np.asarray(baseline) == y).astype(float)
    diff = 100.0 * (s - b)
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), size=(BOOTSTRAP, len(diff)))].mean(axis=1)
    only_s, only_b = int(((s == 1) & (b == 0)).sum()), int(((s == 0) & (b == 1)).sum())
    p = binomtest(only_s, only_s + only_b, 0.5).pvalue if only_s + only_b else 1.0
    return {"gain": float(diff.mean()), "ci_low": float(np.percentile(boots, 2.5)), "ci_high": float(np.percentile(boots, 97.5)),
            "mcnemar_p": float(p), "student_only_right": only_s, "baseline_only_right": only_b}


def across_seeds(gains: list[float]) -> dict[str, float]:
    """Mean gain over seeds and its two-sided 95% Student-t interval (NaN with one seed)."""
    from scipy.stats import t as student_t

    n = len(gains)
    mean = sum(gains) / n
    if n < 2:
        return {"mean_gain": mean, "t_low": math.nan, "t_high": math.nan, "sd": math.nan, "n": n}
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / (n - 1))
    half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean_gain": mean, "t_low": mean - half, "t_high": mean + half, "sd": sd, "n": n,
            "wins": sum(g > 0 for g in gains)}


# --- machine --------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    """CPU model, its avx512/amx flags, cores, the threads each run uses, and the load when the study began."""
    import torch

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        lscpu = ""
    model = re.search(r"Model name:\s*(.+)", lscpu)
    flags = sorted(set(re.findall(r"\b(avx512\w*|amx\w*)\b", lscpu)))
    return {"cpu_model": model.group(1).strip() if model else platform.processor(), "cpu_flags": flags,
            "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(), "torch": torch.__version__,
            "python": platform.python_version()}


# --- the study ------------------------------------------------------------------------------------

def teacher_config(args, data: Path) -> dict[str, Any]:
    return {"kind": "teacher", "data": data_section(args, data), "teacher": {"model": args.teacher},
            "train": {**RECIPE, "epochs": args.teacher_epochs, "lr": args.teacher_lr, "batch_size": args.batch_size,
                      "seed": 0}}


def data_section(args, data: Path) -> dict[str, Any]:
    return {"train": str(data / "train"), "val": str(data / "probe"), "img_size": args.img_size, "crop_pct": 1.0}


def student_config(args, data: Path, teacher_final: Path, setting: Setting, seed: int) -> dict[str, Any]:
    return {"kind": "distill", "data": data_section(args, data),
            "student": {**STUDENT, "patch_size": args.patch_size},
            "teacher": {"model": args.teacher, "checkpoint": str(teacher_final)},
            "distillation": setting.distillation(),
            "train": {**RECIPE, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": seed}}


def evaluate_run(run_dir: Path, heldout: Path) -> dict[str, Any]:
    """Held-out top-1 and per-image predictions of a finished run, saved beside it as predictions.json."""
    path = run_dir / "predictions.json"
    if path.exists():
        rec = json.loads(path.read_text())
        if rec.get("eval_img_per_s_cpu"):
            return rec
    labels, preds, ips = heldout_predictions(run_dir / FINAL_DIR, heldout)
    files = [str(p.relative_to(heldout)) for p in sorted(heldout.rglob("*.png"), key=lambda p: (p.parent.name, p.name))]
    top1 = 100.0 * sum(int(a == b) for a, b in zip(labels, preds)) / len(labels)
    rec = {"top1": top1, "eval_img_per_s_cpu": round(ips, 1), "files": files, "labels": labels, "predictions": preds}
    path.write_text(json.dumps(rec))
    return rec


def run_key(args) -> str:
    return (f"{args.train_per_class}pc-{args.img_size}px-p{args.patch_size}-split{args.split_seed}"
            f"-b{args.batch_size}-{args.teacher}-te{args.teacher_epochs}-tlr{args.teacher_lr:g}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def study(args) -> dict[str, Any]:
    work = Path(args.work)
    data = work / f"data-{args.train_per_class}pc-{args.img_size}px-split{args.split_seed}"
    counts = write_split(data, args.train_per_class, args.img_size, args.split_seed)
    log(f"data {data}: {counts}")
    runs = work / "runs" / run_key(args)
    cache_dir = work / "teacher_cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    teacher_dir = runs / "teacher"
    trec = train_run(teacher_config(args, data), teacher_dir, cache_dir, args.threads)
    tpred = evaluate_run(teacher_dir, data / "heldout")
    teacher = {"model": args.teacher, "epochs": args.teacher_epochs, "lr": args.teacher_lr,
               "params": params_of(teacher_dir / FINAL_DIR), "heldout_top1": tpred["top1"],
               "eval_img_per_s_cpu": tpred["eval_img_per_s_cpu"], **trec}
    log(f"teacher {args.teacher}: held-out top-1 {tpred['top1']:.2f}, {teacher['params'] / 1e6:.2f} M params, "
        f"{trec['wall_s']:.0f} s wall (idle estimate {trec['idle_estimate_s']:.0f} s)")
    settings = [Setting("none")] + args.settings
    per_seed: dict[str, dict[str, Any]] = {s.name: {} for s in settings}
    student_params = None
    for seed in args.seeds:
        preds = {}
        for setting in settings:
            rdir = runs / f"e{args.epochs}-lr{args.lr:g}" / f"seed{seed}" / setting.name
            rec = train_run(student_config(args, data, teacher_dir / FINAL_DIR, setting, seed), rdir, cache_dir, args.threads)
            ev = evaluate_run(rdir, data / "heldout")
            student_params = student_params or params_of(rdir / FINAL_DIR)
            preds[setting.name] = ev
            row = {**rec, "top1": ev["top1"], "eval_img_per_s_cpu": ev["eval_img_per_s_cpu"], "run_dir": str(rdir)}
            if setting.type != "none":
                row.update(paired_stats(ev["labels"], ev["predictions"], preds["baseline"]["predictions"], seed))
                row["agreement_with_teacher"] = 100.0 * sum(
                    int(a == b) for a, b in zip(ev["predictions"], tpred["predictions"])) / len(ev["predictions"])
            per_seed[setting.name][str(seed)] = row
            log(f"seed {seed} {setting.name}: top-1 {ev['top1']:.2f}"
                + (f", gain {row['gain']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] p={row['mcnemar_p']:.3g}"
                   if "gain" in row else "")
                + f" ({rec['wall_s']:.0f} s wall, idle estimate {rec['idle_estimate_s']:.0f} s, load {rec['loadavg_end'][0]:.1f},"
                f" cache {rec['teacher_cache']})")
    summary = {s.name: across_seeds([per_seed[s.name][str(k)]["gain"] for k in args.seeds])
               for s in args.settings}
    return {"counts": counts, "teacher": teacher, "student_params": student_params, "settings": [asdict(s) for s in settings],
            "per_seed": per_seed, "summary": summary}


def demo_estimate(result: dict[str, Any], heldout: int, threads: int, cores: int = 2) -> dict[str, float]:
    """Idle seconds of the demo's training with this setting on ``cores`` cores: the teacher and 6 student
    runs (3 seeds of a student and a baseline), each run also evaluating the held-out images after every
    epoch as the engine does with its val set (measured once here, on the final model, with ``threads``)."""

    def eval_s(epochs: int, img_per_s: float) -> float:
        return epochs * heldout / max(img_per_s, 1e-9) * threads / cores

    t = result["teacher"]["idle_estimate_s"]
    students = []
    for rows in result["per_seed"].values():
        for r in rows.values():
            students.append(r["idle_estimate_s"] + eval_s(r["epochs"], r["eval_img_per_s_cpu"]))
    per_student = sum(students) / max(len(students), 1)
    teacher_eval = eval_s(result["teacher"]["epochs"], result["teacher"]["eval_img_per_s_cpu"])
    return {"teacher_s": round(t + teacher_eval, 1), "per_student_s": round(per_student, 1),
            "teacher_plus_6_students_s": round(t + teacher_eval + 6 * per_student, 1)}


def markdown(res: dict[str, Any], args) -> str:
    r = res["result"]
    m, t = res["machine"], r["teacher"]
    lines = [f"Digits: {r['counts']['train']} train / {r['counts']['heldout']} held-out images at {args.img_size} px; "
             f"teacher {t['model']} ({t['params'] / 1e6:.2f} M params, {t['epochs']} epochs, lr {t['lr']:g}/512): "
             f"held-out top-1 {t['heldout_top1']:.2f}, {t['wall_s']:.0f} s wall, ~{t['idle_estimate_s']:.0f} s idle. "
             f"Students DeiT-Ti/{args.patch_size} ({(r['student_params'] or 0) / 1e6:.2f} M params), {args.epochs} epochs, "
             f"lr {args.lr:g}/512, batch {args.batch_size}, {args.threads} thread(s) per run; idle estimates are CPU "
             f"seconds / 2 cores. CPU {m['cpu_model']} "
             f"({m['cpu_count']} cores; {', '.join(x for x in m['cpu_flags'] if x in SHOWN_FLAGS) or 'no avx512/amx'}; "
             f"load {m['loadavg'][0]:.1f} at the start, {m['loadavg_end'][0]:.1f} at the end).",
             "", "| setting | seed | top-1 | baseline | gain | bootstrap 95% | McNemar p | wall s | idle est. s | img/s | load |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = r["per_seed"]["baseline"]
    for name, rows in r["per_seed"].items():
        for seed, row in rows.items():
            if name == "baseline":
                gain = ci = p = "-"
            else:
                gain, ci, p = f"{row['gain']:+.2f}", f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]", f"{row['mcnemar_p']:.3g}"
            lines.append(f"| {name} | {seed} | {row['top1']:.2f} | {base[seed]['top1']:.2f} | {gain} | {ci} | {p} | "
                         f"{row['wall_s']:.0f} | {row['idle_estimate_s']:.0f} | {row['train_img_per_s_median']} | "
                         f"{row['loadavg_end'][0]:.1f} |")
    lines += ["", "| setting | seeds | mean gain | 95% t-interval | wins |", "| --- | --- | --- | --- | --- |"]
    for name, s in r["summary"].items():
        lines.append(f"| {name} | {s['n']} | {s['mean_gain']:+.2f} | [{s['t_low']:+.2f}, {s['t_high']:+.2f}] | "
                     f"{s.get('wins', '-')}/{s['n']} |")
    d = res["demo_estimate"]
    lines += ["", f"Estimated idle time of a demo with this setting: teacher {d['teacher_s']:.0f} s + 6 x "
              f"{d['per_student_s']:.0f} s students = {d['teacher_plus_6_students_s']:.0f} s (training only; the "
              "engine's per-epoch evaluation of the held-out images included, export and service start not)."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="students' train.seed values, comma-separated")
    ap.add_argument("--settings", default="hard:0.5,soft:0.5:1,soft:0.9:4",
                    help="distillation settings: hard:ALPHA or soft:ALPHA:TAU[:batchmean|deit], comma-separated")
    ap.add_argument("--epochs", type=int, default=40, help="epochs of each student")
    ap.add_argument("--lr", type=float, default=4e-3, help="students' lr per 512 images")
    ap.add_argument("--train-per-class", type=int, default=40)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--patch-size", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64, help="one process, so also the global batch (the demo's 2 x 32)")
    ap.add_argument("--teacher", default="regnety_016")
    ap.add_argument("--teacher-epochs", type=int, default=40)
    ap.add_argument("--teacher-lr", type=float, default=1e-2, help="teacher's lr per 512 images")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS of each run (1: see idle_estimate; run two studies side by side for 2 cores)")
    ap.add_argument("--work", default="var/gain_study", help="data, runs and the teacher-output cache (reused)")
    ap.add_argument("--out", default=None, help="results JSON (default: <work>/results-<key>.json); a .md beside it")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny data, 16 px, 2 epochs, 2 seeds, 2 settings "
                    "(the second reads the first one's teacher cache)")
    args = ap.parse_args(argv)
    if args.quick:
        args.train_per_class, args.img_size, args.epochs, args.teacher_epochs = 8, 16, 2, 2
        args.seeds, args.settings, args.teacher, args.batch_size = "0,1", "soft:0.9:4,hard:0.5", "regnety_002", 16
        args.work = str(Path(args.work) / "quick")
    args.seeds = [int(s) for s in str(args.seeds).split(",")]
    args.settings = [parse_setting(s) for s in args.settings.split(",")] if isinstance(args.settings, str) else args.settings
    if args.img_size % args.patch_size:
        ap.error(f"--img-size {args.img_size} is not a multiple of --patch-size {args.patch_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)  # the held-out evaluation here, as each run's training
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    mach = machine()
    log(f"CPU {mach['cpu_model']}, {mach['cpu_count']} cores, load {mach['loadavg']}, {args.threads} threads per run")
    t0 = time.perf_counter()
    result = study(args)
    out = Path(args.out) if args.out else Path(args.work) / f"results-{run_key(args)}-e{args.epochs}-lr{args.lr:g}.json"
    res = {"started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_s": round(time.perf_counter() - t0, 1),
           "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
           "args": {k: (v if not isinstance(v, list) or not v or not isinstance(v[0], Setting) else [s.name for s in v])
                    for k, v in vars(args).items()},
           "machine": {**mach, "loadavg_end": os.getloadavg()}, "result": result,
           "demo_estimate": demo_estimate(result, result["counts"]["heldout"], args.threads)}
    table = markdown(res, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    log(f"results: {out} (and {out.with_suffix('.md')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
