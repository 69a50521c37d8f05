"""Lesson benchmarks: widget update latency (Python side) and lesson run time.

Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/bench_lessons.py            # widgets + every lesson
    .venv/bin/python benchmarks/bench_lessons.py --widgets   # widgets only

Targets (issue "lessons"): one widget update <= 200 ms of kernel time; each lesson
top to bottom <= 20 s on a 2-core machine.  This is a benchmark, not a test: it
prints figures for the README, it does not fail.
"""

import argparse
import contextlib
import io
import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _time(fn, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def widget_latencies(repeat=5):
    """Milliseconds per update for each widget's main interaction."""
    from thplab import Machine, widgets
    from thplab.trace import record

    rows = []

    def explorer_step(figure):
        e = widgets.ScenarioExplorer("fork-pin-split", levels=(0, 10), figure=figure)
        return lambda: (e.reset() if e.run.finished else None, e.step())

    rows.append(("ScenarioExplorer: Step (2 kernels, figure)", _time(explorer_step(True), repeat * 2)))
    rows.append(("ScenarioExplorer: Step (2 kernels, text only)", _time(explorer_step(False), repeat * 2)))
    e = widgets.ScenarioExplorer("fork-split-pmd", levels=(3, 4), figure=True)
    e.run_all()
    rows.append(("ScenarioExplorer: switch kernel", _time(lambda: setattr(e.kernel, "value", 7 - e.kernel.value), repeat)))

    m = Machine.boot("16M", patches=0)
    pid = m.spawn()
    addr = m.mmap(pid, 2 << 20)
    m.touch(pid, addr, 2 << 20)
    s = widgets.AddressSlicer(m, pid, addr)
    rows.append(("AddressSlicer: new address", _time(lambda: setattr(s.address, "value", hex(addr + len(s.output.value))), repeat)))
    m.fork(pid)
    _, rec = record(m, m.split_huge_page, int(m.thp_heads()[0]))
    st = widgets.StepThrough(rec)
    rows.append(("StepThrough: next point", _time(lambda: (st.slider.__setattr__("value", 0) if st.slider.value == st.slider.max
                                                          else st.next_button.click()), repeat * 2)))
    rv = widgets.RaceView("split-vs-gup-fast", levels=(0, 10))
    rows.append(("RaceView: step one CPU", _time(lambda: (rv.reset() if rv.race.interleaving.finished else None,
                                                         rv.step("CPU1" if not rv.race.interleaving.done("CPU1") else "CPU0")),
                                              repeat * 2)))
    rows.append(("RaceView: play the whole race", _time(rv.play, repeat)))
    q = widgets.Quiz(seed=0)
    rows.append(("Quiz: new problem", _time(q.new, repeat)))
    return rows


def lesson_times():
    import nbformat
    from nbclient import NotebookClient

    rows = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t = time.perf_counter()
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        rows.append((path.name, time.perf_counter() - t))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widgets", action="store_true", help="widgets only, no lesson runs")
    args = ap.parse_args()
    print(f"# thplab lesson benchmarks -- {platform.node()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    print("\n## Widget updates (ms of Python time per update; target <= 200 ms)\n")
    print("| interaction | median | max |\n|---|---:|---:|")
    with contextlib.redirect_stdout(io.StringIO()):  # clear_output() outside a kernel prints escapes
        rows = widget_latencies()
    for name, ms in rows:
        print(f"| {name} | {statistics.median(ms):.1f} | {max(ms):.1f} |")
    print("\n(max includes the first matplotlib draw of the process)")
    if not args.widgets:
        print("\n## Lessons top to bottom (s, fresh kernel included; target <= 20 s)\n")
        print("| lesson | seconds |\n|---|---:|")
        for name, s in lesson_times():
            print(f"| {name} | {s:.1f} |")


if __name__ == "__main__":
    main()
