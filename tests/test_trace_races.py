"""Step-through recording and two-CPU interleavings."""

import numpy as np
import pytest

from thplab import Machine, ThplabError
from thplab.races import RACES
from thplab.trace import Interleaving, Recorder, record


def _thp(level):
    m = Machine.boot("8M", patches=level)
    pid = m.spawn()
    addr = m.mmap(pid, 2 << 20)
    m.touch(pid, addr, 2 << 20)
    return m, pid, addr, int(m.walk(pid, [addr])["pfn"][0])


def test_old_split_passes_its_three_phases_in_order():
    m, pid, addr, head = _thp(0)
    m.fork(pid)
    ret, rec = record(m, m.split_huge_page, head)
    names = [s.name for s in rec.steps]
    assert ret == 0
    phase1 = names.index("__split_huge_page_splitting: huge PMD found")
    phase2 = names.index("__split_huge_page_refcount: counts redistributed")
    phase3 = names.index("__split_huge_page_map: PTEs filled, pmdp_invalidate")
    assert phase1 < phase2 < phase3
    assert names.count("__split_huge_page_splitting: huge PMD found") == 2  # one PMD per process


def test_recorder_diff_shows_the_refcount_redistribution():
    m, pid, addr, head = _thp(0)
    pin = m.get_user_pages(pid, addr + 5 * 4096, 1)
    _, rec = record(m, m.split_huge_page, head)
    i = [s.name for s in rec.steps].index("__split_huge_page_refcount: counts redistributed")
    changes = rec.diff(i, pages=[head + 5])["pages"]
    assert (head + 5, "_count", 0, 3) in changes  # M + pins + 1 before the final put_page
    assert int(pin[0]) == head + 5


def test_splitting_bit_is_set_mid_split_only_before_patch_08():
    for level, expect in ((0, True), (8, False)):
        m, pid, addr, head = _thp(level)
        _, rec = record(m, m.split_huge_page, head)
        bits = [bool((s.state.tables & np.uint64(1 << 10)).any()) for s in rec.steps]
        assert any(bits) is expect


def test_recorder_refuses_nesting_and_large_machines():
    m, *_ = _thp(0)
    with Recorder(m):
        with pytest.raises(ThplabError):
            Recorder(m).__enter__()
    big = Machine.boot("2G")
    with pytest.raises(ThplabError, match="at most 1 GiB"):
        record(big, big.spawn)


@pytest.mark.parametrize("name", sorted(RACES))
@pytest.mark.parametrize("level", range(11))
def test_every_race_ends_consistent_at_every_level(name, level):
    race = RACES[name](level)
    race.play()
    assert race.interleaving.finished and not race.interleaving.errors
    race.machine.check()
    assert race.machine.tracer is None


def test_split_vs_gup_fast_old_kernel_waits_on_the_ipi_and_gives_the_pin_to_the_tail():
    race = RACES["split-vs-gup-fast"](0)
    race.play()
    log = race.interleaving.log()
    assert "TLB-flush IPI waits for CPU1" in log
    assert race.interleaving.results["CPU0"] == 0
    mm = race.machine.mem_map
    assert mm["_count"][race.head + 5] == 2  # one PTE mapping + the pin
    assert mm["_mapcount"][race.head + 5] == 0


def test_split_vs_gup_fast_new_kernel_rechecks_and_returns_ebusy():
    race = RACES["split-vs-gup-fast"](10)
    race.play()
    assert race.interleaving.results["CPU0"] == -16
    assert race.machine.mem_map["_count"][race.head] == 513  # 512 PTEs + the pin


def test_put_page_waits_for_compound_lock_in_the_old_kernel():
    race = RACES["put-page-vs-split"](0)
    race.play()
    assert "compound_lock: waiting, held by CPU0" in race.interleaving.log()
    assert race.machine.mem_map["_count"][race.head + 5] == 1  # ordinary page now, pin dropped


def test_interleaving_steps_and_guards():
    m, pid, addr, head = _thp(10)
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head))
    with pytest.raises(ValueError, match="no CPU named"):
        il.step("CPU9")
    with pytest.raises(ThplabError, match="already being traced"):
        Interleaving(m, CPU1=lambda: None)
    assert il.finish() == {"CPU0": 0}
    assert il.step("CPU0") is None
    m.check()


def test_closing_an_interleaving_releases_the_machine():
    m, pid, addr, head = _thp(0)
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head))
    il.step("CPU0")
    il.close()
    assert m.tracer is None
    with pytest.raises(ThplabError, match="closed"):
        il.step("CPU0")


@pytest.mark.parametrize("name, without, broken_levels", [
    ("split-vs-gup-fast", ("tlb_flush_ipi",), {0, 1, 2, 3, 6, 7, 8, 9, 10}),
    ("put-page-vs-split", ("compound_lock",), {0, 1, 2, 3}),
])
def test_what_if_a_protection_is_missing(name, without, broken_levels):
    """Switching off exactly the protection a race needs breaks the identities -- and only then."""
    from thplab.invariants import problems

    for level in range(11):
        race = RACES[name](level, without=without)
        race.play()
        broken = bool(problems(race.machine)) or bool(race.interleaving.errors)
        assert broken == (level in broken_levels), (name, level)
        assert ("WITHOUT " + without[0]) in race.outcome()


def test_what_if_refuses_unknown_protections():
    with pytest.raises(ValueError, match="can only switch off"):
        RACES["futex-vs-split"](0, without=("mmap_sem",))


def test_v1_empty_pmd_window_leaves_entries_outside_vmas_and_check_says_so():
    """v1 clears the PMD before filling the table; a racing munmap() sees pmd_none."""
    from thplab.errors import InvariantViolation
    from thplab.races import _stage

    m, pid, addr, head = _stage(10, 0, ())
    il = Interleaving(m, CPU0=lambda: m.split_huge_page(head), CPU1=lambda: m.munmap(pid, addr, 2 << 20))
    il.run_until("CPU0", "PMD cleared")
    il.step("CPU1")
    il.finish()
    with pytest.raises(InvariantViolation, match="outside every VMA"):
        m.check()


def test_compound_lock_irqsave_and_lru_lock_hold_up_the_tlb_flush_ipi():
    """v3.16: compound_lock_irqsave() (mm/swap.c put_compound_page) and spin_lock_irq(&zone->lru_lock)
    (__split_huge_page_refcount) disable interrupts, so a TLB flush on the other CPU waits for them."""
    from thplab.races import RACES

    race = RACES["put-page-vs-split"](0)
    race.play()
    steps = race.interleaving.steps
    spin = next(i for i, s in enumerate(steps) if s.cpu == "CPU1" and s.waiting)
    assert "compound_lock" in steps[spin].name and steps[spin].irqs_off == {"CPU0", "CPU1"}
    ipi = [s for s in steps if "TLB-flush IPI waits for CPU1" in s.name]
    assert ipi and all(s.cpu == "CPU0" and "CPU1" in s.irqs_off for s in ipi)
    assert not steps[-1].irqs_off
    race.machine.check()


def test_a_cpu_takes_the_ipi_when_its_interrupts_come_back_on_not_later():
    """The futex retry re-disables interrupts at once; the IPI was taken in between, so the flush is done."""
    race = RACES["futex-vs-split"](0)
    il = race.interleaving
    il.run_until("CPU1", "interrupts off")
    assert il.run_until("CPU0", "IPI waits").waiting
    step = il.run_until("CPU1", "start again")
    assert "takes the TLB-flush IPI from CPU0" in step.name
    il.run_until("CPU1", "local_irq_disable")
    assert "CPU1" in race.machine.smp.irqs_off
    # CPU0's flush no longer waits although CPU1 has interrupts off again.
    step = il.run_until("CPU0", "tail pins read")
    assert not step.waiting and "tail pins read" in step.name
    il.finish()
