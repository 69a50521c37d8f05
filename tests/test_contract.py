"""Contract tests: the same scenarios at every series level 0..10.

Whatever a patch changes, at every level the machine stays consistent
(``m.check()`` after every step: the level's accounting identity, page tables
vs mapcounts, nothing lost) and, once every process has exited and every pin
is dropped, every page is back in the allocator and no page table is left.
"""

import pytest

from conftest import LEVELS, all_free, thp_head_of
from thplab import Machine
from thplab.page_flags import PageCompound, PageHead
from thplab.params import EBUSY, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE

M2 = HPAGE_PMD_SIZE
K4 = PAGE_SIZE


class Checked:
    """Run machine calls, checking every invariant after each one."""

    def __init__(self, m):
        self.m = m
        self.steps = []

    def __getattr__(self, name):
        fn = getattr(self.m, name)

        def run(*args, **kw):
            out = fn(*args, **kw)
            self.steps.append(name)
            self.m.check()
            return out
        return run


def boot(level, mem="32M", **kw):
    m = Machine.boot(mem, patches=level, seed=0, **kw)
    m.check()
    return m, Checked(m)


@pytest.mark.parametrize("level", LEVELS)
def test_full_scenario_keeps_every_invariant_and_frees_everything(level):
    m, c = boot(level, nodes=2)
    p = c.spawn()
    a = c.mmap(p, 2 * M2)
    c.touch(p, a, 2 * M2)                                   # fault two THPs
    h0, h1 = thp_head_of(m, p, a), thp_head_of(m, p, a + M2)
    assert PageHead(m.mem_map, [h0, h1]).all()
    child = c.fork(p)                                       # fork: both THPs shared
    assert m.page_count(h0) == 2
    c.touch(child, a + 7 * K4, K4)                          # COW write in the child
    assert thp_head_of(m, child, a) != h0
    assert thp_head_of(m, p, a) == h0
    fast = c.get_user_pages_fast(p, a + 5 * K4, 3)          # pin via gup-fast
    slow = c.get_user_pages(child, a + M2 + 9 * K4, 2)      # pin via the slow path
    assert fast.tolist() == [h0 + 5, h0 + 6, h0 + 7]
    assert slow.tolist() == [h1 + 9, h1 + 10]
    c.munmap(p, a + M2 + 100 * K4, 3 * K4)                  # partial munmap of a shared THP
    c.mprotect(p, a + 10 * K4, 4 * K4, "r")                 # mprotect of a sub-range
    assert m.walk(p, [a + 10 * K4])["writable"][0] == False  # noqa: E712
    if PageCompound(m.mem_map, h1):                         # split a pinned THP
        ret = c.split_huge_page(h1)
        assert ret in (0, -EBUSY)
    status = c.move_pages(child, [a + M2 + 200 * K4], 1)    # migrate to node 1
    assert len(status) == 1
    c.put_page(fast)
    c.put_page(slow)
    c.exit(p)
    c.exit(child)
    assert all_free(m), m.vmstat.as_dict()


@pytest.mark.parametrize("level", LEVELS)
def test_split_without_pins_then_exit(level):
    m, c = boot(level)
    p = c.spawn()
    a = c.mmap(p, M2)
    c.touch(p, a, M2)
    child = c.fork(p)
    head = thp_head_of(m, p, a)
    ret = c.split_huge_page(head)
    works = m.kernel.caps["split_huge_page_works"]
    assert ret == (0 if works else -EBUSY)
    assert bool(PageCompound(m.mem_map, head)) == (not works)
    if works:
        # every subpage is now a 4 KiB page mapped by both processes
        assert (m.mem_map["_count"][head:head + HPAGE_PMD_NR] == 2).all()
        assert (m.mem_map["_mapcount"][head:head + HPAGE_PMD_NR] == 1).all()
        assert (m.walk(child, [a, a + M2 - K4])["level"] == 1).all()
    c.touch(child, a, M2)                                   # COW everything in the child
    c.exit(child)
    c.exit(p)
    assert all_free(m)


@pytest.mark.parametrize("level", LEVELS)
def test_split_with_a_pin_then_drop_the_pin_after_exit(level):
    m, c = boot(level)
    p = c.spawn()
    a = c.mmap(p, M2)
    c.touch(p, a, M2)
    pin = c.get_user_pages_fast(p, a + 5 * K4)
    head = thp_head_of(m, p, a)
    ret = c.split_huge_page(head)
    assert ret == (0 if level < 4 else -EBUSY)
    c.exit(p)
    assert not all_free(m)
    c.put_page(pin)
    assert all_free(m)


@pytest.mark.parametrize("level", LEVELS)
def test_split_huge_pmd_then_partial_unmaps_then_exit(level):
    m, c = boot(level)
    p = c.spawn()
    a = c.mmap(p, M2)
    c.touch(p, a, M2)
    child = c.fork(p)
    c.split_huge_pmd(child, a)
    assert m.walk(child, [a])["level"][0] == 1
    for off in (0, 17, 300, 511):
        c.munmap(child, a + off * K4, K4)
        c.munmap(p, a + (511 - off) * K4, K4)
    c.touch(child, a + K4, 16 * K4)
    c.mprotect(p, a + 64 * K4, 64 * K4, "r")
    c.mprotect(p, a + 64 * K4, 64 * K4, "rw")
    c.exit(p)
    c.touch(child, a + 20 * K4, 100 * K4)
    c.exit(child)
    assert all_free(m)


@pytest.mark.parametrize("level", LEVELS)
def test_move_pages_on_two_nodes(level):
    m, c = boot(level, nodes=2)
    p = c.spawn()
    small = c.mmap(p, 4 * K4, thp=False)
    c.touch(p, small, 4 * K4)
    a = c.mmap(p, M2)
    c.touch(p, a, M2)
    pfn = int(m.walk(p, [small])["pfn"][0])
    assert m.page_to_nid(pfn) == 0
    status = c.move_pages(p, [small, small + K4], 1)
    assert status == [1, 1]
    moved = m.walk(p, [small, small + K4])["pfn"]
    assert [m.page_to_nid(x) for x in moved] == [1, 1]
    assert c.move_pages(p, [small + K4], 1) == [1]           # already there
    st = c.move_pages(p, [a + 3 * K4], 1)[0]
    if m.kernel.caps["foll_split"]:           # FOLL_SPLIT splits the whole THP first
        assert st == 1 and m.page_to_nid(int(m.walk(p, [a + 3 * K4])["pfn"][0])) == 1
    else:                                     # patch 01 as posted: a tail is not split, not isolated
        assert st == -EBUSY
    c.exit(p)
    assert all_free(m)


@pytest.mark.parametrize("level", LEVELS)
def test_many_processes_and_thps(level):
    m, c = boot(level, mem="64M")
    p = c.spawn()
    a = c.mmap(p, 6 * M2)
    c.touch(p, a, 6 * M2)
    kids = [c.fork(p) for _ in range(3)]
    c.touch(kids[0], a, M2)
    c.munmap(kids[1], a + M2 + 5 * K4, M2)                     # straddles two THPs
    c.mprotect(kids[2], a + 3 * M2 - 8 * K4, 16 * K4, "r")     # straddles two THPs
    grandchild = c.fork(kids[1])
    pins = c.get_user_pages(grandchild, a + 4 * M2 - 2 * K4, 4, write=True)
    for pid in [p] + kids:
        c.exit(pid)
    c.put_page(pins)
    c.exit(grandchild)
    assert all_free(m)


@pytest.mark.parametrize("level", LEVELS)
def test_futex_key_on_a_thp_subpage(level):
    m, c = boot(level)
    p = c.spawn()
    a = c.mmap(p, M2)
    c.touch(p, a, M2)
    before = int(m.mem_map["_count"][thp_head_of(m, p, a)])
    assert c.get_futex_key(p, a + 5 * K4 + 4) == (p, a + 5 * K4)
    assert int(m.mem_map["_count"][thp_head_of(m, p, a)]) == before
    c.exit(p)
    assert all_free(m)


@pytest.mark.parametrize("level", LEVELS)
def test_oom_during_fork_tears_the_child_down(level):
    from thplab.errors import OutOfMemory

    m, c = boot(level, mem="4M")
    p = c.spawn()
    a = c.mmap(p, 100 * M2, thp=False)
    for i in range(100):                   # one page per PTE table: each fork copies 100 tables
        m.touch(p, a + i * M2, K4)
    free = m.allocator.nr_free_pages
    n_procs = len(m.processes)
    forked = 0
    with pytest.raises(OutOfMemory):
        for _ in range(200):
            c.fork(p)
            forked += 1
    assert len(m.processes) == n_procs + forked
    m.check()
    for pid in list(m.processes):
        c.exit(pid)
    assert all_free(m) and free < m.nr_pages
