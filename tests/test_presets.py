"""Presets and config warnings (deit_core.presets, deit_core.config_warnings) and how the service
applies and answers them: ``preset`` in a POST /jobs body (the user's keys win, an unknown name is a
400 naming ``preset``), ``warnings`` in the 201, ``GET /presets`` and ``POST /warnings``. The service
part runs the real Flask app on a migrated SQLite file with the embedded filesystem broker and the
digits dataset (1,437 training images) registered through the API: no worker, no training."""
from __future__ import annotations

from pathlib import Path

import pytest

from deit_core.config import parse_config
from deit_core.config_warnings import DataFacts, config_warnings
from deit_core.data import write_digits_resplit
from deit_core.presets import PRESET_NAMES, PRESETS, SMALL_DATA, UnknownPreset, apply_preset, preset_for_size

DIGITS = DataFacts(num_train=1437, name="digits")


def fields(warnings: list[dict]) -> list[str]:
    return [w["field"] for w in warnings]


# ---------------------------------------------------------------------------------------------- pure

def test_a_preset_goes_under_the_users_keys_and_only_into_the_kinds_sections():
    raw = {"kind": "teacher", "data": {"train": "t", "val": "v", "img_size": 64}, "train": {"epochs": 7}}
    out = apply_preset("small-data", raw, "teacher")
    assert out["data"] == {"train": "t", "val": "v", "img_size": 64, "crop_pct": 1.0}  # explicit img_size wins
    assert out["train"]["epochs"] == 7 and out["train"]["mixup"] == 0 and out["train"]["hflip"] == 0
    assert "student" not in out and "distillation" not in out  # a teacher job takes neither
    assert raw == {"kind": "teacher", "data": {"train": "t", "val": "v", "img_size": 64}, "train": {"epochs": 7}}
    distill = apply_preset("small-data", {"kind": "distill", "data": {"train": "t", "val": "v"},
                                          "distillation": {"alpha": 0.5}, "teacher": {"checkpoint": "timm"}})
    assert distill["distillation"] == {"alpha": 0.5, "type": "soft", "tau": 4.0, "kl_reduction": "deit"}
    assert distill["student"] == {"patch_size": 8}
    assert parse_config(distill, check_paths=False).distillation.type == "soft"  # what it fills is valid


def test_the_imagenet_preset_is_the_schemas_defaults_and_sizes_pick_presets():
    cfg = parse_config({"kind": "distill", "data": {"train": "t", "val": "v"}, "teacher": {"checkpoint": "timm"}},
                       check_paths=False).to_dict()
    for dotted, value in PRESETS["imagenet"].values.items():
        section, key = dotted.split(".")
        assert cfg[section][key] == value, dotted
    assert [preset_for_size(n) for n in (1437, 10_000, 50_000, 1_281_167, None)] == [
        SMALL_DATA, PRESETS["medium-data"], PRESETS["medium-data"], PRESETS["imagenet"], None]


def test_an_unknown_preset_names_the_choices():
    with pytest.raises(UnknownPreset, match="one of " + ", ".join(PRESET_NAMES)):
        apply_preset("tiny", {})


def test_the_deit_recipe_on_1437_digits_warns_and_the_small_data_preset_does_not():
    raw = {"kind": "distill", "data": {"train": "t", "val": "v"}}
    warned = config_warnings(raw, DIGITS)
    assert fields(warned) == ["data.img_size", "train.mixup", "train.aa", "train.hflip", "train.epochs"]
    assert "Mixup/CutMix on 1437 training images" in warned[1]["message"]
    assert "a mirrored 2 is not a 2" in warned[3]["message"]
    assert config_warnings(apply_preset("small-data", raw), DIGITS) == []
    assert config_warnings(raw, DataFacts()) == []  # nothing known of the data: nothing said
    assert fields(config_warnings(raw, DataFacts(num_train=50_000, name="flowers"))) == []  # right for larger data


def test_cutmix_alone_a_null_aa_and_a_batch_too_big_for_the_data():
    raw = {"data": {"img_size": 32}, "train": {"mixup": 0, "cutmix": 1.0, "aa": None, "epochs": 30, "hflip": 0,
                                               "batch_size": 128}, "resources": {"processes": 2}}
    warned = config_warnings(raw, DataFacts(num_train=900, name="cells"))
    assert fields(warned) == ["train.cutmix", "train.batch_size"]
    assert "A global batch of 256 leaves only 3 step(s) per epoch on 900 images" in warned[1]["message"]


def test_the_digits_resplit_is_stratified_disjoint_and_reproducible(tmp_path):
    counts = write_digits_resplit(tmp_path / "a", train_per_class=40, img_size=16, seed=0)
    assert counts == {"train": 400, "heldout": 1397}
    train = {p.name for p in (tmp_path / "a" / "train").rglob("*.png")}
    held = {p.name for p in (tmp_path / "a" / "heldout").rglob("*.png")}
    assert not train & held and len(train) == 400 and len(held) == 1397
    assert all(len(list(d.iterdir())) == 40 for d in (tmp_path / "a" / "train").iterdir())
    write_digits_resplit(tmp_path / "b", train_per_class=40, img_size=16, seed=0)
    assert train == {p.name for p in (tmp_path / "b" / "train").rglob("*.png")}
    with pytest.raises(ValueError, match="train_per_class"):
        write_digits_resplit(tmp_path / "c", train_per_class=200, img_size=16)


# ------------------------------------------------------------------------------------------ service

@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    from deit_core.data import write_digits_imagefolder

    root = tmp_path_factory.mktemp("presets_data")
    write_digits_imagefolder(root / "digits", img_size=16)  # 1,437 train / 360 val
    return root


@pytest.fixture
def api(request, tmp_path, digits, make_app):
    """(test client, bearer headers) of the real app, the digits registered as dataset 'digits'."""
    from server.auth import create_token

    app = make_app(tmp_path, data_roots=(str(digits),))
    with app.app_context():
        token = create_token(app.extensions["distillery.db"].scoped(), "ada")
    client = app.test_client()
    h = {"Authorization": f"Bearer {token}"}
    r = client.post("/api/v1/datasets", json={"name": "digits", "path": str(digits / "digits")}, headers=h)
    assert r.status_code == 201, r.get_json()
    request.node.app = app  # (for the test that records a finished teacher directly)
    return client, h


def teacher_body(**extra) -> dict:
    return {"kind": "teacher", "name": "t", "config": {"data": {"train": "dataset:digits/train", "val": "dataset:digits/val"},
                                                      "teacher": {"model": "regnety_002"}}, **extra}


def test_post_jobs_with_the_preset_applies_it_under_explicit_keys_without_warnings(api):
    client, h = api
    body = teacher_body(preset="small-data")
    body["config"]["train"] = {"epochs": 3}
    r = client.post("/api/v1/jobs", json=body, headers=h)
    assert r.status_code == 201, r.get_json()
    job = r.get_json()
    assert job["warnings"] == []
    assert job["config"]["train"]["epochs"] == 3 and job["config"]["train"]["mixup"] == 0  # explicit wins, preset fills
    assert job["config"]["data"]["img_size"] == 32 and job["config"]["train"]["aa"] in ("", None)


def test_post_jobs_without_a_preset_on_1437_images_answers_warnings(api):
    client, h = api
    r = client.post("/api/v1/jobs", json=teacher_body(), headers=h)
    assert r.status_code == 201, r.get_json()
    warned = r.get_json()["warnings"]
    assert fields(warned) == ["data.img_size", "train.mixup", "train.aa", "train.hflip", "train.epochs"]
    assert all(w["message"] for w in warned)


def test_an_unknown_preset_is_a_400_naming_preset_with_the_choices(api):
    client, h = api
    r = client.post("/api/v1/jobs", json=teacher_body(preset="tiny"), headers=h)
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err["field"] == "preset" and "small-data" in err["message"] and "imagenet" in err["message"]


def test_a_preset_never_contradicts_the_teacher_checkpoint_it_distills_from(api, request):
    """A teacher trained at 64 px, named by artifact id: the preset's 32 px would contradict it, so what the
    checkpoint says comes before the preset (and the user's own keys before both)."""
    from server.models import Artifact, Job, User

    client, h = api
    app = request.node.app
    s = app.extensions["distillery.db"].scoped()
    ada = s.query(User).filter_by(name="ada").one()
    teacher = Job(kind="teacher", name="t64", owner_id=ada.id, state="succeeded", attempt=1, progress={}, metrics={},
                  attempt_history=[], config={"data": {"img_size": 64}})
    s.add(teacher)
    s.flush()
    art = Artifact(job_id=teacher.id, kind="checkpoint", format="checkpoint", path="/nowhere", size=1, sha256="0" * 64,
                   meta={"architecture": "regnety_002", "config_json": {"img_size": 64}})
    s.add(art)
    s.commit()
    body = {"kind": "distill", "name": "d", "preset": "small-data",
            "config": {"data": {"train": "dataset:digits/train", "val": "dataset:digits/val"},
                       "teacher": {"checkpoint": art.id}}}
    r = client.post("/api/v1/jobs", json=body, headers=h)
    assert r.status_code == 201, r.get_json()
    cfg = r.get_json()["config"]
    assert cfg["data"]["img_size"] == 64 and cfg["student"]["patch_size"] == 8 and cfg["train"]["mixup"] == 0
    assert cfg["teacher"]["model"] == "regnety_002" and cfg["distillation"]["type"] == "soft"
    body["config"]["data"]["img_size"] = 32  # the user's own key still meets the checkpoint's check
    r = client.post("/api/v1/jobs", json=body, headers=h)
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "config.data.img_size"


def test_presets_and_warnings_endpoints_serve_the_same_source(api):
    client, h = api
    presets = client.get("/api/v1/presets", headers=h).get_json()["presets"]
    assert [p["name"] for p in presets] == list(PRESET_NAMES) and presets[0]["values"] == dict(SMALL_DATA.values)
    cfg = teacher_body()["config"]
    r = client.post("/api/v1/warnings", json={"kind": "teacher", "config": cfg}, headers=h)
    assert fields(r.get_json()["warnings"])[:2] == ["data.img_size", "train.mixup"]
    r = client.post("/api/v1/warnings", json={"kind": "teacher", "config": cfg, "preset": "small-data"}, headers=h)
    assert r.get_json()["warnings"] == []
    # A folder the caller may not use is not looked at (nothing is said of it).
    outside = {**cfg, "data": {"train": "/etc", "val": "/etc"}}
    assert client.post("/api/v1/warnings", json={"config": outside}, headers=h).get_json()["warnings"] == []


def test_the_demos_body_is_accepted_with_the_small_data_preset_and_no_warnings(api, digits):
    """server/demo.py's one body (seeds aside: issue 18's replicate seeds come from another branch) on
    the demo's re-split (400 training images): teacher -> distill pipeline with a baseline, soft
    alpha 0.9 tau 4, explicit keys over the preset, and nothing looks wrong for the data."""
    from server.demo import DemoSetting

    client, h = api
    s = DemoSetting()
    root = digits / "demo_data"  # inside the server's data root
    write_digits_resplit(root, train_per_class=s.train_per_class, img_size=s.img_size, heldout_name="val")
    r = client.post("/api/v1/datasets", json={"name": s.dataset, "path": str(root)}, headers=h)
    assert r.status_code == 201 and r.get_json()["num_train"] == 400 and r.get_json()["num_val"] == 1397
    body = {k: v for k, v in s.body().items() if k != "seeds"}
    r = client.post("/api/v1/jobs", json=body, headers=h)
    assert r.status_code == 201, r.get_json()
    job = r.get_json()
    assert job["warnings"] == [] and len(job["pipeline"]) == 2 and job["baseline"]["job_id"]
    assert job["config"]["distillation"] | {"type": "soft", "alpha": 0.9, "tau": 4.0} == job["config"]["distillation"]
    assert job["config"]["train"]["epochs"] == 40 and job["config"]["train"]["mixup"] == 0  # explicit + preset
    assert job["config"]["train"]["hflip"] == 0 and job["config"]["teacher"]["model"] == "regnety_016"


def test_the_demos_progress_line_fits_80_columns_and_its_results_keep_the_interval():
    from distillery.card_text import ship_card_text
    from server import demo

    def job(i, kind="distill", state="running", baseline_of=None, epoch=12):
        return {"id": i, "kind": kind, "state": state, "baseline_of": baseline_of, "top1": 97.7,
                "progress": {"epoch": epoch, "epochs": 40, "fraction": 0.3}}

    jobs = [job(1, "teacher", "succeeded"), job(2, state="succeeded"), job(3), job(4, state="queued"),
            job(5, state="succeeded", baseline_of=2), job(6, state="failed", baseline_of=3), job(7, "distill", "queued", 4)]
    line = demo.status(jobs)
    assert line == "teacher 97.7% | student 1/3 ep 12/40 | baseline 1/3 failed #6"
    assert len(f"[demo] 99:59 {line}") < demo.WIDTH
    base = {"gain": 7.3, "gain_ci95": [1.0, 13.6], "ci_over": "seeds", "seeds": 3, "significant": True,
            "verdict": "significant", "per_seed": [{"seed": 0, "gain": 8.1, "gain_ci95": [5.9, 10.3], "mcnemar_p": 1e-9,
                                                    "n_images": 1397, "student_job": 2, "baseline_job": 5}]}
    lines = demo.gain_lines(base)
    assert lines[0] == ("gain over the same student alone, 3 seed(s): +7.3 pt (95% CI +1.0 to +13.6, across seeds); "
                        "significant: yes")
    assert "seed 0: +8.1 pt (+5.9 to +10.3)" in lines[2]
    assert demo.gain_lines({"gain": 0.3, "gain_ci95": None, "pending": "waiting for 3 of 6 runs"}) == [
        "gain not measured: waiting for 3 of 6 runs"]  # never a gain without its interval
    card = {"rows": [{"role": "teacher", "model": "regnety_016", "params_m": 10.3, "top1": 97.7, "top1_ci95": [96.8, 98.4],
                      "latency_ms": {"p50": 4.1, "p10": 4.0, "p90": 4.4, "runs": 20, "threads": 1}, "size_bytes": 11_000_000},
                     {"role": "student", "model": "deit_tiny_distilled_patch16_224", "params_m": 5.4, "top1": 90.0,
                      "top1_ci95": [88.3, 91.5], "latency_ms": None, "size_bytes": None}],
            "cpu": {"model": "Xeon", "isa": ["avx2"], "threads": 1}, "sentence": "the distilled student is ..."}
    out = ship_card_text(card).splitlines()  # the demo prints the table `distillery diff` prints
    assert out[0] == "the distilled student is ..." and "97.7 (96.8-98.4)" in out[2] and "deit_tiny " in out[3]
    assert out[-1].startswith("latency: batch 1 on Xeon")


def test_the_demos_progress_line_keeps_the_baselines_when_it_is_long():
    """Long phases and big ids: the line still fits 80 columns after its prefix, and every group keeps
    its label (cutting the joined line used to drop the baselines)."""
    from server import demo

    def job(i, state, phase=None, baseline_of=None, kind="distill"):
        return {"id": i, "kind": kind, "state": state, "baseline_of": baseline_of,
                "progress": {"phase": phase} if phase else {}}

    jobs = [job(123456, "running", "loading the teacher checkpoint", kind="teacher"),
            job(123457, "failed"), job(123458, "running", "building the teacher-output cache"),
            job(123459, "failed", baseline_of=123457), job(123460, "running", "starting processes", 123458)]
    prefix = "[demo] 123:59 "
    line = demo.status(jobs, demo.WIDTH - 1 - len(prefix))
    assert len(prefix + line) <= demo.WIDTH - 1
    assert [p.split()[0] for p in line.split(" | ")] == ["teacher", "student", "baseline"]
    assert "baseline 0/2 failed" in line


def test_the_demo_drops_torchs_native_quantize_deprecation_line_and_keeps_the_rest():
    """torch prints its int8-deprecation warning from C++ straight to file descriptor 2 when the
    teacher's .ptl runs; the demo's check drops that line only (issue 20: it was printed above the result)."""
    import subprocess
    import sys

    code = ("import os; from server.demo import native_stderr_without, QUANTIZE_DEPRECATED\n"
            "with native_stderr_without(QUANTIZE_DEPRECATED):\n"
            "    os.write(2, b'[W Quantizer.cpp:111] Warning: torch.quantize_per_tensor ... and other quantized tensor "
            "creation functions ... are deprecated\\n')\n"
            "    os.write(2, b'a real problem\\n')\n"
            "os.write(2, b'after\\n')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["a real problem", "after"]
