"""The sweep page in a real headless Chromium against the live `distillery up` (SQLite: Optuna's
study in the file beside the service's database): a two-trial sweep (no teacher_outputs job: the
service test covers it) submitted with `distillery sweep submit` on the tiny teacher, watched with
`distillery sweep watch`; its page shows the trials table and the top-1 vs .ptl latency scatter
with the front marked; "Promote" records the choice (POST with the page's CSRF header), the page
shows it, and `sweep download --promoted` / `--front` fetch those models with their sha256 checked."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.browser.conftest import CHROMIUM, QUICK_TRAIN, phone_layout_problems
from tests.browser.test_dashboard import browser, logged_in_tab, shot  # noqa: F401  (browser is a fixture)
from tests.helpers import job_config

pytestmark = [pytest.mark.slow, pytest.mark.browser]
if not Path(CHROMIUM).exists() and os.environ.get("CI", "").lower() != "true":
    pytestmark.append(pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, "
                                              "scripts/ci-deps.sh, or set DISTILLERY_CHROMIUM)"))


@pytest.fixture(scope="module")
def sweep(live, finished_teacher) -> dict:
    ckpt = next(a["id"] for a in finished_teacher["artifacts"] if a["format"] == "checkpoint")
    body = {"name": "page-sweep", "config": job_config("distill", f"dataset:{live.dataset}", QUICK_TRAIN, checkpoint=ckpt),
            "search_space": {"alpha": {"low": 0.1, "high": 0.9}, "lr": {"low": 1e-4, "high": 3e-3, "log": True}},
            "trials": 2, "parallel": 1, "pruner": {"type": "none"}, "teacher_outputs": False}
    proc = live.cli("sweep", "submit", str(live.write_job_file("sweep.json", body)))
    assert proc.returncode == 0, proc.stderr
    sweep_id = int(proc.stdout.strip().splitlines()[-1])
    watched = live.cli("sweep", "watch", str(sweep_id), "--interval", "1", timeout=600)
    assert watched.returncode == 0, watched.stdout[-2000:] + watched.stderr
    assert "sweep %d succeeded" % sweep_id in watched.stdout and "latency front" in watched.stdout
    return live.job(sweep_id)


@pytest.fixture(scope="module")
def page(browser, live):  # noqa: F811
    yield from logged_in_tab(browser, live)


def test_sweep_page_table_scatter_and_promote(page, live, sweep, tmp_path):
    summary = sweep["sweep"]
    trials = summary["trials"]
    assert [t["state"] for t in trials] == ["succeeded", "succeeded"] and summary["teacher_outputs_job"] is None
    page.goto(f"/jobs/{sweep['id']}")  # the job page sends a sweep to its own page
    page.wait_for_url(f"**/sweeps/{sweep['id']}")
    page.wait_for_function("document.querySelectorAll('[data-testid=sweep-trials] tbody tr').length === 2")
    table = page.locator('[data-testid="sweep-trials"]').inner_text()
    assert "alpha=" in table and "lr=" in table
    for t in trials:  # a trial that ended at the top-1 of guessing is "at chance", never a plain green success
        badge = page.locator(f'#sweep-trials tr[data-job-id="{t["job_id"]}"] .badge').inner_text()
        assert badge == ("at chance" if t["at_chance"] else "succeeded")
        assert t["latency"]["p10"] <= t["latency"]["p50"] <= t["latency"]["p90"] and t["cpu"]["threads"] == 1
    assert page.locator("#sweep-scatter line.spread").count() == 2  # each point's p10-p90 spread
    assert trials[0]["cpu"]["model"] in page.locator('[data-testid="sweep-cpu"]').inner_text()
    card = sweep["ship_card"]  # the teacher and the latency front, in the job JSON and on the page
    assert [r["job_id"] for r in card["rows"] if r["role"] == "front"] == summary["fronts"]["latency"]
    page.wait_for_function("!document.querySelector('#sweep-ship').hidden")
    assert page.locator("#sweep-ship [data-testid=ship-sentence]").inner_text() == card["sentence"]
    page.wait_for_function("document.querySelector('#sweep-scatter').dataset.points === '2'")
    front = summary["fronts"]["latency"]
    assert page.locator("#sweep-scatter circle.trial-point.front").count() == len(front) >= 1
    for job_id in front:
        assert "latency" in page.locator(f'#sweep-trials tr[data-job-id="{job_id}"] .front-mark').inner_text()

    chosen = trials[-1]["job_id"]
    page.locator(f'button.promote-btn[data-job-id="{chosen}"]').click()
    page.wait_for_function("!document.querySelector('[data-testid=promoted]').hidden")
    assert f"job #{chosen}" in page.locator('[data-testid="promoted"]').inner_text()
    assert page.locator(f'button.promote-btn[data-job-id="{chosen}"]').inner_text() == "Promoted"
    assert page.locator("#sweep-scatter circle.promoted-ring").count() == 1
    assert live.api("GET", f"/jobs/{sweep['id']}/trials").json()["promoted"]["job_id"] == chosen
    shot(page, "sweep")

    out = live.cli("sweep", "download", str(sweep["id"]), "--promoted", "--output", str(tmp_path))
    assert out.returncode == 0, out.stderr
    (path,) = tmp_path.glob(f"trial*-job{chosen}.ptl")
    art = next(a for a in live.job(chosen)["artifacts"] if a["format"] == "ptl")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == art["sha256"]

    front_dir = tmp_path / "front"
    out = live.cli("sweep", "download", str(sweep["id"]), "--front", "--output", str(front_dir))
    assert out.returncode == 0, out.stderr
    assert sorted(int(p.stem.rsplit("job", 1)[1]) for p in front_dir.glob("*.ptl")) == sorted(front)


def test_sweep_page_words_and_phone_width(page, live, sweep):
    """Issue 20: "2 of 2 trials finished", not "2/2 trials finished · trials"; at 390 px the trials are
    cards and nothing reaches past the page."""
    page.goto(f"/sweeps/{sweep['id']}")
    page.wait_for_function("document.querySelectorAll('[data-testid=sweep-trials] tbody tr').length === 2")
    assert page.locator('[data-testid="sweep-progress"]').inner_text() == "2 of 2 trials finished"
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.wait_for_timeout(500)
        assert not phone_layout_problems(page), phone_layout_problems(page)
        assert page.locator("#sweep-trials thead").is_hidden()  # cards: each value carries its column's name
        shot(page, "sweep-phone")
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
