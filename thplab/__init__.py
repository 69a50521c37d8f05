"""thplab: the 2014 THP refcounting redesign, as a model you can run.

>>> from thplab import Machine
>>> m = Machine.boot("16M", patches=10, seed=0)
"""

from .errors import (BadAddress, BadArgument, BadPage, InvariantViolation, KernelFunctionRemoved,
                     NoSuchProcess, OutOfMemory, Segfault, ThplabError, VMBug)
from .machine import Machine
from .params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE

__version__ = "0.1.0"

__all__ = ["Machine", "ThplabError", "BadAddress", "BadArgument", "BadPage", "NoSuchProcess", "OutOfMemory",
           "Segfault", "VMBug", "KernelFunctionRemoved", "InvariantViolation",
           "HPAGE_PMD_NR", "HPAGE_PMD_SIZE", "PAGE_SIZE"]
