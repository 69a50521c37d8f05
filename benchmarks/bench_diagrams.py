"""Diagram benchmarks: Python time of one ScenarioExplorer step (model + SVG) and of each diagram.

Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/bench_diagrams.py

Target (issue #10): one explorer step -- the model stepping two kernels, the
change snapshots, thp_mappings() and its SVG serialisation into the one HTML
widget -- <= 10 ms on a lesson-sized (16 MiB) machine.  A benchmark, not a test.
"""

import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _ms(fn, repeat=30, setup=None):
    out = []
    for _ in range(repeat):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out), min(out), max(out)


def explorer_rows():
    from thplab import widgets

    rows = []
    for scenario, levels in (("fork-pin-split", (0, 10)), ("fork-split-pmd", (3, 4)), ("partial-munmap", (0, 10))):
        e = widgets.ScenarioExplorer(scenario, levels=levels, figure=True)
        n = len(e.scenario.steps)

        def one_step(e=e, n=n):
            if e.run.finished:
                e.reset()
                e.step()  # the first step has no THP yet: time the steps that draw
            e.step()

        rows.append((f"ScenarioExplorer step, {scenario} {levels} (model + SVG)", _ms(one_step, 3 * n)))
        e.run_all()
        rows.append((f"  of which: redraw only (toggle kernel), {scenario}",
                     _ms(lambda e=e: setattr(e.kernel, "value", levels[0] if e.kernel.value == levels[1] else levels[1]))))
    return rows


def diagram_rows():
    from thplab import Machine, diagrams as D
    from thplab.lessons import foundations as fnd
    from thplab.lessons.series_middle import split_trace
    from thplab.races import RACES

    m = Machine.boot("16M", patches=4)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    snap = D.snapshot_thp(m, head)
    m.split_huge_pmd(child, addr)
    pm, ppid, thp, small = fnd.primer_machine()
    om, opid, oaddr, ohead = fnd.old_split_machine()
    _, orec = fnd.record_old_split(om, ohead)
    _, rec, run = split_trace(6)
    race = RACES["split-vs-gup-fast"](0)
    race.play()
    return [
        ("snapshot_thp", _ms(lambda: D.snapshot_thp(m, head))),
        ("thp_mappings + .svg (PMD + PTEs, changes marked)", _ms(lambda: D.thp_mappings(m, head, snap).svg)),
        ("page_table_walk + .svg", _ms(lambda: D.page_table_walk(pm, ppid, fnd.WORKED_EXAMPLE).svg)),
        ("split_swimlane + .svg", _ms(lambda: D.split_swimlane(om, orec, ohead).svg)),
        ("split_counters + .svg", _ms(lambda: D.split_counters(rec, run.head).svg)),
        ("race_swimlane + .svg", _ms(lambda: D.race_swimlane(race).svg)),
        ("pmd_state_machine(0, 10) + .svg", _ms(lambda: D.pmd_state_machine(0, 10).svg)),
        ("mem_map_chart (matplotlib -> SVG)", _ms(lambda: D.mem_map_chart(pm).svg, 5)),
    ]


def main():
    print(f"# thplab diagram benchmarks -- {platform.node()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}\n")
    print("| what | median ms | min | max |\n|---|---:|---:|---:|")
    for name, (med, lo, hi) in explorer_rows() + diagram_rows():
        print(f"| {name} | {med:.2f} | {lo:.2f} | {hi:.2f} |")
    print("\nTarget: one explorer step <= 10 ms of Python time.")


if __name__ == "__main__":
    main()
