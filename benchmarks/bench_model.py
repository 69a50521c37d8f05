"""Benchmarks of the thplab model (not a test).  Run: ``python benchmarks/bench_model.py``.

Prints, for this machine, in one run:

1. a seeded THP-heavy random workload (fault/touch, fork, pins, partial munmap,
   mprotect, split_huge_page, split_huge_pmd, exit) on a 1 GiB machine, replayed on
   the vectorized model and on the per-page scalar model (tests/scalar_model.py, the
   oracle of the tests): a per-operation profile, no target (the model is measured
   against the real kernel by benchmarks/bench_vs_kernel.py);
2. a full invariant check (``m.check()``) of a 16 GiB machine, 4,194,304 struct
   pages, THP-heavy (target <= 100 ms: median of repeated runs, wall and CPU);
3. peak resident memory per simulated 4 KiB page: ``ru_maxrss`` of a fresh child
   process (multiprocessing 'spawn') minus the same child's after its imports,
   through boot, the THP-heavy workload and check() (target <= 64 B); with check()'s
   own peak and the model's arrays per page;
4. fork, mprotect, munmap and exit of a sparse 1 TiB mapping with one page
   touched: the walks skip empty PGD/PUD entries, so this costs milliseconds,
   not seconds per TiB of virtual size;
5. a 68 GiB machine with 32,768 THPs (page tables need room too): boot, then
   populate, fork, exit of the child and of the owner (guide <= 2 s each; needs
   about 2 GiB of RAM).

(2) and (3) come from one child per level, which builds the 16 GiB state once.

Options: ``--ops N`` (workload length, default 300), ``--levels 0,10``,
``--size 16G`` (the machine of 2 and 3), ``--repeat 9`` (check() runs timed),
``--sections 1,2,3,4,5`` (which to run), ``--profile`` (cProfile of the vectorized
workload's top functions).
"""

import argparse
import datetime
import multiprocessing
import os
import platform
import resource
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
            "cpu_scalar_s": cpu[0], "cpu_model_s": cpu[1],
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


def bench_big(size, nr_thps, level):
    """Boot ``size``, then populate, fork and exit with ``nr_thps`` THPs: wall seconds of each."""
    out = []
    t0 = time.perf_counter()
    m = Machine.boot(size, patches=level)
    out.append(("boot", time.perf_counter() - t0))
    pid = m.spawn()
    addr = m.mmap(pid, nr_thps << 21)
    for name, call in (("populate", lambda: m.touch(pid, addr, nr_thps << 21)),
                       ("fork", lambda: m.fork(pid)), ("exit child", lambda: m.exit(pid + 1)),
                       ("exit owner", lambda: m.exit(pid))):
        t0 = time.perf_counter()
        call()
        out.append((name, time.perf_counter() - t0))
    return out, len(m.thp_heads())


def populate_thp_heavy(m):
    """Fill a booted machine with THPs, the mix check() meets: 93 % of memory in THPs, forked.

    Every 50th THP has its PMD split in the child (``split_huge_pmd``, which before patch 04
    splits the whole THP) and 3 pages pinned in the parent; every 200th (offset 25) goes
    through ``split_huge_page``; the child unmaps 4 KiB of a THP; 512 4 KiB pages.
    """
    pid = m.spawn()
    n = m.nr_pages // 512 * 93 // 100
    a = m.mmap(pid, n * 2 * MiB)
    m.touch(pid, a, n * 2 * MiB)
    child = m.fork(pid)
    for i in range(0, n, 50):
        m.split_huge_pmd(child, a + i * 2 * MiB)
        m.get_user_pages_fast(pid, a + i * 2 * MiB + 5 * 4096, 3)
    for i in range(25, n, 200):
        m.split_huge_page(int(m.walk(pid, [a + i * 2 * MiB])["pfn"][0]))
    m.munmap(child, a + 7 * 4096, 4096)
    small = m.mmap(pid, 8 * MiB, thp=False)
    m.touch(pid, small, 512 * 4096)


def _maxrss():
    """Peak resident bytes of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status(key):
    """A byte count from /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak():
    """Start a new peak: VmHWM drops to the current VmRSS (Linux, /proc/self/clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_check(size, level, repeat):
    """Run in a fresh process: resident memory through boot, workload, check(); check()'s time.

    Memory is ``ru_maxrss`` minus its value right after this process's imports (the
    interpreter, numpy, thplab), per simulated 4 KiB page.
    """
    base = _maxrss()
    m = Machine.boot(size, patches=level, seed=0)
    n = m.nr_pages
    per_page = (lambda b: (b - base) / n)
    out = {"nr_pages": n, "boot_B": per_page(_maxrss())}
    t = time.perf_counter()
    populate_thp_heavy(m)
    out["build_s"] = time.perf_counter() - t
    out["workload_B"] = per_page(_maxrss())
    before = _status("VmRSS")
    own = before is not None and _reset_peak()
    t, c = time.perf_counter(), time.process_time()
    m.check()
    out["first_ms"], out["first_cpu_ms"] = 1000 * (time.perf_counter() - t), 1000 * (time.process_time() - c)
    out["check_own_B"] = (_status("VmHWM") - before) / n if own else None
    out["steady_B"] = per_page(before) if before is not None else None
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        m.check()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    # After resetting VmHWM, ru_maxrss reads the new peak: keep the largest of the phases.
    out["peak_B"] = max(out["boot_B"], out["workload_B"], per_page(_maxrss()))
    out.update({"thps": len(m.thp_heads()), "median_ms": 1000 * float(np.median(times)),
                "min_ms": 1000 * min(times), "cpu_median_ms": 1000 * float(np.median(cpu)),
                "cpu_min_ms": 1000 * min(cpu), "state": state_bytes(m)})
    return out


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a new interpreter (multiprocessing 'spawn'), so its peak memory is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def state_bytes(m):
    """Bytes of the model's per-page and page-table arrays, per 4 KiB page simulated.

    ``pins`` and ``leaked`` are zero-filled allocations, resident only where written.
    """
    t = m.pgtables
    arrays = {
        "mem_map": m.mem_map.nbytes,
        "page-table pool (entries)": t.entries.nbytes,
        "page-table pool (row_of, pfn_of, level)": t.row_of.nbytes + t.pfn_of.nbytes + t.level.nbytes,
        "pins, leaked (allocated)": m.pins.nbytes + m.leaked.nbytes,
    }
    return {"per_page": sum(arrays.values()) / m.nr_pages,
            "parts": {k: v / m.nr_pages for k, v in arrays.items()},
            "live_tables": len(t.live_rows()), "pool_rows": len(t.pfn_of)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--levels", default="0,10")
    ap.add_argument("--size", default="16G")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--sections", default="1,2,3,4,5")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    sections = set(args.sections.split(","))
    print(f"thplab model benchmarks -- {datetime.date.today()} -- {platform.node()}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    try:
        print(f"load average: {os.getloadavg()}")
    except OSError:
        pass
    print()
    if "1" in sections:
        print(f"(1) THP-heavy random workload, 1 GiB machine, seed 0, {args.ops} operations: a profile "
              "per operation (no target; the model's target is the real kernel, bench_vs_kernel.py)")
        for level in levels:
            r = bench_workload(level, args.ops, profile=args.profile)
            print(f"    level {level:2d}: vectorized {r['model_ops_per_s']:8.1f} ops/s ({r['model_s']:.2f} s, "
                  f"CPU {r['cpu_model_s']:.2f} s) | scalar {r['scalar_ops_per_s']:8.1f} ops/s "
                  f"({r['scalar_s']:.2f} s, CPU {r['cpu_scalar_s']:.2f} s)")
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
                f"{step} {1000 * tm:.0f}/{1000 * ts:.0f}" for step, tm, ts in rows))
        print()
    results = {}
    if sections & {"2", "3"}:
        for level in levels:
            results[level] = in_fresh_process(measure_check, args.size, level, args.repeat)
    if "2" in sections:
        n = results[levels[0]]["nr_pages"]
        print(f"(2) m.check() of a {args.size} machine ({n:,} struct pages), THP-heavy "
              f"(target <= 100 ms; {args.repeat} runs)")
        for level, r in results.items():
            print(f"    level {level:2d}: {r['thps']} THPs (built in {r['build_s']:.1f} s); check() median "
                  f"{r['median_ms']:.0f} ms, min {r['min_ms']:.0f} ms; CPU median {r['cpu_median_ms']:.0f} ms, "
                  f"min {r['cpu_min_ms']:.0f} ms; first call {r['first_ms']:.0f} ms")
        print()
    if "3" in sections:
        print(f"(3) peak resident memory per simulated 4 KiB page, {args.size}: ru_maxrss of a fresh child "
              "minus its own after imports (target <= 64 B)")
        for level, r in results.items():
            own = "n/a" if r["check_own_B"] is None else f"+{r['check_own_B']:.1f} B"
            steady = "n/a" if r["steady_B"] is None else f"{r['steady_B']:.1f} B"
            print(f"    level {level:2d}: after boot {r['boot_B']:.1f} B, through the workload "
                  f"{r['workload_B']:.1f} B, resident before check() {steady}, check()'s own peak {own}; "
                  f"peak {r['peak_B']:.1f} B")
        b = results[levels[-1]]["state"]
        print(f"    the model's arrays (level {levels[-1]}):")
        for part, v in b["parts"].items():
            print(f"      {part:42s} {v:6.2f} B")
        print(f"      {'total':42s} {b['per_page']:6.2f} B; {b['live_tables']} live tables in a pool of "
              f"{b['pool_rows']} rows")
        print()
    if "4" in sections:
        print("(4) a 1 TiB mapping with one 4 KiB page touched (wall ms)")
        for level in levels:
            print(f"    level {level:2d}: " + "; ".join(f"{name} {1000 * t:.1f}"
                                                       for name, t in bench_sparse(level)))
    if "5" in sections:
        print()
        print("(5) a 68 GiB machine with 32,768 THPs (64 GiB populated): wall s (guide <= 2 s each)")
        for level in levels:
            rows, left = bench_big("68G", 32768, level)
            print(f"    level {level:2d}: " + "; ".join(f"{name} {t:.2f}" for name, t in rows)
                  + f" ({left} THPs left after the exits)")


if __name__ == "__main__":
    main()
