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

# (operation, error field) pairs a schema-valid body may still be refused for, and why:
STATE_FIELDS = {
    # a data path or dataset:NAME that does not exist or is not the caller's / not under a data root
    "POST /jobs": re.compile(r"^((teacher_job|students\.\d+)\.)?config\.data\.(train|val)$"
                             # a checkpoint path or artifact id that does not exist or is not the caller's
                             r"|^((teacher_job|students\.\d+)\.)?config\.teacher\.checkpoint$"),
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
