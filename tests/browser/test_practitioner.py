"""Issue 14, "a dashboard a practitioner trusts", in a real headless Chromium against the live
service (one `distillery up` shared with the other browser tests):

* a teacher picked from a finished job fills the teacher's model, image size and data, and the
  distill job (with its baseline: the same student without a teacher) trains to success; its page
  says what it is doing from the first second, then shows the distillation gain;
* the submit form's presets, warnings, worded labels and effective learning rate; clone and edit;
* the compare view; the export report in words; failed and cancelled pages; phone width with the
  download button in view, 12 px chart text and hover values.

Training stays tiny (digits, 12 images a class, 32 px, one epoch). Screenshots go to
test-artifacts/screenshots/.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from deit_core.presets import SMALL_DATA
from distillery.card_text import gain_line
from tests.browser.conftest import CHROMIUM, phone_layout_problems, teacher_config
from tests.browser.test_dashboard import browser, field, logged_in_tab, shot  # noqa: F401  (browser is a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
if not Path(CHROMIUM).exists() and os.environ.get("CI", "").lower() != "true":
    pytestmark.append(pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, "
                                              "scripts/ci-deps.sh, or set DISTILLERY_CHROMIUM)"))

TINY = {"train.epochs": "1", "train.batch_size": "16", "train.workers": "0", "train.log_every": "1", "train.warmup_epochs": "0"}


@pytest.fixture(scope="module")
def page(browser, live):  # noqa: F811
    yield from logged_in_tab(browser, live, accept_downloads=True)


@pytest.fixture(scope="module")
def distilled(page, live, finished_teacher):
    """Through the form: a teacher picked from the finished teacher job, with a baseline; (job, baseline)."""
    page.goto("/submit")
    page.check("input[name=kind][value=distill]")
    page.fill("#job-name", "picked-teacher")
    option = page.locator("#dataset option", has_text=live.dataset)
    option.wait_for(state="attached")
    page.select_option("#dataset", label=option.inner_text())
    ckpt = next(a for a in finished_teacher["artifacts"] if a["format"] == "checkpoint")
    page.locator(f'#teacher-from option[value="{ckpt["id"]}"]').wait_for(state="attached")
    field(page, "data.img_size").fill("224")  # the form must take the teacher's own size back
    page.select_option("#teacher-from", str(ckpt["id"]))
    page.wait_for_function("document.querySelector('#teacher-hint').textContent.includes('set from job')")
    assert field(page, "teacher.model").input_value() == "regnety_002"
    assert field(page, "data.img_size").input_value() == "32"
    assert field(page, "data.train").input_value() == f"dataset:{live.dataset}/train"
    for dotted, value in TINY.items():
        field(page, dotted).fill(value)
    page.check("#baseline")
    page.click("#submit-btn")
    page.wait_for_url("**/jobs/*")
    job_id = int(page.url.rstrip("/").rsplit("/", 1)[-1])
    # From the first second the page says what the run is doing, not "waiting for metrics".
    text = page.locator("#progress-text").inner_text()
    assert any(w in text for w in ("Queued", "Starting", "Loading", "Evaluating", "Teacher", "First epoch", "epoch")), text
    job = live.job(job_id)
    assert job["baseline"] and job["config"]["teacher"]["checkpoint"] == ckpt["id"]
    return (live.wait(job_id, ("succeeded", "failed"), timeout=600),
            live.wait(job["baseline"]["job_id"], ("succeeded", "failed"), timeout=600))


def test_a_teacher_picked_from_a_finished_job_trains_and_shows_the_gain(page, live, distilled):
    job, baseline = distilled
    assert job["state"] == "succeeded", job["error"]
    assert baseline["state"] == "succeeded", baseline["error"]
    assert baseline["config"]["distillation"]["type"] == "none" and baseline["baseline_of"] == job["id"]
    assert job["config"]["train"]["seed"] == baseline["config"]["train"]["seed"]
    page.goto(f"/jobs/{job['id']}")
    gain = page.locator('[data-testid="distillation-gain"]')
    page.wait_for_function("!document.querySelector('[data-testid=distillation-gain]').hidden && "
                           "!document.querySelector('[data-testid=distillation-gain]').textContent.includes('waiting')")
    now = live.job(job["id"])
    base = now["baseline"]
    if isinstance(base.get("gain_ci95"), list):  # the gain with its interval and verdict; green only when significant
        sign = "+" if base["gain"] >= 0 else "−"
        assert f"distillation gain {sign}{abs(base['gain']):.1f} pt (95% CI" in gain.inner_text()
        assert base["verdict"] in gain.inner_text()
    else:  # a record without an interval: both top-1s, no claim
        assert f"{base['top1']:.1f}% for the same student without a teacher (interval not computed)" in gain.inner_text()
    assert gain.get_attribute("data-significant") == str(base.get("significant") is True).lower()
    if base.get("significant") is not True:
        assert "unproven" in gain.get_attribute("class")  # never the green banner
    # The ship card: teacher, student and baseline, the sentence, the CPU, the .ptl's download button.
    card = page.locator('[data-testid="ship-card"]')
    card.wait_for()
    assert page.locator('[data-testid="ship-sentence"]').inner_text() == now["ship_card"]["sentence"]
    assert [card.locator(f'tr[data-role="{r}"]').count() for r in ("teacher", "student", "baseline")] == [1, 1, 1]
    assert now["ship_card"]["cpu"]["model"] in page.locator('[data-testid="ship-cpu"]').inner_text()
    assert " ms (" in card.locator('tr[data-role="student"]').inner_text()  # p50 with its p10-p90 spread
    assert page.locator('[data-testid="ship-download"]').is_visible()
    stats = page.locator("#job-stats").inner_text()
    assert "top-1 (final, exported)" in stats and f"{job['top1']:.1f}" in stats
    assert page.locator('[data-testid="exported-checkpoint"]').inner_text().startswith("Exported from the final checkpoint")
    # Hover: every series of the top-1 chart at that epoch (below the ship card: scrolled into view first).
    page.locator("#chart-top1").scroll_into_view_if_needed()
    box = page.locator("#chart-top1").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tip = page.locator("#chart-top1 ~ .chart-tip")
    tip.wait_for()
    assert "epoch" in tip.inner_text() and tip.locator(".key").count() >= 3  # heads, teacher, agreement
    shot(page, "job-distilled")
    # The same number in `watch`.
    proc = live.cli("watch", str(job["id"]))
    assert proc.returncode == 0, proc.stderr
    assert f"top-1 {job['top1']:.1f}% on the validation images (final checkpoint, the one exported)" in proc.stdout
    assert gain_line(base, now["top1"]) in proc.stdout
    assert "what to ship:" in proc.stdout and now["ship_card"]["sentence"] in proc.stdout


def test_compare_view_puts_jobs_side_by_side(page, live, distilled, finished_teacher):
    job, baseline = distilled
    page.goto(f"/jobs/{job['id']}")
    page.click("#compare-link")
    page.wait_for_url("**/compare?ids=*")
    params = page.locator('[data-testid="compare-params"]')
    page.wait_for_function("document.querySelectorAll('[data-testid=compare-params] tr[data-param]').length > 0")
    row = params.locator('tr[data-param="distillation.type"]').inner_text()
    # Picking the dataset applied the small-data preset: its distillation type (soft), not the schema's hard.
    assert SMALL_DATA.values["distillation.type"] in row and "none" in row and "Distillation" in row
    assert params.locator('tr[data-param="train.seed"]').count() == 0  # only what differs
    page.select_option("#add-job", str(finished_teacher["id"]))
    page.wait_for_function("document.querySelector('#compare-chart').dataset.points > 0 && "
                           "document.querySelectorAll('#compare-chart path.series').length === 3")
    exported = page.locator('[data-testid="compare-exported"]').inner_text()
    assert "p50 latency" in exported and " MB" in exported and "of fp32" in exported and "measured on" in exported
    ship = page.locator('[data-testid="compare-ship"]').inner_text()
    assert f"#{job['id']}" in ship and live.job(job["id"])["ship_card"]["sentence"] in ship
    assert f"ids={job['id']},{baseline['id']},{finished_teacher['id']}" in page.url
    shot(page, "compare")


def test_export_report_in_words(page, live, finished_teacher):
    page.goto(f"/jobs/{finished_teacher['id']}")
    table = page.locator('[data-testid="report-table"]')
    table.wait_for()
    head = table.locator("thead").text_content()
    for words in ("top-1 %", "p50 latency", "size", "size vs fp32"):
        assert words in head
    gate = page.locator('[data-testid="parity-gate"]').inner_text()
    assert gate.startswith("PASS") and "Parity gate — Passed: the exported model's top-1 is within" in gate
    # A RegNetY teacher has no Linear layer to quantize dynamically: no pretend "int8" row.
    assert table.locator('tr[data-variant="int8"]').count() == 0
    assert "not quantized: this model has no Linear layers to quantize dynamically" in page.locator(
        '[data-testid="report-notes"]').inner_text()
    assert " MB" in table.locator('tr[data-variant="ptl"]').inner_text()
    wrap = page.locator("#report")
    assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "report columns are cut off"
    assert not page.locator('[data-testid="report-details"]').is_visible()  # raw fields behind the disclosure


def test_submit_form_presets_warnings_words_and_effective_lr(page, live):
    page.goto("/submit")
    assert "RandAugment" in page.locator('label[for="f-train.aa"]').inner_text()
    option = page.locator("#dataset option", has_text=live.dataset)
    option.wait_for(state="attached")
    page.select_option("#dataset", label=option.inner_text())
    assert field(page, "data.img_size").input_value() == "32" and field(page, "train.hflip").input_value() == "0"
    assert field(page, "train.mixup").input_value() == "0"
    assert "small data" in page.locator("#presets button.active").inner_text().lower()
    fresh = '[data-testid="warnings"][data-state="fresh"]'  # the server's answer (POST /warnings) for the form as it is
    before = page.locator(fresh).text_content()
    assert " px on" not in before and "Mixup" not in before and "mirrored" not in before  # the preset fits
    page.click('#presets button[data-preset="imagenet"]')
    assert field(page, "data.img_size").input_value() == "224"
    warnings = page.locator(fresh).inner_text()
    assert "224 px on" in warnings and "Mixup/CutMix" in warnings and "a mirrored 2 is not a 2" in warnings
    field(page, "train.lr").fill("0.0005")
    field(page, "train.batch_size").fill("128")
    field(page, "resources.processes").fill("2")
    lr_note = page.locator('[data-testid="effective-lr"]').inner_text()
    assert "effective peak lr 2.50e-4 = 0.0005 × global batch 256 / 512" in lr_note


def test_clone_and_edit_starts_from_the_job(page, live, finished_teacher):
    page.goto(f"/jobs/{finished_teacher['id']}")
    page.locator('#config-body tr[data-param="train.lr"]').wait_for()
    assert "changed" in page.locator('#config-body tr[data-param="data.img_size"]').get_attribute("class")
    page.check("#only-changed")
    assert page.locator('#config-body tr[data-param="train.seed"]').is_hidden()
    page.click("#clone-link")
    page.wait_for_function("document.querySelector('#clone-note') && !document.querySelector('#clone-note').hidden")
    assert page.locator("input[name=kind][value=teacher]").is_checked()
    assert page.locator("#job-name").input_value() == "digits-teacher-copy"
    assert field(page, "data.img_size").input_value() == "32" and field(page, "train.epochs").input_value() == "1"
    assert field(page, "data.train").input_value() == f"dataset:{live.dataset}/train"


def test_cancelled_page_is_grey_and_the_banner_goes(page, live):
    body = {"kind": "teacher", "name": "to-cancel-ui", "config": teacher_config(live.dataset, epochs=50)}
    job_id = live.api("POST", "/jobs", json=body).json()["id"]
    page.goto(f"/jobs/{job_id}")
    page.locator("#cancel-btn").wait_for()
    page.once("dialog", lambda d: d.accept())
    page.click("#cancel-btn")
    page.wait_for_function("document.querySelector('#job-state').textContent === 'cancelled'", timeout=120_000)
    page.wait_for_function("document.querySelector('#flash').hidden")  # "Cancel requested." is gone
    assert page.locator("#job-state").evaluate("e => getComputedStyle(e).color") == "rgb(85, 93, 107)"  # grey
    box = page.locator('[data-testid="job-error"]')
    assert box.get_attribute("class") == "notice-box" and box.inner_text().startswith("Cancelled:")
    assert "No report" in page.locator("#report").inner_text()
    assert page.locator("#progress-text").inner_text().startswith("Cancelled")


def test_failed_page_shows_the_reason_and_what_survived(page, live, finished_teacher):
    """A run that failed at its parity gate after training: its row as the worker leaves it (the reason,
    the checkpoint and the rejected report registered), built from the finished teacher's real files."""
    from sqlalchemy import select

    from server.db import Database
    from server.models import Artifact, Job, User

    database = Database(f"sqlite:///{live.workdir}/var/distillery.db")
    with database.session() as s:
        owner = s.scalar(select(User).where(User.name == "alice"))
        src = s.get(Job, finished_teacher["id"])
        job = Job(kind="teacher", name="gate-failed", state="failed", config=src.config, owner_id=owner.id, attempt=1,
                  progress={**src.progress}, metrics={**src.metrics},
                  error="export failed (exit 3): parity gate failed: .ptl top-1 dropped 4.0 pt, more than max_drop 1.0")
        s.add(job)
        s.flush()
        for a in src.artifacts:
            if a.format in ("checkpoint", "report"):
                s.add(Artifact(job_id=job.id, kind=a.kind, format=a.format, path=a.path, size=a.size, sha256=a.sha256,
                               meta={**(a.meta or {}), **({"rejected": True} if a.format == "report" else {})}))
        s.commit()
        job_id = job.id
    database.dispose()
    page.goto(f"/jobs/{job_id}")
    box = page.locator('[data-testid="job-error"]')
    box.wait_for()
    text = box.inner_text()
    assert text.startswith("Failed: export failed (exit 3): parity gate failed")
    survived = page.locator('[data-testid="survived"]').inner_text()
    assert "the trained checkpoint" in survived and "the rejected export report" in survived
    page.locator('[data-testid="report-table"]').wait_for()
    assert "rejected by the parity gate" in page.locator("#report").inner_text()
    assert "No report yet" not in page.locator("#report").inner_text()
    shot(page, "job-failed")


def test_phone_width_cards_with_the_download_button_in_view(page, live, finished_teacher):
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.goto(f"/jobs/{finished_teacher['id']}")
        button = page.locator('[data-testid="download-ptl"]')
        button.wait_for()
        button.scroll_into_view_if_needed()
        b = button.bounding_box()
        assert b["x"] >= 0 and b["x"] + b["width"] <= 390, f"download button off screen: {b}"
        assert page.evaluate("document.documentElement.scrollWidth") <= 392
        page.wait_for_function("document.querySelector('#chart-top1 .grid text') !== null")
        size = page.locator("#chart-top1 .grid text").first.evaluate(
            "t => parseFloat(getComputedStyle(t).fontSize) * t.ownerSVGElement.getBoundingClientRect().width"
            " / t.ownerSVGElement.viewBox.baseVal.width")
        assert size >= 11, f"chart axis text is {size:.1f} px on a phone"
        shot(page, "job-phone-cards")
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})



# ---- issue 20: the phone model first, artifacts grouped, one loss, clone keeps what made the job, 390 px ----

def test_job_page_puts_the_phone_model_first_and_groups_the_artifacts(page, live, distilled, tmp_path):
    job, _ = distilled
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.goto(f"/jobs/{job['id']}")
        box = page.locator('[data-testid="phone-model"]')
        box.wait_for()
        button = page.locator('[data-testid="phone-download-ptl"]')
        # Above the progress card and inside the first screen of a phone, not 3,000 px down.
        assert button.bounding_box()["y"] + button.bounding_box()["height"] <= 844
        assert box.bounding_box()["y"] < page.locator("#job-progress").bounding_box()["y"]
        ptl = next(a for a in job["artifacts"] if a["format"] == "ptl")
        with page.expect_download() as info:
            button.click()
        path = tmp_path / info.value.suggested_filename
        info.value.save_as(path)
        assert path.suffix == ".ptl" and hashlib.sha256(path.read_bytes()).hexdigest() == ptl["sha256"]
        # The live service exports with --no-pte: the page says so instead of leaving the .pte out silently.
        page.locator('[data-testid="pte-missing"]').wait_for()
        assert "--no-pte" in page.locator('[data-testid="pte-missing"]').inner_text()
        groups = page.locator("#artifacts-body tr.group").evaluate_all("rows => rows.map(r => r.dataset.groupHead)")
        assert groups[0] == "phone" and groups[-1] == "training", groups
        assert page.locator('#artifacts-body tr[data-format="ptl"]').get_attribute("data-group") == "phone"
        assert page.locator('#artifacts-body tr[data-format="checkpoint"]').get_attribute("data-group") == "training"
        shot(page, "job-phone-model")
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def test_header_loss_is_the_number_the_chart_legend_shows(page, live, distilled):
    job, _ = distilled
    page.goto(f"/jobs/{job['id']}")
    page.wait_for_function("document.querySelector('#chart-loss + .legend') !== null")
    stat = page.locator('#job-stats .stat[data-stat^="loss"]')
    label, value = stat.locator("dt").inner_text(), stat.locator("dd").inner_text()
    legend = page.locator("#chart-loss + .legend").inner_text()
    series = "epoch mean" if "epoch mean" in label else "train loss"
    assert f"{series} {value}" in legend, (label, value, legend)


def test_clone_of_a_distill_job_keeps_its_teacher_baseline_seeds_and_dataset(page, live, distilled, finished_teacher):
    job, _ = distilled
    ckpt = next(a for a in finished_teacher["artifacts"] if a["format"] == "checkpoint")
    page.goto(f"/jobs/{job['id']}")
    page.click("#clone-link")
    page.wait_for_function("document.querySelector('#clone-note') && !document.querySelector('#clone-note').hidden")
    assert page.locator("#teacher-from").input_value() == str(ckpt["id"])
    assert field(page, "teacher.checkpoint").input_value() == str(ckpt["id"])
    assert page.locator("#baseline").is_checked() and page.locator("#seeds").input_value() == str(job["seeds"])
    assert page.locator("#dataset option:checked").inner_text().startswith(live.dataset)


def test_picking_a_teacher_names_its_dataset_in_the_select(page, live, finished_teacher):
    page.goto("/submit")
    page.check("input[name=kind][value=distill]")
    ckpt = next(a for a in finished_teacher["artifacts"] if a["format"] == "checkpoint")
    page.locator(f'#teacher-from option[value="{ckpt["id"]}"]').wait_for(state="attached")
    page.locator(f'#dataset option:has-text("{live.dataset}")').wait_for(state="attached")
    assert page.locator("#dataset").input_value() == ""  # "— enter paths below —" until something sets the data
    page.select_option("#teacher-from", str(ckpt["id"]))
    page.wait_for_function("document.querySelector('#teacher-hint').textContent.includes('set from job')")
    assert page.locator("#dataset option:checked").inner_text().startswith(live.dataset)


def test_every_page_fits_a_390px_phone(page, live, distilled, finished_teacher):
    job, baseline = distilled
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        for path in ("/", f"/jobs/{job['id']}", f"/jobs/{finished_teacher['id']}", "/submit", f"/submit?from={job['id']}",
                     f"/compare?ids={job['id']},{baseline['id']},{finished_teacher['id']}"):
            page.goto(path)
            page.wait_for_timeout(1500)  # the pages fill in from the API
            assert not phone_layout_problems(page), f"{path} on a 390px phone: {phone_layout_problems(page)}"
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
