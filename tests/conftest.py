"""Shared helpers for thplab's model tests (not the browser/live tests).

* ``LEVELS``: every series level, 0 (old kernel) .. 10 (RFC v1).
* ``snapshot(m)``: everything a failed call must leave untouched, so that
  ``snapshot(m) == snapshot(m)`` before and after proves "no state change".
* hypothesis profiles: ``ci`` (the default: derandomized, bounded examples)
  and ``dev`` (random, more examples); pick with ``HYPOTHESIS_PROFILE=dev``.
"""

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    settings = None

LEVELS = list(range(11))

if settings is not None:
    settings.register_profile(
        "ci", derandomize=True, database=None, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much])
    settings.register_profile(
        "dev", derandomize=False, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def snapshot(m):
    """A deep, comparable copy of every piece of state of machine ``m``.

    Covers ``mem_map`` (bytes), the page-table pool (entries, row maps, free
    rows), the allocator's free lists, pins, vmstat, every process (VMAs with
    their anon_vma, rss, nr_ptes, deposited tables, mmap_base), the anon_vma
    registry, locks and the cost counters.
    """
    t = m.pgtables
    procs = {}
    for pid, mm in m.processes.items():
        procs[pid] = {
            "pgd": mm.pgd,
            "vmas": [(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff,
                      v.anon_vma.id if v.anon_vma is not None else None,
                      tuple(a.id for a in v.anon_vma_chain)) for v in mm.vmas],
            "nr_ptes": mm.nr_ptes, "anon_rss": mm.anon_rss, "file_rss": mm.file_rss,
            "pmd_huge_pte": {k: list(v) for k, v in mm.pmd_huge_pte.items()},
            "mmap_base": mm.mmap_base,
        }
    return {
        "mem_map": m.mem_map.tobytes(),
        "entries": t.entries.tobytes(), "row_of": t.row_of.tobytes(),
        "pfn_of": t.pfn_of.tobytes(), "table_level": t.level.tobytes(),
        "free_rows": list(t._free_rows),
        "free_lists": [sorted(s) for s in m.allocator._free],
        "nr_free_pages": m.allocator.nr_free_pages,
        "pins": m.pins.tobytes(),
        "vmstat": m.vmstat.as_dict(),
        "processes": procs,
        "anon_vmas": {i: tuple(id(v) for v in av.vmas) for i, av in m.anon_vmas.items()},
        "next_pid": m._next_pid,
        "locks": dict(m.smp.held), "irqs_off": set(m.smp.irqs_off),
        "costs": dict(m.costs),
    }


def diff_snapshots(a, b):
    """Names of the parts of two snapshots that differ (for assertion messages)."""
    return [k for k in a if a[k] != b[k]]


def assert_unchanged(before, m):
    after = snapshot(m)
    changed = diff_snapshots(before, after)
    assert not changed, f"state changed in: {changed}"


def thp_head_of(m, pid, addr):
    """pfn of the compound head mapped at ``addr`` (by PMD or PTE)."""
    from thplab.page_flags import compound_head

    pfn = int(m.walk(pid, [addr])["pfn"][0])
    assert pfn >= 0, f"{addr:#x} is not mapped in pid {pid}"
    return int(compound_head(m.mem_map, pfn))


def raw(m, pfn):
    """``(_count, raw _mapcount)`` of one struct page, as plain ints."""
    return int(m.mem_map["_count"][pfn]), int(m.mem_map["_mapcount"][pfn])


def all_free(m):
    """Everything is back in the allocator and no page table is left."""
    return (m.allocator.nr_free_pages == m.nr_pages and len(m.pgtables.live_rows()) == 0
            and not m.pins.any() and bool((m.mem_map["_count"] == 0).all()))



def pytest_collection_modifyitems(items):
    """Run the real-browser tests last.

    Playwright's sync API leaves its event loop set as the running loop of the main thread
    between calls, so a test after it that runs an event loop of its own (widgets that defer
    work to the loop, as in a Jupyter kernel) would see a loop that never turns.
    """
    items.sort(key=lambda item: "browser" in item.path.parts[-2:-1])
