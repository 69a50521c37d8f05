"""Worked example of a lesson-specific interaction test, on the harness's fixture notebook.

Owners of lessons: copy this shape (open → run all → drive widgets with ``drive`` → assert on
what the learner sees). ``drive.measure`` prints click-to-update latencies.
"""

from __future__ import annotations

import pytest

from . import drive
from .lab import open_notebook, run_all_cells, run_all_cells_via_menu

pytestmark = pytest.mark.browser

DEMO = "tests/browser/fixtures/demo_widgets.ipynb"


def test_demo_widgets_interaction(lab_page, lab):
    page = lab_page
    open_notebook(page, lab, DEMO)
    run_all_cells_via_menu(page)  # the menu path, as a learner does it (other tests use the command)

    drive.wait_for_text(page, "result: 3 (old)")
    # the repo's settings override is live in the page
    assert page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.notebookConfig.windowingMode"
    ) == "defer"
    assert drive.read_output_text(page, "Result") == "result: 3 (old)"
    assert drive.read_output_text(page, "Count") == "3"

    drive.set_slider(page, "Count", 5)
    drive.wait_for_text(page, "result: 5 (old)")

    drive.select_toggle(page, "Kernel", "new")
    drive.wait_for_text(page, "result: 5 (new)")
    assert drive.read_output_text(page, "Kernel") == "new"

    latency = drive.measure(page, lambda: drive.click_button(page, "Double"), "result: 10 (new)",
                            name="Double")
    drive.wait_for_text(page, "clicks: 1")
    assert drive.read_output_text(page, "Count") == "10"
    assert latency < 5.0, f"click-to-update took {latency:.2f}s"

    drive.set_text(page, "Name", "thp")
    drive.wait_for_text(page, "hello thp")
    assert drive.read_output_text(page, "Greeting") == "hello thp"

    assert drive.read_output_text(page, ".widget-label:text-matches('^clicks')") == "clicks: 1"
    assert "Progress" in drive.find_widget(page, "Progress", "progress").inner_text()


def test_run_all_command_is_idempotent(lab_page, lab):
    """Running everything twice in one session works (kernel state, widgets re-created)."""
    page = lab_page
    open_notebook(page, lab, DEMO)
    run_all_cells(page)
    drive.wait_for_text(page, "result: 3 (old)")
    run_all_cells(page)
    drive.wait_for_text(page, "result: 3 (old)")
    # old views are replaced, not duplicated
    drive.find_widget(page, "Count", "slider")
