"""The book builds offline with no warnings, and every page of _toc.yml renders in a real browser.

The browser is Debian's headless Chromium (the Makefile installs it), driven by Playwright. Pages
are served from 127.0.0.1 and every request to another host is blocked and counted as a failure:
the book must render with no network. A screenshot of the landing page is kept in test-artifacts/.
"""

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

import yaml

from conftest import ARTIFACTS, ROOT, toc_files

REPO = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].removeprefix("https://github.com/")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def test_book_builds_offline_with_zero_warnings(built_book):
    result, html = built_book
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "WARNING" not in log, "\n".join(line for line in log.splitlines() if "WARNING" in line)
    for doc in toc_files():
        assert (html / f"{doc}.html").exists(), doc


@pytest.fixture(scope="module")
def served_book(built_book):
    result, html = built_book
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    handler = functools.partial(QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", html
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def page_problems(browser, base, html, doc):
    """Open one page and return (what is wrong with it, the page) ."""
    problems, external = [], []
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def route(r):
        if urlparse(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: None if r.url in external else problems.append(f"failed: {r.url}"))
    response = page.goto(f"{base}/{doc}.html", wait_until="load")
    if response is None or response.status != 200:
        return [f"HTTP {response and response.status}"], page
    page.wait_for_load_state("networkidle")

    # the title: an <h1> that the browser tab repeats
    h1 = page.locator("article h1").first.inner_text().replace("#", "").replace("¶", "").strip()
    if not h1:
        problems.append("no <h1> title")
    elif not page.title().startswith(h1.split("\n")[0][:40]):
        problems.append(f"title {page.title()!r} does not start with the heading {h1!r}")

    # math: every math element typeset by MathJax
    page.wait_for_function("!window.MathJax || (window.MathJax.startup && window.MathJax.startup.promise)")
    page.evaluate("window.MathJax ? window.MathJax.startup.promise : null")
    math = page.evaluate("""() => [...document.querySelectorAll('article .math')].map(
        e => e.querySelector('mjx-container') !== null)""")
    if not all(math):
        problems.append(f"{math.count(False)} of {len(math)} math elements not rendered")

    # images: loaded, with a size
    broken = page.evaluate("""() => [...document.querySelectorAll('img')]
        .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)""")
    problems += [f"broken image: {src}" for src in broken]

    # figures of the notebooks: real alt text (not the file's hash) and a caption under them
    figures = page.evaluate("""() => [...document.querySelectorAll('article img')]
        .filter(i => i.src.endsWith('.png') && !i.closest('.bd-header-article'))
        .map(i => [i.getAttribute('alt') || '', !!i.closest('figure')?.querySelector('figcaption')])""")
    for alt, captioned in figures:
        if not alt or re.fullmatch(r"[0-9a-f]{64}(\.png)?", alt):
            problems.append(f"figure without alt text (alt={alt!r})")
        if not captioned:
            problems.append(f"figure without a caption (alt={alt[:60]!r})")

    # nbval's markers live in cell tags, never in the code a reader sees
    text = page.locator("article").inner_text()
    if "NBVAL_" in text:
        problems.append("an NBVAL_ comment shows on the page")

    # a caption's Markdown copy for Colab (tools/colab_view.py) is skipped: the caption shows once
    if re.search(r"(^|\n)Figure\. ", text):
        problems.append("a caption's Colab copy (a 'Figure.' paragraph) shows on the page")

    # internal links: the file exists, and so does the anchor
    for href in set(page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")):
        url, fragment = urldefrag(href)
        parsed = urlparse(url)
        if parsed.hostname != "127.0.0.1":
            continue
        target = html / unquote(parsed.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            problems.append(f"broken link: {href}")
        elif fragment and target.suffix == ".html" and not re.search(
                rf'id="{re.escape(unquote(fragment))}"', target.read_text(encoding="utf-8")):
            problems.append(f"broken anchor: {href}")

    # every notebook page has a Colab launch button that opens this very notebook
    if doc.startswith("chapters/"):
        colab = f"https://colab.research.google.com/github/{REPO}/blob/main/{doc}.ipynb"
        if not page.locator(f'.bd-header-article a[href="{colab}"]').count():
            problems.append(f"no Colab launch button to {colab}")

    problems += [f"external request (the book must render offline): {u}" for u in external]
    return problems, page


@pytest.mark.parametrize("doc", toc_files())
def test_page_renders_in_chromium(served_book, browser, doc):
    base, html = served_book
    problems, page = page_problems(browser, base, html, doc)
    if doc == toc_files()[0]:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "landing.png"), full_page=True)
    page.close()
    assert not problems, f"{doc}:\n" + "\n".join(problems)


def test_pages_with_math_and_figures_are_checked(served_book):
    """The checks above must have something to check: math on notation, a figure in chapter 0."""
    _, html = served_book
    assert 'class="math' in (html / "book" / "notation.html").read_text()
    assert re.search(r'<img[^>]+\.png', (html / "chapters" / "00_how_to_use.html").read_text())


def test_landing_page_screenshot_is_kept(served_book, browser):
    path = Path(ARTIFACTS / "landing.png")
    if not path.exists():  # when run on its own
        base, html = served_book
        _, page = page_problems(browser, base, html, toc_files()[0])
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        page.close()
    assert path.stat().st_size > 10_000
