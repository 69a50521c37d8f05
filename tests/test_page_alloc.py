"""thplab.page_alloc: the buddy allocator and the initial values of struct page (kernel-semantics §1.2)."""

import numpy as np
import pytest

from thplab.errors import BadPage, OutOfMemory, VMBug
from thplab.page_alloc import PageAllocator, dump_page
from thplab.page_flags import PG, Use, compound_head, compound_order
from thplab.params import HPAGE_PMD_NR, PAGE_BUDDY_MAPCOUNT_VALUE


def free_blocks(a):
    """{order: sorted pfns} of the free lists."""
    return {o: sorted(s) for o, s in enumerate(a._free) if s}


def state(a):
    return a.mem_map.tobytes(), [sorted(s) for s in a._free], a.nr_free_pages


def test_boot_state_every_2mib_block_free_with_buddy_heads_at_minus_128():
    a = PageAllocator(4 * HPAGE_PMD_NR)
    assert a.nr_free_pages == a.nr_pages == 2048
    assert free_blocks(a) == {9: [0, 512, 1024, 1536]}
    heads = [0, 512, 1024, 1536]
    assert (a.mem_map["_mapcount"][heads] == PAGE_BUDDY_MAPCOUNT_VALUE).all()
    assert (a.mem_map["private"][heads] == 9).all()
    others = np.setdiff1d(np.arange(2048), heads)
    assert (a.mem_map["_mapcount"][others] == -1).all()
    assert (a.mem_map["_count"] == 0).all() and (a.mem_map["use"] == Use.free).all()


def test_allocator_needs_whole_2mib_blocks():
    with pytest.raises(ValueError):
        PageAllocator(100)
    with pytest.raises(ValueError):
        PageAllocator(0)


def test_order0_alloc_splits_the_lowest_block_and_returns_upper_halves():
    a = PageAllocator(2 * HPAGE_PMD_NR)
    pfn = a.alloc_pages(0, Use.anon)
    assert pfn == 0
    assert free_blocks(a) == {0: [1], 1: [2], 2: [4], 3: [8], 4: [16], 5: [32], 6: [64],
                              7: [128], 8: [256], 9: [512]}
    # each free block's first page is a buddy head (-128, order in private)
    for o, pfns in free_blocks(a).items():
        for p in pfns:
            assert a.mem_map["_mapcount"][p] == PAGE_BUDDY_MAPCOUNT_VALUE
            assert a.mem_map["private"][p] == o
    assert a.nr_free_pages == 1023
    # a fresh order-0 page: _count 1, _mapcount -1, no flags, not compound
    assert a.mem_map["_count"][0] == 1 and a.mem_map["_mapcount"][0] == -1
    assert a.mem_map["flags"][0] == 0 and a.mem_map["use"][0] == Use.anon
    # the smallest free block is used first, lowest pfn first
    assert a.alloc_pages(0, Use.anon) == 1
    assert a.alloc_pages(0, Use.pgtable) == 2
    assert a.mem_map["use"][2] == Use.pgtable


def test_free_merges_buddies_back_into_a_2mib_block():
    a = PageAllocator(2 * HPAGE_PMD_NR)
    before = state(a)
    pfns = [a.alloc_pages(0, Use.anon) for _ in range(3)]
    assert pfns == [0, 1, 2]
    for p in pfns:
        a.mem_map["_count"][p] = 0  # put_page() dropped the last reference
    a.free_pages([1])
    assert 1 in a._free[0]
    a.free_pages([0, 2])
    assert free_blocks(a) == {9: [0, 512]}
    assert state(a) == before


def test_free_in_any_order_converges_to_the_same_free_lists():
    a, b = PageAllocator(HPAGE_PMD_NR), PageAllocator(HPAGE_PMD_NR)
    for x in (a, b):
        for _ in range(16):
            x.alloc_pages(0, Use.anon)
        x.mem_map["_count"][:16] = 0
    for p in [3, 1, 7, 0, 15, 2]:
        a.free_pages([p])
    b.free_pages([0, 1, 2, 3, 7, 15])
    assert state(a) == state(b)


def test_prep_compound_page_initial_values_exactly_as_the_kernel():
    a = PageAllocator(2 * HPAGE_PMD_NR)
    head = a.alloc_pages(9, Use.anon)
    assert head == 0
    mm = a.mem_map
    tails = np.arange(1, HPAGE_PMD_NR)
    # head: _count 1 (set_page_refcounted), _mapcount -1, PG_head
    assert mm["_count"][head] == 1 and mm["_mapcount"][head] == -1
    assert mm["flags"][head] == 1 << PG.head
    # tails: _count 0, _mapcount -1, first_page -> head, PG_tail
    assert (mm["_count"][tails] == 0).all() and (mm["_mapcount"][tails] == -1).all()
    assert (mm["first_page"][tails] == head).all()
    assert (mm["flags"][tails] == 1 << PG.tail).all()
    # order in page[1] only
    assert mm["compound_order"][1] == 9
    assert (mm["compound_order"][2:HPAGE_PMD_NR] == 0).all() and mm["compound_order"][0] == 0
    assert int(compound_order(mm, head)) == 9
    assert (compound_head(mm, np.arange(HPAGE_PMD_NR)) == head).all()
    # mapping is NULL until rmap sets it
    assert (mm["mapping"][:HPAGE_PMD_NR] == 0).all()
    assert a.nr_free_pages == HPAGE_PMD_NR
    assert free_blocks(a) == {9: [512]}


def test_freeing_a_compound_page_undoes_prep_compound_page():
    a = PageAllocator(HPAGE_PMD_NR)
    before = state(a)
    head = a.alloc_pages(9, Use.anon)
    a.mem_map["_count"][head] = 0
    a.free_pages([head])
    assert state(a) == before
    assert (a.mem_map["first_page"] == -1).all() and (a.mem_map["flags"] == 0).all()


def test_free_pages_check_refuses_a_referenced_or_mapped_page():
    a = PageAllocator(HPAGE_PMD_NR)
    p = a.alloc_pages(0, Use.anon)
    with pytest.raises(VMBug, match="bad page state"):
        a.free_pages([p])  # _count is still 1
    a.mem_map["_count"][p] = 0
    a.mem_map["_mapcount"][p] = 0
    with pytest.raises(VMBug, match="bad page state"):
        a.free_pages([p])  # still mapped


def test_double_free_is_a_vmbug():
    a = PageAllocator(HPAGE_PMD_NR)
    p = a.alloc_pages(0, Use.anon)
    a.mem_map["_count"][p] = 0
    a.free_pages([p])
    with pytest.raises(VMBug):
        a.free_pages([p])


def test_out_of_memory_leaves_the_allocator_unchanged():
    a = PageAllocator(HPAGE_PMD_NR)
    a.alloc_pages(0, Use.anon)
    before = state(a)
    with pytest.raises(OutOfMemory):
        a.alloc_pages(9, Use.anon)  # 511 pages free, but no order-9 block
    assert state(a) == before
    assert not a.can_alloc(9) and a.can_alloc(8)
    for _ in range(511):
        a.alloc_pages(0, Use.anon)
    before = state(a)
    assert a.nr_free_pages == 0 and not a.can_alloc(0)
    with pytest.raises(OutOfMemory):
        a.alloc_pages(0, Use.anon)
    assert state(a) == before


def test_alloc_within_a_node_range():
    a = PageAllocator(4 * HPAGE_PMD_NR)
    p = a.alloc_pages(0, Use.anon, within=(1024, 2048))
    assert p == 1024
    head = a.alloc_pages(9, Use.anon, within=(1024, 2048))
    assert head == 1536
    before = state(a)
    with pytest.raises(OutOfMemory):
        a.alloc_pages(9, Use.anon, within=(1024, 2048))
    assert state(a) == before


def test_check_pfn_accepts_ints_and_refuses_out_of_range_or_non_numbers():
    a = PageAllocator(HPAGE_PMD_NR)
    assert a.check_pfn(np.int64(5)) == 5
    for bad in (-1, HPAGE_PMD_NR, 10**12):
        with pytest.raises(BadPage):
            a.check_pfn(bad)
    with pytest.raises(BadPage):
        a.check_pfn("five")
    with pytest.raises(BadPage):
        a.check_pfn(None)


def test_copy_is_independent():
    a = PageAllocator(HPAGE_PMD_NR)
    b = a.copy()
    b.alloc_pages(0, Use.anon)
    assert a.nr_free_pages == HPAGE_PMD_NR and a.mem_map["_count"][0] == 0


def test_dump_page_shows_biased_and_raw_mapcount():
    a = PageAllocator(HPAGE_PMD_NR)
    a.alloc_pages(9, Use.anon)
    text = dump_page(a.mem_map, 3, "because")
    assert "pfn 0x3" in text and "count:0" in text and "mapcount:0 (raw -1)" in text
    assert "first_page:0" in text and "tail" in text and "because" in text
