"""Fixtures for the real-browser tests.

* ``lab``      (session)  a JupyterLab server from this venv, isolated in a temp dir (lab.py)
* ``browser``  (session)  headless Debian Chromium through Playwright's sync API
* ``lab_page`` (function) a fresh browser context + page; on teardown every kernel is shut
                          down so that one notebook at a time uses the 2 cores

When Chromium (or Playwright) is missing the tests fail with a clear message under CI=true and
are skipped with the reason otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .lab import ARTIFACTS, CHROMIUM_FLAGS, LabServer, chromium_path

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"browser test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    # screenshots of an earlier run would be mistaken for this one's
    for old in ARTIFACTS.glob("*.png") if ARTIFACTS.is_dir() else []:
        old.unlink()
    server = LabServer(workdir=tmp_path_factory.mktemp("jupyterlab"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        if server.log_path and server.log_path.exists():
            (ARTIFACTS / "jupyterlab.log").write_bytes(server.log_path.read_bytes())


@pytest.fixture(scope="session")
def browser():
    exe = chromium_path()
    if not Path(exe).exists():
        _unavailable(
            f"Chromium not found at {exe} (install Debian's `chromium` package, e.g. via "
            "`make test` as root, or set THPLAB_CHROMIUM=/path/to/chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    pw = sync_playwright().start()
    try:
        # Playwright gives every launch a fresh temporary --user-data-dir of its own.
        b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
    except Exception as exc:  # noqa: BLE001
        pw.stop()
        _unavailable(f"could not launch {exe}: {exc}")
    try:
        yield b
    finally:
        b.close()
        pw.stop()


@pytest.fixture
def lab_page(lab, browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"[{m.type}] {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    page.console_errors = console  # for diagnostics in failure messages
    try:
        yield page
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            name = request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
            try:
                page.screenshot(path=str(ARTIFACTS / f"FAILED-{name}.png"))
            except Exception:  # noqa: BLE001
                pass
        context.close()
        lab.shutdown_all_sessions()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
