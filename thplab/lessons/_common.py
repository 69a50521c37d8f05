"""Helpers shared by the lesson modules of lessons 12-15."""

import numpy as np

from ..errors import BadAddress, BadPage, OutOfMemory, Segfault
from ..machine import Machine
from ..params import PAGE_SIZE

KIB = PAGE_SIZE // 1024

#: Requests the kernel refuses before changing anything; a random workload skips them.
_REFUSED = (BadAddress, Segfault, BadPage, OutOfMemory)


def _delta(before, after):
    return {n: v - before[n] for n, v in after.items() if v != before[n] and n.startswith("thp_")}


def _events(delta):
    return ", ".join(f"{n} {v:+d}" for n, v in delta.items()) or "no THP event"


def _observe(m, fn):
    """Run ``fn()``; return its result and the THP vmstat events it counted."""
    before = m.vmstat.as_dict()
    result = fn()
    return result, _delta(before, m.vmstat.as_dict())


def _ranges(values):
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    values = np.asarray(values, dtype=np.int64)
    if not len(values):
        return "none"
    cuts = np.flatnonzero(np.diff(values) != 1) + 1
    parts = []
    for run in np.split(values, cuts):
        parts.append(f"{run[0]}" if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts)


def _boot(level, mem="16M", seed=0):
    return Machine.boot(mem, patches=level, seed=seed)
