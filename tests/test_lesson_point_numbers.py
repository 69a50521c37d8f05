"""The point numbers the lessons' prose cites name the points the model reports there.

Lessons 09, 10, 11 and 13 read race logs and step-throughs by number ("CPU0 waits (point 6)").
Adding or moving a ``k.point()`` renumbers them; these checks fail until the prose is updated.
Each case: the lesson, a phrase its markdown must contain, the run it describes, and for each
cited number a text the point's name must contain.
"""

import json
from pathlib import Path

import pytest

from thplab.lessons import compare, series_middle
from thplab.races import RACES

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _race(name, level, **kw):
    race = RACES[name](level, **kw)
    race.play()
    return [s.name for s in race.interleaving.steps]


def _swap():
    race = series_middle.futex_swap_race(0)
    race.play()
    return [s.name for s in race.interleaving.steps]


def _solo():
    m, head, il = series_middle._futex_il(0, 0, 5, False, split=False)
    il.finish()
    return [s.name for s in il.steps]


def _pinned_split():
    _, _, rec = compare.pinned_split(0)
    return [s.name for s in rec.steps]


CASES = [
    ("09-patch-07-generic-splitting", "turned interrupts on (point 9)", lambda: _race("split-vs-gup-fast", 0),
     {5: "_PAGE_SPLITTING set", 6: "IPI waits", 7: "tail pins taken", 8: "head referenced",
      9: "local_irq_enable", 11: "tail pins read", 12: "counts redistributed"}),
    ("09-patch-07-generic-splitting", "re-check under `compound_lock` (point 11)",
     lambda: _race("split-vs-gup-fast", 7), {5: "IPI waits", 11: "compound_lock taken"}),
    ("10-patch-08-x86-splitting", "the split runs straight through (points 3–9)",
     lambda: _race("split-vs-gup-fast", 8, without=("tlb_flush_ipi",)), {3: "racy check", 8: "split_huge_page: done",
                                                                         9: "done", 10: "gup_huge_pmd"}),
    ("11-patch-09-futex", "`lock_page(head)` (point 14)", _solo,
     {5: "local_irq_enable", 7: "PageTail re-checked", 8: "interrupts off", 11: "head referenced",
      13: "PageTail re-checked", 14: "lock_page(head)"}),
    ("11-patch-09-futex", "(point 13: `0x...4e7`)", lambda: _race("futex-vs-split", 0),
     {11: "_PAGE_SPLITTING set", 12: "IPI waits", 13: "PMD read", 14: "takes the TLB-flush IPI",
      17: "local_irq_enable", 18: "wait_split_huge_page", 26: "lock_page(head)"}),
    ("11-patch-09-futex", "The split's IPI waits (point 16)", _swap,
     {12: "compound_lock_irqsave", 16: "IPI waits", 17: "PageTail re-checked", 18: "takes the TLB-flush IPI",
      19: "lock_page(head)", 21: "tail pins read"}),
    ("11-patch-09-futex", "stops at its first test (point 7)", lambda: _race("futex-vs-split", 9),
     {7: "racy check"}),
    ("13-old-vs-new", "rewrites both PMDs as tables of 512 PTEs (points 9–12)", _pinned_split,
     {3: "_PAGE_SPLITTING set", 5: "_PAGE_SPLITTING set", 6: "tail pins read", 7: "counts redistributed",
      8: "unlocked", 9: "pmdp_invalidate", 12: "pmd_populate"}),
]


def _markdown(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("lesson, phrase, run, cited", CASES, ids=[f"{c[0][:2]}-{c[1][:30]}" for c in CASES])
def test_cited_points_name_what_the_prose_says(lesson, phrase, run, cited):
    assert phrase in _markdown(lesson).replace("\n", " "), f"{lesson}: the prose no longer says {phrase!r}"
    names = run()
    wrong = {i: names[i] if i < len(names) else None for i, text in cited.items()
             if i >= len(names) or text not in names[i]}
    assert not wrong, f"{lesson}: cited points now read {wrong}"
