"""Helpers for lesson 06 (patch 04): one PMD split, the compound page left whole.

* :func:`split_pmd_trace` records ``split_huge_pmd()`` of a forked child's PMD,
  and :func:`pmd_window_table` reads the child's PMD entry and the counters
  at every kernel point of it -- the moment the PMD is empty included.
* :func:`empty_pmd_race` plays a walker that reads the PMD without its lock
  (``munmap()``) into that moment, for :func:`thplab.diagrams.race_swimlane`.
* :func:`munmap_problem`: a seeded "change this and predict" question (a
  factory for :class:`thplab.widgets.Quiz`).

The PMD life is v1's as thplab reconstructs it (patch 04 is not archived):
``__split_huge_pmd()`` clears the PMD, flushes the TLB, then fills the
deposited PTE table and installs it.  v4.5 fills the table first and keeps
the PMD huge but not present (``pmdp_invalidate()``) until the table is in.
"""

from dataclasses import dataclass, field

import numpy as np

from .. import memory as mem
from ..diagrams import pmd_state
from ..errors import BadArgument
from ..machine import Machine
from ..params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from ..problems import Exercise, check_number
from ..races import Race
from ..trace import Interleaving, Recorder

__all__ = ["PmdTrace", "split_pmd_trace", "pmd_window_table", "LOCKLESS_SEES", "empty_pmd_race",
           "MunmapProblem", "munmap_problem"]

#: What a page-table walker that does not take the PMD lock (gup-fast,
#: ``zap_pmd_range()``'s first look, ``copy_pmd_range()``) concludes from each PMD state.
LOCKLESS_SEES = {
    "huge": "huge: take the PMD lock",
    "empty": "pmd_none: skip these 2 MiB",
    "table": "a table: walk its PTEs",
}


@dataclass
class PmdTrace:
    """A recorded ``split_huge_pmd()``: the machine, the recorder and where the PMD lives."""

    machine: Machine
    recorder: Recorder
    parent: int
    child: int
    addr: int
    head: int
    slot: tuple   # (PMD table pfn, index) of the child's PMD


def split_pmd_trace(level=4, seed=0):
    """Fault a THP, fork, then record ``split_huge_pmd()`` of the child's PMD (level >= 4)."""
    m = Machine.boot("16M", patches=level, seed=seed)
    if not m.kernel.caps["pte_mapped_thp"]:
        raise BadArgument(f"level {level}: split_huge_pmd() splits only one PMD from patch 04 on")
    parent, addr, head = m.map_thp()
    child = m.fork(parent)
    slot = mem.pmd_offset(m.kernel, m.processes[child], addr)
    rec = Recorder(m)
    with rec:
        m.split_huge_pmd(child, addr)
    return PmdTrace(m, rec, parent, child, addr, head, slot)


def _entry(state, slot):
    table, index = slot
    rows = (state.table_pfns == table).nonzero()[0]
    return int(state.tables[rows[0], index]) if len(rows) else 0


def pmd_window_table(trace):
    """Text: at each point of the recorded split, the child's PMD, its state, the counters, a lockless reader."""
    head = trace.head
    header = f"{'point':<22}{'child PMD':>20} {'state':<6}{'head':>6}{'tail 1':>7}  a walker without the lock"
    lines = [f"split_huge_pmd() of pid {trace.child}'s PMD at {trace.addr:#x} (level {trace.machine.level}); "
             "head = head _count,", "tail 1 = subpage 1's _mapcount (raw; -1 means no PTE maps it)",
             header, "-" * len(header)]
    for step in trace.recorder.steps:
        e = _entry(step.state, trace.slot)
        state = pmd_state(e)
        mm = step.state.mem_map
        name = step.name.replace("__split_huge_pmd: ", "")
        lines.append(f"{name:<22}{e:>#20x} {state:<6}{int(mm['_count'][head]):>6}"
                     f"{int(mm['_mapcount'][head + 1]):>7}  {LOCKLESS_SEES[state]}")
    return "\n".join(lines)


def empty_pmd_race(level=4, seed=0):
    """CPU0 splits a process's PMD; CPU1 ``munmap()``\\ s the whole 2 MiB while the PMD is empty.

    CPU0 runs ``split_huge_pmd()`` to the point where the PMD is cleared;
    CPU1's ``munmap()`` reads the PMD without the PMD lock, finds
    ``pmd_none`` and skips the range -- the VMA goes, the THP is not
    unmapped; then CPU0 installs a table of 512 PTEs where no VMA is left.
    thplab has no ``mmap_sem``: in a kernel ``munmap()`` holds it for
    writing, so it stands here for any walker that does not (see lesson 06).
    """
    m = Machine.boot("8M", patches=level, seed=seed)
    if not m.kernel.caps["pte_mapped_thp"]:
        raise BadArgument(f"level {level}: the split of one PMD exists from patch 04 on")
    pid, addr, head = m.map_thp()
    slot = mem.pmd_offset(m.kernel, m.processes[pid], addr)

    def unmap():
        # Name in the swimlane what zap_pmd_range() is about to read (the model's walk reads the same entry).
        m.kernel.point(f"munmap(): PMD read without its lock: {pmd_state(mem.entry(m.kernel, slot))}")
        m.munmap(pid, addr, HPAGE_PMD_SIZE)

    il = Interleaving(m, CPU0=lambda: m.split_huge_pmd(pid, addr), CPU1=unmap)
    return Race("empty-pmd-vs-munmap", "split_huge_pmd() vs munmap() in v1's empty-PMD window",
                empty_pmd_race.__doc__, m, il, [("CPU0", "PMD cleared"), ("CPU1", "done")], head, pid, addr)


@dataclass
class MunmapProblem(Exercise):
    """A question about the counters after a child unmaps one subpage (lesson 06); wrong answers diagnosed."""

    diagnoses: dict = field(default_factory=dict)

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, diagnoses=self.diagnoses)


_MUNMAP_QUESTIONS = {
    "tail_mapcount": "What is page_mapcount() of subpage {s}?",
    "page_count": "What is page_count() of the head?",
}


def munmap_problem(seed=0, level=4):
    """Seeded: fork, maybe split the parent's PMD, the child munmap()s one subpage; ask a counter.

    Kinds: ``tail_mapcount`` (``page_mapcount()`` of the unmapped subpage) and
    ``page_count`` (of the head).  The answer is the model's; the typical
    wrong answers (a PMD counted in a tail, a forgotten reference) are
    diagnosed.
    """
    rng = np.random.default_rng(seed)
    kind = str(rng.choice(list(_MUNMAP_QUESTIONS)))
    s = int(rng.integers(1, HPAGE_PMD_NR))
    parent_split = bool(rng.integers(2))
    m = Machine.boot("16M", patches=level, seed=seed)
    parent, addr, head = m.map_thp()
    child = m.fork(parent)
    steps = ["fault a THP (the parent)", "fork() (the child)"]
    if parent_split:
        m.split_huge_pmd(parent, addr)
        steps.append("split_huge_pmd() in the parent")
    m.munmap(child, addr + s * PAGE_SIZE, PAGE_SIZE)
    steps.append(f"the child munmap()s subpage {s} (4 KiB)")
    m.check()
    count, tail = int(m.page_count(head)), int(m.page_mapcount(head + s))
    parent_how = "512 PTEs" if parent_split else "huge PMD"
    if kind == "tail_mapcount":
        answer = tail
        diagnoses = {tail + 1: ("The parent's huge PMD maps it, but a PMD is counted only in the head's "
                                "_mapcount; a tail's _mapcount counts PTEs.") if not parent_split else
                     "The child's PTE for it is gone: munmap() cleared it.",
                     tail - 1: "The parent maps it with a PTE of its own, and PTEs count in the tail."}
        why = (f"The parent maps subpage {s} with its {parent_how}"
               + ("" if parent_split else ", which only the head's _mapcount counts")
               + f"; the child's munmap() split its own PMD, then cleared the PTE of subpage {s}. "
               f"page_mapcount = tail _mapcount + 1 = {tail}.")
    else:
        answer = count
        diagnoses = {count + 1: "munmap() dropped the reference of the PTE it cleared.",
                     count - 1: "Each PTE owns a reference: subpage 0's PTE keeps the one the PMD had.",
                     2: "A PMD split adds 511 references: one per new PTE, subpage 0 reusing the PMD's."}
        diagnoses.pop(answer, None)
        why = (f"Every mapping holds one reference on the head: the parent's {parent_how} "
               f"({HPAGE_PMD_NR if parent_split else 1}) and the child's {HPAGE_PMD_NR - 1} PTEs left "
               f"after its munmap() split its PMD and cleared one PTE: {count}, no pins.")
    question = _MUNMAP_QUESTIONS[kind].format(s=s)
    return MunmapProblem(seed, level, kind, steps, question, answer, why, diagnoses)
