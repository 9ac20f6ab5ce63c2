"""The teacher-output cache, end to end through the real entry point: a student trained from a cache
ends with the very weights of the same student trained with the live teacher (one process, and two
under real torchrun with gloo); a key mismatch and the size cap fall back to the live teacher, saying why.

The runs use DeiT's full augmentation (RandAugment, random erasing, mixup and cutmix), so equal
weights mean the teacher_outputs job saw exactly the students' mixed crops, batch by batch.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from deit_core.config import TrainConfig
from tests.conftest import PY, ROOT, distill_config, run_cli

# the DeiT augmentation on a tiny budget: 200 images of 32 px, batches of 16
AUGMENTED = {"aa": TrainConfig.aa, "mixup": 0.8, "cutmix": 1.0, "reprob": 0.25, "hflip": 0.5, "drop_path": 0.1}


def events(run: Path, kind: str | None = None) -> list[dict]:
    ev = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e for e in ev if kind is None or e["event"] == kind]


def cache_events(run: Path) -> list[dict]:
    return events(run, "teacher_cache")


def train(cfg: dict, out: Path, store: Path | None = None, processes: int = 1, *extra: str) -> None:
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    args = ["-m", "deit_core.train", "--config", str(path), "--output", str(out), *extra]
    if store is not None:
        args += ["--teacher-cache-dir", str(store)]
    if processes == 1:
        r = run_cli(*args)
    else:
        r = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args],
                           cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]


def student(data: Path, teacher: Path, dtype: str, epochs: int, **distillation) -> dict:
    cfg = distill_config(data, str(teacher), dtype, epochs=epochs, **AUGMENTED)
    cfg["distillation"].update(distillation)
    return cfg


def teacher_outputs(data: Path, teacher: Path, dtype: str, epochs: int, **distillation) -> dict:
    cfg = student(data, teacher, dtype, epochs, **distillation)
    del cfg["student"]
    return {**cfg, "kind": "teacher_outputs"}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "final/model.safetensors")), load_file(str(b / "final/model.safetensors"))
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"weights differ between the live-teacher and the cached run: {differ[:5]}"


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory) -> Path:
    """A RegNetY-002 with random (seeded) weights: the cache must be exact for any teacher."""
    import timm

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("regnety_002", num_classes=10).state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def soft_fp32_cache(small_digits, teacher_weights, tmp_path_factory) -> tuple[Path, Path]:
    """A teacher_outputs run (one process, soft, fp32 logits, 2 epochs): (its run dir, the store)."""
    d = tmp_path_factory.mktemp("outputs")
    store = d / "store"
    train(teacher_outputs(small_digits, teacher_weights, "soft", 2, teacher_cache_store="fp32"), d / "run", store)
    return d / "run", store


@pytest.mark.slow
def test_soft_student_from_fp32_cache_equals_live_teacher_run(small_digits, teacher_weights, soft_fp32_cache, tmp_path):
    run, store = soft_fp32_cache
    written = [e for e in cache_events(run) if e["status"] == "written"]
    assert len(written) == 1 and written[0]["store"] == "fp32" and written[0]["epochs"] == 2
    cache = Path(written[0]["path"])
    manifest = json.loads((cache / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["e0000-r000.pt", "e0001-r000.pt", "val-r000.pt"]
    assert manifest["bytes"] == written[0]["bytes"] == sum(f.stat().st_size for f in cache.iterdir() if f.name != "manifest.json")
    # published whole: no partial folder left (beside it only the dataset-fingerprint memo, a dot file)
    assert [p.name for p in store.iterdir() if not p.name.startswith(".")] == [cache.name]
    assert 0.8 <= manifest["estimate_bytes"] / manifest["bytes"] <= 1.25

    # the live teacher, in a run that may not write its own cache: the cap refuses it before any batch
    live = tmp_path / "live"
    empty = tmp_path / "empty-store"
    train(student(small_digits, teacher_weights, "soft", 2), live, empty, 1, "--teacher-cache-max-bytes", "1000")
    status = [e["status"] for e in cache_events(live)]
    assert status == ["miss", "refused"], cache_events(live)
    assert "over the cap" in cache_events(live)[1]["reason"] and cache_events(live)[1]["estimate_bytes"] > 1000
    assert not empty.exists() or not [p for p in empty.iterdir() if not p.name.startswith(".")]  # no cache (the memo may be)

    cached = tmp_path / "cached"
    train(student(small_digits, teacher_weights, "soft", 2), cached, store)
    ev = cache_events(cached)
    assert [e["status"] for e in ev] == ["hit", "read"] and ev[0]["name"] == cache.name
    steps = events(cached, "start")[0]["steps_per_epoch"]
    assert ev[1]["cached_batches"] == 2 * steps and ev[1]["live_batches"] == 0
    assert_same_weights(live, cached)
    done_live, done_cached = events(live, "done")[0], events(cached, "done")[0]
    for key in ("teacher_top1", "val_agreement", "val_top1", "loss"):
        assert done_live[key] == done_cached[key], key


@pytest.mark.slow
def test_two_process_hard_student_from_argmax_cache_and_a_key_mismatch(small_digits, teacher_weights, soft_fp32_cache,
                                                                         tmp_path):
    store = tmp_path / "store"
    train(teacher_outputs(small_digits, teacher_weights, "hard", 1), tmp_path / "outputs", store, 2)
    written = [e for e in cache_events(tmp_path / "outputs") if e["status"] == "written"]
    assert len(written) == 1 and written[0]["store"] == "argmax"
    assert sorted(json.loads((Path(written[0]["path"]) / "manifest.json").read_text())["files"]) == [
        "e0000-r000.pt", "e0000-r001.pt", "val-r000.pt", "val-r001.pt"]

    # named reuse of the one-process cache by a two-process student: its key differs (world size): a miss, run live
    one_process_cache = Path([e for e in cache_events(soft_fp32_cache[0]) if e["status"] == "written"][0]["path"])
    live = tmp_path / "live"
    train(student(small_digits, teacher_weights, "hard", 1, teacher_cache=str(one_process_cache)), live, None, 2)
    ev = cache_events(live)
    assert [e["status"] for e in ev] == ["miss"] and "resources.processes" in ev[0]["reason"], ev
    assert "miss" in (live / "train.log").read_text()

    cached = tmp_path / "cached"
    train(student(small_digits, teacher_weights, "hard", 1), cached, store, 2)
    ev = cache_events(cached)
    assert [e["status"] for e in ev] == ["hit", "read"] and ev[1]["live_batches"] == 0
    assert_same_weights(live, cached)
    sums = events(cached, "done")[0]["rank_weight_checksums"]
    assert sums == events(live, "done")[0]["rank_weight_checksums"] and sums[0] == sums[1]


# ------------------------------------------------------------------------------ the key and the config
def parsed(cfg: dict):
    from deit_core.config import parse_config

    return parse_config(cfg, check_paths=False)


def test_key_ignores_student_settings_and_names_what_differs(small_digits, teacher_weights):
    from deit_core.teacher_cache.key import differing, key_digest, key_fields

    base = student(small_digits, teacher_weights, "hard", 1)
    other_student = student(small_digits, teacher_weights, "soft", 3, alpha=0.9, tau=3.0)
    other_student["student"] = {"model": "deit_small_distilled_patch16_224", "patch_size": 8}
    other_student["train"] = {**other_student["train"], "lr": 0.01, "weight_decay": 0.1, "drop_path": 0.3}
    fields = key_fields(parsed(base), 1, "cpu", "no")
    assert key_digest(fields) == key_digest(key_fields(parsed(other_student), 1, "cpu", "no"))  # a sweep shares one cache

    for section, key, value in (("train", "seed", 1), ("train", "mixup", 0.5), ("train", "batch_size", 8)):
        changed = json.loads(json.dumps(base))
        changed[section][key] = value
        assert differing(fields, key_fields(parsed(changed), 1, "cpu", "no")) == [f"{section}.{key}"]
    assert differing(fields, key_fields(parsed(base), 2, "cpu", "no")) == ["resources.processes"]


@pytest.mark.parametrize("change, field", [
    ({"distillation": {"type": "soft", "teacher_cache_store": "argmax"}}, "distillation.teacher_cache_store"),
    ({"distillation": {"type": "hard", "teacher_cache_store": "fp8"}}, "distillation.teacher_cache_store"),
    ({"distillation": {"type": "hard", "teacher_cache_topk": 0}}, "distillation.teacher_cache_topk"),
    ({"distillation": {"type": "hard", "teacher_cache": "no/such/cache"}}, "distillation.teacher_cache"),
    ({"kind": "teacher_outputs", "distillation": {"type": "none"}}, "distillation.type"),
    ({"kind": "teacher_outputs", "student": {"model": "deit_tiny_distilled_patch16_224"}}, "student"),
])
def test_cache_settings_are_checked_naming_the_field(small_digits, teacher_weights, change, field):
    from deit_core.config import ConfigError, parse_config

    cfg = student(small_digits, teacher_weights, "hard", 1)
    if change.get("kind") == "teacher_outputs":
        del cfg["student"]
    cfg.update(change)
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert e.value.field == field


def test_key_covers_the_transform_code_version(small_digits, teacher_weights, monkeypatch):
    """An edit to the augmentation code must miss: its version is a key field, and the version
    follows the source of the transform and batch code the cached batches come from."""
    from deit_core import batches, data
    from deit_core.teacher_cache.key import TRANSFORM_FIELD, differing, key_digest, key_fields, transform_code_version

    cfg = parsed(student(small_digits, teacher_weights, "hard", 1))
    v1, v2 = key_fields(cfg, 1, "cpu", "no", "v1"), key_fields(cfg, 1, "cpu", "no", "v2")
    assert key_digest(v1) != key_digest(v2) and differing(v1, v2) == [TRANSFORM_FIELD]
    version = transform_code_version()
    assert key_fields(cfg, 1, "cpu", "no")[TRANSFORM_FIELD] == version == transform_code_version()

    def train_transform(img_size, t, mean=data.IMAGENET_MEAN, std=data.IMAGENET_STD):  # an edited transform
        return None

    monkeypatch.setattr(data, "train_transform", train_transform)
    edited = transform_code_version()
    assert edited != version
    monkeypatch.setattr(batches, "seed_epoch", lambda t, epoch, rank: None)
    assert transform_code_version() not in (version, edited)
    monkeypatch.undo()
    assert transform_code_version() == version


# ------------------------------------------------------------------------------ codecs and the manifest
def test_each_codec_round_trips_its_form_in_the_bytes_it_estimates():
    from deit_core.teacher_cache.codecs import CODECS
    from deit_core.teacher_cache.store import row_bytes

    torch.manual_seed(0)
    logits = torch.randn(6, 10) * 4
    rows = slice(1, 5)
    decoded = {}
    for name, codec in CODECS.items():
        stored = codec.encode(logits, codec.stored_topk(3), torch.int16)
        payload = sum(t[0].numel() * t.element_size() for t in stored.values())
        assert row_bytes(name, 10, 3) == 8 + 2 + 2 + payload, name
        decoded[name] = codec.decode(stored, rows, 10, torch.device("cpu"))
    assert decoded["argmax"] is None
    assert torch.equal(decoded["fp32"], logits[rows])
    assert torch.equal(decoded["fp16"], logits[rows].half().float())
    top = logits[rows].topk(3, dim=1)
    assert torch.equal(decoded["topk"].gather(1, top.indices), top.values.half().float())
    others = torch.ones_like(logits[rows], dtype=torch.bool).scatter_(1, top.indices, False)
    rest = ((logits[rows].sum(1) - top.values.sum(1)) / 7).half().float()
    assert torch.equal(decoded["topk"][others].reshape(4, 7), rest[:, None].expand(4, 7))


@pytest.mark.parametrize("distillation, stored, why", [
    ({"type": "hard"}, {"store": "argmax"}, None),
    ({"type": "hard"}, {"store": "topk", "topk": 5}, None),
    ({"type": "soft"}, {"store": "fp32"}, None),
    ({"type": "soft"}, {"store": "argmax"}, "soft distillation reads fp16 or fp32 logits"),
    ({"type": "soft"}, {"store": "topk", "topk": 5}, "name topk explicitly"),
    ({"type": "soft", "teacher_cache_store": "topk", "teacher_cache_topk": 5}, {"store": "topk", "topk": 5}, None),
    ({"type": "soft", "teacher_cache_store": "topk", "teacher_cache_topk": 5}, {"store": "topk", "topk": 10}, "top 10"),
    ({"type": "hard", "teacher_cache_store": "fp16"}, {"store": "fp32"}, "asks for fp16"),
    ({"type": "hard"}, {"store": "bf8"}, "no stored form"),
])
def test_a_stored_form_serves_only_the_losses_it_can(distillation, stored, why):
    from deit_core.teacher_cache.codecs import accepts

    got = accepts(distillation, stored)
    assert got is None if why is None else why in got


def test_manifest_round_trips_and_a_broken_one_is_a_miss(tmp_path):
    from deit_core.teacher_cache.key import CACHE_FORMAT
    from deit_core.teacher_cache.manifest import MANIFEST, FileRecord, Manifest, Miss

    m = Manifest(format=CACHE_FORMAT, key="k" * 64, key_fields={"train.seed": 0}, name="kkk-fp16-2ep", store="fp16",
                 topk=None, epochs=2, world_size=1, batch_size=16, steps_per_epoch=10, num_classes=10,
                 estimate_bytes=1234, files={"e0000-r000.pt": FileRecord(bytes=5, sha256="0" * 64)}, bytes=5)
    m.write(tmp_path)
    assert Manifest.read(tmp_path) == m
    assert json.loads((tmp_path / MANIFEST).read_text())["files"] == {"e0000-r000.pt": {"bytes": 5, "sha256": "0" * 64}}
    raw = m.to_json()
    del raw["epochs"]
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(Miss, match="lacks epochs"):
        Manifest.read(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({**m.to_json(), "format": CACHE_FORMAT + 1}))
    with pytest.raises(Miss, match="not a teacher-output cache"):
        Manifest.read(tmp_path)
    with pytest.raises(Miss, match="no readable"):
        Manifest.read(tmp_path / "absent")
