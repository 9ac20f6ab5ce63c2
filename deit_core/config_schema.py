"""The job config's JSON Schema and its Markdown table, generated from the one declaration in ``deit_core.config``.

Each field's type (its annotation), default and :class:`~deit_core.config.FieldSpec` (range, choices,
pattern, length, help) are written once, on the dataclasses; the validator reads them there, the API's
``openapi.json`` gets its ``JobConfig`` component from :func:`json_schema` and ``docs/config.md`` is
:func:`markdown` (``python -m deit_core.config_schema --markdown > docs/config.md``). Tests compare
both outputs with what is served and committed, so the copies cannot drift from the declaration.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Mapping

from .config import KINDS, SECTION_HELP, SECTIONS, FieldSpec, field_spec

JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number", "str": "string", "None": "null"}
SECTION_REQUIRED = ("data",)
NULLABLE_SECTIONS = ("student", "distillation")  # only some kinds take them; null is "absent"


def _types(f: dataclasses.Field) -> list[str]:
    return [a.strip() for a in str(f.type).split("|")]


def _facets(json_type: str, s: FieldSpec, cap: int | None) -> dict[str, Any]:
    """The keywords of one JSON type that the spec constrains (``cap``: this deployment's lower maximum)."""
    out: dict[str, Any] = {}
    if json_type in ("integer", "number"):
        if s.lo is not None:
            out["exclusiveMinimum" if s.lo_open else "minimum"] = s.lo
        hi = s.hi if cap is None else (cap if s.hi is None else min(s.hi, cap))
        if hi is not None:
            out["maximum"] = hi
    elif json_type == "string":
        if s.choices is not None:
            out["enum"] = list(s.choices)
        if s.pattern is not None:
            out["pattern"] = s.pattern
        if s.min_length is not None:
            out["minLength"] = s.min_length
        if s.max_length is not None:
            out["maxLength"] = s.max_length
    return out


def field_schema(f: dataclasses.Field, cap: int | None = None) -> dict[str, Any]:
    """One field: its type(s) with the spec's keywords; a union of several value types is an ``anyOf``."""
    s = field_spec(f)
    types = [JSON_TYPES[t] for t in _types(f)]
    values = [t for t in types if t != "null"]
    if len(values) == 1:
        out: dict[str, Any] = {"type": types[0] if len(types) == 1 else types, **_facets(values[0], s, cap)}
    else:
        out = {"anyOf": [{"type": t, **_facets(t, s, cap)} for t in types]}
    if f.default is not dataclasses.MISSING and not (cap is not None and f.default is not None and f.default > cap):
        out["default"] = f.default  # left out where a deployment caps the field below the engine's default
    out["description"] = s.help
    return out


def section_schema(name: str, caps: Mapping[str, int]) -> dict[str, Any]:
    fields = dataclasses.fields(SECTIONS[name])
    obj: dict[str, Any] = {"type": "object", "additionalProperties": False,
                           "properties": {f.name: field_schema(f, caps.get(f"{name}.{f.name}")) for f in fields}}
    required = [f.name for f in fields if f.default is dataclasses.MISSING]
    if required:
        obj["required"] = required
    if name in NULLABLE_SECTIONS:
        return {"anyOf": [obj, {"type": "null"}], "description": SECTION_HELP[name]}
    return {**obj, "description": SECTION_HELP[name]}


def json_schema(caps: Mapping[str, int] | None = None, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """The job config as a JSON Schema object (draft 2020-12, as OpenAPI 3.1 uses).

    Args:
        caps: a deployment's lower maxima by dotted field (``{"train.epochs": 1000}``); the service
            passes its ``DISTILLERY_MAX_*`` settings.
        kinds: the accepted ``kind`` values (the service adds its own, ``sweep``).
    """
    caps = caps or {}
    return {"type": "object", "additionalProperties": False, "required": list(SECTION_REQUIRED),
            "properties": {"kind": {"type": "string", "enum": list(kinds)},
                           **{name: section_schema(name, caps) for name in SECTIONS}},
            "allOf": CROSS_FIELD_RULES}


def _at(section: str, key: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A config whose ``<section>.<key>`` is present and matches ``schema``."""
    return {"required": [section], "properties": {section: {"required": [key], "properties": {key: schema}}}}


# The checks of parse_config between fields that JSON Schema can state (``if``/``then``); the others
# (img_size a multiple of the patch size, processes_per_node equal to processes) relate two numbers.
CROSS_FIELD_RULES: list[dict[str, Any]] = [
    # soft distillation needs logits (_check_distillation)
    {"if": _at("distillation", "type", {"const": "soft"}),
     "then": {"properties": {"distillation": {"properties": {"teacher_cache_store": {"not": {"const": "argmax"}}}}}}},
    # mixup/cutmix pair images within a batch (_check_train); both are on unless set to 0
    {"if": {"allOf": [_at("train", "mixup", {"const": 0}), _at("train", "cutmix", {"const": 0})]},
     "else": {"properties": {"train": {"properties": {"batch_size": {"multipleOf": 2}}}}}},
]


def _type_text(f: dataclasses.Field) -> str:
    return " \\| ".join("null" if t == "None" else t for t in _types(f))


def _number_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _range_text(s: FieldSpec) -> str:
    parts = []
    if s.lo is not None or s.hi is not None:
        lo = "-inf" if s.lo is None else _number_text(s.lo)
        hi = "inf" if s.hi is None else _number_text(s.hi)
        parts.append(f"{'(' if s.lo_open or s.lo is None else '['}{lo}, {hi}{')' if s.hi is None else ']'}")
    if s.choices is not None:
        parts.append(" \\| ".join(f"`{c}`" for c in s.choices))
    if s.pattern is not None:
        parts.append(f"matches `{s.pattern.replace('|', chr(92) + '|')}`")
    if s.max_length is not None:
        parts.append(f"{s.min_length} to {s.max_length} characters" if s.min_length else f"at most {s.max_length} characters")
    return "; ".join(parts) or "-"


def _default_text(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING:
        return "required"
    return f"`{json.dumps(f.default)}`"


def markdown() -> str:
    """``docs/config.md``: every field of every section, with type, default, range and help."""
    lines = ["# Job config reference", "",
             "<!-- Generated by `python -m deit_core.config_schema --markdown > docs/config.md` from the field",
             "     declarations in deit_core/config.py; tests/test_config_schema.py fails when this file is stale. -->", "",
             "One schema for the CLI's YAML/JSON file and the REST body's `config` (`openapi.json`'s `JobConfig` "
             "is generated from the same declarations). Every key is validated; an unknown key is an error and "
             "every error names its field (`train.batch_size`). A server may cap some maxima lower "
             "(`DISTILLERY_MAX_*`, in the [configuration reference](configuration.md)).", "",
             f"`kind`: one of {', '.join(f'`{k}`' for k in KINDS)} (the REST API also takes `sweep`). "
             "Ranges: `[a, b]` includes both ends, `(a, b]` excludes a.", ""]
    for name, cls in SECTIONS.items():
        lines += [f"## `{name}`: {SECTION_HELP[name]}", "", "| field | type | default | range | help |",
                  "| --- | --- | --- | --- | --- |"]
        for f in dataclasses.fields(cls):
            s = field_spec(f)
            lines.append(f"| `{name}.{f.name}` | {_type_text(f)} | {_default_text(f)} | {_range_text(s)} | "
                         f"{s.help.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deit_core.config_schema", description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--markdown", action="store_true", help="docs/config.md")
    g.add_argument("--json-schema", action="store_true", help="the JSON Schema, without a deployment's caps")
    args = p.parse_args(argv)
    sys.stdout.write(markdown() if args.markdown else json.dumps(json_schema(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
