"""The stored forms of the teacher's outputs (``distillation.teacher_cache_store``), one codec each:
how a batch's logits are encoded into a cache file's rows, decoded back into the logits the loss
reads, how many bytes a row takes, and which losses the form can serve. Adding a form is adding a
class here; nothing else in the cache branches on the form.

- ``argmax``: nothing beyond the exact argmax every form keeps (hard distillation, 2 bytes a row).
- ``fp16`` logits (soft; the default for soft), ``fp32`` logits (exact).
- ``topk``: the k largest logits in fp16, their classes and the mean of the other logits, which
  stand in for every logit outside the top k (FKD's label compression; the soft loss then differs
  from the full logits' by what benchmarks/teacher_cache.py prints). Read only when asked for by name.

The codecs work on tensors through their methods and take the index dtype from the caller, so this
module imports no torch: the service asks it which cache a student can read.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    import torch

# The config's word for "choose for me" (teacher_cache, teacher_cache_store) and for "no cache" (teacher_cache).
AUTO, OFF = "auto", "off"


class Codec:
    """One stored form. ``auto_for_soft``: a soft student reads it under ``teacher_cache_store: auto``."""

    name: ClassVar[str]
    auto_for_soft: ClassVar[bool] = False

    def label(self, topk: int | None) -> str:
        """The form as the cache's name spells it."""
        return self.name

    def stored_topk(self, topk: int | None) -> int | None:
        """The k a manifest records (None: the form keeps no top k)."""
        return None

    def payload_bytes(self, num_classes: int, topk: int | None, index_bytes: int) -> int:
        """Bytes per row beyond the sample, label and argmax every form keeps."""
        raise NotImplementedError

    def encode(self, logits: torch.Tensor, topk: int | None, index_dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """A batch's logits -> the tensors stored for its rows (on the CPU)."""
        raise NotImplementedError

    def decode(self, data: Mapping[str, torch.Tensor], rows: slice, num_classes: int,
               device: torch.device) -> torch.Tensor | None:
        """The stored rows -> fp32 logits on ``device`` (None: the form keeps no logits)."""
        raise NotImplementedError

    def refuses(self, distillation: Mapping[str, Any], stored_topk: int | None) -> str | None:
        """Why this form cannot serve the ``distillation`` section's loss (None: it can). Every form
        keeps the exact argmax, so a hard student reads any; a soft one reads the ``auto_for_soft``
        forms under ``auto``, and any other only when it names it."""
        wanted = distillation.get("teacher_cache_store", AUTO)
        if wanted != AUTO:
            if wanted != self.name:
                return f"it stores {self.name}, distillation.teacher_cache_store asks for {wanted}"
            return self._refuses_named(distillation, stored_topk)
        if distillation.get("type") == "soft" and not self.auto_for_soft:
            readable = " or ".join(c.name for c in CODECS.values() if c.auto_for_soft)
            return f"it stores {self.name}; soft distillation reads {readable} logits (name topk explicitly to accept it)"
        return None

    def _refuses_named(self, distillation: Mapping[str, Any], stored_topk: int | None) -> str | None:
        return None


class ArgmaxCodec(Codec):
    name = "argmax"

    def payload_bytes(self, num_classes, topk, index_bytes):
        return 0

    def encode(self, logits, topk, index_dtype):
        return {}

    def decode(self, data, rows, num_classes, device):
        return None


class Fp16Codec(Codec):
    name = "fp16"
    auto_for_soft = True

    def payload_bytes(self, num_classes, topk, index_bytes):
        return 2 * num_classes

    def encode(self, logits, topk, index_dtype):
        return {"logits": logits.detach().half().cpu()}

    def decode(self, data, rows, num_classes, device):
        return data["logits"][rows].to(device).float()


class Fp32Codec(Fp16Codec):
    name = "fp32"

    def payload_bytes(self, num_classes, topk, index_bytes):
        return 4 * num_classes

    def encode(self, logits, topk, index_dtype):
        return {"logits": logits.detach().float().cpu()}


class TopkCodec(Codec):
    name = "topk"

    def label(self, topk):
        return f"topk{topk}"

    def stored_topk(self, topk):
        return topk

    def payload_bytes(self, num_classes, topk, index_bytes):
        return min(topk, num_classes) * (2 + index_bytes) + 2

    def encode(self, logits, topk, index_dtype):
        full = logits.detach().float()
        k = min(topk, full.shape[1])
        top = full.topk(k, dim=1)
        rest = (full.sum(1) - top.values.sum(1)) / max(full.shape[1] - k, 1)
        return {"topk_values": top.values.half().cpu(), "topk_indices": top.indices.to("cpu", index_dtype),
                "rest_mean": rest.half().cpu()}

    def decode(self, data, rows, num_classes, device):
        rest = data["rest_mean"][rows].to(device).float()
        logits = rest[:, None].expand(len(rest), num_classes).clone()
        logits.scatter_(1, data["topk_indices"][rows].to(device).long(), data["topk_values"][rows].to(device).float())
        return logits

    def _refuses_named(self, distillation, stored_topk):
        k = distillation.get("teacher_cache_topk")
        if stored_topk != k:
            return f"it stores the top {stored_topk}, distillation.teacher_cache_topk is {k}"
        return None


CODECS: dict[str, Codec] = {c.name: c for c in (ArgmaxCodec(), Fp16Codec(), Fp32Codec(), TopkCodec())}


def resolved_store(distillation: Mapping[str, Any]) -> str:
    """What a writer stores: ``auto`` is the argmax for hard distillation, fp16 logits for soft."""
    store = distillation.get("teacher_cache_store", AUTO)
    if store != AUTO:
        return store
    return "argmax" if distillation.get("type") == "hard" else "fp16"


def codec(store: str) -> Codec:
    """The codec of a stored form's name (a manifest's ``store``); KeyError names an unknown one."""
    try:
        return CODECS[store]
    except KeyError:
        raise KeyError(f"no stored form {store!r} (known: {', '.join(CODECS)})") from None


def accepts(distillation: Mapping[str, Any], stored: Mapping[str, Any]) -> str | None:
    """Why a cache's stored form (``stored['store']``, ``['topk']``: a manifest's fields) cannot serve
    this ``distillation`` section's loss (None: it can)."""
    form = CODECS.get(stored.get("store"))
    if form is None:
        return f"it stores {stored.get('store')!r}, which is no stored form this version reads"
    return form.refuses(distillation, stored.get("topk"))
