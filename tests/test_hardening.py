"""Ordinary calls that used to break the machine (issue #9), and the structure behind them."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from thplab import Machine
from thplab.__main__ import main
from thplab.errors import BadArgument
from thplab.params import PAGE_SIZE
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
    ["patch", "11"],
    ["patch", "x"],
    ["no-such-command"],
    [],
]


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
    """fork/mprotect/munmap/exit of 1 TiB with one page touched read a few thousand entries.

    One step per 2 MiB would read about 3 entries x 524,288 PMD slots per walk; skipping
    none PGD/PUD entries leaves 512 PUD entries of the populated PGD slot plus 512 PMD
    slots of the one populated PUD slot (3 entries each, the walk re-reads the upper
    levels), i.e. about 2,600.
    """
    import thplab.memory as mem

    reads = []
    entry = mem.entry
    monkeypatch.setattr(mem, "entry", lambda k, slot: reads.append(slot) or entry(k, slot))
    m = Machine.boot("16M", patches=level)
    pid = m.spawn()
    size = 1 << 40
    a = m.mmap(pid, size, addr=0x100000000000)
    m.touch(pid, a + size // 2, K4)
    for call in (lambda: m.fork(pid), lambda: m.mprotect(pid, a, size, "r"),
                 lambda: m.munmap(pid, a, size // 4), lambda: m.exit(pid + 1),
                 lambda: m.exit(pid)):
        reads.clear()
        call()
        assert len(reads) < 3000
    m.check()
    assert m.allocator.nr_free_pages == m.nr_pages
