"""The job schema: one typed config for the CLI file and the REST body, validated once.

Defaults are the DeiT recipe (Touvron et al., 2021). Every key is checked: an unknown key, a wrong
type, a missing path or an impossible value raises :class:`ConfigError` naming the field with a
dotted path (``train.batch_size``), so the CLI and the API can both point at it.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .layout import MAX_INT32

# teacher: train the teacher; distill: a student from a teacher; teacher_outputs: only the teacher's
# outputs on the students' augmented batches, into the teacher-output cache (no student).
KINDS = ("teacher", "distill", "teacher_outputs")
DISTILLATION_TYPES = ("none", "soft", "hard")
KL_REDUCTIONS = ("batchmean", "deit")
# "deit" since issue 18: benchmarks/gain_study.py (digits, 400 training images, regnety_016 teacher, 5 seeds)
# measured soft alpha 0.9 tau 4 at +1.3 pt (95% CI +0.3 to +2.3) with it and +0.8 (-0.1 to +1.6) with
# batchmean, higher on 4 of 5 seeds; the recipe's alpha/tau were tuned with the reference code's reduction.
DEFAULT_KL_REDUCTION = "deit"
TEACHER_CACHE_STORES = ("auto", "argmax", "fp16", "fp32", "topk")
PRECISIONS = ("auto", "no", "bf16", "fp16")
# The train crop: "resized" is DeiT's RandomResizedCrop; "padded" is the reference code's crop for images of
# at most PADDED_CROP_MAX_PX (RandomCrop with img_size / 8 px of padding), for like-for-like comparisons.
TRAIN_CROPS = ("resized", "padded")
PADDED_CROP_MAX_PX = 32
STUDENT_MODELS = tuple(f"deit_{s}_distilled_patch16_{r}" for s in ("tiny", "small", "base") for r in (224, 384))
STUDENT_RE = re.compile(r"^deit_(tiny|small|base)_distilled_patch(\d+)_(224|384)$")
TEACHER_PATTERN = r"^regnety_[A-Za-z0-9_]+$"
AA_PATTERN = r"^(0?|(rand|augmix|original|v0|3a)[\s\S]*)$"  # "" and "0" (off), or a timm auto-augment spec
MAX_PATH_CHARS = 4096


# ``train.aa`` is checked by timm's own auto-augment parser (``timm.data.auto_augment``, what
# ``create_transform`` calls when training starts) at submission rather than at the first batch: a
# pattern cannot tell rand-m9-mstd0.5-inc1 from rand-m9-mstd0.5-incl. The parser alone is not enough: it
# silently skips a section that is not a key followed by a number (``incl``), so such a section is refused too.
AA_OFF = (None, "", "0")
_AA_SECTION = re.compile(r"(\d.*)")  # timm's own split of a section into key and value


def aa_skipped_sections(spec: str) -> list[str]:
    """The sections after the policy name that timm's parser ignores without a word (no number in them);
    RandAugment's ``t...`` section (a transform list) is a key on its own."""
    rand = spec.startswith("rand")
    return [c for c in spec.split("-")[1:] if len(_AA_SECTION.split(c)) < 2 and not (rand and c.startswith("t"))]


def aa_problem(spec: str | None) -> str | None:
    """Why timm's parser refuses ``spec`` (None: it is off or timm accepts every section of it)."""
    if spec in AA_OFF:
        return None
    from timm.data import auto_augment  # lazy: torch, and only when a spec is given

    parse = (auto_augment.rand_augment_transform if spec.startswith("rand")
             else auto_augment.augment_and_mix_transform if spec.startswith("augmix")
             else auto_augment.auto_augment_transform)
    try:
        parse(spec, None)
    except (AssertionError, ValueError, KeyError, IndexError, TypeError) as e:
        return f"timm's auto-augment parser refused {spec!r}: {e or type(e).__name__}"
    skipped = aa_skipped_sections(spec)
    if skipped:
        return (f"timm's auto-augment parser would ignore section {skipped[0]!r} of {spec!r} (a section is a key and "
                "a number, e.g. inc1, m9, mstd0.5)")
    return None


class ConfigError(ValueError):
    """A config value is wrong. ``field`` is the dotted path of the offending key."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConfigErrors(ConfigError):
    """Every problem of one config, so a user fixes them in one round instead of one per submission.
    ``field``/``message`` are the first problem's (what callers that show one error read); ``errors``
    is the whole list, in the order the keys were checked."""

    def __init__(self, errors: list[ConfigError]):
        super().__init__(errors[0].field, errors[0].message)
        self.errors = errors
        self.args = ("; ".join(f"{e.field}: {e.message}" for e in errors),)


def did_you_mean(word: Any, choices: Any) -> str:
    """``"; did you mean lr?"`` when ``word`` is close to one of ``choices`` (difflib), else ``""``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def unknown_key(key: Any, allowed: Any) -> str:
    """The one wording of an unknown key: the close match if there is one, else the allowed keys."""
    hint = did_you_mean(key, allowed)
    return f"unknown key{hint}" if hint else f"unknown key; allowed keys: {', '.join(sorted(allowed))}"


class Problems:
    """Collects :class:`ConfigError` s instead of stopping at the first: ``with problems.check(): ...``
    runs one check and keeps its error; :meth:`raise_any` raises them all as one :class:`ConfigErrors`."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, e: ConfigError) -> None:
        self.errors.extend(e.errors if isinstance(e, ConfigErrors) else [e])

    def check(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; on a ConfigError, keep it and return None."""
        try:
            return fn(*args)
        except ConfigError as e:
            self.add(e)
            return None

    def raise_any(self) -> None:
        if self.errors:
            raise ConfigErrors(self.errors)


@dataclass(frozen=True)
class FieldSpec:
    """What one config key accepts, beyond its type (the dataclass annotation), declared once.

    The validator (:func:`check_field`), the API's JSON Schema and ``docs/config.md``
    (``deit_core.config_schema``) are all read off these, so they cannot disagree. Checks are data,
    not code, so a caller can run them all and report every problem at once. ``message``, when set,
    replaces the choice / pattern / length message; ``{value!r}`` in it is the value given.
    """

    help: str
    lo: float | None = None  # minimum (inclusive unless lo_open); also the minimum of an int in a str | int union
    hi: float | None = None  # maximum, inclusive
    lo_open: bool = False
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # a JSON Schema (ECMA) pattern; anchored with ^...$ where it must match whole
    min_length: int | None = None
    max_length: int | None = None
    message: str | None = None


def spec(default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field whose :class:`FieldSpec` rides in its metadata; no default: required."""
    return dataclasses.field(default=default, metadata={"spec": FieldSpec(**kw)})


def field_spec(f: dataclasses.Field) -> FieldSpec:
    """The field's spec; a field declared without :func:`spec` checks nothing (tests/test_config_schema.py
    fails on its missing help, so it does not stay that way)."""
    return f.metadata.get("spec") or FieldSpec(help="")


def _regex(pattern: str) -> re.Pattern[str]:
    """A JSON Schema pattern for Python: ``$`` at the very end means the end of the string, not before a
    final newline as in Python's ``re``."""
    return re.compile(pattern.removesuffix("$") + r"\Z" if pattern.endswith("$") else pattern)


def check_field(path: str, value: Any, s: FieldSpec) -> None:
    """The field's range, choices, pattern and length (its type was checked when the section was built)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        _check_range(path, value, s.lo, s.hi, lo_open=s.lo_open)
        return
    if s.choices is not None and value not in s.choices:
        raise ConfigError(path, (s.message.format(value=value) if s.message
                                 else f"must be one of {', '.join(s.choices)}, got {value!r}") + did_you_mean(value, s.choices))
    if s.pattern is not None and not _regex(s.pattern).search(value):
        raise ConfigError(path, (s.message or "must match {pattern}, got {value!r}").format(value=value, pattern=s.pattern))
    too_short = s.min_length is not None and len(value) < s.min_length
    if too_short or (s.max_length is not None and len(value) > s.max_length):
        raise ConfigError(path, s.message.format(value=value) if s.message
                          else f"must be {s.min_length or 0} to {s.max_length} characters long, got {len(value)}")


@dataclass(frozen=True)
class DataConfig:
    train: str = spec(help="training images, an ImageFolder root (`train/<class>/*`); the service also takes "
                      "`dataset:NAME/train` (a registered dataset) or a server path in a shared data root",
                      min_length=1, max_length=MAX_PATH_CHARS)
    val: str = spec(help="validation images, an ImageFolder root with the same classes (service: `dataset:NAME/val`)",
                    min_length=1, max_length=MAX_PATH_CHARS)
    img_size: int = spec(224, lo=8, hi=1024, help="input side in pixels; a multiple of the student's patch size")
    # Evaluation resizes the shorter side to int(img_size / crop_pct) and center-crops img_size, as
    # timm's eval transform and DeiT (0.875 at 224 -> 256 -> 224). 1.0 keeps the whole image.
    crop_pct: float = spec(0.875, lo=0.0, hi=1.0, lo_open=True,
                           help="evaluation resizes the shorter side to img_size / crop_pct, then center-crops img_size "
                           "(DeiT: 0.875, 256 -> 224); 1.0 keeps the whole image")


@dataclass(frozen=True)
class StudentConfig:
    model: str = spec("deit_tiny_distilled_patch16_224", choices=STUDENT_MODELS,
                      message="must be deit_{{tiny,small,base}}_distilled_patch16_{{224,384}}, got {value!r}",
                      help="the DeiT student (with a distillation token)")
    patch_size: int | None = spec(None, lo=1, hi=64, help="patch size override (null: the model's, 16); e.g. 8 for 32 px images")
    init: str | None = spec(None, min_length=1, max_length=MAX_PATH_CHARS,
                            help="null (random), `timm` (hub weights) or a local weights path")

    @property
    def effective_patch_size(self) -> int:
        if self.patch_size is not None:
            return self.patch_size
        m = STUDENT_RE.match(self.model)
        return int(m.group(2)) if m else 16


@dataclass(frozen=True)
class TeacherConfig:
    model: str = spec("regnety_160", pattern=TEACHER_PATTERN, max_length=100,
                      message="must be a timm regnety_* model, got {value!r}",
                      help="the teacher, a timm `regnety_*` model (the network trained by kind teacher)")
    # A local weights file, a final/ directory, "timm" for hub weights, or (service only) an
    # artifact id that the service resolves to a path before the run starts.
    checkpoint: str | int | None = spec(None, lo=1, hi=MAX_INT32, min_length=1, max_length=MAX_PATH_CHARS,
                                        help="the trained teacher: a weights file, a `final/` directory, `timm` (hub "
                                        "weights) or, in the service, a checkpoint artifact id; needed unless "
                                        "distillation.type is none")


@dataclass(frozen=True)
class DistillationConfig:
    type: str = spec("hard", choices=DISTILLATION_TYPES,
                     help="none (labels only, same student and compute), soft (KL to the teacher's logits) or hard "
                     "(cross-entropy to the teacher's argmax, on the distillation head)")
    alpha: float = spec(0.5, lo=0.0, hi=1.0, help="weight of the distillation term; 1 - alpha weighs the label term")
    # tau: published recipes use 1 to 20 (the soft term is scaled by tau^2). 100 bounds it: the OpenAPI
    # document used to allow up to 1e6 while the engine had no bound at all.
    tau: float = spec(1.0, lo=0.0, hi=100.0, lo_open=True, help="soft distillation's temperature")
    # soft only: "batchmean" is the per-sample KL of the paper's formula; "deit" reproduces the reference
    # DeiT code (sum / numel), which is batchmean / num_classes (see deit_core/losses.py). The default is
    # DEFAULT_KL_REDUCTION (why: above it).
    kl_reduction: str = spec(DEFAULT_KL_REDUCTION, choices=KL_REDUCTIONS,
                             help="soft only: deit (the reference code's sum / numel, smaller by the number of "
                             "classes; measured better on small data, see docs/recipes.md) or batchmean "
                             "(the paper's per-sample KL)")
    # The teacher-output cache (deit_core/teacher_cache.py). "auto": read a cache whose key matches
    # from the store the run is given (the service's <storage>/teacher_cache), else run the teacher
    # live and write one (under the size cap); "off": never; anything else names a cache to read
    # (the service resolves an artifact name; the CLI takes the cache folder's path). A key
    # mismatch is a miss: logged, the teacher runs live.
    teacher_cache: str = spec("auto", pattern=r"\S", min_length=1, max_length=1000,
                              message="must be 'auto', 'off' or a cache's name (1 to 1000 characters)",
                              help="teacher-output cache: auto (read a matching cache, else write one), off, or a "
                              "cache to read (service: a cache artifact's name; CLI: its folder)")
    # What a written cache holds: "auto" (argmax for hard, fp16 logits for soft), "argmax", "fp16",
    # "fp32" (exact logits) or "topk" (the teacher_cache_topk largest logits, FKD-style). Every
    # form keeps the exact argmax too. When reading, a value other than "auto" accepts only that form.
    teacher_cache_store: str = spec("auto", choices=TEACHER_CACHE_STORES,
                                    help="what a written cache holds: auto (argmax for hard, fp16 logits for soft), "
                                    "argmax, fp16, fp32 or topk; when reading, anything but auto accepts only that form")
    teacher_cache_topk: int = spec(10, lo=1, hi=100000, help="topk: how many of the largest logits a cache keeps")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = spec(300, lo=1, hi=100000, help="epochs to train")
    batch_size: int = spec(128, lo=1, hi=65536,
                           help="per process, as in DeiT; even when mixup or cutmix is on (they pair images)")
    lr: float = spec(5.0e-4, lo=0.0, hi=10.0, lo_open=True,
                     help="peak learning rate for a global batch of 512; scaled by global batch / 512")
    weight_decay: float = spec(0.05, lo=0.0, hi=10.0, help="AdamW weight decay")
    warmup_epochs: int = spec(5, lo=0, hi=100000, help="linear warmup from warmup_lr, then cosine decay to min_lr")
    mixup: float = spec(0.8, lo=0.0, hi=100.0, help="mixup alpha; 0: off")
    cutmix: float = spec(1.0, lo=0.0, hi=100.0, help="cutmix alpha; 0: off")
    smoothing: float = spec(0.1, lo=0.0, hi=0.99, help="label smoothing; 0: off")
    drop_path: float = spec(0.1, lo=0.0, hi=0.99, help="stochastic depth rate of the student")
    aa: str | None = spec("rand-m9-mstd0.5-inc1", pattern=AA_PATTERN, max_length=200,
                          message="not a timm auto-augment spec, e.g. rand-m9-mstd0.5-inc1 or null: {value!r}",
                          help="timm auto-augment spec (RandAugment by default); null, '' or '0': off")
    crop: str = spec("resized", choices=TRAIN_CROPS,
                     help="resized: RandomResizedCrop (DeiT); padded: RandomCrop with img_size/8 px of padding, as the "
                          "reference code does at 32 px (only for data.img_size <= 32)")
    scale_min: float = spec(0.08, lo=0.01, hi=1.0,
                            help="RandomResizedCrop's smallest area share; raise it for small images")
    hflip: float = spec(0.5, lo=0.0, hi=1.0, help="horizontal flip probability")
    reprob: float = spec(0.25, lo=0.0, hi=0.99, help="random erasing probability; 0: off")
    ema: bool = spec(False, help="keep an exponential moving average of the weights")
    ema_decay: float = spec(0.99996, lo=0.0, hi=1.0, help="the EMA's decay per update")
    clip_grad: float | None = spec(None, lo=0.0, hi=1e6, lo_open=True, help="gradient norm clipping; null: off")
    mixed_precision: str = spec("auto", choices=PRECISIONS, help="auto: bf16 on GPUs that support it, fp32 on CPU")
    seed: int = spec(0, lo=0, hi=MAX_INT32, help="seeds weights, sampling and augmentation")
    accum_steps: int = spec(1, lo=1, hi=1024, help="micro-batches per optimizer update (in the global batch)")
    min_lr: float = spec(1.0e-5, lo=0.0, hi=10.0, help="the cosine schedule's floor (absolute, as in DeiT)")
    warmup_lr: float = spec(1.0e-6, lo=0.0, hi=10.0, help="the warmup's starting learning rate (absolute)")
    repeated_aug: bool = spec(True, help="repeated augmentation: three augmented copies of each image (DeiT's RASampler)")
    workers: int = spec(2, lo=0, hi=64, help="data loader workers per process (capped to the free cores on CPU)")
    log_every: int = spec(10, lo=1, hi=100000, help="a step event every this many updates")


@dataclass(frozen=True)
class ResourcesConfig:
    """Where a run goes. ``processes`` (the one-node spelling) and ``processes_per_node`` are the same
    number, processes on each node; parsing fills both. ``nodes`` > 1 needs a launcher that places
    multi-node runs (the service's Slurm launcher); the world size is ``nodes * processes_per_node``."""

    processes: int = spec(1, lo=1, hi=64, help="processes on each node (one per GPU; gloo processes on CPU)")
    max_attempts: int = spec(3, lo=1, hi=20,
                             help="runs of one job the service starts on its own (worker lost, run crashed)")
    nodes: int = spec(1, lo=1, hi=1024, help="nodes; more than 1 needs the service's Slurm launcher")
    processes_per_node: int | None = spec(None, lo=1, hi=64,
                                          help="the multi-node spelling of processes (give one of the two)")

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


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "student": StudentConfig,
    "teacher": TeacherConfig,
    "distillation": DistillationConfig,
    "train": TrainConfig,
    "resources": ResourcesConfig,
}
# What each section is for and which kinds take it (the schema's and docs/config.md's section text).
SECTION_HELP = {
    "data": "the images (required)",
    "student": "distill jobs only",
    "teacher": "the teacher network (trained by kind teacher, distilled from by the others)",
    "distillation": "distill and teacher_outputs jobs only",
    "train": "the recipe (DeiT's defaults)",
    "resources": "processes, nodes and attempts",
}



def whole_number(value: Any) -> int | None:
    """``value`` as an int if it is one: JSON has one number type, so ``2.0`` is the integer 2 (as
    JSON Schema's ``integer`` says, which the OpenAPI document uses); a bool or ``2.5`` is not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


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
        if a == "int" and whole_number(value) is not None:
            return whole_number(value)
        if a == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if a == "str" and isinstance(value, str):
            return value
    raise ConfigError(path, f"expected {annotation}, got {type(value).__name__} {value!r}")


def _build_section(name: str, raw: Any, problems: Problems, required: tuple[str, ...] = ()) -> Any:
    """The section from its raw mapping, every unknown key and wrong type kept in ``problems``; a bad
    value is left at its default so the other checks still run. None when it cannot be built at all."""
    cls = SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.add(ConfigError(name, f"must be a mapping, got {type(raw).__name__}"))
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            problems.add(ConfigError(f"{name}.{key}", unknown_key(key, fields)))
    values, complete = {}, True
    for fname, f in fields.items():
        path = f"{name}.{fname}"
        if fname in raw:
            try:
                values[fname] = _coerce(path, raw[fname], str(f.type))
            except ConfigError as e:
                problems.add(e)
                complete = complete and f.default is not dataclasses.MISSING
        elif f.default is dataclasses.MISSING or fname in required:
            problems.add(ConfigError(path, "is required"))
            complete = False
    return cls(**values) if complete else None


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


def check_section(name: str, section: Any) -> None:
    """Every field's declared range, choices, pattern and length, in declaration order; raises
    :class:`ConfigErrors` with all of the section's problems."""
    problems = Problems()
    for f in dataclasses.fields(section):
        problems.check(check_field, f"{name}.{f.name}", getattr(section, f.name), field_spec(f))
    problems.raise_any()


def _check_patch(data: DataConfig, student: StudentConfig) -> None:
    ps = student.effective_patch_size
    if data.img_size % ps:
        raise ConfigError("data.img_size", f"must be a multiple of the student patch size {ps}, got {data.img_size}")


def _check_distillation(distillation: DistillationConfig, teacher: TeacherConfig) -> None:
    if distillation.type != "none" and teacher.checkpoint is None:
        raise ConfigError("teacher.checkpoint", "a distill run needs a trained teacher: a weights file, "
                          "a final/ directory, an artifact id or 'timm'")
    if distillation.type == "soft" and distillation.teacher_cache_store == "argmax":
        raise ConfigError("distillation.teacher_cache_store", "soft distillation needs logits: fp16, fp32, topk or auto")


def _check_train(t: TrainConfig) -> None:
    if (t.mixup > 0 or t.cutmix > 0) and t.batch_size % 2:
        raise ConfigError("train.batch_size", "must be even when mixup or cutmix is on (they pair images within a batch)")
    if isinstance(t.aa, str) and (why := aa_problem(t.aa)):
        raise ConfigError("train.aa", why)


def _check_resources(resources: ResourcesConfig, raw: Mapping[str, Any]) -> ResourcesConfig:
    """One value for the processes on each node, spelt ``processes`` or ``processes_per_node``."""
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


def _check_top_level(raw: Any, problems: Problems) -> str | None:
    """The mapping's keys and its kind (None when it is not one of :data:`KINDS`); every problem kept."""
    if not isinstance(raw, Mapping):
        raise ConfigError("config", f"must be a mapping, got {type(raw).__name__}")
    top = {"kind", *SECTIONS}
    for key in raw:
        if key not in top:
            problems.add(ConfigError(str(key), unknown_key(key, top)))
    kind = raw.get("kind")
    if kind not in KINDS:
        problems.add(ConfigError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}{did_you_mean(kind, KINDS)}"))
        kind = None
    if "data" not in raw:
        problems.add(ConfigError("data", "is required"))
    if kind not in ("distill", None) and raw.get("student") is not None:
        problems.add(ConfigError("student", "only allowed for kind 'distill'"))
    if kind == "teacher" and raw.get("distillation") is not None:
        problems.add(ConfigError("distillation", "only allowed for kinds 'distill' and 'teacher_outputs'"))
    return kind


def _section_names(raw: Mapping[str, Any], kind: str | None) -> list[str]:
    """The sections a config of ``kind`` is built from (an unknown kind: the ones it gives)."""
    names = [n for n in ("data", "teacher", "train", "resources") if n != "data" or "data" in raw]
    if kind == "distill":
        return [*names, "student", "distillation"]
    if kind == "teacher_outputs":
        return [*names, "distillation"]
    return names + [n for n in ("student", "distillation") if kind is None and raw.get(n) is not None]


def _check_across(kind: str | None, s: dict[str, Any], raw: Mapping[str, Any], problems: Problems) -> None:
    """The checks that read more than one field, each on the sections that could be built."""
    data, teacher, student, distillation, train = (s.get(n) for n in ("data", "teacher", "student", "distillation", "train"))
    if kind == "teacher_outputs" and distillation is not None and distillation.type == "none":
        problems.add(ConfigError("distillation.type", "a teacher_outputs job stores the teacher's outputs for hard or "
                                 "soft distillation; 'none' has nothing to store"))
    if data is not None and student is not None:
        problems.check(_check_patch, data, student)
    if distillation is not None and teacher is not None:
        problems.check(_check_distillation, distillation, teacher)
    if train is not None:
        problems.check(_check_train, train)
    if train is not None and data is not None and train.crop == "padded" and data.img_size > PADDED_CROP_MAX_PX:
        problems.add(ConfigError("train.crop", f"'padded' is the small-image crop (data.img_size <= {PADDED_CROP_MAX_PX}); "
                                 f"data.img_size is {data.img_size}: use 'resized'"))
    if s.get("resources") is not None:
        s["resources"] = problems.check(_check_resources, s["resources"], raw.get("resources") or {})


def parse_config(raw: Any, check_paths: bool = True) -> JobConfig:
    """Validate a raw mapping (from YAML/JSON) into a :class:`JobConfig`.

    Args:
        raw: the config as loaded from a file or a request body.
        check_paths: check that data folders and checkpoint paths exist. The service passes
            ``False`` and resolves paths itself (artifact ids, dataset registry).

    Raises:
        ConfigErrors: every problem found, each with its dotted field name (``field``/``message``
            are the first one's). Paths are checked only once everything else is right.
    """
    problems = Problems()
    kind = _check_top_level(raw, problems)
    sections = {n: _build_section(n, raw.get(n), problems) for n in _section_names(raw, kind)}
    for name, section in sections.items():
        if section is not None:
            problems.check(check_section, name, section)
    _check_across(kind, sections, raw, problems)
    problems.raise_any()
    if check_paths:
        _check_paths(sections["data"], sections["teacher"], sections.get("student"), sections.get("distillation"))
    return JobConfig(kind=kind, student=sections.get("student"), distillation=sections.get("distillation"),
                     **{n: sections[n] for n in ("data", "teacher", "train", "resources")})


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
