"""Lesson 13 in a real browser: the step-throughs of split_huge_page() show what the model recorded.

Drives both StepThrough widgets (level 0 and level 10) with "Next" and the "Point" slider, and
checks that the text shown for each point is the recorder's: the point's name and the struct
page / vmstat / page-table changes ``thplab.widgets.describe_step`` derives from
``Recorder.diff``, recomputed here from thplab. Prints click-to-update latencies.
"""

from __future__ import annotations

import re
import time

import pytest

from thplab.lessons import compare
from thplab.widgets import describe_step

from . import drive
from .lab import open_notebook, run_all_cells

pytestmark = pytest.mark.browser

LESSON = "notebooks/13-old-vs-new.ipynb"


def _shown(scope) -> str:
    return "\n".join(line.rstrip() for line in scope.locator("pre").first.inner_text().splitlines())


def _expect(scope, recorder, pages, i) -> None:
    want = describe_step(recorder, i, pages)
    shown = _shown(scope)
    assert shown == want, f"point {i}:\nshown:\n{shown}\nrecorder says:\n{want}"
    step = recorder.steps[i]
    assert shown.splitlines()[0] == f"{i}/{len(recorder.steps) - 1}  {step}"
    if i:
        for pfn, field, old, new in recorder.diff(i, pages)["pages"][:12]:
            # flags are shown by name (+compound_lock, -head); every other field as numbers
            row = f"pfn {pfn:#x}: flags " if field == "flags" else f"pfn {pfn:#x}: {field} {old} -> {new}"
            assert row in shown
        for name, old, new in recorder.diff(i, pages)["vmstat"]:
            assert f"/proc/vmstat {name}: {old} -> {new}" in shown


def _header(recorder, i) -> re.Pattern:
    return re.compile(re.escape(f"{i}/{len(recorder.steps) - 1}  {recorder.steps[i]}"))


def _move(scope, action, recorder, i, name) -> None:
    """Run ``action`` and wait until *this* widget shows point ``i`` (the lesson also prints every
    point as text, so a page-wide wait would match that twin at once); print the latency."""
    t0 = time.perf_counter()
    action()
    scope.locator("pre").filter(has_text=_header(recorder, i)).first.wait_for(state="attached", timeout=30_000)
    print(f"latency[{name}]: {(time.perf_counter() - t0) * 1000:.0f} ms")


@pytest.mark.parametrize("level", [0, 10])
def test_step_through_of_pinned_split_matches_the_recorder(lab_page, lab, level):
    page = lab_page
    open_notebook(page, lab, LESSON)
    run_all_cells(page)

    run, result, rec = compare.pinned_split(level)
    pages = run.subpages()
    last = len(rec.steps) - 1
    title = f"split_huge_page() of a pinned THP, level {level} -> {result}"
    scope = page.locator(".jp-OutputArea-output").filter(has_text=title).first
    scope.wait_for(state="attached", timeout=30_000)
    scope.scroll_into_view_if_needed()
    _expect(scope, rec, pages, 0)

    # "Next" walks forward one point at a time
    for i in range(1, min(last - 1, 3) + 1):
        _move(scope, lambda: drive.click_button(page, "Next", scope=scope), rec, i,
              name=f"level {level}: Next -> point {i}")
        _expect(scope, rec, pages, i)

    # the slider jumps anywhere, e.g. the last point and back to the middle
    _move(scope, lambda: drive.set_slider(page, "Point", last, scope=scope), rec, last,
          name=f"level {level}: Point -> {last}")
    _expect(scope, rec, pages, last)
    middle = last // 2 + 1
    _move(scope, lambda: drive.set_slider(page, "Point", middle, scope=scope), rec, middle,
          name=f"level {level}: Point -> {middle}")
    _expect(scope, rec, pages, middle)
    assert drive.read_output_text(page, "Point", scope=scope).strip() == str(middle)
