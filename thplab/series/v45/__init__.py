"""The THP refcounting redesign as merged for v4.5: seven steps on thplab's level 0.

"[PATCHv12 00/37] THP refcounting redesign" (Kirill A. Shutemov, 6 Oct 2015,
merged for v4.5-rc1 on 15 Jan 2016), with the fixes 4.5.7 carries, grouped into
the steps a learner can bisect: ``STEPS[i]`` is step i+1 and a kernel at step
k is level 0 plus steps 1..k (``Machine.boot(kernel="v4.5", patches=k)``).
docs/v4.5-stack.md gives every commit, the counter flows and the review
history this follows; the links go to the 4.5.7 tree at pinned lines.

The series had THP switched off ("mm: temporally mark THP broken", 11/37)
until "mm: re-enable THP" (35/37): steps 2 to 6 boot with no THPs at all, as a
bisection of the real series would.  Their code is there to be read and
diffed; it runs from step 7 on.
"""

from .s01_prepare import S01
from .s02_no_tail_refcounting import S02
from .s03_no_splitting_pmd import S03
from .s04_compound_mapcount import S04
from .s05_split_huge_pmd import S05
from .s06_split_huge_page import S06
from .s07_deferred_split import S07

STEPS = [S01, S02, S03, S04, S05, S06, S07]

#: The posted cover letter of v12 (lore keeps the v12 emails under these Message-Ids).
COVER = "https://lore.kernel.org/linux-mm/1444145044-72349-1-git-send-email-kirill.shutemov@linux.intel.com/"

__all__ = ["STEPS", "COVER"]
