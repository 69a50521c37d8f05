"""Consistency checks that must hold after every operation, at every level.

The page tables are the ground truth for *mappings* and ``Machine.pins``
for *pins*; ``struct page`` counters must agree with both, by the identity of
the booted level (``kernel.check_refcounts``), and nothing may be lost:
every allocated page is mapped, pinned, a live or deposited page table, or a
knowingly held part of a compound page.

``mem_map`` is read :data:`CHUNK` pages at a time, the THPs' 2 MiB blocks
apart from the others, with the PTEs, pins and leaked references of the same
pages; the huge PMDs, one per THP at most per process, are a sorted list.  So
a check's temporaries are a few MiB whatever the size of the machine, plus one
int32 count of PTEs per page, which is resident only where PTEs map pages; and
each stretch stays in the CPU cache while its fields are read one after another.
"""

import mmap
from typing import NamedTuple

import numpy as np

from . import pgtable as pt
from .errors import InvariantViolation
from .page_flags import PAGE_MAPPING_ANON, PG, PageHead, Use
from .params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_BUDDY_MAPCOUNT_VALUE, PAGE_SIZE, TASK_SIZE

#: Pages :func:`problems` reads at a time: 64 whole 2 MiB blocks (1.2 MiB of ``mem_map``;
#: measured at 16 GiB, 32 and 128 blocks were slower).
CHUNK = 1 << 15
#: PTE tables :func:`mappings` reads the entries of at a time (1 MiB).
TABLE_BATCH = 1 << 8

_HEAD, _TAIL, _LOCK = (np.uint32(1 << bit) for bit in (PG.head, PG.tail, PG.compound_lock))
_FREE, _ANON, _PGTABLE = int(Use.free), int(Use.anon), int(Use.pgtable)
#: :func:`_kind` of a THP's head and of its tails.
_HEAD_KIND, _TAIL_KIND = 4 | _ANON, 8 | _ANON


def _kind(flags, use):
    """``use`` + 4 with PG_head + 8 with PG_tail: one small number per page to compare."""
    return ((flags & (_HEAD | _TAIL)) >> (PG.head - 2)) | use


class ThpBlocks(NamedTuple):
    """THPs as a level's ``check_refcounts`` reads them: one row per THP, one column per subpage.

    ``heads`` are the head pfns and ``pmd`` the huge PMDs mapping each head;
    ``count``, ``mapcount`` and ``flags`` are the ``struct page`` fields of the
    512 subpages, ``pte`` the PTEs mapping each subpage and ``pins`` its pins
    (``Machine.pins`` + ``Machine.leaked``).  Read-only.
    """

    heads: np.ndarray
    pmd: np.ndarray
    count: np.ndarray
    mapcount: np.ndarray
    flags: np.ndarray
    pte: np.ndarray
    pins: np.ndarray


def _distinct(values):
    """Sorted distinct ``values`` and how many times each occurs.

    Not ``np.unique``, which took 20x a sort here (numpy 2.4); a stable sort is a
    timsort, which merges the runs of ascending pfns a page-table walk yields.
    """
    values = np.sort(values, kind="stable")
    starts = np.flatnonzero(np.r_[len(values) > 0, values[1:] != values[:-1]])
    return values[starts], np.diff(np.r_[starts, len(values)])


def _isin(values, sorted_set):
    """Mask of ``values`` found in the sorted array ``sorted_set``."""
    if not len(sorted_set):
        return np.zeros(len(values), bool)
    return sorted_set[np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)] == values


def _count_at(values, counts):
    """``counts`` (from :func:`_distinct`) of each of ``values``, 0 where it is not counted."""
    distinct, nr = counts
    if not len(distinct):
        return np.zeros(len(values), np.int32)
    i = np.minimum(np.searchsorted(distinct, values), len(distinct) - 1)
    return np.where(distinct[i] == values, nr[i], 0).astype(np.int32)


def _lazy_zeros(n):
    """``n`` int32 zeros in private anonymous memory: the OS zero-fills a page when it is
    first written, so only the pages written become resident (``np.zeros`` may get memory
    ``malloc`` has to clear, all of it resident; a shared mapping is resident once read)."""
    if not hasattr(mmap, "MAP_PRIVATE"):          # Windows
        return np.zeros(n, np.int32)
    return np.frombuffer(mmap.mmap(-1, 4 * n, flags=mmap.MAP_PRIVATE), dtype=np.int32)


def _in_memory(m, pfns):
    if len(pfns) and pfns.max() >= m.nr_pages:
        raise InvariantViolation(f"an entry points at pfn {int(pfns.max()):#x}, beyond the last "
                                 f"page ({m.nr_pages - 1:#x})")
    return pfns


def _rows(m, pfns):
    rows = m.pgtables.row_of[_in_memory(m, pfns)]
    if (rows == -1).any():
        raise InvariantViolation(f"an entry points at pfn {int(pfns[rows == -1][0]):#x}, "
                                 "which is not a page table")
    return m.pgtables.rows(pfns)


def mappings(m, pte_maps=None):
    """Every mapping in every process's page tables, vectorized per level.

    Returns ``pmd`` (the head pfn of each huge PMD) and ``pte`` (the pfn of each
    present PTE), one element per mapping; ``tables`` (every table pfn
    reachable from a PGD, deposited ones included) and per-pid ``rss``,
    ``nr_ptes``, ``huge_per_table``, ``deposited`` and ``outside_vmas`` as the
    tables say.  With ``pte_maps`` (an int32 array, a count per pfn) the PTEs
    are added to it instead and ``pte`` is empty: a list of every PTE would
    take 4 bytes each.
    """
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
        huge_d = pt.pmd_trans_huge(d)
        r, c = np.nonzero(d)
        dv, va, huge = d[r, c], va[r] + (c.astype(np.int64) << 21), huge_d[r, c]
        heads = _in_memory(m, pt.pmd_pfn(dv[huge]))
        pte_t, table_va = pt.pte_pfn(dv[~huge]), va[~huge]
        outside = _outside(mm, va[huge], HPAGE_PMD_SIZE)
        nr_mapped = len(heads) * HPAGE_PMD_NR
        # PTE tables a batch at a time, so that the copies of their entries stay small.
        for i in range(0, len(pte_t), TABLE_BATCH):
            e = _rows(m, pte_t[i:i + TABLE_BATCH])
            r, c = np.nonzero(pt.pte_present(e))
            pfns = _in_memory(m, pt.pte_pfn(e[r, c]))
            if pte_maps is None:
                pte_pfns.append(pfns.astype(np.int32))    # a pfn of MAX_MEM (2^28 pages) fits
            else:
                pfns, nr = _distinct(pfns)    # no np.add.at: 180 ns a PTE here
                pte_maps[pfns] += nr.astype(np.int32)
            outside += _outside(mm, table_va[i + r] + (c.astype(np.int64) << 12), PAGE_SIZE)
            nr_mapped += len(r)
        pmd_heads.append(heads)
        deposited = [p for lst in mm.pmd_huge_pte.values() for p in lst]
        tables.append(np.concatenate([[mm.pgd], pud_t, pmd_t, pte_t, np.asarray(deposited, np.int64)]))
        per_mm[pid] = {"rss": nr_mapped,
                       "nr_ptes": len(pte_t) + len(deposited),
                       "huge_per_table": {int(t): int(n) for t, n in zip(pmd_t, huge_d.sum(axis=1)) if n},
                       "deposited": {t: len(v) for t, v in mm.pmd_huge_pte.items()},
                       "outside_vmas": outside}
    cat = (lambda xs, dtype: np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype))
    return {"pmd": cat(pmd_heads, np.int64), "pte": cat(pte_pfns, np.int32),
            "tables": cat(tables, np.int64), "per_mm": per_mm}


def mapping_counts(m):
    """Count mappings by walking every process's page tables (see :func:`mappings`).

    Returns ``pmd_maps`` and ``pte_maps`` (per pfn: huge PMDs whose head it
    is, PTEs mapping it), ``tables`` (every table pfn reachable from a PGD)
    and per-pid ``rss`` and ``nr_ptes`` as the tables say.
    """
    w = mappings(m)
    return {"pmd_maps": np.bincount(w["pmd"], minlength=m.nr_pages),
            "pte_maps": np.bincount(w["pte"], minlength=m.nr_pages),
            "tables": w["tables"], "per_mm": w["per_mm"]}


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


def anon_vma_problems(m):
    """The anon_vma registry: what VMAs link is live, nothing unreachable is kept.

    (That each mapped page points at a live anon_vma is checked by :func:`problems`
    as it reads the pages: the kernel's rmap walk starts there.)
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
    return out


class _Scan:
    """Every page of ``mem_map`` checked once, :data:`CHUNK` pages at a time.

    A THP is an order-9 buddy block: it fills an aligned 2 MiB block, an anon
    head and 511 anon tails, and no other page is compound.  So the 2 MiB
    blocks are told apart by their first page: :meth:`thps` checks the shape
    of the THPs and yields them (:class:`ThpBlocks`) for the level's
    ``check_refcounts``; :meth:`small_pages` checks the free, page-table and
    4 KiB anon pages of the other blocks.  Both check that each mapped page
    points at a live anon_vma.  Problems go to ``note(key, text)`` (the first
    of each key is kept); the THPs something maps or pins, the pfns of page
    tables and the number of free pages are gathered on the way.
    """

    def __init__(self, m, pmd, pte_maps, note):
        self.note = note
        # Views, a 2 MiB block per row.
        self.fields = {f: m.mem_map[f].reshape(-1, HPAGE_PMD_NR)
                       for f in ("flags", "use", "_count", "_mapcount", "first_page")}
        self.pte, self.pins = pte_maps.reshape(-1, HPAGE_PMD_NR), m.pins.reshape(-1, HPAGE_PMD_NR)
        # Leaked references are rare: read them only if there is one (as unsigned, a
        # negative count is not 0 either).
        leaked = m.leaked.view(np.uint32).max() != 0
        self.leaked = m.leaked.reshape(-1, HPAGE_PMD_NR) if leaked else None
        self.mapping = m.mem_map["mapping"]
        self.cm_in_page1 = bool(m.kernel.caps.get("compound_mapcount"))
        self.live = np.zeros(max(m.anon_vmas, default=0) + 2, bool)   # anon_vma id -> live
        self.live[list(m.anon_vmas)] = True
        first = m.mem_map[::HPAGE_PMD_NR]
        thp = _kind(first["flags"], first["use"]) == _HEAD_KIND
        self.thp_rows, self.small_rows = np.flatnonzero(thp), np.flatnonzero(~thp)
        self.heads = self.thp_rows * HPAGE_PMD_NR
        self.pmd_maps = _count_at(self.heads, pmd)
        self.used = self.pmd_maps > 0          # THPs something maps or pins
        self.pgtables, self.nr_free = np.zeros(0, np.int64), 0

    def _batches(self, rows, *fields):
        """Blocks ``rows``, :data:`CHUNK` pages at a time: which of ``rows`` (a slice), their
        block numbers, a contiguous copy of each of ``fields``, and the PTEs and pins of each
        page."""
        step = CHUNK // HPAGE_PMD_NR
        for i in range(0, len(rows), step):
            at = slice(i, i + step)
            batch = rows[at]
            pins = self.pins[batch] if self.leaked is None else self.pins[batch] + self.leaked[batch]
            yield (at, batch, *(self.fields[f][batch] for f in fields), self.pte[batch], pins)

    def _anon_vmas(self, pfns):
        """Mapped pages ``pfns`` point at live anon_vmas."""
        mapping = self.mapping[pfns]
        ids = mapping[(mapping & PAGE_MAPPING_ANON) != 0] >> 2
        dead = ids[~self.live[np.minimum(ids, len(self.live) - 1)]]
        if len(dead):
            self.note("anon_vma", f"a mapped page points at freed anon_vma {int(dead[0])}")

    def thps(self):
        """Check the shape of every THP; yield them, a stretch at a time."""
        for at, rows, flags, use, count, mapcount, first_page, pte, pins in self._batches(
                self.thp_rows, "flags", "use", "_count", "_mapcount", "first_page"):
            heads = self.heads[at]
            # Every tail is an anon PG_tail page whose first_page is the head (reductions, one
            # pass each: PG_tail in the AND of the tails' flags, PG_head not in their OR).
            tail_flags, tail_use = flags[:, 1:], use[:, 1:]
            if (not np.bitwise_and.reduce(tail_flags, axis=None) & _TAIL
                    or np.bitwise_or.reduce(tail_flags, axis=None) & _HEAD
                    or tail_use.min() != _ANON or tail_use.max() != _ANON):
                bad = (_kind(tail_flags, tail_use) != _TAIL_KIND).any(axis=1)
                self.note("tail kind", f"THP {heads[bad][0]:#x}: a page of its 2 MiB block is not "
                                       "an anon page with PG_tail and without PG_head")
            tails = first_page[:, 1:]
            if ((tails.min(axis=1) != heads) | (tails.max(axis=1) != heads)).any():
                self.note("first_page", "a THP's tails do not all point at its head")
            # Pages of THPs mapped by PTEs, pinned pages: few, found by their index in the batch.
            mapped, pinned = np.flatnonzero(pte), np.flatnonzero(pins)
            if len(mapped) or len(pinned):
                used = self.used[at]
                used[mapped // HPAGE_PMD_NR] = True
                used[pinned // HPAGE_PMD_NR] = True
                # The rmap walk of a THP subpage starts from its head's mapping; a tail's own
                # should be NULL -- but from v4.5 step 4 page[1]'s holds compound_mapcount.
                if self.cm_in_page1:
                    mapped = mapped[mapped % HPAGE_PMD_NR != 1]
                self._anon_vmas(np.concatenate([np.unique(rows[mapped // HPAGE_PMD_NR]) * HPAGE_PMD_NR,
                                                rows[mapped // HPAGE_PMD_NR] * HPAGE_PMD_NR
                                                + mapped % HPAGE_PMD_NR]))
            yield ThpBlocks(heads, self.pmd_maps[at], count, mapcount, flags, pte, pins)

    def small_pages(self):
        """Check the free, page-table and 4 KiB anon pages: every page not in a THP."""
        pgtables = [np.zeros(0, np.int64)]
        for _, rows, flags, use, count, mapcount, pte, pins in self._batches(
                self.small_rows, "flags", "use", "_count", "_mapcount"):
            pgtables.append(self._small_batch(rows, flags.ravel(), use.ravel(), count.ravel(),
                                              mapcount.ravel(), pte.ravel(), pins.ravel()))
        self.pgtables = np.concatenate(pgtables)

    def _small_batch(self, rows, flags, use, count, mapcount, pte, pins):
        """The pages of blocks ``rows``, one after the other; returns its page tables' pfns."""
        note = self.note

        def pfn(i):
            return rows[i // HPAGE_PMD_NR] * HPAGE_PMD_NR + i % HPAGE_PMD_NR

        stray = np.flatnonzero(flags & (_HEAD | _TAIL))
        if len(stray):
            note("compound", f"page {pfn(stray[0]):#x} is marked PG_head or PG_tail but is not in "
                             "an anon THP filling an aligned 2 MiB block")
        # Mapped or pinned pages are allocated anon pages.
        held = np.flatnonzero(pte | pins)
        held_use = use[held]
        if (held_use == _FREE).any():
            note("free", f"free page {pfn(held[np.argmax(held_use == _FREE)]):#x} is referenced, "
                         "mapped, pinned or flagged")
        if (held_use != _ANON).any():
            note("not anon", "a mapped or pinned page is not an allocated anon page")
        self._anon_vmas(pfn(np.flatnonzero(pte)))
        free = np.flatnonzero(use == _FREE)
        self.nr_free += len(free)
        # Free pages: unreferenced, unflagged, _mapcount -1 or PAGE_BUDDY_MAPCOUNT_VALUE (the
        # first page of a free buddy block).
        mc = mapcount[free]
        dirty = ((count[free] != 0) | (flags[free] != 0)
                 | ((mc != -1) & (mc != PAGE_BUDDY_MAPCOUNT_VALUE)))
        if dirty.any():
            note("free", f"free page {pfn(free[np.argmax(dirty)]):#x} is referenced, mapped, pinned "
                         "or flagged")
        pg = np.flatnonzero(use == _PGTABLE)
        if (count[pg] != 1).any():
            note("pgtable count", "a page-table page has _count != 1")
        single = np.flatnonzero(use == _ANON)
        if len(single):
            s_count, s_mapcount, s_pte, s_pins = count[single], mapcount[single], pte[single], pins[single]
            wrong = np.flatnonzero(s_mapcount + 1 != s_pte)
            if len(wrong):
                i = wrong[0]
                note("single mapcount", f"page {pfn(single[i]):#x}: _mapcount {s_mapcount[i]} but "
                                        f"{s_pte[i]} PTEs map it")
            wrong = np.flatnonzero(s_count != s_pte + s_pins)
            if len(wrong):
                i = wrong[0]
                note("single count", f"page {pfn(single[i]):#x}: _count {s_count[i]} != {s_pte[i]} "
                                     f"maps + {s_pins[i]} pins")
            lost = np.flatnonzero((s_pte == 0) & (s_pins == 0))
            if len(lost):
                note("single leak", f"page {pfn(single[lost[0]]):#x} is allocated but neither mapped "
                                    "nor pinned (leak)")
        return pfn(pg)


def _pmd_problems(m, scan, pmd, note):
    """A huge PMD maps the head of a THP, a live anon_vma's."""
    pfns = pmd[0]
    stray = pfns[~_isin(pfns, scan.heads)]
    if len(stray):
        note("pmd", "a huge PMD maps a page that is not a THP head")
        use = m.mem_map["use"][stray]
        if (use == _FREE).any():
            note("free", f"free page {int(stray[np.argmax(use == _FREE)]):#x} is referenced, "
                         "mapped, pinned or flagged")
        if (use != _ANON).any():
            note("not anon", "a mapped or pinned page is not an allocated anon page")
    scan._anon_vmas(pfns)


def _table_problems(m, w, pgtables, note):
    """Page tables: reachable exactly once, marked as such, accounted."""
    live = _distinct(m.pgtables.table_pfns())[0]
    tables = np.sort(w["tables"])
    if (tables[1:] == tables[:-1]).any():
        note("tables twice", "a page-table page is used twice")
    if not np.array_equal(_distinct(tables)[0], live):
        note("unreachable", f"page tables not reachable from any process: "
                            f"{live[~_isin(live, tables)][:5].tolist()}")
    if not np.array_equal(pgtables, live):
        note("pgtables", "pages marked as page tables differ from the tables in use")
    nr_pte_tables = len(m.pgtables.table_pfns(level=1))
    if m.vmstat["nr_page_table_pages"] != nr_pte_tables:
        note("nr_page_table_pages", f"nr_page_table_pages {m.vmstat['nr_page_table_pages']} != "
                                    f"{nr_pte_tables} PTE tables")
    for pid, mm in m.processes.items():
        c = w["per_mm"][pid]
        if mm.anon_rss + mm.file_rss != c["rss"]:
            note(("rss", pid), f"pid {pid}: rss {mm.anon_rss}+{mm.file_rss} != {c['rss']} pages mapped")
        if mm.file_rss:
            note(("file_rss", pid), f"pid {pid}: MM_FILEPAGES is {mm.file_rss} for anonymous memory")
        if mm.nr_ptes != c["nr_ptes"]:
            note(("nr_ptes", pid), f"pid {pid}: nr_ptes {mm.nr_ptes} != {c['nr_ptes']} PTE tables")
        if c["outside_vmas"]:
            note(("outside", pid), f"pid {pid}: {c['outside_vmas']} page-table entries map addresses "
                                   "outside every VMA")
        if c["huge_per_table"] != c["deposited"]:
            note(("deposited", pid), f"pid {pid}: deposited tables {c['deposited']} != huge PMDs "
                                     f"{c['huge_per_table']}")


def problems(m):
    """Every violated invariant, as sentences; empty when the machine is consistent.

    Costs one pass over ``mem_map`` (see the module's docstring) plus work that
    grows with the mappings and page tables.
    """
    found = {}
    note = found.setdefault
    pte_maps = _lazy_zeros(m.nr_pages)
    w = mappings(m, pte_maps)
    pmd = _distinct(w["pmd"])
    out = vma_problems(m) + anon_vma_problems(m)

    # Every page once: the pages outside THPs, then the THPs, checked by the level's identities.
    scan = _Scan(m, pmd, pte_maps, note)
    _pmd_problems(m, scan, pmd, note)
    scan.small_pages()
    thps = scan.thps()
    level = m.kernel.check_refcounts(thps)
    for _ in thps:       # a level that stopped early still gets every THP's shape checked
        pass
    if scan.nr_free != m.allocator.nr_free_pages or m.vmstat["nr_free_pages"] != scan.nr_free:
        note("nr_free", "nr_free_pages disagrees with the pages marked free")
    _table_problems(m, w, scan.pgtables, note)
    if not scan.used.all():
        note("thp leak", f"THP {int(scan.heads[~scan.used][0]):#x} is allocated but nothing maps or "
                         "pins it (leak)")
    if (m.mem_map["flags"][scan.heads] & _LOCK).any() and not m.smp.held:
        note("compound_lock", "compound_lock left held")
    return out + list(found.values()) + level


def check(m):
    """Raise :class:`InvariantViolation` listing every problem, if any."""
    found = problems(m)
    if found:
        raise InvariantViolation(f"{m.kernel.name}: " + "; ".join(found))
