"""v4.5 step 2 (emails 11-15 of v12): tail pages are no longer refcounted; THP is off meanwhile.

The heart of the redesign, as in the RFC's patch 04: ``get_page()`` and
``put_page()`` on any subpage move the head's ``_count`` and nothing else
(13/37, ddc58f27f9ee).  Tail pins were recorded only so that the old split
could hand each pin to its tail; a split of a pinned page will instead be
refused, so the record can go -- and a tail's ``_mapcount`` is free to count
PTE mappings (step 4 does).  The old split goes with it (12/37), and
``get_futex_key()`` loses its THP special case (14/37).

With the old split gone and the new one not yet written, the series switched
THP off first ("mm: temporally mark THP broken", 11/37) and on again at 35/37
(step 7).  thplab boots steps 2 to 6 with THP faults always falling back.

SIMPLIFICATION: a kernel with THP marked BROKEN cannot be built with
``CONFIG_TRANSPARENT_HUGEPAGE``, so its vmstat has no ``thp_*`` lines; thplab
keeps them (at 0) so that the same tables read every step.
"""

from .. import p04_pmd_split, p09_futex
from .._kernel import Patch
from ...params import VERIFY_READ
from ._common import email

S02 = Patch(
    number=2,
    series="v4.5",
    emails="11-15",
    subject="drop tail-page refcounting (THP marked BROKEN until step 7)",
    files={"mm/swap.c": "13/37", "include/linux/mm.h": "13/37", "mm/internal.h": "13/37",
           "mm/huge_memory.c": "12/37", "kernel/futex.c": "14/37", "mm/ksm.c": "15/37",
           "mm/Kconfig": "11/37"},
    summary="get_page()/put_page() on any subpage move only the head's _count; the old "
            "three-phase split_huge_page() is deleted; get_futex_key() pins and locks the head "
            "directly; THP cannot be enabled until step 7.",
    why="Tail pins existed only so that the old split could hand them over. If a pinned page is "
        "never split, nothing needs to know which tail is pinned.",
    link=email(13),
    capabilities={"tail_pins": False, "thp_broken": True, "futex_thp_special_case": False,
                  "split_can_fail": True},
)
S02.removes("__split_huge_page", "__split_huge_page_splitting", "__split_huge_page_refcount",
            "__split_huge_page_map", "split_huge_page_to_list", "split_huge_page",
            why="v12 12/37 deleted the old split with tail refcounting; the new one is step 6 "
                "(until then the series had it as a build-time trap).")
S02.removes("split_huge_pmd",
            why="v12 12/37: until split_huge_pmd() is rewritten (step 5) it is a build-time trap; "
                "no THP exists at these steps.")


@S02.replaces
def get_page(k, page):
    """Mirrors ``get_page()`` (4.5.7 include/linux/mm.h#L698): ``compound_head(page)->_count`` +1.

    The same rule as the RFC's patch 04 (:func:`thplab.series.p04_pmd_split.get_page`).
    """
    p04_pmd_split.get_page(k, page)


@S02.replaces
def get_page_foll(k, page):
    """The pin ``follow_page()`` takes: since v12 13/37 a plain ``get_page()``.

    4.5 has no ``get_page_foll()`` (its callers call ``get_page()``,
    4.5.7 mm/gup.c#L150); thplab's shared follow_page code keeps calling it
    by its v3.16 name.
    """
    k.get_page(page)


@S02.replaces
def put_page(k, page):
    """Mirrors ``put_page()`` (4.5.7 include/linux/mm.h#L712): head ``_count`` -1; free at 0."""
    p04_pmd_split.put_page(k, page)


@S02.replaces
def gup_huge_pmd(k, pmd, addr, nr, write):
    """Mirrors x86 ``gup_huge_pmd()`` (4.5.7 arch/x86/mm/gup.c#L164): ``nr`` references on the head."""
    return p04_pmd_split.gup_huge_pmd(k, pmd, addr, nr, write)


@S02.replaces
def get_futex_key(k, mm, address, rw=VERIFY_READ):
    """Mirrors ``get_futex_key()`` (4.5.7 kernel/futex.c#L468): pin, take the head, lock it, key.

    The same change as the RFC's patch 09 (:mod:`thplab.series.p09_futex`).
    """
    return p09_futex.get_futex_key(k, mm, address, rw)


