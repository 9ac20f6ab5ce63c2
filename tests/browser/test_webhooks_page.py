"""Issue 22: webhooks from the dashboard, in a real headless Chromium against the live `distillery up`:
add one through the form (its secret shown once), see a cancelled job's event delivered to a receiver
on 127.0.0.1 (signature checked there), read it in the table, remove the webhook; the page fits a phone."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser.conftest import CHROMIUM, phone_layout_problems, teacher_config
from tests.browser.test_dashboard import browser, logged_in_tab, shot  # noqa: F401  (browser is a fixture)
from tests.test_webhooks import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.browser]
if not Path(CHROMIUM).exists() and os.environ.get("CI", "").lower() != "true":
    pytestmark.append(pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, "
                                              "scripts/ci-deps.sh, or set DISTILLERY_CHROMIUM)"))


@pytest.fixture(scope="module")
def page(browser, live):  # noqa: F811
    yield from logged_in_tab(browser, live)


def test_add_a_webhook_hear_a_job_end_and_remove_it(page, live):
    receiver = Receiver("page-receiver-secret-0123456789")
    try:
        page.goto("/webhooks")
        page.fill("#webhook-url", "ftp://not-http")
        page.click("#add-webhook-btn")
        page.locator('[data-error-for="url"]').wait_for()  # the API's 400, next to its field
        page.fill("#webhook-url", receiver.url)
        page.fill("#webhook-secret", receiver.secret)
        page.click("#add-webhook-btn")
        page.locator('[data-testid="new-secret"]').wait_for()
        assert receiver.secret in page.locator('[data-testid="new-secret"]').inner_text()
        hook_id = next(h["id"] for h in live.api("GET", "/webhooks").json()["webhooks"] if h["url"] == receiver.url)
        row = page.locator(f'#webhooks-body tr[data-webhook-id="{hook_id}"]')
        row.wait_for()
        assert receiver.url in row.inner_text()
        cell = f'#webhooks-body tr[data-webhook-id="{hook_id}"] [data-testid=deliveries]'

        body = {"kind": "teacher", "name": "page-hooked", "config": teacher_config(live.dataset, epochs=50)}
        job = live.api("POST", "/jobs", json=body).json()
        assert live.api("POST", f"/jobs/{job['id']}/cancel").status_code in (200, 202)
        page.wait_for_function(f"document.querySelector('{cell}') && "
                               f"document.querySelector('{cell}').textContent.includes('delivered')", timeout=90_000)
        assert f"job {job['id']} cancelled: delivered" in page.locator(cell).inner_text()
        event = next(r for r in receiver.received if r["body"]["job"]["id"] == job["id"])
        assert event["verified"]

        page.set_viewport_size({"width": 390, "height": 844})
        try:
            page.wait_for_timeout(300)
            assert not phone_layout_problems(page), phone_layout_problems(page)
            shot(page, "webhooks-phone")
        finally:
            page.set_viewport_size({"width": 1280, "height": 900})

        page.once("dialog", lambda d: d.accept())
        row.locator("button.danger").click()
        page.wait_for_function(f"!document.querySelector('#webhooks-body tr[data-webhook-id=\"{hook_id}\"]')")
        assert hook_id not in [h["id"] for h in live.api("GET", "/webhooks").json()["webhooks"]]
    finally:
        receiver.close()
