"""Exercise ``can-split`` (lesson 08): may patch 06's split_huge_page() split this THP?

The rule is v1 patch 06's ``split_huge_page_to_list()`` (archived; the model's
copy is ``thplab.series.p06_split_huge_page``).  Each case builds a seeded
state at level 10 (forks, PMD splits, partial munmaps, pins taken and some
dropped), calls ``Machine.split_huge_page()`` and records whether it returned 0.

The learner is given ``page_count`` as the split reads it: ``Machine.split_huge_page()``
takes the caller's reference before it calls the kernel, so that is
``page_count(head) + 1`` read just before the call.  The v1 early ``-EBUSY`` when
subpage 0 is mapped nowhere (``page_get_anon_vma()`` reads only the head's
``_mapcount``) is the exercise's second rule, not avoided: the cases include it.
"""

import numpy as np

from ..machine import Machine
from ..params import HPAGE_PMD_NR, PAGE_SIZE
from ._base import Case, Exercise, Output


def can_split(page_count, mapcounts):
    """Would v1's split_huge_page() split the THP (True) or return -EBUSY (False)?"""
    if mapcounts[0] == 0:        # subpage 0 mapped nowhere: page_get_anon_vma() fails
        return False
    # Every reference but the caller's must be a mapping: no pins.
    return mapcounts.sum() == page_count - 1


def _forgot_callers_reference(page_count, mapcounts):
    return mapcounts[0] > 0 and mapcounts.sum() == page_count


def _head_only(page_count, mapcounts):
    return mapcounts[0] > 0 and mapcounts[0] == page_count - 1


def _at_most(page_count, mapcounts):
    return mapcounts[0] > 0 and mapcounts.sum() <= page_count - 1


def _sum_test_only(page_count, mapcounts):
    return mapcounts.sum() == page_count - 1


def _never_fails(page_count, mapcounts):
    return True


STATEMENT = """\
Exercise can-split (lesson 08, level 10): may the new split_huge_page() split this THP?

Write can_split(page_count, mapcounts): whether patch 06's split_huge_page() splits the THP
(True) or gives up with -EBUSY (False).

  page_count  page_count(head) as the split reads it. A caller of split_huge_page() holds a
              reference of its own (reclaim, migration do), and Machine.split_huge_page()
              takes one for you before calling the kernel: this is m.page_count(head) + 1,
              read just before the call.
  mapcounts   numpy array of 512 ints, page_mapcount(head + i) for i = 0..511, v1's
              accessor (m.page_mapcount): raw _mapcount + 1 of each subpage

Two rules, in the order the kernel applies them:
  1. The split first needs the THP's anon_vma, and page_get_anon_vma() asks page_mapped() of
     the head alone: if page_mapcount(head) is 0 -- subpage 0 unmapped everywhere -- it fails
     with -EBUSY, even while tails are still mapped.
  2. It splits only if every reference except the caller's is a mapping: a pin, or any
     other reference nobody mapped, makes it give up. Turn that sentence into arithmetic.

Kernel: split_huge_page_to_list() in patch 06, "thp: implement new split_huge_page()"
  https://lore.kernel.org/linux-mm/1402329861-7037-7-git-send-email-kirill.shutemov@linux.intel.com/
Model: thplab/series/p06_split_huge_page.py (python -m thplab patch 6 --diff)

In a notebook:
  ex = exercises.get("can-split"); print(ex.statement)
  copy print(ex.skeleton) into a cell, write the body, run it
  ex.check(can_split)   -- ex.hint() for a hint, print(ex.solution()) for an answer"""

SKELETON = '''\
def can_split(page_count, mapcounts):
    """Would v1's split_huge_page() split the THP (True) or return -EBUSY (False)?

    page_count: int, page_count(head) including the caller's reference.
    mapcounts: array of 512 ints, page_mapcount() of subpages 0..511.
    """
    return NotImplemented  # replace with your code
'''


class CanSplit(Exercise):
    name = "can-split"
    title = "may the new split_huge_page() split this THP?"
    lesson = "08"
    level = 10
    statement = STATEMENT
    skeleton = SKELETON
    function = staticmethod(can_split)
    arg_names = ("page_count", "mapcounts")
    outputs = (Output("can split", "bool"),)
    hints = (
        "Rule 1 looks at one number only: mapcounts[0].",
        "Since patch 04 a pin is just one more reference on the head's _count; it shows in no "
        "_mapcount. So compare all the mappings with all the references.",
        "mapcounts.sum() counts the mappings (a PMD once, in the head; each PTE once). Of "
        "page_count, one reference is the caller's.",
    )
    mistakes = (
        (_forgot_callers_reference, "page_count includes the caller's own reference, which is not a "
                                    "mapping: compare the mappings with page_count - 1."),
        (_head_only, "you compared only page_mapcount(head). Since patch 04 each tail's _mapcount "
                     "counts its PTEs, and those mappings hold references too: sum all 512."),
        (_at_most, "the sum of the mapcounts is never above page_count - 1; below it means some "
                   "references are pins, and a pinned THP must not be split: test for equality."),
        (_sum_test_only, "rule 1 is missing: with subpage 0 unmapped everywhere page_mapcount(head) "
                         "is 0, page_get_anon_vma() fails and the split returns -EBUSY although "
                         "the sums agree."),
        (_never_fails, "that was the old kernel (lesson 02): the new split refuses a pinned THP, "
                       "because it no longer knows which subpage holds the pin."),
    )

    def case(self, seed):
        rng = np.random.default_rng(seed)
        m = Machine.boot("8M", patches=self.level, seed=seed)
        pid, addr, head = m.map_thp()
        pids = [pid] + [m.fork(pid) for _ in range(int(rng.integers(0, 3)))]
        steps = [f"fault a THP in pid {pid}"] + [f"fork() -> pid {p}" for p in pids[1:]]
        for p in pids:
            action = int(rng.integers(4))
            if action >= 1:
                m.split_huge_pmd(p, addr)
                steps.append(f"split_huge_pmd() in pid {p}")
            if action >= 2:
                # From subpage 0 half the time: the states of rule 1.
                nr = int(rng.integers(1, 128))
                first = 0 if rng.random() < 0.5 else int(rng.integers(0, HPAGE_PMD_NR - nr + 1))
                m.munmap(p, addr + first * PAGE_SIZE, nr * PAGE_SIZE)
                steps.append(f"munmap() subpages {first}-{first + nr - 1} in pid {p}")
        pins = []
        for _ in range(int(rng.integers(0, 4))):
            p = pids[int(rng.integers(len(pids)))]
            sub = int(rng.integers(0, HPAGE_PMD_NR))
            if m.walk(p, [addr + sub * PAGE_SIZE])["level"][0] == 0:
                continue  # unmapped there: nothing to pin
            fast = bool(rng.integers(2))
            page = (m.get_user_pages_fast if fast else m.get_user_pages)(p, addr + sub * PAGE_SIZE, 1)
            pins.append((sub, page))
            steps.append(f"pid {p} pins subpage {sub} ({'gup-fast' if fast else 'get_user_pages'})")
        for sub, page in pins:
            if rng.random() < 0.5:
                m.put_page(page)
                steps.append(f"put_page(subpage {sub})")
        steps.append("split_huge_page()")
        mapcounts = m.page_mapcount(np.arange(head, head + HPAGE_PMD_NR)).astype(np.int64)
        # Machine.split_huge_page() takes the caller's reference first: the split reads one more.
        page_count = int(m.page_count(head)) + 1
        ret = m.split_huge_page(head)
        return Case(seed, steps, (page_count, mapcounts), (ret == 0,),
                    note=f"split_huge_page() returned {'0' if ret == 0 else '-EBUSY'}")


EXERCISE = CanSplit()
