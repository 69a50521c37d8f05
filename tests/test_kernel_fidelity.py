"""Behaviour checked against the kernel source, one test per corrected difference.

Each test names the function it follows; level 0 is read in v3.16 (series/trees.py),
the RFC patches in their posted emails (linux-mm archive, Message-Ids in each patch module).
"""

import numpy as np
import pytest

from conftest import LEVELS, assert_unchanged, snapshot
from thplab import Machine
from thplab.params import EFAULT, EINVAL, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from thplab.series import PATCHES

M2, K4 = HPAGE_PMD_SIZE, PAGE_SIZE


# ---------------------------------------------------------------- 1. get_futex_key()

@pytest.mark.parametrize("level", [0, 8, 9, 10])
def test_get_futex_key_pins_for_writing_first_and_breaks_cow(level):
    """v3.16 kernel/futex.c get_futex_key(): get_user_pages_fast(address, 1, 1, &page) first;
    patch 09 keeps that call.  On a THP shared after fork() the write pin is a COW fault."""
    m = Machine.boot("16M", patches=level, seed=0)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    assert m.get_futex_key(child, addr + 5 * K4 + 4) == (child, addr + 5 * K4)
    assert m.vmstat["thp_fault_alloc"] == 2            # the child now has its own THP
    w = m.walk(child, [addr])
    assert w["level"][0] == 2 and int(w["pfn"][0]) != head and w["writable"][0]
    m.check()


@pytest.mark.parametrize("level", [0, 9])
def test_get_futex_key_on_read_only_anonymous_memory_is_efault(level):
    """v3.16 get_futex_key(): the write pin fails (check_vma_flags(), mm/gup.c), VERIFY_READ retries
    read-only, and a read-only anonymous page gives -EFAULT ("if (ro) err = -EFAULT")."""
    m = Machine.boot("16M", patches=level, seed=0)
    pid = m.spawn()
    ro = m.mmap(pid, M2, "r")
    assert m.get_futex_key(pid, ro + 8) == -EFAULT
    assert m.get_futex_key(pid, ro + 8, write=True) == -EFAULT   # VERIFY_WRITE: no read-only retry
    assert m.vmstat["thp_fault_alloc"] == 1                       # the read-only pin faulted the page in
    assert not m.pins.any()
    m.check()


@pytest.mark.parametrize("level", LEVELS)
def test_get_futex_key_alignment_and_the_last_word_of_a_thp(level):
    """v3.16 get_futex_key(): returns -EINVAL unless 4-byte aligned, before touching anything;
    the key is for the page of the word."""
    m = Machine.boot("16M", patches=level, seed=0)
    pid, addr, head = m.map_thp()
    last = addr + M2 - 4
    assert m.get_futex_key(pid, last) == (pid, addr + M2 - K4)
    before = snapshot(m)
    assert m.get_futex_key(pid, addr + 6) == -EINVAL
    assert m.get_futex_key(pid, 0x1002) == -EINVAL      # unaligned comes first, mapped or not
    assert_unchanged(before, m)
    assert int(m.mem_map["_count"][head]) == 1
    m.check()


# ---------------------------------------------------------------- 4. COW without a free THP

def _fragment(m, pid):
    """Use all memory but every other 4 KiB page, so no order-9 block is left (but > 512 pages are)."""
    free = m.allocator.nr_free_pages
    x = m.mmap(pid, free * K4, thp=False)
    m.touch(pid, x, (free - 8) * K4)
    for i in range(0, free - 8, 2):
        m.munmap(pid, x + i * K4, K4)
    assert not m.allocator.can_alloc(9) and m.allocator.nr_free_pages >= HPAGE_PMD_NR


@pytest.mark.parametrize("level", [0, 4, 10])
def test_cow_of_a_thp_without_a_free_thp_copies_into_512_small_pages(level):
    """v3.16 do_huge_pmd_wp_page() -> do_huge_pmd_wp_page_fallback(): only the faulting process gets
    512 new 4 KiB pages; the other keeps its PMD, the THP is not split, thp_fault_fallback +1."""
    m = Machine.boot("8M", patches=level, seed=0)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    _fragment(m, pid)
    split_events = {k: v for k, v in m.vmstat.as_dict().items() if k.startswith("thp_split")}
    m.touch(child, addr, K4)
    assert m.vmstat["thp_fault_fallback"] == 1
    assert {k: v for k, v in m.vmstat.as_dict().items() if k.startswith("thp_split")} == split_events
    assert m.walk(pid, [addr])["level"][0] == 2 and head in m.thp_heads()
    w = m.walk(child, np.arange(addr, addr + M2, K4, dtype=np.int64))
    assert (w["level"] == 1).all() and w["writable"].all()
    assert not np.isin(w["pfn"], np.arange(head, head + HPAGE_PMD_NR)).any()
    assert int(m.page_mapcount([head])[0]) == 1 and int(m.page_count([head])[0]) == 1
    m.check()


def test_cow_fallback_splits_only_when_512_pages_cannot_be_had():
    """v3.16 do_huge_pmd_wp_page(): VM_FAULT_OOM from the fallback -> split_huge_page(page)."""
    m = Machine.boot("4M", patches=0, seed=0)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    x = m.mmap(pid, m.allocator.nr_free_pages * K4, thp=False)
    m.touch(pid, x, (m.allocator.nr_free_pages - 4) * K4)
    assert m.allocator.nr_free_pages < HPAGE_PMD_NR
    m.touch(child, addr, K4)
    assert m.vmstat["thp_fault_fallback"] == 1 and m.vmstat["thp_split"] == 1
    m.check()


# ---------------------------------------------------------------- 5. patch cards

def test_patch_cards_list_the_files_of_each_patch_s_own_email():
    """Diffstats of the archived emails (<1402329861-7037-N-git-send-email-...>)."""
    files = {p.number: p.files for p in PATCHES}
    assert files[1] == {"Documentation/vm/transhuge.txt": 11, "arch/s390/mm/pgtable.c": 17,
                        "include/linux/mm.h": 1, "mm/gup.c": 4, "mm/migrate.c": 7}
    assert files[6] == {"include/linux/hugetlb_inline.h": 9, "include/linux/mm.h": 22,
                        "mm/huge_memory.c": 191, "mm/swap.c": 126}
    assert "mm/mremap.c" not in files[7] and files[7]["mm/huge_memory.c"] == 83
    for p in PATCHES:
        archived = p.source == "posted"
        assert all(isinstance(v, int) for v in p.files.values()) == archived, p.number
        assert archived or all(str(v).startswith("not archived") for v in p.files.values())


# ---------------------------------------------------------------- 6. nr_anon_transparent_hugepages

@pytest.mark.parametrize("level", [4, 6, 10])
def test_nr_anon_thp_drops_when_the_head_mapcount_reaches_minus_one(level):
    """v3.16 mm/rmap.c page_remove_rmap(), which the RFC leaves alone (patch 04 does not touch rmap.c):
    -1 when the head's _mapcount reaches -1 -- after split_huge_pmd() that is the PTE of subpage 0 --
    and -1 again when __split_huge_page_refcount() splits the page."""
    m = Machine.boot("16M", patches=level, seed=0)
    pid, addr, head = m.map_thp()
    m.split_huge_pmd(pid, addr)
    assert m.vmstat["nr_anon_transparent_hugepages"] == 1
    m.munmap(pid, addr + 7 * K4, K4)                      # a tail: no change
    assert m.vmstat["nr_anon_transparent_hugepages"] == 1
    m.munmap(pid, addr, K4)                               # subpage 0: the head's _mapcount -> -1
    assert m.vmstat["nr_anon_transparent_hugepages"] == 0 and head in m.thp_heads()
    m.exit(pid)                                           # freed whole: no second decrement
    assert m.vmstat["nr_anon_transparent_hugepages"] == 0
    m.check()
