"""thplab's exception hierarchy.

Expected kernel failures are return values (``-EBUSY``), as in the kernel.
Exceptions are for two other things: a request the kernel would refuse
(bad address, unknown process, ...), raised *before* any state changes, and
"this cannot happen" (:class:`VMBug`, the model's ``VM_BUG_ON``).
"""

import numpy as np


class ThplabError(Exception):
    """Base class of every error thplab raises."""


class BadAddress(ThplabError, ValueError):
    """An address or length the kernel would refuse.

    ``errno`` is the kernel's error for the same request (``EINVAL``,
    ``ENOMEM``, ``EFAULT``), so a learner can compare with ``man 2 munmap``.
    """

    def __init__(self, message, errno=None):
        super().__init__(message)
        self.errno = errno


class BadArgument(ThplabError, ValueError):
    """An argument that is not a kernel object at all: a protection string, a size, a node..."""


class Segfault(ThplabError):
    """An access the kernel would answer with ``SIGSEGV`` (``errno`` ``EFAULT`` for a syscall)."""

    def __init__(self, message, errno=None):
        super().__init__(message)
        self.errno = errno


class NoSuchProcess(ThplabError, LookupError):
    """No live process has this pid."""


class BadPage(ThplabError, ValueError):
    """A page-frame number that is out of range or in the wrong state for the call."""


class OutOfMemory(ThplabError, MemoryError):
    """The simulated machine has no free page of the order asked for."""


class KernelFunctionRemoved(ThplabError, AttributeError):
    """The kernel at this series level has no such function."""


class VMBug(ThplabError):
    """A ``VM_BUG_ON()`` fired: the model reached a state the kernel forbids."""


class InvariantViolation(ThplabError, AssertionError):
    """An accounting identity or consistency check failed."""


def is_int(value):
    """Whether ``value`` is an integer argument: ``int`` or a numpy integer, not a ``bool``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def as_int(value, what, error=None, **details):
    """``value`` as a Python int, or ``error`` (default :class:`BadArgument`) saying why not.

    Accepts ``int`` and numpy integers.  Refuses ``bool`` (an ``int``
    subclass, so ``exit(True)`` would otherwise mean pid 1), floats (``1.9``
    must not silently become page 1), strings and None.  ``details`` go to
    the error (``errno=`` for :class:`BadAddress`).
    """
    if not is_int(value):
        raise (error or BadArgument)(f"{what} must be an integer, got {value!r} "
                                     f"({type(value).__name__})", **details)
    return int(value)
