"""Lesson 15: the design as merged for v4.5 -- pictures, questions and workloads on ``kernel="v4.5"``.

The lesson's cells make the ``Machine`` calls themselves; these helpers draw
the result (:func:`thp_fields_diagram`, :func:`deferred_split_chart`), build
the seeded questions (:class:`V45Question`) and the comparisons that take more
than a few lines (:func:`deferred_split_demo`).  The model is
``thplab/series/v45/``; docs/v4.5-stack.md gives the sources.
"""

import textwrap
from dataclasses import dataclass

import numpy as np

from ..exercises import Text
from ..invariants import held_pages
from ..machine import Machine
from ..page_flags import PageHead
from ..params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from ..problems import check_number
from ..series import STACKS

KIB = PAGE_SIZE >> 10
T457 = "https://elixir.bootlin.com/linux/v4.5.7/source/"

#: The kernel functions the lesson names, at their lines in 4.5.7.
KERNEL_LINKS = (
    ("compound_mapcount()", "include/linux/mm.h#L428"),
    ("page_mapcount() / __page_mapcount()", "mm/util.c#L386"),
    ("PageDoubleMap()", "include/linux/page-flags.h#L542"),
    ("total_mapcount()", "mm/huge_memory.c#L3316"),
    ("page_remove_anon_compound_rmap()", "mm/rmap.c#L1333"),
    ("__split_huge_pmd_locked()", "mm/huge_memory.c#L2824"),
    ("freeze_page_vma()", "mm/huge_memory.c#L3040"),
    ("split_huge_page_to_list()", "mm/huge_memory.c#L3412"),
    ("__split_huge_page_tail()", "mm/huge_memory.c#L3216"),
    ("deferred_split_huge_page()", "mm/huge_memory.c#L3506"),
    ("deferred_split_scan()", "mm/huge_memory.c#L3528"),
    ("page_trans_huge_mapcount()", "mm/huge_memory.c#L3359"),
)


def kernel_links():
    """The functions of the lesson with a link each to 4.5.7's source (elixir, pinned)."""
    width = max(len(name) for name, _ in KERNEL_LINKS)
    return Text("\n".join(f"{name:<{width}}  {T457}{where}" for name, where in KERNEL_LINKS))


LORE = "https://lore.kernel.org/linux-mm/"

#: What review asked for and which step answers it: (step, who and when, what they asked, Message-Id).
#: Read in the linux-mm archive (docs/v4.5-stack.md §6 lists what was and was not found).
REVIEW = (
    (7, "Andrea Arcangeli, RFC v1 thread, 10-11 June 2014",
     "a partial munmap() can leave up to 512x the mapped memory allocated; try to split and defer "
     "the pages that cannot be split yet",
     "1402329861-7037-1-git-send-email-kirill.shutemov@linux.intel.com"),
    (4, "Andrea Arcangeli, same thread",
     "count mappings, not pins, in the tails (tail_count -> tail_mapcount); v2 moved PMD maps to a "
     "compound_mapcount of their own",
     "1402329861-7037-1-git-send-email-kirill.shutemov@linux.intel.com"),
    (6, "Aneesh Kumar K.V, v4 18/24, 30 Mar 2015",
     "why not offer locked and unlocked variants of split_huge_page()? The series kept one rule: "
     "the caller locks the page",
     "87mw2ulgoa.fsf@linux.vnet.ibm.com"),
    (5, "Vlastimil Babka, v5 22/28, 19 May 2015",
     "review of split_huge_pmd() as it then was (the PMD cleared before the PTEs were in); by v12 the "
     "PMD stays present until pmdp_invalidate()",
     "555AF37A.2060709@suse.cz"),
    (4, "Naoya Horiguchi, 27 Oct 2015",
     "reading /proc/kpageflags of a THP tripped a VM_BUG_ON in PageDoubleMap(): it may be asked about "
     "tails, so it now answers 0 for them",
     "20151027061800.GA336@hori1.linux.bs1.fc.nec.co.jp"),
    (6, "Sasha Levin, v12 32/37, 18 Nov 2015",
     "KASAN use-after-free in unfreeze_page() reached from deferred_split_scan(); fixed by "
     "\"thp: fix split vs. unmap race\"",
     "564CA63C.8090800@oracle.com"),
    (7, "Andrea Arcangeli, v12 34/37, 21 Jan 2016",
     "the scan took the whole global queue with interrupts off and no limit: one queue per NUMA node "
     "and nr_to_scan, fixed before 4.5.0",
     "20160121012237.GE7119@redhat.com"),
)


def review_history():
    """Each change of the merged series traced to the review that asked for it, with a link."""
    lines = []
    for step, who, what, msgid in REVIEW:
        lines.append(f"step {step}  {who}")
        lines += textwrap.wrap(what, 96, initial_indent="    ", subsequent_indent="    ")
        lines.append(f"  {LORE}{msgid}/")
    return Text("\n".join(lines))


def open_problems_measured():
    """Lesson 14's open problems, measured on RFC v1 (level 10) and on v4.5 with the same calls."""
    rows = []
    for kernel in ("rfc-v1", "v4.5"):
        out = {}
        # 1. held memory: 511 of 512 subpages unmapped from each of 4 THPs
        m = Machine.boot("32M", kernel=kernel)
        pid = m.spawn()
        base = m.mmap(pid, 4 * HPAGE_PMD_SIZE)
        m.touch(pid, base, 4 * HPAGE_PMD_SIZE)
        for i in range(4):
            m.munmap(pid, base + i * HPAGE_PMD_SIZE + PAGE_SIZE, HPAGE_PMD_SIZE - PAGE_SIZE)
        out["held"] = sum(held_pages(m).values()) * KIB
        m.drop_caches(2)
        out["held_after"] = sum(held_pages(m).values()) * KIB
        # 2. the COW write of lesson 14: parent PMD, child PTEs; the child writes subpage 7
        m = Machine.boot("16M", kernel=kernel)
        pid, addr, head = m.map_thp()
        child = m.fork(pid)
        m.split_huge_pmd(child, addr)
        m.touch(child, addr + 7 * PAGE_SIZE, PAGE_SIZE)
        out["cow_reused"] = int(m.walk(child, [addr + 7 * PAGE_SIZE])["pfn"][0]) == head + 7
        m.check()
        # 3. lesson 14's states A (parent PMD, child PTEs but subpage 0) and B (512 PTEs, one process)
        states = []
        for parent_keeps_pmd in (True, False):
            m = Machine.boot("16M", kernel=kernel)
            pid, addr, head = m.map_thp()
            if parent_keeps_pmd:
                child = m.fork(pid)
                m.split_huge_pmd(child, addr)
                m.munmap(child, addr, PAGE_SIZE)
            else:
                m.split_huge_pmd(pid, addr)
            states.append((m, head))
        (ma, ha), (mb, hb) = states
        out["same"] = all((ma.mem_map[f][ha:ha + HPAGE_PMD_NR] == mb.mem_map[f][hb:hb + HPAGE_PMD_NR]).all()
                          for f in ma.mem_map.dtype.names)
        rows.append((kernel, out))
    (_, v1), (_, v45) = rows
    lines = [f"{'open problem (lesson 14)':<58}{'rfc-v1':>10}{'v4.5':>10}",
             f"{'KiB held after 511/512 unmapped from 4 THPs':<58}{v1['held']:>10}{v45['held']:>10}",
             f"{'  ... after drop_caches(2)':<58}{v1['held_after']:>10}{v45['held_after']:>10}",
             f"{'child writes subpage 7 the parent maps: page reused?':<58}"
             f"{'yes' if v1['cow_reused'] else 'no':>10}{'yes' if v45['cow_reused'] else 'no':>10}",
             f"{'states A and B of lesson 14: identical struct pages?':<58}"
             f"{'yes' if v1['same'] else 'no':>10}{'yes' if v45['same'] else 'no':>10}",
             "Reuse must mean nobody else maps the page: v4.5 asks page_trans_huge_mapcount(); A and B",
             "differ in page[1] (compound_mapcount, PG_double_map): section 2."]
    return Text("\n".join(lines))


def steps_table():
    """The seven steps of ``kernel="v4.5"``: the emails each stands for, what it changes, THP on or off."""
    lines = [f"{'step':<5}{'v12 emails':<12}{'THP':<5}what changes"]
    caps = {}
    for s in STACKS["v4.5"]:
        caps.update(s.capabilities)
        thp = "off" if caps.get("thp_broken") else "on"
        lines.append(f"{s.number:<5}{s.emails:<12}{thp:<5}{s.subject}")
    lines.append("THP off: the series marked THP BROKEN from email 11 to 35; thplab boots those steps "
                 "without THPs.")
    return Text("\n".join(lines))


def _head_fields(m, head):
    mm = m.mem_map
    k = m.kernel
    sub = np.arange(head, head + HPAGE_PMD_NR)
    return {
        "count": int(mm["_count"][head]), "mapcount": mm["_mapcount"][sub].astype(np.int64),
        "cm": int(k.compound_mapcount(head)) - 1, "dm": bool(k.PageDoubleMap(head)),
        "queued": any(head in q for q in m.split_queues), "pins": int(m.pins[sub].sum()),
        "total": int(k.total_mapcount(head)), "page_mapcount": np.asarray(m.page_mapcount(sub)),
    }


def describe_thp_fields(machine, head):
    """Text twin of :func:`thp_fields_diagram`."""
    f = _head_fields(machine, int(head))
    lines = [f"THP at pfn {int(head):#x} in {machine.kernel.name}: where each count lives"]
    lines.append(f"  page[0] (head): _count {f['count']}, _mapcount {f['mapcount'][0]} (PTEs of subpage 0"
                 + (", +1 while DoubleMap)" if f["dm"] else ")"))
    lines.append(f"  page[1]: compound_mapcount {f['cm']} raw = {f['cm'] + 1} PMD mapping(s); "
                 f"PG_double_map {'set' if f['dm'] else 'clear'}; _mapcount {f['mapcount'][1]}")
    lines.append(f"  page[2]: deferred split list {'linked (queued)' if f['queued'] else 'empty'}; "
                 f"_mapcount {f['mapcount'][2]}")
    rest = f["mapcount"][3:]
    lines.append("  pages 3-511: _mapcount " + (f"{rest[0]} each" if (rest == rest[0]).all()
                                                 else f"{rest.min()} to {rest.max()}"))
    lines.append(f"  total_mapcount = {f['cm'] + 1} + Σ(_mapcount + 1) {int((f['mapcount'] + 1).sum())}"
                 + (" - 512 (DoubleMap)" if f["dm"] else "") + f" = {f['total']}; "
                 f"page_count {f['count']} = total_mapcount + {f['count'] - f['total']} pin(s)")
    return "\n".join(lines)


def thp_fields_diagram(machine, head, title=None):
    """Diagram: the struct pages of one v4.5 THP -- which field of which page holds which count.

    page[0] keeps the only ``_count``; page[1] keeps ``compound_mapcount`` and
    ``PG_double_map``; page[2] the deferred-split link; every subpage's
    ``_mapcount`` counts its PTEs.  The bottom line adds them up as
    ``total_mapcount()`` does and compares with ``page_count``.
    """
    import drawsvg as dw

    from ..diagrams._base import BLACK, BLUE, GREY, ORANGE, SKY, SMALL_SIZE, VERMILION, Canvas

    head = int(head)
    if not PageHead(machine.mem_map, head):
        raise ValueError(f"pfn {head:#x} is not the head of a THP")
    f = _head_fields(machine, head)
    text = describe_thp_fields(machine, head)
    title = title or f"One THP's struct pages in {machine.kernel.name} (pfn {head:#x})"
    c = Canvas(860, 370, title, text)
    c.heading(title)
    boxes = [
        ("page[0] head", ORANGE, [f"_count {f['count']}", f"_mapcount {f['mapcount'][0]}"]),
        ("page[1]", SKY, [f"compound_mapcount {f['cm']}", f"PG_double_map {'SET' if f['dm'] else 'clear'}",
                          f"_mapcount {f['mapcount'][1]}"]),
        ("page[2]", SKY, ["deferred list: " + ("QUEUED" if f["queued"] else "empty"),
                          f"_mapcount {f['mapcount'][2]}"]),
    ]
    rest = f["mapcount"][3:]
    boxes.append(("pages 3-511", SKY, ["_mapcount " + (f"{rest[0]} each" if (rest == rest[0]).all()
                                                       else f"{rest.min()}..{rest.max()}")]))
    x, w = 14, 200
    for i, (name, fill, rows) in enumerate(boxes):
        bx = x + i * (w + 12)
        c.box(bx, 44, w, 120, fill=fill, stroke=BLACK, stroke_width=1.4, class_="struct-page",
              data_page=name, tip=f"{name}: " + "; ".join(rows))
        c.text(name, bx + 8, 64, weight="bold")
        for j, row in enumerate(rows):
            strong = row.startswith(("compound_mapcount", "PG_double_map SET", "deferred list: QUEUED"))
            flag = "SET" in row or "QUEUED" in row     # a marker, not a colour, says "this is on"
            c.text(("◆ " if flag else "") + row, bx + 8, 88 + 22 * j, weight="bold" if strong else None)
    # what each counter means
    notes = [("_count (head only)", "every reference: mappings + pins"),
             ("compound_mapcount", f"PMD mappings, biased -1: {f['cm']} raw = {f['cm'] + 1} PMD(s)"),
             ("_mapcount (each subpage)", "PTE mappings of that subpage, biased -1"
              + (", +1 while PG_double_map" if f["dm"] else "")),
             ("PG_double_map", "set when a PMD is split while another PMD still maps the THP")]
    for j, (name, meaning) in enumerate(notes):
        c.text(f"{name}:", 20, 196 + 20 * j, weight="bold", size=SMALL_SIZE)
        c.text(meaning, 200, 196 + 20 * j, size=SMALL_SIZE)
    # the identity, drawn as a sum
    y = 300
    c.add(dw.Line(14, y - 18, 846, y - 18, stroke=GREY, stroke_width=0.8))
    sum_pte = int((f["mapcount"] + 1).sum())
    parts = [(f"{f['cm'] + 1}", "PMD maps", BLUE), ("+", "", BLACK), (f"{sum_pte}", "Σ(_mapcount + 1)", BLACK)]
    if f["dm"]:
        parts += [("−", "", BLACK), ("512", "DoubleMap's extra", VERMILION)]
    parts += [("=", "", BLACK), (f"{f['total']}", "total_mapcount", BLACK), ("   page_count", "", BLACK),
              (f"{f['count']}", "= total + pins", BLACK)]
    px = 20
    for value, label, colour in parts:
        c.text(value, px, y + 4, weight="bold", fill=colour, class_="identity")
        if label:
            c.text(label, px, y + 24, size=SMALL_SIZE, fill=GREY if colour == BLACK else colour)
        px += max(8 * len(value), 7 * len(label)) + 16
    ok = f["count"] == f["total"] + f["pins"]
    c.text(f"pins {f['pins']}: {f['count']} = {f['total']} + {f['pins']} " + ("✓" if ok else "✗ (a reference "
           "that is neither a mapping nor a pin: a caller's)"), 20, y + 52, size=SMALL_SIZE)
    return c.finish("thp_fields")


def compare_thps(a, b, labels=("A", "B")):
    """What the struct pages of two THPs say, side by side: ``a`` and ``b`` are ``(machine, head)``."""
    rows = (("head _count", lambda m, h: int(m.mem_map["_count"][h])),
            ("head _mapcount (raw)", lambda m, h: int(m.mem_map["_mapcount"][h])),
            ("compound_mapcount (raw, page[1])", lambda m, h: int(m.mem_map["mapping"][h + 1])),
            ("PageDoubleMap", lambda m, h: int(bool(m.kernel.PageDoubleMap(h)))),
            ("tails with raw _mapcount 0", lambda m, h: int((m.mem_map["_mapcount"][h + 1:h + HPAGE_PMD_NR]
                                                             == 0).sum())),
            ("total_mapcount", lambda m, h: int(m.kernel.total_mapcount(h))))
    lines = [f"{'struct page says':<36}{labels[0]:>7}{labels[1]:>7}"]
    for label, fn in rows:
        va, vb = fn(*a), fn(*b)
        lines.append(f"  {label:<34}{va:>7}{vb:>7}" + ("   differs" if va != vb else ""))
    return Text("\n".join(lines))


@dataclass
class V45Question:
    """A seeded state on ``kernel="v4.5"`` and one counter to predict (a transfer question).

    One process faults a THP and forks 0-2 children; some processes split their
    PMD (``split_huge_pmd()`` or an ``mprotect()`` of a few subpages) and some
    ``munmap()`` a few subpages.  The question asks for ``page_mapcount()`` of
    a subpage, the raw ``_mapcount`` of a subpage, ``compound_mapcount()`` or
    ``total_mapcount()``; typical slips -- RFC v1's rule, the DoubleMap
    offset forgotten -- are diagnosed.
    """

    seed: int
    kind: str
    steps: list
    question: str
    answer: int
    explanation: str
    diagnoses: dict

    KINDS = ("page_mapcount", "raw _mapcount", "compound_mapcount", "total_mapcount")

    @classmethod
    def generate(cls, seed=0):
        rng = np.random.default_rng(seed)
        m = Machine.boot("8M", kernel="v4.5", seed=seed)
        pid, addr, head = m.map_thp()
        pids = [pid] + [m.fork(pid) for _ in range(int(rng.integers(1, 3)))]
        steps = [f"pid {pid} faults a THP (one PMD)"] + [f"fork() -> pid {p}" for p in pids[1:]]
        for p in pids:
            roll = rng.random()
            if roll < 0.35:
                first = int(rng.integers(0, HPAGE_PMD_NR - 4))
                m.mprotect(p, addr + first * PAGE_SIZE, 4 * PAGE_SIZE, "r")
                steps.append(f"pid {p}: mprotect() subpages {first}-{first + 3} read-only")
            elif roll < 0.6:
                first = int(rng.integers(0, HPAGE_PMD_NR - 8))
                m.munmap(p, addr + first * PAGE_SIZE, 8 * PAGE_SIZE)
                steps.append(f"pid {p}: munmap() subpages {first}-{first + 7}")
        kind = cls.KINDS[int(rng.integers(len(cls.KINDS)))]
        sub = int(rng.integers(0, HPAGE_PMD_NR))
        f = _head_fields(m, head)
        pmds, ptes = f["cm"] + 1, int(f["mapcount"][sub]) + 1 - int(f["dm"])
        dm_note = (" PG_double_map is set (a PMD was split while another still maps the THP), so every "
                   "_mapcount holds one extra count." if f["dm"] else " PG_double_map is clear.")
        if kind == "page_mapcount":
            answer = int(f["page_mapcount"][sub])
            question = f"What is page_mapcount() of subpage {sub}?"
            why = (f"{pmds} PMD mapping(s) (compound_mapcount) + {ptes} PTE(s) mapping subpage {sub} = "
                   f"{answer}." + dm_note)
            slips = {ptes: "That counts the PTEs only: in v4.5 page_mapcount() adds compound_mapcount, the "
                           "PMD mappings of the whole THP.",
                     pmds + ptes + int(f["dm"]): "You added DoubleMap's extra count: page_mapcount() takes "
                                                 "it back off."}
        elif kind == "raw _mapcount":
            answer = int(f["mapcount"][sub])
            question = f"What is subpage {sub}'s raw _mapcount (biased: -1 = none)?"
            why = f"{ptes} PTE(s) map subpage {sub}: raw {ptes - 1}" + (" + 1 for DoubleMap" if f["dm"]
                                                                         else "") + f" = {answer}." + dm_note
            slips = {ptes - 1: "That is the PTE count alone: with PG_double_map set each _mapcount is one "
                               "higher.",
                     pmds + ptes - 1: "In v4.5 a PMD mapping is not in any subpage's _mapcount; it is in "
                                      "compound_mapcount (page[1])."}
        elif kind == "compound_mapcount":
            answer = pmds
            question = "What is compound_mapcount() of the THP (not raw)?"
            why = f"{pmds} process(es) still map the THP with a huge PMD."
            slips = {len(pids): "A process whose PMD was split (by mprotect() or munmap() of part of it) "
                                "maps the THP by PTEs: it left compound_mapcount."}
        else:
            answer = f["total"]
            question = "What is total_mapcount() of the THP?"
            why = (f"Page-table entries mapping any part of it: {pmds} PMD(s) + "
                   f"{answer - pmds} PTE(s) = {answer}." + dm_note)
            slips = {answer + HPAGE_PMD_NR: "You counted DoubleMap's 512 extra counts: total_mapcount() "
                                            "subtracts them.",
                     answer + (HPAGE_PMD_NR - 1) * pmds: "A PMD counts once in total_mapcount(), not 512 times."}
        diagnoses = {v: h for v, h in slips.items() if v != answer}
        return cls(seed, kind, steps, question, answer, why, diagnoses)

    def render(self):
        lines = [f"ARG seed {self.seed}", "ARG kernel v4.5", "", "Steps:"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines + ["", self.question])

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, diagnoses=self.diagnoses)


def deferred_split_demo(nr_thps=8, unmapped=256, seed=0):
    """``nr_thps`` THPs, ``unmapped`` subpages ``munmap()``-ed from each: held KiB per kernel.

    Held = allocated inside a compound page, mapped by no page table, pinned by
    nobody (:func:`thplab.invariants.held_pages`).  Returns ``{label: KiB}``
    for the old kernel, RFC v1, v4.5 after the ``munmap()``\\ s and v4.5 after
    ``drop_caches(2)`` ran its shrinker, plus ``queued`` (v4.5's queue length
    before the shrinker) and ``split`` (``thp_split_page`` after it).
    """
    out = {}
    for label, kernel in (("v3.16 (old)", "v3.16"), ("rfc-v1", "rfc-v1"), ("v4.5", "v4.5")):
        m = Machine.boot("32M", kernel=kernel, seed=seed)
        pid = m.spawn()
        base = m.mmap(pid, nr_thps * HPAGE_PMD_SIZE)
        m.touch(pid, base, nr_thps * HPAGE_PMD_SIZE)
        for i in range(nr_thps):
            m.munmap(pid, base + i * HPAGE_PMD_SIZE + 3 * PAGE_SIZE, unmapped * PAGE_SIZE)
        m.check()
        out[label] = sum(held_pages(m).values()) * KIB
        if kernel == "v4.5":
            out["queued"] = m.deferred_split_count()
            m.drop_caches(2)
            m.check()
            out["v4.5 after drop_caches"] = sum(held_pages(m).values()) * KIB
            out["split"] = m.vmstat["thp_split_page"]
    out["nr_thps"], out["unmapped"] = nr_thps, unmapped
    return out


_BARS = ("v3.16 (old)", "rfc-v1", "v4.5", "v4.5 after drop_caches")


def deferred_split_text(demo):
    """Text twin of :func:`deferred_split_chart`."""
    lines = [f"{demo['nr_thps']} THPs, munmap() of {demo['unmapped']} subpage(s) in each: KiB allocated "
             "but mapped by nothing"]
    lines += [f"  {label:<24}{demo[label]:>8}" for label in _BARS]
    lines.append(f"  v4.5 queued {demo['queued']} THP(s) for a deferred split; drop_caches(2) split "
                 f"{demo['split']}.")
    return "\n".join(lines)


def deferred_split_chart(demo):
    """Chart: memory held after partial ``munmap()``\\ s, per kernel, and after v4.5's shrinker ran."""
    from ..diagrams.charts import _figure, figure_diagram
    from ..viz import OKABE_ITO

    fig, ax = _figure(7.2, 3.2)
    values = [demo[label] for label in _BARS]
    hatches = ["", "//", "..", "xx"]
    colours = [OKABE_ITO[4], OKABE_ITO[0], OKABE_ITO[1], OKABE_ITO[2]]
    bars = ax.barh(range(len(_BARS)), values, color=colours, edgecolor="black", hatch=None)
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
    ax.set_yticks(range(len(_BARS)), _BARS)
    ax.invert_yaxis()
    ax.set_xlabel("KiB allocated inside THPs that nothing maps or pins")
    for i, v in enumerate(values):
        ax.text(v + max(values + [1]) * 0.01, i, f"{v} KiB", va="center", fontsize=10)
    ax.set_xlim(0, max(values + [1]) * 1.25)
    ax.set_title(f"{demo['nr_thps']} THPs, {demo['unmapped']} subpage(s) unmapped from each")
    fig.tight_layout()
    return figure_diagram(fig, "Memory held after partial munmap(), by kernel", deferred_split_text(demo))


__all__ = ["steps_table", "kernel_links", "compare_thps", "review_history", "open_problems_measured", "REVIEW", "thp_fields_diagram", "describe_thp_fields", "V45Question",
           "deferred_split_demo", "deferred_split_chart", "deferred_split_text", "KERNEL_LINKS"]
