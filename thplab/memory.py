"""Page tables of a process: allocation, walk, fault, zap, copy and protection change.

Mirrors the level-independent parts of ``mm/memory.c``, ``mm/mprotect.c`` and
``mm/pgtable-generic.c`` (v3.14).  Every step whose behaviour the RFC series
changes is a call into the kernel table ``k`` (``k.put_page``,
``k.zap_huge_pmd``, ``k.split_pmd``...), so this code runs unchanged at every
level.  Work on the entries of one table is a numpy operation, never a loop.
"""

import numpy as np

from . import pgtable as pt
from .errors import BadArgument, VMBug
from .page_flags import PG, PAGE_MAPPING_ANON, Use, compound_head
from .params import (HPAGE_PMD_MASK, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SHIFT, PAGE_SIZE,
                     PGDIR_SHIFT, PMD_SHIFT, PUD_SHIFT, VM_EXEC, VM_HUGEPAGE, VM_NOHUGEPAGE, VM_READ,
                     VM_WRITE)

VM_FAULT_OOM = 0x0001
VM_FAULT_FALLBACK = 0x0800

_LEVEL_PTE, _LEVEL_PMD, _LEVEL_PUD, _LEVEL_PGD = 1, 2, 3, 4


def vm_get_page_prot(vm_flags):
    """Mirrors ``vm_get_page_prot()`` for a private mapping: ``protection_map[]``."""
    return pt.PROTECTION_MAP[vm_flags & (VM_READ | VM_WRITE | VM_EXEC)]


def transparent_hugepage_enabled(k, vma):
    """Mirrors ``transparent_hugepage_enabled()`` for the sysfs ``enabled`` mode."""
    mode = k.machine.thp_enabled
    # v4.5's series marked THP BROKEN from its patch 11 to 35 (the v4.5 stack's steps 2-6).
    if vma.vm_flags & VM_NOHUGEPAGE or mode == "never" or k.caps.get("thp_broken"):
        return False
    return mode == "always" or bool(vma.vm_flags & VM_HUGEPAGE)


# ---------------------------------------------------------------- table pages

def _table_page_alloc(k, level):
    m = k.machine
    pfn = m.allocator.alloc_pages(0, Use.pgtable)
    m.pgtables.add(pfn, level)
    return pfn


def _table_page_free(k, pfn):
    m = k.machine
    m.pgtables.remove(pfn)
    m.mem_map["_count"][pfn] -= 1
    m.allocator.free_pages([pfn])


def pgd_alloc(k):
    """Mirrors ``pgd_alloc()``: an empty top-level table for a new mm."""
    return _table_page_alloc(k, _LEVEL_PGD)


def pte_alloc_one(k, mm):
    """Mirrors ``pte_alloc_one()``: a zeroed PTE-table page (``NR_PAGETABLE`` +1)."""
    pfn = _table_page_alloc(k, _LEVEL_PTE)
    k.machine.vmstat.count("nr_page_table_pages")
    return pfn


def pte_free(k, mm, pfn):
    """Mirrors ``pte_free()``."""
    _table_page_free(k, pfn)
    k.machine.vmstat.count("nr_page_table_pages", -1)


def pte_alloc_many(k, mm, nr):
    """``nr`` calls of :func:`pte_alloc_one` in one: the same pages, in the same order.

    Raises :class:`~thplab.errors.OutOfMemory` and changes nothing unless all can be had.
    """
    return pte_tables_in_use(k, k.machine.allocator.alloc_pages_bulk(0, nr, Use.pgtable))


def pte_tables_in_use(k, pfns):
    """Start using freshly allocated pages ``pfns`` as PTE tables (``NR_PAGETABLE`` += their number)."""
    k.machine.pgtables.add_many(pfns, _LEVEL_PTE)
    k.machine.vmstat.count("nr_page_table_pages", len(pfns))
    return pfns


def pte_free_many(k, mm, pfns):
    """:func:`pte_free` for an array of PTE-table pages, handed back in one batch."""
    m = k.machine
    pfns = np.asarray(pfns, dtype=np.int64)
    if not len(pfns):
        return
    m.pgtables.remove_many(pfns)
    m.mem_map["_count"][pfns] -= 1
    m.allocator.free_pages(pfns)
    m.vmstat.count("nr_page_table_pages", -len(pfns))


def check_pmd_arg(slot):
    """Refuse a ``pmd`` argument that is not a page-table slot, naming both argument orders.

    Patch 03 swapped ``pmd`` and ``address``; an address in the ``pmd`` place
    is the mistake this catches.
    """
    if not (isinstance(slot, tuple) and len(slot) == 2 and all(isinstance(x, (int, np.integer)) for x in slot)):
        raise BadArgument(f"pmd must be a PMD slot (table pfn, index) as mem.pmd_offset() returns, not "
                          f"{hex(slot) if isinstance(slot, int) else repr(slot)}; check the argument order: "
                          "split_huge_page_pmd(vma, address, pmd) up to patch 02, "
                          "split_huge_pmd(vma, pmd, address) from patch 03 on")


def entry(k, slot):
    """The value of a page-table slot ``(table_pfn, index)``."""
    tpfn, idx = slot
    return int(k.machine.pgtables.table(tpfn)[idx])


def set_entry(k, slot, value):
    """Store ``value`` in slot ``(table_pfn, index)`` (``set_pte_at``/``set_pmd_at``)."""
    tpfn, idx = slot
    k.machine.pgtables.table(tpfn)[idx] = np.uint64(value)


def _descend(k, slot, level, alloc):
    e = entry(k, slot)
    if e == 0:
        if not alloc:
            return None
        tpfn = _table_page_alloc(k, level)
        set_entry(k, slot, pt.mk_table_entry(tpfn))
        return tpfn
    return int(pt.pte_pfn(e))


def pmd_offset(k, mm, address, alloc=False):
    """Walk PGD -> PUD -> PMD: the PMD slot of ``address``, allocating tables if asked.

    Mirrors ``pgd_offset()``/``pud_alloc()``/``pmd_alloc()``.  Returns
    ``(pmd_table_pfn, index)`` or None when a level is missing.
    """
    pud_t = _descend(k, (mm.pgd, int(pt.pgd_index(address))), _LEVEL_PUD, alloc)
    if pud_t is None:
        return None
    pmd_t = _descend(k, (pud_t, int(pt.pud_index(address))), _LEVEL_PMD, alloc)
    if pmd_t is None:
        return None
    return (pmd_t, int(pt.pmd_index(address)))


def pte_table_of(k, pmd_value):
    """The PTE-table page a non-huge, present PMD points to."""
    return int(pt.pte_pfn(pmd_value))


def __pte_alloc(k, mm, pmdp):
    """Mirrors ``__pte_alloc()``: give an empty PMD a PTE table.

    SIMPLIFICATION: v3.16 also waits here (``wait_split_huge_page()``) when it
    finds the PMD splitting; thplab's callers meet a splitting PMD earlier, in
    ``__handle_mm_fault()``, and retry.
    """
    new = pte_alloc_one(k, mm)
    ptl = ("ptl", pmdp[0])
    k.machine.smp.lock(k, ptl, "__pte_alloc: pmd_lock")
    if entry(k, pmdp) != 0:  # populated meanwhile (a racing fault or split)
        k.machine.smp.unlock(k, ptl)
        pte_free(k, mm, new)
        return
    mm.nr_ptes += 1
    set_entry(k, pmdp, pt.mk_table_entry(new))
    k.machine.smp.unlock(k, ptl)


def pgtable_trans_huge_deposit(k, mm, pmdp, pgtable):
    """Mirrors ``pgtable_trans_huge_deposit()``: park a PTE table beside a huge PMD.

    Batched: with an array of tables (for PMDs of the same PMD table) all are
    parked, in order.
    """
    tables = np.asarray(pgtable, dtype=np.int64).tolist() if np.ndim(pgtable) else [int(pgtable)]
    if tables:  # an empty batch deposits nothing (and leaves no empty list behind)
        mm.pmd_huge_pte.setdefault(pmdp[0], []).extend(tables)


def pgtable_trans_huge_withdraw(k, mm, pmdp):
    """Mirrors ``pgtable_trans_huge_withdraw()``: take back the newest deposited table.

    Batched: when ``pmdp``'s index is an array, one table per PMD, the newest
    first (what as many single withdrawals give), as an array.
    """
    deposited = mm.pmd_huge_pte.get(pmdp[0])
    nr = len(pmdp[1]) if np.ndim(pmdp[1]) else 1
    if not deposited or len(deposited) < nr:
        raise VMBug(f"pgtable_trans_huge_withdraw: nothing deposited for PMD table {pmdp[0]:#x}")
    if np.ndim(pmdp[1]):
        taken = np.array(deposited[len(deposited) - nr:][::-1], dtype=np.int64)
        del deposited[len(deposited) - nr:]
    else:
        taken = deposited.pop()
    if not deposited:
        del mm.pmd_huge_pte[pmdp[0]]
    return taken


# ---------------------------------------------------------------- rmap

def anon_vma_prepare(k, vma):
    """Mirrors ``anon_vma_prepare()``: give the VMA an anon_vma on its first fault."""
    if vma.anon_vma is None:
        av = k.machine.new_anon_vma()
        av.root = av
        vma.anon_vma = av
        vma.anon_vma_chain.append(av)
        av.vmas.append(vma)


def page_add_new_anon_rmap(k, page, vma, address):
    """Mirrors ``page_add_new_anon_rmap()``: first mapping of a new anon page.

    ``_mapcount`` raw 0, ``mapping`` = anon_vma | ``PAGE_MAPPING_ANON``,
    ``index`` = linear page index, on the LRU; a THP head also moves
    ``nr_anon_transparent_hugepages``.
    Vectorized: ``page`` and ``address`` may be arrays of pages and their addresses.
    """
    mm = k.mem_map
    mm["_mapcount"][page] = 0
    mm["mapping"][page] = vma.anon_vma.id << 2 | PAGE_MAPPING_ANON
    mm["index"][page] = vma.linear_page_index(address)
    mm["flags"][page] |= np.uint32((1 << PG.swapbacked) | (1 << PG.uptodate) | (1 << PG.lru))
    heads = np.count_nonzero(mm["flags"][page] & np.uint32(1 << PG.head))
    if heads:
        k.machine.vmstat.count("nr_anon_transparent_hugepages", int(heads))


def rmap_walk_vmas(k, page):
    """The VMAs an rmap walk of anon page ``page`` visits (``anon_vma_interval_tree_foreach``).

    Yields ``(vma, address)`` where the page's index falls inside the VMA.
    SIMPLIFICATION: a tail's index is its head's plus its place in the THP
    (4.5.7's ``page_to_pgoff()``); how the RFC computed it for a PTE-mapped
    tail is not archived.
    """
    av = k.machine.anon_vma_of(page)
    head = int(compound_head(k.mem_map, page))
    index = int(k.mem_map["index"][head]) + int(page) - head
    for vma in list(av.vmas):
        address = vma.vma_address(index)
        if vma.vm_start <= address < vma.vm_end:
            yield vma, address


def page_dup_rmap(k, pages):
    """Mirrors ``page_dup_rmap()`` (fork): one more mapping of each page."""
    pages = np.asarray(pages)
    if pages.ndim:
        np.add.at(k.mem_map["_mapcount"], pages, 1)
    else:
        k.mem_map["_mapcount"][pages] += 1


# ---------------------------------------------------------------- faults

def do_anonymous_page(k, mm, vma, address, ptep, write):
    """Mirrors ``do_anonymous_page()``: a fresh 4 KiB page behind an empty PTE.

    SIMPLIFICATION: no zero page.  v3.14 maps the shared zero page on a read
    fault and allocates on the first write; thplab allocates at once, as the
    kernel does when the zero page is not used.

    Batched (thplab, for :func:`populate_range`): ``address`` may be an array
    of addresses whose PTEs are none in one PTE table, ``ptep`` =
    ``(table, their indices)``: the pages one fault per address would get, in
    that order.  When memory runs out part-way, the pages before stay mapped
    and :class:`~thplab.errors.OutOfMemory` is raised, as at that fault.
    """
    anon_vma_prepare(k, vma)
    alloc = k.machine.allocator
    if not np.ndim(address):
        pages = alloc.alloc_pages(0, Use.anon)
    else:
        nr = min(len(address), alloc.nr_free_pages)
        if nr < len(address):
            if nr:
                do_anonymous_page(k, mm, vma, address[:nr], (ptep[0], ptep[1][:nr]), write)
            alloc.alloc_pages(0, Use.anon)  # raises OutOfMemory
        pages = alloc.alloc_pages_bulk(0, len(address), Use.anon)
    e = pt.mk_pte(pages, vm_get_page_prot(vma.vm_flags))
    if vma.vm_flags & VM_WRITE:
        e = pt.set_bits(e, pt._PAGE_RW | pt._PAGE_DIRTY)
    mm.anon_rss += int(np.size(pages))
    page_add_new_anon_rmap(k, pages, vma, address)
    k.machine.pgtables.table(ptep[0])[ptep[1]] = e
    return 0


def do_wp_page(k, mm, vma, address, ptep, orig_pte):
    """Mirrors ``do_wp_page()``: write to a write-protected PTE in a writable VMA.

    Reuse the page if the level's ``reuse_swap_page()`` says this is its only
    mapping, otherwise copy it to a new page.
    """
    old = int(pt.pte_pfn(orig_pte))
    if k.PageAnon(old) and k.reuse_swap_page(old):
        set_entry(k, ptep, pt.set_bits(orig_pte, pt._PAGE_RW | pt._PAGE_DIRTY | pt._PAGE_ACCESSED))
        return 0
    anon_vma_prepare(k, vma)
    new = k.machine.allocator.alloc_pages(0, Use.anon)
    if not k.PageAnon(old):
        mm.file_rss -= 1
        mm.anon_rss += 1
    e = pt.set_bits(pt.mk_pte(new, vm_get_page_prot(vma.vm_flags)), pt._PAGE_RW | pt._PAGE_DIRTY)
    page_add_new_anon_rmap(k, new, vma, address)
    set_entry(k, ptep, e)
    k.page_remove_rmap(np.array([old]))
    k.put_page(np.array([old]))
    return 0


def handle_mm_fault(k, mm, vma, address, write):
    """Mirrors ``handle_mm_fault()``: the level's ``__handle_mm_fault()``."""
    return k.__handle_mm_fault(mm, vma, address, write)


def handle_pte_fault(k, mm, vma, address, pmdp, write):
    """Mirrors ``handle_pte_fault()`` for anonymous memory."""
    ptep = (pte_table_of(k, entry(k, pmdp)), int(pt.pte_index(address)))
    e = entry(k, ptep)
    if not pt.pte_present(e):
        return do_anonymous_page(k, mm, vma, address, ptep, write)
    if write and not pt.pte_write(e):
        return do_wp_page(k, mm, vma, address, ptep, e)
    bits = pt._PAGE_ACCESSED | (pt._PAGE_DIRTY if write else 0)
    set_entry(k, ptep, pt.set_bits(e, bits))
    return 0


def populate_range(k, mm, vma, start, end, write, fault):
    """Access every 4 KiB page of ``[start, end)`` (inside ``vma``) in order, faulting what misses.

    ``fault(address)`` takes one fault the way the machine does.  Where the
    outcome of a run of faults is known before they are taken, they are taken
    as a batch with the same result: a PTE table's none PTEs all go to one
    :func:`do_anonymous_page`, and -- with no tracer attached, so that a
    step-through still sees every fault -- consecutive empty, THP-sized PMDs
    of a THP-enabled VMA go to one ``k.do_huge_pmd_anonymous_page``.
    """
    bases = np.arange(start & HPAGE_PMD_MASK, end, HPAGE_PMD_SIZE, dtype=np.int64)
    empty = np.zeros(len(bases), bool)
    if k.machine.tracer is None and transparent_hugepage_enabled(k, vma):
        pmds = np.zeros(len(bases), dtype=np.uint64)
        for tpfn, i0, i1, ubase in pmd_tables(k, mm, int(bases[0]), int(bases[-1]) + HPAGE_PMD_SIZE):
            at = (ubase + (i0 << PMD_SHIFT) - int(bases[0])) >> PMD_SHIFT
            pmds[at:at + i1 - i0] = k.machine.pgtables.table(tpfn)[i0:i1]
        empty = (bases >= vma.vm_start) & (bases + HPAGE_PMD_SIZE <= vma.vm_end) & (pmds == 0)
    i = 0
    while i < len(bases):
        if empty[i]:
            j = i + 1  # the run of empty PMDs within this PMD table (1 GiB)
            while j < len(bases) and empty[j] and bases[j] >> PUD_SHIFT == bases[i] >> PUD_SHIFT:
                j += 1
            pmd_table = pmd_offset(k, mm, int(bases[i]), alloc=True)[0]
            idx = (bases[i:j] >> PMD_SHIFT) & (HPAGE_PMD_NR - 1)
            done = len(k.do_huge_pmd_anonymous_page(mm, vma, bases[i:j], (pmd_table, idx), write))
            i += done
            if i == j:
                continue
        # the first region the batch could not map is faulted alone (which falls back)
        _populate_pmd(k, mm, vma, max(int(bases[i]), start),
                      min(int(bases[i]) + HPAGE_PMD_SIZE, end), write, fault)
        i += 1


def _populate_pmd(k, mm, vma, lo, hi, write, fault):
    """Fault in what misses in ``[lo, hi)`` of one 2 MiB region, in address order."""
    pages = np.arange(lo, hi, PAGE_SIZE, dtype=np.int64)
    first = 0
    while True:
        w = walk(k, mm, pages[first:])
        misses = np.flatnonzero((w["level"] == 0) | (~w["writable"] if write else False))
        if not len(misses):
            return
        pmd = int(w["pmd"][misses[0]])
        if pmd and not pt.pmd_trans_huge(pmd) and w["pte"][misses[0]] == 0:
            # A PTE table: every fault up to the next missing page with a PTE
            # (a write to a read-only one) is do_anonymous_page() on a none PTE.
            none = w["pte"][misses] == 0
            run = misses[:len(misses) if none.all() else int(np.argmin(none))]
            addrs = pages[first + run]
            do_anonymous_page(k, mm, vma, addrs,
                              (pte_table_of(k, pmd), (addrs >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)), write)
        else:
            fault(int(pages[first + misses[0]]))
        first += int(misses[0])


# ---------------------------------------------------------------- zap

def zap_pte_range(k, mm, vma, pte_table, start, end):
    """Mirrors ``zap_pte_range()``: clear the PTEs of ``[start, end)``, drop their pages.

    One PTE table, one vector operation: ``page_remove_rmap()`` and
    ``put_page()`` (via the TLB gather) on every page that was mapped.
    """
    i0, i1 = int(pt.pte_index(start)), int(pt.pte_index(end - PAGE_SIZE)) + 1
    entries = k.machine.pgtables.table(pte_table)[i0:i1]
    present = pt.pte_present(entries)
    if not present.any():
        return
    pages = pt.pte_pfn(entries[present])
    entries[present] = 0
    anon = k.PageAnon(pages)
    mm.anon_rss -= int(anon.sum())
    mm.file_rss -= int((~anon).sum())
    k.page_remove_rmap(pages)
    k.put_page(pages)


def pmd_tables(k, mm, start, end):
    """The populated PMD tables under ``[start, end)``, in address order.

    A list of ``(pmd_table_pfn, i0, i1, base)``: slots ``i0 .. i1 - 1`` of
    the table hold the range, ``base`` is the address slot 0 maps.  None PGD
    and PUD entries are skipped, as the kernel's range walks skip a
    ``pgd_none_or_clear_bad()``/``pud_none_or_clear_bad()`` entry, so a walk
    costs one step per populated table, not per 2 MiB of the range.
    """
    tables = k.machine.pgtables
    last = end - 1
    pgd = tables.table(mm.pgd)
    out = []
    g0 = start >> PGDIR_SHIFT
    for g in (g0 + np.flatnonzero(pgd[g0:(last >> PGDIR_SHIFT) + 1])).tolist():
        gbase = g << PGDIR_SHIFT
        pud = tables.table(int(pt.pte_pfn(pgd[g])))
        u0 = (max(start, gbase) >> PUD_SHIFT) & 511
        u1 = (min(last, gbase + (1 << PGDIR_SHIFT) - 1) >> PUD_SHIFT) & 511
        for u in (u0 + np.flatnonzero(pud[u0:u1 + 1])).tolist():
            ubase = gbase | (u << PUD_SHIFT)
            i0 = (max(start, ubase) >> PMD_SHIFT) & 511
            i1 = ((min(last, ubase + (1 << PUD_SHIFT) - 1) >> PMD_SHIFT) & 511) + 1
            out.append((int(pt.pte_pfn(pud[u])), i0, i1, ubase))
    return out


def _populated_pmds(k, table_pfn, i0, i1, base, start, end):
    """Slots of one PMD table holding something, with their addresses clipped to the range."""
    e = k.machine.pgtables.table(table_pfn)[i0:i1]
    idx = i0 + np.flatnonzero(e)
    addr = base + (idx << PMD_SHIFT)
    return idx, addr, np.maximum(addr, start), np.minimum(addr + HPAGE_PMD_SIZE, end)


def _stable_huge(pmds):
    """Huge PMDs a batch may take: not being split (``_PAGE_SPLITTING``, levels 0-7)."""
    return pt.pmd_trans_huge(pmds) & ~pt.pmd_trans_splitting(pmds)


def _pmd_range(k, mm, vma, start, end, huge_fn, pte_fn):
    """Walk ``[start, end)`` a PMD table at a time, as ``zap_pmd_range()``/``change_pmd_range()`` do.

    A huge PMD the range only covers in part is split first (``k.split_pmd``).
    Then, in address order, each run of consecutive huge PMDs wholly inside
    the range goes to ``huge_fn(vma, (table, indices), addresses)`` at once (a
    PMD being split goes alone), and each PTE table -- also a huge PMD
    ``huge_fn`` found no longer huge -- to ``pte_fn(pte_table, lo, hi)``.
    The kernel visits the PMDs one by one in address order; a run does to
    each PMD what the kernel's loop would, and the order of the runs keeps
    the order of effects that outlive the walk (v4.5's deferred split queue).
    Splitting the partial PMDs first changes no such order: a split queues nothing.
    """
    tables = k.machine.pgtables
    for tpfn, i0, i1, base in pmd_tables(k, mm, start, end):
        idx, addr, lo, hi = _populated_pmds(k, tpfn, i0, i1, base, start, end)
        if not len(idx):
            continue
        table = tables.table(tpfn)
        huge = pt.pmd_trans_huge(table[idx])
        whole = (hi - lo) == HPAGE_PMD_SIZE
        for i, a in zip(idx[huge & ~whole].tolist(), lo[huge & ~whole].tolist()):
            k.split_pmd(vma, (tpfn, i), a)
        sel = pt.pmd_trans_huge(table[idx]) & whole
        # runs of equal `sel`, in address order
        cuts = np.flatnonzero(np.diff(sel.astype(np.int8))) + 1
        for run in np.split(np.arange(len(idx)), cuts):
            if sel[run[0]]:
                batch = _stable_huge(table[idx[run]])
                for j in run[~batch].tolist():
                    huge_fn(vma, (tpfn, idx[j:j + 1]), addr[j:j + 1])
                if batch.any():
                    huge_fn(vma, (tpfn, idx[run[batch]]), addr[run[batch]])
            e = table[idx[run]]
            ptes = (e != 0) & ~pt.pmd_trans_huge(e)
            for t, a, b in zip(pt.pte_pfn(e[ptes]).tolist(), lo[run][ptes].tolist(), hi[run][ptes].tolist()):
                pte_fn(t, a, b)


def zap_pmd_range(k, mm, vma, start, end):
    """Mirrors ``zap_pmd_range()``: whole huge PMDs are zapped, partial ones split first."""
    _pmd_range(k, mm, vma, start, end, k.zap_huge_pmd,
               lambda table, lo, hi: zap_pte_range(k, mm, vma, table, lo, hi))


def _unused(mm, starts, size):
    """Per start address: does ``[start, start + size)`` miss every VMA of ``mm``?"""
    starts = np.asarray(starts, dtype=np.int64)
    if not mm.vmas:
        return np.ones(len(starts), bool)
    vm_start = np.array([v.vm_start for v in mm.vmas], dtype=np.int64)
    vm_end = np.array([v.vm_end for v in mm.vmas], dtype=np.int64)
    # VMAs are sorted and disjoint: the first VMA ending after `start` is the only candidate.
    i = np.searchsorted(vm_end, starts, side="right")
    hit = i < len(vm_end)
    hit[hit] = vm_start[i[hit]] < starts[hit] + size
    return ~hit


def free_pgtables(k, mm, start, end):
    """Mirrors ``free_pgtables()``: free tables under ``[start, end)`` that no VMA needs.

    SIMPLIFICATION: the kernel frees between the neighbouring VMAs' floor
    and ceiling; thplab frees every PTE, PMD and PUD table whose whole span is
    outside all VMAs, which is the same set of tables.  The PTE tables of one
    PMD table are freed in one batch.
    """
    m = k.machine
    tables = m.pgtables
    pgd = tables.table(mm.pgd)
    for tpfn, i0, i1, ubase in pmd_tables(k, mm, start, end):
        table = tables.table(tpfn)
        idx = i0 + np.flatnonzero(table[i0:i1])
        e = table[idx]
        ptes = ~pt.pmd_trans_huge(e)
        ptes[ptes] = _unused(mm, ubase + (idx[ptes] << PMD_SHIFT), HPAGE_PMD_SIZE)
        if ptes.any():
            table[idx[ptes]] = 0
            pte_free_many(k, mm, pt.pte_pfn(e[ptes]))
            mm.nr_ptes -= int(ptes.sum())
        if not table.any() and _unused(mm, [ubase], 1 << PUD_SHIFT)[0] and tpfn not in mm.pmd_huge_pte:
            gbase = ubase & ~((1 << PGDIR_SHIFT) - 1)
            pud_t = int(pt.pte_pfn(pgd[gbase >> PGDIR_SHIFT]))
            set_entry(k, (pud_t, int(pt.pud_index(ubase))), 0)
            _table_page_free(k, tpfn)
    lo = start >> PGDIR_SHIFT
    for g in (lo + np.flatnonzero(pgd[lo:((end - 1) >> PGDIR_SHIFT) + 1])).tolist():
        pud_t = int(pt.pte_pfn(pgd[g]))
        if not tables.table(pud_t).any() and _unused(mm, [g << PGDIR_SHIFT], 1 << PGDIR_SHIFT)[0]:
            set_entry(k, (mm.pgd, g), 0)
            _table_page_free(k, pud_t)


def free_all_pgtables(k, mm):
    """Free every table of an mm that has no VMAs left, and its PGD (end of ``exit_mmap()``).

    Gathered level by level, then handed back to the allocator in one batch.
    """
    m = k.machine
    tables = m.pgtables
    pgd = tables.table(mm.pgd)
    pud_t = pt.pte_pfn(pgd[pgd != 0])
    pud = tables.entries[tables.row_of[pud_t]]
    pmd_t = pt.pte_pfn(pud[pud != 0])
    pmd = tables.entries[tables.row_of[pmd_t]]
    pmd = pmd[pmd != 0]
    if pt.pmd_trans_huge(pmd).any():
        raise VMBug(f"free_all_pgtables: huge PMD left in pid {mm.pid}")
    if set(pmd_t.tolist()) & set(mm.pmd_huge_pte):
        raise VMBug(f"free_all_pgtables: deposited tables left in pid {mm.pid}")
    pte_t = pt.pte_pfn(pmd)
    mm.nr_ptes -= len(pte_t)
    m.vmstat.count("nr_page_table_pages", -len(pte_t))
    every = np.concatenate([pte_t, pmd_t, pud_t, [mm.pgd]]).astype(np.int64)
    tables.remove_many(every)
    m.mem_map["_count"][every] -= 1
    m.allocator.free_pages(every)


# ---------------------------------------------------------------- fork

def copy_pte_range(k, dst_mm, src_mm, dst_pmdp, src_pte_table, vma, start, end):
    """Mirrors ``copy_pte_range()``/``copy_one_pte()``: share every mapped page with the child.

    Each page gets ``get_page()`` and ``page_dup_rmap()``; a writable entry is
    write-protected in both (COW), and the child's copy is made old.
    """
    if entry(k, dst_pmdp) == 0:
        __pte_alloc(k, dst_mm, dst_pmdp)
    i0, i1 = int(pt.pte_index(start)), int(pt.pte_index(end - PAGE_SIZE)) + 1
    src = k.machine.pgtables.table(src_pte_table)[i0:i1]
    dst = k.machine.pgtables.table(pte_table_of(k, entry(k, dst_pmdp)))[i0:i1]
    present = pt.pte_present(src)
    if not present.any():
        return
    pages = pt.pte_pfn(src[present])
    k.get_page(pages)
    page_dup_rmap(k, pages)
    src[present] = pt.clear_bits(src[present], pt._PAGE_RW)
    dst[present] = pt.clear_bits(src[present], pt._PAGE_ACCESSED)
    anon = k.PageAnon(pages)
    dst_mm.anon_rss += int(anon.sum())
    dst_mm.file_rss += int((~anon).sum())


def copy_page_range(k, dst_mm, src_mm, vma):
    """Mirrors ``copy_page_range()``/``copy_pmd_range()`` for one VMA.

    Address order is kept where it decides which page a table gets: each
    populated source PMD table gets its child PMD table first, then runs of
    stable huge PMDs go to one batched ``k.copy_huge_pmd``, and every other
    PMD (a PTE table, or a PMD being split) is copied alone, in between.
    """
    tables = k.machine.pgtables
    for tpfn, i0, i1, base in pmd_tables(k, src_mm, vma.vm_start, vma.vm_end):
        idx, addr, lo, hi = _populated_pmds(k, tpfn, i0, i1, base, vma.vm_start, vma.vm_end)
        if not len(idx):
            continue
        dst_t = pmd_offset(k, dst_mm, int(addr[0]), alloc=True)[0]
        batch = _stable_huge(tables.table(tpfn)[idx])
        # run boundaries: where `batch` changes, and around every single PMD
        cuts = np.flatnonzero(np.diff(batch.astype(np.int8)) != 0) + 1
        singles = np.flatnonzero(~batch)
        edges = np.unique(np.concatenate([[0, len(idx)], cuts, singles, singles + 1]))
        for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()):
            # Read the table afresh: a copy allocates tables, and the pool may have grown.
            if pt.pmd_trans_huge(tables.table(tpfn)[idx[a]]):
                ret = k.copy_huge_pmd(dst_mm, src_mm, (dst_t, idx[a:b]), (tpfn, idx[a:b]), addr[a:b], vma)
                again = a + np.flatnonzero(np.asarray(ret) != 0)
            else:
                again = [a]
            for j in np.asarray(again).tolist():
                src_e = int(tables.table(tpfn)[idx[j]])
                if src_e and not pt.pmd_trans_huge(src_e):
                    copy_pte_range(k, dst_mm, src_mm, (dst_t, int(idx[j])), pte_table_of(k, src_e),
                                   vma, int(lo[j]), int(hi[j]))


# ---------------------------------------------------------------- mprotect

def change_pte_range(k, mm, pte_table, start, end, newprot):
    """Mirrors ``change_pte_range()``: ``pte_modify()`` every mapped entry of the range."""
    i0, i1 = int(pt.pte_index(start)), int(pt.pte_index(end - PAGE_SIZE)) + 1
    entries = k.machine.pgtables.table(pte_table)[i0:i1]
    present = pt.pte_present(entries)
    entries[present] = pt.pte_modify(entries[present], newprot)


def change_protection(k, mm, vma, start, end, newprot):
    """Mirrors ``change_protection()``/``change_pmd_range()``."""
    _pmd_range(k, mm, vma, start, end,
               lambda v, pmdp, addr: k.change_huge_pmd(v, pmdp, addr, newprot),
               lambda table, lo, hi: change_pte_range(k, mm, table, lo, hi, newprot))


def ptes_for_huge_pmd(k, vma, pmd, head):
    """The 512 PTEs that replace huge PMD ``pmd`` (``__split_huge_page_map``/``__split_huge_pmd``).

    ``mk_pte(head + i, vm_page_prot)``, dirty (v3.14/v1; v4.5 moves dirty to
    the page), writable if the PMD was, old if the PMD was not young.
    """
    ptes = pt.set_bits(pt.mk_pte(np.arange(head, head + HPAGE_PMD_NR),
                                 vm_get_page_prot(vma.vm_flags)), pt._PAGE_DIRTY)
    if pt.pte_write(pmd) and vma.vm_flags & VM_WRITE:
        ptes = pt.set_bits(ptes, pt._PAGE_RW)
    if not pt.pte_young(pmd):
        ptes = pt.clear_bits(ptes, pt._PAGE_ACCESSED)
    return ptes


def vma_adjust_trans_huge(k, vma, address):
    """Mirrors ``__vma_adjust_trans_huge()``: a VMA boundary is about to move to ``address``.

    If ``address`` is not 2 MiB aligned and the VMA could hold a huge PMD
    around it, that PMD must be split first (``split_huge_page_address()``).
    """
    if address & ~HPAGE_PMD_MASK and vma.vm_start <= (address & HPAGE_PMD_MASK) \
            and (address & HPAGE_PMD_MASK) + HPAGE_PMD_SIZE <= vma.vm_end:
        k.split_huge_page_address(vma, address)


# ---------------------------------------------------------------- walk

def walk(k, mm, addresses):
    """Translate many virtual addresses at once, as the MMU would.

    Returns a dict of arrays, one element per address: ``pfn`` (-1 when not
    mapped), ``level`` (2 = mapped by a huge PMD, 1 = by a PTE, 0 = not
    mapped), ``pmd`` and ``pte`` (the entries read; 0 where absent), and
    ``writable``.
    """
    m = k.machine
    tables = m.pgtables
    a = np.atleast_1d(np.asarray(addresses, dtype=np.uint64))
    n = len(a)
    out = {"pfn": np.full(n, -1, np.int64), "level": np.zeros(n, np.int8),
           "pmd": np.zeros(n, np.uint64), "pte": np.zeros(n, np.uint64),
           "writable": np.zeros(n, bool)}
    if n <= 4:  # a fault's or a lesson's few addresses: four scalar reads each
        for j, address in enumerate(a.tolist()):
            _walk_one(tables, mm.pgd, address, out, j)
        return out

    def step(table_pfns, index, ok):
        rows = np.where(ok, tables.row_of[np.where(ok, table_pfns, 0)], -1)
        ok = ok & (rows >= 0)
        e = np.where(ok, tables.entries[np.where(ok, rows, 0), index.astype(np.int64)], 0).astype(np.uint64)
        return e, ok & (e != 0)

    ok = np.ones(n, bool)
    g, ok = step(np.full(n, mm.pgd), pt.pgd_index(a), ok)
    u, ok = step(pt.pte_pfn(g), pt.pud_index(a), ok)
    d, ok = step(pt.pte_pfn(u), pt.pmd_index(a), ok)
    out["pmd"] = np.where(ok, d, 0).astype(np.uint64)
    huge = ok & pt.pmd_trans_huge(d)
    sub = ((a >> np.uint64(PAGE_SHIFT)) & np.uint64(HPAGE_PMD_NR - 1)).astype(np.int64)
    out["pfn"][huge] = pt.pmd_pfn(d[huge]) + sub[huge]
    out["level"][huge] = 2
    out["writable"][huge] = pt.pte_write(d[huge])
    table = ok & ~huge
    e, okp = step(pt.pte_pfn(d), pt.pte_index(a), table)
    okp &= pt.pte_present(e)
    out["pte"] = np.where(table, e, 0).astype(np.uint64)
    out["pfn"][okp] = pt.pte_pfn(e[okp])
    out["level"][okp] = 1
    out["writable"][okp] = pt.pte_write(e[okp])
    return out


def _walk_one(tables, pgd, address, out, j):
    """:func:`walk` of one address, into row ``j`` of ``out``."""
    table = pgd
    for shift in (PGDIR_SHIFT, PUD_SHIFT, PMD_SHIFT, PAGE_SHIFT):
        row = tables.row_of[table]
        if row < 0:
            return
        e = int(tables.entries[row, (address >> shift) & 511])
        if shift == PMD_SHIFT:
            out["pmd"][j] = e
            if e & pt._PAGE_PSE:
                out["pfn"][j] = int(pt.pmd_pfn(e)) + ((address >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1))
                out["level"][j], out["writable"][j] = 2, bool(e & pt._PAGE_RW)
                return
        elif shift == PAGE_SHIFT:
            out["pte"][j] = e
            if e & (pt._PAGE_PRESENT | pt._PAGE_PROTNONE):
                out["pfn"][j] = int(pt.pte_pfn(e))
                out["level"][j], out["writable"][j] = 1, bool(e & pt._PAGE_RW)
            return
        if not e:
            return
        table = (e & pt.PTE_PFN_MASK) >> PAGE_SHIFT


def vm_flags_for(prot):
    """vm_flags for an anonymous private mapping with ``prot`` (``calc_vm_prot_bits``)."""
    from .params import PROT_EXEC, PROT_READ, PROT_WRITE, VM_MAYEXEC, VM_MAYREAD, VM_MAYWRITE

    flags = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if prot & PROT_READ:
        flags |= VM_READ
    if prot & PROT_WRITE:
        flags |= VM_WRITE
    if prot & PROT_EXEC:
        flags |= VM_EXEC
    return flags

