"""Patch 07/10: "mm, thp: remove infrastructure for handling splitting PMDs".

Since patch 04 nothing marks a PMD ``_PAGE_SPLITTING``: ``split_huge_pmd()``
clears the PMD and fills the table under the PMD lock.  So the generic code
that waited for a split (``wait_split_huge_page()``, the splitting branch of
``__pmd_trans_huge_lock()``, the "retry the fault" in ``__handle_mm_fault()``,
fork's ``-EAGAIN``, ``follow_page()``'s wait) is dead and goes.  Its users
take the PMD lock and re-check ``pmd_trans_huge()`` instead.
"""

import numpy as np

from .. import memory as mem
from .. import pgtable as pt
from ..params import EAGAIN
from ._kernel import Patch
from .p00_base import _follow_pte_range, copy_stable_huge_pmds, one_by_one

P07 = Patch(
    number=7,
    subject="mm, thp: remove infrastructure for handling splitting PMDs",
    files={"fs/proc/task_mmu.c": 9, "include/asm-generic/pgtable.h": 5, "include/linux/huge_mm.h": 33,
           "mm/gup.c": 14, "mm/huge_memory.c": 83, "mm/memcontrol.c": 16, "mm/memory.c": 18,
           "mm/pgtable-generic.c": 14, "mm/rmap.c": 4},
    summary="wait_split_huge_page() and the splitting branch of __pmd_trans_huge_lock() are "
            "removed; fault, fork, follow_page and the page-table walkers stop checking "
            "pmd_trans_splitting().",
    why="No PMD is ever marked splitting once split_huge_pmd() exists: the code is dead.",
    link="https://lore.kernel.org/linux-mm/1402329861-7037-8-git-send-email-kirill.shutemov@linux.intel.com/",
)
P07.removes("wait_split_huge_page",
            why="Patch 07: a PMD is never left in a 'splitting' state any more.")


@P07.replaces
def pmd_trans_huge_lock(k, pmdp, vma):
    """``pmd_lock()`` + ``pmd_trans_huge()`` re-check: 1 if huge, else 0 (per PMD of a batch)."""
    tbl, idx = pmdp
    return np.where(pt.pmd_trans_huge(k.machine.pgtables.table(tbl)[idx]), 1, 0)


@P07.replaces
def follow_page_mask(k, vma, address, flags, nr):
    """``follow_page_mask()`` after patch 07: a huge PMD is followed, never waited for."""
    pmdp = mem.pmd_offset(k, vma.mm, address)
    if pmdp is None or mem.entry(k, pmdp) == 0:
        return None
    if pt.pmd_trans_huge(mem.entry(k, pmdp)):
        return k.follow_trans_huge_pmd(vma, address, pmdp, flags, nr)
    return _follow_pte_range(k, pmdp, address, flags, nr)


@P07.replaces
def copy_huge_pmd(k, dst_mm, src_mm, dst_pmdp, src_pmdp, addr, vma):
    """``copy_huge_pmd()`` after patch 07: no splitting PMD to wait for (batched as level 0's)."""
    src_t, idx = src_pmdp
    pmds = k.machine.pgtables.table(src_t)[idx]
    if len(idx) > 1 and not pt.pmd_trans_huge(pmds).all():
        return one_by_one(lambda d, s, a: k.copy_huge_pmd(dst_mm, src_mm, d, s, a, vma),
                          [dst_pmdp, src_pmdp], addr)
    if len(idx) == 1 and not pt.pmd_trans_huge(pmds[0]):
        mem.pte_free(k, dst_mm, mem.pte_alloc_one(k, dst_mm))
        return np.array([-EAGAIN])
    return copy_stable_huge_pmds(k, dst_mm, dst_pmdp, src_pmdp)


@P07.replaces
def __handle_mm_fault(k, mm, vma, address, write):
    """``__handle_mm_fault()`` after patch 07: no "PMD is splitting, retry" branch."""
    pmdp = mem.pmd_offset(k, mm, address, alloc=True)
    pmd = mem.entry(k, pmdp)
    if pmd == 0 and mem.transparent_hugepage_enabled(k, vma):
        ret = k.do_huge_pmd_anonymous_page(mm, vma, address, pmdp, write)
        if not ret & mem.VM_FAULT_FALLBACK:
            return ret
    elif pt.pmd_trans_huge(pmd):
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


