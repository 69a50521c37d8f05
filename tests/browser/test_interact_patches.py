"""Lessons 08 and 09 in a real browser: drive their widgets and check what a learner reads.

The expected text is computed here from thplab (the same model the kernel runs), so the test
checks that the widgets show the model's answer, not a recorded copy. ``drive.measure`` prints
click-to-update latencies (``pytest -s`` shows them).
"""

from __future__ import annotations

import re

import pytest

from thplab.races import RACES
from thplab.scenarios import SCENARIOS

from . import drive
from .lab import open_notebook, run_all_cells

pytestmark = pytest.mark.browser

LESSON_08 = "notebooks/08-patch-06-split-huge-page.ipynb"
LESSON_09 = "notebooks/09-patch-07-generic-splitting.ipynb"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _cell_output(page, label: str):
    """The output area of the cell whose widget has the description ``label`` (e.g. "Kernel")."""
    widget = drive.find_widget(page, label)
    return widget.locator("xpath=ancestor::div[contains(@class, 'jp-Cell-outputArea')][1]")


def _explorer_expectations(level):
    """What the ScenarioExplorer shows for fork-pin-split at ``level`` after "Run all"."""
    run = SCENARIOS["fork-pin-split"].start(level)
    run.run_all()
    summary = run.summary().split("\nlevel ")[0].splitlines()
    splits = [line.strip() for line in summary if re.match(r"\s*\d+\. split_huge_page", line)]
    return splits, [_norm(line) for line in run.table().splitlines()[2:]]


def test_lesson_08_scenario_explorer_before_and_after_patch_06(lab_page, lab):
    page = lab_page
    open_notebook(page, lab, LESSON_08)
    run_all_cells(page)
    scope = _cell_output(page, "Kernel")
    drive.wait_for_text(page, "after 0/6 steps: no THP yet", scope=scope)

    splits6, table6 = _explorer_expectations(6)
    splits5, table5 = _explorer_expectations(5)
    assert splits6[-1].endswith("-> 0  [thp_split_page +1, thp_split_pmd +2]")
    assert splits5[-1].endswith("-> -16  [thp_split_page_failed +1]")

    # The toggle starts on "after patch 06"; Run all runs both kernels.
    assert drive.read_output_text(page, "Kernel") == "after patch 06 (level 6)"
    drive.measure(page, lambda: drive.click_button(page, "Run all", scope=scope), splits6[-1],
                  scope=scope, name="Run all (level 6)")
    shown = _norm(scope.inner_text())
    for line in splits6 + table6:
        assert _norm(line) in shown, f"level 6: {line!r} not shown"

    drive.measure(page, lambda: drive.select_toggle(page, "Kernel", "before patch 06 (level 5)"),
                  splits5[-1], scope=scope, name="toggle to level 5")
    shown = _norm(scope.inner_text())
    for line in splits5 + table5:
        assert _norm(line) in shown, f"level 5: {line!r} not shown"
    assert _norm(splits6[-1]) not in shown

    drive.measure(page, lambda: drive.select_toggle(page, "Kernel", "after patch 06 (level 6)"),
                  splits6[-1], scope=scope, name="toggle back to level 6")
    drive.measure(page, lambda: drive.click_button(page, "Reset", scope=scope),
                  "after 0/6 steps: no THP yet", scope=scope, name="Reset")
