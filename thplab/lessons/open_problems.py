"""Lesson 14: what the RFC left open.

:func:`partial_munmap_workload` and :func:`held_memory_sweep` measure memory
that partial ``munmap()`` leaves held; :func:`unaligned_vmas` builds VMAs that
start or end inside a compound page; :func:`mapcount_ambiguity` builds two
states whose 512 ``struct page`` rows are identical but whose page tables differ;
:func:`cow_reuse` and :func:`cow_pte_reuse` show what that costs at a write
fault.  :func:`vma_diagram` draws VMAs, page tables and compound pages over
one address range; :class:`HeldQuestion` and :class:`PmdCountProblem` are
transfer questions with diagnosed wrong answers.  Everything is seeded; each
``*_text`` helper is a text twin.
"""

from dataclasses import dataclass

import drawsvg as dw
import numpy as np

from ..invariants import held_pages, mapping_counts
from ..machine import Machine
from ..page_flags import PageCompound, PageHead, Use, compound_head
from ..params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from ..problems import check_number
from ._common import KIB, _events, _observe, _ranges, _boot

__all__ = ["held_series", "PmdCountProblem", "partial_munmap_workload", "workload_text",
           "held_memory_sweep", "sweep_text", "unaligned_vmas", "vma_text", "mapcount_ambiguity",
           "ambiguity_text", "ambiguity_titles", "cow_reuse", "cow_text", "cow_pte_reuse", "vma_diagram",
           "HeldQuestion"]


def _anon_kb(m):
    return int((m.mem_map["use"] == Use.anon).sum()) * KIB


def partial_munmap_workload(level, nr_thps=16, seed=0):
    """Fault ``nr_thps`` THPs, then ``munmap()`` one random run of subpages inside each.

    Run lengths are 1..511 subpages, drawn from ``machine.rng``. Returns a
    dict: ``mapped_kb`` (what the process still maps: its RSS),
    ``held_kb`` (subpages allocated inside compound pages that no page table
    maps and nobody pins: :func:`thplab.invariants.held_pages`),
    ``anon_kb`` (all anonymous memory allocated), ``thps`` (compound pages
    left) and ``unmapped_kb`` (what the munmap() calls gave back to the
    process's address space).
    """
    m = Machine.boot("64M", patches=level, seed=seed)
    rng = m.rng
    pid = m.spawn()
    base = m.mmap(pid, nr_thps * HPAGE_PMD_SIZE)
    m.touch(pid, base, nr_thps * HPAGE_PMD_SIZE)
    unmapped = 0
    for i in range(nr_thps):
        nr = int(rng.integers(1, HPAGE_PMD_NR))
        first = int(rng.integers(0, HPAGE_PMD_NR - nr + 1))
        m.munmap(pid, base + i * HPAGE_PMD_SIZE + first * PAGE_SIZE, nr * PAGE_SIZE)
        unmapped += nr
    m.check()
    return {"level": level, "seed": seed, "nr_thps": nr_thps,
            "unmapped_kb": unmapped * KIB, "mapped_kb": m.anon_rss(pid) * KIB,
            "held_kb": sum(held_pages(m).values()) * KIB, "anon_kb": _anon_kb(m),
            "thps": len(m.thp_heads())}


def workload_text(levels=(0, 10), nr_thps=16, seed=0):
    """Text twin of :func:`partial_munmap_workload` at each of ``levels``."""
    lines = [f"{nr_thps} THPs ({nr_thps * 2} MiB), one random munmap() of 1-511 subpages in each "
             f"(seed {seed}); KiB",
             f"{'level':>5}{'unmapped':>10}{'mapped':>10}{'held':>10}{'anon in use':>13}{'THPs left':>11}"]
    for level in levels:
        r = partial_munmap_workload(level, nr_thps, seed)
        lines.append(f"{level:>5}{r['unmapped_kb']:>10}{r['mapped_kb']:>10}{r['held_kb']:>10}"
                     f"{r['anon_kb']:>13}{r['thps']:>11}")
    lines.append("held = allocated inside a compound page, mapped by no page table, pinned by nobody")
    return "\n".join(lines)


#: Subpages unmapped from the end of each THP in :func:`held_memory_sweep`.
SWEEP = (0, 64, 128, 256, 384, 448, 480, 511)


def held_memory_sweep(levels=(0, 10), unmapped=SWEEP, nr_thps=8):
    """Unmap the last ``k`` subpages of each of ``nr_thps`` THPs, for each ``k``; measure what is held.

    ``k = 511`` is the worst case Andrea Arcangeli named in the review: 4 KiB
    still mapped per THP, 2 MiB still allocated. Returns ``{"sizes_kb",
    "mapped_kb", "held_kb": {level: [...]}, "anon_kb": {level: [...]}}``,
    totals over the ``nr_thps`` THPs.
    """
    out = {"nr_thps": nr_thps, "unmapped": list(unmapped),
           "sizes_kb": [k * KIB for k in unmapped], "mapped_kb": [],
           "held_kb": {lv: [] for lv in levels}, "anon_kb": {lv: [] for lv in levels}}
    for k in unmapped:
        for level in levels:
            m = Machine.boot("32M", patches=level, seed=0)
            pid = m.spawn()
            base = m.mmap(pid, nr_thps * HPAGE_PMD_SIZE)
            m.touch(pid, base, nr_thps * HPAGE_PMD_SIZE)
            if k:
                for i in range(nr_thps):
                    m.munmap(pid, base + (i + 1) * HPAGE_PMD_SIZE - k * PAGE_SIZE, k * PAGE_SIZE)
            m.check()
            out["held_kb"][level].append(sum(held_pages(m).values()) * KIB)
            out["anon_kb"][level].append(_anon_kb(m))
            if level == levels[0]:
                out["mapped_kb"].append(m.anon_rss(pid) * KIB)
    return out


def sweep_text(sweep):
    """Text twin of a :func:`held_memory_sweep` (and of ``diagrams.held_memory_chart`` drawn from it)."""
    levels = list(sweep["held_kb"])
    lines = [f"{sweep['nr_thps']} THPs; the last k subpages of each unmapped (KiB, totals)",
             f"{'k':>5}{'mapped':>9}" + "".join(f"{f'held L{lv}':>11}" for lv in levels)
             + "".join(f"{f'in use L{lv}':>12}" for lv in levels) + f"{'in use/mapped':>15}"]
    for i, k in enumerate(sweep["unmapped"]):
        mapped = sweep["mapped_kb"][i]
        ratio = sweep["anon_kb"][levels[-1]][i] / mapped if mapped else float("inf")
        lines.append(f"{k:>5}{mapped:>9}" + "".join(f"{sweep['held_kb'][lv][i]:>11}" for lv in levels)
                     + "".join(f"{sweep['anon_kb'][lv][i]:>12}" for lv in levels)
                     + f"{f'{ratio:.3g}x':>15}")
    lines.append(f"in use = anonymous memory allocated; the last column is level {levels[-1]}")
    return "\n".join(lines)


def unaligned_vmas(level, seed=0):
    """Two THPs, then ``mprotect(PROT_READ)`` of the 2 MiB from 1 MiB to 3 MiB.

    Both new VMA boundaries fall inside a compound page. Returns
    ``(machine, pid, addr)``; :func:`vma_text` describes the result.
    """
    m = Machine.boot("16M", patches=level, seed=seed)
    pid = m.spawn()
    addr = m.mmap(pid, 2 * HPAGE_PMD_SIZE)
    m.touch(pid, addr, 2 * HPAGE_PMD_SIZE)
    m.mprotect(pid, addr + HPAGE_PMD_SIZE // 2, HPAGE_PMD_SIZE, "r")
    m.check()
    return m, pid, addr


def vma_text(m, pid):
    """Every VMA of ``pid`` and what it maps: 4 KiB pages, or which subpages of which compound page.

    Ends with the compound pages that more than one VMA maps.
    """
    mm = m.processes[pid]
    lines = [f"level {m.level}, pid {pid}: {len(mm.vmas)} VMA(s)"]
    spans = {}
    for vma in mm.vmas:
        addrs = np.arange(vma.vm_start, vma.vm_end, PAGE_SIZE, dtype=np.uint64)
        w = m.walk(pid, addrs)
        pfns = w["pfn"][w["level"] > 0]
        huge, ptes = int((w["level"] == 2).sum()), int((w["level"] == 1).sum())
        lines.append(f"  {repr(vma)[1:-1]} ({len(addrs)} pages, {huge} via a huge PMD, {ptes} via PTEs)")
        compound = PageCompound(m.mem_map, pfns)
        if (~compound).any():
            lines.append(f"      {int((~compound).sum())} ordinary 4 KiB pages")
        heads = compound_head(m.mem_map, pfns[compound])
        for head in np.unique(heads).tolist():
            sub = np.sort(pfns[compound][heads == head] - head)
            spans.setdefault(head, []).append(vma)
            lines.append(f"      compound page at pfn {head:#x}: subpages {_ranges(sub)}")
    shared = {h: v for h, v in spans.items() if len(v) > 1}
    lines.append("  compound pages spanning several VMAs: " + (", ".join(
        f"pfn {h:#x} ({len(v)} VMAs)" for h, v in shared.items()) or "none"))
    return "\n".join(lines)


def _state_pmd(level, seed):
    """Parent maps the THP with its PMD; a child maps subpages 1-511 with PTEs."""
    m = Machine.boot("16M", patches=level, seed=seed)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    m.split_huge_pmd(child, addr)
    m.munmap(child, addr, PAGE_SIZE)
    return m, pid, child, addr, head


def _state_pte(level, seed):
    """One process maps all 512 subpages with PTEs (its PMD was split)."""
    m = Machine.boot("16M", patches=level, seed=seed)
    pid, addr, head = m.map_thp()
    m.split_huge_pmd(pid, addr)
    return m, pid, None, addr, head


def mapcount_ambiguity(level=10, seed=0):
    """Two machines whose THP ``struct page``\\ s are identical, field by field.

    ``"A"``: fault, fork, the child splits its PMD and unmaps subpage 0 --
    the parent maps the THP with a **PMD**. ``"B"``: fault, split the PMD --
    one process maps subpage 0 with a **PTE** (and the tails too). Head
    ``_mapcount`` is 0 in both: one PMD mapping or one PTE mapping of subpage
    0 look the same. Returns ``{"A": (machine, pid, child, addr, head), "B": ...}``.
    """
    return {"A": _state_pmd(level, seed), "B": _state_pte(level, seed)}


def ambiguity_text(states):
    """Text twin of :func:`mapcount_ambiguity`: what ``struct page`` says, then what the page tables say."""
    (ma, *_, ha), (mb, *_, hb) = states["A"], states["B"]
    fields = ma.mem_map.dtype.names
    same = all((ma.mem_map[f][ha:ha + HPAGE_PMD_NR] == mb.mem_map[f][hb:hb + HPAGE_PMD_NR]).all()
               for f in fields)
    lines = [f"level {ma.level}",
             "A: fault, fork, child split_huge_pmd + munmap subpage 0 (parent keeps its PMD)",
             "B: fault, split_huge_pmd (one process, 512 PTEs)", "",
             f"{'struct page says':<40}{'A':>8}{'B':>8}"]
    for label, fn in (("head _count", lambda m, h: int(m.mem_map["_count"][h])),
                      ("head _mapcount (raw)", lambda m, h: int(m.mem_map["_mapcount"][h])),
                      ("page_mapcount(head)", lambda m, h: int(m.page_mapcount(h))),
                      ("tails with _mapcount 0 (1 PTE)",
                       lambda m, h: int((m.mem_map["_mapcount"][h + 1:h + HPAGE_PMD_NR] == 0).sum())),
                      ("PageHead(head)", lambda m, h: int(PageHead(m.mem_map, h)))):
        lines.append(f"  {label:<38}{fn(ma, ha):>8}{fn(mb, hb):>8}")
    lines.append(f"  all {len(fields)} fields of all 512 struct pages equal: {'yes' if same else 'no'}")
    ca, cb = mapping_counts(ma), mapping_counts(mb)
    lines += ["", f"{'page tables say (walk every process)':<40}{'A':>8}{'B':>8}",
              f"  {'huge PMDs mapping the THP':<38}{int(ca['pmd_maps'][ha]):>8}{int(cb['pmd_maps'][hb]):>8}",
              f"  {'PTEs mapping subpage 0':<38}{int(ca['pte_maps'][ha]):>8}{int(cb['pte_maps'][hb]):>8}",
              f"  {'VMAs an rmap walk must visit':<38}{len(ma.anon_vma_of(ha).vmas):>8}"
              f"{len(mb.anon_vma_of(hb).vmas):>8}"]
    return "\n".join(lines)


def cow_reuse(level=10, seed=0, subpage=5):
    """A write fault on the parent's write-protected PMD in state ``"A"`` of :func:`mapcount_ambiguity`.

    The naive rule "reuse the THP if ``page_mapcount(head) == 1``" would
    reuse it: the head's ``_mapcount`` counts only the parent's PMD, since
    the child unmapped subpage 0. But the child still maps subpages 1-511
    with PTEs and would see the parent's writes. thplab's
    ``do_huge_pmd_wp_page()`` (patch 04, a SIMPLIFICATION of what v1 must
    have done) also reads the 511 tails' ``_mapcount`` and copies.
    """
    m, pid, child, addr, head = _state_pmd(level, seed)
    mapcount = int(m.page_mapcount(head))
    tails = int((m.mem_map["_mapcount"][head + 1:head + HPAGE_PMD_NR] >= 0).sum())
    _, delta = _observe(m, lambda: m.touch(pid, addr + subpage * PAGE_SIZE, PAGE_SIZE))
    w = m.walk(pid, [addr])
    new = int(w["pfn"][0])
    child_pfn = int(m.walk(child, [addr + subpage * PAGE_SIZE])["pfn"][0])
    m.check()
    return {"level": level, "page_mapcount_head": mapcount, "naive_reuse": mapcount == 1,
            "tails_mapped": tails, "decision": "reuse" if new == head else "copy", "events": delta,
            "parent_pfn": new, "parent_level": int(w["level"][0]), "child_pfn": child_pfn,
            "head": head, "struct_pages_read": HPAGE_PMD_NR if m.kernel.caps["pte_mapped_thp"] else 1}


def cow_text(result, subpage=5):
    """Text twin of :func:`cow_reuse`."""
    r = result
    return "\n".join([
        f"level {r['level']}: state A, then the parent writes subpage {subpage}",
        f"  page_mapcount(head) before the write: {r['page_mapcount_head']} -> naive rule says "
        f"{'reuse' if r['naive_reuse'] else 'copy'}",
        f"  tails mapped by PTEs (the child's): {r['tails_mapped']}",
        f"  thplab's do_huge_pmd_wp_page(): {r['decision']} "
        f"({r['struct_pages_read']} struct pages read to decide); {_events(r['events'])}",
        f"  parent now maps pfn {r['parent_pfn']:#x} via "
        f"{'a huge PMD' if r['parent_level'] == 2 else 'PTEs'};",
        f"  child still maps subpage {subpage} at pfn {r['child_pfn']:#x} "
        f"(= old head {r['head']:#x} + {r['child_pfn'] - r['head']})",
    ])


def held_series(sweep):
    """``{"level L": held KiB per k}`` of a :func:`held_memory_sweep`, for ``diagrams.held_memory_chart``."""
    return {f"level {lv}" + (" (old kernel)" if lv == 0 else " (RFC v1)" if lv == 10 else ""): held
            for lv, held in sweep["held_kb"].items()}


@dataclass
class PmdCountProblem:
    """``page_mapcount(head)`` is given; how many of those mappings are huge PMDs?

    At levels 4-10 the head's ``_mapcount`` counts PMD mappings *and* PTE
    mappings of subpage 0, so only the steps (the page tables) can tell.
    Seeded: forks, per process a PMD split or not, and for some split ones
    an ``munmap()`` of subpage 0.
    """

    seed: int
    level: int
    steps: list
    mapcount: int
    answer: int
    explanation: str
    diagnoses: dict = None

    @classmethod
    def generate(cls, seed=0, level=10):
        rng = np.random.default_rng(seed)
        m = _boot(level, seed=seed)
        pid, addr, head = m.map_thp()
        pids = [pid] + [m.fork(pid) for _ in range(int(rng.integers(1, 4)))]
        steps = ["fault a THP in pid 1"] + [f"fork() -> pid {p}" for p in pids[1:]]
        for p in pids:
            action = int(rng.integers(3))
            if action >= 1:
                m.split_huge_pmd(p, addr)
                steps.append(f"split_huge_pmd() in pid {p}")
            if action == 2:
                m.munmap(p, addr, PAGE_SIZE)
                steps.append(f"munmap() subpage 0 in pid {p}")
        counts = mapping_counts(m)
        pmds, ptes = int(counts["pmd_maps"][head]), int(counts["pte_maps"][head])
        mapcount = int(m.page_mapcount(head))
        why = (f"page_mapcount(head) = {mapcount} = {pmds} huge PMD(s) + {ptes} PTE(s) of subpage 0. "
               "The head's _mapcount cannot tell them apart; the page tables (the steps) can.")
        diagnoses = {}
        for value, hint in (
                (mapcount, "That is page_mapcount(head) itself: from patch 04 it also counts PTEs "
                           "mapping subpage 0, so it is not a count of PMDs."),
                (len(pids), "That is one PMD per process: a process that called split_huge_pmd() "
                            "maps the THP with PTEs now.")):
            if value != pmds:
                diagnoses.setdefault(value, hint)
        return cls(seed, level, steps, mapcount, pmds, why, diagnoses)

    def render(self):
        lines = [f"ARG seed {self.seed}", f"ARG level {self.level}", "", "Steps:"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        lines += ["", f"Now page_mapcount(head) is {self.mapcount}.",
                  "How many huge PMDs map the THP?"]
        return "\n".join(lines)

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, diagnoses=self.diagnoses)


def cow_pte_reuse(levels=(0, 10), subpage=7):
    """The mirror case of :func:`cow_reuse`: the *child* writes through its PTE. Text, per level.

    After fork and a PMD split in the child, ``do_wp_page()`` reuses a page
    when ``page_mapcount(page) == 1``. From patch 04 on a tail's mapcount
    counts only PTEs, not the parent's PMD, so it reads 1 and the child
    writes into memory the parent still maps -- a hazard of RFC v1 as
    posted, which thplab reproduces (v2 added ``compound_mapcount``).
    """
    lines = [f"fault, fork, the child splits its PMD, then writes subpage {subpage} through its PTE"]
    for level in levels:
        m = Machine.boot("16M", patches=level, seed=0)
        pid, addr, head = m.map_thp()
        child = m.fork(pid)
        m.split_huge_pmd(child, addr)
        va = addr + subpage * PAGE_SIZE
        mapcount = int(m.page_mapcount(int(m.walk(child, [va])["pfn"][0])))
        m.touch(child, va, PAGE_SIZE)
        m.check()
        in_child, in_parent = (int(m.walk(p, [va])["pfn"][0]) for p in (child, pid))
        shared = in_child == in_parent
        lines.append(f"  level {level:>2}: page_mapcount(subpage {subpage}) = {mapcount} -> "
                     f"{'reuse' if shared else 'copy'}; child writes pfn {in_child:#x}, parent maps "
                     f"pfn {in_parent:#x}" + ("\n            the same page: the parent sees the child's write"
                                             if shared else ""))
    return "\n".join(lines)


def ambiguity_titles(states):
    """Titles for :func:`thplab.diagrams.thp_mappings` of states A and B: what head ``_mapcount`` counts."""
    out = {}
    for name, (m, pid, child, addr, head) in states.items():
        c = mapping_counts(m)
        pmds, ptes = int(c["pmd_maps"][head]), int(c["pte_maps"][head])
        out[name] = (f"{name}: head _mapcount {int(m.mem_map['_mapcount'][head])} (page_mapcount "
                     f"{int(m.page_mapcount(head))}) counts {pmds} PMD(s) + {ptes} PTE(s) of subpage 0")
    return out


def vma_diagram(m, pid, addr, length):
    """Diagram: the VMAs, page-table mappings and compound pages of ``pid`` over ``[addr, addr+length)``.

    Three rows on one address axis: the VMAs (with their protections), how
    each 2 MiB is mapped (one huge PMD, or PTEs), and the compound pages
    behind the addresses; dashed lines mark VMA boundaries, and a compound
    page that more than one VMA maps is outlined. Text twin: :func:`vma_text`.
    """
    from ..diagrams._base import BLACK, BLUE, ORANGE, PALE, SKY, SMALL_SIZE, VERMILION, Canvas, runs

    mm = m.processes[pid]
    addrs = np.arange(addr, addr + length, PAGE_SIZE, dtype=np.uint64)
    w = m.walk(pid, addrs)
    x0, width = 140, 740
    halo = "paint-order:stroke;stroke:white;stroke-width:3px"
    labels = []  # drawn last, over the boundary lines

    def label(*args, **kw):
        labels.append((args, kw))
    scale = width / length

    def x(a):
        return x0 + (int(a) - addr) * scale

    def mib(a):
        return f"{(int(a) - addr) / (1 << 20):g}"

    title = f"VMAs, page tables and compound pages of pid {pid} (level {m.level})"
    c = Canvas(x0 + width + 30, 300, title, vma_text(m, pid))
    c.heading(title)
    rows = {"VMAs": 52, "page tables": 122, "compound pages": 192}
    for name, y in rows.items():
        c.text(name, 10, y + 22, weight="bold")
    vmas = [v for v in mm.vmas if v.vm_end > addr and v.vm_start < addr + length]
    for v in vmas:
        s_, e_ = max(v.vm_start, addr), min(v.vm_end, addr + length)
        prot = repr(v).split()[2]  # "rw-p": the protections, as /proc/pid/maps prints them
        c.box(x(s_), rows["VMAs"], x(e_) - x(s_), 36, fill="white", stroke=BLACK, stroke_width=1.4,
              class_="vma", data_prot=prot, tip=repr(v)[1:-1])
        label(f"{prot}  [{mib(s_)}, {mib(e_)}) MiB", (x(s_) + x(e_)) / 2, rows["VMAs"] + 23,
              anchor="middle", style=halo)
    for a in range(addr, addr + length, HPAGE_PMD_SIZE):  # how each 2 MiB region is mapped
        i = (a - addr) // PAGE_SIZE
        levels = w["level"][i:i + HPAGE_PMD_NR]
        y = rows["page tables"]
        if (levels == 2).all():
            c.box(x(a), y, HPAGE_PMD_SIZE * scale, 36, fill=c.hatch("pmd", BLUE, "horiz"), stroke=BLACK,
                  class_="pmd", tip="one huge PMD maps these 2 MiB")
            label("one huge PMD", x(a) + HPAGE_PMD_SIZE * scale / 2, y + 23, anchor="middle", weight="bold",
                  style=halo)
        else:
            nr = int((levels == 1).sum())
            c.box(x(a), y, HPAGE_PMD_SIZE * scale, 36, fill=c.hatch("ptes", ORANGE, "dots"), stroke=BLACK,
                  class_="pte-table", tip=f"a PTE table: {nr} PTEs present")
            label(f"PMD split: {nr} PTEs", x(a) + HPAGE_PMD_SIZE * scale / 2, y + 23, anchor="middle",
                  weight="bold", style=halo)
    mapped = w["level"] > 0
    pfns = w["pfn"].astype(np.int64)
    compound = np.zeros(len(addrs), bool)
    compound[mapped] = PageCompound(m.mem_map, pfns[mapped])
    heads = np.full(len(addrs), -1, np.int64)
    heads[compound] = compound_head(m.mem_map, pfns[compound])
    y = rows["compound pages"]
    for head in np.unique(heads[heads >= 0]).tolist():
        idx = np.flatnonzero(heads == head)
        a, b = int(addrs[idx[0]]), int(addrs[idx[-1]]) + PAGE_SIZE
        owners = {id(v) for v in vmas for i in idx[[0, -1]] if v.vm_start <= int(addrs[i]) < v.vm_end}
        split = len(owners) > 1
        c.box(x(a), y, x(b) - x(a), 36, fill=SKY, stroke=VERMILION if split else BLACK,
              stroke_width=3.5 if split else 1.2, stroke_dasharray="7 4" if split else None,
              class_="compound", data_head=head, data_vmas=len(owners))
        label(f"THP pfn {head:#x}" + (f": {len(owners)} VMAs" if split else ""), (x(a) + x(b)) / 2, y + 23,
              anchor="middle", weight="bold" if split else None, style=halo)
    kind = np.where(~mapped, 0, np.where(compound, 2, 1))
    for s_, e_ in runs(kind):  # runs of ordinary 4 KiB pages
        if kind[s_] == 1:
            a, b = int(addrs[s_]), int(addrs[e_ - 1]) + PAGE_SIZE
            c.box(x(a), y, x(b) - x(a), 36, fill=PALE, stroke=BLACK, class_="small-pages")
            label(f"{e_ - s_} ordinary 4 KiB pages", (x(a) + x(b)) / 2, y + 23, anchor="middle", style=halo)
    edges = sorted({e for v in vmas for e in (v.vm_start, v.vm_end) if addr < e < addr + length})
    for edge in edges:  # VMA boundaries inside the range (one VMA's end is often the next one's start)
        c.add(dw.Line(x(edge), rows["VMAs"] - 6, x(edge), y + 46, stroke=VERMILION, stroke_width=2,
                      stroke_dasharray="5 3", class_="vma-boundary"))
    for args, kw in labels:
        c.text(*args, **kw)
    for k in range(length // HPAGE_PMD_SIZE + 1):
        a = addr + k * HPAGE_PMD_SIZE
        c.text(f"{mib(a)} MiB", x(a), y + 64, anchor="middle", size=SMALL_SIZE)
    c.text(f"offsets from {addr:#x}; dashed red lines: VMA boundaries; a dashed red outline: a compound "
           "page mapped from more than one VMA", 10, y + 92, size=SMALL_SIZE)
    return c.finish("vma_diagram")


@dataclass
class HeldQuestion:
    """How many 4 KiB pages stay allocated after partial ``munmap()``\\ s of some THPs? (transfer)

    One process faults ``nr`` THPs and unmaps a run of subpages in each --
    sometimes all 512. Level 0 splits and frees what is unmapped; level 10
    keeps each compound page whole until its last subpage goes. The answer is
    the allocator's count of anonymous pages; usual slips are diagnosed.
    """

    seed: int
    level: int
    runs: list
    answer: int
    explanation: str
    diagnoses: dict

    @classmethod
    def generate(cls, seed=0, levels=(0, 10)):
        rng = np.random.default_rng(seed)
        level = int(rng.choice(levels))
        nr = int(rng.integers(2, 5))
        runs_ = []
        for i in range(nr):
            k = HPAGE_PMD_NR if i == nr - 1 and rng.random() < 0.5 else int(rng.integers(1, HPAGE_PMD_NR))
            first = int(rng.integers(0, HPAGE_PMD_NR - k + 1))
            runs_.append((first, k))
        m = Machine.boot("32M", patches=level, seed=seed)
        pid = m.spawn()
        base = m.mmap(pid, nr * HPAGE_PMD_SIZE)
        m.touch(pid, base, nr * HPAGE_PMD_SIZE)
        for i, (first, k) in enumerate(runs_):
            m.munmap(pid, base + i * HPAGE_PMD_SIZE + first * PAGE_SIZE, k * PAGE_SIZE)
        m.check()
        answer = int((m.mem_map["use"] == Use.anon).sum())
        unmapped = sum(k for _, k in runs_)
        whole = sum(1 for _, k in runs_ if k == HPAGE_PMD_NR)
        if m.kernel.caps["pte_mapped_thp"]:
            why = (f"From patch 04 a partial munmap() splits only the PMD: each THP with a subpage still "
                   f"mapped stays allocated whole ({nr - whole} x 512 = {answer}); a THP unmapped "
                   "entirely is freed.")
        else:
            why = (f"The old kernel splits a THP at a partial munmap() and frees the unmapped 4 KiB pages "
                   f"at once: {nr} x 512 - {unmapped} = {answer}.")
        slips = [
            ((nr - whole) * HPAGE_PMD_NR, "You counted the unmapped subpages: the old kernel splits the THP "
                                          "at munmap() and frees them at once."),
            (nr * HPAGE_PMD_NR - unmapped, "You freed the unmapped subpages: from patch 04 munmap() splits only "
                                           "the PMD and the compound page stays whole."),
            (nr * HPAGE_PMD_NR, "A THP unmapped entirely is freed on both kernels: nothing maps or pins it."),
            (unmapped, "That is what was unmapped; the question asks what is still allocated."),
        ]
        diagnoses = {}
        for value, hint in slips:
            if value != answer:
                diagnoses.setdefault(value, hint)
        return cls(seed, level, runs_, answer, why, diagnoses)

    def render(self):
        applied = " (old kernel)" if self.level == 0 else f" (patches 01-{self.level:02d} applied)"
        lines = [f"ARG seed {self.seed}", f"ARG level {self.level}{applied}", "", "Steps:",
                 f"  1. one process faults {len(self.runs)} THPs ({len(self.runs) * 2} MiB)"]
        for i, (first, k) in enumerate(self.runs):
            what = "all 512 subpages" if k == HPAGE_PMD_NR else f"subpages {first}-{first + k - 1} ({k})"
            lines.append(f"  {i + 2}. munmap() {what} of THP {i}")
        lines += ["", "How many 4 KiB pages of anonymous memory are still allocated?"]
        return "\n".join(lines)

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, diagnoses=self.diagnoses)
