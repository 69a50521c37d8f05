"""The scalar model (tests/scalar_model.py) alone, at ``stack="v4.5"``: the worked cases.

The differential test trusts the scalar model as an oracle, so its v4.5 arithmetic
is checked here against the numbers docs/v4.5-stack.md §2-§3 derives from the 4.5.7
sources (mm/huge_memory.c, mm/rmap.c, mm/memory.c, mm/swapfile.c).  Notation as
there: ``c`` the head's ``_count``, ``cm`` page[1]'s raw ``compound_mapcount``,
``m_i`` subpage i's raw ``_mapcount``, DM PageDoubleMap.
"""

import collections

import numpy as np
import pytest

import scalar_model as sm

NR = sm.HPAGE_NR


def thp_machine(level=7, nr_pages=4096):
    """A v4.5 machine with one process that has faulted one THP: ``(s, pid, addr, head)``."""
    s = sm.ScalarMachine(nr_pages, level, "v4.5")
    pid = s.spawn()
    a = s.mmap(pid, sm.HPAGE)
    s.fault(pid, a)
    return s, pid, a, s.procs[pid].huge[a >> sm.PMD_SHIFT][0]


def c(s, head):
    return s.pages[head]._count


def cm(s, head):
    return s.pages[head + 1].compound_mapcount


def m(s, head):
    return [s.pages[head + i]._mapcount for i in range(NR)]


def events(s, *names):
    return tuple(s.vmstat[n] for n in names)


def switches(s):
    return tuple(sorted((k, v) for k, v in vars(s).items() if isinstance(v, bool))) + (s.thp,)


# ---------------------------------------------------------------- the steps


def test_steps_2_to_6_share_one_scalar_model_and_step_0_is_level_0():
    v45 = [switches(sm.ScalarMachine(NR, k, "v4.5")) for k in range(8)]
    rfc = [switches(sm.ScalarMachine(NR, k)) for k in range(11)]
    assert len(set(v45[2:7])) == 1
    assert len({v45[1], v45[2], v45[7]}) == 3
    assert v45[0] == rfc[0]
    assert not set(v45[1:]) & set(rfc)
    with pytest.raises(ValueError):
        sm.ScalarMachine(NR, 8, "v4.5")
    with pytest.raises(ValueError):
        sm.ScalarMachine(NR, 0, "v4.6")


@pytest.mark.parametrize("step", [2, 4, 6])
def test_thp_marked_broken_falls_back_silently(step):
    s = sm.ScalarMachine(4096, step, "v4.5")
    pid = s.spawn()
    a = s.mmap(pid, sm.HPAGE)
    s.touch(pid, a, 3 * sm.PAGE)
    assert not s.thp_heads() and not s.procs[pid].huge
    assert len(s.procs[pid].ptes) == 3
    assert {k: s.vmstat[k] for k in ("thp_fault_alloc", "thp_fault_fallback")} == {
        "thp_fault_alloc": 0, "thp_fault_fallback": 0}
    assert "thp_split" not in s.vmstat


def test_step_1_splits_the_old_way_and_counts_thp_split_page():
    s, pid, a, head = thp_machine(level=1)
    pin = s.get_user_pages(pid, a + 5 * sm.PAGE, 1)
    assert s.pages[head + 5]._mapcount == 0           # tail pin, as at level 0
    s.split_huge_pmd_api(pid, a)                      # split_huge_pmd(): still the whole page
    assert not s.thp_heads()
    assert (s.pages[head + 5]._count, s.pages[head + 5]._mapcount) == (2, 0)
    assert (s.vmstat["thp_split_page"], s.vmstat["thp_split_pmd"]) == (1, 0)
    assert "thp_split" not in s.vmstat
    s.put_pins(pin)
    assert s.pages[head + 5]._count == 1


# ---------------------------------------------------------------- §3 flows at step 7


def test_thp_fault():
    s, pid, a, head = thp_machine()
    assert (c(s, head), cm(s, head)) == (1, 0)
    assert m(s, head) == [-1] * NR
    assert s.v45_state() == {"compound_mapcount": {head: 0}, "double_map": {head: False}, "split_queue": []}
    assert (s.total_mapcount(head), s.page_mapcount(head + 9)) == (1, 1)
    assert (s.vmstat["thp_fault_alloc"], s.vmstat["nr_anon_transparent_hugepages"]) == (1, 1)


def test_fork_of_a_pmd_mapped_thp():
    s, pid, a, head = thp_machine()
    s.fork(pid)
    assert (c(s, head), cm(s, head)) == (2, 1)
    assert m(s, head) == [-1] * NR                    # a PMD map moves no subpage _mapcount
    assert {s.page_mapcount(head + i) for i in range(NR)} == {2}
    assert s.total_mapcount(head) == 2
    assert s.vmstat["nr_anon_transparent_hugepages"] == 1


def test_partial_munmap_of_one_subpage_queues_the_thp():
    s, pid, a, head = thp_machine()
    j = 7
    s.munmap(pid, a + j * sm.PAGE, sm.PAGE)
    assert c(s, head) == 511
    assert m(s, head) == [0] * j + [-1] + [0] * (NR - j - 1)
    assert cm(s, head) == -1 and not s.PageDoubleMap(head)
    assert s.split_queue == [head] and head in s.thp_heads()
    assert s.total_mapcount(head) == 511
    assert (s.vmstat["thp_split_pmd"], s.vmstat["nr_anon_transparent_hugepages"]) == (1, 0)
    assert s.pages[head + j].use == sm.ANON           # not freed until the shrinker splits


def test_mprotect_of_part_in_the_child_sets_doublemap_then_the_parents_unmap_clears_it():
    s, pid, a, head = thp_machine()
    child = s.fork(pid)
    s.mprotect(child, a, 16 * sm.PAGE, "r")
    assert c(s, head) == 513
    assert m(s, head) == [1] * NR
    assert s.PageDoubleMap(head) and cm(s, head) == 0
    assert {s.page_mapcount(head + i) for i in range(NR)} == {2}
    assert s.total_mapcount(head) == 513
    assert (s.vmstat["thp_split_pmd"], s.vmstat["nr_anon_transparent_hugepages"]) == (1, 1)
    assert s.split_queue == []
    s.munmap(pid, a, sm.HPAGE)                        # the parent's PMD, the last one
    assert cm(s, head) == -1 and not s.PageDoubleMap(head)
    assert m(s, head) == [0] * NR
    assert c(s, head) == 512 == s.total_mapcount(head)
    assert s.vmstat["nr_anon_transparent_hugepages"] == 0
    assert s.split_queue == []                        # nr = 0: every subpage is still mapped


def test_split_of_a_pinned_thp_fails_before_touching_anything():
    s, pid, a, head = thp_machine()
    pin = s.get_user_pages(pid, a + 5 * sm.PAGE, 1)
    assert s.split_huge_page_api(head) == -sm.EBUSY
    assert events(s, "thp_split_page_failed", "thp_split_page", "thp_split_pmd") == (1, 0, 0)
    assert (c(s, head), cm(s, head)) == (2, 0) and m(s, head) == [-1] * NR
    assert a >> sm.PMD_SHIFT in s.procs[pid].huge and s.split_queue == []
    s.put_pins(pin)
    assert s.split_huge_page_api(head) == 0
    assert (s.vmstat["thp_split_page"], s.vmstat["thp_split_pmd"]) == (1, 1)   # freeze split the PMD
    assert not s.thp_heads() and s.split_queue == []
    assert {(s.pages[head + i]._count, s.pages[head + i]._mapcount) for i in range(NR)} == {(1, 0)}
    assert s.mappings(pid)[a + 9 * sm.PAGE] == (head + 9, True)


def test_the_shrinker_worked_case():
    """§3 "Deferred split queue and shrinker", worked case: partial munmap of subpage j."""
    s, pid, a, head = thp_machine()
    j = 7
    s.munmap(pid, a + j * sm.PAGE, sm.PAGE)
    seen = {}
    freeze, unfreeze, split = s.freeze_page, s.unfreeze_page, s.split_huge_page

    def freeze_page(h):
        seen["pinned"] = c(s, h)                      # the scan's get_page_unless_zero
        frozen = freeze(h)
        seen["frozen"] = (c(s, h), set(m(s, h)), len(frozen), len(s.mappings(pid)))
        return frozen

    def unfreeze_page(frozen):
        seen["tails"] = ({s.pages[head + i]._count for i in range(1, NR)}, c(s, head), s.pages[head].order)
        unfreeze(frozen)

    def split_huge_page(h):
        ret = split(h)
        seen["after split"] = c(s, h)
        return ret

    s.freeze_page, s.unfreeze_page, s.split_huge_page = freeze_page, unfreeze_page, split_huge_page
    free = s.nr_free
    assert s.deferred_split_scan(sm.SHRINK_BATCH) == 1
    assert seen["pinned"] == 512                      # pre-check: 511 == 512 - 1
    assert seen["frozen"] == (1, {-1}, 511, 0)
    assert seen["tails"] == ({1}, 1, 0)
    assert seen["after split"] == 2                   # its map and the scan's pin
    assert c(s, head) == 1
    assert {(s.pages[head + i]._count, s.pages[head + i]._mapcount) for i in range(NR) if i != j} == {(1, 0)}
    assert (s.pages[head + j].use, s.pages[head + j]._count) == (sm.FREE, 0)
    assert s.nr_free == free + 1
    assert s.split_queue == [] and not s.thp_heads()
    assert (s.vmstat["thp_split_page"], s.vmstat["thp_split_pmd"]) == (1, 1)
    assert s.deferred_split_scan(sm.SHRINK_BATCH) == sm.SHRINK_STOP


def test_a_pin_after_the_pre_check_leaves_the_thp_pte_mapped_and_queued():
    s, pid, a, head = thp_machine()
    freeze, pins = s.freeze_page, []

    def freeze_page(h):
        pins.extend(s.get_user_pages(pid, a + 3 * sm.PAGE, 1))   # GUP-fast on the still huge PMD
        return freeze(h)

    s.freeze_page = freeze_page
    assert s.split_huge_page_api(head) == -sm.EBUSY
    assert (s.vmstat["thp_split_page_failed"], s.vmstat["thp_split_pmd"]) == (1, 1)
    assert head in s.thp_heads() and not s.procs[pid].huge
    assert {s.mappings(pid)[a + i * sm.PAGE] for i in range(NR)} == {(head + i, True) for i in range(NR)}
    assert cm(s, head) == -1 and not s.PageDoubleMap(head) and m(s, head) == [0] * NR
    assert c(s, head) == 513                          # 512 PTEs and the racing pin
    assert s.split_queue == [head] and s.vmstat["nr_anon_transparent_hugepages"] == 0
    del s.freeze_page                                 # no more racing pins
    s.put_pins(pins)
    assert s.deferred_split_scan(sm.SHRINK_BATCH) == 1
    assert s.split_queue == [] and s.vmstat["thp_split_page"] == 1


def test_a_full_munmap_queues_the_thp_and_freeing_it_dequeues_it():
    s, pid, a, head = thp_machine()
    free_transhuge_page, seen = s.free_transhuge_page, []

    def spy(h):
        seen.append((h, s.split_queue == [h], c(s, h)))
        free_transhuge_page(h)

    s.free_transhuge_page = spy
    free = s.nr_free
    s.munmap(pid, a, sm.HPAGE)
    assert seen == [(head, True, 0)]
    assert s.split_queue == [] and not s.thp_heads()
    assert s.nr_free >= free + NR and s.pages[head].use == sm.FREE


def test_an_unmapped_pinned_thp_stays_queued_until_its_last_put():
    s, pid, a, head = thp_machine()
    pin = s.get_user_pages(pid, a, 1)
    s.munmap(pid, a, sm.HPAGE)
    assert (c(s, head), cm(s, head), s.split_queue) == (1, -1, [head])
    assert s.split_huge_page_api(head) == -sm.EBUSY   # page_get_anon_vma(): not mapped
    assert s.deferred_split_scan(sm.SHRINK_BATCH) == 0
    assert s.split_queue == [head] and s.vmstat["thp_split_page_failed"] == 2
    s.put_pins(pin)
    assert s.split_queue == [] and s.pages[head].use == sm.FREE


def test_pte_cow_after_fork_reuses_only_when_page_trans_huge_mapcount_is_at_most_1():
    s, pid, a, head = thp_machine()
    s.split_huge_pmd_api(pid, a)
    child = s.fork(pid)
    assert (c(s, head), m(s, head)) == (1024, [1] * NR)
    va3 = a + 3 * sm.PAGE
    s.fault(child, va3, True)
    assert s.mappings(child)[va3][0] != head + 3 and c(s, head) == 1023
    assert (s.page_mapcount(head + 3), s.page_trans_huge_mapcount(head + 3)) == (1, 2)
    s.fault(pid, va3, True)                           # page_mapcount 1, but another subpage has 2
    assert s.mappings(pid)[va3][0] != head + 3
    assert (c(s, head), s.pages[head + 3]._mapcount, s.split_queue) == (1022, -1, [head])
    s.munmap(child, a, sm.HPAGE)
    assert c(s, head) == 511 and s.page_trans_huge_mapcount(head) == 1
    free = s.nr_free
    s.fault(pid, a + 4 * sm.PAGE, True)
    assert s.mappings(pid)[a + 4 * sm.PAGE] == (head + 4, True)
    assert (c(s, head), s.nr_free) == (511, free)


def test_pmd_cow_reuses_only_when_page_trans_huge_mapcount_is_1():
    s, pid, a, head = thp_machine()
    child = s.fork(pid)
    s.split_huge_pmd_api(child, a + sm.PAGE)          # DoubleMap: c 513, m_i 1, cm 0
    s.munmap(child, a, sm.PAGE)                       # the child keeps subpages 1..511
    assert (c(s, head), s.pages[head]._mapcount, s.split_queue) == (512, 0, [])
    assert (s.page_mapcount(head), s.page_trans_huge_mapcount(head)) == (1, 2)
    s.fault(pid, a, True)                             # the parent's PMD gets a new THP
    new = s.procs[pid].huge[a >> sm.PMD_SHIFT][0]
    assert new != head and s.vmstat["thp_fault_alloc"] == 2
    assert (c(s, head), cm(s, head), s.PageDoubleMap(head)) == (511, -1, False)
    assert m(s, head) == [-1] + [0] * (NR - 1)
    assert s.split_queue == [head]                    # subpage 0 lost its last map
    assert (c(s, new), cm(s, new)) == (1, 0)
    s.fault(child, a + sm.PAGE, True)                 # the child's PTEs are all there is
    assert s.mappings(child)[a + sm.PAGE] == (head + 1, True) and c(s, head) == 511


def _fragment(s, pid, keep_free):
    """Map and touch small pages, then unmap every other one, until no order-9 block is
    free and about ``keep_free`` pages are."""
    b = s.mmap(pid, 4 * sm.HPAGE, thp=False)
    n = 0
    while s.can_alloc(sm.MAX_ORDER) or s.nr_free > keep_free + 2:
        s.fault(pid, b + n * sm.PAGE)
        n += 1
    for i in range(0, n, 2):
        if s.nr_free >= keep_free:
            break
        s.munmap(pid, b + i * sm.PAGE, sm.PAGE)


def test_pmd_cow_without_a_free_thp_copies_into_512_small_pages():
    s, pid, a, head = thp_machine(nr_pages=2048)
    child = s.fork(pid)
    _fragment(s, pid, NR + 40)
    assert not s.can_alloc(sm.MAX_ORDER) and s.nr_free >= NR
    free = s.nr_free
    s.fault(child, a + 5 * sm.PAGE, True)
    maps = s.mappings(child)
    copies = {maps[a + i * sm.PAGE] for i in range(NR)}
    assert len(copies) == NR and all(w and not head <= p < head + NR for p, w in copies)
    assert s.nr_free == free - NR
    assert events(s, "thp_fault_fallback", "thp_fault_alloc", "thp_split_pmd") == (1, 1, 0)
    assert (c(s, head), cm(s, head), m(s, head), s.split_queue) == (1, 0, [-1] * NR, [])


def test_pmd_cow_without_512_free_pages_splits_the_pmd_and_copies_one_page():
    s, pid, a, head = thp_machine(nr_pages=2048)
    child = s.fork(pid)
    _fragment(s, pid, NR - 40)
    assert not s.can_alloc(sm.MAX_ORDER) and 0 < s.nr_free < NR
    s.fault(child, a + 5 * sm.PAGE, True)
    assert (s.vmstat["thp_fault_fallback"], s.vmstat["thp_split_pmd"]) == (1, 1)
    assert s.mappings(child)[a + 5 * sm.PAGE][0] != head + 5
    assert s.mappings(child)[a + 6 * sm.PAGE] == (head + 6, False)
    assert (c(s, head), cm(s, head), s.PageDoubleMap(head)) == (512, 0, True)
    assert s.pages[head + 5]._mapcount == 0 and s.split_queue == []


def _three_queued_thps():
    s = sm.ScalarMachine(4096, 7, "v4.5")
    pid = s.spawn()
    a = s.mmap(pid, 3 * sm.HPAGE)
    s.touch(pid, a, 3 * sm.HPAGE)
    heads = [s.procs[pid].huge[(a >> sm.PMD_SHIFT) + k][0] for k in range(3)]
    for k in range(3):
        s.munmap(pid, a + k * sm.HPAGE + 9 * sm.PAGE, sm.PAGE)
    assert s.split_queue == heads
    return s, pid, a, heads


def test_the_scan_puts_what_it_could_not_split_back_in_reverse_order():
    """4.5.7 L3543 ``list_move`` pins each THP onto the front of a local list; L3565
    splices what is left onto the queue's tail."""
    s, pid, a, (h0, h1, h2) = _three_queued_thps()
    pins = s.get_user_pages(pid, a, 1) + s.get_user_pages(pid, a + 2 * sm.HPAGE, 1)
    assert s.deferred_split_scan(sm.SHRINK_BATCH) == 1
    assert s.split_queue == [h2, h0] and s.thp_heads() == [h0, h2]
    assert (s.vmstat["thp_split_page"], s.vmstat["thp_split_page_failed"]) == (1, 2)
    assert s.deferred_split_scan(1) == 0              # only the head of the queue
    assert s.split_queue == [h0, h2] and s.vmstat["thp_split_page_failed"] == 3
    s.put_pins(pins)
    assert s.drop_caches(2) is None
    assert s.split_queue == [] and not s.thp_heads()
    assert s.vmstat["thp_split_page"] == 3


def test_drop_caches_runs_the_shrinker_as_drop_slab_node_does():
    s, pid, a, (h0, h1, h2) = _three_queued_thps()
    pin = s.get_user_pages(pid, a + sm.HPAGE, 1)
    s.drop_caches(1)                                  # page cache only: no shrinker
    assert s.split_queue == [h0, h1, h2]
    s.drop_caches(2)
    # count 3: one batch of nr_to_scan 2000 * 3 // 1001 = 5 takes all three; h2 and h0 split,
    # h1 fails; the scan is used up, and 2 freed <= 10 ends drop_slab_node()
    assert s.split_queue == [h1] and s.thp_heads() == [h1]
    assert (s.vmstat["thp_split_page"], s.vmstat["thp_split_page_failed"]) == (2, 1)
    assert s.nr_deferred == 0
    s.put_pins(pin)


# ---------------------------------------------------------------- random workloads


def check_identity(s):
    """§2: page_count = total_mapcount + pins for every THP; DoubleMap's offset; the counters."""
    pins = collections.Counter()
    for pfn, n in s.pins.items():
        pins[s.head_of(pfn)] += n
    heads = s.thp_heads()
    for h in heads:
        assert c(s, h) == s.total_mapcount(h) + pins[h], f"THP {h:#x}"
        if s.PageDoubleMap(h):
            assert cm(s, h) >= 0 and min(m(s, h)) >= 0
        assert (s.pages[h + 2].deferred_list is s.split_queue) == (h in s.split_queue)
    for pfn, p in enumerate(s.pages):
        if p.use == sm.ANON and p.head is None and not p.order:
            assert p._count == p._mapcount + 1 + pins[pfn], f"pfn {pfn:#x}"
    assert s.vmstat["nr_anon_transparent_hugepages"] == sum(cm(s, h) >= 0 for h in heads)
    assert len(set(s.split_queue)) == len(s.split_queue) and set(s.split_queue) <= set(heads)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("nr_pages", [1536, 4096])
def test_random_v45_workloads_keep_the_identity(seed, nr_pages):
    rng = np.random.default_rng(seed)
    s = sm.ScalarMachine(nr_pages, 7, "v4.5")
    sm.apply_scalar(s, ("spawn", ()))
    sm.apply_scalar(s, ("mmap", (1, 4 * sm.HPAGE, "rw", True)))
    chosen, longest_queue = collections.Counter(), 0
    for _ in range(150):
        op = sm.choose_op(s, rng)
        if op is None:
            continue
        chosen[op[0]] += 1
        try:
            sm.apply_scalar(s, op)
        except sm.ScalarOOM:
            pass
        check_identity(s)
        longest_queue = max(longest_queue, len(s.split_queue))
    if s.pins:
        s.put_pins(sorted(p for p, n in s.pins.items() for _ in range(n)))
    for pid in sorted(s.procs):
        s.exit(pid)
    assert s.nr_free == s.nr_pages and s.split_queue == []
    assert longest_queue > 0 and s.vmstat["thp_split_pmd"] > 0
    assert s.vmstat["thp_split_page"] + s.vmstat["thp_split_page_failed"] > 0
    assert chosen["deferred_split_scan"] + chosen["drop_caches"] > 0


def test_the_shrinker_ops_are_drawn_only_at_step_7_and_rarely():
    drawn = {}
    for stack, level in [("rfc-v1", 10), ("v4.5", 6), ("v4.5", 7)]:
        s = sm.ScalarMachine(4096, level, stack)
        s.spawn()
        s.mmap(1, sm.HPAGE)
        rng = np.random.default_rng(0)
        ops = [sm.choose_op(s, rng) for _ in range(2000)]
        drawn[stack, level] = collections.Counter(op[0] for op in ops if op is not None)
    for key in [("rfc-v1", 10), ("v4.5", 6)]:
        assert not drawn[key]["deferred_split_scan"] and not drawn[key]["drop_caches"]
    for name in ("deferred_split_scan", "drop_caches"):
        assert 20 < drawn["v4.5", 7][name] < 150      # 1 in 29 of 2000 draws is about 69
