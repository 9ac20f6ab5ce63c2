"""The login form with the demo's shell line pasted in: logged in, and the token the pages send to the
API (static/login.js keeps it in sessionStorage) is the bare token, not the line."""
from __future__ import annotations

from tests.browser.test_dashboard import browser, pytestmark  # noqa: F401  (the module's Chromium; its marks and skip)


def test_pasted_export_line_logs_in_and_the_pages_call_the_api_with_the_token(browser, live):  # noqa: F811
    context = browser.new_context(base_url=live.url)
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    try:
        tab.goto("/login")
        tab.fill("#token", f"export DISTILLERY_TOKEN='{live.token}'")
        tab.click("#login-form button[type=submit]")
        tab.wait_for_url(f"{live.url}/")
        assert tab.evaluate("sessionStorage.getItem('distillery.token')") == live.token
    finally:
        context.close()
    assert not errors, errors


