"""ipywidgets views over the model, reused by every lesson.

Each class builds its controls in ``__init__``, exposes them as attributes
(so tests can set a value or ``.click()`` a button from Python), and shows
itself when it is the last expression of a cell.  Callbacks only call the
model and redraw; the logic lives in :mod:`thplab.scenarios`,
:mod:`thplab.trace`, :mod:`thplab.races` and :mod:`thplab.problems`.
"""

import asyncio
import html
import itertools

import ipywidgets as w

from . import viz
from .errors import ThplabError
from .problems import Problem
from .races import RACES
from .scenarios import SCENARIOS
from .series import PATCHES, patch_card
from .series.text import MODEL_ONLY, code_diff, function_text, kernel_functions, patch_text  # noqa: F401

__all__ = ["AddressSlicer", "ScenarioExplorer", "StepThrough", "RaceView", "Quiz", "PatchDiff",
           "MODEL_ONLY", "code_diff", "describe_step", "kernel_functions", "lane_style", "level_name", "level_labels",
           "patch_card", "patch_text", "parse_address", "slice_text"]

_PRE = "<pre style='font-size:12px;line-height:1.3;margin:0'>{}</pre>"


def _pre(text):
    return _PRE.format(html.escape(text))


def level_name(level):
    """A toggle's label for an RFC level (an int) or a kernel by name (``"v4.5"``)."""
    if isinstance(level, str):
        return {"v4.5": "merged, v4.5", "rfc-v1": "RFC v1 (level 10)", "v3.16": "old kernel (level 0)"}.get(level, level)
    return "old kernel (level 0)" if level == 0 else f"after patch {level:02d} (level {level})"


def level_labels(levels):
    """Toggle labels: "before/after patch NN" for a consecutive pair, else one name per level."""
    if len(levels) == 2 and all(isinstance(lv, int) for lv in levels) and levels[1] == levels[0] + 1:
        return [(f"before patch {levels[1]:02d} (level {levels[0]})", levels[0]),
                (f"after patch {levels[1]:02d} (level {levels[1]})", levels[1])]
    return [(level_name(lv), lv) for lv in levels]


class _View:
    widget = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


class AddressSlicer(_View):
    """Type a virtual address; see its bits cut into PGD/PUD/PMD/PTE indices, the entries and their bits."""

    def __init__(self, machine, pid, address):
        self.machine, self.pid = machine, pid
        self.address = w.Text(value=hex(address), description="Address", continuous_update=False,
                              layout=w.Layout(width="320px"))
        self.output = w.HTML()
        self.address.observe(lambda change: self.refresh(), names="value")
        self.widget = w.VBox([w.HTML("<b>Address slicer</b> (hex like 0x7f0000205abc, or decimal; "
                                     "press Enter)"), self.address, self.output])
        self.refresh()

    def refresh(self):
        address, problem = parse_address(self.address.value)
        if problem is None:
            try:
                rows = self.machine.page_walk(self.pid, address)
            except ThplabError as exc:
                problem = str(exc)
        if problem is not None:
            self.output.value = f"<span style='color:#D55E00'>&#9888; {html.escape(problem)}</span>"
            return
        self.output.value = _pre(slice_text(address, rows))


_FIELDS = (("PGD", 47, 39), ("PUD", 38, 30), ("PMD", 29, 21), ("PTE", 20, 12), ("offset", 11, 0))


def parse_address(text):
    """``(address, None)`` for a user-space address typed as hex or decimal, else ``(None, why)``.

    The reason is worded for a learner and names the range in hex.
    """
    from .params import TASK_SIZE

    raw = str(text).strip().replace("_", "")
    try:
        address = int(raw, 16) if raw.lower().startswith("0x") else int(raw, 10)
    except ValueError:
        return None, (f"{text.strip()!r} is not an address: type hex starting with 0x "
                      "(like 0x7f0000205abc) or a decimal number")
    if not 0 <= address < TASK_SIZE:
        shown = f"-{-address:#x}" if address < 0 else f"{address:#x}"
        return None, f"{shown} is not a user-space address: user space is 0x0-{TASK_SIZE - 1:#x}"
    return address, None


def slice_text(address, rows):
    """The address's bits cut into the walk's fields, then one line per table the walk read.

    ``rows`` is :meth:`Machine.page_walk` of ``address``.  Under a huge PMD
    bits 20..12 name the subpage and there is no PTE table.
    """
    huge = any(r["level"] == "offset" and "2 MiB" in r["meaning"] for r in rows)
    heads, bits, names = [], [], []
    for name, hi, lo in _FIELDS:
        value = (address >> lo) & ((1 << (hi - lo + 1)) - 1)
        width = max(hi - lo + 1, 11)
        heads.append(f"{hi}..{lo}".ljust(width))
        bits.append(f"{value:0{hi - lo + 1}b}".ljust(width))
        if huge and name == "PTE":
            label = f"subpage {value}"
        elif name == "offset":
            label = f"byte {value:#x}"
        else:
            label = f"{name} {value}"
        names.append(label.ljust(width))
    lines = [f"address {address:#x}, cut into the fields of the walk:",
             "  bits   " + "  ".join(heads).rstrip(), "  value  " + "  ".join(bits).rstrip(),
             "  field  " + "  ".join(names).rstrip()]
    if huge:
        lines.append("  (a huge PMD ends the walk: bits 20..0 are the offset into the 2 MiB page)")
    lines.append("")
    for r in rows:
        if r["level"] == "offset":
            hi = 20 if huge else 11
            lines.append(f"offset bits {hi}..0 = {r['index']:#x}: {r['meaning']}")
            continue
        lines.append(f"{r['level']:<6} index {r['index']:>3}  table pfn {r['table']:#x}  "
                     f"entry {r['entry']:#018x}  {r['meaning']}")
    return "\n".join(lines)


class _Part:
    """The HTML of one part of a view that reaches the front end inside a larger widget (``.value``)."""

    __slots__ = ("value",)

    def __init__(self, value=""):
        self.value = value


class ScenarioExplorer(_View):
    """Step one scenario on two kernels at once; a toggle shows either (before / after a patch).

    Below the controls, one ``ipywidgets.HTML`` (``view``) shows the status, the counters
    table, the :func:`~thplab.diagrams.thp_mappings` diagram (what the step changed marked)
    and a caption; ``status``, ``table``, ``plot`` and ``caption`` hold the HTML of each part.
    A click costs one widget message: measured in Chromium (benchmarks/bench_widgets.py),
    the time from click to settled view is the kernel's -- the Python step and each message
    it sends -- far more than the front end's drawing of the new SVG.
    """

    def __init__(self, scenario="fork-pin-split", levels=(0, 10), seed=0, field="page_mapcount", figure=True):
        self.scenario = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
        self.levels = tuple(levels)
        self.seed = seed
        self.field = field
        self.figure = figure
        self.kernel = w.ToggleButtons(options=level_labels(self.levels), value=self.levels[-1],
                                      description="Kernel", style={"button_width": "auto"})
        self.step_button = w.Button(description="Step", icon="step-forward", button_style="primary")
        self.run_button = w.Button(description="Run all", icon="fast-forward")
        self.reset_button = w.Button(description="Reset", icon="undo")
        self.status, self.table, self.plot, self.caption = _Part(), _Part(), _Part(), _Part()
        #: The one persistent widget every step rewrites: status, table, diagram, caption.
        self.view = w.HTML()
        self.diagram = self._drawn = None
        self.previous = {}
        self.step_button.on_click(lambda b: self.step())
        self.run_button.on_click(lambda b: self.run_all())
        self.reset_button.on_click(lambda b: self.reset())
        self._pending = None
        self.kernel.observe(lambda change: self._toggled(), names="value")
        self.widget = w.VBox([w.HTML(f"<b>{html.escape(self.scenario.title)}</b>: "
                                     f"{html.escape(self.scenario.description)}"),
                              self.kernel, w.HBox([self.step_button, self.run_button, self.reset_button]),
                              self.view])
        self.reset()

    @property
    def run(self):
        return self.runs[self.kernel.value]

    def reset(self):
        if self._pending is not None:  # the old runs' deferred steps are moot
            self._pending[0].cancel()
            self._pending = None
        self.runs = {lv: self.scenario.start(lv, seed=self.seed) for lv in self.levels}
        self.previous = {}
        self.diagram = None
        self.refresh()

    def _remember(self, levels):
        """Snapshot the THP of each of ``levels`` before it moves, so the diagram can mark what the step changed."""
        if not self.figure:
            return
        from .diagrams import snapshot_thp

        for lv in levels:
            run = self.runs[lv]
            if run.head is None:
                self.previous[lv] = None
            elif self.diagram is not None and lv == self._drawn:
                self.previous[lv] = self.diagram.snapshot  # refresh() drew it from this very state
            else:
                self.previous[lv] = snapshot_thp(run.machine, run.head)

    def step(self):
        """Step the kernel on show and redraw; the others (which no one is looking at yet) after it.

        In a kernel the others step once this click's handler has returned: then the
        kernel's IOPub thread sends the new view at once instead of waiting for the GIL
        (measured: ~5 ms of a click).  Anything that reads them catches up first
        (:meth:`_catch_up`); without a running event loop they step here.
        """
        self._catch_up()
        shown = self.kernel.value
        self._remember([shown])
        if not self.run.finished:
            self.run.step()
        self.refresh()
        self._later(lambda: self._step_others(shown))

    def _step_others(self, shown):
        others = [lv for lv in self.levels if lv != shown]
        self._remember(others)
        for lv in others:
            if not self.runs[lv].finished:
                self.runs[lv].step()

    def _later(self, fn):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            fn()
            return
        self._pending = (loop.call_soon(self._catch_up), fn)

    def _catch_up(self):
        """Run the deferred steps of the kernels not on show, if they have not run yet."""
        if self._pending is not None:
            handle, fn = self._pending
            self._pending = None
            handle.cancel()
            fn()

    def _toggled(self):
        self._catch_up()
        self.refresh()

    def run_all(self):
        self._catch_up()
        self._remember(self.levels)
        for run in self.runs.values():
            run.run_all()
        self.refresh()

    def refresh(self):
        run = self.run
        self.step_button.disabled = self.run_button.disabled = run.finished
        # summary() ends with the counters table: one call gives both
        status, _, table = run.summary().rpartition(f"\n{run.level_label}, after ")
        self.status.value = _pre(status)
        self.table.value = _pre(f"{run.level_label}, after " + table)
        self.caption.value = ("" if run.head is None else
                              "<i>" + html.escape(viz.describe_thp(run.machine, run.head, self.field)) + "</i>")
        self.plot.value = ""
        self.diagram = None
        if self.figure and run.head is not None:
            from .diagrams import thp_mappings

            self.diagram = thp_mappings(run.machine, run.head, previous=self.previous.get(self.kernel.value))
            self._drawn = self.kernel.value
            self.plot.value = self.diagram.html
        self.view.value = "".join(f"<div style='margin:2px 0'>{part.value}</div>" for part in
                                  (self.status, self.table, self.plot, self.caption) if part.value)


class StepThrough(_View):
    """A slider over the points an operation passed; each shows what changed there.

    ``describe(recorder, i, pages)`` gives the text of position ``i``
    (default :func:`describe_step`); a lesson may pass its own, over any
    object with a ``steps`` list (e.g. the actions of a recorded operation).

    Over a two-CPU :class:`~thplab.trace.Interleaving` it also shows the race's swimlane
    (:func:`~thplab.diagrams.race_swimlane`, ``head`` from ``pages[0]``), drawn once: a move
    sends only the text, headed by a small ``<style>`` (:func:`lane_style`) that outlines the
    current point and fades the ones still to come; the SVG is not sent again.
    """

    def __init__(self, recorder, pages=None, title="Step through", describe=None):
        self.recorder = recorder
        self.pages = pages
        self.describe = describe or describe_step
        self.slider = w.IntSlider(min=0, max=len(recorder.steps) - 1, value=0, description="Point",
                                  continuous_update=False)
        self.prev_button = w.Button(description="Previous", icon="step-backward")
        self.next_button = w.Button(description="Next", icon="step-forward", button_style="primary")
        self.output = w.HTML()
        self.diagram = self.lane = None
        if getattr(recorder, "interleaving", None) is True:
            from .diagrams import race_swimlane

            self.diagram = race_swimlane(recorder, head=pages[0] if pages else None, title=title)
            self._scope = f"thplab-view-{next(_VIEWS)}"
            self.lane = w.HTML(f"<div class='{self._scope}'>{self.diagram.html}</div>")
        self.slider.observe(lambda change: self.refresh(), names="value")
        self.prev_button.on_click(lambda b: self._move(-1))
        self.next_button.on_click(lambda b: self._move(1))
        self.widget = w.VBox([w.HTML(f"<b>{html.escape(title)}</b>"),
                              w.HBox([self.prev_button, self.slider, self.next_button])]
                             + ([self.lane] if self.lane is not None else []) + [self.output])
        self.refresh()

    def _move(self, d):
        self.slider.value = min(max(self.slider.value + d, 0), self.slider.max)

    def refresh(self):
        i = self.slider.value
        self.prev_button.disabled, self.next_button.disabled = i == 0, i == self.slider.max
        style = "" if self.lane is None else lane_style(self._scope, i, len(self.recorder.steps))
        self.output.value = style + _pre(self.describe(self.recorder, i, self.pages))


#: Distinct CSS scopes for the views that restyle their diagram (deterministic within a kernel).
_VIEWS = itertools.count(1)


def lane_style(scope, current, n):
    """A ``<style>`` for the swimlane inside ``.scope``: point ``current`` outlined, later points faded.

    The outline is thicker and solid (not colour alone); what is still to come drops to 30 %
    opacity, marks tagged with their ``data-step`` included (labels, locks, the IPI arrows).
    """
    sel = f".{scope} svg"
    rules = [f"{sel} .point[data-step='{current}']{{stroke:{viz.OKABE_ITO[4]};stroke-width:4px;"
             "stroke-dasharray:none}"]
    later = ",".join(f"{sel} [data-step='{k}']" for k in range(current + 1, n))
    if later:
        rules.append(f"{later}{{opacity:0.3}}")
    return "<style>" + "".join(rules) + "</style>"


def describe_step(recorder, i, pages=None, max_rows=12):
    """Text for step ``i`` of a recorder or interleaving: its name and what changed."""
    from .page_flags import PG
    from .pgtable import decode_entry

    step = recorder.steps[i]
    lines = [f"{i}/{len(recorder.steps) - 1}  {step}"]
    if i == 0:
        return lines[0] + "\n(the state before the operation)"
    ch = step.state.changes(recorder.steps[i - 1].state, pages)
    rows = ch["pages"]
    for pfn, field, old, new in rows[:max_rows]:
        if field == "flags":  # by name: "+compound_lock", "-head"
            names = [f"{'+' if new >> pg & 1 else '-'}{pg.name}" for pg in PG if (old ^ new) >> pg & 1]
            lines.append(f"  pfn {pfn:#x}: flags {' '.join(names)}")
        else:
            lines.append("  " + viz.page_field_text(pfn, field, old, new))
    if len(rows) > max_rows:
        lines.append(f"  ... {len(rows) - max_rows} more struct page changes")
    for name, old, new in ch["vmstat"]:
        lines.append(f"  /proc/vmstat {name}: {old} -> {new}")
    for table, idx, old, new, level in ch["entries"][:4]:
        lines.append(f"  entry {idx} of table pfn {table:#x}: {decode_entry(old, level)} -> "
                     f"{decode_entry(new, level)}")
    if len(ch["entries"]) > 4:
        lines.append(f"  ... {len(ch['entries']) - 4} more page-table entries changed")
    if len(lines) == 1:
        lines.append("  (nothing changed in memory at this point)")
    return "\n".join(lines)


class RaceView(_View):
    """Interleave two CPUs point by point, on the old or the new kernel.

    One ``ipywidgets.HTML`` (``view``) shows the race's swimlane
    (:func:`~thplab.diagrams.race_swimlane`, redrawn with every point), the log with the
    results (``log``) and what the last point changed (``state``): one message per click.
    """

    WHAT_IF = (("as the kernel is written", ()),
               ("what if: no compound_lock", ("compound_lock",)),
               ("what if: TLB flush ignores IRQs-off CPUs", ("tlb_flush_ipi",)))

    def __init__(self, race="split-vs-gup-fast", levels=(0, 10), what_if=True, figure=True):
        self.make = RACES[race]
        self.levels = tuple(levels)
        self.figure = figure
        self.kernel = w.ToggleButtons(options=level_labels(self.levels), value=self.levels[0],
                                      description="Kernel", style={"button_width": "auto"})
        self.protections = w.Dropdown(options=self.WHAT_IF, value=(), description="Protections",
                                      style={"description_width": "initial"},
                                      layout=w.Layout(width="420px", display="" if what_if else "none"))
        self.cpu_buttons = {c: w.Button(description=f"Step {c}", icon="step-forward") for c in ("CPU0", "CPU1")}
        self.play_button = w.Button(description="Play the race", icon="play", button_style="primary")
        self.reset_button = w.Button(description="Reset", icon="undo")
        self.lane, self.log, self.state = _Part(), _Part(), _Part()
        self.view = w.HTML()
        self.diagram = None
        for cpu, b in self.cpu_buttons.items():
            b.on_click(lambda b, cpu=cpu: self.step(cpu))
        self.play_button.on_click(lambda b: self.play())
        self.reset_button.on_click(lambda b: self.reset())
        self.kernel.observe(lambda change: self.reset(), names="value")
        self.protections.observe(lambda change: self.reset(), names="value")
        self.race = None
        self.title = w.HTML()
        self.widget = w.VBox([self.title, self.kernel, self.protections,
                              w.HBox(list(self.cpu_buttons.values()) + [self.play_button, self.reset_button]),
                              self.view])
        self.reset()

    def reset(self):
        if self.race is not None and not self.race.interleaving.finished:
            self.race.interleaving.close()
        self.race = self.make(self.kernel.value, without=self.protections.value)
        self.title.value = f"<b>{html.escape(self.race.title)}</b>"
        self.refresh()

    def step(self, cpu):
        self.race.interleaving.step(cpu)
        self.refresh()

    def play(self):
        self.reset()
        self.race.play()
        self.refresh()

    def refresh(self):
        il = self.race.interleaving
        for cpu, b in self.cpu_buttons.items():
            b.disabled = il.done(cpu)
        self.play_button.disabled = False
        self.log.value = _pre(self.race.outcome().split("\n", 1)[1])
        last = len(il.steps) - 1
        self.state.value = _pre("Last point, what changed:\n" + describe_step(il, last)) if last else ""
        if self.figure:
            from .diagrams import race_swimlane

            self.diagram = race_swimlane(self.race)
            self.lane.value = self.diagram.html
        self.view.value = "".join(f"<div style='margin:2px 0'>{part.value}</div>" for part in
                                  (self.lane, self.log, self.state) if part.value)


class Quiz(_View):
    """Predict-then-reveal: a seeded problem, an answer box, a check, and a fresh problem on demand.

    By default problems come from :meth:`Problem.generate` (``kind``, ``levels``).
    ``factory(seed)`` may supply any object with ``render()`` and ``check(guess)
    -> (bool, message)`` instead, for lesson-specific questions.
    """

    def __init__(self, seed=0, kind=None, levels=(0, 10), factory=None):
        self.seed, self.kind, self.levels = seed, kind, tuple(levels)
        self.factory = factory or (lambda s: Problem.generate(s, kind=self.kind, levels=self.levels))
        self.problem_html = w.HTML()
        self.answer = w.Text(description="Answer", placeholder="a number, 0x200 or -EBUSY",
                             continuous_update=False)
        self.check_button = w.Button(description="Check", icon="check", button_style="primary")
        self.new_button = w.Button(description="New problem", icon="refresh")
        self.feedback = w.HTML()
        self.check_button.on_click(lambda b: self.check())
        # Enter (or leaving the box) commits the answer: the value changes only then.
        self.answer.observe(lambda change: change["new"].strip() and self.check(), names="value")
        self.new_button.on_click(lambda b: self.new())
        self.widget = w.VBox([self.problem_html, w.HBox([self.answer, self.check_button, self.new_button]),
                              self.feedback])
        self.load()

    def load(self):
        self.problem = self.factory(self.seed)
        self.problem_html.value = _pre(self.problem.render())
        self.answer.value = ""
        self.feedback.value = ""

    def new(self):
        self.seed += 1
        self.load()

    def check(self):
        ok, message = self.problem.check(self.answer.value)
        mark = "&#10004; " if ok else "&#10008; "
        colour = "#009E73" if ok else "#D55E00"
        self.feedback.value = f"<span style='color:{colour}'><b>{mark}</b>{html.escape(message)}</span>"
        return ok


class PatchDiff(_View):
    """Pick a kernel function a patch changes; see the model's diff of it (code only).

    Without a kernel (or widgets) the output is :func:`patch_text`: the card and every diff.
    """

    def __init__(self, number):
        self.number = number
        self.patch = PATCHES[number - 1]
        replaced, removed = kernel_functions(number)
        self.function = w.Dropdown(options=sorted(replaced + removed), description="Function")
        self.output = w.HTML()
        self.function.observe(lambda change: self.refresh(), names="value")
        self.widget = w.VBox([w.HTML(f"<b>{html.escape(self.patch.title)}</b>: functions it changes "
                                     "in thplab"), self.function, self.output])
        self.refresh()

    def refresh(self):
        self.output.value = _pre(function_text(self.number, self.function.value))

    def text(self):
        """The text twin: :func:`patch_text` of this patch."""
        return patch_text(self.number)

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.text()
        return bundle
