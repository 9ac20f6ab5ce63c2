"""Job files: the YAML or JSON a user writes, read into a ``POST /jobs`` body, with a
:class:`~distillery.api_client.ClientError` naming the file when it cannot be read or parsed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deit_core.config import SECTIONS, did_you_mean  # plain data and difflib: no torch

from .api_client import EXIT_API_ERROR, ClientError

CONFIG_KEYS = ("kind", *SECTIONS)


def split_body(raw: dict[str, Any]) -> dict[str, Any]:
    """A file's mapping as a ``POST /jobs`` body. With a ``config`` mapping it is the body. Otherwise its
    config keys (``kind``, the sections, and near misses such as ``dat``, which the server then names as
    ``config.dat``) become the config, and the rest (``name``, ``seeds``, a misspelt ``confg``) stay body
    keys, so the server names a misspelt body key rather than reporting ``config.name`` unknown."""
    if isinstance(raw.get("config"), dict):
        return dict(raw)
    config = {k: v for k, v in raw.items() if k in CONFIG_KEYS or did_you_mean(k, CONFIG_KEYS)}
    rest = {k: v for k, v in raw.items() if k not in config}
    if not set(config) - {"kind"}:  # no section at all: a body whose config key is missing or misspelt
        return dict(raw)
    return {**rest, "kind": raw.get("kind"), "config": config}


def load_job_file(path: str, name: str | None = None) -> dict[str, Any]:
    """Read a YAML or JSON job file into a ``POST /jobs`` body.

    The file is either the whole body ``{kind, name, config}`` or just a config (with its ``kind``);
    a bare config is named ``--name`` or, failing that, after the file.
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ClientError(f"cannot read {p}: {e.strerror}", EXIT_API_ERROR) from None
    try:
        raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        kind = "JSON" if p.suffix == ".json" else "YAML"
        raise ClientError(f"{p} is not valid {kind}: {e}", EXIT_API_ERROR) from None
    if not isinstance(raw, dict):
        raise ClientError(f"{p} must hold a mapping (a job body or a config), got {type(raw).__name__}")
    body = split_body(raw)
    if isinstance(body.get("config"), dict):
        body.setdefault("kind", body["config"].get("kind"))
    body["name"] = name or body.get("name") or p.stem
    return body
