"""A simulated x86-64 machine: memory, processes and one kernel from the series.

:class:`Machine` is the entry point.  Its methods are the system calls and
kernel entry points a lesson needs (``mmap``, ``fork``, page faults,
``get_user_pages``...).  Each checks its arguments first and raises a thplab
error *before* changing anything, then runs the kernel functions of the
booted series level.

SIMPLIFICATION: not modelled at all: swap and reclaim, khugepaged collapse,
KSM, memcg, mlock, mremap, file and shmem pages, NUMA balancing, and the
per-CPU LRU pagevec's transient reference after a fault (counters read as
after ``lru_add_drain()``).  TLBs are not modelled beyond the flush IPI.

>>> m = Machine.boot("16M", patches=0, seed=0)
>>> pid = m.spawn()
>>> addr = m.mmap(pid, 2 << 20)
>>> m.touch(pid, addr, 2 << 20)
>>> int(m.vmstat["thp_fault_alloc"])
1
"""

import collections
import re

import numpy as np

from . import memory as mem
from . import mmap as mmap_
from .errors import (BadAddress, BadArgument, BadPage, KernelFunctionRemoved, NoSuchProcess, Segfault,
                     as_int, is_int)
from .gup import get_user_pages, get_user_pages_fast
from .mm_types import AnonVma, MmStruct
from .page_alloc import PageAllocator
from .page_flags import PAGE_MAPPING_ANON, PG, PageCompound, PageTail, Use, compound_head
from .params import (EFAULT, EINVAL, ENOMEM, HPAGE_PMD_MASK, HPAGE_PMD_NR, HPAGE_PMD_SIZE,
                     MMAP_BASE, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PROT_EXEC, PROT_READ,
                     PROT_WRITE, TASK_SIZE, VERIFY_READ, VERIFY_WRITE, VM_EXEC, VM_HUGEPAGE, VM_READ,
                     VM_WRITE)
from .pgtable import PageTables
from .series import Kernel
from .smp import Smp
from .vmstat import VmStat

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.I)

#: The largest machine :meth:`Machine.boot` builds: 1 TiB of simulated RAM.
#: ``mem_map`` alone takes 37 bytes per 4 KiB page (10 GiB of host memory at
#: this size), so anything larger is surely a typo.
MAX_MEM = 1 << 40


def parse_size(size):
    """Bytes from ``4096``, ``"64M"``, ``"1 GiB"``..."""
    if not isinstance(size, str):
        return as_int(size, "memory size")
    match = _SIZE.match(size)
    if not match:
        raise BadArgument(f"cannot read {size!r} as a memory size (try 64M or 1G)")
    return int(match[1]) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[match[2].upper()]


def parse_prot(prot):
    """``PROT_*`` bits from ``"rw"``, ``"r"``, ``"none"``... or an int."""
    if not isinstance(prot, str):
        prot = as_int(prot, "protection (PROT_* bits or letters like 'rw')")
        if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
            raise BadArgument(f"protection {prot:#x}: only PROT_READ, PROT_WRITE and "
                              "PROT_EXEC (0..7) are modelled")
        return prot
    text = prot.lower()
    if text in ("none", "---", ""):
        return 0
    if set(text) - set("rwx-"):
        raise BadArgument(f"protection {prot!r}: use letters r, w, x (or 'none')")
    return ((PROT_READ if "r" in text else 0) | (PROT_WRITE if "w" in text else 0)
            | (PROT_EXEC if "x" in text else 0))


class Machine:
    """A booted machine.  Use :meth:`boot`."""

    def __init__(self, nr_pages, patches, seed, nodes, thp, stack="rfc-v1"):
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.allocator = PageAllocator(nr_pages)
        self.pgtables = PageTables(nr_pages)
        self.nodes = nodes
        self.thp_enabled = thp
        self.smp = Smp(self)
        self.tracer = None
        self.costs = collections.Counter()
        self.processes = {}
        self.anon_vmas = {}
        #: Pins handed out by :meth:`get_user_pages` and friends, per page, not
        #: yet dropped with :meth:`put_page` (thplab's ground truth for checks).
        self.pins = np.zeros(nr_pages, dtype=np.int32)
        #: References a kernel path took and never dropped, per page: a posted
        #: bug that thplab runs as posted (patch 01's ``move_pages()`` when a
        #: split fails).  Nobody can ``put_page()`` them; checks count them like
        #: pins, so the page stays allocated, as it would in the kernel.
        self.leaked = np.zeros(nr_pages, dtype=np.int32)
        self._next_pid = 1
        self._next_anon_vma = 1
        #: v4.5's deferred split queue, one per NUMA node (``pglist_data.split_queue``): THP
        #: heads in queue order (a dict as an ordered set); empty in other kernels.
        self.split_queues = [{} for _ in range(nodes)]
        #: The local lists of a ``deferred_split_scan()`` under way, per node (empty between calls).
        self.split_scan_lists = [{} for _ in range(nodes)]
        #: ``shrinker->nr_deferred[nid]`` of the deferred split shrinker: scan work carried over.
        self.shrinker_nr_deferred = [0] * nodes
        self.kernel = Kernel(self, patches, stack)
        self.vmstat = VmStat(self.kernel.VM_EVENTS,
                             live={"nr_free_pages": lambda: self.allocator.nr_free_pages})

    @classmethod
    def boot(cls, mem=None, *, nr_pages=None, patches=None, kernel=None, seed=0, nodes=1,
             thp="madvise"):
        """Boot a machine with ``mem`` bytes of RAM (or ``nr_pages`` 4 KiB pages).

        ``patches`` is the series level: 0 is the old kernel, k applies
        patches 01..k of the RFC.  ``kernel`` names the kernel instead:
        ``"v3.16"`` (level 0, the tree the RFC was written on), ``"rfc-v1"``
        (all ten patches; with ``patches=k`` the first k), ``"v4.5"`` (the
        redesign as merged, 4.5.7; ``patches=k``: its first k of 7 steps).  ``seed`` seeds the
        machine's random generator (``machine.rng``).  ``nodes`` splits memory
        into NUMA nodes for ``move_pages``; ``thp`` is the sysfs ``enabled`` mode.
        """
        from .series import kernel_level

        if (mem is None) == (nr_pages is None):
            raise BadArgument("give the memory size (e.g. '64M') or nr_pages, not both")
        nr_pages = (parse_size(mem) >> PAGE_SHIFT if nr_pages is None
                    else as_int(nr_pages, "nr_pages"))
        if nr_pages > MAX_MEM >> PAGE_SHIFT:
            raise BadArgument(f"{nr_pages} pages is more than thplab simulates "
                              f"({MAX_MEM >> 40} TiB = {MAX_MEM >> PAGE_SHIFT} pages at most)")
        if nr_pages < HPAGE_PMD_NR or nr_pages % HPAGE_PMD_NR:
            raise BadArgument(f"memory must be a positive multiple of 2 MiB; got {nr_pages} pages")
        stack, patches = kernel_level(kernel, patches)
        seed = as_int(seed, "seed")
        if seed < 0:
            raise BadArgument(f"seed must be >= 0 (numpy's default_rng), got {seed}")
        if thp not in ("always", "madvise", "never"):
            raise BadArgument(f"thp must be 'always', 'madvise' or 'never', not {thp!r}")
        nodes = as_int(nodes, "nodes")
        if nodes < 1 or (nr_pages // HPAGE_PMD_NR) % nodes:
            raise BadArgument(f"{nodes} nodes do not divide {nr_pages // HPAGE_PMD_NR} 2 MiB blocks")
        return cls(nr_pages, patches, seed, nodes, thp, stack)

    def __repr__(self):
        return (f"<Machine {self.nr_pages * PAGE_SIZE >> 20} MiB, {self.kernel.name}, "
                f"seed {self.seed}, {len(self.processes)} processes>")

    # ----------------------------------------------------------- properties

    @property
    def mem_map(self):
        """The ``struct page`` array (numpy structured array, one row per pfn)."""
        return self.allocator.mem_map

    @property
    def nr_pages(self):
        return self.allocator.nr_pages

    @property
    def level(self):
        return self.kernel.level

    def page_to_nid(self, page):
        """Mirrors ``page_to_nid()``: the NUMA node holding pfn ``page``."""
        return self._page(page) * self.nodes // self.nr_pages

    def node_range(self, node):
        """``[first pfn, end pfn)`` of NUMA node ``node``."""
        node = self._node(node)
        per = self.nr_pages // self.nodes
        return node * per, (node + 1) * per

    def new_anon_vma(self):
        av = AnonVma(id=self._next_anon_vma)
        self._next_anon_vma += 1
        self.anon_vmas[av.id] = av
        return av

    def anon_vma_of(self, page):
        """The anon_vma a page's ``mapping`` points to (head's, for a THP).

        Only a mapped page is sure to have one: an anon_vma is freed with its
        last VMA (:func:`thplab.mmap.put_anon_vma`), and a page still pinned
        after its last unmap keeps a stale ``mapping``, as in the kernel,
        where ``page_get_anon_vma()`` refuses a page that is not mapped.
        """
        head = int(compound_head(self.mem_map, self._page(page)))
        mapping = int(self.mem_map["mapping"][head])
        av = self.anon_vmas.get(mapping >> 2) if mapping & PAGE_MAPPING_ANON else None
        if av is None:
            raise BadPage(f"pfn {head:#x} has no live anon_vma (mapping {mapping:#x}): it is "
                          "free, not anonymous, or no longer mapped by any VMA")
        return av

    # ----------------------------------------------------------- checks

    def _mm(self, pid):
        mm = self.processes.get(int(pid)) if is_int(pid) else None
        if mm is None:
            live = ", ".join(map(str, self.processes)) or "none"
            raise NoSuchProcess(f"no process with pid {pid!r} (live pids: {live}); "
                                "an exited process cannot be used")
        return mm

    @staticmethod
    def _addr(op, addr):
        """``addr`` as an int, or -EINVAL (a Python error from ``addr & mask`` otherwise)."""
        return as_int(addr, f"{op}: the address", BadAddress, errno=EINVAL)

    @staticmethod
    def _range(op, addr, length):
        addr = Machine._addr(op, addr)
        length = as_int(length, f"{op}: the length", BadAddress, errno=EINVAL)
        if addr % PAGE_SIZE:
            raise BadAddress(f"{op}: address {addr:#x} is not 4 KiB aligned "
                             "(the kernel returns -EINVAL)", EINVAL)
        if length <= 0:
            raise BadAddress(f"{op}: length must be positive, got {length}", EINVAL)
        end = addr + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
        if addr < 0 or end > TASK_SIZE:
            raise BadAddress(f"{op}: range {addr:#x}+{length:#x} is outside user space "
                             f"(0..{TASK_SIZE:#x})", EINVAL)
        return addr, end

    def _covered(self, op, mm, start, end, need=0, errno=ENOMEM):
        """Raise unless VMAs cover ``[start, end)`` without holes (and allow ``need``)."""
        at = start
        for vma in mm.vmas_in(start, end):
            if vma.vm_start > at:
                break
            if need and (vma.vm_flags & need) != need:
                raise Segfault(f"{op}: {at:#x} is in {vma} which does not allow "
                               f"{'writing' if need & VM_WRITE else 'reading'} (SIGSEGV)")
            at = vma.vm_end
        if at < end:
            raise (Segfault if errno == EFAULT else BadAddress)(
                f"{op}: {at:#x} is not mapped in pid {mm.pid}", errno)

    def _page(self, pfn, what="page"):
        return self.allocator.check_pfn(pfn, what)

    def _node(self, node):
        node = as_int(node, "node")
        if not 0 <= node < self.nodes:
            raise BadArgument(f"node {node} does not exist (this machine has {self.nodes})")
        return node

    @staticmethod
    def _flag(value, what):
        """A yes/no argument: ``True``/``False`` only, so that ``write="no"`` is not a write."""
        if not isinstance(value, (bool, np.bool_)):
            raise BadArgument(f"{what} must be True or False, got {value!r}")
        return bool(value)

    # ----------------------------------------------------------- processes

    def spawn(self):
        """A new process with an empty address space; returns its pid."""
        pid = self._next_pid
        pgd = mem.pgd_alloc(self.kernel)
        self.processes[pid] = MmStruct(pid=pid, pgd=pgd, mmap_base=MMAP_BASE)
        self._next_pid += 1
        return pid

    def fork(self, pid):
        """``fork(2)``: a child sharing every page of ``pid`` copy-on-write; returns the child pid."""
        mm = self._mm(pid)
        child = mmap_.dup_mmap(self.kernel, mm, self._next_pid)
        self.processes[child.pid] = child
        self._next_pid += 1
        return child.pid

    def exit(self, pid):
        """``exit(2)``: unmap everything and free the page tables.  Pins survive."""
        mm = self._mm(pid)
        mmap_.exit_mmap(self.kernel, mm)
        del self.processes[pid]

    # ----------------------------------------------------------- mappings

    def mmap(self, pid, length, prot="rw", *, thp=True, addr=None):
        """Anonymous private ``mmap(2)``; with ``thp`` also ``madvise(MADV_HUGEPAGE)``.

        Without ``addr`` the mapping starts on a 2 MiB boundary, so that THPs
        fit, in the first free range at or above the process's ``mmap_base``
        (:func:`thplab.mmap.get_unmapped_area`); ``-ENOMEM`` when no range
        fits.  With ``addr`` (``MAP_FIXED``) whatever was there is unmapped first.
        """
        mm = self._mm(pid)
        vm_flags = (mem.vm_flags_for(parse_prot(prot))
                    | (VM_HUGEPAGE if self._flag(thp, "mmap: thp") else 0))
        if addr is None:
            length = as_int(length, "mmap: the length", BadAddress, errno=EINVAL)
            if length <= 0:
                raise BadAddress(f"mmap: length must be positive, got {length}", EINVAL)
            size = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            addr = mmap_.get_unmapped_area(mm, size)
            if addr is None:
                raise BadAddress(f"mmap: no free {size:#x}-byte range left in pid {pid}'s "
                                 f"address space (0..{TASK_SIZE:#x}); the kernel returns -ENOMEM",
                                 ENOMEM)
            end = addr + size
            mm.mmap_base = addr + ((size + HPAGE_PMD_SIZE - 1) & HPAGE_PMD_MASK) + HPAGE_PMD_SIZE
        else:
            addr, end = self._range("mmap", addr, length)
            mmap_.do_munmap(self.kernel, mm, addr, end)
        mmap_.mmap_region(self.kernel, mm, addr, end - addr, vm_flags)
        return addr

    def map_thp(self, pid=None):
        """Map 2 MiB with ``MADV_HUGEPAGE`` and write all of it: one THP fault.

        A new process is spawned when ``pid`` is None.  Returns ``(pid, addr,
        head)``: the process, the 2 MiB-aligned address and the THP's head pfn
        (``head`` is -1 if no THP could be allocated and 4 KiB pages were used).
        """
        pid = self.spawn() if pid is None else pid
        addr = self.mmap(pid, HPAGE_PMD_SIZE)
        self.touch(pid, addr, HPAGE_PMD_SIZE)
        w = self.walk(pid, [addr])
        return pid, addr, int(w["pfn"][0]) if w["level"][0] == 2 else -1

    def munmap(self, pid, addr, length):
        """``munmap(2)``: may cut VMAs and (depending on the level) split THPs."""
        mm = self._mm(pid)
        start, end = self._range("munmap", addr, length)
        mmap_.do_munmap(self.kernel, mm, start, end)

    def mprotect(self, pid, addr, length, prot):
        """``mprotect(2)`` on ``[addr, addr+length)``, which must be fully mapped."""
        mm = self._mm(pid)
        start, end = self._range("mprotect", addr, length)
        rwx = mem.vm_flags_for(parse_prot(prot)) & (VM_READ | VM_WRITE | VM_EXEC)
        self._covered("mprotect", mm, start, end)
        mmap_.mprotect_fixup(self.kernel, mm, start, end, rwx)

    # ----------------------------------------------------------- access

    def fault(self, pid, addr, write=True):
        """One page fault at ``addr`` (a read or write access that missed)."""
        mm = self._mm(pid)
        write = self._flag(write, "fault: write")
        addr = self._range("fault", self._addr("fault", addr) & PAGE_MASK, 1)[0]
        self._covered("fault", mm, addr, addr + PAGE_SIZE,
                      need=VM_WRITE if write else VM_READ, errno=EFAULT)
        vma = mm.find_vma(addr)
        for _ in range(64):
            w = mem.walk(self.kernel, mm, [addr])
            if w["level"][0] and (w["writable"][0] or not write):
                return
            mem.handle_mm_fault(self.kernel, mm, vma, addr, write)
        raise Segfault(f"fault at {addr:#x} in pid {pid} did not resolve")

    def touch(self, pid, addr, length, write=True):
        """Access every 4 KiB page of a range, faulting those not (writably) mapped."""
        mm = self._mm(pid)
        write = self._flag(write, "touch: write")
        start, end = self._range("touch", addr, length)
        self._covered("touch", mm, start, end, need=VM_WRITE if write else VM_READ, errno=EFAULT)
        for vma in mm.vmas_in(start, end):
            mem.populate_range(self.kernel, mm, vma, max(start, vma.vm_start), min(end, vma.vm_end),
                               write, lambda a: self.fault(pid, a, write))

    def page_walk(self, pid, address):
        """The four levels of the walk for one address, as rows a learner can read.

        Each row: ``level`` (PGD/PUD/PMD/PTE), ``index`` (the 9 address bits
        used), ``table`` (pfn of the table read), ``entry`` (its value) and
        ``meaning`` (decoded bits).  The walk stops at an empty entry or a
        2 MiB leaf; the last row then says where the address lands.
        """
        from . import pgtable as pt

        mm = self._mm(pid)
        address = as_int(address, "page_walk: the address", BadAddress, errno=EFAULT)
        if not 0 <= address < TASK_SIZE:
            raise BadAddress(f"page_walk: {address:#x} is not a user-space address "
                             f"(0..{TASK_SIZE:#x})", EFAULT)
        rows, table = [], mm.pgd
        steps = (("PGD", pt.pgd_index, "pgd"), ("PUD", pt.pud_index, "pud"),
                 ("PMD", pt.pmd_index, "pmd"), ("PTE", pt.pte_index, "pte"))
        for name, index_of, level in steps:
            index = int(index_of(address))
            e = mem.entry(self.kernel, (table, index))
            rows.append({"level": name, "index": index, "table": table, "entry": e,
                         "meaning": pt.decode_entry(e, level)})
            if e == 0:
                break
            if level == "pmd" and pt.pmd_trans_huge(e):
                offset = address & ~HPAGE_PMD_MASK
                rows.append({"level": "offset", "index": offset, "table": None, "entry": None,
                             "meaning": f"byte {offset:#x} of the 2 MiB page = subpage "
                                        f"{offset >> PAGE_SHIFT}, pfn {int(pt.pmd_pfn(e)) + (offset >> PAGE_SHIFT):#x}"})
                break
            if level == "pte":
                if pt.pte_present(e):
                    rows.append({"level": "offset", "index": address & (PAGE_SIZE - 1), "table": None,
                                 "entry": None, "meaning": f"byte {address & (PAGE_SIZE - 1):#x} of pfn "
                                                           f"{int(pt.pte_pfn(e)):#x}"})
                break
            table = int(pt.pte_pfn(e))
        return rows

    def walk(self, pid, addrs):
        """Translate addresses through ``pid``'s page tables (see :func:`thplab.memory.walk`)."""
        mm = self._mm(pid)
        a = self._int_array(addrs)
        if a is None or a.ndim != 1 or ((a < 0) | (a >= TASK_SIZE)).any():
            raise BadAddress(f"walk: addresses must be integers in user space 0..{TASK_SIZE:#x}, "
                             f"got {addrs!r:.60}", EFAULT)
        return mem.walk(self.kernel, mm, a)

    # ----------------------------------------------------------- pins

    def _pin_range(self, op, pid, addr, nr_pages, write):
        mm = self._mm(pid)
        write = self._flag(write, f"{op}: write")
        nr_pages = as_int(nr_pages, f"{op}: nr_pages", BadAddress, errno=EINVAL)
        if nr_pages <= 0:
            raise BadAddress(f"{op}: nr_pages must be a positive integer, got {nr_pages!r}", EINVAL)
        start, end = self._range(op, addr, nr_pages * PAGE_SIZE)
        self._covered(op, mm, start, end, need=VM_WRITE if write else VM_READ, errno=EFAULT)
        return mm, start

    def get_user_pages(self, pid, addr, nr_pages=1, write=False, foll_split=False):
        """Pin pages with the slow path (``get_user_pages(FOLL_GET)``); returns their pfns.

        With ``foll_split`` a THP is split first.  In v4.5 that split can
        fail: then the pages pinned before it are returned, or -- none
        pinned -- the kernel's ``-EBUSY``.
        """
        mm, start = self._pin_range("get_user_pages", pid, addr, nr_pages, write)
        foll_split = self._flag(foll_split, "get_user_pages: foll_split")
        if foll_split and not self.kernel.caps["foll_split"]:
            get_user_pages(self.kernel, mm, start, 0, write, foll_split=True)
        pages = get_user_pages(self.kernel, mm, start, int(nr_pages), write, foll_split)
        if np.ndim(pages) == 0:
            return int(pages)
        np.add.at(self.pins, pages, 1)
        return pages

    def get_user_pages_fast(self, pid, addr, nr_pages=1, write=False):
        """Pin pages with ``get_user_pages_fast()``; returns their pfns."""
        mm, start = self._pin_range("get_user_pages_fast", pid, addr, nr_pages, write)
        pages = get_user_pages_fast(self.kernel, mm, start, int(nr_pages), write)
        np.add.at(self.pins, pages, 1)
        return pages

    def put_page(self, pages):
        """Drop pins taken by :meth:`get_user_pages` (``put_page()`` per page)."""
        given = pages
        pages = self._int_array(pages)
        if pages is not None:
            pages = np.atleast_1d(pages)
        if pages is None or pages.ndim != 1:
            raise BadPage(f"put_page takes page-frame numbers, got {given!r:.60}")
        if not len(pages):
            raise BadPage("put_page: no page-frame number given (an empty list drops no pin)")
        for p in np.unique(pages).tolist():
            self._page(p)
        uniq, want = np.unique(pages, return_counts=True)
        over = np.flatnonzero(want > self.pins[uniq])
        if len(over):
            p, n = int(uniq[over[0]]), int(want[over[0]])
            raise BadPage(f"put_page({p:#x}): no pin on this page is held here "
                          f"({self.pins[p]} held, {n} dropped) -- a double put_page() "
                          "would free a page that is still in use")
        self.kernel.put_page(pages)
        np.subtract.at(self.pins, pages, 1)

    # ----------------------------------------------------------- THP entry points

    def split_huge_page(self, page):
        """Call ``split_huge_page()`` on the THP holding ``page``, as a kernel caller does.

        The caller's reference is taken and dropped around the call (reclaim
        and migration hold one; from v4.5 step 6 the page lock too).  Returns
        the kernel's result: 0, 1 or ``-EBUSY``.
        """
        page = self._page(page)
        if not PageCompound(self.mem_map, page) or self.mem_map["use"][page] != Use.anon:
            raise BadPage(f"pfn {page:#x} is not part of a transparent huge page")
        if self.mem_map["_count"][compound_head(self.mem_map, page)] <= 0:
            raise BadPage(f"pfn {page:#x} is free")
        head = int(compound_head(self.mem_map, page))
        k = self.kernel
        k.get_page(head)
        if k.caps.get("split_caller_locks"):
            # From v4.5's patch 31/37 the caller holds the page lock across the split.
            k.lock_page(head)
            ret = k.split_huge_page(head)
            k.unlock_page(head)
        else:
            ret = k.split_huge_page(head)
        k.put_page(head)
        return ret

    def split_huge_pmd(self, pid, addr):
        """Split the huge PMD mapping ``addr`` in ``pid`` the way the kernel's call sites do.

        Before patch 03 that is ``split_huge_page_pmd()`` (which splits the
        whole THP); from patch 04 on only this one PMD is split.
        """
        mm = self._mm(pid)
        start, _ = self._range("split_huge_pmd", self._addr("split_huge_pmd", addr) & PAGE_MASK, 1)
        self._covered("split_huge_pmd", mm, start, start + PAGE_SIZE, errno=EFAULT)
        pmdp = mem.pmd_offset(self.kernel, mm, start)
        if pmdp is None or not mem.pt.pmd_trans_huge(mem.entry(self.kernel, pmdp)):
            raise BadAddress(f"split_huge_pmd: {start:#x} in pid {pid} is not mapped by a huge PMD")
        self.kernel.split_pmd(mm.find_vma(start), pmdp, start)

    def _v45(self, name):
        if not self.kernel.has(name):
            raise KernelFunctionRemoved(f"{name}() does not exist in {self.kernel.name}: the deferred "
                                        "split queue came with v4.5 (PATCHv12 34/37; "
                                        "Machine.boot(kernel='v4.5'))")
        return getattr(self.kernel, name)

    def split_queue(self, node=0):
        """The THP heads on v4.5's deferred split queue of ``node``, first to be scanned first."""
        self._v45("deferred_split_count")
        return list(self.split_queues[self._node(node)])

    def split_queue_len(self, node=0):
        """``NODE_DATA(node)->split_queue_len``: THPs on v4.5's deferred split queue of ``node``."""
        self._v45("deferred_split_count")
        return len(self.split_queues[self._node(node)])

    def deferred_split_count(self, node=0):
        """``deferred_split_count()``: how many THPs are queued on ``node`` (v4.5)."""
        return self._v45("deferred_split_count")(self._node(node))

    def deferred_split_scan(self, nr_to_scan=128, node=0):
        """``deferred_split_scan()``: the shrinker splits up to ``nr_to_scan`` queued THPs (v4.5).

        Returns how many it split, or ``thplab.params.SHRINK_STOP`` when it
        split none and the queue is empty.
        """
        nr = as_int(nr_to_scan, "nr_to_scan")
        if nr < 1:
            raise BadArgument(f"nr_to_scan must be >= 1 (a shrinker is asked for at least one), got {nr}")
        return self._v45("deferred_split_scan")(nr, self._node(node))

    def drop_caches(self, mode=2):
        """``echo mode > /proc/sys/vm/drop_caches``: 2 (or 3) runs the shrinkers (``drop_slab()``).

        thplab has no page cache, so 1 drops nothing; the one shrinker it
        models is v4.5's deferred split queue.
        """
        mode = as_int(mode, "drop_caches mode")
        if not 1 <= mode <= 4:
            raise BadArgument(f"drop_caches takes 1..4, got {mode} (the sysctl refuses others: -EINVAL)")
        if mode & 2:
            self.kernel.drop_slab()

    def move_pages(self, pid, addrs, node):
        """``move_pages(2)``: migrate the pages at ``addrs`` to NUMA ``node``; per-page status.

        Each status is the page's node after the call, or ``-EFAULT`` (no VMA
        there), ``-ENOENT`` (never touched), ``-EACCES`` (mapped by another
        process), ``-EBUSY`` (could not be isolated or split), ``-EAGAIN``.
        """
        mm = self._mm(pid)
        node = self._node(node)
        many = addrs.tolist() if isinstance(addrs, np.ndarray) else addrs
        if not isinstance(many, (list, tuple)):
            many = [many]
        addrs = [self._range("move_pages", a, 1)[0] for a in many]
        # An address outside every VMA is not an error of the call: its status is -EFAULT.
        return self.kernel.do_move_page_to_node_array(mm, addrs, node)

    def get_futex_key(self, pid, addr, write=False):
        """``get_futex_key()`` for a shared futex at ``addr``; returns the key or ``-errno``.

        ``write=False`` is ``VERIFY_READ`` (FUTEX_WAIT, FUTEX_WAKE), ``True``
        is ``VERIFY_WRITE``.  The kernel pins the word for writing either way
        and, for a read, falls back to a read-only pin -- which on anonymous
        memory ends in ``-EFAULT``.  An address that is not 4-byte aligned
        gives ``-EINVAL``.
        """
        mm = self._mm(pid)
        addr = self._addr("get_futex_key", addr)
        start, _ = self._range("get_futex_key", addr & PAGE_MASK, 1)
        if addr % 4:
            return -EINVAL  # the kernel tests this before it looks at any mapping
        self._covered("get_futex_key", mm, start, start + PAGE_SIZE, need=VM_READ, errno=EFAULT)
        return self.kernel.get_futex_key(mm, int(addr), VERIFY_WRITE if write else VERIFY_READ)

    # ----------------------------------------------------------- reading state

    @staticmethod
    def _int_array(values):
        """``values`` (an int, a list of ints or an integer array) as an int64 array, or None.

        None for anything else: bools, floats, strings, None, and integers no
        int64 holds (``np.uint64`` above 2**63, Python ints beyond).  An empty
        list is an empty array of pfns/addresses, as an empty integer array is.
        """
        try:
            a = np.asarray(values)
        except (OverflowError, ValueError):       # ragged or enormous
            return None
        if a.size == 0 and a.dtype.kind in "iuf":
            return a.astype(np.int64)
        if a.dtype.kind == "O" and a.size and all(
                is_int(v) and -2**63 <= v < 2**63 for v in a.ravel().tolist()):
            a = a.astype(np.int64)
        if a.dtype.kind not in "iu" or (a.dtype == np.uint64 and (a > np.iinfo(np.int64).max).any()):
            return None
        return a.astype(np.int64)

    def _pfns(self, pages, op):
        """``pages`` as an array of valid pfns, or :class:`BadPage` (never a numpy IndexError)."""
        given = pages
        pages = self._int_array(pages)
        if pages is None or ((pages < 0) | (pages >= self.nr_pages)).any():
            raise BadPage(f"{op} takes page-frame numbers 0..{self.nr_pages - 1:#x}; "
                          f"got {given!r:.60}")
        return pages

    def page_count(self, pages):
        """``page_count()`` of pages (vectorized)."""
        return self.kernel.page_count(self._pfns(pages, "page_count"))

    def page_mapcount(self, pages):
        """``page_mapcount()`` of this level (vectorized)."""
        return self.kernel.page_mapcount(self._pfns(pages, "page_mapcount"))

    def thp_heads(self):
        """pfns of every compound (THP) head page, in order.

        A THP is an order-9 block, so its head sits on a 2 MiB boundary: only
        one ``struct page`` in 512 is read (8,192 at 16 GiB), not all of them.
        """
        return np.flatnonzero(self.mem_map["flags"][::HPAGE_PMD_NR] & np.uint32(1 << PG.head)) * HPAGE_PMD_NR

    def anon_rss(self, pid):
        """``MM_ANONPAGES`` of a process, in 4 KiB pages."""
        return self._mm(pid).anon_rss

    def smaps_anon_huge_kb(self, pid, addr, length):
        """``AnonHugePages`` of ``/proc/pid/smaps`` for a range: 2048 kB per huge PMD."""
        mm = self._mm(pid)
        start, end = self._range("smaps", addr, length)
        heads = np.arange(start & HPAGE_PMD_MASK, end, HPAGE_PMD_SIZE, dtype=np.uint64)
        heads = heads[heads >= start]
        return int((mem.walk(self.kernel, mm, heads)["level"] == 2).sum()) * 2048

    def check(self):
        """Check every invariant of this level; raise :class:`InvariantViolation` on failure."""
        from .invariants import check

        check(self)

    def PageTail(self, pages):
        """Mirrors ``PageTail()`` (vectorized)."""
        return PageTail(self.mem_map, self._pfns(pages, "PageTail"))


__all__ = ["Machine", "parse_size", "parse_prot"]
