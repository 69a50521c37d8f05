"""Patch 01/10: "mm, thp: drop FOLL_SPLIT".

``FOLL_SPLIT`` made ``follow_page()`` split a THP behind the caller's back,
which only works if splitting can never fail.  Its users now split
explicitly and handle failure: migration reports ``-EBUSY`` for a page
whose THP could not be split.
"""

from .. import memory as mem
from .. import pgtable as pt
from ..migrate import migrate_one
from ..page_flags import PageTransHuge
from ..params import EBUSY, EFAULT, ENOENT, FOLL_GET
from ._kernel import Patch
from .p00_base import _follow_pte_range

P01 = Patch(
    number=1,
    subject="mm, thp: drop FOLL_SPLIT",
    # The patch's own diffstat, from its email.
    files={"Documentation/vm/transhuge.txt": 11, "arch/s390/mm/pgtable.c": 17,
           "include/linux/mm.h": 1, "mm/gup.c": 4, "mm/migrate.c": 7},
    summary="FOLL_SPLIT is removed from follow_page_mask(); migration calls split_huge_page() "
            "itself -- as posted, only when follow_page() returned the head, and a failed split "
            "leaks that page's reference -- and reports -EBUSY; s390 splits per PMD with a page "
            "walker.",
    why="Once split_huge_page() may fail (patch 06), a flag that splits inside follow_page() "
        "cannot report the failure. Its two users can.",
    link="https://lore.kernel.org/linux-mm/1402329861-7037-2-git-send-email-kirill.shutemov@linux.intel.com/",
    capabilities={"foll_split": False},
)
# Patch 01 also deletes the FOLL_SPLIT paragraph of transhuge.txt: its TRANSHUGE_DOC
# is set in series/__init__.py, next to the text it is cut from.


@P01.replaces
def follow_page_mask(k, vma, address, flags, nr):
    """Mirrors ``follow_page_mask()`` after patch 01: no ``FOLL_SPLIT`` branch."""
    pmdp = mem.pmd_offset(k, vma.mm, address)
    if pmdp is None or mem.entry(k, pmdp) == 0:
        return None
    pmd = mem.entry(k, pmdp)
    if pt.pmd_trans_huge(pmd):
        if k.pmd_trans_splitting(pmd):
            k.wait_split_huge_page(vma.anon_vma, pmdp)
        else:
            return k.follow_trans_huge_pmd(vma, address, pmdp, flags, nr)
    return _follow_pte_range(k, pmdp, address, flags, nr)


@P01.replaces
def do_move_page_to_node_array(k, mm, addresses, node):
    """Mirrors ``do_move_page_to_node_array()`` as patch 01 posted it (its mm/migrate.c hunk).

    The hunk splits only when ``PageTransHuge(page)`` holds for the page
    ``follow_page()`` returned, which is true on a THP's *head* alone (on a
    tail it is a ``VM_BUG_ON``, compiled out without DEBUG_VM).  So:

    * a tail subpage is not split; ``isolate_lru_page()`` fails on it (tails
      are never on the LRU) and its status is ``-EBUSY``;
    * the head subpage is split first -- even when it is already on the
      target node -- and migrated;
    * when that split fails (the stub at levels 4-5, a pin from level 6 on)
      the status is ``-EBUSY`` and the hunk jumps past ``put_page()``: the
      ``follow_page()`` reference is never dropped.  thplab records it in
      ``machine.leaked``; the page stays allocated and every later split of
      it fails, as it would in the kernel.

    Review of v2 (Naoya Horiguchi, 25 Nov 2014, Message-Id
    <20141125030109.GA21716@hori1.linux.bs1.fc.nec.co.jp>) asked for the
    test to move below the hugetlb and same-node checks; the author agreed
    and noted the missing ``put_page()``
    (<20141125140428.GA11841@node.dhcp.inet.fi>).
    """
    status = []
    for address in addresses:
        vma = mm.find_vma(address)
        if vma is None:
            status.append(-EFAULT)
            continue
        pages = k.follow_page_mask(vma, address, FOLL_GET, 1)
        if pages is None:
            status.append(-ENOENT)
            continue
        page = int(pages[0])
        if PageTransHuge(k.mem_map, page) and k.split_huge_page(page):
            k.machine.leaked[page] += 1
            status.append(-EBUSY)
            continue
        status.append(migrate_one(k, page, node))
    return status
