"""v4.5 step 4 (emails 26-28 of v12): PMD maps get their own counter; PTE maps the subpages'.

In the RFC a head's ``_mapcount`` counted PMD mappings *and* PTE mappings of
subpage 0, so neither could be read back.  v4.5 separates them (26/37,
53f9263baba6): a PMD mapping moves ``compound_mapcount`` (kept in page[1]) --
one atomic, not 512 -- and every subpage's ``_mapcount`` counts only the PTEs
mapping that subpage.  ``page_mapcount(subpage)`` adds the two.

``PG_double_map`` (in page[1]) is for the case a 4 KiB unmap must still be
told apart from the last unmap of that subpage: when a PMD is split while
another PMD still maps the page, every subpage's ``_mapcount`` gets one extra
count (step 5 does it), so that a subpage's ``_mapcount`` reaching -1 still
means "nothing maps it"; ``page_mapcount()`` takes the extra count back off.

``page_mapped()`` of a THP asks both counters (27/37, e1534ae95004).  28/37
(NUMA faults) is not modelled.

Identity (docs/v4.5-stack.md §2), per THP, ``cm`` = compound_mapcount:
``_count(head) = cm + Σ_i page PTE maps(i) + pins``, i.e.
``(cm+1) + Σ(_mapcount_i+1) - 512·DoubleMap + pins``.
"""

import numpy as np

from ... import memory as mem
from ...errors import VMBug
from ...page_alloc import dump_page
from ...page_flags import PG, PAGE_MAPPING_ANON, PageCompound, PageHead, compound_head
from ...params import HPAGE_PMD_NR
from .._kernel import Patch
from ..p00_base import _pages
from ._common import CM_FIELD, DOUBLE_MAP, cm_raw, double_mapped, email

S04 = Patch(
    number=4,
    series="v4.5",
    emails="26-28",
    subject="compound_mapcount for PMD maps, _mapcount for PTE maps, PageDoubleMap",
    files={"include/linux/mm.h": "26, 27/37", "include/linux/mm_types.h": "26/37",
           "include/linux/page-flags.h": "26/37", "include/linux/rmap.h": "26/37",
           "mm/rmap.c": "26/37", "mm/huge_memory.c": "26/37", "mm/util.c": "26/37",
           "mm/page_alloc.c": "26/37", "mm/memory.c": "28/37"},
    summary="compound_mapcount (page[1]) counts PMD mappings, each subpage's _mapcount its PTE "
            "mappings; page_mapcount(subpage) is their sum, minus 1 while PageDoubleMap; "
            "total_mapcount() counts every page-table entry mapping any part of the THP.",
    why="The RFC's head _mapcount mixed PMD maps with subpage 0's PTE maps; counting PMD maps "
        "in all 512 subpages would cost 512 atomics per map.",
    link=email(26),
    capabilities={"compound_mapcount": True},
)


def _compound(k, pages):
    """``PageCompound`` of ``pages`` and their heads."""
    return PageCompound(k.mem_map, pages), compound_head(k.mem_map, pages)


@S04.replaces
def compound_mapcount(k, page):
    """Mirrors ``compound_mapcount()`` (4.5.7 include/linux/mm.h#L428): PMD maps of the THP; 0 if not compound."""
    pages = np.asarray(page)
    compound, heads = _compound(k, pages)
    return np.where(compound, cm_raw(k, heads) + 1, 0)


@S04.replaces
def PageDoubleMap(k, page):
    """Mirrors ``PageDoubleMap()`` (4.5.7 include/linux/page-flags.h#L542): head only; 0 on a tail."""
    pages = np.asarray(page)
    return PageHead(k.mem_map, pages) & double_mapped(k, np.minimum(pages, len(k.mem_map) - 2))


@S04.replaces
def page_mapcount(k, page):
    """Mirrors ``page_mapcount()``/``__page_mapcount()`` (4.5.7 include/linux/mm.h#L448, mm/util.c#L386).

    A 4 KiB page: ``_mapcount + 1``.  A THP subpage: its PTE maps plus the
    THP's PMD maps (``compound_mapcount``), minus the DoubleMap extra count.
    """
    pages = np.asarray(page)
    mem_map = k.mem_map
    compound, heads = _compound(k, pages)
    own = mem_map["_mapcount"][pages] + 1
    heads = np.where(compound, heads, 0)
    extra = cm_raw(k, heads) + 1 - double_mapped(k, heads)
    return np.where(compound, own + extra, own)


@S04.replaces
def total_mapcount(k, head):
    """Mirrors ``total_mapcount()`` (4.5.7 mm/huge_memory.c#L3316): page-table entries mapping any part.

    A PMD counts 1, a PTE counts 1.  ``head`` must be a THP head (the kernel
    has a VM_BUG_ON for a tail).
    """
    mem_map = k.mem_map
    head = int(head)
    ret = int((mem_map["_mapcount"][head:head + HPAGE_PMD_NR] + 1).sum())
    if double_mapped(k, head):
        ret -= HPAGE_PMD_NR
    return ret + int(cm_raw(k, head)) + 1


@S04.replaces
def page_mapped(k, page):
    """Mirrors ``page_mapped()`` (4.5.7 include/linux/mm.h#L1014): any PMD or any PTE maps the THP."""
    page = int(page)
    mem_map = k.mem_map
    if not PageCompound(mem_map, page):
        return bool(mem_map["_mapcount"][page] >= 0)
    head = int(compound_head(mem_map, page))
    return bool(cm_raw(k, head) >= 0 or (mem_map["_mapcount"][head:head + HPAGE_PMD_NR] >= 0).any())


@S04.replaces
def page_add_new_anon_rmap(k, page, vma, address, compound=False):
    """Mirrors ``page_add_new_anon_rmap()`` (4.5.7 mm/rmap.c#L1262).

    ``compound``: ``compound_mapcount`` := 0 and the THP counts in
    ``nr_anon_transparent_hugepages``; the subpages' ``_mapcount`` stay -1.
    Otherwise a 4 KiB page's ``_mapcount`` := 0 (a THP is always mapped
    first by a PMD).  Vectorized over pages and their addresses.

    SIMPLIFICATION: ``prep_compound_page()`` sets ``compound_mapcount`` to -1
    when the THP is allocated; thplab writes the 0 here directly.
    """
    if not compound:
        return mem.page_add_new_anon_rmap(k, page, vma, address)
    mem_map = k.mem_map
    page = np.atleast_1d(np.asarray(page, dtype=np.int64))
    mem_map[CM_FIELD][page + 1] = 0
    mem_map["mapping"][page] = vma.anon_vma.id << 2 | PAGE_MAPPING_ANON
    mem_map["index"][page] = vma.linear_page_index(np.atleast_1d(address))
    mem_map["flags"][page] |= np.uint32((1 << PG.swapbacked) | (1 << PG.uptodate) | (1 << PG.lru))
    k.machine.vmstat.count("nr_anon_transparent_hugepages", len(page))


@S04.replaces
def page_dup_rmap(k, page, compound=False):
    """Mirrors ``page_dup_rmap()`` (4.5.7 include/linux/rmap.h#L173): fork adds one mapping.

    ``compound``: the THPs' ``compound_mapcount`` +1; otherwise each page's ``_mapcount``.
    """
    pages = _pages(page)
    if compound:
        np.add.at(k.mem_map[CM_FIELD], pages + 1, 1)
    else:
        np.add.at(k.mem_map["_mapcount"], pages, 1)


@S04.replaces
def page_remove_rmap(k, page, compound=False):
    """Mirrors ``page_remove_rmap()`` (4.5.7 mm/rmap.c#L1378) for anon pages, vectorized.

    ``compound``: :func:`page_remove_anon_compound_rmap` for each THP.
    Otherwise ``_mapcount`` -1 of each page.  (``NR_ANON_PAGES``, which both
    also move, is not modelled.)
    """
    pages = _pages(page)
    if compound:
        k.page_remove_anon_compound_rmap(pages)
        return
    np.add.at(k.mem_map["_mapcount"], pages, -1)


@S04.replaces
def page_remove_anon_compound_rmap(k, heads):
    """Mirrors ``page_remove_anon_compound_rmap()`` (4.5.7 mm/rmap.c#L1333), vectorized over THPs.

    ``compound_mapcount`` -1.  At the last PMD mapping (-1): the THP leaves
    ``nr_anon_transparent_hugepages``, and if ``PG_double_map`` was set it is
    cleared and every subpage's ``_mapcount`` gives back its extra count;
    ``nr`` = the subpages that are then mapped by nothing (all 512 without
    DoubleMap).  From step 7 a THP with ``nr > 0`` is queued for a deferred split.
    """
    compound_unmap(k, heads)


def compound_unmap(k, heads):
    """The counting of :func:`page_remove_anon_compound_rmap`; returns the THPs with ``nr > 0``."""
    mem_map = k.mem_map
    heads = _pages(heads)
    np.add.at(mem_map[CM_FIELD], heads + 1, -1)
    last = np.unique(heads[cm_raw(k, heads) == -1])
    if not len(last):
        return last
    if (cm_raw(k, heads) < -1).any():
        bad = int(heads[cm_raw(k, heads) < -1][0])
        raise VMBug(dump_page(mem_map, bad, "page_remove_rmap: compound_mapcount below -1"))
    k.machine.vmstat.count("nr_anon_transparent_hugepages", -len(last))
    dm = last[double_mapped(k, last)]
    nr = np.full(len(last), HPAGE_PMD_NR)
    if len(dm):
        mem_map["flags"][dm + 1] &= ~DOUBLE_MAP
        idx = dm[:, None] + np.arange(HPAGE_PMD_NR)
        mem_map["_mapcount"][idx] -= 1
        nr[np.searchsorted(last, dm)] = (mem_map["_mapcount"][idx] == -1).sum(axis=1)
    return last[nr > 0]


@S04.replaces
def check_refcounts(k, thps):
    """The v4.5 identities (docs/v4.5-stack.md §2), per THP of ``thps`` (a row per THP).

    ``compound_mapcount + 1`` = PMDs mapping the THP; a subpage's ``_mapcount
    + 1`` = PTEs mapping it, + 1 while DoubleMap; DoubleMap only while a PMD
    maps it; ``_count(head) = total_mapcount + pins``; tails' ``_count`` 0;
    ``nr_anon_transparent_hugepages`` = THPs a PMD maps.
    """
    problems = {}
    for _ in identity_checks(k, thps, problems):
        pass
    return list(problems.values())


def identity_checks(k, thps, problems):
    """Check each stretch of ``thps`` against the v4.5 identities into ``problems``; yield it on."""
    pmd_mapped = 0
    for t in thps:
        cm = cm_raw(k, t.heads).astype(np.int64)
        dm = (t.flags[:, 1] & DOUBLE_MAP) != 0
        pmd_mapped += int((cm >= 0).sum())
        if (cm + 1 != t.pmd).any():
            i = int(np.argmax(cm + 1 != t.pmd))
            problems.setdefault("cm", f"THP {t.heads[i]:#x}: compound_mapcount {cm[i] + 1} but "
                                      f"{t.pmd[i]} PMDs map it")
        if (t.mapcount + 1 != t.pte + dm[:, None]).any():
            i = int(np.argmax((t.mapcount + 1 != t.pte + dm[:, None]).any(axis=1)))
            problems.setdefault("mapcount", f"THP {t.heads[i]:#x}: a subpage's _mapcount + 1 != the PTEs "
                                            "mapping it (+ 1 while PageDoubleMap)")
        if (dm & (cm < 0)).any():
            problems.setdefault("dm", "PageDoubleMap set on a THP no PMD maps")
        # int32 sums wrap as the atomic_t _count does
        want = (cm + 1 + t.pte.sum(axis=1, dtype=np.int32) + t.pins.sum(axis=1, dtype=np.int32))
        wrong = t.count[:, 0] != want
        if wrong.any():
            i = int(np.argmax(wrong))
            problems.setdefault("count", f"head {t.heads[i]:#x}: _count {t.count[i, 0]} != "
                                         f"total_mapcount + pins ({want[i]})")
        if t.count[:, 1:].any():
            problems.setdefault("tail count", "a tail's _count is not 0")
        yield t
    if k.machine.vmstat["nr_anon_transparent_hugepages"] != pmd_mapped:
        problems["nr_anon_thp"] = (f"nr_anon_transparent_hugepages "
                                   f"{k.machine.vmstat['nr_anon_transparent_hugepages']} != "
                                   f"{pmd_mapped} THPs mapped by a PMD")
