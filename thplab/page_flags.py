"""``struct page`` layout and page-flag tests, vectorized over page-frame numbers.

Mirrors ``include/linux/mm_types.h`` and ``include/linux/page-flags.h`` (v3.16,
x86-64 with ``CONFIG_PAGEFLAGS_EXTENDED``, ``CONFIG_MEMORY_FAILURE`` and
``CONFIG_TRANSPARENT_HUGEPAGE``).  A page is named by its frame number (pfn),
which is its index in ``mem_map``.
"""

import enum

import numpy as np


class PG(enum.IntEnum):
    """Bit numbers of ``enum pageflags`` (include/linux/page-flags.h, v3.16).

    SIMPLIFICATION: numbered as without ``CONFIG_ARCH_USES_PG_UNCACHED``; x86
    with PAT has ``PG_uncached`` after ``PG_mlocked``, which moves
    ``PG_hwpoison`` and ``PG_compound_lock`` up by one.  Of the LRU-aging
    flags, ``PG_referenced`` and ``PG_active`` are only copied or set where a
    modelled path does so (gup-fast, the refcount split); no access ages them.
    """

    locked = 0
    error = 1
    referenced = 2
    uptodate = 3
    dirty = 4
    lru = 5
    active = 6
    slab = 7
    owner_priv_1 = 8
    arch_1 = 9
    reserved = 10
    private = 11
    private_2 = 12
    writeback = 13
    head = 14
    tail = 15
    swapcache = 16
    mappedtodisk = 17
    reclaim = 18
    swapbacked = 19
    unevictable = 20
    mlocked = 21
    hwpoison = 22
    compound_lock = 23


class Use(enum.IntEnum):
    """What a page frame is used for. A thplab bookkeeping field, not in ``struct page``."""

    free = 0
    anon = 1
    pgtable = 2


#: One row per ``struct page``.  Field names are the kernel's; where v3.16
#: keeps a value in a union or in another page, the docstring of its accessor
#: says where.  ``first_page`` is the tail's pointer to its head (a pfn here,
#: -1 for NULL); ``compound_order`` is meaningful on page[1] only, where
#: v3.16 keeps it in ``lru.prev``; ``mapping`` is an anon_vma handle with
#: ``PAGE_MAPPING_ANON`` in bit 0; ``private`` holds the buddy order of a
#: free block.  ``use`` is thplab's own.
MEM_MAP_DTYPE = np.dtype([
    ("flags", np.uint32),
    ("_count", np.int32),
    ("_mapcount", np.int32),
    ("first_page", np.int32),
    ("private", np.int32),
    ("compound_order", np.uint8),
    ("use", np.uint8),
    ("mapping", np.int64),
    ("index", np.int64),
])

PAGE_MAPPING_ANON = 1


class MemMap:
    """``mem_map``: one ``struct page`` per 4 KiB frame, kept a field per array.

    ``mem_map["_count"]`` is that field of every page, a numpy array to index
    and assign (``mem_map["_count"][pfn] += 1``).  ``mem_map[pfn]`` (or a
    slice, or an array of pfns) gives those pages as rows of
    :data:`MEM_MAP_DTYPE`, a copy, for reading a page whole.

    Stored as a struct of arrays rather than numpy's array of structs: an
    operation over many pages reads or writes one field's bytes, not 38
    bytes per page, which is what makes a batch over thousands of THPs
    cheap.  The kernel's ``struct page`` is an array of structs.
    """

    dtype = MEM_MAP_DTYPE

    def __init__(self, nr_pages=0, fields=None):
        if fields is None:
            # Written out at boot, as memmap_init_zone() writes every struct page:
            # np.zeros would leave the host pages to be faulted in by the first
            # operation that touches them.
            fields = {name: np.full(nr_pages, 0, MEM_MAP_DTYPE[name]) for name in MEM_MAP_DTYPE.names}
        self._fields = fields

    def __len__(self):
        return len(self._fields["flags"])

    @property
    def nbytes(self):
        return sum(a.nbytes for a in self._fields.values())

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._fields[key]
        if isinstance(key, list) and key and all(isinstance(k, str) for k in key):
            out = np.empty(len(self), dtype=[(k, MEM_MAP_DTYPE[k]) for k in key])
            for k in key:
                out[k] = self._fields[k]
            return out
        shape = np.shape(self._fields["flags"][key])
        out = np.empty(shape, dtype=MEM_MAP_DTYPE)
        for name, a in self._fields.items():
            out[name] = a[key]
        return out[()] if not shape else out

    def __setitem__(self, key, value):
        if isinstance(key, str):
            self._fields[key][...] = value
            return
        for name, a in self._fields.items():
            a[key] = value[name]

    def copy(self):
        return MemMap(fields={name: a.copy() for name, a in self._fields.items()})

    def tobytes(self):
        """Every field's bytes, one field after the other (for comparing two states)."""
        return b"".join(a.tobytes() for a in self._fields.values())


def _flag(mem_map, page, bit):
    return (mem_map["flags"][page] & np.uint32(1 << bit)) != 0


def PageHead(mem_map, page):
    """Mirrors ``PageHead()``."""
    return _flag(mem_map, page, PG.head)


def PageTail(mem_map, page):
    """Mirrors ``PageTail()``."""
    return _flag(mem_map, page, PG.tail)


def PageCompound(mem_map, page):
    """Mirrors ``PageCompound()``: head or tail."""
    return (mem_map["flags"][page] & np.uint32((1 << PG.head) | (1 << PG.tail))) != 0


def PageTransHuge(mem_map, page):
    """Mirrors ``PageTransHuge()``: true on the head of a THP (BUG on a tail in the kernel)."""
    return PageHead(mem_map, page)


def PageLRU(mem_map, page):
    """Mirrors ``PageLRU()``."""
    return _flag(mem_map, page, PG.lru)


def PageDirty(mem_map, page):
    """Mirrors ``PageDirty()``."""
    return _flag(mem_map, page, PG.dirty)


def PageBuddy(mem_map, page):
    """Mirrors ``PageBuddy()``: first page of a free block (``_mapcount`` == -128)."""
    return mem_map["_mapcount"][page] == -128


def compound_head(mem_map, page):
    """Mirrors ``compound_head()``: the head of the compound page holding ``page``.

    v3.16 reads ``page->first_page`` of a tail; any other page is its own head.
    """
    page = np.asarray(page)
    first = mem_map["first_page"][page]
    return np.where(PageTail(mem_map, page), first, page)


def compound_order(mem_map, head):
    """Mirrors ``compound_order()``: 0, or the order kept in page[1] of a head."""
    head = np.asarray(head)
    nxt = np.minimum(head + 1, len(mem_map) - 1)
    return np.where(PageHead(mem_map, head), mem_map["compound_order"][nxt], 0)


def page_count(mem_map, page):
    """Mirrors ``page_count()``: the head's ``_count`` (tails always read the head)."""
    return mem_map["_count"][compound_head(mem_map, page)]


def flag_names(flags):
    """Names of the set bits of one ``flags`` word, e.g. ``['uptodate', 'head']``."""
    return [pg.name for pg in PG if int(flags) >> pg & 1]
