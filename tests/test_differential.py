"""Differential test: thplab's vectorized model against the per-page scalar model (tests/scalar_model.py).

Both run the same seeded random workload (fault/touch, fork, COW, pins via the slow
and fast path, put, partial munmap, mprotect, split_huge_page, split_huge_pmd,
exit).  After every operation every page's ``_count``, raw ``_mapcount``, use and
compound linkage, the vmstat counters, the pins, every process's VMAs, rss,
``nr_ptes`` and translations must agree.
"""

import numpy as np
import pytest

import scalar_model as sm
from conftest import LEVELS
from thplab import Machine
from thplab.errors import OutOfMemory
from thplab.page_flags import PageHead, PageTail

MEM = "16M"


def compare(m, s, where=""):
    mm = m.mem_map
    n = m.nr_pages
    sc = np.array([p._count for p in s.pages], dtype=np.int64)
    smc = np.array([p._mapcount for p in s.pages], dtype=np.int64)
    suse = np.array([p.use for p in s.pages], dtype=np.int64)
    bad = np.flatnonzero((mm["_count"] != sc) | (mm["_mapcount"] != smc) | (mm["use"] != suse))
    if len(bad):
        p = int(bad[0])
        raise AssertionError(
            f"{where}: pfn {p:#x} model (_count {mm['_count'][p]}, raw _mapcount "
            f"{mm['_mapcount'][p]}, use {mm['use'][p]}) != scalar ({sc[p]}, {smc[p]}, {suse[p]}); "
            f"{len(bad)} pages differ")
    heads = np.array([p.order > 0 for p in s.pages])
    assert (PageHead(mm, np.arange(n)) == heads).all(), f"{where}: THP heads differ"
    tails = np.array([p.head if p.head is not None else -1 for p in s.pages])
    is_tail = PageTail(mm, np.arange(n))
    assert (is_tail == (tails >= 0)).all(), f"{where}: tail pages differ"
    assert (mm["first_page"][is_tail] == tails[is_tail]).all(), f"{where}: first_page differs"
    model_vmstat = {k: m.vmstat[k] for k in s.vmstat}
    assert model_vmstat == s.vmstat, f"{where}: vmstat {model_vmstat} != scalar {s.vmstat}"
    assert set(m.vmstat) - {"nr_free_pages"} - set(s.vmstat) <= {
        "thp_collapse_alloc", "thp_collapse_alloc_failed", "thp_zero_page_alloc",
        "thp_zero_page_alloc_failed"}
    assert m.allocator.nr_free_pages == s.nr_free, f"{where}: nr_free_pages"
    pins = {int(p): int(c) for p, c in zip(np.flatnonzero(m.pins), m.pins[m.pins != 0])}
    assert pins == s.pins, f"{where}: pins differ"
    assert sorted(m.processes) == sorted(s.procs), f"{where}: processes differ"
    for pid, mm_ in m.processes.items():
        proc = s.procs[pid]
        assert [(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff) for v in mm_.vmas] == \
            [(v.start, v.end, v.flags, v.pgoff) for v in proc.vmas], f"{where}: pid {pid} VMAs"
        assert (mm_.anon_rss, mm_.nr_ptes, mm_.pgd) == (proc.anon_rss, proc.nr_ptes, proc.pgd), \
            f"{where}: pid {pid} rss/nr_ptes/pgd"
        maps = s.mappings(pid)
        assert mm_.anon_rss == len(maps)
        if maps:
            vas = np.array(sorted(maps), dtype=np.uint64)
            w = m.walk(pid, vas)
            want_pfn = np.array([maps[int(v)][0] for v in vas])
            want_w = np.array([maps[int(v)][1] for v in vas])
            want_huge = np.array([(int(v) >> sm.PMD_SHIFT) in proc.huge for v in vas])
            assert (w["pfn"] == want_pfn).all(), f"{where}: pid {pid} translations differ"
            assert (w["writable"] == want_w).all(), f"{where}: pid {pid} writable bits differ"
            assert (w["level"] == np.where(want_huge, 2, 1)).all(), f"{where}: pid {pid} PMD/PTE"


def run(level, seed, steps, mem=MEM, check_every=1):
    rng = np.random.default_rng(seed)
    m = Machine.boot(mem, patches=level, seed=seed)
    s = sm.ScalarMachine(m.nr_pages, level)
    for op in [("spawn", ()), ("mmap", (1, 4 * sm.HPAGE, "rw", True))]:
        assert sm.apply_machine(m, op) == sm.apply_scalar(s, op)
    compare(m, s, "boot")
    done = []
    for i in range(steps):
        op = sm.choose_op(s, rng)
        if op is None:
            continue
        where = f"level {level} seed {seed} step {i} {op}"
        try:
            got = sm.apply_machine(m, op)
            m_oom = False
        except OutOfMemory:
            m_oom = True
        try:
            want = sm.apply_scalar(s, op)
            s_oom = False
        except sm.ScalarOOM:
            s_oom = True
        assert m_oom == s_oom, f"{where}: OOM in model {m_oom}, in scalar {s_oom}"
        if not m_oom:
            assert got == want, f"{where}: model returned {got}, scalar {want}"
        done.append(op[0])
        if i % check_every == 0:
            compare(m, s, where)
            m.check()
    # tear down in both
    for op in [("put", (sorted(p for p, n in s.pins.items() for _ in range(n)),))] * bool(s.pins) \
            + [("exit", (pid,)) for pid in sorted(s.procs)]:
        assert sm.apply_machine(m, op) == sm.apply_scalar(s, op)
        compare(m, s, f"teardown {op[0]}")
    assert s.nr_free == s.nr_pages == m.allocator.nr_free_pages
    return done


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorized_model_agrees_with_the_scalar_model(level, seed):
    done = run(level, seed, steps=60)
    assert len(done) >= 30


@pytest.mark.parametrize("level", [0, 4, 6, 10])
def test_long_workload_agrees_with_the_scalar_model(level):
    run(level, 100 + level, steps=250, mem="32M", check_every=5)


@pytest.mark.parametrize("level", [0, 3, 4, 6, 10])
@pytest.mark.parametrize("seed", [1, 2])
def test_out_of_memory_paths_agree_with_the_scalar_model(level, seed):
    """A 6 MiB machine runs out of memory in faults, COW, fork and GUP."""
    run(level, seed, steps=80, mem="6M")


def test_the_scalar_model_itself_reproduces_the_reference_arithmetic():
    """The scalar model is an oracle only if it is right: the §1.7 / §2.2 numbers."""
    for level in (0, 10):
        s = sm.ScalarMachine(4096, level)
        pid = s.spawn()
        a = s.mmap(pid, sm.HPAGE)
        s.touch(pid, a, sm.HPAGE)
        head = s.procs[pid].huge[a >> sm.PMD_SHIFT][0]
        child = s.fork(pid)
        assert (s.pages[head]._count, s.pages[head]._mapcount) == (2, 1)
        pin = s.get_user_pages(pid, a + 5 * sm.PAGE, 1)
        assert s.pages[head]._count == 3
        assert s.pages[head + 5]._mapcount == (0 if level == 0 else -1)
        s.split_huge_pmd_api(child, a)
        if level == 0:
            assert (s.pages[head + 5]._count, s.pages[head + 5]._mapcount) == (3, 1)
            assert (s.pages[head]._count, s.pages[head]._mapcount) == (2, 1)
            assert s.vmstat["thp_split"] == 1
        else:
            assert (s.pages[head]._count, s.pages[head]._mapcount) == (3 + 511, 1)
            assert all(s.pages[head + i]._mapcount == 0 for i in range(1, 512))
            assert s.vmstat["thp_split_pmd"] == 1
            assert s.split_huge_page_api(head) == -sm.EBUSY          # pinned
            s.put_pins(pin)
            assert s.split_huge_page_api(head) == 0
            assert (s.pages[head + 7]._count, s.pages[head + 7]._mapcount) == (2, 1)
            assert s.vmstat["thp_split_page"] == 1 and s.vmstat["thp_split_pmd"] == 2
