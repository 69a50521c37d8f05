"""Every lesson notebook (and the harness's own fixture) runs cleanly in a real browser.

For each notebook: open it in JupyterLab (headless Chromium), wait for the kernel, Run All,
wait until nothing is queued, then require: no error output / traceback, no widget shown as
text (``HBox(children=...``, ``Error displaying widget``, ``model not found``), at least as
many live widget views as the notebook displays (and >= 1 if it uses widgets at all), and a
kernel that still answers. A full screenshot lands in ``test-artifacts/browser/<name>.png``.
"""

from __future__ import annotations

import json
import os

import pytest

from .lab import (
    ARTIFACTS,
    OVERRIDES_FILE,
    check_report,
    error_outputs,
    expected_widget_outputs,
    fixture_notebooks,
    full_screenshot,
    lesson_notebooks,
    notebook_report,
    open_notebook,
    run_all_cells,
    wait_for_widgets,
)

pytestmark = pytest.mark.browser

NOTEBOOKS = lesson_notebooks() + fixture_notebooks()
# seconds for one notebook's Run All (raise it for a slow machine: THPLAB_BROWSER_RUN_TIMEOUT=900)
RUN_TIMEOUT = float(os.environ.get("THPLAB_BROWSER_RUN_TIMEOUT", "300"))


@pytest.mark.parametrize("relpath", NOTEBOOKS, ids=[p.as_posix() for p in NOTEBOOKS])
def test_notebook_runs_in_browser(lab_page, lab, relpath):
    page = lab_page
    open_notebook(page, lab, relpath)
    run_all_cells(page, timeout=RUN_TIMEOUT)

    report = notebook_report(page)
    want = expected_widget_outputs(report)
    # (a notebook that already failed need not wait for its widgets)
    seen = report["live_widget_outputs"]
    if want and not error_outputs(report):
        seen = wait_for_widgets(page, want)
    report = notebook_report(page)  # again, now that widget views had time to render

    shot = full_screenshot(page, ARTIFACTS / f"{relpath.stem}.png")
    problems = check_report(report, live_widgets_seen=max(seen, report["live_widget_outputs"]))
    assert not problems, (
        f"{relpath} in JupyterLab/Chromium:\n- " + "\n- ".join(problems)
        + f"\n(screenshot: {shot})\nbrowser console errors:\n" + "\n".join(page.console_errors[-20:])
    )


def test_lab_uses_repo_settings_overrides(lab):
    """The server applies etc/jupyterlab/overrides.json (e.g. windowing mode "defer"):
    JupyterLab serves the overridden values as the schema defaults."""
    wanted = json.loads(OVERRIDES_FILE.read_text())
    for plugin, values in wanted.items():
        schema = lab.api("GET", f"lab/api/settings/{plugin}")["schema"]
        for key, value in values.items():
            assert schema["properties"][key]["default"] == value, (plugin, key)
