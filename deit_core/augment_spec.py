"""``train.aa`` checked by timm's own auto-augment parser, at submission rather than at the first batch.

A pattern cannot tell ``rand-m9-mstd0.5-inc1`` from ``rand-m9-mstd0.5-incl``: both look like a spec.
timm's parser (``timm.data.auto_augment``, what ``create_transform`` calls when training starts) is the
only authority, so it is run on the value here. It is not enough on its own: it silently skips a section
that is not a key followed by a number (``incl``), so the typo trains without the increasing-magnitude
ops it asked for. Such a section is refused too, naming it.
"""
from __future__ import annotations

import re

OFF = (None, "", "0")
_SECTION = re.compile(r"(\d.*)")  # timm's own split of a section into key and value


def skipped_sections(spec: str) -> list[str]:
    """The sections after the policy name that timm's parser ignores without a word (no number in them);
    RandAugment's ``t...`` section (a transform list) is a key on its own."""
    rand = spec.startswith("rand")
    return [c for c in spec.split("-")[1:] if len(_SECTION.split(c)) < 2 and not (rand and c.startswith("t"))]


def aa_problem(spec: str | None) -> str | None:
    """Why timm's parser refuses ``spec`` (None: it is off or timm accepts every section of it)."""
    if spec in OFF:
        return None
    from timm.data import auto_augment  # lazy: torch, and only when a spec is given

    parse = (auto_augment.rand_augment_transform if spec.startswith("rand")
             else auto_augment.augment_and_mix_transform if spec.startswith("augmix")
             else auto_augment.auto_augment_transform)
    try:
        parse(spec, None)
    except (AssertionError, ValueError, KeyError, IndexError, TypeError) as e:
        return f"timm's auto-augment parser refused {spec!r}: {e or type(e).__name__}"
    skipped = skipped_sections(spec)
    if skipped:
        return (f"timm's auto-augment parser would ignore section {skipped[0]!r} of {spec!r} (a section is a key and "
                "a number, e.g. inc1, m9, mstd0.5)")
    return None
