"""Probes of the running kernel: /proc and /sys, read and never written.

* ``/sys/kernel/mm/transparent_hugepage/*`` -- :func:`read_thp_settings`
* ``/proc/vmstat`` -- :func:`read_vmstat`
* ``/proc/<pid>/smaps`` -- :func:`read_smaps`
* ``/proc/<pid>/pagemap`` -- :func:`read_pagemap`
* ``/proc/kpageflags``, ``/proc/kpagecount`` -- :func:`read_kpageflags`,
  :func:`read_kpagecount`
* ``/proc/config.gz`` -- :func:`read_kernel_config`

``THPLAB_LIVE=recorded`` in the environment (:func:`recorded_only`) makes
:func:`thp_unavailable_reason` say so, and the lessons show the recorded run
instead of this kernel: the course website is built that way, so that its
pages never pass the build machine's kernel off as the reader's.

Every probe returns a dataclass with ``available`` and ``reason`` instead of
raising when the file is missing, unreadable or malformed (not Linux, THP
compiled out, not root); :func:`thp_unavailable_reason` sums them up for the
experiments. The layouts and parsers are in :mod:`thplab.live.formats`.

What ``/proc/kpagecount`` reports (Documentation/admin-guide/mm/pagemap.rst,
fs/proc/page.c): the number of times the page is mapped. For a THP subpage
that is the kernel's idea of ``page_mapcount()`` at the time: v3.16 read the
raw ``_mapcount`` + 1 of that ``struct page`` (for a tail: its GUP pin count),
v4.5 added the compound (PMD) mapcount, and v6.x reports
``folio_precise_page_mapcount()`` (entire mapcount + the page's own PTE
mapcount) with ``CONFIG_PAGE_MAPCOUNT``, or the folio's average mapcount
with the newer, experimental ``CONFIG_NO_PAGE_MAPCOUNT``.
"""

import gzip
import mmap
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadArgument
from ..params import HPAGE_PMD_NR
from .formats import (decode_pagemap, parse_kernel_config, parse_smaps, parse_sysfs_choice,
                      parse_vmstat, thp_counters)

__all__ = [
    "PROC", "SYS_THP", "PAGE_SIZE", "HPAGE_PMD_NR", "HPAGE_PMD_SIZE",
    "ThpSettings", "Vmstat", "SmapsRange", "Pagemap", "KpageValues", "KernelConfig",
    "read_thp_settings", "read_vmstat", "read_smaps", "read_pagemap",
    "read_kpageflags", "read_kpagecount", "read_kernel_config", "thp_unavailable_reason",
    "recorded_only",
]

#: Root of procfs. Module attributes, read at call time, so that tests can
#: point the probes at sample files (set them here, on ``thplab.live.probes``).
PROC = "/proc"
#: THP sysfs directory (Documentation/admin-guide/mm/transhuge.rst).
SYS_THP = "/sys/kernel/mm/transparent_hugepage"

#: This machine's page size (the experiments need 4 KiB pages and 2 MiB THPs).
PAGE_SIZE = mmap.PAGESIZE
#: The size of a PMD-mapped THP the experiments expect on this machine.
HPAGE_PMD_SIZE = HPAGE_PMD_NR * PAGE_SIZE


# --------------------------------------------------------------------------
# Reading files: fresh, unbuffered, and failures turned into reasons.


def _read_bytes(path):
    """Read a whole (proc or sysfs) file with unbuffered ``os.read`` calls."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_text(path):
    return _read_bytes(path).decode("utf-8", "replace")


def _pread_full(fd, size, offset):
    """``pread`` until `size` bytes or end of file (proc files may return short reads)."""
    parts = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _why(path, exc):
    """One line saying why `path` could not be used."""
    if isinstance(exc, FileNotFoundError):
        return f"{path} does not exist on this kernel"
    if isinstance(exc, PermissionError):
        return f"{path}: permission denied (needs root, CAP_SYS_ADMIN)"
    return f"{path}: {exc}"


def _not_linux():
    """Why no probe can work here, or ``""`` on Linux."""
    if sys.platform.startswith("linux"):
        return ""
    return f"not Linux (sys.platform is {sys.platform!r})"



# --------------------------------------------------------------------------
# Probes.


@dataclass
class ThpSettings:
    """``/sys/kernel/mm/transparent_hugepage`` and the process's own THP switch.

    Attributes
    ----------
    enabled, defrag : str or None
        The ``[bracketed]`` choice of ``enabled`` / ``defrag``.
    hpage_pmd_size : int or None
        Bytes in a PMD-sized THP (2097152 on x86-64).
    use_zero_page : bool or None
        Whether a read fault maps the huge zero page.
    pmd_size_enabled : str or None
        ``hugepages-<size>kB/enabled`` for the PMD size (multi-size THP
        controls, v6.8+); ``"inherit"`` follows ``enabled``; ``None`` on
        older kernels.
    process_thp_enabled : bool or None
        ``THP_enabled`` of ``/proc/self/status`` (``prctl(PR_SET_THP_DISABLE)``).
    """

    available: bool
    reason: str = ""
    enabled: str | None = None
    defrag: str | None = None
    hpage_pmd_size: int | None = None
    use_zero_page: bool | None = None
    pmd_size_enabled: str | None = None
    process_thp_enabled: bool | None = None

    @property
    def madvise_thp_usable(self):
        """Whether ``madvise(MADV_HUGEPAGE)`` + a write fault can allocate a PMD-sized THP."""
        return not self.unusable_reason

    @property
    def unusable_reason(self):
        """Why :attr:`madvise_thp_usable` is False, or ``""``."""
        if not self.available:
            return self.reason
        if self.enabled == "never":
            return f"THP disabled: {SYS_THP}/enabled is [never]"
        if self.pmd_size_enabled == "never":
            return (f"PMD-sized THP disabled: hugepages-{self.hpage_pmd_size // 1024}kB/enabled "
                    "is [never]")
        if self.process_thp_enabled is False:
            return "THP disabled for this process (prctl(PR_SET_THP_DISABLE); THP_enabled: 0)"
        if self.hpage_pmd_size != HPAGE_PMD_SIZE:
            return (f"hpage_pmd_size is {self.hpage_pmd_size}, the experiments expect "
                    f"{HPAGE_PMD_NR} x {PAGE_SIZE} bytes")
        return ""


def read_thp_settings():
    """Read the THP sysfs controls; see :class:`ThpSettings`."""
    if reason := _not_linux():
        return ThpSettings(False, reason)
    values = {}
    for name, parse in (("enabled", parse_sysfs_choice), ("defrag", parse_sysfs_choice),
                        ("hpage_pmd_size", int), ("use_zero_page", lambda text: bool(int(text)))):
        path = f"{SYS_THP}/{name}"
        try:
            values[name] = parse(_read_text(path))
        except (OSError, ValueError) as exc:
            return ThpSettings(False, _why(path, exc))
    settings = ThpSettings(True, **values)
    per_size = f"{SYS_THP}/hugepages-{settings.hpage_pmd_size // 1024}kB/enabled"
    try:
        settings.pmd_size_enabled = parse_sysfs_choice(_read_text(per_size))
    except (OSError, ValueError):
        settings.pmd_size_enabled = None
    try:
        status = _read_text(f"{PROC}/self/status")
    except OSError:
        status = ""
    if found := re.search(r"^THP_enabled:\s*(\d)", status, flags=re.MULTILINE):
        settings.process_thp_enabled = found.group(1) == "1"
    return settings


@dataclass
class Vmstat:
    """All of ``/proc/vmstat`` (system-wide counters: other processes add to them)."""

    available: bool
    reason: str = ""
    counters: dict = field(default_factory=dict)

    def thp(self):
        """The THP entries; see :func:`thp_counters`."""
        return thp_counters(self.counters)


def read_vmstat():
    """Read ``/proc/vmstat``; see :class:`Vmstat`."""
    path = f"{PROC}/vmstat"
    if reason := _not_linux():
        return Vmstat(False, reason)
    try:
        counters = parse_vmstat(_read_text(path))
    except OSError as exc:
        return Vmstat(False, _why(path, exc))
    if not counters:
        return Vmstat(False, f"{path} has no 'name value' lines")
    return Vmstat(True, counters=counters)


@dataclass
class SmapsRange:
    """The VMAs of ``/proc/<pid>/smaps`` that overlap ``[start, end)``.

    The sums cover whole VMAs (smaps has no finer grain). ``AnonHugePages``
    counts only PMD-mapped THPs: a PTE-mapped THP shows as plain ``Rss``.
    """

    available: bool
    reason: str = ""
    start: int = 0
    end: int = 0
    vmas: list = field(default_factory=list)

    def _sum(self, name):
        return sum(vma.fields.get(name, 0) for vma in self.vmas)

    @property
    def nr_vmas(self):
        return len(self.vmas)

    @property
    def anon_huge_kb(self):
        return self._sum("AnonHugePages")

    @property
    def rss_kb(self):
        return self._sum("Rss")

    @property
    def anonymous_kb(self):
        return self._sum("Anonymous")

    def summary(self):
        """``{"nr_vmas", "AnonHugePages", "Rss", "Anonymous"}`` (kB), JSON-ready."""
        return {"nr_vmas": self.nr_vmas, "AnonHugePages": self.anon_huge_kb,
                "Rss": self.rss_kb, "Anonymous": self.anonymous_kb}


def read_smaps(start, length, pid="self"):
    """Read the smaps figures of the VMAs overlapping ``[start, start + length)``."""
    path = f"{PROC}/{pid}/smaps"
    end = start + length
    if reason := _not_linux():
        return SmapsRange(False, reason, start, end)
    try:
        vmas = parse_smaps(_read_text(path))
    except OSError as exc:
        return SmapsRange(False, _why(path, exc), start, end)
    return SmapsRange(True, "", start, end,
                      [vma for vma in vmas if vma.start < end and vma.end > start])


@dataclass
class Pagemap:
    """Decoded ``/proc/<pid>/pagemap`` entries for consecutive virtual pages.

    ``entries`` is :func:`decode_pagemap`'s dict. Without CAP_SYS_ADMIN the
    kernel (v4.2+) zeroes the PFN field: then ``pfns_visible`` is False,
    every ``pfn`` is -1 and ``reason`` says so, although presence and the
    other bits are still valid.
    """

    available: bool
    reason: str = ""
    start: int = 0
    entries: dict = field(default_factory=dict)
    pfns_visible: bool = False

    def __getattr__(self, name):
        try:
            return self.__dict__["entries"][name]
        except KeyError:
            raise AttributeError(name) from None


def read_pagemap(start, length, pid="self"):
    """Read pagemap entries for ``[start, start + length)`` with one ``pread``.

    Parameters
    ----------
    start, length : int
        Page-aligned virtual address and byte count.
    pid : int or str
        ``"self"`` or a pid (reading another process needs ptrace rights).

    Returns
    -------
    Pagemap
    """
    if start % PAGE_SIZE or length % PAGE_SIZE:
        raise ValueError(f"start {start:#x} and length {length:#x} must be page-aligned")
    path = f"{PROC}/{pid}/pagemap"
    if reason := _not_linux():
        return Pagemap(False, reason, start)
    nr_pages = length // PAGE_SIZE
    try:
        # A fresh descriptor and pread(): a buffered file object would serve
        # entries cached before the mappings changed.
        fd = os.open(path, os.O_RDONLY)
        try:
            data = _pread_full(fd, 8 * nr_pages, 8 * (start // PAGE_SIZE))
        finally:
            os.close(fd)
    except OSError as exc:
        return Pagemap(False, _why(path, exc), start)
    if len(data) != 8 * nr_pages:
        return Pagemap(False, f"{path}: short read ({len(data)} of {8 * nr_pages} bytes)", start)
    entries = decode_pagemap(data)
    present = entries["present"]
    visible = bool(present.any() and (entries["pfn"][present] != 0).any())
    reason = ""
    if present.any() and not visible:
        entries["pfn"] = np.full_like(entries["pfn"], -1)
        reason = f"{path}: PFNs read as 0 (hidden without CAP_SYS_ADMIN since v4.2)"
    return Pagemap(True, reason, start, entries, visible)


@dataclass
class KpageValues:
    """Values of ``/proc/kpageflags`` or ``/proc/kpagecount`` for some PFNs.

    ``values[i]`` belongs to ``pfns[i]``; entries for negative PFNs (unmapped
    pages in :class:`Pagemap`) are 0.
    """

    available: bool
    reason: str = ""
    pfns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))


def _read_kpage(name, pfns):
    path = f"{PROC}/{name}"
    pfns = np.asarray(pfns, dtype=np.int64).reshape(-1)
    if reason := _not_linux():
        return KpageValues(False, reason, pfns)
    wanted = np.unique(pfns[pfns >= 0])
    values = np.zeros(wanted.size, dtype=np.uint64)
    # One pread per run of consecutive PFNs: a THP is a single run of 512.
    run_starts = np.flatnonzero(np.diff(wanted, prepend=-2) != 1)
    run_ends = np.append(run_starts[1:], wanted.size)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            for lo, hi in zip(run_starts, run_ends):
                data = _pread_full(fd, 8 * int(hi - lo), 8 * int(wanted[lo]))
                # A short read means PFNs past the end of memory: they stay 0.
                values[lo:lo + len(data) // 8] = np.frombuffer(data, dtype="<u8")
        finally:
            os.close(fd)
    except OSError as exc:
        return KpageValues(False, _why(path, exc), pfns)
    out = np.zeros(pfns.shape, dtype=np.uint64)
    mapped = pfns >= 0
    out[mapped] = values[np.searchsorted(wanted, pfns[mapped])]
    return KpageValues(True, "", pfns, out)


def read_kpageflags(pfns):
    """Read ``/proc/kpageflags`` for `pfns` (decode with :func:`kpf_test`)."""
    return _read_kpage("kpageflags", pfns)


def read_kpagecount(pfns):
    """Read ``/proc/kpagecount`` for `pfns`: each page's mapcount (see the module docstring)."""
    return _read_kpage("kpagecount", pfns)


@dataclass
class KernelConfig:
    """Selected options of the running kernel's ``/proc/config.gz``."""

    available: bool
    reason: str = ""
    options: dict = field(default_factory=dict)


def read_kernel_config(names=("CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_PAGE_MAPCOUNT",
                              "CONFIG_NO_PAGE_MAPCOUNT")):
    """Read `names` from ``/proc/config.gz`` (present with ``CONFIG_IKCONFIG_PROC``)."""
    path = f"{PROC}/config.gz"
    if reason := _not_linux():
        return KernelConfig(False, reason)
    try:
        text = gzip.decompress(_read_bytes(path)).decode("utf-8", "replace")
    except (OSError, EOFError) as exc:
        return KernelConfig(False, _why(path, exc))
    return KernelConfig(True, "", parse_kernel_config(text, names))


def recorded_only():
    """Whether ``THPLAB_LIVE=recorded`` asks for the recorded run instead of this kernel.

    Read at each call; unset or empty means probe this kernel. Any other value
    raises :class:`~thplab.errors.BadArgument`.
    """
    value = os.environ.get("THPLAB_LIVE", "")
    if value not in ("", "recorded"):
        raise BadArgument(f"THPLAB_LIVE={value!r}: the only value it takes is 'recorded' "
                         "(show the recorded run, not this kernel); unset it to probe this kernel")
    return value == "recorded"


def thp_unavailable_reason():
    """Why the experiments cannot run here, or ``""`` if they can."""
    if recorded_only():
        return "THPLAB_LIVE=recorded: the recorded run is shown, this kernel is not probed"
    settings = read_thp_settings()
    if not settings.madvise_thp_usable:
        return settings.unusable_reason
    for probe in (read_vmstat(), read_smaps(0, PAGE_SIZE)):
        if not probe.available:
            return probe.reason
    return ""
