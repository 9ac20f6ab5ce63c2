"""Students and teachers, built through timm, and the one place weights are loaded from.

Students are timm's ``deit_*_distilled_*`` (class and distillation tokens, two heads); teachers
are timm's ``regnety_*``. Weights come from a local ``.safetensors``/``.pt``/``.pth`` file (loaded
with ``weights_only=True``), a ``final/`` directory of an earlier run, a ``last.pt``/``best.pt``
training checkpoint, or timm's ``pretrained`` weights where a hub is reachable (``"timm"``).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError
from .files import replace_dir, temp_dir_beside, write_json_atomic
from .layout import FINAL_CONFIG, FINAL_DIR, FINAL_WEIGHTS

log = logging.getLogger(__name__)



def _create(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    import timm

    if name not in timm.list_models(name):
        raise ConfigError("model", f"unknown timm model {name!r}; see timm.list_models('regnety_*') or 'deit_*_distilled_*'")
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def student_kwargs(model: str, num_classes: int, img_size: int, patch_size: int | None,
                   drop_path: float = 0.0) -> dict[str, Any]:
    kw: dict[str, Any] = {"num_classes": num_classes, "img_size": img_size, "drop_path_rate": drop_path}
    if patch_size is not None:
        kw["patch_size"] = patch_size
    return kw


def teacher_kwargs(num_classes: int, drop_path: float = 0.0) -> dict[str, Any]:
    return {"num_classes": num_classes, "drop_path_rate": drop_path}


def build_model(architecture: str, model_kwargs: dict[str, Any], pretrained: bool = False) -> nn.Module:
    """Build a timm model from its name and keyword arguments (as stored in final/config.json)."""
    return _create(architecture, pretrained, **model_kwargs)


def num_outputs(model: nn.Module) -> int:
    """Number of classes the model's (class) head predicts."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head.out_features
    fc = getattr(getattr(model, "head", None), "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.out_features
    return int(model.num_classes)


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return obj


def read_final_config(final_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(final_dir) / FINAL_CONFIG
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{final_dir} is not a final/ directory: {FINAL_CONFIG} is missing") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def resolve_weights_path(source: str | os.PathLike) -> tuple[Path, dict[str, Any] | None]:
    """Map a user-given weights source to a file, plus the final/config.json if there is one.

    Accepts a file, a ``final/`` directory, or a run directory containing ``final/``.
    """
    p = Path(source)
    if p.is_dir():
        if (p / FINAL_DIR / FINAL_CONFIG).exists():
            p = p / FINAL_DIR
        if not (p / FINAL_CONFIG).exists():
            raise FileNotFoundError(f"{source} is a directory without {FINAL_CONFIG} (expected a run's final/ directory)")
        return p / FINAL_WEIGHTS, read_final_config(p)
    if not p.exists():
        raise FileNotFoundError(f"weights file not found: {source}")
    return p, None


def load_weights(model: nn.Module, source: str | os.PathLike, field: str, expect_classes: list[str] | None = None) -> None:
    """Load weights into ``model`` from a local source; refuse a class-count mismatch.

    Args:
        model: the freshly built model, already with the dataset's number of classes.
        source: a file or final/ directory.
        field: the config field that named ``source``, used in errors.
        expect_classes: the dataset's class names; a final/ directory with different ones is refused.
    """
    try:
        path, final_cfg = resolve_weights_path(source)
        state = _state_dict_from_file(path)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        raise ConfigError(field, str(e)) from e
    want = num_outputs(model)
    if final_cfg is not None and expect_classes is not None and final_cfg.get("classes") not in (None, expect_classes):
        theirs = final_cfg.get("classes")
        if len(theirs) != len(expect_classes):
            raise ConfigError(field, f"the checkpoint predicts {len(theirs)} classes but the dataset has {len(expect_classes)}")
        raise ConfigError(field, f"the checkpoint's classes {theirs} differ from the dataset's {expect_classes}")
    for key in ("head.weight", "head.fc.weight"):
        if key in state and state[key].shape[0] != want:
            raise ConfigError(field, f"the checkpoint predicts {state[key].shape[0]} classes but the dataset has {want}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(field, f"weights do not fit {type(model).__name__}: missing {list(missing)[:5]}, "
                                 f"unexpected {list(unexpected)[:5]}")


def build_student(model: str, num_classes: int, img_size: int, patch_size: int | None,
                  drop_path: float = 0.0, init: str | None = None,
                  classes: list[str] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build a DeiT distilled student; returns the model and the kwargs that rebuild it."""
    kw = student_kwargs(model, num_classes, img_size, patch_size, drop_path)
    try:
        m = _create(model, init == "timm", **kw)
    except ConfigError as e:
        raise ConfigError("student.model", e.message) from e
    if init not in (None, "timm"):
        load_weights(m, init, "student.init", classes)
    kw["drop_path_rate"] = 0.0  # inference rebuilds need no stochastic depth
    return m, kw


def build_teacher(model: str, num_classes: int, checkpoint: str | None, drop_path: float = 0.0,
                  classes: list[str] | None = None, field: str = "teacher.checkpoint") -> tuple[nn.Module, dict[str, Any]]:
    """Build a RegNetY teacher and load its weights; refuses a class-count mismatch."""
    kw = teacher_kwargs(num_classes, drop_path)
    try:
        m = _create(model, checkpoint == "timm", **kw)
    except ConfigError as e:
        raise ConfigError("teacher.model", e.message) from e
    except RuntimeError as e:  # timm pretrained with a different head size
        raise ConfigError(field, str(e)) from e
    if checkpoint not in (None, "timm"):
        load_weights(m, checkpoint, field, classes)
    kw["drop_path_rate"] = 0.0
    return m, kw


def save_final(out_dir: str | os.PathLike, model: nn.Module, meta: dict[str, Any],
               extra_json: dict[str, Any] | None = None) -> Path:
    """Write ``final/model.safetensors`` and ``final/config.json`` atomically (temp dir + rename).

    ``meta`` must hold ``architecture``, ``model_kwargs``, ``classes``, ``img_size``, ``mean``,
    ``std``; it is written as config.json so that export and serving can rebuild the model.
    ``extra_json`` maps more file names to JSON content published in the same rename (training's
    ``val_predictions.json``), so final/ never appears without them.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    final = out / FINAL_DIR
    tmp = temp_dir_beside(final)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / FINAL_WEIGHTS), metadata={"architecture": meta["architecture"]})
    (tmp / FINAL_CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True))
    for name, content in (extra_json or {}).items():
        write_json_atomic(tmp / name, content)
    replace_dir(tmp, final)
    return final


def load_final(final_dir: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_final` in eval mode; returns it and its config."""
    cfg = read_final_config(final_dir)
    for key in ("architecture", "model_kwargs", "classes", "img_size", "mean", "std"):
        if key not in cfg:
            raise ValueError(f"{Path(final_dir) / FINAL_CONFIG} lacks {key!r}")
    model = build_model(cfg["architecture"], cfg["model_kwargs"])
    from safetensors.torch import load_file

    wpath = Path(final_dir) / FINAL_WEIGHTS
    if not wpath.exists():
        raise FileNotFoundError(f"{wpath} is missing")
    state = load_file(str(wpath))
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, cfg
