"""The job schema: DeiT defaults, and every kind of bad value named by its field."""
from __future__ import annotations

import pytest

from deit_core.config import ConfigError, ConfigErrors, parse_config, with_overrides
from tests.conftest import distill_config, teacher_config


def test_defaults_are_the_deit_recipe(small_digits):
    cfg = parse_config({"kind": "distill", "data": {"train": str(small_digits / "train"), "val": str(small_digits / "val")},
                        "teacher": {"checkpoint": str(small_digits)}})
    assert cfg.student.model == "deit_tiny_distilled_patch16_224"
    assert cfg.data.img_size == 224
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.weight_decay) == (300, 128, 5e-4, 0.05)
    assert (cfg.train.mixup, cfg.train.cutmix, cfg.train.smoothing, cfg.train.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert cfg.train.aa == "rand-m9-mstd0.5-inc1"
    assert (cfg.distillation.type, cfg.distillation.alpha, cfg.distillation.tau) == ("hard", 0.5, 1.0)
    assert cfg.distillation.kl_reduction == "deit"  # the reference code's, measured better (issue 18)
    assert cfg.data.crop_pct == 0.875
    assert cfg.resources.processes == 1
    assert "student" not in parse_config(teacher_config(small_digits)).to_dict()


@pytest.mark.parametrize("override, field", [
    ({"train.batch_size": 0}, "train.batch_size"),
    ({"distillation.alpha": 1.5}, "distillation.alpha"),
    ({"data.img_size": 30}, "data.img_size"),  # not a multiple of patch 8
    ({"train.epochs": "ten"}, "train.epochs"),
    ({"train.bogus": 1}, "train.bogus"),
    ({"colour": "red"}, "colour"),
    ({"data.train": "/nonexistent/train"}, "data.train"),
    ({"teacher.checkpoint": "/nonexistent/teacher.pt"}, "teacher.checkpoint"),
    ({"distillation.type": "medium"}, "distillation.type"),
    ({"student.model": "vit_tiny_patch16_224"}, "student.model"),
    ({"teacher.model": "resnet50"}, "teacher.model"),
    ({"train.mixed_precision": "fp8"}, "train.mixed_precision"),
    ({"distillation.tau": 0}, "distillation.tau"),
    ({"train.lr": -1}, "train.lr"),
    ({"resources.processes": 0}, "resources.processes"),
    ({"train.ema": "yes"}, "train.ema"),
    ({"kind": "student"}, "kind"),
    ({"data.crop_pct": 0}, "data.crop_pct"),
    ({"data.crop_pct": 1.2}, "data.crop_pct"),
    ({"data.crop_pct": "wide"}, "data.crop_pct"),
    ({"distillation.kl_reduction": "sum"}, "distillation.kl_reduction"),
])
def test_bad_values_name_the_field(small_digits, override, field):
    raw = with_overrides(distill_config(small_digits, str(small_digits)), override)
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert e.value.field == field
    assert field in str(e.value)


@pytest.mark.parametrize("crop_pct", [1, 1.0, 0.5])
def test_crop_pct_accepts_the_whole_range(small_digits, crop_pct):
    cfg = parse_config(with_overrides(distill_config(small_digits, str(small_digits)), {"data.crop_pct": crop_pct}))
    assert cfg.data.crop_pct == crop_pct and cfg.to_dict()["data"]["crop_pct"] == crop_pct


def test_distill_without_teacher_checkpoint_is_refused(small_digits):
    with pytest.raises(ConfigError) as e:
        parse_config(distill_config(small_digits, None))
    assert e.value.field == "teacher.checkpoint"
    parse_config(distill_config(small_digits, None, dtype="none"))  # no teacher needed


def test_service_mode_skips_paths_but_not_values():
    raw = distill_config(__import__("pathlib").Path("/not/here"), 12)
    assert parse_config(raw, check_paths=False).teacher.checkpoint == 12
    with pytest.raises(ConfigError, match="train.batch_size"):
        parse_config(with_overrides(raw, {"train.batch_size": 0}), check_paths=False)


def test_randaugment_at_top_magnitude_survives_every_op():
    """Pillow 13 refuses posterize(0 bits), which RandAugment m10 asks for: our transform must not crash."""
    from PIL import Image

    from deit_core.config import TrainConfig
    from deit_core.data import train_transform

    tf = train_transform(32, TrainConfig(aa="rand-m10-n4-mstd0-inc1", reprob=0.25))
    img = Image.new("RGB", (32, 32), (120, 30, 200))
    for _ in range(200):
        assert tf(img).shape == (3, 32, 32)


def test_padded_crop_is_the_small_image_crop(small_digits):
    """Issue 22: the reference's RandomCrop(32, padding=4) as a recipe option, refused above 32 px."""
    import torch
    from torchvision import transforms as T

    from deit_core.config import TrainConfig
    from deit_core.data import image_folder, train_transform

    cfg = parse_config(with_overrides(teacher_config(small_digits), {"train.crop": "padded"}))
    assert cfg.train.crop == "padded" and cfg.data.img_size == 32
    big = with_overrides(teacher_config(small_digits), {"train.crop": "padded", "data.img_size": 64})
    with pytest.raises(ConfigError) as err:
        parse_config(big)
    assert err.value.field == "train.crop" and "64" in str(err.value)
    tf = train_transform(32, TrainConfig(crop="padded", aa=None, reprob=0.0))
    crop = tf.transforms[0].transforms[-1]
    assert isinstance(crop, T.RandomCrop) and crop.padding == 4
    ds = image_folder(str(small_digits / "train"), "data.train")
    img = ds[0][0]
    torch.manual_seed(0)
    padded = tf(img)
    torch.manual_seed(0)
    resized = train_transform(32, TrainConfig(aa=None, reprob=0.0))(img)
    assert padded.shape == resized.shape == (3, 32, 32) and not torch.equal(padded, resized)


def test_every_problem_of_a_config_at_once():
    """Three wrong keys in three sections: one ConfigErrors naming each, with the close key or value."""
    raw = teacher_config("/data")
    raw["train"] = {**raw["train"], "epochz": 3, "lr": -1}
    raw["resources"] = {"procs": 2}
    raw["dat"] = {}
    with pytest.raises(ConfigErrors) as e:
        parse_config(raw, check_paths=False)
    got = {x.field: x.message for x in e.value.errors}
    assert got["train.epochz"] == "unknown key; did you mean epochs?"
    assert got["train.lr"].startswith("must be > 0")
    assert got["resources.procs"].startswith("unknown key; did you mean processes")
    assert got["dat"] == "unknown key; did you mean data?"
    assert (e.value.field, e.value.message) == (e.value.errors[0].field, e.value.errors[0].message)
    assert isinstance(e.value, ConfigError)  # callers that read one error still can


def test_enum_typo_says_did_you_mean():
    raw = distill_config("/data", "timm")
    raw["distillation"] = {"type": "sfot"}
    with pytest.raises(ConfigError) as e:
        parse_config(raw, check_paths=False)
    assert e.value.field == "distillation.type"
    assert e.value.message.endswith("did you mean soft?")


@pytest.mark.parametrize("aa, complaint", [
    ("rand-m9-mstd0.5-incl", "ignore section 'incl'"),  # timm's parser skips it without a word
    ("rand-m9-foo3", "Unknown RandAugment config section"),
    ("original-bogus7", "refused"),
])
def test_aa_is_parsed_by_timm_at_submission(aa, complaint):
    raw = teacher_config("/data")
    raw["train"] = {**raw["train"], "aa": aa}
    with pytest.raises(ConfigError) as e:
        parse_config(raw, check_paths=False)
    assert e.value.field == "train.aa"
    assert complaint in e.value.message


@pytest.mark.parametrize("aa", ["rand-m9-mstd0.5-inc1", "augmix-m5-w3", "original-mstd0.5", "v0", "", "0", None])
def test_aa_timm_accepts(aa):
    raw = teacher_config("/data")
    raw["train"] = {**raw["train"], "aa": aa}
    assert parse_config(raw, check_paths=False).train.aa == aa
