"""Matplotlib views of the model.  Each helper takes ``ax`` first and returns what it drew.

Colours come from colour-blind-safe maps (``cividis``; the Okabe-Ito palette
for categories) and never carry meaning alone: values are printed, held
subpages are also marked with a symbol, bars carry hatches and labels.
Every helper has a text twin (``describe_*``) for readers without the figure.
"""

import numpy as np

from .errors import BadArgument
from .invariants import mapping_counts
from .page_flags import PageHead, PageTail, Use
from .params import HPAGE_PMD_NR

#: Okabe & Ito (2008), distinguishable with every common colour-vision deficiency.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")

FIELDS = {
    "page_mapcount": "page_mapcount() of each subpage",
    "_mapcount": "raw _mapcount (-1 = none)",
    "_count": "raw _count",
    "pte_maps": "PTEs mapping each subpage (from the page tables)",
    "pins": "pins held on each subpage",
}


def figure(width=7.0, height=3.0, ncols=1):
    """A white-background figure of explicit size (readable in dark themes)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), facecolor="white", squeeze=False)
    for ax in axes[0]:
        ax.set_facecolor("white")
    return fig, (axes[0][0] if ncols == 1 else list(axes[0]))


def thp_values(machine, head, field="page_mapcount"):
    """One value per subpage of the THP at ``head`` (a 512-element array)."""
    pages = np.arange(head, head + HPAGE_PMD_NR)
    if field == "page_mapcount":
        return np.asarray(machine.page_mapcount(pages))
    if field in ("_mapcount", "_count"):
        return machine.mem_map[field][pages].astype(int)
    if field == "pte_maps":
        return mapping_counts(machine)["pte_maps"][pages]
    if field == "pins":
        return machine.pins[pages].astype(int)
    raise BadArgument(f"field must be one of {', '.join(FIELDS)}, not {field!r}")


def held_mask(machine, head):
    """Subpages of the THP that no page table maps and nobody pins."""
    counts = mapping_counts(machine)
    pages = np.arange(head, head + HPAGE_PMD_NR)
    if counts["pmd_maps"][head]:
        return np.zeros(HPAGE_PMD_NR, bool)
    return (counts["pte_maps"][pages] == 0) & (machine.pins[pages] == 0)


def plot_thp(ax, machine, head, field="page_mapcount", title=None):
    """Draw the 512 subpages of one THP as a 16 x 32 grid of ``field`` values.

    Subpage 0 (the head) is top left.  Held subpages (allocated, unmapped,
    unpinned) get an ``x``.  Returns ``{"image", "colorbar", "held"}``.
    """
    values = thp_values(machine, head, field)
    lo, hi = int(values.min()), int(values.max())
    image = ax.imshow(values.reshape(16, 32), cmap="cividis", vmin=lo - 0.5, vmax=max(hi, lo + 1) + 0.5,
                      interpolation="nearest", aspect="equal")
    held = held_mask(machine, head).reshape(16, 32)
    ys, xs = np.nonzero(held)
    marks = ax.scatter(xs, ys, marker="x", s=12, c="white", linewidths=0.8, label="held: unmapped, unpinned")
    ax.set_xticks([0, 8, 16, 24, 31])
    ax.set_yticks([0, 4, 8, 12, 15])
    ax.set_xlabel("subpage % 32")
    ax.set_ylabel("subpage // 32")
    ax.set_title(title or f"THP at pfn {head:#x}: {FIELDS[field]}", fontsize=9)
    ticks = np.arange(lo, max(hi, lo + 1) + 1)
    cbar = ax.figure.colorbar(image, ax=ax, ticks=ticks if len(ticks) <= 12 else None, shrink=0.8)
    if len(xs):
        ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
    return {"image": image, "colorbar": cbar, "held": marks}


def describe_thp(machine, head, field="page_mapcount"):
    """Text twin of :func:`plot_thp`: runs of equal values and the held subpages."""
    values = thp_values(machine, head, field)
    runs, start = [], 0
    for i in range(1, HPAGE_PMD_NR + 1):
        if i == HPAGE_PMD_NR or values[i] != values[start]:
            runs.append(f"{start}" + (f"-{i - 1}" if i - 1 > start else "") + f": {values[start]}")
            start = i
    held = np.flatnonzero(held_mask(machine, head))
    text = f"{FIELDS[field]} for the THP at pfn {head:#x} -- " + "; ".join(runs)
    if len(held):
        text += f". Held (allocated, unmapped, unpinned): {len(held)} subpages"
    return text


def plot_counters(ax, rows_by_label, field="page_count"):
    """Grouped bars of one counter for the watched subpages, one group per label (e.g. level).

    ``rows_by_label`` maps a label to :meth:`ScenarioRun.counters` rows.
    Bars carry hatches and value labels, so colour is not needed to read them.
    """
    labels = list(rows_by_label)
    hatches = ("", "//", "..", "xx")
    width = 0.8 / max(len(labels), 1)
    bars = []
    subpages = [r["subpage"] for r in next(iter(rows_by_label.values()), [])]
    x = np.arange(len(subpages))
    for j, label in enumerate(labels):
        vals = [np.nan if r[field] is None else r[field] for r in rows_by_label[label]]  # None: a free page
        b = ax.bar(x + j * width, vals, width, label=label, color=OKABE_ITO[j % 8],
                   hatch=hatches[j % 4], edgecolor="black")
        ax.bar_label(b, fontsize=7)
        bars.append(b)
    ax.set_xticks(x + width * (len(labels) - 1) / 2, [f"subpage {s}" for s in subpages], fontsize=8)
    ax.set_ylabel(field)
    ax.legend(fontsize=8)
    return bars


def plot_mem_map(ax, machine, row=HPAGE_PMD_NR):
    """Every page frame of the machine, ``row`` per line, by what it is used for.

    Categories: free, 4 KiB anon page, THP head, THP tail, page table.
    Returns the AxesImage; the legend names each category.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    mm = machine.mem_map
    pfns = np.arange(machine.nr_pages)
    cat = np.zeros(machine.nr_pages, int)
    cat[mm["use"] == Use.anon] = 1
    cat[PageHead(mm, pfns)] = 2
    cat[PageTail(mm, pfns)] = 3
    cat[mm["use"] == Use.pgtable] = 4
    names = ("free", "4 KiB anon page", "THP head", "THP tail", "page table")
    colours = ("#FFFFFF", OKABE_ITO[1], OKABE_ITO[5], OKABE_ITO[0], OKABE_ITO[7])
    image = ax.imshow(cat.reshape(-1, row), cmap=ListedColormap(colours), vmin=-0.5, vmax=4.5,
                      interpolation="nearest", aspect="auto")
    ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=n) for c, n in zip(colours, names)],
              loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    ax.set_xlabel(f"pfn % {row}")
    ax.set_ylabel(f"pfn // {row}")
    return image


def describe_mem_map(machine):
    """Text twin of :func:`plot_mem_map`."""
    mm = machine.mem_map
    pfns = np.arange(machine.nr_pages)
    heads = int(PageHead(mm, pfns).sum())
    return (f"{machine.nr_pages} page frames: {machine.allocator.nr_free_pages} free, "
            f"{heads} THP(s) ({heads * HPAGE_PMD_NR} frames), "
            f"{int(((mm['use'] == Use.anon) & ~PageHead(mm, pfns) & ~PageTail(mm, pfns)).sum())} "
            f"4 KiB anon pages, {int((mm['use'] == Use.pgtable).sum())} page-table pages")


def plot_costs(ax, costs_by_label, kinds=("atomic", "compound_lock", "irq_save")):
    """Bars of counted operations (atomics, lock acquisitions...) per label."""
    labels = list(costs_by_label)
    x = np.arange(len(kinds))
    width = 0.8 / max(len(labels), 1)
    hatches = ("", "//", "..", "xx")
    out = []
    for j, label in enumerate(labels):
        vals = [costs_by_label[label].get(kd, 0) for kd in kinds]
        b = ax.bar(x + j * width, vals, width, label=label, color=OKABE_ITO[(j + 4) % 8],
                   hatch=hatches[j % 4], edgecolor="black")
        ax.bar_label(b, fontsize=7)
        out.append(b)
    ax.set_xticks(x + width * (len(labels) - 1) / 2, kinds)
    ax.set_ylabel("operations")
    ax.legend(fontsize=8)
    return out


def plot_held_memory(ax, sizes_kb, series):
    """Lines of held memory (KiB) against the size unmapped, one line per label in ``series``."""
    markers = ("o", "s", "^", "D")
    lines = []
    for j, (label, held) in enumerate(series.items()):
        (line,) = ax.plot(sizes_kb, held, marker=markers[j % 4], color=OKABE_ITO[j % 8], label=label)
        lines.append(line)
    ax.set_xlabel("KiB unmapped from each THP")
    ax.set_ylabel("KiB held (allocated, unmapped)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return lines
