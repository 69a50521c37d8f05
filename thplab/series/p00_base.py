"""Level 0: the kernel before the series (v3.14, with the v3.16 ``_PAGE_SPLITTING`` bit).

Every kernel function whose behaviour patches 01-10 change lives here under
its kernel name.  Tail pages are refcounted: ``get_page()`` on a tail bumps
the head's ``_count`` *and* the tail's ``_mapcount``, which therefore counts
pins, not mappings.  ``split_huge_page()`` never fails: it splits the whole
compound page in every process that maps it, in three phases.

Sources: kernel-semantics.md §1 (v3.14 ``mm/huge_memory.c``, ``mm/swap.c``,
``include/linux/mm.h``, ``mm/gup.c``, ``arch/x86/mm/gup.c``, ``kernel/futex.c``).
"""

import contextlib

import numpy as np

from .. import memory as mem
from .. import pgtable as pt
from ..errors import Segfault, VMBug
from ..memory import rmap_walk_vmas
from ..page_alloc import dump_page
from ..page_flags import PG, PageCompound, PageHead, PageTail, Use, compound_head
from ..params import (EAGAIN, EFAULT, EINVAL, ENOENT, FOLL_GET, FOLL_SPLIT, FOLL_WRITE,
                      HPAGE_PMD_MASK, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE, VERIFY_READ, VM_WRITE)
from ._kernel import Patch

BASE = Patch(
    number=0,
    subject="the kernel before the series: the RFC's base, read in v3.16",
    files={},
    summary="Tail-page refcounting; split_huge_page() never fails and splits every mapping.",
    why="Designed around two requirements: split must never fail, and get_user_pages() "
        "keeps its interface. So every pin on a tail must be recorded on that tail.",
    link="https://elixir.bootlin.com/linux/v3.16/source/mm/huge_memory.c",
    capabilities={
        "tail_pins": True,               # tail _mapcount counts pins
        "pte_mapped_thp": False,         # a THP is never mapped by PTEs
        "split_can_fail": False,
        "foll_split": True,
        "splitting_pmd": True,           # _PAGE_SPLITTING exists
        "futex_thp_special_case": True,
        "page_anon_on_tail": False,
        "split_huge_page_works": True,
    },
)
replaces = BASE.replaces

#: ``enum vm_event_item`` THP events under their /proc/vmstat names (v3.14).
BASE.data["VM_EVENTS"] = ("thp_fault_alloc", "thp_fault_fallback", "thp_collapse_alloc",
                          "thp_collapse_alloc_failed", "thp_split", "thp_zero_page_alloc",
                          "thp_zero_page_alloc_failed")
#: The event the old ``split_huge_page_to_list()`` counts once per THP it splits.
BASE.data["THP_SPLIT"] = "thp_split"


#: ``zone->lru_lock`` as an :class:`~thplab.smp.Smp` lock key: thplab has one zone.
LRU_LOCK = ("lru_lock", 0)


def _pages(page):
    return np.atleast_1d(np.asarray(page, dtype=np.int64))


def _release(k, heads):
    """Free the pages among ``heads`` whose ``_count`` reached 0 (``__put_single_page``/compound dtor)."""
    heads = np.unique(heads)
    dead = heads[k.mem_map["_count"][heads] == 0]
    if len(dead):
        k.machine.allocator.free_pages(dead)
    return dead


# ------------------------------------------------------------ page accessors

@replaces
def PageAnon(k, page):
    """Mirrors ``PageAnon()`` (v3.14): bit 0 of *this* struct page's ``mapping``.

    A tail's ``mapping`` is NULL, so ``PageAnon(tail)`` is false -- patch 02 changes this.
    """
    return (k.mem_map["mapping"][page] & 1) != 0


@replaces
def page_mapcount(k, page):
    """Mirrors ``page_mapcount()``: ``_mapcount + 1`` of this struct page, no compound logic.

    On a tail in this kernel that is the number of *pins* on the tail.
    """
    return k.mem_map["_mapcount"][page] + 1


@replaces
def page_count(k, page):
    """Mirrors ``page_count()``: the head's ``_count``."""
    return k.mem_map["_count"][compound_head(k.mem_map, page)]


@contextlib.contextmanager
def compound_locked(k, pages, what):
    """Hold ``compound_lock`` of every THP with a tail among ``pages`` for the ``with`` body.

    Mirrors the ``compound_lock_irqsave(head)`` ... ``compound_unlock_irqrestore()``
    bracket of ``__get_page_tail()``/``put_compound_page()``.  Yields the
    number of tail pages.

    SIMPLIFICATION: v3.16's ``__get_page_tail()`` takes the head reference
    (``get_page_unless_zero()``) before ``compound_lock`` and
    ``put_compound_page()`` drops it after the unlock; thplab moves every
    count inside the lock: the same totals, other windows for an interleaving.
    """
    mem_map, smp = k.mem_map, k.machine.smp
    tails = pages[PageTail(mem_map, pages)]
    taken = []
    try:
        for head in np.unique(compound_head(mem_map, tails)).tolist():
            smp.lock(k, ("compound_lock", head), f"{what}: compound_lock", irq=True)
            taken.append(head)
            # A point names what the CPU has just done, so it follows the lock (and a
            # what-if that removes the lock reports nothing here).
            if "compound_lock" not in smp.without:
                k.point(f"{what}: compound_lock_irqsave(head), lock held", head=head)
        yield len(tails)
    finally:
        for head in reversed(taken):
            smp.unlock(k, ("compound_lock", head), irq=True)


@replaces
def get_page(k, page):
    """Mirrors ``get_page()`` (include/linux/mm.h, mm/swap.c ``__get_page_tail()``), vectorized.

    Head or normal page: ``_count`` +1.  THP tail: head ``_count`` +1 *and*
    tail ``_mapcount`` +1, under ``compound_lock`` with interrupts off, so
    that a split can hand each pin to the right tail.
    """
    mm = k.mem_map
    pages = _pages(page)
    with compound_locked(k, pages, "__get_page_tail"):
        # Re-read under the lock: a split may have turned the tail into a normal page.
        heads = compound_head(mm, pages)
        tails = pages[PageTail(mm, pages)]
        if (mm["_count"][heads] <= 0).any():
            bad = int(pages[mm["_count"][heads] <= 0][0])
            raise VMBug(dump_page(mm, bad, "get_page: VM_BUG_ON(page_count <= 0)"))
        np.add.at(mm["_count"], heads, 1)
        np.add.at(mm["_mapcount"], tails, 1)
    # get_page_unless_zero(head) + lock + atomic_inc(tail->_mapcount) + unlock
    k.cost("atomic", len(pages) - len(tails) + 4 * len(tails))
    k.cost("compound_lock", len(tails))
    k.cost("irq_save", len(tails))


@replaces
def get_page_foll(k, page):
    """Mirrors ``get_page_foll()`` (mm/internal.h): like ``get_page()`` without ``compound_lock``.

    ``follow_page()`` holds the page-table lock, which already excludes a split.
    """
    mm = k.mem_map
    pages = _pages(page)
    tails = pages[PageTail(mm, pages)]
    np.add.at(mm["_count"], compound_head(mm, pages), 1)
    np.add.at(mm["_mapcount"], tails, 1)
    k.cost("atomic", len(pages) + len(tails))


@replaces
def put_page(k, page):
    """Mirrors ``put_page()``/``put_compound_page()`` (mm/swap.c, v3.14), vectorized.

    Tail: under ``compound_lock``, tail ``_mapcount`` -1, then head ``_count`` -1.
    A page whose ``_count`` reaches 0 is freed (a THP as one 2 MiB block).
    """
    mm = k.mem_map
    pages = _pages(page)
    with compound_locked(k, pages, "put_compound_page"):
        # Re-check PageTail under the lock: after a racing split the page is an
        # ordinary page and only its own _count drops.
        heads = compound_head(mm, pages)
        tails = pages[PageTail(mm, pages)]
        if len(tails):
            k.point("put_compound_page: PageTail re-checked under compound_lock", tails=len(tails))
        if (mm["_count"][heads] <= 0).any():
            bad = int(pages[mm["_count"][heads] <= 0][0])
            raise VMBug(dump_page(mm, bad, "put_page: VM_BUG_ON(page_count == 0)"))
        if len(tails):
            pins = np.bincount(tails - tails.min(), minlength=1)
            idx = np.flatnonzero(pins)
            if (mm["_mapcount"][tails.min() + idx] + 1 < pins[idx]).any():
                raise VMBug(dump_page(mm, int(tails[0]), "put_compound_page: tail has no pin to drop"))
        np.add.at(mm["_mapcount"], tails, -1)
        np.add.at(mm["_count"], heads, -1)
    # get_page_unless_zero(head), lock, put_page_testzero(head), atomic_dec(tail), unlock, put(head)
    k.cost("atomic", len(pages) - len(tails) + 6 * len(tails))
    k.cost("compound_lock", len(tails))
    k.cost("irq_save", len(tails))
    _release(k, heads)


# ------------------------------------------------------------ rmap

@replaces
def page_add_new_anon_rmap(k, page, vma, address, compound=False):
    """Mirrors ``page_add_new_anon_rmap()`` (mm/rmap.c): the first mapping of new anon pages.

    v3.16 has no ``compound`` argument and tells a THP by ``PageTransHuge()``;
    it is here so that callers are the same at every level (v4.5 adds it).
    """
    mem.page_add_new_anon_rmap(k, page, vma, address)


@replaces
def page_dup_rmap(k, page, compound=False):
    """Mirrors ``page_dup_rmap()`` (include/linux/rmap.h, fork): one more mapping of each page."""
    mem.page_dup_rmap(k, page)


@replaces
def reuse_swap_page(k, page):
    """Mirrors ``reuse_swap_page()`` (v3.16 mm/swapfile.c#L872) for a page not in the swap cache.

    ``do_wp_page()`` may write to the page in place when this is its only
    mapping: ``page_mapcount(page) <= 1``.
    """
    return bool(k.page_mapcount(page) <= 1)


@replaces
def page_remove_rmap(k, page, compound=False):
    """Mirrors ``page_remove_rmap()`` (mm/rmap.c, v3.14) for anon pages, vectorized.

    ``_mapcount`` -1; when a THP head's count goes back to -1 the THP no
    longer counts in ``nr_anon_transparent_hugepages``.  (``compound`` is
    accepted so that callers are the same at every level; v3.14 decides by
    ``PageTransHuge()``.)
    """
    mm = k.mem_map
    pages = _pages(page)
    np.add.at(mm["_mapcount"], pages, -1)
    gone = pages[(mm["_mapcount"][pages] == -1) & PageHead(mm, pages)]
    if len(gone):
        k.machine.vmstat.count("nr_anon_transparent_hugepages", -len(np.unique(gone)))


# ------------------------------------------------------------ huge PMD faults and fork

@replaces
def do_huge_pmd_anonymous_page(k, mm, vma, address, pmdp, write):
    """Mirrors ``do_huge_pmd_anonymous_page()``: map a new THP with one PMD leaf.

    SIMPLIFICATION: no huge zero page (as with ``use_zero_page`` = 0): a read
    fault allocates a THP too.

    Batched (thplab, for :func:`thplab.memory.populate_range`): ``address``
    an array of THP-aligned addresses inside the VMA whose PMDs, ``pmdp`` =
    ``(PMD table, indices)``, are none.  Each gets the THP (and deposited
    table) its own fault would get, in order, while the check that precedes
    each allocation passes; it stops before the first that would fall back,
    which the caller then faults alone.  Returns one 0 per THP mapped.
    """
    if np.ndim(address):
        return _huge_pmd_anonymous_pages(k, mm, vma, address, pmdp)
    haddr = address & HPAGE_PMD_MASK
    if haddr < vma.vm_start or haddr + HPAGE_PMD_SIZE > vma.vm_end:
        return mem.VM_FAULT_FALLBACK
    alloc = k.machine.allocator
    if not alloc.can_alloc(HPAGE_PMD_NR.bit_length() - 1) or alloc.nr_free_pages < HPAGE_PMD_NR + 1:
        k.count_vm_event("thp_fault_fallback")
        return mem.VM_FAULT_FALLBACK
    mem.anon_vma_prepare(k, vma)
    pgtable = mem.pte_alloc_one(k, mm)
    page = alloc.alloc_pages(HPAGE_PMD_NR.bit_length() - 1, Use.anon)
    ptl = ("ptl", pmdp[0])
    k.machine.smp.lock(k, ptl, "do_huge_pmd_anonymous_page: pmd_lock")
    if mem.entry(k, pmdp) != 0:
        # Populated while we allocated (v3.16 mm/huge_memory.c#L735): undo and count a
        # fallback; the access then finds the PMD that is there now.
        k.machine.smp.unlock(k, ptl)
        k.mem_map["_count"][page] = 0
        alloc.free_pages([page])
        mem.pte_free(k, mm, pgtable)
        k.count_vm_event("thp_fault_fallback")
        return 0
    _map_new_thps(k, mm, vma, np.array([haddr]), (pmdp[0], np.array([pmdp[1]])),
                  np.array([pgtable]), np.array([page]))
    k.machine.smp.unlock(k, ptl)
    k.count_vm_event("thp_fault_alloc")
    return 0


def _huge_pmd_anonymous_pages(k, mm, vma, addresses, pmdp):
    """The batch of :func:`do_huge_pmd_anonymous_page`: same checks, same pages, one pass."""
    alloc = k.machine.allocator
    order = HPAGE_PMD_NR.bit_length() - 1
    pgtables, pages = [], []
    while (len(pages) < len(addresses) and alloc.can_alloc(order)
           and alloc.nr_free_pages >= HPAGE_PMD_NR + 1):
        pgtables.append(alloc.take_block(0))  # pte_alloc_one()
        pages.append(alloc.take_block(order))
    if not pages:
        return np.zeros(0, dtype=np.int64)
    nr = len(pages)
    mem.anon_vma_prepare(k, vma)
    pgtables = mem.pte_tables_in_use(k, alloc.prep_blocks(pgtables, 0, Use.pgtable))
    pages = alloc.prep_blocks(pages, order, Use.anon)
    _map_new_thps(k, mm, vma, addresses[:nr], (pmdp[0], pmdp[1][:nr]), pgtables, pages)
    k.count_vm_event("thp_fault_alloc", nr)
    return np.zeros(nr, dtype=np.int64)


def _map_new_thps(k, mm, vma, haddrs, pmdp, pgtables, pages):
    """Install new THPs behind none PMDs: rmap, deposited tables, the PMD leaves, counters."""
    e = pt.set_bits(pt.mk_huge_pmd(pages, mem.vm_get_page_prot(vma.vm_flags)), pt._PAGE_DIRTY)
    if vma.vm_flags & VM_WRITE:
        e = pt.set_bits(e, pt._PAGE_RW)
    k.page_add_new_anon_rmap(pages, vma, haddrs, compound=True)
    mem.pgtable_trans_huge_deposit(k, mm, pmdp, pgtables)
    k.machine.pgtables.table(pmdp[0])[pmdp[1]] = e
    mm.anon_rss += HPAGE_PMD_NR * len(pages)
    mm.nr_ptes += len(pages)


@replaces
def do_huge_pmd_wp_page(k, mm, vma, address, pmdp, orig_pmd):
    """Mirrors ``do_huge_pmd_wp_page()``: write fault on a write-protected huge PMD.

    Reuse the THP when ``page_mapcount(head) == 1``; else copy all 2 MiB to a
    new THP.
    """
    page = int(pt.pmd_pfn(orig_pmd))
    if k.page_mapcount(page) == 1:
        mem.set_entry(k, pmdp, pt.set_bits(orig_pmd, pt._PAGE_RW | pt._PAGE_DIRTY | pt._PAGE_ACCESSED))
        return 0
    return huge_pmd_copy(k, vma, address, pmdp, page)


def huge_pmd_copy(k, vma, address, pmdp, page):
    """The copying half of ``do_huge_pmd_wp_page()`` (v3.16 mm/huge_memory.c#L1125-L1146).

    Give this mapping its own THP.  When no THP is free, copy into 512 small
    pages for this process alone (:func:`do_huge_pmd_wp_page_fallback`): the
    other mappers keep their PMD and the compound page lives on.  Only when
    even 512 small pages cannot be had is the THP split (``split_huge_page()``
    at level 0; the RFC levels split this PMD, as v2 and v4.5 do).
    Both fallbacks count ``thp_fault_fallback``.
    """
    k.get_page(page)  # get_user_huge_page()
    alloc = k.machine.allocator
    if not alloc.can_alloc(HPAGE_PMD_NR.bit_length() - 1):
        ret = do_huge_pmd_wp_page_fallback(k, vma, address, pmdp, page)
        if ret & mem.VM_FAULT_OOM:
            k.split_pmd(vma, pmdp, address)
            ret |= mem.VM_FAULT_FALLBACK
        k.put_page(page)  # put_user_huge_page()
        k.count_vm_event("thp_fault_fallback")
        return ret & mem.VM_FAULT_FALLBACK
    new = alloc.alloc_pages(HPAGE_PMD_NR.bit_length() - 1, Use.anon)
    e = pt.set_bits(pt.mk_huge_pmd(new, mem.vm_get_page_prot(vma.vm_flags)),
                    pt._PAGE_DIRTY | pt._PAGE_RW)
    k.page_add_new_anon_rmap(new, vma, address & HPAGE_PMD_MASK, compound=True)
    mem.set_entry(k, pmdp, e)
    k.page_remove_rmap(page, compound=True)
    k.put_page([page, page])  # the PMD's reference and ours
    k.count_vm_event("thp_fault_alloc")
    return 0


def do_huge_pmd_wp_page_fallback(k, vma, address, pmdp, page):
    """Mirrors ``do_huge_pmd_wp_page_fallback()`` (v3.16 mm/huge_memory.c#L975).

    Copy the THP into 512 new 4 KiB pages and map them, writable, through the
    PMD's deposited table: this process's PMD becomes a PTE table; the THP
    loses this mapping and the PMD's reference.  ``VM_FAULT_OOM`` (and no
    change) when 512 pages are not free.
    """
    alloc = k.machine.allocator
    if alloc.nr_free_pages < HPAGE_PMD_NR:
        return mem.VM_FAULT_OOM
    mm, haddr = vma.mm, address & HPAGE_PMD_MASK
    pages = np.array([alloc.alloc_pages(0, Use.anon) for _ in range(HPAGE_PMD_NR)], dtype=np.int64)
    ptes = pt.set_bits(pt.mk_pte(pages, mem.vm_get_page_prot(vma.vm_flags)), pt._PAGE_DIRTY)
    if vma.vm_flags & VM_WRITE:
        ptes = pt.set_bits(ptes, pt._PAGE_RW)  # maybe_mkwrite()
    mem.set_entry(k, pmdp, 0)  # pmdp_clear_flush()
    k.machine.smp.flush_tlb_range(k, "do_huge_pmd_wp_page_fallback: pmdp_clear_flush")
    pgtable = mem.pgtable_trans_huge_withdraw(k, mm, pmdp)
    mem.page_add_new_anon_rmap(k, pages, vma, haddr + np.arange(HPAGE_PMD_NR, dtype=np.int64) * PAGE_SIZE)
    k.machine.pgtables.table(pgtable)[:] = ptes
    mem.set_entry(k, pmdp, pt.mk_table_entry(pgtable))  # pmd_populate()
    k.page_remove_rmap(page, compound=True)
    k.put_page(page)  # the PMD's reference
    return 0


def one_by_one(fn, pmdps, addr):
    """Run a batched PMD function on each PMD alone, in order; the results side by side.

    ``pmdps`` is a list of ``(PMD table, indices)`` with the same indices.
    For a batch that meets a PMD it cannot take with the others (one being
    split, or not huge any more), so that every PMD sees exactly what it
    would have seen had the kernel's loop reached it alone.
    """
    idx = pmdps[0][1]
    return np.concatenate([fn(*[(t, i[j:j + 1]) for t, i in pmdps], addr[j:j + 1])
                           for j in range(len(idx))])


@replaces
def copy_huge_pmd(k, dst_mm, src_mm, dst_pmdp, src_pmdp, addr, vma):
    """Mirrors ``copy_huge_pmd()`` (fork): share the THP, write-protect both PMDs.

    A PMD being split makes fork wait for the split and copy at PTE level
    (``-EAGAIN``).

    Batched (thplab): ``src_pmdp``/``dst_pmdp`` are ``(PMD table, indices)``
    for a run of PMDs of one table, ``addr`` their addresses; the result is
    0 or ``-EAGAIN`` per PMD.  The kernel calls it once per PMD, taking a
    table to deposit each time (``pte_alloc_one()``); a run takes its tables
    in one go, the same pages in the same order.
    """
    src_t, idx = src_pmdp
    src = k.machine.pgtables.table(src_t)
    pmds = src[idx]
    if len(idx) > 1 and not (pt.pmd_trans_huge(pmds) & ~pt.pmd_trans_splitting(pmds)).all():
        return one_by_one(lambda d, s, a: k.copy_huge_pmd(dst_mm, src_mm, d, s, a, vma),
                          [dst_pmdp, src_pmdp], addr)
    if len(idx) == 1 and not pt.pmd_trans_huge(pmds[0]):
        mem.pte_free(k, dst_mm, mem.pte_alloc_one(k, dst_mm))
        return np.array([-EAGAIN])
    if len(idx) == 1 and pt.pmd_trans_splitting(pmds[0]):
        mem.pte_free(k, dst_mm, mem.pte_alloc_one(k, dst_mm))
        k.wait_split_huge_page(vma.anon_vma, (src_t, int(idx[0])))
        return np.array([-EAGAIN])
    return copy_stable_huge_pmds(k, dst_mm, dst_pmdp, src_pmdp)


def copy_stable_huge_pmds(k, dst_mm, dst_pmdp, src_pmdp):
    """The copying part of ``copy_huge_pmd()`` for PMDs known to be huge and stable.

    ``get_page()`` and ``page_dup_rmap()`` on each head, both PMDs
    write-protected, the child's made old, a table deposited for each.
    Out of memory for a table after some were copied: those stay copied and
    :class:`~thplab.errors.OutOfMemory` is raised, as the kernel's loop stops there.
    """
    src_t, idx = src_pmdp
    dst_t = dst_pmdp[0]
    tables = k.machine.pgtables
    nr = min(len(idx), k.machine.allocator.nr_free_pages)
    if nr < len(idx):
        if nr:
            copy_stable_huge_pmds(k, dst_mm, (dst_t, idx[:nr]), (src_t, idx[:nr]))
        mem.pte_alloc_one(k, dst_mm)  # raises OutOfMemory
    pgtables = mem.pte_alloc_many(k, dst_mm, len(idx))
    src = tables.table(src_t)
    pmds = src[idx]
    pages = pt.pmd_pfn(pmds)
    k.get_page(pages)
    k.page_dup_rmap(pages, compound=True)
    dst_mm.anon_rss += HPAGE_PMD_NR * len(idx)
    pmds = pt.clear_bits(pmds, pt._PAGE_RW)
    src[idx] = pmds
    mem.pgtable_trans_huge_deposit(k, dst_mm, (dst_t, idx), pgtables)
    tables.table(dst_t)[idx] = pt.clear_bits(pmds, pt._PAGE_ACCESSED)
    dst_mm.nr_ptes += len(idx)
    return np.zeros(len(idx), dtype=np.int64)


@replaces
def pmd_trans_huge_lock(k, pmdp, vma):
    """Mirrors ``__pmd_trans_huge_lock()`` (v3.14): 1 if a stable huge PMD, -1 after waiting for a split.

    Batched (thplab): ``pmdp`` is ``(PMD table, indices)``; one result per PMD.
    """
    tbl, idx = pmdp
    pmds = k.machine.pgtables.table(tbl)[idx]
    ret = np.where(pt.pmd_trans_huge(pmds), 1, 0)
    for j in np.flatnonzero((ret == 1) & k.pmd_trans_splitting(pmds)).tolist():
        k.wait_split_huge_page(vma.anon_vma, (tbl, int(idx[j])))
        ret[j] = -1
    return ret


@replaces
def zap_huge_pmd(k, vma, pmdp, addr):
    """Mirrors ``zap_huge_pmd()``: unmap a whole THP mapping; free the deposited table.

    Batched (thplab): ``pmdp`` is ``(PMD table, indices)``, ``addr`` the
    addresses; returns 1 per PMD zapped, 0 where it was no longer a stable
    huge PMD.  The rmap, table frees and ``put_page()`` of the batch are each
    one array operation.
    """
    tbl, idx = pmdp
    done = k.pmd_trans_huge_lock(pmdp, vma) == 1
    idx = idx[done]
    if len(idx):
        mm = vma.mm
        table = k.machine.pgtables.table(tbl)
        orig = table[idx]
        table[idx] = 0
        pgtables = mem.pgtable_trans_huge_withdraw(k, mm, (tbl, idx))
        pages = pt.pmd_pfn(orig)
        k.page_remove_rmap(pages, compound=True)
        mm.anon_rss -= HPAGE_PMD_NR * len(idx)
        mem.pte_free_many(k, mm, pgtables)
        mm.nr_ptes -= len(idx)
        k.put_page(pages)
    return done.astype(np.int64)


@replaces
def change_huge_pmd(k, vma, pmdp, addr, newprot):
    """Mirrors ``change_huge_pmd()``: mprotect() of a whole aligned THP rewrites the PMD.

    Batched (thplab): every PMD at ``pmdp = (PMD table, indices)`` in one
    array operation; returns 1 per PMD changed.
    """
    tbl, idx = pmdp
    done = k.pmd_trans_huge_lock(pmdp, vma) == 1
    table = k.machine.pgtables.table(tbl)
    table[idx[done]] = pt.pte_modify(table[idx[done]], newprot)
    return done.astype(np.int64)


@replaces
def __handle_mm_fault(k, mm, vma, address, write):
    """Mirrors ``__handle_mm_fault()`` (mm/memory.c, v3.14) for anonymous memory.

    Returns 0 when done -- also when the PMD is being split, in which case
    the access simply faults again once the split is over.
    """
    pmdp = mem.pmd_offset(k, mm, address, alloc=True)
    pmd = mem.entry(k, pmdp)
    if pmd == 0 and mem.transparent_hugepage_enabled(k, vma):
        ret = k.do_huge_pmd_anonymous_page(mm, vma, address, pmdp, write)
        if not ret & mem.VM_FAULT_FALLBACK:
            return ret
    elif pt.pmd_trans_huge(pmd):
        if k.pmd_trans_splitting(pmd):
            k.point("__handle_mm_fault: PMD is splitting, retry the fault")
            return 0
        if write and not pt.pte_write(pmd):
            ret = k.do_huge_pmd_wp_page(mm, vma, address, pmdp, pmd)
            if not ret & mem.VM_FAULT_FALLBACK:
                return ret
        else:
            mem.set_entry(k, pmdp, pt.set_bits(pmd, pt._PAGE_ACCESSED))
            return 0
    if mem.entry(k, pmdp) == 0:
        mem.__pte_alloc(k, mm, pmdp)
    if pt.pmd_trans_huge(mem.entry(k, pmdp)):
        return 0
    return mem.handle_pte_fault(k, mm, vma, address, pmdp, write)


# ------------------------------------------------------------ get_user_pages

@replaces
def follow_trans_huge_pmd(k, vma, addr, pmdp, flags, nr):
    """Mirrors ``follow_trans_huge_pmd()``: the subpages of a huge PMD, pinned with FOLL_GET.

    Vectorized over ``nr`` consecutive subpages (the kernel's GUP loop calls
    it once per page).  None if a write needs a COW fault first.
    """
    pmd = mem.entry(k, pmdp)
    if flags & FOLL_WRITE and not pt.pte_write(pmd):
        return None
    first = int(pt.pmd_pfn(pmd)) + ((addr & ~HPAGE_PMD_MASK) >> 12)
    pages = np.arange(first, first + nr, dtype=np.int64)
    if flags & FOLL_GET:
        k.get_page_foll(pages)
    return pages


@replaces
def follow_page_mask(k, vma, address, flags, nr):
    """Mirrors ``follow_page_mask()`` (mm/gup.c, v3.16) for up to ``nr`` pages in one PMD.

    ``FOLL_SPLIT`` splits a huge PMD -- and with it the whole THP -- before
    looking at the PTEs.  A PMD being split makes the walker wait.
    Returns an array of the pages found (shorter than ``nr`` where a page
    needs a fault), or None when the first page needs one.
    """
    mm = vma.mm
    pmdp = mem.pmd_offset(k, mm, address)
    if pmdp is None or mem.entry(k, pmdp) == 0:
        return None
    pmd = mem.entry(k, pmdp)
    if pt.pmd_trans_huge(pmd):
        if flags & FOLL_SPLIT:
            k.split_huge_page_pmd(vma, address, pmdp)
        elif k.pmd_trans_splitting(pmd):
            k.wait_split_huge_page(vma.anon_vma, pmdp)
        else:
            return k.follow_trans_huge_pmd(vma, address, pmdp, flags, nr)
    return _follow_pte_range(k, pmdp, address, flags, nr)


def _follow_pte_range(k, pmdp, address, flags, nr):
    """The PTE half of ``follow_page_mask()``, vectorized over one PTE table."""
    pmd = mem.entry(k, pmdp)
    if pmd == 0 or pt.pmd_trans_huge(pmd):
        return None
    i0 = int(pt.pte_index(address))
    entries = k.machine.pgtables.table(mem.pte_table_of(k, pmd))[i0:i0 + nr]
    ok = pt.pte_present(entries)
    if flags & FOLL_WRITE:
        ok &= pt.pte_write(entries)
    n = len(ok) if ok.all() else int(np.argmin(ok))
    if n == 0:
        return None
    pages = pt.pte_pfn(entries[:n])
    if flags & FOLL_GET:
        k.get_page_foll(pages)
    return pages


@replaces
def gup_huge_pmd(k, pmd, addr, nr, write):
    """Mirrors x86 ``gup_huge_pmd()`` (arch/x86/mm/gup.c): pin subpages of a 2 MiB leaf.

    Every tail in the range gets ``get_huge_page_tail()`` (tail ``_mapcount``
    +1); the head gets all ``nr`` references at once.
    """
    need = pt._PAGE_PRESENT | pt._PAGE_USER | (pt._PAGE_RW if write else 0)
    if int(pmd) & need != need:
        return None
    head = int(pt.pmd_pfn(pmd))
    pages = head + ((addr & ~HPAGE_PMD_MASK) >> 12) + np.arange(nr, dtype=np.int64)
    mm = k.mem_map
    if (mm["_count"][head] <= 0):
        raise VMBug(dump_page(mm, head, "gup_huge_pmd: page_count == 0"))
    tails = pages[pages != head]
    np.add.at(mm["_mapcount"], tails, 1)
    k.point("gup_huge_pmd: tail pins taken, head not yet", head=head)
    mm["_count"][head] += nr
    mm["flags"][head] |= np.uint32(1 << PG.referenced)
    k.point("gup_huge_pmd: head referenced", head=head, nr=nr)
    k.cost("atomic", 1 + len(tails))
    return pages


@replaces
def gup_pmd_range(k, mm, addr, nr, write):
    """Mirrors x86 ``gup_pmd_range()``: lock-free walk with interrupts disabled.

    Bails out (returns None, so the caller takes the slow path) on an empty
    PMD and -- in this kernel -- on a PMD being split: waiting here, with
    interrupts off, would deadlock against the splitter's TLB-flush IPI.
    """
    pmdp = mem.pmd_offset(k, mm, addr)
    if pmdp is None:
        return None
    pmd = mem.entry(k, pmdp)
    k.point("gup_pmd_range: PMD read", pmd=hex(pmd))
    if pmd == 0 or k.pmd_trans_splitting(pmd):
        return None
    if pt.pmd_trans_huge(pmd):
        return k.gup_huge_pmd(pmd, addr, nr, write)
    return _gup_pte_range(k, pmd, addr, nr, write)


def _gup_pte_range(k, pmd, addr, nr, write):
    """Mirrors x86 ``gup_pte_range()``: pin mapped user pages until the first that is not."""
    i0 = int(pt.pte_index(addr))
    entries = k.machine.pgtables.table(mem.pte_table_of(k, pmd))[i0:i0 + nr]
    need = np.uint64(pt._PAGE_PRESENT | pt._PAGE_USER | (pt._PAGE_RW if write else 0))
    ok = (entries & need) == need
    n = len(ok) if ok.all() else int(np.argmin(ok))
    if n == 0:
        return None
    pages = pt.pte_pfn(entries[:n])
    k.get_page(pages)
    return pages


# ------------------------------------------------------------ splitting PMDs

@replaces
def pmd_trans_splitting(k, pmd):
    """Mirrors x86 ``pmd_trans_splitting()``: is ``_PAGE_SPLITTING`` set? (Per entry for an array.)"""
    return pt.pmd_trans_splitting(pmd) if np.ndim(pmd) else bool(pt.pmd_trans_splitting(pmd))


@replaces
def pmdp_splitting_flush(k, vma, address, pmdp):
    """Mirrors x86 ``pmdp_splitting_flush()``: set ``_PAGE_SPLITTING``, flush the TLB range.

    The PMD stays present and huge.  The flush exists "only to serialize
    against gup-fast": its IPI cannot be taken by a CPU running gup-fast
    with interrupts off, so when the flush returns no gup-fast still holds a
    stale view of this PMD.
    """
    mem.set_entry(k, pmdp, pt.set_bits(mem.entry(k, pmdp), pt._PAGE_SPLITTING))
    k.point("pmdp_splitting_flush: _PAGE_SPLITTING set", pid=vma.mm.pid)
    k.machine.smp.flush_tlb_range(k, "pmdp_splitting_flush")


@replaces
def wait_split_huge_page(k, anon_vma, pmdp):
    """Mirrors ``wait_split_huge_page()``: take and drop the anon_vma lock the splitter holds."""
    key = ("anon_vma", anon_vma.root.id)
    k.machine.smp.lock(k, key, "wait_split_huge_page: anon_vma_lock_write")
    k.machine.smp.unlock(k, key)
    if pt.pmd_trans_huge(mem.entry(k, pmdp)):
        raise VMBug("wait_split_huge_page: PMD still huge after the split finished")


def page_check_address_pmd(k, page, mm, address, splitting):
    """Mirrors ``page_check_address_pmd()``: the PMD slot mapping THP ``page`` at ``address``.

    ``splitting`` False: only a PMD not yet marked (``..._NOTSPLITTING_FLAG``);
    True: only a marked one (``..._SPLITTING_FLAG``).
    """
    if address & ~HPAGE_PMD_MASK:
        return None
    pmdp = mem.pmd_offset(k, mm, address)
    if pmdp is None:
        return None
    pmd = mem.entry(k, pmdp)
    if not pt.pmd_trans_huge(pmd) or int(pt.pmd_pfn(pmd)) != page:
        return None
    if bool(pt.pmd_trans_splitting(pmd)) != splitting:
        return None
    return pmdp


# ------------------------------------------------------------ old split_huge_page()

@replaces
def split_huge_page_to_list(k, page, list=None):
    """Mirrors ``split_huge_page_to_list()`` (v3.14): never fails while the THP is mapped.

    Returns 0, or 1 when the page is no longer anon-mapped
    (``page_get_anon_vma()`` failed) -- the only way it does not split.
    """
    if not k.PageAnon(page):
        raise VMBug(dump_page(k.mem_map, page, "split_huge_page: BUG_ON(!PageAnon(page))"))
    if k.mem_map["_mapcount"][page] < 0:  # page_get_anon_vma(): !page_mapped(page)
        return 1
    anon_vma = k.machine.anon_vma_of(page)
    key = ("anon_vma", anon_vma.root.id)
    k.machine.smp.lock(k, key, "split_huge_page: anon_vma_lock_write")
    k.point("split_huge_page: anon_vma_lock_write, anon_vma locked")
    try:
        if not PageCompound(k.mem_map, page):
            return 0
        k.__split_huge_page(page, anon_vma, list)
        k.count_vm_event(k.THP_SPLIT)
    finally:
        k.machine.smp.unlock(k, key)
    k.point("split_huge_page: done")
    return 0


@replaces
def split_huge_page(k, page):
    """Mirrors ``split_huge_page()``: ``split_huge_page_to_list(page, NULL)``."""
    return k.split_huge_page_to_list(page, None)


@replaces
def __split_huge_page(k, page, anon_vma, list):
    """Mirrors ``__split_huge_page()``: mark every PMD, split the refcount, map with PTEs."""
    mapcount = 0
    for vma, addr in rmap_walk_vmas(k, page):
        mapcount += k.__split_huge_page_splitting(page, vma, addr)
    if mapcount != k.page_mapcount(page):
        raise VMBug(dump_page(k.mem_map, page, f"__split_huge_page: found {mapcount} PMDs, "
                                               f"mapcount says {k.page_mapcount(page)}"))
    k.__split_huge_page_refcount(page, list)
    mapcount2 = 0
    for vma, addr in rmap_walk_vmas(k, page):
        mapcount2 += k.__split_huge_page_map(page, vma, addr)
    if mapcount != mapcount2:
        raise VMBug(f"__split_huge_page: mapcount {mapcount} mapcount2 {mapcount2}")


@replaces
def __split_huge_page_splitting(k, page, vma, address):
    """Mirrors ``__split_huge_page_splitting()``: phase 1, mark one PMD ``_PAGE_SPLITTING``."""
    pmdp = page_check_address_pmd(k, page, vma.mm, address, splitting=False)
    if pmdp is None:
        return 0
    k.point("__split_huge_page_splitting: huge PMD found", pid=vma.mm.pid, address=hex(address))
    k.pmdp_splitting_flush(vma, address, pmdp)
    return 1


@replaces
def __split_huge_page_refcount(k, page, list):
    """Mirrors ``__split_huge_page_refcount()`` (v3.14): phase 2, give each tail its counts.

    Under ``zone->lru_lock`` (interrupts off) and ``compound_lock``, for every
    tail i: ``_count += pm(head) + pins_i + 1`` and ``_mapcount :=
    head._mapcount``; then head ``_count -= Σ pins`` and the page stops being
    compound; finally ``put_page()`` on every tail drops the "+1" (freeing
    tails nobody maps or pins).
    """
    mm = k.mem_map
    smp = k.machine.smp
    smp.lock(k, LRU_LOCK, "__split_huge_page_refcount: spin_lock_irq(&zone->lru_lock)", irq=True)
    smp.lock(k, ("compound_lock", page), "__split_huge_page_refcount: compound_lock")
    tails = np.arange(page + 1, page + HPAGE_PMD_NR, dtype=np.int64)
    if (mm["_count"][tails] != 0).any():
        raise VMBug(dump_page(mm, int(tails[mm["_count"][tails] != 0][0]), "tail _count != 0"))
    pins = mm["_mapcount"][tails] + 1
    k.point("__split_huge_page_refcount: tail pins read", pins=int(pins.sum()))
    tail_count = int(pins.sum())
    mm["_count"][tails] += mm["_mapcount"][page] + 1 + pins + 1
    mm["_mapcount"][tails] = mm["_mapcount"][page]
    tails_become_pages(mm, page, tails)
    head_stops_being_compound(k, page, tail_count)
    k.point("__split_huge_page_refcount: counts redistributed")
    smp.unlock(k, ("compound_lock", page))
    smp.unlock(k, LRU_LOCK, irq=True)
    k.put_page(tails)
    k.point("__split_huge_page_refcount: unlocked, tails' +1 put")


def tails_become_pages(mem_map, page, tails):
    """The flag, mapping and index hand-over of ``__split_huge_page_refcount()`` (v3.14 and v1).

    Tails drop ``PG_tail`` and their head pointer, copy the head's
    referenced/swapbacked/mlocked/uptodate/active/unevictable flags, become
    dirty and join the LRU, and take the head's ``mapping`` and ``index + i``.
    """
    keep = np.uint32((1 << PG.referenced) | (1 << PG.swapbacked) | (1 << PG.mlocked)
                     | (1 << PG.uptodate) | (1 << PG.active) | (1 << PG.unevictable))
    mem_map["flags"][tails] = (mem_map["flags"][page] & keep) | np.uint32((1 << PG.dirty) | (1 << PG.lru))
    if (mem_map["mapping"][tails] != 0).any():
        raise VMBug("__split_huge_page_refcount: tail mapping not NULL")
    mem_map["mapping"][tails] = mem_map["mapping"][page]
    mem_map["index"][tails] = mem_map["index"][page] + np.arange(1, HPAGE_PMD_NR)
    mem_map["first_page"][tails] = -1


def head_stops_being_compound(k, page, moved):
    """The head's half of ``__split_huge_page_refcount()`` (v3.14 and v1).

    The head gives up the ``moved`` references now held by the tails, the THP
    leaves ``nr_anon_transparent_hugepages``, and ``ClearPageCompound()``.
    """
    mem_map = k.mem_map
    if mem_map["_count"][page] - moved <= 0:
        raise VMBug(dump_page(mem_map, page, "__split_huge_page_refcount: head _count would drop to 0"))
    mem_map["_count"][page] -= moved
    k.machine.vmstat.count("nr_anon_transparent_hugepages", -1)
    mem_map["flags"][page] &= ~np.uint32(1 << PG.head)
    mem_map["compound_order"][page + 1] = 0


@replaces
def __split_huge_page_map(k, page, vma, address):
    """Mirrors ``__split_huge_page_map()``: phase 3, turn one PMD into a table of 512 PTEs."""
    mm = vma.mm
    pmdp = page_check_address_pmd(k, page, mm, address, splitting=True)
    if pmdp is None:
        return 0
    pmd = mem.entry(k, pmdp)
    if pt.pte_write(pmd) and k.page_mapcount(page) != 1:
        raise VMBug(dump_page(k.mem_map, page, "__split_huge_page_map: writable PMD, mapcount != 1"))
    pgtable = mem.pgtable_trans_huge_withdraw(k, mm, pmdp)
    k.machine.pgtables.table(pgtable)[:] = mem.ptes_for_huge_pmd(k, vma, pmd, page)
    mem.set_entry(k, pmdp, pt.clear_bits(pmd, pt._PAGE_PRESENT))  # pmdp_invalidate()
    k.point("__split_huge_page_map: PTEs filled, pmdp_invalidate", pid=mm.pid, address=hex(address))
    k.machine.smp.flush_tlb_range(k, "pmdp_invalidate")
    mem.set_entry(k, pmdp, pt.mk_table_entry(pgtable))  # pmd_populate()
    k.point("__split_huge_page_map: pmd_populate, PTE table in", pid=mm.pid, address=hex(address))
    return 1


@replaces
def split_huge_page_pmd(k, vma, address, pmdp):
    """Mirrors ``split_huge_page_pmd()``/``__split_huge_page_pmd()`` (v3.14).

    Despite its name it splits the whole THP (``split_huge_page()``), in
    every process -- there is no way to split just one PMD.
    """
    mem.check_pmd_arg(pmdp)
    while pt.pmd_trans_huge(mem.entry(k, pmdp)):
        page = int(pt.pmd_pfn(mem.entry(k, pmdp)))
        k.get_page(page)
        k.split_huge_page(page)
        k.put_page(page)


@replaces
def split_huge_page_address(k, vma, address):
    """Mirrors ``split_huge_page_address()``: split the huge PMD (if any) at ``address``."""
    pmdp = mem.pmd_offset(k, vma.mm, address & HPAGE_PMD_MASK)
    if pmdp is not None and pt.pmd_trans_huge(mem.entry(k, pmdp)):
        k.split_pmd(vma, pmdp, address)


@replaces
def split_pmd(k, vma, pmdp, address):
    """What the call sites (zap, mprotect, VMA boundaries, migration...) call to split a PMD.

    A thplab-only name: ``split_huge_page_pmd(vma, address, pmd)`` before
    patch 03, ``split_huge_pmd(vma, pmd, address)`` from patch 03 on --
    patch 03 is exactly this change at every call site.
    """
    k.split_huge_page_pmd(vma, address, pmdp)


# ------------------------------------------------------------ users of FOLL_SPLIT and futex

@replaces
def do_move_page_to_node_array(k, mm, addresses, node):
    """Mirrors ``do_move_page_to_node_array()`` (v3.16 mm/migrate.c#L1223), for ``move_pages(2)``.

    Per address: no VMA gives ``-EFAULT``; ``follow_page(FOLL_GET |
    FOLL_SPLIT)`` finding no page (never touched) gives ``-ENOENT``; a THP
    is split (whole, never fails) and its 4 KiB subpage migrated.  Returns
    the status array.
    """
    from ..migrate import migrate_one

    status = []
    for address in addresses:
        vma = mm.find_vma(address)
        if vma is None:
            status.append(-EFAULT)
            continue
        pages = k.follow_page_mask(vma, address, FOLL_GET | FOLL_SPLIT, 1)
        if pages is None:
            status.append(-ENOENT)
            continue
        status.append(migrate_one(k, int(pages[0]), node))
    return status


def futex_pin_page(k, mm, address, rw):
    """The pin that starts ``get_futex_key()`` (v3.16 kernel/futex.c#L423, kept by patch 09).

    thplab's name for the first lines of the kernel function, shared by the
    old and the patched versions.  The futex word is pinned *for writing*
    first, whatever the operation: on a page shared after ``fork()`` that is
    a write fault, so the THP is copied (``thp_fault_alloc`` +1).  Only a
    ``VERIFY_READ`` caller (FUTEX_WAIT, FUTEX_WAKE) whose write pin fails with
    ``-EFAULT`` retries read-only.  Returns ``(page, ro)`` or ``(-errno, ro)``.
    """
    from ..gup import get_user_pages_fast

    try:
        return int(get_user_pages_fast(k, mm, address, 1, write=True)[0]), False
    except Segfault:
        if rw != VERIFY_READ:
            return -EFAULT, False
    try:
        return int(get_user_pages_fast(k, mm, address, 1, write=False)[0]), True
    except Segfault:
        return -EFAULT, True


def futex_key_of(k, mm, address, page_head, ro, where="get_futex_key: lock_page(head), head locked"):
    """The end of ``get_futex_key()``: lock the head, read the key (v3.16 kernel/futex.c#L472-L527).

    A read-only pin on an anonymous page gives ``-EFAULT``: such a page never
    changes, so the kernel refuses to wait on it.  Drops the caller's
    reference on ``page_head`` and returns the key ``(pid, address)`` or
    ``-EFAULT``.
    """
    smp = k.machine.smp
    smp.lock(k, ("page_lock", page_head), "get_futex_key: lock_page")
    k.point(where, head=page_head)
    key = -EFAULT if ro and k.PageAnon(page_head) else (mm.pid, address)
    smp.unlock(k, ("page_lock", page_head))
    k.put_page(page_head)
    return key


@replaces
def get_futex_key(k, mm, address, rw=VERIFY_READ):
    """Mirrors ``get_futex_key()`` (v3.16 kernel/futex.c#L389) for a shared futex on anon memory.

    The futex word must be 4-byte aligned (else ``-EINVAL``); the key names
    its page.  The key needs the *head* page stable.  A GUP pin on a tail
    does not stop a split from running, so with interrupts off (holding up
    the split's IPI) it re-pins with ``__get_user_pages_fast()`` and swaps
    the tail pin for a head pin (a5b338f2b0b1, v3.1).  Returns the key
    ``(mm pid, page address)`` or a negative errno.
    """
    from ..gup import __get_user_pages_fast
    from ..smp import what_taken

    if address % 4:
        return -EINVAL
    address -= address % PAGE_SIZE
    smp = k.machine.smp
    while True:
        page, ro = futex_pin_page(k, mm, address, rw)
        if page < 0:
            return page
        page_head = page
        if PageTail(k.mem_map, page):
            k.put_page(page)
            smp.local_irq_disable()
            k.point("get_futex_key: tail page; interrupts off, re-pin and take the head")
            got = __get_user_pages_fast(k, mm, address, 1, write=not ro)
            if got is not None and len(got):
                page = int(got[0])
                page_head = int(compound_head(k.mem_map, page))
                if page != page_head:
                    k.get_page(page_head)
                    k.put_page(page)
                taken = smp.local_irq_enable()
                if taken:
                    k.point(f"get_futex_key: local_irq_enable; {what_taken(taken)}")
            else:
                taken = smp.local_irq_enable()
                k.point("get_futex_key: re-pin failed; local_irq_enable" +
                        (f", {what_taken(taken)}" if taken else "") + "; start again")
                continue
        break
    return futex_key_of(k, mm, address, page_head, ro)


# ------------------------------------------------------------ reclaim

@replaces
def drop_slab(k):
    """Mirrors ``drop_slab()`` (mm/vmscan.c), what ``echo 2 > /proc/sys/vm/drop_caches`` runs.

    It asks every shrinker to free what it can.  thplab models no shrinker
    before v4.5's deferred split queue, so here it does nothing.
    """


# ------------------------------------------------------------ accounting identity

@replaces
def check_refcounts(k, thps):
    """The old scheme's identities, for the invariant checker.

    Per THP: ``head._count == pm(head) + Σ tail pins + head pins`` where
    ``pm(head)`` = PMD mappings and ``pm(tail)`` = pins on that tail; no
    THP is ever mapped by PTEs.  ``thps`` yields every THP of memory, a stretch
    at a time (:class:`thplab.invariants.ThpBlocks`, a row per THP).  Returns a
    list of problems (empty = fine).
    """
    problems = {}
    for t in thps:
        if t.pte.any():
            problems.setdefault("pte", "a THP subpage is mapped by a PTE, impossible in this kernel")
        if (t.mapcount[:, 0] + 1 != t.pmd).any():
            problems.setdefault("head", "head _mapcount + 1 != number of PMDs mapping it")
        if (t.mapcount[:, 1:] + 1 != t.pins[:, 1:]).any():
            problems.setdefault("tail", "tail _mapcount + 1 != pins on that tail")
        # int32 sums wrap as the atomic_t _count does
        wrong = t.count[:, 0] != t.pmd + t.pins.sum(axis=1, dtype=np.int32)
        if wrong.any():
            i = int(np.argmax(wrong))
            problems.setdefault("count", f"head {t.heads[i]:#x}: _count {t.count[i, 0]} != "
                                         "PMD maps + tail pins + head pins")
        if t.count[:, 1:].any():
            problems.setdefault("tail count", "a tail's _count is not 0")
    return list(problems.values())
