"""The races the removed machinery guarded against, as ready-made interleavings.

Each function boots a small machine at ``level``, sets the stage, and returns
a :class:`Race`: an :class:`~thplab.trace.Interleaving` of two operations on
CPU0 and CPU1, with the schedule that shows the race.  Run the same race at
level 0 and at level 10: the old kernel survives it by waiting (IPI,
``compound_lock``, interrupts off); the new one by refusing the split
(``-EBUSY``) or by not caring.
"""

from dataclasses import dataclass

from .errors import BadArgument
from .machine import Machine
from .params import PAGE_SIZE
from .trace import Interleaving, format_value


@dataclass
class Race:
    """An interleaving plus what a learner needs to read it."""

    name: str
    title: str
    description: str
    machine: Machine
    interleaving: Interleaving
    #: ``[(cpu, text)]``: run ``cpu`` until a point containing ``text``, in order.
    schedule: list
    head: int
    pid: int
    addr: int
    watch: tuple = (0, 5)

    def play(self):
        """Run the race's schedule, then let both CPUs finish; return the results."""
        for cpu, text in self.schedule:
            self.interleaving.run_until(cpu, text)
        return self.interleaving.finish()

    def outcome(self):
        """Text twin: the log, the results, the watched counters and the invariants."""
        from .invariants import problems

        il = self.interleaving
        mm = self.machine.mem_map
        without = self.machine.smp.without
        title = f"{self.title} -- level {self.machine.level}" + (
            f", WITHOUT {' and '.join(sorted(without))} (a what-if: no kernel ran like this)" if without else "")
        lines = [title, il.log(), "results: " + ", ".join(
            f"{c} -> {_short(r)}" for c, r in sorted(il.results.items()))]
        if il.errors:
            lines.append("errors: " + ", ".join(f"{c}: {e}" for c, e in il.errors.items()))
        for i in self.watch:
            p = self.head + i
            lines.append(f"subpage {i}: _count {mm['_count'][p]}, _mapcount {mm['_mapcount'][p]}, "
                         f"page_mapcount {int(self.machine.page_mapcount(p))}, pins {int(self.machine.pins[p])}")
        if il.finished:
            broken = problems(self.machine)
            lines.append("invariants: " + ("all hold" if not broken else "BROKEN -- " + "; ".join(broken)))
        return "\n".join(lines)


def _short(r):
    import numpy as np

    return f"pfns {[hex(int(p)) for p in r]}" if isinstance(r, np.ndarray) else format_value("result", r)


def _stage(level, seed, without):
    m = Machine.boot("8M", patches=level, seed=seed)
    unknown = set(without) - {"compound_lock", "tlb_flush_ipi"}
    if unknown:
        raise BadArgument(f"can only switch off 'compound_lock' or 'tlb_flush_ipi', not {sorted(unknown)}")
    m.smp.without = frozenset(without)
    pid, addr, head = m.map_thp()
    return m, pid, addr, head


def split_vs_gup_fast(level, seed=0, without=()):
    """CPU1 runs ``get_user_pages_fast()`` on subpage 5 while CPU0 splits the THP.

    CPU1 reads the huge PMD with interrupts off, then CPU0 starts the split.
    Old kernel: CPU0 marks the PMD ``_PAGE_SPLITTING`` and its TLB flush
    waits for CPU1's interrupts, so CPU1's tail pin lands before the counts
    are redistributed.  New kernel: the split's re-check under
    ``compound_lock`` sees the new pin and returns ``-EBUSY``.
    ``without=("tlb_flush_ipi",)`` on the old kernel: the split completes
    under CPU1's feet and the pin lands on the wrong counters.
    """
    m, pid, addr, head = _stage(level, seed, without)
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head),
                      CPU1=lambda: m.get_user_pages_fast(pid, addr + 5 * PAGE_SIZE, 1))
    return Race("split-vs-gup-fast", "split_huge_page() vs get_user_pages_fast()",
                split_vs_gup_fast.__doc__, m, il,
                [("CPU1", "PMD read"), ("CPU0", "done" if without else "flush")],
                head, pid, addr)


def put_page_vs_split(level, seed=0, without=()):
    """CPU1 drops a pin on subpage 5 while CPU0 splits the THP.

    Old kernel: the split holds ``compound_lock`` while it moves pins to the
    tails; ``put_page()`` on the tail spins on it, then finds an ordinary page
    and drops that page's own count.  New kernel: the split fails while the
    pin exists, or succeeds after it is gone -- never in between.
    ``without=("compound_lock",)`` on the old kernel: ``put_page()`` decides
    "tail" just before the split and then drops counts that no longer mean that.
    """
    m, pid, addr, head = _stage(level, seed, without)
    pin = m.get_user_pages(pid, addr + 5 * PAGE_SIZE, 1)
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head), CPU1=lambda: m.put_page(pin))
    if without:
        schedule = [("CPU1", "PageTail re-checked"), ("CPU0", "done")]
    else:
        schedule = [("CPU0", "tail pins read" if m.kernel.caps["tail_pins"] else "racy check"),
                    ("CPU1", "waiting")]
    return Race("put-page-vs-split", "put_page() on a tail vs split_huge_page()",
                put_page_vs_split.__doc__, m, il, schedule, head, pid, addr)


def futex_vs_split(level, seed=0, without=()):
    """CPU1 computes a futex key on subpage 5 while CPU0 splits the THP.

    Old kernel: a GUP pin on a tail does not stop a split, so
    ``get_futex_key()`` disables interrupts (holding up the split's IPI),
    re-pins, and swaps the tail pin for a head pin before locking the head.
    After patch 09: the tail pin is a head reference; the split fails with
    ``-EBUSY`` while the futex code holds it.
    """
    m, pid, addr, head = _stage(level, seed, without)
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head),
                      CPU1=lambda: m.get_futex_key(pid, addr + 5 * PAGE_SIZE))
    if m.kernel.caps["futex_thp_special_case"]:
        # Stop CPU1 inside its interrupts-off window, then let CPU0 try to split.
        schedule = [("CPU1", "interrupts off"), ("CPU0", "flush")]
    else:
        schedule = [("CPU1", "lock_page"), ("CPU0", "done")]
    return Race("futex-vs-split", "get_futex_key() vs split_huge_page()", futex_vs_split.__doc__,
                m, il, schedule, head, pid, addr)


RACES = {"split-vs-gup-fast": split_vs_gup_fast, "put-page-vs-split": put_page_vs_split,
         "futex-vs-split": futex_vs_split}
