"""What the v4.5 steps share: where v4.5 keeps its new per-THP state in thplab's ``mem_map``."""

import numpy as np

from ...page_flags import PG

#: v4.5 keeps ``compound_mapcount`` in page[1], in the union with ``mapping``
#: (4.5.7 include/linux/mm_types.h#L57): thplab's ``mapping`` field of the first tail.
CM_FIELD = "mapping"
#: ``PG_double_map`` is ``PG_private_2`` of page[1] (4.5.7 include/linux/page-flags.h#L131).
DOUBLE_MAP = np.uint32(1 << PG.private_2)
#: ``PG_locked``: the page lock (``lock_page()``), a bit of ``flags``.
LOCKED = np.uint32(1 << PG.locked)


def cm_raw(k, heads):
    """Raw ``compound_mapcount`` (biased -1) of THP ``heads``."""
    return k.mem_map[CM_FIELD][np.asarray(heads) + 1]


def double_mapped(k, heads):
    """``PageDoubleMap()`` of THP ``heads`` (bool per head)."""
    return (k.mem_map["flags"][np.asarray(heads) + 1] & DOUBLE_MAP) != 0


def email(n):
    """The lore link of email n of "[PATCHv12 00/37]" (Message-Id numbered n+1)."""
    return f"https://lore.kernel.org/linux-mm/1444145044-72349-{n + 1}-git-send-email-kirill.shutemov@linux.intel.com/"
