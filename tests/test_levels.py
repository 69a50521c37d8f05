"""What each patch of the series changes, one test per claim, at the levels before and after.

Level k = the old kernel with patches 01..k applied (kernel-semantics §2.2).
"""

import numpy as np
import pytest

from conftest import LEVELS, all_free, assert_unchanged, raw, snapshot, thp_head_of
from thplab import Machine
from thplab.errors import KernelFunctionRemoved
from thplab.invariants import held_pages
from thplab.page_flags import PageCompound, PageHead, Use
from thplab.params import EBUSY, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from thplab.series import NEW_DOC, OLD_DOC, PATCHES

M2 = HPAGE_PMD_SIZE
K4 = PAGE_SIZE


def thp_machine(level, mem="16M", fork=False, **kw):
    m = Machine.boot(mem, patches=level, seed=0, **kw)
    pid = m.spawn()
    a = m.mmap(pid, M2)
    m.touch(pid, a, M2)
    child = m.fork(pid) if fork else None
    return m, pid, a, thp_head_of(m, pid, a), child


class Recorder:
    """A minimal tracer: remembers the names of the kernel points passed."""

    def __init__(self):
        self.names = []

    def point(self, name, detail):
        self.names.append(name)


# ------------------------------------------------------------------ the series as a whole

def test_the_series_has_ten_patches_in_order():
    assert [p.number for p in PATCHES] == list(range(1, 11))
    assert PATCHES[3].subject == "thp: PMD splitting without splitting compound page"
    assert {p.number for p in PATCHES if p.source == "reconstructed"} == {3, 4, 10}


@pytest.mark.parametrize("level", LEVELS)
def test_capabilities_per_level(level):
    caps = Machine.boot("4M", patches=level).kernel.caps
    assert caps["foll_split"] == (level < 1)
    assert caps["page_anon_on_tail"] == (level >= 2)
    assert caps["tail_pins"] == (level < 4)
    assert caps["pte_mapped_thp"] == (level >= 4)
    assert caps["split_can_fail"] == (level >= 4)
    assert caps["split_huge_page_works"] == (level < 4 or level >= 6)
    assert caps["splitting_pmd"] == (level < 8)
    assert caps["futex_thp_special_case"] == (level < 9)


# ------------------------------------------------------------------ patch 01

def test_foll_split_raises_from_level_1():
    for level in LEVELS:
        m, pid, a, head, _ = thp_machine(level)
        if level == 0:
            pages = m.get_user_pages(pid, a + 5 * K4, 1, foll_split=True)
            assert pages.tolist() == [head + 5]
            assert not PageCompound(m.mem_map, head)       # the whole THP was split
            assert m.vmstat["thp_split"] == 1
            assert m.walk(pid, [a])["level"][0] == 1
            m.check()
            continue
        before = snapshot(m)
        with pytest.raises(KernelFunctionRemoved, match="FOLL_SPLIT"):
            m.get_user_pages(pid, a + 5 * K4, 1, foll_split=True)
        assert_unchanged(before, m)


def test_move_pages_splits_with_foll_split_at_level_0():
    """v3.16 ``do_move_page_to_node_array()``: follow_page(FOLL_GET | FOLL_SPLIT) splits, the subpage moves."""
    m, pid, a, head, _ = thp_machine(0, nodes=2)
    assert m.move_pages(pid, [a + 9 * K4], 1) == [1]
    assert m.kernel.defined_by("do_move_page_to_node_array").number == 0
    assert m.vmstat["thp_split"] == 1
    m.check()


@pytest.mark.parametrize("level", [1, 3, 4, 6, 10])
def test_patch_01_as_posted_does_not_split_for_a_tail(level):
    """Patch 01's hunk tests PageTransHuge() of the page follow_page() returned: false on a tail.

    Nothing is split; isolate_lru_page() fails on the tail (only a THP's head is
    on the LRU), so the status is -EBUSY and the THP stays whole.
    """
    m, pid, a, head, _ = thp_machine(level, nodes=2)
    before = m.vmstat.as_dict()
    assert m.move_pages(pid, [a + 9 * K4], 1) == [-EBUSY]
    assert m.kernel.defined_by("do_move_page_to_node_array").number == 1
    assert m.vmstat.as_dict() == before
    assert head in m.thp_heads() and not m.leaked.any()
    assert m.page_to_nid(int(m.walk(pid, [a + 9 * K4])["pfn"][0])) == 0
    m.check()


@pytest.mark.parametrize("level,pinned,status", [
    (1, False, 1), (1, True, 1), (4, False, -EBUSY), (5, True, -EBUSY), (6, False, 1), (10, True, -EBUSY)])
def test_patch_01_as_posted_splits_the_head_and_leaks_on_failure(level, pinned, status):
    """For the head, the hunk calls split_huge_page(); when that fails it skips put_page().

    The follow_page() reference is never dropped: the head's _count stays one
    too high, thplab records it in ``machine.leaked``, and every later split fails.
    """
    m, pid, a, head, _ = thp_machine(level, nodes=2)
    if pinned:
        pin = m.get_user_pages(pid, a + 5 * K4)
    count = int(m.mem_map["_count"][head])
    assert m.move_pages(pid, [a], 1) == [status]
    m.check()
    if status == -EBUSY:
        assert m.leaked[head] == 1 and head in m.thp_heads()
        assert int(m.mem_map["_count"][head]) == count + 1
        if pinned:
            m.put_page(pin)
        assert m.split_huge_page(head) == -EBUSY      # the leaked reference blocks it for good
        m.check()
    else:
        assert not m.leaked.any() and head not in m.thp_heads()
        assert m.page_to_nid(int(m.walk(pid, [a])["pfn"][0])) == 1


@pytest.mark.parametrize("level", [0, 1, 10])
def test_move_pages_status_for_a_hole_and_an_untouched_page(level):
    """v3.16: no VMA gives -EFAULT; a VMA page follow_page() does not find gives -ENOENT."""
    from thplab.params import EFAULT, ENOENT

    m, pid, a, head, _ = thp_machine(level, nodes=2)
    fresh = m.mmap(pid, 2 * K4, thp=False)
    assert m.move_pages(pid, [fresh, 0x1000, fresh + K4], 1) == [-ENOENT, -EFAULT, -ENOENT]
    m.check()


# ------------------------------------------------------------------ patch 02

def test_pageanon_on_tail_false_before_patch_02_true_after():
    for level in LEVELS:
        m, pid, a, head, _ = thp_machine(level)
        k = m.kernel
        assert bool(k.PageAnon(head))
        assert bool(k.PageAnon(head + 5)) == (level >= 2), level
        assert k.PageAnon(np.array([head, head + 1, head + 511])).tolist() == \
            [True] + [level >= 2] * 2


# ------------------------------------------------------------------ patch 03

def test_split_huge_page_pmd_renamed_at_level_3():
    for level in LEVELS:
        k = Machine.boot("4M", patches=level).kernel
        if level < 3:
            assert k.has("split_huge_page_pmd") and not k.has("split_huge_pmd")
            with pytest.raises(AttributeError):
                k.split_huge_pmd
        else:
            assert k.has("split_huge_pmd") and not k.has("split_huge_page_pmd")
            for gone in ("split_huge_page_pmd", "split_huge_page_pmd_mm"):
                with pytest.raises(KernelFunctionRemoved, match="patch 03"):
                    getattr(k, gone)


def test_split_huge_pmd_at_level_3_still_splits_the_whole_page():
    m, pid, a, head, child = thp_machine(3, fork=True)
    m.split_huge_pmd(child, a)
    assert not PageCompound(m.mem_map, head)
    assert m.walk(pid, [a])["level"][0] == 1
    assert m.vmstat["thp_split"] == 1


# ------------------------------------------------------------------ patch 04

def test_split_huge_pmd_splits_one_process_only_from_level_4():
    for level in LEVELS:
        m, pid, a, head, child = thp_machine(level, fork=True)
        m.split_huge_pmd(child, a)
        m.check()
        assert m.walk(child, [a])["level"][0] == 1
        if level < 4:
            assert m.walk(pid, [a])["level"][0] == 1          # the whole THP, in every process
            assert not PageCompound(m.mem_map, head)
        else:
            assert m.walk(pid, [a])["level"][0] == 2          # the parent keeps its PMD
            assert PageHead(m.mem_map, head)
            assert m.smaps_anon_huge_kb(pid, a, M2) == 2048
            assert m.smaps_anon_huge_kb(child, a, M2) == 0


def test_tail_pins_live_in_tail_mapcount_up_to_level_3_and_nowhere_from_level_4():
    for level in LEVELS:
        m, pid, a, head, _ = thp_machine(level)
        fast = m.get_user_pages_fast(pid, a + 5 * K4, 2)
        slow = m.get_user_pages(pid, a + 6 * K4, 2)
        head_pin = m.get_user_pages(pid, a)
        m.check()
        tails = m.mem_map["_mapcount"][head + 5:head + 8].tolist()
        if level <= 3:
            assert tails == [0, 1, 0], level          # tail 6 pinned twice
            assert m.page_mapcount(head + 6) == 2     # old page_mapcount(tail) = pins
        else:
            assert tails == [-1, -1, -1], level
            assert m.page_mapcount(head + 6) == 0
        assert raw(m, head) == (1 + 5, 0)             # every pin is a head reference
        assert (m.mem_map["_count"][head + 1:head + HPAGE_PMD_NR] == 0).all()
        m.put_page(np.concatenate([fast, slow, head_pin]))
        m.check()
        assert (m.mem_map["_mapcount"][head + 1:head + HPAGE_PMD_NR] == -1).all()
        assert raw(m, head) == (1, 0)


def test_split_huge_page_is_an_ebusy_stub_at_levels_4_and_5():
    for level in (4, 5):
        m, pid, a, head, _ = thp_machine(level)         # not pinned, mapped once
        mem_map, entries = m.mem_map.tobytes(), m.pgtables.entries.tobytes()
        assert m.split_huge_page(head) == -EBUSY
        assert m.split_huge_page(head + 7) == -EBUSY
        assert m.mem_map.tobytes() == mem_map and m.pgtables.entries.tobytes() == entries
        if level == 5:
            assert m.vmstat["thp_split_page_failed"] == 2
            assert m.vmstat["thp_split_page"] == 0 and m.vmstat["thp_split_pmd"] == 0
        else:
            assert m.vmstat["thp_split"] == 0
        m.check()
    for level in (3, 6):                                 # the levels around it do split
        m, pid, a, head, _ = thp_machine(level)
        assert m.split_huge_page(head) == 0 and not PageCompound(m.mem_map, head)


def test_split_with_gup_pin_succeeds_at_level_0_and_fails_with_ebusy_from_level_6():
    for level in LEVELS:
        m, pid, a, head, _ = thp_machine(level)
        pin = m.get_user_pages_fast(pid, a + 5 * K4)
        ret = m.split_huge_page(head)
        m.check()
        if level < 4:
            assert ret == 0 and not PageCompound(m.mem_map, head)
            assert raw(m, head + 5) == (2, 0)            # 1 mapping + the pin, now its own
        else:
            assert ret == -EBUSY and PageHead(m.mem_map, head)
            assert raw(m, head) == (2, 0)
        if level >= 6:
            assert m.vmstat["thp_split_page_failed"] == 1
            # the racy pre-check failed: no PMD was split for nothing
            assert m.vmstat["thp_split_pmd"] == 0 and m.walk(pid, [a])["level"][0] == 2
        m.put_page(pin)
        if level >= 6:
            assert m.split_huge_page(head) == 0          # unpinned: now it splits
            assert m.vmstat["thp_split_page"] == 1 and m.vmstat["thp_split_pmd"] == 1
        m.check()


def test_partial_munmap_frees_subpages_at_level_0_but_holds_them_from_level_4():
    for level in LEVELS:
        m, pid, a, head, _ = thp_machine(level)
        free = m.allocator.nr_free_pages
        m.munmap(pid, a + 100 * K4, 3 * K4)
        m.check()
        if level < 4:
            assert m.allocator.nr_free_pages == free + 3
            assert (m.mem_map["use"][head + 100:head + 103] == Use.free).all()
            assert held_pages(m) == {}
        else:
            assert m.allocator.nr_free_pages == free
            assert held_pages(m) == {head: 3}
            assert (m.mem_map["_mapcount"][head + 100:head + 103] == -1).all()
        m.munmap(pid, a, 100 * K4)
        m.check()
        if level >= 4:
            assert held_pages(m) == {head: 103}
        m.munmap(pid, a + 103 * K4, M2 - 103 * K4)
        m.check()
        assert m.allocator.nr_free_pages == m.nr_pages - 1   # no VMA left: only the PGD
        m.exit(pid)
        assert all_free(m)


def test_cow_of_a_pmd_whose_tails_are_pte_mapped_elsewhere_copies_from_level_4():
    for level in (0, 4, 10):
        m, pid, a, head, child = thp_machine(level, fork=True)
        m.split_huge_pmd(child, a)
        m.exit(child)
        m.check()
        m.touch(pid, a, K4)          # write to the parent's (still) read-only mapping
        m.check()
        # level 0: the split was whole and the child is gone: reuse every 4 KiB page
        # level >= 4: the child's PTEs are gone too, so page_mapcount(head) == 1 and no
        # tail is PTE-mapped: the PMD is reused
        assert int(m.walk(pid, [a])["pfn"][0]) == head
    for level in (4, 10):
        m, pid, a, head, child = thp_machine(level, fork=True)
        m.split_huge_pmd(child, a)   # tails PTE-mapped in the child, head pm == 2
        m.touch(pid, a + M2 - K4, K4)
        m.check()
        assert thp_head_of(m, pid, a) != head          # the parent got a copy
        assert m.walk(pid, [a])["level"][0] == 2
        assert m.vmstat["thp_fault_alloc"] == 2


# ------------------------------------------------------------------ patch 05

def test_vmstat_events_renamed_at_level_5():
    for level in LEVELS:
        m, pid, a, head, child = thp_machine(level, fork=True)
        m.split_huge_pmd(child, a)
        if level < 4:
            assert m.vmstat["thp_split"] == 1             # the page was split
        elif level == 4:
            assert m.vmstat["thp_split"] == 0             # nothing counts a PMD split yet
            assert "thp_split_pmd" not in m.vmstat
        else:
            assert "thp_split" not in m.vmstat
            assert (m.vmstat["thp_split_pmd"], m.vmstat["thp_split_page"],
                    m.vmstat["thp_split_page_failed"]) == (1, 0, 0)
            m.split_huge_page(head)
            split_works = level >= 6
            assert m.vmstat["thp_split_page"] == int(split_works)
            assert m.vmstat["thp_split_page_failed"] == int(not split_works)
            assert m.vmstat["thp_split_pmd"] == 1 + int(split_works)   # the parent's PMD


# ------------------------------------------------------------------ patch 06

def test_get_page_on_a_tail_takes_compound_lock_except_at_levels_4_and_5():
    for level in LEVELS:
        m, pid, a, head, _ = thp_machine(level)
        k = m.kernel
        before = m.costs["compound_lock"]
        k.get_page(head + 5)
        k.put_page(head + 5)
        k.get_page(head)
        k.put_page(head)
        taken = m.costs["compound_lock"] - before
        assert taken == (0 if level in (4, 5) else 2), level
        m.check()


def test_new_split_leaves_tail_mapcounts_and_gives_tails_their_mapcount_as_count():
    m, pid, a, head, child = thp_machine(6, fork=True)
    m.split_huge_pmd(child, a)
    m.munmap(child, a + 10 * K4, 2 * K4)
    assert m.split_huge_page(head) == 0
    m.check()
    assert raw(m, head + 1) == (2, 1)
    assert raw(m, head + 10) == (1, 0)               # only the parent maps it now
    assert raw(m, head) == (2, 1)


# ------------------------------------------------------------------ patches 07 and 08

def test_wait_split_huge_page_removed_at_level_7():
    for level in LEVELS:
        k = Machine.boot("4M", patches=level).kernel
        assert k.has("wait_split_huge_page") == (level < 7)
        if level >= 7:
            with pytest.raises(KernelFunctionRemoved, match="patch 07"):
                k.wait_split_huge_page


def test_pmd_trans_splitting_removed_at_level_8():
    from thplab import pgtable as pt

    splitting = int(pt.set_bits(pt.mk_huge_pmd(0x200, pt.PAGE_COPY), pt._PAGE_SPLITTING))
    for level in LEVELS:
        k = Machine.boot("4M", patches=level).kernel
        if level < 8:
            assert k.pmd_trans_splitting(splitting) is True
            assert k.has("pmdp_splitting_flush")
        else:
            for gone in ("pmd_trans_splitting", "pmdp_splitting_flush"):
                with pytest.raises(KernelFunctionRemoved, match="patch 08"):
                    getattr(k, gone)


def test_old_split_marks_pmds_splitting_and_the_new_one_does_not():
    for level, expect in ((0, True), (3, True), (6, False), (10, False)):
        m, pid, a, head, _ = thp_machine(level)
        rec = Recorder()
        m.tracer = rec
        assert m.split_huge_page(head) == 0
        assert any(n.startswith("pmdp_splitting_flush") for n in rec.names) == expect
        assert any(n.startswith("__split_huge_pmd") for n in rec.names) == (not expect)


# ------------------------------------------------------------------ patch 09

def test_futex_special_case_gone_at_level_9():
    for level in LEVELS:
        m, pid, a, head, _ = thp_machine(level)
        rec = Recorder()
        m.tracer = rec
        before = snapshot(m)["mem_map"]
        assert m.get_futex_key(pid, a + 5 * K4) == (pid, a + 5 * K4)
        m.tracer = None
        assert m.mem_map.tobytes() == before or level < 8  # only PG_referenced may move
        special = any(n.startswith("get_futex_key: tail page") for n in rec.names)
        assert special == (level < 9), level
        # the special case re-pins with __get_user_pages_fast(): a second gup-fast walk
        reads = sum(n.startswith("gup_pmd_range") for n in rec.names)
        assert reads == (2 if level < 9 else 1), level
        assert raw(m, head) == (1, 0) and m.mem_map["_mapcount"][head + 5] == -1
        m.check()


# ------------------------------------------------------------------ patch 10

def test_transhuge_documentation_per_level():
    gup = "get_user_pages and follow_page"
    for level in LEVELS:
        doc = Machine.boot("4M", patches=level).kernel.TRANSHUGE_DOC
        # documented since v2.6.38: GUP hands out head or tail pages, as on hugetlbfs
        assert "hand back the head or tail page" in doc[gup]
        if level == 0:
            assert doc == OLD_DOC and "FOLL_SPLIT" in doc[gup]
        elif level < 10:
            assert "FOLL_SPLIT" not in doc[gup]
            assert "thp_split counts" in doc["Monitoring usage"]
        else:
            assert doc == NEW_DOC
            assert doc[gup] == Machine.boot("4M", patches=1).kernel.TRANSHUGE_DOC[gup]
            assert "thp_split_pmd" in doc["Monitoring usage"]
            assert "split_huge_pmd(vma, pmd, addr)" in doc["Graceful fallback"]
            assert "compound_lock, get_user_pages and put_page" not in doc


def test_code_diff_shows_what_a_patch_replaced():
    from thplab.series.text import code_diff

    diff = code_diff(2, "PageAnon")
    assert "compound_head" in diff and diff.startswith("---")
    assert code_diff(1, "no_such_function") == ""


def test_v1_cow_reuses_a_pte_mapped_tail_that_another_process_maps_by_pmd():
    """A hazard of RFC v1 as posted, which thplab reproduces (documented, not endorsed).

    After fork and a PMD split in the child, a write fault on a tail in the child asks
    ``page_mapcount(tail)``: in v1 that counts only PTE maps of the tail (1), not the
    parent's PMD, so ``do_wp_page()`` reuses the page and the child writes into memory
    the parent still maps.  At level 0 the split is whole and every page counts 2
    mappings, so the child copies.  (v2 added compound_mapcount; v4.5 uses it.)
    """
    for level in (0, 4, 10):
        m, pid, a, head, child = thp_machine(level, fork=True)
        m.split_huge_pmd(child, a)
        m.touch(child, a + 7 * K4, K4)
        m.check()
        in_child = int(m.walk(child, [a + 7 * K4])["pfn"][0])
        in_parent = int(m.walk(pid, [a + 7 * K4])["pfn"][0])
        assert (in_child == in_parent) == (level >= 4), level
        assert m.walk(child, [a + 7 * K4])["writable"][0]


def test_level_0_is_read_in_v3_16_and_says_where_v3_14_differs():
    from thplab import pgtable as pt
    from thplab.series import BASE, LEVEL0, patch_card
    from thplab.series.trees import V3_14_DIFFERENCES

    assert LEVEL0 == "v3.16" and "v3.16" in BASE.subject
    assert pt._PAGE_SPLITTING == 1 << 10          # _PAGE_BIT_SOFTW2 in v3.16 (bit 9 in v3.14)
    card = patch_card(0)
    assert all(what in card for what, _, _ in V3_14_DIFFERENCES)
    assert "v3.14" not in BASE.link and "v3.16" in BASE.link


def test_boot_names_the_kernel_and_its_step():
    """Machine.boot(kernel=...): 'v3.16' is level 0, 'rfc-v1' the whole RFC or its first k patches
    (and 'v4.5' the merged design: tests/test_v45.py)."""
    from thplab.series import KERNELS, LEVEL0

    assert KERNELS == (LEVEL0, "rfc-v1", "v4.5") and LEVEL0 == "v3.16"
    cases = [({}, 0), ({"patches": None}, 0), ({"patches": 4}, 4), ({"kernel": "v3.16"}, 0),
             ({"kernel": "v3.16", "patches": 0}, 0), ({"kernel": "rfc-v1"}, 10),
             ({"kernel": "rfc-v1", "patches": 3}, 3), ({"kernel": "rfc-v1", "patches": 0}, 0)]
    for kwargs, level in cases:
        m = Machine.boot("16M", **kwargs)
        assert (m.level, m.kernel.stack) == (level, "rfc-v1"), kwargs
        name = "v3.16 (level 0)" if level == 0 else f"rfc-v1 level {level}"
        assert m.kernel.name == name and name in repr(m) and name in repr(m.kernel)
