"""Patch 03/10: "thp: rename split_huge_page_pmd() to split_huge_pmd()".

A pure rename with a new argument order, ``split_huge_pmd(vma, pmd, address)``,
at every call site.  The body still splits the whole compound page; the new
name announces that only the PMD will be split (patch 04).

[I] Patch 03 is not in the archive; reconstructed from the cover letter's
diffstat and v2's identical patch 09/19 (kernel-semantics §2.2).
"""

from .. import memory as mem
from .. import pgtable as pt
from ._kernel import Patch

P03 = Patch(
    number=3,
    subject="thp: rename split_huge_page_pmd() to split_huge_pmd()",
    # Not archived: the cover letter's per-file totals, where no archived patch touches the file.
    files={"arch/powerpc/mm/subpage-prot.c": "not archived (series: 2)",
           "arch/x86/kernel/vm86_32.c": "not archived (series: 6)",
           "mm/mprotect.c": "not archived (series: 2)", "mm/mremap.c": "not archived (series: 2)",
           "mm/pagewalk.c": "not archived (series: 2)",
           "include/linux/huge_mm.h": "not archived (series: 48)", "mm/memory.c": "not archived (series: 20)"},
    summary="split_huge_page_pmd(vma, address, pmd) becomes split_huge_pmd(vma, pmd, address); "
            "split_huge_page_pmd_mm() goes away; split_huge_page_address() takes a VMA.",
    why="Most callers only want the PMD turned into a PTE table and do not care whether the "
        "compound page is split. The name should say so before the behaviour changes.",
    link="https://lwn.net/Articles/601781/ (the cover letter; patch 03 itself is not archived -- "
         "v2's equivalent is 09/19, Message-Id 1415198994-15252-10-git-send-email-kirill.shutemov@linux.intel.com)",
    source="reconstructed",
)
P03.removes("split_huge_page_pmd", why="Patch 03 renamed it split_huge_pmd(vma, pmd, address).")
# v3.14 has three callers of split_huge_page_pmd_mm(): vm86's mark_screen_rdonly(),
# walk_pmd_range() (mm/pagewalk.c#L61) and split_huge_page_address() (mm/huge_memory.c#L2921).
P03.removes("split_huge_page_pmd_mm",
            why="Patch 03 removed it: its callers (vm86's mark_screen_rdonly(), walk_pmd_range(), "
                "split_huge_page_address()) call split_huge_pmd(vma, pmd, address) with a VMA "
                "[reconstructed].")


@P03.replaces
def split_huge_pmd(k, vma, pmdp, address):
    """Mirrors ``split_huge_pmd()`` as of patch 03: the old body under the new name.

    It still splits the whole THP in every process (``split_huge_page()``).
    """
    mem.check_pmd_arg(pmdp)
    while pt.pmd_trans_huge(mem.entry(k, pmdp)):
        page = int(pt.pmd_pfn(mem.entry(k, pmdp)))
        k.get_page(page)
        k.split_huge_page(page)
        k.put_page(page)


@P03.replaces
def split_pmd(k, vma, pmdp, address):
    """The call sites now say ``split_huge_pmd(vma, pmd, address)``."""
    k.split_huge_pmd(vma, pmdp, address)

