"""Click-to-view latency of the ScenarioExplorer against a trivial widget round trip.

Both live in one fixture notebook (``fixtures/click_latency.ipynb``), so they share the kernel,
the page and the machine's load: a Button whose handler increments a Label (the cheapest round
trip ipywidgets has: click -> comm message -> Python handler -> state update -> re-render) and
``ScenarioExplorer("fork-pin-split", levels=(0, 10))``, which on each Step steps two kernels and
replaces the value of one persistent ``ipywidgets.HTML`` with a new SVG.

The time is measured in the page: from the click event on the button to the animation frame
after the last change of the widget's DOM, once the view stayed unchanged for ``QUIET_MS``
(settled), and to the first change of its DOM.
The clicks alternate between the two widgets; the scenario runs twice (Reset in between). Both medians and their ratio are printed; the
ratio (issue #10 aims at <= 1.5x) is reported, not asserted -- speed targets live in
``benchmarks/``. The test fails when a click does not change the view it should.
"""

from __future__ import annotations

import re
import statistics

import pytest

from . import drive
from .lab import open_notebook, run_all_cells

pytestmark = pytest.mark.browser

FIXTURE = "tests/browser/fixtures/click_latency.ipynb"
STEPS = 6          # fork-pin-split has six steps; Step is disabled after the last
ROUNDS = 2         # run the scenario twice (Reset in between, untimed): 12 clicks of each widget
QUIET_MS = 300     # the view counts as settled after this long without a DOM change
TIMEOUT_MS = 15_000


def _click_to_view_ms(page, button, view) -> tuple[float, float]:
    """``(first change, settled)`` in ms after a click on ``button``."""
    page.evaluate(drive.ARM_CLICK_TO_VIEW, [button.element_handle(), view.element_handle(), QUIET_MS, TIMEOUT_MS])
    button.scroll_into_view_if_needed()
    button.click()
    first, settled, _ = page.evaluate("() => window.__thplabLatency")
    return first, settled


def _summary(name, times):
    first = [f for f, _ in times]
    ms = [s for _, s in times]
    return (f"latency[{name}]: settled median {statistics.median(ms):.0f} ms, min {min(ms):.0f}, "
            f"max {max(ms):.0f} over {len(ms)} clicks ({', '.join(f'{x:.0f}' for x in ms)}); "
            f"first change median {statistics.median(first):.0f} ms")


def test_explorer_step_against_trivial_round_trip(lab_page, lab):
    page = lab_page
    open_notebook(page, lab, FIXTURE)
    run_all_cells(page)

    nb = drive.notebook(page)
    add_one = drive.find_widget(page, "Add one", "button")
    counter = nb.locator(".widget-label").filter(has_text=re.compile(r"^count: \d+$")).first
    counter.wait_for(state="attached")
    explorer = nb.locator(".jp-OutputArea-output").filter(has_text="Split a shared, pinned THP").first
    step = drive.find_widget(page, "Step", "button", scope=explorer)
    plot = explorer.locator(".widget-html").filter(has=page.locator("div.thplab-diagram")).first

    trivial, stepping = [], []
    for round_ in range(ROUNDS):
        if round_:
            drive.click_button(page, "Reset", scope=explorer)
            page.wait_for_function("b => !b.disabled", arg=step.element_handle())
        for i in range(STEPS):
            trivial.append(_click_to_view_ms(page, add_one, counter))
            stepping.append(_click_to_view_ms(page, step, explorer.locator(".widget-vbox").first))
            # each step drew a new diagram into the same HTML widget (one, not one per step)
            plot.wait_for(state="attached")
            assert explorer.locator("div.thplab-diagram > svg").count() == 1, f"step {i + 1}"
        assert step.is_disabled(), "Step should be disabled once the scenario has run to its end"
    assert counter.inner_text().strip() == f"count: {ROUNDS * STEPS}"

    ratio = statistics.median(s for _, s in stepping) / statistics.median(s for _, s in trivial)
    print(_summary("trivial Button -> Label", trivial))
    print(_summary("ScenarioExplorer Step -> new SVG", stepping))
    print(f"latency ratio explorer / trivial: {ratio:.2f}x (issue #10 aims at <= 1.5x; reported, "
          "not asserted)")
