"""Charts (matplotlib), rendered to vector SVG :class:`Diagram` objects.

The ``plot_*`` helpers follow matplotlib's habit: ``ax`` first, they return
what they drew.  ``*_chart`` functions make a figure, draw, and return
:func:`figure_diagram` of it: an SVG with a ``<title>``, a ``<desc>`` (the
text twin) and real ``<text>`` (fonts not turned into paths), ids salted so
that the same data gives the same bytes.
"""

import html
import io
import re

import numpy as np

from ..page_flags import PageHead, PageTail, Use
from ..params import HPAGE_PMD_NR
from ..viz import OKABE_ITO
from ._base import Diagram, runs

_MIN_PT = 9


def figure_diagram(fig, title, text, kind="chart"):
    """A :class:`Diagram` of a matplotlib figure (SVG, white background, title and desc); closes ``fig``."""
    import matplotlib
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"thplab-{kind}", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", facecolor="white", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"(<svg\b[^>]*?)>", lambda m: m[1] + ' role="img">' + f"\n <title>{html.escape(title)}</title>"
                 f"\n <desc>{html.escape(text)}</desc>", svg, count=1)
    return Diagram.from_svg(svg, text, title, kind)


def _figure(width, height):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), facecolor="white")
    ax.set_facecolor("white")
    return fig, ax


# ------------------------------------------------------------------ lesson 14: held memory

def plot_held_memory_log(ax, sweep):
    """Memory still mapped vs memory still in use after partial ``munmap()``, on a log scale.

    ``sweep`` is :func:`thplab.lessons.open_problems.held_memory_sweep`.  Lines differ in
    marker and dash as well as colour; zero values (log-invisible) are said in the legend.
    Returns the lines.
    """
    k = np.asarray(sweep["unmapped"])
    levels = list(sweep["anon_kb"])
    lines = []
    (ln,) = ax.plot(k, sweep["mapped_kb"], color=OKABE_ITO[7], marker="o", linestyle="-", linewidth=2,
                    label="still mapped by the process")
    lines.append(ln)
    styles = [("s", "--"), ("^", ":"), ("D", "-.")]
    for j, lv in enumerate(levels):
        m, ls = styles[j % 3]
        name = "old kernel" if lv == 0 else f"level {lv}"
        same = list(sweep["anon_kb"][lv]) == list(sweep["mapped_kb"])
        (ln,) = ax.plot(k, sweep["anon_kb"][lv], color=OKABE_ITO[(2 * j + 4) % 8], marker=m, linestyle=ls,
                        linewidth=2, label=f"in use (allocated), {name}" + (" = mapped" if same else ""))
        lines.append(ln)
        held = np.asarray(sweep["held_kb"][lv])
        if not held.any():
            ax.plot([], [], " ", label=f"held, unmapped: 0 KiB at every k, {name}")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # no mathtext superscripts (too small)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("subpages unmapped from the end of each THP (k of 512)", fontsize=10)
    ax.set_ylabel(f"KiB, total over {sweep['nr_thps']} THPs (log)", fontsize=10)
    ax.tick_params(labelsize=9)
    ax.grid(True, which="both", alpha=0.3)
    last = levels[-1]
    mapped, used = sweep["mapped_kb"][-1], sweep["anon_kb"][last][-1]
    if mapped:
        ax.annotate(f"{used // mapped}× more in use than mapped", xy=(k[-1], used), xytext=(k[-1] * 0.3, used * 0.04),
                    fontsize=10, arrowprops={"arrowstyle": "->"}, bbox={"fc": "white", "ec": "black"})
    ax.legend(fontsize=9, loc="lower left")
    return lines


def held_memory_chart(sweep):
    lv = list(sweep["anon_kb"])
    text = ("Memory after unmapping the last k subpages of each of "
            f"{sweep['nr_thps']} THPs (KiB): " + "; ".join(
                f"k={k}: mapped {m}, " + ", ".join(f"in use at level {v} {sweep['anon_kb'][v][i]}" for v in lv)
                for i, (k, m) in enumerate(zip(sweep["unmapped"], sweep["mapped_kb"]))))
    fig, ax = _figure(7.5, 4.2)
    plot_held_memory_log(ax, sweep)
    title = "Memory in use vs memory mapped after partial munmap() (log scale)"
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return figure_diagram(fig, title, text, "held_memory")


# ------------------------------------------------------------------ lesson 13: costs

def plot_costs_by_kernel(ax, costs_by_label, kinds=("atomic", "compound_lock", "irq_save")):
    """Horizontal bars, one group per call and kernel, one hatched bar per kind, values printed."""
    labels = list(costs_by_label)
    hatches = ("", "//", "xx")
    h = 0.8 / len(kinds)
    y = np.arange(len(labels))
    out = []
    for j, kind in enumerate(kinds):
        vals = [costs_by_label[lb].get(kind, 0) for lb in labels]
        bars = ax.barh(y + j * h, vals, h, color=OKABE_ITO[(j * 2 + 1) % 8], hatch=hatches[j], edgecolor="black",
                       label=kind)
        ax.bar_label(bars, labels=[f"{v} {kind}" for v in vals], fontsize=9, padding=3)
        out.append(bars)
    ax.set_yticks(y + h * (len(kinds) - 1) / 2, labels, fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel("operations per call", fontsize=10)
    ax.tick_params(axis="x", labelsize=9)
    ax.set_xlim(0, max(max(c.values(), default=0) for c in costs_by_label.values()) * 1.6 + 1)
    return out


def costs_chart(costs_by_label):
    text = "Cost of get_page()/put_page() on a tail page: " + "; ".join(
        f"{lb}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for lb, c in costs_by_label.items())
    fig, ax = _figure(7.5, 0.55 * len(costs_by_label) + 1.4)
    plot_costs_by_kernel(ax, costs_by_label)
    title = "get_page()/put_page() of a tail page, by kernel"
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return figure_diagram(fig, title, text, "costs")


# ------------------------------------------------------------------ lesson 01: mem_map, zoomed

_CATS = ("free", "4 KiB anon page", "THP head", "THP tail", "page table")


def mem_map_categories(machine):
    mm = machine.mem_map
    pfns = np.arange(machine.nr_pages)
    cat = np.zeros(machine.nr_pages, int)
    cat[mm["use"] == Use.anon] = 1
    cat[PageHead(mm, pfns)] = 2
    cat[PageTail(mm, pfns)] = 3
    cat[mm["use"] == Use.pgtable] = 4
    return cat


def _used_extent(cat):
    used = np.flatnonzero(cat != 0)
    hi = int(used[-1]) + 1 if len(used) else HPAGE_PMD_NR
    return 0, int(min(len(cat), -(-hi // HPAGE_PMD_NR) * HPAGE_PMD_NR + HPAGE_PMD_NR // 2))


def plot_mem_map_used(ax, machine):
    """The page frames in use, one row per category, zoomed to where pages are used; runs labelled."""
    cat = mem_map_categories(machine)
    lo, hi = _used_extent(cat)
    colours = ("#FFFFFF", OKABE_ITO[1], OKABE_ITO[5], OKABE_ITO[0], OKABE_ITO[7])
    hatches = ("", "..", "", "//", "xx")
    out = []
    few = len(runs(cat[lo:hi])) <= 16
    for s, t in runs(cat[lo:hi]):
        c = int(cat[lo + s])
        row = len(_CATS) - 1 - c
        bar = ax.broken_barh([(lo + s, t - s)], (row - 0.4, 0.8), facecolors=colours[c], edgecolor="black",
                             hatch=hatches[c], linewidth=0.8)
        out.append(bar)
        if c and (t - s >= (hi - lo) / 12 or c in (2, 4) or few):
            label = f"{lo + s:#x}" + (f"–{lo + t - 1:#x}" if t - s > 1 else "")
            ax.annotate(label, (lo + s + (t - s) / 2, row + 0.45), ha="center", va="bottom", fontsize=9)
    ax.set_yticks(range(len(_CATS)), list(reversed(_CATS)), fontsize=10)
    ax.set_ylim(-0.6, len(_CATS) - 0.2)
    ax.set_xlim(lo, hi)
    ticks = np.arange(lo, hi + 1, HPAGE_PMD_NR // 4)
    ax.set_xticks(ticks, [f"{t:#x}" for t in ticks], fontsize=9)
    ax.set_xlabel(f"pfn (frames {hi:#x}–{machine.nr_pages - 1:#x} are all free and not drawn)"
                  if hi < machine.nr_pages else "pfn", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return out


def describe_mem_map_used(machine):
    cat = mem_map_categories(machine)
    lo, hi = _used_extent(cat)
    parts = [f"{_CATS[int(cat[s])]} {s:#x}" + (f"-{t - 1:#x}" if t - s > 1 else "") for s, t in runs(cat[lo:hi])
             if cat[s]]
    return (f"{machine.nr_pages} page frames; in use up to pfn {hi - 1:#x}: " + ", ".join(parts)
            + f"; frames {hi:#x}-{machine.nr_pages - 1:#x} free.")


def mem_map_chart(machine):
    text = describe_mem_map_used(machine)
    fig, ax = _figure(8, 3.2)
    plot_mem_map_used(ax, machine)
    title = "mem_map: the page frames in use, by what they hold"
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return figure_diagram(fig, title, text, "mem_map")


__all__ = ["figure_diagram", "plot_held_memory_log", "held_memory_chart", "plot_costs_by_kernel", "costs_chart",
           "plot_mem_map_used", "describe_mem_map_used", "mem_map_chart", "mem_map_categories"]
