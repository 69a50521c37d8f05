"""Ordinary calls that used to break the machine (issue #9), and the structure behind them."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from thplab import Machine
from thplab.__main__ import main
from conftest import assert_unchanged, snapshot
from thplab.errors import BadAddress, BadArgument, BadPage, InvariantViolation
from thplab.page_flags import PageCompound
from thplab.params import (EBUSY, ENOMEM, HPAGE_PMD_MASK, HPAGE_PMD_SIZE, MMAP_BASE, PAGE_SIZE,
                           TASK_SIZE)
from thplab.problems import Problem

THPLAB = Path(__file__).resolve().parents[1] / "thplab"
K4 = PAGE_SIZE


def _imported_modules(path):
    """Every thplab module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add(node.module or "")
    return found


def test_migrate_does_not_import_the_series():
    """The series imports migrate (move_pages); migrate must not import the series back."""
    assert not {m for m in _imported_modules(THPLAB / "migrate.py") if m.startswith("series")}


# ---------------------------------------------------------------- command line

CLI_BAD = [
    ["problem", "--seed", "-1"],
    ["problem", "--seed", "x"],
    ["problem", "--seed", "1.5"],
    ["problem", "--level", "11"],
    ["problem", "--level", "-1"],
    ["problem", "--level", "ten"],
    ["problem", "--kind", "nope"],
    ["scenario", "cow", "--seed", "-5"],
    ["scenario", "cow", "--level", "11"],
    ["scenario", "cow", "--level", "-1"],
    ["scenario", "no-such-scenario"],
    ["race", "split-vs-gup-fast", "--level", "11"],
    ["race", "split-vs-gup-fast", "--level", "-1"],
    ["race", "no-such-race"],
    ["scenario", "cow", "--kernel", "v4.6"],
    ["race", "split-vs-gup-fast", "--kernel", "rfc-v2"],
    ["patch", "11"],
    ["patch", "x"],
    ["no-such-command"],
    [],
]


def test_cli_kernel_names_are_their_levels(capsys):
    from thplab.__main__ import main as cli

    assert cli(["scenario", "fault", "--kernel", "v3.16", "--kernel", "rfc-v1"]) == 0
    by_name = capsys.readouterr().out
    assert cli(["scenario", "fault", "--level", "0", "--level", "10"]) == 0
    assert capsys.readouterr().out == by_name and "level 10" in by_name


@pytest.mark.parametrize("argv", CLI_BAD, ids=[" ".join(a) or "nothing" for a in CLI_BAD])
def test_cli_refuses_bad_arguments_with_usage_and_status_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("usage: ") and ": error: " in err.splitlines()[-1]


def test_cli_turns_a_thplab_error_into_one_line_and_status_2(monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise BadArgument("no such problem here")

    monkeypatch.setattr(Problem, "generate", refuse)
    with pytest.raises(SystemExit) as info:
        main(["problem", "--seed", "3"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "thplab: error: no such problem here\n"


def test_cli_in_a_subprocess_prints_no_traceback():
    env = dict(os.environ, PYTHONPATH=str(THPLAB.parent))
    run = subprocess.run([sys.executable, "-m", "thplab", "problem", "--seed", "-1"],
                         capture_output=True, text=True, env=env, cwd=THPLAB.parent)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "invalid seed -1" in run.stderr


# ---------------------------------------------------------------- sparse walks

@pytest.mark.parametrize("level", [0, 4, 10])
def test_walks_over_a_sparse_tib_skip_empty_pgd_and_pud_entries(level, monkeypatch):
    """fork/mprotect/munmap/exit of 1 TiB with one page touched look at a handful of tables.

    A walk one step per 2 MiB would visit 524,288 PMD slots; the range walks skip none
    PGD/PUD entries (``memory.pmd_tables``) and read the populated tables' slots as
    arrays, so each call opens a few tables (the PGD, one PUD, one PMD and one PTE
    table, a few times over) whatever the virtual size.
    """
    from thplab.pgtable import PageTables

    opened = []
    table = PageTables.table
    monkeypatch.setattr(PageTables, "table", lambda self, pfn: opened.append(pfn) or table(self, pfn))
    m = Machine.boot("16M", patches=level)
    pid = m.spawn()
    size = 1 << 40
    a = m.mmap(pid, size, addr=0x100000000000)
    m.touch(pid, a + size // 2, K4)
    for call in (lambda: m.fork(pid), lambda: m.mprotect(pid, a, size, "r"),
                 lambda: m.munmap(pid, a, size // 4), lambda: m.exit(pid + 1),
                 lambda: m.exit(pid)):
        opened.clear()
        call()
        assert 0 < len(opened) < 40
    m.check()
    assert m.allocator.nr_free_pages == m.nr_pages


# ---------------------------------------------------------------- mmap without an address

M2 = HPAGE_PMD_SIZE


def test_plain_mmaps_keep_their_addresses():
    m = Machine.boot("16M")
    p = m.spawn()
    got = [m.mmap(p, size) for size in (M2, K4, 3 * M2, M2 + K4)]
    assert got == [MMAP_BASE, MMAP_BASE + 2 * M2, MMAP_BASE + 4 * M2, MMAP_BASE + 8 * M2]


@pytest.mark.parametrize("level", [0, 10])
def test_plain_mmap_skips_a_fixed_mapping_in_its_way(level):
    """Issue #9: mmap(addr=MMAP_BASE) then mmap() returned the same range; fork and exit broke."""
    m = Machine.boot("16M", patches=level)
    p = m.spawn()
    fixed = m.mmap(p, M2, addr=MMAP_BASE)
    m.mmap(p, 3 * M2, addr=MMAP_BASE + 3 * M2)
    plain = [m.mmap(p, M2) for _ in range(3)]
    assert plain == [MMAP_BASE + M2, MMAP_BASE + 6 * M2, MMAP_BASE + 8 * M2]
    for a in [fixed] + plain:
        m.touch(p, a, M2)
    m.check()
    child = m.fork(p)
    m.check()
    m.exit(child)
    m.exit(p)
    m.check()
    assert m.allocator.nr_free_pages == m.nr_pages


def test_plain_mmap_never_goes_above_task_size_and_falls_back_below():
    m = Machine.boot("16M")
    p = m.spawn()
    top = (TASK_SIZE & HPAGE_PMD_MASK) - M2          # the last 2 MiB slot that fits
    m.mmap(p, top - MMAP_BASE, addr=MMAP_BASE, thp=False)
    assert m.mmap(p, M2) == top
    low = m.mmap(p, M2)
    assert low == M2                                 # nothing left above: search from the bottom
    m.check()


def test_plain_mmap_with_no_room_left_is_enomem_and_changes_nothing():
    m = Machine.boot("16M")
    p = m.spawn()
    m.mmap(p, TASK_SIZE - M2, addr=M2, thp=False)
    before = snapshot(m)
    with pytest.raises(BadAddress) as info:
        m.mmap(p, K4)
    assert info.value.errno == ENOMEM
    assert_unchanged(before, m)
    with pytest.raises(BadAddress) as info:
        m.mmap(p, TASK_SIZE + K4)                  # longer than user space: -ENOMEM too
    assert info.value.errno == ENOMEM


# ---------------------------------------------------------------- anon_vma lifetime

@pytest.mark.parametrize("level", [0, 6, 10])
def test_fork_exit_cycles_free_their_anon_vmas(level):
    m = Machine.boot("16M", patches=level)
    p = m.spawn()
    a = m.mmap(p, M2)
    m.touch(p, a, M2)
    for _ in range(50):
        child = m.fork(p)
        m.touch(child, a, K4)                      # the child's COW page anchors in its own anon_vma
        m.exit(child)
    m.check()
    assert list(m.anon_vmas) == [m.processes[p].vmas[0].anon_vma.id]
    m.exit(p)
    assert m.anon_vmas == {}


def test_a_root_anon_vma_lives_while_a_grandchild_uses_it():
    m = Machine.boot("16M")
    p = m.spawn()
    a = m.mmap(p, M2)
    m.touch(p, a, M2)
    child = m.fork(p)
    grandchild = m.fork(child)
    m.exit(p)
    m.exit(child)
    m.check()                                      # refcounts and roots are checked there
    root = m.processes[grandchild].vmas[0].anon_vma.root
    assert m.anon_vmas[root.id] is root and root.vmas
    m.exit(grandchild)
    assert m.anon_vmas == {}


@pytest.mark.parametrize("level", [0, 6, 10])
def test_a_pinned_page_outliving_exit_has_no_anon_vma(level):
    m = Machine.boot("16M", patches=level)
    p = m.spawn()
    a = m.mmap(p, M2)
    m.touch(p, a, M2)
    pin = m.get_user_pages(p, a + 5 * K4)
    m.exit(p)
    m.check()
    assert m.anon_vmas == {}
    before = snapshot(m)
    with pytest.raises(BadPage, match="no live anon_vma"):
        m.anon_vma_of(int(pin[0]))
    assert_unchanged(before, m)
    if m.kernel.caps["split_huge_page_works"] and PageCompound(m.mem_map, int(pin[0])):
        # page_get_anon_vma() fails on an unmapped page: no split
        assert m.split_huge_page(int(pin[0])) in (1, -EBUSY)
    m.put_page(pin)
    m.check()
    assert m.allocator.nr_free_pages == m.nr_pages


# ---------------------------------------------------------------- check() and VMAs

def _two_vmas():
    m = Machine.boot("16M")
    p = m.spawn()
    m.mmap(p, M2)
    m.mmap(p, M2)
    m.check()
    return m, m.processes[p]


def test_check_finds_unsorted_vmas():
    m, mm = _two_vmas()
    mm.vmas.reverse()
    with pytest.raises(InvariantViolation, match="out of order or overlaps"):
        m.check()


def test_check_finds_overlapping_vmas():
    m, mm = _two_vmas()
    mm.vmas[0].vm_end = mm.vmas[1].vm_start + K4
    with pytest.raises(InvariantViolation, match="overlaps"):
        m.check()


def test_check_finds_a_vma_outside_user_space():
    m, mm = _two_vmas()
    mm.vmas[1].vm_end = TASK_SIZE + M2
    with pytest.raises(InvariantViolation, match="outside user space"):
        m.check()


def test_check_finds_a_leaked_anon_vma():
    m, mm = _two_vmas()
    m.touch(mm.pid, mm.vmas[0].vm_start, K4)
    av = m.new_anon_vma()            # as anon_vma_prepare() makes one, but no VMA links it
    av.root = av
    with pytest.raises(InvariantViolation, match="refcount"):
        m.check()
