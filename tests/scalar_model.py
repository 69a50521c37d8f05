"""A deliberately simple, per-page SCALAR model of THP refcounting, for differential tests.

No numpy: every ``struct page`` is a Python object, every operation on a THP is
a loop over its 512 subpages, page tables are dicts.  It implements the same
semantics as thplab (kernel-semantics.md §1 for the old scheme, §2 for RFC v1,
docs/v4.5-stack.md §2-§3 and the 4.5.7 sources for the merged design) from
first principles, so that a disagreement with the vectorized model points at a
bug in one of the two.

What it shares with thplab is only the *deterministic policy* needed to get the
same page-frame numbers: a buddy allocator handing out the lowest pfn of the
smallest free block, page-table pages allocated at the same moments (PGD at
spawn; PUD, PMD and PTE tables on first use; one deposited PTE table per huge
PMD), and the same VMA layout rules (2 MiB-aligned ``mmap`` placement, VMA
splitting and merging).

Switches instead of levels (``ScalarMachine(level=k)`` sets them as patch k does;
``ScalarMachine(level=k, stack="v4.5")`` as step k of the merged stack does):

* ``tail_pins``        (levels 0-3; v4.5 steps 0-1) get_page/put_page on a THP tail
                       also moves the tail's ``_mapcount``; later only the head's ``_count``.
* ``pte_mapped_thp``   (levels 4+; v4.5 step 7) a PMD split splits only that PMD (head
                       ``_count`` += 511, tails ``_mapcount`` += 1); before, it splits the page.
* ``split_can_fail``   (levels 4+; v4.5 step 7) ``split_huge_page`` needs Σ page_mapcount ==
                       page_count - 1; ``split_stub`` (levels 4-5) always -EBUSY.
* ``new_events``       (levels 5+; v4.5 steps 1+) thp_split_page / _failed / thp_split_pmd
                       instead of thp_split.
* ``thp_broken``       (v4.5 steps 2-6) THP depends on BROKEN: a THP fault falls back
                       silently to 4 KiB pages, so no THP ever exists.
* ``compound_mapcount`` (v4.5 step 7) patch 26's accounting: a PMD map counts in
                       page[1]'s ``compound_mapcount``, ``_mapcount`` counts PTEs only,
                       PageDoubleMap (page[1]) offsets every subpage while PMD and PTE
                       maps coexist; the PMD split is v4.5's ``__split_huge_pmd_locked``.
* ``freeze_split``     (v4.5 step 7) ``split_huge_page`` freezes the mappings into
                       migration entries, checks, splits and unfreezes (patch 32).
* ``deferred_split``   (v4.5 step 7) the deferred split queue, its shrinker and
                       ``free_transhuge_page`` (patch 34 and the Jan 2016 fixes).
* ``cow_max_mapcount`` (v4.5 step 7) COW reuse of a THP (sub)page is decided by
                       ``page_trans_huge_mapcount()`` (4.5.y stable; 4.5.0 differs).

Steps 2-6 of v4.5 add code no THP can reach while THP is BROKEN, so the switches
of the merged design turn on with the THPs, at step 7: steps 2-6 share one scalar model.

Mappings: ``proc.ptes[vaddr >> 12] = [pfn, writable]`` and
``proc.huge[vaddr >> 21] = [head pfn, writable]``.
"""

PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT
PMD_SHIFT = 21
HPAGE = 1 << PMD_SHIFT
HPAGE_NR = 512
PUD_SHIFT = 30
PGD_SHIFT = 39
MAX_ORDER = 9
MMAP_BASE = 0x7F0000000000
EBUSY = 16
SHRINK_STOP = (1 << 64) - 1   # ~0UL
SHRINK_BATCH = 128

#: The last step of each stack ``ScalarMachine`` models.
STACKS = {"rfc-v1": 10, "v4.5": 7}

VM_READ, VM_WRITE, VM_EXEC = 0x1, 0x2, 0x4
VM_MAYREAD, VM_MAYWRITE, VM_MAYEXEC = 0x10, 0x20, 0x40
VM_HUGEPAGE = 0x20000000

FREE, ANON, PGTABLE = 0, 1, 2   # same numbering as thplab.page_flags.Use


class ScalarOOM(Exception):
    """No free block of the order asked for."""


class ScalarBug(Exception):
    """The scalar model reached a state it considers impossible."""


def up(x, align):
    return (x + align - 1) // align * align


def down(x, align):
    return x // align * align


class Page:
    """One ``struct page``: raw ``_count``, biased ``_mapcount``, compound linkage.

    v4.5 keeps two THP fields in the first tails (mm_types.h, 4.5.7):
    ``compound_mapcount`` and ``double_map`` are read on page[1] only, and
    ``deferred_list`` (the list_head at page[2].mapping) on page[2] only.
    """

    __slots__ = ("_count", "_mapcount", "head", "order", "use", "compound_mapcount", "double_map",
                 "deferred_list")

    def __init__(self):
        self._count = 0
        self._mapcount = -1
        self.head = None      # pfn of the head, for a tail page
        self.order = 0        # 9 on a THP head
        self.use = FREE
        self.compound_mapcount = -1   # page[1]: PMD maps of the THP, biased -1
        self.double_map = False       # page[1]: PG_double_map
        self.deferred_list = None     # page[2]: the list the THP is queued on; None = not queued


class Vma:
    __slots__ = ("start", "end", "flags", "pgoff", "anon_vma")

    def __init__(self, start, end, flags, pgoff, anon_vma=None):
        self.start, self.end, self.flags, self.pgoff = start, end, flags, pgoff
        self.anon_vma = anon_vma


class Proc:
    def __init__(self, pid, pgd, mmap_base):
        self.pid = pid
        self.pgd = pgd
        self.vmas = []
        self.pud = {}          # va >> 39 -> PUD table pfn
        self.pmd_tables = {}   # va >> 30 -> PMD table pfn
        self.pte_tables = {}   # va >> 21 -> PTE table pfn (a non-huge PMD)
        self.huge = {}         # va >> 21 -> [head pfn, writable]
        self.ptes = {}         # va >> 12 -> [pfn, writable]
        self.deposits = {}     # PMD table pfn -> [deposited PTE table pfns], newest last
        self.anon_rss = 0
        self.nr_ptes = 0
        self.mmap_base = mmap_base

    def find_vma(self, va):
        for v in self.vmas:
            if v.start <= va < v.end:
                return v
        return None

    def vmas_in(self, start, end):
        return [v for v in self.vmas if v.start < end and v.end > start]

    def unused(self, lo, size):
        return not self.vmas_in(lo, lo + size)


def _default_switches(stack, level):
    """The switches patch ``level`` of the RFC, or step ``level`` of v4.5, sets."""
    if stack == "rfc-v1":
        return {"tail_pins": level < 4, "pte_mapped_thp": level >= 4, "split_can_fail": level >= 4,
                "split_stub": level in (4, 5), "new_events": level >= 5}
    thp = level >= 7
    return {"tail_pins": level < 2, "pte_mapped_thp": thp, "split_can_fail": thp, "split_stub": False,
            "new_events": level >= 1}


class ScalarMachine:
    """The whole machine, one Python object per page."""

    def __init__(self, nr_pages, level=0, stack="rfc-v1", *, tail_pins=None, pte_mapped_thp=None,
                 split_can_fail=None, split_stub=None, new_events=None, thp="madvise"):
        if stack not in STACKS or not 0 <= level <= STACKS[stack]:
            raise ValueError(f"no level {level!r} of stack {stack!r} (stacks: {STACKS})")
        self.stack = stack
        self.level = level
        default = _default_switches(stack, level)
        self.tail_pins = default["tail_pins"] if tail_pins is None else tail_pins
        self.pte_mapped_thp = default["pte_mapped_thp"] if pte_mapped_thp is None else pte_mapped_thp
        self.split_can_fail = default["split_can_fail"] if split_can_fail is None else split_can_fail
        self.split_stub = default["split_stub"] if split_stub is None else split_stub
        self.new_events = default["new_events"] if new_events is None else new_events
        v45 = stack == "v4.5"
        self.thp_broken = v45 and 2 <= level <= 6
        self.compound_mapcount = self.freeze_split = v45 and level >= 7
        self.deferred_split = self.cow_max_mapcount = v45 and level >= 7
        # SIMPLIFICATION: one NUMA node, so one split queue (pglist_data.split_queue of node 0).
        self.split_queue = []
        self.nr_deferred = 0      # shrinker->nr_deferred[0] of the deferred split shrinker
        self.thp = thp
        self.nr_pages = nr_pages
        self.pages = [Page() for _ in range(nr_pages)]
        self.free = [set() for _ in range(MAX_ORDER + 1)]
        for pfn in range(0, nr_pages, 1 << MAX_ORDER):
            self._free_push(pfn, MAX_ORDER)
        self.nr_free = nr_pages
        self.procs = {}
        self.next_pid = 1
        self.next_anon_vma = 1
        self.pins = {}
        events = (["thp_split_page", "thp_split_page_failed", "thp_split_pmd"]
                  if self.new_events else ["thp_split"])
        self.vmstat = dict.fromkeys(["nr_page_table_pages", "nr_anon_transparent_hugepages",
                                     "thp_fault_alloc", "thp_fault_fallback"] + events, 0)

    # ------------------------------------------------------------ buddy allocator

    def _free_push(self, pfn, order):
        self.free[order].add(pfn)
        self.pages[pfn]._mapcount = -128

    def _free_take(self, pfn, order):
        self.free[order].remove(pfn)
        self.pages[pfn]._mapcount = -1

    def can_alloc(self, order):
        return any(self.free[o] for o in range(order, MAX_ORDER + 1))

    def alloc(self, order, use):
        for o in range(order, MAX_ORDER + 1):
            if self.free[o]:
                pfn = min(self.free[o])
                self._free_take(pfn, o)
                break
        else:
            raise ScalarOOM(f"no free block of order {order}")
        while o > order:
            o -= 1
            self._free_push(pfn + (1 << o), o)
        self.nr_free -= 1 << order
        for i in range(pfn, pfn + (1 << order)):
            p = self.pages[i]
            p._count, p._mapcount, p.use, p.head, p.order = 0, -1, use, None, 0
        self.pages[pfn]._count = 1
        if order:
            self.pages[pfn].order = order
            for i in range(pfn + 1, pfn + (1 << order)):
                self.pages[i].head = pfn
            # prep_compound_page() and prep_transhuge_page() (4.5.7): no PMD map, not queued
            self.pages[pfn + 1].compound_mapcount = -1
            self.pages[pfn + 2].deferred_list = None
        return pfn

    def free_block(self, pfn):
        """Free a page (or a whole THP, given its head) whose ``_count`` is 0."""
        order = self.pages[pfn].order
        if order and (self.pages[pfn + 1].compound_mapcount != -1 or self.pages[pfn + 1].double_map
                      or self.pages[pfn + 2].deferred_list is not None):
            # free_tail_pages_check() (4.5.7 mm/page_alloc.c): no PMD map left, DoubleMap
            # clear; free_transhuge_page() took it off the split queue
            raise ScalarBug(f"freeing THP {pfn:#x} still PMD-mapped, DoubleMap or queued")
        for i in range(pfn, pfn + (1 << order)):
            p = self.pages[i]
            if p._count != 0 or p._mapcount != -1 or p.use == FREE:
                raise ScalarBug(f"freeing pfn {i:#x} in a bad state")
            p.use, p.head, p.order = FREE, None, 0
        self.nr_free += 1 << order
        while order < MAX_ORDER:
            buddy = pfn ^ (1 << order)
            if buddy not in self.free[order]:
                break
            self._free_take(buddy, order)
            pfn = min(pfn, buddy)
            order += 1
        self._free_push(pfn, order)

    # ------------------------------------------------------------ struct page helpers

    def head_of(self, pfn):
        h = self.pages[pfn].head
        return pfn if h is None else h

    def is_tail(self, pfn):
        return self.pages[pfn].head is not None

    def is_thp_head(self, pfn):
        return self.pages[pfn].order > 0

    def get_page(self, pfn):
        head = self.head_of(pfn)
        if self.pages[head]._count <= 0:
            raise ScalarBug(f"get_page on free pfn {pfn:#x}")
        self.pages[head]._count += 1
        if self.tail_pins and self.is_tail(pfn):
            self.pages[pfn]._mapcount += 1

    def put_page(self, pfn):
        head = self.head_of(pfn)
        if self.pages[head]._count <= 0:
            raise ScalarBug(f"put_page on free pfn {pfn:#x}")
        if self.tail_pins and self.is_tail(pfn):
            self.pages[pfn]._mapcount -= 1
        self.pages[head]._count -= 1
        if self.pages[head]._count == 0:
            if self.deferred_split and self.is_thp_head(head):
                self.free_transhuge_page(head)
            else:
                self.free_block(head)

    def free_transhuge_page(self, head):
        """Mirrors ``free_transhuge_page()`` (mm/huge_memory.c, 4.5.7 L3492): the THP's
        destructor takes it off the split queue, then frees it."""
        if self.pages[head + 2].deferred_list is not None:
            self._list_del(head)
        self.free_block(head)

    def page_mapcount(self, pfn):
        """``page_mapcount()``; from v4.5 (``__page_mapcount``, mm/util.c) a THP subpage also
        counts the PMD maps, less 1 while DoubleMap offsets its ``_mapcount``."""
        head = self.head_of(pfn)
        if self.compound_mapcount and self.is_thp_head(head):
            p1 = self.pages[head + 1]
            return self.pages[pfn]._mapcount + 1 + p1.compound_mapcount + 1 - p1.double_map
        return self.pages[pfn]._mapcount + 1

    def PageDoubleMap(self, pfn):
        """Mirrors ``PageDoubleMap()`` (page-flags.h, 4.5.7): the flag of page[1], 0 for a tail."""
        return self.is_thp_head(pfn) and self.pages[pfn + 1].double_map

    def total_mapcount(self, head):
        """Mirrors ``total_mapcount()`` (mm/huge_memory.c, 4.5.7 L3316): page-table entries
        (PMD or PTE) that map any part of the THP ``head``."""
        if not self.is_thp_head(head):
            return self.pages[head]._mapcount + 1
        ret = self.pages[head + 1].compound_mapcount + 1
        ret += sum(self.pages[head + i]._mapcount + 1 for i in range(HPAGE_NR))
        return ret - HPAGE_NR * self.PageDoubleMap(head)

    def page_trans_huge_mapcount(self, pfn):
        """Mirrors ``page_trans_huge_mapcount()`` (4.5.7 L3359, not in 4.5.0): the highest
        ``page_mapcount`` of any subpage of the THP holding ``pfn``."""
        head = self.head_of(pfn)
        if not self.is_thp_head(head):
            return self.pages[pfn]._mapcount + 1
        ret = max(self.pages[head + i]._mapcount + 1 for i in range(HPAGE_NR))
        return ret - self.PageDoubleMap(head) + self.pages[head + 1].compound_mapcount + 1

    def page_mapped(self, pfn):
        """Mirrors ``page_mapped()`` (mm.h, 4.5.7 L1014): a PMD or any PTE maps the THP."""
        head = self.head_of(pfn)
        if not (self.compound_mapcount and self.is_thp_head(head)):
            return self.pages[pfn]._mapcount >= 0
        return (self.pages[head + 1].compound_mapcount >= 0
                or any(self.pages[head + i]._mapcount >= 0 for i in range(HPAGE_NR)))

    def page_add_new_anon_rmap(self, pfn, compound=False):
        if compound and self.compound_mapcount:
            # v4.5 (patch 26): the PMD map counts in page[1], not in the head's _mapcount
            self.pages[pfn + 1].compound_mapcount = 0
            self.vmstat["nr_anon_transparent_hugepages"] += 1
            return
        self.pages[pfn]._mapcount = 0
        if self.is_thp_head(pfn):
            self.vmstat["nr_anon_transparent_hugepages"] += 1

    def page_add_anon_rmap(self, pfn):
        """``page_add_anon_rmap(page, vma, address, false)``: one more PTE map."""
        self.pages[pfn]._mapcount += 1

    def page_dup_rmap(self, pfn, compound):
        """``page_dup_rmap()`` (fork): one more PMD map (``compound``) or PTE map."""
        if compound and self.compound_mapcount:
            self.pages[pfn + 1].compound_mapcount += 1
        else:
            self.pages[pfn]._mapcount += 1

    def page_remove_rmap(self, pfn, compound=False):
        if self.compound_mapcount:
            self._v45_page_remove_rmap(pfn, compound)
            return
        self.pages[pfn]._mapcount -= 1
        # v3.16 mm/rmap.c, which the RFC leaves alone: the head's _mapcount reaching -1
        # (its PMD, or from patch 04 on also the PTE of subpage 0) leaves the count.
        if self.is_thp_head(pfn) and self.pages[pfn]._mapcount == -1:
            self.vmstat["nr_anon_transparent_hugepages"] -= 1

    def _v45_page_remove_rmap(self, pfn, compound):
        """Mirrors ``page_remove_rmap()`` (mm/rmap.c, 4.5.7 L1378) for anon pages."""
        if compound:
            self.page_remove_anon_compound_rmap(pfn)
            return
        p = self.pages[pfn]
        p._mapcount -= 1
        head = self.head_of(pfn)
        # The last PTE of a subpage of a THP that stays compound: queue it (patch 34).
        if p._mapcount == -1 and self.deferred_split and self.is_thp_head(head):
            self.deferred_split_huge_page(head)

    def page_remove_anon_compound_rmap(self, head):
        """Mirrors ``page_remove_anon_compound_rmap()`` (mm/rmap.c, 4.5.7 L1333): one PMD map
        less; the last one leaves nr_anon_transparent_hugepages, clears DoubleMap, and
        queues the THP if any subpage lost its last map (``nr``: all 512 without DoubleMap)."""
        p1 = self.pages[head + 1]
        p1.compound_mapcount -= 1
        if p1.compound_mapcount >= 0:
            return
        self.vmstat["nr_anon_transparent_hugepages"] -= 1
        if p1.double_map:
            p1.double_map = False
            nr = 0
            for i in range(HPAGE_NR):
                self.pages[head + i]._mapcount -= 1
                nr += self.pages[head + i]._mapcount == -1
        else:
            nr = HPAGE_NR
        if nr and self.deferred_split:
            self.deferred_split_huge_page(head)

    # ------------------------------------------------------------ v4.5: the deferred split queue

    def deferred_split_huge_page(self, head):
        """Mirrors ``deferred_split_huge_page()`` (4.5.7 L3506): queue at the tail, once."""
        if not self.is_thp_head(head):
            raise ScalarBug(f"deferred_split_huge_page({head:#x}): not a THP head")
        p2 = self.pages[head + 2]
        if p2.deferred_list is None:
            self.split_queue.append(head)
            p2.deferred_list = self.split_queue

    def _list_del(self, head):
        """``list_del(page_deferred_list(head))`` from whichever list holds it (``len`` -1)."""
        p2 = self.pages[head + 2]
        p2.deferred_list.remove(head)
        p2.deferred_list = None

    def deferred_split_scan(self, nr_to_scan):
        """Mirrors ``deferred_split_scan()`` (mm/huge_memory.c, 4.5.7 L3528), ``nr_to_scan`` >= 1.

        Pin up to ``nr_to_scan`` THPs from the queue's head onto a local list, then
        lock, split, unlock and put each; the ones not split go back to the queue's
        tail.  ``list_move()`` (L3543) puts each pinned THP at the *front* of the local
        list, so they are split, and spliced back (L3565), in reverse queue order.
        Returns the number split, or ``SHRINK_STOP`` if none was and the queue is empty.
        """
        taken, self.split_queue[:nr_to_scan] = self.split_queue[:nr_to_scan], []
        local = []
        for head in taken:
            if self.pages[head]._count == 0:
                # get_page_unless_zero() fails only on a THP being freed concurrently;
                # here free_transhuge_page() has already taken every freed THP off.
                raise ScalarBug(f"deferred_split_scan: THP {head:#x} queued with _count 0")
            self.pages[head]._count += 1
            local.insert(0, head)
            self.pages[head + 2].deferred_list = local
        split = 0
        for head in list(local):
            # SIMPLIFICATION: no page lock (lock_page / unlock_page around the split)
            if self.split_huge_page(head) == 0:   # a split THP leaves `local`
                split += 1
            self.put_page(head)
        for head in local:
            self.pages[head + 2].deferred_list = self.split_queue
        self.split_queue.extend(local)
        if not split and not self.split_queue:
            return SHRINK_STOP
        return split

    def drop_caches(self, mode):
        """``echo mode > /proc/sys/vm/drop_caches``: bit 2 runs the slab shrinkers, here the
        deferred split shrinker (the only one modelled; page cache is not).

        4.5.7 mm/vmscan.c drop_slab_node() (L454): shrink_slab(1000, 1000) again while it
        freed more than 10; do_shrink_slab() (L267) asks count_objects, scans
        2000 * count // 1001 (+ nr_deferred, capped at twice the count; at most count // 2
        when that is under a quarter) in batches of SHRINK_BATCH, stops at SHRINK_STOP and
        keeps the unscanned rest in nr_deferred.
        """
        if not (mode & 2 and self.deferred_split):
            return
        while True:
            freed = 0
            freeable = len(self.split_queue)
            if freeable:
                total = self.nr_deferred
                self.nr_deferred = 0
                delta = 2000 * freeable // 1001
                total += delta
                if delta < freeable // 4:
                    total = min(total, freeable // 2)
                total = min(total, 2 * freeable)
                while total >= SHRINK_BATCH or total >= freeable:
                    n = min(SHRINK_BATCH, total)
                    ret = self.deferred_split_scan(n)
                    if ret == SHRINK_STOP:
                        break
                    freed += ret
                    total -= n
                if total > 0:
                    self.nr_deferred += total
            if freed <= 10:
                return

    # ------------------------------------------------------------ page tables

    def table_alloc(self):
        return self.alloc(0, PGTABLE)

    def table_free(self, pfn):
        self.pages[pfn]._count -= 1
        self.free_block(pfn)

    def pte_alloc_one(self):
        pfn = self.table_alloc()
        self.vmstat["nr_page_table_pages"] += 1
        return pfn

    def pte_free(self, pfn):
        self.table_free(pfn)
        self.vmstat["nr_page_table_pages"] -= 1

    def pmd_offset(self, proc, va, alloc):
        """The PMD table pfn covering ``va`` (allocating PUD/PMD tables if asked), or None."""
        g, r = va >> PGD_SHIFT, va >> PUD_SHIFT
        if g not in proc.pud:
            if not alloc:
                return None
            proc.pud[g] = self.table_alloc()
        if r not in proc.pmd_tables:
            if not alloc:
                return None
            proc.pmd_tables[r] = self.table_alloc()
        return proc.pmd_tables[r]

    def pmd_table_of(self, proc, region):
        return proc.pmd_tables[(region << PMD_SHIFT) >> PUD_SHIFT]

    def deposit(self, proc, region, table):
        proc.deposits.setdefault(self.pmd_table_of(proc, region), []).append(table)

    def withdraw(self, proc, region):
        key = self.pmd_table_of(proc, region)
        table = proc.deposits[key].pop()
        if not proc.deposits[key]:
            del proc.deposits[key]
        return table

    def lookup(self, proc, va):
        """``(pfn, writable)`` mapped at ``va`` or None."""
        h = proc.huge.get(va >> PMD_SHIFT)
        if h is not None:
            return h[0] + ((va >> PAGE_SHIFT) & (HPAGE_NR - 1)), h[1]
        e = proc.ptes.get(va >> PAGE_SHIFT)
        return None if e is None else (e[0], e[1])

    # ------------------------------------------------------------ THP: PMD split and page split

    def split_pmd(self, proc, vma, va):
        """What the call sites call (zap, mprotect, VMA boundary, COW fallback, the API)."""
        region = va >> PMD_SHIFT
        if self.compound_mapcount:
            if region in proc.huge:
                self.__split_huge_pmd_locked(proc, vma, region, freeze=False)
        elif self.pte_mapped_thp:
            self.__split_huge_pmd(proc, vma, region)
        else:
            while region in proc.huge:           # split_huge_page_pmd(): the whole page
                head = proc.huge[region][0]
                self.get_page(head)
                self.split_huge_page(head)
                self.put_page(head)

    def _pmd_to_ptes(self, proc, vma, region, head, writable):
        table = self.withdraw(proc, region)
        proc.pte_tables[region] = table
        w = writable and bool(vma.flags & VM_WRITE)
        base = region << (PMD_SHIFT - PAGE_SHIFT)
        for i in range(HPAGE_NR):
            proc.ptes[base + i] = [head + i, w]

    def __split_huge_pmd(self, proc, vma, region):
        if region not in proc.huge:
            return
        if self.new_events:
            self.vmstat["thp_split_pmd"] += 1
        head, writable = proc.huge.pop(region)
        self.pages[head]._count += HPAGE_NR - 1
        for i in range(1, HPAGE_NR):
            self.pages[head + i]._mapcount += 1
        self._pmd_to_ptes(proc, vma, region, head, writable)

    def __split_huge_pmd_locked(self, proc, vma, region, freeze):
        """Mirrors ``__split_huge_pmd_locked()`` (mm/huge_memory.c, 4.5.7 L2824).

        The head's ``_count`` takes 511 more references and every subpage's
        ``_mapcount`` one more (its PTE); DoubleMap is set (+1 on every subpage) before
        the PMD's ``compound_mapcount`` goes if another PMD still maps the THP, and
        cleared (-1 on every subpage) when that was the last.  With ``freeze`` the 512
        entries are migration entries instead: they are returned as ``(proc, vpage,
        pfn, write)`` and each subpage loses that map and reference again.
        """
        self.vmstat["thp_split_pmd"] += 1
        head, write = proc.huge.pop(region)
        self.pages[head]._count += HPAGE_NR - 1
        proc.pte_tables[region] = self.withdraw(proc, region)
        base = region << (PMD_SHIFT - PAGE_SHIFT)
        frozen = []
        for i in range(HPAGE_NR):
            if freeze:
                frozen.append((proc, base + i, head + i, write))
            else:
                proc.ptes[base + i] = [head + i, write and bool(vma.flags & VM_WRITE)]
            self.pages[head + i]._mapcount += 1
        p1 = self.pages[head + 1]
        if p1.compound_mapcount + 1 > 1 and not p1.double_map:
            p1.double_map = True
            for i in range(HPAGE_NR):
                self.pages[head + i]._mapcount += 1
        p1.compound_mapcount -= 1
        if p1.compound_mapcount == -1:
            self.vmstat["nr_anon_transparent_hugepages"] -= 1
            if p1.double_map:
                p1.double_map = False
                for i in range(HPAGE_NR):
                    self.pages[head + i]._mapcount -= 1
        if freeze:
            for i in range(HPAGE_NR):
                self.page_remove_rmap(head + i)
                self.put_page(head + i)
        return frozen

    def _pmds_mapping(self, head):
        """Every (proc, vma, region) whose huge PMD maps THP ``head`` -- by brute force."""
        out = []
        for proc in self.procs.values():
            for region, (h, _) in sorted(proc.huge.items()):
                if h == head:
                    out.append((proc, proc.find_vma(region << PMD_SHIFT), region))
        return out

    def _clear_compound(self, head):
        self.pages[head].order = 0
        for i in range(head + 1, head + HPAGE_NR):
            self.pages[i].head = None

    def split_huge_page(self, head):
        """``split_huge_page()`` of this configuration; the caller holds a reference."""
        if self.freeze_split:
            return self._freeze_split(head)
        if self.split_stub:
            if self.new_events:
                self.vmstat["thp_split_page_failed"] += 1
            return -EBUSY
        if not self.split_can_fail:
            return self._old_split(head)
        return self._v1_split(head)

    def _old_split(self, head):
        hp = self.pages[head]
        if hp._mapcount < 0:
            return 1
        pmds = self._pmds_mapping(head)
        if len(pmds) != self.page_mapcount(head):
            raise ScalarBug(f"old split: {len(pmds)} PMDs but mapcount {self.page_mapcount(head)}")
        writable = {(p.pid, r): p.huge[r][1] for p, _, r in pmds}
        tail_pins = 0
        for i in range(1, HPAGE_NR):
            t = self.pages[head + i]
            pins = t._mapcount + 1
            tail_pins += pins
            t._count += hp._mapcount + 1 + pins + 1
            t._mapcount = hp._mapcount
        hp._count -= tail_pins
        self.vmstat["nr_anon_transparent_hugepages"] -= 1
        self._clear_compound(head)
        for i in range(1, HPAGE_NR):
            self.put_page(head + i)
        for proc, vma, region in pmds:
            del proc.huge[region]
            self._pmd_to_ptes(proc, vma, region, head, writable[(proc.pid, region)])
        key = "thp_split_page" if self.new_events else "thp_split"
        self.vmstat[key] += 1
        return 0

    def _total_mapcount(self, head):
        return sum(self.page_mapcount(head + i) for i in range(HPAGE_NR))

    def _v1_split(self, head):
        if self.pages[head]._mapcount < 0:
            # page_get_anon_vma() needs page_mapped(head): the head's own _mapcount,
            # which in v1 counts PMD maps + PTE maps of subpage 0 only
            self.vmstat["thp_split_page_failed"] += 1
            return -EBUSY
        count = self.pages[head]._count
        if self._total_mapcount(head) != count - 1:
            self.vmstat["thp_split_page_failed"] += 1
            return -EBUSY
        for proc, vma, region in self._pmds_mapping(head):
            self.__split_huge_pmd(proc, vma, region)
        total = 0
        for i in range(1, HPAGE_NR):
            t = self.pages[head + i]
            mc = t._mapcount + 1
            total += mc
            t._count += mc + 1
        self.pages[head]._count -= total
        self.vmstat["nr_anon_transparent_hugepages"] -= 1
        self._clear_compound(head)
        for i in range(1, HPAGE_NR):
            self.put_page(head + i)
        self.vmstat["thp_split_page"] += 1
        return 0

    def freeze_page(self, head):
        """Mirrors ``freeze_page()`` (4.5.7 L3116): every PMD and PTE that maps the THP
        becomes a migration entry, its map and reference dropped; returns the entries.

        Brute force over all processes stands for the anon_vma interval tree: without
        mremap a subpage is mapped only at its own address.
        """
        frozen = []
        for pid in sorted(self.procs):
            proc = self.procs[pid]
            for region in sorted(r for r, (h, _) in proc.huge.items() if h == head):
                frozen += self.__split_huge_pmd_locked(proc, proc.find_vma(region << PMD_SHIFT),
                                                       region, freeze=True)
            for vp in sorted(vp for vp, e in proc.ptes.items() if head <= e[0] < head + HPAGE_NR):
                pfn, write = proc.ptes.pop(vp)
                frozen.append((proc, vp, pfn, write))
                self.page_remove_rmap(pfn)
                self.put_page(pfn)
        return frozen

    def unfreeze_page(self, frozen):
        """Mirrors ``unfreeze_page()`` (4.5.7 L3199): each migration entry maps its page
        again, with a reference and a PTE map (writable if it was a write entry and the
        VMA allows it).  After ``__split_huge_page`` these land on the small pages."""
        for proc, vp, pfn, write in frozen:
            self.get_page(pfn)
            self.page_add_anon_rmap(pfn)
            proc.ptes[vp] = [pfn, write and bool(proc.find_vma(vp << PAGE_SHIFT).flags & VM_WRITE)]

    def _freeze_split(self, head):
        """Mirrors ``split_huge_page_to_list()`` (mm/huge_memory.c, 4.5.7 L3412).

        SIMPLIFICATION: no page lock and no anon_vma lock (the caller's lock_page and
        the split's anon_vma_lock_write serialise against other splits and rmap walks).
        """
        if not self.page_mapped(head):
            ret = -EBUSY                   # page_get_anon_vma() finds no anon_vma
        elif self.total_mapcount(head) != self.pages[head]._count - 1:
            ret = -EBUSY                   # pinned: nothing has been touched
        else:
            frozen = self.freeze_page(head)
            if self.pages[head + 1].compound_mapcount != -1:
                raise ScalarBug(f"split of {head:#x}: a PMD map survived freeze_page")
            count, mapcount = self.pages[head]._count, self.total_mapcount(head)
            if mapcount:
                raise ScalarBug(f"split of {head:#x}: total_mapcount {mapcount} after freeze_page")
            if count == 1:
                if self.pages[head + 2].deferred_list is not None:
                    self._list_del(head)
                self.__split_huge_page(head, frozen)
                ret = 0
            else:
                # A pin arrived after the pre-check: the THP stays, PTE-mapped (and queued).
                self.unfreeze_page(frozen)
                ret = -EBUSY
        self.vmstat["thp_split_page" if ret == 0 else "thp_split_page_failed"] += 1
        return ret

    def __split_huge_page_tail(self, head, i):
        """Mirrors ``__split_huge_page_tail()`` (4.5.7 L3216): the tail's own ``_count``."""
        t = self.pages[head + i]
        if t._count != 0:
            raise ScalarBug(f"tail {head + i:#x} of THP {head:#x} has _count {t._count}")
        mapcount = t._mapcount + 1
        t._count += mapcount + 1
        t.head = None
        return mapcount

    def __split_huge_page(self, head, frozen):
        """Mirrors ``__split_huge_page()`` (4.5.7 L3275), the split of a frozen THP ``head``:
        tails 511..1 get their references, the page stops being compound, the migration
        entries map the small pages, and every subpage but ``head`` drops the split's
        reference (an unmapped one is freed)."""
        tail_mapcount = 0
        for i in range(HPAGE_NR - 1, 0, -1):
            tail_mapcount += self.__split_huge_page_tail(head, i)
        self.pages[head]._count -= tail_mapcount
        self.pages[head].order = 0
        self.unfreeze_page(frozen)
        for i in range(1, HPAGE_NR):
            self.put_page(head + i)

    # ------------------------------------------------------------ faults

    def anon_vma_prepare(self, vma):
        if vma.anon_vma is None:
            vma.anon_vma = self.next_anon_vma
            self.next_anon_vma += 1

    def thp_enabled(self, vma):
        if self.thp_broken:       # v4.5 steps 2-6: a THP fault falls back without a count
            return False
        return self.thp == "always" or (self.thp == "madvise" and vma.flags & VM_HUGEPAGE)

    def handle_mm_fault(self, proc, vma, va, write):
        self.pmd_offset(proc, va, alloc=True)
        region = va >> PMD_SHIFT
        empty = region not in proc.huge and region not in proc.pte_tables
        if empty and self.thp_enabled(vma):
            if self.do_huge_pmd_anonymous_page(proc, vma, va):
                return
        elif region in proc.huge:
            if write and not proc.huge[region][1]:
                if self.do_huge_pmd_wp_page(proc, vma, va):
                    return
            else:
                return
        if region not in proc.huge and region not in proc.pte_tables:
            proc.pte_tables[region] = self.pte_alloc_one()
            proc.nr_ptes += 1
        if region in proc.huge:
            return
        e = proc.ptes.get(va >> PAGE_SHIFT)
        if e is None:
            self.anon_vma_prepare(vma)
            pfn = self.alloc(0, ANON)
            proc.anon_rss += 1
            self.page_add_new_anon_rmap(pfn)
            proc.ptes[va >> PAGE_SHIFT] = [pfn, bool(vma.flags & VM_WRITE)]
        elif write and not e[1]:
            self.do_wp_page(proc, vma, va, e)

    def do_huge_pmd_anonymous_page(self, proc, vma, va):
        """True when handled, False to fall back to 4 KiB pages."""
        haddr = down(va, HPAGE)
        if haddr < vma.start or haddr + HPAGE > vma.end:
            return False
        if not self.can_alloc(MAX_ORDER) or self.nr_free < HPAGE_NR + 1:
            self.vmstat["thp_fault_fallback"] += 1
            return False
        self.anon_vma_prepare(vma)
        table = self.pte_alloc_one()
        head = self.alloc(MAX_ORDER, ANON)
        self.page_add_new_anon_rmap(head, compound=True)
        region = va >> PMD_SHIFT
        self.deposit(proc, region, table)
        proc.huge[region] = [head, bool(vma.flags & VM_WRITE)]
        proc.anon_rss += HPAGE_NR
        proc.nr_ptes += 1
        self.vmstat["thp_fault_alloc"] += 1
        return True

    def do_huge_pmd_wp_page(self, proc, vma, va):
        region = va >> PMD_SHIFT
        head = proc.huge[region][0]
        if self.cow_max_mapcount:
            # 4.5.7 (L1262): nobody else maps the THP or any part of it
            reuse = self.page_trans_huge_mapcount(head) == 1
        else:
            reuse = self.page_mapcount(head) == 1
            if self.pte_mapped_thp:
                reuse = reuse and all(self.pages[head + i]._mapcount < 0 for i in range(1, HPAGE_NR))
        if reuse:
            proc.huge[region][1] = True
            return True
        self.get_page(head)
        if not self.can_alloc(MAX_ORDER):
            handled = self.do_huge_pmd_wp_page_fallback(proc, vma, va, head)
            if not handled:
                self.split_pmd(proc, vma, va)
            self.put_page(head)
            self.vmstat["thp_fault_fallback"] += 1
            return handled
        new = self.alloc(MAX_ORDER, ANON)
        self.page_add_new_anon_rmap(new, compound=True)
        proc.huge[region] = [new, True]
        self.page_remove_rmap(head, compound=True)
        self.put_page(head)
        self.put_page(head)
        self.vmstat["thp_fault_alloc"] += 1
        return True

    def do_huge_pmd_wp_page_fallback(self, proc, vma, va, head):
        """Mirrors ``do_huge_pmd_wp_page_fallback()`` (v3.16 L975, 4.5.7 L1125): copy the THP
        into 512 new small pages mapped through the PMD's deposited table; the THP loses
        this PMD map and its reference.  False (and no change) without 512 free pages."""
        if self.nr_free < HPAGE_NR:
            return False
        region = va >> PMD_SHIFT
        pages = [self.alloc(0, ANON) for _ in range(HPAGE_NR)]
        del proc.huge[region]
        proc.pte_tables[region] = self.withdraw(proc, region)
        base = region << (PMD_SHIFT - PAGE_SHIFT)
        for i, pfn in enumerate(pages):
            self.page_add_new_anon_rmap(pfn)
            proc.ptes[base + i] = [pfn, bool(vma.flags & VM_WRITE)]
        self.page_remove_rmap(head, compound=True)
        self.put_page(head)
        return True

    def do_wp_page(self, proc, vma, va, e):
        old = e[0]
        # PageAnon() holds for every page here; 4.5.7's reuse_swap_page() (mm/swapfile.c
        # L924) asks page_trans_huge_mapcount(), so a THP subpage is reused only while no
        # subpage of that THP has a second map.
        if self.cow_max_mapcount:
            reuse = self.page_trans_huge_mapcount(old) <= 1
        else:
            reuse = self.page_mapcount(old) == 1
        if reuse:
            e[1] = True
            return
        self.anon_vma_prepare(vma)
        new = self.alloc(0, ANON)
        self.page_add_new_anon_rmap(new)
        proc.ptes[va >> PAGE_SHIFT] = [new, True]
        self.page_remove_rmap(old)
        self.put_page(old)

    # ------------------------------------------------------------ zap and page-table freeing

    def zap_range(self, proc, vma, start, end):
        va = start
        while va < end:
            nxt = min(down(va, HPAGE) + HPAGE, end)
            region = va >> PMD_SHIFT
            if region in proc.huge:
                if nxt - va != HPAGE:
                    self.split_pmd(proc, vma, va)
                else:
                    self.zap_huge_pmd(proc, region)
                    va = nxt
                    continue
            if region in proc.pte_tables:
                gone = []
                for vp in range(va >> PAGE_SHIFT, nxt >> PAGE_SHIFT):
                    e = proc.ptes.pop(vp, None)
                    if e is not None:
                        gone.append(e[0])
                proc.anon_rss -= len(gone)
                for pfn in gone:
                    self.page_remove_rmap(pfn)
                for pfn in gone:
                    self.put_page(pfn)
            va = nxt

    def zap_huge_pmd(self, proc, region):
        head, _ = proc.huge.pop(region)
        table = self.withdraw(proc, region)
        self.page_remove_rmap(head, compound=True)
        proc.anon_rss -= HPAGE_NR
        self.pte_free(table)
        proc.nr_ptes -= 1
        self.put_page(head)

    def _pmd_entries(self, proc, r):
        lo, hi = r << (PUD_SHIFT - PMD_SHIFT), (r + 1) << (PUD_SHIFT - PMD_SHIFT)
        return any(lo <= x < hi for x in proc.huge) or any(lo <= x < hi for x in proc.pte_tables)

    def free_pgtables(self, proc, start, end):
        G, U = 1 << PGD_SHIFT, 1 << PUD_SHIFT
        for g in range(down(start, G), end, G):
            if (g >> PGD_SHIFT) not in proc.pud:
                continue
            for u in range(max(g, down(start, U)), min(g + G, end), U):
                r = u >> PUD_SHIFT
                if r not in proc.pmd_tables:
                    continue
                for a in range(max(u, down(start, HPAGE)), min(u + U, end), HPAGE):
                    region = a >> PMD_SHIFT
                    if region in proc.pte_tables and proc.unused(a, HPAGE):
                        self.pte_free(proc.pte_tables.pop(region))
                        proc.nr_ptes -= 1
                if (not self._pmd_entries(proc, r) and proc.unused(u, U)
                        and proc.pmd_tables[r] not in proc.deposits):
                    self.table_free(proc.pmd_tables.pop(r))
            gi = g >> PGD_SHIFT
            has_pmd = any((r << PUD_SHIFT) >> PGD_SHIFT == gi for r in proc.pmd_tables)
            if not has_pmd and proc.unused(g, G):
                self.table_free(proc.pud.pop(gi))

    # ------------------------------------------------------------ VMAs

    def _insert(self, proc, vma):
        proc.vmas.append(vma)
        proc.vmas.sort(key=lambda v: v.start)

    def split_vma(self, proc, vma, va):
        hva = down(va, HPAGE)
        if va % HPAGE and vma.start <= hva and hva + HPAGE <= vma.end:
            if self.pmd_offset(proc, hva, alloc=False) is not None and (hva >> PMD_SHIFT) in proc.huge:
                self.split_pmd(proc, vma, va)
        new = Vma(va, vma.end, vma.flags, vma.pgoff + ((va - vma.start) >> PAGE_SHIFT), vma.anon_vma)
        vma.end = va
        proc.vmas.insert(proc.vmas.index(vma) + 1, new)

    def _split_at(self, proc, start, end):
        for v in proc.vmas_in(start, end):
            if v.start < start < v.end:
                self.split_vma(proc, v, start)
        for v in proc.vmas_in(start, end):
            if v.start < end < v.end:
                self.split_vma(proc, v, end)
        return proc.vmas_in(start, end)

    def vma_merge(self, proc):
        i = 0
        while i + 1 < len(proc.vmas):
            a, b = proc.vmas[i], proc.vmas[i + 1]
            if (a.end == b.start and a.flags == b.flags and a.anon_vma == b.anon_vma
                    and a.pgoff + ((a.end - a.start) >> PAGE_SHIFT) == b.pgoff):
                a.end = b.end
                del proc.vmas[i + 1]
            else:
                i += 1

    # ------------------------------------------------------------ the API (valid arguments only)

    def spawn(self):
        pid = self.next_pid
        self.procs[pid] = Proc(pid, self.table_alloc(), MMAP_BASE)
        self.next_pid += 1
        return pid

    @staticmethod
    def vm_flags(prot, thp):
        flags = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        flags |= (VM_READ if "r" in prot else 0) | (VM_WRITE if "w" in prot else 0)
        flags |= VM_EXEC if "x" in prot else 0
        return flags | (VM_HUGEPAGE if thp else 0)

    def mmap(self, pid, length, prot="rw", thp=True, addr=None):
        proc = self.procs[pid]
        size = up(length, PAGE)
        if addr is None:
            addr = up(proc.mmap_base, HPAGE)
            proc.mmap_base = addr + up(size, HPAGE) + HPAGE
        else:
            self.munmap(pid, addr, size)
        self._insert(proc, Vma(addr, addr + size, self.vm_flags(prot if prot != "none" else "", thp),
                               addr >> PAGE_SHIFT))
        return addr

    def munmap(self, pid, addr, length):
        proc = self.procs[pid]
        start, end = addr, addr + up(length, PAGE)
        inside = self._split_at(proc, start, end)
        for v in inside:
            proc.vmas.remove(v)
        for v in inside:
            self.zap_range(proc, v, v.start, v.end)
        self.free_pgtables(proc, start, end)

    def mprotect(self, pid, addr, length, prot):
        proc = self.procs[pid]
        start, end = addr, addr + up(length, PAGE)
        rwx = self.vm_flags(prot if prot != "none" else "", False) & (VM_READ | VM_WRITE | VM_EXEC)
        for v in self._split_at(proc, start, end):
            v.flags = (v.flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | rwx
            va = v.start
            while va < v.end:                     # change_protection(): write-protect all
                nxt = min(down(va, HPAGE) + HPAGE, v.end)
                region = va >> PMD_SHIFT
                if region in proc.huge:
                    if nxt - va != HPAGE:
                        self.split_pmd(proc, v, va)
                    else:
                        proc.huge[region][1] = False
                        va = nxt
                        continue
                for vp in range(va >> PAGE_SHIFT, nxt >> PAGE_SHIFT):
                    if vp in proc.ptes:
                        proc.ptes[vp][1] = False
                va = nxt
        self.vma_merge(proc)

    def fault(self, pid, va, write=True):
        proc = self.procs[pid]
        va = down(va, PAGE)
        vma = proc.find_vma(va)
        for _ in range(64):
            got = self.lookup(proc, va)
            if got is not None and (got[1] or not write):
                return
            self.handle_mm_fault(proc, vma, va, write)
        raise ScalarBug(f"fault at {va:#x} did not resolve")

    def touch(self, pid, addr, length, write=True):
        for va in range(addr, addr + up(length, PAGE), PAGE):
            self.fault(pid, va, write)

    def get_user_pages(self, pid, addr, nr, write=False):
        """Slow and fast path alike: pin page by page, faulting what is missing.

        Out of memory after some pages were pinned: return those (``i ? i : -ENOMEM``).
        """
        proc = self.procs[pid]
        out = []
        for va in range(addr, addr + nr * PAGE, PAGE):
            for _ in range(64):
                got = self.lookup(proc, va)
                if got is not None and (got[1] or not write):
                    break
                try:
                    self.handle_mm_fault(proc, proc.find_vma(va), va, write)
                except ScalarOOM:
                    if not out:
                        raise
                    got = None
                    break
            else:
                raise ScalarBug(f"gup at {va:#x} never became present")
            if got is None:
                break
            self.get_page(got[0])
            out.append(got[0])
        for pfn in out:
            self.pins[pfn] = self.pins.get(pfn, 0) + 1
        return out

    def put_pins(self, pfns):
        for pfn in pfns:
            self.put_page(pfn)
            self.pins[pfn] -= 1
            if not self.pins[pfn]:
                del self.pins[pfn]

    def fork(self, pid):
        parent = self.procs[pid]
        child = Proc(self.next_pid, self.table_alloc(), parent.mmap_base)
        try:
            for v in parent.vmas:
                nv = Vma(v.start, v.end, v.flags, v.pgoff)
                if v.anon_vma is not None:
                    nv.anon_vma = self.next_anon_vma
                    self.next_anon_vma += 1
                child.vmas.append(nv)
                self.copy_page_range(child, parent, v)
        except ScalarOOM:
            self._exit_mm(child)
            raise
        self.procs[child.pid] = child
        self.next_pid += 1
        return child.pid

    def copy_page_range(self, dst, src, vma):
        va = vma.start
        while va < vma.end:
            nxt = min(down(va, HPAGE) + HPAGE, vma.end)
            region = va >> PMD_SHIFT
            if region in src.huge or region in src.pte_tables:
                self.pmd_offset(dst, va, alloc=True)
                if region in src.huge:
                    table = self.pte_alloc_one()
                    head = src.huge[region][0]
                    self.get_page(head)
                    self.page_dup_rmap(head, compound=True)
                    dst.anon_rss += HPAGE_NR
                    src.huge[region][1] = False
                    self.deposit(dst, region, table)
                    dst.huge[region] = [head, False]
                    dst.nr_ptes += 1
                    va = nxt
                    continue
                if region not in dst.pte_tables:
                    dst.pte_tables[region] = self.pte_alloc_one()
                    dst.nr_ptes += 1
                shared = []
                for vp in range(va >> PAGE_SHIFT, nxt >> PAGE_SHIFT):
                    e = src.ptes.get(vp)
                    if e is not None:
                        shared.append(e[0])
                        e[1] = False
                        dst.ptes[vp] = [e[0], False]
                for pfn in shared:
                    self.get_page(pfn)
                for pfn in shared:
                    self.page_dup_rmap(pfn, compound=False)
                dst.anon_rss += len(shared)
            va = nxt

    def _exit_mm(self, proc):
        vmas, proc.vmas = proc.vmas, []
        for v in vmas:
            self.zap_range(proc, v, v.start, v.end)
        if proc.huge or proc.deposits:
            raise ScalarBug(f"exit: huge PMDs or deposits left in pid {proc.pid}")
        for t in proc.pte_tables.values():
            self.pte_free(t)
            proc.nr_ptes -= 1
        for t in list(proc.pmd_tables.values()) + list(proc.pud.values()) + [proc.pgd]:
            self.table_free(t)

    def exit(self, pid):
        self._exit_mm(self.procs.pop(pid))

    def split_huge_page_api(self, pfn):
        """``Machine.split_huge_page()``: the caller's reference around the call.

        SIMPLIFICATION: no page lock (v4.5's callers lock_page the head around the split).
        """
        head = self.head_of(pfn)
        self.get_page(head)
        ret = self.split_huge_page(head)
        self.put_page(head)
        return ret

    def split_huge_pmd_api(self, pid, va):
        proc = self.procs[pid]
        self.split_pmd(proc, proc.find_vma(va), down(va, PAGE))

    # ------------------------------------------------------------ reading state

    def counts(self):
        """``[(_count, raw _mapcount)]`` per pfn."""
        return [(p._count, p._mapcount) for p in self.pages]

    def thp_heads(self):
        return [i for i, p in enumerate(self.pages) if p.order]

    def v45_state(self):
        """What v4.5 adds to a THP, read off every live THP head (raw ``compound_mapcount``,
        biased -1; DoubleMap) and the split queue, head first.  Before step 7 no THP
        has them: -1, False and an empty queue."""
        heads = self.thp_heads()
        return {"compound_mapcount": {h: self.pages[h + 1].compound_mapcount for h in heads},
                "double_map": {h: self.pages[h + 1].double_map for h in heads},
                "split_queue": list(self.split_queue)}

    def mappings(self, pid):
        """``{vaddr: (pfn, writable)}`` of every mapped 4 KiB page of ``pid``."""
        proc = self.procs[pid]
        out = {vp << PAGE_SHIFT: (e[0], e[1]) for vp, e in proc.ptes.items()}
        for region, (head, w) in proc.huge.items():
            for i in range(HPAGE_NR):
                out[(region << PMD_SHIFT) + i * PAGE] = (head + i, w)
        return out


# ---------------------------------------------------------------- random workloads

#: Operation mix of the differential test and the benchmark (THP-heavy).
WEIGHTS = {"touch": 6, "fault": 2, "mmap": 1, "fork": 2, "exit": 1, "gup": 2, "gup_fast": 2,
           "put": 3, "munmap": 2, "mprotect": 2, "split_huge_page": 2, "split_huge_pmd": 2}

#: Added to :data:`WEIGHTS` where the deferred split shrinker exists (v4.5 step 7): rare,
#: so that THPs stay queued for a while before memory pressure is simulated.
SHRINKER_WEIGHTS = {"deferred_split_scan": 1, "drop_caches": 1}


def _sub_range(rng, vma, max_pages=None):
    n = (vma.end - vma.start) // PAGE
    first = int(rng.integers(0, n))
    most = n - first if max_pages is None else min(n - first, max_pages)
    return vma.start + first * PAGE, int(rng.integers(1, most + 1)) * PAGE


def choose_op(s, rng, *, max_procs=4, weights=None, mmap_sizes=None):
    """A random operation with valid arguments for the current state of scalar model ``s``.

    ``rng`` is a ``numpy.random.Generator``; ``weights`` defaults to :data:`WEIGHTS`, plus
    :data:`SHRINKER_WEIGHTS` where ``s`` has the deferred split shrinker (so the RFC
    levels draw exactly what they drew before it existed).  Returns ``(name, args)``
    or None when the drawn operation has nothing to act on.
    """
    if weights is None:
        weights = dict(WEIGHTS, **SHRINKER_WEIGHTS) if s.deferred_split else WEIGHTS
    names = list(weights)
    p = [weights[n] for n in names]
    total = sum(p)
    name = names[int(rng.choice(len(names), p=[x / total for x in p]))]
    pids = sorted(s.procs)
    if not pids:
        return ("spawn", ())
    if name == "deferred_split_scan":
        return (name, ([1, 2, SHRINK_BATCH][int(rng.integers(0, 3))],))
    if name == "drop_caches":
        return (name, ())
    pid = pids[int(rng.integers(0, len(pids)))]
    proc = s.procs[pid]

    def vma(need=0):
        vs = [v for v in proc.vmas if (v.flags & need) == need]
        return vs[int(rng.integers(0, len(vs)))] if vs else None

    if name == "mmap":
        sizes = mmap_sizes or [PAGE, 3 * PAGE, HPAGE, HPAGE + 5 * PAGE, 2 * HPAGE, 4 * HPAGE]
        size = sizes[int(rng.integers(0, len(sizes)))]
        prot = ["rw", "rw", "rw", "r"][int(rng.integers(0, 4))]
        return ("mmap", (pid, size, prot, bool(size >= HPAGE or rng.integers(0, 2))))
    if name in ("touch", "fault"):
        write = bool(rng.integers(0, 2))
        v = vma(VM_WRITE if write else VM_READ)
        if v is None:
            return None
        start, length = _sub_range(rng, v, 1 if name == "fault" else None)
        return (name, (pid, start, length, write))
    if name == "fork":
        return ("fork", (pid,)) if len(pids) < max_procs else None
    if name == "exit":
        return ("exit", (pid,)) if len(pids) > 1 else None
    if name in ("gup", "gup_fast"):
        write = bool(rng.integers(0, 2))
        v = vma(VM_READ | (VM_WRITE if write else 0))
        if v is None:
            return None
        start, length = _sub_range(rng, v, 32)
        return (name, (pid, start, length // PAGE, write))
    if name == "put":
        held = sorted(pfn for pfn, n in s.pins.items() for _ in range(n))
        if not held:
            return None
        k = int(rng.integers(1, min(8, len(held)) + 1))
        idx = rng.choice(len(held), size=k, replace=False)
        return ("put", ([held[i] for i in sorted(idx.tolist())],))
    if name in ("munmap", "mprotect"):
        v = vma()
        if v is None:
            return None
        start, length = _sub_range(rng, v)
        if name == "munmap":
            if rng.integers(0, 4) == 0:
                length += int(rng.integers(1, 600)) * PAGE      # may run over holes
            return ("munmap", (pid, start, length))
        prot = ["r", "rw", "none", "rw"][int(rng.integers(0, 4))]
        return ("mprotect", (pid, start, length, prot))
    if name == "split_huge_page":
        heads = [h for h in s.thp_heads() if s.pages[h]._count > 0]
        if not heads:
            return None
        head = heads[int(rng.integers(0, len(heads)))]
        return ("split_huge_page", (head + [0, 1, 5, 511][int(rng.integers(0, 4))],))
    if name == "split_huge_pmd":
        regions = sorted(proc.huge)
        if not regions:
            return None
        region = regions[int(rng.integers(0, len(regions)))]
        return ("split_huge_pmd", (pid, (region << PMD_SHIFT) + int(rng.integers(0, HPAGE // PAGE)) * PAGE))
    raise AssertionError(name)


def apply_scalar(s, op):
    name, args = op
    if name == "spawn":
        return s.spawn()
    if name == "mmap":
        pid, size, prot, thp = args
        return s.mmap(pid, size, prot, thp)
    if name == "touch":
        pid, start, length, write = args
        return s.touch(pid, start, length, write)
    if name == "fault":
        pid, start, _, write = args
        return s.fault(pid, start, write)
    if name == "fork":
        return s.fork(*args)
    if name == "exit":
        return s.exit(*args)
    if name in ("gup", "gup_fast"):
        return s.get_user_pages(*args)
    if name == "put":
        return s.put_pins(*args)
    if name == "munmap":
        return s.munmap(*args)
    if name == "mprotect":
        return s.mprotect(*args)
    if name == "split_huge_page":
        return s.split_huge_page_api(*args)
    if name == "split_huge_pmd":
        return s.split_huge_pmd_api(*args)
    if name == "deferred_split_scan":
        return s.deferred_split_scan(*args)
    if name == "drop_caches":
        return s.drop_caches(2)
    raise AssertionError(name)


def apply_machine(m, op):
    """The same operation on a :class:`thplab.Machine`."""
    name, args = op
    if name == "spawn":
        return m.spawn()
    if name == "mmap":
        pid, size, prot, thp = args
        return m.mmap(pid, size, prot, thp=thp)
    if name == "touch":
        pid, start, length, write = args
        return m.touch(pid, start, length, write)
    if name == "fault":
        pid, start, _, write = args
        return m.fault(pid, start, write)
    if name == "fork":
        return m.fork(*args)
    if name == "exit":
        return m.exit(*args)
    if name == "gup":
        pid, start, nr, write = args
        return [int(x) for x in m.get_user_pages(pid, start, nr, write)]
    if name == "gup_fast":
        pid, start, nr, write = args
        return [int(x) for x in m.get_user_pages_fast(pid, start, nr, write)]
    if name == "put":
        return m.put_page(*args)
    if name == "munmap":
        return m.munmap(*args)
    if name == "mprotect":
        return m.mprotect(*args)
    if name == "split_huge_page":
        return m.split_huge_page(*args)
    if name == "split_huge_pmd":
        return m.split_huge_pmd(*args)
    if name == "deferred_split_scan":
        return int(m.deferred_split_scan(*args))
    if name == "drop_caches":
        return m.drop_caches(2)
    raise AssertionError(name)
