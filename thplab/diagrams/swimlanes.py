"""Operations over time, from :mod:`thplab.trace` recordings.

* :func:`split_swimlane` (lesson 02): the old three-phase ``split_huge_page()``;
  per process the PMD's state per phase, where the pins sit, the counters.
* :func:`split_counters` (lesson 08): head ``_count`` and Σ ``page_mapcount``
  at every point of the RFC's split, with its can-split test per point.
* :func:`race_swimlane` (lessons 09-11): two CPUs side by side, time flowing
  down; interrupts-off regions hatched, the TLB-flush IPI, locks, and in a
  what-if run the step where the accounting breaks.

All read the snapshots a :class:`~thplab.trace.Recorder` or
:class:`~thplab.trace.Interleaving` took; none runs the model.
"""

import drawsvg as dw
import numpy as np

from .. import pgtable as pt
from ..page_flags import PG, compound_head
from ..params import HPAGE_PMD_NR
from ._base import (BLACK, BLUE, GREEN, GREY, ORANGE, PALE, PURPLE, SKY, SMALL_SIZE,
                    TITLE_SIZE, VERMILION, YELLOW, Canvas, text_width, wrap)

# ============================================================ shared: PMDs in snapshots

_LEVEL = {1: "pte", 2: "pmd", 3: "pud", 4: "pgd"}


def _table(state, pfn):
    rows = np.flatnonzero(state.table_pfns == pfn)
    return state.tables[rows[0]] if len(rows) else None


def _pmd_slots(machine, state, head):
    """``[(pid, address, (pmd table pfn, index))]`` of huge PMDs mapping ``head`` in snapshot ``state``."""
    out = []
    for pid in sorted(machine.processes):
        g = _table(state, machine.processes[pid].pgd)
        if g is None:
            continue
        for gi in np.flatnonzero(g):
            u = _table(state, int(pt.pte_pfn(g[gi])))
            for ui in np.flatnonzero(u) if u is not None else []:
                dpfn = int(pt.pte_pfn(u[ui]))
                d = _table(state, dpfn)
                if d is None:
                    continue
                hit = np.flatnonzero(pt.pmd_trans_huge(d) & (pt.pmd_pfn(d) == head))
                for di in hit:
                    out.append((pid, (int(gi) << 39) | (int(ui) << 30) | (int(di) << 21), (dpfn, int(di))))
    return out


def _entry(state, slot):
    t = _table(state, slot[0])
    return 0 if t is None else int(t[slot[1]])


def pmd_state(entry):
    """Name the state of a PMD entry: empty, huge, splitting, invalidated or table."""
    e = int(entry)
    if e == 0:
        return "empty"
    if pt.pmd_trans_huge(e):
        if pt.pmd_trans_splitting(e) and e & pt._PAGE_PRESENT:
            return "splitting"
        return "huge" if e & pt._PAGE_PRESENT else "invalidated"
    return "table"


_STATE_STYLE = {"huge": (SKY, "horiz"), "splitting": (ORANGE, "diag"), "invalidated": (YELLOW, "cross"),
                "table": (GREEN, "dots"), "empty": ("white", None)}


# ============================================================ 3. the old split, phase by phase

_PHASES = (("before", "before the split", ("start", "anon_vma_lock")),
           ("phase 1", "phase 1: mark every PMD _PAGE_SPLITTING", ("__split_huge_page_splitting", "pmdp_splitting_flush")),
           ("phase 2", "phase 2: counts to the tails", ("__split_huge_page_refcount",)),
           ("phase 3", "phase 3: map with PTEs", ("__split_huge_page_map", "pmd_populate")),
           ("after", "after: the tails are pages", ("split_huge_page: done", "end")))


def _phase_of(name):
    for i, (_, _, keys) in enumerate(_PHASES):
        if any(k in name for k in keys):
            return i
    return None


def _split_phases(recorder):
    """``[(phase index, [step indices])]`` in order, for the phases the recording reached."""
    groups = {}
    cur = 0
    for i, s in enumerate(recorder.steps):
        p = _phase_of(s.name)
        cur = cur if p is None else max(cur, p)
        groups.setdefault(cur, []).append(i)
    return sorted(groups.items())


def _watch(recorder, head):
    first = recorder.steps[0].state.mem_map
    tails = np.arange(head + 1, head + HPAGE_PMD_NR)
    pinned = tails[first["_mapcount"][tails] >= 0]  # at level 0: tail _mapcount + 1 = pins on it
    return [head] + [int(p) for p in pinned[:3]] + ([head + 1] if not len(pinned) else [])


def _split_rows(machine, recorder, head):
    slots = _pmd_slots(machine, recorder.steps[0].state, head)
    watch = _watch(recorder, head)
    rows = []
    for p, idx in _split_phases(recorder):
        state = recorder.steps[idx[-1]].state
        mm = state.mem_map
        pmds = [(pid, pmd_state(_entry(state, slot)), _entry(state, slot)) for pid, _, slot in slots]
        counters = [(int(q), int(mm["_count"][q]), int(mm["_mapcount"][q]),
                     bool(mm["flags"][q] & (1 << PG.tail)), bool(mm["flags"][q] & (1 << PG.head))) for q in watch]
        rows.append((p, [recorder.steps[i].name for i in idx], pmds, counters))
    return rows, slots


def describe_split_swimlane(machine, recorder, head):
    rows, slots = _split_rows(machine, recorder, head)
    lines = [f"The old split_huge_page() of the THP at pfn {head:#x} (level {machine.level}), "
             f"{len(slots)} PMD(s) mapping it:"]
    for p, names, pmds, counters in rows:
        lines.append(f"  {_PHASES[p][1]} -- points: {'; '.join(names)}")
        lines.append("    PMDs: " + ", ".join(f"pid {pid} {st}" for pid, st, _ in pmds))
        lines.append("    " + "; ".join(_counter_text(head, c) for c in counters))
    return "\n".join(lines)


def _counter_text(head, c):
    q, count, mapcount, tail, is_head = c
    who = "head" if q == head else f"subpage {q - head}"
    if q != head and tail:
        return f"{who}: _count {count}, _mapcount {mapcount} (= {mapcount + 1} pin(s) in a tail)"
    return f"{who}: _count {count}, _mapcount {mapcount}" + (
        "" if is_head or q == head or tail else " (a page: _count has its maps + pins)")


def split_swimlane(machine, recorder, head):
    """Swimlane of the old three-phase ``split_huge_page()`` recorded in ``recorder`` (level 0).

    One row per phase: its kernel points on the left, each process's PMD in a column, and under
    the PMDs the counters after the phase -- 860 px wide, a notebook column at 1280 px.
    """
    head = int(head)
    rows, slots = _split_rows(machine, recorder, head)
    text = describe_split_swimlane(machine, recorder, head)
    pids = [pid for pid, _, _ in slots]
    width, first_x = 860, 330
    col_w = min(190, (width - first_x - 12) // max(len(pids), 1))
    names_w = first_x - 30
    # each row as tall as its points (wrapped) or its PMDs and counters, whichever is taller
    laid = []
    for p, names, pmds, counters in rows:
        lines = [wrap(f"• {n}", names_w, SMALL_SIZE, max_lines=2) for n in names[:4]]
        h = max(36 + 13 * sum(map(len, lines)) + (14 if len(names) > 4 else 0), 96 + 16 * len(counters)) + 12
        laid.append((p, names, pmds, counters, lines, h))
    ys = np.concatenate([[70], 70 + np.cumsum([x[-1] for x in laid])])
    title = f"The old split_huge_page() in three phases: THP at pfn {head:#x}, level {machine.level}"
    c = Canvas(width, int(ys[-1]) + 56, title, text)
    c.heading(title)
    c.text("phase and the kernel points in it", 12, 56, weight="bold")
    for j, pid in enumerate(pids):
        c.text(f"pid {pid}: its PMD", first_x + j * col_w + 8, 56, weight="bold")
    for r, (p, names, pmds, counters, lines, h) in enumerate(laid):
        y = float(ys[r])
        c.box(8, y, width - 16, h - 8, fill="white" if r % 2 else PALE, stroke="none", class_="phase",
              data_phase=_PHASES[p][0])
        c.text(_PHASES[p][1], 14, y + 18, weight="bold")
        ty = y + 36
        for name_lines in lines:
            for line in name_lines:
                c.text(line, 20, ty, size=SMALL_SIZE)
                ty += 13
        if len(names) > 4:
            c.text(f"  … {len(names) - 4} more", 20, ty, size=SMALL_SIZE)
        for j, (pid, st, e) in enumerate(pmds):
            x = first_x + j * col_w + 8
            colour, hatch = _STATE_STYLE[st]
            fill = c.hatch(f"pmd-{st}", colour, hatch) if hatch else "white"
            c.box(x, y + 8, col_w - 24, 46, fill=fill, stroke=BLACK, stroke_width=1.6, rx=6, class_="pmd-state",
                  data_pid=pid, data_state=st, tip=pt.decode_entry(e, "pmd"))
            c.add(dw.Rectangle(x + 5, y + 13, col_w - 34, 20, fill="white", rx=3))
            c.text(st, x + 10, y + 28, weight="bold")
            c.text(f"{e:#018x}", x, y + 72, size=SMALL_SIZE, mono=True)
            if r and laid[r - 1][2][j][1] != st:
                c.arrow(x + (col_w - 24) / 2, y - 20, x + (col_w - 24) / 2, y + 6, colour=BLACK,
                        kind="pmd-change", width=1.4, tip=f"pid {pid}: {laid[r - 1][2][j][1]} -> {st}")
        for k, cnt in enumerate(counters):
            line = _counter_text(head, cnt)
            pin = cnt[0] != head and cnt[3] and cnt[2] >= 0
            c.text(("◆ " if pin else "") + line, first_x + 8, y + 96 + 16 * k, size=SMALL_SIZE,
                   class_="counter", data_pfn=cnt[0])
    ly = float(ys[-1]) + 14
    c.text("Under the PMDs: the counters (struct page) after the phase.  ◆ a pin held in a tail's "
           "_mapcount (old scheme).", 12, ly, size=SMALL_SIZE)
    c.text("PMD states: huge (horizontal lines), splitting (diagonal), invalidated (cross-hatch), "
           "table (dots)", 12, ly + 16, size=SMALL_SIZE)
    return c.finish("split_swimlane")


# ============================================================ 6. the new split's counters

def _split_test_rows(recorder, head):
    # v4.5 keeps PMD maps in page[1] (compound_mapcount, biased -1) and DoubleMap's extra counts
    # in every _mapcount: total_mapcount() adds the one and takes the other off.
    v45 = bool(recorder.machine.kernel.caps.get("compound_mapcount"))
    rows = []
    for i, s in enumerate(recorder.steps):
        mm = s.state.mem_map
        compound = bool(mm["flags"][head] & (1 << PG.head))
        count = int(mm["_count"][head])
        total = int((mm["_mapcount"][head:head + HPAGE_PMD_NR].astype(np.int64) + 1).sum())
        if v45 and compound:
            total += int(mm["mapping"][head + 1]) + 1
            total -= HPAGE_PMD_NR * bool(mm["flags"][head + 1] & (1 << PG.private_2))
        checks = ("racy check" in s.name or "compound_lock taken" in s.name
                  or s.name == "split_huge_page: frozen")
        outside = s.name in ("start", "end")
        rows.append({"i": i, "name": s.name, "count": count, "total": total, "compound": compound,
                     "outside": outside, "ok": compound and not outside and total == count - 1,
                     "kernel_checks": checks, "detail": dict(s.detail)})
    return rows


def describe_split_counters(recorder, head):
    total = "total_mapcount" if recorder.machine.kernel.caps.get("compound_mapcount") else "Σ page_mapcount"
    lines = [f"split_huge_page() of the THP at pfn {head:#x}: the test page_count - 1 == {total}"]
    for r in _split_test_rows(recorder, head):
        verdict = ("n/a (not compound any more)" if not r["compound"] else
                   "n/a (outside the call: the caller's reference is not held)" if r["outside"] else
                   ("PASS" if r["ok"] else "FAIL") + f": {r['count']} - 1 = {r['count'] - 1} "
                   f"{'==' if r['ok'] else '!='} {r['total']}")
        lines.append(f"  {r['i']:>2} {r['name']}: head _count {r['count']}, {total} {r['total']} -- "
                     f"{verdict}" + (" [the kernel tests here]" if r["kernel_checks"] else ""))
    return "\n".join(lines)


def split_counters(recorder, head, title=None):
    """Head ``_count`` and Σ ``page_mapcount`` at every point of a recorded split, with the can-split test.

    ``recorder``: e.g. from :func:`thplab.lessons.series_middle.split_trace` (level >= 6).  Points where
    the kernel itself evaluates the test are marked ◆.  The first point ("start") is before the caller's
    ``get_page()``, so it reads one reference short.
    """
    head = int(head)
    rows = _split_test_rows(recorder, head)
    text = describe_split_counters(recorder, head)
    n = len(rows)
    left = 70
    # one column per point, as wide as 860 px allows (a notebook column at 1280 px)
    col = max(min(112, (860 - left - 20) // max(n, 1)), 64)
    bar = (col - 16) // 2
    width = max(left + col * n + 20, 720)
    top, plot_h = 80, 200
    total = "total_mapcount" if recorder.machine.kernel.caps.get("compound_mapcount") else "Σ page_mapcount"
    title = title or f"split_huge_page(): can it split? head _count vs {total}, THP at pfn {head:#x}"
    c = Canvas(width, top + plot_h + 110 + 16 * n + 20, title, text)
    c.heading(title)
    vmax = max(max(r["count"] for r in rows), max(r["total"] for r in rows), 1)
    base = top + plot_h

    def yv(v):
        return base - plot_h * v / vmax

    c.add(dw.Line(left - 8, base, left + col * n, base, stroke=BLACK))
    for v in sorted({0, vmax, vmax // 2}):
        c.text(str(v), left - 12, yv(v) + 4, size=SMALL_SIZE, anchor="end")
        c.add(dw.Line(left - 8, yv(v), left + col * n, yv(v), stroke=GREY, stroke_width=0.5, stroke_dasharray="2 3"))
    count_fill = c.hatch("count", BLUE, "diag")
    total_fill = c.hatch("total", ORANGE, "dots")
    for r in rows:
        x = left + col * r["i"] + 10
        for k, (key, fill, label) in enumerate((("count", count_fill, "_count"), ("total", total_fill, "Σ"))):
            v = r[key]
            bx = x + k * (bar + 4)
            c.box(bx, yv(v), bar, base - yv(v), fill=fill, stroke=BLACK, class_="bar", data_step=r["i"],
                  data_series=key, data_value=v, tip=f"point {r['i']}: {label} {v}")
            c.text(str(v), bx + bar / 2, yv(v) - 4 - 11 * k * (bar < 34), size=SMALL_SIZE, anchor="middle",
                   weight="bold")
        mid = x + bar + 2
        c.text(str(r["i"]), mid, base + 16, anchor="middle", weight="bold")
        if not r["compound"] or r["outside"]:
            verdict, mark, colour = "n/a", "—", GREY
        elif r["ok"]:
            verdict, mark, colour = "pass", "✔", GREEN
        else:
            verdict, mark, colour = "fail", "✘", VERMILION
        c.box(x - 4, base + 24, col - 6, 40, fill="white", stroke=colour,
              stroke_width=2.5 if verdict != "n/a" else 1, stroke_dasharray=None if verdict == "pass" else "5 3",
              rx=6, class_="verdict", data_step=r["i"], data_verdict=verdict)
        c.text(f"{mark} {verdict}", mid, base + 40, anchor="middle", weight="bold", fill=BLACK)
        c.text("outside" if r["outside"] else f"{r['count'] - 1} vs {r['total']}" if r["compound"] else "split",
               mid, base + 56, size=SMALL_SIZE, anchor="middle")
        if r["kernel_checks"]:
            c.text("◆ tested", mid, base + 80, size=SMALL_SIZE, anchor="middle", weight="bold",
                   class_="kernel-checks")
    ly = base + 106
    for r in rows:
        c.text(f"{r['i']:>2}  {r['name']}" + (" ◆" if r["kernel_checks"] else ""), 16, ly + 16 * r["i"],
               size=SMALL_SIZE, mono=True)
    lx = 16
    c.box(lx, 40, 16, 14, fill=count_fill, stroke=BLACK)
    c.text("head _count (page_count)", lx + 22, 52, size=SMALL_SIZE)
    c.box(lx + 190, 40, 16, 14, fill=total_fill, stroke=BLACK)
    c.text(total + ("" if total == "total_mapcount" else " (512 subpages)"), lx + 212, 52, size=SMALL_SIZE)
    c.text(f"test: page_count − 1 == {total}  (✔ pass / ✘ fail)", lx + 420, 52, size=SMALL_SIZE)
    return c.finish("split_counters")


# ============================================================ 4. two CPUs racing

def _irqs_off(steps, cpus):
    """Per step, the CPUs with interrupts off, as the trace recorded them (:attr:`Step.irqs_off`)."""
    return [set(s.irqs_off) & set(cpus) for s in steps]


def _locks(steps, head):
    """Per step, lock names read from the snapshot (PG_compound_lock / PG_locked on the head) or detail."""
    out = []
    for s in steps:
        extra = s.detail.get("locks") if isinstance(s.detail, dict) else None
        locks = list(extra) if extra else []
        flags = int(s.state.mem_map["flags"][head]) if head is not None else 0
        if flags >> PG.compound_lock & 1:
            locks.append("compound_lock")
        if flags >> PG.locked & 1:
            locks.append("page lock")
        out.append(locks)
    return out


def _race_parts(race, head=None, title=None):
    """``(interleaving, machine, head, title)`` of a :class:`~thplab.races.Race` or a bare Interleaving.

    For a bare :class:`~thplab.trace.Interleaving` (``interleaving is True`` on it), ``head`` is
    the compound head of the page given, read in the first snapshot (None: no lock or counter
    is read from the flags), and ``title`` defaults to "two CPUs".
    """
    if getattr(race, "interleaving", None) is True:
        il = race
        if head is not None:
            head = int(compound_head(il.steps[0].state.mem_map, int(head)))
        return il, il.machine, head, title or "two CPUs"
    return race.interleaving, race.machine, race.head if head is None else int(head), title or race.title


def _broken_step(il, machine, head, broken_at):
    if broken_at is not None:
        return broken_at
    from ..invariants import problems

    steps = il.steps
    if not il.finished or not problems(machine):
        return None
    for i, s in enumerate(steps):
        if s.name.startswith("error"):
            return i
    done = [i for i, s in enumerate(steps) if s.name == "done"]
    if done and head is not None:
        pages = np.arange(head, head + HPAGE_PMD_NR)
        for i in range(done[0] + 1, len(steps)):
            a, b = steps[i - 1].state.mem_map, steps[i].state.mem_map
            if (a["_count"][pages] != b["_count"][pages]).any() or (a["_mapcount"][pages] != b["_mapcount"][pages]).any():
                return i
    return len(steps) - 1


def describe_race_swimlane(race, broken_at=None, *, head=None, title=None):
    """Text twin of :func:`race_swimlane`: one line per point, with interrupts, waits and the break."""
    il, machine, head, title = _race_parts(race, head, title)
    steps = il.steps
    cpus = list(il.cpus)
    irq = _irqs_off(steps, cpus)
    broken = _broken_step(il, machine, head, broken_at)
    without = machine.smp.without
    lines = [f"{title}, level {machine.level}" + (f", what-if WITHOUT {', '.join(sorted(without))}"
                                                  if without else "")]
    for i, s in enumerate(steps):
        extra = []
        if irq[i]:
            extra.append("irqs off on " + ", ".join(sorted(irq[i])))
        if s.waiting:
            extra.append("waiting")
        if i == broken:
            extra.append("THE ACCOUNTING BREAKS HERE")
        name = " ".join(s.name.split())
        lines.append(f"  {i:>2} {s.cpu}: {name}" + (f" [{'; '.join(extra)}]" if extra else ""))
    return "\n".join(lines)


#: Geometry of :func:`race_swimlane` (px).  A lane is [interrupts-off margin | point box | lock
#: column]; the time arrow and two lanes fit :data:`~thplab.diagrams._base.COLUMN_WIDTH`.
_LEFT, _IRQ_M, _BOX_W, _LOCK_GAP, _LOCK_W, _LANE_GAP = 40, 12, 292, 4, 96, 16
_LINE = 13          # line pitch of 11 px text
_MAX_LINES = 6      # a longer point name ends in "…" (whole in the box's <title> and the text twin)


def _rotated(c, s, x, y, **kw):
    """Text reading downwards from (x, y), its glyphs to the right of x, haloed in white over a hatch."""
    return c.text(s, x, y, size=SMALL_SIZE, transform=f"rotate(90 {x} {y})",
                  style="paint-order:stroke;stroke:white;stroke-width:3px", **kw)


def race_swimlane(race, broken_at=None, *, head=None, title=None):
    """Swimlanes of a :class:`~thplab.races.Race` (play it first, or step it part way), or of a bare
    :class:`~thplab.trace.Interleaving` (``head``: a page of the THP whose flags show the locks).
    ``title``: the heading (default: the race's title and the level).

    Each CPU is a column; every kernel point is a box in its CPU's column, in time order
    downwards, its name wrapped onto as many lines as it needs (up to six).  Hatched
    bands: interrupts off.  Arrows: the TLB-flush IPI sent (and, when the CPU enables
    interrupts again, received).  Right of each lane: the locks the snapshots show.
    ``broken_at`` overrides the step marked as where the identity breaks (by default: in a
    finished run whose invariants fail, the first error, or the first change to the THP's
    counters after the splitter returned).  Two CPUs fit the notebook column (860 px).
    """
    il, machine, head, name = _race_parts(race, head, title)
    heading_given = title is not None
    steps = il.steps
    cpus = list(il.cpus)
    irq = _irqs_off(steps, cpus)
    locks = _locks(steps, head)
    broken = _broken_step(il, machine, head, broken_at)
    text = describe_race_swimlane(il, broken_at, head=head, title=name)
    without = machine.smp.without
    title = (name if heading_given else f"{name}: level {machine.level}") + (
        f", what-if without {' and '.join(sorted(without))}" if without else "")
    lane_w = _BOX_W + _LOCK_GAP + _LOCK_W
    x_of = {cpu: _LEFT + j * (lane_w + _LANE_GAP + _IRQ_M) for j, cpu in enumerate(cpus)}
    width = x_of[cpus[-1]] + lane_w + 8
    heading = wrap(title, width - 24, TITLE_SIZE, bold=True)
    labels = [wrap(f"{i}. " + ("WAITS: " if s.waiting else "") + " ".join(s.name.split()), _BOX_W - 14,
                   SMALL_SIZE, max_lines=_MAX_LINES) for i, s in enumerate(steps)]
    lines = [max(len(lab) + (i == broken), len(locks[i]), 1) for i, lab in enumerate(labels)]
    row_h = np.array([_LINE * n + 18 for n in lines])
    top = 70 + 19 * len(heading)
    ys = np.concatenate([[top], top + np.cumsum(row_h)])
    legend = [wrap("hatched: interrupts off (the IPI cannot be taken); dashed box: WAITS; ✘ thick box: where "
                   "the accounting breaks; ⟶ red dashed: the TLB-flush IPI", width - 48, SMALL_SIZE),
              wrap("a lock the CPU holds, read from the head's flags in each snapshot (PG_compound_lock, "
                   "PG_locked); owner: the CPU that ran when it was taken", width - 48, SMALL_SIZE)]
    c = Canvas(width, ys[-1] + 30 + _LINE * sum(map(len, legend)) + 8 * len(legend), title, text)
    c.add(dw.Text(heading, TITLE_SIZE, 12, 22, line_height=19 / TITLE_SIZE, font_weight="bold", class_="heading"))
    irq_fill = c.hatch("irqoff", PURPLE, "diag")
    for cpu, x in x_of.items():
        c.text(cpu, x + _BOX_W / 2, top - 24, anchor="middle", size=14, weight="bold")
        c.add(dw.Line(x + _BOX_W / 2, top - 18, x + _BOX_W / 2, ys[-1], stroke=GREY, stroke_dasharray="2 4"))
    c.text("time", 4, top + 10, size=SMALL_SIZE, fill=GREY)
    c.arrow(16, top + 16, 16, top + 106, colour=GREY, kind="time", width=1.2)
    # interrupts-off bands (one rect per contiguous stretch per CPU), named in their left margin
    for cpu, x in x_of.items():
        on = np.array([cpu in s for s in irq], bool)
        if not on.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(int), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            h = ys[b] - ys[a]
            c.box(x - _IRQ_M, ys[a], _BOX_W + _IRQ_M + 2, h, fill=irq_fill, stroke=PURPLE,
                  stroke_width=1.2, class_="irqs-off", data_cpu=cpu, data_first=int(a), data_last=int(b - 1),
                  data_step=int(a), tip=f"{cpu}: interrupts off, steps {a}..{b - 1}")
            label = next((n for n in ("interrupts off", "irqs off") if text_width(n, SMALL_SIZE, True) + 8 <= h), None)
            if label:
                _rotated(c, label, x - _IRQ_M + 1, ys[a] + 4, fill=PURPLE, weight="bold", data_step=int(a))
    # the points
    owner = {}
    for i, s in enumerate(steps):
        y, h = ys[i], row_h[i]
        for cpu in [s.cpu] if s.cpu in x_of else list(x_of):
            x = x_of[cpu]
            is_broken = i == broken
            c.box(x, y + 3, _BOX_W, h - 6, fill="white", rx=5,
                  stroke=VERMILION if is_broken else BLACK, stroke_width=3 if is_broken else 1.2,
                  stroke_dasharray="5 3" if s.waiting else None, class_="point", data_step=i, data_cpu=cpu,
                  data_waiting=int(bool(s.waiting)), tip=str(s))
            c.add(dw.Text(labels[i], SMALL_SIZE, x + 7, y + 18, line_height=_LINE / SMALL_SIZE, fill=BLACK,
                          class_="point-label", data_step=i, data_cpu=cpu))
            if is_broken:
                c.text("✘ the accounting breaks here", x + 7, y + 18 + _LINE * len(labels[i]), size=SMALL_SIZE,
                       weight="bold", fill=VERMILION, class_="broken", data_step=i)
        for k, lock in enumerate(locks[i]):
            if lock not in (locks[i - 1] if i else []):
                owner[lock] = s.cpu if s.cpu in x_of else cpus[0]
            x = x_of[owner[lock]] + _BOX_W + _LOCK_GAP
            lh = (h - 6) / len(locks[i])
            c.box(x, y + 3 + k * lh, _LOCK_W, lh, fill=YELLOW, stroke=BLACK, rx=3,
                  class_="lock", data_step=i, data_lock=lock, data_cpu=owner[lock],
                  tip=f"{owner[lock]} holds {lock} (read from the head's flags)")
            c.text(lock, x + _LOCK_W / 2, y + 3 + k * lh + lh / 2 + 4, size=SMALL_SIZE, anchor="middle",
                   data_step=i)
    # the IPI
    for i, s in enumerate(steps):
        if "IPI waits for" not in s.name or s.cpu not in x_of:
            continue
        for cpu in cpus:
            if cpu == s.cpu or cpu not in s.name:
                continue
            right = x_of[cpu] > x_of[s.cpu]
            y = ys[i] + row_h[i] / 2
            x1 = x_of[s.cpu] + (_BOX_W if right else 0)
            x2 = x_of[cpu] + (-2 if right else _BOX_W + 2)
            c.arrow(x1, y, x2, y, colour=VERMILION, kind="ipi-sent", width=2.2, dash="6 3", data_step=i,
                    tip=f"{s.cpu} sends the TLB-flush IPI and waits for {cpu}")
            c.text("TLB-flush IPI", (x1 + x2) / 2, y - 6, size=SMALL_SIZE, anchor="middle", fill=VERMILION,
                   weight="bold", style="paint-order:stroke;stroke:white;stroke-width:3px", data_step=i)
            later = [j for j in range(i + 1, len(steps)) if cpu not in irq[j]]
            if later:
                j = later[0]
                nxt = [k for k in range(j, len(steps)) if steps[k].cpu == s.cpu]
                k = nxt[0] if nxt else j
                c.arrow(x2, ys[j] + 4, x1, ys[k] + row_h[k] / 2 - 4, colour=VERMILION, kind="ipi-ack", width=1.6,
                        data_step=j, tip=f"{cpu} enables interrupts: the IPI is taken, {s.cpu} goes on")
    ly = ys[-1] + 28
    for swatch, part in zip((irq_fill, YELLOW), legend):
        c.box(12, ly - 11, 18, 14, fill=swatch, stroke=PURPLE if swatch == irq_fill else BLACK)
        c.add(dw.Text(part, SMALL_SIZE, 36, ly, line_height=_LINE / SMALL_SIZE, class_="legend"))
        ly += _LINE * len(part) + 8
    return c.finish("race_swimlane")


__all__ = ["split_swimlane", "describe_split_swimlane", "split_counters", "describe_split_counters",
           "race_swimlane", "describe_race_swimlane", "pmd_state"]
