"""Patch 09/10: "futex, thp: remove special case for THP in get_futex_key".

The email's argument, in short: once a pin on a tail is a reference the
split cannot ignore, holding one keeps the page from splitting, so no trick
is needed to keep the head stable.  A pin on a tail is a reference on the
head's ``_count``, and ``split_huge_page()`` fails while it exists, so
``compound_head()`` of a pinned page stays valid.  It undoes a5b338f2b0b1
("thp: update futex compound knowledge", v3.1); the write-first pin and
the read-only retry around it stay (its diff keeps them as context).
"""

from ..page_flags import compound_head
from ..params import EINVAL, PAGE_SIZE, VERIFY_READ
from ._kernel import Patch
from .p00_base import futex_key_of, futex_pin_page

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
def get_futex_key(k, mm, address, rw=VERIFY_READ):
    """Mirrors ``get_futex_key()`` after patch 09: pin, take the head, lock it, read the key.

    The write-first pin and the read-only retry stay as they were; only the
    tail-page trick goes.
    """
    if address % 4:
        return -EINVAL
    address -= address % PAGE_SIZE
    page, ro = futex_pin_page(k, mm, address, rw)
    if page < 0:
        return page
    page = int(compound_head(k.mem_map, page))
    # The tail's pin is a head reference now: it is the one futex_key_of() drops.
    return futex_key_of(k, mm, address, page, ro, "get_futex_key: lock_page(compound_head(page)), head locked")
