"""Issue 11, item 8 and issue 19, item 7: schemathesis (which no one here wrote) against the live API,
from its own ``openapi.json``: every check, the stateful phase included, a fixed seed and bounded
examples and time, so a CI run is repeatable. A failure of any kind fails the test: a failed check
(server error, schema violation, documented-valid request rejected, ...), an error, a phase that
did not run, a warning that says the document and the server disagree (schemathesis.toml), or a 400
of POST /jobs or POST /datasets that names a field the schema could have stated (fuzz_checks.py).

The API runs without a worker (``conftest.api``), so no job the fuzzer creates ever trains; its
user is also held to the low jobs-in-flight cap, which it meets (429 is an accepted answer).
``DELETE /tokens/{id}`` is left out: the stateful phase would revoke the fuzzer's own token (listed
by ``GET /tokens``) and every later call would be a 401; test_attacks.py covers revocation.
Other seeds: ``FUZZ_SEED=N pytest tests/security/test_fuzz.py`` (issue 19 ran 3 more locally).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
SEED = int(os.environ.get("FUZZ_SEED", "20261126"))
MAX_EXAMPLES, MAX_TIME_S = 25, 100
PHASES = ("examples", "coverage", "fuzzing", "stateful")


def report_problems(report_dir: Path) -> list[str]:
    """Failed checks and errors recorded in schemathesis' NDJSON report (what its summary counts)."""
    problems = []
    for path in report_dir.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            text = json.dumps(event)
            if '"failures": [{' in text or '"NonFatalError"' in text or '"FatalError"' in text:
                problems.append(text[:600])
    return problems


def test_schemathesis_finds_nothing(api, tmp_path):
    token = api.token("fuzzer")
    r = api.call("POST", "/datasets", user="fuzzer", json={"name": "digits", "path": str(api.data)})
    assert r.status_code == 201, r.text  # the documented example job names dataset:digits
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"), "run",
           f"{api.url}/api/v1/openapi.json", "--checks", "all", "--phases", ",".join(PHASES),
           "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME_S), "--workers", "1",
           "--header", f"Authorization: Bearer {token}", "--request-timeout", "30", "--no-shrink",
           "--exclude-method", "DELETE",  # revoking tokens: the fuzzer would revoke its own (test_attacks covers it)
           "--report", "ndjson", "--report-dir", str(report), "--suppress-health-check", "all"]
    # The hooks module is imported by name: the repository root on the path (an installed distillery has no tests package).
    root = str(HERE.parents[1])
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.security.fuzz_checks",
           "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=MAX_TIME_S + 120, cwd=tmp_path, env=env)
    summary = out.stdout[-8000:] + out.stderr[-3000:]
    print(summary)
    assert out.returncode == 0, summary
    assert not report_problems(report), report_problems(report)[:5]
    tail = out.stdout[out.stdout.rfind("Test Phases:"):]
    for phase in PHASES:  # each phase ran and passed (a phase skipped for want of data tests nothing)
        assert f"✅ {phase.capitalize()}" in tail, summary
    assert "Failures:" not in tail and "Errors:" not in tail, summary
    jobs = api.call("GET", "/jobs", user="fuzzer").json()
    assert json.dumps(jobs)  # the fuzzer's jobs stay readable
