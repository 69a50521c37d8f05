"""Exercise ``held-memory`` (lesson 14): what a partial munmap() leaves allocated at level 10.

The workload is lesson 14's (:func:`thplab.lessons.open_problems.partial_munmap_workload`):
fault some THPs in one process, then ``munmap()`` runs of subpages in each --
here sometimes the whole THP, so that some compound pages are freed.  The
learner gets what the page tables still map (read from the model by a page
walk) and returns what stays allocated and how much of it is held; the
checker compares with the allocator (anonymous pages in use) and with
:func:`thplab.invariants.held_pages`.  Nothing is reconstructed: the rule
follows from patch 04 (a partial munmap() splits only the PMD) and v1
having no deferred split.
"""

import numpy as np

from ..invariants import held_pages
from ..machine import Machine
from ..page_flags import Use
from ..params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from ._base import Case, Exercise, Output


def held_memory(mapped):
    """4 KiB pages still allocated for the THPs, and how many of them nothing maps (held)."""
    # A compound page is freed only when its last subpage is unmapped; until then all 512 stay.
    allocated = sum(512 for thp in mapped if thp.any())
    held = allocated - sum(int(thp.sum()) for thp in mapped)
    return allocated, held


def _only_mapped(mapped):
    return sum(int(thp.sum()) for thp in mapped), 0


def _never_freed(mapped):
    allocated = HPAGE_PMD_NR * len(mapped)
    return allocated, allocated - sum(int(thp.sum()) for thp in mapped)


def _held_not_subtracted(mapped):
    allocated = sum(HPAGE_PMD_NR for thp in mapped if thp.any())
    return allocated, allocated


def _unmapped_as_held(mapped):
    return (sum(HPAGE_PMD_NR for thp in mapped if thp.any()),
            sum(HPAGE_PMD_NR - int(thp.sum()) for thp in mapped))


STATEMENT = """\
Exercise held-memory (lesson 14, level 10): what a partial munmap() leaves allocated

Lesson 14's workload: one process faults some THPs, then munmap()s runs of subpages in each --
sometimes all 512. Write held_memory(mapped): how many 4 KiB pages stay allocated for these
THPs, and how many of those are held (allocated, but no page table maps them).

  mapped  a list with one numpy array of 512 booleans per THP: mapped[t][i] is True while
          subpage i of THP t is still mapped (what a page walk of the process finds)

Return (allocated, held), both in 4 KiB pages. The checker compares them with the model: the
anonymous pages the allocator has handed out, and thplab.invariants.held_pages().

The rule is patch 04's: a munmap() of part of a THP splits only the PMD and zaps PTEs; the
compound page stays whole until its last subpage is unmapped, and RFC v1 has nothing that
splits it later. Kernel: zap_huge_pmd() and __split_huge_pmd() (reconstructed for v1, see
lesson 06); the merged design's answer, deferred_split_huge_page(), in v4.5:
  https://elixir.bootlin.com/linux/v4.5/C/ident/deferred_split_huge_page

In a notebook:
  ex = exercises.get("held-memory"); print(ex.statement)
  copy print(ex.skeleton) into a cell, write the body, run it
  ex.check(held_memory)   -- ex.hint() for a hint, print(ex.solution()) for an answer"""

SKELETON = '''\
def held_memory(mapped):
    """4 KiB pages still allocated for the THPs, and how many of them nothing maps (held).

    mapped: list of arrays of 512 booleans, one per THP (True = subpage still mapped).
    Return (allocated, held).
    """
    return NotImplemented  # replace with your code
'''


class HeldMemory(Exercise):
    name = "held-memory"
    title = "what a partial munmap() leaves allocated"
    lesson = "14"
    level = 10
    statement = STATEMENT
    skeleton = SKELETON
    function = staticmethod(held_memory)
    arg_names = ("mapped",)
    outputs = (Output("allocated", "int"), Output("held", "int"))
    hints = (
        "At level 10 a THP with any subpage still mapped keeps all 512 subpages allocated.",
        "A THP whose every subpage was unmapped lost its last reference: it was freed whole.",
        "held = allocated - the subpages still mapped.",
    )
    mistakes = (
        (_only_mapped, "you counted only the mapped subpages: that is the old kernel (level 0), "
                       "which splits the THP at munmap() and frees the rest. At level 10 the "
                       "compound page stays whole."),
        (_never_freed, "you counted 512 for every THP, but a THP with no subpage mapped any more "
                       "was freed: its last PTE held its last reference."),
        (_held_not_subtracted, "held is what is allocated but mapped by nothing: subtract the "
                               "subpages still mapped."),
        (_unmapped_as_held, "you counted the unmapped subpages of freed THPs as held; a freed THP "
                            "holds nothing."),
    )

    def case(self, seed):
        rng = np.random.default_rng(seed)
        m = Machine.boot("16M", patches=self.level, seed=seed)
        pid = m.spawn()
        nr_thps = int(rng.integers(2, 6))
        base = m.mmap(pid, nr_thps * HPAGE_PMD_SIZE)
        m.touch(pid, base, nr_thps * HPAGE_PMD_SIZE)
        steps = [f"pid {pid} faults {nr_thps} THPs"]
        for t in range(nr_thps):
            start = base + t * HPAGE_PMD_SIZE
            if rng.random() < 0.25:
                m.munmap(pid, start, HPAGE_PMD_SIZE)
                steps.append(f"munmap() all of THP {t}")
                continue
            for _ in range(int(rng.integers(1, 4))):
                nr = int(rng.integers(1, HPAGE_PMD_NR + 1))
                first = int(rng.integers(0, HPAGE_PMD_NR - nr + 1))
                m.munmap(pid, start + first * PAGE_SIZE, nr * PAGE_SIZE)
                steps.append(f"munmap() subpages {first}-{first + nr - 1} of THP {t}")
        addrs = base + np.arange(nr_thps * HPAGE_PMD_NR, dtype=np.int64) * PAGE_SIZE
        mapped = m.walk(pid, addrs)["level"].reshape(nr_thps, HPAGE_PMD_NR) > 0
        # Only this workload allocates anonymous memory on the machine.
        allocated = int((m.mem_map["use"] == Use.anon).sum())
        held = sum(held_pages(m).values())
        return Case(seed, steps, ([row.copy() for row in mapped],), (allocated, held),
                    note=f"{len(m.thp_heads())} compound pages left")


EXERCISE = HeldMemory()
