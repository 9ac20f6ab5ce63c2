"""The config's one declaration and what is generated from it: the validator's checks, the served
``JobConfig`` schema and ``docs/config.md`` cannot drift apart."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from deit_core import config_schema
from deit_core.config import SECTIONS, ConfigError, FieldSpec, check_field, field_spec, parse_config, with_overrides
from server.settings import Settings
from server.vocabulary import JOB_KINDS

ROOT = Path(__file__).resolve().parents[1]
FIELDS = [(name, f) for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("name, f", FIELDS, ids=[f"{n}.{f.name}" for n, f in FIELDS])
def test_every_field_has_a_spec_with_help(name, f):
    s = field_spec(f)
    assert isinstance(s, FieldSpec) and len(s.help.strip()) > 10, f"{name}.{f.name}"


def test_docs_config_md_is_the_generators_output():
    """Regenerate with: python -m deit_core.config_schema --markdown > docs/config.md"""
    assert (ROOT / "docs" / "config.md").read_text() == config_schema.markdown()


def test_served_job_config_schema_is_the_generated_one(tmp_path):
    from server.app import create_app

    st = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", storage=str(tmp_path / "storage"),
                  broker_dir=str(tmp_path / "broker"), state_dir=str(tmp_path / "state"), max_epochs=50, max_nodes=4)
    served = create_app(st, check_schema=False).test_client().get("/api/v1/openapi.json").get_json()
    component = dict(served["components"]["schemas"]["JobConfig"])
    assert component.pop("description") and component.pop("example")
    assert component == json.loads(json.dumps(config_schema.json_schema(st.config_caps(), kinds=JOB_KINDS)))
    props = component["properties"]
    assert props["train"]["properties"]["epochs"]["maximum"] == 50  # the deployment's cap, not the engine's 100000
    assert props["resources"]["properties"]["nodes"]["maximum"] == 4
    assert props["distillation"]["anyOf"][0]["properties"]["tau"] == {
        "type": "number", "exclusiveMinimum": 0.0, "maximum": 100.0, "default": 1.0,
        "description": "soft distillation's temperature"}


def test_the_schema_and_the_validator_agree_on_each_bound():
    """Each numeric bound in the generated schema is where the validator starts refusing."""
    base = {"kind": "distill", "data": {"train": "t", "val": "v", "img_size": 32}, "teacher": {"checkpoint": 3},
            "student": {"patch_size": 8}, "train": {"mixup": 0, "cutmix": 0}}
    schema = config_schema.json_schema()
    checked = 0
    for name, f in FIELDS:
        sec = schema["properties"][name]
        props = (sec["anyOf"][0] if "anyOf" in sec else sec)["properties"]
        fs = props[f.name]
        fs = next((b for b in fs.get("anyOf", []) if b.get("type") in ("integer", "number")), fs)
        if "maximum" not in fs or f.name in ("img_size", "patch_size", "processes_per_node"):
            continue  # (patch and image sizes must also divide; processes_per_node must equal processes)
        raw = with_overrides(base, {f"{name}.{f.name}": fs["maximum"]})
        parse_config(raw, check_paths=False)
        over = fs["maximum"] + 1 if fs["type"] == "integer" else fs["maximum"] * 1.5 + 0.01
        with pytest.raises(ConfigError) as e:
            parse_config(with_overrides(base, {f"{name}.{f.name}": over}), check_paths=False)
        assert e.value.field == f"{name}.{f.name}"
        checked += 1
    assert checked >= 25


@pytest.mark.parametrize("path, value, message", [
    ("distillation.tau", 101.0, "distillation.tau: must be <= 100.0, got 101.0"),
    ("train.clip_grad", 2e6, "train.clip_grad: must be <= 1000000.0, got 2000000.0"),
    ("train.seed", 2**31, "train.seed: must be <= 2147483647, got 2147483648"),
    ("student.model", "deit_tiny_distilled_patch0_224",
     "student.model: must be deit_{tiny,small,base}_distilled_patch16_{224,384}, got 'deit_tiny_distilled_patch0_224'; "
     "did you mean deit_tiny_distilled_patch16_224?"),
    ("teacher.model", "regnety_002\n", "teacher.model: must be a timm regnety_* model, got 'regnety_002\\n'"),
    ("distillation.teacher_cache", " ",
     "distillation.teacher_cache: must be 'auto', 'off' or a cache's name (1 to 1000 characters)"),
    ("data.train", "", "data.train: must be 1 to 4096 characters long, got 0"),
    ("train.aa", "x" * 201, "train.aa: not a timm auto-augment spec, e.g. rand-m9-mstd0.5-inc1 or null: '" + "x" * 201 + "'"),
    ("teacher.checkpoint", 0, "teacher.checkpoint: must be >= 1, got 0"),
])
def test_checks_read_off_the_spec_name_the_field(path, value, message):
    section, key = path.split(".")
    f = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == key)
    with pytest.raises(ConfigError) as e:
        check_field(path, value, field_spec(f))
    assert (e.value.field, str(e.value)) == (path, message)


def test_markdown_lists_every_field_once():
    md = config_schema.markdown()
    for name, f in FIELDS:
        assert md.count(f"| `{name}.{f.name}` |") == 1, f"{name}.{f.name}"
