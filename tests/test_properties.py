"""Property-based tests: random operation sequences at every level, invariants after every step.

Operations are drawn mostly with valid arguments (addresses inside existing
mappings, pins that are held); a few are deliberately invalid and must raise the
documented thplab error without changing anything.  ``OutOfMemory`` is a legal
outcome of a fault, fork or COW on these small machines; the machine must stay
consistent after it.

Profiles (tests/conftest.py): ``ci`` (default) is derandomized, so CI runs the same
examples every time; ``HYPOTHESIS_PROFILE=dev`` explores new ones.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import LEVELS, assert_unchanged, snapshot
from thplab import Machine
from thplab.errors import BadAddress, BadPage, NoSuchProcess, OutOfMemory, Segfault
from thplab.page_flags import PageHead, Use
from thplab.params import (EBUSY, EFAULT, HPAGE_PMD_NR, HPAGE_PMD_SIZE, MMAP_BASE, PAGE_SIZE, SHRINK_STOP,
                           VM_READ, VM_WRITE)

M2 = HPAGE_PMD_SIZE
K4 = PAGE_SIZE
MAX_PROCS = 5
#: Integer types the API takes for addresses and lengths (user space needs 48 bits) ...
ADDR_TYPES = [int, int, np.int64, np.uint64]
#: ... and for page-frame numbers (a 32 MiB machine has 8192).
PFN_TYPES = [int, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]

# hypothesis leans towards the first element: put the most useful operation there
OPS = ["touch", "fork", "gup_fast", "munmap", "split_huge_pmd", "mprotect", "put", "gup",
       "split_huge_page", "fault", "touch", "exit", "put", "move_pages", "futex", "mmap",
       "invalid", "shrink"]


class HypothesisDraws:
    """The Driver's choices, drawn by hypothesis (shrinkable, derandomized in CI)."""

    #: ``st.sampled_from`` per sequence drawn from, keyed by its values and their types (so
    #: ``(0, 1)`` is not ``(False, True)``).  hypothesis caches ``integers()`` and
    #: ``booleans()`` itself but not ``sampled_from()``, whose new strategy per draw is
    #: validated and labelled again; a cached one draws exactly the same values.
    _sampled = {}

    def __init__(self, data):
        self.data = data

    def choice(self, seq, label):
        key = (tuple(seq), tuple(map(type, seq)))
        strategy = self._sampled.get(key)
        if strategy is None:
            if len(self._sampled) >= 4096:      # lists of closures (op_invalid) never repeat
                self._sampled.clear()
            strategy = self._sampled[key] = st.sampled_from(key[0])
        return self.data.draw(strategy, label=label)

    def integer(self, lo, hi, label):
        return self.data.draw(st.integers(lo, hi), label=label)

    def boolean(self, label):
        return self.data.draw(st.booleans(), label=label)

    def indices(self, n, most, label):
        """Distinct sorted indices below ``n``, at least one and at most ``most``."""
        return sorted(set(self.data.draw(st.lists(st.integers(0, n - 1), min_size=1,
                                                  max_size=most), label=label)))


class RngDraws:
    """The same choices from a numpy generator: cheap enough for 100,000 steps (tests/test_longrun.py)."""

    def __init__(self, rng):
        self.rng = rng

    def choice(self, seq, label):
        return seq[int(self.rng.integers(len(seq)))]

    def integer(self, lo, hi, label):
        return int(self.rng.integers(lo, hi + 1))

    def boolean(self, label):
        return bool(self.rng.integers(2))

    def indices(self, n, most, label):
        return sorted(set(self.rng.integers(0, n, size=int(self.rng.integers(1, most + 1))).tolist()))


class Driver:
    """Draws one valid operation at a time for machine ``m`` and runs it.

    ``draws`` is a :class:`HypothesisDraws` or a :class:`RngDraws`.
    """

    def __init__(self, m, draws):
        self.m = m
        self.d = draws
        self.pins = []          # pfns pinned and not yet put
        self.dead = []          # pids that have exited
        self.log = []

    def pid(self):
        pids = sorted(self.m.processes)
        return self.d.choice(pids, "pid") if pids else None

    def vma(self, pid, need=0):
        vmas = [v for v in self.m.processes[pid].vmas if (v.vm_flags & need) == need]
        if not vmas:
            return None
        i = self.d.integer(0, len(vmas) - 1, "vma")
        return vmas[i]

    def sub_range(self, vma, max_pages=None):
        """A page-aligned [start, start+length) inside ``vma``."""
        n = (vma.vm_end - vma.vm_start) // K4
        first = self.d.integer(0, n - 1, "first page")
        most = n - first if max_pages is None else min(n - first, max_pages)
        count = self.d.integer(1, most, "pages")
        return vma.vm_start + first * K4, count * K4

    def addr(self, value):
        """``value`` as an int or a numpy integer type that holds it (the API takes all of them)."""
        return self.d.choice(ADDR_TYPES, "address type")(value)

    def pfn(self, value):
        return self.d.choice(PFN_TYPES, "pfn type")(value)

    # ------------------------------------------------------------ operations

    def op_mmap(self):
        pid = self.pid()
        if pid is None:
            return
        size = self.d.choice([K4, 3 * K4, M2, M2 + 5 * K4, 2 * M2, 3 * M2], "size")
        prot = self.d.choice(["rw", "rw", "rw", "r"], "prot")
        thp = self.d.boolean("thp") or size >= M2
        where = self.d.choice(["plain", "plain", "over a vma", "near mmap_base"], "where")
        fixed = None
        if where == "over a vma" and self.m.processes[pid].vmas:
            vma = self.vma(pid)
            fixed = vma.vm_start + self.d.integer(0, (vma.vm_end - vma.vm_start) // K4 - 1, "page") * K4
        elif where == "near mmap_base":
            # where later plain mmaps go: they must skip it (check() sees any overlap)
            fixed = MMAP_BASE + self.d.integer(-4, 24, "2 MiB slot") * M2
        addr = self.m.mmap(pid, size, prot, thp=thp,
                           addr=None if fixed is None else self.addr(fixed))
        self.log.append(f"mmap({pid}, {size:#x}, {prot}, addr={fixed}) = {addr:#x}")
        assert fixed is None or addr == fixed

    def op_touch(self):
        pid = self.pid()
        write = self.d.boolean("write")
        vma = pid and self.vma(pid, VM_WRITE if write else VM_READ)
        if not vma:
            return
        start, length = self.sub_range(vma)
        self.log.append(f"touch({pid}, {start:#x}, {length:#x}, write={write})")
        self.m.touch(pid, self.addr(start), self.addr(length), write=write)

    def op_fault(self):
        pid = self.pid()
        vma = pid and self.vma(pid, VM_READ)
        if not vma:
            return
        start, _ = self.sub_range(vma, 1)
        write = bool(vma.vm_flags & VM_WRITE) and self.d.boolean("write")
        self.log.append(f"fault({pid}, {start:#x}, write={write})")
        self.m.fault(pid, self.addr(start + self.d.integer(0, K4 - 1, "offset")), write)

    def op_fork(self):
        pid = self.pid()
        if pid is None or len(self.m.processes) >= MAX_PROCS:
            return
        self.log.append(f"fork({pid})")
        self.m.fork(pid)

    def op_exit(self):
        pid = self.pid()
        if pid is None or len(self.m.processes) <= 1:
            return
        self.log.append(f"exit({pid})")
        self.m.exit(pid)
        self.dead.append(pid)

    def _pin(self, fast):
        pid = self.pid()
        write = self.d.boolean("write")
        vma = pid and self.vma(pid, VM_READ | (VM_WRITE if write else 0))
        if not vma:
            return
        start, length = self.sub_range(vma, 40)
        call = self.m.get_user_pages_fast if fast else self.m.get_user_pages
        self.log.append(f"{call.__name__}({pid}, {start:#x}, {length // K4}, write={write})")
        pages = call(pid, self.addr(start), length // K4, write=write)
        # fewer pages only when a fault ran out of memory (the kernel's i ? i : -ENOMEM)
        assert 1 <= len(pages) <= length // K4
        w = self.m.walk(pid, np.arange(start, start + len(pages) * K4, K4, dtype=np.uint64))
        assert w["pfn"].tolist() == pages.tolist()          # pinned what is mapped there
        if write:
            assert w["writable"].all()
        self.pins.extend(pages.tolist())

    def op_gup(self):
        self._pin(fast=False)

    def op_gup_fast(self):
        self._pin(fast=True)

    def op_put(self):
        if not self.pins:
            return
        k = self.d.integer(1, min(8, len(self.pins)), "how many")
        idx = self.d.indices(len(self.pins), k, "which")
        pages = [self.pins[i] for i in idx]
        for i in reversed(idx):
            del self.pins[i]
        self.log.append(f"put_page({pages})")
        self.m.put_page(np.array(pages, dtype=self.d.choice(PFN_TYPES, "pfn type")))

    def op_munmap(self):
        pid = self.pid()
        vma = pid and self.vma(pid)
        if not vma:
            return
        start, length = self.sub_range(vma)
        if self.d.boolean("spill over"):
            length += self.d.integer(1, 600, "extra pages") * K4   # may cover holes
        self.log.append(f"munmap({pid}, {start:#x}, {length:#x})")
        self.m.munmap(pid, self.addr(start), length)

    def op_mprotect(self):
        pid = self.pid()
        vma = pid and self.vma(pid)
        if not vma:
            return
        start, length = self.sub_range(vma)
        prot = self.d.choice(["r", "rw", "none", "rwx"], "prot")
        self.log.append(f"mprotect({pid}, {start:#x}, {length:#x}, {prot})")
        self.m.mprotect(pid, start, length, prot)

    def op_split_huge_page(self):
        heads = [h for h in self.m.thp_heads().tolist()
                 if self.m.mem_map["_count"][h] > 0 and self.m.mem_map["use"][h] == Use.anon]
        if not heads:
            return
        head = self.d.choice(heads, "head")
        page = head + self.d.choice([0, 1, 5, 511], "subpage")
        self.log.append(f"split_huge_page({page:#x})")
        ret = self.m.split_huge_page(self.pfn(page))
        caps = self.m.kernel.caps
        if not caps["split_huge_page_works"]:
            assert ret == -EBUSY
        elif not caps["split_can_fail"]:
            assert ret in (0, 1)
        else:
            assert ret in (0, -EBUSY)
            assert (ret == 0) == (not PageHead(self.m.mem_map, head))

    def op_split_huge_pmd(self):
        pid = self.pid()
        if pid is None:
            return
        mm = self.m.processes[pid]
        starts = [a for v in mm.vmas for a in range((v.vm_start + M2 - 1) // M2 * M2,
                                                      v.vm_end - M2 + 1, M2)]
        if not starts:
            return
        w = self.m.walk(pid, starts)
        huge = [a for a, lvl in zip(starts, w["level"].tolist()) if lvl == 2]
        if not huge:
            return
        addr = self.d.choice(huge, "huge address")
        self.log.append(f"split_huge_pmd({pid}, {addr:#x})")
        self.m.split_huge_pmd(pid, self.addr(addr + self.d.integer(0, M2 - 1, "offset")))
        assert self.m.walk(pid, [addr])["level"][0] == 1

    def op_move_pages(self):
        pid = self.pid()
        vma = pid and self.vma(pid, VM_READ)
        if not vma:
            return
        start, length = self.sub_range(vma, 3)
        addrs = list(range(start, start + length, K4))
        w = self.m.walk(pid, addrs)
        if (w["level"] == 0).any():
            return          # move_pages of a never-touched page: -EFAULT only after a walk
        node = self.d.integer(0, self.m.nodes - 1, "node")
        self.log.append(f"move_pages({pid}, {[hex(a) for a in addrs]}, {node})")
        status = self.m.move_pages(pid, addrs, node)
        assert len(status) == len(addrs)

    def op_futex(self):
        pid = self.pid()
        vma = pid and self.vma(pid, VM_READ)
        if not vma:
            return
        start, _ = self.sub_range(vma, 1)
        if self.m.walk(pid, [start])["level"][0] == 0:
            return
        # any u32 of the page, the last 4 KiB of a THP included: futexes need only 4-byte alignment
        addr = start + 4 * self.d.integer(0, K4 // 4 - 1, "u32 in the page")
        self.log.append(f"get_futex_key({pid}, {addr:#x})")
        # v3.16 kernel/futex.c: the key is per page; a read-only pin on anonymous memory is -EFAULT.
        want = (pid, start) if vma.vm_flags & VM_WRITE else -EFAULT
        assert self.m.get_futex_key(pid, self.addr(addr)) == want

    def op_shrink(self):
        """v4.5's deferred split shrinker, or ``drop_caches`` (which has nothing to shrink before v4.5)."""
        m = self.m
        if not m.kernel.has("deferred_split_scan") or self.d.integer(0, 1, "drop_caches?"):
            self.log.append("drop_caches(2)")
            m.drop_caches(2)
            return
        nr = self.d.integer(1, 4, "nr_to_scan")
        before = m.deferred_split_count()
        self.log.append(f"deferred_split_scan({nr}) of {before}")
        ret = m.deferred_split_scan(nr)
        assert ret == SHRINK_STOP or 0 <= ret <= min(nr, before)

    def op_invalid(self):
        m = self.m
        pid = self.pid()
        free = np.flatnonzero(m.mem_map["use"] == Use.free)
        cases = [
            (lambda: m.fork(10_000), NoSuchProcess),
            (lambda: m.put_page(m.nr_pages), BadPage),
            (lambda: m.split_huge_page(-1), BadPage),
            (lambda: m.get_user_pages(pid or 1, 0x1000), (Segfault, NoSuchProcess)),
            (lambda: m.munmap(pid or 1, 0x1001, K4), (BadAddress, NoSuchProcess)),
            (lambda: m.mprotect(pid or 1, 0x7F0000000000, 1 << 40, "r"), (BadAddress, NoSuchProcess)),
            (lambda: m.touch(pid or 1, 0x7F0000000000, -K4), (BadAddress, NoSuchProcess)),
        ]
        if len(free):
            cases.append((lambda: m.put_page(int(free[0])), BadPage))
            cases.append((lambda: m.split_huge_page(int(free[-1])), BadPage))
        if self.pins:
            p = self.pins[0]
            cases.append((lambda: m.put_page([p] * (self.pins.count(p) + 1)), BadPage))
        if self.dead:
            dead = self.d.choice(self.dead, "exited pid")
            cases += [(lambda: m.fork(dead), NoSuchProcess),
                      (lambda: m.mmap(dead, M2), NoSuchProcess),
                      (lambda: m.touch(np.int64(dead), 0x7F0000000000, K4), NoSuchProcess)]
        cases.append((lambda: m.exit(True), NoSuchProcess))          # a bool is not pid 1
        call, exc = self.d.choice(cases, "invalid call")
        before = snapshot(m)
        with pytest.raises(exc):
            call()
        assert_unchanged(before, m)

    def step(self):
        """One drawn operation, then ``m.check()``.

        Every operation that calls the machine logs a line (one cut short by
        ``OutOfMemory`` at least "-> OutOfMemory").  One that found nothing to act on
        returns having at most read the machine (a walk, ``thp_heads()``) and logs
        nothing: the machine is the one the previous ``check()`` passed, so it is not
        walked again.  ``op_invalid`` logs nothing and is checked all the same.
        """
        op = self.d.choice(OPS, "op")
        logged = len(self.log)
        try:
            getattr(self, "op_" + op)()
        except OutOfMemory:
            self.log.append("  -> OutOfMemory")
        if len(self.log) > logged or op == "invalid":
            self.m.check()

    def teardown(self):
        m = self.m
        if self.pins:
            m.put_page(self.pins)
            m.check()
        for pid in list(m.processes):
            m.exit(pid)
            m.check()
        # Only THPs that patch 01's posted move_pages() leaked a reference on stay allocated.
        leaked = np.flatnonzero(m.leaked)
        assert PageHead(m.mem_map, leaked).all()
        assert m.allocator.nr_free_pages == m.nr_pages - HPAGE_PMD_NR * len(leaked)
        assert len(m.pgtables.table_pfns()) == 0
        assert not m.pins.any() and (m.mem_map["_count"] == m.leaked).all()


def run(level, data, mem, steps, kernel=None):
    m = Machine.boot(mem, kernel=kernel, patches=level, seed=0, nodes=2)
    d = Driver(m, HypothesisDraws(data))
    pid = m.spawn()
    m.mmap(pid, 2 * M2)
    for _ in range(steps):
        d.step()
    d.teardown()


@pytest.mark.parametrize("level", LEVELS)
@settings(max_examples=12)
@given(data=st.data())
def test_random_operations_keep_invariants_16m(level, data):
    run(level, data, "16M", steps=30)


#: Every step of the v4.5 stack: 1 (old counters, new events), 2-6 (THP off), 7 (all of it).
V45_STEPS = list(range(1, 8))


@pytest.mark.parametrize("step", V45_STEPS)
@settings(max_examples=12)
@given(data=st.data())
def test_random_operations_keep_invariants_16m_v45(step, data):
    run(step, data, "16M", steps=30, kernel="v4.5")


@settings(max_examples=6)
@given(data=st.data())
def test_random_operations_keep_invariants_32m_long_v45(data):
    run(7, data, "32M", steps=80, kernel="v4.5")


@pytest.mark.parametrize("level", [0, 4, 6, 10])
@settings(max_examples=6)
@given(data=st.data())
def test_random_operations_keep_invariants_32m_long(level, data):
    run(level, data, "32M", steps=80)


# ---------------------------------------------------------------- smaller properties

@pytest.mark.parametrize("level", LEVELS)
@settings(max_examples=10)
@given(offsets=st.lists(st.integers(0, 511), min_size=1, max_size=6),
       fast=st.booleans())
def test_pins_then_puts_restore_every_counter(level, offsets, fast):
    m = Machine.boot("8M", patches=level)
    pid = m.spawn()
    a = m.mmap(pid, M2)
    m.touch(pid, a, M2)
    before = m.mem_map[["_count", "_mapcount"]].copy()
    pins = np.concatenate([(m.get_user_pages_fast if fast else m.get_user_pages)(pid, a + o * K4)
                           for o in offsets])
    m.check()
    assert int(m.page_count(pins[0])) == 1 + len(offsets)
    m.put_page(pins)
    m.check()
    assert (m.mem_map[["_count", "_mapcount"]] == before).all()   # flags may gain PG_referenced


@pytest.mark.parametrize("level", LEVELS)
@settings(max_examples=10)
@given(cuts=st.lists(st.tuples(st.integers(0, 511), st.integers(1, 64)), min_size=1, max_size=5))
def test_partial_munmaps_free_exactly_the_unmapped_pages_once_nothing_maps_the_thp(level, cuts):
    m = Machine.boot("8M", patches=level)
    pid = m.spawn()
    a = m.mmap(pid, M2)
    m.touch(pid, a, M2)
    mapped = np.ones(512, bool)
    for first, n in cuts:
        m.munmap(pid, a + first * K4, n * K4)
        mapped[first:first + n] = False
        m.check()
    used_by_thp = m.nr_pages - m.allocator.nr_free_pages - len(m.pgtables.table_pfns())
    if mapped.any():
        # old: the THP was split, exactly the unmapped pages are free; v1: all 512 held
        assert used_by_thp == (int(mapped.sum()) if level < 4 else 512)
    else:
        assert used_by_thp == 0
    m.exit(pid)
    assert m.allocator.nr_free_pages == m.nr_pages
