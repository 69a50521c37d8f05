"""Which kernel tree level 0 is read in, and the one place where v3.14 would differ.

The RFC was posted on 9 June 2014 against Andrew Morton's -mm tree of the day,
which no public archive keeps.  The nearest tree one can read is **v3.16**
(released 3 August 2014): the ``index`` lines of the archived patches name the
blobs they apply to, and for ``kernel/futex.c`` (patch 09), ``mm/gup.c``,
``Documentation/vm/transhuge.txt``, ``arch/s390/mm/pgtable.c`` (patch 01) and
``arch/x86/include/asm/pgtable_types.h`` (patch 08) those are exactly v3.16's
files.  ``mm/gup.c`` itself is new in v3.16; v3.14 keeps that code in
``mm/memory.c``.  So level 0 is "the RFC's base, read in v3.16"; every link to
the old kernel points at v3.16, and :data:`V3_14_DIFFERENCES` lists what a
reader of v3.14 would find otherwise.

>>> LEVEL0
'v3.16'
"""

#: The tree level 0 is read in (``Machine.boot(patches=0)``).
LEVEL0 = "v3.16"

#: Blob ids (first 12 hex digits) of files the archived RFC patches name in their
#: ``index`` lines, which equal v3.16.0's: the evidence for :data:`LEVEL0`.
RFC_BASE_BLOBS = {
    "kernel/futex.c": "b632b5f3f094",                         # patch 09
    "mm/gup.c": "cc5a9e7adea7",                               # patch 01
    "Documentation/vm/transhuge.txt": "6b31cfbe2a9a",         # patch 01
    "arch/s390/mm/pgtable.c": "37b8241ec784",                 # patch 01
    "arch/x86/include/asm/pgtable_types.h": "f216963760e5",   # patch 08
}

#: Where v3.14.0 differs from v3.16.0 in what thplab models: ``(what, v3.14, v3.16)``.
#: Read function by function in both trees; everything else the model mirrors --
#: tail get/put, gup-fast, the three-phase split, the FOLL_SPLIT path, the
#: futex special case, migration's checks, the rmap counters -- is the same.
V3_14_DIFFERENCES = (
    ("_PAGE_BIT_SPLITTING (arch/x86/include/asm/pgtable_types.h)",
     "bit 9 (_PAGE_BIT_UNUSED1, shared with SPECIAL)",
     "bit 10 (_PAGE_BIT_SOFTW2, shared with IOMAP); thplab uses 10"),
    ("_PAGE_NUMA",
     "bit 8, the PROTNONE/GLOBAL bit",
     "bit 9 (SOFTW1); thplab models no NUMA hinting"),
    ("where follow_page_mask() and __get_user_pages() live",
     "mm/memory.c",
     "mm/gup.c, split into faultin_page(), check_vma_flags() and friends"),
    ("check_vma_flags(): FOLL_WRITE|FOLL_FORCE on a shared VMA without VM_WRITE",
     "allowed when VM_MAYWRITE",
     "-EFAULT (anonymous private memory, all thplab has, is unaffected)"),
    ("do_huge_pmd_wp_page() on the huge zero page when no THP is free",
     "do_huge_pmd_wp_zero_page_fallback(): one new page, 511 zero PTEs",
     "split_huge_page_pmd() of the zero PMD, then an ordinary COW (thplab has no zero page)"),
    ("get_user_huge_page() around the COW copy",
     "get_page()/put_page()",
     "the same calls unless CONFIG_DEBUG_PAGEALLOC"),
    ("mremap's move_huge_pmd()",
     "without the anon_vma lock",
     "under anon_vma_lock_write() (thplab models no mremap)"),
)


def describe_level0():
    """Text: which tree level 0 is read in, the evidence, and where v3.14 differs."""
    lines = [f"Level 0 is the RFC's base, read in {LEVEL0}: these files of the base, named by the "
             "patches' index lines, are v3.16.0's blobs:"]
    lines += [f"  {path}: {blob}" for path, blob in RFC_BASE_BLOBS.items()]
    lines.append("Where v3.14 differs in what the model covers:")
    for what, old, new in V3_14_DIFFERENCES:
        lines.append(f"  {what}\n      v3.14: {old}\n      v3.16: {new}")
    return "\n".join(lines)


__all__ = ["LEVEL0", "RFC_BASE_BLOBS", "V3_14_DIFFERENCES", "describe_level0"]
