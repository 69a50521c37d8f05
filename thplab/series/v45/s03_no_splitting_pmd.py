"""v4.5 step 3 (emails 16-25 of v12): no compound_lock, no splitting PMDs.

With tail pins gone nothing needs ``compound_lock`` (16/37), and the new
``split_huge_pmd()`` will never leave a PMD half-split for others to wait on,
so ``_PAGE_SPLITTING``, ``pmdp_splitting_flush()`` and
``wait_split_huge_page()`` go from every architecture (17-25/37; x86's is
24/37).  Their users take the PMD lock and look at the PMD again instead: the
same change as the RFC's patches 07 and 08, whose code thplab runs here.

``FOLL_SPLIT`` stays (the RFC dropped it): v12 05/37 keeps it working.
"""

from ... import memory as mem
from ... import pgtable as pt
from ...params import FOLL_SPLIT
from .. import p07_generic_splitting, p08_x86_splitting
from .._kernel import Patch
from ..p00_base import _follow_pte_range
from ._common import email

S03 = Patch(
    number=3,
    series="v4.5",
    emails="16-25",
    subject="remove compound_lock and the infrastructure for splitting PMDs",
    files={"include/linux/mm.h": "16/37", "include/linux/page-flags.h": "16/37",
           "arch/x86/include/asm/pgtable.h": "24/37", "arch/x86/mm/gup.c": "24/37",
           "arch/x86/mm/pgtable.c": "24/37", "mm/huge_memory.c": "25/37", "mm/gup.c": "25/37",
           "mm/memory.c": "25/37", "mm/pgtable-generic.c": "25/37",
           "arch/{arm,arm64,mips,powerpc,s390,sparc,tile}": "17-23/37"},
    summary="compound_lock, _PAGE_SPLITTING, pmd_trans_splitting(), pmdp_splitting_flush() and "
            "wait_split_huge_page() are deleted; fork, faults, follow_page and gup-fast stop "
            "looking for a splitting PMD.",
    why="No tail pin needs a lock any more, and a PMD will be split in one go under its lock.",
    link=email(22),
    capabilities={"splitting_pmd": False},
)
S03.removes("pmd_trans_splitting", "pmdp_splitting_flush",
            why="v12 24/37 deleted _PAGE_SPLITTING and its helpers from x86.")
S03.removes("wait_split_huge_page", why="v12 25/37: a PMD is never left 'splitting' any more.")


@S03.replaces
def pmd_trans_huge_lock(k, pmdp, vma):
    """Mirrors ``pmd_trans_huge_lock()`` (4.5.7 mm/huge_memory.c#L1762, __pmd_trans_huge_lock): lock, is it huge? 1 or 0."""
    return p07_generic_splitting.pmd_trans_huge_lock(k, pmdp, vma)


@S03.replaces
def follow_page_mask(k, vma, address, flags, nr):
    """Mirrors ``follow_page_mask()`` between v12 25/37 and 32/37: no splitting PMD to wait for.

    ``FOLL_SPLIT`` on a huge PMD calls ``split_huge_pmd()`` -- a build-time
    trap in the series until step 5; no THP exists at these steps.
    """
    pmdp = mem.pmd_offset(k, vma.mm, address)
    if pmdp is None or mem.entry(k, pmdp) == 0:
        return None
    if pt.pmd_trans_huge(mem.entry(k, pmdp)):
        if flags & FOLL_SPLIT:
            k.split_huge_pmd(vma, pmdp, address)
            return _follow_pte_range(k, pmdp, address, flags, nr)
        return k.follow_trans_huge_pmd(vma, address, pmdp, flags, nr)
    return _follow_pte_range(k, pmdp, address, flags, nr)


@S03.replaces
def copy_huge_pmd(k, dst_mm, src_mm, dst_pmdp, src_pmdp, addr, vma):
    """Mirrors ``copy_huge_pmd()`` (4.5.7 mm/huge_memory.c#L1033): no splitting check."""
    return p07_generic_splitting.copy_huge_pmd(k, dst_mm, src_mm, dst_pmdp, src_pmdp, addr, vma)


@S03.replaces
def __handle_mm_fault(k, mm, vma, address, write):
    """Mirrors ``__handle_mm_fault()`` (4.5.7 mm/memory.c#L3398): no "PMD is splitting" retry."""
    return p07_generic_splitting.__handle_mm_fault(k, mm, vma, address, write)


@S03.replaces
def gup_pmd_range(k, mm, addr, nr, write):
    """Mirrors x86 ``gup_pmd_range()`` (4.5.7 arch/x86/mm/gup.c#L199): bail out on an empty PMD only."""
    return p08_x86_splitting.gup_pmd_range(k, mm, addr, nr, write)
