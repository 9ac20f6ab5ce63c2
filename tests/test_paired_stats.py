"""Paired statistics and predictions files: every number checked against one computed by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deit_core import paired_stats as ps
from deit_core import predictions as pr


def crafted(b: int, c: int, n: int, both_right: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels all 0; A right on the first b images only, B right on the next c only, both right on
    ``both_right`` more, both wrong on the rest (A and B wrong in different ways where both are)."""
    y = np.zeros(n, dtype=int)
    a = np.ones(n, dtype=int)
    bb = np.full(n, 2)
    a[:b] = 0
    bb[b:b + c] = 0
    a[b + c:b + c + both_right] = 0
    bb[b + c:b + c + both_right] = 0
    return a, bb, y


@pytest.mark.parametrize("b,c,p", [
    (11, 10, 1.0),              # P(X <= 10 | 21, 1/2) = 1/2 exactly, doubled
    (0, 6, 0.03125),            # 2 * (1/2)^6
    (6, 0, 0.03125),
    (2, 8, 112 / 1024),         # 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    (5, 0, 0.0625),             # 5 of 360 images lost: 2 / 32
    (0, 0, 1.0),                # never disagree: no evidence
])
def test_mcnemar_exact_p_by_hand(b, c, p):
    assert ps.mcnemar_exact_p(b, c) == pytest.approx(p, abs=1e-12)


def test_paired_interval_by_hand():
    # Agresti-Min: m = n + 2 = 362, d = (11 - 10) / 362, se = sqrt(11 + 10 + 1 - 1 / 362) / 362, z = 1.959964
    m, z = 362, 1.959963984540054
    d, se = 1 / m, math.sqrt(22 - 1 / m) / m
    assert ps.paired_ci95(11, 10, 360) == (round(100 * (d - z * se), 3), round(100 * (d + z * se), 3)) == (-2.263, 2.816)
    # no disagreement at all still gets an interval of plausible differences (plain Wald would give [0, 0])
    lo, hi = ps.paired_ci95(0, 0, 100)
    assert lo < 0 < hi and hi == pytest.approx(100 * z * math.sqrt(1) / 102, abs=1e-3)
    assert ps.paired_ci95(0, 100, 100)[0] >= -100.0


def test_compare_counts_discordant_images():
    a, b, y = crafted(b=5, c=2, n=20, both_right=10)
    cmp = ps.compare(a, b, y)
    assert (cmp.n_images, cmp.b, cmp.c) == (20, 5, 2)
    assert (cmp.top1_a, cmp.top1_b, cmp.gain) == (75.0, 60.0, 15.0)  # 15/20, 12/20, 100 * (5 - 2) / 20
    assert cmp.mcnemar_p == pytest.approx(2 * (1 + 7 + 21) / 128)  # 2 * P(X <= 2 | 7, 1/2)
    assert cmp.ci95 == ps.paired_ci95(5, 2, 20)
    reverse = ps.compare(b, a, y)
    assert (reverse.gain, reverse.b, reverse.c, reverse.mcnemar_p) == (-15.0, 2, 5, cmp.mcnemar_p)
    with pytest.raises(ValueError, match="same images"):
        ps.compare(a[:-1], b, y)


def test_across_seeds_t_interval_by_hand():
    # mean 2, sd 1, t(0.975, 2) = 4.302653: 2 +- 4.302653 / sqrt(3)
    s = ps.across_seeds([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert s.mean == 2.0 and s.ci95 == (round(2 - half, 3), round(2 + half, 3)) == (-0.484, 4.484)
    assert not s.significant
    # mean 7, sd sqrt(2.5), t(0.975, 4) = 2.776445: excludes 0
    s = ps.across_seeds([6.0, 8.0, 7.0, 9.0, 5.0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert s.ci95 == (round(7 - half, 3), round(7 + half, 3)) and s.significant
    one = ps.across_seeds([4.2])
    assert one.ci95 is None and not one.significant and one.seeds == 1


def test_verdicts():
    noise = ps.compare(*crafted(b=11, c=10, n=360))
    assert ps.verdict([noise]) == ("no measurable difference (95% CI -2.3 to +2.8 pt, McNemar p = 1.0); "
                                   "training noise not measured: run seeds: 3")
    strong = ps.compare(*crafted(b=30, c=2, n=360))
    one_seed = ps.verdict([strong])
    assert "significant" not in one_seed and "one seed" in one_seed and one_seed.endswith("run seeds: 3")
    seeds = [ps.compare(*crafted(b=b, c=2, n=360)) for b in (20, 30, 25)]
    assert ps.verdict(seeds).startswith("significant: +6.4 pt mean gain over 3 seeds, 95% CI")  # 100 * 23 / 360
    mixed = [ps.compare(*crafted(b=b, c=c, n=360)) for b, c in ((30, 2), (2, 30), (10, 10))]
    assert ps.verdict(mixed).startswith("no measurable difference over 3 seeds")


def test_gain_fields_for_the_job_json():
    one = ps.gain_fields([ps.compare(*crafted(b=30, c=2, n=360))])
    assert one["significant"] is False and one["ci_over"] == "images" and one["seeds"] == 1
    assert one["gain"] == round(100 * 28 / 360, 3) and one["mcnemar_p"] < 0.001 and one["n_images"] == 360
    assert one["gain_ci95"] == list(ps.paired_ci95(30, 2, 360))
    three = ps.gain_fields([ps.compare(*crafted(b=b, c=2, n=360)) for b in (20, 30, 25)])
    assert three["significant"] is True and three["ci_over"] == "seeds" and three["mcnemar_p"] is None
    assert three["gain"] == ps.across_seeds([100 * 18 / 360, 100 * 28 / 360, 100 * 23 / 360]).mean
    assert [s["b"] for s in three["per_seed"]] == [20, 30, 25]
    json.dumps(three)  # plain JSON for the service
    with pytest.raises(ValueError, match="different numbers of images"):
        ps.gain_fields([ps.compare(*crafted(1, 0, 10)), ps.compare(*crafted(1, 0, 20))])


# ------------------------------------------------------------------------------- predictions files


CLASSES = ["cat", "dog"]


def test_predictions_file_is_sorted_and_fingerprinted(tmp_path):
    doc = pr.predictions_document("final", ["dog/2.png", "cat/1.png", "cat/0.png"], [1, 0, 0], [1, 1, 0], CLASSES)
    assert doc["images"] == ["cat/0.png", "cat/1.png", "dog/2.png"]
    assert (doc["labels"], doc["predictions"], doc["top1"]) == ([0, 0, 1], [0, 1, 1], 66.667)
    import hashlib

    lines = "cat/0.png\tcat\ncat/1.png\tcat\ndog/2.png\tdog\n"
    assert doc["val_fingerprint"] == hashlib.sha256(lines.encode()).hexdigest()
    path = pr.write_predictions(tmp_path / pr.VAL_PREDICTIONS, doc)
    back = pr.read_predictions(path)
    assert back.images == tuple(doc["images"]) and back.predictions == (0, 1, 1) and back.top1 == 66.667
    assert pr.export_predictions_name("ptl") == "predictions.ptl.json"


def test_paired_files_compare_image_by_image_and_refuse_other_val_sets(tmp_path):
    images = [f"cat/{i}.png" for i in range(6)]
    a = pr.write_predictions(tmp_path / "a.json", pr.predictions_document("fp32", images, [0] * 6, [0, 0, 0, 0, 1, 1], CLASSES))
    # the same images listed in another order, with the class order swapped: still the same val set
    b = pr.write_predictions(tmp_path / "b.json", pr.predictions_document("ptl", images[::-1], [1] * 6, [0, 0, 1, 1, 1, 1],
                                                                          CLASSES[::-1]))
    cmp = pr.paired(pr.read_predictions(a), pr.read_predictions(b))
    # b lists cat/5 .. cat/0 and predicts index 1 of ["dog", "cat"] (cat) for cat/3 .. cat/0: right where a is
    assert (cmp.n_images, cmp.top1_a, cmp.b, cmp.c) == (6, 66.667, 0, 0)
    other = pr.write_predictions(tmp_path / "o.json", pr.predictions_document("x", images[:5] + ["cat/9.png"], [0] * 6,
                                                                              [0] * 6, CLASSES))
    with pytest.raises(pr.PredictionsError, match="different val images"):
        pr.paired(pr.read_predictions(a), pr.read_predictions(other))


def test_altered_or_foreign_predictions_file_is_refused(tmp_path):
    path = pr.write_predictions(tmp_path / "p.json", pr.predictions_document("fp32", ["cat/0.png"], [0], [0], CLASSES))
    doc = json.loads(path.read_text())
    doc["labels"] = [1]
    path.write_text(json.dumps(doc))
    with pytest.raises(pr.PredictionsError, match="altered"):
        pr.read_predictions(path)
    path.write_text(json.dumps({**doc, "format": 2}))
    with pytest.raises(pr.PredictionsError, match="format 2"):
        pr.read_predictions(path)
