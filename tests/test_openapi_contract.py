"""Issue 19, item 7: the OpenAPI document says what the server takes (the fuzzer,
tests/security/test_fuzz.py, checks it live; these are the findings it made, pinned without a server)."""
from __future__ import annotations

import json

import jsonschema_rs
import pytest

from server.api import datasets
from server.api.openapi import build_openapi

DOC = build_openapi()


def body_validator():
    """JobSubmit as a standalone JSON Schema (its $refs pointed at a local $defs)."""
    schemas = DOC["components"]["schemas"]
    text = json.dumps({**schemas["JobSubmit"], "$defs": schemas}).replace("#/components/schemas/", "#/$defs/")
    return jsonschema_rs.validator_for(json.loads(text))


def test_both_dataset_bodies_document_the_servers_name_pattern():
    content = DOC["paths"]["/datasets"]["post"]["requestBody"]["content"]
    for media in ("application/json", "multipart/form-data"):
        schema = content[media]["schema"]
        assert schema["properties"]["name"]["pattern"] == datasets.NAME_PATTERN, media
        assert schema["additionalProperties"] is False, media  # other form fields are a 400 too


CONFIG = DOC["components"]["schemas"]["JobSubmit"]["example"]["config"]
DISTILL_CONFIG = {**CONFIG, "kind": "distill", "teacher": {"model": "regnety_002", "checkpoint": "timm"}}
SWEEP = {"kind": "sweep", "name": "s", "config": DISTILL_CONFIG, "search_space": {"lr": [0.001]}}


@pytest.mark.parametrize("body, valid", [
    (DOC["components"]["schemas"]["JobSubmit"]["example"], True),
    (SWEEP, True),
    ({**SWEEP, "teacher_job": {"config": CONFIG}}, False),  # the server: "a sweep takes no teacher_job"
    ({**SWEEP, "seeds": 1}, False),
    ({**SWEEP, "config": {**DISTILL_CONFIG, "teacher": {"model": "regnety_002"}}}, False),  # a sweep needs a checkpoint
    ({"kind": "distill", "name": "d", "config": {**DISTILL_CONFIG, "teacher": {"model": "regnety_002"}},
      "teacher_job": {"config": CONFIG}}, True),
    ({"kind": "distill", "name": "d", "config": DISTILL_CONFIG, "teacher_job": {"config": CONFIG}}, False),
    ({"kind": "distill", "name": "d", "config": {**DISTILL_CONFIG, "teacher": {"model": "regnety_002"}}}, False),
    ({"kind": "teacher", "name": "t", "config": CONFIG, "teacher_job": {"config": CONFIG}}, False),
    ({"kind": "teacher", "name": "t", "config": CONFIG, "seeds": 1, "baseline": False}, True),
    ({"kind": "teacher", "name": "t", "config": CONFIG, "search_space": {"lr": [0.001]}}, False),
    ({"kind": "distill", "name": "d", "config": DISTILL_CONFIG, "seeds": 2}, False),
    ({"kind": "distill", "name": "d", "config": DISTILL_CONFIG, "seeds": 2, "baseline": True}, True),
    ({"kind": "teacher", "name": "t", "config": {**CONFIG, "kind": "distill"}}, False),  # config.kind is the body's
    ({"kind": "distill", "name": "d", "config": {**DISTILL_CONFIG, "teacher": {"model": "regnety_002"}},
      "teacher_job": {"config": {**CONFIG, "kind": "teacher_outputs"}}}, False),
    ({"kind": "teacher", "name": "t", "config": {**CONFIG, "train": {**CONFIG["train"], "batch_size": 15}}}, True),
    ({"kind": "teacher", "name": "t", "config": {**CONFIG, "train": {**CONFIG["train"], "batch_size": 15, "mixup": 0.8}}},
     False),  # mixup pairs images: an even batch
    ({"kind": "distill", "name": "d", "config": {**DISTILL_CONFIG, "distillation": {"type": "soft",
                                                                                  "teacher_cache_store": "argmax"}}}, False),
    ({"kind": "teacher", "name": "t", "config": {**CONFIG, "student": {"model": "deit_tiny_patch16_224"}}}, False),
    ({"kind": "teacher_outputs", "name": "o", "config": {**CONFIG, "kind": "teacher_outputs",
                                                         "teacher": {"model": "regnety_002", "checkpoint": "timm"},
                                                         "distillation": {"type": "none"}}}, False),
])
def test_job_bodies_the_schema_admits_are_those_the_server_takes(body, valid):
    assert body_validator().is_valid(body) is valid


def test_links_to_a_sweeps_trials_come_only_from_sweep_ids():
    """schemathesis infers links from parameter names: with ``{job_id}`` every job's id led to
    /trials and /promote (a 404 for any other kind). With ``{sweep_id}`` they follow the jobs'
    ``sweep_id`` (null unless the job is a sweep or its trial) and the trials table's own."""
    import schemathesis
    from schemathesis.specs.openapi.stateful.dependencies import inject_links

    schema = schemathesis.openapi.from_dict(build_openapi())
    inject_links(schema)
    into_sweeps = []
    for path, item in schema.raw_schema["paths"].items():
        for method, op in item.items():
            for code, response in (op.get("responses") or {}).items() if isinstance(op, dict) else ():
                for link in (response.get("links") or {}).values():
                    target = link.get("operationRef", "")
                    if "trials" in target or "promote" in target:
                        into_sweeps.append((f"{method} {path} {code}", link["parameters"]))
    assert into_sweeps
    for source, params in into_sweeps:
        assert set(params) == {"path.sweep_id"} and params["path.sweep_id"].endswith("sweep_id"), (source, params)


def test_an_integral_float_is_an_integer_as_json_schema_says():
    """``integer`` in the document admits 1.0 (JSON has one number type); the fuzzer sent
    ``seeds: 1.0`` and the server refused it. Now config fields, seeds and sweep counts take it."""
    from deit_core.config import ConfigError, parse_config, whole_number
    from server.submissions import SubmissionError, check_seeds
    from server.sweeps import SweepError, _int
    from server.vocabulary import DISTILL

    assert [whole_number(v) for v in (3, 3.0, 3.5, True, "3", float("inf"))] == [3, 3, None, None, None, None]
    cfg = parse_config({**CONFIG, "train": {**CONFIG["train"], "epochs": 2.0}}, check_paths=False).to_dict()
    assert cfg["train"]["epochs"] == 2 and isinstance(cfg["train"]["epochs"], int)
    with pytest.raises(ConfigError, match="epochs"):
        parse_config({**CONFIG, "train": {**CONFIG["train"], "epochs": 2.5}}, check_paths=False)
    assert check_seeds({"seeds": 2.0, "baseline": True}, DISTILL) == 2
    with pytest.raises(SubmissionError):
        check_seeds({"seeds": 1.5}, DISTILL)
    assert _int({"trials": 4.0}, "trials", 8, 1, 10) == 4
    with pytest.raises(SweepError):
        _int({"trials": 4.5}, "trials", 8, 1, 10)
