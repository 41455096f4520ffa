"""Real-browser plumbing shared by the widget's and the dashboard's Playwright tests: Debian's
Chromium, an app served by a real WSGI server in a thread, and axe-core for accessibility."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright
from werkzeug.serving import make_server

from tests.conftest import service_missing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# axe-core comes from npm (.ci/run installs it here unless PAYDIAL_AXE_JS names another copy).
AXE_JS = Path(
    os.environ.get(
        "PAYDIAL_AXE_JS",
        Path.home() / ".cache/paydial-node/node_modules/axe-core/axe.min.js",
    )
)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` on 127.0.0.1 in a real threaded WSGI server; yields its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless (skipped when absent, unless every service is required)."""
    if not CHROMIUM.exists():
        service_missing(f"Chromium is not installed at {CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of these impacts on the page, as `rule: selector` lines.

    https://github.com/dequelabs/axe-core/blob/develop/doc/API.md#api-name-axerun
    """
    if not AXE_JS.exists():
        service_missing(f"axe-core is not installed at {AXE_JS} (npm install axe-core@4)")
    page.add_script_tag(path=str(AXE_JS))
    found: list[str] = page.evaluate(
        """async impacts => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations
                .filter(v => impacts.includes(v.impact))
                .flatMap(v => v.nodes.map(n => `${v.id} (${v.impact}): ${n.target.join(" ")}`));
        }""",
        list(impacts),
    )
    return found
