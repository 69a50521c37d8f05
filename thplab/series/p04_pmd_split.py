"""Patch 04/10: "thp: PMD splitting without splitting compound page".

The heart of the series.  Tail-page refcounting is gone: every
``get_page()``/``put_page()`` on any subpage moves the head's ``_count`` and
nothing else, so a tail's ``_mapcount`` is free to count what its name says
-- the PTEs mapping that tail.  ``split_huge_pmd()`` now turns one PMD into a
table of 512 PTEs and leaves the compound page (and every other mapping of
it) alone; it never fails.

With no record of which tail is pinned, a pinned THP cannot be split
safely, and the new ``split_huge_page()`` only arrives with patch 06.  Until
then it is a stub that always returns ``-EBUSY`` -- the series really was in
that state at this point.

[I] Patch 04 is not in the archive.  Its behaviour is reconstructed from
context lines of patches 05 and 06 and from v2's patch 10/19; the
``__split_huge_pmd()`` arithmetic (head ``_count`` += 511, tail
``_mapcount`` += 1, head ``_mapcount`` unchanged) is forced by patch 06's
split test (kernel-semantics §2.2).
"""

import numpy as np

from .. import memory as mem
from .. import pgtable as pt
from ..errors import VMBug
from ..page_alloc import dump_page
from ..page_flags import PG, compound_head
from ..params import EBUSY, HPAGE_PMD_MASK, HPAGE_PMD_NR
from ._kernel import Patch
from .p00_base import _pages, _release, huge_pmd_copy

P04 = Patch(
    number=4,
    subject="thp: PMD splitting without splitting compound page",
    # Not archived: the cover letter's per-file totals for the files it must touch.
    files={"mm/huge_memory.c": "not archived (series: 412)", "mm/swap.c": "not archived (series: 285)",
           "mm/internal.h": "not archived (series: 31)", "include/linux/mm.h": "not archived (series: 66)",
           "include/linux/huge_mm.h": "not archived (series: 48)",
           "arch/x86/mm/gup.c": "not archived (series: 17, of which 13 are patch 08's)",
           "arch/mips/mm/gup.c": "not archived (series: 4)", "arch/sparc/mm/gup.c": "not archived (series: 14)",
           "arch/s390/mm/gup.c": "not archived (series: 13)",
           "arch/powerpc/mm/hugetlbpage.c": "not archived (series: 12)"},
    summary="get_page()/put_page() on a tail touch only the head's _count; tail _mapcount "
            "counts PTE mappings of the tail; head _mapcount counts PMD mappings plus PTE "
            "mappings of subpage 0; split_huge_pmd() splits one PMD; split_huge_page() is a "
            "stub returning -EBUSY.",
    why="Split of a pinned page can now fail, so pins need not be tracked per tail. That frees "
        "tail _mapcount, and a THP can be mapped with 4 KiB PTEs in one process while another "
        "keeps its PMD.",
    link="https://git.kernel.org/pub/scm/linux/kernel/git/kas/linux.git (branch thp/refcounting/v1, not "
         "pinned); v2's equivalent, 10/19: https://lore.kernel.org/linux-mm/"
         "1415198994-15252-11-git-send-email-kirill.shutemov@linux.intel.com/",
    source="reconstructed",
    capabilities={"tail_pins": False, "pte_mapped_thp": True, "split_can_fail": True,
                  "split_huge_page_works": False},
)
P04.removes("__split_huge_page", "__split_huge_page_splitting", "__split_huge_page_refcount",
            "__split_huge_page_map",
            why="The old three-phase split went with tail-page refcounting; patch 06 brings a new one.")


@P04.replaces
def get_page(k, page):
    """Mirrors ``get_page()`` after patch 04: ``compound_head(page)->_count`` +1, nothing else."""
    mem_map = k.mem_map
    pages = _pages(page)
    heads = compound_head(mem_map, pages)
    if (mem_map["_count"][heads] <= 0).any():
        bad = int(pages[mem_map["_count"][heads] <= 0][0])
        raise VMBug(dump_page(mem_map, bad, "get_page: VM_BUG_ON(page_count <= 0)"))
    np.add.at(mem_map["_count"], heads, 1)
    k.cost("atomic", len(pages))


@P04.replaces
def get_page_foll(k, page):
    """Mirrors ``get_page_foll()`` after patch 04: the head's ``_count`` only."""
    np.add.at(k.mem_map["_count"], compound_head(k.mem_map, _pages(page)), 1)
    k.cost("atomic", len(_pages(page)))


def _drop_heads(k, pages, heads):
    """``_count`` -1 on each head (one per page); refuse a page already at 0."""
    mem_map = k.mem_map
    if (mem_map["_count"][heads] <= 0).any():
        bad = int(pages[mem_map["_count"][heads] <= 0][0])
        raise VMBug(dump_page(mem_map, bad, "put_page: VM_BUG_ON(page_count == 0)"))
    np.add.at(mem_map["_count"], heads, -1)


@P04.replaces
def put_page(k, page):
    """Mirrors ``put_page()``/``put_compound_page()`` after patch 04: head ``_count`` -1; free at 0."""
    pages = _pages(page)
    heads = compound_head(k.mem_map, pages)
    _drop_heads(k, pages, heads)
    # No nr_anon_transparent_hugepages change on free: patch 04 leaves mm/rmap.c alone (the
    # series' rmap.c lines are patch 07's), so v3.16's page_remove_rmap() keeps that count.
    _release(k, heads)
    k.cost("atomic", len(pages))


@P04.replaces
def gup_huge_pmd(k, pmd, addr, nr, write):
    """Mirrors x86 ``gup_huge_pmd()`` after patch 04: ``nr`` references on the head, no tail pins."""
    need = pt._PAGE_PRESENT | pt._PAGE_USER | (pt._PAGE_RW if write else 0)
    if int(pmd) & need != need:
        return None
    head = int(pt.pmd_pfn(pmd))
    pages = head + ((addr & ~HPAGE_PMD_MASK) >> 12) + np.arange(nr, dtype=np.int64)
    k.point("gup_huge_pmd: PMD read, head not yet referenced", head=head)
    k.mem_map["_count"][head] += nr
    k.point("gup_huge_pmd: head referenced", head=head, nr=nr)
    k.cost("atomic", 1)
    return pages


@P04.replaces
def do_huge_pmd_wp_page(k, mm, vma, address, pmdp, orig_pmd):
    """``do_huge_pmd_wp_page()`` once THPs can be PTE-mapped.

    [I] SIMPLIFICATION: reuse needs ``page_mapcount(head) == 1`` *and* no
    tail mapped by a PTE anywhere -- otherwise a process that split its PMD
    would see this one's writes.  v1's exact test is not archived; v4.5
    later added ``page_trans_huge_mapcount()`` for exactly this.  Note the
    cost: 512 struct pages read, because head ``_mapcount`` alone cannot say.
    """
    page = int(pt.pmd_pfn(orig_pmd))
    tails_mapped = (k.mem_map["_mapcount"][page + 1:page + HPAGE_PMD_NR] >= 0).any()
    if k.page_mapcount(page) == 1 and not tails_mapped:
        mem.set_entry(k, pmdp, pt.set_bits(orig_pmd, pt._PAGE_RW | pt._PAGE_DIRTY | pt._PAGE_ACCESSED))
        return 0
    return huge_pmd_copy(k, vma, address, pmdp, page)


@P04.replaces
def split_huge_pmd(k, vma, pmdp, address):
    """Mirrors ``split_huge_pmd()`` after patch 04: split just this PMD, if it is huge."""
    mem.check_pmd_arg(pmdp)
    if pt.pmd_trans_huge(mem.entry(k, pmdp)):
        k.__split_huge_pmd(vma, pmdp, address)


@P04.replaces
def __split_huge_pmd(k, vma, pmdp, address):
    """Mirrors ``__split_huge_pmd()`` (v1): one PMD becomes a table of 512 PTEs. Never fails.

    Each new PTE owns a reference: head ``_count`` += 511 (the PMD's own
    reference becomes subpage 0's).  Tails' ``_mapcount`` += 1; the head's
    ``_mapcount`` is unchanged because its PMD mapping turns into subpage 0's
    PTE mapping.  The PMD is cleared and flushed before the table is filled
    (v2's code comments on this order); the deposited table becomes the
    live one, so nothing is allocated.

    [I] The empty window is visible to walkers that read the PMD without its
    lock: a racing munmap() (``zap_pmd_range``) or fork (``copy_pmd_range``)
    sees ``pmd_none`` and skips the range -- thplab reproduces that in an
    interleaving, and ``check()`` reports the entries left outside any VMA.
    v4.5 keeps the PMD huge (``pmdp_invalidate``) until the table is in.

    [I] The new PTEs take their write and young bits from the PMD as it was
    before ``pmdp_clear_flush()``.  v2's code reads them from the entry after
    clearing it -- always read-only and old; v1's patch 04 is not archived, and
    thplab follows the evident intent.
    """
    mm = vma.mm
    ptl = ("ptl", pmdp[0])
    k.machine.smp.lock(k, ptl, "__split_huge_pmd: pmd_lock")
    pmd = mem.entry(k, pmdp)
    if not pt.pmd_trans_huge(pmd):
        k.machine.smp.unlock(k, ptl)
        return
    head = int(pt.pmd_pfn(pmd))
    haddr = address & HPAGE_PMD_MASK
    mem_map = k.mem_map
    mem_map["_count"][head] += HPAGE_PMD_NR - 1
    mem.set_entry(k, pmdp, 0)
    k.point("__split_huge_pmd: PMD cleared", pid=mm.pid, address=hex(haddr))
    k.machine.smp.flush_tlb_range(k, "__split_huge_pmd: pmdp_clear_flush")
    pgtable = mem.pgtable_trans_huge_withdraw(k, mm, pmdp)
    k.machine.pgtables.table(pgtable)[:] = mem.ptes_for_huge_pmd(k, vma, pmd, head)
    mem_map["_mapcount"][head + 1:head + HPAGE_PMD_NR] += 1
    mem.set_entry(k, pmdp, pt.mk_table_entry(pgtable))
    k.machine.smp.unlock(k, ptl)
    k.point("__split_huge_pmd: PTE table populated", pid=mm.pid, address=hex(haddr))


@P04.replaces
def split_huge_page_to_list(k, page, list=None):
    """``split_huge_page_to_list()`` between patches 04 and 06: a stub that always fails."""
    return -EBUSY


@P04.replaces
def check_refcounts(k, thps):
    """The v1 identities: ``head._count == Σ_i page_mapcount(head+i) + pins``.

    Head ``_mapcount`` + 1 == PMD mappings + PTE mappings of subpage 0;
    tail ``_mapcount`` + 1 == PTE mappings of that tail; tails' ``_count`` 0.
    ``thps`` yields every THP of memory, a stretch at a time
    (:class:`thplab.invariants.ThpBlocks`, a row per THP).
    """
    problems = {}
    for t in thps:
        if (t.mapcount[:, 0] + 1 != t.pmd + t.pte[:, 0]).any():
            problems.setdefault("head", "head _mapcount + 1 != PMD maps + PTE maps of subpage 0")
        if (t.mapcount[:, 1:] + 1 != t.pte[:, 1:]).any():
            problems.setdefault("tail", "tail _mapcount + 1 != PTEs mapping that tail")
        # int32 sums wrap as the atomic_t _count does
        want = (t.mapcount.sum(axis=1, dtype=np.int32) + HPAGE_PMD_NR
                + t.pins.sum(axis=1, dtype=np.int32))
        wrong = t.count[:, 0] != want
        if wrong.any():
            i = int(np.argmax(wrong))
            problems.setdefault("count", f"head {t.heads[i]:#x}: _count {t.count[i, 0]} != "
                                         "Σ page_mapcount + pins")
        if t.count[:, 1:].any():
            problems.setdefault("tail count", "a tail's _count is not 0")
        if not np.bitwise_and.reduce(t.flags[:, 1:], axis=None) & (1 << PG.tail):   # in every tail
            problems.setdefault("PG_tail", "a THP subpage lost PG_tail")
    return list(problems.values())
