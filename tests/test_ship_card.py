"""server.ship_card: the rows and the one sentence, on crafted numbers (no database, no files)."""
from __future__ import annotations

import pytest

from server.ship_card import card_row, ship_card, top1_ci95

CPU = {"model": "Intel(R) Xeon(R) Platinum 8480+", "isa": ["avx2", "avx512f", "amx_tile"], "threads": 1}


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
    assert ship_card(TEACHER, STUDENT, ALONE, worse)["sentence"].endswith("1.6 pt (0.3 to 2.9) below the same student trained alone")


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


@pytest.mark.parametrize("top1, n, lo, hi", [(50.0, 100, 40.4, 59.6), (100.0, 360, 98.9, 100.0), (0.0, 10, 0.0, 27.8)])
def test_top1_interval_is_wilson(top1, n, lo, hi):
    assert top1_ci95(top1, n) == [lo, hi]
    assert top1_ci95(top1, None) is None
