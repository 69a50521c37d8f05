"""thplab.invariants: the checker accepts consistent machines and catches each kind of corruption."""

import numpy as np
import pytest

from conftest import LEVELS, thp_head_of
from thplab import Machine
from thplab import invariants
from thplab import memory as mem
from thplab import pgtable as pt
from thplab.errors import InvariantViolation
from thplab.invariants import held_pages, mapping_counts, problems
from thplab.page_flags import PG, Use
from thplab.params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE

M2 = HPAGE_PMD_SIZE
K4 = PAGE_SIZE


@pytest.fixture(autouse=True, params=["one stretch", "two blocks a stretch"])
def stretch(request, monkeypatch):
    """Every test twice: a lesson's machine read in one stretch, and two 2 MiB blocks at a time
    (as a large machine is read), so that what one stretch finds is not lost in the next."""
    if request.param != "one stretch":
        monkeypatch.setattr(invariants, "CHUNK", 2 * HPAGE_PMD_NR)
    return request.param


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


def test_a_compound_page_not_filling_an_aligned_2m_block_is_caught():
    """THPs are order-9 buddy blocks, so 2 MiB aligned; the checker reads memory by that shape."""
    m, pid, child, a, small, pins = busy(10)
    head = thp_head_of(m, pid, a)
    m.mem_map["flags"][head + 1] |= np.uint32(1 << PG.head)     # a head inside a THP
    assert any(f"THP {head:#x}: a page of its 2 MiB block" in p for p in problems(m))
    m.mem_map["flags"][head + 1] &= ~np.uint32(1 << PG.head)
    p = int(m.walk(pid, [small])["pfn"][0])
    m.mem_map["flags"][p] |= np.uint32(1 << PG.tail)            # a tail outside any THP
    assert any(f"page {p:#x} is marked PG_head or PG_tail" in x for x in problems(m))


def test_a_thp_tail_that_is_not_an_anon_page_is_caught():
    m, pid, child, a, small, pins = busy(0)
    head = thp_head_of(m, pid, a)
    m.mem_map["use"][head + 511] = Use.free
    assert any(f"THP {head:#x}: a page of its 2 MiB block is not an anon page" in p for p in problems(m))


def test_a_huge_pmd_mapping_a_free_block_is_caught():
    m, pid, child, a, small, pins = busy(4)
    free = int(np.flatnonzero(m.mem_map["use"][::HPAGE_PMD_NR] == Use.free)[-1]) * HPAGE_PMD_NR
    table, index = mem.pmd_offset(m.kernel, m.processes[pid], a)
    entry = m.pgtables.table(table)[index]
    m.pgtables.table(table)[index] = pt.mk_huge_pmd(free, entry & np.uint64(0xfff))
    found = problems(m)
    assert "a huge PMD maps a page that is not a THP head" in found
    assert "a mapped or pinned page is not an allocated anon page" in found
    assert any(p.startswith(f"free page {free:#x}") for p in found)


def test_a_pinned_free_page_is_caught():
    m, *_ = busy(10)
    free = int(np.flatnonzero(m.mem_map["use"] == Use.free)[0])
    m.pins[free] += 1
    assert any(p.startswith(f"free page {free:#x}") for p in problems(m))


def test_a_thp_subpage_mapped_by_a_pte_is_impossible_before_patch_04():
    m, pid, child, a, small, pins = busy(0)
    head = thp_head_of(m, pid, a)
    pmdp = mem.pmd_offset(m.kernel, m.processes[pid], small)
    ptes = m.pgtables.table(pt.pte_pfn(m.pgtables.table(pmdp[0])[pmdp[1]]))
    i = int(pt.pte_index(small))
    ptes[i] = pt.mk_pte(head + 1, ptes[i] & np.uint64(0xfff))
    assert "a THP subpage is mapped by a PTE, impossible in this kernel" in problems(m)


def test_a_leaked_reference_counts_as_a_pin():
    m, pid, child, a, small, pins = busy(1)
    p = int(m.walk(pid, [small])["pfn"][0])
    m.leaked[p] += 1
    assert any(f"page {p:#x}: _count" in x for x in problems(m))
    m.mem_map["_count"][p] += 1
    assert problems(m) == []


def test_an_entry_beyond_memory_is_caught():
    m, pid, child, a, small, pins = busy(10)
    table, index = mem.pmd_offset(m.kernel, m.processes[pid], a)
    m.pgtables.table(table)[index] = pt.mk_huge_pmd(m.nr_pages, np.uint64(0x67))
    with pytest.raises(InvariantViolation, match="beyond the last page"):
        problems(m)


def test_a_thp_only_pinned_is_held_not_leaked():
    m, pid, child, a, small, pins = busy(10)
    m.exit(child)
    m.munmap(pid, a, M2)          # the pinned THP: mapped by nobody now
    assert problems(m) == []
    m.put_page(pins)
    assert problems(m) == []


def test_a_pinned_page_table_is_caught():
    m, *_ = busy(4)
    table = int(np.flatnonzero(m.mem_map["use"] == Use.pgtable)[0])
    m.pins[table] += 1
    assert "a mapped or pinned page is not an allocated anon page" in problems(m)


@pytest.mark.parametrize("where", ["THP head", "4 KiB page", "PTE-mapped tail"])
def test_a_mapped_page_of_a_freed_anon_vma_is_caught(where):
    m, pid, child, a, small, pins = busy(10)
    p = {"THP head": thp_head_of(m, pid, a), "4 KiB page": int(m.walk(pid, [small])["pfn"][0]),
         "PTE-mapped tail": int(m.walk(child, [a + M2 + 3 * K4])["pfn"][0])}[where]
    dead = max(m.anon_vmas) + 7
    m.mem_map["mapping"][p] = (dead << 2) | 1
    assert f"a mapped page points at freed anon_vma {dead}" in problems(m)


def test_a_page_mapped_twice_in_one_process_is_counted_twice():
    m, pid, child, a, small, pins = busy(0)
    p = int(m.walk(pid, [small])["pfn"][0])
    pmdp = mem.pmd_offset(m.kernel, m.processes[pid], small)
    ptes = m.pgtables.table(pt.pte_pfn(m.pgtables.table(pmdp[0])[pmdp[1]]))
    i = int(pt.pte_index(small))
    ptes[i + 100] = ptes[i]
    maps = m.mem_map["_mapcount"][p] + 1          # the parent's and the child's
    assert f"page {p:#x}: _mapcount {maps - 1} but {maps + 1} PTEs map it" in problems(m)


@pytest.mark.parametrize("level", [0, 10])
def test_every_page_is_checked(level):
    """A reference too many, or PG_tail toggled, on any page of a busy machine is caught.

    Pages tried: the first two and the last of every 2 MiB block, and a seeded sample.
    """
    m, *_ = busy(level)
    assert problems(m) == []
    blocks = np.arange(0, m.nr_pages, HPAGE_PMD_NR)
    sample = np.random.default_rng(level).choice(m.nr_pages, 48, replace=False)
    for p in np.unique(np.concatenate([blocks, blocks + 1, blocks + HPAGE_PMD_NR - 1, sample])).tolist():
        m.mem_map["_count"][p] += 1
        assert problems(m), f"_count + 1 of pfn {p:#x} passed"
        m.mem_map["_count"][p] -= 1
        m.mem_map["flags"][p] ^= np.uint32(1 << PG.tail)
        assert problems(m), f"PG_tail toggled on pfn {p:#x} passed"
        m.mem_map["flags"][p] ^= np.uint32(1 << PG.tail)


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
