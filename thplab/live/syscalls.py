"""The libc calls the live experiments (and ``benchmarks/bench_vs_kernel.py``) make.

Through ``ctypes``, so that thplab needs nothing beyond the standard library
and numpy. Only the experiment children and the benchmark call into libc;
importing this module does not load it.
"""

import ctypes
import ctypes.util
import os
import signal
import sys

__all__ = [
    "PROT_READ", "PROT_WRITE", "MAP_PRIVATE", "MAP_ANONYMOUS",
    "MADV_HUGEPAGE", "MADV_NOHUGEPAGE", "MADV_COLD", "PR_SET_PDEATHSIG",
    "Libc", "die_with_parent",
]

# include/uapi/asm-generic/mman-common.h, mman.h
PROT_READ, PROT_WRITE = 0x1, 0x2
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
#: Deactivates the range (v5.4+). On a range covering only part of a THP it
#: calls ``split_folio()`` (``madvise_cold_or_pageout_pte_range()``): the one
#: way to ask for ``split_huge_page()`` without writing to /proc or /sys.
MADV_COLD = 20
#: include/uapi/linux/prctl.h: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


class Libc:
    """The libc calls the experiments use; each raises ``OSError`` on failure."""

    def __init__(self):
        self._libc = libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        for function, argtypes in ((libc.munmap, []), (libc.mprotect, [ctypes.c_int]),
                                   (libc.madvise, [ctypes.c_int])):
            function.restype = ctypes.c_int
            function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, *argtypes]
        libc.vmsplice.restype = ctypes.c_ssize_t
        libc.vmsplice.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
        libc.prctl.restype = ctypes.c_int
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]

    @staticmethod
    def _check(name, ret, failed=-1):
        if ret == failed:
            error = ctypes.get_errno()
            raise OSError(error, f"{name}: {os.strerror(error)}")
        return ret

    def mmap(self, hint, length, prot):
        """Anonymous private mapping, at `hint` if that is free; returns its address."""
        ret = self._libc.mmap(hint, length, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        return self._check("mmap", ret, failed=ctypes.c_void_p(-1).value)

    def munmap(self, addr, length):
        return self._check("munmap", self._libc.munmap(addr, length))

    def mprotect(self, addr, length, prot):
        return self._check("mprotect", self._libc.mprotect(addr, length, prot))

    def madvise(self, addr, length, advice):
        return self._check("madvise", self._libc.madvise(addr, length, advice))

    def vmsplice(self, fd, addr, length):
        """``vmsplice(fd, {addr, length}, 1, 0)``; returns the bytes spliced."""
        iovec = (ctypes.c_size_t * 2)(addr, length)
        return self._check("vmsplice", self._libc.vmsplice(fd, ctypes.addressof(iovec), 1, 0))

    def set_pdeathsig(self, signum):
        """``prctl(PR_SET_PDEATHSIG, signum)``: get `signum` when the parent goes away."""
        return self._check("prctl", self._libc.prctl(PR_SET_PDEATHSIG, signum))


def die_with_parent(parent_pid):
    """Have the kernel SIGKILL this process as soon as `parent_pid`, its parent, is gone.

    A no-op off Linux (no experiment child is started there). The parent may
    already have died between starting this process and the ``prctl()``:
    then the signal will never come, and our parent is no longer
    `parent_pid` (we were handed to init or a subreaper), so this process
    kills itself at once.

    The signal follows the parent *thread* that started this process, which
    is the thread blocked waiting for it (:func:`thplab.live.run_experiment`).
    """
    if not sys.platform.startswith("linux"):
        return
    Libc().set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
