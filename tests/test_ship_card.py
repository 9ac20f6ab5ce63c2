"""server.ship_card: the rows and the one sentence, on crafted numbers (no database, no files)."""
from __future__ import annotations

import pytest

from server.ship_card import card_row, ship_card, top1_ci95

CPU = {"model": "Intel(R) Xeon(R) Platinum 8480+", "isa": ["avx2", "avx512f", "amx_tile"], "threads": 1, "torch": "2.14.1"}


def report(p50, p10, p90, size, fp32_bytes=22_000_000, images=360, cpu=CPU):
    return {"model": {"architecture": "deit_tiny_distilled_patch16_224", "fp32_weights_bytes": fp32_bytes},
            "val": {"images": images}, "cpu": cpu,
            "variants": {"ptl": {"top1": 70.0, "size_bytes": size,
                                 "latency_ms": {"p50": p50, "p10": p10, "p90": p90, "runs": 50, "threads": 1}}}}


TEACHER = card_row("teacher", 1, "regnety_160", 81.0, report(13.5, 13.0, 14.2, 21_450_000, fp32_bytes=83_600_000))
STUDENT = card_row("student", 2, None, 79.2, report(5.0, 4.8, 5.4, 5_500_000))
ALONE = card_row("baseline", 3, None, 77.6, report(5.1, 4.9, 5.5, 5_500_000))
SIGNIFICANT = {"job_id": 3, "state": "succeeded", "top1": 77.6, "gain": 1.6, "gain_ci95": [0.3, 2.9], "mcnemar_p": None,
               "n_images": 360, "significant": True, "ci_over": "seeds", "seeds": 3, "verdict": "significant: ...",
               "per_seed": [], "pending": None}
ONE_SEED_NOISE = {**SIGNIFICANT, "gain": 0.3, "gain_ci95": [-2.3, 2.8], "mcnemar_p": 1.0, "significant": False,
                  "ci_over": "images", "seeds": 1}


def test_the_issue_example_sentence():
    card = ship_card(TEACHER, STUDENT, ALONE, SIGNIFICANT)
    assert card["sentence"] == ("the distilled student is 3.9x smaller and 2.7x faster than its teacher, 1.8 pt below it, "
                                "and 1.6 pt (0.3 to 2.9) above the same student trained alone")
    assert [r["role"] for r in card["rows"]] == ["teacher", "student", "baseline"]
    assert card["cpu"] == CPU
    s = card["rows"][1]
    assert s["model"] == "deit_tiny_distilled_patch16_224" and s["params_m"] == 5.5 and s["file"] == "model.ptl"
    assert s["latency_ms"] == {"p50": 5.0, "p10": 4.8, "p90": 5.4, "runs": 50, "threads": 1}
    assert s["top1_ci95"][0] < 79.2 < s["top1_ci95"][1]


def test_not_significant_is_never_above():
    text = ship_card(TEACHER, STUDENT, ALONE, ONE_SEED_NOISE)["sentence"]
    assert "above the same student" not in text
    assert text.endswith("and no measurable difference from the same student trained alone (95% CI -2.3 to +2.8 pt)")


def test_one_seed_interval_excluding_zero_says_training_noise_not_measured():
    one = {**ONE_SEED_NOISE, "gain": 2.1, "gain_ci95": [0.4, 3.8]}
    text = ship_card(TEACHER, STUDENT, ALONE, one)["sentence"]
    assert "above" not in text.split("teacher,")[-1]
    assert "+2.1 pt (95% CI +0.4 to +3.8 pt) against the same student trained alone on these images, one seed: " \
           "training noise not measured" in text


def test_significant_loss_is_below():
    worse = {**SIGNIFICANT, "gain": -1.6, "gain_ci95": [-2.9, -0.3]}
    assert ship_card(TEACHER, STUDENT, ALONE, worse)["sentence"].endswith(
        "1.6 pt (0.3 to 2.9) below the same student trained alone")


def test_overlapping_spreads_are_the_same_speed_and_slower_is_slower():
    twin = card_row("teacher", 1, "deit_tiny", 80.0, report(5.2, 4.9, 5.6, 5_500_000))
    text = ship_card(twin, STUDENT, None, None)["sentence"]
    assert text == "the distilled student is the same size and the same speed as its teacher, 0.8 pt below it"
    fast = card_row("teacher", 1, "deit_tiny", 78.0, report(2.0, 1.9, 2.2, 2_000_000))
    assert ship_card(fast, STUDENT, None, None)["sentence"] == (
        "the distilled student is 2.8x larger and 2.5x slower than its teacher, 1.2 pt above it")


def test_latencies_from_different_cpus_are_not_compared():
    other = card_row("teacher", 1, "regnety_160", 81.0,
                     report(13.5, 13.0, 14.2, 21_450_000, cpu={**CPU, "isa": ["avx2"]}))
    assert ship_card(other, STUDENT, None, None)["sentence"] == (
        "the distilled student is 3.9x smaller than its teacher, 1.8 pt below it")


def test_old_baseline_shape_shows_the_numbers_and_no_claim():
    old = {"job_id": 3, "state": "succeeded", "top1": 77.6, "gain": 1.6}
    text = ship_card(TEACHER, STUDENT, ALONE, old)["sentence"]
    assert text.endswith("and 79.2% against 77.6% for the same student trained alone (interval not computed)")


def test_pending_baseline_and_missing_teacher():
    pending = {"job_id": 3, "state": "running", "top1": None, "gain": None, "pending": "waiting for 3 of 6 runs"}
    assert ship_card(None, STUDENT, None, pending)["sentence"] == (
        "the distilled student reaches 79.2% top-1; the same student trained alone: waiting for 3 of 6 runs")
    bare = card_row("student", 2, "deit_tiny", None, None)
    card = ship_card(None, bare, None, None)
    assert card["sentence"] == "the distilled student has no measured top-1 yet" and card["cpu"] is None
    assert bare["latency_ms"] is None and bare["size_bytes"] is None and bare["top1_ci95"] is None


def test_at_chance_student_is_nothing_to_ship():
    chance = {**STUDENT, "at_chance": True}
    assert "ended at chance" in ship_card(TEACHER, chance, ALONE, SIGNIFICANT)["sentence"]


def test_the_card_gives_what_int8_buys_the_ptl_in_its_runtime_and_against_fp32_eager():
    from deit_core import export_report, latency
    from distillery.card_text import ship_card_text

    rep = report(15.3, 15.0, 15.9, 5_500_000)
    fp32, fp32_ptl = {"p50": 23.4, "p10": 22.0, "p90": 25.0}, {"p50": 24.0, "p10": 23.5, "p90": 24.8}
    variants = {"fp32": {"latency_ms": fp32}, **rep["variants"]}
    rep["latency"] = {"int8_vs_fp32": export_report.latency_comparison(variants, fp32_ptl)}
    student = card_row("student", 2, None, 79.2, rep)
    assert student["int8_vs_fp32"] == {"same_runtime": latency.speedup(fp32_ptl, rep["variants"]["ptl"]["latency_ms"]),
                                       "vs_fp32_eager": latency.speedup(fp32, rep["variants"]["ptl"]["latency_ms"])}
    card = ship_card(TEACHER, student, None, None)
    assert card["cpu"]["torch"] == "2.14.1"
    text = ship_card_text(card).splitlines()
    assert ("latency: batch 1 on Intel(R) Xeon(R) Platinum 8480+ (avx2, avx512f, amx_tile), 1 thread, torch 2.14.1; "
            "spreads that overlap are the same speed") in text
    assert text[-1] == ("int8 .ptl vs fp32: distilled student 1.57x faster (1.48-1.65) than its fp32 .ptl, "
                        "1.53x faster (1.38-1.67) than fp32 eager")
    # a report from before the comparison was recorded: no speed-up claimed, no line
    assert TEACHER["int8_vs_fp32"] is None
    assert not [line for line in ship_card_text(ship_card(TEACHER, STUDENT, None, None)).splitlines() if "vs fp32" in line]


@pytest.mark.parametrize("top1, n, lo, hi", [(50.0, 100, 40.4, 59.6), (100.0, 360, 98.9, 100.0), (0.0, 10, 0.0, 27.8)])
def test_top1_interval_is_wilson(top1, n, lo, hi):
    assert top1_ci95(top1, n) == [lo, hi]
    assert top1_ci95(top1, None) is None


# ---------------------------------------------------------------------------------------------
# The job JSON's ship_card, from stored rows: a migrated SQLite file and report.json files on disk
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def db(sqlite_session):
    return sqlite_session


def _job(db, tmp_path, kind, top1, rep=None, **values):
    import json

    from server.models import Artifact, Job

    job = Job(kind=kind, name=kind, owner_id=1, state="succeeded", progress=values.pop("progress", {"num_classes": 10}),
              metrics={"val_top1": top1, **values.pop("metrics", {})}, **values)
    db.add(job)
    db.flush()
    if rep is not None:
        path = tmp_path / f"report-{job.id}.json"
        path.write_text(json.dumps(rep))
        db.add(Artifact(job_id=job.id, kind="report", format="report", path=str(path), size=1, sha256="0" * 64, meta={}))
    db.commit()
    return job


def test_distill_job_json_carries_the_card_from_stored_rows(db, tmp_path):
    from server.serializers import serialize_job

    teacher = _job(db, tmp_path, "teacher", 81.0, report(13.5, 13.0, 14.2, 21_450_000, fp32_bytes=83_600_000),
                   config={"teacher": {"model": "regnety_160"}})
    student = _job(db, tmp_path, "distill", 79.2, report(5.0, 4.8, 5.4, 5_500_000), parent_id=teacher.id,
                   config={"teacher": {"model": "regnety_160", "checkpoint": None}, "student": {"model": "deit_tiny"},
                           "distillation": {"type": "hard", "alpha": 0.5}},
                   metrics={"teacher_top1": 91.0, "teacher_train_top1": 80.0})
    twin = _job(db, tmp_path, "distill", 77.6, report(5.1, 4.9, 5.5, 5_500_000), baseline_of=student.id,
                config={"student": {"model": "deit_tiny"}, "distillation": {"type": "none"}})
    out = serialize_job(student)
    card = out["ship_card"]
    assert [(r["role"], r["job_id"]) for r in card["rows"]] == [("teacher", teacher.id), ("student", student.id),
                                                                  ("baseline", twin.id)]
    t = card["rows"][0]
    assert t["teacher_train_top1"] == 80.0 and t["teacher_val_top1"] == 91.0
    assert "right on only 80.0% of the student's training crops" in t["fitness_warning"]
    assert card["cpu"]["model"] == CPU["model"] and card["cpu"]["threads"] == 1
    # every run ended but worker.comparison has not stored the paired result yet: no claim, only what it waits for
    assert card["sentence"] == ("the distilled student is 3.9x smaller and 2.7x faster than its teacher, 1.8 pt below it, "
                                "and the same student trained alone: comparing the runs' predictions")
    student.comparison = {"gain": 1.6, "gain_ci95": [0.3, 2.9], "mcnemar_p": None, "n_images": 1397, "significant": True,
                          "ci_over": "seeds", "seeds": 3, "verdict": "significant", "per_seed": [], "pending": None}
    db.commit()
    assert serialize_job(student)["ship_card"]["sentence"] == (
        "the distilled student is 3.9x smaller and 2.7x faster than its teacher, 1.8 pt below it, "
        "and 1.6 pt (0.3 to 2.9) above the same student trained alone")
    assert serialize_job(twin)["ship_card"] is None and serialize_job(teacher)["ship_card"] is None
    assert "ship_card" not in serialize_job(student, with_config=False)


def test_teacher_named_by_checkpoint_artifact_and_no_report_yet(db, tmp_path):
    from server.models import Artifact
    from server.serializers import serialize_job

    teacher = _job(db, tmp_path, "teacher", 81.0, None, config={"teacher": {"model": "regnety_160"}})
    ckpt = Artifact(job_id=teacher.id, kind="checkpoint", format="checkpoint", path="/nowhere", size=1, sha256="0" * 64, meta={})
    db.add(ckpt)
    db.commit()
    student = _job(db, tmp_path, "distill", 79.2, None,
                   config={"teacher": {"model": "regnety_160", "checkpoint": ckpt.id}, "student": {"model": "deit_tiny"}})
    card = serialize_job(student)["ship_card"]
    assert card["rows"][0]["job_id"] == teacher.id and card["rows"][0]["latency_ms"] is None
    assert card["sentence"] == "the distilled student is 1.8 pt below its teacher" and card["cpu"] is None


def test_a_sweeps_card_is_its_teacher_and_the_latency_front():
    from server.ship_card import sweep_card

    def trial(job_id, number, top1, p50, p10, p90, size, at_chance=False):
        return {"job_id": job_id, "number": number, "top1": top1, "ptl_top1": top1, "params": {"student_model": "deit_tiny"},
                "latency_ms": p50, "latency": {"p50": p50, "p10": p10, "p90": p90, "runs": 50, "threads": 1},
                "size_bytes": size, "cpu": CPU, "at_chance": at_chance}
    summary = {"trials": [trial(17, 2, 79.2, 5.0, 4.8, 5.4, 5_500_000), trial(18, 3, 10.1, 4.0, 3.8, 4.2, 5_000_000, True),
                          trial(22, 7, 80.5, 13.2, 12.9, 14.0, 21_000_000)],
               "fronts": {"latency": [18, 17, 22], "size": [17]}}
    card = sweep_card(TEACHER, summary)
    assert [(r["role"], r["job_id"]) for r in card["rows"]] == [("teacher", 1), ("front", 18), ("front", 17), ("front", 22)]
    assert card["sentence"] == (
        "3 trials on the accuracy-latency front (same-speed differences ignored): trial 3 (job 18) ended at chance; "
        "trial 2 (job 17) is 3.9x smaller and 2.7x faster than its teacher, 1.8 pt below it; "
        "trial 7 (job 22) is the same size and the same speed as its teacher, 0.5 pt below it")
    assert card["cpu"] == CPU
    assert sweep_card(None, {"trials": [], "fronts": {"latency": []}}) is None


def test_a_sweep_job_json_carries_its_teacher_and_front(db, tmp_path):
    from server.models import Artifact
    from server.serializers import serialize_job

    teacher = _job(db, tmp_path, "teacher", 81.0, report(13.5, 13.0, 14.2, 21_450_000, fp32_bytes=83_600_000),
                   config={"teacher": {"model": "regnety_160"}})
    ckpt = Artifact(job_id=teacher.id, kind="checkpoint", format="checkpoint", path="/nowhere", size=1, sha256="0" * 64, meta={})
    db.add(ckpt)
    db.commit()
    trial = {"job_id": 9, "number": 0, "top1": 79.2, "ptl_top1": 79.2, "params": {}, "latency_ms": 5.0, "size_bytes": 5_500_000,
             "latency": {"p50": 5.0, "p10": 4.8, "p90": 5.4, "runs": 50, "threads": 1}, "cpu": CPU, "at_chance": False}
    summary = {"trials": [trial], "fronts": {"latency": [9], "size": [9]}}
    sweep = _job(db, tmp_path, "sweep", None, None, config={"kind": "sweep", "base": {"teacher": {"checkpoint": ckpt.id}}},
                 progress={"sweep": summary})
    card = serialize_job(sweep)["ship_card"]
    assert [(r["role"], r["job_id"]) for r in card["rows"]] == [("teacher", teacher.id), ("front", 9)]
    assert card["sentence"].endswith("trial 0 (job 9) is 3.9x smaller and 2.7x faster than its teacher, 1.8 pt below it")
