"""Patch 02/10: "mm: change PageAnon() to work on tail pages".

With THPs mapped by PTEs (patch 04), rmap, reclaim and the COW path meet
tail pages, whose own ``mapping`` is NULL.  ``PageAnon()`` now asks the head.
"""

import numpy as np

from ..page_flags import compound_head
from ._kernel import Patch

P02 = Patch(
    number=2,
    subject="mm: change PageAnon() to work on tail pages",
    files={"include/linux/mm.h": 1},
    summary="PageAnon(page) tests compound_head(page)->mapping.",
    why="Tail pages will be mapped by PTEs; code that finds a tail in a page table must "
        "still see an anonymous page. Cost: one extra cache line, for compound pages only "
        "(Kirill, answering Vlastimil Babka).",
    link="https://lore.kernel.org/linux-mm/1402329861-7037-3-git-send-email-kirill.shutemov@linux.intel.com/",
    capabilities={"page_anon_on_tail": True},
)


@P02.replaces
def PageAnon(k, page):
    """Mirrors ``PageAnon()`` after patch 02: the head's ``mapping`` decides."""
    mem_map = k.mem_map
    return (mem_map["mapping"][compound_head(mem_map, np.asarray(page))] & 1) != 0
