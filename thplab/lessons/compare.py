"""Lesson 13: old vs new, side by side.

:func:`compare_scenario` puts a scenario at two levels side by side;
:func:`identity_terms` reads a level's accounting identity off one state
(:func:`identity_report` spells it out, :func:`identity_title` titles a
diagram with it); :func:`pin_writes` shows which counters a pin moves on the
way in and on the way out; :func:`pinned_split` records ``split_huge_page()``
of a pinned THP for a step-through; :class:`CostProblem` asks what a new
sequence of ``get_page()``/``put_page()`` calls costs.
"""

import textwrap
from dataclasses import dataclass

import numpy as np

from .. import costs
from ..invariants import mapping_counts
from ..page_flags import PageHead, Use
from ..machine import Machine
from ..params import HPAGE_PMD_NR, PAGE_SIZE
from ..scenarios import SCENARIOS, WATCH
from ..trace import Snapshot, record
from ..problems import check_number
from ..widgets import describe_step
from ._common import _ranges

__all__ = ["compare_scenario", "identity_terms", "identity_title", "identity_report", "pin_writes",
           "pin_writes_text", "pinned_split", "step_summary", "CostProblem", "costs_by_label"]


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


def identity_terms(machine, head):
    """The terms of the accounting identity of ``machine``'s level for the THP at ``head``.

    Old scheme (tail-page refcounting, levels 0-3): head ``_count`` = PMD
    maps + tail pins + head pins, where a tail pin is read from the tail's
    ``_mapcount``. RFC v1 (levels 4-10): head ``_count`` = Σ
    ``page_mapcount()`` over the 512 subpages + pins. Every term is read from
    ``struct page``\\ s (``"pins"`` is what is left); ``None`` if ``head`` is
    not a compound page any more.
    """
    m, mm = machine, machine.mem_map
    if head is None or not PageHead(mm, head):
        return None
    pages = np.arange(head, head + HPAGE_PMD_NR)
    count = int(mm["_count"][head])
    if m.kernel.caps["tail_pins"]:
        pmd = int(mm["_mapcount"][head]) + 1
        tail_pins = mm["_mapcount"][pages[1:]] + 1
        return {"scheme": "old", "count": count, "pmd_maps": pmd, "tail_pins": int(tail_pins.sum()),
                "pinned_tails": (np.flatnonzero(tail_pins) + 1).tolist(),
                "head_pins": count - pmd - int(tail_pins.sum())}
    pm = mm["_mapcount"][pages] + 1
    return {"scheme": "v1", "count": count, "mapcount_head": int(pm[0]), "mapcount_tails": int(pm[1:].sum()),
            "mapcount_sum": int(pm.sum()), "pins": count - int(pm.sum())}


def identity_title(machine, head):
    """A one-line title for :func:`thplab.diagrams.thp_mappings`: the identity with this state's numbers."""
    t = identity_terms(machine, head)
    level = f"level {machine.level}"
    if t is None:
        return f"{level}: not compound any more; each 4 KiB page counts its own mappings and pins"
    if t["scheme"] == "old":
        where = f" (in subpage {_ranges(t['pinned_tails'])}'s _mapcount)" if t["pinned_tails"] else ""
        return (f"{level}: head _count {t['count']} = {t['pmd_maps']} PMD maps + {t['tail_pins']} tail "
                f"pin(s){where} + {t['head_pins']} head pin(s)")
    return (f"{level}: head _count {t['count']} = Σ page_mapcount {t['mapcount_sum']} + "
            f"{t['pins']} pin(s) (in no _mapcount)")


def identity_report(run):
    """The accounting identity of ``run``'s level, with the numbers of its current state.

    The terms are :func:`identity_terms`; the right-hand side is read from
    ``struct page``\\ s, then confirmed against the ground truth (page tables
    and ``machine.pins``) by ``machine.check()``.
    """
    m = run.machine
    head = run.head
    level = m.level
    lines = [f"level {level}, after {run.done} steps ({', '.join(run.labels[:run.done])})"]
    t = identity_terms(m, head)
    if t is None:
        lines.append("  no compound page any more: every 4 KiB page has _count = its mappings + its pins")
        m.check()
        lines.append("  machine.check(): every invariant holds")
        return "\n".join(lines)
    pages = np.arange(head, head + HPAGE_PMD_NR)
    counts = mapping_counts(m)
    pins = m.pins[pages]
    if t["scheme"] == "old":
        lines += [
            "  old identity: head _count = PMD maps + tail pins + head pins",
            f"  {t['count']} = {t['pmd_maps']} + {t['tail_pins']} + {t['head_pins']}",
            f"    PMD maps  = page_mapcount(head) = head _mapcount + 1 = {t['pmd_maps']}",
            f"    tail pins = Σ (tail _mapcount + 1) = {t['tail_pins']}"
            + (f" (subpage {_ranges(t['pinned_tails'])})" if t["pinned_tails"] else ""),
            f"    head pins = what is left = {t['head_pins']}",
            f"  ground truth: {int(counts['pmd_maps'][head])} huge PMD(s) map it, "
            f"{int(pins[1:].sum())} pin(s) on tails, {int(pins[0])} on the head",
        ]
    else:
        lines += [
            "  v1 identity: head _count = Σ page_mapcount(subpage i), i = 0..511, + pins",
            f"  {t['count']} = {t['mapcount_sum']} + {t['pins']}",
            f"    page_mapcount(head) = {t['mapcount_head']} (PMD maps {int(counts['pmd_maps'][head])} "
            f"+ PTEs of subpage 0 {int(counts['pte_maps'][head])})",
            f"    Σ page_mapcount(tails) = {t['mapcount_tails']} (PTEs mapping tails)",
            f"    pins = what is left = {t['pins']}",
            f"  ground truth: {int(pins.sum())} pin(s) held"
            + (f" (subpage {_ranges(np.flatnonzero(pins))})" if pins.any() else ""),
        ]
    m.check()
    lines.append("  machine.check(): every invariant of this level holds")
    return "\n".join(lines)


def _page_changes(before, m, head):
    """What changed in the THP's ``struct page``\\ s since the snapshot ``before``.

    ``(counters, other)``: one line per ``_count``/``_mapcount`` change, and
    the other fields' changes (flags by name) in one short line or "".
    """
    from ..page_flags import PG

    rows = Snapshot.take(m).changes(before, np.arange(head, head + HPAGE_PMD_NR))["pages"]
    counters = [f"pfn {pfn:#x} (subpage {pfn - head}): {field} {old} -> {new}"
                for pfn, field, old, new in rows if field in ("_count", "_mapcount")]
    other = []
    for pfn, field, old, new in rows:
        if field == "flags":
            other += [f"subpage {pfn - head} flags {'+' if new >> pg & 1 else '-'}{pg.name}"
                      for pg in PG if (old ^ new) >> pg & 1]
        elif field not in ("_count", "_mapcount"):
            other.append(f"subpage {pfn - head} {field}")
    return counters, ", ".join(other)


def pin_writes(level, subpage=5, seed=0):
    """A gup-fast pin on ``subpage`` of a PMD-mapped THP, then ``put_page()`` of it: what each wrote.

    Returns ``{"get": [...], "put": [...], "get_other": str, "put_other": str}``:
    the counters (``_count``, ``_mapcount``) of the THP's ``struct page``\\ s
    that the pin changed and those the put changed back, one line each, and
    any other field that moved (a flag, say).
    """
    m = Machine.boot("16M", patches=level, seed=seed)
    pid, addr, head = m.map_thp()
    before = Snapshot.take(m)
    pin = m.get_user_pages_fast(pid, addr + subpage * PAGE_SIZE)
    got, got_other = _page_changes(before, m, head)
    before = Snapshot.take(m)
    m.put_page(pin)
    put, put_other = _page_changes(before, m, head)
    m.check()
    return {"level": level, "get": got, "put": put, "get_other": got_other, "put_other": put_other}


def pin_writes_text(levels=(0, 10), subpage=5):
    """Text of :func:`pin_writes` at each level: the counters moved by the get, then by the put."""
    lines = []
    for level in levels:
        r = pin_writes(level, subpage)
        lines.append(f"level {level}" + (" (old kernel)" if level == 0 else " (RFC v1)" if level == 10 else ""))
        for when in ("get", "put"):
            what = f"get_user_pages_fast(subpage {subpage})" if when == "get" else "put_page() of the pin"
            lines.append(f"  {what}: {len(r[when])} counter(s) moved"
                         + (f" (other fields: {r[when + '_other']})" if r[when + "_other"] else ""))
            lines += [f"    {row}" for row in r[when]]
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


def step_summary(recorder, pages=None, max_rows=3, counts=False):
    """The recorded points with what changed at each -- what the step-through widget shows.

    Each point is :func:`thplab.widgets.describe_step` (the same text as the
    widget), cut to ``max_rows`` struct page changes. ``counts=True``: one
    line per point with only how many fields, entries and counters moved.
    """
    if not counts:
        text = "\n".join(describe_step(recorder, i, pages, max_rows) for i in range(len(recorder.steps)))
        return "\n".join(w for line in text.splitlines()
                         for w in textwrap.wrap(line, 100, subsequent_indent="      ", break_long_words=False))
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


def sequence_cost(level, heads, tails):
    """Counted operations of ``get_page()`` then ``put_page()`` on each listed subpage of a PMD-mapped THP.

    ``heads``: how many references on the head; ``tails``: subpage numbers
    (1-511) to take one reference on each. Measured on the model with
    :func:`thplab.costs.measure`, the code path of :func:`thplab.costs.tail_get_put`.
    """
    m = Machine.boot("8M", patches=level)
    _, _, head = m.map_thp()
    pages = [head] * heads + [head + t for t in tails]

    def run():
        for page in pages:
            m.kernel.get_page(page)
        for page in pages:
            m.kernel.put_page(page)

    _, spent = costs.measure(m, run)
    m.check()
    return dict(spent)


@dataclass
class CostProblem:
    """How many more atomics does the old kernel spend on a new sequence of get/put calls?

    A driver takes references on the head and on some tails of a PMD-mapped
    THP with ``get_page()`` and drops them with ``put_page()``. The learner
    has seen one tail get/put per kernel; the sequence mixes in head calls
    (one atomic on either kernel). Answers are measured on the model
    (:func:`sequence_cost`); usual slips are diagnosed.
    """

    seed: int
    heads: int
    tails: list
    answer: int
    explanation: str
    diagnoses: dict

    @classmethod
    def generate(cls, seed=0):
        rng = np.random.default_rng(seed)
        tails = sorted(int(t) for t in rng.choice(np.arange(1, HPAGE_PMD_NR), int(rng.integers(1, 6)),
                                                   replace=False))
        heads = int(rng.integers(1, 4))
        old, new = (sequence_cost(lv, heads, tails)["atomic"] for lv in (0, 10))
        answer = old - new
        t0, t10 = costs.tail_get_put(0), costs.tail_get_put(10)
        dget = t0["get_page"]["atomic"] - t10["get_page"]["atomic"]
        dput = t0["put_page"]["atomic"] - t10["put_page"]["atomic"]
        calls = heads + len(tails)
        why = (f"Each tail costs {dget} more atomic(s) in get_page() and {dput} more in put_page() at "
               f"level 0; a head reference is one atomic on both kernels. {len(tails)} tail(s) x "
               f"({dget} + {dput}) = {answer} (level 0 spends {old}, level 10 {new}).")
        slips = [
            (calls * (dget + dput), "You priced the head calls like tail calls: on a head page both "
                                    "kernels only increment and decrement its _count."),
            (len(tails) * 2 * dget, "You used the get_page() difference for the put_page() calls too."),
            (old, "That is everything level 0 spends; the question asks how much more than level 10."),
            (len(tails) * (dget + dput) * 2, "Each reference is taken once and dropped once: one get and "
                                             "one put per subpage, not two of each."),
        ]
        diagnoses = {}
        for value, hint in slips:  # the first reading of a value wins
            diagnoses.setdefault(value, hint)
        diagnoses.pop(answer, None)
        return cls(seed, heads, tails, answer, why, diagnoses)

    def render(self):
        tails = ", ".join(map(str, self.tails))
        return "\n".join([
            f"ARG seed {self.seed}", "",
            f"A driver calls get_page() {self.heads} time(s) on the head of a PMD-mapped THP and once on",
            f"each of subpages {tails}; later it drops every one of them with put_page().",
            "",
            "How many more atomic operations does the old kernel (level 0) spend on these calls than",
            "RFC v1 (level 10)?"])

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, diagnoses=self.diagnoses)


def costs_by_label(levels=(0, 10)):
    """``{"get_page(tail), level L": costs, ...}`` for :func:`thplab.diagrams.costs_chart`."""
    out = {}
    for level in levels:
        c = costs.tail_get_put(level)
        name = level if isinstance(level, str) else f"level {level}"
        for call in ("get_page", "put_page"):
            out[f"{call}(tail), {name}"] = c[call]
    return out
