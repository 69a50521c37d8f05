"""Patch 08/10: "x86, thp: remove remove infrastructure for handling splitting PMDs" (sic).

The x86 half of patch 07: ``_PAGE_SPLITTING`` (software bit 10),
``pmd_trans_splitting()``, x86's ``pmdp_splitting_flush()``, and
gup-fast's bail-out on a splitting PMD -- with its long comment about why
gup-fast must not wait for a split with interrupts disabled.  gup-fast now
bails only on an empty PMD.
"""

from .. import memory as mem
from .. import pgtable as pt
from ._kernel import Patch
from .p00_base import _gup_pte_range

P08 = Patch(
    number=8,
    subject="x86, thp: remove remove infrastructure for handling splitting PMDs",
    files={"arch/x86/include/asm/pgtable.h": 9, "arch/x86/include/asm/pgtable_types.h": 2,
           "arch/x86/mm/gup.c": 13, "arch/x86/mm/pgtable.c": 14},
    summary="_PAGE_BIT_SPLITTING, pmd_trans_splitting(), pmdp_splitting_flush() and the "
            "splitting check in gup_pmd_range() are deleted.",
    why="Nothing sets the bit since patch 04; software bit 10 is free again.",
    link="https://lore.kernel.org/linux-mm/1402329861-7037-9-git-send-email-kirill.shutemov@linux.intel.com/",
    capabilities={"splitting_pmd": False},
)
P08.removes("pmd_trans_splitting", "pmdp_splitting_flush",
            why="Patch 08 deleted _PAGE_SPLITTING and its helpers from x86.")


@P08.replaces
def gup_pmd_range(k, mm, addr, nr, write):
    """x86 ``gup_pmd_range()`` after patch 08: bail out only on an empty PMD."""
    pmdp = mem.pmd_offset(k, mm, addr)
    if pmdp is None:
        return None
    pmd = mem.entry(k, pmdp)
    k.point("gup_pmd_range: PMD read", pmd=hex(pmd))
    if pmd == 0:
        return None
    if pt.pmd_trans_huge(pmd):
        return k.gup_huge_pmd(pmd, addr, nr, write)
    return _gup_pte_range(k, pmd, addr, nr, write)
