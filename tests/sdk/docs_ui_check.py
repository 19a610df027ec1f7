"""Opens the relay's docs UI (/docs) in headless Chromium with every request to another host
refused, waits for Swagger UI to render the operations, checks they are all there, and saves a
screenshot.

Usage: python docs_ui_check.py BASE_URL CHROMIUM SCREENSHOT EXPECTED_OPERATIONS
"""

import sys

from playwright.sync_api import sync_playwright

SUMMARIES = [
    "List sessions, newest first",
    "Get one session: state, timestamps, duration",
    "Create a service and its routing",
    "Create an application server and its API key",
    "Create a SIP user",
]


def main() -> None:
    base_url, chromium, screenshot, expected = sys.argv[1:5]
    expected = int(expected)
    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def only_the_relay(route):
            if route.request.url.startswith(base_url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_relay)
        page.goto(f"{base_url}/docs/", wait_until="load")
        page.wait_for_selector(".opblock", timeout=30_000)
        page.wait_for_function(
            f"document.querySelectorAll('.opblock').length >= {expected}", timeout=30_000
        )
        operations = page.locator(".opblock").count()
        text = page.inner_text("body")
        page.screenshot(path=screenshot, full_page=True)
        browser.close()

    assert outside == [], f"the page tried to reach other hosts: {outside}"
    assert operations == expected, f"{operations} operations shown, {expected} expected"
    for summary in SUMMARIES + ["/v1/sessions/{id}", "/v1/tokens/introspect"]:
        assert summary in text, f"{summary!r} is not on the page"
    print(f"docs ui: ok, {operations} operations, screenshot {screenshot}")


if __name__ == "__main__":
    main()
