"""The page allocator: a buddy allocator over ``mem_map``.

Mirrors the parts of ``mm/page_alloc.c`` (v3.14) that decide the initial
values of ``struct page``: ``prep_new_page()``, ``prep_compound_page()``,
``destroy_compound_page()`` and ``free_pages_check()``.
"""

import heapq

import numpy as np

from .errors import BadPage, OutOfMemory, VMBug, as_int
from .page_flags import PG, MemMap, Use
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
        self.mem_map = MemMap(nr_pages)
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
        mm = self.mem_map
        if len(self._marks) < 8:  # a single alloc or free: scalar writes are cheaper
            count, private = mm["_mapcount"], mm["private"]
            for pfn, order in self._marks.items():
                count[pfn] = -1 if order is None else PAGE_BUDDY_MAPCOUNT_VALUE
                private[pfn] = 0 if order is None else order
            self._marks = {}
            return
        pfns = np.fromiter(self._marks, dtype=np.int64, count=len(self._marks))
        orders = np.array([-1 if o is None else o for o in self._marks.values()], dtype=np.int64)
        free = orders >= 0
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

    def take_block(self, order, within=None):
        """Take the block :meth:`alloc_pages` would hand out next, or None; ``mem_map`` not yet prepared.

        For a batch whose allocations of several orders interleave (a run of
        THP faults: a table, then a THP, for each): :meth:`prep_blocks` then
        prepares each order's blocks in one array operation.
        """
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
        if order:
            rows = self._thp_rows(pfns, order)
            for field, value in (("flags", 0), ("_mapcount", -1), ("mapping", 0), ("index", 0), ("use", use)):
                self._field(field)[rows] = value
            self._field("_count")[rows, 0] = 1  # set_page_refcounted()
            self.prep_compound_page(pfns, order)
            return
        for field, value in (("flags", 0), ("_mapcount", -1), ("mapping", 0), ("index", 0), ("use", use)):
            mm[field][pfns] = value
        mm["_count"][pfns] = 1  # set_page_refcounted()

    def _field(self, name):
        """One field of ``mem_map`` seen as rows of 512 pages (a view: one row per 2 MiB)."""
        return self.mem_map[name].reshape(-1, HPAGE_PMD_NR)

    def _thp_rows(self, heads, order):
        """The :meth:`_field` rows of the THPs at ``heads``.

        SIMPLIFICATION: thplab's only compound pages are THPs (order 9, one
        aligned 2 MiB block), so a compound page is one row of 512 struct
        pages; the kernel also has smaller compound orders.  Working a field
        at a time over whole rows keeps a batch of THPs to a few array
        operations.
        """
        heads = np.asarray(heads, dtype=np.int64)
        if order != HPAGE_PMD_ORDER or (heads % HPAGE_PMD_NR).any():
            raise VMBug(f"compound pages are THPs here: order {order} at pfn {int(heads[0]):#x}")
        return heads >> HPAGE_PMD_ORDER

    def alloc_pages(self, order, use, within=None):
        """Mirrors ``alloc_pages()`` + ``prep_new_page()``: ``_count`` 1, flags clear.

        An order > 0 block is made a compound page (``__GFP_COMP``).
        ``within`` = ``(lo, hi)`` restricts the block to those pfns (a NUMA node).
        Raises :class:`OutOfMemory` and changes nothing when no block is free.
        """
        pfn = self.take_block(order, within)
        if pfn is None:
            raise OutOfMemory(f"no free block of order {order} "
                              f"({self.nr_free_pages} free 4 KiB pages, fragmented or exhausted)")
        self.prep_blocks([pfn], order, use)
        return pfn

    def alloc_pages_bulk(self, order, nr, use):
        """``nr`` blocks of ``order``, exactly as ``nr`` calls of :meth:`alloc_pages` would give.

        Like the kernel's ``alloc_pages_bulk()`` (v5.13) a batch for callers that
        need many pages at once (fork's deposited tables, a range of 4 KiB
        faults); the ``mem_map`` writes are one array operation.  Raises
        :class:`OutOfMemory` and changes nothing unless all ``nr`` can be had.
        """
        pfns = []
        for _ in range(nr):
            pfn = self.take_block(order)
            if pfn is None:
                # Give back what was taken: merging restores the very same free lists.
                for p in pfns:
                    self._free_block(p, order)
                self._flush_marks()
                raise OutOfMemory(f"no free block of order {order} for block {len(pfns) + 1} of "
                                  f"{nr} ({self.nr_free_pages} free 4 KiB pages)")
            pfns.append(pfn)
        return self.prep_blocks(pfns, order, use)

    def prep_blocks(self, pfns, order, use):
        """``prep_new_page()`` (and compound prep) for blocks taken with :meth:`take_block`."""
        self._flush_marks()
        pfns = np.asarray(pfns, dtype=np.int64)
        if len(pfns):
            self._prep_new(pfns, order, use)
        return pfns

    def prep_compound_page(self, page, order):
        """Mirrors ``prep_compound_page()`` (v3.14): head flag, order in page[1], tails -> head.

        ``page`` may be an array of heads (one operation per field for all of them).
        """
        heads = np.atleast_1d(np.asarray(page, dtype=np.int64))
        rows = self._thp_rows(heads, order)
        self._field("compound_order")[rows, 1] = order
        self._field("flags")[rows, 0] |= np.uint32(1 << PG.head)
        self._field("_count")[rows, 1:] = 0
        self._field("first_page")[rows, 1:] = heads[:, None]
        self._field("flags")[rows, 1:] |= np.uint32(1 << PG.tail)

    def _bad_tails(self, heads, rows):
        """``destroy_compound_page()``'s check: every tail points to its head and is PageTail.

        :meth:`free_pages` then undoes ``prep_compound_page()`` as it clears the pages.
        """
        bad = (self._field("first_page")[rows, 1:] != heads[:, None]) | \
              ((self._field("flags")[rows, 1:] & np.uint32(1 << PG.tail)) == 0)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise VMBug(dump_page(self.mem_map, int(heads[r] + 1 + c), "destroy_compound_page: bad tail"))

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
        heads, singles = pfns[is_head], pfns[~is_head]
        # Every page is checked before any is changed: a bad page stops the
        # whole batch with mem_map as it was.
        if len(heads):
            rows = self._thp_rows(heads, HPAGE_PMD_ORDER)
            if (self._field("compound_order")[rows, 1] != HPAGE_PMD_ORDER).any():
                bad = int(heads[self._field("compound_order")[rows, 1] != HPAGE_PMD_ORDER][0])
                raise VMBug(dump_page(mm, bad, "free_pages: compound page not of THP order"))
            self._bad_tails(heads, rows)  # destroy_compound_page()
            flags = self._field("flags")[rows] & ~np.uint32((1 << PG.head) | (1 << PG.tail))
            self._free_pages_check(heads[:, None] + np.arange(HPAGE_PMD_NR), flags,
                                   *(self._field(f)[rows] for f in ("_count", "_mapcount", "use")))
        if len(singles):
            self._free_pages_check(singles, *(mm[f][singles] for f in ("flags", "_count", "_mapcount", "use")))
        for field, value in (("flags", 0), ("mapping", 0), ("index", 0), ("use", Use.free)):
            if len(singles):
                mm[field][singles] = value
            if len(heads):
                self._field(field)[rows] = value
        if len(heads):
            self._field("first_page")[rows, 1:] = -1
            self._field("compound_order")[rows, 1] = 0
        orders = np.where(is_head, HPAGE_PMD_ORDER, 0)
        for pfn, order in zip(pfns.tolist(), orders.tolist()):
            self._free_block(pfn, order)
        self._flush_marks()

    def _free_pages_check(self, pfns, flags, count, mapcount, use):
        """Mirrors ``free_pages_check()`` on the fields of the pages at ``pfns``."""
        bad = (count != 0) | (mapcount != -1) | (use == Use.free) | \
              ((flags & np.uint32((1 << PG.head) | (1 << PG.tail))) != 0)
        if bad.any():
            raise VMBug(dump_page(self.mem_map, int(pfns[bad][0]), "free_pages_check: bad page state"))

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
