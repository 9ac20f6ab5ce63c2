"""benchmarks/peer_deit.py's pieces that decide what is compared: the patches it applies to the reference's
copy, how it reads the reference's epoch times, and that our side's config is a valid job. The benchmark
itself (minutes of training on both sides) is not run here."""
from __future__ import annotations

import pytest
from PIL import Image

from benchmarks.peer_deit import (
    BATCH,
    REFERENCE_PATCHES,
    Patch,
    apply_patches,
    cap_per_class,
    epoch_rate,
    our_config,
    reference_rates,
    summary,
)
from deit_core.config import parse_config


def _fixture(root, patches):
    """A tiny stand-in for the reference: each file holds every ``old`` text its patches look for, twice."""
    by_file: dict[str, str] = {}
    for p in patches:
        by_file[p.path] = by_file.get(p.path, "") + f"# before\n{p.old}\n# between\n{p.old}\n"
    for name, text in by_file.items():
        (root / name).write_text(text)


def test_every_reference_patch_replaces_all_its_occurrences(tmp_path):
    _fixture(tmp_path, REFERENCE_PATCHES)
    apply_patches(tmp_path)
    for p in REFERENCE_PATCHES:
        text = (tmp_path / p.path).read_text()
        assert text.count(p.new) >= 2, p.why
        assert p.old not in text.replace(p.new, ""), p.why


def test_a_patch_that_does_not_apply_names_the_file_and_the_reason(tmp_path):
    (tmp_path / "engine.py").write_text("print('changed upstream')\n")
    with pytest.raises(ValueError, match=r"engine\.py: patch 'needs cuda' does not apply"):
        apply_patches(tmp_path, (Patch("engine.py", "torch.cuda.synchronize()", "pass", "needs cuda"),))


def test_the_posterize_patch_keeps_one_bit_where_pillow_refuses_zero(monkeypatch):
    from timm.data import auto_augment

    from benchmarks.peer_deit import _SAFE_POSTERIZE

    img = Image.new("RGB", (8, 8), (200, 100, 50))
    monkeypatch.setitem(auto_augment.NAME_TO_OP, "PosterizeIncreasing", auto_augment.posterize)  # timm's own
    with pytest.raises(ValueError):
        auto_augment.NAME_TO_OP["PosterizeIncreasing"](img, 0)  # Pillow 13: the reason for the patch
    exec(compile(_SAFE_POSTERIZE, "datasets.py", "exec"), {})
    out = auto_augment.NAME_TO_OP["PosterizeIncreasing"](img, 0)
    assert out.getpixel((0, 0)) == (128, 0, 0)


def test_reference_rates_read_the_training_epochs_not_the_evaluation():
    log = ("Epoch: [0]  [ 0/22]  eta: 0:00:10  lr: 0.000001  loss: 2.1 (2.1)  time: 0.5000  data: 0.01\n"
           "Epoch: [0] Total time: 0:00:03 (0.1280 s / it)\n"
           "Test: Total time: 0:00:01 (0.0500 s / it)\n"
           "Epoch: [1] Total time: 0:00:03 (0.1600 s / it)\n")
    assert reference_rates(log, 2) == pytest.approx([BATCH / 0.128, BATCH / 0.16])
    with pytest.raises(RuntimeError, match="expected 3"):
        reference_rates(log, 3)


def test_epoch_rate_is_total_images_over_total_time_of_the_kept_epochs():
    assert epoch_rate([1.0, 100.0, 300.0], skip=1) == pytest.approx(150.0)


def test_our_side_is_a_valid_job_with_the_reference_recipe(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "0").mkdir(parents=True)
    teacher = tmp_path / "teacher.pth"
    teacher.write_bytes(b"")
    cfg = parse_config(our_config(tmp_path / "data", teacher, epochs=2))
    t = cfg.train
    assert (t.crop, t.repeated_aug, t.ema, t.workers, t.batch_size) == ("padded", False, False, 0, BATCH)
    assert cfg.student.effective_patch_size == 8 and cfg.distillation.type == "hard"
    assert t.log_every > 1437  # one step event per epoch, covering the whole epoch


def test_cap_per_class_keeps_the_first_images_of_each_class(tmp_path):
    for c in ("0", "1"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.new("RGB", (4, 4)).save(tmp_path / c / f"{i:04d}.png")
    cap_per_class(tmp_path, 2)
    assert sorted(p.name for p in (tmp_path / "0").iterdir()) == ["0000.png", "0001.png"]
    assert len(list((tmp_path / "1").iterdir())) == 2


def test_the_summary_gives_the_median_with_its_range_and_the_pairs_each_way():
    line = summary([1.09, 0.89, 1.19, 1.03, 1.08])
    assert "1.080 over 5 pairs" in line and "range 0.890-1.190" in line and "faster in 4 of 5" in line
