"""A schemathesis check of our own (loaded by test_fuzz.py through ``SCHEMATHESIS_HOOKS``).

schemathesis.toml lets ``POST /jobs`` and ``POST /datasets`` answer a schema-valid body with 400,
because they name server state no JSON Schema can describe. That allowance alone would also hide a
400 for a rule the schema *could* state (a sweep with a teacher_job, a bad dataset name). This
check keeps it narrow: such a 400 must name one of the fields below, each of which points at
server state; any other field means the OpenAPI document says less than the server checks.
"""
from __future__ import annotations

import re

import schemathesis

_CONFIG = r"((teacher_job|students\.\d+)\.)?config\."
# (operation, error field) pairs a schema-valid body may still be refused for, and why:
STATE_FIELDS = {
    "POST /jobs": re.compile("|".join([
        # server state: a data path or dataset:NAME, a checkpoint or init (path or artifact id), a teacher-output
        # cache name, that does not exist or is not the caller's / not under a data root
        rf"^{_CONFIG}data\.(train|val)$", rf"^{_CONFIG}teacher\.checkpoint$", rf"^{_CONFIG}student\.init$",
        rf"^{_CONFIG}distillation\.teacher_cache$",
        # a relation between two numbers, which JSON Schema cannot state: img_size a multiple of the
        # student's patch size; processes_per_node equal to processes; a sweep's range low < high and
        # step <= high - low, its choices valid config values, first_trials inside the space, parallel <= trials
        rf"^{_CONFIG}data\.img_size$", rf"^{_CONFIG}resources\.processes_per_node$",
        # a pipeline's student names the teacher its teacher_job trains: two strings that must be equal
        r"^config\.teacher\.model$",
        # train.aa is parsed by timm's own auto-augment grammar at submission; the schema's pattern only
        # says which policy it starts with (rand, augmix, original, v0, 3a)
        rf"^{_CONFIG}train\.aa$",
        r"^search_space\.\w+(\.(low|high|step))?$", r"^first_trials(\.\d+(\.\w+)?)?$", r"^parallel$"])),
    # the folder to register (exists, is an ImageFolder, under a data root) or the archive's bytes
    "POST /datasets": re.compile(r"^(path|file)$"),
}


@schemathesis.check
def refusals_name_server_state(ctx, response, case):
    """A schema-valid request refused with 400 must name a field that depends on server state."""
    label = f"{case.operation.method.upper()} {case.operation.path}"
    meta = case.meta
    if response.status_code != 400 or label not in STATE_FIELDS or meta is None or not meta.generation.mode.is_positive:
        return None
    try:
        field = response.json()["error"]["field"] or ""
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"400 without the error body: {response.text[:300]}") from None
    if not STATE_FIELDS[label].match(field):
        raise AssertionError(f"schema-valid request refused for {field!r}, which the schema could state: "
                             f"{response.text[:300]}")
    return None
