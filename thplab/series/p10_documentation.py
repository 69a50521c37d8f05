"""Patch 10/10: "thp: update documentation".

``Documentation/vm/transhuge.txt`` is the contract between THP and the rest
of the kernel.  thplab keeps it as data, ``kernel.TRANSHUGE_DOC``: a dict of
section -> what it promises, at every level (patch 01 already deleted the
FOLL_SPLIT paragraph).  Patch 10 rewrites the rest to match the series.

[I] Patch 10 is not in the archive; its content follows v2's patch 16/19,
whose size matches the cover letter's diffstat (kernel-semantics §2.2).
"""

from ._kernel import Patch

OLD_DOC = {
    "vmstat": "thp_split is incremented every time a huge page is split into base pages.",
    "get_user_pages and follow_page":
        "In case you can't handle compound pages if they're returned by follow_page, the "
        "FOLL_SPLIT bit can be specified as parameter to follow_page, so that it will split "
        "the hugepages before returning them.",
    "Graceful fallback":
        "Code walking pagetables but unaware about huge pmds can simply call "
        "split_huge_page_pmd(vma, addr, pmd) where the pmd is the one returned by pmd_offset.",
    "Locking in hugepage aware code":
        "If pmd_trans_huge returns true, take the page_table_lock and re-run pmd_trans_huge; "
        "then run pmd_trans_splitting: if it returns true, split_huge_page is in the middle of "
        "splitting the page, so drop the lock and call wait_split_huge_page.",
    "compound_lock, get_user_pages and put_page":
        "split_huge_page has to distribute the refcounts in the head page to the tail pages. "
        "gup pins must be accounted on the tail pages too, or we would not know which tail is "
        "pinned while we run split_huge_page; put_page on a tail serializes against "
        "__split_huge_page_refcount with compound_lock.",
}

NEW_DOC = {
    "vmstat":
        "thp_split_page is incremented every time a huge page is split into base pages (which "
        "implies splitting all PMDs the page is mapped with). thp_split_page_failed is "
        "incremented if the kernel fails to split a huge page, which can happen if the page "
        "was pinned by somebody. thp_split_pmd is incremented every time a PMD is split into a "
        "table of PTEs, e.g. when an application calls mprotect() or munmap() on part of a huge "
        "page; it does not split the huge page, only the page table entry.",
    "get_user_pages and follow_page":
        "get_user_pages and follow_page, if run on a hugepage, will return the head or tail "
        "pages as usual (exactly as they would do on hugetlbfs).",
    "Graceful fallback":
        "Code walking pagetables but unaware about huge pmds can simply call "
        "split_huge_pmd(vma, pmd, addr) where the pmd is the one returned by pmd_offset.",
    "Locking in hugepage aware code":
        "If pmd_trans_huge returns true, take the page table lock (pmd_lock) and re-run "
        "pmd_trans_huge; taking the lock prevents the huge pmd from being converted into a "
        "regular pmd from under you.",
    "Refcounts and transparent huge pages":
        "All refcounting is done on the head page. split_huge_page distributes the refcounts "
        "taken by page table entries to the subpages; it fails if the page is pinned: the page "
        "count must equal the sum of the subpages' mapcounts plus one (the caller's). "
        "compound_lock protects _count from get/put on tail pages during the split. "
        "split_huge_pmd can be called at any time and never fails.",
}

P10 = Patch(
    number=10,
    subject="thp: update documentation",
    files={"Documentation/vm/transhuge.txt": "84 of the series' 95"},
    summary="transhuge.txt documents the three split events, split_huge_pmd(), that "
            "split_huge_page() fails on pinned pages, and the new refcounting rules; the "
            "splitting-PMD locking rules and the compound_lock section are replaced.",
    why="The documented contract must match what the series did to the code.",
    link="https://git.kernel.org/pub/scm/linux/kernel/git/kas/linux.git (thp/refcounting/v1)",
    source="reconstructed",
)
P10.data["TRANSHUGE_DOC"] = NEW_DOC
