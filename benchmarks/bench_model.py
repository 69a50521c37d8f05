"""Benchmarks of the thplab model (not a test).  Run: ``python benchmarks/bench_model.py``.

Prints, for this machine, in one run:

1. a seeded THP-heavy random workload (fault/touch, fork, pins, partial munmap,
   mprotect, split_huge_page, split_huge_pmd, exit) on a 1 GiB machine: operations
   per second of the vectorized model and of the per-page scalar model
   (tests/scalar_model.py), and their ratio (target >= 20x);
2. a full invariant check (``m.check()``) of a 4 GiB machine, 1,048,576 struct
   pages, mostly THPs (target <= 100 ms);
3. bytes of model state per simulated 4 KiB page: mem_map + page-table pool +
   other per-page arrays (target <= 64 B);
4. fork, mprotect, munmap and exit of a sparse 1 TiB mapping with one page
   touched: the walks skip empty PGD/PUD entries, so this costs milliseconds,
   not seconds per TiB of virtual size.

Options: ``--ops N`` (workload length, default 300), ``--levels 0,10``,
``--profile`` (cProfile of the vectorized workload's top functions).
"""

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import scalar_model as sm  # noqa: E402  (tests/scalar_model.py)
from thplab import Machine  # noqa: E402
from thplab.errors import OutOfMemory  # noqa: E402

MiB = 1 << 20
#: THP-heavy operation mix: fault, fork, pin, partial munmap, mprotect, split, exit.
#: A new mapping is populated at once (THP faults); "fault" is one page fault (a THP
#: where one fits), so 4 KiB COW storms do not dominate.
WEIGHTS = {"touch": 0, "fault": 4, "mmap": 1, "fork": 2, "exit": 1, "gup": 2, "gup_fast": 2,
           "put": 3, "munmap": 3, "mprotect": 2, "split_huge_page": 3, "split_huge_pmd": 3}
MMAP_SIZES = [8 * MiB, 16 * MiB, 32 * MiB]


def record_workload(level, nr_pages, seed, nr_ops):
    """Choose the operations by running the scalar model once; return them (and OOM flags)."""
    rng = np.random.default_rng(seed)
    s = sm.ScalarMachine(nr_pages, level)
    ops = [("spawn", ()), ("mmap", (1, 64 * MiB, "rw", True)), ("touch", (1, None, 64 * MiB, True))]
    sm.apply_scalar(s, ops[0])
    addr = sm.apply_scalar(s, ops[1])
    ops[2] = ("touch", (1, addr, 64 * MiB, True))
    sm.apply_scalar(s, ops[2])
    while len(ops) < nr_ops:
        op = sm.choose_op(s, rng, max_procs=4, weights=WEIGHTS, mmap_sizes=MMAP_SIZES)
        if op is None:
            continue
        try:
            got = sm.apply_scalar(s, op)
        except sm.ScalarOOM:
            continue
        ops.append(op)
        if op[0] == "mmap":
            populate = ("touch", (op[1][0], got, op[1][1], "w" in op[1][2]))
            try:
                sm.apply_scalar(s, populate)
            except sm.ScalarOOM:
                pass
            ops.append(populate)
    return ops


def replay(apply, target, ops, oom, per_kind=None, cpu=None):
    """Run ``ops``; return the total seconds (and add seconds per kind to ``per_kind``).

    ``cpu``, a list, receives the process CPU time of the replay (less sensitive
    than wall time to other load on the machine).
    """
    clock = time.perf_counter
    cpu_start = time.process_time()
    start = clock()
    for op in ops:
        t = clock()
        try:
            apply(target, op)
        except oom:
            pass
        if per_kind is not None:
            per_kind[op[0]] = per_kind.get(op[0], 0.0) + clock() - t
    if cpu is not None:
        cpu.append(time.process_time() - cpu_start)
    return clock() - start


def bench_workload(level, nr_ops, seed=0, profile=False):
    nr_pages = (1 << 30) >> 12
    ops = record_workload(level, nr_pages, seed, nr_ops)
    s = sm.ScalarMachine(nr_pages, level)
    kinds_scalar, kinds_model = {}, {}
    cpu = []
    t_scalar = replay(sm.apply_scalar, s, ops, sm.ScalarOOM, kinds_scalar, cpu)
    m = Machine.boot("1G", patches=level, seed=seed)
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    t_model = replay(sm.apply_machine, m, ops, OutOfMemory, kinds_model, cpu)
    if profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    m.check()
    # both ended in the same state
    assert [p._count for p in s.pages] == m.mem_map["_count"].tolist()
    kinds = {}
    for name, _ in ops:
        kinds[name] = kinds.get(name, 0) + 1
    return {"ops": len(ops), "scalar_s": t_scalar, "model_s": t_model,
            "scalar_ops_per_s": len(ops) / t_scalar, "model_ops_per_s": len(ops) / t_model,
            "ratio": t_scalar / t_model, "cpu_scalar_s": cpu[0], "cpu_model_s": cpu[1],
            "thps": len(m.thp_heads()), "kinds": kinds,
            "per_kind": {k: (kinds[k], kinds_model.get(k, 0.0), kinds_scalar.get(k, 0.0))
                         for k in sorted(kinds)},
            "free_mib": m.allocator.nr_free_pages >> 8}


def bench_bulk(level):
    """Whole-range operations on 128 THPs (256 MiB), where one call touches many pages."""
    steps = ["populate 128 THPs (touch 256 MiB)", "split_huge_pmd x128", "fork (PTE-mapped)",
             "mprotect 200 MiB of the child", "munmap 100 MiB of the child", "exit both"]
    out = {}
    for name in ("model", "scalar"):
        if name == "model":
            t, ap = Machine.boot("1G", patches=level), sm.apply_machine
        else:
            t, ap = sm.ScalarMachine(1 << 18, level), sm.apply_scalar
        clock = time.perf_counter
        times = []
        t0 = clock()
        pid = ap(t, ("spawn", ()))
        a = ap(t, ("mmap", (pid, 256 * MiB, "rw", True)))
        ap(t, ("touch", (pid, a, 256 * MiB, True)))
        times.append(clock() - t0)
        t0 = clock()
        for i in range(128):
            ap(t, ("split_huge_pmd", (pid, a + i * 2 * MiB)))
        times.append(clock() - t0)
        t0 = clock()
        child = ap(t, ("fork", (pid,)))
        times.append(clock() - t0)
        t0 = clock()
        ap(t, ("mprotect", (child, a + 4096, 200 * MiB, "r")))
        times.append(clock() - t0)
        t0 = clock()
        ap(t, ("munmap", (child, a + 3 * 4096, 100 * MiB)))
        times.append(clock() - t0)
        t0 = clock()
        ap(t, ("exit", (child,)))
        ap(t, ("exit", (pid,)))
        times.append(clock() - t0)
        out[name] = times
    return [(step, out["model"][i], out["scalar"][i]) for i, step in enumerate(steps)]


def bench_sparse(level):
    """fork/mprotect/munmap/exit of a 1 TiB mapping with one page touched: wall seconds each."""
    m = Machine.boot("16M", patches=level)
    pid = m.spawn()
    size = 1 << 40
    a = m.mmap(pid, size, addr=0x100000000000)
    m.touch(pid, a + size // 2, 4096)
    steps = [("fork", lambda: m.fork(pid)), ("mprotect 1 TiB", lambda: m.mprotect(pid, a, size, "r")),
             ("munmap 256 GiB", lambda: m.munmap(pid, a, size // 4)),
             ("exit child", lambda: m.exit(pid + 1)), ("exit", lambda: m.exit(pid))]
    out = []
    for name, call in steps:
        t0 = time.perf_counter()
        call()
        out.append((name, time.perf_counter() - t0))
    return out


def build_4g(level):
    """A 4 GiB machine, mostly THPs: 1900 THPs, a fork, PMD splits and pins."""
    m = Machine.boot("4G", patches=level, seed=0)
    pid = m.spawn()
    n = 1900
    a = m.mmap(pid, n * 2 * MiB)
    for i in range(n):
        m.fault(pid, a + i * 2 * MiB)
    child = m.fork(pid)
    for i in range(0, n, 50):
        m.split_huge_pmd(child, a + i * 2 * MiB)
        m.get_user_pages_fast(pid, a + i * 2 * MiB + 5 * 4096, 3)
    m.munmap(child, a + 7 * 4096, 4096)
    small = m.mmap(pid, 8 * MiB, thp=False)
    m.touch(pid, small, 512 * 4096)
    return m


def bench_check(level, repeat=7):
    m = build_4g(level)
    m.check()
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        m.check()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return m, {"nr_pages": m.nr_pages, "thps": len(m.thp_heads()),
               "min_ms": 1000 * min(times), "median_ms": 1000 * float(np.median(times)),
               "cpu_min_ms": 1000 * min(cpu)}


def state_bytes(m):
    """Bytes of model state, per 4 KiB page simulated."""
    t = m.pgtables
    arrays = {
        "mem_map": m.mem_map.nbytes,
        "page-table pool (entries)": t.entries.nbytes,
        "page-table pool (row_of, pfn_of, level)": t.row_of.nbytes + t.pfn_of.nbytes + t.level.nbytes,
        "pins": m.pins.nbytes,
    }
    # the allocator's free lists and heaps: Python sets/lists of ints
    alloc = sum(sys.getsizeof(x) + 28 * len(x) for x in m.allocator._free + m.allocator._heap)
    arrays["allocator free lists (Python)"] = alloc
    live_tables = len(t.live_rows())
    total = sum(arrays.values())
    return {"per_page": total / m.nr_pages, "parts": {k: v / m.nr_pages for k, v in arrays.items()},
            "live_tables": live_tables, "pool_rows": len(t.pfn_of)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--levels", default="0,10")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    print(f"thplab model benchmarks -- {datetime.date.today()} -- {platform.node()}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    try:
        print(f"load average: {os.getloadavg()}")
    except OSError:
        pass
    print()
    print(f"(1) THP-heavy random workload, 1 GiB machine, seed 0, {args.ops} operations")
    for level in levels:
        r = bench_workload(level, args.ops, profile=args.profile)
        print(f"    level {level:2d}: vectorized {r['model_ops_per_s']:8.1f} ops/s ({r['model_s']:.2f} s)"
              f" | scalar {r['scalar_ops_per_s']:8.1f} ops/s ({r['scalar_s']:.2f} s)"
              f" | ratio {r['ratio']:.1f}x (target >= 20x)")
        print(f"              CPU time: vectorized {r['cpu_model_s']:.2f} s, scalar "
              f"{r['cpu_scalar_s']:.2f} s, ratio {r['cpu_scalar_s'] / r['cpu_model_s']:.1f}x")
        print(f"              {r['thps']} THPs at the end, {r['free_mib']} MiB free; per operation "
              "(count: vectorized ms / scalar ms each):")
        print("              " + ", ".join(
            f"{k} {n}: {1000 * tm / n:.2f}/{1000 * ts / n:.2f}"
            for k, (n, tm, ts) in r["per_kind"].items()))
    print()
    print("(1b) whole-range operations on 128 THPs, 1 GiB machine (vectorized ms / scalar ms)")
    for level in levels:
        rows = bench_bulk(level)
        print(f"    level {level:2d}: " + "; ".join(
            f"{step} {1000 * tm:.0f}/{1000 * ts:.0f} ({ts / tm:.1f}x)" for step, tm, ts in rows))
    print()
    print("(2) m.check() of a 4 GiB machine (1,048,576 struct pages), mostly THPs")
    last = None
    for level in levels:
        m, r = bench_check(level)
        last = m
        print(f"    level {level:2d}: {r['thps']} THPs; check() min {r['min_ms']:.0f} ms, "
              f"median {r['median_ms']:.0f} ms, CPU time min {r['cpu_min_ms']:.0f} ms (target <= 100 ms)")
    print()
    print("(3) model state per simulated 4 KiB page (the 4 GiB machine above)")
    b = state_bytes(last)
    for part, v in b["parts"].items():
        print(f"    {part:42s} {v:6.2f} B")
    print(f"    {'total':42s} {b['per_page']:6.2f} B (target <= 64 B); "
          f"{b['live_tables']} live tables in a pool of {b['pool_rows']} rows")
    print()
    print("(4) a 1 TiB mapping with one 4 KiB page touched (wall ms)")
    for level in levels:
        print(f"    level {level:2d}: " + "; ".join(f"{name} {1000 * t:.1f}"
                                                   for name, t in bench_sparse(level)))


if __name__ == "__main__":
    main()
