"""Helpers for lessons 07-11: patches 05-09 of the series (vmstat, the new split, the splitting PMD).

Everything a lesson shows as a number comes from here or from the core
package; the notebooks only call these functions.

* Lesson 07 (patch 05, vmstat): :data:`OPERATIONS`, :func:`operation_events`,
  :func:`event_table`, :data:`VMSTAT_TOUR`, :func:`thp_vmstat`, :func:`vmstat_moved`,
  :func:`event_problem`, :func:`recorded_comparison`, :func:`live_thp_vmstat`.
* Lesson 08 (patch 06, split_huge_page): :func:`split_trace`,
  :func:`split_verdict`, :func:`count_problem`.
* Lesson 09 (patch 07, generic splitting PMD): :func:`split_meets`,
  :func:`where_it_waits`, :func:`splitting_bit_census`, :func:`splitting_problem`.
* Lesson 10 (patch 08, x86 ``_PAGE_SPLITTING``): :func:`pmd_history`,
  :func:`pmd_during_split`, :func:`pmd_problem`.
* Lesson 11 (patch 09, futex): :func:`futex_solo`, :func:`futex_swap_race`,
  :data:`FUTEX_POINTS`, :func:`futex_at`, :func:`futex_table`, :func:`futex_problem`.

Every ``*_problem(seed, ...)`` is a factory for :class:`thplab.widgets.Quiz`
(``Quiz(seed, factory=...)``): seeded, rendered parameters first, answered
by the model.
"""

import dataclasses

import numpy as np

from .. import memory as mem
from .. import pgtable as pt
from ..machine import Machine
from ..params import HPAGE_PMD_NR, PAGE_SIZE
from ..problems import Exercise
from ..races import Race
from ..scenarios import (Scenario, fault_thp, fork, munmap_subpages, mprotect_subpages,
                         pin_subpage, split_page, unpin_all)
from ..trace import Interleaving, record

__all__ = ["OPERATIONS", "VMSTAT_TOUR", "operation_events", "event_table", "thp_vmstat", "vmstat_moved",
           "EventProblem", "event_problem", "recorded_comparison", "live_thp_vmstat",
           "split_trace", "split_verdict", "CountProblem", "count_problem",
           "split_meets", "where_it_waits", "splitting_bit_census",
           "SplittingProblem", "splitting_problem",
           "pmd_history", "pmd_during_split", "PmdProblem", "pmd_problem",
           "futex_swap_race", "FUTEX_POINTS", "futex_at", "FutexProblem", "futex_problem",
           "futex_solo", "futex_table"]


class _Answer(Exercise):
    """A predict-then-reveal question of lessons 07-11 (see :class:`thplab.problems.Exercise`)."""


def _refs(n):
    return f"{n} reference" + ("" if n == 1 else "s")


def _level_label(level):
    return "old kernel" if level == 0 else f"after {level:02d}"


# =================================================================== lesson 07: vmstat

def _split_child_pmd(run):
    run.machine.split_huge_pmd(run.child, run.addr)


#: The operations of lesson 07's table: setup steps, then the operation whose
#: ``/proc/vmstat`` deltas are reported (always the last step).
OPERATIONS = {
    "partial munmap": Scenario(
        "partial munmap", "munmap() 16 KiB inside a THP", "",
        [("fault a THP", fault_thp), ("munmap subpages 8-11", munmap_subpages(8, 4))]),
    "mprotect part": Scenario(
        "mprotect part", "mprotect() 32 KiB inside a THP", "",
        [("fault a THP", fault_thp), ("mprotect subpages 8-15 read-only", mprotect_subpages(8, 8))]),
    "split, no pin": Scenario(
        "split, no pin", "split_huge_page() of an unpinned THP", "",
        [("fault a THP", fault_thp), ("split_huge_page()", split_page)]),
    "split, pinned": Scenario(
        "split, pinned", "split_huge_page() of a THP pinned by gup", "",
        [("fault a THP", fault_thp), ("pin subpage 5 (gup-fast)", pin_subpage(5)),
         ("split_huge_page()", split_page)]),
    "fork + split_huge_pmd": Scenario(
        "fork + split_huge_pmd", "fork(), then split the child's PMD", "",
        [("fault a THP", fault_thp), ("fork()", fork), ("split the child's PMD", _split_child_pmd)]),
    "fork + split page": Scenario(
        "fork + split page", "fork(), then split_huge_page()", "",
        [("fault a THP", fault_thp), ("fork()", fork), ("split_huge_page()", split_page)]),
}

#: Lesson 07's tour for the ScenarioExplorer: every THP event of levels 4 and 5 gets a chance.
VMSTAT_TOUR = Scenario(
    "vmstat-tour", "Which /proc/vmstat events move?",
    "Fault, fork, mprotect part of the THP in the child, pin, split (pinned, then not), munmap part.",
    [("fault a THP", fault_thp), ("fork()", fork),
     ("child: mprotect subpages 0-3 read-only", lambda run: run.machine.mprotect(
         run.child, run.addr, 4 * PAGE_SIZE, "r")),
     ("pin subpage 5 (gup-fast)", pin_subpage(5)),
     ("split_huge_page()", split_page),
     ("put_page() the pin", unpin_all),
     ("split_huge_page() again", split_page),
     ("parent: munmap subpages 8-11", munmap_subpages(8, 4))])


def operation_events(op, level, seed=0):
    """``/proc/vmstat`` THP event deltas of the last step of :data:`OPERATIONS` ``[op]``.

    Returns ``{event: delta}`` with only the events that moved.

    >>> operation_events("partial munmap", 0)
    {'thp_split': 1}
    >>> operation_events("partial munmap", 5)
    {'thp_split_pmd': 1}
    """
    run = OPERATIONS[op].start(level, seed=seed)
    run.run_all()
    return dict(run.results[-1][2])


def _fmt_delta(delta):
    return ", ".join(f"{k} +{v}" for k, v in delta.items()) or "(none)"


def event_table(levels=(0, 5, 10), ops=None):
    """Text table: which THP events each operation bumps at each level, and by how much."""
    ops = list(OPERATIONS) if ops is None else list(ops)
    cells = {(op, lv): _fmt_delta(operation_events(op, lv)) for op in ops for lv in levels}
    heads = [f"level {lv} ({_level_label(lv)})" for lv in levels]
    w0 = max(len("operation (last step)"), *(len(op) for op in ops))
    widths = [max(len(h), *(len(cells[op, lv]) for op in ops)) for h, lv in zip(heads, levels)]
    lines = ["  ".join([f"{'operation (last step)':<{w0}}"] + [f"{h:<{w}}" for h, w in zip(heads, widths)])]
    lines.append("  ".join(["-" * w0] + ["-" * w for w in widths]))
    for op in ops:
        lines.append("  ".join([f"{op:<{w0}}"] + [f"{cells[op, lv]:<{w}}" for lv, w in zip(levels, widths)]))
    return "\n".join(line.rstrip() for line in lines)


def thp_vmstat(machine):
    """The THP lines of ``/proc/vmstat`` (``machine.vmstat.text()`` filtered), as text."""
    return "\n".join(line for line in machine.vmstat.text().splitlines()
                     if line.startswith(("thp_", "nr_anon_transparent")))


def vmstat_moved(before, after):
    """The THP lines of ``/proc/vmstat`` that changed between two ``machine.vmstat.as_dict()`` readings.

    >>> vmstat_moved({"thp_split_pmd": 0, "nr_free_pages": 9}, {"thp_split_pmd": 1, "nr_free_pages": 8})
    'thp_split_pmd +1'
    """
    moved = {n: v - before[n] for n, v in after.items()
             if n.startswith(("thp_", "nr_anon_transparent")) and v != before.get(n)}
    return ", ".join(f"{n} {d:+d}" for n, d in moved.items()) or "(none)"


class EventProblem(_Answer):
    """A "which counter moves, by how much?" question (lesson 07)."""


_SPLIT_EVENTS = ("thp_split", "thp_split_page", "thp_split_page_failed", "thp_split_pmd")


def _event_why(k, op, event, delta):
    if "thp_split" in k.VM_EVENTS:
        if k.caps["pte_mapped_thp"]:
            return ("Between patches 04 and 05 the only split event is the old thp_split, and nothing "
                    "counts it any more: PMD splits and the -EBUSY stub are both invisible here.")
        return ("The old kernel has one split event, thp_split, counted once per compound page "
                "split however many PMDs it had; splitting a PMD always splits the whole page.")
    if not k.caps["split_huge_page_works"]:
        return ("After patch 05: thp_split_pmd counts each PMD turned into a PTE table; the "
                "split_huge_page() stub (until patch 06) counts thp_split_page_failed every time.")
    return ("After patch 05: thp_split_pmd once per PMD turned into a PTE table (also the PMDs "
            "split_huge_page() splits), and each split_huge_page() call counts thp_split_page or, "
            "if the page is pinned, thp_split_page_failed.")


def event_problem(seed=0, levels=(0, 5, 10)):
    """A seeded "which counters move, and by how much?" question (lesson 07).

    Draws an operation of :data:`OPERATIONS`, a level from ``levels`` and one
    split event that exists at that level; the answer is that event's delta
    in the operation's last step, as the model counts it.
    """
    rng = np.random.default_rng(seed)
    op = str(rng.choice(list(OPERATIONS)))
    level = int(rng.choice(levels))
    run = OPERATIONS[op].start(level, seed=seed)
    run.run_all()
    k = run.machine.kernel
    events = [e for e in _SPLIT_EVENTS if e in k.VM_EVENTS]
    event = str(rng.choice(events))
    label, _, delta = run.results[-1]
    value = int(delta.get(event, 0))
    why = (f"In this step the model counted: {_fmt_delta(delta)}. " + _event_why(k, op, event, value))
    question = f"By how much does /proc/vmstat {event} go up in step {len(run.results)} ({label})?"
    return EventProblem(seed, level, "vmstat_delta", [lbl for lbl, _ in OPERATIONS[op].steps],
                        question, value, why)


def recorded_comparison(names, levels):
    """The real kernel's recorded vmstat/mapping changes next to the model at ``levels``.

    A slice of :func:`thplab.live.format_run` for the experiments ``names``,
    without the recording date (deterministic, for checked cells).
    """
    from .. import live

    run = live.load_recorded()
    run = dataclasses.replace(run, experiments={n: run.experiments[n] for n in names})
    lines = live.format_run(run, levels=levels).splitlines()
    lines[0] = f"Recorded on Linux {run.kernel} (another machine; not a live reading)"
    return "\n".join(lines)


def live_thp_vmstat():
    """The THP lines of this machine's real ``/proc/vmstat`` (or why they cannot be read)."""
    from .. import live

    vmstat = live.read_vmstat()
    if not vmstat.available:
        return f"/proc/vmstat not readable here: {vmstat.reason}"
    return "\n".join(f"{name} {value}" for name, value in vmstat.thp().items())


# =================================================================== lesson 08: the new split

def split_trace(level, pin=False, forked=True, seed=0):
    """Record ``split_huge_page()`` of a (forked) THP, optionally pinned on subpage 5.

    Returns ``(result, recorder, run)``; ``recorder.steps`` are the kernel
    points the split passed (for :class:`thplab.widgets.StepThrough`).
    """
    steps = [("fault a THP", fault_thp)] + ([("fork()", fork)] if forked else [])
    steps += [("pin subpage 5 (gup-fast)", pin_subpage(5))] if pin else []
    run = Scenario("split-trace", "split_huge_page() step by step", "", steps).start(level, seed=seed)
    run.run_all()
    result, rec = record(run.machine, run.machine.split_huge_page, run.head)
    return result, rec, run


def _sum_mapcount(machine, head):
    return int(machine.page_mapcount(np.arange(head, head + HPAGE_PMD_NR)).sum())


def split_verdict(machine, head):
    """The new split's test, as text: Σ page_mapcount vs page_count - 1 with the caller's reference."""
    s = _sum_mapcount(machine, head)
    c = int(machine.page_count(head))
    if s == c:
        return (f"With the caller's reference split_huge_page() sees page_count {c + 1}; "
                f"{c + 1} - 1 = {c} == Σ page_mapcount {s}, so it splits (returns 0).")
    return (f"With the caller's reference split_huge_page() sees page_count {c + 1}; "
            f"{c + 1} - 1 = {c} != Σ page_mapcount {s}: {_refs(c - s)} "
            f"{'is not a mapping (a pin)' if c - s == 1 else 'are not mappings (pins)'}, "
            "so it fails with -EBUSY.")


def _unmap_in(index, first, nr):
    def unmap(run):
        run.machine.munmap(run.pids[index], run.addr + first * PAGE_SIZE, nr * PAGE_SIZE)
    return unmap


def _split_in(index):
    def split(run):
        run.machine.split_huge_pmd(run.pids[index], run.addr)
    return split


def _fault_tracked(run):
    fault_thp(run)
    run.pids = [run.pid]


def _fork_tracked(run):
    run.pids.append(run.machine.fork(run.pid))


class CountProblem(_Answer):
    """A question about Σ page_mapcount or page_count of a THP (lesson 08)."""


def count_problem(seed=0, levels=(6,), kind=None):
    """A seeded state of a THP (forks, PMD splits, partial unmaps, pins) and a question.

    ``kind`` is ``"total_mapcount"`` (Σ page_mapcount over the 512 subpages)
    or ``"page_count"`` (of the head); drawn when None.  The explanation
    gives both numbers and what ``split_huge_page()`` would return.
    """
    rng = np.random.default_rng(seed)
    level = int(rng.choice(levels))
    kind = str(rng.choice(("total_mapcount", "page_count"))) if kind is None else kind
    if kind not in ("total_mapcount", "page_count"):
        raise ValueError(f"kind must be 'total_mapcount' or 'page_count', not {kind!r}")
    forks = int(rng.integers(1, 3))
    steps = [("fault a THP (process #0)", _fault_tracked)]
    steps += [(f"fork() (process #{i + 1})", _fork_tracked) for i in range(forks)]
    unmapped0 = set()
    for i in range(forks + 1):
        action = int(rng.choice(3, p=(0.2, 0.4, 0.4)))  # keep the PMD / split it / unmap subpages
        if action == 1:
            steps.append((f"process #{i}: split_huge_pmd()", _split_in(i)))
        elif action == 2:
            first, nr = int(rng.integers(0, 500)), int(rng.integers(1, 9))
            steps.append((f"process #{i}: munmap subpages {first}-{first + nr - 1}", _unmap_in(i, first, nr)))
            if i == 0:
                unmapped0 = set(range(first, first + nr))
    # Pins on subpages process #0 still maps (a pin on a hole would fault in a new 4 KiB page).
    drawn = rng.integers(0, HPAGE_PMD_NR, size=int(rng.integers(0, 3))).tolist()
    pinned = sorted(set(drawn) - unmapped0)
    steps += [(f"process #0: pin subpage {p} (gup-fast)", pin_subpage(p)) for p in pinned]
    run = Scenario("count", "exercise", "", steps).start(level, seed=seed)
    run.run_all()
    m, head = run.machine, run.head
    s, c = _sum_mapcount(m, head), int(m.page_count(head))
    value = s if kind == "total_mapcount" else c
    question = ("What is Σ page_mapcount() over the THP's 512 subpages now?" if kind == "total_mapcount"
                else "What is page_count() of the THP's head page now?")
    if m.kernel.caps["tail_pins"]:
        why = (f"Old scheme: Σ page_mapcount = {s} mixes PMD mappings (head) with pins (tails); "
               f"page_count = {c}.")
    else:
        pins = f"{c - s} pin" + ("" if c - s == 1 else "s")
        why = (f"Σ page_mapcount = {s}: each PMD counts once (in the head's _mapcount) and each PTE "
               f"once in its subpage's _mapcount. page_count = {c} = Σ + {pins}. " + split_verdict(m, head))
    return CountProblem(seed, level, kind, [label for label, _ in steps], question, value, why)


# =================================================================== lesson 09: waiting for a splitting PMD

#: What CPU1 does while CPU0 splits, in :func:`split_meets`.
MEET_OPS = ("get_user_pages_fast", "get_user_pages", "write fault")


def split_meets(op, level, seed=0):
    """CPU0 runs ``split_huge_page()``; CPU1 runs ``op`` on subpage 5 in the middle of it.

    CPU0 goes first, up to the moment the PMD is marked ``_PAGE_SPLITTING``
    (old kernel) or cleared under the PMD lock (from patch 04); then CPU1
    runs until it waits (or retries, or finishes); then both finish.  For
    ``"write fault"`` the THP is shared with a child first, so the parent's
    PMD is write-protected and the write really faults.  Returns a
    :class:`thplab.races.Race`; call ``play()`` then ``outcome()``.
    """
    if op not in MEET_OPS:
        raise ValueError(f"op must be one of {', '.join(MEET_OPS)}, not {op!r}")
    m = Machine.boot("8M", patches=level, seed=seed)
    pid, addr, head = m.map_thp()
    target = addr + 5 * PAGE_SIZE
    if op == "write fault":
        m.fork(pid)
        cpu1 = lambda: m.fault(pid, target, write=True)  # noqa: E731
    elif op == "get_user_pages":
        cpu1 = lambda: m.get_user_pages(pid, target, 1)  # noqa: E731
    else:
        cpu1 = lambda: m.get_user_pages_fast(pid, target, 1)  # noqa: E731
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head), CPU1=cpu1)
    marked = "_PAGE_SPLITTING set" if m.kernel.caps["splitting_pmd"] else "PMD cleared"
    waits = "retry" if op == "write fault" and m.kernel.caps["splitting_pmd"] else "waiting"
    title = {"write fault": "split_huge_page() meets a write fault"}.get(
        op, f"split_huge_page() meets {op}()")
    return Race(f"split-meets-{op}", title, split_meets.__doc__, m, il,
                [("CPU0", marked), ("CPU1", waits)], head, pid, addr)


def where_it_waits(level, ops=MEET_OPS):
    """Text: for each ``op`` of :func:`split_meets`, the points CPU1 passed while CPU0 split."""
    lines = [f"level {level} ({_level_label(level)}): CPU0 splits the THP; CPU1 arrives in the middle"]
    for op in ops:
        race = split_meets(op, level)
        race.play()
        il = race.interleaving
        cpu1 = [s for s in il.steps if s.cpu == "CPU1" and s.name != "done"]
        lines.append(f"  {op}:")
        lines += [f"    {s}" for s in cpu1]
        lines.append(f"    -> CPU0 returned {il.results.get('CPU0')}, CPU1 finished after the split"
                     if _finished_after(il) else f"    -> CPU0 returned {il.results.get('CPU0')}")
    return "\n".join(lines)


def _finished_after(il):
    order = [s.cpu for s in il.steps if s.name == "done"]
    return order == ["CPU0", "CPU1"]


def splitting_bit_census(scenario, levels=(0, 3, 4, 6, 10)):
    """Run ``scenario`` under a recorder at each level; count points where any entry has bit 10.

    Returns text, one line per level: kernel points recorded, points at
    which some page-table entry had ``_PAGE_BIT_SPLITTING`` (bit 10) set,
    and the most entries seen with it at once.
    """
    bit = np.uint64(pt._PAGE_SPLITTING)
    lines = [f"{scenario.title}: {len(scenario.steps)} steps, every kernel point recorded",
             f"{'level':<20}{'points':>8}{'with bit 10 set':>18}{'max entries':>14}"]
    for lv in levels:
        run = scenario.start(lv)
        points = marked = most = 0
        while not run.finished:
            _, rec = record(run.machine, run.step)
            for s in rec.steps:
                n = int(((s.state.tables & bit) != 0).sum())
                points += 1
                marked += n > 0
                most = max(most, n)
        lines.append(f"{f'{lv} ({_level_label(lv)})':<20}{points:>8}{marked:>18}{most:>14}")
    return "\n".join(lines)


class SplittingProblem(_Answer):
    """A question about ``_PAGE_SPLITTING`` during ``split_huge_page()`` (lesson 09)."""


def splitting_problem(seed=0, levels=(0, 3, 4, 10)):
    """Seeded: a THP mapped by 1-4 processes is split; how much of the time is bit 10 set?

    Kinds: ``max_marked`` (most PMD entries with ``_PAGE_SPLITTING`` at one
    point) and ``at_refcount`` (entries with it while the compound page
    itself is split, ``__split_huge_page_refcount``).  Answers come from a
    :class:`thplab.trace.Recorder` of the split.
    """
    rng = np.random.default_rng(seed)
    level = int(rng.choice(levels))
    forks = int(rng.integers(0, 4))
    kind = str(rng.choice(("max_marked", "at_refcount")))
    steps = [("fault a THP", fault_thp)] + [("fork()", _fork_from_parent)] * forks
    run = Scenario("splitting", "exercise", "", steps).start(level, seed=seed)
    run.run_all()
    _, rec = record(run.machine, run.machine.split_huge_page, run.head)
    bit = np.uint64(pt._PAGE_SPLITTING)
    per_point = [int(((s.state.tables & bit) != 0).sum()) for s in rec.steps]
    if kind == "max_marked":
        question = ("While split_huge_page() runs, at most how many page-table entries carry "
                    "_PAGE_SPLITTING (bit 10) at the same time?")
        value = max(per_point)
    else:
        question = ("When split_huge_page() splits the compound page itself "
                    "(__split_huge_page_refcount), how many page-table entries carry bit 10?")
        value = max([n for n, s in zip(per_point, rec.steps) if "__split_huge_page_refcount" in s.name]
                    or [0])
    if run.machine.kernel.caps["splitting_pmd"] and not run.machine.kernel.caps["pte_mapped_thp"]:
        why = (f"Old split: phase 1 marks every PMD mapping the THP ({forks + 1} here, one per process) "
               "and keeps them marked through the refcount split; phase 3 turns each into a table. "
               f"Bit 10 per point: {per_point}.")
    else:
        why = ("From patch 04 on, split_huge_pmd() clears the PMD under the PMD lock and fills the "
               "table; nothing sets bit 10 any more, which is why patches 07 and 08 can delete "
               "everything that tests it.")
    return SplittingProblem(seed, level, kind, [label for label, _ in steps] + ["split_huge_page()"],
                            question, int(value), why)


def _fork_from_parent(run):
    run.child = run.machine.fork(run.pid)


# =================================================================== lesson 10: x86 _PAGE_SPLITTING

def _entry_in(state, slot):
    table, index = slot
    rows = np.flatnonzero(state.table_pfns == table)
    return int(state.tables[rows[0], index]) if len(rows) else 0


def pmd_history(recorder, slot):
    """``[(i, point name, entry)]``: the PMD ``slot`` at every point where it changed."""
    out, last = [], None
    for i, s in enumerate(recorder.steps):
        e = _entry_in(s.state, slot)
        if e != last:
            out.append((i, s.name, e))
            last = e
    return out


def pmd_during_split(level, seed=0):
    """Record ``split_huge_page()`` of a PMD-mapped THP; return text of its PMD entry over time.

    Each line: the point, the entry in hex, and :func:`thplab.pgtable.decode_entry`
    of it, plus whether ``pmd_trans_huge()``/``pmd_present()`` hold -- and,
    where the kernel still has it, ``pmd_trans_splitting()``.
    """
    m = Machine.boot("8M", patches=level, seed=seed)
    pid, addr, head = m.map_thp()
    slot = mem.pmd_offset(m.kernel, m.processes[pid], addr)
    result, rec = record(m, m.split_huge_page, head)
    has = m.kernel.has("pmd_trans_splitting")
    lines = [f"level {level} ({_level_label(level)}): split_huge_page() -> {result}; "
             f"the PMD for {addr:#x} in pid {pid} (entry {slot[1]} of table pfn {slot[0]:#x})"]
    for i, name, e in pmd_history(rec, slot):
        flags = [f"pmd_trans_huge {int(bool(pt.pmd_trans_huge(e)))}",
                 f"pmd_present {int(bool(pt.pmd_present(e)))}"]
        if has:
            flags.append(f"pmd_trans_splitting {int(m.kernel.pmd_trans_splitting(e))}")
        lines.append(f"  {i:>2} {name}")
        lines.append(f"     {e:#018x}  {pt.decode_entry(e, 'pmd')}")
        lines.append(f"     {', '.join(flags)}")
    return "\n".join(lines)


class PmdProblem(_Answer):
    """A question about one PMD entry met during a split (lesson 10)."""


_PMD_QUESTIONS = {
    "bit10": ("Is bit 10 (_PAGE_SPLITTING in the old kernel) set in it? (1 = yes, 0 = no)",
              lambda e: int(bool(e & pt._PAGE_SPLITTING))),
    "pmd_present": ("What does pmd_present() say about it? (1 = true, 0 = false)",
                    lambda e: int(bool(pt.pmd_present(e)))),
    "pmd_trans_huge": ("What does pmd_trans_huge() say about it? (1 = true, 0 = false)",
                       lambda e: int(bool(pt.pmd_trans_huge(e)))),
}


def pmd_problem(seed=0, levels=(0, 8)):
    """Seeded: one PMD value seen during ``split_huge_page()``; decode a bit of it."""
    rng = np.random.default_rng(seed)
    level = int(rng.choice(levels))
    kind = str(rng.choice(list(_PMD_QUESTIONS)))
    m = Machine.boot("8M", patches=level, seed=seed)
    pid, addr, head = m.map_thp()
    slot = mem.pmd_offset(m.kernel, m.processes[pid], addr)
    _, rec = record(m, m.split_huge_page, head)
    history = pmd_history(rec, slot)
    i, name, e = history[int(rng.integers(len(history)))]
    text, answer = _PMD_QUESTIONS[kind]
    question = f"At point {i} ({name}) the PMD holds {e:#018x}. {text}"
    why = (f"{e:#018x} decodes as: {pt.decode_entry(e, 'pmd')}. Bit 0 is P, bit 7 PSE (a 2 MiB leaf: "
           "pmd_trans_huge), bit 10 the old _PAGE_SPLITTING; pmd_present() is true if P, PROTNONE or "
           "PSE is set, because the old split clears P (pmdp_invalidate) while the PMD is still huge.")
    return PmdProblem(seed, level, kind, ["fault a THP", "split_huge_page(), recorded"], question,
                      answer(e), why)


# =================================================================== lesson 11: futex

def _futex_stage(level, seed=0):
    m = Machine.boot("8M", patches=level, seed=seed)
    pid, addr, head = m.map_thp()
    return m, pid, addr, head


def futex_swap_race(level=0, seed=0):
    """The old futex trick in action: the tail pin becomes a head pin while a split waits.

    CPU1 (``get_futex_key()`` on subpage 5) gets into its interrupts-off
    window and re-pins; then CPU0 starts ``split_huge_page()``, marks the
    PMD and its TLB-flush IPI waits; CPU1 takes the head reference, drops
    the tail pin, enables interrupts; only then can the split go on.
    """
    m, pid, addr, head = _futex_stage(level, seed)
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head),
                      CPU1=lambda: m.get_futex_key(pid, addr + 5 * PAGE_SIZE))
    if m.kernel.caps["futex_thp_special_case"]:
        schedule = [("CPU1", "interrupts off"), ("CPU1", "put_compound_page"), ("CPU0", "flush")]
    else:
        schedule = [("CPU1", "lock_page"), ("CPU0", "done")]
    return Race("futex-swap", "get_futex_key() swaps its pin while split_huge_page() waits",
                futex_swap_race.__doc__, m, il, schedule, head, pid, addr)


#: Points of ``get_futex_key()`` (on subpage 5) where lesson 11 stops CPU1 and
#: asks about the split: ``(path, description)``, where CPU1 runs to the first
#: point containing each text of ``path`` in turn.
FUTEX_POINTS = (
    (("get_user_pages_fast: local_irq_enable",),
     "gup-fast has returned subpage 5, pinned"),
    (("interrupts off",),
     "the tail pin was dropped; interrupts are off, about to re-pin"),
    (("interrupts off", "put_compound_page: compound_lock_irqsave"),
     "re-pinned, head reference taken, tail pin not yet dropped (interrupts off)"),
    (("lock_page",),
     "about to lock_page() the head"),
)


def _points(level, seed=0):
    """The FUTEX_POINTS that ``get_futex_key()`` passes at ``level``."""
    m, pid, addr, _ = _futex_stage(level, seed)
    il = Interleaving(m, CPU1=lambda: m.get_futex_key(pid, addr + 5 * PAGE_SIZE))
    il.finish()
    names = [s.name for s in il.steps]
    out = []
    for path, what in FUTEX_POINTS:
        at = 0
        for text in path:
            at = next((i for i in range(at, len(names)) if text in names[i]), None)
            if at is None:
                break
        if at is not None:
            out.append((path, what))
    return out


def _refs_held(machine, head):
    mm = machine.mem_map
    if machine.kernel.caps["tail_pins"]:
        mappings = int(mm["_mapcount"][head]) + 1          # PMDs; tails' _mapcount are pins
    else:
        mappings = _sum_mapcount(machine, head)
    return int(mm["_count"][head]) - mappings


def futex_at(level, point, seed=0):
    """Stop ``get_futex_key()`` at ``point`` (an index into the level's FUTEX_POINTS), then split.

    Returns a dict: ``point`` (its description), ``refs`` (references the
    futex code holds on the THP there: head ``_count`` minus mappings),
    ``tail_pin`` (the old scheme's pin count on subpage 5), ``split``
    (what ``split_huge_page()`` returns when CPU0 runs it from there, CPU1
    moving only when CPU0 waits for it), ``waited`` (whether CPU0 had to
    wait for CPU1), and ``log``.
    """
    path, what = _points(level, seed)[point]
    m, pid, addr, head = _futex_stage(level, seed)
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head),
                      CPU1=lambda: m.get_futex_key(pid, addr + 5 * PAGE_SIZE))
    for text in path:
        il.run_until("CPU1", text)
    refs = _refs_held(m, head)
    tail_pin = int(m.mem_map["_mapcount"][head + 5]) + 1 if m.kernel.caps["tail_pins"] else 0
    waited = False
    while not il.done("CPU0"):
        il.step("CPU0")
        if il.waiting("CPU0"):
            waited = True
            il.step("CPU1")
    il.finish()
    return {"point": what, "refs": refs, "tail_pin": tail_pin, "split": il.results.get("CPU0"),
            "waited": waited, "log": il.log()}


class FutexProblem(_Answer):
    """A question about ``get_futex_key()`` meeting ``split_huge_page()`` (lesson 11)."""


def futex_problem(seed=0, levels=(0, 9)):
    """Seeded: CPU1 stopped at a point of ``get_futex_key()``; ask what it holds or what a split does.

    Kinds: ``refs`` (references held on the THP), ``split`` (return value of
    a split started there), ``waits`` (1 if that split has to wait for CPU1).
    """
    rng = np.random.default_rng(seed)
    level = int(rng.choice(levels))
    points = _points(level, seed)
    i = int(rng.integers(len(points)))
    kind = str(rng.choice(("refs", "split", "waits")))
    res = futex_at(level, i, seed)
    question = {
        "refs": "How many references does the futex code hold on the THP at this point "
                "(head _count minus the mappings)?",
        "split": "CPU0 now calls split_huge_page() on the THP. What does it return "
                 "(0 for success, -16 for -EBUSY)?",
        "waits": "CPU0 now calls split_huge_page(). Does it have to wait for CPU1 before it can "
                 "finish? (1 = yes, 0 = no)",
    }[kind]
    answer = {"refs": res["refs"], "split": res["split"], "waits": int(res["waited"])}[kind]
    if level < 4:
        scheme = (f"Old scheme: the futex code holds {_refs(res['refs'])} here"
                  + (", one of them a pin on tail 5 (its _mapcount)" if res["tail_pin"] else "")
                  + ". The split never fails; it can only be held up by interrupts off on CPU1.")
    else:
        scheme = (f"New scheme: the futex code holds {_refs(res['refs'])}, all on the head's "
                  "_count; split_huge_page() fails with -EBUSY while any are held.")
    why = (f"{scheme} Split returns {res['split']}"
           + (", after waiting for CPU1 (its TLB-flush IPI cannot run while CPU1 has interrupts off)."
              if res["waited"] else ", without waiting for CPU1."))
    steps = ["fault a THP", "CPU1: get_futex_key() on subpage 5, stopped where "
             + res["point"]]
    return FutexProblem(seed, level, kind, steps, question, int(answer), why)


def futex_solo(level, seed=0):
    """The points ``get_futex_key()`` on subpage 5 passes when nothing else runs, as text."""
    m, pid, addr, _ = _futex_stage(level, seed)
    il = Interleaving(m, CPU1=lambda: m.get_futex_key(pid, addr + 5 * PAGE_SIZE))
    il.finish()
    return f"get_futex_key() alone -- level {level} ({_level_label(level)})\n" + il.log()


def futex_table(levels=(0, 8, 9)):
    """Text: at each point of ``get_futex_key()``, what it holds and what a split started there does."""
    lines = [f"{'level':<7}{'refs':>4}{'split':>7}{'waits':>7}  CPU1 stopped where"]
    for lv in levels:
        for i, (_, what) in enumerate(_points(lv)):
            r = futex_at(lv, i)
            lines.append(f"{lv:<7}{r['refs']:>4}{r['split']:>7}{'yes' if r['waited'] else 'no':>7}  {what}")
    return "\n".join(lines)
