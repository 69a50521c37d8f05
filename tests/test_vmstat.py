"""thplab.vmstat: /proc/vmstat names per series level (kernel-semantics §1.12, §2.2 patch 05)."""

import pytest

from thplab import Machine
from thplab.errors import VMBug
from thplab.vmstat import ZONE_COUNTERS, VmStat

OLD_EVENTS = ("thp_fault_alloc", "thp_fault_fallback", "thp_collapse_alloc",
              "thp_collapse_alloc_failed", "thp_split", "thp_zero_page_alloc",
              "thp_zero_page_alloc_failed")
NEW_EVENTS = ("thp_fault_alloc", "thp_fault_fallback", "thp_collapse_alloc",
              "thp_collapse_alloc_failed", "thp_split_page", "thp_split_page_failed",
              "thp_split_pmd", "thp_zero_page_alloc", "thp_zero_page_alloc_failed")


@pytest.mark.parametrize("level", range(11))
def test_event_names_per_level(level):
    m = Machine.boot("4M", patches=level)
    events = OLD_EVENTS if level < 5 else NEW_EVENTS
    assert tuple(m.vmstat) == ZONE_COUNTERS + events
    assert ("thp_split" in m.vmstat) == (level < 5)
    for name in ("thp_split_page", "thp_split_page_failed", "thp_split_pmd"):
        assert (name in m.vmstat) == (level >= 5)


@pytest.mark.parametrize("level", range(11))
def test_counting_an_event_unknown_at_this_level_is_a_vmbug(level):
    m = Machine.boot("4M", patches=level)
    missing = "thp_split_pmd" if level < 5 else "thp_split"
    before = m.vmstat.as_dict()
    with pytest.raises(VMBug, match="no such event"):
        m.kernel.count_vm_event(missing)
    with pytest.raises(VMBug):
        m.vmstat.count("thp_deferred_split_page")  # v4.6, in no level of the series
    assert m.vmstat.as_dict() == before
    with pytest.raises(KeyError):
        m.vmstat[missing]


def test_vmstat_counts_reads_and_prints():
    v = VmStat(("thp_split",), live={"nr_free_pages": lambda: 42})
    v.count("thp_split")
    v.count("thp_split", 2)
    v.count("nr_page_table_pages", -1)
    assert v["thp_split"] == 3 and v["nr_free_pages"] == 42 and v["nr_page_table_pages"] == -1
    assert v.text().splitlines() == ["nr_free_pages 42", "nr_page_table_pages -1",
                                     "nr_anon_transparent_hugepages 0", "thp_split 3"]
    frozen = v.copy()
    v.count("thp_split")
    assert frozen["thp_split"] == 3 and frozen["nr_free_pages"] == 42


def test_nr_free_pages_is_live_from_the_allocator():
    m = Machine.boot("4M")
    assert m.vmstat["nr_free_pages"] == 1024
    pid = m.spawn()  # allocates the PGD
    assert m.vmstat["nr_free_pages"] == 1023
    m.exit(pid)
    assert m.vmstat["nr_free_pages"] == 1024
