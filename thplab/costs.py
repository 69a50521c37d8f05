"""The cost model: atomic operations and lock acquisitions the kernel would do.

Kernel functions count what they would cost (``k.cost("atomic", n)``) into
``machine.costs``.  :func:`tail_get_put` measures one ``get_page()`` and one
``put_page()`` on a tail page at a level -- the "cheaper and cleaner" claim
of the cover letter, as numbers.  The per-call counts are read off the v3.16
code (``__get_page_tail``, ``put_compound_page``), for levels 4-10 off
patches 04 and 06 [I for the exact v1 sequence], and for v4.5 off 4.5.7's
``get_page()``/``put_page()`` (include/linux/mm.h#L698, #L712: one atomic on
the head each).  A "level" here is an RFC level (an int) or a kernel name
(``"v4.5"``, ``"v3.16"``, ``"rfc-v1"``).
"""

import collections

from .machine import Machine
from .series import kernel_args


def measure(machine, fn, *args):
    """Run ``fn(*args)`` and return ``(result, Counter of costs it added)``."""
    before = collections.Counter(machine.costs)
    result = fn(*args)
    after = collections.Counter(machine.costs)
    after.subtract(before)
    return result, +after


def tail_get_put(level, subpage=5):
    """Costs of ``get_page(tail)`` and of ``put_page(tail)`` on a PMD-mapped THP at ``level``."""
    m = Machine.boot("8M", **kernel_args(level))
    _, _, head = m.map_thp()
    tail = head + subpage
    _, get = measure(m, m.kernel.get_page, tail)
    _, put = measure(m, m.kernel.put_page, tail)
    return {"get_page": dict(get), "put_page": dict(put)}


def cost_table(levels=(0, 4, 6, 10)):
    """Text table of :func:`tail_get_put` at several levels."""
    kinds = ("atomic", "compound_lock", "irq_save")
    lines = [f"{'level':>5}  {'call':<9}" + "".join(f"{k:>15}" for k in kinds)]
    for level in levels:
        costs = tail_get_put(level)
        for call in ("get_page", "put_page"):
            lines.append(f"{str(level):>5}  {call:<9}" + "".join(f"{costs[call].get(k, 0):>15}" for k in kinds))
    return "\n".join(lines)
