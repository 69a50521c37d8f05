"""A deliberately simple, per-page SCALAR model of THP refcounting, for differential tests.

No numpy: every ``struct page`` is a Python object, every operation on a THP is
a loop over its 512 subpages, page tables are dicts.  It implements the same
semantics as thplab (kernel-semantics.md §1 for the old scheme, §2 for RFC v1)
from first principles, so that a disagreement with the vectorized model points
at a bug in one of the two.

What it shares with thplab is only the *deterministic policy* needed to get the
same page-frame numbers: a buddy allocator handing out the lowest pfn of the
smallest free block, page-table pages allocated at the same moments (PGD at
spawn; PUD, PMD and PTE tables on first use; one deposited PTE table per huge
PMD), and the same VMA layout rules (2 MiB-aligned ``mmap`` placement, VMA
splitting and merging).

Switches instead of levels (``ScalarMachine(level=k)`` sets them as patch k does):

* ``tail_pins``        (levels 0-3) get_page/put_page on a THP tail also moves the
                       tail's ``_mapcount``; from level 4 only the head's ``_count``.
* ``pte_mapped_thp``   (levels 4+) a PMD split splits only that PMD (head ``_count``
                       += 511, tails ``_mapcount`` += 1); before, it splits the page.
* ``split_can_fail``   (levels 4+) ``split_huge_page`` needs Σ page_mapcount ==
                       page_count - 1; ``split_stub`` (levels 4-5) always -EBUSY.
* ``new_events``       (levels 5+) thp_split_page / _failed / thp_split_pmd
                       instead of thp_split.

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
    """One ``struct page``: raw ``_count``, biased ``_mapcount``, compound linkage."""

    __slots__ = ("_count", "_mapcount", "head", "order", "use")

    def __init__(self):
        self._count = 0
        self._mapcount = -1
        self.head = None      # pfn of the head, for a tail page
        self.order = 0        # 9 on a THP head
        self.use = FREE


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


class ScalarMachine:
    """The whole machine, one Python object per page."""

    def __init__(self, nr_pages, level=0, *, tail_pins=None, pte_mapped_thp=None,
                 split_can_fail=None, split_stub=None, new_events=None, thp="madvise"):
        self.level = level
        self.tail_pins = level < 4 if tail_pins is None else tail_pins
        self.pte_mapped_thp = level >= 4 if pte_mapped_thp is None else pte_mapped_thp
        self.split_can_fail = level >= 4 if split_can_fail is None else split_can_fail
        self.split_stub = level in (4, 5) if split_stub is None else split_stub
        self.new_events = level >= 5 if new_events is None else new_events
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
        return pfn

    def free_block(self, pfn):
        """Free a page (or a whole THP, given its head) whose ``_count`` is 0."""
        order = self.pages[pfn].order
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
            self.free_block(head)

    def page_mapcount(self, pfn):
        return self.pages[pfn]._mapcount + 1

    def page_add_new_anon_rmap(self, pfn):
        self.pages[pfn]._mapcount = 0
        if self.is_thp_head(pfn):
            self.vmstat["nr_anon_transparent_hugepages"] += 1

    def page_remove_rmap(self, pfn):
        self.pages[pfn]._mapcount -= 1
        # v3.16 mm/rmap.c, which the RFC leaves alone: the head's _mapcount reaching -1
        # (its PMD, or from patch 04 on also the PTE of subpage 0) leaves the count.
        if self.is_thp_head(pfn) and self.pages[pfn]._mapcount == -1:
            self.vmstat["nr_anon_transparent_hugepages"] -= 1

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
        if self.pte_mapped_thp:
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

    # ------------------------------------------------------------ faults

    def anon_vma_prepare(self, vma):
        if vma.anon_vma is None:
            vma.anon_vma = self.next_anon_vma
            self.next_anon_vma += 1

    def thp_enabled(self, vma):
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
        self.page_add_new_anon_rmap(head)
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
        self.page_add_new_anon_rmap(new)
        proc.huge[region] = [new, True]
        self.page_remove_rmap(head)
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
        self.page_remove_rmap(head)
        self.put_page(head)
        return True

    def do_wp_page(self, proc, vma, va, e):
        old = e[0]
        if self.page_mapcount(old) == 1:     # PageAnon() holds for every page here
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
        self.page_remove_rmap(head)
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
                    self.pages[head]._mapcount += 1
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
                    self.pages[pfn]._mapcount += 1
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
        """``Machine.split_huge_page()``: the caller's reference around the call."""
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


def _sub_range(rng, vma, max_pages=None):
    n = (vma.end - vma.start) // PAGE
    first = int(rng.integers(0, n))
    most = n - first if max_pages is None else min(n - first, max_pages)
    return vma.start + first * PAGE, int(rng.integers(1, most + 1)) * PAGE


def choose_op(s, rng, *, max_procs=4, weights=WEIGHTS, mmap_sizes=None):
    """A random operation with valid arguments for the current state of scalar model ``s``.

    ``rng`` is a ``numpy.random.Generator``.  Returns ``(name, args)`` or None
    when the drawn operation has nothing to act on.
    """
    names = list(weights)
    p = [weights[n] for n in names]
    total = sum(p)
    name = names[int(rng.choice(len(names), p=[x / total for x in p]))]
    pids = sorted(s.procs)
    if not pids:
        return ("spawn", ())
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
    raise AssertionError(name)
