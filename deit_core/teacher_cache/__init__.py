"""The teacher-output cache: the teacher's outputs on the students' exact augmented batches,
written once and read by every later student whose batches are the same.

Why it can be exact: every augmentation is a function of ``(seed, epoch, sample, copy)`` (see
data.py) and mixup/cutmix draw from numpy's RNG, reseeded at each epoch from ``(seed, epoch,
rank)`` (batches.py). So the teacher's input for (epoch, rank, step) is fixed by the settings in
the *key*, and a student that matches the key can read the teacher's output instead of computing it.

- ``key.py``: the key's fields (the teacher and its weights' sha256, both datasets' fingerprints,
  image size and eval crop, every augmentation setting, seed, world size, per-process batch,
  accumulation, device type and precision, the torch/timm/torchvision/Pillow versions and the
  version of our own transform code) and its digest; no torch, so the service uses it too.
- ``fingerprint.py``: a dataset's fingerprint over its files' bytes (not names, sizes and mtimes,
  which an uploaded tar can forge), memoized by path, size, mtime, inode and ctime in an SQLite
  file in the store, so a re-scan of unchanged data reads no image; no torch.
- ``codecs.py``: one codec per stored form (``argmax``, ``fp16``, ``fp32``, ``topk``): encode,
  decode, bytes per row, which losses it serves; no torch either.
- ``manifest.py``: ``manifest.json`` as the typed :class:`~.manifest.Manifest`, and the
  :class:`~.manifest.CacheStatus` of a run's ``teacher_cache`` events (the worker reads both).
- ``store.py``: one rank's writer and verified reader of the cache's files, and their sizes.
- ``feed.py``: what the training loop asks per batch, and the per-run decision to read, write or
  neither (:func:`~.feed.open_feed`).

The package's ``__init__`` imports nothing, so importing ``key`` or ``manifest`` loads no torch.
"""
