"""Address spaces: mmap placement, VMA splitting and merging, page-table walk, faults, fork, exit.

Level-independent behaviour of thplab.mmap / thplab.memory / Machine (v3.16 mm/mmap.c,
mm/mprotect.c, mm/memory.c), checked with ``m.check()`` after each step.
"""

import numpy as np
import pytest

from conftest import all_free, diff_snapshots, raw
from thplab import Machine
from thplab.errors import OutOfMemory, Segfault
from thplab.params import (HPAGE_PMD_NR, HPAGE_PMD_SIZE, MMAP_BASE, PAGE_SIZE, VM_EXEC,
                           VM_HUGEPAGE, VM_MAYREAD, VM_READ, VM_WRITE)

M2 = HPAGE_PMD_SIZE
K4 = PAGE_SIZE


def spans(m, pid):
    return [(v.vm_start, v.vm_end) for v in m.processes[pid].vmas]


def prots(m, pid):
    return ["".join(c if v.vm_flags & f else "-" for c, f in (("r", VM_READ), ("w", VM_WRITE),
                                                              ("x", VM_EXEC)))
            for v in m.processes[pid].vmas]


@pytest.fixture
def m():
    return Machine.boot("16M", patches=0, seed=0)


# ------------------------------------------------------------------ mmap placement

def test_mmap_without_hint_is_2mib_aligned_with_a_2mib_gap(m):
    pid = m.spawn()
    a = m.mmap(pid, 5000)
    b = m.mmap(pid, 3 << 20)
    c = m.mmap(pid, K4)
    assert a == MMAP_BASE and a % M2 == 0
    assert b == a + 2 * M2          # 5000 bytes round to one 2 MiB slot, then a 2 MiB gap
    assert c == b + 2 * M2 + M2    # 3 MiB round up to two 2 MiB slots, then the gap
    assert spans(m, pid) == [(a, a + 2 * K4), (b, b + (3 << 20)), (c, c + K4)]
    m.check()


def test_mmap_flags_rw_private_with_madvise_hugepage(m):
    pid = m.spawn()
    m.mmap(pid, M2)
    m.mmap(pid, M2, "r", thp=False)
    f0, f1 = (v.vm_flags for v in m.processes[pid].vmas)
    assert f0 & (VM_READ | VM_WRITE | VM_HUGEPAGE) == VM_READ | VM_WRITE | VM_HUGEPAGE
    assert f0 & VM_MAYREAD
    assert f1 & (VM_READ | VM_WRITE | VM_HUGEPAGE) == VM_READ


def test_mmap_fixed_replaces_what_was_there(m):
    pid = m.spawn()
    a = m.mmap(pid, M2)
    m.touch(pid, a, M2)
    got = m.mmap(pid, 2 * K4, addr=a + 3 * K4)
    assert got == a + 3 * K4
    assert spans(m, pid) == [(a, a + 3 * K4), (a + 3 * K4, a + 5 * K4), (a + 5 * K4, a + M2)]
    w = m.walk(pid, [a, a + 3 * K4, a + 4 * K4, a + 5 * K4])
    assert w["level"].tolist() == [1, 0, 0, 1]   # level 0 split the THP; the hole is unmapped
    m.check()


def test_processes_have_independent_mmap_bases(m):
    p, q = m.spawn(), m.spawn()
    assert m.mmap(p, M2) == m.mmap(q, M2) == MMAP_BASE


# ------------------------------------------------------------------ VMA split / merge

def test_mprotect_sub_range_splits_into_three_and_restoring_merges_back(m):
    pid = m.spawn()
    b = m.mmap(pid, 3 << 20)
    m.mprotect(pid, b + K4, 3 * K4, "r")
    assert spans(m, pid) == [(b, b + K4), (b + K4, b + 4 * K4), (b + 4 * K4, b + (3 << 20))]
    assert prots(m, pid) == ["rw-", "r--", "rw-"]
    pgoffs = [v.vm_pgoff for v in m.processes[pid].vmas]
    assert pgoffs == [b >> 12, (b >> 12) + 1, (b >> 12) + 4]
    m.mprotect(pid, b + K4, 3 * K4, "rw")
    assert spans(m, pid) == [(b, b + (3 << 20))]
    m.check()


def test_mprotect_merges_adjacent_fixed_mappings(m):
    pid = m.spawn()
    a = m.mmap(pid, 2 * K4)
    m.mmap(pid, 2 * K4, addr=a + 2 * K4)
    assert len(m.processes[pid].vmas) == 2
    m.mprotect(pid, a, 4 * K4, "r")
    assert spans(m, pid) == [(a, a + 4 * K4)] and prots(m, pid) == ["r--"]


def test_mprotect_at_the_vma_start_or_end_splits_in_two(m):
    pid = m.spawn()
    a = m.mmap(pid, 8 * K4)
    m.mprotect(pid, a, 3 * K4, "none")
    assert spans(m, pid) == [(a, a + 3 * K4), (a + 3 * K4, a + 8 * K4)]
    assert prots(m, pid) == ["---", "rw-"]
    m.mprotect(pid, a + 6 * K4, 2 * K4, "rx")
    assert prots(m, pid) == ["---", "rw-", "r-x"]
    m.check()


def test_munmap_middle_leaves_two_vmas_with_correct_pgoff(m):
    pid = m.spawn()
    a = m.mmap(pid, 3 << 20)
    m.munmap(pid, a + 5 * K4, 2 * K4)
    assert spans(m, pid) == [(a, a + 5 * K4), (a + 7 * K4, a + (3 << 20))]
    assert m.processes[pid].vmas[1].vm_pgoff == (a >> 12) + 7
    m.check()


def test_munmap_rounds_length_up_and_may_cover_holes(m):
    pid = m.spawn()
    a = m.mmap(pid, 4 * K4)
    b = m.mmap(pid, 4 * K4)
    m.munmap(pid, a + K4, 1)          # one byte -> one page
    assert spans(m, pid) == [(a, a + K4), (a + 2 * K4, a + 4 * K4), (b, b + 4 * K4)]
    m.munmap(pid, a, b - a + 2 * K4)  # across the gap between the two mappings
    assert spans(m, pid) == [(b + 2 * K4, b + 4 * K4)]
    m.munmap(pid, a, K4)              # nothing there any more: allowed, no-op
    m.check()


def test_munmap_of_everything_frees_every_page_table(m):
    pid = m.spawn()
    a = m.mmap(pid, 4 << 20)
    m.touch(pid, a, 4 << 20)
    m.touch(pid, a, K4)
    assert len(m.pgtables.table_pfns()) == 5  # PGD, PUD, PMD, two deposited PTE tables
    m.munmap(pid, a, 4 << 20)
    assert len(m.pgtables.table_pfns()) == 1  # only the PGD
    m.check()
    m.exit(pid)
    assert all_free(m)


def test_unaligned_vma_boundary_inside_a_thp_splits_its_pmd_at_every_level():
    for level in range(11):
        m = Machine.boot("16M", patches=level)
        pid = m.spawn()
        a = m.mmap(pid, M2)
        m.touch(pid, a, M2)
        m.mprotect(pid, a + 100 * K4, K4, "r")
        w = m.walk(pid, [a, a + 100 * K4, a + 101 * K4])
        assert w["level"].tolist() == [1, 1, 1], level
        assert w["writable"].tolist() == [True, False, True], level
        m.check()


def test_aligned_mprotect_of_a_whole_thp_keeps_the_pmd_and_write_protects_it(m):
    pid = m.spawn()
    a = m.mmap(pid, 2 * M2)
    m.touch(pid, a, 2 * M2)
    m.mprotect(pid, a, M2, "r")
    w = m.walk(pid, [a, a + M2])
    assert w["level"].tolist() == [2, 2]
    assert w["writable"].tolist() == [False, True]
    m.mprotect(pid, a, M2, "rw")          # private rw: protection_map has no RW bit
    assert not m.walk(pid, [a])["writable"][0]
    head = int(m.walk(pid, [a])["pfn"][0])
    m.touch(pid, a, K4)                   # write fault: reuse (mapcount 1), no copy
    assert int(m.walk(pid, [a])["pfn"][0]) == head and m.walk(pid, [a])["writable"][0]
    assert m.vmstat["thp_fault_alloc"] == 2
    m.check()


# ------------------------------------------------------------------ walk

def test_walk_reports_level_pfn_entries_and_writable(m):
    pid = m.spawn()
    a = m.mmap(pid, M2)
    b = m.mmap(pid, 2 * K4, thp=False)
    m.touch(pid, a, K4)
    m.touch(pid, b, K4, write=False)
    w = m.walk(pid, [a + 5 * K4 + 0xABC, b, b + K4, 0x1000])
    head = int(w["pfn"][0]) - 5
    assert w["level"].tolist() == [2, 1, 0, 0]
    assert w["pfn"][2:].tolist() == [-1, -1]
    assert int(w["pmd"][0]) == 0x80000000000000E7 | head << 12
    assert int(w["pte"][1]) & 0xFFF == 0x067      # P RW US A D: rw VMA faulted by a read
    assert w["writable"].tolist() == [True, True, False, False]
    assert int(w["pte"][0]) == 0 and int(w["pmd"][3]) == 0


def test_walk_of_a_fresh_process_maps_nothing(m):
    pid = m.spawn()
    w = m.walk(pid, np.arange(MMAP_BASE, MMAP_BASE + 4 * M2, M2, dtype=np.uint64))
    assert (w["level"] == 0).all() and (w["pfn"] == -1).all()


# ------------------------------------------------------------------ faults, rss, fork, exit

def test_thp_fault_accounting(m):
    pid = m.spawn()
    a = m.mmap(pid, M2)
    m.fault(pid, a + 12345)
    mm = m.processes[pid]
    head = int(m.walk(pid, [a])["pfn"][0])
    assert raw(m, head) == (1, 0)
    assert mm.anon_rss == HPAGE_PMD_NR and mm.nr_ptes == 1   # the deposited table counts
    assert m.vmstat["thp_fault_alloc"] == 1 and m.vmstat["nr_anon_transparent_hugepages"] == 1
    assert m.vmstat["nr_page_table_pages"] == 1
    assert m.smaps_anon_huge_kb(pid, a, M2) == 2048
    m.check()


def test_fault_outside_an_eligible_range_falls_back_to_4k_pages(m):
    pid = m.spawn()
    a = m.mmap(pid, M2 + K4)            # the second 2 MiB slot is only 4 KiB long
    m.touch(pid, a + M2, K4)
    assert m.walk(pid, [a + M2])["level"][0] == 1
    b = m.mmap(pid, M2, thp=False)      # no MADV_HUGEPAGE: 4 KiB pages (thp=madvise)
    m.touch(pid, b, K4)
    assert m.walk(pid, [b])["level"][0] == 1
    assert m.vmstat["thp_fault_alloc"] == 0 and m.vmstat["thp_fault_fallback"] == 0
    m.check()


def test_thp_always_and_never_modes():
    m = Machine.boot("16M", thp="always")
    pid = m.spawn()
    a = m.mmap(pid, M2, thp=False)
    m.touch(pid, a, K4)
    assert m.walk(pid, [a])["level"][0] == 2
    m = Machine.boot("16M", thp="never")
    pid = m.spawn()
    a = m.mmap(pid, M2)
    m.touch(pid, a, K4)
    assert m.walk(pid, [a])["level"][0] == 1


def test_no_free_2mib_block_is_a_thp_fault_fallback():
    m = Machine.boot("4M")
    pid = m.spawn()
    a = m.mmap(pid, M2)
    b = m.mmap(pid, M2)
    m.touch(pid, a, K4)                 # the only free 2 MiB block
    m.touch(pid, b, K4)
    assert m.walk(pid, [a, b])["level"].tolist() == [2, 1]
    assert m.vmstat["thp_fault_fallback"] == 1
    m.check()


def test_4k_cow_after_fork_copies_in_the_writer_only(m):
    pid = m.spawn()
    a = m.mmap(pid, 2 * K4, thp=False)
    m.touch(pid, a, 2 * K4)
    p0 = int(m.walk(pid, [a])["pfn"][0])
    child = m.fork(pid)
    assert raw(m, p0) == (2, 1)
    assert not m.walk(pid, [a])["writable"][0] and not m.walk(child, [a])["writable"][0]
    m.touch(child, a, K4)
    c0 = int(m.walk(child, [a])["pfn"][0])
    assert c0 != p0 and raw(m, p0) == (1, 0) and raw(m, c0) == (1, 0)
    m.touch(pid, a, K4)                  # now the only mapping: reused, no copy
    assert int(m.walk(pid, [a])["pfn"][0]) == p0
    m.check()
    m.exit(child)
    m.exit(pid)
    assert all_free(m)


def test_fork_of_a_thp_shares_it_and_allocates_a_deposit_for_the_child(m):
    pid = m.spawn()
    a = m.mmap(pid, M2)
    m.touch(pid, a, M2)
    tables = len(m.pgtables.table_pfns())
    child = m.fork(pid)
    assert len(m.pgtables.table_pfns()) == 2 * tables
    assert m.processes[child].nr_ptes == 1 and m.processes[child].anon_rss == HPAGE_PMD_NR
    assert m.walk(child, [a])["pfn"][0] == m.walk(pid, [a])["pfn"][0]
    assert not m.walk(child, [a])["writable"][0] and not m.walk(pid, [a])["writable"][0]
    m.check()


def test_exit_keeps_pins_and_the_last_put_frees():
    for level in (0, 4, 10):
        m = Machine.boot("16M", patches=level)
        pid = m.spawn()
        a = m.mmap(pid, M2)
        m.touch(pid, a, M2)
        pins = m.get_user_pages(pid, a + 3 * K4, 2)
        m.exit(pid)
        m.check()
        head = int(pins[0]) - 3
        assert m.mem_map["_count"][head] == 2
        assert m.vmstat["nr_free_pages"] == m.nr_pages - HPAGE_PMD_NR
        m.put_page(pins)
        m.check()
        assert all_free(m)


def test_touch_and_fault_refuse_writes_to_read_only_and_none(m):
    pid = m.spawn()
    a = m.mmap(pid, M2, "r")
    with pytest.raises(Segfault):
        m.touch(pid, a, K4)
    m.touch(pid, a, K4, write=False)
    assert not m.walk(pid, [a])["writable"][0]
    b = m.mmap(pid, K4, "none")
    with pytest.raises(Segfault):
        m.fault(pid, b, write=False)
    with pytest.raises(Segfault):
        m.touch(pid, b + 100 * M2, K4)  # nothing mapped there: SIGSEGV
    m.check()


def test_machine_repr_and_boot_validation():
    m = Machine.boot(nr_pages=1024, patches=3, seed=7)
    assert "4 MiB" in repr(m) and "level 3" in repr(m) and "seed 7" in repr(m)
    for bad in (dict(mem="3M"), dict(mem="1M"), dict(mem="4M", thp="sometimes"),
                dict(mem="6M", nodes=2), dict(mem="4M", patches=11), dict()):
        with pytest.raises(ValueError):
            Machine.boot(**bad)
    with pytest.raises(ValueError):
        Machine.boot("4M", nr_pages=1024)


@pytest.mark.parametrize("level", [0, 4, 10])
def test_walk_of_a_few_addresses_reads_as_the_vector_walk(level):
    """memory.walk() reads up to 4 addresses with scalar reads: the same answer as the arrays."""
    import thplab.memory as mem

    rng = np.random.default_rng(level)
    m = Machine.boot("64M", patches=level)
    p = m.spawn()
    a = m.mmap(p, 16 << 20)
    m.touch(p, a, 8 << 20)
    b = m.mmap(p, 4 << 20, thp=False)
    m.touch(p, b, 1 << 20, write=False)
    c = m.fork(p)
    if level >= 4:
        m.split_huge_pmd(c, a)
    m.mprotect(p, a + (2 << 20), 2 << 20, "none")
    addrs = np.concatenate([rng.integers(a - (4 << 20), b + (8 << 20), 120) & ~4095, [0, 1 << 46]])
    for pid in (p, c):
        whole = mem.walk(m.kernel, m.processes[pid], addrs)
        assert (whole["level"] == 2).any() and (whole["level"] == 1).any() and (whole["level"] == 0).any()
        for i in range(0, len(addrs), 3):
            few = mem.walk(m.kernel, m.processes[pid], addrs[i:i + 3])
            for key, values in whole.items():
                assert (values[i:i + 3] == few[key]).all(), (key, addrs[i:i + 3])


def _page_by_page(m, pid, start, length, write):
    """What touch() promises: one fault per page that misses, in address order."""
    for a in range(start, start + length, PAGE_SIZE):
        w = m.walk(pid, [a])
        if not w["level"][0] or (write and not w["writable"][0]):
            m.fault(pid, a, write)


@pytest.mark.parametrize("level", [0, 4, 10])
@pytest.mark.parametrize("case", ["thp-run", "4k-run", "cow-after-fork", "out-of-memory"])
def test_touch_batches_end_where_one_fault_per_page_ends(level, case):
    """touch() takes runs of faults as batches; the state is byte for byte the one of single faults."""
    from conftest import snapshot

    def build():
        m = Machine.boot("8M" if case == "out-of-memory" else "32M", patches=level)
        pid = m.spawn()
        thp = case in ("thp-run", "cow-after-fork", "out-of-memory")
        a = m.mmap(pid, 12 << 20, thp=thp)
        m.touch(pid, a + (6 << 20), 8192)           # something already there in the range
        if case == "cow-after-fork":
            m.touch(pid, a, 8 << 20)
            m.fork(pid)
            m.mprotect(pid, a + (3 << 20), 4096, "r")   # a 4 KiB VMA boundary, PTE-mapped part
            m.mprotect(pid, a + (3 << 20), 4096, "rw")
        return m, pid, a

    results = []
    for touch in (lambda m, p, a: m.touch(p, a + 4096, 10 << 20),
                  lambda m, p, a: _page_by_page(m, p, a + 4096, 10 << 20, True)):
        m, pid, a = build()
        try:
            touch(m, pid, a)
            raised = None
        except OutOfMemory as e:
            raised = type(e)
        state = snapshot(m)
        del state["anon_vmas"]   # object ids
        results.append((raised, state))
        m.check()
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1], diff_snapshots(results[0][1], results[1][1])
    if case == "out-of-memory":
        assert results[0][0] is OutOfMemory


@pytest.mark.parametrize("level", [0, 10])
def test_fork_with_no_page_left_for_the_first_deposit_fails_cleanly(level):
    """fork() of PMD-mapped THPs with no page left for a deposit: OutOfMemory, child torn down.

    copy_huge_pmd()'s batch takes as many tables as there are pages; with none at all it
    copies nothing and must leave no trace (an empty deposit list once did).
    """
    m = Machine.boot("8M", patches=level)
    pid = m.spawn()
    a = m.mmap(pid, 4 << 20)
    m.touch(pid, a, 4 << 20)
    b = m.mmap(pid, 8 << 20, thp=False)
    with pytest.raises(OutOfMemory):
        m.touch(pid, b, 8 << 20)
    m.munmap(pid, b, 3 * PAGE_SIZE)     # three pages: the child's PGD, PUD and PMD tables
    assert m.allocator.nr_free_pages == 3
    before = sorted(m.processes)
    with pytest.raises(OutOfMemory):
        m.fork(pid)
    assert sorted(m.processes) == before
    m.check()
