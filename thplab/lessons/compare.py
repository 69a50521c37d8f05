"""Lesson 13: old vs new, side by side.

:func:`compare_scenario` puts a scenario at two levels side by side;
:func:`identity_report` spells out a level's accounting identity with the
numbers of one state; :func:`pinned_split` records ``split_huge_page()`` of a
pinned THP for a step-through; :class:`CostProblem` asks for counted
operations of ``get_page()``/``put_page()`` on tails.
"""

import textwrap
from dataclasses import dataclass

import numpy as np

from .. import costs
from ..invariants import mapping_counts
from ..page_flags import PageHead, Use
from ..params import HPAGE_PMD_NR
from ..scenarios import SCENARIOS, WATCH
from ..trace import record
from ..problems import check_number
from ._common import _ranges

__all__ = ["compare_scenario", "identity_report", "pinned_split", "step_summary", "CostProblem",
           "costs_by_label"]


_LABEL, _COL = 30, 34


def _lines(label, cells):
    """One row of a side-by-side table; label and cells wrap; ``*`` marks cells that differ."""
    parts = [[c] if len(c) < _COL else textwrap.wrap(c, _COL - 2) for c in cells]
    labels = textwrap.wrap(label, _LABEL - 2) or [""]
    mark = " *" if len(set(cells)) > 1 else ""
    out = []
    for i in range(max(len(labels), *map(len, parts))):
        text = f"  {labels[i] if i < len(labels) else '':<{_LABEL}}" + "".join(
            f"{(p[i] if i < len(p) else ''):<{_COL}}" for p in parts)
        out.append(text.rstrip() + (mark if i == 0 else ""))
    return out


def _cell_result(result, delta):
    if result is None:
        res = ""
    elif isinstance(result, np.ndarray):
        res = "-> pfns " + ", ".join(f"{int(p):#x}" for p in result)
    else:
        res = f"-> {result}"
    events = ", ".join(f"{k} +{v}" for k, v in delta.items())
    return "; ".join(x for x in (res, events) if x) or "-"


def _counter_cell(run, row):
    if row is None:
        return "-"
    if run.machine.mem_map["use"][row["pfn"]] == Use.free:
        return "free (in the buddy allocator)"
    return (f"{row['kind']:<5}{row['_count']:>7}{row['_mapcount']:>11}"
            f"{row['page_count']:>5}{row['page_mapcount']:>4}")


def compare_scenario(name, levels=(0, 10), watch=WATCH, seed=0):
    """A scenario run at each of ``levels``, side by side, as text.

    Per step: the result and the THP vmstat events. Then who maps the
    scenario's 2 MiB in each process, and the watched subpages' counters:
    kind, raw ``_count``, raw ``_mapcount``, ``page_count()`` (pc) and
    ``page_mapcount()`` (pm). Rows where the levels differ end in ``*``.
    """
    scenario = SCENARIOS[name]
    runs = [scenario.start(level, seed=seed) for level in levels]
    for run in runs:
        run.run_all()
    lines = [f"== {name}: {scenario.title}", f"   {scenario.description}"]
    lines += _lines("", [f"level {lv}" + (" (old kernel)" if lv == 0 else " (RFC v1)" if lv == 10 else "")
                         for lv in levels])
    lines[-1] = lines[-1].rstrip(" *")
    for i, label in enumerate(runs[0].labels):
        lines += _lines(f"{i + 1}. {label}", [_cell_result(*run.results[i][1:]) for run in runs])
    lines.append("  who maps the 2 MiB range:")
    maps = [run.mappings() for run in runs]
    for pid in sorted(set().union(*maps)):
        lines += _lines(f"  pid {pid}", [mp.get(pid, "(exited)") for mp in maps])
    lines += _lines("  subpage", [f"{'kind':<5}{'_count':>7}{'_mapcount':>11}{'pc':>5}{'pm':>4}"] * len(runs))
    lines[-1] = lines[-1].rstrip(" *")
    rows = [{r["subpage"]: r for r in run.counters(watch)} for run in runs]
    for i in watch:
        lines += _lines(f"  {i:>7}", [_counter_cell(run, r.get(i)) for run, r in zip(runs, rows)])
    return "\n".join(lines)


def identity_report(run):
    """The accounting identity of ``run``'s level, with the numbers of its current state.

    Old scheme (tail-page refcounting, levels 0-3): head ``_count`` = PMD
    maps + tail pins + head pins, where a tail pin is read from the tail's
    ``_mapcount``. RFC v1 (levels 4-10): head ``_count`` = Σ
    ``page_mapcount()`` over the 512 subpages + pins. The right-hand side is
    read from ``struct page``\\ s, then confirmed against the ground truth
    (page tables and ``machine.pins``) by ``machine.check()``.
    """
    m = run.machine
    head = run.head
    mm = m.mem_map
    level = m.level
    lines = [f"level {level}, after {run.done} steps ({', '.join(run.labels[:run.done])})"]
    if head is None or not PageHead(mm, head):
        lines.append("  no compound page any more: every 4 KiB page has _count = its mappings + its pins")
        m.check()
        lines.append("  machine.check(): every invariant holds")
        return "\n".join(lines)
    pages = np.arange(head, head + HPAGE_PMD_NR)
    count = int(mm["_count"][head])
    counts = mapping_counts(m)
    pins = m.pins[pages]
    if m.kernel.caps["tail_pins"]:
        pmd = int(mm["_mapcount"][head]) + 1
        tail_pins = mm["_mapcount"][pages[1:]] + 1
        head_pins = count - pmd - int(tail_pins.sum())
        pinned = np.flatnonzero(tail_pins) + 1
        lines += [
            "  old identity: head _count = PMD maps + tail pins + head pins",
            f"  {count} = {pmd} + {int(tail_pins.sum())} + {head_pins}",
            f"    PMD maps  = page_mapcount(head) = head _mapcount + 1 = {pmd}",
            f"    tail pins = Σ (tail _mapcount + 1) = {int(tail_pins.sum())}"
            + (f" (subpage {_ranges(pinned)})" if len(pinned) else ""),
            f"    head pins = what is left = {head_pins}",
            f"  ground truth: {int(counts['pmd_maps'][head])} huge PMD(s) map it, "
            f"{int(pins[1:].sum())} pin(s) on tails, {int(pins[0])} on the head",
        ]
    else:
        pm = mm["_mapcount"][pages] + 1
        total = int(pm.sum())
        nr_pins = count - total
        lines += [
            "  v1 identity: head _count = Σ page_mapcount(subpage i), i = 0..511, + pins",
            f"  {count} = {total} + {nr_pins}",
            f"    page_mapcount(head) = {int(pm[0])} (PMD maps {int(counts['pmd_maps'][head])} "
            f"+ PTEs of subpage 0 {int(counts['pte_maps'][head])})",
            f"    Σ page_mapcount(tails) = {int(pm[1:].sum())} (PTEs mapping tails)",
            f"    pins = what is left = {nr_pins}",
            f"  ground truth: {int(pins.sum())} pin(s) held"
            + (f" (subpage {_ranges(np.flatnonzero(pins))})" if pins.any() else ""),
        ]
    m.check()
    lines.append("  machine.check(): every invariant of this level holds")
    return "\n".join(lines)


def pinned_split(level, seed=0):
    """``split_huge_page()`` of a shared THP with a gup pin on subpage 5, recorded point by point.

    Runs the first three steps of the ``fork-pin-split`` scenario (fault,
    fork, pin subpage 5), then records the split with
    :func:`thplab.trace.record`. Returns ``(run, result, recorder)``; watch
    ``run.subpages()`` in a :class:`thplab.widgets.StepThrough`.
    """
    run = SCENARIOS["fork-pin-split"].start(level, seed=seed).run_to(3)
    result, recorder = record(run.machine, run.machine.split_huge_page, run.head)
    return run, result, recorder


def step_summary(recorder, pages=None):
    """One line per recorded point: its name and how much changed there."""
    lines = []
    for i, step in enumerate(recorder.steps):
        if i == 0:
            lines.append(f"{i:>3}  {step}")
            continue
        ch = recorder.diff(i, pages)
        stats = ", ".join(f"{n} {a} -> {b}" for n, a, b in ch["vmstat"])
        what = [f"{len(ch['pages'])} struct page field(s)" if ch["pages"] else "",
                f"{len(ch['entries'])} page-table entr{'y' if len(ch['entries']) == 1 else 'ies'}"
                if ch["entries"] else "", stats]
        what = "; ".join(w for w in what if w) or "nothing changed"
        lines.append(f"{i:>3}  {step}\n       {what}")
    return "\n".join(lines)


@dataclass
class CostProblem:
    """Counted operations of ``get_page()`` + ``put_page()`` on tail pages at one level.

    Answers come from :func:`thplab.costs.tail_get_put`, the same code path
    as :func:`thplab.costs.cost_table`.
    """

    seed: int
    level: int
    nr: int
    kind: str
    answer: int
    explanation: str

    @classmethod
    def generate(cls, seed=0, levels=(0, 10)):
        rng = np.random.default_rng(seed)
        level = int(rng.choice(levels))
        nr = int(rng.integers(1, 9))
        kind = str(rng.choice(("atomic", "compound_lock", "irq_save")))
        c = costs.tail_get_put(level)
        get, put = c["get_page"].get(kind, 0), c["put_page"].get(kind, 0)
        answer = nr * (get + put)
        why = (f"At level {level} one get_page(tail) costs {get} and one put_page(tail) {put} "
               f"{kind} operation(s): {nr} x ({get} + {put}) = {answer}.")
        return cls(seed, level, nr, kind, answer, why)

    def render(self):
        return "\n".join([
            f"ARG seed {self.seed}", f"ARG level {self.level}"
            + (" (old kernel)" if self.level == 0 else f" (patches 01-{self.level:02d} applied)"), "",
            f"A driver takes a reference on {self.nr} different tail pages of one PMD-mapped THP with",
            f"get_page() and later drops them with put_page(): {2 * self.nr} calls.",
            "",
            f"How many '{self.kind}' operations do these calls cost in all?"])

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation)


def costs_by_label(levels=(0, 10)):
    """``{"get_page(tail), level L": costs, ...}`` for :func:`thplab.viz.plot_costs`."""
    out = {}
    for level in levels:
        c = costs.tail_get_put(level)
        for call in ("get_page", "put_page"):
            out[f"{call}(tail), level {level}"] = c[call]
    return out
