"""Lesson 10: the life of a PMD entry, as each kernel of the series lets it live.

States: ``empty`` (pmd_none), ``huge`` (a 2 MiB leaf), ``splitting``
(``_PAGE_SPLITTING`` set), ``invalidated`` (PSE without PRESENT, during the
old split's phase 3) and ``table`` (points to a PTE table).  Which states
and transitions a kernel has is read from its function table
(``kernel.has(...)``) and capabilities (``kernel.caps``), not from its level.
"""

import drawsvg as dw

from ._base import BLACK, BLUE, GREEN, GREY, ORANGE, SKY, SMALL_SIZE, VERMILION, YELLOW, Canvas

#: name -> (x, y, what the entry holds, colour, hatch)
STATES = {
    "empty": (40, 220, "0: pmd_none()", "white", None),
    "huge": (330, 60, "PSE + P: a 2 MiB leaf", SKY, "horiz"),
    "splitting": (620, 60, "PSE + P + _PAGE_SPLITTING", ORANGE, "diag"),
    "invalidated": (620, 380, "PSE, no P: pmd_present() true", YELLOW, "cross"),
    "table": (330, 380, "P, no PSE: a PTE table", GREEN, "dots"),
}
#: (from, to, path) -> (polyline points, label lines, label x, label y, anchor)
ROUTES = {
    ("empty", "huge", "fault"): ([(100, 220), (100, 76), (328, 76)], 108, 92, "start"),
    ("huge", "empty", "zap"): ([(328, 116), (150, 116), (150, 218)], 156, 134, "start"),
    ("huge", "empty", "new-split"): ([(440, 124), (440, 160), (210, 160), (210, 218)], 216, 180, "start"),
    ("empty", "table", "fault"): ([(100, 284), (100, 396), (328, 396)], 108, 376, "start"),
    ("table", "empty", "zap"): ([(328, 428), (60, 428), (60, 284)], 66, 448, "start"),
    ("empty", "table", "new-split"): ([(210, 284), (210, 340), (440, 340), (440, 378)], 216, 304, "start"),
    ("huge", "splitting", "old-split"): ([(552, 91), (618, 91)], 585, 50, "middle"),
    ("splitting", "invalidated", "old-split"): ([(730, 124), (730, 378)], 738, 240, "start"),
    ("invalidated", "table", "old-split"): ([(618, 411), (552, 411)], 585, 466, "middle"),
}
_BW, _BH = 220, 62


def _kernel(kernel_or_level):
    from ..machine import Machine

    if isinstance(kernel_or_level, int):
        return Machine.boot("4M", patches=kernel_or_level).kernel
    if isinstance(kernel_or_level, Machine):
        return kernel_or_level.kernel
    return kernel_or_level


def pmd_transitions(kernel_or_level):
    """``[(from, to, label, path)]`` the kernel's code can make; ``path`` is fault/zap/old-split/new-split."""
    k = _kernel(kernel_or_level)
    t = []
    if k.has("do_huge_pmd_anonymous_page"):
        t.append(("empty", "huge", "THP fault:|do_huge_pmd_anonymous_page()", "fault"))
    t.append(("empty", "table", "4 KiB fault:|__pte_alloc()", "fault"))
    if k.has("zap_huge_pmd"):
        t.append(("huge", "empty", "munmap/exit:|zap_huge_pmd()", "zap"))
    t.append(("table", "empty", "munmap of all 2 MiB: free_pgtables()", "zap"))
    if k.has("__split_huge_page_splitting") and k.has("pmdp_splitting_flush"):
        t.append(("huge", "splitting", "phase 1: pmdp_splitting_flush()", "old-split"))
    if k.has("__split_huge_page_map"):
        t.append(("splitting", "invalidated", "phase 3:|pmdp_invalidate()", "old-split"))
        t.append(("invalidated", "table", "then pmd_populate(): the deposited table", "old-split"))
    if k.has("__split_huge_pmd"):
        t.append(("huge", "empty", "__split_huge_pmd():|pmdp_clear_flush()", "new-split"))
        t.append(("empty", "table", "__split_huge_pmd():|pmd_populate()", "new-split"))
    return t


def _states(k):
    """``{state: "live" | "defined" | "gone"}``: reached, defined but unreached, or not in this kernel."""
    trans = pmd_transitions(k)
    reached = {s for a, b, _, _ in trans for s in (a, b)}
    out = {}
    for s in STATES:
        if s in reached:
            out[s] = "live"
        elif s == "splitting" and k.caps.get("splitting_pmd"):
            out[s] = "defined"
        else:
            out[s] = "gone"
    return out


def describe_pmd_state_machine(kernel_or_level):
    k = _kernel(kernel_or_level)
    st = _states(k)
    lines = [f"PMD states at level {k.level}: " + ", ".join(
        f"{s} ({'reached' if v == 'live' else 'bit defined, nothing sets it' if v == 'defined' else 'not in this kernel'})"
        for s, v in st.items()) + "."]
    for a, b, label, path in pmd_transitions(k):
        lines.append(f"  {a} -> {b}: {label.replace('|', ' ')} [{path}]")
    return "\n".join(lines)


_STYLE = {"fault": (BLACK, None), "zap": (GREY, "2 3"), "old-split": (VERMILION, "8 3"),
          "new-split": (BLUE, "3 2 8 2")}


def _anchor(state, other):
    x, y = STATES[state][:2]
    ox, oy = STATES[other][:2]
    cx, cy = x + _BW / 2, y + _BH / 2
    ocx, ocy = ox + _BW / 2, oy + _BH / 2
    if abs(ocx - cx) * _BH > abs(ocy - cy) * _BW:
        return (x + _BW if ocx > cx else x, cy)
    return (cx, y + _BH if ocy > cy else y)


def _panel(c, k, x0, y0):
    st = _states(k)
    name = "old kernel" if k.level == 0 else f"after patch {k.level:02d}"
    c.text(f"{name} (level {k.level})", x0 + 12, y0 + 22, size=14, weight="bold")
    for s, (x, y, what, colour, hatch) in STATES.items():
        x, y = x + x0, y + y0
        state = st[s]
        fill = c.hatch(f"st-{s}", colour, hatch) if hatch else "white"
        if state == "gone":
            c.box(x, y, _BW, _BH, fill="white", stroke=GREY, stroke_width=1, stroke_dasharray="1 3",
                  class_="state", data_state=s, data_status=state, rx=10)
            c.text(f"{s}: not in this kernel", x + 10, y + 36, fill=GREY)
            continue
        c.box(x, y, _BW, _BH, fill=fill, stroke=BLACK, stroke_width=2 if state == "live" else 1,
              stroke_dasharray=None if state == "live" else "6 3", class_="state", data_state=s,
              data_status=state, rx=10, tip=what)
        c.add(dw.Rectangle(x + 6, y + 6, _BW - 12, 42, fill="white", rx=6, opacity=0.92))
        c.text(s, x + 12, y + 24, weight="bold")
        c.text(what if state == "live" else "defined, but nothing sets it now", x + 12, y + 41, size=SMALL_SIZE)
    for a, b, label, path in pmd_transitions(k):
        colour, dash = _STYLE[path]
        points, lx, ly, anchor = ROUTES[(a, b, path)]
        line = dw.Path(stroke=colour, stroke_width=2.2, fill="none", stroke_dasharray=dash,
                       marker_end=c.arrowhead("arrow-" + colour.lstrip("#"), colour), class_="arrow",
                       data_arrow="transition", data_from=a, data_to=b, data_path=path)
        line.M(points[0][0] + x0, points[0][1] + y0)
        for px, py in points[1:]:
            line.L(px + x0, py + y0)
        line.append_title(label.replace("|", " "))
        c.add(line)
        for j, part in enumerate(label.split("|")):
            c.text(part, lx + x0, ly + y0 + 13 * j, size=SMALL_SIZE, anchor=anchor, class_="transition-label",
                   fill=colour if colour != GREY else BLACK)


def pmd_state_machine(kernel_or_level=0, *more):
    """The PMD's states and transitions for one kernel (a level, Machine or Kernel); more kernels below it.

    Each kernel is a panel 860 px wide (the notebook column), so two kernels stack vertically.
    """
    kernels = [_kernel(x) for x in (kernel_or_level,) + more]
    text = "\n".join(describe_pmd_state_machine(k) for k in kernels)
    title = "The life of a PMD entry: " + " vs ".join(f"level {k.level}" for k in kernels)
    pw, ph = 860, 480
    c = Canvas(pw, ph * len(kernels) + 70, title, text)
    for i, k in enumerate(kernels):
        if i:
            c.add(dw.Line(12, i * ph, pw - 12, i * ph, stroke=GREY, stroke_width=1.5, class_="panel-rule"))
        _panel(c, k, 0, i * ph)
    ly = ph * len(kernels) + 24
    x = 12
    for path, what in (("fault", "fault"), ("zap", "unmap"), ("old-split", "old split_huge_page() (3 phases)"),
                       ("new-split", "RFC split_huge_pmd() of one PMD")):
        colour, dash = _STYLE[path]
        c.add(dw.Line(x, ly, x + 40, ly, stroke=colour, stroke_width=2.4, stroke_dasharray=dash))
        c.text(what, x + 48, ly + 4, size=SMALL_SIZE)
        x += 70 + 7 * len(what)
    c.text("dashed box: state defined but unreached; dotted grey: the state does not exist in that kernel",
           12, ly + 24, size=SMALL_SIZE)
    return c.finish("pmd_state_machine")


__all__ = ["pmd_state_machine", "describe_pmd_state_machine", "pmd_transitions", "STATES"]
