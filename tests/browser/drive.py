"""Widget-level helpers for lesson-specific browser tests (ipywidgets 8 in JupyterLab 4).

Widgets are found the way a learner finds them: by the text they show — a widget's
``description`` label (``IntSlider(description="Order")`` → ``"Order"``) or a button's text.
Every helper takes the Playwright ``page`` first and an optional ``scope`` (a Locator, e.g. one
cell's output area) to disambiguate when a label appears more than once. All of them wait
(``timeout`` seconds) for the widget to exist, so they can be called right after
``run_all_cells``.

Typical lesson test (see ``test_demo_widgets.py``)::

    from .lab import open_notebook, run_all_cells
    from . import drive

    def test_lesson_03_split(lab_page, lab):
        open_notebook(lab_page, lab, "notebooks/03-split.ipynb")
        run_all_cells(lab_page)
        drive.set_slider(lab_page, "Subpage", 17)
        drive.select_toggle(lab_page, "Kernel", "after")
        ms = drive.measure(lab_page, lambda: drive.click_button(lab_page, "Split"),
                           "split_huge_page", name="split")
        assert ms < 2.0
        assert "thp_split" in drive.read_output_text(lab_page, "Events")

API
---
``notebook(page)``                                  Locator of the visible notebook
``find_widget(page, label, kind=None, scope=None)``  Locator of the widget labelled ``label``
``click_button(page, label, scope=None)``            click an ``ipywidgets.Button``
``set_slider(page, label, value, scope=None)``       set an Int/FloatSlider through its readout
``set_text(page, label, text, submit=True)``         type into Text/Textarea/IntText/..., Enter
``select_toggle(page, label, option)``               pick one of ToggleButtons / RadioButtons
``select_dropdown(page, label, option)``             pick a Dropdown option
``read_output_text(page, css_or_label)``             text of a widget value / output element
``wait_for_text(page, text, scope=None)``            wait until an output shows ``text``
``measure(page, action, until, ...)``                seconds from ``action()`` until ``until``
                                                      appears in an output; prints it
"""

from __future__ import annotations

import re
import time
from typing import Callable, Pattern

DEFAULT_TIMEOUT = 15.0  # seconds

# ipywidgets 8 DOM classes for each kind of widget (the outer element of the view).
KINDS = {
    "slider": ".widget-slider",
    "int-slider": ".widget-slider",
    "float-slider": ".widget-slider",
    "range-slider": ".widget-slider",
    "text": ".widget-text",
    "textarea": ".widget-textarea",
    "toggle-buttons": ".widget-toggle-buttons",
    "radio": ".widget-radio",
    "dropdown": ".widget-dropdown",
    "select": ".widget-select",
    "checkbox": ".widget-checkbox",
    "html": ".widget-html",
    "label": ".widget-label",
    "progress": ".widget-hprogress, .widget-vprogress",
}

# "a CSS selector" for read_output_text: starts with . # [ or is tag.class / tag#id / tag[attr].
_CSS_START = re.compile(r"^\s*([.#\[]|[a-z][a-z0-9-]*[.#\[])")


def _exact(text: str) -> Pattern[str]:
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def notebook(page):
    """Locator of the notebook shown in the main area."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first


def _root(page, scope):
    return scope if scope is not None else notebook(page)


def _wait_unique(locator, what: str, timeout: float, index: int | None):
    """Wait until ``locator`` matches; return the single match (or ``index``-th)."""
    deadline = time.monotonic() + timeout
    while True:
        n = locator.count()
        if n == 1 or (n > 1 and index is not None):
            return locator.nth(index or 0)
        if n > 1:
            raise AssertionError(
                f"{what}: {n} widgets match; pass scope=<locator> or index=<n> to choose"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: no such widget after {timeout:.0f}s")
        time.sleep(0.1)


def find_widget(page, label: str, kind: str | None = None, scope=None, *,
                index: int | None = None, timeout: float = DEFAULT_TIMEOUT):
    """Locator of the ipywidget whose description label (or, for buttons, text) is ``label``.

    ``kind`` narrows the search to one widget type (a key of ``KINDS``, e.g. ``"slider"``,
    ``"text"``, ``"toggle-buttons"``, or ``"button"``). Raises AssertionError when nothing or
    more than one widget matches (use ``scope`` or ``index`` then).
    """
    root = _root(page, scope)
    if kind == "button":
        loc = root.locator("button.jupyter-button").filter(has_text=_exact(label))
    else:
        # (not every view carries .jupyter-widgets, e.g. ToggleButtons; all are Lumino widgets)
        css = KINDS[kind] if kind else ".lm-Widget"
        labelled = root.locator(css).filter(
            has=page.locator(":scope > label.widget-label, :scope > .widget-label-basic")
            .filter(has_text=_exact(label))
        )
        if kind is None:
            loc = labelled.or_(root.locator("button.jupyter-button").filter(has_text=_exact(label)))
        else:
            loc = labelled
    return _wait_unique(loc, f"widget {label!r}" + (f" ({kind})" if kind else ""), timeout, index)


def click_button(page, label: str, scope=None, *, index: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
    """Click the ``ipywidgets.Button`` showing ``label``."""
    btn = find_widget(page, label, "button", scope, index=index, timeout=timeout)
    btn.scroll_into_view_if_needed()
    btn.click()


def set_slider(page, label: str, value: float, scope=None, *, index: int | None = None,
               timeout: float = DEFAULT_TIMEOUT) -> None:
    """Set the slider labelled ``label`` to ``value`` the way a person can: by typing into
    its (editable) readout, or, if the readout is hidden/read-only, with the arrow keys."""
    w = find_widget(page, label, "slider", scope, index=index, timeout=timeout)
    w.scroll_into_view_if_needed()
    readout = w.locator(".widget-readout")
    if readout.count() and readout.is_visible() and readout.get_attribute("contenteditable") == "true":
        readout.click()
        readout.press("Control+a")
        readout.press_sequentially(str(value))
        readout.press("Enter")
        _wait_readout(readout, value, timeout)
        return
    # No editable readout: move the handle with the keyboard until aria-valuenow matches.
    handle = w.locator(".noUi-handle").first
    handle.focus()
    for _ in range(10_000):
        now = float(handle.get_attribute("aria-valuenow"))
        if abs(now - float(value)) < 1e-9:
            return
        handle.press("ArrowRight" if now < float(value) else "ArrowLeft")
    raise AssertionError(f"slider {label!r} never reached {value}")


def _wait_readout(readout, value, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        txt = readout.inner_text().strip()
        try:
            if abs(float(txt) - float(value)) < 1e-9:
                return
        except ValueError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"slider readout shows {readout.inner_text()!r}, wanted {value}")


def set_text(page, label: str, text: str, submit: bool = True, scope=None, *,
             index: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Replace the text of the Text/Textarea/IntText/FloatText labelled ``label``; press Enter
    (``submit=True``) so ``continuous_update=False`` widgets send the value to the kernel."""
    w = find_widget(page, label, None, scope, index=index, timeout=timeout)
    field = w.locator("input, textarea").first
    field.scroll_into_view_if_needed()
    field.fill(str(text))
    if submit:
        field.press("Enter")


def select_toggle(page, label: str, option: str, scope=None, *, index: int | None = None,
                  timeout: float = DEFAULT_TIMEOUT) -> None:
    """Choose ``option`` in the ToggleButtons (or RadioButtons) labelled ``label``."""
    w = find_widget(page, label, None, scope, index=index, timeout=timeout)
    w.scroll_into_view_if_needed()
    btn = w.locator("button.widget-toggle-button").filter(has_text=_exact(option))
    if btn.count():
        btn.first.click()
        return
    radio = w.locator("label").filter(has_text=_exact(option)).locator("input[type=radio]")
    if radio.count():
        radio.first.check()
        return
    raise AssertionError(f"{label!r} has no option {option!r}")


def select_dropdown(page, label: str, option: str, scope=None, *, index: int | None = None,
                    timeout: float = DEFAULT_TIMEOUT) -> None:
    """Choose the option shown as ``option`` in the Dropdown labelled ``label``."""
    w = find_widget(page, label, "dropdown", scope, index=index, timeout=timeout)
    w.locator("select").select_option(label=option)


def read_output_text(page, css_or_label: str, scope=None, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Text a learner reads.

    * a CSS selector (starts with ``.``, ``#``, ``[``, or ``tag.``/``tag ``…): the inner text
      of the *last* matching element in the notebook (the latest output);
    * otherwise a widget description label: the widget's value as shown — the content of an
      HTML/HTMLMath widget, a slider's readout, a text field's value, the selected toggle, or
      the widget's text without its label.
    """
    root = _root(page, scope)
    if _CSS_START.match(css_or_label):
        loc = root.locator(css_or_label).last
        loc.wait_for(state="attached", timeout=timeout * 1000)
        return loc.inner_text()
    w = find_widget(page, css_or_label, None, scope, timeout=timeout)
    for sel in (".widget-html-content", ".widget-readout"):
        part = w.locator(sel)
        if part.count():
            return part.first.inner_text()
    field = w.locator("input:not([type=radio]):not([type=checkbox]), textarea, select")
    if field.count():
        return field.first.input_value()
    selected = w.locator("button.mod-active")
    if selected.count():
        return selected.first.inner_text()
    full = w.inner_text()
    return full.replace(css_or_label, "", 1).strip()


def wait_for_text(page, text: str | Pattern[str], scope=None, *,
                  timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait until some cell output (widgets included) in the notebook shows ``text``."""
    root = _root(page, scope)
    target = root.locator(".jp-OutputArea-output").filter(has_text=text).first
    target.wait_for(state="attached", timeout=timeout * 1000)


def measure(page, action: Callable[[], object], until: str | Pattern[str], scope=None, *,
            timeout: float = DEFAULT_TIMEOUT, name: str | None = None) -> float:
    """Run ``action()`` (e.g. ``lambda: click_button(page, "Split")``) and return the seconds
    until ``until`` appears in an output — the click-to-update latency a learner feels.
    Prints ``latency[<name>]: <ms> ms`` (visible with ``pytest -s`` or in the failure report).
    """
    t0 = time.perf_counter()
    action()
    wait_for_text(page, until, scope, timeout=timeout)
    dt = time.perf_counter() - t0
    print(f"latency[{name or until}]: {dt * 1000:.0f} ms")
    return dt


#: Arm a click-to-view measurement (page.evaluate with [button, view, quiet ms, timeout ms]); then
#: ``window.__thplabLatency`` resolves with [ms to the first mutation of ``view``, ms to the frame
#: after its last one, [ms of each websocket message received meanwhile]] counted from the click,
#: once ``view`` changed and stayed unchanged for ``quiet`` ms.  The messages are recorded only
#: where ``window.__thplabMessages`` was installed (benchmarks/bench_widgets.py does).
ARM_CLICK_TO_VIEW = """
([button, view, quiet, timeout]) => {
  window.__thplabLatency = new Promise((resolve, reject) => {
    const before = view.innerHTML;
    let t0 = null, first = null, last = null;
    const obs = new MutationObserver(() => {
      if (t0 === null) return;
      if (first === null) first = performance.now();
      requestAnimationFrame(() => { last = performance.now(); });
    });
    obs.observe(view, {subtree: true, childList: true, characterData: true, attributes: true});
    button.addEventListener('click', () => { t0 = performance.now(); }, {capture: true, once: true});
    const started = performance.now();
    const poll = () => {
      const now = performance.now();
      if (last !== null && now - last >= quiet && view.innerHTML !== before) {
        obs.disconnect();
        const msgs = (window.__thplabMessages || []).filter(t => t >= t0 && t <= last).map(t => t - t0);
        resolve([first - t0, last - t0, msgs]);
      } else if (now - started > timeout) {
        obs.disconnect();
        reject(new Error(t0 === null ? 'the click never arrived' : 'the view did not change'));
      } else {
        setTimeout(poll, 20);
      }
    };
    poll();
  });
  return true;
}
"""
