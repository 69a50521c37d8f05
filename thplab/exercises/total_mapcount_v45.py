"""Exercise ``total-mapcount`` (lesson 15): v4.5's ``total_mapcount()`` from the raw fields.

The rule is 4.5.7's ``total_mapcount()`` (mm/huge_memory.c#L3316; the model's
copy is ``thplab.series.v45.s04_compound_mapcount.total_mapcount``).  Each case
builds a seeded state on ``kernel="v4.5"`` (forks, PMD splits in some
processes -- DoubleMap when another PMD still maps the THP --, partial
munmaps, pins) and reads the THP's raw fields and the model's answer.
"""

import numpy as np

from ..machine import Machine
from ..page_flags import PG
from ..params import HPAGE_PMD_NR, PAGE_SIZE
from ._base import Case, Exercise, Output

KERNEL = "https://elixir.bootlin.com/linux/v4.5.7/source/mm/huge_memory.c#L3316"


def total_mapcount(compound_mapcount, mapcounts, double_map):
    """How many page-table entries map some part of the THP (v4.5's total_mapcount)?"""
    total = (compound_mapcount + 1) + int((mapcounts + 1).sum())
    if double_map:               # each of the 512 _mapcounts holds one extra count meanwhile
        total -= 512
    return total


def _forgot_double_map(compound_mapcount, mapcounts, double_map):
    return (compound_mapcount + 1) + int((mapcounts + 1).sum())


def _double_map_once(compound_mapcount, mapcounts, double_map):
    return (compound_mapcount + 1) + int((mapcounts + 1).sum()) - int(bool(double_map))


def _forgot_pmd_maps(compound_mapcount, mapcounts, double_map):
    return int((mapcounts + 1).sum()) - (HPAGE_PMD_NR if double_map else 0)


def _raw_values(compound_mapcount, mapcounts, double_map):
    return compound_mapcount + int(mapcounts.sum()) - (HPAGE_PMD_NR if double_map else 0)


def _pmd_maps_every_subpage(compound_mapcount, mapcounts, double_map):
    return HPAGE_PMD_NR * (compound_mapcount + 1) + int((mapcounts + 1).sum()) \
        - (HPAGE_PMD_NR if double_map else 0)


STATEMENT = f"""\
Exercise total-mapcount (lesson 15, kernel v4.5): how many page-table entries map this THP?

Write total_mapcount(compound_mapcount, mapcounts, double_map): the number of page-table
entries, in every process, that map some part of the THP -- a huge PMD counts 1, a PTE counts 1.
It is what v4.5's split_huge_page() compares with page_count(head) - 1.

  compound_mapcount  int, the raw compound_mapcount of page[1], biased like _mapcount:
                     -1 when no PMD maps the THP
  mapcounts          numpy array of 512 ints, the raw _mapcount of subpages 0..511
                     (-1 = no PTE maps it)
  double_map         bool, PageDoubleMap(head)

The rules, as lesson 15 showed them:
  - a PMD mapping moves compound_mapcount only; a PTE mapping moves its subpage's _mapcount;
  - while PG_double_map is set, every subpage's _mapcount holds one count more than its PTEs.

Kernel: total_mapcount() in 4.5.7,
  {KERNEL}
Model: thplab/series/v45/s04_compound_mapcount.py

In a notebook:
  ex = exercises.get("total-mapcount"); print(ex.statement)
  copy print(ex.skeleton) into a cell, write the body, run it
  ex.check(total_mapcount)   -- ex.hint() for a hint, print(ex.solution()) for an answer"""

SKELETON = '''\
def total_mapcount(compound_mapcount, mapcounts, double_map):
    """How many page-table entries map some part of the THP (v4.5's total_mapcount)?

    compound_mapcount: int, raw (-1 = no PMD maps it).
    mapcounts: array of 512 ints, raw _mapcount of subpages 0..511.
    double_map: bool, PageDoubleMap(head).
    """
    return NotImplemented  # replace with your code
'''


class TotalMapcount(Exercise):
    name = "total-mapcount"
    title = "v4.5's total_mapcount() from compound_mapcount, _mapcount and DoubleMap"
    lesson = "15"
    level = "v4.5"
    statement = STATEMENT
    skeleton = SKELETON
    function = staticmethod(total_mapcount)
    arg_names = ("compound_mapcount", "mapcounts", "double_map")
    outputs = (Output("total_mapcount", "int"),)
    hints = (
        "Every counter here is biased by -1: a raw value v means v + 1 mappings.",
        "The PMD mappings are all in compound_mapcount: each PMD counts once, not 512 times.",
        "While DoubleMap is set, each of the 512 _mapcount values is one too high: take 512 off "
        "the sum, not 1.",
    )
    mistakes = (
        (_forgot_double_map, "with PageDoubleMap set, each subpage's _mapcount carries one extra "
                             "count (set when a PMD was split while another PMD still mapped the "
                             "page): take 512 off the sum."),
        (_double_map_once, "-1 is page_mapcount()'s correction for one subpage; the sum over all "
                           "512 subpages carries 512 extra counts."),
        (_forgot_pmd_maps, "the PMD mappings are not in any _mapcount in v4.5: add "
                           "compound_mapcount + 1."),
        (_raw_values, "the raw fields are biased: -1 means no mapping. Add 1 to compound_mapcount "
                      "and to each _mapcount."),
        (_pmd_maps_every_subpage, "a PMD is one page-table entry: it counts once in total_mapcount "
                                  "(page_mapcount() of each subpage does count it)."),
    )

    def case(self, seed):
        rng = np.random.default_rng(seed)
        m = Machine.boot("8M", kernel="v4.5", seed=seed)
        pid, addr, head = m.map_thp()
        pids = [pid] + [m.fork(pid) for _ in range(int(rng.integers(0, 3)))]
        steps = [f"fault a THP in pid {pid}"] + [f"fork() -> pid {p}" for p in pids[1:]]
        for p in pids:
            action = int(rng.integers(4))
            if action >= 1:
                if rng.random() < 0.5:
                    m.split_huge_pmd(p, addr)
                    steps.append(f"split_huge_pmd() in pid {p}")
                else:
                    first = int(rng.integers(0, HPAGE_PMD_NR - 8))
                    m.mprotect(p, addr + first * PAGE_SIZE, 8 * PAGE_SIZE, "r")
                    steps.append(f"mprotect() subpages {first}-{first + 7} read-only in pid {p}")
            if action >= 2:
                nr = int(rng.integers(1, 96))
                first = int(rng.integers(0, HPAGE_PMD_NR - nr + 1))
                m.munmap(p, addr + first * PAGE_SIZE, nr * PAGE_SIZE)
                steps.append(f"munmap() subpages {first}-{first + nr - 1} in pid {p}")
        for _ in range(int(rng.integers(0, 3))):
            p = pids[int(rng.integers(len(pids)))]
            sub = int(rng.integers(0, HPAGE_PMD_NR))
            if m.walk(p, [addr + sub * PAGE_SIZE])["level"][0]:
                m.get_user_pages(p, addr + sub * PAGE_SIZE, 1)
                steps.append(f"pid {p} pins subpage {sub}")
        mem_map = m.mem_map
        cm = int(mem_map["mapping"][head + 1])
        mapcounts = mem_map["_mapcount"][head:head + HPAGE_PMD_NR].astype(np.int64)
        dm = bool(mem_map["flags"][head + 1] & (1 << PG.private_2))
        total = m.kernel.total_mapcount(head)
        return Case(seed, steps, (cm, mapcounts, dm), (total,),
                    note=f"page_count(head) {int(m.page_count(head))}: total_mapcount + pins")


EXERCISE = TotalMapcount()
