"""Patch 05/10: "mm, vmstats: new THP splitting event".

``thp_split`` meant "a huge page was split into base pages".  Now a PMD can
be split without the page, and a page split can fail, so one event
becomes three: ``thp_split_page``, ``thp_split_page_failed`` and
``thp_split_pmd``.  (The changelog spells the second ``THP_SPLIT_PAGE_FAILT``;
the code says ``_FAILED``.)
"""

from .. import memory as mem
from .. import pgtable as pt
from ._kernel import Patch

P05 = Patch(
    number=5,
    subject="mm, vmstats: new THP splitting event",
    files={"include/linux/vm_event_item.h": 4, "mm/huge_memory.c": 2, "mm/vmstat.c": 4},
    summary="THP_SPLIT becomes THP_SPLIT_PAGE, THP_SPLIT_PAGE_FAILED and THP_SPLIT_PMD; "
            "__split_huge_pmd() counts thp_split_pmd, the split_huge_page() stub counts "
            "thp_split_page_failed.",
    why="Splitting a PMD and splitting a page are different events now, and the second can fail.",
    link="https://lore.kernel.org/linux-mm/1402329861-7037-6-git-send-email-kirill.shutemov@linux.intel.com/",
)
P05.data["VM_EVENTS"] = ("thp_fault_alloc", "thp_fault_fallback", "thp_collapse_alloc",
                         "thp_collapse_alloc_failed", "thp_split_page", "thp_split_page_failed",
                         "thp_split_pmd", "thp_zero_page_alloc", "thp_zero_page_alloc_failed")


@P05.replaces
def __split_huge_pmd(k, vma, pmdp, address):
    """``__split_huge_pmd()`` + ``count_vm_event(THP_SPLIT_PMD)`` once the PMD is known to be huge."""
    if pt.pmd_trans_huge(mem.entry(k, pmdp)):
        k.count_vm_event("thp_split_pmd")
    k.previous("__split_huge_pmd", P05)(vma, pmdp, address)


@P05.replaces
def split_huge_page_to_list(k, page, list=None):
    """The ``-EBUSY`` stub, now counting ``thp_split_page_failed``."""
    k.count_vm_event("thp_split_page_failed")
    return k.previous("split_huge_page_to_list", P05)(page, list)
