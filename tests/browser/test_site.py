"""The course website (``make site``) in headless Chromium.

The site is built once, from the lessons ``make test-notebooks`` left in build/executed/ (a
lesson missing there is run by the build). Pages are opened from file:// with every http(s)
request aborted and counted: the site must need none. On the index, the course map, lessons
01 and 16 and the glossary: no error output, the diagrams drawn, every internal link resolving
to a file of the build (and its #fragment to an id there), external links listed, not fetched;
on each lesson, the Binder link of that lesson; on lesson 16, the recorded run, labelled.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from .lab import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
OWNER = "example-owner"
BINDER = f"https://mybinder.org/v2/gh/{OWNER}/thplab/HEAD?urlpath=lab/tree/lessons/"
LESSON_PAGES = ["00-index", "01-thp-primer", "16-live-kernel-lab"]
PAGES = ["index", *LESSON_PAGES, "glossary"]


class _Anchors(HTMLParser):
    """Every ``id`` and ``<a href>`` of a page."""

    def __init__(self):
        super().__init__()
        self.ids, self.hrefs = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def _anchors(path: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(path.read_text())
    return parser


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """Build the site once; return its directory."""
    root = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, str(REPO / "etc" / "website" / "build.py"), "--owner", OWNER,
           "--src", str(root / "src"), "--out", str(root / "html")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    print(done.stdout)
    assert done.returncode == 0, f"site build failed:\n{done.stdout}\n{done.stderr}"
    return root / "html"


@pytest.fixture(scope="module")
def opened(site, browser):
    """Open every page of PAGES once: ``{name: (text, links, svg boxes, search boxes)}``, and the
    http(s) requests the pages tried."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requests: list[str] = []

    def route(r):
        if r.request.url.startswith(("http://", "https://")):
            requests.append(r.request.url)
            r.abort()
        else:
            r.continue_()

    context.route("**/*", route)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    seen = {}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in PAGES:
        page.goto((site / f"{name}.html").as_uri(), wait_until="load")
        svgs = page.eval_on_selector_all(
            "div.cell_output svg", "els => els.map(e => { const b = e.getBoundingClientRect(); "
            "return [b.width, b.height]; })")
        searches = page.locator(".search-button-field:visible, .search-button:visible").count()
        seen[name] = (page.inner_text("main"), page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"),
                      svgs, searches)
        page.screenshot(path=str(ARTIFACTS / f"site-{name}.png"))
    context.close()
    assert not errors, f"JavaScript errors on the site: {errors}"
    return seen, requests


def test_no_request_leaves_file_urls(opened):
    _, requests = opened
    assert requests == [], f"the site fetched from the network at view time: {requests}"


@pytest.mark.parametrize("name", PAGES)
def test_page_has_no_error_output_and_one_search_box(name, site, opened):
    text, _, _, searches = opened[0][name]
    assert "Traceback" not in text and not re.search(r"\b\w+Error: ", text), f"{name}: an error output"
    html = (site / f"{name}.html").read_text()
    assert 'class="output traceback' not in html and 'class="output stderr' not in html, name
    assert searches == 1, f"{name}: {searches} search boxes"


@pytest.mark.parametrize("name", LESSON_PAGES)
def test_lesson_diagrams_and_binder_link(name, opened):
    _, links, svgs, _ = opened[0][name]
    assert svgs and all(w > 100 and h > 50 for w, h in svgs), f"{name}: diagrams missing or not drawn: {svgs}"
    assert BINDER + f"{name}.ipynb" in links, f"{name}: no Binder link to this lesson"
    assert not [link for link in links if link.startswith(BINDER) and not link.endswith(f"/{name}.ipynb")]


def test_live_lab_shows_the_recorded_run_labelled(opened):
    from thplab import live

    text = opened[0]["16-live-kernel-lab"][0]
    recorded = live.load_recorded()
    assert f"RECORDED on Linux {recorded.kernel}, {recorded.date} -- not this machine" in text
    if platform.release() != recorded.kernel:
        assert platform.release() not in text, "the build machine's kernel is on the page"


def test_internal_links_resolve_external_listed(site, opened):
    """Every link of every page of the build, not only those opened."""
    external, broken = set(), []
    for path in sorted(site.rglob("*.html")):
        for href in _anchors(path).hrefs:
            parts = urlsplit(href)
            if parts.scheme in ("http", "https", "mailto"):
                external.add(href)
                continue
            assert not parts.scheme, f"{path.name}: link {href}"
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or not target.is_relative_to(site.resolve()):
                broken.append(f"{path.name}: {href}")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _anchors(target).ids:
                broken.append(f"{path.name}: {href} (no such id)")
    assert not broken, "links that do not resolve in the build:\n  " + "\n  ".join(broken)
    # The links the browser saw on the opened pages are file:// ones of the build, or external.
    for name, (_, links, _, _) in opened[0].items():
        for link in links:
            if link.startswith("file://"):
                assert Path(unquote(urlsplit(link).path)).is_relative_to(site.resolve()), f"{name}: {link}"
    print(f"\nexternal links on the site ({len(external)}, not fetched):")
    for href in sorted(external):
        print(f"  {href}")
