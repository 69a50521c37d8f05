"""Patch 01/10: "mm, thp: drop FOLL_SPLIT".

``FOLL_SPLIT`` made ``follow_page()`` split a THP behind the caller's back,
which only works if splitting can never fail.  Its users now split
explicitly and handle failure: migration reports ``-EBUSY`` for a page
whose THP could not be split.
"""

from .. import memory as mem
from .. import pgtable as pt
from ..migrate import migrate_one
from ..page_flags import PageCompound, compound_head
from ..params import EBUSY, EFAULT, FOLL_GET
from ._kernel import Patch
from .p00_base import _follow_pte_range

P01 = Patch(
    number=1,
    subject="mm, thp: drop FOLL_SPLIT",
    files={"include/linux/mm.h": "66 (series total)", "mm/gup.c": "18 (series total)",
           "mm/migrate.c": "7 (series total)", "arch/s390/mm/pgtable.c": "17 (series total)",
           "Documentation/vm/transhuge.txt": "11 of the series' 95"},
    summary="FOLL_SPLIT is removed from follow_page_mask(); migration calls split_huge_page() "
            "itself and reports -EBUSY for the page when the split fails; s390 splits per PMD "
            "with a page walker.",
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
    """Mirrors ``do_move_page_to_node_array()`` after patch 01: split explicitly, -EBUSY on failure.

    [I] v1 tests ``PageTransHuge(page)`` on the page ``follow_page()`` returned;
    thplab takes the head of any THP subpage and holds its reference across
    the split, as ``split_huge_page()`` requires from patch 06 on.
    """
    status = []
    for address in addresses:
        vma = mm.find_vma(address)
        pages = k.follow_page_mask(vma, address, FOLL_GET, 1) if vma else None
        if pages is None:
            status.append(-EFAULT)
            continue
        page = int(pages[0])
        if PageCompound(k.mem_map, page):
            head = int(compound_head(k.mem_map, page))
            k.get_page(head)
            k.put_page(page)
            ret = k.split_huge_page(head)
            k.put_page(head)
            if ret:
                status.append(-EBUSY)
                continue
            page = int(k.follow_page_mask(vma, address, FOLL_GET, 1)[0])
        status.append(migrate_one(k, page, node))
    return status
