"""THP experiments on the real kernel, and the same experiments on the model.

``python -m thplab._live_experiments NAME`` runs one experiment of
:data:`thplab.live.EXPERIMENTS` and prints its result as one JSON object;
:func:`thplab.live.run_experiment` starts it with a timeout, so that a crash
or a hang here cannot hurt a notebook.

Every experiment maps 4 MiB of anonymous private memory, marks the 2 MiB-aligned
2 MiB inside it ``MADV_HUGEPAGE`` and writes one byte per 4 KiB subpage: the
first write faults in a THP (``do_huge_pmd_anonymous_page()``), the others
leave a pattern that later steps check. Each step then performs one operation
with a libc call, taking ``/proc/vmstat`` immediately before and after it, and
looks at the result through smaps, pagemap, kpageflags and kpagecount.

The physical view follows the THP's 512 page frames (found at the fault)
whatever maps them, so a subpage that was unmapped but not freed is still
seen as part of the compound page.

:func:`model_steps` runs the same steps on a thplab ``Machine``; both sides
are reduced to the :data:`QUANTITIES` that :func:`thplab.live.compare` puts
next to each other.
"""

import ctypes
import ctypes.util
import json
import os
import platform
import sys

import numpy as np

from thplab import live
from thplab.machine import Machine
from thplab.page_flags import PageCompound, PageHead

# include/uapi/asm-generic/mman-common.h, mman.h
PROT_READ, PROT_WRITE = 0x1, 0x2
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
MADV_HUGEPAGE = 14
#: Deactivates the range (v5.4+). On a range covering only part of a THP it
#: calls ``split_folio()`` (``madvise_cold_or_pageout_pte_range()``): the one
#: way to ask for ``split_huge_page()`` without writing to /proc or /sys.
MADV_COLD = 20

PAGE_SIZE = live.PAGE_SIZE
HPAGE_PMD_NR = live.HPAGE_PMD_NR
HPAGE_PMD_SIZE = HPAGE_PMD_NR * PAGE_SIZE
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
    smaps = live.read_smaps(area.addr, HPAGE_PMD_SIZE, pid)
    pagemap = live.read_pagemap(area.addr, HPAGE_PMD_SIZE, pid)
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
    flags, counts = live.read_kpageflags(frames), live.read_kpagecount(frames)
    mapping_thp = present & (pfn == frames)
    view["mapping_thp"] = int(mapping_thp.sum())
    view["physical"] = flags.reason or counts.reason
    if view["physical"]:
        return
    head = live.kpf_test(flags.values, live.KPF_COMPOUND_HEAD)
    tail = live.kpf_test(flags.values, live.KPF_COMPOUND_TAIL)
    thp = live.kpf_test(flags.values, live.KPF_THP)
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
            "flags": live.kpageflags_names(flags.values[i]),
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
    before = live.read_vmstat().counters
    try:
        ret = operation() or 0
    except OSError as exc:
        ret = -exc.errno
    after = live.read_vmstat().counters
    if area.thp_pfn < 0:
        head = live.read_pagemap(area.addr, PAGE_SIZE)
        if head.pfns_visible and head.present[0]:
            area.thp_pfn = int(head.pfn[0])
    views = {"self": observe(area)}
    if child is not None and child.pid is not None:
        views["child"] = observe(area, child.pid, check_content=False)
        views["child"]["content_ok"] = child.content_ok
    return {"name": name, "op": op, "ret": ret,
            "vmstat_delta": live.vmstat_delta(before, after), "views": views}


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


# --------------------------------------------------------------------------
# The model's side: each experiment again, as a scenario on a thplab Machine
# with the same step names, and the quantities both sides are compared on.
# The scenarios only call Machine's public methods, so that a renamed entry
# point is a one-line change here.

#: Subpages whose kpagecount is compared: head, first tail, and MIDDLE.
KPAGECOUNT_SUBPAGES = (0, 1, MIDDLE)
#: The compared quantities, in display order: the vmstat events first.
QUANTITIES = live.THP_EVENTS + (
    "AnonHugePages kB", "VMAs", "subpages mapped", "page compound",
    *(f"kpagecount[{i}]" for i in KPAGECOUNT_SUBPAGES),
    "child AnonHugePages kB", "child subpages mapping the THP",
)


def model_fault(m, procs, addr):
    return [("fault", lambda: m.touch(procs["self"], addr, HPAGE_PMD_SIZE, write=True))]


def model_partial_munmap(m, procs, addr):
    return model_fault(m, procs, addr) + [
        ("munmap", lambda: m.munmap(procs["self"], addr + MIDDLE * PAGE_SIZE, PAGE_SIZE))]


def model_mprotect(m, procs, addr):
    return model_fault(m, procs, addr) + [
        ("mprotect", lambda: m.mprotect(procs["self"], addr + MIDDLE * PAGE_SIZE,
                                        MPROTECT_NR * PAGE_SIZE, "r"))]


def model_fork(m, procs, addr):
    def fork():
        procs["child"] = m.fork(procs["self"])

    return model_fault(m, procs, addr) + [
        ("fork", fork),
        ("child_write", lambda: m.touch(procs["child"], addr + MIDDLE * PAGE_SIZE, PAGE_SIZE)),
        ("child_exit", lambda: m.exit(procs.pop("child"))),
    ]


def model_pin(m, procs, addr):
    pins = []

    def split():
        # The real kernel splits on madvise(MADV_COLD) (split_folio()); the
        # model calls split_huge_page() as such a caller does. The old kernel
        # split the page at munmap already: then there is no THP left to split.
        head = int(m.walk(procs["self"], [addr])["pfn"][0])
        if PageCompound(m.mem_map, head):
            m.split_huge_page(head)

    return model_fault(m, procs, addr) + [
        ("pin", lambda: pins.extend(m.get_user_pages_fast(procs["self"],
                                                          addr + PIN_SUBPAGE * PAGE_SIZE))),
        ("munmap", lambda: m.munmap(procs["self"], addr + MIDDLE * PAGE_SIZE, PAGE_SIZE)),
        ("split_pinned", split),
        ("unpin", lambda: m.put_page(pins)),
        ("split_unpinned", split),
    ]


def model_full_munmap(m, procs, addr):
    return model_fault(m, procs, addr) + [
        ("munmap", lambda: m.munmap(procs["self"], addr, HPAGE_PMD_SIZE))]


#: Experiment name -> function(machine, procs, addr) returning its
#: ``[(step name, operation)]`` on the model.
MODEL_STEPS = {
    "fault": model_fault,
    "partial_munmap": model_partial_munmap,
    "mprotect": model_mprotect,
    "fork": model_fork,
    "pin": model_pin,
    "full_munmap": model_full_munmap,
}


def model_quantities(m, procs, addr, thp_pfn, before, after):
    """The compared quantities of the model after one step (see :data:`QUANTITIES`)."""
    q = {name: after[name] - before[name] for name in live.THP_EVENTS if name in after}
    pid = procs["self"]
    subpages = addr + np.arange(HPAGE_PMD_NR, dtype=np.uint64) * PAGE_SIZE
    mapped = m.walk(pid, subpages)["pfn"] >= 0
    q["AnonHugePages kB"] = m.smaps_anon_huge_kb(pid, addr, HPAGE_PMD_SIZE)
    q["VMAs"] = len(m.processes[pid].vmas_in(addr, addr + HPAGE_PMD_SIZE))
    q["subpages mapped"] = int(mapped.sum())
    if mapped[0]:
        q["page compound"] = bool(PageHead(m.mem_map, thp_pfn))
        for i in KPAGECOUNT_SUBPAGES:
            if mapped[i]:
                q[f"kpagecount[{i}]"] = int(m.page_mapcount(thp_pfn + i))
    if "child" in procs:
        child = m.walk(procs["child"], subpages)["pfn"]
        q["child AnonHugePages kB"] = m.smaps_anon_huge_kb(procs["child"], addr, HPAGE_PMD_SIZE)
        own = thp_pfn + np.arange(HPAGE_PMD_NR)
        q["child subpages mapping the THP"] = int((child == own).sum())
    return q


def model_steps(name, level):
    """Run experiment `name` on the model at series `level`; see :func:`thplab.live.predict`."""
    m = Machine.boot(nr_pages=4096, patches=level, seed=0)
    procs = {"self": m.spawn()}
    addr = m.mmap(procs["self"], MAPPING_SIZE, prot="rw", thp=True)
    steps, thp_pfn = {}, -1
    for step, operation in MODEL_STEPS[name](m, procs, addr):
        before = m.vmstat.as_dict()
        operation()
        after = m.vmstat.as_dict()
        if thp_pfn < 0:
            thp_pfn = int(m.walk(procs["self"], [addr])["pfn"][0])
        steps[step] = model_quantities(m, procs, addr, thp_pfn, before, after)
    return steps


def observed_quantities(step):
    """The compared quantities of the real kernel after one step of a result."""
    q = {name: value for name, value in step["vmstat_delta"].items() if name in live.THP_EVENTS}
    view = step["views"]["self"]
    samples = {sample["index"]: sample for sample in view["samples"]}
    if view["smaps"] is not None:
        q["AnonHugePages kB"] = view["smaps"]["AnonHugePages"]
        q["VMAs"] = view["smaps"]["nr_vmas"]
    q["subpages mapped"] = view["mapped"]
    # Once the head is unmapped the THP may be freed and its frames reused:
    # they no longer say anything about it.
    if samples[0]["mapped"] and not view["physical"]:
        q["page compound"] = samples[0]["compound_head"]
        for i in KPAGECOUNT_SUBPAGES:
            if samples[i]["mapped"]:
                q[f"kpagecount[{i}]"] = samples[i]["kpagecount"]
    if child := step["views"].get("child"):
        q["child AnonHugePages kB"] = child["smaps"]["AnonHugePages"]
        q["child subpages mapping the THP"] = child.get("mapping_thp")
    return q


def _common_notes():
    notes = ["/proc/vmstat counters are system-wide: each delta is taken right around one "
             "operation, but other processes can add to it."]
    config = live.read_kernel_config()
    if config.options.get("CONFIG_NO_PAGE_MAPCOUNT") == "y":
        notes.append("kpagecount is the folio's average mapcount here (CONFIG_NO_PAGE_MAPCOUNT).")
    elif config.options.get("CONFIG_PAGE_MAPCOUNT") == "y":
        notes.append("kpagecount is folio_precise_page_mapcount() here (CONFIG_PAGE_MAPCOUNT): "
                     "the PMD (entire) mapcount plus the subpage's own PTE mapcount.")
    return notes


def run(name):
    """Run experiment `name` in this process; return its JSON-ready result dict."""
    result = {"name": name, "kernel": platform.release(), "date": live._now(),
              "status": "ok", "reason": "", "steps": [], "notes": []}
    if reason := live.thp_unavailable_reason():
        return {**result, "status": "unavailable", "reason": reason}
    try:
        with ThpArea(Libc()) as area:
            result["steps"] = EXPERIMENT_STEPS[name](area)
    except (OSError, ExperimentError) as exc:
        return {**result, "status": "failed", "reason": str(exc)}
    result["notes"] = NOTES[name] + _common_notes()
    return result


if __name__ == "__main__":
    json.dump(run(sys.argv[1]), sys.stdout)
