"""The job schema: one typed config for the CLI file and the REST body, validated once.

Defaults are the DeiT recipe (Touvron et al., 2021). Every key is checked: an unknown key, a wrong
type, a missing path or an impossible value raises :class:`ConfigError` naming the field with a
dotted path (``train.batch_size``), so the CLI and the API can both point at it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

# teacher: train the teacher; distill: a student from a teacher; teacher_outputs: only the teacher's
# outputs on the students' augmented batches, into the teacher-output cache (no student).
KINDS = ("teacher", "distill", "teacher_outputs")
DISTILLATION_TYPES = ("none", "soft", "hard")
KL_REDUCTIONS = ("batchmean", "deit")
TEACHER_CACHE_STORES = ("auto", "argmax", "fp16", "fp32", "topk")
PRECISIONS = ("auto", "no", "bf16", "fp16")
STUDENT_RE = re.compile(r"^deit_(tiny|small|base)_distilled_patch(\d+)_(224|384)$")
TEACHER_RE = re.compile(r"^regnety_\w+$")


class ConfigError(ValueError):
    """A config value is wrong. ``field`` is the dotted path of the offending key."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class DataConfig:
    train: str
    val: str
    img_size: int = 224
    # Evaluation resizes the shorter side to int(img_size / crop_pct) and center-crops img_size, as
    # timm's eval transform and DeiT (0.875 at 224 -> 256 -> 224). 1.0 keeps the whole image.
    crop_pct: float = 0.875


@dataclass(frozen=True)
class StudentConfig:
    model: str = "deit_tiny_distilled_patch16_224"
    patch_size: int | None = None
    init: str | None = None  # null (random), "timm" (hub weights), or a local weights path

    @property
    def effective_patch_size(self) -> int:
        if self.patch_size is not None:
            return self.patch_size
        m = STUDENT_RE.match(self.model)
        return int(m.group(2)) if m else 16


@dataclass(frozen=True)
class TeacherConfig:
    model: str = "regnety_160"
    # A local weights file, a final/ directory, "timm" for hub weights, or (service only) an
    # artifact id that the service resolves to a path before the run starts.
    checkpoint: str | int | None = None


@dataclass(frozen=True)
class DistillationConfig:
    type: str = "hard"
    alpha: float = 0.5
    tau: float = 1.0
    # soft only: "batchmean" is the per-sample KL of the paper's formula; "deit" reproduces the reference
    # DeiT code (sum / numel), which is batchmean / num_classes (see deit_core/losses.py).
    kl_reduction: str = "batchmean"
    # The teacher-output cache (deit_core/teacher_cache.py). "auto": read a cache whose key matches
    # from the store the run is given (the service's <storage>/teacher_cache), else run the teacher
    # live and write one (under the size cap); "off": never; anything else names a cache to read
    # (the service resolves an artifact name; the CLI takes the cache folder's path). A key
    # mismatch is a miss: logged, the teacher runs live.
    teacher_cache: str = "auto"
    # What a written cache holds: "auto" (argmax for hard, fp16 logits for soft), "argmax", "fp16",
    # "fp32" (exact logits) or "topk" (the teacher_cache_topk largest logits, FKD-style). Every
    # form keeps the exact argmax too. When reading, a value other than "auto" accepts only that form.
    teacher_cache_store: str = "auto"
    teacher_cache_topk: int = 10


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 300
    batch_size: int = 128  # per process, as in DeiT; the lr scales with the global batch
    lr: float = 5.0e-4  # for a global batch of 512
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    mixup: float = 0.8
    cutmix: float = 1.0
    smoothing: float = 0.1
    drop_path: float = 0.1
    aa: str | None = "rand-m9-mstd0.5-inc1"
    scale_min: float = 0.08  # RandomResizedCrop's smallest area share; raise it for small images
    hflip: float = 0.5
    reprob: float = 0.25
    ema: bool = False
    ema_decay: float = 0.99996
    clip_grad: float | None = None
    mixed_precision: str = "auto"
    seed: int = 0
    accum_steps: int = 1
    min_lr: float = 1.0e-5
    warmup_lr: float = 1.0e-6
    repeated_aug: bool = True
    workers: int = 2
    log_every: int = 10


@dataclass(frozen=True)
class ResourcesConfig:
    """Where a run goes. ``processes`` (the one-node spelling) and ``processes_per_node`` are the same
    number, processes on each node; parsing fills both. ``nodes`` > 1 needs a launcher that places
    multi-node runs (the service's Slurm launcher); the world size is ``nodes * processes_per_node``."""

    processes: int = 1
    max_attempts: int = 3  # runs of one job the service starts on its own (worker lost, run crashed)
    nodes: int = 1
    processes_per_node: int | None = None

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes


@dataclass(frozen=True)
class JobConfig:
    kind: str
    data: DataConfig
    teacher: TeacherConfig
    train: TrainConfig
    resources: ResourcesConfig
    student: StudentConfig | None = None
    distillation: DistillationConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.kind != "distill":
            d.pop("student")
        if self.kind == "teacher":
            d.pop("distillation")
        return d


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "student": StudentConfig,
    "teacher": TeacherConfig,
    "distillation": DistillationConfig,
    "train": TrainConfig,
    "resources": ResourcesConfig,
}


def _coerce(path: str, value: Any, annotation: str) -> Any:
    """Check ``value`` against a dataclass annotation string (``int | None`` style)."""
    allowed = [a.strip() for a in annotation.split("|")]
    if value is None:
        if "None" in allowed:
            return None
        raise ConfigError(path, f"must not be null (expected {annotation})")
    for a in allowed:
        if a == "bool" and isinstance(value, bool):
            return value
        if a == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if a == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if a == "str" and isinstance(value, str):
            return value
    raise ConfigError(path, f"expected {annotation}, got {type(value).__name__} {value!r}")


def _build_section(name: str, raw: Any, required: tuple[str, ...] = ()) -> Any:
    cls = _SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(name, f"must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{name}.{key}", f"unknown key; allowed keys: {', '.join(fields)}")
    values = {}
    for fname, f in fields.items():
        path = f"{name}.{fname}"
        if fname in raw:
            values[fname] = _coerce(path, raw[fname], str(f.type))
        elif f.default is dataclasses.MISSING or fname in required:
            raise ConfigError(path, "is required")
    return cls(**values)


def _check_range(path: str, value: float | None, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False) -> None:
    if value is None:
        return
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ConfigError(path, f"must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(path, f"must be <= {hi}, got {value}")


def _check_path(path: str, value: str, want_dir: bool) -> None:
    p = Path(value)
    if not p.exists():
        raise ConfigError(path, f"path does not exist: {value}")
    if want_dir and not p.is_dir():
        raise ConfigError(path, f"must be a directory (an ImageFolder root): {value}")


def _check_one_of(path: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(path, f"must be one of {', '.join(allowed)}, got {value!r}")


def _check_models(data: DataConfig, teacher: TeacherConfig, student: StudentConfig | None) -> None:
    _check_range("data.img_size", data.img_size, 8, 1024)
    _check_range("data.crop_pct", data.crop_pct, 0.0, 1.0, lo_open=True)
    if not TEACHER_RE.match(teacher.model):
        raise ConfigError("teacher.model", f"must be a timm regnety_* model, got {teacher.model!r}")
    if student is None:
        return
    if not STUDENT_RE.match(student.model):
        raise ConfigError("student.model",
                          "must be deit_{tiny,small,base}_distilled_patch16_{224,384}, got " + repr(student.model))
    _check_range("student.patch_size", student.patch_size, 1, 64)
    ps = student.effective_patch_size
    if data.img_size % ps:
        raise ConfigError("data.img_size", f"must be a multiple of the student patch size {ps}, got {data.img_size}")


def _check_distillation(distillation: DistillationConfig, teacher: TeacherConfig) -> None:
    _check_one_of("distillation.type", distillation.type, DISTILLATION_TYPES)
    _check_range("distillation.alpha", distillation.alpha, 0.0, 1.0)
    _check_range("distillation.tau", distillation.tau, 0.0, None, lo_open=True)
    _check_one_of("distillation.kl_reduction", distillation.kl_reduction, KL_REDUCTIONS)
    if distillation.type != "none" and teacher.checkpoint is None:
        raise ConfigError("teacher.checkpoint", "a distill run needs a trained teacher: a weights file, "
                          "a final/ directory, an artifact id or 'timm'")
    _check_teacher_cache(distillation)


def _check_teacher_cache(distillation: DistillationConfig) -> None:
    _check_one_of("distillation.teacher_cache_store", distillation.teacher_cache_store, TEACHER_CACHE_STORES)
    _check_range("distillation.teacher_cache_topk", distillation.teacher_cache_topk, 1, 100000)
    if not distillation.teacher_cache.strip() or len(distillation.teacher_cache) > 1000:
        raise ConfigError("distillation.teacher_cache", "must be 'auto', 'off' or a cache's name (1 to 1000 characters)")
    if distillation.type == "soft" and distillation.teacher_cache_store == "argmax":
        raise ConfigError("distillation.teacher_cache_store", "soft distillation needs logits: fp16, fp32, topk or auto")


def _check_train(t: TrainConfig) -> None:
    _check_range("train.epochs", t.epochs, 1, 100000)
    _check_range("train.batch_size", t.batch_size, 1, 65536)
    _check_range("train.lr", t.lr, 0.0, 10.0, lo_open=True)
    _check_range("train.weight_decay", t.weight_decay, 0.0, 10.0)
    _check_range("train.warmup_epochs", t.warmup_epochs, 0, 100000)
    for name in ("mixup", "cutmix"):
        _check_range(f"train.{name}", getattr(t, name), 0.0, 100.0)
    _check_range("train.scale_min", t.scale_min, 0.01, 1.0)
    _check_range("train.hflip", t.hflip, 0.0, 1.0)
    for name in ("smoothing", "drop_path", "reprob"):
        _check_range(f"train.{name}", getattr(t, name), 0.0, 0.99)
    _check_range("train.ema_decay", t.ema_decay, 0.0, 1.0)
    _check_range("train.clip_grad", t.clip_grad, 0.0, None, lo_open=True)
    _check_one_of("train.mixed_precision", t.mixed_precision, PRECISIONS)
    _check_range("train.seed", t.seed, 0, 2**31 - 1)
    _check_range("train.accum_steps", t.accum_steps, 1, 1024)
    _check_range("train.min_lr", t.min_lr, 0.0, 10.0)
    _check_range("train.warmup_lr", t.warmup_lr, 0.0, 10.0)
    _check_range("train.workers", t.workers, 0, 64)
    _check_range("train.log_every", t.log_every, 1, 100000)
    if (t.mixup > 0 or t.cutmix > 0) and t.batch_size % 2:
        raise ConfigError("train.batch_size", "must be even when mixup or cutmix is on (they pair images within a batch)")
    if t.aa is not None and t.aa not in ("", "0") and not re.match(r"^(rand|augmix|original|v0|3a)", t.aa):
        raise ConfigError("train.aa", f"not a timm auto-augment spec, e.g. rand-m9-mstd0.5-inc1 or null: {t.aa!r}")


def _check_resources(resources: ResourcesConfig, raw: Mapping[str, Any]) -> ResourcesConfig:
    """Ranges, and one value for the processes on each node, spelt ``processes`` or ``processes_per_node``."""
    _check_range("resources.processes", resources.processes, 1, 64)
    _check_range("resources.processes_per_node", resources.processes_per_node, 1, 64)
    _check_range("resources.nodes", resources.nodes, 1, 1024)
    _check_range("resources.max_attempts", resources.max_attempts, 1, 20)
    per_node = resources.processes_per_node
    if per_node is not None and "processes" in raw and raw["processes"] != per_node:
        raise ConfigError("resources.processes_per_node", f"{per_node} contradicts resources.processes={raw['processes']} "
                          "(two spellings of the processes on each node): give one of them")
    per_node = per_node if per_node is not None else resources.processes
    return dataclasses.replace(resources, processes=per_node, processes_per_node=per_node)


def _check_paths(data: DataConfig, teacher: TeacherConfig, student: StudentConfig | None,
                 distillation: DistillationConfig | None = None) -> None:
    _check_path("data.train", data.train, True)
    _check_path("data.val", data.val, True)
    cache = distillation.teacher_cache if distillation else "off"
    if cache not in ("auto", "off") and not Path(cache).is_dir():
        raise ConfigError("distillation.teacher_cache", f"{cache!r} is not a cache folder; the service resolves cache "
                          "names, here give the folder's path (or 'auto' / 'off')")
    for path, value in (("teacher.checkpoint", teacher.checkpoint),
                        ("student.init", student.init if student else None)):
        if isinstance(value, int):
            raise ConfigError(path, f"artifact id {value} can only be resolved by the service; give a file path here")
        if value is not None and value != "timm":
            _check_path(path, value, False)


def _check_top_level(raw: Any) -> str:
    """The mapping's keys and its kind; returns the kind."""
    if not isinstance(raw, Mapping):
        raise ConfigError("config", f"must be a mapping, got {type(raw).__name__}")
    top = {"kind", *_SECTIONS}
    for key in raw:
        if key not in top:
            raise ConfigError(str(key), f"unknown key; allowed keys: {', '.join(sorted(top))}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    if "data" not in raw:
        raise ConfigError("data", "is required")
    if kind != "distill" and raw.get("student") is not None:
        raise ConfigError("student", "only allowed for kind 'distill'")
    if kind == "teacher" and raw.get("distillation") is not None:
        raise ConfigError("distillation", "only allowed for kinds 'distill' and 'teacher_outputs'")
    return kind


def parse_config(raw: Any, check_paths: bool = True) -> JobConfig:
    """Validate a raw mapping (from YAML/JSON) into a :class:`JobConfig`.

    Args:
        raw: the config as loaded from a file or a request body.
        check_paths: check that data folders and checkpoint paths exist. The service passes
            ``False`` and resolves paths itself (artifact ids, dataset registry).

    Raises:
        ConfigError: with the dotted field name of the first problem found.
    """
    kind = _check_top_level(raw)
    data = _build_section("data", raw["data"])
    teacher = _build_section("teacher", raw.get("teacher"))
    train = _build_section("train", raw.get("train"))
    resources = _build_section("resources", raw.get("resources"))
    student = distillation = None
    if kind == "distill":
        student = _build_section("student", raw.get("student"))
        distillation = _build_section("distillation", raw.get("distillation"))
    elif kind == "teacher_outputs":  # a distill config without the student: type decides what is stored
        distillation = _build_section("distillation", raw.get("distillation"))
        if distillation.type == "none":
            raise ConfigError("distillation.type", "a teacher_outputs job stores the teacher's outputs for hard or soft "
                              "distillation; 'none' has nothing to store")

    _check_models(data, teacher, student)
    if distillation is not None:
        _check_distillation(distillation, teacher)
    _check_train(train)
    resources = _check_resources(resources, raw.get("resources") or {})
    if check_paths:
        _check_paths(data, teacher, student, distillation)
    return JobConfig(kind=kind, data=data, teacher=teacher, train=train, resources=resources,
                     student=student, distillation=distillation)


def load_config_file(path: str | os.PathLike, check_paths: bool = True) -> JobConfig:
    """Read a YAML or JSON job file and validate it."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError("config", f"cannot read {p}: {e.strerror}") from e
    try:
        raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError("config", f"{p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from e
    return parse_config(raw, check_paths=check_paths)


def with_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``raw`` with dotted keys (``train.epochs``) replaced."""
    out = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
