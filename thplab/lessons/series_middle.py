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
import textwrap

import numpy as np

from .. import memory as mem
from .. import pgtable as pt
from ..machine import Machine
from ..params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from ..problems import Exercise, check_number
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


def recorded_comparison(names, levels, show_all=False):
    """The real kernel's recorded vmstat/mapping changes next to the model at ``levels``.

    By default only the rows of :func:`thplab.live.format_run` where some model level does not
    match the real kernel (a value that differs, or a quantity one side does not have), each
    reason printed once under the whole table.  ``show_all=True`` prints every row and the experiments' notes: the slice of
    :func:`thplab.live.format_run` for the experiments ``names``.  Either way without the
    recording date (deterministic, for checked cells).
    """
    from .. import live

    run = live.load_recorded()
    run = dataclasses.replace(run, experiments={n: run.experiments[n] for n in names})
    where = f"Recorded on Linux {run.kernel} (another machine; not a live reading)"
    if show_all:
        lines = live.format_run(run, levels=levels).splitlines()
        lines[0] = where
        return "\n".join(lines)
    lines = [where, "Rows where a model level does not match the real kernel (show_all=True: all, and notes)."]
    header = f"  {'step':<15}{'quantity':<31}{'real':>5}" + "".join(
        f"  {f'L{lv} ' + live.LEVEL_NAMES.get(lv, ''):<16}" for lv in levels)
    reasons = []
    for name in names:
        lines += ["", f"== {name}: {live.EXPERIMENTS[name]}", header.rstrip()]
        last, previous = None, {}
        for row in live.compare(run.experiments[name], levels):
            values = (row.observed, [row.predicted[lv] for lv in levels])
            unchanged = row.step != "fault" and previous.get(row.quantity) == values
            previous[row.quantity] = values
            # As format_run: the fault every experiment starts with belongs to the fault experiment,
            # and a quantity that did not change in this step (not an event) says nothing new.
            if ((row.step == "fault" and name != "fault") or (unchanged and row.quantity not in live.THP_EVENTS)
                    or all(v == "match" for v in row.verdict.values())):
                continue
            reasons += [t for t in row.explanations if t not in reasons]
            refs = "".join(f" [{reasons.index(t) + 1}]" for t in row.explanations)
            cells = "".join(f"  {live._cell(row.predicted[lv]) + ' ' + row.verdict[lv]:<16}" for lv in levels)
            lines.append(f"  {row.step if row.step != last else '':<15}{row.quantity:<31}"
                         f"{live._cell(row.observed):>5}{cells}{refs}".rstrip())
            last = row.step
    lines.append("")
    for number, text in enumerate(reasons, 1):
        lines += textwrap.wrap(text, 100, initial_indent=f"[{number}] ", subsequent_indent="    ")
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


def _marked_per_point(recorder):
    """Per recorded point: how many page-table entries have ``_PAGE_SPLITTING`` (bit 10) set."""
    bit = np.uint64(pt._PAGE_SPLITTING)
    return [int(((s.state.tables & bit) != 0).sum()) for s in recorder.steps]


def _marked_during_refcount(recorder, marked):
    """Entries with bit 10 while the compound page's counts are split (0 if that phase never ran)."""
    return max([n for n, s in zip(marked, recorder.steps) if "__split_huge_page_refcount" in s.name] or [0])


def splitting_bit_census(scenario, levels=(0, 3, 4, 6, 10)):
    """Run ``scenario`` under a recorder at each level; what did the kernel do with bit 10?

    Returns text, one line per level: the most page-table entries with
    ``_PAGE_BIT_SPLITTING`` (bit 10) set at the same moment, and how many
    still had it while ``__split_huge_page_refcount()`` split the counts --
    facts about the kernel (one mark per PMD mapping the THP), not about how
    many points the model happens to record.
    """
    lines = [f"{scenario.title}: {len(scenario.steps)} steps",
             f"{'level':<20}{'most entries with bit 10 at once':>34}{'while the counts are split':>28}"]
    for lv in levels:
        run = scenario.start(lv)
        most = during = 0
        while not run.finished:
            _, rec = record(run.machine, run.step)
            marked = _marked_per_point(rec)
            most = max(most, *marked)
            during = max(during, _marked_during_refcount(rec, marked))
        lines.append(f"{f'{lv} ({_level_label(lv)})':<20}{most:>34}{during:>28}")
    return "\n".join(lines)


@dataclasses.dataclass
class _Diagnosed(_Answer):
    """An answer whose feedback says what a typical wrong answer usually means (lessons 09-11)."""

    diagnoses: dict = dataclasses.field(default_factory=dict)
    hex_answer: bool = False

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, diagnoses=self.diagnoses,
                            hex_answer=self.hex_answer)


class SplittingProblem(_Diagnosed):
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
    marked = _marked_per_point(rec)
    if kind == "max_marked":
        question = ("While split_huge_page() runs, at most how many page-table entries carry bit 10\n"
                    "(_PAGE_SPLITTING) at the same time?")
        value = max(marked)
    else:
        question = ("While __split_huge_page_refcount() splits the compound page's counts, how many\n"
                    "page-table entries carry bit 10?")
        value = _marked_during_refcount(rec, marked)
    old = run.machine.kernel.caps["splitting_pmd"] and not run.machine.kernel.caps["pte_mapped_thp"]
    if old:
        why = (f"Old split: phase 1 marks every PMD mapping the THP ({forks + 1} here: the parent's and "
               f"one per fork) and keeps them marked through the refcount split; phase 3 turns each "
               "into a table.")
        diagnoses = {1: "Each process that maps the THP has its own PMD, and phase 1 marks all of them "
                        "before phase 2 starts.",
                     0: "At this level the old three-phase split still runs: it marks before it splits."}
        if forks:
            diagnoses[forks] = "You forgot the parent's own PMD."
    else:
        why = ("From patch 04 on, split_huge_pmd() clears the PMD under the PMD lock and fills the "
               "table; nothing sets bit 10 any more, which is why patches 07 and 08 can delete "
               "everything that tests it.")
        diagnoses = {forks + 1: "That is the old kernel's answer (one mark per PMD); from patch 04 on "
                                "the split never marks a PMD."}
    return SplittingProblem(seed, level, kind, [label for label, _ in steps] + ["split_huge_page()"],
                            question, int(value), why, diagnoses)


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
    lines = [f"level {level} ({_level_label(level)}): split_huge_page() -> {result}",
             f"the PMD for {addr:#x} in pid {pid} (entry {slot[1]} of table pfn {slot[0]:#x}):"]
    for i, name, e in pmd_history(rec, slot):
        flags = [f"pmd_trans_huge {int(bool(pt.pmd_trans_huge(e)))}",
                 f"pmd_present {int(bool(pt.pmd_present(e)))}"]
        if has:
            flags.append(f"pmd_trans_splitting {int(m.kernel.pmd_trans_splitting(e))}")
        lines.append(f"  {i:>2} {name}")
        lines.append(f"     {e:#018x}  {pt.decode_entry(e, 'pmd')}")
        lines.append(f"     {', '.join(flags)}")
    return "\n".join(lines)


class PmdProblem(_Diagnosed):
    """A question about one PMD entry met during a split or a PROT_NONE mapping (lesson 10)."""


#: Lesson 10's set-ups: how the THP whose PMD the question follows came to be.
PMD_SETUPS = ("one process", "after fork()", "the second THP")
#: How a problem's first step reads for each set-up.
_SETUP_STEP = {"one process": "fault a THP in one process",
               "after fork()": "fault a THP, then fork(): both PMDs write-protected",
               "the second THP": "fault a second THP in the same process (another pfn)"}

#: The kernel actions lesson 10 asks about: (action, the model's point that shows its result).
PMD_ACTIONS = {
    "old": (("pmdp_splitting_flush()", "_PAGE_SPLITTING set"), ("pmdp_invalidate()", "pmdp_invalidate")),
    "new": (("__split_huge_pmd()'s pmdp_clear_flush()", "PMD cleared"),),
}


def _pmd_stage(level, setup, seed=0):
    m = Machine.boot("8M", patches=level, seed=seed)
    pid, addr, head = m.map_thp()
    if setup == "after fork()":
        m.fork(pid)
    elif setup == "the second THP":
        pid, addr, head = m.map_thp(pid)
    return m, pid, addr, head


def _entry_after(level, setup, point, seed=0):
    """``(before, after)``: the PMD before ``split_huge_page()`` and at the first point containing ``point``."""
    m, pid, addr, head = _pmd_stage(level, setup, seed)
    slot = mem.pmd_offset(m.kernel, m.processes[pid], addr)
    _, rec = record(m, m.split_huge_page, head)
    history = pmd_history(rec, slot)
    return history[0][2], next(e for _, name, e in history if point in name)


def _pmd_value_question(rng, level, setup, seed):
    action, point = PMD_ACTIONS["old" if level < 4 else "new"][int(rng.integers(2 if level < 4 else 1))]
    before, after = _entry_after(level, setup, point, seed)
    question = (f"Before split_huge_page() the PMD holds {before:#018x}.\n"
                f"What does it hold right after {action}? (hex)")
    split, p = pt._PAGE_SPLITTING, pt._PAGE_PRESENT
    if "splitting" in point.lower():
        diagnoses = {before | 0x200: "0x200 is bit 9, where v3.14 kept the bit; on v3.16 it is bit 10 "
                                     "(0x400).",
                     before: "pmdp_splitting_flush() does change the entry: it sets _PAGE_SPLITTING."}
    elif level < 4:
        diagnoses = {before | split: "pmdp_invalidate() clears P (bit 0); the other bits stay.",
                     before & ~p: "The SPLITTING bit stays until pmd_populate() replaces the whole entry.",
                     0: "The old split never empties the PMD: it clears P only, so the entry still "
                        "looks huge."}
    else:
        diagnoses = {before | split: "From patch 04 on nothing sets bit 10.",
                     before & ~p: "That is the old kernel's pmdp_invalidate(); __split_huge_pmd() clears "
                                  "the whole entry (pmd_none) before it populates the table."}
    why = (f"{before:#018x} is [{pt.decode_entry(before, 'pmd')}]; right after {action} it is "
           f"{after:#018x} [{pt.decode_entry(after, 'pmd')}].")
    diagnoses.pop(after, None)
    return "value_after", [_SETUP_STEP[setup], "split_huge_page()"], question, after, why, diagnoses, True


def _pmd_present_question(rng, level, setup, seed):
    case = "invalidated" if level < 4 and rng.integers(2) else "PROT_NONE"
    if case == "PROT_NONE":
        m, pid, addr, _ = _pmd_stage(level, setup, seed)
        m.mprotect(pid, addr, HPAGE_PMD_SIZE, "none")
        entry = int(m.walk(pid, [addr])["pmd"][0])
        steps = [_SETUP_STEP[setup], "mprotect(PROT_NONE) on its 2 MiB"]
        wrong = ("P is clear, but the entry has PROTNONE (the Global bit, reused): the page is still "
                 "mapped, only inaccessible, so pmd_present() says yes.")
    else:
        _, entry = _entry_after(level, setup, "pmdp_invalidate", seed)
        steps = [_SETUP_STEP[setup], "split_huge_page(), stopped just after pmdp_invalidate()"]
        wrong = ("P is clear, but PSE is still set: x86's pmd_present() accepts PSE so that the "
                 "half-split PMD is not taken for an empty one.")
    answer = int(bool(pt.pmd_present(entry)))
    question = f"The PMD now holds {entry:#018x}. What does pmd_present() say? (1 = true, 0 = false)"
    why = (f"{entry:#018x} is [{pt.decode_entry(entry, 'pmd')}]. x86's pmd_present() is true when P, "
           "PROTNONE or PSE is set.")
    diagnoses = {1 - answer: wrong}
    return "pmd_present", steps, question, answer, why, diagnoses, False


def pmd_problem(seed=0, levels=(0, 8)):
    """Seeded: a PMD in a new state; give its value after a kernel action, or ``pmd_present()`` of it.

    The set-up (:data:`PMD_SETUPS`: a forked, write-protected PMD, a THP at
    another pfn...) and the level vary, so the rule -- not a value printed
    above -- answers it.  Kinds: ``value_after`` (hex) and ``pmd_present``.
    """
    rng = np.random.default_rng(seed)
    level = int(rng.choice(levels))
    setup = PMD_SETUPS[int(rng.integers(len(PMD_SETUPS)))]
    ask = _pmd_value_question if rng.integers(2) == 0 else _pmd_present_question
    kind, steps, question, answer, why, diagnoses, as_hex = ask(rng, level, setup, seed)
    return PmdProblem(seed, level, kind, steps, question, int(answer), why, diagnoses, as_hex)


def splitting_pmd_walk(level=0, subpage=5, seed=0):
    """:func:`thplab.diagrams.page_table_walk` of subpage ``subpage`` while the old split has it marked.

    CPU0 runs ``split_huge_page()`` up to ``pmdp_splitting_flush()``; the walk
    is drawn there (the PMD: present, huge and ``_PAGE_SPLITTING``), then the
    split finishes.  Only kernels that still mark PMDs (levels 0-3).
    """
    from ..diagrams import page_table_walk

    m = Machine.boot("8M", patches=level, seed=seed)
    if not (m.kernel.caps["splitting_pmd"] and m.kernel.has("pmdp_splitting_flush")
            and not m.kernel.caps["pte_mapped_thp"]):
        raise ValueError(f"level {level} never marks a PMD _PAGE_SPLITTING (levels 0-3 do)")
    pid, addr, head = m.map_thp()
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head))
    il.run_until("CPU0", "_PAGE_SPLITTING set")
    diagram = page_table_walk(m, pid, addr + subpage * PAGE_SIZE)
    il.finish()
    return diagram


# =================================================================== lesson 11: futex

def _futex_stage(level, seed=0, pte_mapped=False):
    """A machine with one THP; with ``pte_mapped`` its PMD is split first (levels >= 4 keep the THP)."""
    m = Machine.boot("8M", patches=level, seed=seed)
    pid, addr, head = m.map_thp()
    if pte_mapped:
        m.split_huge_pmd(pid, addr)
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


#: Points of ``get_futex_key()`` where lesson 11 stops CPU1 and asks about the
#: split: ``(path, description)``, where CPU1 runs to the first point
#: containing each text of ``path`` in turn.
FUTEX_POINTS = (
    (("get_user_pages_fast: local_irq_enable",),
     "gup-fast has returned the page, pinned"),
    (("interrupts off",),
     "the tail pin was dropped; interrupts are off, about to re-pin"),
    (("interrupts off", "put_compound_page: compound_lock_irqsave"),
     "re-pinned and head reference taken; tail pin still held (interrupts off)"),
    (("lock_page",),
     "lock_page() done: the head is locked"),
)


def _futex_il(level, seed, subpage, pte_mapped, split):
    m, pid, addr, head = _futex_stage(level, seed, pte_mapped)
    ops = {"CPU0": lambda: m.split_huge_page(head)} if split else {}
    il = Interleaving(m, **ops, CPU1=lambda: m.get_futex_key(pid, addr + subpage * PAGE_SIZE))
    return m, head, il


def _points(level, seed=0, subpage=5, pte_mapped=False):
    """The FUTEX_POINTS that ``get_futex_key()`` on ``subpage`` passes at ``level``."""
    _, _, il = _futex_il(level, seed, subpage, pte_mapped, split=False)
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


def futex_at(level, point, seed=0, subpage=5, pte_mapped=False):
    """Stop ``get_futex_key()`` on ``subpage`` at ``point`` (an index into the level's FUTEX_POINTS), then split.

    Returns a dict: ``point`` (its description), ``refs`` (references the
    futex code holds on the THP there: head ``_count`` minus mappings),
    ``tail_pin`` (the old scheme's pin count on the subpage), ``irqs_off``
    (whether CPU1 has interrupts off there), ``split`` (what
    ``split_huge_page()`` returns when CPU0 runs it from there, CPU1 moving
    only when CPU0 waits for it), ``waited`` (whether CPU0 had to wait for
    CPU1), and ``log``.
    """
    path, what = _points(level, seed, subpage, pte_mapped)[point]
    m, head, il = _futex_il(level, seed, subpage, pte_mapped, split=True)
    for text in path:
        il.run_until("CPU1", text)
    refs = _refs_held(m, head)
    tail_pin = (int(m.mem_map["_mapcount"][head + subpage]) + 1
                if m.kernel.caps["tail_pins"] and subpage else 0)
    irqs_off = "CPU1" in il.steps[-1].irqs_off
    waited = False
    while not il.done("CPU0"):
        il.step("CPU0")
        if il.waiting("CPU0"):
            waited = True
            il.step("CPU1")
    il.finish()
    return {"point": what, "refs": refs, "tail_pin": tail_pin, "irqs_off": irqs_off,
            "split": il.results.get("CPU0"), "waited": waited, "log": il.log()}


class FutexProblem(_Diagnosed):
    """A question about ``get_futex_key()`` meeting ``split_huge_page()`` (lesson 11)."""


def _futex_variants(level):
    """``[(subpage, pte_mapped, label)]``: states lesson 11's table does not show (it has subpage 5, huge PMD)."""
    out = [(0, False, "the futex word is on subpage 0, the head page"),
           (511, False, "the futex word is on subpage 511, the last tail")]
    if level >= 4:  # from patch 04 a PMD split keeps the compound page
        out.append((5, True, "split_huge_pmd() first: the THP is mapped by PTEs; futex word on subpage 5"))
    return out


def _futex_diagnoses(kind, res, level):
    if kind == "refs":
        return {res["refs"] + 1: "The tail pin was dropped (put_page) before the re-pin; count again."
                if res["refs"] == 0 else "Count only the references the futex code took, not the mappings.",
                res["refs"] - 1: "For a moment both are held: the head reference is taken before the tail "
                                 "pin is dropped." if res["refs"] == 2 else
                                 "gup-fast's pin is a reference too (on the head's _count)."}
    if kind == "split":
        if res["split"] == 0:
            return {-16: "The old split never fails: it moves pins to the tails." if level < 4 else
                         "At this point the futex code holds no reference at all."}
        return {0: "A pin on a tail is a reference on the head's _count now, so the split's test "
                   "page_count - 1 == sum of page_mapcount fails."}
    if res["waited"]:
        return {0: "CPU1 has interrupts off here: the split's TLB-flush IPI cannot be taken until it "
                   "enables them."}
    return {1: "Only interrupts off on CPU1 hold the split up, and CPU1 has them on here."
            if not res["irqs_off"] else "The split fails at its racy check, before it flushes anything."}


def futex_problem(seed=0, levels=(0, 8, 9)):
    """Seeded: CPU1 stopped in ``get_futex_key()`` in a state lesson 11's table does not show.

    The futex word is on the head or the last tail, or the THP is
    PTE-mapped (:func:`_futex_variants`); the same rules answer it.  Kinds:
    ``refs`` (references held on the THP), ``split`` (return value of a
    split started there), ``waits`` (1 if that split has to wait for CPU1).
    """
    rng = np.random.default_rng(seed)
    level = int(rng.choice(levels))
    variants = _futex_variants(level)
    subpage, pte_mapped, label = variants[int(rng.integers(len(variants)))]
    points = _points(level, seed, subpage, pte_mapped)
    i = int(rng.integers(len(points)))
    kind = str(rng.choice(("refs", "split", "waits")))
    res = futex_at(level, i, seed, subpage, pte_mapped)
    question = {
        "refs": "How many references does the futex code hold on the THP at this point "
                "(head _count minus the mappings)?",
        "split": "CPU0 now calls split_huge_page() on the THP. What does it return "
                 "(0 for success, -16 for -EBUSY)?",
        "waits": "CPU0 now calls split_huge_page(). Does it have to wait for CPU1 before it can "
                 "finish? (1 = yes, 0 = no)",
    }[kind]
    answer = {"refs": res["refs"], "split": res["split"], "waits": int(res["waited"])}[kind]
    if not subpage and level < 9:
        special = "The page is the head, not a tail, so the special case never runs. "
    else:
        special = ""
    if level < 4:
        scheme = (f"Old scheme: the futex code holds {_refs(res['refs'])} here"
                  + (", one of them a pin on the tail (its _mapcount)" if res["tail_pin"] else "")
                  + ". The split never fails; it can only be held up by interrupts off on CPU1.")
    else:
        scheme = (f"New scheme: the futex code holds {_refs(res['refs'])}, all on the head's "
                  "_count; split_huge_page() fails with -EBUSY while any are held.")
    why = (f"{special}{scheme} Split returns {res['split']}"
           + (", after waiting for CPU1 (its TLB-flush IPI cannot run while CPU1 has interrupts off)."
              if res["waited"] else ", without waiting for CPU1."))
    steps = ["fault a THP", label, "CPU1: get_futex_key(), stopped where " + res["point"]]
    diagnoses = _futex_diagnoses(kind, res, level)
    diagnoses.pop(answer, None)
    return FutexProblem(seed, level, kind, steps, question, int(answer), why, diagnoses)


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
