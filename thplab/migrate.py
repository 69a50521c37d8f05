"""Page migration between NUMA nodes, as far as ``move_pages(2)`` needs it.

Mirrors, for one 4 KiB anon page, the per-page tests of v3.16's
``do_move_page_to_node_array()`` (mm/migrate.c#L1223) after ``follow_page()``
found the page, then the outcome of ``migrate_pages()``.
SIMPLIFICATION: no migration entries, no retries: the page is moved at once
if its references are exactly its mappings plus the caller's, and the
status of a page that cannot move is ``-EAGAIN`` (v3.16 leaves a stale status
and returns the number of pages not moved).
"""

import numpy as np

from . import memory as mem
from . import pgtable as pt
from .errors import OutOfMemory, VMBug
from .page_alloc import dump_page
from .page_flags import PG, PageCompound, PageLRU, Use
from .params import EACCES, EAGAIN, EBUSY, ENOMEM


def migrate_one(k, page, node):
    """Move anon page ``page`` (caller holds one reference) to ``node``; return its status.

    In the kernel's order: already there (the node), mapped by another
    process without ``MPOL_MF_MOVE_ALL`` (``-EACCES``), not on the LRU so
    ``isolate_lru_page()`` fails (``-EBUSY``: a THP's tail never is, only its
    head carries ``PG_lru``), then the move itself.
    """
    m = k.machine
    mm_ = k.mem_map
    if m.page_to_nid(page) == node:
        k.put_page(page)
        return node
    if k.page_mapcount(page) > 1:  # shared with another process, no MPOL_MF_MOVE_ALL
        k.put_page(page)
        return -EACCES
    if not PageLRU(mm_, page):
        k.put_page(page)
        return -EBUSY
    if PageCompound(mm_, page):  # the callers split a THP head first; a 4 KiB copy would corrupt it
        raise VMBug(dump_page(mm_, page, "migrate_one: compound page"))
    if k.page_count(page) != k.page_mapcount(page) + 1:
        k.put_page(page)
        return -EAGAIN
    try:
        new = m.allocator.alloc_pages(0, Use.anon, within=m.node_range(node))
    except OutOfMemory:
        k.put_page(page)
        return -ENOMEM
    for mm, slot in _ptes_mapping(k, page):
        e = mem.entry(k, slot)
        mem.set_entry(k, slot, (e & ~np.uint64(pt.PTE_PFN_MASK)) | pt.mk_pte(new, 0))
    keep = np.uint32((1 << PG.uptodate) | (1 << PG.swapbacked) | (1 << PG.dirty) | (1 << PG.lru)
                     | (1 << PG.referenced) | (1 << PG.active))
    for field in ("mapping", "index", "_mapcount"):
        mm_[field][new] = mm_[field][page]
    mm_["flags"][new] = mm_["flags"][page] & keep
    mm_["_count"][new] = k.page_mapcount(page)
    mm_["_mapcount"][page] = -1
    mm_["_count"][page] = 1
    k.put_page(page)
    return node


def _ptes_mapping(k, page):
    """Every (mm, PTE slot) mapping 4 KiB page ``page``, found through its anon_vma."""
    for vma, address in mem.rmap_walk_vmas(k, page):
        pmdp = mem.pmd_offset(k, vma.mm, address)
        if pmdp is None:
            continue
        pmd = mem.entry(k, pmdp)
        if pmd == 0 or pt.pmd_trans_huge(pmd):
            continue
        slot = (mem.pte_table_of(k, pmd), int(pt.pte_index(address)))
        e = mem.entry(k, slot)
        if pt.pte_present(e) and int(pt.pte_pfn(e)) == page:
            yield vma.mm, slot
