"""What the kernel's /proc and /sys files say: their layouts and pure parsers.

Nothing here opens a file (:mod:`thplab.live.probes` does): every function
takes text or bytes, so that the tests can feed it samples and synthetic
entries.

* ``/proc/<pid>/pagemap`` entries: the ``PM_*`` bits, :func:`decode_pagemap`
* ``/proc/kpageflags`` values: the ``KPF_*`` bit numbers, :func:`kpf_test`,
  :func:`kpageflags_names`
* ``/proc/vmstat``: :func:`parse_vmstat`, :func:`thp_counters`,
  :func:`vmstat_delta`, and :data:`THP_EVENTS`, the THP entries every
  experiment reports
* ``/proc/<pid>/smaps``: :func:`parse_smaps` into :class:`SmapsVma`
* sysfs multiple-choice files: :func:`parse_sysfs_choice`
* a kernel ``.config``: :func:`parse_kernel_config`
"""

import re
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "THP_EVENTS", "PM_PFRAME_BITS", "PM_PFRAME_MASK", "PM_SOFT_DIRTY", "PM_MMAP_EXCLUSIVE",
    "PM_UFFD_WP", "PM_FILE", "PM_SWAP", "PM_PRESENT", "MAX_SWAPFILES_SHIFT", "KPF_NAMES",
    "parse_sysfs_choice", "parse_vmstat", "thp_counters", "vmstat_delta",
    "SmapsVma", "parse_smaps", "parse_kernel_config", "decode_pagemap",
    "kpf_test", "kpageflags_names",
]

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

