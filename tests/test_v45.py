"""The v4.5 stack (thplab/series/v45): the counter flows of docs/v4.5-stack.md §3, step by step.

Every number here is the spec's (read in the 4.5.7 tree), not the model's output copied back.
"""

import numpy as np
import pytest

from thplab import Machine
from thplab.errors import BadArgument, KernelFunctionRemoved, VMBug
from thplab.page_flags import PG, PageHead, PageTail
from thplab.params import EBUSY, HPAGE_PMD_NR, SHRINK_STOP
from thplab.series import STACKS

M2, K4 = 2 << 20, 4096


def thp_machine(mem="16M", step=7, nodes=1):
    """A v4.5 machine with one process mapping one THP by a PMD: ``(m, pid, addr, head)``."""
    m = Machine.boot(mem, kernel="v4.5", patches=step, nodes=nodes)
    pid = m.spawn()
    a = m.mmap(pid, M2)
    m.touch(pid, a, M2)
    heads = m.thp_heads()
    assert len(heads) == 1
    return m, pid, a, int(heads[0])


def cm(m, head):
    return int(m.mem_map["mapping"][head + 1])


def dm(m, head):
    return bool(m.mem_map["flags"][head + 1] & (1 << PG.private_2))


def counts(m, head):
    return m.mem_map["_count"][head:head + HPAGE_PMD_NR], m.mem_map["_mapcount"][head:head + HPAGE_PMD_NR]


def test_the_stack_has_seven_steps_and_names_them():
    steps = STACKS["v4.5"]
    assert [s.number for s in steps] == list(range(1, 8))
    assert [s.emails for s in steps] == ["01-10", "11-15", "16-25", "26-28", "29-30", "31-33", "34-37"]
    assert Machine.boot("16M", kernel="v4.5").kernel.name == "v4.5"
    assert Machine.boot("16M", kernel="v4.5", patches=3).kernel.name == "v4.5 step 3"
    assert "[PATCHv12 26-28/37]" in steps[3].title
    with pytest.raises(BadArgument, match="0..7"):
        Machine.boot("16M", kernel="v4.5", patches=8)


def test_thp_fault_sets_compound_mapcount_not_the_head_mapcount():
    m, pid, a, head = thp_machine()
    c, mc = counts(m, head)
    assert (c[0], cm(m, head), dm(m, head)) == (1, 0, False)
    assert (mc == -1).all() and not c[1:].any()
    assert m.vmstat["nr_anon_transparent_hugepages"] == 1 and m.vmstat["thp_fault_alloc"] == 1
    assert (m.page_mapcount([head, head + 7]) == 1).all()
    assert m.kernel.total_mapcount(head) == 1
    m.check()


def test_fork_moves_compound_mapcount():
    m, pid, a, head = thp_machine()
    m.fork(pid)
    assert (m.page_count(head), cm(m, head)) == (2, 1)
    assert (counts(m, head)[1] == -1).all()
    assert m.kernel.total_mapcount(head) == 2 and int(m.page_mapcount(head + 300)) == 2
    m.check()


def test_partial_munmap_splits_the_pmd_queues_the_thp_and_frees_nothing():
    m, pid, a, head = thp_machine()
    free = m.allocator.nr_free_pages
    j = 37
    m.munmap(pid, a + j * K4, K4)
    c, mc = counts(m, head)
    assert c[0] == 511 and cm(m, head) == -1 and not dm(m, head)
    assert mc[j] == -1 and (np.delete(mc, j) == 0).all()
    assert m.split_queue() == [head] and m.deferred_split_count() == m.split_queue_len() == 1
    assert m.vmstat["thp_split_pmd"] == 1 and m.vmstat["nr_anon_transparent_hugepages"] == 0
    assert m.allocator.nr_free_pages == free and PageHead(m.mem_map, head)
    m.check()


def test_mprotect_in_the_child_after_fork_sets_double_map():
    m, pid, a, head = thp_machine()
    child = m.fork(pid)
    m.mprotect(child, a, K4, "r")
    c, mc = counts(m, head)
    assert c[0] == 513 and (mc == 1).all() and dm(m, head) and cm(m, head) == 0
    assert (m.page_mapcount(np.arange(head, head + HPAGE_PMD_NR)) == 2).all()
    assert m.kernel.total_mapcount(head) == 513
    m.check()
    # the child unmaps subpage 5: still mapped by the parent's PMD, so not queued
    m.munmap(child, a + 5 * K4, K4)
    assert counts(m, head)[1][5] == 0 and m.split_queue() == []
    m.check()
    # the parent's PMD goes: DoubleMap is undone, subpage 5 is now mapped by nothing -> queued
    m.munmap(pid, a, M2)
    c, mc = counts(m, head)
    assert not dm(m, head) and cm(m, head) == -1 and mc[5] == -1 and (np.delete(mc, 5) == 0).all()
    assert m.split_queue() == [head]
    m.check()


def test_a_pinned_thp_is_not_split():
    m, pid, a, head = thp_machine()
    pin = m.get_user_pages(pid, a + 9 * K4)
    assert m.split_huge_page(head) == -EBUSY
    assert m.vmstat["thp_split_page_failed"] == 1 and m.vmstat["thp_split_pmd"] == 0
    assert PageHead(m.mem_map, head) and m.walk(pid, [a])["level"][0] == 2   # nothing touched
    m.put_page(pin)
    assert m.split_huge_page(head) == 0
    assert m.vmstat["thp_split_page"] == 1 and m.vmstat["thp_split_pmd"] == 1   # the freeze split the PMD
    c, mc = counts(m, head)
    assert (c == 1).all() and (mc == 0).all() and not PageTail(m.mem_map, np.arange(head, head + 512)).any()
    assert m.walk(pid, [a])["level"][0] == 1
    assert m.mem_map["mapping"][head + 1] == m.mem_map["mapping"][head]   # page[1] is a page again
    m.check()


def test_shrinker_worked_case_frees_the_unmapped_subpage():
    """docs/v4.5-stack.md §3 "Worked case": partial munmap of subpage j, then the shrinker."""
    m, pid, a, head = thp_machine()
    j = 100
    m.munmap(pid, a + j * K4, K4)
    free = m.allocator.nr_free_pages
    assert m.deferred_split_scan(1) == 1
    assert m.split_queue() == [] and m.vmstat["thp_split_page"] == 1
    assert m.vmstat["thp_split_pmd"] == 1           # the munmap's; the freeze found PTEs only
    c, mc = counts(m, head)
    assert c[j] == 0 and m.mem_map["use"][head + j] == 0   # freed
    assert (np.delete(c, j) == 1).all() and (np.delete(mc, j) == 0).all()
    assert m.allocator.nr_free_pages == free + 1
    assert m.deferred_split_scan(1) == SHRINK_STOP
    m.check()


def test_a_full_munmap_queues_then_the_free_unqueues():
    m, pid, a, head = thp_machine()
    other = m.mmap(pid, M2)
    m.touch(pid, other, M2)
    pin = m.get_user_pages(pid, a)          # keeps the first THP alive after its unmap
    m.munmap(pid, a, M2)
    assert m.split_queue() == [head] and cm(m, head) == -1
    m.check()
    m.put_page(pin)                          # last reference: free_transhuge_page() unqueues
    assert m.split_queue() == [] and m.mem_map["use"][head] == 0
    m.munmap(pid, other, M2)                 # queued and freed in the same call
    assert m.split_queue() == []
    m.check()


def test_a_pin_taken_after_the_first_check_fails_the_split_after_the_freeze():
    """Between the racy check and the freeze a pin arrives (gup-fast on a still-present PTE):
    the second check fails, the page is mapped back by PTEs, still compound, queued."""
    from thplab import gup

    m, pid, a, head = thp_machine()
    k = m.kernel
    taken = []

    class Racer:
        def point(self, name, detail):
            if name == "split_huge_page: racy check" and not taken:
                fast = getattr(gup, "__get_user_pages_fast")    # no name mangling in a class body
                taken.append(fast(k, m.processes[pid], a + 3 * K4, 1))

    m.tracer = Racer()
    try:
        assert m.split_huge_page(head) == -EBUSY
    finally:
        m.tracer = None
    m.pins[taken[0]] += 1                     # the racer's pin, as Machine.get_user_pages_fast records it
    assert PageHead(m.mem_map, head) and m.walk(pid, [a])["level"][0] == 1
    assert cm(m, head) == -1 and (counts(m, head)[1] == 0).all() and m.page_count(head) == 513
    assert m.split_queue() == [head] and m.vmstat["thp_split_page_failed"] == 1
    m.check()


def test_cow_after_fork_of_a_pte_mapped_thp_reuses_only_when_no_subpage_is_shared():
    m, pid, a, head = thp_machine()
    m.split_huge_pmd(pid, a)
    child = m.fork(pid)
    m.touch(child, a + 4 * K4, K4)            # mapped twice: copied
    assert m.walk(child, [a + 4 * K4])["pfn"][0] != head + 4
    m.exit(pid)
    # the child's own PTEs: subpage 5 is mapped once now, but subpage 4's copy left head+4 with
    # the parent gone... the THP's largest page_mapcount is 1, so the write reuses it
    m.touch(child, a + 5 * K4, K4)
    assert m.walk(child, [a + 5 * K4])["pfn"][0] == head + 5
    m.check()


@pytest.mark.parametrize("step", range(2, 7))
def test_steps_2_to_6_have_thp_marked_broken(step):
    m = Machine.boot("16M", kernel="v4.5", patches=step, thp="always")
    pid = m.spawn()
    a = m.mmap(pid, 2 * M2)
    m.touch(pid, a, 2 * M2)
    assert len(m.thp_heads()) == 0 and m.vmstat["thp_fault_alloc"] == 0
    assert m.vmstat["thp_fault_fallback"] == 0     # not a fallback: THP cannot be enabled
    if step < 6:                                   # the new split_huge_page() is step 6's
        with pytest.raises(KernelFunctionRemoved, match="v4.5 step"):
            m.kernel.split_huge_page(0)
    m.check()


def test_step_1_is_the_old_scheme_with_the_new_event_names():
    m, pid, a, head = thp_machine(step=1)
    assert "thp_split" not in m.vmstat and m.vmstat["thp_split_page"] == 0
    m.munmap(pid, a + 5 * K4, K4)             # the old split: the whole THP, counted once
    assert not PageHead(m.mem_map, head)
    assert m.vmstat["thp_split_page"] == 1 and m.vmstat["thp_split_pmd"] == 0
    with pytest.raises(KernelFunctionRemoved, match="split_huge_page_pmd"):
        m.kernel.split_huge_page_pmd
    m.check()


def test_drop_caches_runs_the_shrinker_as_drop_slab_does():
    m = Machine.boot("32M", kernel="v4.5")
    pid = m.spawn()
    a = m.mmap(pid, 6 * M2)
    m.touch(pid, a, 6 * M2)
    for i in range(6):
        m.munmap(pid, a + i * M2 + 7 * K4, K4)
    assert m.deferred_split_count() == 6
    m.drop_caches(2)
    # freeable 6: delta = 2000 * 6 // 1001 = 11, one batch of nr_to_scan 11 splits all 6 and
    # uses up the scan; 6 freed <= 10, so drop_slab_node() stops after one pass
    assert m.deferred_split_count() == 0 and m.vmstat["thp_split_page"] == 6
    assert m.vmstat["thp_split_page_failed"] == 0 and m.shrinker_nr_deferred == [0]
    m.check()


def test_a_scan_visits_the_queue_head_first_and_splits_in_reverse():
    m = Machine.boot("32M", kernel="v4.5")
    pid = m.spawn()
    a = m.mmap(pid, 3 * M2)
    m.touch(pid, a, 3 * M2)
    heads = [int(h) for h in m.thp_heads()]
    for i in (2, 0, 1):
        m.munmap(pid, a + i * M2 + K4, K4)
    assert m.split_queue() == [heads[2], heads[0], heads[1]]
    pins = [m.get_user_pages(pid, a + i * M2) for i in (2, 0)]      # neither can be split
    assert m.deferred_split_scan(2) == 0            # none split, the queue is not empty
    # both failed and went back to the tail, in the local list's order: the reverse of the scan's
    assert m.split_queue() == [heads[1], heads[0], heads[2]]
    assert m.vmstat["thp_split_page_failed"] == 2
    m.put_page(np.concatenate(pins))
    m.check()


def test_bad_calls_are_refused_and_change_nothing():
    m, pid, a, head = thp_machine()
    with pytest.raises(BadArgument):
        m.deferred_split_scan(0)
    with pytest.raises(BadArgument):
        m.drop_caches(5)
    with pytest.raises(BadArgument):
        m.deferred_split_scan(True)
    old = Machine.boot("16M", kernel="rfc-v1")
    with pytest.raises(KernelFunctionRemoved, match="v4.5"):
        old.deferred_split_scan()
    with pytest.raises(KernelFunctionRemoved):
        old.split_queue()
    old.drop_caches(2)                        # nothing to shrink before v4.5
    m.check()


def test_split_huge_page_needs_the_page_lock():
    m, pid, a, head = thp_machine()
    m.kernel.get_page(head)
    with pytest.raises(VMBug, match="PageLocked"):
        m.kernel.split_huge_page(head)


def test_the_cli_runs_scenarios_on_v45_and_refuses_what_it_cannot(capsys):
    from thplab.__main__ import main
    from thplab.scenarios import SCENARIOS

    assert main(["scenario", "partial-munmap", "--kernel", "v4.5"]) == 0
    out = capsys.readouterr().out
    assert "seed 0, v4.5" in out and "thp_split_pmd +1" in out and "thp_split +1" not in out
    with pytest.raises(SystemExit) as e:
        main(["race", "split-vs-gup-fast", "--kernel", "v4.5"])
    assert e.value.code == 2 and "interleavings of the RFC" in capsys.readouterr().err
    with pytest.raises(BadArgument, match="BROKEN"):
        SCENARIOS["fault"].start(4, kernel="v4.5")


def test_a_step_has_a_card_and_code_diffs(capsys):
    from thplab.__main__ import main
    from thplab.series.text import code_diff, kernel_functions, patch_text

    replaced, removed = kernel_functions(4, "v4.5")
    assert "page_dup_rmap" in replaced and "check_refcounts" not in replaced
    diff = code_diff(4, "page_dup_rmap", "v4.5")
    assert "page_dup_rmap before step 4" in diff and "+    if compound:" in diff
    text = patch_text(2, stack="v4.5")
    assert "[PATCHv12 11-15/37]" in text and "split_huge_page() is removed by this patch" in text
    assert main(["patch", "6", "--kernel", "v4.5"]) == 0
    assert "freeze_page_vma()" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["patch", "9", "--kernel", "v4.5"])
