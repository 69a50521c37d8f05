"""The RFC series "[PATCH, RFC 00/10] THP refcounting redesign" (Kirill A. Shutemov, 9 June 2014).

``BASE`` is the kernel before the series; ``PATCHES[i]`` is patch i+1.  A
kernel at level k is ``Kernel(machine, k)``: the base with patches 1..k.
"""

from ._kernel import Kernel, Patch, function_diff
from .p00_base import BASE

PATCHES = []

__all__ = ["BASE", "PATCHES", "Kernel", "Patch", "function_diff"]
