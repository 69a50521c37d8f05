"""thplab.invariants: the checker accepts consistent machines and catches each kind of corruption."""

import numpy as np
import pytest

from conftest import LEVELS, thp_head_of
from thplab import Machine
from thplab.errors import InvariantViolation
from thplab.invariants import held_pages, mapping_counts, problems
from thplab.page_flags import PG, Use
from thplab.params import HPAGE_PMD_SIZE, PAGE_SIZE

M2 = HPAGE_PMD_SIZE
K4 = PAGE_SIZE


def busy(level):
    """THPs (one PTE-mapped from level 4 / split at 0-3), 4 KiB pages, a fork and pins."""
    m = Machine.boot("16M", patches=level, seed=0)
    pid = m.spawn()
    a = m.mmap(pid, 2 * M2)
    m.touch(pid, a, 2 * M2)
    small = m.mmap(pid, 4 * K4, thp=False)
    m.touch(pid, small, 4 * K4)
    child = m.fork(pid)
    m.split_huge_pmd(child, a + M2)
    pins = m.get_user_pages(pid, a + 5 * K4, 2)
    m.check()
    return m, pid, child, a, small, pins


@pytest.mark.parametrize("level", LEVELS)
def test_consistent_machines_have_no_problems(level):
    m, *_ = busy(level)
    assert problems(m) == []


def corrupt(m, field, pfn, delta):
    m.mem_map[field][pfn] += delta


@pytest.mark.parametrize("level", [0, 4, 10])
def test_a_head_count_off_by_one_is_caught(level):
    m, pid, child, a, small, pins = busy(level)
    head = thp_head_of(m, pid, a)
    corrupt(m, "_count", head, 1)
    with pytest.raises(InvariantViolation, match=f"level {level}"):
        m.check()


@pytest.mark.parametrize("level", [0, 4, 10])
def test_a_tail_mapcount_off_by_one_is_caught(level):
    m, pid, child, a, small, pins = busy(level)
    corrupt(m, "_mapcount", thp_head_of(m, pid, a) + 7, 1)
    with pytest.raises(InvariantViolation, match="tail _mapcount"):
        m.check()


@pytest.mark.parametrize("level", [0, 10])
def test_a_tail_with_a_count_is_caught(level):
    m, pid, child, a, small, pins = busy(level)
    corrupt(m, "_count", thp_head_of(m, pid, a) + 9, 1)
    assert any("tail's _count" in p for p in problems(m))


def test_a_4k_page_with_a_wrong_count_or_mapcount_is_caught():
    m, pid, child, a, small, pins = busy(0)
    p = int(m.walk(pid, [small])["pfn"][0])
    corrupt(m, "_count", p, 1)
    assert any("maps +" in x for x in problems(m))
    corrupt(m, "_count", p, -1)
    corrupt(m, "_mapcount", p, -1)
    assert any("PTEs map it" in x for x in problems(m))


def test_a_free_page_with_a_reference_is_caught():
    m, *_ = busy(10)
    free = int(np.flatnonzero(m.mem_map["use"] == Use.free)[-1])
    m.mem_map["_count"][free] = 1
    assert any("free page" in p for p in problems(m))


def test_a_leaked_page_is_caught():
    m, pid, *_ = busy(0)
    p = m.allocator.alloc_pages(0, Use.anon)
    assert f"page {p:#x} is allocated but neither mapped nor pinned (leak)" in problems(m)


def test_a_leaked_thp_is_caught():
    m, *_ = busy(10)
    head = m.allocator.alloc_pages(9, Use.anon)
    assert any(f"THP {head:#x}" in p and "leak" in p for p in problems(m))


def test_a_tail_pointing_at_the_wrong_head_is_caught():
    m, pid, child, a, small, pins = busy(4)
    head = thp_head_of(m, pid, a)
    m.mem_map["first_page"][head + 3] = head + 1
    assert "a THP's tails do not all point at its head" in problems(m)


def test_a_pin_the_counters_do_not_know_about_is_caught():
    m, pid, child, a, small, pins = busy(6)
    m.pins[int(m.walk(pid, [small])["pfn"][0])] += 1
    assert problems(m)


def test_nr_free_pages_and_page_table_accounting_are_checked():
    m, pid, *_ = busy(0)
    m.allocator.nr_free_pages += 1
    assert "nr_free_pages disagrees with the pages marked free" in problems(m)
    m.allocator.nr_free_pages -= 1
    m.vmstat.count("nr_page_table_pages")
    assert any(p.startswith("nr_page_table_pages") for p in problems(m))
    m.vmstat.count("nr_page_table_pages", -1)
    m.processes[pid].nr_ptes += 1
    assert any("nr_ptes" in p for p in problems(m))
    m.processes[pid].nr_ptes -= 1
    m.processes[pid].anon_rss -= 1
    assert any("rss" in p for p in problems(m))
    m.processes[pid].anon_rss += 1
    assert problems(m) == []


def test_an_unreachable_page_table_is_caught():
    m, pid, *_ = busy(10)
    pfn = m.allocator.alloc_pages(0, Use.pgtable)
    m.pgtables.add(pfn, 1)
    assert any("not reachable" in p for p in problems(m))


def test_compound_lock_left_held_is_caught():
    m, pid, child, a, small, pins = busy(0)
    head = thp_head_of(m, pid, a)
    m.mem_map["flags"][head] |= np.uint32(1 << PG.compound_lock)
    assert "compound_lock left held" in problems(m)


def test_unaligned_compound_pages_use_the_general_path():
    """THPs are 2 MiB aligned in practice; the checker must not rely on it for correctness."""
    m, pid, child, a, small, pins = busy(10)
    head = thp_head_of(m, pid, a)
    # fake a misaligned compound page: the checker then reads 512 pages from `head + 1`
    m.mem_map["flags"][head + 1] |= np.uint32(1 << PG.head)
    assert problems(m)


def test_mapping_counts_and_held_pages():
    m, pid, child, a, small, pins = busy(10)
    c = mapping_counts(m)
    head = thp_head_of(m, pid, a + M2)
    assert c["pmd_maps"][thp_head_of(m, pid, a)] == 2
    assert c["pmd_maps"][head] == 1 and c["pte_maps"][head + 1] == 1
    assert held_pages(m) == {}
    m.munmap(child, a + M2, 8 * K4)
    m.exit(pid)
    assert held_pages(m) == {head: 8}
    assert sum(held_pages(m).values()) == 8
    m.check()


@pytest.mark.parametrize("level", [0, 10])
def test_check_of_a_64m_machine_full_of_thps_is_fast(level):
    import time

    m = Machine.boot("64M", patches=level)
    pid = m.spawn()
    a = m.mmap(pid, 28 * M2)
    for i in range(28):
        m.fault(pid, a + i * M2)
    m.fork(pid)
    start = time.perf_counter()
    for _ in range(10):
        m.check()
    assert (time.perf_counter() - start) / 10 < 0.05
