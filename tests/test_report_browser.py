"""The report in a real headless browser (Debian's chromium, driven by Python playwright).

``browser_check(path)`` is the reusable part: it opens a report over file:// with the network
cut off and returns the problems it sees (an empty list when the page is fine). The tests run it
on a report built from the tiny fixture notebooks; set ``LANDSCAPE_REPORT_HTML`` to a real report
(e.g. ``outputs/smoke/report.html``) to check that one as well.

Without chromium or playwright the tests skip locally and fail under CI (``CI`` set), where
.ci installs chromium with apt-get. ``playwright install`` is never needed: the system chromium
is launched through ``executable_path``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from landscape_utils.report import html as report

CHROMIUM = os.environ.get("LANDSCAPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIXTURES = Path(__file__).parent / "fixtures" / "report"

# Runs in the page: every in-page link's target, counted by id (CSS.escape keeps odd ids safe).
_LINKS_JS = """() => [...document.querySelectorAll('a[href^="#"]')].map(a => {
    const id = decodeURIComponent(a.getAttribute('href').slice(1));
    return [a.getAttribute('href'), document.querySelectorAll('[id="' + CSS.escape(id) + '"]').length];
})"""
_IMGS_JS = """() => [...document.images].map(i => [i.src.slice(0, 40), i.complete, i.naturalWidth, i.naturalHeight])"""
_IN_VIEW_JS = """(id) => { const r = document.getElementById(id).getBoundingClientRect();
    return [r.top, window.innerHeight, window.scrollY, location.hash]; }"""


def browser_missing() -> str | None:
    """Why the browser check cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python package playwright is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} not found (apt-get install -y chromium)"
    return None


def require_browser() -> None:
    """Skip (or fail under CI) when chromium or playwright is missing."""
    reason = browser_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser check required under CI: {reason}")
        pytest.skip(reason)


def browser_check(path: Path, follow_links: int = 12, screenshot: Path | None = None) -> list[str]:
    """Open the report at ``path`` in headless chromium, offline, and list what is wrong.

    Checked: the page loads with a title and visible headings; no request leaves the file (any
    http(s) request is blocked and reported); every <img> loaded (``naturalWidth > 0``); every
    in-page ``#`` link has exactly one target; following table-of-contents links (up to
    ``follow_links``, spread over the list) scrolls their targets into view; no console errors
    or uncaught page errors.
    """
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    console: list[str] = []
    external: list[str] = []

    def route(r):
        url = r.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            return r.continue_()
        external.append(url)
        return r.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: m.type == "error" and console.append(m.text))
            page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
            page.route("**/*", route)
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            if not page.title().strip():
                problems.append("page has no title")
            h1 = page.locator("h1")
            if h1.count() != 1 or not h1.first.is_visible():
                problems.append(f"expected one visible h1, found {h1.count()}")
            if page.locator("h2:visible").count() < 2:
                problems.append("fewer than two visible h2 headings")
            for src, complete, w, h in page.evaluate(_IMGS_JS):
                if not complete or w == 0 or h == 0:
                    problems.append(f"image did not load: {src}...")
            links = page.evaluate(_LINKS_JS)
            problems += [f"in-page link {href} has {n} targets" for href, n in links if n != 1]
            toc = page.locator("nav.report-toc a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
            if not toc:
                problems.append("no table-of-contents links")
            step = max(1, len(toc) // max(1, follow_links))
            for href in (toc[::step] + toc[-1:])[: follow_links + 1]:
                page.locator(f'nav.report-toc a[href="{href}"]').click()
                page.wait_for_timeout(50)
                top, height, scroll_y, hash_ = page.evaluate(_IN_VIEW_JS, href[1:])
                if hash_ != href or not (-2 <= top < height):
                    problems.append(f"following {href} left its target at y={top:.0f} (viewport {height}, "
                                    f"scrollY {scroll_y}, hash {hash_!r})")
            if screenshot:
                page.goto(Path(path).resolve().as_uri())
                page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    problems += [f"request to {u} (the report must work offline)" for u in external]
    problems += [f"console error: {c}" for c in console]
    return problems


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory) -> Path:
    require_browser()  # before the build: no point building for a skipped check
    sys.path.insert(0, str(FIXTURES))
    import fixture_notebooks as fx

    tree = fx.write_tree(tmp_path_factory.mktemp("browser") / "smoke", ("mlp", "cnn"))
    return report.build_report(tree, tree / "report.html", ("mlp", "cnn"))


def test_fixture_report_in_browser(fixture_report):
    require_browser()
    assert browser_check(fixture_report) == []


def test_browser_check_catches_broken_pages(fixture_report, tmp_path):
    """The check itself must fail on a broken image, a dead anchor and an external script."""
    require_browser()
    html = fixture_report.read_text(encoding="utf-8")
    html = html.replace('src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1)
    html = html.replace("</main>", '<a href="#no-such-id">dead</a><script src="https://cdn.example/x.js">'
                                   "</script></main>", 1)
    broken = tmp_path / "broken.html"
    broken.write_text(html, encoding="utf-8")
    problems = browser_check(broken, follow_links=1)
    assert any("image did not load" in p for p in problems), problems
    assert any("#no-such-id has 0 targets" in p for p in problems), problems
    assert any("https://cdn.example/x.js" in p for p in problems), problems


@pytest.mark.skipif(not os.environ.get("LANDSCAPE_REPORT_HTML"), reason="set LANDSCAPE_REPORT_HTML to check a real report")
def test_real_report_in_browser():
    require_browser()
    path = Path(os.environ["LANDSCAPE_REPORT_HTML"])
    assert path.is_file(), f"{path} does not exist"
    assert browser_check(path, follow_links=40) == []
