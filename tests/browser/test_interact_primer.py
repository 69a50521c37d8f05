"""Lesson 01 in the browser: the address slicer shows the walk thplab computes.

Open the lesson, Run All, type addresses into the AddressSlicer's "Address" box (as a learner
does: text + Enter), and compare every displayed row -- level, index, table, entry, meaning --
with ``Machine.page_walk`` and ``thplab.pgtable``'s index functions on the same machine,
rebuilt here with the lesson's own helper (``primer_machine(level=0, seed=0)``).
"""

from __future__ import annotations

import re

import pytest

from thplab.lessons.foundations import address_indices, primer_machine

from . import drive
from .lab import open_notebook, run_all_cells

pytestmark = pytest.mark.browser

LESSON = "notebooks/01-thp-primer.ipynb"
ROW = re.compile(r"^(PGD|PUD|PMD|PTE)\s+index\s+(\d+)\s+table pfn (0x[0-9a-f]+)\s+"
                 r"entry (0x[0-9a-f]{16})\s+(.*)$|^(offset) bits \d+\.\.0 = (0x[0-9a-f]+): (.*)$")


def _slicer_text(page) -> str:
    area = drive.notebook(page).locator(".jp-OutputArea-output").filter(has_text="Address slicer").first
    return area.locator("pre").first.inner_text()


def _expected(machine, pid, address):
    """Rows as the slicer must show them: (level, index, table, entry, meaning)."""
    rows = []
    for r in machine.page_walk(pid, address):
        rows.append((r["level"], r["index"], r["table"], r["entry"], r["meaning"]))
    return rows


def test_address_slicer_matches_the_model(lab_page, lab):
    page = lab_page
    open_notebook(page, lab, LESSON)
    run_all_cells(page)

    machine, pid, thp, small = primer_machine(level=0, seed=0)
    addresses = {
        "4 KiB page (PTE walk)": small + 0x123,
        "THP subpage 427 (huge PMD)": thp + 427 * 4096 + 0x9a8,
        "nothing mapped": thp + (2 << 20),
    }
    for name, address in addresses.items():
        latency = drive.measure(page, lambda a=address: drive.set_text(page, "Address", hex(a)),
                                f"address {address:#x}, cut", name=f"slicer: {name}")
        assert latency < 5.0, f"{name}: the slicer took {latency:.2f}s to update"
        shown = _slicer_text(page).splitlines()
        assert shown[0] == f"address {address:#x}, cut into the fields of the walk:"
        assert shown[1].split() == ["bits", "47..39", "38..30", "29..21", "20..12", "11..0"]
        assert shown[2].split()[1:] == [f"{address >> lo & (1 << (hi - lo + 1)) - 1:0{hi - lo + 1}b}"
                                        for hi, lo in ((47, 39), (38, 30), (29, 21), (20, 12), (11, 0))]
        walk = shown[shown.index("") + 1:]
        parsed = [ROW.match(line) for line in walk]
        assert all(parsed), f"{name}: unexpected line in\n" + "\n".join(shown)
        got = [(m[1], int(m[2]), int(m[3], 16), int(m[4], 16), m[5].strip()) if m[1] else
               (m[6], int(m[7], 16), None, None, m[8].strip()) for m in parsed]
        want = _expected(machine, pid, address)
        assert got == want, f"{name}: slicer shows\n" + "\n".join(shown)
        # the indices are the address's own bits, as thplab.pgtable slices them
        idx = address_indices(address)
        huge = any(level == "PMD" and "2 MiB page" in meaning for level, _, _, _, meaning in got)
        for level, index, _, _, meaning in got:
            if level == "offset" and huge:   # 2 MiB leaf: bits 20..0, and bits 20..12 name the subpage
                assert index == address & ((2 << 20) - 1), name
                assert f"subpage {idx['PTE']}," in meaning, name
            elif level == "offset":
                assert index == idx["offset"], name
            else:
                assert index == idx[level], (name, level)
