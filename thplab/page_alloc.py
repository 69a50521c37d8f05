"""The page allocator: a buddy allocator over ``mem_map``.

Mirrors the parts of ``mm/page_alloc.c`` (v3.14) that decide the initial
values of ``struct page``: ``prep_new_page()``, ``prep_compound_page()``,
``destroy_compound_page()`` and ``free_pages_check()``.
"""

import heapq

import numpy as np

from .errors import BadPage, OutOfMemory, VMBug, as_int
from .page_flags import MEM_MAP_DTYPE, PG, Use
from .params import HPAGE_PMD_NR, HPAGE_PMD_ORDER, MAX_ORDER, PAGE_BUDDY_MAPCOUNT_VALUE


def dump_page(mem_map, page, reason=""):
    """Describe a ``struct page`` as the kernel's ``dump_page()`` does."""
    from .page_flags import flag_names

    row = mem_map[page]
    return (f"page:pfn {page:#x} count:{row['_count']} mapcount:{row['_mapcount'] + 1} "
            f"(raw {row['_mapcount']}) mapping:{row['mapping']:#x} index:{row['index']:#x} "
            f"first_page:{row['first_page']} flags:{flag_names(row['flags'])}"
            + (f"\npage dumped because: {reason}" if reason else ""))


class PageAllocator:
    """A buddy allocator handing out blocks of order 0 to ``MAX_ORDER``.

    Free blocks are kept per order; the lowest free pfn is always handed out
    first, so runs are deterministic.
    """

    def __init__(self, nr_pages):
        if nr_pages <= 0 or nr_pages % HPAGE_PMD_NR:
            raise ValueError(f"nr_pages must be a positive multiple of {HPAGE_PMD_NR}, "
                             f"got {nr_pages}")
        self.mem_map = np.zeros(nr_pages, dtype=MEM_MAP_DTYPE)
        self.mem_map["_mapcount"] = -1
        self.mem_map["first_page"] = -1
        self._free = [set() for _ in range(MAX_ORDER + 1)]
        self._heap = [[] for _ in range(MAX_ORDER + 1)]
        self.nr_free_pages = 0
        heads = np.arange(0, nr_pages, 1 << MAX_ORDER)
        self.mem_map["_mapcount"][heads] = PAGE_BUDDY_MAPCOUNT_VALUE
        self.mem_map["private"][heads] = MAX_ORDER
        self._free[MAX_ORDER] = set(heads.tolist())
        self._heap[MAX_ORDER] = heads.tolist()
        self.nr_free_pages = nr_pages

    @property
    def nr_pages(self):
        return len(self.mem_map)

    def _push(self, pfn, order):
        mm = self.mem_map
        mm["_mapcount"][pfn] = PAGE_BUDDY_MAPCOUNT_VALUE
        mm["private"][pfn] = order
        self._free[order].add(pfn)
        heapq.heappush(self._heap[order], pfn)

    def _take(self, pfn, order):
        self._free[order].discard(pfn)
        self.mem_map["_mapcount"][pfn] = -1
        self.mem_map["private"][pfn] = 0

    def _pop(self, order, within=None):
        heap, free = self._heap[order], self._free[order]
        if within is not None:
            lo, hi = within
            inside = [p for p in free if lo <= p and p + (1 << order) <= hi]
            if not inside:
                return None
            pfn = min(inside)
            self._take(pfn, order)
            return pfn
        while heap:
            pfn = heapq.heappop(heap)
            if pfn in free:
                self._take(pfn, order)
                return pfn
        return None

    def can_alloc(self, order):
        """Whether a block of ``order`` is available right now."""
        return any(self._free[o] for o in range(order, MAX_ORDER + 1))

    def alloc_pages(self, order, use, within=None):
        """Mirrors ``alloc_pages()`` + ``prep_new_page()``: ``_count`` 1, flags clear.

        An order > 0 block is made a compound page (``__GFP_COMP``).
        ``within`` = ``(lo, hi)`` restricts the block to those pfns (a NUMA node).
        Raises :class:`OutOfMemory` and changes nothing when no block is free.
        """
        for o in range(order, MAX_ORDER + 1):
            pfn = self._pop(o, within)
            if pfn is not None:
                break
        else:
            raise OutOfMemory(f"no free block of order {order} "
                              f"({self.nr_free_pages} free 4 KiB pages, fragmented or exhausted)")
        while o > order:  # expand(): give back the upper halves
            o -= 1
            self._push(pfn + (1 << o), o)
        self.nr_free_pages -= 1 << order
        block = slice(pfn, pfn + (1 << order))
        mm = self.mem_map
        mm["flags"][block] = 0
        mm["_mapcount"][block] = -1
        mm["mapping"][block] = 0
        mm["index"][block] = 0
        mm["use"][block] = use
        mm["_count"][pfn] = 1  # set_page_refcounted()
        if order:
            self.prep_compound_page(pfn, order)
        return pfn

    def prep_compound_page(self, page, order):
        """Mirrors ``prep_compound_page()`` (v3.14): head flag, order in page[1], tails -> head."""
        mm = self.mem_map
        tails = slice(page + 1, page + (1 << order))
        mm["compound_order"][page + 1] = order
        mm["flags"][page] |= np.uint32(1 << PG.head)
        mm["_count"][tails] = 0
        mm["first_page"][tails] = page
        mm["flags"][tails] |= np.uint32(1 << PG.tail)

    def destroy_compound_page(self, page, order):
        """Mirrors ``destroy_compound_page()``: undo ``prep_compound_page()`` and check it."""
        mm = self.mem_map
        tails = np.arange(page + 1, page + (1 << order))
        bad = (mm["first_page"][tails] != page) | ((mm["flags"][tails] & np.uint32(1 << PG.tail)) == 0)
        if bad.any():
            raise VMBug(dump_page(mm, int(tails[bad][0]), "destroy_compound_page: bad tail"))
        mm["flags"][page] &= ~np.uint32(1 << PG.head)
        mm["flags"][tails] &= ~np.uint32(1 << PG.tail)
        mm["first_page"][tails] = -1
        mm["compound_order"][page + 1] = 0

    def free_pages(self, pfns):
        """Mirrors ``__free_pages_ok()``/``free_hot_cold_page()`` for a batch of pages.

        ``pfns`` are order-0 pages or heads of compound pages (freed whole).
        ``free_pages_check()`` refuses a page that is still mapped, still
        referenced or still part of a compound page.  Buddies are merged by
        recomputing the maximal free aligned blocks of each 2 MiB block touched,
        which is what repeated buddy merging converges to.

        SIMPLIFICATION: a freed order-0 page goes straight to the buddy lists
        (``_mapcount`` -128, PageBuddy); v3.16's ``free_hot_cold_page()`` first
        parks it on a per-CPU list, where it still reads -1 and is handed out
        again first.  thplab's allocation order (lowest free pfn first) is part
        of its contract: tests and recorded lesson outputs depend on it.
        """
        mm = self.mem_map
        pfns = np.unique(np.asarray(pfns, dtype=np.int64))
        if not len(pfns):
            return
        heads = pfns[(mm["flags"][pfns] & np.uint32(1 << PG.head)) != 0]
        for head in heads.tolist():
            self.destroy_compound_page(head, int(mm["compound_order"][head + 1]))
        orders = np.zeros(len(pfns), dtype=np.int64)
        if len(heads):
            orders[np.isin(pfns, heads)] = HPAGE_PMD_ORDER
        sizes = 1 << orders
        every = np.repeat(pfns, sizes) + (np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes))
        bad = (mm["_count"][every] != 0) | (mm["_mapcount"][every] != -1) | \
              ((mm["flags"][every] & np.uint32((1 << PG.head) | (1 << PG.tail))) != 0) | \
              (mm["use"][every] == Use.free)
        if bad.any():
            raise VMBug(dump_page(mm, int(every[bad][0]), "free_pages_check: bad page state"))
        mm["flags"][every] = 0
        mm["mapping"][every] = 0
        mm["index"][every] = 0
        mm["use"][every] = Use.free
        self.nr_free_pages += len(every)
        for block in np.unique(every >> MAX_ORDER).tolist():
            self._rebuild(block << MAX_ORDER)

    def _rebuild(self, start):
        """Recompute the free lists of the 2 MiB block at ``start`` from ``use``."""
        mm = self.mem_map
        block = slice(start, start + HPAGE_PMD_NR)
        for pfn in (start + np.flatnonzero(mm["_mapcount"][block] == PAGE_BUDDY_MAPCOUNT_VALUE)).tolist():
            self._take(pfn, int(mm["private"][pfn]))  # the PageBuddy() heads, order in private
        free = mm["use"][block] == Use.free
        covered = np.zeros(HPAGE_PMD_NR, dtype=bool)
        for o in range(MAX_ORDER, -1, -1):
            whole = free.reshape(-1, 1 << o).all(axis=1) & ~covered.reshape(-1, 1 << o).any(axis=1)
            for i in np.flatnonzero(whole).tolist():
                self._push(start + (i << o), o)
            covered |= np.repeat(whole, 1 << o)

    def check_pfn(self, pfn, what="page"):
        """Raise :class:`BadPage` unless ``pfn`` names a page of this machine."""
        pfn = as_int(pfn, f"{what} (a page-frame number)", BadPage)
        if not 0 <= pfn < self.nr_pages:
            raise BadPage(f"pfn {pfn:#x} is outside this machine's memory "
                          f"(pfns 0..{self.nr_pages - 1:#x})")
        return pfn

    def copy(self):
        new = PageAllocator.__new__(PageAllocator)
        new.mem_map = self.mem_map.copy()
        new._free = [set(s) for s in self._free]
        new._heap = [list(h) for h in self._heap]
        new.nr_free_pages = self.nr_free_pages
        return new
