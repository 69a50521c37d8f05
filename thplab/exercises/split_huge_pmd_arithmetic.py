"""Exercise ``split-huge-pmd-arithmetic`` (lesson 06): what splitting one PMD does to the counters.

The rule is patch 04's ``__split_huge_pmd()``, which is RECONSTRUCTED: v1's
patch 04 is not in the archive.  thplab infers it from v2's patch 10/19 and
from patch 06's split test, which only holds with exactly this arithmetic
(``thplab.series.p04_pmd_split``).  Each case builds a THP mapped by several
PMDs at level 4, splits one of them with ``Machine.split_huge_pmd()`` and
reads the struct pages before and after.
"""

import numpy as np

from ..machine import Machine
from ..params import HPAGE_PMD_NR, PAGE_SIZE
from ._base import Case, Exercise, Output


def split_pmd_counts(head_count, head_mapcount, tail_mapcounts):
    """The head's _count and _mapcount and the tails' _mapcounts after one PMD becomes 512 PTEs."""
    # Each of the 512 new PTEs owns a reference; the PMD's own reference becomes subpage 0's.
    # The PMD mapping turns into subpage 0's PTE mapping, so the head's _mapcount stays.
    return head_count + 511, head_mapcount, tail_mapcounts + 1


def _plus_512(head_count, head_mapcount, tail_mapcounts):
    return head_count + 512, head_mapcount, tail_mapcounts + 1


def _head_mapcount_up(head_count, head_mapcount, tail_mapcounts):
    return head_count + 511, head_mapcount + 1, tail_mapcounts + 1


def _tails_forgotten(head_count, head_mapcount, tail_mapcounts):
    return head_count + 511, head_mapcount, tail_mapcounts


def _tails_set_to_one_pte(head_count, head_mapcount, tail_mapcounts):
    return head_count + 511, head_mapcount, np.zeros_like(tail_mapcounts)


def _no_new_references(head_count, head_mapcount, tail_mapcounts):
    return head_count, head_mapcount, tail_mapcounts + 1


STATEMENT = """\
Exercise split-huge-pmd-arithmetic (lesson 06, level 4): what splitting one PMD does to the counters

Write split_pmd_counts(head_count, head_mapcount, tail_mapcounts), the arithmetic of patch 04's
__split_huge_pmd(): one huge PMD mapping a THP becomes a table of 512 PTEs, in one process.
The THP stays one compound page, and every other PMD or PTE mapping it stays as it was.

  head_count      the head's _count before the split (every mapping and every pin)
  head_mapcount   the head's raw _mapcount (biased by -1): the PMDs mapping the THP plus the
                  PTEs mapping subpage 0
  tail_mapcounts  numpy array of 511 raw _mapcounts of subpages 1..511 (tail_mapcounts[0] is
                  subpage 1): since patch 04 each counts the PTEs mapping that tail

Return (head _count, head raw _mapcount, array of 511 raw tail _mapcounts) after the split.

Reconstructed: v1's patch 04 is not archived. thplab infers __split_huge_pmd() from v2's patch
10/19 and from patch 06's split test, which only holds with this arithmetic (thplab/series/
p04_pmd_split.py; python -m thplab patch 4 --diff). What it became, v4.5:
  https://elixir.bootlin.com/linux/v4.5/source/mm/huge_memory.c#L2949

In a notebook:
  ex = exercises.get("split-huge-pmd-arithmetic"); print(ex.statement)
  copy print(ex.skeleton) into a cell, write the body, run it
  ex.check(split_pmd_counts)   -- ex.hint() for a hint, print(ex.solution()) for an answer"""

SKELETON = '''\
def split_pmd_counts(head_count, head_mapcount, tail_mapcounts):
    """The head's _count and _mapcount and the tails' _mapcounts after one PMD becomes 512 PTEs.

    head_count: int, head_mapcount: int (raw), tail_mapcounts: array of 511 raw ints.
    Return (head _count, head raw _mapcount, array of 511 raw tail _mapcounts).
    """
    return NotImplemented  # replace with your code
'''


class SplitHugePmdArithmetic(Exercise):
    name = "split-huge-pmd-arithmetic"
    title = "what splitting one PMD does to the counters"
    lesson = "06"
    level = 4
    statement = STATEMENT
    skeleton = SKELETON
    function = staticmethod(split_pmd_counts)
    arg_names = ("head_count", "head_mapcount", "tail_mapcounts")
    outputs = (Output("head _count", "int"), Output("head _mapcount", "int"),
               Output("tail _mapcounts", HPAGE_PMD_NR - 1))
    hints = (
        "Since patch 04 the head's _count holds one reference per mapping: a PMD counts once, "
        "and so does each PTE.",
        "One PMD (one reference) becomes 512 PTEs (512 references).",
        "Every tail gains one PTE mapping. Other processes may already map it: add, do not set.",
        "Subpage 0 gains a PTE but loses the PMD, and the head's _mapcount counts both kinds.",
    )
    mistakes = (
        (_plus_512, "the head gained 512: but the PMD's own reference is not dropped, it becomes "
                    "subpage 0's PTE reference, so the head gains 511."),
        (_head_mapcount_up, "you raised the head's _mapcount. Its PMD mapping turns into subpage 0's "
                            "PTE mapping, and the head's _mapcount counts both, so it stays. (v2 "
                            "raises all 512 and lowers a separate compound_mapcount, which v1 lacks.)"),
        (_tails_forgotten, "the tails' _mapcounts did not move: each tail is now mapped by one more "
                           "PTE, so each gains 1."),
        (_tails_set_to_one_pte, "you set every tail to one PTE (raw 0). Add 1 instead: another "
                                "process that split its PMD earlier may map the same tails."),
        (_no_new_references, "the head's _count did not move: each of the 512 new PTEs holds a "
                             "reference, where the PMD held one."),
    )

    def case(self, seed):
        rng = np.random.default_rng(seed)
        m = Machine.boot("8M", patches=self.level, seed=seed)
        pid, addr, head = m.map_thp()
        pids = [pid] + [m.fork(pid) for _ in range(int(rng.integers(1, 4)))]
        steps = [f"fault a THP in pid {pid}"] + [f"fork() -> pid {p}" for p in pids[1:]]
        # Some processes split their PMD first (and may unmap a run of subpages), so tails and
        # subpage 0 start with various PTE counts; at least one PMD is left to split.
        order = [int(p) for p in rng.permutation(pids)]
        target, others = order[0], order[1:]
        for p in others:
            if rng.random() < 0.6:
                m.split_huge_pmd(p, addr)
                steps.append(f"split_huge_pmd() in pid {p}")
                if rng.random() < 0.6:
                    nr = int(rng.integers(1, 64))
                    first = int(rng.integers(0, HPAGE_PMD_NR - nr + 1))
                    m.munmap(p, addr + first * PAGE_SIZE, nr * PAGE_SIZE)
                    steps.append(f"munmap() subpages {first}-{first + nr - 1} in pid {p}")
        for _ in range(int(rng.integers(0, 3))):
            sub = int(rng.integers(0, HPAGE_PMD_NR))
            m.get_user_pages_fast(target, addr + sub * PAGE_SIZE, 1)
            steps.append(f"pid {target} pins subpage {sub} (gup-fast)")
        steps.append(f"split_huge_pmd() in pid {target}")
        tails = slice(head + 1, head + HPAGE_PMD_NR)
        mem_map = m.mem_map
        args = (int(mem_map["_count"][head]), int(mem_map["_mapcount"][head]),
                mem_map["_mapcount"][tails].astype(np.int64))
        m.split_huge_pmd(target, addr)
        expected = (int(mem_map["_count"][head]), int(mem_map["_mapcount"][head]),
                    mem_map["_mapcount"][tails].astype(np.int64))
        return Case(seed, steps, args, expected)


EXERCISE = SplitHugePmdArithmetic()
