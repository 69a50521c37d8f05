"""thplab.page_flags: struct page layout and vectorized flag tests (kernel-semantics §1.1, §1.3)."""

import numpy as np

from thplab.page_alloc import PageAllocator
from thplab.page_flags import (MEM_MAP_DTYPE, PG, PageBuddy, PageCompound, PageDirty, PageHead,
                               PageLRU, PageTail, PageTransHuge, Use, compound_head,
                               compound_order, flag_names, page_count)
from thplab.params import HPAGE_PMD_NR


def thp_allocator():
    a = PageAllocator(2 * HPAGE_PMD_NR)
    single = a.alloc_pages(0, Use.anon)      # pfn 0
    head = a.alloc_pages(9, Use.anon)        # pfn 512
    return a, single, head


def test_mem_map_has_the_kernel_field_names():
    names = set(MEM_MAP_DTYPE.names)
    assert {"flags", "_count", "_mapcount", "first_page", "compound_order", "mapping",
            "index", "private"} <= names
    assert MEM_MAP_DTYPE.itemsize <= 40


def test_page_flag_bits_are_v3_14_enum_pageflags():
    assert (PG.locked, PG.dirty, PG.lru, PG.head, PG.tail, PG.swapbacked) == (0, 4, 5, 14, 15, 19)


def test_head_tail_compound_vectorized():
    a, single, head = thp_allocator()
    mm = a.mem_map
    pages = np.array([single, head, head + 1, head + 511, 1])
    assert PageHead(mm, pages).tolist() == [False, True, False, False, False]
    assert PageTail(mm, pages).tolist() == [False, False, True, True, False]
    assert PageCompound(mm, pages).tolist() == [False, True, True, True, False]
    assert PageTransHuge(mm, head) and not PageTransHuge(mm, head + 1)


def test_compound_head_reads_first_page_of_tails_only():
    a, single, head = thp_allocator()
    mm = a.mem_map
    assert compound_head(mm, np.array([single, head, head + 5, head + 511])).tolist() == \
        [single, head, head, head]
    assert int(compound_head(mm, 7)) == 7  # a free page is its own head


def test_compound_order_is_read_from_page_1():
    a, single, head = thp_allocator()
    assert compound_order(a.mem_map, np.array([single, head, head + 1])).tolist() == [0, 9, 0]
    # the last pfn of memory has no page[1]; compound_order must not index past the end
    assert int(compound_order(a.mem_map, a.nr_pages - 1)) == 0


def test_page_count_of_a_tail_reads_the_head():
    a, single, head = thp_allocator()
    a.mem_map["_count"][head] = 7
    assert page_count(a.mem_map, np.array([head, head + 3, single])).tolist() == [7, 7, 1]


def test_page_buddy_is_mapcount_minus_128():
    a, single, head = thp_allocator()
    # after the order-0 alloc, pfn 1 (order 0) .. 256 (order 8) are buddy heads
    assert PageBuddy(a.mem_map, np.array([1, 2, 4, 256, 0, 3])).tolist() == \
        [True, True, True, True, False, False]


def test_flag_names_and_lru_dirty():
    a, single, head = thp_allocator()
    mm = a.mem_map
    mm["flags"][single] |= np.uint32((1 << PG.lru) | (1 << PG.dirty))
    assert flag_names(mm["flags"][single]) == ["dirty", "lru"]
    assert flag_names(mm["flags"][head]) == ["head"]
    assert PageLRU(mm, single) and PageDirty(mm, single) and not PageLRU(mm, head)
