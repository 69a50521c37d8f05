"""The worked arithmetic of kernel-semantics.md, reproduced exactly at levels 0, 4 and 10.

"raw" is the stored ``_mapcount`` (biased by -1).  Every number below is derived by
hand from the reference (§1.2-1.8 for the old scheme, §2.2-2.3 for RFC v1), not read
back from the model.
"""

import numpy as np
import pytest

from conftest import raw, thp_head_of
from thplab import Machine
from thplab.invariants import held_pages
from thplab.page_flags import PageCompound, PageHead, PageTail, Use
from thplab.params import EBUSY, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE

M2 = HPAGE_PMD_SIZE
K4 = PAGE_SIZE
TAILS = slice(1, HPAGE_PMD_NR)


def events(m):
    return {k: v for k, v in m.vmstat.items() if k.startswith("thp_split")}


def fault(level):
    m = Machine.boot("16M", patches=level, seed=0)
    pid = m.spawn()
    a = m.mmap(pid, M2)
    m.touch(pid, a, M2)
    return m, pid, a, thp_head_of(m, pid, a)


def fault_fork_pin(level):
    m, pid, a, head = fault(level)
    child = m.fork(pid)
    pin = m.get_user_pages_fast(pid, a + 5 * K4)
    m.check()
    return m, pid, child, a, head, pin


def tails(m, head, field):
    return m.mem_map[field][head + 1:head + HPAGE_PMD_NR]


# ------------------------------------------------------------------ fault, fork, pin (§1.2, §1.6, §1.4/1.5, §2.3)

@pytest.mark.parametrize("level", [0, 4, 10])
def test_fault_fork_and_gup_fast_pin_of_subpage_5(level):
    m, pid, a, head = fault(level)
    # fault: the allocation's reference becomes the PMD's; page_add_new_anon_rmap -> raw 0
    assert raw(m, head) == (1, 0)
    assert (tails(m, head, "_count") == 0).all() and (tails(m, head, "_mapcount") == -1).all()
    child = m.fork(pid)
    # fork: copy_huge_pmd get_page(head) + page_dup_rmap(head)
    assert raw(m, head) == (2, 1)
    pin = m.get_user_pages_fast(pid, a + 5 * K4)
    assert pin.tolist() == [head + 5]
    assert m.page_count(head + 5) == 3
    if level == 0:
        # old: head _count 3 and tail 5 raw _mapcount 0 (get_huge_page_tail)
        assert raw(m, head) == (3, 1) and raw(m, head + 5) == (0, 0)
        assert m.page_mapcount(head + 5) == 1           # a pin count, not a mapcount
    else:
        # v1: head _count 3, tail untouched
        assert raw(m, head) == (3, 1) and raw(m, head + 5) == (0, -1)
        assert m.page_mapcount(head + 5) == 0
    assert (tails(m, head, "_count") == 0).all()
    m.check()
    m.put_page(pin)
    assert raw(m, head) == (2, 1) and raw(m, head + 5) == (0, -1)
    m.exit(child)
    assert raw(m, head) == (1, 0)
    m.check()


@pytest.mark.parametrize("level", [0, 4, 10])
def test_slow_path_pin_moves_the_same_counters_as_gup_fast(level):
    m, pid, a, head = fault(level)
    pins = m.get_user_pages(pid, a + 4 * K4, 3)
    assert pins.tolist() == [head + 4, head + 5, head + 6]
    assert raw(m, head) == (4, 0)
    expect = 0 if level == 0 else -1
    assert tails(m, head, "_mapcount")[3:6].tolist() == [expect] * 3
    m.check()


# ------------------------------------------------------------------ old split_huge_page() (§1.7)

def test_old_split_arithmetic_with_a_pin_at_level_0():
    m, pid, child, a, head, pin = fault_fork_pin(0)
    k = m.kernel
    k.get_page(head)                                  # the caller's reference
    assert raw(m, head) == (4, 1)
    assert k.split_huge_page(head) == 0
    # M = pm(head) = 2 PMD maps; pins_5 = 1, other tails 0
    # tail_i._count = M + pins_i ; tail raw _mapcount = head raw = 1
    assert raw(m, head + 5) == (2 + 1, 1)
    others = np.r_[1:5, 6:HPAGE_PMD_NR]
    assert (m.mem_map["_count"][head + others] == 2).all()
    assert (m.mem_map["_mapcount"][head + others] == 1).all()
    # head._count = before - Σ pins = 4 - 1 = M + head pins + caller's pin = 3 ; raw unchanged
    assert raw(m, head) == (3, 1)
    assert not PageCompound(m.mem_map, head + np.arange(HPAGE_PMD_NR)).any()
    k.put_page(head)
    assert raw(m, head) == (2, 1)
    assert events(m) == {"thp_split": 1}
    assert m.vmstat["nr_anon_transparent_hugepages"] == 0
    # both processes now map 512 PTEs (read-only after fork)
    for p in (pid, child):
        w = m.walk(p, [a, a + 5 * K4, a + M2 - K4])
        assert w["level"].tolist() == [1, 1, 1] and not w["writable"].any()
        assert w["pfn"].tolist() == [head, head + 5, head + 511]
    m.check()
    m.put_page(pin)
    assert raw(m, head + 5) == (2, 1)
    m.check()


def test_old_split_arithmetic_without_a_pin_at_level_0():
    m, pid, a, head = fault(0)
    m.fork(pid)
    assert m.split_huge_page(head) == 0
    assert (m.mem_map["_count"][head:head + HPAGE_PMD_NR] == 2).all()
    assert (m.mem_map["_mapcount"][head:head + HPAGE_PMD_NR] == 1).all()
    assert events(m) == {"thp_split": 1}
    m.check()


def test_old_split_of_a_page_mapped_nowhere_returns_1_at_level_0():
    m, pid, a, head = fault(0)
    pin = m.get_user_pages(pid, a + 7 * K4)
    m.exit(pid)
    assert raw(m, head) == (1, -1) and raw(m, head + 7) == (0, 0)
    assert m.split_huge_page(head) == 1                # page_get_anon_vma() fails
    assert PageHead(m.mem_map, head) and events(m) == {"thp_split": 0}
    m.check()
    m.put_page(pin)
    m.check()


# ------------------------------------------------------------------ v1 split_huge_page() (§2.2 patch 06)

@pytest.mark.parametrize("level", [10])
def test_v1_split_arithmetic_without_a_pin(level):
    m, pid, a, head = fault(level)
    child = m.fork(pid)
    m.split_huge_pmd(child, a)
    m.munmap(child, a + 9 * K4, K4)                  # subpage 9: only the parent maps it
    k = m.kernel
    k.get_page(head)                                 # the caller's pin
    # Σ pm = head 2 + 510 tails * 1 + tail 9 * 0 = 512 == page_count - 1 = (2 + 510 + 0 + 1) - 1
    assert raw(m, head) == (513, 1)
    assert k.split_huge_page(head) == 0
    # tail _count = pm(tail): 2 PTEs (both processes) ; raw _mapcount untouched
    assert raw(m, head + 1) == (2, 1) and raw(m, head + 511) == (2, 1)
    assert raw(m, head + 9) == (1, 0)
    # head _count = pm(head) + caller pin = 2 + 1
    assert raw(m, head) == (3, 1)
    assert not PageTail(m.mem_map, head + np.arange(1, HPAGE_PMD_NR)).any()
    k.put_page(head)
    assert raw(m, head) == (2, 1)
    assert events(m) == {"thp_split_page": 1, "thp_split_page_failed": 0, "thp_split_pmd": 2}
    m.check()


def test_v1_split_with_a_pin_fails_and_changes_nothing_at_level_10():
    m, pid, child, a, head, pin = fault_fork_pin(10)
    before = m.mem_map.tobytes(), m.pgtables.entries.copy()
    assert m.split_huge_page(head + 5) == -EBUSY
    # Σ pm = 2 != page_count - 1 = (2 maps + 1 pin + 1 caller) - 1 = 3
    assert m.mem_map.tobytes() == before[0] and (m.pgtables.entries == before[1]).all()
    assert events(m) == {"thp_split_page": 0, "thp_split_page_failed": 1, "thp_split_pmd": 0}
    m.check()


@pytest.mark.parametrize("level", [4, 5])
def test_split_huge_page_stub_at_levels_4_and_5_even_without_pins(level):
    m, pid, a, head = fault(level)
    assert m.split_huge_page(head) == -EBUSY
    assert raw(m, head) == (1, 0) and PageHead(m.mem_map, head)
    assert events(m) == ({"thp_split": 0} if level == 4 else
                         {"thp_split_page": 0, "thp_split_page_failed": 1, "thp_split_pmd": 0})


# ------------------------------------------------------------------ v1 __split_huge_pmd (§2.2 patch 04, §2.3)

@pytest.mark.parametrize("level", [4, 10])
def test_v1_split_huge_pmd_arithmetic(level):
    m, pid, child, a, head, pin = fault_fork_pin(level)
    assert raw(m, head) == (3, 1)
    m.split_huge_pmd(child, a)
    # head _count += 511 ; tails raw +1 (-1 -> 0, also the pinned tail 5) ; head raw unchanged
    assert raw(m, head) == (3 + 511, 1)
    assert (tails(m, head, "_mapcount") == 0).all()
    assert (tails(m, head, "_count") == 0).all()
    assert events(m) == ({"thp_split": 0} if level == 4 else
                         {"thp_split_page": 0, "thp_split_page_failed": 0, "thp_split_pmd": 1})
    w = m.walk(child, [a, a + 5 * K4])
    assert w["level"].tolist() == [1, 1] and w["pfn"].tolist() == [head, head + 5]
    assert m.walk(pid, [a])["level"][0] == 2
    # no allocation: the child's deposited table became its PTE table
    assert m.processes[child].nr_ptes == 1 and not m.processes[child].pmd_huge_pte
    m.check()


def test_level_0_split_huge_page_pmd_splits_the_whole_page():
    m, pid, child, a, head, pin = fault_fork_pin(0)
    m.split_huge_pmd(child, a)
    # get_page(head) 4 ; split: head 4 - 1 (tail 5's pin) = 3 ; put_page -> 2
    assert raw(m, head) == (2, 1)
    assert raw(m, head + 5) == (3, 1) and raw(m, head + 6) == (2, 1)
    assert events(m) == {"thp_split": 1}
    assert m.walk(pid, [a])["level"][0] == 1
    m.check()


# ------------------------------------------------------------------ partial munmap

def test_partial_munmap_arithmetic_level_0():
    m, pid, child, a, head, pin = fault_fork_pin(0)
    m.munmap(child, a + 100 * K4, 3 * K4)
    # the VMA boundary at an unaligned address splits the whole THP (as above), then the
    # child's 3 PTEs are zapped: _mapcount 1 -> 0, _count 2 -> 1
    assert raw(m, head) == (2, 1)
    assert raw(m, head + 5) == (3, 1)
    assert [raw(m, head + i) for i in (100, 101, 102)] == [(1, 0)] * 3
    assert raw(m, head + 1) == (2, 1)
    assert events(m) == {"thp_split": 1}
    m.exit(pid)                                        # now the 3 pages are freed
    assert (m.mem_map["use"][head + 100:head + 103] == Use.free).all()
    assert held_pages(m) == {}
    m.check()


@pytest.mark.parametrize("level", [4, 10])
def test_partial_munmap_arithmetic_v1(level):
    m, pid, child, a, head, pin = fault_fork_pin(level)
    m.munmap(child, a + 100 * K4, 3 * K4)
    # __split_huge_pmd in the child: 3 + 511 = 514 ; zap 3 PTEs: 514 - 3 = 511
    assert raw(m, head) == (511, 1)
    assert raw(m, head + 5) == (0, 0)
    assert [raw(m, head + i) for i in (100, 101, 102)] == [(0, -1)] * 3
    assert raw(m, head + 1) == (0, 0)
    # Σ pm = 2 + 508 = 510 ; + 1 pin = 511 = head _count
    assert int((m.mem_map["_mapcount"][head:head + HPAGE_PMD_NR] + 1).sum()) + 1 == 511
    assert held_pages(m) == {}                         # the parent's PMD still maps them
    m.exit(pid)
    # zap_huge_pmd: head raw 1 -> 0, _count 511 -> 510 ; subpages 100..102 are now held
    assert raw(m, head) == (510, 0)
    assert held_pages(m) == {head: 3}
    assert PageHead(m.mem_map, head)
    m.check()


# ------------------------------------------------------------------ mprotect of a sub-range

def test_mprotect_sub_range_arithmetic_level_0():
    m, pid, a, head = fault(0)
    m.get_user_pages_fast(pid, a + 5 * K4)
    assert raw(m, head) == (2, 0) and raw(m, head + 5) == (0, 0)
    m.mprotect(pid, a + 16 * K4, 4 * K4, "r")
    # split_huge_page_address -> whole split: get 3 ; 3 - 1 pin = 2 ; put -> 1
    assert raw(m, head) == (1, 0)
    assert raw(m, head + 5) == (2, 0) and raw(m, head + 16) == (1, 0)
    assert events(m) == {"thp_split": 1}
    assert m.walk(pid, [a + 15 * K4, a + 16 * K4, a + 19 * K4, a + 20 * K4])["writable"].tolist() \
        == [True, False, False, True]
    m.check()


@pytest.mark.parametrize("level", [4, 10])
def test_mprotect_sub_range_arithmetic_v1(level):
    m, pid, a, head = fault(level)
    m.get_user_pages_fast(pid, a + 5 * K4)
    assert raw(m, head) == (2, 0) and raw(m, head + 5) == (0, -1)
    m.mprotect(pid, a + 16 * K4, 4 * K4, "r")
    # __split_huge_pmd: 2 + 511 = 513 ; every tail raw 0 ; head raw 0
    assert raw(m, head) == (513, 0)
    assert (tails(m, head, "_mapcount") == 0).all()
    assert PageHead(m.mem_map, head)
    assert m.walk(pid, [a + 15 * K4, a + 16 * K4, a + 19 * K4, a + 20 * K4])["writable"].tolist() \
        == [True, False, False, True]
    assert events(m) == ({"thp_split": 0} if level == 4 else
                         {"thp_split_page": 0, "thp_split_page_failed": 0, "thp_split_pmd": 1})
    m.check()


# ------------------------------------------------------------------ COW of a shared THP

@pytest.mark.parametrize("level", [0, 4, 10])
def test_cow_write_in_the_child_copies_the_whole_thp(level):
    m, pid, a, head = fault(level)
    child = m.fork(pid)
    m.touch(child, a + 3 * K4, K4)
    new = thp_head_of(m, child, a)
    assert new != head
    # the child's PMD reference and mapping moved to a fresh THP
    assert raw(m, head) == (1, 0) and raw(m, new) == (1, 0)
    assert m.vmstat["thp_fault_alloc"] == 2
    assert m.walk(child, [a])["writable"][0] and not m.walk(pid, [a])["writable"][0]
    m.touch(pid, a, K4)                                # the parent reuses its THP
    assert thp_head_of(m, pid, a) == head and m.walk(pid, [a])["writable"][0]
    m.check()
