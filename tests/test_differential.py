"""Differential test: thplab's vectorized model against the per-page scalar model (tests/scalar_model.py).

Both run the same seeded random workload (fault/touch, fork, COW, pins via the slow
and fast path, put, partial munmap, mprotect, split_huge_page, split_huge_pmd,
exit).  After every operation every page's ``_count``, raw ``_mapcount``, use and
compound linkage, the vmstat counters, the pins, every process's VMAs, rss,
``nr_ptes`` and translations must agree.  The scalar model alone chooses the
operations, so it runs once per seed and set of switches (:data:`SCALAR_LEVEL`) and
the vectorized model of each level replays that run.
"""

import copy
import functools

import numpy as np
import pytest

import scalar_model as sm
from conftest import LEVELS
from thplab import Machine
from thplab.errors import OutOfMemory
from thplab.page_flags import PageHead, PageTail

MEM = "16M"


def expected_state(s):
    """What :func:`compare` checks, read off scalar model ``s`` now (copies: later operations
    cannot change it)."""
    pages = np.array([(p._count, p._mapcount, p.use, p.order > 0, -1 if p.head is None else p.head)
                      for p in s.pages], dtype=np.int32)
    procs = {}
    for pid, proc in s.procs.items():
        maps = s.mappings(pid)
        vas = np.array(sorted(maps), dtype=np.uint64)
        pfn_w = np.array([maps[v] for v in vas.tolist()], dtype=np.int64).reshape(-1, 2)
        procs[pid] = {
            "vmas": [(v.start, v.end, v.flags, v.pgoff) for v in proc.vmas],
            "rss": (proc.anon_rss, proc.nr_ptes, proc.pgd), "nr_maps": len(maps), "vas": vas,
            "pfn": pfn_w[:, 0], "writable": pfn_w[:, 1],
            "huge": np.isin(vas >> np.uint64(sm.PMD_SHIFT), np.array(list(proc.huge), dtype=np.uint64)),
        }
    return {"count": pages[:, 0], "mapcount": pages[:, 1], "use": pages[:, 2], "head": pages[:, 3] == 1,
            "first_page": pages[:, 4], "vmstat": dict(s.vmstat), "nr_free": s.nr_free,
            "pins": dict(s.pins), "procs": procs,
            "v45": s.v45_state() if s.compound_mapcount else None}


def compare(m, want, where=""):
    """Machine ``m`` against :func:`expected_state` of the scalar model."""
    mm = m.mem_map
    n = m.nr_pages
    sc, smc, suse = want["count"], want["mapcount"], want["use"]
    bad = np.flatnonzero((mm["_count"] != sc) | (mm["_mapcount"] != smc) | (mm["use"] != suse))
    if len(bad):
        p = int(bad[0])
        raise AssertionError(
            f"{where}: pfn {p:#x} model (_count {mm['_count'][p]}, raw _mapcount "
            f"{mm['_mapcount'][p]}, use {mm['use'][p]}) != scalar ({sc[p]}, {smc[p]}, {suse[p]}); "
            f"{len(bad)} pages differ")
    assert (PageHead(mm, np.arange(n)) == want["head"]).all(), f"{where}: THP heads differ"
    tails = want["first_page"]
    is_tail = PageTail(mm, np.arange(n))
    assert (is_tail == (tails >= 0)).all(), f"{where}: tail pages differ"
    assert (mm["first_page"][is_tail] == tails[is_tail]).all(), f"{where}: first_page differs"
    model_vmstat = {k: m.vmstat[k] for k in want["vmstat"]}
    assert model_vmstat == want["vmstat"], f"{where}: vmstat {model_vmstat} != scalar {want['vmstat']}"
    assert set(m.vmstat) - {"nr_free_pages"} - set(want["vmstat"]) <= {
        "thp_collapse_alloc", "thp_collapse_alloc_failed", "thp_zero_page_alloc",
        "thp_zero_page_alloc_failed"}
    assert m.allocator.nr_free_pages == want["nr_free"], f"{where}: nr_free_pages"
    if want["v45"] is not None:
        heads = m.thp_heads()
        got_cm = {int(h): int(mm["mapping"][h + 1]) for h in heads}
        assert got_cm == want["v45"]["compound_mapcount"], f"{where}: compound_mapcount differs"
        got_dm = {int(h): bool(m.kernel.PageDoubleMap(int(h))) for h in heads}
        assert got_dm == want["v45"]["double_map"], f"{where}: PageDoubleMap differs"
        assert m.split_queue() == want["v45"]["split_queue"], f"{where}: deferred split queue differs"
    pins = {int(p): int(c) for p, c in zip(np.flatnonzero(m.pins), m.pins[m.pins != 0])}
    assert pins == want["pins"], f"{where}: pins differ"
    assert sorted(m.processes) == sorted(want["procs"]), f"{where}: processes differ"
    for pid, mm_ in m.processes.items():
        proc = want["procs"][pid]
        assert [(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff) for v in mm_.vmas] == proc["vmas"], \
            f"{where}: pid {pid} VMAs"
        assert (mm_.anon_rss, mm_.nr_ptes, mm_.pgd) == proc["rss"], f"{where}: pid {pid} rss/nr_ptes/pgd"
        assert mm_.anon_rss == proc["nr_maps"]
        if proc["nr_maps"]:
            w = m.walk(pid, proc["vas"])
            assert (w["pfn"] == proc["pfn"]).all(), f"{where}: pid {pid} translations differ"
            assert (w["writable"] == proc["writable"]).all(), f"{where}: pid {pid} writable bits differ"
            assert (w["level"] == np.where(proc["huge"], 2, 1)).all(), f"{where}: pid {pid} PMD/PTE"


def _switches(level, stack="rfc-v1"):
    """What ``ScalarMachine(level=..., stack=...)`` does differently: its switches (tail_pins, ...)."""
    s = sm.ScalarMachine(sm.HPAGE_NR, level, stack)
    return tuple(sorted((k, v) for k, v in vars(s).items() if isinstance(v, bool))) + (s.thp,)


#: The kernels compared: every RFC level, and the v4.5 steps (2-6 behave alike: no THP).
KERNELS = [("rfc-v1", level) for level in LEVELS] + [("v4.5", step) for step in range(1, 8)]

#: Per kernel, the first kernel whose scalar model behaves the same (the same switches:
#: RFC levels 0-3 share one scalar model, 6-10 another; 4 and 5 have their own; v4.5 steps 2-6
#: share one).
SCALAR_LEVEL = {key: next(k for k in KERNELS if _switches(k[1], k[0]) == _switches(key[1], key[0]))
                for key in KERNELS}


@functools.lru_cache(maxsize=2)   # 12-18 MB each
def _scalar_run(scalar_key, seed, steps, nr_pages, check_every):
    """The scalar model's side of :func:`run`: every operation it chose, its result, and
    the state :func:`compare` expects where :func:`run` compares.

    The scalar model alone chooses the operations (from its own state and ``seed``), so
    its run is the same for every model level with the same :data:`SCALAR_LEVEL`: that
    run is made once and kept (pytest runs a seed's levels one after the other).
    """
    rng = np.random.default_rng(seed)
    s = sm.ScalarMachine(nr_pages, scalar_key[1], scalar_key[0])
    setup = [(op, sm.apply_scalar(s, op)) for op in [("spawn", ()), ("mmap", (1, 4 * sm.HPAGE, "rw", True))]]
    boot = expected_state(s)
    done = []
    for i in range(steps):
        op = sm.choose_op(s, rng)
        if op is None:
            continue
        try:
            want, s_oom = copy.deepcopy(sm.apply_scalar(s, op)), False
        except sm.ScalarOOM:
            want, s_oom = None, True
        done.append((i, op, s_oom, want, expected_state(s) if i % check_every == 0 else None))
    teardown = []
    for op in [("put", (sorted(p for p, n in s.pins.items() for _ in range(n)),))] * bool(s.pins) \
            + [("exit", (pid,)) for pid in sorted(s.procs)]:
        want = copy.deepcopy(sm.apply_scalar(s, op))
        teardown.append((op, want, expected_state(s)))
    return setup, boot, done, teardown, (s.nr_free, s.nr_pages)


def run(level, seed, steps, mem=MEM, check_every=1, stack="rfc-v1"):
    m = Machine.boot(mem, kernel=stack, patches=level, seed=seed)
    setup, boot, ops, teardown, (nr_free, nr_pages) = _scalar_run(SCALAR_LEVEL[stack, level], seed,
                                                                  steps, m.nr_pages, check_every)
    for op, want in setup:
        assert sm.apply_machine(m, op) == want
    compare(m, boot, "boot")
    done = []
    for i, op, s_oom, want, expected in ops:
        where = f"{m.kernel.name} seed {seed} step {i} {op}"
        try:
            got = sm.apply_machine(m, op)
            m_oom = False
        except OutOfMemory:
            m_oom = True
        assert m_oom == s_oom, f"{where}: OOM in model {m_oom}, in scalar {s_oom}"
        if not m_oom:
            assert got == want, f"{where}: model returned {got}, scalar {want}"
        done.append(op[0])
        if expected is not None:
            compare(m, expected, where)
            m.check()
    # tear down in both
    for op, want, expected in teardown:
        assert sm.apply_machine(m, op) == want
        compare(m, expected, f"teardown {op[0]}")
    assert nr_free == nr_pages == m.allocator.nr_free_pages
    return done


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorized_model_agrees_with_the_scalar_model(level, seed):
    done = run(level, seed, steps=60)
    assert len(done) >= 30


@pytest.mark.parametrize("step", range(1, 8))
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_v45_agrees_with_the_scalar_model(step, seed):
    done = run(step, seed, steps=60, stack="v4.5")
    assert len(done) >= 30


@pytest.mark.parametrize("seed", [5, 6])
def test_v45_long_and_out_of_memory_agree_with_the_scalar_model(seed):
    run(7, seed, steps=250, mem="32M", check_every=5, stack="v4.5")
    run(7, seed, steps=80, mem="6M", stack="v4.5")


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
