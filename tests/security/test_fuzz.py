"""Issue 11, item 8: schemathesis (which no one here wrote) against the live API, from its own
``openapi.json``: every check, the stateful phase included, a fixed seed and bounded examples and
time, so a CI run is repeatable. Zero server errors, zero schema violations, zero documented-valid
requests rejected (see schemathesis.toml for the one documented exception).

The API runs without a worker (``conftest.api``), so no job the fuzzer creates ever trains; its
user is also held to the low jobs-in-flight cap, which it meets (429 is an accepted answer).
``DELETE /tokens/{id}`` is left out: the stateful phase would revoke the fuzzer's own token (listed
by ``GET /tokens``) and every later call would be a 401; test_attacks.py covers revocation.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
SEED, MAX_EXAMPLES, MAX_TIME_S = 20261126, 25, 100


def test_schemathesis_finds_nothing(api, tmp_path):
    token = api.token("fuzzer")
    r = api.call("POST", "/datasets", user="fuzzer", json={"name": "digits", "path": str(api.data)})
    assert r.status_code == 201, r.text  # the documented example job names dataset:digits
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"), "run",
           f"{api.url}/api/v1/openapi.json", "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
           "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME_S), "--workers", "1",
           "--header", f"Authorization: Bearer {token}", "--request-timeout", "30", "--no-shrink",
           "--exclude-method", "DELETE",  # revoking tokens: the fuzzer would revoke its own (test_attacks covers it)
           "--report", "ndjson", "--report-dir", str(report), "--suppress-health-check", "all"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=MAX_TIME_S + 120, cwd=tmp_path)
    summary = out.stdout[-6000:] + out.stderr[-3000:]
    print(summary)
    assert out.returncode == 0, summary
    assert "No issues found" in out.stdout or "0 failures" in out.stdout or "failures" not in out.stdout.lower(), summary
    jobs = api.call("GET", "/jobs", user="fuzzer").json()
    assert json.dumps(jobs)  # the fuzzer's jobs stay readable
