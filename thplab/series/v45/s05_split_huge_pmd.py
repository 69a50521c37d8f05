"""v4.5 step 5 (emails 29-30 of v12): split one PMD, leave the compound page whole.

``split_huge_pmd()`` now turns one PMD into a table of 512 PTEs and changes
nothing else (29/37, eef1b3ba053a): every other process keeps its mapping,
the THP stays a compound page, and the split cannot fail.  Each new PTE holds
a reference (head ``_count`` += 511: the PMD's own reference becomes one of
them) and one mapping of its subpage (every ``_mapcount`` +1, the head's
included -- ``compound_mapcount`` holds the PMD maps, so the head's own count
is free).  If another PMD still maps the THP, ``PG_double_map`` is set first
and every subpage gets its extra count, so that ``page_mapped()`` never reads
0 halfway; then ``compound_mapcount`` -1.

Unlike the RFC's version the PMD stays present and huge while the PTEs are
written, and is replaced only after ``pmdp_invalidate()`` has made it
not-present and flushed the TLB: no walker ever sees an empty PMD.

``freeze`` (30/37, ba98828088ad) writes migration entries instead of PTEs and
then drops the mappings and references they would hold: the new
``split_huge_page()`` (step 6) uses it to take every mapping away at once.

Counts ``thp_split_pmd`` once per PMD split, frozen or not.
"""

import numpy as np

from ... import memory as mem
from ... import pgtable as pt
from ...errors import VMBug
from ...page_alloc import dump_page
from ...page_flags import PG
from ...params import HPAGE_PMD_MASK, HPAGE_PMD_NR, VM_WRITE
from .._kernel import Patch
from ._common import CM_FIELD, DOUBLE_MAP, cm_raw, double_mapped, email

S05 = Patch(
    number=5,
    series="v4.5",
    emails="29-30",
    subject="split_huge_pmd(): one PMD becomes a PTE table; freeze installs migration entries",
    files={"mm/huge_memory.c": "29, 30/37", "include/linux/huge_mm.h": "29/37",
           "mm/memory.c": "29/37", "mm/mprotect.c": "29/37", "mm/mremap.c": "29/37"},
    summary="__split_huge_pmd_locked() maps the THP by 512 PTEs in this page table only: "
            "_count += 511, every _mapcount +1 (+1 more and PG_double_map if another PMD maps it), "
            "compound_mapcount -1, PMD invalidated then populated. Never fails.",
    why="Most callers only need a PTE table here. Splitting one mapping touches no other "
        "process and needs no pin check.",
    link=email(29),
    capabilities={"pte_mapped_thp": True},
)


@S05.replaces
def split_huge_pmd(k, vma, pmdp, address):
    """Mirrors the ``split_huge_pmd()`` macro (4.5.7 include/linux/huge_mm.h#L106): split a huge PMD."""
    mem.check_pmd_arg(pmdp)
    if pt.pmd_trans_huge(mem.entry(k, pmdp)):
        k.__split_huge_pmd(vma, pmdp, address)


@S05.replaces
def __split_huge_pmd(k, vma, pmdp, address):
    """Mirrors ``__split_huge_pmd()`` (4.5.7 mm/huge_memory.c#L2942): under the PMD lock, split it.

    (The munlock of an mlocked THP after the split is 37/37's; thplab has no mlock.)
    """
    ptl = ("ptl", pmdp[0])
    k.machine.smp.lock(k, ptl, "__split_huge_pmd: pmd_lock")
    try:
        if pt.pmd_trans_huge(mem.entry(k, pmdp)):
            k.__split_huge_pmd_locked(vma, pmdp, address & HPAGE_PMD_MASK, False)
    finally:
        k.machine.smp.unlock(k, ptl)


@S05.replaces
def __split_huge_pmd_locked(k, vma, pmdp, haddr, freeze):
    """Mirrors ``__split_huge_pmd_locked()`` (4.5.7 mm/huge_memory.c#L2824), the PMD lock held.

    In the kernel's order: ``thp_split_pmd``; head ``_count`` += 511; the
    deposited table is withdrawn and filled (PTEs keep the PMD's write and
    young bits; its dirty bit goes to every subpage's ``PG_dirty``) -- or with
    migration entries when ``freeze``; every ``_mapcount`` +1; DoubleMap if
    another PMD maps the THP; ``compound_mapcount`` -1 (at the last one the
    THP leaves ``nr_anon_transparent_hugepages`` and DoubleMap is undone);
    ``pmdp_invalidate()``; the table goes in.  With ``freeze`` each subpage
    then loses the mapping and the reference the entry would have held.
    """
    mm, mem_map = vma.mm, k.mem_map
    pmd = mem.entry(k, pmdp)
    if not pt.pmd_trans_huge(pmd) or haddr & ~HPAGE_PMD_MASK or not (
            vma.vm_start <= haddr and haddr + (HPAGE_PMD_NR << 12) <= vma.vm_end):
        raise VMBug(f"__split_huge_pmd_locked: {haddr:#x} is not a huge PMD inside {vma}")
    k.count_vm_event("thp_split_pmd")
    page = int(pt.pmd_pfn(pmd))
    if mem_map["_count"][page] <= 0:
        raise VMBug(dump_page(mem_map, page, "__split_huge_pmd_locked: VM_BUG_ON_PAGE(!page_count(page))"))
    subpages = np.arange(page, page + HPAGE_PMD_NR, dtype=np.int64)
    mem_map["_count"][page] += HPAGE_PMD_NR - 1
    write, young, dirty = bool(pt.pte_write(pmd)), bool(pt.pte_young(pmd)), bool(pt.pte_dirty(pmd))
    pgtable = mem.pgtable_trans_huge_withdraw(k, mm, pmdp)
    if freeze:
        ptes = pt.make_migration_entry(subpages, np.full(HPAGE_PMD_NR, write))
    else:
        ptes = pt.mk_pte(subpages, mem.vm_get_page_prot(vma.vm_flags))
        if write and vma.vm_flags & VM_WRITE:      # maybe_mkwrite(), then pte_wrprotect() if !write
            ptes = pt.set_bits(ptes, pt._PAGE_RW)
        if not young:
            ptes = pt.clear_bits(ptes, pt._PAGE_ACCESSED)
    if dirty:
        mem_map["flags"][subpages] |= np.uint32(1 << PG.dirty)
    k.machine.pgtables.table(pgtable)[:] = ptes
    mem_map["_mapcount"][subpages] += 1
    k.point("__split_huge_pmd_locked: PTEs written, the PMD still huge", pid=mm.pid, address=hex(haddr))
    # Set PG_double_map before compound_mapcount drops, so that page_mapped() never reads 0.
    if cm_raw(k, page) + 1 > 1 and not double_mapped(k, page):
        mem_map["flags"][page + 1] |= DOUBLE_MAP
        mem_map["_mapcount"][subpages] += 1
    mem_map[CM_FIELD][page + 1] -= 1
    if cm_raw(k, page) == -1:
        k.machine.vmstat.count("nr_anon_transparent_hugepages", -1)
        if double_mapped(k, page):
            mem_map["flags"][page + 1] &= ~DOUBLE_MAP
            mem_map["_mapcount"][subpages] -= 1
    mem.set_entry(k, pmdp, pt.clear_bits(pmd, pt._PAGE_PRESENT))   # pmdp_invalidate()
    k.machine.smp.flush_tlb_range(k, "__split_huge_pmd_locked: pmdp_invalidate")
    mem.set_entry(k, pmdp, pt.mk_table_entry(pgtable))           # pmd_populate()
    k.point("__split_huge_pmd_locked: PTE table in", pid=mm.pid, address=hex(haddr))
    if freeze:
        k.page_remove_rmap(subpages, compound=False)
        k.put_page(subpages)


