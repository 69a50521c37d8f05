"""Lesson 01: the x86-64 page-table walk of one address, drawn from :meth:`Machine.page_walk`.

The 48-bit address is sliced into its four 9-bit indices and the offset
(12 bits, or 21 bits under a huge PMD); below it, PGD -> PUD -> PMD (-> PTE)
as a chain of tables, each showing the entry the walk used, in hex and
decoded, and where the walk lands.
"""

import drawsvg as dw

from .. import pgtable as pt
from ..params import HPAGE_PMD_MASK, PAGE_SHIFT
from ._base import BLACK, BLUE, GREEN, GREY, ORANGE, PURPLE, SKY, SMALL_SIZE, VERMILION, YELLOW, Canvas

#: (name, high bit, low bit, colour, hatch kind) of each address field.
FIELDS = (("PGD", 47, 39, ORANGE, "diag"), ("PUD", 38, 30, SKY, "dots"), ("PMD", 29, 21, GREEN, "horiz"),
          ("PTE", 20, 12, YELLOW, "cross"), ("offset", 11, 0, PURPLE, None))

_W = 1000
_BOX_W, _BOX_GAP = 176, 20


def _slices(address, huge):
    out = []
    for name, hi, lo, colour, hatch in FIELDS:
        if huge and name == "PTE":
            continue
        if huge and name == "offset":
            hi = 20
        value = (address >> lo) & ((1 << (hi - lo + 1)) - 1)
        out.append((name, hi, lo, colour, hatch, value))
    return out


def _entry_bits(entry, level):
    e = int(entry)
    names = [name for bit, name in pt.BIT_NAMES if e >> bit & 1]
    if level != "pte" and not (level == "pmd" and e & pt._PAGE_PSE):
        names = [n for n in names if n != "PSE"]
    return names


def _is_huge(rows):
    return any(r["level"] == "PMD" and r["entry"] and pt.pmd_trans_huge(r["entry"]) for r in rows)


def _draw_walk(c, machine, pid, address, y0, label=None):
    """Draw one walk into canvas ``c`` from ``y0``; return the height used."""
    rows = machine.page_walk(pid, address)
    huge = _is_huge(rows)
    c.text(label or f"Walk of {address:#x} in pid {pid}" + (" (a huge PMD: 2 MiB page)" if huge else ""),
           12, y0 + 16, size=13, weight="bold")
    # ---- the address, bit by bit
    bx, bw, by, bh = 12, _W - 24, y0 + 40, 26
    per_bit = bw / 48
    slices = _slices(address, huge)
    centres = {}
    for name, hi, lo, colour, hatch, value in slices:
        x = bx + (47 - hi) * per_bit
        w = (hi - lo + 1) * per_bit
        fill = c.hatch(f"h-{name}", colour, hatch, bg="white") if hatch else "white"
        c.box(x, by, w, bh, fill=fill, stroke=BLACK, stroke_width=1.2, class_="addr-field",
              data_field=name, tip=f"{name}: bits {hi}..{lo} = {value} = {value:#x}")
        c.add(dw.Rectangle(x, by - 4, w, 4, fill=colour))
        for b in range(lo, hi + 1):  # each bit's value
            cx = bx + (47 - b + 0.5) * per_bit
            c.text((address >> b) & 1, cx, by + 17, size=SMALL_SIZE, anchor="middle", mono=True,
                   weight="bold", fill=BLACK, class_="bit",
                   style="paint-order:stroke;stroke:white;stroke-width:3px")
        mid = x + w / 2
        centres[name] = mid
        c.text(f"{name}" + (" index" if name != "offset" else ""), mid, by + bh + 15, anchor="middle",
               weight="bold", class_="field-name")
        c.text(f"bits {hi}..{lo}", mid, by + bh + 29, size=SMALL_SIZE, anchor="middle", fill=GREY)
        c.text(f"{value} = {value:#x}", mid, by + bh + 43, anchor="middle", mono=True, class_="field-value",
               data_field=name)
    c.text(f"{address:#014x}", bx, by - 10, size=SMALL_SIZE, mono=True, fill=GREY)
    c.text("bit 47", bx, by + bh + 58, size=SMALL_SIZE, fill=GREY)
    c.text("bit 0", bx + bw, by + bh + 58, size=SMALL_SIZE, anchor="end", fill=GREY)

    # ---- the chain of tables
    ty = by + bh + 92
    th = 150
    levels = {"PGD": "pgd", "PUD": "pud", "PMD": "pmd", "PTE": "pte"}
    x = 12
    prev_right = None
    table_rows = [r for r in rows if r["level"] != "offset"]
    for r in table_rows:
        name = r["level"]
        colour = dict((f[0], f[3]) for f in FIELDS)[name]
        c.box(x, ty, _BOX_W, th, fill="white", stroke=BLACK, stroke_width=1.2, class_="table",
              data_level=name, tip=f"{name} table at pfn {r['table']:#x}")
        c.add(dw.Rectangle(x, ty, _BOX_W, 20, fill=colour, stroke=BLACK, stroke_width=1.2))
        c.text(f"{name} table, pfn {r['table']:#x}", x + 6, ty + 15, weight="bold")
        ey = ty + 34
        c.box(x + 4, ey, _BOX_W - 8, 66, fill="#FFFFFF", stroke=BLACK, stroke_width=2.2, class_="entry",
              data_level=name, data_index=r["index"], data_entry=f"{r['entry']:#x}")
        c.text(f"entry [{r['index']}]", x + 10, ey + 15, weight="bold")
        c.text(f"{r['entry']:#018x}", x + 10, ey + 31, size=SMALL_SIZE, mono=True, class_="entry-value")
        if r["entry"]:
            bits = _entry_bits(r["entry"], levels[name])
            line, lines = "", []
            for b in bits:
                if len(line) + len(b) + 1 > 20:
                    lines.append(line)
                    line = ""
                line = (line + " " + b).strip()
            lines.append(line)
            for j, ln in enumerate(lines[:2]):
                c.text(ln, x + 10, ey + 47 + 14 * j, size=SMALL_SIZE, mono=True, class_="entry-bits")
        else:
            c.text("none", x + 10, ey + 47, size=SMALL_SIZE, mono=True, class_="entry-bits")
        # what the entry means
        if not r["entry"]:
            what = ["empty: the walk stops", "(a page fault)"]
        elif name == "PMD" and pt.pmd_trans_huge(r["entry"]):
            what = ["PSE set: a 2 MiB leaf", f"head pfn {int(pt.pmd_pfn(r['entry'])):#x}"]
        elif name == "PTE":
            what = ["a 4 KiB leaf", f"pfn {int(pt.pte_pfn(r['entry'])):#x}"]
        else:
            what = ["points to the next table", f"at pfn {int(pt.pte_pfn(r['entry'])):#x}"]
        for j, ln in enumerate(what):
            c.text(ln, x + 8, ty + 118 + 14 * j, size=SMALL_SIZE, class_="meaning")
        # the index selects the entry
        c.arrow(centres[name], by + bh + 48, x + _BOX_W / 2, ey - 2, colour=BLUE, kind="index",
                dash="5 3", width=1.4, tip=f"{name} index {r['index']} selects entry [{r['index']}]")
        if prev_right is not None:
            c.arrow(prev_right, ty + th / 2, x - 2, ty + th / 2, kind="next-table",
                    tip=f"the previous entry points to the {name} table")
        prev_right = x + _BOX_W
        x += _BOX_W + _BOX_GAP
    # ---- the landing
    off = [r for r in rows if r["level"] == "offset"]
    if off:
        lx, lw = x, _W - 12 - x
        c.box(lx, ty, lw, th, fill="white", stroke=BLACK, stroke_width=2.2, class_="leaf", tip=off[0]["meaning"])
        c.box(lx + lw - 24, ty + 20, 24, th - 20, fill=c.hatch("h-leaf", VERMILION, "dots", "white"),
              stroke=BLACK, stroke_width=1)
        c.add(dw.Rectangle(lx, ty, lw, 20, fill=VERMILION, stroke=BLACK, stroke_width=1.2))
        c.text("lands in", lx + 6, ty + 15, weight="bold", fill=BLACK)
        if huge:
            pmd = [r for r in rows if r["level"] == "PMD"][0]
            head = int(pt.pmd_pfn(pmd["entry"]))
            offset = address & ~HPAGE_PMD_MASK
            sub = offset >> PAGE_SHIFT
            lines = ["2 MiB page", f"head pfn {head:#x}", f"byte {offset:#x}", f"= subpage {sub}",
                     f"pfn {head + sub:#x}", f"byte {address & 0xFFF:#x} of it"]
        else:
            pte = [r for r in rows if r["level"] == "PTE"][0]
            lines = ["4 KiB page", f"pfn {int(pt.pte_pfn(pte['entry'])):#x}", f"byte {address & 0xFFF:#x}"]
        for j, ln in enumerate(lines):
            c.text(ln, lx + 8, ty + 38 + 17 * j, mono=j > 0, class_="landing")
        c.arrow(prev_right, ty + th / 2, lx - 2, ty + th / 2, kind="leaf", colour=VERMILION, width=2.4,
                tip=off[0]["meaning"])
    return ty + th + 16 - y0


def describe_page_table_walk(machine, pid, address):
    """Text twin of :func:`page_table_walk`."""
    rows = machine.page_walk(pid, address)
    huge = _is_huge(rows)
    parts = ", ".join(f"{n} bits {hi}..{lo} = {v} ({v:#x})" for n, hi, lo, _, _, v in _slices(address, huge))
    lines = [f"Walk of {address:#x} in pid {pid}: {parts}."]
    for r in rows:
        if r["entry"] is None:
            lines.append(f"  lands: {r['meaning']}")
        else:
            lines.append(f"  {r['level']} table pfn {r['table']:#x}, entry [{r['index']}] = {r['entry']:#018x}: "
                         f"{pt.decode_entry(r['entry'], r['level'].lower())}")
    return "\n".join(lines)


def page_table_walk(machine, pid, address):
    """Diagram of the walk of ``address`` in ``pid``: address bits, the chain of tables, the landing."""
    address = int(address)
    text = describe_page_table_walk(machine, pid, address)
    c = Canvas(_W, 420, f"Page-table walk of {address:#x} in pid {pid}", text)
    used = _draw_walk(c, machine, pid, address, 6)
    c.resize(used + 12)
    return c.finish("page_table_walk")


def huge_vs_pte(machine, pid, huge_address, pte_address):
    """Two walks, one above the other: one ending at a huge PMD, one at a PTE table."""
    huge_address, pte_address = int(huge_address), int(pte_address)
    text = ("A huge PMD against a PTE table.\n" + describe_page_table_walk(machine, pid, huge_address)
            + "\n" + describe_page_table_walk(machine, pid, pte_address))
    c = Canvas(_W, 900, f"Huge PMD vs PTE table: {huge_address:#x} and {pte_address:#x} in pid {pid}", text)
    h1 = _draw_walk(c, machine, pid, huge_address, 6,
                    f"2 MiB: {huge_address:#x} -- the PMD is the leaf, 21 offset bits")
    c.add(dw.Line(12, h1 + 8, _W - 12, h1 + 8, stroke=GREY, stroke_dasharray="2 4"))
    h2 = _draw_walk(c, machine, pid, pte_address, h1 + 14,
                    f"4 KiB: {pte_address:#x} -- the PMD points to a PTE table, 12 offset bits")
    c.resize(h1 + 14 + h2 + 12)
    return c.finish("huge_vs_pte")


def describe_huge_vs_pte(machine, pid, huge_address, pte_address):
    return huge_vs_pte(machine, pid, huge_address, pte_address).text


__all__ = ["page_table_walk", "describe_page_table_walk", "huge_vs_pte", "describe_huge_vs_pte"]
