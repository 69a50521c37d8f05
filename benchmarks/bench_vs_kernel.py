"""The thplab model against the real Linux kernel of this machine, on bulk operations
(not a test).  Run: ``python benchmarks/bench_vs_kernel.py`` (issue #12).

The same operations, in one run, on the kernel (anonymous memory from Python
through libc ``mmap``/``madvise``/``mprotect``/``munmap`` and ``os.fork``) and on
``thplab.Machine`` at each series level asked for:

* touch of a THP range: ``mmap`` + ``MADV_HUGEPAGE`` of N x 2 MiB (2 MiB-aligned),
  then one written byte per 2 MiB -- N THP faults (``m.mmap`` + ``m.touch``);
* touch of a 4 KiB range: N pages under ``MADV_NOHUGEPAGE`` (``thp=False``), one
  written byte per page -- N 4 KiB faults;
* fork + exit of a child of the process holding the N THPs (the child exits at
  once, the parent waits for it);
* ``mprotect`` of the THP range, rw -> r;
* ``munmap`` of the THP range;
* exit of the owner of N THPs: the kernel's owner is a child that populates, sends
  a ``CLOCK_MONOTONIC`` timestamp through a pipe just before ``_exit``, and the
  time runs to the parent's ``waitpid`` return; the model's is ``m.exit(pid)``.

Each is timed at two sizes (``--sizes``, default N = 256 and 4,096) and the cost
per THP (per page for the 4 KiB touch) is the slope dT/dN between them, so that
fixed costs -- Python's ``os.fork`` of the interpreter, the model's per-call
overhead -- drop out.  The kernel may fall back to 4 KiB pages: the THPs it gave
(``AnonHugePages`` of ``/proc/self/smaps`` for the range) are reported.  Per size,
the median of ``--repeat`` runs (the slope of the minima too); the target is a
model/kernel ratio <= 10x.  Also times single operations on a lesson-sized (16
MiB) model machine (guide <= 1 ms each).

What the kernel's figures include that the model's do not: a THP fault clears
2 MiB (about 210 us at memset speed on the project VM), a 4 KiB fault 4 KiB, and
on a VM whose host takes freed guest memory back, the first touch of that memory
faults on the host as well (up to ~2 ms per THP there); the slope of the minima
is closer to the warm figure.

The kernel side runs first, before any model machine is booted, so that the
interpreter's own size (which a kernel fork copies) is the same at both sizes.
The two sizes alternate within each repetition, so slow drift of the (shared)
machine's load touches both alike.  The garbage collector is off while timing.

Options: ``--sizes 256,4096``, ``--levels 10`` (e.g. ``0,10``), ``--repeat 5``,
``--quick`` (sizes 64,512 and 3 repetitions, for development), ``--json PATH``.
"""

import argparse
import datetime
import gc
import json
import os
import platform
import struct
import sys
import time
import traceback
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from thplab import Machine, live  # noqa: E402
from thplab.live.probes import HPAGE_PMD_SIZE, PAGE_SIZE  # noqa: E402
from thplab.live.syscalls import (  # noqa: E402
    MADV_HUGEPAGE, MADV_NOHUGEPAGE, PROT_READ, PROT_WRITE, Libc)

MiB = 1 << 20
TARGET_RATIO = 10.0
#: Guide for one operation on a lesson machine (issue #12), seconds.
SINGLE_GUIDE = 1e-3
SINGLE_REPEAT = 21

#: (key, what, unit): the bulk operations, in the order a repetition runs them.
OPS = [
    ("touch_thp", "touch of a THP range (mmap + faults)", "THP"),
    ("fork_exit", "fork + exit of the child", "THP"),
    ("mprotect", "mprotect of the THP range, rw -> r", "THP"),
    ("munmap", "munmap of the THP range", "THP"),
    ("touch_4k", "touch of a 4 KiB range (mmap + faults)", "page"),
    ("exit", "exit of the owner", "THP"),
]


def clock_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def clock():
    return clock_ns() * 1e-9


class timed:
    """``with timed(out, key):`` appends the seconds the block took to ``out[key]``."""

    def __init__(self, out, key):
        self.out, self.key = out, key

    def __enter__(self):
        gc.disable()
        self.start = clock()

    def __exit__(self, *exc):
        self.out.setdefault(self.key, []).append(clock() - self.start)
        gc.enable()


# ---------------------------------------------------------------- the kernel


class Kernel:
    """The bulk operations on this machine's kernel."""

    def __init__(self):
        self.libc = Libc()

    def map(self, nr, thp):
        """A 2 MiB-aligned private anonymous rw mapping of ``nr`` THPs (or ``nr`` 4 KiB pages),
        with ``MADV_HUGEPAGE`` (or ``MADV_NOHUGEPAGE``); returns ``(addr, length)``.

        Over-allocates by 2 MiB and unmaps the slack at both ends, so the VMA is exactly the range.
        """
        length = nr * (HPAGE_PMD_SIZE if thp else PAGE_SIZE)
        base = self.libc.mmap(0, length + HPAGE_PMD_SIZE, PROT_READ | PROT_WRITE)
        addr = -(-base // HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE
        if addr > base:
            self.libc.munmap(base, addr - base)
        self.libc.munmap(addr + length, base + HPAGE_PMD_SIZE - addr)
        try:
            self.libc.madvise(addr, length, MADV_HUGEPAGE if thp else MADV_NOHUGEPAGE)
        except OSError:
            self.libc.munmap(addr, length)
            raise
        return addr, length

    @staticmethod
    def touch(addr, length, stride):
        """Write one byte every ``stride`` bytes: numpy's strided store, a loop in C."""
        view = np.asarray(types.SimpleNamespace(__array_interface__={
            "version": 3, "shape": (length // stride,), "strides": (stride,),
            "typestr": "|u1", "data": (addr, False)}))
        view[:] = 1

    @staticmethod
    def thps(addr, length):
        """THPs mapped by a PMD in ``[addr, addr + length)`` (smaps' ``AnonHugePages``)."""
        smaps = live.read_smaps(addr, length)
        if not smaps.available:
            raise RuntimeError(smaps.reason)
        return smaps.anon_huge_kb // (HPAGE_PMD_SIZE >> 10)

    def populated(self, n):
        addr, length = self.map(n, thp=True)
        try:
            self.touch(addr, length, HPAGE_PMD_SIZE)
        except BaseException:
            self.libc.munmap(addr, length)
            raise
        return addr, length

    def rep(self, n, times, thps):
        """One repetition of every operation at size ``n``."""
        mapped = None
        try:
            with timed(times, "touch_thp"):
                mapped = self.map(n, thp=True)
                self.touch(*mapped, HPAGE_PMD_SIZE)
            got = self.thps(*mapped)
            for key in ("touch_thp", "fork_exit", "mprotect", "munmap"):
                thps.setdefault(key, []).append(got)
            with timed(times, "fork_exit"):
                child = os.fork()
                if child == 0:
                    os._exit(0)
                os.waitpid(child, 0)
            with timed(times, "mprotect"):
                self.libc.mprotect(*mapped, PROT_READ)
            with timed(times, "munmap"):
                self.libc.munmap(*mapped)
            mapped = None
            with timed(times, "touch_4k"):
                mapped = self.map(n, thp=False)
                self.touch(*mapped, PAGE_SIZE)
            thps.setdefault("touch_4k", []).append(self.thps(*mapped))
            self.libc.munmap(*mapped)
            mapped = None
        finally:
            if mapped is not None:
                self.libc.munmap(*mapped)
        got, seconds = self.exit_of_owner(n)
        thps.setdefault("exit", []).append(got)
        times.setdefault("exit", []).append(seconds)

    def exit_of_owner(self, n):
        """A child populates ``n`` THPs and exits; returns (its THPs, seconds from just before its
        ``_exit`` to the return of the parent's ``waitpid``)."""
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            status = 1
            try:
                os.close(r)
                addr, length = self.populated(n)
                got = self.thps(addr, length)
                os.write(w, struct.pack("=qq", got, clock_ns()))
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(w)
        gc.disable()
        try:
            with os.fdopen(r, "rb") as pipe:
                message = pipe.read(16)
        finally:
            _, status = os.waitpid(child, 0)
            end = clock_ns()
            gc.enable()
        if status or len(message) != 16:
            raise RuntimeError(f"the exiting child failed (wait status {status:#x})")
        got, start = struct.unpack("=qq", message)
        return got, (end - start) * 1e-9


# ---------------------------------------------------------------- the model


def model_machine(n, level):
    """A machine for ``n`` THPs and ``n`` 4 KiB pages, with room for the page tables of a fork."""
    room = 64 * MiB + n * 32 * 1024
    return Machine.boot(nr_pages=((n * HPAGE_PMD_SIZE + room) // HPAGE_PMD_SIZE) * 512,
                        patches=level)


def model_thps(m, pid, addr, length):
    return m.smaps_anon_huge_kb(pid, addr, length) // (HPAGE_PMD_SIZE >> 10)


def model_rep(m, pid, n, times, thps):
    """One repetition of every operation at size ``n``, in the kernel side's order."""
    size = n * HPAGE_PMD_SIZE
    with timed(times, "touch_thp"):
        addr = m.mmap(pid, size)
        m.touch(pid, addr, size)
    got = model_thps(m, pid, addr, size)
    for key in ("touch_thp", "fork_exit", "mprotect", "munmap"):
        thps.setdefault(key, []).append(got)
    with timed(times, "fork_exit"):
        child = m.fork(pid)
        m.exit(child)
    with timed(times, "mprotect"):
        m.mprotect(pid, addr, size, "r")
    with timed(times, "munmap"):
        m.munmap(pid, addr, size)
    with timed(times, "touch_4k"):
        small = m.mmap(pid, n * PAGE_SIZE, thp=False)
        m.touch(pid, small, n * PAGE_SIZE)
    thps.setdefault("touch_4k", []).append(model_thps(m, pid, small, n * PAGE_SIZE))
    m.munmap(pid, small, n * PAGE_SIZE)
    owner = m.spawn()
    addr = m.mmap(owner, size)
    m.touch(owner, addr, size)
    thps.setdefault("exit", []).append(model_thps(m, owner, addr, size))
    with timed(times, "exit"):
        m.exit(owner)


def single_ops(level):
    """Seconds of single operations on a 16 MiB machine: {name: [seconds]}."""
    m = Machine.boot("16M", patches=level)
    pid = m.spawn()
    times = {}
    for _ in range(SINGLE_REPEAT):
        addr = m.mmap(pid, HPAGE_PMD_SIZE)
        with timed(times, "one THP fault"):
            m.fault(pid, addr)
        if m.walk(pid, [addr])["level"][0] != 2:
            raise RuntimeError(f"level {level}: the THP fault mapped no huge PMD")
        m.munmap(pid, addr, HPAGE_PMD_SIZE)
        addr = m.mmap(pid, PAGE_SIZE, thp=False)
        with timed(times, "one 4 KiB fault"):
            m.fault(pid, addr)
        m.munmap(pid, addr, PAGE_SIZE)
        _, addr, head = m.map_thp(pid)
        with timed(times, "fork + exit, 1 THP"):
            m.exit(m.fork(pid))
        with timed(times, "split_huge_page"):
            ret = m.split_huge_page(head)
        if ret != 0:
            raise RuntimeError(f"level {level}: split_huge_page returned {ret}")
        m.munmap(pid, addr, HPAGE_PMD_SIZE)
    m.exit(pid)
    m.check()
    return times


# ---------------------------------------------------------------- reporting


def slope(series, sizes, stat):
    """Seconds per unit between the two sizes, from ``stat`` of the repetitions at each."""
    lo, hi = sizes
    return float(stat(series[hi]) - stat(series[lo])) / (hi - lo)


def us(seconds):
    return f"{seconds * 1e6:.2f}" if abs(seconds) < 1e-5 else f"{seconds * 1e6:.0f}"


def summarize(kernel, model, sizes, levels):
    """Rows of slopes and ratios: a list of dicts (JSON-ready)."""
    rows = []
    for key, what, unit in OPS:
        k_med = slope(kernel["times"][key], sizes, np.median)
        k_min = slope(kernel["times"][key], sizes, min)
        for level in levels:
            mo = model[level]
            m_med = slope(mo["times"][key], sizes, np.median)
            m_min = slope(mo["times"][key], sizes, min)
            ratio = m_med / k_med if k_med > 0 else None
            rows.append({
                "op": key, "what": what, "unit": unit, "level": level,
                "kernel_us": k_med * 1e6, "kernel_us_from_min": k_min * 1e6,
                "model_us": m_med * 1e6, "model_us_from_min": m_min * 1e6,
                "ratio": ratio, "ratio_from_min": m_min / k_min if k_min > 0 else None,
                "met": ratio is not None and ratio <= TARGET_RATIO,
                "kernel_thps": {n: kernel["thps"][key][n] for n in sizes},
                "model_thps": {n: mo["thps"][key][n] for n in sizes},
            })
    return rows


def thp_cell(counts, sizes, unit):
    """``256, 4096`` when every repetition got all its THPs, else the fewest, e.g. ``4000/4096``
    (for the 4 KiB touch: the most THPs seen, 0 as it should be)."""
    if unit == "page":
        return str(max(max(counts[n]) for n in sizes))
    return ", ".join(str(n) if min(counts[n]) == n else f"{min(counts[n])}/{n}" for n in sizes)


def print_table(rows, sizes):
    lo, hi = sizes
    header = ("what (per THP; 4 KiB touch per page)", "kernel THPs", "kernel us", "level",
              "model us", "ratio", "target <= 10x")
    body = []
    for r in rows:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.0f}x"
        ratio_min = "n/a" if r["ratio_from_min"] is None else f"{r['ratio_from_min']:.0f}x"
        body.append((r["what"], thp_cell(r["kernel_thps"], sizes, r["unit"]),
                     f"{us(r['kernel_us'] * 1e-6)} ({us(r['kernel_us_from_min'] * 1e-6)})",
                     str(r["level"]),
                     f"{us(r['model_us'] * 1e-6)} ({us(r['model_us_from_min'] * 1e-6)})",
                     f"{ratio} ({ratio_min})",
                     "met" if r["met"] else "n/a" if r["ratio"] is None else "missed"))
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    print(f"Per-THP cost = (T(N={hi}) - T(N={lo})) / {hi - lo}, from the medians "
          "(in brackets: from the minima)")
    for row in [header, ["-" * w for w in widths], *body]:
        print(" | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(row, widths))))
    for r in rows:
        if r["ratio"] is None:
            print(f"note: {r['what']}: the kernel's slope is <= 0 (noise swamps it); "
                  "try more --repeat or larger --sizes")
        if r["unit"] == "THP" and r["level"] == rows[0]["level"] and any(
                min(r["kernel_thps"][n]) < n for n in sizes):
            print(f"note: {r['what']}: the kernel fell back to 4 KiB pages for some of the range, "
                  "so its per-THP figure is partly a 4 KiB cost")


def check_kernel(sizes):
    """A one-line reason why the kernel side cannot run here, or ''."""
    reason = live.read_thp_settings().unusable_reason
    if reason:
        return (f"the kernel gives no THP here ({reason}); the kernel side needs THP in "
                f"'madvise' or 'always' mode ({live.probes.SYS_THP}/enabled)")
    with open("/proc/meminfo") as f:
        available = int(f.read().split("MemAvailable:")[1].split()[0]) << 10
    need = max(sizes) * HPAGE_PMD_SIZE + 512 * MiB
    if available < need:
        return (f"MemAvailable is {available >> 20} MiB; N = {max(sizes)} THPs need about "
                f"{need >> 20} MiB of free RAM (use smaller --sizes)")
    return ""


def parse_ints(text, what):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"{what}: comma-separated integers, got {text!r}") from None
    return values


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="the two N, THPs (default 256,4096)")
    ap.add_argument("--levels", default="10", help="model series levels, e.g. 0,10 (default 10)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions per size (default 5)")
    ap.add_argument("--quick", action="store_true", help="sizes 64,512 and 3 repetitions")
    ap.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    args = ap.parse_args(argv)
    sizes = parse_ints(args.sizes or ("64,512" if args.quick else "256,4096"), "--sizes")
    if len(sizes) != 2 or not 0 < sizes[0] < sizes[1]:
        raise SystemExit(f"--sizes: two increasing positive sizes, got {sizes}")
    levels = parse_ints(args.levels, "--levels")
    repeat = args.repeat if args.repeat is not None else 3 if args.quick else 5
    if repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    if reason := check_kernel(sizes):
        raise SystemExit(f"bench_vs_kernel: {reason}")

    settings = live.read_thp_settings()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    load_before = os.getloadavg()
    print(f"{started}  {platform.node()}  Linux {platform.release()}  {os.cpu_count()} CPUs  "
          f"Python {platform.python_version()}  numpy {np.__version__}")
    print(f"THP enabled=[{settings.enabled}] defrag=[{settings.defrag}]; sizes N = {sizes}, "
          f"{repeat} repetitions, model levels {levels}; load average {load_before[0]:.2f}")

    t0 = clock()
    vmstat_before = live.read_vmstat().thp()
    libc = Kernel()
    kernel = {"times": {}, "thps": {}}
    for _ in range(repeat):
        for n in sizes:
            times, thps = {}, {}
            libc.rep(n, times, thps)
            for key in times:
                kernel["times"].setdefault(key, {}).setdefault(n, []).extend(times[key])
                kernel["thps"].setdefault(key, {}).setdefault(n, []).extend(thps[key])
    delta = live.vmstat_delta(vmstat_before, live.read_vmstat().thp())
    print(f"kernel side: {clock() - t0:.1f} s; /proc/vmstat (system-wide) thp_fault_alloc "
          f"+{delta.get('thp_fault_alloc', 0)}, thp_fault_fallback +{delta.get('thp_fault_fallback', 0)}")

    model = {}
    for level in levels:
        t0 = clock()
        machines = {n: model_machine(n, level) for n in sizes}
        pids = {n: m.spawn() for n, m in machines.items()}
        model[level] = {"times": {}, "thps": {}}
        for _ in range(repeat):
            for n in sizes:
                times, thps = {}, {}
                model_rep(machines[n], pids[n], n, times, thps)
                for key in times:
                    model[level]["times"].setdefault(key, {}).setdefault(n, []).extend(times[key])
                    model[level]["thps"].setdefault(key, {}).setdefault(n, []).extend(thps[key])
        for n, m in machines.items():
            m.exit(pids[n])
            m.check()
        del machines
        print(f"model side, level {level}: {clock() - t0:.1f} s")

    print()
    rows = summarize(kernel, model, sizes, levels)
    print_table(rows, sizes)

    print(f"\nSingle operations on a 16 MiB model machine, ms (median / min of {SINGLE_REPEAT}; "
          f"guide <= {SINGLE_GUIDE * 1e3:g} ms)")
    single = {}
    for level in levels:
        single[level] = single_ops(level)
        for name, seconds in single[level].items():
            med = float(np.median(seconds))
            print(f"  level {level:2}  {name:20} {med * 1e3:7.3f} / {min(seconds) * 1e3:7.3f}  "
                  f"{'met' if med <= SINGLE_GUIDE else 'missed'}")
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": started, "machine": {
                "node": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
                "python": platform.python_version(), "numpy": np.__version__,
                "thp_enabled": settings.enabled, "thp_defrag": settings.defrag,
                "loadavg_before": load_before, "loadavg_after": load_after},
                "sizes": sizes, "repeat": repeat, "levels": levels, "target_ratio": TARGET_RATIO,
                "rows": rows, "kernel_seconds": kernel, "model_seconds": model,
                "single_ops_seconds": single, "single_guide_seconds": SINGLE_GUIDE}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
