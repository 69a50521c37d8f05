"""Lesson benchmarks: widget update latency (Python side) and lesson run time.

Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/bench_lessons.py            # widgets + every lesson
    .venv/bin/python benchmarks/bench_lessons.py --widgets   # widgets only

Targets: one ScenarioExplorer step <= 10 ms of kernel (Python) time on a lesson-sized
(16 MiB) machine (issue #10), any other widget update <= 200 ms; each lesson top to
bottom <= 20 s on a 2-core machine.  Widget times include what the kernel does before
the front end sees the change: every widget message is serialised to JSON as the
kernel's session does (the SVG of a diagram travels inside the HTML widget's value).
The lesson run also lists each lesson's slowest cell.  This is a benchmark, not a
test: it prints figures for the README, it does not fail.
"""

import argparse
import contextlib
import io
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _time(fn, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


#: bytes of widget messages serialised so far (see _serialise_widget_messages)
SENT = {"bytes": 0}


def _serialise_widget_messages():
    """From now on every widget message goes through the kernel session's JSON packer -- the
    bytes that travel to the front end -- and is counted in ``SENT``; nothing is sent."""
    import comm
    from comm.base_comm import BaseComm
    from jupyter_client.session import json_packer

    class SessionComm(BaseComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            SENT["bytes"] += len(json_packer({"data": data, "metadata": metadata or {}}))

    comm.create_comm = SessionComm


def _timed_steps(e, steps):
    """Wall ms, CPU ms and message bytes of each of ``steps`` Step clicks (a finished scenario
    is reset, untimed).  CPU time is the steadier figure on a shared machine."""
    wall, cpu, sizes = [], [], []
    while len(wall) < steps:
        if e.run.finished:
            e.reset()
        before = SENT["bytes"]
        t, c = time.perf_counter(), time.process_time()
        e.step_button.click()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        sizes.append(SENT["bytes"] - before)
    assert "<svg" in e.plot.value or not e.figure  # the step drew a diagram, not a raster image
    return wall, cpu, sizes


def explorer_steps(repeat=10):
    """``(name, wall ms, CPU ms, bytes)`` per ScenarioExplorer step: both kernels step,
    the change snapshots, thp_mappings(), its SVG into the HTML widget, messages serialised."""
    from thplab import diagrams, widgets  # noqa: F401 - a lesson has imported diagrams before its explorer

    rows = []
    for scenario, levels in (("fork-pin-split", (0, 10)), ("fork-split-pmd", (3, 4))):
        e = widgets.ScenarioExplorer(scenario, levels=levels)
        n = len(e.scenario.steps)
        rows.append((f"ScenarioExplorer: Step, {scenario} {levels} (SVG)", *_timed_steps(e, repeat * n)))
    e = widgets.ScenarioExplorer("fork-pin-split", levels=(0, 10), figure=False)
    rows.append(("ScenarioExplorer: Step, fork-pin-split (0, 10), text only",
                 *_timed_steps(e, repeat * len(e.scenario.steps))))
    return rows


def widget_latencies(repeat=5):
    """Milliseconds per update for each widget's main interaction (besides explorer steps)."""
    from thplab import Machine, widgets
    from thplab.trace import record

    rows = []
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


def _cell_seconds(cell):
    """Seconds from the kernel starting the cell to its reply (nbclient's timing metadata)."""
    from datetime import datetime

    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _first_code_line(source):
    lines = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return (lines[0] if lines else source.strip().splitlines()[0])[:60]


def lesson_times():
    """``(lesson, seconds top to bottom, [(cell, seconds, first code line)] slowest first)``;
    a cell is named by its index and id."""
    import nbformat
    from nbclient import NotebookClient

    rows = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t = time.perf_counter()
        NotebookClient(nb, timeout=120, kernel_name="python3", record_timing=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        total = time.perf_counter() - t
        cells = sorted(((f"{i} ({c.get('id', '?')})", _cell_seconds(c), _first_code_line(c.source))
                        for i, c in enumerate(nb.cells)
                        if c.cell_type == "code" and c.source.strip()), key=lambda r: -r[1])
        rows.append((path.name, total, cells))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widgets", action="store_true", help="widgets only, no lesson runs")
    args = ap.parse_args()
    print(f"# thplab lesson benchmarks -- {platform.node()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    _serialise_widget_messages()
    with contextlib.redirect_stdout(io.StringIO()):  # clear_output() outside a kernel prints escapes
        steps = explorer_steps()
        rows = widget_latencies()
    print("\n## ScenarioExplorer steps (ms of Python time per Step, messages serialised; target <= 10 ms)\n")
    print("| step | wall median | wall min | wall max | CPU median | KiB sent (median) |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name, wall, cpu, sizes in steps:
        print(f"| {name} | {statistics.median(wall):.1f} | {min(wall):.1f} | {max(wall):.1f} | "
              f"{statistics.median(cpu):.1f} | {statistics.median(sizes) / 1024:.1f} |")
    print("\n## Other widget updates (ms of Python time per update; target <= 200 ms)\n")
    print("| interaction | median | max |\n|---|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {statistics.median(ms):.1f} | {max(ms):.1f} |")
    if not args.widgets:
        lessons = lesson_times()
        print("\n## Lessons top to bottom (s, fresh kernel included; target <= 20 s)\n")
        print("| lesson | seconds | slowest cell | its seconds | cells over 1 s |\n|---|---:|---|---:|---:|")
        for name, total, cells in lessons:
            i, sec, line = cells[0]
            over = sum(1 for c in cells if c[1] > 1.0)
            print(f"| {name} | {total:.1f} | cell {i}: `{line}` | {sec:.2f} | {over} |")
        print("\n## Cells over 1 s\n")
        slow = [(name, c) for name, _, cells in lessons for c in cells if c[1] > 1.0]
        for name, (i, sec, line) in slow:
            print(f"- {name} cell {i}: {sec:.2f} s `{line}`")
        if not slow:
            print("- none")


if __name__ == "__main__":
    main()
