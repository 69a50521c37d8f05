"""Patch 06/10: "thp: implement new split_huge_page()".

Splitting the compound page is back, with a precondition: nobody may hold a
pin.  With no tail pins recorded, "pinned" is read from the head:
``Σ page_mapcount(subpages) == page_count(head) - 1`` (the -1 is the caller's
own reference) holds exactly when every reference is a mapping.  The test
runs twice: racily before any PMD is split (to avoid splitting PMDs for
nothing) and again under ``compound_lock``, after every PMD has become a PTE
table.  A pin taken in between makes the second test fail: ``-EBUSY``, with
the PMDs split but the compound page intact.

``get_page()``/``put_page()`` on a tail take ``compound_lock`` again, only to
keep the head's ``_count`` still while the split reads it.

As posted, the first test returned without unlocking the anon_vma or
counting the failure, and the PMD loop called ``__split_huge_pmd()`` with the
PMD lock held; v2 fixed both.  thplab follows the evident intent.
"""

import numpy as np

from .. import memory as mem
from .. import pgtable as pt
from ..errors import VMBug
from ..page_alloc import dump_page
from ..page_flags import PageCompound, compound_head
from ..params import EBUSY, HPAGE_PMD_MASK, HPAGE_PMD_NR
from ._kernel import Patch
from .p00_base import (LRU_LOCK, _pages, _release, compound_locked, head_stops_being_compound,
                       rmap_walk_vmas, tails_become_pages)
from .p04_pmd_split import _drop_heads

P06 = Patch(
    number=6,
    subject="thp: implement new split_huge_page()",
    files={"include/linux/hugetlb_inline.h": 9, "include/linux/mm.h": 22, "mm/huge_memory.c": 191,
           "mm/swap.c": 126},
    summary="split_huge_page() splits every PMD mapping the page (split_huge_pmd), then the "
            "compound page, giving each tail _count = its mapcount; it fails with -EBUSY when "
            "Σ page_mapcount != page_count - 1, i.e. when the page is pinned.",
    why="Only swap-out, memory failure, migration and KSM need the page itself split, and all "
        "of them can cope with failure.",
    link="https://lore.kernel.org/linux-mm/1402329861-7037-7-git-send-email-kirill.shutemov@linux.intel.com/",
    capabilities={"split_huge_page_works": True},
)


@P06.replaces
def get_page(k, page):
    """Mirrors ``get_page()``/``__get_page_tail()`` after patch 06: head ``_count`` +1 under ``compound_lock``."""
    pages = _pages(page)
    with compound_locked(k, pages, "__get_page_tail") as nr_tails:
        k.previous("get_page", P06)(pages)
    k.cost("atomic", 2 * nr_tails)  # lock + unlock around the increment
    k.cost("compound_lock", nr_tails)
    k.cost("irq_save", nr_tails)


@P06.replaces
def put_page(k, page):
    """Mirrors ``put_page()``/``put_compound_page()`` after patch 06: head ``_count`` -1 under ``compound_lock``."""
    pages = _pages(page)
    with compound_locked(k, pages, "put_compound_page") as nr_tails:
        heads = compound_head(k.mem_map, pages)
        _drop_heads(k, pages, heads)
    _release(k, heads)
    k.cost("atomic", len(pages) + 2 * nr_tails)
    k.cost("compound_lock", nr_tails)
    k.cost("irq_save", nr_tails)


def total_mapcount(k, head):
    """Σ ``page_mapcount()`` over the 512 subpages (thplab helper; v4.5 names it ``total_mapcount()``)."""
    return int((k.mem_map["_mapcount"][head:head + HPAGE_PMD_NR] + 1).sum())


@P06.replaces
def split_huge_page_to_list(k, page, list=None):
    """Mirrors ``split_huge_page_to_list()`` (v1 patch 06). Returns 0 or ``-EBUSY``."""
    mem_map = k.mem_map
    if not k.PageAnon(page):
        raise VMBug(dump_page(mem_map, page, "split_huge_page: BUG_ON(!PageAnon(page))"))
    head = int(compound_head(mem_map, page))
    # page_get_anon_vma() fails unless page_mapped(head): the head's own
    # _mapcount.  So a THP whose subpage 0 is unmapped cannot be split here even
    # if its tails are still mapped -- one more face of the head _mapcount
    # ambiguity [I: follows from the posted code, which calls page_get_anon_vma()].
    if mem_map["_mapcount"][head] < 0:
        k.count_vm_event("thp_split_page_failed")
        return -EBUSY
    anon_vma = k.machine.anon_vma_of(head)
    key = ("anon_vma", anon_vma.root.id)
    k.machine.smp.lock(k, key, "split_huge_page: anon_vma_lock_write")
    try:
        if not PageCompound(mem_map, head):
            # Split meanwhile: 06 as posted returns 0 through its "out" label, which
            # counts thp_split_page for a split this call did not do.
            ret = 0
        else:
            mapcount, count = total_mapcount(k, head), int(mem_map["_count"][head])
            k.point("split_huge_page: racy check", total_mapcount=mapcount, page_count=count)
            if mapcount > count - 1:
                raise VMBug(dump_page(mem_map, head, "split_huge_page: Σ mapcount > page_count - 1"))
            if mapcount != count - 1:
                ret = -EBUSY
            else:
                for vma, address in rmap_walk_vmas(k, head):
                    pmdp = mem.pmd_offset(k, vma.mm, address & HPAGE_PMD_MASK)
                    if pmdp is not None and pt.pmd_trans_huge(mem.entry(k, pmdp)) \
                            and int(pt.pmd_pfn(mem.entry(k, pmdp))) == head:
                        k.__split_huge_pmd(vma, pmdp, address)
                ret = k.__split_huge_page_refcount(head, list)
    finally:
        k.machine.smp.unlock(k, key)
    k.count_vm_event("thp_split_page_failed" if ret else "thp_split_page")
    k.point("split_huge_page: done", ret=ret)
    return ret


@P06.replaces
def __split_huge_page_refcount(k, page, list):
    """Mirrors ``__split_huge_page_refcount()`` (v1): re-check, then split the compound page.

    Under ``zone->lru_lock`` (interrupts off, as in 06's email) and
    ``compound_lock``: if ``Σ page_mapcount != page_count - 1`` a pin
    arrived since the racy check: ``-EBUSY``.  Otherwise tail i gets
    ``_count += mapcount_i + 1``, the head loses ``Σ mapcount_i``, the page
    stops being compound, and ``put_page()`` on every tail drops the "+1" --
    freeing tails that no PTE maps.  Tail ``_mapcount`` is left alone: it is
    already a real mapcount.
    """
    mem_map = k.mem_map
    smp = k.machine.smp
    smp.lock(k, LRU_LOCK, "__split_huge_page_refcount: spin_lock_irq(&zone->lru_lock)", irq=True)
    smp.lock(k, ("compound_lock", page), "__split_huge_page_refcount: compound_lock")
    k.point("__split_huge_page_refcount: compound_lock taken")
    if total_mapcount(k, page) != mem_map["_count"][page] - 1:
        smp.unlock(k, ("compound_lock", page))
        smp.unlock(k, LRU_LOCK, irq=True)
        return -EBUSY
    tails = np.arange(page + 1, page + HPAGE_PMD_NR, dtype=np.int64)
    if (mem_map["_count"][tails] != 0).any():
        raise VMBug(dump_page(mem_map, int(tails[0]), "__split_huge_page_refcount: tail _count != 0"))
    mapcounts = mem_map["_mapcount"][tails] + 1
    mem_map["_count"][tails] += mapcounts + 1
    tails_become_pages(mem_map, page, tails)
    head_stops_being_compound(k, page, int(mapcounts.sum()))
    k.point("__split_huge_page_refcount: compound page split")
    smp.unlock(k, ("compound_lock", page))
    smp.unlock(k, LRU_LOCK, irq=True)
    k.put_page(tails)
    return 0
