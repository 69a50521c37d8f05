"""Lessons 06, 08, 13, 14 and the scenario explorer: who maps one THP, and its 512 frames' counters.

Left: each process's mapping of the THP -- a huge PMD (one arrow to the
whole strip) or a PTE table (one arrow per run of consecutive PTEs mapping
consecutive subpages).  Right: the 512 frames as a strip, grouped into runs
of equal counters, each run labelled with its subpage range, ``_count``,
``_mapcount``, ``page_mapcount()`` of the booted level and the pins
thplab holds.  What changed since a :func:`snapshot_thp` is outlined with
a thick dashed line and marked "▲ changed".
"""

from dataclasses import dataclass

import drawsvg as dw
import numpy as np

from .. import pgtable as pt
from ..page_flags import PageHead, PageTail, Use
from ..params import HPAGE_PMD_NR
from ._base import (BLACK, BLUE, GREY, LABEL_SIZE, ORANGE, PALE, SKY, SMALL_SIZE, VERMILION, Canvas,
                    runs, span, text_width, wrap)

_KINDS = {0: "free", 1: "page", 2: "head", 3: "tail"}
_MAX_LABELS = 24
_MAX_PTE_ARROWS = 24


def _rows(m, table_pfns):
    rows = m.pgtables.row_of[np.asarray(table_pfns, dtype=np.int64)]
    return m.pgtables.entries[rows[rows >= 0]], rows >= 0


def process_maps(machine, head):
    """How each live process maps the frames ``head .. head+511``, from its page tables.

    ``{pid: {"pmd": [(address, entry)], "ptes": [(address, first subpage, nr, entry of the first)],
    "other_ptes": n}}`` -- ``other_ptes``: PTEs in the same 2 MiB ranges mapping other frames
    (a COW copy, say).  Vectorized per table level, like :func:`thplab.invariants.mapping_counts`.
    """
    m = machine
    out = {}
    for pid in sorted(m.processes):
        mm = m.processes[pid]
        g = m.pgtables.table(mm.pgd)
        gi = np.flatnonzero(g)
        u_t, va = pt.pte_pfn(g[gi]), gi.astype(np.int64) << 39
        u, ok = _rows(m, u_t)
        va = va[ok]
        r, c = np.nonzero(u)
        d_t, va = pt.pte_pfn(u[r, c]), va[r] + (c.astype(np.int64) << 30)
        d, ok = _rows(m, d_t)
        va = va[ok]
        r, c = np.nonzero(d)
        dv, va = d[r, c], va[r] + (c.astype(np.int64) << 21)
        huge = pt.pmd_trans_huge(dv)
        mine = huge & (pt.pmd_pfn(dv) == head)
        pmds = [(int(a), int(e)) for a, e in zip(va[mine], dv[mine])]
        e, ok = _rows(m, pt.pte_pfn(dv[~huge]))
        tva = va[~huge][ok]
        r, c = np.nonzero(pt.pte_present(e))
        pfn = pt.pte_pfn(e[r, c])
        addr = tva[r] + (c.astype(np.int64) << 12)
        inside = (pfn >= head) & (pfn < head + HPAGE_PMD_NR)
        regions = np.unique(tva[r][inside])
        other = int((np.isin(tva[r], regions) & ~inside).sum())
        a, p, ent = addr[inside], pfn[inside], e[r, c][inside]
        order = np.argsort(a, kind="stable")
        a, p, ent = a[order], p[order], ent[order]
        ptes = []
        if len(a):
            brk = np.flatnonzero((np.diff(a) != 4096) | (np.diff(p) != 1)) + 1
            edges = np.concatenate([[0], brk, [len(a)]])
            ptes = [(int(a[s]), int(p[s] - head), int(t - s), int(ent[s])) for s, t in zip(edges[:-1], edges[1:])]
        out[pid] = {"pmd": pmds, "ptes": ptes, "other_ptes": other}
    return out


@dataclass
class ThpSnapshot:
    """The counters of one THP's 512 frames and who maps them, at one moment (see :func:`snapshot_thp`)."""

    head: int
    compound: bool
    values: np.ndarray    # (512, 5): kind, _count, _mapcount, page_mapcount (or -999 if free), pins
    maps: dict            # pid -> mapping summary (tuple), from process_maps

    def mapping_key(self, pid):
        return self.maps.get(pid)


_COLS = ("kind", "_count", "_mapcount", "page_mapcount", "pins")


def snapshot_thp(machine, head, maps=None):
    """A :class:`ThpSnapshot` of the THP at ``head``: pass it as ``previous=`` to mark changes.

    ``maps``: :func:`process_maps` of the same state, if already computed.
    """
    m = machine
    head = int(head)
    pages = np.arange(head, head + HPAGE_PMD_NR)
    mmap = m.mem_map
    free = mmap["use"][pages] == Use.free
    kind = np.where(free, 0, np.where(PageHead(mmap, pages), 2, np.where(PageTail(mmap, pages), 3, 1)))
    pm = np.where(free, -999, np.asarray(m.page_mapcount(pages)))
    values = np.stack([kind, mmap["_count"][pages].astype(np.int64), mmap["_mapcount"][pages].astype(np.int64),
                       pm.astype(np.int64), m.pins[pages].astype(np.int64)], axis=1)
    maps = {pid: (tuple(x[0] for x in v["pmd"]), tuple(x[:3] for x in v["ptes"]), v["other_ptes"])
            for pid, v in (process_maps(m, head) if maps is None else maps).items()}
    return ThpSnapshot(head, bool(PageHead(mmap, head)), values, maps)


def _run_label(v, start, stop, old=None):
    """``(label, hover text)`` of a run; with ``old`` values each changed field says what it was."""
    kind = _KINDS[int(v[0])]

    def f(i, name):
        was = f" (was {old[i]})" if old is not None and old[i] != v[i] else ""
        return f"{name} {v[i]}{was}"

    where = f"subpage{'s' if stop - start > 1 else ''} {span(start, stop)}"
    if kind == "free":
        return f"{where} free", "free page frames (back in the buddy allocator)"
    who = {"head": "head", "tail": "tail" + ("s" if stop - start > 1 else ""), "page": "small page"
           + ("s" if stop - start > 1 else "")}[kind]
    text = (f"{where} {who}: {f(1, '_count')}  {f(2, '_mapcount')}  {f(3, 'page_mapcount')}"
            + (f"  {f(4, 'pins')}" if v[4] or (old is not None and old[4]) else ""))
    return text, text


def _fmt_change(col, old, new):
    if col == "kind":
        return f"{_KINDS[int(old)]}->{_KINDS[int(new)]}"
    return f"{col} {old}->{new}"


def describe_thp_mappings(machine, head, previous=None):
    """Text twin of :func:`thp_mappings`."""
    maps = process_maps(machine, head)
    return _describe(machine, snapshot_thp(machine, head, maps), maps, previous)


def _changes(snap, previous):
    if previous is None or previous.head != snap.head:
        return np.zeros(HPAGE_PMD_NR, bool), set()
    changed = (snap.values != previous.values).any(axis=1)
    pids = {pid for pid in set(snap.maps) | set(previous.maps) if snap.maps.get(pid) != previous.maps.get(pid)}
    return changed, pids


def _kernel_label(machine):
    """``'level 4'`` on the RFC's stack, else the kernel's name (``'v4.5'``, ``'v4.5 step 3'``)."""
    k = machine.kernel
    return f"level {k.level}" if k.stack == "rfc-v1" else k.name


def _compound_line(machine, head, maps):
    """One line on how this kernel counts PMD maps of the THP, where the strip alone misleads; else None.

    v4.5: ``compound_mapcount`` and ``PageDoubleMap``.  RFC v1 (patch 04 on):
    a PMD is counted in the head's ``_mapcount`` only, so a tail mapped by a
    PMD in one process and a PTE in another reads ``page_mapcount`` 1.
    """
    k = machine.kernel
    if not PageHead(machine.mem_map, head):
        return None
    if not k.caps.get("compound_mapcount"):
        if (k.caps.get("pte_mapped_thp") and any(v["pmd"] for v in maps.values())
                and any(v["ptes"] for v in maps.values())):
            return ("RFC v1: a PMD map is counted in the head's _mapcount only; "
                    "a tail's page_mapcount counts its PTEs")
        return None
    line = (f"compound_mapcount {int(k.compound_mapcount(head))} (PMD maps, kept in page[1]);  "
            f"PageDoubleMap {'set' if k.PageDoubleMap(head) else 'clear'}")
    if k.has("deferred_split_count"):
        queued = any(head in q for q in machine.split_queues)
        line += f";  {'on' if queued else 'not on'} the deferred split queue"
    return line


def _describe(machine, snap, maps, previous):
    head = snap.head
    state = "a compound page (THP)" if snap.compound else "not compound: 512 separate page frames"
    lines = [f"Frames {head:#x}-{head + HPAGE_PMD_NR - 1:#x} at {_kernel_label(machine)}: {state}."]
    extra = _compound_line(machine, head, maps)
    if extra:
        lines.append("  " + extra)
    changed, pids = _changes(snap, previous)
    for pid, v in maps.items():
        mark = " [changed]" if pid in pids else ""
        if v["pmd"]:
            lines.append(f"  pid {pid}: one huge PMD at {v['pmd'][0][0]:#x} maps all 512 subpages{mark}")
        elif v["ptes"]:
            nr = sum(x[2] for x in v["ptes"])
            runs_ = ", ".join(f"subpages {span(s, s + n)}" for _, s, n, _ in v["ptes"][:8])
            more = f" and {len(v['ptes']) - 8} more runs" if len(v["ptes"]) > 8 else ""
            lines.append(f"  pid {pid}: {nr} PTEs in {len(v['ptes'])} run(s): {runs_}{more}{mark}")
        else:
            lines.append(f"  pid {pid}: does not map these frames{mark}")
        if v["other_ptes"]:
            lines.append(f"    (and {v['other_ptes']} PTEs in the same range map other frames, e.g. COW copies)")
    for pid in sorted(pids - set(maps)):
        lines.append(f"  pid {pid}: gone [changed]")
    for s, t in runs(snap.values):
        text, _ = _run_label(snap.values[s], s, t)
        if changed[s:t].any() and previous is not None:
            diffs = []
            for ps, pt_ in runs(previous.values[s:t]):
                old = previous.values[s + ps]
                d = [_fmt_change(c, old[i], snap.values[s][i]) for i, c in enumerate(_COLS)
                     if old[i] != snap.values[s][i]]
                if d:
                    word = "subpage" if pt_ - ps == 1 else "subpages"
                    diffs.append(f"{word} {span(s + ps, s + pt_)}: " + ", ".join(d))
            text += " [changed: " + "; ".join(diffs) + "]"
        lines.append("  " + text)
    lines.append("  pins are thplab's count of get_user_pages() references held (not a struct page field).")
    return "\n".join(lines)


def thp_mappings(machine, head, previous=None, title=None):
    """Diagram: each process's mapping of the THP at ``head`` and the counters of its 512 frames.

    ``previous``: a :func:`snapshot_thp` taken earlier; runs and processes
    that changed since are outlined (thick dashes) and marked "▲ changed".
    The diagram's ``snapshot`` is the :class:`ThpSnapshot` it was drawn from:
    the ``previous`` of the next step's drawing.
    """
    head = int(head)
    maps = process_maps(machine, head)
    snap = snapshot_thp(machine, head, maps)
    text = _describe(machine, snap, maps, previous)
    changed, changed_pids = _changes(snap, previous)
    value_runs = runs(snap.values)
    shown = value_runs[:_MAX_LABELS]

    # ---- run labels first: each wrapped to the column beside the strip, so the whole diagram fits
    # an 860 px notebook column (JupyterLab at 1280 px with the file browser open)
    strip_x, strip_w, width = 330, 56, 860
    label_w = width - (strip_x + strip_w + 10) - 10
    texts = []
    for s, t in shown:
        is_changed = previous is not None and changed[s:t].any()
        old = previous.values[s:t] if is_changed else None
        uniform = old is not None and not (old != old[0]).any()
        label, _ = _run_label(snap.values[s], s, t, old[0] if uniform else None)
        if is_changed and not uniform:
            label += "  (was: differing values, see the text twin)"
        label = f"▲ {label}" if is_changed else label
        size = LABEL_SIZE if text_width(label, LABEL_SIZE, bold=is_changed) <= label_w else SMALL_SIZE
        texts.append((label, is_changed, size, wrap(label, label_w, size, bold=is_changed, max_lines=3)))
    line_h = 13

    # ---- strip geometry: every run as tall as its label lines, the rest proportional
    top, avail = 64, 520
    n = len(value_runs)
    mins = [max(18, 6 + line_h * len(texts[i][3])) if i < len(texts) else 18 for i in range(n)]
    extra = max(avail - sum(mins), 0)
    heights = [mins[i] + extra * (t - s) / HPAGE_PMD_NR for i, (s, t) in enumerate(value_runs)]
    ys = np.concatenate([[top], top + np.cumsum(heights)])

    def y_of(sub):  # subpage -> y on the strip (piecewise linear inside each run)
        for (s, t), y0, h in zip(value_runs, ys[:-1], heights):
            if s <= sub < t or (sub == t == HPAGE_PMD_NR):
                return y0 + h * (sub - s) / (t - s)
        return ys[-1]

    pids = list(maps)
    compound_line = _compound_line(machine, head, maps)
    height = int(max(ys[-1] + 70, top + 110 * max(len(pids), 1) + 60)) + (22 if compound_line else 0)
    state = "THP (compound page)" if snap.compound else "not compound: 512 small pages"
    heading = title or f"Frames {head:#x}-{head + HPAGE_PMD_NR - 1:#x}: {state}, {_kernel_label(machine)}"
    labels = [(label, is_changed, size, lines, s, t, y0, h)
              for (label, is_changed, size, lines), (s, t), y0, h in zip(texts, shown, ys[:-1], heights)]
    c = Canvas(width, height, heading, text)
    c.heading(heading)
    c.text("who maps it (page tables)", 20, 48, weight="bold")
    c.text(f"the 512 frames{'' if snap.compound else ' (not compound)'}", strip_x - 10, 48, weight="bold")

    # ---- the strip
    for (s, t), y0, h in zip(value_runs, ys[:-1], heights):
        v = snap.values[s]
        kind = _KINDS[int(v[0])]
        fill = {"head": ORANGE, "tail": SKY, "page": PALE, "free": "white"}[kind]
        if kind == "free":
            fill = c.hatch("free", GREY, "cross")
        label, tip = _run_label(v, s, t)
        c.box(strip_x, y0, strip_w, h, fill=fill, stroke=BLACK, stroke_width=1, class_="run",
              data_first=s, data_last=t - 1, data_kind=kind, data_count=int(v[1]), data_mapcount=int(v[2]),
              data_page_mapcount=int(v[3]), data_pins=int(v[4]),
              tip=f"{tip}; pfn {head + s:#x}" + (f"-{head + t - 1:#x}" if t - s > 1 else ""))
        if v[4]:
            c.add(dw.Lines(strip_x + strip_w - 12, y0 + h / 2, strip_x + strip_w - 6, y0 + h / 2 - 6,
                           strip_x + strip_w, y0 + h / 2, strip_x + strip_w - 6, y0 + h / 2 + 6, close=True,
                           fill=BLACK, class_="pin-marker"))
        c.text(span(s, t), strip_x + 4, y0 + min(h, 18) / 2 + 5, size=SMALL_SIZE, mono=True,
               fill=BLACK if kind != "free" else GREY)
    for label, is_changed, size, lines, s, t, y0, h in labels:
        lx = strip_x + strip_w + 10
        if is_changed:
            c.box(strip_x - 4, y0 + 1, strip_w + 8, h - 2, fill="none", stroke=VERMILION, stroke_width=3.5,
                  stroke_dasharray="7 4", class_="changed", data_first=s, data_last=t - 1)
        for j, line in enumerate(lines):
            c.text(line, lx, y0 + 14 + line_h * j, size=size, class_="run-label",
                   weight="bold" if is_changed else None)
    if len(value_runs) > len(shown):
        c.text(f"… {len(value_runs) - len(shown)} more runs (hover a run for its values)", strip_x + strip_w + 10,
               ys[len(shown)] + 14, size=SMALL_SIZE, fill=GREY)

    # ---- the processes
    slot = (height - 120) / max(len(pids), 1)
    for j, pid in enumerate(pids):
        v = maps[pid]
        bx, by, bw, bh = 20, 64 + j * slot, 230, min(slot - 16, 92)
        is_changed = pid in changed_pids
        c.box(bx, by, bw, bh, fill="white", stroke=BLACK, stroke_width=1.4, class_="process", data_pid=pid)
        if is_changed:
            c.box(bx - 4, by - 4, bw + 8, bh + 8, fill="none", stroke=VERMILION, stroke_width=3.5,
                  stroke_dasharray="7 4", class_="changed", data_pid=pid)
        c.text(f"pid {pid}" + ("   ▲ changed" if is_changed else ""), bx + 8, by + 17, weight="bold")
        if v["pmd"]:
            addr, e = v["pmd"][0]
            c.box(bx + bw - 50, by + 6, 42, 18, fill=c.hatch("pmd", BLUE, "horiz"), stroke=BLACK)
            c.text("PMD", bx + bw - 29, by + 20, anchor="middle", weight="bold",
                   style="paint-order:stroke;stroke:white;stroke-width:3px")
            c.text(f"huge PMD at {addr:#x}", bx + 8, by + 36, size=SMALL_SIZE)
            c.text(f"{e:#018x}", bx + 8, by + 52, size=SMALL_SIZE, mono=True)
            c.text("[" + " ".join(n for b, n in pt.BIT_NAMES if e >> b & 1) + "]", bx + 8, by + 68,
                   size=SMALL_SIZE, mono=True)
            y0, y1 = ys[0], ys[-1]
            c.add(dw.Line(strip_x - 26, y0, strip_x - 26, y1, stroke=BLUE, stroke_width=4, class_="pmd-bracket"))
            c.add(dw.Line(strip_x - 26, y0, strip_x - 2, y0, stroke=BLUE, stroke_width=2))
            c.add(dw.Line(strip_x - 26, y1, strip_x - 2, y1, stroke=BLUE, stroke_width=2))
            c.arrow(bx + bw, by + 15, strip_x - 29, (y0 + y1) / 2, colour=BLUE, kind="pmd", width=2.6,
                    tip=f"pid {pid}: one PMD entry maps all 512 subpages")
        elif v["ptes"]:
            nr = sum(x[2] for x in v["ptes"])
            c.text(f"PTE table: {nr} PTEs,", bx + 8, by + 36, size=SMALL_SIZE)
            c.text(f"{len(v['ptes'])} run(s) of subpages", bx + 8, by + 52, size=SMALL_SIZE)
            c.box(bx + bw - 40, by + 26, 32, bh - 34, fill=c.hatch("ptes", ORANGE, "dots"), stroke=BLACK)
            c.text("PTE", bx + bw - 24, by + 22, size=SMALL_SIZE, anchor="middle")
            arrows = v["ptes"][:_MAX_PTE_ARROWS]
            for k, (addr, s, cnt, e) in enumerate(arrows):
                sy = by + 30 + (bh - 42) * (k + 0.5) / len(arrows)
                ya, yb = y_of(s), y_of(s + cnt)
                c.add(dw.Line(strip_x - 6, ya + 1, strip_x - 6, yb - 1, stroke=BLACK, stroke_width=2,
                              stroke_dasharray="3 2", class_="pte-bracket"))
                c.arrow(bx + bw - 8, sy, strip_x - 8, (ya + yb) / 2, colour=BLACK, kind="pte", dash="6 3",
                        width=1.4, tip=f"pid {pid}: {cnt} PTE(s) at {addr:#x} map subpages {span(s, s + cnt)}")
            if len(v["ptes"]) > len(arrows):
                c.text(f"+{len(v['ptes']) - len(arrows)} more runs", bx + 8, by + bh - 6, size=SMALL_SIZE)
        else:
            c.text("does not map these frames", bx + 8, by + 40, size=SMALL_SIZE, fill=GREY)
        if v["other_ptes"]:
            c.text(f"+ {v['other_ptes']} PTEs to other frames (COW copies)", bx + 8, by + bh - 8, size=SMALL_SIZE)
    if not pids:
        c.text("no processes", 20, 80, fill=GREY)

    # ---- legend
    ly = height - 40
    if compound_line:
        c.text(compound_line, 20, ly - 24, size=SMALL_SIZE, weight="bold", class_="compound-mapcount")
    items = [("head", ORANGE), ("tail", SKY), ("small page", PALE), ("free", c.hatch("free", GREY, "cross"))]
    x = 20
    for name, fill in items:
        c.box(x, ly - 11, 16, 14, fill=fill, stroke=BLACK)
        c.text(name, x + 22, ly, size=SMALL_SIZE)
        x += 40 + 8 * len(name)
    c.add(dw.Lines(x, ly - 4, x + 6, ly - 10, x + 12, ly - 4, x + 6, ly + 2, close=True, fill=BLACK))
    c.text("pins: thplab's ground truth (machine.pins), not a struct page field", x + 18, ly, size=SMALL_SIZE)
    c.text("━ PMD arrow: one entry maps 2 MiB;  ╌ PTE arrow: one per run of consecutive PTEs"
           + (";  dashed outline ▲: changed since the last step" if previous is not None else ""),
           20, ly + 20, size=SMALL_SIZE, fill=BLACK)
    d = c.finish("thp_mappings")
    d.snapshot = snap
    return d


__all__ = ["thp_mappings", "describe_thp_mappings", "snapshot_thp", "ThpSnapshot", "process_maps"]
