"""The experiments on the real kernel, as they run inside the child process.

:func:`thplab.live.run_experiment` starts ``python -m thplab.live.child NAME PID``
(:mod:`thplab.live.child`), which calls :func:`run` and prints its result as
one JSON object, so that a crash or a hang here cannot hurt a notebook.

Every experiment maps 4 MiB of anonymous private memory, marks the 2 MiB-aligned
2 MiB inside it ``MADV_HUGEPAGE`` and writes one byte per 4 KiB subpage: the
first write faults in a THP (``do_huge_pmd_anonymous_page()``), the others
leave a pattern that later steps check. Each step then performs one operation
with a libc call, taking ``/proc/vmstat`` immediately before and after it, and
looks at the result through smaps, pagemap, kpageflags and kpagecount.

The physical view follows the THP's 512 page frames (found at the fault)
whatever maps them, so a subpage that was unmapped but not freed is still
seen as part of the compound page.

The geometry constants (:data:`MIDDLE`, :data:`PIN_SUBPAGE`, ...) are shared
with the model's side of each experiment, :mod:`thplab.live.comparison`.
"""

import ctypes
import datetime
import os
import platform

import numpy as np

from . import formats, probes
from .probes import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from .syscalls import MADV_COLD, MADV_HUGEPAGE, PROT_READ, PROT_WRITE, Libc

__all__ = [
    "EXPERIMENTS", "MAPPING_SIZE", "MAPPING_HINT", "MIDDLE", "MPROTECT_NR", "PIN_SUBPAGE",
    "SAMPLE_SUBPAGES", "PATTERN", "COW_BYTE", "NOTES", "ExperimentError", "ThpArea",
    "observe", "ForkedChild", "EXPERIMENT_STEPS", "run", "utc_now",
]

#: Experiment name -> one-line description.
EXPERIMENTS = {
    "fault": "write fault on a MADV_HUGEPAGE range allocates a THP",
    "partial_munmap": "munmap() one 4 KiB subpage in the middle of a THP",
    "mprotect": "mprotect(PROT_READ) 64 KiB in the middle of a THP",
    "fork": "fork() shares the THP; the child's write breaks COW",
    "pin": "a vmsplice() page reference blocks split_huge_page()",
    "full_munmap": "munmap() the whole THP",
}

#: Twice the THP size, so that a 2 MiB-aligned 2 MiB always fits inside.
MAPPING_SIZE = 2 * HPAGE_PMD_SIZE
#: Where the mapping is asked to go (a hint, not MAP_FIXED). mmap() searches
#: top-down from below the stack, so holes that the experiments punch far
#: below that are not refilled by the interpreter's own allocations.
MAPPING_HINT = 0x200000000000

#: The subpage that munmap, mprotect and the COW write aim at.
MIDDLE = HPAGE_PMD_NR // 2
#: mprotect() covers 16 subpages (64 KiB) from MIDDLE on.
MPROTECT_NR = 16
#: The subpage vmsplice() takes a reference on.
PIN_SUBPAGE = 128
#: Subpages reported one by one: head, first tail, the pinned one, both sides
#: of MIDDLE, last.
SAMPLE_SUBPAGES = (0, 1, PIN_SUBPAGE, MIDDLE - 1, MIDDLE, MIDDLE + 1, HPAGE_PMD_NR - 1)
#: First byte of subpage i; never 0, so that a fresh zero page would show.
PATTERN = (np.arange(HPAGE_PMD_NR) % 251 + 1).astype(np.uint8)
#: What the forked child writes into subpage MIDDLE.
COW_BYTE = 0xEE

NOTES = {
    "fault": [
        "With enabled=[madvise] only a MADV_HUGEPAGE range gets a THP at fault; the first "
        "write fault on the PMD-aligned range allocates all 512 subpages at once.",
    ],
    "partial_munmap": [
        "munmap() of one subpage splits only this PMD (split_huge_pmd(), merged in v4.5 from "
        "the RFC's patch 04); the compound page stays whole and is queued for a deferred split "
        "(thp_deferred_split_page, v4.6+). The unmapped subpage stays allocated, still a "
        "KPF_COMPOUND_TAIL with kpagecount 0, until the deferred_split shrinker splits the "
        "page under memory pressure (thp_split_page then counts, asynchronously).",
    ],
    "mprotect": [
        "mprotect() of part of a THP splits the VMA in three and the PMD into 512 PTEs "
        "(thp_split_pmd); every subpage stays mapped, so nothing is queued for a split and the "
        "page stays compound. nr_anon_transparent_hugepages counts PMD-mapped THPs since v4.5, "
        "so it drops although the THP still exists.",
    ],
    "fork": [
        "fork() copies the PMD (copy_huge_pmd()): both processes map the same THP, each "
        "subpage's kpagecount is 2 and neither maps it exclusively (pagemap bit 56 clear).",
        "Since v5.8 (3917c80280c9, 'thp: change CoW semantics for anon-THP') a write fault on "
        "a shared PMD-mapped THP splits that PMD and copies one 4 KiB page (thp_split_pmd, no "
        "thp_fault_alloc); v3.16 and the RFC allocated a new THP and copied all 2 MiB.",
    ],
    "pin": [
        "vmsplice() of one subpage into a pipe takes a page reference (iter_to_pipe() -> "
        "iov_iter_get_pages2()), i.e. +1 on the folio's refcount, held until the pipe is "
        "closed.",
        "madvise(MADV_COLD) on part of a partially mapped THP calls split_folio(): with the "
        "reference held, can_split_folio() sees more references than mappings and the split "
        "fails (thp_split_page_failed), as in the RFC's new split_huge_page(); after close() "
        "it succeeds (thp_split_page) and frees the unmapped subpage.",
    ],
    "full_munmap": [
        "Unmapping the whole PMD (zap_huge_pmd()) frees the THP in one piece: no split event. "
        "After the free the page frames can be reused by anyone, so their flags tell nothing.",
    ],
}


class ExperimentError(RuntimeError):
    """The kernel did not behave as an experiment needs (e.g. no THP was faulted in)."""


class ThpArea:
    """4 MiB anonymous mapping whose 2 MiB-aligned middle is ``MADV_HUGEPAGE``.

    Attributes
    ----------
    addr : int
        Start of the 2 MiB THP range.
    bytes : numpy.ndarray
        uint8 view of that range (touching an unmapped part kills the process).
    expected : numpy.ndarray
        The first byte each subpage should hold.
    unmapped : numpy.ndarray
        Subpages that :meth:`munmap` gave back (someone else may map them now).
    thp_pfn : int
        PFN of the THP's head page, -1 until the fault step found it.
    """

    def __init__(self, libc):
        self.libc = libc
        self.base = libc.mmap(MAPPING_HINT, MAPPING_SIZE, PROT_READ | PROT_WRITE)
        self.addr = -(-self.base // HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE
        libc.madvise(self.addr, HPAGE_PMD_SIZE, MADV_HUGEPAGE)
        memory = (ctypes.c_ubyte * HPAGE_PMD_SIZE).from_address(self.addr)
        self.bytes = np.ctypeslib.as_array(memory)
        self.expected = PATTERN.copy()
        self.unmapped = np.zeros(HPAGE_PMD_NR, dtype=bool)
        self.thp_pfn = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Unmap only what is still ours: a hole may have been mapped again by
        # another allocation since.
        end = self.addr + HPAGE_PMD_SIZE
        ranges = [(self.base, self.addr - self.base), (end, self.base + MAPPING_SIZE - end)]
        owned = np.flatnonzero(~self.unmapped)
        for run in np.split(owned, np.flatnonzero(np.diff(owned) != 1) + 1):
            if run.size:
                ranges.append((self.subpage(int(run[0])), int(run.size) * PAGE_SIZE))
        for start, length in ranges:
            if length:
                self.libc.munmap(start, length)

    def munmap(self, first, nr):
        """``munmap()`` `nr` subpages from subpage `first` on."""
        ret = self.libc.munmap(self.subpage(first), nr * PAGE_SIZE)
        self.unmapped[first:first + nr] = True
        return ret

    def subpage(self, index):
        """Virtual address of subpage `index`."""
        return self.addr + index * PAGE_SIZE

    def touch(self):
        """Write the pattern: the first write faults the THP in."""
        self.bytes[::PAGE_SIZE] = self.expected

    def content_ok(self, present):
        """Whether every present subpage of ours still holds its expected first byte."""
        ours = present & ~self.unmapped
        return bool(np.array_equal(self.bytes[::PAGE_SIZE][ours], self.expected[ours]))


def observe(area, pid="self", check_content=True):
    """What one process sees of the THP range, and the state of its 512 page frames.

    Returns a JSON-ready dict: ``smaps`` figures; ``mapped`` (subpages present
    in pagemap), ``mapping_thp`` (of them, those still mapping their own
    subpage of the THP), ``exclusive`` (pagemap bit 56); over the THP's page
    frames ``compound`` (KPF_COMPOUND_HEAD or _TAIL), ``thp`` (KPF_THP) and a
    ``kpagecount`` histogram; ``samples`` for :data:`SAMPLE_SUBPAGES`; and
    ``content_ok`` for this process (None for another one).
    """
    smaps = probes.read_smaps(area.addr, HPAGE_PMD_SIZE, pid)
    pagemap = probes.read_pagemap(area.addr, HPAGE_PMD_SIZE, pid)
    if not pagemap.available:
        raise ExperimentError(pagemap.reason)
    present = pagemap.present & ~area.unmapped
    exclusive = pagemap.exclusive & present
    view = {
        "smaps": smaps.summary() if smaps.available else None,
        "mapped": int(present.sum()),
        "exclusive": int(exclusive.sum()),
        "content_ok": area.content_ok(present) if check_content else None,
        "physical": pagemap.reason or ("" if area.thp_pfn >= 0 else "THP page frames unknown"),
        "samples": [{"index": i, "mapped": bool(present[i]), "exclusive": bool(exclusive[i])}
                    for i in SAMPLE_SUBPAGES],
    }
    if not view["physical"]:
        _observe_frames(area, pagemap.pfn, present, view)
    return view


def _observe_frames(area, pfn, present, view):
    """Add what kpageflags and kpagecount say of the THP's 512 page frames to `view`."""
    frames = area.thp_pfn + np.arange(HPAGE_PMD_NR)
    flags, counts = probes.read_kpageflags(frames), probes.read_kpagecount(frames)
    mapping_thp = present & (pfn == frames)
    view["mapping_thp"] = int(mapping_thp.sum())
    view["physical"] = flags.reason or counts.reason
    if view["physical"]:
        return
    head = formats.kpf_test(flags.values, formats.KPF_COMPOUND_HEAD)
    tail = formats.kpf_test(flags.values, formats.KPF_COMPOUND_TAIL)
    thp = formats.kpf_test(flags.values, formats.KPF_THP)
    values, nr = np.unique(counts.values, return_counts=True)
    view.update({
        "compound": int((head | tail).sum()),
        "thp": int(thp.sum()),
        "kpagecount": {str(v): int(n) for v, n in zip(values, nr)},
    })
    for sample in view["samples"]:
        i = sample["index"]
        sample.update({
            "mapping_thp": bool(mapping_thp[i]),
            "flags": formats.kpageflags_names(flags.values[i]),
            "compound_head": bool(head[i]),
            "compound_tail": bool(tail[i]),
            "thp": bool(thp[i]),
            "kpagecount": int(counts.values[i]),
        })


class ForkedChild:
    """A ``fork()`` of this process that writes into the THP when told to.

    It talks over two pipes and exits on end of file, so it cannot outlive
    this process by more than a read.
    """

    def __init__(self, area):
        self.area = area
        self.pid = None
        self.content_ok = None

    def start(self):
        cmd_r, cmd_w = os.pipe()
        ack_r, ack_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(cmd_w)
            os.close(ack_r)
            self._serve(cmd_r, ack_w)
        os.close(cmd_r)
        os.close(ack_w)
        self.pid, self._cmd, self._ack = pid, cmd_w, ack_r
        self._wait()

    def _serve(self, cmd, ack):
        status = 1
        try:
            os.write(ack, self._check())
            while os.read(cmd, 1) == b"w":
                self.area.bytes[MIDDLE * PAGE_SIZE] = self.area.expected[MIDDLE] = COW_BYTE
                os.write(ack, self._check())
            status = 0
        finally:
            os._exit(status)

    def _check(self):
        return b"1" if self.area.content_ok(np.ones(HPAGE_PMD_NR, bool)) else b"0"

    def _wait(self):
        answer = os.read(self._ack, 1)
        if not answer:
            raise ExperimentError("the forked child died")
        self.content_ok = answer == b"1"

    def write(self):
        """Make the child write :data:`COW_BYTE` into subpage :data:`MIDDLE`."""
        os.write(self._cmd, b"w")
        self._wait()

    def exit(self):
        """Let the child exit and reap it."""
        if self.pid is not None:
            os.close(self._cmd)
            os.close(self._ack)
            os.waitpid(self.pid, 0)
            self.pid = None


def _step(name, op, operation, area, child=None):
    """Run `operation`, with vmstat read right around it, then observe."""
    before = probes.read_vmstat().counters
    try:
        ret = operation() or 0
    except OSError as exc:
        ret = -exc.errno
    after = probes.read_vmstat().counters
    if area.thp_pfn < 0:
        head = probes.read_pagemap(area.addr, PAGE_SIZE)
        if head.pfns_visible and head.present[0]:
            area.thp_pfn = int(head.pfn[0])
    views = {"self": observe(area)}
    if child is not None and child.pid is not None:
        views["child"] = observe(area, child.pid, check_content=False)
        views["child"]["content_ok"] = child.content_ok
    return {"name": name, "op": op, "ret": ret,
            "vmstat_delta": formats.vmstat_delta(before, after), "views": views}


def _fault(area):
    step = _step("fault", "madvise(MADV_HUGEPAGE); write 1 byte per 4 KiB", area.touch, area)
    smaps = step["views"]["self"]["smaps"] or {}
    if smaps.get("AnonHugePages") != HPAGE_PMD_SIZE // 1024:
        raise ExperimentError(
            f"no THP was faulted in (AnonHugePages {smaps.get('AnonHugePages')} kB, "
            f"vmstat {step['vmstat_delta']}): memory too fragmented?")
    return step


def fault(area):
    return [_fault(area)]


def partial_munmap(area):
    return [
        _fault(area),
        _step("munmap", f"munmap(subpage {MIDDLE}, 4 KiB)", lambda: area.munmap(MIDDLE, 1), area),
    ]


def mprotect(area):
    return [
        _fault(area),
        _step("mprotect", f"mprotect(subpages {MIDDLE}-{MIDDLE + MPROTECT_NR - 1}, PROT_READ)",
              lambda: area.libc.mprotect(area.subpage(MIDDLE), MPROTECT_NR * PAGE_SIZE,
                                         PROT_READ),
              area),
    ]


def fork(area):
    steps = [_fault(area)]
    child = ForkedChild(area)
    try:
        steps.append(_step("fork", "fork()", child.start, area, child))
        steps.append(_step("child_write", f"child writes subpage {MIDDLE}", child.write, area,
                           child))
        steps.append(_step("child_exit", "child exits", child.exit, area))
    finally:
        child.exit()
    return steps


def pin(area):
    libc = area.libc
    steps = [_fault(area)]
    pipe = list(os.pipe())

    def unpin():
        while pipe:
            os.close(pipe.pop())

    try:
        steps.append(_step("pin", f"vmsplice(pipe, subpage {PIN_SUBPAGE}, 4 KiB)",
                           lambda: libc.vmsplice(pipe[1], area.subpage(PIN_SUBPAGE), PAGE_SIZE),
                           area))
        steps.append(_step("munmap", f"munmap(subpage {MIDDLE}, 4 KiB)",
                           lambda: area.munmap(MIDDLE, 1), area))
        steps.append(_step("split_pinned", "madvise(subpage 0, 4 KiB, MADV_COLD)",
                           lambda: libc.madvise(area.addr, PAGE_SIZE, MADV_COLD), area))
        steps.append(_step("unpin", "close(pipe)", unpin, area))
    finally:
        unpin()
    steps.append(_step("split_unpinned", "madvise(subpage 0, 4 KiB, MADV_COLD)",
                       lambda: libc.madvise(area.addr, PAGE_SIZE, MADV_COLD), area))
    return steps


def full_munmap(area):
    return [
        _fault(area),
        _step("munmap", "munmap(whole THP, 2 MiB)", lambda: area.munmap(0, HPAGE_PMD_NR), area),
    ]


#: Experiment name -> function(area) returning its steps.
EXPERIMENT_STEPS = {
    "fault": fault,
    "partial_munmap": partial_munmap,
    "mprotect": mprotect,
    "fork": fork,
    "pin": pin,
    "full_munmap": full_munmap,
}


#: The note of a run on a kernel that keeps no per-page mapcount in large folios;
#: :func:`thplab.live.compare` looks for it to name that change.
NO_PAGE_MAPCOUNT_NOTE = "kpagecount is the folio's average mapcount here (CONFIG_NO_PAGE_MAPCOUNT)."


def _common_notes():
    notes = ["/proc/vmstat counters are system-wide: each delta is taken right around one "
             "operation, but other processes can add to it."]
    config = probes.read_kernel_config()
    if config.options.get("CONFIG_NO_PAGE_MAPCOUNT") == "y":
        notes.append(NO_PAGE_MAPCOUNT_NOTE)
    elif config.options.get("CONFIG_PAGE_MAPCOUNT") == "y":
        notes.append("kpagecount is folio_precise_page_mapcount() here (CONFIG_PAGE_MAPCOUNT): "
                     "the PMD (entire) mapcount plus the subpage's own PTE mapcount.")
    return notes


def run(name):
    """Run experiment `name` in this process; return its JSON-ready result dict."""
    result = {"name": name, "kernel": platform.release(), "date": utc_now(),
              "status": "ok", "reason": "", "steps": [], "notes": []}
    if reason := probes.thp_unavailable_reason():
        return {**result, "status": "unavailable", "reason": reason}
    try:
        with ThpArea(Libc()) as area:
            result["steps"] = EXPERIMENT_STEPS[name](area)
    except (OSError, ExperimentError) as exc:
        return {**result, "status": "failed", "reason": str(exc)}
    result["notes"] = NOTES[name] + _common_notes()
    return result


def utc_now():
    """The time of a run: UTC, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
