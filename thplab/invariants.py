"""Consistency checks that must hold after every operation, at every level.

The page tables are the ground truth for *mappings* and ``Machine.pins``
for *pins*; ``struct page`` counters must agree with both, by the identity of
the booted level (``kernel.check_refcounts``), and nothing may be lost:
every allocated page is mapped, pinned, a live or deposited page table, or a
knowingly held part of a compound page.
"""

import numpy as np

from . import pgtable as pt
from .errors import InvariantViolation
from .page_flags import PAGE_MAPPING_ANON, PG, PageHead, Use, compound_head
from .params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE, TASK_SIZE


def _rows(m, pfns):
    rows = m.pgtables.row_of[pfns]
    if (rows < 0).any():
        raise InvariantViolation(f"an entry points at pfn {int(pfns[rows < 0][0]):#x}, "
                                 "which is not a page table")
    return m.pgtables.entries[rows]


def mapping_counts(m):
    """Count mappings by walking every process's page tables, vectorized per level.

    Returns ``pmd_maps`` and ``pte_maps`` (per pfn: huge PMDs whose head it
    is, PTEs mapping it), ``tables`` (every table pfn reachable from a PGD)
    and per-pid ``rss`` and ``nr_ptes`` as the tables say.
    """
    n = m.nr_pages
    pmd_heads, pte_pfns, tables = [], [], []
    per_mm = {}
    for pid, mm in m.processes.items():
        # Walk level by level, carrying each entry's virtual address along.
        g = m.pgtables.table(mm.pgd)
        gi = np.flatnonzero(g)
        pud_t, va = pt.pte_pfn(g[gi]), gi.astype(np.int64) << 39
        u = _rows(m, pud_t)
        r, c = np.nonzero(u)
        pmd_t, va = pt.pte_pfn(u[r, c]), va[r] + (c.astype(np.int64) << 30)
        d = _rows(m, pmd_t)
        r, c = np.nonzero(d)
        dv, va = d[r, c], va[r] + (c.astype(np.int64) << 21)
        huge = pt.pmd_trans_huge(dv)
        heads, huge_va = pt.pmd_pfn(dv[huge]), va[huge]
        pte_t, table_va = pt.pte_pfn(dv[~huge]), va[~huge]
        e = _rows(m, pte_t)
        r, c = np.nonzero(pt.pte_present(e))
        ptes, pte_va = pt.pte_pfn(e[r, c]), table_va[r] + (c.astype(np.int64) << 12)
        pmd_heads.append(heads)
        pte_pfns.append(ptes)
        deposited = [p for lst in mm.pmd_huge_pte.values() for p in lst]
        tables.append(np.concatenate([[mm.pgd], pud_t, pmd_t, pte_t, np.asarray(deposited, np.int64)]))
        per_mm[pid] = {"rss": len(heads) * HPAGE_PMD_NR + len(ptes),
                       "nr_ptes": len(pte_t) + len(deposited),
                       "huge_per_table": _huge_per_table(m, pmd_t),
                       "deposited": {t: len(v) for t, v in mm.pmd_huge_pte.items()},
                       "outside_vmas": _outside(mm, huge_va, HPAGE_PMD_SIZE) + _outside(mm, pte_va, PAGE_SIZE)}
    cat = (lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64))
    return {"pmd_maps": np.bincount(cat(pmd_heads), minlength=n),
            "pte_maps": np.bincount(cat(pte_pfns), minlength=n),
            "tables": cat(tables), "per_mm": per_mm}


def _outside(mm, starts, size):
    """How many of the ranges ``[start, start + size)`` are not inside one VMA of ``mm``."""
    if not len(starts):
        return 0
    if not mm.vmas:
        return len(starts)
    lo = np.array([v.vm_start for v in mm.vmas], dtype=np.int64)
    hi = np.array([v.vm_end for v in mm.vmas], dtype=np.int64)
    i = np.searchsorted(lo, starts, side="right") - 1
    inside = (i >= 0) & (starts + size <= hi[np.maximum(i, 0)])
    return int((~inside).sum())


def _huge_per_table(m, pmd_tables):
    out = {}
    for t in pmd_tables.tolist():
        nr = int(pt.pmd_trans_huge(m.pgtables.table(t)).sum())
        if nr:
            out[t] = nr
    return out


def held_pages(m, counts=None):
    """Subpages of compound pages that no page table maps and nobody pins.

    These are the memory the RFC's partial munmap() keeps allocated: the cover
    letter warns that unmapping part of a THP frees nothing until the page is
    split.
    Returns ``{head pfn: number of such subpages}`` for THPs that have any.
    """
    counts = counts or mapping_counts(m)
    mem_map = m.mem_map
    heads = np.flatnonzero(PageHead(mem_map, np.arange(m.nr_pages)))
    if not len(heads):
        return {}
    idx = heads[:, None] + np.arange(HPAGE_PMD_NR)
    used = (counts["pte_maps"][idx] > 0) | (m.pins[idx] > 0) | (m.leaked[idx] > 0)
    used |= (counts["pmd_maps"][heads] > 0)[:, None]
    idle = (~used).sum(axis=1)
    return {int(h): int(i) for h, i in zip(heads, idle) if i}


def vma_problems(m):
    """Each process's VMAs: page-aligned, non-empty, sorted, disjoint, inside user space."""
    out = []
    for pid, mm in m.processes.items():
        prev_end = 0
        for vma in mm.vmas:
            if vma.mm is not mm:
                out.append(f"pid {pid}: {vma} belongs to another mm")
            if (vma.vm_start | vma.vm_end) % PAGE_SIZE or not vma.vm_start < vma.vm_end:
                out.append(f"pid {pid}: {vma} is empty or not page aligned")
            if vma.vm_start < prev_end:
                out.append(f"pid {pid}: {vma} is out of order or overlaps the VMA before it")
            if vma.vm_start < 0 or vma.vm_end > TASK_SIZE:
                out.append(f"pid {pid}: {vma} is outside user space (0..{TASK_SIZE:#x})")
            prev_end = max(prev_end, vma.vm_end)
    return out


def anon_vma_problems(m, mapped):
    """The anon_vma registry: what VMAs link is live, nothing unreachable is kept.

    ``mapped`` (a mask over pfns) marks the pages some page table maps: each must point at a live
    anon_vma (the kernel's rmap walk starts there).
    """
    out = []
    live = m.anon_vmas
    vmas = [v for mm in m.processes.values() for v in mm.vmas]
    linked = {id(v) for v in vmas}
    for vma in vmas:
        for av in vma.anon_vma_chain + ([vma.anon_vma] if vma.anon_vma is not None else []):
            if live.get(av.id) is not av or vma not in av.vmas:
                out.append(f"{vma} is linked to {av}, which is freed or does not list it")
    roots = {}
    for av in live.values():
        if av.root is not av:
            roots[av.root.id] = roots.get(av.root.id, 0) + 1
    for av in live.values():
        if any(id(v) not in linked for v in av.vmas):
            out.append(f"{av} lists a VMA that is no longer mapped")
        want = (1 if av.vmas else 0) + roots.get(av.id, 0)
        if av.refcount != want:
            out.append(f"{av}: refcount {av.refcount}, expected {want} "
                       "(1 while VMAs link it + 1 per anon_vma it is the root of)")
        if live.get(av.root.id) is not av.root:
            out.append(f"{av}: its root anon_vma {av.root.id} was freed")
    mapping = m.mem_map["mapping"][mapped]
    ids = mapping[(mapping & PAGE_MAPPING_ANON) != 0] >> 2
    alive = np.zeros(max(live, default=0) + 2, bool)      # id -> live, one gather per page
    alive[list(live)] = True
    dangling = ids[~alive[np.minimum(ids, len(alive) - 1)]]
    if len(dangling):
        out.append(f"a mapped page points at freed anon_vma {int(dangling[0])}")
    return out


def problems(m):
    """Every violated invariant, as sentences; empty when the machine is consistent.

    Works on contiguous copies of the ``struct page`` fields it reads (a field of
    the structured ``mem_map`` is a strided view) and on whole-array masks, so a
    4 GiB machine (2^20 pages) is checked in tens of milliseconds.
    """
    out = []
    mem_map = m.mem_map
    k = m.kernel
    counts = mapping_counts(m)
    # A leaked reference (a posted bug run as posted) is held like a pin nobody can drop.
    pmd_maps, pte_maps, pins = counts["pmd_maps"], counts["pte_maps"], m.pins + m.leaked
    count = np.ascontiguousarray(mem_map["_count"])
    mapcount = np.ascontiguousarray(mem_map["_mapcount"])
    flags = np.ascontiguousarray(mem_map["flags"])
    use = np.ascontiguousarray(mem_map["use"])
    free = use == Use.free
    mapped = (pmd_maps != 0) | (pte_maps != 0)
    pinned = pins != 0
    out.extend(vma_problems(m))
    out.extend(anon_vma_problems(m, mapped))

    # Free pages: unreferenced, unmapped, unpinned, clean.
    bad = free & ((count != 0) | ((mapcount != -1) & (mapcount != -128))
                  | (flags != 0) | pinned | mapped)
    if bad.any():
        out.append(f"free page {int(np.argmax(bad)):#x} is referenced, mapped, pinned or flagged")
    nr_free = int(np.count_nonzero(free))
    if nr_free != m.allocator.nr_free_pages or m.vmstat["nr_free_pages"] != nr_free:
        out.append("nr_free_pages disagrees with the pages marked free")

    # Page tables: reachable exactly once, refcount 1, accounted.
    live = m.pgtables.pfn_of[m.pgtables.pfn_of >= 0]
    tables = counts["tables"]
    if len(np.unique(tables)) != len(tables):
        out.append("a page-table page is used twice")
    if set(live.tolist()) != set(tables.tolist()):
        out.append(f"page tables not reachable from any process: "
                   f"{sorted(set(live.tolist()) - set(tables.tolist()))[:5]}")
    pg = np.flatnonzero(use == Use.pgtable)
    if set(pg.tolist()) != set(live.tolist()):
        out.append("pages marked as page tables differ from the tables in use")
    if (count[pg] != 1).any():
        out.append("a page-table page has _count != 1")
    nr_pte_tables = int((m.pgtables.level[m.pgtables.pfn_of >= 0] == 1).sum())
    if m.vmstat["nr_page_table_pages"] != nr_pte_tables:
        out.append(f"nr_page_table_pages {m.vmstat['nr_page_table_pages']} != {nr_pte_tables} PTE tables")
    for pid, mm in m.processes.items():
        c = counts["per_mm"][pid]
        if mm.anon_rss + mm.file_rss != c["rss"]:
            out.append(f"pid {pid}: rss {mm.anon_rss}+{mm.file_rss} != {c['rss']} pages mapped")
        if mm.file_rss:
            out.append(f"pid {pid}: MM_FILEPAGES is {mm.file_rss} for anonymous memory")
        if mm.nr_ptes != c["nr_ptes"]:
            out.append(f"pid {pid}: nr_ptes {mm.nr_ptes} != {c['nr_ptes']} PTE tables")
        if c["outside_vmas"]:
            out.append(f"pid {pid}: {c['outside_vmas']} page-table entries map addresses outside every VMA")
        if c["huge_per_table"] != c["deposited"]:
            out.append(f"pid {pid}: deposited tables {c['deposited']} != huge PMDs {c['huge_per_table']}")

    # Anon pages: mapped or pinned pages are not free; non-compound counts agree.
    anon = use == Use.anon
    if ((mapped | pinned) & ~anon).any():
        out.append("a mapped or pinned page is not an allocated anon page")
    is_head = (flags & np.uint32(1 << PG.head)) != 0
    is_tail = (flags & np.uint32(1 << PG.tail)) != 0
    single = np.flatnonzero(anon & ~(is_head | is_tail))
    s_pte, s_pins = pte_maps[single], pins[single]
    wrong = mapcount[single] + 1 != s_pte
    if wrong.any():
        p = int(single[np.argmax(wrong)])
        out.append(f"page {p:#x}: _mapcount {mapcount[p]} but {pte_maps[p]} PTEs map it")
    wrong = count[single] != s_pte + s_pins
    if wrong.any():
        p = int(single[np.argmax(wrong)])
        out.append(f"page {p:#x}: _count {count[p]} != {pte_maps[p]} maps + {pins[p]} pins")
    if (pmd_maps[single] != 0).any():
        out.append("a huge PMD maps a page that is not a THP head")
    lost = (s_pte == 0) & (s_pins == 0)
    if lost.any():
        out.append(f"page {int(single[np.argmax(lost)]):#x} is allocated but neither mapped nor pinned (leak)")

    # THPs: the level's accounting identity, and no compound page is lost.
    out.extend(k.check_refcounts(pmd_maps, pte_maps, pins))
    heads = np.flatnonzero(is_head)
    if len(heads):
        first_page = np.ascontiguousarray(mem_map["first_page"])
        if not (heads % HPAGE_PMD_NR).any() and m.nr_pages % HPAGE_PMD_NR == 0:
            # THPs are order-9 buddy blocks, hence 2 MiB aligned: look at whole blocks
            rows = heads // HPAGE_PMD_NR
            used = ((pte_maps != 0) | pinned).reshape(-1, HPAGE_PMD_NR).any(axis=1)[rows]
            used |= pmd_maps[heads] > 0
            tails_ok = ((is_tail.reshape(-1, HPAGE_PMD_NR)[rows, 1:]).all()
                        and (first_page.reshape(-1, HPAGE_PMD_NR)[rows, 1:] == heads[:, None]).all()
                        and not is_tail[heads].any())
        else:
            idx = heads[:, None] + np.arange(HPAGE_PMD_NR)
            used = (pte_maps[idx] > 0).any(axis=1) | (pins[idx] > 0).any(axis=1) | (pmd_maps[heads] > 0)
            tails_ok = not (compound_head(mem_map, idx) != heads[:, None]).any()
        if (~used).any():
            out.append(f"THP {int(heads[~used][0]):#x} is allocated but nothing maps or pins it (leak)")
        if not tails_ok:
            out.append("a THP's tails do not all point at its head")
        if (flags[heads] & np.uint32(1 << PG.compound_lock)).any() and not m.smp.held:
            out.append("compound_lock left held")
    return out


def check(m):
    """Raise :class:`InvariantViolation` listing every problem, if any."""
    found = problems(m)
    if found:
        raise InvariantViolation(f"level {m.kernel.level}: " + "; ".join(found))
