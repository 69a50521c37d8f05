"""Bad input: a thplab exception, raised before anything changes.

Every entry point checks its arguments first (machine.py's contract).  Each case
below must raise a :class:`ThplabError` subclass -- never a numpy ``IndexError``
or ``OverflowError`` -- and leave the machine exactly as it was
(:func:`conftest.snapshot`: mem_map bytes, page-table pool, allocator, pins,
vmstat, every process's VMAs...).
"""

import numpy as np
import pytest

from conftest import LEVELS, assert_unchanged, snapshot
from thplab import Machine
from thplab.errors import (BadAddress, BadArgument, BadPage, NoSuchProcess, Segfault,
                           ThplabError)
from thplab.page_flags import Use
from thplab.params import EFAULT, EINVAL, ENOMEM, HPAGE_PMD_SIZE, PAGE_SIZE

M2 = HPAGE_PMD_SIZE
K4 = PAGE_SIZE


class World:
    """A machine with a bit of everything: THPs, a fork, a pin, read-only and PROT_NONE VMAs."""

    def __init__(self, level):
        kernel = {"kernel": level} if isinstance(level, str) else {"patches": level}
        m = self.m = Machine.boot("32M", seed=0, nodes=2, **kernel)
        p = self.p = m.spawn()
        self.a = m.mmap(p, 2 * M2)
        m.touch(p, self.a, 2 * M2)
        self.child = m.fork(p)
        self.pin = int(m.get_user_pages(p, self.a + 5 * K4)[0])
        self.ro = m.mmap(p, M2, "r")
        m.touch(p, self.ro, K4, write=False)
        self.none = m.mmap(p, K4, "none")
        self.small = m.mmap(p, 4 * K4, thp=False)
        m.touch(p, self.small, 4 * K4)
        self.small_pfn = int(m.walk(p, [self.small])["pfn"][0])
        self.dead = m.spawn()
        m.exit(self.dead)
        self.free_pfn = int(np.flatnonzero(m.mem_map["use"] == Use.free)[0])
        self.table_pfn = m.processes[p].pgd
        m.check()


# (name, callable(world), expected exception class, expected errno or None)
CASES = [
    # unknown / exited pids
    ("mmap_unknown_pid", lambda w: w.m.mmap(99, M2), NoSuchProcess, None),
    ("mmap_exited_pid", lambda w: w.m.mmap(w.dead, M2), NoSuchProcess, None),
    ("munmap_unknown_pid", lambda w: w.m.munmap(42, w.a, K4), NoSuchProcess, None),
    ("fork_unknown_pid", lambda w: w.m.fork(1234), NoSuchProcess, None),
    ("exit_exited_pid", lambda w: w.m.exit(w.dead), NoSuchProcess, None),
    ("exit_pid_as_string", lambda w: w.m.exit(str(w.p)), NoSuchProcess, None),
    ("walk_unknown_pid", lambda w: w.m.walk(99, [w.a]), NoSuchProcess, None),
    ("gup_fast_exited_pid", lambda w: w.m.get_user_pages_fast(w.dead, w.a), NoSuchProcess, None),
    ("split_huge_pmd_unknown_pid", lambda w: w.m.split_huge_pmd(77, w.a), NoSuchProcess, None),
    ("anon_rss_exited_pid", lambda w: w.m.anon_rss(w.dead), NoSuchProcess, None),
    # lengths <= 0 and non-integer lengths
    ("mmap_length_0", lambda w: w.m.mmap(w.p, 0), BadAddress, EINVAL),
    ("mmap_length_negative", lambda w: w.m.mmap(w.p, -K4), BadAddress, EINVAL),
    ("mmap_length_float", lambda w: w.m.mmap(w.p, 4096.0), BadAddress, EINVAL),
    ("mmap_length_string", lambda w: w.m.mmap(w.p, "4K"), BadAddress, EINVAL),
    ("munmap_length_0", lambda w: w.m.munmap(w.p, w.a, 0), BadAddress, EINVAL),
    ("munmap_length_negative", lambda w: w.m.munmap(w.p, w.a, -1), BadAddress, EINVAL),
    ("mprotect_length_0", lambda w: w.m.mprotect(w.p, w.a, 0, "r"), BadAddress, EINVAL),
    ("touch_length_0", lambda w: w.m.touch(w.p, w.a, 0), BadAddress, EINVAL),
    ("gup_nr_0", lambda w: w.m.get_user_pages(w.p, w.a, 0), BadAddress, EINVAL),
    ("gup_nr_negative", lambda w: w.m.get_user_pages(w.p, w.a, -1), BadAddress, EINVAL),
    ("gup_nr_float", lambda w: w.m.get_user_pages(w.p, w.a, 1.5), BadAddress, EINVAL),
    ("gup_fast_nr_0", lambda w: w.m.get_user_pages_fast(w.p, w.a, 0), BadAddress, EINVAL),
    ("smaps_length_0", lambda w: w.m.smaps_anon_huge_kb(w.p, w.a, 0), BadAddress, EINVAL),
    # unaligned or out-of-range addresses
    ("mmap_fixed_unaligned", lambda w: w.m.mmap(w.p, K4, addr=w.a + 1), BadAddress, EINVAL),
    ("mmap_fixed_beyond_task_size", lambda w: w.m.mmap(w.p, K4, addr=1 << 48), BadAddress, EINVAL),
    ("mmap_fixed_negative", lambda w: w.m.mmap(w.p, K4, addr=-K4), BadAddress, EINVAL),
    ("munmap_unaligned", lambda w: w.m.munmap(w.p, w.a + 1, K4), BadAddress, EINVAL),
    ("mprotect_unaligned", lambda w: w.m.mprotect(w.p, w.a + 3, K4, "r"), BadAddress, EINVAL),
    ("gup_unaligned", lambda w: w.m.get_user_pages(w.p, w.a + 1), BadAddress, EINVAL),
    ("fault_negative", lambda w: w.m.fault(w.p, -5), BadAddress, EINVAL),
    ("fault_beyond_user_space", lambda w: w.m.fault(w.p, 1 << 60), BadAddress, EINVAL),
    ("fault_string", lambda w: w.m.fault(w.p, "x"), BadAddress, EINVAL),
    ("fault_float", lambda w: w.m.fault(w.p, float(w.a)), BadAddress, EINVAL),
    ("split_huge_pmd_negative", lambda w: w.m.split_huge_pmd(w.p, -K4), BadAddress, EINVAL),
    ("move_pages_unaligned", lambda w: w.m.move_pages(w.p, [w.small + 1], 1), BadAddress, EINVAL),
    ("futex_negative", lambda w: w.m.get_futex_key(w.p, -8), BadAddress, EINVAL),
    # unmapped addresses and holes
    ("mprotect_over_a_hole", lambda w: w.m.mprotect(w.p, w.a, 4 * M2, "r"), BadAddress, ENOMEM),
    ("mprotect_unmapped", lambda w: w.m.mprotect(w.p, 0x1000, K4, "r"), BadAddress, ENOMEM),
    ("fault_unmapped", lambda w: w.m.fault(w.p, 0x1000), Segfault, None),
    ("touch_range_with_a_hole", lambda w: w.m.touch(w.p, w.a, 4 * M2), Segfault, None),
    ("gup_unmapped", lambda w: w.m.get_user_pages(w.p, 0x1000), Segfault, None),
    ("gup_range_ending_in_a_hole", lambda w: w.m.get_user_pages(w.p, w.a + 2 * M2 - K4, 3),
     Segfault, None),
    ("gup_fast_range_ending_in_a_hole",
     lambda w: w.m.get_user_pages_fast(w.p, w.a + 2 * M2 - K4, 3), Segfault, None),
    ("split_huge_pmd_unmapped", lambda w: w.m.split_huge_pmd(w.p, 0x1000), Segfault, None),
    ("futex_unmapped", lambda w: w.m.get_futex_key(w.p, 0x1000), Segfault, None),
    # accesses the VMA forbids
    ("fault_write_read_only", lambda w: w.m.fault(w.p, w.ro), Segfault, None),
    ("fault_read_prot_none", lambda w: w.m.fault(w.p, w.none, write=False), Segfault, None),
    ("touch_write_read_only", lambda w: w.m.touch(w.p, w.ro, K4), Segfault, None),
    ("gup_write_read_only", lambda w: w.m.get_user_pages(w.p, w.ro, 1, write=True), Segfault, None),
    ("gup_prot_none", lambda w: w.m.get_user_pages(w.p, w.none), Segfault, None),
    ("futex_prot_none", lambda w: w.m.get_futex_key(w.p, w.none), Segfault, None),
    # split_huge_pmd where there is no huge PMD
    ("split_huge_pmd_on_4k_ptes", lambda w: w.m.split_huge_pmd(w.p, w.small), BadAddress, None),
    ("split_huge_pmd_prot_none_unfaulted", lambda w: w.m.split_huge_pmd(w.p, w.none), BadAddress,
     None),
    # put_page
    ("put_page_free_page", lambda w: w.m.put_page(w.free_pfn), BadPage, None),
    ("put_page_double", lambda w: w.m.put_page([w.pin, w.pin]), BadPage, None),
    ("put_page_mapped_but_not_pinned", lambda w: w.m.put_page(w.small_pfn), BadPage, None),
    ("put_page_out_of_range", lambda w: w.m.put_page(10**9), BadPage, None),
    ("put_page_negative", lambda w: w.m.put_page(-1), BadPage, None),
    ("put_page_float", lambda w: w.m.put_page(1.5), BadPage, None),
    ("put_page_string", lambda w: w.m.put_page("x"), BadPage, None),
    ("put_page_empty", lambda w: w.m.put_page([]), BadPage, None),
    ("put_page_2d", lambda w: w.m.put_page([[w.pin]]), BadPage, None),
    ("put_page_pin_and_a_bad_one", lambda w: w.m.put_page([w.pin, w.free_pfn]), BadPage, None),
    # split_huge_page
    ("split_4k_page", lambda w: w.m.split_huge_page(w.small_pfn), BadPage, None),
    ("split_free_page", lambda w: w.m.split_huge_page(w.free_pfn), BadPage, None),
    ("split_page_table", lambda w: w.m.split_huge_page(w.table_pfn), BadPage, None),
    ("split_out_of_range", lambda w: w.m.split_huge_page(10**9), BadPage, None),
    ("split_negative", lambda w: w.m.split_huge_page(-1), BadPage, None),
    ("split_string", lambda w: w.m.split_huge_page("x"), BadPage, None),
    # reading state with a bad pfn
    ("page_count_out_of_range", lambda w: w.m.page_count(10**9), BadPage, None),
    ("page_count_negative", lambda w: w.m.page_count(-1), BadPage, None),
    ("page_mapcount_out_of_range", lambda w: w.m.page_mapcount([0, -10**9]), BadPage, None),
]


@pytest.fixture(scope="module", params=LEVELS + ["v4.5"],
                ids=[f"level{k:02d}" for k in LEVELS] + ["v4.5"])
def world(request):
    return World(request.param)


@pytest.mark.parametrize("name,call,exc,errno", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_thplab_error_and_changes_nothing(world, name, call, exc, errno):
    before = snapshot(world.m)
    with pytest.raises(ThplabError) as info:
        call(world)
    assert isinstance(info.value, exc), f"{name}: {type(info.value).__name__}: {info.value}"
    if errno is not None:
        assert info.value.errno == errno
    assert_unchanged(before, world.m)


# Requests that are refused with a plain ValueError (not a ThplabError) -- argument
# *syntax* errors of the Python API rather than requests the kernel would refuse.
VALUE_ERRORS = [
    ("mmap_bad_prot_letters", lambda w: w.m.mmap(w.p, K4, "rwq")),
    ("mprotect_bad_prot_letters", lambda w: w.m.mprotect(w.p, w.a, K4, "z")),
    ("move_pages_no_such_node", lambda w: w.m.move_pages(w.p, [w.small], 5)),
    ("move_pages_negative_node", lambda w: w.m.move_pages(w.p, [w.small], -1)),
]


@pytest.mark.parametrize("name,call", VALUE_ERRORS, ids=[c[0] for c in VALUE_ERRORS])
def test_argument_syntax_errors_are_value_errors_and_change_nothing(world, name, call):
    before = snapshot(world.m)
    with pytest.raises(ValueError):
        call(world)
    assert_unchanged(before, world.m)


def test_segfault_carries_errno_efault():
    w = World(0)
    with pytest.raises(Segfault) as info:
        w.m.touch(w.p, 0x1000, K4)
    assert info.value.errno == EFAULT
    assert str(info.value) == "touch: 0x1000 is not mapped in pid 1"


def test_a_numpy_integer_address_is_an_address():
    w = World(0)
    w.m.fault(w.p, np.int64(w.small + 5), write=False)       # like int: any byte of the page
    w.m.get_futex_key(w.p, np.int64(w.small + 8))


def test_an_oom_in_the_middle_of_a_fault_is_a_thplab_error():
    from thplab.errors import OutOfMemory

    m = Machine.boot("4M")
    pid = m.spawn()
    a = m.mmap(pid, 4 << 20, thp=False)
    with pytest.raises(OutOfMemory):
        m.touch(pid, a, 4 << 20)
    m.check()          # what was faulted before the OOM is consistent
    m.exit(pid)
    m.check()
    assert m.allocator.nr_free_pages == m.nr_pages


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("level", [0, 4, 10])
def test_gup_that_runs_out_of_memory_returns_the_pages_pinned_so_far(level, fast):
    """__get_user_pages(): ``return i ? i : -ENOMEM`` -- no pinned page may be lost."""
    from thplab.errors import OutOfMemory

    m = Machine.boot("4M", patches=level)
    pid = m.spawn()
    a = m.mmap(pid, 4 << 20, thp=False)
    with pytest.raises(OutOfMemory):
        m.touch(pid, a, 4 << 20)
    mapped = int((m.walk(pid, np.arange(a, a + (4 << 20), K4, dtype=np.uint64))["level"] > 0).sum())
    last = a + (mapped - 1) * K4
    gup = m.get_user_pages_fast if fast else m.get_user_pages
    pages = gup(pid, last, 3)                     # 1 mapped, then a fault that cannot allocate
    assert pages.tolist() == [int(m.walk(pid, [last])["pfn"][0])]
    assert m.pins[pages[0]] == 1 and m.mem_map["_count"][pages[0]] == 2
    m.check()
    with pytest.raises(OutOfMemory):             # nothing pinned: the error propagates
        gup(pid, last + K4, 1)
    m.check()
    m.put_page(pages)
    m.exit(pid)
    assert m.allocator.nr_free_pages == m.nr_pages


# ---------------------------------------------------------------- the full matrix
#
# Every public Machine method and every accessor a lesson calls, with valid arguments
# except one, which takes each invalid value that applies to its kind.  Generated, so
# that a new method or a new kind of bad value is one line.

U64_HUGE = np.uint64(2**64 - 1)


def _bad(**values):
    """``{class name: value or callable(world)}``."""
    return values


BAD = {
    "pid": (NoSuchProcess, _bad(bool=True, float=1.0, str="1", none=None, uint64_huge=U64_HUGE,
                                negative=-1, unknown=99, exited=lambda w: w.dead)),
    "addr": ((BadAddress,), _bad(bool=True, float=lambda w: float(w.a), str=lambda w: hex(w.a),
                                 none=None, uint64_huge=U64_HUGE, negative=-K4,
                                 beyond_task_size=1 << 47, huge=2**70)),
    "length": ((BadAddress,), _bad(bool=True, float=4096.0, str="4K", none=None,
                                   uint64_huge=U64_HUGE, zero=0, negative=-K4, huge=2**70)),
    "pfn": (BadPage, _bad(bool=True, float=lambda w: w.pin + 0.9, str=lambda w: str(w.pin),
                          none=None, uint64_huge=U64_HUGE, negative=-1, beyond=10**9)),
    "pages": (BadPage, _bad(bool=True, bool_list=[True], float=1.5, float_list=[1.5], str="x",
                            none=None, uint64_huge=U64_HUGE,
                            uint64_huge_array=np.array([U64_HUGE]), negative=[-1],
                            beyond=10**9, huge=2**70, huge_list=[0, 2**70])),
    "node": (BadArgument, _bad(bool=True, float=1.0, str="1", none=None, uint64_huge=U64_HUGE,
                               negative=-1, beyond=2)),
    "prot": (BadArgument, _bad(none=None, float=1.0, bool=True, unknown_bits=8, letters="rwq")),
    "flag": (BadArgument, _bad(none=None, str="no", int=1)),
    "addrs": ((BadAddress,), _bad(bool=True, bool_list=[True], float_list=[1.5], str_list=["x"],
                                  none=None, none_list=[None], uint64_huge=U64_HUGE,
                                  uint64_huge_array=np.array([U64_HUGE]), negative=[-K4],
                                  huge_list=[2**70])),
}

# Bad values that apply to one method only: (method, argument, class, value, exception).
EXTRA = [
    ("mmap", "addr", "unaligned", lambda w: w.a + K4 // 2, BadAddress),
    ("munmap", "addr", "unaligned", lambda w: w.a + 1, BadAddress),
    ("mprotect", "addr", "unaligned", lambda w: w.a + 1, BadAddress),
    ("mprotect", "addr", "unmapped", 0x1000, BadAddress),
    ("touch", "addr", "unaligned", lambda w: w.a + 8, BadAddress),
    ("touch", "addr", "unmapped", 0x1000, Segfault),
    ("fault", "addr", "unmapped", 0x1000, Segfault),
    ("get_user_pages", "addr", "unaligned", lambda w: w.a + 8, BadAddress),
    ("get_user_pages", "addr", "unmapped", 0x1000, Segfault),
    ("get_user_pages_fast", "addr", "unaligned", lambda w: w.a + 8, BadAddress),
    ("get_user_pages_fast", "addr", "unmapped", 0x1000, Segfault),
    ("split_huge_pmd", "addr", "unmapped", 0x1000, Segfault),
    ("get_futex_key", "addr", "unmapped", 0x1000, Segfault),
    ("smaps_anon_huge_kb", "addr", "unaligned", lambda w: w.a + 1, BadAddress),
    ("move_pages", "addrs", "unaligned", lambda w: [w.small + 1], BadAddress),
    ("get_user_pages", "nr_pages", "huge", 2**50, BadAddress),
    ("put_page", "pages", "freed", lambda w: w.free_pfn, BadPage),
    ("put_page", "pages", "not_pinned", lambda w: w.small_pfn, BadPage),
    ("put_page", "pages", "empty_list", [], BadPage),
    ("put_page", "pages", "empty_array", np.array([], dtype=np.int64), BadPage),
    ("put_page", "pages", "2d", lambda w: [[w.pin]], BadPage),
    ("split_huge_page", "page", "freed", lambda w: w.free_pfn, BadPage),
    ("split_huge_page", "page", "page_table", lambda w: w.table_pfn, BadPage),
    ("anon_vma_of", "page", "freed", lambda w: w.free_pfn, BadPage),
    ("anon_vma_of", "page", "page_table", lambda w: w.table_pfn, BadPage),
]

# method: (valid arguments as callables of the world, {argument: kind})
METHODS = {
    "fork": ({"pid": lambda w: w.p}, {"pid": "pid"}),
    "exit": ({"pid": lambda w: w.child}, {"pid": "pid"}),
    "map_thp": ({"pid": lambda w: w.p}, {"pid": "pid"}),
    "mmap": ({"pid": lambda w: w.p, "length": lambda w: M2, "prot": lambda w: "rw",
              "thp": lambda w: True, "addr": lambda w: None},
             {"pid": "pid", "length": "length", "prot": "prot", "thp": "flag", "addr": "addr"}),
    "munmap": ({"pid": lambda w: w.p, "addr": lambda w: w.small, "length": lambda w: K4},
               {"pid": "pid", "addr": "addr", "length": "length"}),
    "mprotect": ({"pid": lambda w: w.p, "addr": lambda w: w.small, "length": lambda w: K4,
                  "prot": lambda w: "r"},
                 {"pid": "pid", "addr": "addr", "length": "length", "prot": "prot"}),
    "fault": ({"pid": lambda w: w.p, "addr": lambda w: w.a, "write": lambda w: True},
              {"pid": "pid", "addr": "addr", "write": "flag"}),
    "touch": ({"pid": lambda w: w.p, "addr": lambda w: w.a, "length": lambda w: K4,
               "write": lambda w: True},
              {"pid": "pid", "addr": "addr", "length": "length", "write": "flag"}),
    "page_walk": ({"pid": lambda w: w.p, "address": lambda w: w.a},
                  {"pid": "pid", "address": "addr"}),
    "walk": ({"pid": lambda w: w.p, "addrs": lambda w: [w.a]}, {"pid": "pid", "addrs": "addrs"}),
    "get_user_pages": ({"pid": lambda w: w.p, "addr": lambda w: w.a, "nr_pages": lambda w: 1,
                        "write": lambda w: False, "foll_split": lambda w: False},
                       {"pid": "pid", "addr": "addr", "nr_pages": "length", "write": "flag",
                        "foll_split": "flag"}),
    "get_user_pages_fast": ({"pid": lambda w: w.p, "addr": lambda w: w.a, "nr_pages": lambda w: 1,
                             "write": lambda w: False},
                            {"pid": "pid", "addr": "addr", "nr_pages": "length", "write": "flag"}),
    "put_page": ({"pages": lambda w: w.pin}, {"pages": "pages"}),
    "split_huge_page": ({"page": lambda w: w.pin}, {"page": "pfn"}),
    "split_huge_pmd": ({"pid": lambda w: w.p, "addr": lambda w: w.ro}, {"pid": "pid", "addr": "addr"}),
    "move_pages": ({"pid": lambda w: w.p, "addrs": lambda w: [w.small], "node": lambda w: 1},
                   {"pid": "pid", "addrs": "addrs", "node": "node"}),
    "get_futex_key": ({"pid": lambda w: w.p, "addr": lambda w: w.small}, {"pid": "pid", "addr": "addr"}),
    "page_count": ({"pages": lambda w: [w.pin]}, {"pages": "pages"}),
    "page_mapcount": ({"pages": lambda w: [w.pin]}, {"pages": "pages"}),
    "PageTail": ({"pages": lambda w: [w.pin]}, {"pages": "pages"}),
    "anon_rss": ({"pid": lambda w: w.p}, {"pid": "pid"}),
    "smaps_anon_huge_kb": ({"pid": lambda w: w.p, "addr": lambda w: w.a, "length": lambda w: M2},
                           {"pid": "pid", "addr": "addr", "length": "length"}),
    "page_to_nid": ({"page": lambda w: w.pin}, {"page": "pfn"}),
    "node_range": ({"node": lambda w: 1}, {"node": "node"}),
    "anon_vma_of": ({"page": lambda w: w.pin}, {"page": "pfn"}),
}


def _value(v, w):
    return v(w) if callable(v) else v


#: Classes that are valid for one method: map_thp(pid=None) spawns a process,
#: mmap(addr=None) is mmap without MAP_FIXED.
VALID = {("map_thp", "pid", "none"), ("mmap", "addr", "none")}


def _matrix():
    cases = []
    for method, (_, kinds) in METHODS.items():
        for arg, kind in kinds.items():
            exc, values = BAD[kind]
            for cls, value in values.items():
                if (method, arg, cls) not in VALID:
                        cases.append((f"{method}-{arg}-{cls}", method, arg, value, exc))
    for method, arg, cls, value, exc in EXTRA:
        cases.append((f"{method}-{arg}-{cls}", method, arg, value, exc))
    return cases


MATRIX = _matrix()


def _call(w, method, arg=None, value=None):
    defaults, _ = METHODS[method]
    args = {name: make(w) for name, make in defaults.items()}
    if arg is not None:
        args[arg] = _value(value, w)
    return getattr(w.m, method)(**args)


@pytest.mark.parametrize("name,method,arg,value,exc", MATRIX, ids=[c[0] for c in MATRIX])
def test_matrix_bad_argument_raises_a_thplab_error_and_changes_nothing(world, name, method, arg,
                                                                       value, exc):
    before = snapshot(world.m)
    with pytest.raises(ThplabError) as info:
        _call(world, method, arg, value)
    assert isinstance(info.value, exc), f"{name}: {type(info.value).__name__}: {info.value}"
    assert_unchanged(before, world.m)


@pytest.mark.parametrize("level", [0, 10])
def test_matrix_defaults_are_valid_calls(level):
    """Each method runs with the matrix's defaults, so its failures come from the one bad value."""
    for method in METHODS:
        w = World(level)
        _call(w, method)
        w.m.check()


BOOT_BAD = [
    ("patches_11", {"patches": 11}), ("patches_negative", {"patches": -1}),
    ("patches_str", {"patches": "x"}),
    ("kernel_unknown", {"kernel": "v4.6"}), ("kernel_not_a_name", {"kernel": 10}),
    ("kernel_list", {"kernel": ["rfc-v1"]}), ("kernel_v3_16_with_patches", {"kernel": "v3.16", "patches": 3}),
    ("kernel_rfc_v1_patches_12", {"kernel": "rfc-v1", "patches": 12}),
    ("patches_float", {"patches": 1.5}), ("patches_bool", {"patches": True}),
    ("nodes_str", {"nodes": "2"}), ("nodes_zero", {"nodes": 0}), ("nodes_bool", {"nodes": True}),
    ("nodes_not_dividing", {"nodes": 3}),
    ("seed_str", {"seed": "abc"}), ("seed_float", {"seed": 1.5}), ("seed_negative", {"seed": -1}),
    ("seed_none", {"seed": None}),
    ("thp_mode", {"thp": "sometimes"}),
    ("nr_pages_str", {"mem": None, "nr_pages": "4096"}),
    ("nr_pages_huge", {"mem": None, "nr_pages": 2**64}),
    ("nr_pages_float", {"mem": None, "nr_pages": 4096.0}),
    ("nr_pages_not_2m", {"mem": None, "nr_pages": 1000}),
    ("mem_and_nr_pages", {"nr_pages": 4096}),
    ("mem_neither", {"mem": None}),
    ("mem_above_the_cap", {"mem": "99999999T"}),
    ("mem_just_above_the_cap", {"mem": (1 << 40) + (2 << 20)}),
    ("mem_bool", {"mem": True}),
    ("mem_float", {"mem": 16e6}),
    ("mem_garbage", {"mem": "lots"}),
    ("mem_none_str", {"mem": "None"}),
]


@pytest.mark.parametrize("name,kwargs", BOOT_BAD, ids=[c[0] for c in BOOT_BAD])
def test_boot_refuses_bad_arguments_with_bad_argument(name, kwargs):
    with pytest.raises(BadArgument):
        Machine.boot(**{"mem": "16M", **kwargs})


def test_boot_still_builds_large_machines_up_to_the_cap():
    """The cap is 1 TiB; the check runs before anything is allocated (68 GiB was booted by hand)."""
    from thplab.machine import MAX_MEM

    assert MAX_MEM == 1 << 40
    m = Machine.boot("1G", nodes=2)
    assert m.nr_pages == 1 << 18


#: v4.5's deferred split queue and the shrinker: (call, exception).
V45_BAD = [
    (lambda m: m.deferred_split_scan(0), BadArgument),
    (lambda m: m.deferred_split_scan(-3), BadArgument),
    (lambda m: m.deferred_split_scan(True), BadArgument),
    (lambda m: m.deferred_split_scan(1.5), BadArgument),
    (lambda m: m.deferred_split_scan("8"), BadArgument),
    (lambda m: m.deferred_split_scan(8, node=2), BadArgument),
    (lambda m: m.deferred_split_scan(8, node=-1), BadArgument),
    (lambda m: m.deferred_split_count(node="0"), BadArgument),
    (lambda m: m.split_queue(node=7), BadArgument),
    (lambda m: m.split_queue_len(node=None), BadArgument),
    (lambda m: m.drop_caches(0), BadArgument),
    (lambda m: m.drop_caches(5), BadArgument),
    (lambda m: m.drop_caches(None), BadArgument),
    (lambda m: m.drop_caches("2"), BadArgument),
]


@pytest.mark.parametrize("i", range(len(V45_BAD)))
def test_v45_queue_calls_refuse_bad_arguments_and_change_nothing(i):
    m = Machine.boot("16M", kernel="v4.5", seed=0, nodes=2)
    pid, addr, head = m.map_thp()
    m.munmap(pid, addr + 7 * K4, K4)              # one THP queued
    call, exc = V45_BAD[i]
    before = snapshot(m)
    with pytest.raises(exc):
        call(m)
    assert_unchanged(before, m)
    assert m.split_queue(node=0) == [head]


def test_queue_calls_name_the_kernel_that_has_them():
    from thplab.errors import KernelFunctionRemoved

    m = Machine.boot("16M", kernel="v4.5", patches=6)
    for call in (m.split_queue, m.split_queue_len, m.deferred_split_count, m.deferred_split_scan):
        with pytest.raises(KernelFunctionRemoved, match="v4.5 step 6.*34/37"):
            call()
    m.drop_caches(3)                              # no shrinker yet: nothing to do, no error


# Last in the file: the world fixture is shared by every test above at its level.
def test_the_world_is_still_consistent_after_all_bad_calls(world):
    world.m.check()
    # and still usable
    m = world.m
    m.put_page(world.pin)
    for pid in list(m.processes):
        m.exit(pid)
    m.check()
    assert m.allocator.nr_free_pages == m.nr_pages


@pytest.mark.parametrize("level, name, swapped", [
    (2, "split_huge_page_pmd", lambda vma, pmd, addr: (vma, pmd, addr)),   # wants (vma, address, pmd)
    (3, "split_huge_pmd", lambda vma, pmd, addr: (vma, addr, pmd)),        # wants (vma, pmd, address)
    (4, "split_huge_pmd", lambda vma, pmd, addr: (vma, addr, pmd)),
    ("v4.5", "split_huge_pmd", lambda vma, pmd, addr: (vma, addr, pmd)),
])
def test_a_pmd_split_called_in_the_other_argument_order_says_so_and_changes_nothing(level, name, swapped):
    """Patch 03 swapped pmd and address: the old order under the new name is a clear error."""
    from thplab.lessons.foundations import huge_pmd_of

    m = Machine.boot("16M", **({"kernel": level} if isinstance(level, str) else {"patches": level}))
    pid, addr, head = m.map_thp()
    vma, pmd = huge_pmd_of(m, pid, addr)
    before = snapshot(m)
    with pytest.raises(BadArgument, match=r"pmd must be a PMD slot .* not 0x7f0000000000; check the argument order"):
        getattr(m.kernel, name)(*swapped(vma, pmd, addr))
    assert_unchanged(before, m)
