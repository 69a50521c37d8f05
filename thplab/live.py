"""Probes of the real Linux kernel under the notebook, and experiments on it.

Everything the model simulates can also be watched on the kernel this machine
runs. This module reads, never writes:

* ``/sys/kernel/mm/transparent_hugepage/*`` -- :func:`read_thp_settings`
* ``/proc/vmstat`` -- :func:`read_vmstat`, :func:`thp_counters`
* ``/proc/<pid>/smaps`` -- :func:`read_smaps`
* ``/proc/<pid>/pagemap`` -- :func:`read_pagemap`
* ``/proc/kpageflags``, ``/proc/kpagecount`` -- :func:`read_kpageflags`,
  :func:`read_kpagecount`
* ``/proc/config.gz`` -- :func:`read_kernel_config`

Every probe returns a dataclass with ``available`` and ``reason`` instead of
raising when the file is missing, unreadable or malformed (not Linux, THP
compiled out, not root). The parsers and decoders underneath are pure
functions of text or bytes.

The experiments (:func:`run_experiment`, :func:`run_all`) fault a THP into a
child process and change its mapping while watching those files; see
:mod:`thplab._live_experiments`. :func:`compare` puts each observation next to
the model's prediction at series level 0 (the old kernel) and 10 (RFC v1).
:func:`load_recorded` returns a run recorded on a real machine, for when live
probing is unavailable; its ``source`` is ``"recorded"``.

``python -m thplab live`` (``thplab/__main__.py`` dispatches the ``live``
sub-command to :func:`main`) prints the comparison in a terminal.

What ``/proc/kpagecount`` reports (Documentation/admin-guide/mm/pagemap.rst,
fs/proc/page.c): the number of times the page is mapped. For a THP subpage
that is the kernel's idea of ``page_mapcount()`` at the time: v3.16 read the
raw ``_mapcount`` + 1 of that ``struct page`` (for a tail: its GUP pin count),
v4.5 added the compound (PMD) mapcount, and v6.x reports
``folio_precise_page_mapcount()`` (entire mapcount + the page's own PTE
mapcount) with ``CONFIG_PAGE_MAPCOUNT``, or the folio's average mapcount
with the newer, experimental ``CONFIG_NO_PAGE_MAPCOUNT``.
"""

import argparse
import dataclasses
import datetime
import gzip
import json
import mmap
import os
import platform
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .params import HPAGE_PMD_NR

__all__ = [
    "PROC", "SYS_THP", "PAGE_SIZE", "HPAGE_PMD_NR", "THP_EVENTS",
    "PM_PFRAME_MASK", "PM_SOFT_DIRTY", "PM_MMAP_EXCLUSIVE", "PM_UFFD_WP",
    "PM_FILE", "PM_SWAP", "PM_PRESENT", "KPF_NAMES",
    "parse_sysfs_choice", "parse_vmstat", "thp_counters", "vmstat_delta",
    "parse_smaps", "parse_kernel_config", "decode_pagemap",
    "kpageflags_names", "kpf_test",
    "ThpSettings", "Vmstat", "SmapsVma", "SmapsRange", "Pagemap",
    "KpageValues", "KernelConfig",
    "read_thp_settings", "read_vmstat", "read_smaps", "read_pagemap",
    "read_kpageflags", "read_kpagecount", "read_kernel_config",
    "thp_unavailable_reason",
    "EXPERIMENTS", "ExperimentResult", "LiveRun",
    "run_experiment", "run_all", "load_recorded", "save_run",
    "predict", "compare", "ComparisonRow", "EXPLANATIONS", "STEP_EXPLANATIONS",
    "format_run", "main",
]

#: Root of procfs. Module attributes, read at call time, so that tests can
#: point the probes at sample files.
PROC = "/proc"
#: THP sysfs directory (Documentation/admin-guide/mm/transhuge.rst).
SYS_THP = "/sys/kernel/mm/transparent_hugepage"
#: Where :func:`load_recorded` finds the shipped recording.
RECORDED_PATH = Path(__file__).with_name("data") / "live-recorded.json"

#: This machine's page size (the experiments need 4 KiB pages and 2 MiB THPs).
PAGE_SIZE = mmap.PAGESIZE

# /proc/pid/pagemap entry bits (fs/proc/task_mmu.c, pagemap.rst).
PM_PFRAME_BITS = 55
PM_PFRAME_MASK = (1 << PM_PFRAME_BITS) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56  # since v4.2
PM_UFFD_WP = 1 << 57  # since v5.13
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63
#: Swap entries: bits 0-4 swap type, 5-54 offset (``MAX_SWAPFILES_SHIFT``).
MAX_SWAPFILES_SHIFT = 5

# /proc/kpageflags bits: include/uapi/linux/kernel-page-flags.h (0-26) and the
# "kernel hacking assistances" of include/linux/kernel-page-flags.h (32-42).
KPF_LOCKED = 0
KPF_ERROR = 1
KPF_REFERENCED = 2
KPF_UPTODATE = 3
KPF_DIRTY = 4
KPF_LRU = 5
KPF_ACTIVE = 6
KPF_SLAB = 7
KPF_WRITEBACK = 8
KPF_RECLAIM = 9
KPF_BUDDY = 10
KPF_MMAP = 11
KPF_ANON = 12
KPF_SWAPCACHE = 13
KPF_SWAPBACKED = 14
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_UNEVICTABLE = 18
KPF_HWPOISON = 19
KPF_NOPAGE = 20
KPF_KSM = 21
KPF_THP = 22  # any subpage of a THP, PMD- or PTE-mapped, of any size
KPF_OFFLINE = 23
KPF_ZERO_PAGE = 24
KPF_IDLE = 25
KPF_PGTABLE = 26
KPF_RESERVED = 32
KPF_MLOCKED = 33
KPF_OWNER_2 = 34  # formerly KPF_MAPPEDTODISK
KPF_PRIVATE = 35
KPF_PRIVATE_2 = 36
KPF_OWNER_PRIVATE = 37
KPF_ARCH = 38
KPF_UNCACHED = 39
KPF_SOFTDIRTY = 40
KPF_ARCH_2 = 41
KPF_ARCH_3 = 42

#: Bit number -> kernel name, for :func:`kpageflags_names`.
KPF_NAMES = {value: name for name, value in globals().items() if name.startswith("KPF_")}
__all__ += list(KPF_NAMES.values())

#: The ``/proc/vmstat`` entries every THP experiment reports, moved or not, so
#: that "no split happened" is an explicit 0. ``thp_split`` is the pre-v4.5
#: name; ``thp_deferred_split_page`` exists since v4.6.
THP_EVENTS = (
    "thp_fault_alloc",
    "thp_fault_fallback",
    "thp_split",
    "thp_split_page",
    "thp_split_page_failed",
    "thp_deferred_split_page",
    "thp_split_pmd",
    "nr_anon_transparent_hugepages",
)

_SMAPS_HEADER = re.compile(
    r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+([0-9a-f]+)\s+(\S+)\s+(\d+)\s*(.*)$"
)
_SMAPS_FIELD = re.compile(r"^(\w+):\s+(\d+)(?:\s+kB)?\s*$")


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
# Pure parsers and decoders.


def parse_sysfs_choice(text):
    """Return the ``[bracketed]`` choice of a sysfs multiple-choice file.

    Parameters
    ----------
    text : str
        File content such as ``"always [madvise] never\\n"``.

    Returns
    -------
    str
        The selected word, e.g. ``"madvise"``.

    Raises
    ------
    ValueError
        If no word (or more than one) is bracketed.

    Examples
    --------
    >>> parse_sysfs_choice("always defer defer+madvise [madvise] never")
    'madvise'
    """
    chosen = re.findall(r"\[([^\]\s]+)\]", text)
    if len(chosen) != 1:
        raise ValueError(f"expected exactly one [bracketed] choice in {text.strip()!r}")
    return chosen[0]


def parse_vmstat(text):
    """Parse ``/proc/vmstat`` into ``{name: value}``.

    Lines that are not ``name integer`` are skipped: the kernel never writes
    them, and one odd line should not hide all the others.

    Examples
    --------
    >>> parse_vmstat("thp_fault_alloc 3\\nthp_split_pmd 1\\n")
    {'thp_fault_alloc': 3, 'thp_split_pmd': 1}
    """
    counters = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            counters[parts[0]] = int(parts[1])
    return counters


def thp_counters(counters):
    """Select the THP entries of a vmstat dict: ``thp_*`` and ``nr_anon_transparent_hugepages``."""
    return {
        name: value
        for name, value in counters.items()
        if name.startswith("thp_") or name == "nr_anon_transparent_hugepages"
    }


def vmstat_delta(before, after):
    """THP vmstat changes between two snapshots.

    Returns every entry of :data:`THP_EVENTS` that this kernel has (0 when it
    did not move) plus any other ``thp_*`` entry that moved.

    Examples
    --------
    >>> vmstat_delta({"thp_split_pmd": 4, "thp_swpout": 0}, {"thp_split_pmd": 5, "thp_swpout": 0})
    {'thp_split_pmd': 1}
    """
    before, after = thp_counters(before), thp_counters(after)
    delta = {}
    for name in after.keys() & before.keys():
        change = after[name] - before[name]
        if change or name in THP_EVENTS:
            delta[name] = change
    return dict(sorted(delta.items()))


@dataclass
class SmapsVma:
    """One VMA of ``/proc/<pid>/smaps`` (a ``struct vm_area_struct``).

    ``fields`` holds the numeric lines in kB (``Rss``, ``Anonymous``,
    ``AnonHugePages``, ...; ``THPeligible`` as 0/1); ``vmflags`` the
    ``VmFlags`` mnemonics (``hg`` = ``VM_HUGEPAGE``).
    """

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    pathname: str
    fields: dict = field(default_factory=dict)
    vmflags: tuple = ()


def parse_smaps(text):
    """Parse ``/proc/<pid>/smaps`` into a list of :class:`SmapsVma`.

    Unparseable lines are skipped, and field lines before the first VMA
    header are ignored.
    """
    vmas = []
    for line in text.splitlines():
        header = _SMAPS_HEADER.match(line)
        if header:
            start, end, perms, offset, dev, inode, path = header.groups()
            vmas.append(SmapsVma(int(start, 16), int(end, 16), perms, int(offset, 16),
                                 dev, int(inode), path.strip()))
        elif vmas and line.startswith("VmFlags:"):
            vmas[-1].vmflags = tuple(line.split()[1:])
        elif vmas and (numeric := _SMAPS_FIELD.match(line)):
            vmas[-1].fields[numeric.group(1)] = int(numeric.group(2))
    return vmas


def parse_kernel_config(text, names):
    """Look up ``CONFIG_*`` options in the text of a kernel ``.config``.

    Returns ``{name: value}`` with ``"y"``, ``"m"``, a string, or ``None``
    for unset options.

    Examples
    --------
    >>> parse_kernel_config("CONFIG_PAGE_MAPCOUNT=y\\n# CONFIG_NO_PAGE_MAPCOUNT is not set\\n",
    ...                     ["CONFIG_PAGE_MAPCOUNT", "CONFIG_NO_PAGE_MAPCOUNT"])
    {'CONFIG_PAGE_MAPCOUNT': 'y', 'CONFIG_NO_PAGE_MAPCOUNT': None}
    """
    values = dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, flags=re.MULTILINE))
    return {name: values.get(name) for name in names}


def decode_pagemap(data):
    """Decode ``/proc/<pid>/pagemap`` entries, vectorised.

    Parameters
    ----------
    data : bytes or array_like of uint64
        Little-endian 64-bit entries, one per virtual page.

    Returns
    -------
    dict of numpy.ndarray
        ``raw``; booleans ``present``, ``swapped``, ``file_shared`` (bit 61:
        file page or shared anon), ``exclusive`` (bit 56,
        ``PM_MMAP_EXCLUSIVE``), ``soft_dirty`` (bit 55), ``uffd_wp`` (bit 57);
        int64 ``pfn`` (-1 where not present), ``swap_type`` and
        ``swap_offset`` (-1 where not swapped).

    Examples
    --------
    >>> e = decode_pagemap(np.array([PM_PRESENT | PM_MMAP_EXCLUSIVE | 0x1234, 0], dtype=np.uint64))
    >>> e["pfn"].tolist(), e["exclusive"].tolist()
    ([4660, -1], [True, False])
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(data, dtype="<u8").astype(np.uint64)
    else:
        raw = np.asarray(data, dtype=np.uint64)
    present = (raw & np.uint64(PM_PRESENT)) != 0
    swapped = (raw & np.uint64(PM_SWAP)) != 0
    frame = (raw & np.uint64(PM_PFRAME_MASK)).astype(np.int64)
    return {
        "raw": raw,
        "present": present,
        "swapped": swapped,
        "file_shared": (raw & np.uint64(PM_FILE)) != 0,
        "exclusive": (raw & np.uint64(PM_MMAP_EXCLUSIVE)) != 0,
        "soft_dirty": (raw & np.uint64(PM_SOFT_DIRTY)) != 0,
        "uffd_wp": (raw & np.uint64(PM_UFFD_WP)) != 0,
        "pfn": np.where(present, frame, -1),
        "swap_type": np.where(swapped, frame & ((1 << MAX_SWAPFILES_SHIFT) - 1), -1),
        "swap_offset": np.where(swapped, frame >> MAX_SWAPFILES_SHIFT, -1),
    }


def kpf_test(flags, bit):
    """Vectorised test of one ``KPF_*`` bit in ``/proc/kpageflags`` values.

    Examples
    --------
    >>> kpf_test(np.array([1 << KPF_THP | 1 << KPF_COMPOUND_HEAD, 0], dtype=np.uint64), KPF_THP)
    array([ True, False])
    """
    return (np.asarray(flags, dtype=np.uint64) >> np.uint64(bit)) & np.uint64(1) == 1


def kpageflags_names(flags):
    """Kernel names of the bits set in one ``/proc/kpageflags`` value.

    Unknown bits are shown as ``"bit<N>"``.

    Examples
    --------
    >>> kpageflags_names((1 << KPF_ANON) | (1 << KPF_COMPOUND_TAIL) | (1 << KPF_THP))
    ['KPF_ANON', 'KPF_COMPOUND_TAIL', 'KPF_THP']
    """
    flags = int(flags)
    return [KPF_NAMES.get(bit, f"bit{bit}") for bit in range(64) if flags >> bit & 1]


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
        if self.hpage_pmd_size != HPAGE_PMD_NR * PAGE_SIZE:
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


def thp_unavailable_reason():
    """Why the experiments cannot run here, or ``""`` if they can."""
    settings = read_thp_settings()
    if not settings.madvise_thp_usable:
        return settings.unusable_reason
    for probe in (read_vmstat(), read_smaps(0, PAGE_SIZE)):
        if not probe.available:
            return probe.reason
    return ""


# --------------------------------------------------------------------------
# Experiments: run in a child process, results as JSON-ready dataclasses.

#: Experiment name -> one-line description. The steps of each are in
#: :mod:`thplab._live_experiments`.
EXPERIMENTS = {
    "fault": "write fault on a MADV_HUGEPAGE range allocates a THP",
    "partial_munmap": "munmap() one 4 KiB subpage in the middle of a THP",
    "mprotect": "mprotect(PROT_READ) 64 KiB in the middle of a THP",
    "fork": "fork() shares the THP; the child's write breaks COW",
    "pin": "a vmsplice() page reference blocks split_huge_page()",
    "full_munmap": "munmap() the whole THP",
}


@dataclass
class ExperimentResult:
    """What one experiment observed on the real kernel.

    Attributes
    ----------
    name : str
        Key of :data:`EXPERIMENTS`.
    status : str
        ``"ok"``, ``"unavailable"`` (with ``reason``) or ``"failed"``
        (``reason`` has the error).
    kernel, date : str
        ``uname -r`` and the UTC time of the run (ISO 8601).
    steps : list of dict
        Per operation: ``name``, ``op`` (the syscalls), ``vmstat_delta``
        (see :func:`vmstat_delta`), and ``views`` (``"self"``, and
        ``"child"`` after a fork), each with ``smaps`` figures, page counts
        over the 512 subpages, and per-subpage ``samples``.
    notes : list of str
    source : str
        ``"live"``, or ``"recorded"`` when loaded by :func:`load_recorded`.
    """

    name: str
    status: str
    reason: str = ""
    kernel: str = ""
    date: str = ""
    steps: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    source: str = "live"

    def step(self, name):
        """The step called `name` (``KeyError`` if absent)."""
        for step in self.steps:
            if step["name"] == name:
                return step
        raise KeyError(f"{self.name} has no step {name!r}")

    @classmethod
    def from_dict(cls, data):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class LiveRun:
    """A set of experiment results, with the machine they ran on."""

    source: str
    kernel: str
    date: str
    settings: dict
    experiments: dict

    @classmethod
    def from_dict(cls, data, source=None):
        source = source or data.get("source", "live")
        experiments = {name: ExperimentResult.from_dict({**data["experiments"][name],
                                                         "source": source})
                       for name in EXPERIMENTS if name in data["experiments"]}
        return cls(source, data["kernel"], data["date"], data["settings"], experiments)

    def to_dict(self):
        return dataclasses.asdict(self)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _child_env():
    """Environment for the experiment child: this ``thplab`` first on ``sys.path``."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def run_experiment(name, timeout=10.0):
    """Run one experiment in a child process and return its result.

    The child (``python -m thplab._live_experiments NAME``) maps 4 MiB, so a
    crash, a hang (killed after `timeout` seconds) or a leak cannot hurt the
    caller, typically a notebook kernel.

    Returns
    -------
    ExperimentResult
        ``status`` is ``"unavailable"`` when the machine cannot run it (not
        Linux, THP off, probes unreadable) and ``"failed"`` when the child
        crashed or timed out.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    header = {"name": name, "kernel": platform.release(), "date": _now()}
    if reason := thp_unavailable_reason():
        return ExperimentResult(status="unavailable", reason=reason, **header)
    command = [sys.executable, "-m", "thplab._live_experiments", name]
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                               env=_child_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ExperimentResult(status="failed", reason=f"timed out after {timeout} s", **header)
    if child.returncode != 0:
        tail = (child.stderr.strip().splitlines() or [""])[-1]
        return ExperimentResult(status="failed",
                                reason=f"child exited with {child.returncode}: {tail}", **header)
    return ExperimentResult.from_dict(json.loads(child.stdout))


def run_all(names=None, timeout=10.0):
    """Run experiments (all of :data:`EXPERIMENTS` by default) and return a :class:`LiveRun`."""
    settings = read_thp_settings()
    results = {name: run_experiment(name, timeout) for name in (names or EXPERIMENTS)}
    return LiveRun("live", platform.release(), _now(), dataclasses.asdict(settings), results)


def save_run(run, path):
    """Write `run` as JSON (the format of :func:`load_recorded`)."""
    Path(path).write_text(json.dumps(run.to_dict(), indent=1, sort_keys=True) + "\n")


def load_recorded(path=None):
    """Load the run recorded on a real machine and shipped with thplab.

    Its ``source`` (and each result's) is ``"recorded"``: show it labelled
    as such, with its ``kernel`` and ``date``, never as a live reading.
    """
    data = json.loads(Path(path or RECORDED_PATH).read_text())
    return LiveRun.from_dict(data, source="recorded")


# --------------------------------------------------------------------------
# The real kernel next to the model.


def predict(name, level):
    """What the model predicts for experiment `name` at series `level`.

    Runs the experiment's scenario (:mod:`thplab._live_experiments`) on
    ``Machine.boot(nr_pages=4096, patches=level, seed=0)``.

    Returns
    -------
    dict
        ``{step name: {quantity: value}}``, the quantities :func:`compare` uses.
    """
    from ._live_experiments import model_steps

    return model_steps(name, level)


_COW = ("Since v5.8 (3917c80280c9, 'thp: change CoW semantics for anon-THP') a write to a "
        "shared PMD-mapped THP splits that PMD and copies one 4 KiB page; v3.16 and RFC v1 "
        "allocated a new THP and copied all 2 MiB (do_huge_pmd_wp_page()).")

#: Why today's kernel differs from the model, by quantity (all ``kpagecount[i]``
#: share ``"kpagecount"``).
EXPLANATIONS = {
    "thp_split": "v3.16's only split event, once per compound page split; RFC patch 05 "
                 "replaced it with thp_split_page, thp_split_page_failed and thp_split_pmd.",
    "thp_split_pmd": "Counted since RFC patch 05, once per PMD split into a page table; the "
                     "old kernel had no PMD-only split to count.",
    "thp_split_page": "RFC patch 05's name for a compound page split; since v4.5 a partially "
                      "unmapped THP is split later, by the deferred_split shrinker "
                      "(asynchronously, under memory pressure) or by a caller such as "
                      "madvise(MADV_COLD).",
    "thp_split_page_failed": "split_huge_page() can fail only since the redesign (RFC patch 06: "
                             "-EBUSY when page_count exceeds the mappings plus the caller's "
                             "reference); v3.16's split never failed, it moved tail pins.",
    "thp_deferred_split_page": "The deferred split queue came with the merged redesign "
                               "(v4.5, deferred_split_huge_page()), this counter with v4.6; "
                               "v3.16 split at once and RFC v1 left the page PTE-mapped.",
    "nr_anon_transparent_hugepages": "Since v4.5 this counts PMD-mapped THPs (-1 when the last "
                                     "PMD mapping goes, split or not). In v3.16 it dropped when "
                                     "the head's _mapcount reached -1 or the page was split; RFC "
                                     "v1 kept that rule, so there the PTE of subpage 0 going "
                                     "away dropped it too, and a later split once more.",
    "page compound": "v3.16 split the whole compound page here (split_huge_page_pmd() -> "
                     "split_huge_page()); since RFC patch 04 (merged in v4.5) only the PMD is "
                     "split and the compound page stays whole.",
    "kpagecount": "kpagecount reads page_mapcount(). In v3.16 a tail's _mapcount counted GUP "
                  "pins, and in RFC v1 a PMD mapping counted only in the head's _mapcount; "
                  "v4.5 added the compound (PMD) mapcount to every subpage, and v6.x reports "
                  "folio_precise_page_mapcount() (the folio average with "
                  "CONFIG_NO_PAGE_MAPCOUNT).",
}

#: Why today's kernel differs from the model after one (experiment, step),
#: whatever the quantity.
STEP_EXPLANATIONS = {
    ("fork", "child_write"): _COW,
    ("fork", "child_exit"): _COW,
}


@dataclass
class ComparisonRow:
    """One quantity after one step: the real kernel next to the model.

    ``observed`` or ``predicted[level]`` is ``None`` where that kernel has no
    such quantity (e.g. a vmstat event it does not count); ``verdict[level]``
    is then ``"n/a"``, else ``"match"`` or ``"differs"``. ``explanations``
    says why today's kernel differs, where a verdict is not ``"match"``.
    """

    experiment: str
    step: str
    quantity: str
    observed: object
    predicted: dict
    verdict: dict
    explanations: list = field(default_factory=list)


def _explain(experiment, step, quantity):
    key = "kpagecount" if quantity.startswith("kpagecount[") else quantity
    texts = [STEP_EXPLANATIONS.get((experiment, step)), EXPLANATIONS.get(key)]
    return [text for text in texts if text]


def compare(result, levels=(0, 10)):
    """Put each observed quantity of `result` next to the model's predictions.

    Parameters
    ----------
    result : ExperimentResult
        A successful experiment (live or recorded).
    levels : sequence of int
        Series levels to predict with (0: old kernel, 10: RFC v1).

    Returns
    -------
    list of ComparisonRow
        Per step, in the order of ``thplab._live_experiments.QUANTITIES``. A
        vmstat event appears only if it moved somewhere (real kernel or model).
    """
    from ._live_experiments import QUANTITIES, observed_quantities

    predictions = {level: predict(result.name, level) for level in levels}
    rows = []
    for step in result.steps:
        observed = observed_quantities(step)
        predicted = {level: predictions[level].get(step["name"], {}) for level in levels}
        for quantity in QUANTITIES:
            values = {level: predicted[level].get(quantity) for level in levels}
            real = observed.get(quantity)
            if quantity in THP_EVENTS and not real and not any(values.values()):
                continue
            if real is None and all(value is None for value in values.values()):
                continue
            verdict = {level: "n/a" if real is None or value is None
                       else "match" if real == value else "differs"
                       for level, value in values.items()}
            explain = ([] if all(v == "match" for v in verdict.values())
                       else _explain(result.name, step["name"], quantity))
            rows.append(ComparisonRow(result.name, step["name"], quantity, real, values,
                                      verdict, explain))
    return rows


# --------------------------------------------------------------------------
# Terminal output.

LEVEL_NAMES = {0: "v3.16", 10: "RFC v1"}


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def format_run(run, levels=(0, 10), width=100):
    """The comparison of a :class:`LiveRun` with the model, as terminal text.

    Every experiment starts with the same fault, shown once (under ``fault``).
    After the first step a row appears only if its quantity changed (real or
    model) or, for a vmstat event, moved. Footnotes give the explanations of
    :func:`compare`; each note of the experiments is printed once.
    """
    label = ("LIVE, this machine" if run.source == "live"
             else "RECORDED on another machine, not a live reading")
    settings = run.settings
    lines = [f"thplab live: Linux {run.kernel}, {run.date} ({label})"]
    if settings.get("available"):
        lines.append(f"THP: enabled=[{settings['enabled']}] defrag=[{settings['defrag']}] "
                     f"hpage_pmd_size={settings['hpage_pmd_size']} "
                     f"use_zero_page={int(settings['use_zero_page'])}")
    lines.append("Model: Machine.boot(nr_pages=4096, patches=LEVEL, seed=0). Rows show what moved "
                 "or changed; '-' means that kernel has no such quantity.")
    header = f"  {'step':<15}{'quantity':<33}{'real':>6}" + "".join(
        f"  {f'L{level} ' + LEVEL_NAMES.get(level, ''):<20}" for level in levels)
    printed_notes = set()
    for name, result in run.experiments.items():
        lines += ["", f"== {name}: {EXPERIMENTS[name]}"]
        if result.status != "ok":
            lines.append(f"  {result.status}: {result.reason}")
            continue
        lines.append(header.rstrip())
        footnotes, last_step, previous = [], None, {}
        for row in compare(result, levels):
            values = (row.observed, [row.predicted[level] for level in levels])
            unchanged = row.step != "fault" and previous.get(row.quantity) == values
            previous[row.quantity] = values
            if (row.step == "fault" and name != "fault") or (
                    unchanged and row.quantity not in THP_EVENTS):
                continue
            for text in row.explanations:
                if text not in footnotes:
                    footnotes.append(text)
            refs = "".join(f" [{footnotes.index(text) + 1}]" for text in row.explanations)
            step = row.step if row.step != last_step else ""
            last_step = row.step
            cells = "".join(f"  {_cell(row.predicted[level]) + ' ' + row.verdict[level]:<20}"
                            for level in levels)
            lines.append(f"  {step:<15}{row.quantity:<33}{_cell(row.observed):>6}{cells}{refs}"
                         .rstrip())
        for number, text in enumerate(footnotes, 1):
            lines += textwrap.wrap(text, width, initial_indent=f"  [{number}] ",
                                   subsequent_indent="      ")
        for note in result.notes:
            if note not in printed_notes:
                printed_notes.add(note)
                lines += textwrap.wrap(note, width, initial_indent="  note: ",
                                       subsequent_indent="        ")
    return "\n".join(lines)


def main(argv=None):
    """``python -m thplab live``: run the experiments and print them next to the model.

    Without live probing (not Linux, THP off, not root) it prints the
    recorded run instead, labelled as such. Returns the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m thplab live",
        description="Run THP experiments on this machine's kernel and compare them with the "
                    "thplab model at series level 0 (old kernel) and 10 (RFC v1).")
    parser.add_argument("--recorded", action="store_true",
                        help="show the run recorded with thplab instead of probing this kernel")
    parser.add_argument("--experiment", action="append", choices=list(EXPERIMENTS),
                        help="run only this experiment (repeatable)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds each experiment may take (default 10)")
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 10], metavar="LEVEL",
                        help="series levels of the model to compare with (default: 0 10)")
    parser.add_argument("--json", action="store_true", help="print the run as JSON")
    parser.add_argument("--record", metavar="PATH", help="also save the live run as JSON to PATH")
    args = parser.parse_args(argv)

    reason = "" if args.recorded else thp_unavailable_reason()
    if args.recorded or reason:
        if reason:
            print(f"live probing unavailable: {reason}", file=sys.stderr)
        run = load_recorded()
        if args.experiment:
            run.experiments = {name: run.experiments[name] for name in args.experiment}
    else:
        run = run_all(args.experiment, args.timeout)
        if args.record:
            save_run(run, args.record)
    print(json.dumps(run.to_dict(), indent=1) if args.json else format_run(run, args.levels))
    return int(any(result.status == "failed" for result in run.experiments.values()))


if __name__ == "__main__":
    sys.exit(main())
