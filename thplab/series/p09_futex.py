"""Patch 09/10: "futex, thp: remove special case for THP in get_futex_key".

"With new THP refcounting, we don't need tricks to stabilize huge page.
If we've got reference to tail page, it can't split under us."  A pin on a
tail is a reference on the head's ``_count``, and ``split_huge_page()``
fails while it exists, so ``compound_head()`` of a pinned page stays valid.
Reverts a5b338f2b0b1 ("thp: update futex compound knowledge").
"""

from ..gup import get_user_pages_fast
from ..page_flags import compound_head
from ..params import PAGE_SIZE
from ._kernel import Patch

P09 = Patch(
    number=9,
    subject="futex, thp: remove special case for THP in get_futex_key",
    files={"kernel/futex.c": 62},
    summary="get_futex_key() takes compound_head() of the pinned page directly: no "
            "local_irq_disable(), no __get_user_pages_fast() retry, no pin swap.",
    why="A pinned tail can no longer be split away, so the head it points to is stable.",
    link="https://lore.kernel.org/linux-mm/1402329861-7037-10-git-send-email-kirill.shutemov@linux.intel.com/",
    capabilities={"futex_thp_special_case": False},
)


@P09.replaces
def get_futex_key(k, mm, address):
    """Mirrors ``get_futex_key()`` after patch 09: pin, take the head, lock it, read the key."""
    page = int(get_user_pages_fast(k, mm, address, 1, write=False)[0])
    page = int(compound_head(k.mem_map, page))
    k.point("get_futex_key: lock_page(compound_head(page))", head=page)
    k.machine.smp.lock(k, ("page_lock", page), "get_futex_key: lock_page")
    key = (mm.pid, address & ~(PAGE_SIZE - 1))
    k.machine.smp.unlock(k, ("page_lock", page))
    k.put_page(page)  # the pin was taken on a tail; it is the same head reference
    return key
