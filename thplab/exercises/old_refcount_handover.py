"""Exercise ``old-refcount-handover`` (lesson 02): the old split hands the counts to the tails.

The rule is v3.16's ``__split_huge_page_refcount()`` (read in the kernel, not
reconstructed; the model's copy is ``thplab.series.p00_base``).  Each case
splits a THP at level 0 under a :class:`~thplab.trace.Recorder` and reads the
struct pages at two of the function's points: its inputs when the tail pins
are read, its answer when the counts are redistributed.
"""

import numpy as np

from ..machine import Machine
from ..params import HPAGE_PMD_NR, PAGE_SIZE
from ..trace import Recorder
from ._base import Case, Exercise, Output

#: The model's points that bracket the hand-over (``k.point()`` names in p00_base).
READ_POINT = "__split_huge_page_refcount: tail pins read"
DONE_POINT = "__split_huge_page_refcount: counts redistributed"


def hand_over_counts(head_count, head_mapcount, tail_pins):
    """The counters once the old split redistributed them (before the tails' put_page())."""
    mappings = head_mapcount + 1            # M, the PMDs mapping the THP (_mapcount is biased -1)
    tail_counts = mappings + tail_pins + 1  # the +1 is dropped by put_page() after the unlock
    tail_mapcounts = np.full(len(tail_pins), head_mapcount)  # each tail has the head's mappings
    return head_count - tail_pins.sum(), tail_counts, tail_mapcounts


def _final_counts(head_count, head_mapcount, tail_pins):
    return (head_count - tail_pins.sum(), head_mapcount + 1 + tail_pins,
            np.full(len(tail_pins), head_mapcount))


def _head_count_to_tails(head_count, head_mapcount, tail_pins):
    return (head_count - tail_pins.sum(), head_count + tail_pins + 1,
            np.full(len(tail_pins), head_mapcount))


def _head_keeps_pins(head_count, head_mapcount, tail_pins):
    return head_count, head_mapcount + 1 + tail_pins + 1, np.full(len(tail_pins), head_mapcount)


def _unbiased_tail_mapcount(head_count, head_mapcount, tail_pins):
    return (head_count - tail_pins.sum(), head_mapcount + 1 + tail_pins + 1,
            np.full(len(tail_pins), head_mapcount + 1))


def _tail_mapcount_kept(head_count, head_mapcount, tail_pins):
    return head_count - tail_pins.sum(), head_mapcount + 1 + tail_pins + 1, tail_pins - 1


STATEMENT = """\
Exercise old-refcount-handover (lesson 02, level 0): the old split hands the counts to the tails

Write hand_over_counts(head_count, head_mapcount, tail_pins), the arithmetic of the old
__split_huge_page_refcount(): under compound_lock it gives every tail of the THP its own _count
and _mapcount, and takes from the head what the tails now hold.

  head_count     the head's _count when the function starts (the split caller's reference
                 is included: reclaim or migration holds one)
  head_mapcount  the head's raw _mapcount, stored biased by -1: -1 is unmapped, 0 one PMD
  tail_pins      numpy array of 511 ints, the pins on subpages 1..511 (tail_pins[0] is
                 subpage 1); in this kernel a tail's _mapcount + 1 counts its pins

Return (head _count, array of 511 tail _counts, array of 511 raw tail _mapcounts) at the
moment the counts are redistributed -- still under compound_lock, BEFORE the put_page() on
every tail that follows the unlock.  The checker reads them from the model at that point
("counts redistributed" in thplab/series/p00_base.py).

Kernel: __split_huge_page_refcount() in mm/huge_memory.c at v3.16
  https://elixir.bootlin.com/linux/v3.16/source/mm/huge_memory.c#L1642

In a notebook:
  ex = exercises.get("old-refcount-handover"); print(ex.statement)
  copy print(ex.skeleton) into a cell, write the body, run it
  ex.check(hand_over_counts)   -- ex.hint() for a hint, print(ex.solution()) for an answer"""

SKELETON = '''\
import numpy as np


def hand_over_counts(head_count, head_mapcount, tail_pins):
    """The counters once the old split redistributed them (before the tails' put_page()).

    head_count: int, head_mapcount: int (raw, biased by -1), tail_pins: array of 511 ints.
    Return (head _count, array of 511 tail _counts, array of 511 raw tail _mapcounts).
    """
    return NotImplemented  # replace with your code
'''


class OldRefcountHandover(Exercise):
    name = "old-refcount-handover"
    title = "the old split hands the counts to the tails"
    lesson = "02"
    level = 0
    statement = STATEMENT
    skeleton = SKELETON
    function = staticmethod(hand_over_counts)
    arg_names = ("head_count", "head_mapcount", "tail_pins")
    outputs = (Output("head _count", "int"), Output("tail _counts", HPAGE_PMD_NR - 1),
               Output("tail _mapcounts", HPAGE_PMD_NR - 1))
    hints = (
        "The number of PMDs mapping the THP, M, is head_mapcount + 1.",
        "Each tail's _count becomes M + its pins + 1. The +1 is dropped by put_page() after the "
        "unlock, which is after the point you are asked about.",
        "The pins move from the head to the tails: the head loses tail_pins.sum().",
        "A tail's _mapcount is no longer a pin count: it takes the head's raw _mapcount, so that "
        "page_mapcount() of every subpage is M.",
    )
    mistakes = (
        # Also what a learner gets who takes the biased head_mapcount as M and adds the +1.
        (_final_counts, "your tail _counts are one short. M + pins is what a tail keeps in the end; "
                        "at this point it also holds one more reference, which put_page() drops "
                        "after compound_lock is released (freeing a tail nobody maps or pins). Or "
                        "you took head_mapcount as M: it is biased by -1, M = head_mapcount + 1."),
        (_head_count_to_tails, "you started the tails from the head's _count. That counts every "
                               "reference to the THP (mappings, all pins, the caller's); a tail gets "
                               "only the mappings, M = head_mapcount + 1, plus its own pins and 1."),
        (_head_keeps_pins, "the head kept the tail pins. They move to the tails, so the head's "
                           "_count drops by tail_pins.sum()."),
        (_unbiased_tail_mapcount, "your tail _mapcounts are page_mapcount() values; the field is "
                                  "stored biased by -1, so copy the head's raw value."),
        (_tail_mapcount_kept, "you left each tail's _mapcount as a pin count. After the hand-over the "
                              "pins live in the tail's _count, and _mapcount counts mappings like on "
                              "any page: it takes the head's raw value."),
    )

    def case(self, seed):
        rng = np.random.default_rng(seed)
        m = Machine.boot("8M", patches=0, seed=seed)
        pid, addr, head = m.map_thp()
        pids = [pid] + [m.fork(pid) for _ in range(int(rng.integers(0, 3)))]
        steps = [f"fault a THP in pid {pid}"] + [f"fork() -> pid {p}" for p in pids[1:]]
        pinned = []
        for _ in range(int(rng.integers(0, 7))):
            # A third of the pins land on a subpage already pinned: several pins on one tail.
            if pinned and rng.random() < 0.35:
                sub = pinned[int(rng.integers(len(pinned)))]
            else:
                sub = int(rng.integers(0, HPAGE_PMD_NR))
            who = pids[int(rng.integers(len(pids)))]
            fast = bool(rng.integers(2))
            gup = m.get_user_pages_fast if fast else m.get_user_pages
            gup(who, addr + sub * PAGE_SIZE, 1)
            pinned.append(sub)
            steps.append(f"pid {who} pins subpage {sub} ({'gup-fast' if fast else 'get_user_pages'})")
        for sub in [s for s in pinned if rng.random() < 0.25]:
            m.put_page([head + sub])
            steps.append(f"put_page(subpage {sub})")
        steps.append("split_huge_page()")
        with Recorder(m) as rec:
            m.split_huge_page(head)
        at = {s.name: s.state.mem_map for s in rec.steps}
        before, after = at[READ_POINT], at[DONE_POINT]
        tails = slice(head + 1, head + HPAGE_PMD_NR)
        args = (int(before["_count"][head]), int(before["_mapcount"][head]),
                before["_mapcount"][tails].astype(np.int64) + 1)
        expected = (int(after["_count"][head]), after["_count"][tails].astype(np.int64),
                    after["_mapcount"][tails].astype(np.int64))
        return Case(seed, steps, args, expected, note="read at \"counts redistributed\"")


EXERCISE = OldRefcountHandover()
