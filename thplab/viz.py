"""Text views of one THP and the palette the diagrams share.

The pictures are :mod:`thplab.diagrams` (SVG from the model's state, and matplotlib charts
rendered to SVG); this module keeps what they and the widgets share: the Okabe-Ito palette
and the one-line text twin of a THP's counters (:func:`describe_thp`).
"""

import numpy as np

from .errors import BadArgument
from .invariants import mapping_counts
from .params import HPAGE_PMD_NR

#: Okabe & Ito (2008), distinguishable with every common colour-vision deficiency.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")

def mapping_text(value):
    """A ``struct page``'s ``mapping`` decoded: NULL, or the anon_vma and ``PAGE_MAPPING_ANON``."""
    value = int(value)
    if value == 0:
        return "NULL"
    return f"anon_vma {value >> 2} | ANON" if value & 1 else f"{value:#x}"


def page_field_text(pfn, field, old, new):
    """One changed ``struct page`` field as a line: pfn and index in hex, mapping decoded."""
    if field == "mapping":
        return f"pfn {pfn:#x}: mapping {mapping_text(old)} -> {mapping_text(new)}"
    if field == "index":
        return f"pfn {pfn:#x}: index {old:#x} -> {new:#x}"
    return f"pfn {pfn:#x}: {field} {old} -> {new}"


FIELDS = {
    "page_mapcount": "page_mapcount() of each subpage",
    "_mapcount": "raw _mapcount (-1 = none)",
    "_count": "raw _count",
    "pte_maps": "PTEs mapping each subpage (from the page tables)",
    "pins": "pins held on each subpage",
}


def thp_values(machine, head, field="page_mapcount"):
    """One value per subpage of the THP at ``head`` (a 512-element array)."""
    pages = np.arange(head, head + HPAGE_PMD_NR)
    if field == "page_mapcount":
        return np.asarray(machine.page_mapcount(pages))
    if field in ("_mapcount", "_count"):
        return machine.mem_map[field][pages].astype(int)
    if field == "pte_maps":
        return mapping_counts(machine)["pte_maps"][pages]
    if field == "pins":
        return machine.pins[pages].astype(int)
    raise BadArgument(f"field must be one of {', '.join(FIELDS)}, not {field!r}")


def held_mask(machine, head):
    """Subpages of the THP that no page table maps and nobody pins."""
    counts = mapping_counts(machine)
    pages = np.arange(head, head + HPAGE_PMD_NR)
    if counts["pmd_maps"][head]:
        return np.zeros(HPAGE_PMD_NR, bool)
    return (counts["pte_maps"][pages] == 0) & (machine.pins[pages] == 0)


def describe_thp(machine, head, field="page_mapcount"):
    """One line: runs of equal ``field`` values over the THP's subpages, and the held subpages."""
    values = thp_values(machine, head, field)
    runs, start = [], 0
    for i in range(1, HPAGE_PMD_NR + 1):
        if i == HPAGE_PMD_NR or values[i] != values[start]:
            runs.append(f"{start}" + (f"-{i - 1}" if i - 1 > start else "") + f": {values[start]}")
            start = i
    held = np.flatnonzero(held_mask(machine, head))
    text = f"{FIELDS[field]} for the THP at pfn {head:#x} -- " + "; ".join(runs)
    if len(held):
        text += f". Held (allocated, unmapped, unpinned): {len(held)} subpages"
    return text
