"""v4.5 step 1 (emails 01-10 of v12): callers get ready for PTE-mapped THPs; the old counters stay.

Before any counter changes meaning, the series teaches the code around THPs to
say what it maps.  Once a THP can be mapped by PTEs, rmap can no longer guess
from ``PageTransHuge()`` whether a call is about the whole page or one 4 KiB
subpage, so every rmap call takes a ``compound`` flag (02/37; thplab's callers
have passed it at every level).  ``split_huge_page_pmd()`` becomes
``split_huge_pmd()`` (09/37) -- still the old body, which splits the whole THP.
And ``thp_split`` becomes three events (10/37): ``thp_split_page`` where the
old split counted ``thp_split``, and ``thp_split_page_failed`` and
``thp_split_pmd``, which nothing counts yet.

``PageAnon()`` reads the head (4.5.7 include/linux/page-flags.h#L374): in v4.5
a tail's ``mapping`` is not NULL -- page[1] keeps ``compound_mapcount`` there
from step 4 on -- so the flag must come from the head.

Not modelled here: 01 (smaps PSS), 03 (memcg), 06 (generic gup-fast, x86 has
its own), 07/08 (mlock, khugepaged).  04 (the WP-fault reuse rule) is not in
the archive; the rule 4.5.7 runs arrives with step 7.

SIMPLIFICATION: v4.4 already encodes a tail as ``compound_head`` = head + 1
(1d798ca3f164) and 4.5 poisons tails' ``mapping`` with ``TAIL_MAPPING``;
thplab keeps v3.16's ``PG_tail`` + ``first_page`` for every stack.  Both say
the same thing: which page is the head.
"""

from ... import memory as mem
from ... import pgtable as pt
from ...params import FOLL_SPLIT
from .. import p02_pageanon, p03_rename
from ..p00_base import _follow_pte_range
from .._kernel import Patch
from ._common import email

S01 = Patch(
    number=1,
    series="v4.5",
    emails="01-10",
    subject="rmap takes 'compound'; split_huge_page_pmd() is split_huge_pmd(); thp_split is three events",
    files={"mm/rmap.c": "02/37", "mm/huge_memory.c": "02, 04, 05, 09, 10/37", "mm/gup.c": "05, 06/37",
           "include/linux/vm_event_item.h": "10/37", "mm/vmstat.c": "10/37",
           "include/linux/huge_mm.h": "09/37"},
    summary="rmap calls say whether they map the whole THP; split_huge_page_pmd() is renamed "
            "split_huge_pmd() (same body: the whole THP is split); thp_split becomes "
            "thp_split_page, and thp_split_page_failed / thp_split_pmd exist, uncounted.",
    why="Once a THP can be mapped by PTEs, rmap cannot tell a PMD mapping from a PTE mapping "
        "by looking at the page, and 'split' will mean two different things.",
    link=email(10),
    capabilities={"page_anon_on_tail": True},
)

#: 4.5's THP events (4.5.7 include/linux/vm_event_item.h#L68-L76, mm/vmstat.c#L844-L852).
S01.data["VM_EVENTS"] = ("thp_fault_alloc", "thp_fault_fallback", "thp_collapse_alloc",
                         "thp_collapse_alloc_failed", "thp_split_page", "thp_split_page_failed",
                         "thp_split_pmd", "thp_zero_page_alloc", "thp_zero_page_alloc_failed")
S01.data["THP_SPLIT"] = "thp_split_page"
S01.removes("split_huge_page_pmd", why="v12 09/37 renamed it split_huge_pmd(vma, pmd, address).")


@S01.replaces
def PageAnon(k, page):
    """Mirrors ``PageAnon()`` (4.5.7 include/linux/page-flags.h#L374): the head's ``mapping``."""
    return p02_pageanon.PageAnon(k, page)


@S01.replaces
def split_huge_pmd(k, vma, pmdp, address):
    """Mirrors ``split_huge_pmd()`` after v12 09/37: the old body under the new name.

    It still splits the whole THP in every process, with ``split_huge_page()``.
    """
    p03_rename.split_huge_pmd(k, vma, pmdp, address)


@S01.replaces
def split_pmd(k, vma, pmdp, address):
    """The call sites now say ``split_huge_pmd(vma, pmd, address)`` (thplab's name for them)."""
    k.split_huge_pmd(vma, pmdp, address)




@S01.replaces
def follow_page_mask(k, vma, address, flags, nr):
    """Mirrors ``follow_page_mask()`` after v12 09/37: ``FOLL_SPLIT`` calls ``split_huge_pmd()``.

    Otherwise v3.16's (:func:`thplab.series.p00_base.follow_page_mask`): the
    whole THP is split, and a PMD being split makes the walker wait.
    """
    pmdp = mem.pmd_offset(k, vma.mm, address)
    if pmdp is None or mem.entry(k, pmdp) == 0:
        return None
    pmd = mem.entry(k, pmdp)
    if pt.pmd_trans_huge(pmd):
        if flags & FOLL_SPLIT:
            k.split_huge_pmd(vma, pmdp, address)
        elif k.pmd_trans_splitting(pmd):
            k.wait_split_huge_page(vma.anon_vma, pmdp)
        else:
            return k.follow_trans_huge_pmd(vma, address, pmdp, flags, nr)
    return _follow_pte_range(k, pmdp, address, flags, nr)
