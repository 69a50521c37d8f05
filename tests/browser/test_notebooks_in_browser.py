"""Every lesson notebook (and the harness's own fixture) runs cleanly in a real browser.

For each notebook: open it in JupyterLab (headless Chromium), wait for the kernel, Run All,
wait until nothing is queued, then require: no error output / traceback, no widget shown as
text (``HBox(children=...``, ``Error displaying widget``, ``model not found``), at least as
many live widget views as the notebook displays (and >= 1 if it uses widgets at all), and a
kernel that still answers, and at least the lesson's minimum of drawn diagrams
(``DIAGRAM_MINIMUM``: static ``div.thplab-diagram`` SVG outputs, every one of them drawn).
Screenshots land in ``test-artifacts/browser/``: ``<name>.png`` (the whole notebook) and
``<name>-diagram.png`` (one screen scrolled to the first diagram).
"""

from __future__ import annotations

import json
import os

import pytest

from .lab import (
    ARTIFACTS,
    OVERRIDES_FILE,
    check_report,
    diagram_screenshot,
    error_outputs,
    expected_widget_outputs,
    fixture_notebooks,
    full_screenshot,
    lesson_notebooks,
    notebook_report,
    open_notebook,
    run_all_cells,
    wait_for_diagrams,
    wait_for_widgets,
)

pytestmark = pytest.mark.browser

# Static diagram outputs each lesson must show (by its two-digit number): the core lessons two,
# every other lesson from 01 on one. Fixtures need none; a lesson missing here needs one.
DIAGRAM_MINIMUM = {
    "00": 0, "01": 2, "02": 2, "03": 1, "04": 1, "05": 1, "06": 2, "07": 1,
    "08": 2, "09": 2, "10": 1, "11": 1, "12": 1, "13": 2, "14": 2, "15": 2, "16": 1,
}


def _minimum(relpath):
    if relpath.parts[0] != "notebooks":
        return 0
    return DIAGRAM_MINIMUM.get(relpath.stem[:2], 1)


NOTEBOOKS = [pytest.param(p, _minimum(p), id=p.as_posix())
             for p in lesson_notebooks() + fixture_notebooks()]
# seconds for one notebook's Run All (raise it for a slow machine: THPLAB_BROWSER_RUN_TIMEOUT=900)
RUN_TIMEOUT = float(os.environ.get("THPLAB_BROWSER_RUN_TIMEOUT", "300"))


@pytest.mark.parametrize("relpath,min_diagrams", NOTEBOOKS)
def test_notebook_runs_in_browser(lab_page, lab, relpath, min_diagrams):
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
    diagrams = wait_for_diagrams(page)
    print(f"diagrams[{relpath.stem}]: {diagrams['rendered']} drawn of {diagrams['outputs']} "
          f"outputs, {diagrams['in_widgets']} in widgets (minimum {min_diagrams})")

    diagram_screenshot(page, ARTIFACTS / f"{relpath.stem}-diagram.png")
    shot = full_screenshot(page, ARTIFACTS / f"{relpath.stem}.png")
    problems = check_report(report, live_widgets_seen=max(seen, report["live_widget_outputs"]))
    if diagrams["rendered"] < diagrams["outputs"]:
        problems.append(f"only {diagrams['rendered']} of {diagrams['outputs']} diagram outputs are drawn")
    if diagrams["rendered"] < min_diagrams:
        problems.append(f"{diagrams['rendered']} diagram(s) drawn, the lesson needs at least {min_diagrams}")
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
