"""Named scenarios that run unchanged at every series level.

A scenario is a list of steps, each a label and a function of the running
scenario.  Run one at level N-1 and at level N to see what patch N changed:

>>> run = SCENARIOS["fork-pin-split"].start(level=0)
>>> run.run_all()                                     # doctest: +ELLIPSIS
[...]
>>> print(run.table())                                # doctest: +SKIP
"""

from dataclasses import dataclass, field

import numpy as np

from .errors import BadArgument
from .machine import Machine
from .series import kernel_args
from .page_flags import PageHead, PageTail, Use, compound_head
from .params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE

#: Subpages shown in counter tables: the head, the first tails, one in the
#: middle (the one lessons pin), and the last.
WATCH = (0, 1, 5, 8, 511)


@dataclass
class Scenario:
    """A recipe: a title, a description, and steps ``(label, fn(run))``."""

    name: str
    title: str
    description: str
    steps: list
    mem: str = "16M"
    nodes: int = 1

    def start(self, level=None, seed=0, kernel=None):
        """Boot a machine at ``level`` (of ``kernel``'s stack, the RFC's by default) and return
        a :class:`ScenarioRun` before step 1.  A kernel with THP marked BROKEN (v4.5 steps
        2-6) has no THP to run a scenario on, and is refused."""
        how = kernel_args(level) if kernel is None else {"kernel": kernel, "patches": level}
        m = Machine.boot(self.mem, seed=seed, nodes=self.nodes, **how)
        if m.kernel.caps.get("thp_broken"):
            raise BadArgument(f"{m.kernel.name} has THP marked BROKEN (the series turned it off from "
                              "its patch 11 to 35, v4.5 steps 2-6): no THP for scenario "
                              f"{self.name!r}; try step 1 or 7")
        return ScenarioRun(self, m)


@dataclass
class ScenarioRun:
    """A scenario on a machine, run step by step."""

    scenario: Scenario
    machine: Machine
    done: int = 0
    pid: int = None
    child: int = None
    addr: int = None
    head: int = None
    pins: list = field(default_factory=list)
    results: list = field(default_factory=list)

    @property
    def level_label(self):
        """``'level 4'`` on the RFC's stack, else the kernel's name (``'v4.5'``): how tables name it."""
        k = self.machine.kernel
        return f"level {k.level}" if k.stack == "rfc-v1" else k.name

    @property
    def finished(self):
        return self.done == len(self.scenario.steps)

    @property
    def labels(self):
        return [label for label, _ in self.scenario.steps]

    def step(self):
        """Run the next step; return ``(label, result)``."""
        if self.finished:
            raise IndexError(f"scenario {self.scenario.name!r} has only {len(self.scenario.steps)} steps")
        label, fn = self.scenario.steps[self.done]
        before = self.machine.vmstat.as_dict()
        result = fn(self)
        self.done += 1
        delta = {n: v - before[n] for n, v in self.machine.vmstat.as_dict().items()
                 if v != before[n] and n.startswith("thp_")}
        self.results.append((label, result, delta))
        return label, result

    def run_all(self):
        """Run every remaining step; return the run (like :meth:`run_to`)."""
        while not self.finished:
            self.step()
        return self

    def run_to(self, n):
        """Run until ``n`` steps are done (``n`` may not go backwards)."""
        while self.done < n:
            self.step()
        return self

    # --------------------------------------------------------------- reading

    def subpages(self, watch=WATCH):
        return [self.head + i for i in watch] if self.head is not None else []

    def counters(self, watch=WATCH):
        """Rows of counters of the watched subpages of the scenario's THP.

        Raw fields as stored (``_count``, ``_mapcount`` with its -1 bias) and
        the accessors of this level (``page_count``, ``page_mapcount``).
        """
        if self.head is None:
            return []
        m = self.machine
        mm = m.mem_map
        pages = np.array(self.subpages(watch))
        free = mm["use"][pages] == Use.free
        kind = np.where(free, "free", np.where(PageHead(mm, pages), "head",
                                               np.where(PageTail(mm, pages), "tail", "page")))
        # A free page has no page_count/page_mapcount worth reading (its raw
        # _mapcount may be the buddy marker -128): None, shown as "-".
        return [{"subpage": i, "pfn": int(p), "kind": str(kd), "_count": int(mm["_count"][p]),
                 "_mapcount": int(mm["_mapcount"][p]),
                 "page_count": None if f else int(m.page_count(p)),
                 "page_mapcount": None if f else int(m.page_mapcount(p)), "pins": int(m.pins[p])}
                for i, p, kd, f in zip(watch, pages, kind, free)]

    def table(self, watch=WATCH):
        """The counters as a fixed-width text table (deterministic, for tests and lessons)."""
        rows = self.counters(watch)
        head = f"{self.level_label}, after {self.done}/{len(self.scenario.steps)} steps"
        if not rows:
            return head + ": no THP yet"
        cols = ("subpage", "kind", "_count", "_mapcount", "page_count", "page_mapcount", "pins")
        cells = [[str("-" if r[c] is None else r[c]) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = [head, "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths))]
        lines += ["  ".join(f"{v:>{w}}" for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def mappings(self):
        """How each live process maps the scenario's 2 MiB range: ``{pid: description}``."""
        if self.addr is None:
            return {}
        out = {}
        addrs = np.arange(self.addr, self.addr + HPAGE_PMD_SIZE, PAGE_SIZE, dtype=np.uint64)
        for pid in sorted(self.machine.processes):
            w = self.machine.walk(pid, addrs)
            if (w["level"] == 2).all():
                out[pid] = "one huge PMD"
            elif (w["level"] == 0).all():
                out[pid] = "not mapped"
            else:
                nr = int((w["level"] == 1).sum())
                out[pid] = f"{nr} PTEs" + (f", {HPAGE_PMD_NR - nr} subpages unmapped" if nr < HPAGE_PMD_NR else "")
        return out

    def summary(self):
        """Text twin of a scenario's state: steps, results, vmstat deltas, mappings, counters."""
        lines = [f"{self.scenario.title} -- seed {self.machine.seed}, {self.level_label}"]
        for i, (label, result, delta) in enumerate(self.results, 1):
            res = "" if result is None else f" -> {_fmt(result)}"
            ev = "" if not delta else "  [" + ", ".join(f"{k} +{v}" for k, v in delta.items()) + "]"
            lines.append(f"  {i}. {label}{res}{ev}")
        for pid, text in self.mappings().items():
            lines.append(f"  pid {pid}: {text}")
        lines.append(self.table())
        return "\n".join(lines)


def _fmt(result):
    if isinstance(result, np.ndarray):
        return "pfns " + ", ".join(f"{int(p):#x}" for p in result)
    return str(result)


# ------------------------------------------------------------------ steps

def fault_thp(run):
    """mmap 2 MiB (MADV_HUGEPAGE) and write to it: one THP fault."""
    m = run.machine
    run.pid, run.addr, _ = m.map_thp()
    run.head = int(compound_head(m.mem_map, m.walk(run.pid, [run.addr])["pfn"][0]))


def fork(run):
    run.child = run.machine.fork(run.pid)
    return f"child pid {run.child}"


def pin_subpage(i, fast=True):
    def pin(run):
        m = run.machine
        gup = m.get_user_pages_fast if fast else m.get_user_pages
        pages = gup(run.pid, run.addr + i * PAGE_SIZE, 1)
        run.pins.extend(pages.tolist())
        return pages
    pin.__doc__ = f"get_user_pages{'_fast' if fast else ''}() pins subpage {i}"
    return pin


def unpin_all(run):
    run.machine.put_page(np.array(run.pins, dtype=np.int64))
    run.pins.clear()


def split_page(run):
    """split_huge_page() on the scenario's THP, if it still is one."""
    from .page_flags import PageCompound

    if not PageCompound(run.machine.mem_map, run.head):
        return "already split: nothing to do"
    return run.machine.split_huge_page(run.head)


def munmap_subpages(first, nr, who="pid"):
    def unmap(run):
        run.machine.munmap(getattr(run, who), run.addr + first * PAGE_SIZE, nr * PAGE_SIZE)
    return unmap


def mprotect_subpages(first, nr, prot="r"):
    def protect(run):
        run.machine.mprotect(run.pid, run.addr + first * PAGE_SIZE, nr * PAGE_SIZE, prot)
    return protect


def write_subpage(i, who="child"):
    def write(run):
        run.machine.touch(getattr(run, who), run.addr + i * PAGE_SIZE, PAGE_SIZE, write=True)
    return write


def split_pmd_in(who="pid"):
    def split(run):
        run.machine.split_huge_pmd(getattr(run, who), run.addr)
    return split


def exit_(who):
    def ex(run):
        run.machine.exit(getattr(run, who))
    return ex


SCENARIOS = {s.name: s for s in [
    Scenario("fault", "Fault a THP", "One write fault in a 2 MiB-aligned MADV_HUGEPAGE mapping.",
             [("fault a THP", fault_thp)]),
    Scenario("fork", "Fork shares a THP", "fork() maps the same THP with a second, write-protected PMD.",
             [("fault a THP", fault_thp), ("fork()", fork)]),
    Scenario("pin", "Pin a subpage", "get_user_pages_fast() on subpage 5 of a PMD-mapped THP.",
             [("fault a THP", fault_thp), ("pin subpage 5 (gup-fast)", pin_subpage(5)),
              ("put_page() the pin", unpin_all)]),
    Scenario("fork-pin-split", "Split a shared, pinned THP",
             "The key experiment: can a THP with a GUP pin on a tail be split?",
             [("fault a THP", fault_thp), ("fork()", fork), ("pin subpage 5 (gup-fast)", pin_subpage(5)),
              ("split_huge_page()", split_page), ("put_page() the pin", unpin_all),
              ("split_huge_page() again", split_page)]),
    Scenario("partial-munmap", "munmap() part of a THP",
             "Unmap 16 KiB in the middle of a THP: split the page, or only the PMD?",
             [("fault a THP", fault_thp), ("munmap subpages 8-11", munmap_subpages(8, 4))]),
    Scenario("mprotect", "mprotect() part of a THP",
             "Make subpages 8-15 read-only: the VMA is cut inside the THP.",
             [("fault a THP", fault_thp), ("mprotect subpages 8-15 read-only", mprotect_subpages(8, 8)),
              ("mprotect them read-write again", mprotect_subpages(8, 8, "rw"))]),
    Scenario("fork-split-pmd", "Split one process's PMD",
             "After fork, the child splits its PMD (e.g. by mprotect); does the parent keep its PMD?",
             [("fault a THP", fault_thp), ("fork()", fork), ("split the child's PMD", split_pmd_in("child")),
              ("child unmaps subpages 0-3", munmap_subpages(0, 4, "child"))]),
    Scenario("cow", "Copy-on-write of a shared THP",
             "After fork, the child writes one byte.",
             [("fault a THP", fault_thp), ("fork()", fork), ("child writes subpage 5", write_subpage(5)),
              ("parent exits", exit_("pid"))]),
]}
