"""Lessons 08 and 09 in a real browser: drive their widgets and check what a learner reads.

The expected text is computed here from thplab (the same model the kernel runs), so the test
checks that the widgets show the model's answer, not a recorded copy. ``drive.measure`` prints
click-to-update latencies (``pytest -s`` shows them).
"""

from __future__ import annotations

import re
import time

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


def _wait_gone(scope, text: str, timeout: float = drive.DEFAULT_TIMEOUT) -> None:
    """Wait until ``text`` is no longer shown in ``scope`` (e.g. after a reset)."""
    deadline = time.monotonic() + timeout
    while text in scope.inner_text():
        assert time.monotonic() < deadline, f"{text!r} still shown after {timeout:.0f}s"
        time.sleep(0.1)


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


def _race_points(level, schedule):
    """``str(step)`` of every point a RaceView shows after the given button presses (CPU names)."""
    race = RACES["split-vs-gup-fast"](level)
    shown = []
    for cpu in schedule:
        step = race.interleaving.step(cpu)
        shown.append(str(step))
    race.interleaving.close()
    return shown


def _played(level):
    race = RACES["split-vs-gup-fast"](level)
    race.play()
    return race.outcome().splitlines()[1:]


def test_lesson_09_race_view_steps_and_plays(lab_page, lab):
    page = lab_page
    open_notebook(page, lab, LESSON_09)
    run_all_cells(page)
    scope = _cell_output(page, "Kernel")
    assert drive.read_output_text(page, "Kernel") == "old kernel (level 0)"

    # Step by hand on the old kernel: CPU1 reads the PMD with interrupts off, then CPU0 marks it
    # and its TLB-flush IPI has to wait for CPU1.
    schedule = ["CPU1", "CPU1", "CPU0", "CPU0", "CPU0", "CPU0"]
    points = _race_points(0, schedule)
    assert "TLB-flush IPI waits for CPU1" in points[-1] and points[-1].endswith("[waiting]")
    for cpu, point in zip(schedule, points):
        drive.measure(page, lambda cpu=cpu: drive.click_button(page, f"Step {cpu}", scope=scope),
                      point, scope=scope, name=f"Step {cpu}")
    shown = _norm(scope.inner_text())
    assert "pmdp_splitting_flush: TLB-flush IPI waits for CPU1" in shown
    assert "results:" in shown and "CPU0 ->" not in shown          # the split is still waiting

    # Play the whole race on the old kernel: the split succeeds and keeps the pin on subpage 5.
    played0 = _played(0)
    results0 = next(line for line in played0 if line.startswith("results:"))
    assert "CPU0 -> 0" in results0
    drive.measure(page, lambda: drive.click_button(page, "Play the race", scope=scope), results0,
                  scope=scope, name="Play the race (level 0)")
    shown = _norm(scope.inner_text())
    for line in played0:
        assert _norm(line) in shown, f"level 0: {line!r} not shown"

    # After patch 07: the same race ends with -16 (-EBUSY), and the IPI wait is in __split_huge_pmd().
    drive.select_toggle(page, "Kernel", "after patch 07 (level 7)")
    _wait_gone(scope, "CPU0 -> 0")                                  # the toggle resets the race
    played7 = _played(7)
    results7 = next(line for line in played7 if line.startswith("results:"))
    assert "CPU0 -> -16" in results7
    drive.measure(page, lambda: drive.click_button(page, "Play the race", scope=scope), results7,
                  scope=scope, name="Play the race (level 7)")
    shown = _norm(scope.inner_text())
    for line in played7:
        assert _norm(line) in shown, f"level 7: {line!r} not shown"
    assert "__split_huge_pmd: pmdp_clear_flush: TLB-flush IPI waits for CPU1" in shown
