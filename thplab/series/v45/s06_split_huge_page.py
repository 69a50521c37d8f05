"""v4.5 step 6 (emails 31-33 of v12): the new split_huge_page(), freezing the page first.

Splitting the compound page is back, refused for a pinned page.  "Pinned"
is read from the head alone: every reference should be a mapping, so
``total_mapcount(head) == page_count(head) - 1`` (the -1 is the caller's own
pin) must hold, or the split fails with ``-EBUSY`` before anything changed.

Where the RFC split every PMD and re-checked under ``compound_lock``, v4.5
*freezes* the page (32/37, e9b61f19858a): every mapping of it -- PMD or PTE,
in every process -- becomes a migration entry, dropping its mapping and its
reference, so that nobody can take a new reference through a page table.
Then, with all mappings gone, the page must be down to the caller's pin
(``page_count == 1``); a pin taken between the first test and the freeze
makes this second test fail, and ``unfreeze_page()`` maps everything back
-- by PTEs: the THP stays compound, no PMD is rebuilt.  On success the tails
become pages (``__split_huge_page_tail()``: ``_count`` = 1 + its mappings),
``unfreeze_page()`` turns each migration entry back into a PTE of its 4 KiB
page, and every subpage but the caller's is unlocked and put -- freeing
those nothing maps.

The caller must hold the page lock (31/37): the migration entries need it.
33/37 (migrate_pages) is not modelled.
"""

import numpy as np

from ... import memory as mem
from ... import pgtable as pt
from ...errors import VMBug
from ...migrate import migrate_one
from ...page_alloc import dump_page
from ...page_flags import PG, PageCompound, compound_head
from ...params import (EBUSY, EFAULT, ENOENT, FOLL_GET, FOLL_SPLIT, HPAGE_PMD_MASK, HPAGE_PMD_NR, HPAGE_PMD_SIZE,
                       PAGE_SHIFT, VM_WRITE)
from .._kernel import Patch
from ..p00_base import LRU_LOCK, _follow_pte_range, _pages
from ._common import LOCKED, email

S06 = Patch(
    number=6,
    series="v4.5",
    emails="31-33",
    subject="split_huge_page() is back: the caller locks the page, the split freezes it",
    files={"mm/huge_memory.c": "31, 32/37", "mm/gup.c": "31/37", "mm/ksm.c": "31/37",
           "mm/madvise.c": "31/37", "mm/memory-failure.c": "31/37", "mm/migrate.c": "31, 33/37",
           "mm/swap_state.c": "31/37", "mm/mempolicy.c": "33/37"},
    summary="split_huge_page() refuses with -EBUSY unless total_mapcount == page_count - 1; it "
            "replaces every mapping by a migration entry, checks page_count == 1 again, splits "
            "the compound page and maps each 4 KiB page back (or maps them back by PTEs and "
            "fails, if a pin came in between).",
    why="Reclaim, migration, KSM and memory failure need the page itself split; a pinned page "
        "must not be, and the freeze makes the final check race-free.",
    link=email(32),
    capabilities={"split_huge_page_works": True, "split_caller_locks": True},
)

#: Flags a tail takes from the head (4.5.7 mm/huge_memory.c#L3235-L3243): the RFC's plus locked and dirty.
_TAIL_KEEPS = np.uint32(sum(1 << b for b in (PG.referenced, PG.swapbacked, PG.mlocked, PG.uptodate,
                                             PG.active, PG.locked, PG.unevictable, PG.dirty)))


@S06.replaces
def lock_page(k, page):
    """Mirrors ``lock_page()``: take the page lock (the lock sets ``PG_locked``)."""
    k.machine.smp.lock(k, ("page_lock", int(page)), "lock_page")


@S06.replaces
def unlock_page(k, page):
    """Mirrors ``unlock_page()`` for one page or many (the tails a split leaves locked)."""
    pages = _pages(page)
    k.mem_map["flags"][pages] &= ~LOCKED
    smp = k.machine.smp
    # Only a page lock_page() took is held as a lock (a split's tails inherit just the bit):
    # look among the few locks held, not at every page.
    wanted = set(pages.tolist())
    for key in [key for key in smp.held if key[0] == "page_lock" and key[1] in wanted]:
        smp.unlock(k, key)


def thp_vmas(k, head):
    """The VMAs ``anon_vma_interval_tree_foreach`` visits for THP ``head``: ``(vma, address)``.

    Any VMA of its anon_vma that maps some of the 512 pages' offsets; ``address``
    is where the head would sit (before ``vm_start`` after a partial munmap).
    """
    av = k.machine.anon_vma_of(head)
    index = int(k.mem_map["index"][head])
    for vma in list(av.vmas):
        address = vma.vma_address(index)
        if address < vma.vm_end and address + HPAGE_PMD_SIZE > vma.vm_start:
            yield vma, address


def _ptes_of(k, vma, page, address):
    """The PTE slots of one VMA that can map subpages of the THP at ``page``: ``(table, i0, pfns)``.

    Skips the subpages before ``vm_start`` as ``freeze_page_vma()`` does; None
    if no PTE table is there.  SIMPLIFICATION: no ``mremap()``, so a THP's
    pages sit in one 2 MiB-aligned range and one PTE table.
    """
    first = page
    if address < vma.vm_start:
        first += (vma.vm_start - address) >> PAGE_SHIFT
        address = vma.vm_start
    pmdp = mem.pmd_offset(k, vma.mm, address)
    if pmdp is None:
        return pmdp, None
    pmd = mem.entry(k, pmdp)
    if pmd == 0 or pt.pmd_trans_huge(pmd):
        return pmdp, None
    i0 = int(pt.pte_index(address))
    return pmdp, (mem.pte_table_of(k, pmd), i0, np.arange(first, page + HPAGE_PMD_NR, dtype=np.int64))


@S06.replaces
def freeze_page_vma(k, vma, page, address):
    """Mirrors ``freeze_page_vma()`` (4.5.7 mm/huge_memory.c#L3040): no mapping of THP ``page`` left here.

    A PMD mapping it is split frozen; PTEs mapping its subpages are cleared
    (dirty carried to ``PG_dirty``) and become migration entries that
    remember the write bit, each losing its mapping and reference.
    """
    pmdp, ptes = _ptes_of(k, vma, page, address)
    if pmdp is None:
        return
    ptl = ("ptl", pmdp[0])
    smp = k.machine.smp
    smp.lock(k, ptl, "freeze_page_vma: pmd_lock")
    pmd = mem.entry(k, pmdp)
    if pt.pmd_trans_huge(pmd):
        if int(pt.pmd_pfn(pmd)) == page:
            k.__split_huge_pmd_locked(vma, pmdp, address & HPAGE_PMD_MASK, True)
        smp.unlock(k, ptl)
        return
    smp.unlock(k, ptl)
    if ptes is None:
        return
    table, i0, pfns = ptes
    entries = k.machine.pgtables.table(table)[i0:i0 + len(pfns)]
    hit = np.flatnonzero(pt.pte_present(entries) & (pt.pte_pfn(entries) == pfns))
    if not len(hit):
        return
    old, subpages = entries[hit].copy(), pfns[hit]
    entries[hit] = 0                                     # ptep_clear_flush()
    k.machine.smp.flush_tlb_range(k, "freeze_page_vma: ptep_clear_flush")
    k.mem_map["flags"][subpages[pt.pte_dirty(old)]] |= np.uint32(1 << PG.dirty)
    entries[hit] = pt.make_migration_entry(subpages, pt.pte_write(old))
    k.page_remove_rmap(subpages, compound=False)
    k.put_page(subpages)


@S06.replaces
def freeze_page(k, anon_vma, page):
    """Mirrors ``freeze_page()`` (4.5.7 mm/huge_memory.c#L3116): :func:`freeze_page_vma` in every VMA."""
    for vma, address in thp_vmas(k, page):
        k.freeze_page_vma(vma, page, address)


@S06.replaces
def unfreeze_page_vma(k, vma, page, address):
    """Mirrors ``unfreeze_page_vma()`` (4.5.7 mm/huge_memory.c#L3135): migration entries become PTEs.

    Each subpage found gets its reference and mapping back (``get_page()``,
    ``page_add_anon_rmap()``); the PTE is old, dirty if the page is, writable
    if the entry was and the VMA allows it.
    """
    _, ptes = _ptes_of(k, vma, page, address)
    if ptes is None:
        return
    table, i0, pfns = ptes
    entries = k.machine.pgtables.table(table)[i0:i0 + len(pfns)]
    hit = np.flatnonzero(pt.is_migration_entry(entries) & (pt.migration_entry_pfn(entries) == pfns))
    if not len(hit):
        return
    subpages, old = pfns[hit], entries[hit]
    k.get_page(subpages)
    k.mem_map["_mapcount"][subpages] += 1               # page_add_anon_rmap(page, vma, address, false)
    new = pt.clear_bits(pt.mk_pte(subpages, mem.vm_get_page_prot(vma.vm_flags)), pt._PAGE_ACCESSED)
    dirty = (k.mem_map["flags"][subpages] & np.uint32(1 << PG.dirty)) != 0
    new = np.where(dirty, pt.set_bits(new, pt._PAGE_DIRTY), new)
    if vma.vm_flags & VM_WRITE:
        new = np.where(pt.is_write_migration_entry(old), pt.set_bits(new, pt._PAGE_RW), new)
    entries[hit] = new


@S06.replaces
def unfreeze_page(k, anon_vma, page):
    """Mirrors ``unfreeze_page()`` (4.5.7 mm/huge_memory.c#L3199): :func:`unfreeze_page_vma` in every VMA."""
    for vma, address in thp_vmas(k, page):
        k.unfreeze_page_vma(vma, page, address)


@S06.replaces
def __split_huge_page_tail(k, head, tails):
    """Mirrors ``__split_huge_page_tail()`` (4.5.7 mm/huge_memory.c#L3216), vectorized over ``tails``.

    Each tail: ``_count += mapcount + 1`` (``mapcount`` = its ``_mapcount`` + 1,
    0 once frozen), the head's flags it keeps, no longer a tail, the head's
    ``mapping`` (page[1]'s ``compound_mapcount`` is overwritten), ``index``
    + i, on the LRU.  Returns the mapcounts, which the head gives up.
    """
    mem_map = k.mem_map
    if (mem_map["_count"][tails] != 0).any():
        bad = int(tails[mem_map["_count"][tails] != 0][0])
        raise VMBug(dump_page(mem_map, bad, "__split_huge_page_tail: VM_BUG_ON_PAGE(page_count != 0)"))
    mapcount = mem_map["_mapcount"][tails] + 1
    mem_map["_count"][tails] += mapcount + 1
    mem_map["flags"][tails] = (mem_map["flags"][head] & _TAIL_KEEPS) | np.uint32(1 << PG.lru)
    mem_map["first_page"][tails] = -1                   # clear_compound_head()
    mem_map["mapping"][tails] = mem_map["mapping"][head]
    mem_map["index"][tails] = mem_map["index"][head] + (tails - head)
    return mapcount


@S06.replaces
def __split_huge_page(k, page, list=None):
    """Mirrors ``__split_huge_page()`` (4.5.7 mm/huge_memory.c#L3275): the compound page becomes 512 pages.

    Under ``zone->lru_lock``: every tail split off, the head gives up their
    mapcounts and stops being compound.  Then the migration entries become
    PTEs again, and every subpage but ``page`` is unlocked and put.
    """
    mem_map, smp = k.mem_map, k.machine.smp
    head = int(compound_head(mem_map, page))
    smp.lock(k, LRU_LOCK, "__split_huge_page: spin_lock_irq(&zone->lru_lock)", irq=True)
    tails = np.arange(head + HPAGE_PMD_NR - 1, head, -1, dtype=np.int64)   # 511 down to 1
    mapcount = k.__split_huge_page_tail(head, tails)
    mem_map["_count"][head] -= int(mapcount.sum())
    mem_map["flags"][head] &= ~np.uint32(1 << PG.head)   # ClearPageCompound()
    mem_map["compound_order"][head + 1] = 0
    smp.unlock(k, LRU_LOCK, irq=True)
    k.point("__split_huge_page: compound page split, entries still frozen")
    k.unfreeze_page(k.machine.anon_vma_of(head), head)
    others = np.arange(head, head + HPAGE_PMD_NR, dtype=np.int64)
    others = others[others != page]
    k.unlock_page(others)
    k.put_page(others)


def split_huge_page_to_list_with(k, page, list, unlink):
    """The body of ``split_huge_page_to_list()`` (4.5.7 mm/huge_memory.c#L3412).

    ``unlink(head)`` runs once the post-freeze check passed, under
    ``split_queue_lock`` from step 7 on (nothing before).  Returns 0 or ``-EBUSY``.
    """
    mem_map = k.mem_map
    head = int(compound_head(mem_map, page))
    for ok, why in ((k.PageAnon(page), "!PageAnon(page)"),
                    (mem_map["flags"][page] & LOCKED, "!PageLocked(page)"),
                    (mem_map["flags"][head] & np.uint32(1 << PG.swapbacked), "!PageSwapBacked(page)"),
                    (PageCompound(mem_map, page), "!PageCompound(page)")):
        if not ok:
            raise VMBug(dump_page(mem_map, int(page), f"split_huge_page: VM_BUG_ON_PAGE({why})"))
    if not k.page_mapped(head):          # page_get_anon_vma() finds no anon_vma
        ret = -EBUSY
    else:
        anon_vma = k.machine.anon_vma_of(head)
        key = ("anon_vma", anon_vma.root.id)
        k.machine.smp.lock(k, key, "split_huge_page: anon_vma_lock_write")
        try:
            mapcount, count = k.total_mapcount(head), int(mem_map["_count"][head])
            k.point("split_huge_page: racy check", total_mapcount=mapcount, page_count=count)
            if mapcount != count - 1:
                ret = -EBUSY
            else:
                k.freeze_page(anon_vma, head)
                if k.compound_mapcount(head):
                    raise VMBug(dump_page(mem_map, head, "split_huge_page: compound_mapcount after freeze"))
                count, mapcount = int(mem_map["_count"][head]), k.total_mapcount(head)
                k.point("split_huge_page: frozen", total_mapcount=mapcount, page_count=count)
                if not mapcount and count == 1:
                    unlink(head)
                    k.__split_huge_page(page, list)
                    ret = 0
                elif mapcount:
                    raise VMBug(dump_page(mem_map, head, "split_huge_page: total_mapcount(head) > 0"))
                else:
                    k.unfreeze_page(anon_vma, head)
                    ret = -EBUSY
        finally:
            k.machine.smp.unlock(k, key)
    k.count_vm_event("thp_split_page_failed" if ret else "thp_split_page")
    k.point("split_huge_page: done", ret=ret)
    return ret


@S06.replaces
def split_huge_page_to_list(k, page, list=None):
    """Mirrors ``split_huge_page_to_list()`` as of v12 32/37; 0 or ``-EBUSY``.

    The caller holds the page lock and a reference (a pin on ``page``);
    both end on ``page`` itself.
    """
    return split_huge_page_to_list_with(k, page, list, lambda head: None)


@S06.replaces
def split_huge_page(k, page):
    """Mirrors ``split_huge_page()``: ``split_huge_page_to_list(page, NULL)``."""
    return k.split_huge_page_to_list(page, None)


def _split_locked(k, page):
    """What ``follow_page_mask()``'s ``FOLL_SPLIT`` does (4.5.7 mm/gup.c#L131, #L285): pin, lock, split."""
    k.get_page(page)
    k.lock_page(page)
    ret = k.split_huge_page(page)
    k.unlock_page(page)
    k.put_page(page)
    return ret


@S06.replaces
def follow_page_mask(k, vma, address, flags, nr):
    """Mirrors ``follow_page_mask()``/``follow_page_pte()`` (4.5.7 mm/gup.c#L213, #L62) for ``nr`` pages.

    ``FOLL_SPLIT`` splits the THP -- the compound page, with
    ``split_huge_page()`` -- whether a PMD or PTEs map it; a failed split is
    returned as its ``-errno`` (the kernel's ``ERR_PTR``).
    """
    pmdp = mem.pmd_offset(k, vma.mm, address)
    if pmdp is None or mem.entry(k, pmdp) == 0:
        return None
    pmd = mem.entry(k, pmdp)
    if pt.pmd_trans_huge(pmd):
        if not flags & FOLL_SPLIT:
            return k.follow_trans_huge_pmd(vma, address, pmdp, flags, nr)
        ret = _split_locked(k, int(pt.pmd_pfn(pmd)))
        if ret:
            return ret
    while flags & FOLL_SPLIT:
        pmd = mem.entry(k, pmdp)
        if pmd == 0 or pt.pmd_trans_huge(pmd):
            break
        i0 = int(pt.pte_index(address))
        entries = k.machine.pgtables.table(mem.pte_table_of(k, pmd))[i0:i0 + nr]
        present = pt.pte_present(entries)
        run = len(present) if present.all() else int(np.argmin(present))
        compound = np.flatnonzero(PageCompound(k.mem_map, pt.pte_pfn(entries[:run])))
        if not len(compound):
            break
        if compound[0]:          # the pages before the first THP subpage are followed as they are
            nr = int(compound[0])
            break
        ret = _split_locked(k, int(pt.pte_pfn(entries[0])))
        if ret:
            return ret
    return _follow_pte_range(k, pmdp, address, flags, nr)


@S06.replaces
def do_move_page_to_node_array(k, mm, addresses, node):
    """Mirrors ``do_move_page_to_node_array()`` (4.5.7 mm/migrate.c#L1237) for ``move_pages(2)``.

    As before, except that the ``FOLL_SPLIT`` split can fail: its ``-EBUSY``
    is the page's status.
    """

    status = []
    for address in addresses:
        vma = mm.find_vma(address)
        if vma is None:
            status.append(-EFAULT)
            continue
        pages = k.follow_page_mask(vma, address, FOLL_GET | FOLL_SPLIT, 1)
        if pages is None:
            status.append(-ENOENT)
        elif np.ndim(pages) == 0:
            status.append(int(pages))
        else:
            status.append(migrate_one(k, int(pages[0]), node))
    return status
