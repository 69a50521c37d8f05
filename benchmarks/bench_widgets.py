"""Click to settled view in Chromium: thplab's widgets against a trivial widget round trip (issue #10).

Opt-in and slow (a JupyterLab server, a kernel and headless Chromium; about 2 minutes for 24
clicks of each widget), with the real-browser test's set-up (Playwright, ``/usr/bin/chromium``
or ``THPLAB_CHROMIUM``).  Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/bench_widgets.py                   # 24 clicks of each
    .venv/bin/python benchmarks/bench_widgets.py --clicks 40 --baseline /tmp/thplab-main

One notebook, one kernel, one page, so every widget shares the machine's load.  The clicks
go round the widgets in turn:

* **trivial**: a Button whose handler adds one to a Label (the cheapest ipywidgets round
  trip: click -> comm message -> handler -> one state update -> re-render);
* **explorer**: ``ScenarioExplorer("fork-pin-split", levels=(0, 10))``, Step (Reset, untimed,
  after the last step);
* **explorer views replayed**: a Button that puts the explorer's own views, computed
  beforehand, into one ``ipywidgets.HTML`` in turn -- the same messages and DOM work as a
  Step with no Python in the click (the floor a Step could reach);
* **baseline explorer** (``--baseline DIR``): the same widget from another checkout's
  ``thplab/`` (e.g. ``git archive`` of main), imported as a second package;
* **step-through**: ``StepThrough`` of a played race, Next (its swimlane's current point is
  restyled, the SVG itself is not sent again);
* **race view**: ``RaceView("split-vs-gup-fast")``, Step CPU0 / CPU1 in turn (the swimlane
  redrawn with one more point).

Each click is timed in the page, as ``tests/browser/test_click_latency.py`` does: from the
click event to the animation frame after the widget's last DOM change, once the view stayed
unchanged for 300 ms (settled); also to its first change.  To tell the kernel's time from the
front end's, the page also records when each websocket message arrives: "last message" is the
last one before the view settled, "after it" is the front end's work from there.  Printed:
medians (min-max) over all clicks, the settled ratio of each widget to the trivial one (issue
#10 aims at <= 1.5x for the explorer), and the load average.  A benchmark, not a test: nothing
is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUIET_MS = 300
TIMEOUT_MS = 15_000

# Installed before JupyterLab loads: the arrival time of every websocket message.
_JS_MESSAGES = """
(() => {
  window.__thplabMessages = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', () => window.__thplabMessages.push(performance.now()));
    }
  };
})();
"""

_TRIVIAL = """\
import ipywidgets as widgets
from IPython.display import display

add_one = widgets.Button(description="Add one")
counter = widgets.Label(value="count: 0")


def on_add_one(_button):
    counter.value = f"count: {int(counter.value.split()[-1]) + 1}"


add_one.on_click(on_add_one)
display(widgets.HBox([add_one, counter]))
"""

_THPLAB = """\
import itertools

import ipywidgets
from IPython.display import display
from thplab import diagrams, widgets  # diagrams first, as the lessons import it
from thplab.races import RACES


def labelled(name, view):
    box = ipywidgets.VBox([ipywidgets.HTML(f"<b>bench: {name}</b>"), view.widget])
    return box


race = RACES["split-vs-gup-fast"](0)
race.play()

# The explorer's own views, computed beforehand and replayed: the same messages and the
# same DOM work with no model, text twins or drawing in the click -- the floor of a Step.
_views = []
_offline = widgets.ScenarioExplorer("fork-pin-split", levels=(0, 10))
while not _offline.run.finished:
    _offline.step()
    _views.append(_offline.view.value)
replay_button, replay_view = ipywidgets.Button(description="Replay"), ipywidgets.HTML(_views[-1])


_replayed = itertools.count()


def on_replay(_button):
    replay_view.value = _views[next(_replayed) % len(_views)]


replay_button.on_click(on_replay)
display(ipywidgets.VBox([ipywidgets.HTML("<b>bench: replayed views</b>"), replay_button, replay_view]))
display(labelled("explorer", widgets.ScenarioExplorer("fork-pin-split", levels=(0, 10))),
        labelled("step-through", widgets.StepThrough(race.interleaving, pages=[race.head, race.head + 5],
                                                     title="split_huge_page() vs get_user_pages_fast()")),
        labelled("race view", widgets.RaceView("split-vs-gup-fast", levels=(0, 10))))
"""

_BASELINE = """\
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("thplab_baseline", {init!r}, submodule_search_locations=[{pkg!r}])
baseline = importlib.util.module_from_spec(spec)
sys.modules["thplab_baseline"] = baseline
spec.loader.exec_module(baseline)
from thplab_baseline import diagrams as _d, widgets as _w  # noqa: E402,F401

display(labelled("baseline explorer", _w.ScenarioExplorer("fork-pin-split", levels=(0, 10))))
"""


def _cell(i, source):
    return {"cell_type": "code", "execution_count": None, "id": f"bench-{i}", "metadata": {}, "outputs": [],
            "source": source}


def _notebook(baseline):
    sources = [_TRIVIAL, _THPLAB]
    if baseline:
        pkg = Path(baseline).resolve() / "thplab"
        sources.append(_BASELINE.format(init=str(pkg / "__init__.py"), pkg=str(pkg)))
    return {"cells": [_cell(i, s) for i, s in enumerate(sources)],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


class Target:
    """One widget to click: ``next_button()`` gives the button of its next timed click (after any
    untimed reset), ``view`` the element whose DOM settles."""

    def __init__(self, name, page, box, buttons, reset=None):
        self.name, self.page, self.box = name, page, box
        self.buttons, self.reset, self.k = buttons, reset, 0
        self.view = box
        self.times = []

    def next_button(self):
        from tests.browser import drive

        for _ in range(2 * len(self.buttons) + 1):
            label = self.buttons[self.k % len(self.buttons)]
            self.k += 1
            button = drive.find_widget(self.page, label, "button", scope=self.box)
            if not button.is_disabled():
                return button
            if self.reset and all(drive.find_widget(self.page, b, "button", scope=self.box).is_disabled()
                                  for b in self.buttons):
                self._reset()
        raise AssertionError(f"{self.name}: no button to click")

    def _reset(self):
        from tests.browser import drive

        if self.reset == "slider":   # StepThrough: back to point 0
            drive.set_slider(self.page, "Point", 0, scope=self.box)
        else:
            drive.click_button(self.page, self.reset, scope=self.box)
        self.page.wait_for_timeout(2 * QUIET_MS)


def _click(page, target):
    from tests.browser import drive

    button = target.next_button()
    page.evaluate(drive.ARM_CLICK_TO_VIEW, [button.element_handle(), target.view.element_handle(), QUIET_MS,
                                           TIMEOUT_MS])
    button.scroll_into_view_if_needed()
    button.click()
    first, settled, msgs = page.evaluate("() => window.__thplabLatency")
    target.times.append((first, settled, msgs[-1] if msgs else None))


def _stats(xs):
    xs = [x for x in xs if x is not None]
    return f"{statistics.median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})" if xs else "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clicks", type=int, default=24, help="timed clicks of each widget (default 24)")
    ap.add_argument("--baseline", help="another checkout whose thplab/ gives a second explorer to compare")
    ap.add_argument("--screenshot", help="save a screenshot of the whole notebook here (PNG) after the clicks")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from tests.browser import drive
    from tests.browser.lab import (CHROMIUM_FLAGS, LabServer, chromium_path, full_screenshot, open_notebook,
                                   run_all_cells)

    # The kernel must import this checkout's thplab, whatever the venv has installed.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="thplab-bench-widgets-") as tmp:
        lab = LabServer(workdir=Path(tmp))
        lab.start()
        try:
            (lab.root / "bench_widgets.ipynb").write_text(json.dumps(_notebook(args.baseline)))
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.add_init_script(_JS_MESSAGES)
                open_notebook(page, lab, "bench_widgets.ipynb")
                run_all_cells(page)
                nb = drive.notebook(page)
                column = nb.locator(".jp-OutputArea-output").first.evaluate("n => n.getBoundingClientRect().width")

                def box(name):
                    return nb.locator(".widget-vbox").filter(has=page.get_by_text(f"bench: {name}", exact=True)).first

                trivial = Target("trivial Button -> Label", page, nb, ["Add one"])
                trivial.view = nb.locator(".widget-label").filter(has_text="count:").first
                targets = [trivial, Target("explorer Step", page, box("explorer"), ["Step"], reset="Reset"),
                           Target("explorer views replayed (no Python)", page, box("replayed views"), ["Replay"])]
                if args.baseline:
                    targets.append(Target("baseline explorer Step", page, box("baseline explorer"), ["Step"],
                                          reset="Reset"))
                targets += [Target("step-through Next", page, box("step-through"), ["Next"], reset="slider"),
                            Target("race view Step CPU", page, box("race view"), ["Step CPU1", "Step CPU0"],
                                   reset="Reset")]
                for _ in range(args.clicks):
                    for t in targets:
                        _click(page, t)
                if args.screenshot:
                    full_screenshot(page, Path(args.screenshot))
                browser.close()
        finally:
            lab.stop()
    load_after = os.getloadavg()

    print(f"# click to settled view -- {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average before {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}, after "
          f"{load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}; notebook output column {column:.0f} px; "
          f"{args.clicks} clicks each, medians (min-max) in ms\n")
    print("| widget | settled | first change | last message | after it | settled / trivial |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(s for _, s, _ in targets[0].times)
    for t in targets:
        settled = [s for _, s, _ in t.times]
        after = [s - m for _, s, m in t.times if m is not None]
        print(f"| {t.name} | {_stats(settled)} | {_stats([f for f, _, _ in t.times])} | "
              f"{_stats([m for _, _, m in t.times])} | {_stats(after)} | {statistics.median(settled) / base:.2f}x |")
    print("\nTarget (issue #10): explorer Step settled <= 1.5x the trivial round trip.")


if __name__ == "__main__":
    main()
