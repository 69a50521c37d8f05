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

    Free blocks are kept per order; the smallest order that fits is used and,
    within an order, the lowest free pfn is always handed out first, so runs
    are deterministic.  Freeing merges a block with its free buddy order by
    order, as ``__free_one_page()`` does: O(MAX_ORDER) per freed block.

    The PageBuddy() markers in ``mem_map`` (``_mapcount`` -128, order in
    ``private`` on a free block's first page) are written once per call, for
    every block the call took or gave back.
    """

    def __init__(self, nr_pages):
        if nr_pages <= 0 or nr_pages % HPAGE_PMD_NR:
            raise ValueError(f"nr_pages must be a positive multiple of {HPAGE_PMD_NR}, "
                             f"got {nr_pages}")
        self.mem_map = np.zeros(nr_pages, dtype=MEM_MAP_DTYPE)
        self.mem_map["_mapcount"] = -1
        self.mem_map["first_page"] = -1
        heads = np.arange(0, nr_pages, 1 << MAX_ORDER)
        self.mem_map["_mapcount"][heads] = PAGE_BUDDY_MAPCOUNT_VALUE
        self.mem_map["private"][heads] = MAX_ORDER
        #: Per order, the set of free blocks' first pfns, and a min-heap of them
        #: that may hold stale pfns (removed lazily when popped).
        self._free = [set() for _ in range(MAX_ORDER + 1)]
        self._heap = [[] for _ in range(MAX_ORDER + 1)]
        self._free[MAX_ORDER] = set(heads.tolist())
        self._heap[MAX_ORDER] = heads.tolist()
        self.nr_free_pages = nr_pages
        #: Markers to write at the end of the call: pfn -> order, or None when taken.
        self._marks = {}

    @property
    def nr_pages(self):
        return len(self.mem_map)

    def _push(self, pfn, order):
        free, heap = self._free[order], self._heap[order]
        free.add(pfn)
        if len(heap) > 2 * len(free) + 64:  # mostly stale: start again from the live set
            heap[:] = sorted(free)
        else:
            heapq.heappush(heap, pfn)
        self._marks[pfn] = order

    def _take(self, pfn, order):
        self._free[order].discard(pfn)
        self._marks[pfn] = None

    def _flush_marks(self):
        """Write the PageBuddy() markers of every block this call took or gave back."""
        if not self._marks:
            return
        pfns = np.fromiter(self._marks, dtype=np.int64, count=len(self._marks))
        orders = np.array([-1 if o is None else o for o in self._marks.values()], dtype=np.int64)
        free = orders >= 0
        mm = self.mem_map
        mm["_mapcount"][pfns] = np.where(free, PAGE_BUDDY_MAPCOUNT_VALUE, -1)
        mm["private"][pfns] = np.where(free, orders, 0)
        self._marks = {}

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

    def _alloc_block(self, order, within=None):
        """Take a free block of ``order`` (splitting a larger one), or None; no ``mem_map`` prep."""
        for o in range(order, MAX_ORDER + 1):
            if self._free[o]:
                pfn = self._pop(o, within)
                if pfn is not None:
                    break
        else:
            return None
        while o > order:  # expand(): give back the upper halves
            o -= 1
            self._push(pfn + (1 << o), o)
        self.nr_free_pages -= 1 << order
        return pfn

    def can_alloc(self, order):
        """Whether a block of ``order`` is available right now."""
        return any(self._free[o] for o in range(order, MAX_ORDER + 1))

    def _prep_new(self, pfns, order, use):
        """``prep_new_page()`` for blocks of ``order`` at ``pfns``: ``_count`` 1, flags clear."""
        mm = self.mem_map
        pfns = np.asarray(pfns, dtype=np.int64)
        every = (pfns[:, None] + np.arange(1 << order)).ravel() if order else pfns
        mm["flags"][every] = 0
        mm["_mapcount"][every] = -1
        mm["mapping"][every] = 0
        mm["index"][every] = 0
        mm["use"][every] = use
        mm["_count"][pfns] = 1  # set_page_refcounted()
        if order:
            self.prep_compound_page(pfns, order)

    def alloc_pages(self, order, use, within=None):
        """Mirrors ``alloc_pages()`` + ``prep_new_page()``: ``_count`` 1, flags clear.

        An order > 0 block is made a compound page (``__GFP_COMP``).
        ``within`` = ``(lo, hi)`` restricts the block to those pfns (a NUMA node).
        Raises :class:`OutOfMemory` and changes nothing when no block is free.
        """
        pfn = self._alloc_block(order, within)
        if pfn is None:
            raise OutOfMemory(f"no free block of order {order} "
                              f"({self.nr_free_pages} free 4 KiB pages, fragmented or exhausted)")
        self._flush_marks()
        self._prep_new(np.array([pfn]), order, use)
        return pfn

    def alloc_pages_bulk(self, order, nr, use):
        """``nr`` blocks of ``order``, exactly as ``nr`` calls of :meth:`alloc_pages` would give.

        Like the kernel's ``alloc_pages_bulk()`` (v5.13) a batch for callers that
        need many pages at once (fork's deposited tables, a range of 4 KiB
        faults); the ``mem_map`` writes are one array operation.  Raises
        :class:`OutOfMemory` and changes nothing unless all ``nr`` can be had.
        """
        return self.alloc_sequence([order] * nr, use)

    def alloc_sequence(self, orders, use):
        """Blocks of the given ``orders``, taken in that order; an int64 array of their pfns.

        The result is what one :meth:`alloc_pages` per entry would give (the
        smallest fitting order first, lowest pfn first), with the ``mem_map``
        preparation done once per order.  Raises :class:`OutOfMemory` and
        changes nothing unless every block can be had.
        """
        orders = list(orders)
        pfns = []
        for order in orders:
            pfn = self._alloc_block(order)
            if pfn is None:
                # Give back what was taken: merging restores the very same free lists.
                for p, o in zip(pfns, orders):
                    self._free_block(p, o)
                self._flush_marks()
                raise OutOfMemory(f"no free block of order {order} for block {len(pfns) + 1} of "
                                  f"{len(orders)} ({self.nr_free_pages} free 4 KiB pages)")
            pfns.append(pfn)
        self._flush_marks()
        pfns = np.array(pfns, dtype=np.int64)
        orders = np.array(orders, dtype=np.int64)
        for order in np.unique(orders).tolist():
            self._prep_new(pfns[orders == order], order, use)
        return pfns

    def prep_compound_page(self, page, order):
        """Mirrors ``prep_compound_page()`` (v3.14): head flag, order in page[1], tails -> head.

        ``page`` may be an array of heads (one operation for all of them).
        """
        mm = self.mem_map
        heads = np.atleast_1d(np.asarray(page, dtype=np.int64))
        owner = np.repeat(heads, (1 << order) - 1)
        tails = (heads[:, None] + np.arange(1, 1 << order)).ravel()
        mm["compound_order"][heads + 1] = order
        mm["flags"][heads] |= np.uint32(1 << PG.head)
        mm["_count"][tails] = 0
        mm["first_page"][tails] = owner
        mm["flags"][tails] |= np.uint32(1 << PG.tail)

    def destroy_compound_page(self, page, order):
        """Mirrors ``destroy_compound_page()``: undo ``prep_compound_page()`` and check it.

        ``page`` may be an array of heads of the same order.
        """
        mm = self.mem_map
        heads = np.atleast_1d(np.asarray(page, dtype=np.int64))
        owner = np.repeat(heads, (1 << order) - 1)
        tails = (heads[:, None] + np.arange(1, 1 << order)).ravel()
        bad = (mm["first_page"][tails] != owner) | ((mm["flags"][tails] & np.uint32(1 << PG.tail)) == 0)
        if bad.any():
            raise VMBug(dump_page(mm, int(tails[bad][0]), "destroy_compound_page: bad tail"))
        mm["flags"][heads] &= ~np.uint32(1 << PG.head)
        mm["flags"][tails] &= ~np.uint32(1 << PG.tail)
        mm["first_page"][tails] = -1
        mm["compound_order"][heads + 1] = 0

    def free_pages(self, pfns):
        """Mirrors ``__free_pages_ok()``/``free_hot_cold_page()`` for a batch of pages.

        ``pfns`` are order-0 pages or heads of compound pages (freed whole).
        ``free_pages_check()`` refuses a page that is still mapped, still
        referenced or still part of a compound page.  Buddies are merged by
        merging each freed block with its free buddy, order by order
        (``__free_one_page()``).

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
        is_head = (mm["flags"][pfns] & np.uint32(1 << PG.head)) != 0
        heads = pfns[is_head]
        if len(heads):
            if (mm["compound_order"][heads + 1] != HPAGE_PMD_ORDER).any():
                bad = int(heads[mm["compound_order"][heads + 1] != HPAGE_PMD_ORDER][0])
                raise VMBug(dump_page(mm, bad, "free_pages: compound page not of THP order"))
            self.destroy_compound_page(heads, HPAGE_PMD_ORDER)
        orders = np.where(is_head, HPAGE_PMD_ORDER, 0)
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
        for pfn, order in zip(pfns.tolist(), orders.tolist()):
            self._free_block(pfn, order)
        self._flush_marks()

    def _free_block(self, pfn, order):
        """Give back one block, merging it with its free buddy while there is one."""
        self.nr_free_pages += 1 << order
        while order < MAX_ORDER:
            buddy = pfn ^ (1 << order)
            if buddy not in self._free[order]:
                break
            self._take(buddy, order)
            pfn &= ~(1 << order)
            order += 1
        self._push(pfn, order)

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
        new._marks = {}
        return new
