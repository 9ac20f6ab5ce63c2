"""Is model A better than model B on the same images? A gain with its evidence, not a bare difference.

Two models evaluated on the same val images give a *paired* comparison: what matters is the images
where they disagree about being right (``b``: A right and B wrong, ``c``: B right and A wrong); the
images both get right or both get wrong say nothing about which is better. A "+0.3 pt" from 11 vs
10 such images is noise, and this module says so in numbers:

- the gain ``top1(A) - top1(B)`` in points, ``100 (b - c) / n``;
- its 95% interval over images: the Agresti-Min interval for a difference of paired proportions
  (the Wald interval with 0.5 added to each of the four agree/disagree cells). Chosen over a
  bootstrap because it is closed-form (no seed, no resample count, the same number everywhere it
  is computed, checkable by hand), and over the plain Wald interval because that one collapses to
  a zero-width [0, 0] when the models never disagree and undercovers with few discordant images;
  Agresti and Min (2005, Statistics in Medicine 24:729) show the adjusted one keeps near-nominal
  coverage even for small n. For b = 11, c = 10 on 360 images it is -2.3 to +2.8 pt;
- McNemar's exact two-sided p: under "no difference" each discordant image is a fair coin, so
  ``b ~ Binomial(b + c, 1/2)``;
- across training seeds: the mean of the per-seed gains and a t-interval over seeds
  (``scipy.stats.t``). Only this one measures *training* noise (one seed's interval covers only
  which images happened to be in the val set; another seed of the same recipe can move the gain by
  more than that interval), so only this one may call a gain ``significant``.

numpy and scipy only: no torch, nothing from the service; the service reads the results as plain
dicts (``as_dict`` / :func:`gain_fields`, whose keys are the job JSON's ``baseline`` fields).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
SEEDS_TO_RUN = 3  # what the verdict asks for when one seed cannot tell training noise from a gain


@dataclass(frozen=True)
class PairedComparison:
    """A vs B on the same ``n_images``: accuracies and gain in points, its 95% interval over images,
    McNemar's exact p, and the discordant counts ``b`` (A right, B wrong) and ``c`` (B right, A wrong)."""

    n_images: int
    top1_a: float
    top1_b: float
    gain: float
    ci95: tuple[float, float]
    mcnemar_p: float
    b: int
    c: int

    def as_dict(self) -> dict[str, Any]:
        return {"n_images": self.n_images, "top1_a": self.top1_a, "top1_b": self.top1_b, "gain": self.gain,
                "gain_ci95": list(self.ci95), "mcnemar_p": self.mcnemar_p, "b": self.b, "c": self.c}


@dataclass(frozen=True)
class AcrossSeeds:
    """Per-seed gains of one recipe pair, their mean and (with 2 or more seeds) the t-interval over seeds."""

    gains: tuple[float, ...]
    mean: float
    ci95: tuple[float, float] | None

    @property
    def seeds(self) -> int:
        return len(self.gains)

    @property
    def significant(self) -> bool:
        """True only when the across-seed interval exists and excludes 0."""
        return self.ci95 is not None and (self.ci95[0] > 0 or self.ci95[1] < 0)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p: the binomial test of ``b`` successes in ``b + c`` fair coin flips.

    1.0 when the models never disagree (no evidence either way).
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(min(1.0, stats.binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue))


def paired_ci95(b: int, c: int, n: int) -> tuple[float, float]:
    """Agresti-Min 95% interval of ``top1(A) - top1(B)`` in points, clipped to [-100, 100].

    With 0.5 added to each of the four cells: ``d = (b - c) / (n + 2)``,
    ``se = sqrt((b + c + 1) - (b - c)^2 / (n + 2)) / (n + 2)``, interval ``d +- z_0.975 se``.
    """
    if n <= 0:
        raise ValueError("no images to compare")
    if b + c > n:
        raise ValueError(f"b + c = {b + c} discordant images is more than the {n} images")
    m = n + 2.0
    d = (b - c) / m
    se = math.sqrt(max((b + c + 1.0) - (b - c) ** 2 / m, 0.0)) / m
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    lo, hi = max(d - z * se, -1.0), min(d + z * se, 1.0)
    return round(100.0 * float(lo), 3), round(100.0 * float(hi), 3)


def compare(predictions_a: Sequence[int], predictions_b: Sequence[int], labels: Sequence[int]) -> PairedComparison:
    """Paired comparison of two models' top-1 predictions on the same images, in the same order."""
    a, b_pred, y = (np.asarray(v, dtype=np.int64).ravel() for v in (predictions_a, predictions_b, labels))
    if not (len(a) == len(b_pred) == len(y)):
        raise ValueError(f"predictions and labels differ in length ({len(a)}, {len(b_pred)}, {len(y)}): "
                         "a paired comparison needs both models' predictions on the same images")
    if len(y) == 0:
        raise ValueError("no images to compare")
    right_a, right_b = a == y, b_pred == y
    b, c, n = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a)), len(y)
    return PairedComparison(n_images=n, top1_a=round(100.0 * float(right_a.mean()), 3),
                            top1_b=round(100.0 * float(right_b.mean()), 3), gain=round(100.0 * (b - c) / n, 3),
                            ci95=paired_ci95(b, c, n), mcnemar_p=mcnemar_exact_p(b, c), b=b, c=c)


def across_seeds(gains: Sequence[float]) -> AcrossSeeds:
    """Mean gain over seeds and its t-interval (``mean +- t_{0.975, k-1} sd / sqrt(k)``); no interval for one seed."""
    g = np.asarray(list(gains), dtype=np.float64)
    if g.size == 0:
        raise ValueError("no seeds")
    if not np.all(np.isfinite(g)):
        raise ValueError(f"gains must be finite numbers, got {list(gains)}")
    mean = float(g.mean())
    ci = None
    if g.size >= 2:
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, g.size - 1) * g.std(ddof=1) / math.sqrt(g.size))
        ci = (round(mean - half, 3), round(mean + half, 3))
    return AcrossSeeds(gains=tuple(round(float(x), 3) for x in g), mean=round(mean, 3), ci95=ci)


def _pt(x: float) -> str:
    return f"{x:+.1f}".replace("+0.0", "0.0").replace("-0.0", "0.0")


def _p(p: float) -> str:
    return "1.0" if p >= 0.9995 else f"{p:.2g}"


def _interval(ci: tuple[float, float]) -> str:
    return f"95% CI {_pt(ci[0])} to {_pt(ci[1])} pt"


def verdict(per_seed: Sequence[PairedComparison]) -> str:
    """The sentence the product shows for a gain, from one comparison per training seed.

    One seed: the interval over images, never "significant", and the advice to run more seeds.
    Several seeds: "significant" only when the across-seed t-interval excludes 0.
    """
    if not per_seed:
        raise ValueError("no comparisons")
    if len(per_seed) == 1:
        p = per_seed[0]
        ci = p.ci95
        head = ("no measurable difference" if ci[0] <= 0 <= ci[1]
                else f"{_pt(p.gain)} pt on these {p.n_images} images, one seed")
        return f"{head} ({_interval(ci)}, McNemar p = {_p(p.mcnemar_p)}); training noise not measured: run seeds: {SEEDS_TO_RUN}"
    summary = across_seeds([p.gain for p in per_seed])
    assert summary.ci95 is not None
    where = f"{summary.seeds} seeds, {_interval(summary.ci95)}"
    if summary.significant:
        return f"significant: {_pt(summary.mean)} pt mean gain over {where}"
    return f"no measurable difference over {where} (mean {_pt(summary.mean)} pt)"


def gain_fields(per_seed: Sequence[PairedComparison]) -> dict[str, Any]:
    """The job JSON's gain fields (``gain``, ``gain_ci95``, ``mcnemar_p``, ``n_images``, ``significant``)
    plus ``ci_over`` ("images" or "seeds"), ``seeds``, ``verdict`` and each seed's comparison.

    One seed: ``gain_ci95`` is the interval over images and ``significant`` is False (training noise
    unmeasured). Several seeds: ``gain`` is the mean, ``gain_ci95`` the t-interval over seeds, and
    ``mcnemar_p`` is None at the top level: McNemar tests one pair of models, so each seed keeps its
    own in ``per_seed`` (pooling seeds' discordant images would count the same images several times).
    """
    if not per_seed:
        raise ValueError("no comparisons")
    n = {p.n_images for p in per_seed}
    if len(n) != 1:
        raise ValueError(f"seeds were evaluated on different numbers of images {sorted(n)}; compare on one val set")
    if len(per_seed) == 1:
        p = per_seed[0]
        top = {"gain": p.gain, "gain_ci95": list(p.ci95), "mcnemar_p": p.mcnemar_p, "significant": False,
               "ci_over": "images"}
    else:
        s = across_seeds([p.gain for p in per_seed])
        top = {"gain": s.mean, "gain_ci95": list(s.ci95 or ()), "mcnemar_p": None, "significant": s.significant,
               "ci_over": "seeds"}
    return {**top, "n_images": n.pop(), "seeds": len(per_seed), "verdict": verdict(per_seed),
            "per_seed": [p.as_dict() for p in per_seed]}
