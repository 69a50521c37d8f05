"""Patch 10/10: "thp: update documentation".

``Documentation/vm/transhuge.txt`` is the contract between THP and the rest
of the kernel.  thplab keeps it as data, ``kernel.TRANSHUGE_DOC``: a dict of
section -> the promises that section makes, at every level.  The promises are
**restated in thplab's own words**, one line each; every line ends with a tag
saying where the promise is written down:

* ``[v3.16 L248]`` -- transhuge.txt of v3.16 at that line (v3.14's copy has the
  same sections at the same lines; the two differ only by two spelling fixes
  in the compound_lock section);
* ``[v2 16/19; v4.5 L224]`` -- reconstructed for patch 10 (see below); the
  merged v4.5 transhuge.txt makes the same promise at that line;
* ``[v2 16/19]`` -- reconstructed; v4.5 no longer makes that promise;
* ``cover letter`` in a tag -- the RFC's cover letter states the same thing.

:func:`links` turns the tags of a line into URLs.  The file's own sentences are
not kept here: read them at the links.

Level 0 is what v3.14/v3.16 already document -- including the promise that
get_user_pages() and follow_page() hand out head or tail pages as hugetlbfs
does, which transhuge.txt has made since THP was merged in v2.6.38
(https://elixir.bootlin.com/linux/v2.6.38/source/Documentation/vm/transhuge.txt#L168).
Patch 01 (archived) deletes only the FOLL_SPLIT paragraph: 11 lines, its share
of the cover letter's diffstat.  Patch 10 changes the rest.

What is known and what is reconstructed.  The v1 email of patch 10 is not in
any archive (kernel-semantics §2.0).  Known from the cover letter: transhuge.txt
changes by 95 lines in the series, and the design it documents --
split_huge_page() may fail when the page is pinned, split_huge_pmd() splits one
PMD and never fails, PMDs are no longer marked splitting.  Reconstructed
[I]: the wording of patch 10 follows v2's patch 16/19 (5 November 2014,
https://lore.kernel.org/linux-mm/1415198994-15252-17-git-send-email-kirill.shutemov@linux.intel.com/),
which changes exactly the remaining 84 lines (38 added, 46 removed).  That
patch leaves the "get_user_pages and follow_page" section alone, so the
model's patch 10 does too.
"""

import re

from ._kernel import Patch

#: Where a tag points (see the module docstring).
TRANSHUGE_TXT = "https://elixir.bootlin.com/linux/{version}/source/Documentation/vm/transhuge.txt#L{line}"
V2_16 = "https://lore.kernel.org/linux-mm/1415198994-15252-17-git-send-email-kirill.shutemov@linux.intel.com/"
COVER_LETTER = "https://lwn.net/Articles/601781/"

OLD_DOC = {
    "Monitoring usage": "\n".join([
        "thp_split counts each split of a huge page into 4 KiB pages; reclaim of an old huge page "
        "is a common cause. [v3.16 L203]",
    ]),
    "get_user_pages and follow_page": "\n".join([
        "On a THP, get_user_pages() and follow_page() hand back the head or tail page behind each "
        "address, the same way they do on hugetlbfs. [v3.16 L248]",
        "Most callers want only the physical address and a short-lived pin, so they never notice "
        "that the page is huge. [v3.16 L250]",
        "A driver that reads head-only fields (mapping and the like) through a tail page must go "
        "to the head, guarding against a split running meanwhile; the futex code shows how. "
        "[v3.16 L253]",
        "None of this is new: a driver that copes with GUP on hugetlbfs copes with THP. "
        "[v3.16 L261]",
        # Patch 01 deletes this last line (series/__init__.py).
        "In case code cannot take a compound page from follow_page(), it passes FOLL_SPLIT and "
        "gets the huge page split first; migration relies on it. [v3.16 L266]",
    ]),
    "Graceful fallback": "\n".join([
        "A page-table walker that knows nothing of huge PMDs calls split_huge_page_pmd(vma, "
        "addr, pmd) on the pmd that pmd_offset() gave it. [v3.16 L293]",
        "Code that meets a huge page it cannot handle calls split_huge_page(page), as swap-out "
        "does. [v3.16 L302]",
    ]),
    "Locking in hugepage aware code": "\n".join([
        "Holding mmap_sem, for read or write, keeps khugepaged from creating a huge PMD under "
        "you. [v3.16 L326]",
        "When pmd_trans_huge() says yes, take mm->page_table_lock and ask again; the lock keeps "
        "a split from turning the huge PMD into a PTE table under you. [v3.16 L332]",
        "Under that lock, pmd_trans_splitting() true means split_huge_page() is at work: drop "
        "the lock, wait_split_huge_page(), then take the 4 KiB path. [v3.16 L338]",
    ]),
    "compound_lock, get_user_pages and put_page": "\n".join([
        "split_huge_page() moves the head's references onto the tail pages; those of huge PMD "
        "mappings are easy to move. [v3.16 L350]",
        "A GUP pin on a tail is counted on that tail as well, so the split knows where each pin "
        "goes and can run whatever is pinned; splitting every THP inside GUP instead would be "
        "too slow. [v3.16 L353]",
        "The pin is counted on the head too, so a THP that is never split is freed at the right "
        "time; hence put_page() on a tail drops both counts. [v3.16 L367]",
        "To find the head and drop its count without racing the split's "
        "__split_huge_page_refcount(), put_page() on a tail takes compound_lock. [v3.16 L373]",
    ]),
}

_OLD = {section: text.splitlines() for section, text in OLD_DOC.items()}

NEW_DOC = {
    "Monitoring usage": "\n".join([
        "thp_split_page counts each split of a huge page into 4 KiB pages (reclaim is a common "
        "cause); every PMD that maps the page is split with it. [v2 16/19; v4.5 L224]",
        "thp_split_page_failed counts a split the kernel could not do, for instance because "
        "someone pinned the page. [v2 16/19; v4.5 L229]",
        "thp_split_pmd counts each PMD turned into a PTE table, as mprotect() or munmap() on "
        "part of a huge page do; the page itself stays huge. [v2 16/19; v4.5 L232]",
    ]),
    # Patch 10 (as v2 16/19) leaves this section alone; patch 01 cut its last line.
    "get_user_pages and follow_page": "\n".join(_OLD["get_user_pages and follow_page"][:-1]),
    "Graceful fallback": "\n".join([
        "A page-table walker that knows nothing of huge PMDs calls split_huge_pmd(vma, pmd, "
        "addr) -- mind the new argument order -- on the pmd that pmd_offset() gave it. "
        "[v2 16/19; v4.5 L321]",
        _OLD["Graceful fallback"][1],
        "split_huge_page() can now fail when the page is pinned; its callers must cope. "
        "[v2 16/19; v4.5 L333; cover letter]",
    ]),
    "Locking in hugepage aware code": "\n".join([
        _OLD["Locking in hugepage aware code"][0],
        "When pmd_trans_huge() says yes, take the page table lock (pmd_lock()) and ask again; "
        "the lock keeps split_huge_pmd() from turning the huge PMD into a PTE table under you. "
        "[v2 16/19; v4.5 L361]",
    ]),
    "Refcounts and transparent huge pages": "\n".join([
        "As for any compound page, a THP's references are all counted on its head page; unlike "
        "other compound pages, a THP can be split. [v2 16/19; v4.5 L375]",
        "split_huge_page() hands the references held by page-table entries to the subpages. "
        "[v2 16/19; v4.5 L398]",
        "It cannot tell where any other reference (a GUP pin, say) belongs, so it refuses the "
        "page: the page count must equal the subpages' mapcounts summed plus one, the caller's. "
        "[v2 16/19; v4.5 L401; cover letter]",
        "During the split, compound_lock keeps get_page()/put_page() on tail pages from moving "
        "the head's count. [v2 16/19]",
        "split_huge_pmd() has no refcount condition: a PMD can be split at any time, and that "
        "never fails. [v2 16/19; v4.5 L421; cover letter]",
    ]),
}

_TAG = re.compile(r"\[([^\]]+)\]\s*$")


def promises(text):
    """The promises of one section's text: one per line."""
    return [line for line in text.splitlines() if line.strip()]


def links(line):
    """URLs for the tag at the end of a promise ``line`` (``[v3.16 L248]`` ...), in tag order."""
    match = _TAG.search(line)
    out = []
    for part in (match.group(1).split(";") if match else []):
        part = part.strip()
        if m := re.fullmatch(r"(v\d+\.\d+) L(\d+)", part):
            out.append(TRANSHUGE_TXT.format(version=m[1], line=m[2]))
        elif part == "v2 16/19":
            out.append(V2_16)
        elif part == "cover letter":
            out.append(COVER_LETTER)
        else:
            raise ValueError(f"unknown source tag {part!r} in {line!r}")
    return out


P10 = Patch(
    number=10,
    subject="thp: update documentation",
    files={"Documentation/vm/transhuge.txt": "not archived (series: 95, of which 11 are patch 01's)"},
    summary="transhuge.txt documents the three split events, split_huge_pmd(), that "
            "split_huge_page() may fail (any reference besides the mappings, such as a pin), and "
            "the new refcounting rules; the splitting-PMD locking rule and the compound_lock "
            "section go. The get_user_pages section stays as it was.",
    why="The documented contract must match what the series did to the code.",
    link="https://git.kernel.org/pub/scm/linux/kernel/git/kas/linux.git (branch thp/refcounting/v1, not "
         "pinned); v2's equivalent, 16/19: https://lore.kernel.org/linux-mm/"
         "1415198994-15252-17-git-send-email-kirill.shutemov@linux.intel.com/",
    source="reconstructed",
)
P10.data["TRANSHUGE_DOC"] = NEW_DOC
