"""Helpers for the foundation lessons: 00 (index), 01 (primer), 02 (old refcounting), 03-05 (patches 01-03).

Also the course map, :data:`LESSONS`: the one place that holds every lesson's
number, file name, title and one-line summary.  Other lessons take their
titles and links from here (``lesson_heading(7)``, ``lesson_link(8)``).

Everything here runs the model; notebooks only call it.
"""

import textwrap
from dataclasses import dataclass

import numpy as np

from .. import pgtable as pt
from ..machine import Machine
from ..page_flags import PageHead, PageTail, compound_head, flag_names
from ..params import HPAGE_PMD_NR, HPAGE_PMD_SIZE, MMAP_BASE, PAGE_SIZE
from ..problems import check_number
from ..viz import mapping_text, page_field_text
from ..series.text import patch_card_text  # noqa: F401  (lessons 03-05 call fnd.patch_card_text)

__all__ = [
    "Lesson", "LESSONS", "lesson", "lesson_heading", "lesson_link", "lesson_map",
    "CORE_LESSONS", "PARTS", "course_map_diagram",
    "CounterCheck", "counter_button", "package_versions", "MemMapQuestion",
    "PRIMER_THP_ADDR", "WORKED_EXAMPLE", "primer_machine", "struct_page_table", "address_indices",
    "format_indices", "walk_text", "IndexQuestion", "FaultCountQuestion",
    "old_split_machine", "record_old_split", "SplitAction", "SplitActions", "old_split_actions",
    "describe_action", "OldSplitTailQuestion",
    "move_pages_case", "move_pages_table", "foll_split_demo", "move_page", "MOVE_PAGES",
    "MovePagesQuestion",
    "runs", "page_anon_runs", "without_patch", "pageanon_counterfactual", "PageAnonQuestion",
    "FileRssQuestion",
    "compare_levels", "rename_report", "rename_diff",
]


# ===================================================================== the course map

@dataclass(frozen=True)
class Lesson:
    """One lesson of the course: its order, notebook file, title and what it teaches."""

    number: int
    file: str
    title: str
    summary: str


#: The course, in order.  The single source of lesson titles and file names.
LESSONS = (
    Lesson(0, "00-index.ipynb", "Course map and setup",
           "What the course teaches and for whom, how to use the widgets, and a check that they work."),
    Lesson(1, "01-thp-primer.ipynb", "Pages, THPs and x86-64 page tables",
           "struct page, compound pages (head, tails), and the 4-level walk to a 2 MiB or 4 KiB page."),
    Lesson(2, "02-old-refcounting.ipynb", "The old scheme: tail pins and a split that never fails",
           "Level 0: GUP pins on tails, compound_lock, the three phases of the old split_huge_page()."),
    Lesson(3, "03-patch-01-drop-foll-split.ipynb", "Patch 01: drop FOLL_SPLIT",
           "follow_page() stops splitting THPs; migration splits them itself and reports -EBUSY."),
    Lesson(4, "04-patch-02-pageanon.ipynb", "Patch 02: PageAnon() on tail pages",
           "PageAnon() asks the head, so rmap, zap and COW see PTE-mapped tails as anonymous."),
    Lesson(5, "05-patch-03-rename.ipynb", "Patch 03: split_huge_page_pmd() becomes split_huge_pmd()",
           "A rename with a new argument order and no change in behaviour: the name announces "
           "patch 04."),
    Lesson(6, "06-patch-04-pmd-split.ipynb", "Patch 04: split the PMD, not the page",
           "No more tail-page refcounting; split_huge_pmd() splits one PMD; split_huge_page() fails."),
    Lesson(7, "07-patch-05-vmstat.ipynb", "Patch 05: one split event becomes three",
           "thp_split becomes thp_split_page, thp_split_page_failed and thp_split_pmd."),
    Lesson(8, "08-patch-06-split-huge-page.ipynb", "Patch 06: a split_huge_page() that can fail",
           "The new split: -EBUSY unless Σ page_mapcount == page_count - 1, i.e. unless unpinned."),
    Lesson(9, "09-patch-07-generic-splitting.ipynb", "Patch 07: no more splitting PMDs in generic code",
           "pmd_trans_splitting(), wait_split_huge_page() and __pmd_trans_huge_lock() leave mm/."),
    Lesson(10, "10-patch-08-x86-splitting.ipynb", "Patch 08: _PAGE_SPLITTING leaves x86",
           "The PMD bit, pmdp_splitting_flush() and gup-fast's bail-out are removed."),
    Lesson(11, "11-patch-09-futex.ipynb", "Patch 09: get_futex_key() without the THP special case",
           "A pin on a tail now holds the whole THP, so the interrupts-off re-pin dance goes."),
    Lesson(12, "12-patch-10-documentation.ipynb", "Patch 10: the documentation as the contract",
           "Documentation/vm/transhuge.txt before and after: the new rules in the kernel's words."),
    Lesson(13, "13-old-vs-new.ipynb", "Old vs new: the same scenarios on both kernels",
           "Every scenario on the old kernel and on RFC v1: counters, events, costs."),
    Lesson(14, "14-open-problems.ipynb", "Open problems: what the RFC left for later",
           "Memory held after partial munmap, the ambiguous head _mapcount, and what v4.5 changed."),
    Lesson(15, "15-merged-design.ipynb", "The merged design: THP refcounting in v4.5",
           "compound_mapcount, PageDoubleMap, a split that freezes the page, the deferred split queue."),
    Lesson(16, "16-live-kernel-lab.ipynb", "Live kernel lab: the same experiments on the kernel under this notebook",
           "Fault, split and pin THPs on the running kernel and compare /proc with the model."),
)


def lesson(number):
    """The :class:`Lesson` numbered ``number`` (0-16)."""
    for item in LESSONS:
        if item.number == number:
            return item
    raise ValueError(f"no lesson {number!r}; lessons are numbered 0-{len(LESSONS) - 1}")


def lesson_heading(number):
    """The notebook's first heading: ``# Lesson NN — title``."""
    item = lesson(number)
    return f"# Lesson {item.number:02d} — {item.title}"


def lesson_link(number, text=None):
    """A markdown link to a lesson, e.g. ``[lesson 07](07-patch-05-vmstat.ipynb)``."""
    item = lesson(number)
    return f"[{text or f'lesson {item.number:02d}'}]({item.file})"


def lesson_map(markdown=False):
    """The course map: one line per lesson (``markdown=True``: a table with links)."""
    if markdown:
        rows = ["| # | lesson | what it teaches |", "|---|---|---|"]
        rows += [f"| {x.number:02d} | [{x.title}]({x.file}) | {x.summary} |" for x in LESSONS]
        return "\n".join(rows)
    return "\n".join(f"{x.number:02d}  {x.file:<38} {x.title}\n    {x.summary}" for x in LESSONS)


#: The core lessons: the ones the rest builds on (two diagrams each at least).
CORE_LESSONS = (1, 2, 6, 8, 9, 13, 14, 15)
#: The three parts of the course: (first lesson, last lesson, name).
PARTS = ((0, 2, "background"), (3, 12, "the ten patches, one lesson each"), (13, 16, "the result"))


def _short_title(item):
    """What a course-map box says: "Patch 04" and the rest of the title, else the title up to a colon."""
    if item.title.startswith("Patch "):
        number, rest = item.title.split(": ", 1)
        return [number] + textwrap.wrap(rest, 21, break_long_words=False)
    return textwrap.wrap(item.title.split(":")[0], 21, break_long_words=False)


def course_map_diagram():
    """Diagram: the lessons as one path, four to a row, parts shaded, core lessons marked ★."""
    import drawsvg as dw

    from ..diagrams._base import BLACK, GREY, PALE, SKY, SMALL_SIZE, YELLOW, Canvas

    per_row, w, h, gap, x0, y0 = 4, 150, 92, 28, 14, 48
    part_fill = {0: YELLOW, 1: SKY, 2: PALE}
    twin = [f"The course, lessons 00-{len(LESSONS) - 1:02d} in order; ★ marks the core "
            f"lessons ({', '.join(f'{n:02d}' for n in CORE_LESSONS)})."]
    for k, (lo, hi, name) in enumerate(PARTS):
        twin += textwrap.wrap(f"{lo:02d}-{hi:02d} {name}: " + "; ".join(
            f"{x.number:02d} {' '.join(_short_title(x))}{' ★' if x.number in CORE_LESSONS else ''}"
            for x in LESSONS if lo <= x.number <= hi), 100, initial_indent="  ", subsequent_indent="    ")
    c = Canvas(x0 * 2 + per_row * w + (per_row - 1) * gap, 0,
               f"The course map: {len(LESSONS)} lessons, {len(CORE_LESSONS)} core ones", "\n".join(twin))
    c.heading(f"The course map: {len(LESSONS)} lessons in order, ★ = core lesson")

    rows, row_gap = -(-len(LESSONS) // per_row), 40

    def place(n):  # snake: even rows left to right, odd rows right to left, so the path never jumps
        row, col = divmod(n, per_row)
        col = col if row % 2 == 0 else per_row - 1 - col
        return x0 + col * (w + gap), y0 + row * (h + row_gap)

    for x in LESSONS:
        bx, by = place(x.number)
        part = next(k for k, (lo, hi, _) in enumerate(PARTS) if lo <= x.number <= hi)
        core = x.number in CORE_LESSONS
        c.box(bx, by, w, h, fill=part_fill[part], stroke=BLACK, stroke_width=3 if core else 1,
              class_="lesson", data_lesson=x.number, data_core=int(core), tip=f"{x.number:02d} {x.title}")
        c.text(f"{x.number:02d}" + ("  ★ core" if core else ""), bx + 8, by + 18, weight="bold")
        for k, line in enumerate(_short_title(x)[:4]):
            c.text(line, bx + 8, by + 36 + 14 * k, size=SMALL_SIZE)
        if x.number + 1 < len(LESSONS):
            nx, ny = place(x.number + 1)
            if ny == by:
                right = nx > bx
                c.arrow(bx + w if right else bx, by + h / 2, nx - 2 if right else nx + w + 2, ny + h / 2,
                        kind="next")
            else:
                c.arrow(bx + w / 2, by + h, nx + w / 2, ny - 2, kind="next")
    ly = y0 + rows * h + (rows - 1) * row_gap + 30
    lx = x0
    for k, (lo, hi, name) in enumerate(PARTS):
        c.box(lx, ly - 11, 16, 14, fill=part_fill[k], stroke=BLACK)
        label = f"{lo:02d}-{hi:02d}: {name}"
        c.text(label, lx + 22, ly, size=SMALL_SIZE)
        lx += 40 + 6.2 * len(label)
    c.add(dw.Rectangle(x0, ly + 9, 16, 14, fill="white", stroke=BLACK, stroke_width=3))
    c.text("thick border, ★: a core lesson, one the rest builds on", x0 + 22, ly + 20, size=SMALL_SIZE)
    c.text("Lessons 03-12 each compare the kernel just before a patch with the kernel just after it.",
           x0, ly + 42, size=SMALL_SIZE, fill=GREY)
    c.resize(ly + 54)
    return c.finish("course_map")


# ===================================================================== 00: is the widget machinery alive?

class CounterCheck:
    """A button that counts its clicks: if the label changes, widgets talk to the kernel.

    ``button`` and ``label`` are the ipywidgets; ``widget`` is what is displayed.
    """

    def __init__(self):
        import ipywidgets as w

        self.clicks = 0
        self.button = w.Button(description="Click me", icon="hand-pointer-o", button_style="primary")
        self.label = w.Label(value="clicks: 0")
        self.button.on_click(lambda b: self.click())
        self.widget = w.HBox([self.button, self.label])

    def click(self):
        self.clicks += 1
        self.label.value = f"clicks: {self.clicks}"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def counter_button():
    """A :class:`CounterCheck` for the environment check of lesson 00."""
    return CounterCheck()


def package_versions(names=("numpy", "ipywidgets", "matplotlib", "jupyterlab", "thplab")):
    """``{name: version}`` of installed packages, read from their metadata (no import: fast).

    A package that is not installed shows as ``"not installed"``.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


#: Machine sizes lesson 00's first question boots.
_MEM_SIZES = ("4M", "8M", "16M", "32M", "64M")


@dataclass
class MemMapQuestion:
    """Lesson 00: how many ``struct page`` (or how many THPs at most) a booted Machine has.

    Answerable from one paragraph: ``mem_map`` holds one struct page per 4 KiB
    page frame, and a THP takes 512 of them (2 MiB).  Renders like every
    seeded question: its ``ARG`` lines first.
    """

    seed: int
    params: list
    question: str
    answer: int
    explanation: str
    diagnoses: dict

    def render(self):
        return "\n".join([f"ARG seed {self.seed}"] + [f"ARG {p}" for p in self.params] + ["", self.question])

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, diagnoses=self.diagnoses)

    @classmethod
    def generate(cls, seed=0):
        rng = np.random.default_rng(seed)
        size = str(rng.choice(_MEM_SIZES))
        thps = bool(rng.integers(0, 2))
        m = Machine.boot(size, patches=0, seed=seed)
        frames = len(m.mem_map)
        mib = int(size[:-1])
        if thps:
            answer = frames // HPAGE_PMD_NR
            question = (f"Machine.boot({size!r}) has {size[:-1]} MiB of RAM. At most how many 2 MiB THPs "
                        "would fit in it?")
            why = f"{frames} page frames / 512 frames per THP = {answer}."
            diagnoses = {frames: f"{frames} is the number of struct pages (4 KiB frames), not of 2 MiB THPs.",
                         mib: f"{mib} counts MiB; a THP is 2 MiB."}
        else:
            answer = frames
            question = f"Machine.boot({size!r}): how many struct pages does its mem_map hold?"
            why = f"One struct page per 4 KiB frame: {mib} MiB / 4 KiB = {answer} (len(m.mem_map))."
            diagnoses = {mib * 1024: f"{mib * 1024} is the size in KiB; divide by the 4 KiB of one page.",
                         mib: f"{mib} is the size in MiB; one struct page describes 4 KiB.",
                         frames // HPAGE_PMD_NR: "That is the number of 2 MiB THPs, not of 4 KiB pages."}
        diagnoses.pop(answer, None)
        return cls(seed, [f"machine {size}", "level 0"], question, answer, why, diagnoses)


# ===================================================================== 01: the primer

#: Where lesson 01 maps its THP: PGD 254, PUD 0, PMD 1 (kernel-semantics §4.1's example).
PRIMER_THP_ADDR = MMAP_BASE + HPAGE_PMD_SIZE
#: kernel-semantics §4.1: 0x7f0000205abc -> PGD 254, PUD 0, PMD 1, PTE 5, offset 0xabc.
WORKED_EXAMPLE = PRIMER_THP_ADDR + 0x5ABC


def primer_machine(level=0, seed=0):
    """One process with a THP at :data:`PRIMER_THP_ADDR` and a 4 KiB page just below it.

    The THP: ``mmap`` 2 MiB there with ``MADV_HUGEPAGE`` and write to it (one
    huge fault).  The small page: 4 KiB without ``MADV_HUGEPAGE``, written
    once, so it is mapped by a PTE.  Returns ``(machine, pid, thp_addr, small_addr)``.
    """
    m = Machine.boot("16M", patches=level, seed=seed)
    pid = m.spawn()
    thp = m.mmap(pid, HPAGE_PMD_SIZE, addr=PRIMER_THP_ADDR)
    m.touch(pid, thp, HPAGE_PMD_SIZE)
    small = m.mmap(pid, PAGE_SIZE, thp=False)
    m.touch(pid, small, PAGE_SIZE)
    return m, pid, thp, small


#: The columns of :func:`struct_pages`: (name, shown by default).
_STRUCT_PAGE_COLUMNS = (("", True), ("pfn", True), ("flags", True), ("first_page", False), ("order", False),
                        ("_count", True), ("_mapcount", True), ("page_mapcount", False), ("mapping", True),
                        ("index", True))
_LEFT = {"", "flags", "mapping"}


def struct_pages(machine, pfns, labels=None, all_columns=False):
    """The ``struct page`` fields of ``pfns`` as a fixed-width text table, raw as stored.

    By default: flags (by name), ``_count``, raw ``_mapcount``, ``mapping``
    (decoded: the anon_vma and the ``PAGE_MAPPING_ANON`` bit) and ``index``
    (hex).  ``all_columns=True`` adds ``first_page`` (a tail's pointer to its
    head, "-" for NULL), ``compound_order`` (kept in page[1]) and
    ``page_mapcount()`` (the accessor, not a field).
    """
    mm = machine.mem_map
    pfns = [int(p) for p in pfns]
    labels = labels or [""] * len(pfns)
    cols = [name for name, default in _STRUCT_PAGE_COLUMNS if default or all_columns]
    rows = []
    for label, p in zip(labels, pfns):
        flags = [f for f in flag_names(mm["flags"][p]) if f in ("head", "tail", "lru", "swapbacked",
                                                                  "uptodate", "dirty", "compound_lock")]
        first = int(mm["first_page"][p])
        cell = {"": label, "pfn": f"{p:#x}", "flags": ",".join(flags) or "-",
                "first_page": f"{first:#x}" if PageTail(mm, p) else "-",
                "order": str(int(mm["compound_order"][p])) if mm["compound_order"][p] else "-",
                "_count": str(int(mm["_count"][p])), "_mapcount": str(int(mm["_mapcount"][p])),
                "page_mapcount": str(int(machine.page_mapcount(p))), "mapping": mapping_text(mm["mapping"][p]),
                "index": f"{int(mm['index'][p]):#x}" if mm["index"][p] else "0"}
        rows.append([cell[c] for c in cols])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = lambda r: "  ".join(v.ljust(wd) if c in _LEFT else v.rjust(wd)
                              for c, v, wd in zip(cols, r, widths))
    return "\n".join([fmt(cols).rstrip()] + [fmt(r).rstrip() for r in rows])


def struct_page_table(machine, pfns, labels=None):
    """:func:`struct_pages` with every column (what lesson 04 prints)."""
    return struct_pages(machine, pfns, labels, all_columns=True)


def address_indices(address):
    """Slice a virtual address as x86-64 does: ``{"PGD", "PUD", "PMD", "PTE", "offset"}``.

    The indices come from :mod:`thplab.pgtable` (``pgd_index()`` ...); the
    offset is bits 11..0.
    """
    address = int(address)
    return {"PGD": int(pt.pgd_index(address)), "PUD": int(pt.pud_index(address)),
            "PMD": int(pt.pmd_index(address)), "PTE": int(pt.pte_index(address)),
            "offset": address & (PAGE_SIZE - 1)}


def format_indices(address):
    """One line: ``0x7f0000205abc -> PGD 254, PUD 0, PMD 1, PTE 5, offset 0xabc``."""
    ix = address_indices(address)
    return (f"{int(address):#x} -> PGD {ix['PGD']}, PUD {ix['PUD']}, PMD {ix['PMD']}, "
            f"PTE {ix['PTE']}, offset {ix['offset']:#x}")


def walk_text(machine, pid, address):
    """Text of :meth:`Machine.page_walk` for one address (the AddressSlicer's text twin)."""
    lines = [f"walk of {int(address):#x} in pid {pid}:"]
    for r in machine.page_walk(pid, address):
        if r["entry"] is None:
            lines.append(f"  {r['level']:<6} {r['meaning']}")
        else:
            lines.append(f"  {r['level']:<6} index {r['index']:>3} of table pfn {r['table']:#x}: "
                         f"entry {r['entry']:#018x} = {r['meaning']}")
    return "\n".join(lines)


@dataclass
class _Question:
    """A seeded question answered by the model: ``render()``, ``check(guess)``, ``answer``.

    ``diagnoses`` maps a typical wrong answer to what it usually means.
    """

    seed: int
    params: list
    question: str
    answer: int
    explanation: str
    diagnoses: dict = None

    def render(self):
        lines = [f"ARG seed {self.seed}"] + [f"ARG {p}" for p in self.params] + ["", self.question]
        return "\n".join(lines)

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, diagnoses=self.diagnoses)


def _index_diagnoses(address, level):
    """Wrong answers to "which ``level`` index?" and what each usually means."""
    shifts = dict(PGD=39, PUD=30, PMD=21, PTE=12)
    answer = address_indices(address)[level]
    out = {}
    for other, shift in shifts.items():
        value = address_indices(address)[other]
        if other != level:
            off = abs(shift - shifts[level])
            out.setdefault(value, f"That is the {other} index (bits {_LEVEL_BITS[other]}): a shift by "
                                  f"{shift} instead of {shifts[level]}, {off} bits off.")
    out.setdefault(address >> shifts[level], f"You shifted by {shifts[level]} but kept every higher bit "
                                             "too: an index is 9 bits, & 511 (0x1ff).")
    out.setdefault(int(str(answer), 16), f"You wrote the decimal index with 0x in front: 0x{answer} is "
                                         f"{int(str(answer), 16)}, not {answer}.")
    if f"{answer:x}".isdigit():
        out.setdefault(int(f"{answer:x}"), f"{answer:x} is the hex digits of {answer:#x} read as decimal.")
    out.pop(answer, None)
    return out


_LEVEL_BITS = {"PGD": "47..39", "PUD": "38..30", "PMD": "29..21", "PTE": "20..12"}


class IndexQuestion(_Question):
    """Which PGD/PUD/PMD/PTE index does a (seeded, random) address inside a mapping use?

    ``IndexQuestion.generate(seed)``: a process maps a random range, touches
    it, and the question picks an address inside it and one level.  The
    answer comes from :mod:`thplab.pgtable`, and the explanation quotes the
    walk the model really did.
    """

    @classmethod
    def generate(cls, seed=0):
        rng = np.random.default_rng(seed)
        m = Machine.boot("16M", seed=seed)
        pid = m.spawn()
        huge = bool(rng.integers(0, 2))
        # anywhere in the upper half of user space, 2 MiB aligned for a THP
        start = int(rng.integers(1 << 46, (1 << 47) - (8 << 21), dtype=np.int64)) & ~(HPAGE_PMD_SIZE - 1)
        if huge:
            length = HPAGE_PMD_SIZE
        else:
            start += int(rng.integers(0, 512)) * PAGE_SIZE
            length = int(rng.integers(1, 64)) * PAGE_SIZE
        addr = m.mmap(pid, length, thp=huge, addr=start)
        address = addr + int(rng.integers(0, length))
        m.touch(pid, address & ~(PAGE_SIZE - 1), PAGE_SIZE)
        level = str(rng.choice(("PGD", "PUD", "PMD", "PTE")))
        answer = address_indices(address)[level]
        walk = {r["level"]: r for r in m.page_walk(pid, address)}
        kind = "a 2 MiB THP, one huge PMD" if huge else f"{length // PAGE_SIZE} x 4 KiB pages"
        if level in walk:
            r = walk[level]
            seen = (f"The model's walk read entry {r['index']} of the {level} table (pfn {r['table']:#x}).")
        else:
            seen = ("The walk stops at the huge PMD, so no PTE table is read: bits 20..12 are the "
                    f"subpage number inside the THP, {answer}.")
        explanation = (f"{level} index = bits {_LEVEL_BITS[level]} of the address = "
                       f"({address:#x} >> {dict(PGD=39, PUD=30, PMD=21, PTE=12)[level]}) & 511. {seen}")
        question = (f"pid {pid} has a mapping {addr:#x}-{addr + length:#x} ({kind}).\n"
                    f"Which {level} index does the walk of address {address:#x} use?"
                    + (" (For a PMD-mapped THP: which subpage is it?)" if level == "PTE" and huge else ""))
        return cls(seed, [f"mapping {addr:#x}-{addr + length:#x}", f"address {address:#x}",
                          f"asked {level}"], question, answer, explanation, _index_diagnoses(address, level))


_FAULT_FIELDS = (
    ("head", "_count", "raw _count of the head page (subpage 0)"),
    ("head", "_mapcount", "raw _mapcount of the head page (the stored value, with its -1 bias)"),
    ("tail", "_count", "raw _count of subpage {i}"),
    ("tail", "_mapcount", "raw _mapcount of subpage {i}"),
    ("tail", "page_count", "page_count() of subpage {i}"),
    ("head", "page_mapcount", "page_mapcount() of the head page"),
)


#: The usual wrong answers to each :class:`FaultCountQuestion`, and what they mean.
_FAULT_DIAGNOSES = {
    ("head", "_count"): {0: "0 would mean free: the PMD mapping holds a reference.",
                         512: "One reference for the whole THP, on the head -- not one per subpage."},
    ("head", "_mapcount"): {1: "1 is page_mapcount(), the accessor; the stored field has the -1 bias.",
                            -1: "-1 (stored) means no mapping, but the PMD maps the head."},
    ("tail", "_count"): {1: "1 is page_count() of a tail, which reads the head; the tail's own "
                            "_count stays 0."},
    ("tail", "_mapcount"): {0: "0 (stored) would be one mapping or pin of this tail; the PMD is "
                               "counted on the head only.",
                            1: "Not the head's: nothing counts on a tail yet, so the stored value is -1."},
    ("tail", "page_count"): {0: "0 is the tail's own _count; page_count() reads the head's."},
    ("head", "page_mapcount"): {0: "0 is the stored _mapcount; page_mapcount() adds 1 to it."},
}


class FaultCountQuestion(_Question):
    """Right after one THP fault: one counter of the head or of a tail, read from the model."""

    @classmethod
    def generate(cls, seed=0, level=None):
        rng = np.random.default_rng(seed)
        level = int(rng.choice((0, 10))) if level is None else int(level)
        which, field, text = _FAULT_FIELDS[int(rng.integers(0, len(_FAULT_FIELDS)))]
        i = 0 if which == "head" else int(rng.integers(1, HPAGE_PMD_NR))
        m, pid, thp, _ = primer_machine(level, seed)
        head = int(m.walk(pid, [thp])["pfn"][0])
        page = head + i
        if field in ("_count", "_mapcount"):
            answer = int(m.mem_map[field][page])
        elif field == "page_count":
            answer = int(m.page_count(page))
        else:
            answer = int(m.page_mapcount(page))
        why = {
            ("head", "_count"): "The fault's allocation reference becomes the PMD's: one mapping, "
                                "one reference, on the head.",
            ("head", "_mapcount"): "One PMD maps the THP; page_add_new_anon_rmap() sets the head's "
                                   "_mapcount from -1 (none) to 0 (one mapping).",
            ("tail", "_count"): "Tails keep _count 0 while the page is compound; every reference "
                                "lives on the head.",
            ("tail", "_mapcount"): "Before patch 04 a tail's _mapcount counts pins on it, from patch 04 "
                                   "the PTEs mapping it; neither exists yet (the PMD mapping is counted "
                                   "on the head), and -1 means zero.",
            ("tail", "page_count"): "page_count() reads compound_head(page)->_count: the head's 1.",
            ("head", "page_mapcount"): "page_mapcount() = _mapcount + 1: one PMD mapping.",
        }[(which, field)]
        return cls(seed, [f"level {level}", "steps: mmap 2 MiB (MADV_HUGEPAGE), write to it"],
                   f"A THP was just faulted in. What is the {text.format(i=i)}?", answer, why,
                   _FAULT_DIAGNOSES[(which, field)])


# ===================================================================== 02: the old scheme

def old_split_machine(level=0, seed=0, forks=1, pins=(5,)):
    """A THP faulted, shared by ``forks`` fork()s, pinned by get_user_pages_fast() on ``pins``.

    Returns ``(machine, pid, addr, head)``; the lesson then splits ``head``.
    """
    m = Machine.boot("16M", patches=level, seed=seed)
    pid, addr, _ = m.map_thp()
    for _ in range(forks):
        m.fork(pid)
    for i in pins:
        m.get_user_pages_fast(pid, addr + i * PAGE_SIZE, 1)
    head = int(compound_head(m.mem_map, m.walk(pid, [addr])["pfn"][0]))
    return m, pid, addr, head


def record_old_split(machine, head):
    """``split_huge_page(head)`` under a step recorder: ``(result, recorder)``."""
    from ..trace import record

    return record(machine, machine.split_huge_page, head)


#: What the old split does, in kernel order: (kind, label, phase).  The model reports a
#: point after the action it names, and some actions have no point of their own (the PTE
#: fill comes just before pmdp_invalidate's point), so the changes seen from one point to
#: the next can belong to several actions; :func:`old_split_actions` names each change by
#: the action that made it.
_SPLIT_ACTIONS = (
    ("get", "get_page(head): reclaim and migration hold a reference", "caller"),
    ("splitting", "pmdp_splitting_flush(): _PAGE_SPLITTING in pid {pid}'s PMD, then a TLB flush", "phase 1"),
    ("lock", "spin_lock_irq(&zone->lru_lock), compound_lock(head): interrupts off", "phase 2"),
    ("refcount", "counts to the tails; the head gives up the tail pins", "phase 2"),
    ("unlock", "compound_unlock(head), spin_unlock_irq(&zone->lru_lock): interrupts on", "phase 2"),
    ("put_tails", "put_page() on every former tail: drops the +1", "phase 2"),
    ("populate", "pmd_populate(): pid {pid}'s PMD points to its PTE table", "phase 3"),
    ("fill", "pid {pid}'s deposited PTE table gets 512 PTEs", "phase 3"),
    ("invalidate", "pmdp_invalidate(): pid {pid}'s PMD loses _PAGE_PRESENT, then a TLB flush", "phase 3"),
    ("thp_split", "count_vm_event(THP_SPLIT)", "done"),
    ("put", "put_page(head): its reference back", "caller"),
)
_ACTION_ORDER = {kind: i for i, (kind, _, _) in enumerate(_SPLIT_ACTIONS)}


@dataclass
class SplitAction:
    """One action of the old split and what it changed.

    ``rows``: ``(pfn or None, text)``, one per change (pfn None: a page-table
    entry or vmstat); ``points``: the indices of the recorder's two points it
    happened between; ``irqs``: interrupts on the CPU before and after it
    ("on", "off").
    """

    kind: str
    label: str
    phase: str
    rows: list
    points: tuple
    irqs: tuple


class SplitActions:
    """The recorded old split as a list of actions, each change named by the action that made it.

    ``steps[0]`` is the state before; for :class:`thplab.widgets.StepThrough`
    with ``describe=describe_action``.
    """

    def __init__(self, steps, head, recorder):
        self.steps, self.head, self.recorder = steps, head, recorder

    def text(self, pages=None):
        return "\n".join(describe_action(self, i, pages) for i in range(len(self.steps)))


def _flag_text(pfn, bits):
    from ..page_flags import PG

    names = " ".join(f"{'+' if on else '-'}{PG(b).name}" for b, on in bits)
    return f"pfn {pfn:#x}: flags {names}"


def old_split_actions(recorder, head):
    """The old ``split_huge_page()`` in ``recorder`` (level 0) as :class:`SplitActions`.

    Each change between two of the model's points is put under the action
    that made it (:data:`_SPLIT_ACTIONS`), so a PTE fill is never listed
    under ``pmdp_invalidate`` and one process's ``pmd_populate()`` never under
    another's.
    """
    from ..page_flags import PG

    head = int(head)
    steps = recorder.steps
    lock_bit = int(PG.compound_lock)
    # which process owns which table: from the points that name a pid, and pmd_populate()
    pmd_owner, pte_owner = {}, {}
    for i in range(1, len(steps)):
        ch = recorder.diff(i)
        for table, idx, old, new, level in ch["entries"]:
            if level == "pmd" and "pid" in steps[i].detail:
                pmd_owner.setdefault(table, steps[i].detail["pid"])
    for i in range(1, len(steps)):
        for table, idx, old, new, level in recorder.diff(i)["entries"]:
            if level == "pmd" and new and not pt.pmd_trans_huge(new):
                pte_owner[int(pt.pte_pfn(new))] = pmd_owner.get(table)
    actions = [SplitAction("before", "the state before split_huge_page()", "before", [], (0, 0), ("on", "on"))]
    for i in range(1, len(steps)):
        ch = recorder.diff(i)
        found = {}

        def add(kind, row, pid=None):
            found.setdefault((_ACTION_ORDER[kind], pid if pid is not None else -1, kind), []).append(row)

        redistribution = any(f == "flags" and o >> PG.tail & 1 and not n >> PG.tail & 1
                             for _, f, o, n in ch["pages"])
        for pfn, field, old, new in ch["pages"]:
            if field == "flags":
                flipped = [(b, bool(new >> b & 1)) for b in range(32) if (old ^ new) >> b & 1]
                lock = [x for x in flipped if x[0] == lock_bit]
                other = [x for x in flipped if x[0] != lock_bit]
                if lock:
                    add("lock" if lock[0][1] else "unlock", (pfn, _flag_text(pfn, lock)))
                if other:
                    add("refcount", (pfn, _flag_text(pfn, other)))
            elif redistribution:
                add("refcount", (pfn, page_field_text(pfn, field, old, new)))
            elif field == "_count":
                kind = "put_tails" if pfn != head else ("get" if new > old else "put")
                add(kind, (pfn, page_field_text(pfn, field, old, new)))
        for name, old, new in ch["vmstat"]:
            add("thp_split" if name == "thp_split" else "refcount", (None, f"/proc/vmstat {name}: {old} -> {new}"))
        fills = {}
        for table, idx, old, new, level in ch["entries"]:
            if level == "pte":
                fills.setdefault(table, []).append((idx, new))
                continue
            pid = pmd_owner.get(table)
            if new and not pt.pmd_trans_huge(new):
                kind = "populate"
            elif pt.pmd_trans_splitting(new) and not pt.pmd_trans_splitting(old):
                kind = "splitting"
            else:
                kind = "invalidate"
            bits = " ".join(f"{'+' if new >> b & 1 else '-'}{n}" for b, n in pt.BIT_NAMES
                            if (old ^ new) >> b & 1 and pt.pmd_trans_huge(new))
            add(kind, (None, f"pid {pid}'s PMD, entry {idx} of table pfn {table:#x}: {bits or 'now'} "
                             f"{pt.decode_entry(new, 'pmd')}"), pid)
        for table, rows in fills.items():
            first_idx, first = rows[0]
            last = int(pt.pte_pfn(rows[-1][1]))
            add("fill", (None, f"{len(rows)} PTEs in table pfn {table:#x}: none -> 4 KiB pages pfn "
                               f"{int(pt.pte_pfn(first)):#x}-{last:#x} "
                               f"[{pt.decode_entry(first, 'pte').split('[')[1]}"), pte_owner.get(table))
        # interrupts as recorded at the earlier point, switched by the lock and unlock actions
        irqs = "off" if steps[i - 1].cpu in steps[i - 1].irqs_off else "on"
        for (_, pid, kind), rows in sorted(found.items()):
            label, phase = next((lb, ph) for k, lb, ph in _SPLIT_ACTIONS if k == kind)
            before, irqs = irqs, {"lock": "off", "unlock": "on"}.get(kind, irqs)
            actions.append(SplitAction(kind, label.format(pid=pid), phase, rows, (i - 1, i), (before, irqs)))
    return SplitActions(actions, head, recorder)


def describe_action(actions, i, pages=None, max_rows=16):
    """Text of action ``i`` of :class:`SplitActions`: what the kernel did, and what it changed.

    ``pages``: show only these pfns' ``struct page`` changes (the rest are counted).
    """
    a = actions.steps[i]
    last = len(actions.steps) - 1
    if i == 0:
        return f"0/{last}  {a.label}"
    keep = set(int(p) for p in pages) if pages is not None else None
    shown = [t for pfn, t in a.rows if pfn is None or keep is None or pfn in keep]
    lines = [f"{i}/{last}  {a.phase}: {a.label}"] + [f"  {t}" for t in shown[:max_rows]]
    if len(a.rows) > min(len(shown), max_rows):
        lines.append(f"  ... and {len(a.rows) - min(len(shown), max_rows)} more struct page changes")
    irqs = a.irqs[0] if a.irqs[0] == a.irqs[1] else f"{a.irqs[0]} -> {a.irqs[1]}"
    point = actions.recorder.steps[a.points[1]].name
    lines.append(f"  [interrupts {irqs}; reported at point {a.points[1]}: {point}]")
    return "\n".join(lines)


class OldSplitTailQuestion(_Question):
    """A new state, the old split's rule: predict ``page_count()`` of one subpage after the split.

    Seeded: how many processes map the THP (M = 1 + forks), which subpages
    are pinned how often (one or two tails, sometimes the head), and which
    subpage is asked about (a pinned tail, an unpinned tail or the head).
    The answer is read from the model after the split; the rule is
    ``_count = M + pins on that subpage``.  Wrong answers that come from a
    known slip (the +1 kept, M forgotten, pins of other subpages added) are
    diagnosed.
    """

    @classmethod
    def generate(cls, seed=0):
        rng = np.random.default_rng(seed)
        forks = int(rng.integers(0, 3))
        tails = [int(t) for t in rng.choice(np.arange(1, HPAGE_PMD_NR), size=2, replace=False)]
        pins = [tails[0]] * int(rng.integers(1, 4)) + [tails[1]] * int(rng.integers(0, 3))
        pins += [0] * int(rng.integers(0, 2))
        asked = [tails[0], tails[1], int(rng.integers(1, HPAGE_PMD_NR)), 0][int(rng.integers(0, 4))]
        m, pid, addr, head = old_split_machine(0, seed, forks=forks, pins=pins)
        m.split_huge_page(head)
        answer = int(m.page_count(head + asked))
        mappers, mine, total = 1 + forks, pins.count(asked), len(pins)
        pinned = ", ".join(f"subpage {i} x{pins.count(i)}" for i in sorted(set(pins)))
        why = (f"After the old split subpage {asked} is a 4 KiB page with _count = M + its own pins = "
               f"{mappers} (one PTE per process) + {mine} = {mappers + mine}; pins taken on other "
               "subpages stay with those subpages.")
        others = ("The head gives the tails' pins to the tails: only the pins taken on subpage 0 stay "
                  "with it." if asked == 0 else "Pins on other subpages stay with those subpages.")
        slips = [(mappers + mine + 1, "You kept the +1: phase 2 gives each tail one extra reference and "
                                      "put_page() drops it before the split returns."),
                 (mappers + total, others),
                 (mappers, "The pins on this subpage count too.") if mine else None,
                 (mine, "The mappings count too: each process's PTE holds a reference."),
                 (1 + mine, f"Each fork() adds a mapping: M = 1 + {forks} = {mappers}.") if forks else None,
                 (0, "0 was a tail's _count while the page was compound; after the split each subpage "
                     "holds its own count.")]
        diagnoses = {}
        for value, text in filter(None, slips):
            if value != answer:
                diagnoses[value] = f"{diagnoses[value]} Or: {text}" if value in diagnoses else text
        return cls(seed, ["level 0 (old kernel)", f"processes mapping the THP: {mappers}",
                          f"gup-fast pins: {pinned}", "then split_huge_page() of the THP"],
                   f"What is page_count() of subpage {asked} after the split?", answer, why, diagnoses)


# ===================================================================== 03-05: patch cards



def _titled(diagram, title):
    """``diagram`` with ``title`` as the first line of its text twin, widened so no run label is cut off.

    thp_mappings() draws on a fixed 1180 px canvas, and a run label listing
    several changed fields can run past its right edge: the width grows to
    fit the longest label (about 0.62 em per character, bold).
    """
    import html as html_

    from ..diagrams import Diagram

    d = diagram.drawing
    need = max((e.args["x"] + len(html_.unescape(e.escaped_text)) * e.args["font-size"] * 0.62 + 12
                for e in d.elements if getattr(e, "args", {}).get("class") == "run-label"), default=0)
    if need > d.width:
        width = int(need)
        d.width, d.view_box = width, (0, 0, width, d.view_box[3])
        for e in d.elements:
            if getattr(e, "args", {}).get("class") == "background":
                e.args["width"] = width
    return Diagram(d, f"{title}\n{diagram.text}", diagram.title, diagram.kind)


@dataclass
class _DiagnosedQuestion(_Question):
    """A :class:`_Question` whose feedback names what a typical wrong answer usually means."""

    diagnoses: dict = None

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, diagnoses=self.diagnoses)


# ===================================================================== 03: patch 01, FOLL_SPLIT and migration

#: The subpages lesson 03 moves (7, 0, 9) or pins (5), with the last one: its explorer's counter rows.
MOVE_WATCH = (0, 5, 7, 9, 511)


def move_pages_case(level, pinned, subpage=7, pin_subpage=5, seed=0):
    """``move_pages()`` of one THP subpage to node 1 on a 2-node machine, at ``level``.

    With ``pinned``, get_user_pages() first pins ``pin_subpage`` (another
    subpage).  Returns a dict: ``status`` (the per-page status move_pages
    reports), ``node`` (where the subpage is now), ``thp`` (whether the THP
    is still compound), ``events`` (thp_* vmstat deltas) and ``leaked``
    (references the kernel took and never dropped: patch 01 as posted).
    """
    m = Machine.boot("16M", patches=level, seed=seed, nodes=2)
    pid, addr, _ = m.map_thp()
    if pinned:
        m.get_user_pages(pid, addr + pin_subpage * PAGE_SIZE, 1)
    before = m.vmstat.as_dict()
    status = m.move_pages(pid, [addr + subpage * PAGE_SIZE], 1)[0]
    after = m.vmstat.as_dict()
    pfn = int(m.walk(pid, [addr + subpage * PAGE_SIZE])["pfn"][0])
    events = {n: after[n] - before.get(n, 0) for n in after if n.startswith("thp_") and after[n] != before.get(n, 0)}
    return {"level": level, "pinned": pinned, "status": int(status), "node": m.page_to_nid(pfn),
            "thp": bool(len(m.thp_heads())), "events": events, "leaked": int(m.leaked.sum())}


def _status_text(status):
    return {-16: "-EBUSY", -11: "-EAGAIN", -13: "-EACCES", -14: "-EFAULT", -2: "-ENOENT"}.get(
        status, f"node {status}")


def move_pages_table(levels=(0, 1, 4, 10), subpages=(7, 0), pin_subpage=5):
    """Text table of :func:`move_pages_case` per level and subpage, without and with a pin.

    When the pin changes nothing the two runs share one row ("either").
    """
    lines = [f"move_pages(subpage -> node 1); 'pinned' = get_user_pages() holds subpage {pin_subpage}",
             f"{'level':>5}  {'subpage':<9}  {'pinned':<6}  {'status':<8}  {'now on':<7}  {'THP after':<9}  "
             f"{'leaked':<6}  vmstat"]
    for level in levels:
        for subpage in subpages:
            cases = [move_pages_case(level, pinned, subpage, pin_subpage) for pinned in (False, True)]
            same = all(cases[0][key] == cases[1][key] for key in ("status", "node", "thp", "events", "leaked"))
            for c in cases[:1] if same else cases:
                ev = ", ".join(f"{k} +{v}" for k, v in c["events"].items()) or "-"
                what = f"{subpage} ({'head' if subpage == 0 else 'tail'})"
                pinned = "either" if same else "yes" if c["pinned"] else "no"
                lines.append(f"{level:>5}  {what:<9}  {pinned:<6}  "
                             f"{_status_text(c['status']):<8}  node {c['node']:<2}  "
                             f"{'compound' if c['thp'] else 'split':<9}  {c['leaked'] or '-':<6}  {ev}")
    return "\n".join(lines)


def move_pages_diagram(level, subpage=0, pin=None, seed=0):
    """Diagram: the THP before and after ``move_pages()`` of one subpage to node 1 (changes marked).

    A 2-node machine at ``level``; ``pin``: a subpage get_user_pages() pins
    first.  The heading gives the status and the references leaked; the text
    twin starts with the same line.
    """
    from ..diagrams import snapshot_thp, thp_mappings

    m = Machine.boot("16M", patches=level, seed=seed, nodes=2)
    pid, addr, head = m.map_thp()
    if pin is not None:
        m.get_user_pages(pid, addr + pin * PAGE_SIZE, 1)
    before = snapshot_thp(m, head)
    status = m.move_pages(pid, [addr + subpage * PAGE_SIZE], 1)[0]
    leaked = int(m.leaked[head:head + HPAGE_PMD_NR].sum())
    title = (f"Level {level}: move_pages(subpage {subpage} -> node 1) = {_status_text(status)}"
             + (f", pin on subpage {pin}" if pin is not None else "")
             + (f"; {leaked} leaked reference in the head's _count" if leaked else "; nothing leaked"))
    return _titled(thp_mappings(m, head, previous=before, title=title), title)


def move_page(i, node=1):
    """Scenario step: ``move_pages()`` of subpage ``i`` to ``node``; returns the status as text."""
    def move(run):
        return _status_text(run.machine.move_pages(run.pid, [run.addr + i * PAGE_SIZE], node)[0])
    move.__doc__ = f"move_pages() subpage {i} to node {node}"
    return move


def _watched_scenario_types():
    """A :class:`~thplab.scenarios.Scenario` whose counter rows are its own ``watch`` subpages."""
    from ..scenarios import WATCH, Scenario, ScenarioRun

    @dataclass
    class WatchedRun(ScenarioRun):
        def subpages(self, watch=None):
            return super().subpages(self.scenario.watch if watch is None else watch)

        def counters(self, watch=None):
            return super().counters(self.scenario.watch if watch is None else watch)

        def table(self, watch=None):
            return super().table(self.scenario.watch if watch is None else watch)

    @dataclass
    class WatchedScenario(Scenario):
        watch: tuple = WATCH

        def start(self, level, seed=0):
            return WatchedRun(self, Machine.boot(self.mem, patches=level, seed=seed, nodes=self.nodes))

    return WatchedScenario


def _move_pages_scenario():
    from ..scenarios import fault_thp, pin_subpage, unpin_all

    return _watched_scenario_types()(
        "move-pages", "Migrate a THP subpage",
        "move_pages() sends subpage 7 (a tail) and then subpage 0 (the head) of a THP to NUMA node 1 "
        "while get_user_pages() pins subpage 5, then subpage 9 after the pin is dropped.",
        [("fault a THP (node 0)", fault_thp), ("pin subpage 5 (get_user_pages)", pin_subpage(5, fast=False)),
         ("move_pages(subpage 7 -> node 1)", move_page(7)), ("move_pages(subpage 0 -> node 1)", move_page(0)),
         ("put_page() the pin", unpin_all), ("move_pages(subpage 9 -> node 1)", move_page(9))],
        nodes=2, watch=MOVE_WATCH)


#: A two-node scenario for lesson 03 (``widgets.ScenarioExplorer(MOVE_PAGES, levels=...)``); its
#: counter table shows the subpages it moves and pins (:data:`MOVE_WATCH`).
MOVE_PAGES = _move_pages_scenario()


def _head_split_fails(level, pinned):
    return 4 <= level < 6 or (level >= 6 and pinned)


class MovePagesQuestion(_DiagnosedQuestion):
    """What status does ``move_pages()`` report for a THP subpage at a (seeded) level, pinned or not?"""

    @classmethod
    def generate(cls, seed=0):
        rng = np.random.default_rng(seed)
        level = int(rng.choice((0, 1, 3, 4, 5, 6, 10)))
        pinned = bool(rng.integers(0, 2))
        subpage = int(rng.choice((0, 7)))
        c = move_pages_case(level, pinned, subpage)
        if level == 0:
            why = ("At level 0 follow_page(FOLL_SPLIT) splits the whole THP first (the old split never fails), "
                   f"so subpage {subpage}, a 4 KiB page now, moves to node 1.")
        elif subpage:
            why = ("Patch 01 as posted splits only when PageTransHuge() is true, i.e. on the head. Subpage 7 is "
                   "a tail: nothing is split, isolate_lru_page() fails on a tail, status -EBUSY -- at every level "
                   "from 1 on.")
        elif level < 4:
            why = "Subpage 0 is the head: the old split (never fails) runs first, then the 4 KiB page moves."
        elif level < 6:
            why = ("Subpage 0 is the head, but between patches 04 and 06 split_huge_page() is a stub that always "
                   "returns -EBUSY -- and the posted code forgets to drop its follow_page() reference.")
        elif pinned:
            why = ("From patch 06 a pinned THP cannot be split (the pin on subpage 5 is a reference the mappings "
                   "do not explain): -EBUSY, and the follow_page() reference leaks.")
        else:
            why = "From patch 06 an unpinned THP splits, and subpage 0 moves to node 1."
        diagnoses = {}
        if c["status"] == -16 and subpage:
            diagnoses[1] = ("That is level 0's answer: FOLL_SPLIT is gone, and the posted hunk only splits "
                            "what PageTransHuge() calls a THP -- the head.")
        elif c["status"] == -16:
            diagnoses[1] = ("The head does reach split_huge_page() here, but the split fails "
                            + ("(the stub of patches 04-05)." if level < 6 else "(the pin)."))
        elif level and not subpage:
            diagnoses[-16] = ("-EBUSY is a tail's answer; the head is split first"
                              + (" -- and without a pin the new split succeeds." if level >= 6 else "."))
        else:
            diagnoses[-16] = "Level 0 still has FOLL_SPLIT: follow_page() splits the THP before migration."
        return cls(seed, [f"level {level}", "machine: 2 NUMA nodes, the THP on node 0",
                          f"get_user_pages() pin on subpage 5: {'yes' if pinned else 'no'}"],
                   f"move_pages() asks to move subpage {subpage} to node 1. What status does it report for it?\n"
                   "(the node number on success, or -16 for -EBUSY)", c["status"], why, diagnoses)


class LeakQuestion(_DiagnosedQuestion):
    """One ``move_pages()`` call with several subpages of a THP: how many references leak?

    Seeded: the level, a pin on subpage 5 or not, and the list of subpages
    (the head may appear more than once).  The answer is ``machine.leaked``
    after the call, summed.
    """

    @classmethod
    def generate(cls, seed=0):
        rng = np.random.default_rng(seed)
        level = int(rng.choice((1, 4, 5, 10)))
        pinned = bool(rng.integers(0, 2))
        subpages = [int(s) for s in rng.choice((0, 0, 3, 7, 9, 200), size=int(rng.integers(2, 5)))]
        if 0 not in subpages:
            subpages[int(rng.integers(0, len(subpages)))] = 0
        m = Machine.boot("16M", patches=level, seed=seed, nodes=2)
        pid, addr, _ = m.map_thp()
        if pinned:
            m.get_user_pages(pid, addr + 5 * PAGE_SIZE, 1)
        status = m.move_pages(pid, [addr + s * PAGE_SIZE for s in subpages], 1)
        answer = int(m.leaked.sum())
        heads = subpages.count(0)
        if _head_split_fails(level, pinned):
            why = (f"Only the head reaches split_huge_page(); here it fails every time "
                   f"({'the stub of patches 04-05' if level < 6 else 'the pin on subpage 5'}), so each of the "
                   f"{heads} head address(es) leaks follow_page()'s reference -- the earlier leak only makes the "
                   "next split fail too. Tails get -EBUSY from isolate_lru_page() and their reference is dropped.")
        else:
            why = ("The head's split succeeds here, so put_page() runs and nothing leaks; after it the THP is "
                   "512 small pages and the later addresses are ordinary 4 KiB pages.")
        why += " Statuses: " + ", ".join(f"{s}: {_status_text(v)}" for s, v in zip(subpages, status)) + "."
        diagnoses = {len(subpages): "You counted every address; a tail never reaches the split, and its "
                                    "reference is dropped."} if len(subpages) != answer else {}
        if answer == 0 and heads:
            diagnoses.setdefault(heads, "The leak needs a failed split; here the split succeeds.")
        elif answer:
            diagnoses.setdefault(0, "A failed split of the head jumps past put_page(): every such attempt "
                                    "leaks one reference.")
            diagnoses.setdefault(1, "Each attempt takes a new follow_page() reference; a head listed twice "
                                    "fails (and leaks) twice.")
        diagnoses.pop(answer, None)
        return cls(seed, [f"level {level}", "machine: 2 NUMA nodes, a THP on node 0",
                          f"get_user_pages() pin on subpage 5: {'yes' if pinned else 'no'}",
                          f"one call: move_pages(pid, subpages {subpages}, node 1)"],
                   "How many page references has the kernel leaked after the call (m.leaked.sum())?",
                   answer, why, diagnoses)


def foll_split_demo(level, seed=0):
    """``get_user_pages(..., foll_split=True)`` on subpage 1 of a THP: what happens, as text."""
    from ..errors import KernelFunctionRemoved

    m = Machine.boot("16M", patches=level, seed=seed)
    pid, addr, _ = m.map_thp()
    try:
        pages = m.get_user_pages(pid, addr + PAGE_SIZE, 1, foll_split=True)
    except KernelFunctionRemoved as exc:
        return f"level {level}: {type(exc).__name__}:\n  {exc}"
    split = "the THP was split" if not len(m.thp_heads()) else "the THP is still whole"
    return (f"level {level}: pinned pfn {int(pages[0]):#x}; {split} "
            f"(thp_split {m.vmstat['thp_split']}); page_count {int(m.page_count(pages[0]))}")


# ===================================================================== 04: patch 02, PageAnon()

def runs(values, first=0):
    """Runs of equal values as text: ``"0: True; 1-511: False"``."""
    values = np.asarray(values)
    edges = np.flatnonzero(np.diff(values.astype(np.int64))) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(values)]]) - 1
    return "; ".join((f"{first + s}" if s == e else f"{first + s}-{first + e}") + f": {bool(values[s]) if values.dtype == bool else values[s]}"
                     for s, e in zip(starts.tolist(), ends.tolist()))


def mapping_table(machine, pfns, labels):
    """What ``PageAnon()`` reads, per page: compound flags, ``first_page`` and ``mapping`` (decoded)."""
    mm = machine.mem_map
    lines = [f"{'':<8} {'pfn':>7}  {'head/tail':<9}  {'first_page':>10}  mapping"]
    for label, p in zip(labels, (int(x) for x in pfns)):
        kind = "tail" if PageTail(mm, p) else "head" if PageHead(mm, p) else "-"
        first = f"{int(mm['first_page'][p]):#x}" if PageTail(mm, p) else "-"
        lines.append(f"{label:<8} {p:>#7x}  {kind:<9}  {first:>10}  {mapping_text(mm['mapping'][p])}")
    return "\n".join(lines)


def page_anon_runs(machine, head):
    """``PageAnon()`` of this level over the 512 subpages of the THP at ``head``, as runs."""
    values = machine.kernel.PageAnon(np.arange(head, head + HPAGE_PMD_NR))
    return f"PageAnon() over subpages 0-511: {runs(values)}  ({int(values.sum())} of 512 true)"


def without_patch(machine, name, number):
    """Run ``machine`` with kernel function ``name`` as it was *before* patch ``number``.

    A counterfactual for lessons ("what if patch 04 had come without patch
    02?"); no real kernel was ever built this way.  Returns the machine.
    """
    from ..series import PATCHES

    k = machine.kernel
    if number > k.level:
        raise ValueError(f"patch {number:02d} is not applied at level {k.level}")
    setattr(k, name, k.previous(name, PATCHES[number - 1]))
    return machine


def pte_mapped_thp(level=4, old_pageanon=False, seed=0):
    """A THP whose PMD ``split_huge_pmd()`` turned into 512 PTEs: ``(machine, pid, addr, head, before)``.

    From level 4 the THP stays compound (before, the whole page is split).
    ``old_pageanon``: ``PageAnon()`` as before patch 02 (:func:`without_patch`).
    ``before`` is a :func:`~thplab.diagrams.snapshot_thp` taken before the split.
    """
    from ..diagrams import snapshot_thp

    m = Machine.boot("16M", patches=level, seed=seed)
    if old_pageanon:
        without_patch(m, "PageAnon", 2)
    pid, addr, head = m.map_thp()
    before = snapshot_thp(m, head)
    m.split_huge_pmd(pid, addr)
    return m, pid, addr, head, before


def pte_mapped_diagram(level=4):
    """Diagram: the THP after ``split_huge_pmd()`` at ``level``, titled with PageAnon() with/without patch 02."""
    from ..diagrams import thp_mappings

    counts = []
    for old in (False, True):
        m, pid, addr, head, before = pte_mapped_thp(level, old_pageanon=old)
        counts.append(int(m.kernel.PageAnon(np.arange(head, head + HPAGE_PMD_NR)).sum()))
    title = (f"Level {level}, after split_huge_pmd(): PageAnon() true for {counts[0]} of 512 subpages "
             f"with patch 02, {counts[1]} without")
    m, pid, addr, head, before = pte_mapped_thp(level)
    return _titled(thp_mappings(m, head, previous=before, title=title), title)


def page_anon_chart(level=4, lo=0, hi=12):
    """Chart: ``PageAnon()`` per subpage ``lo..hi-1`` of a PTE-mapped THP, with and without patch 02.

    Each kernel is a row of cells: filled (and marked "anon") where
    PageAnon() is true, hatched ("not anon") where it is false.  The rest of
    the 512 subpages repeat the last cell; the text twin gives all 512 as runs.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..diagrams import figure_diagram

    rows = []
    for old in (False, True):
        m, pid, addr, head, _ = pte_mapped_thp(level, old_pageanon=old)
        values = np.asarray(m.kernel.PageAnon(np.arange(head, head + HPAGE_PMD_NR)))
        name = "v3.16's PageAnon() (own mapping)" if old else "patch 02's PageAnon() (asks the head)"
        rows.append((name, values))
    fig, ax = plt.subplots(figsize=(10, 2.6), facecolor="white")
    for r, (name, values) in enumerate(rows):
        y = 1 - r
        for i in range(lo, hi):
            anon = bool(values[i])
            ax.add_patch(Rectangle((i, y), 0.92, 0.7, facecolor="#0072B2" if anon else "white",
                                   edgecolor="black", hatch=None if anon else "///", linewidth=0.8))
            ax.text(i + 0.46, y + 0.35, "anon" if anon else "no", ha="center", va="center", fontsize=9,
                    color="white" if anon else "black", weight="bold",
                    bbox=None if anon else {"facecolor": "white", "edgecolor": "none", "pad": 1})
        ax.text(lo - 0.3, y + 0.35, name, ha="right", va="center", fontsize=10)
        ax.text(hi + 0.2, y + 0.35, f"… {int(values.sum())} of 512 anon", ha="left", va="center", fontsize=10)
    ax.set_xlim(lo - 7.5, hi + 3.5)
    ax.set_ylim(-0.2, 2)
    ax.set_xticks([i + 0.46 for i in range(lo, hi)], [str(i) for i in range(lo, hi)], fontsize=9)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("subpage of the THP (0 = head); every subpage is mapped by its own PTE", fontsize=10)
    ax.set_title(f"Level {level}, PTE-mapped THP: which subpages does PageAnon() call anonymous?", fontsize=11)
    fig.tight_layout()
    text = "\n".join([f"PageAnon() over the 512 subpages of a PTE-mapped THP at level {level}:"]
                     + [f"  {name}: {runs(values)} ({int(values.sum())} of 512)" for name, values in rows])
    return figure_diagram(fig, f"PageAnon() per subpage at level {level}, with and without patch 02", text)


def rmap_walk_choice(machine, pfns, labels=None, name=None):
    """Which walk v3.16's ``rmap_walk()`` would start for each page, by this kernel's ``PageAnon()``.

    ``rmap_walk()`` (and ``page_referenced()``, ``try_to_unmap()``) asks
    ``PageAnon()`` first: an anonymous page is looked up through the
    anon_vma its head's ``mapping`` points to, whose VMAs are then searched;
    anything else through ``page->mapping`` as a file's ``address_space`` --
    NULL on a tail, so that walk has nothing to search.  thplab has no
    rmap_walk() of its own: this view reads the model (``PageAnon()``,
    ``mapping``, the anon_vma's VMAs).  ``name`` labels the kernel.
    """
    k = machine.kernel
    pfns = [int(p) for p in pfns]
    labels = labels or [f"pfn {p:#x}" for p in pfns]
    anon = np.asarray(k.PageAnon(np.array(pfns)))
    lines = [f"{name or f'level {k.level}'}:",
             f"  {'page':<11} {'PageAnon()':<11} {'rmap walk':<18} {'finds':<8} what it searches"]
    for label, p, a in zip(labels, pfns, anon):
        if a:
            av = machine.anon_vma_of(p)
            found = _mappings_found(machine, p)
            vmas = ", ".join(f"pid {v.mm.pid} {v.vm_start:#x}-{v.vm_end:#x}" for v in av.vmas)
            lines.append(f"  {label:<11} {'true':<11} {f'anon (anon_vma {av.id})':<18} "
                         f"{f'{found} map' + ('s' if found != 1 else ''):<8} VMAs: {vmas}")
        else:
            mapping = int(machine.mem_map["mapping"][p])
            lines.append(f"  {label:<11} {'false':<11} {'file':<18} {'0 maps':<8} address_space "
                         f"{'NULL: nothing to search' if mapping == 0 else hex(mapping)}")
    return "\n".join(lines)


def _mappings_found(machine, page):
    """How many mappings of ``page`` an rmap walk finds: its address in each VMA, that page table read there."""
    from ..memory import rmap_walk_vmas

    return sum(int(machine.walk(vma.mm.pid, [address])["pfn"][0] == page)
               for vma, address in rmap_walk_vmas(machine.kernel, page))


def _rss_experiment(level, broken, first=8, nr=4, cow=5, seed=0):
    from ..invariants import problems

    m = Machine.boot("16M", patches=level, seed=seed)
    if broken:
        without_patch(m, "PageAnon", 2)
    pid, addr, _ = m.map_thp()
    mm = m.processes[pid]
    out = {}
    # mprotect() of a sub-range splits the PMD; back to rw leaves the PTEs write-protected
    m.mprotect(pid, addr, 16 * PAGE_SIZE, "r")
    m.mprotect(pid, addr, 16 * PAGE_SIZE, "rw")
    free = m.allocator.nr_free_pages
    m.touch(pid, addr + cow * PAGE_SIZE, PAGE_SIZE)
    out["copied"] = free - m.allocator.nr_free_pages
    m.munmap(pid, addr + first * PAGE_SIZE, nr * PAGE_SIZE)
    out.update(anon=mm.anon_rss, file=mm.file_rss, problems=problems(m))
    return out


def pageanon_counterfactual(level=4, first=8, nr=4, cow=5):
    """Patch 04's PTE-mapped tails with and without patch 02's ``PageAnon()``, as text.

    One process faults a THP; ``mprotect()`` of 16 subpages splits its PMD;
    it writes subpage ``cow`` (a write-protect fault: ``do_wp_page()``), then
    unmaps subpages ``first``..``first+nr-1`` (``zap_pte_range()``).
    """
    lines = [f"level {level}: fault a THP, mprotect subpages 0-15 r then rw (splits the PMD),",
             f"{'':<{len(str(level)) + 7}}write subpage {cow}, munmap subpages {first}-{first + nr - 1}",
             f"{'PageAnon()':<22}  {'copied':>6}  {'MM_ANONPAGES':>12}  {'MM_FILEPAGES':>12}  invariants"]
    notes = []
    for broken in (False, True):
        r = _rss_experiment(level, broken, first, nr, cow)
        name = "v3.16 (own mapping)" if broken else "patch 02 (asks head)"
        lines.append(f"{name:<22}  {r['copied']:>6}  {r['anon']:>12}  {r['file']:>12}  "
                     + ("ok" if not r["problems"] else "violated:"))
        notes += [f"  {name}: {problem}" for problem in r["problems"]]
    return "\n".join(lines + notes)


class PageAnonQuestion(_DiagnosedQuestion):
    """Of a (seeded) list of pages, how many does ``PageAnon()`` call anonymous at a (seeded) level?

    The pages: subpages of a THP (head and tails, PMD- or, from level 4,
    PTE-mapped) and ordinary 4 KiB anonymous pages of the same process.  The
    answer is this level's ``PageAnon()`` over them, summed.
    """

    @classmethod
    def generate(cls, seed=0):
        rng = np.random.default_rng(seed)
        level = int(rng.choice((1, 2, 3, 4)))
        m = Machine.boot("16M", patches=level, seed=seed)
        pid, addr, head = m.map_thp()
        split = level >= 4 and bool(rng.integers(0, 2))
        if split:
            m.split_huge_pmd(pid, addr)
        small = m.mmap(pid, 8 * PAGE_SIZE, thp=False)
        m.touch(pid, small, 8 * PAGE_SIZE)
        nr_thp = int(rng.integers(2, 6))
        subpages = sorted(set(rng.choice(HPAGE_PMD_NR, size=nr_thp, replace=False).tolist())
                          | ({0} if rng.integers(0, 2) else set()))
        nr_small = int(rng.integers(0, 3))
        smalls = [int(m.walk(pid, [small + i * PAGE_SIZE])["pfn"][0]) for i in range(nr_small)]
        pfns = [head + s for s in subpages] + smalls
        answer = int(np.asarray(m.kernel.PageAnon(np.array(pfns))).sum())
        not_tails = (0 in subpages) + nr_small
        if level < 2:
            why = (f"Before patch 02 PageAnon() reads each page's own mapping: the head and the 4 KiB pages "
                   f"have their anon_vma there, a tail has NULL. {not_tails} of {len(pfns)}.")
        else:
            why = (f"From patch 02 PageAnon() reads compound_head(page)->mapping; a 4 KiB page is its own "
                   f"head. All {len(pfns)}"
                   + (" -- whether the THP is mapped by its PMD or, as here, by PTEs." if split else "."))
        wrong = not_tails if level >= 2 else len(pfns)
        diagnoses = {} if wrong == answer else {wrong: (
            "That counts only the pages that carry their own mapping: patch 02 makes a tail ask its head."
            if level >= 2 else "Tails are not anonymous yet: their own mapping is NULL until patch 02 asks "
                               "the head.")}
        listed = ", ".join(f"subpage {s}" for s in subpages) + (
            f", {nr_small} ordinary 4 KiB page{'s' if nr_small > 1 else ''}" if nr_small else "")
        how = "mapped by 512 PTEs after split_huge_pmd()" if split else "mapped by its PMD"
        return cls(seed, [f"level {level}", f"steps: fault a THP ({how}), write 8 ordinary 4 KiB pages",
                          f"pages asked: {listed}"],
                   f"For how many of these {len(pfns)} pages does PageAnon() return true?", answer, why,
                   diagnoses)


class FileRssQuestion(_DiagnosedQuestion):
    """Without patch 02, zap_pte_range() counts unmapped tails as file pages: predict MM_FILEPAGES.

    Seeded: which subpages are unmapped from a PTE-mapped THP (level 4, with
    ``PageAnon()`` as before patch 02).  Subpage 0 is the head, which the old
    ``PageAnon()`` still recognises.
    """

    @classmethod
    def generate(cls, seed=0):
        rng = np.random.default_rng(seed)
        first = int(rng.integers(0, 24))
        nr = int(rng.integers(1, 9))
        m = Machine.boot("16M", patches=4, seed=seed)
        without_patch(m, "PageAnon", 2)
        pid, addr, _ = m.map_thp()
        m.split_huge_pmd(pid, addr)
        m.munmap(pid, addr + first * PAGE_SIZE, nr * PAGE_SIZE)
        answer = int(m.processes[pid].file_rss)
        tails = nr - (1 if first == 0 else 0)
        why = (f"zap_pte_range() asks PageAnon() of each page it unmaps; v3.16's PageAnon() is false "
               f"for every tail (a tail's own mapping is NULL), so each of the {tails} tail(s) is "
               f"subtracted from MM_FILEPAGES: 0 - {tails} = {-tails}."
               + (" The head (subpage 0) has its own mapping, so it is counted as anonymous."
                  if first == 0 else ""))
        pages = f"subpage {first}" if nr == 1 else f"subpages {first}-{first + nr - 1}"
        diagnoses = {0: "0 is what patch 02's PageAnon() gives; this kernel runs the old one.",
                     -nr: "The head (subpage 0) carries its own mapping: even the old PageAnon() calls it "
                          "anonymous.",
                     tails: "zap_pte_range() subtracts: an unmapped page lowers the counter."}
        diagnoses.pop(answer, None)
        return cls(seed, ["level 4 with PageAnon() as before patch 02 (a counterfactual)",
                          f"steps: fault a THP, split_huge_pmd(), munmap {pages}"],
                   "What is MM_FILEPAGES of the process now? (it started at 0)", answer, why, diagnoses)


# ===================================================================== 05: patch 03, the rename

def _state_differences(a, b, levels):
    """What differs between two scenario states ``(counters, mappings, events, result)``, in words."""
    out = []
    (ca, ma, ea, ra), (cb, mb, eb, rb) = a, b
    for pid in sorted(set(ma) | set(mb)):
        if ma.get(pid) != mb.get(pid):
            out.append(f"pid {pid}: {ma.get(pid, 'not mapped')} (level {levels[0]}) vs "
                       f"{mb.get(pid, 'not mapped')} (level {levels[1]})")
    for x, y in zip(ca, cb):
        fields = [f"{key} {x[key]} vs {y[key]}" for key in ("kind", "page_mapcount", "page_count")
                  if x[key] != y[key]]
        if fields:
            out.append(f"subpage {x['subpage']} " + ", ".join(fields))
            break
    if ea != eb:
        out.append("events " + " vs ".join(", ".join(f"{k} +{v}" for k, v in e.items()) or "none"
                                           for e in (ea, eb)))
    if ra != rb:
        out.append(f"result {ra} vs {rb}")
    return out


def compare_levels(scenario, levels=(2, 3), seed=0, detail=True):
    """Run one scenario at each level; say, step by step, whether the counters are identical.

    Compares the watched counters, the mappings and the thp_* events after
    every step; a step that differs lists what differs (``level a vs level
    b``; with ``detail``).  Returns text: one line per step and a verdict.
    """
    from ..scenarios import SCENARIOS

    sc = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    runs_ = [sc.start(lv, seed=seed) for lv in levels]
    lines = [f"{sc.title}: levels {' vs '.join(map(str, levels))}"]
    same_all = True
    for i, label in enumerate(runs_[0].labels, 1):
        states = []
        for r in runs_:
            r.step()
            states.append((r.counters(), r.mappings(), r.results[-1][2], _plain(r.results[-1][1])))
        same = all(s == states[0] for s in states[1:])
        same_all &= same
        lines.append(f"  {i}. {label:<40} {'identical' if same else 'DIFFERENT'}")
        if not same and detail:
            for j, other in enumerate(states[1:], 1):
                lines += [f"       {d}" for d in _state_differences(states[0], other, (levels[0], levels[j]))]
    lines.append("verdict: " + ("same behaviour" if same_all else "behaviour differs"))
    return "\n".join(lines)


def _plain(result):
    return result.tolist() if isinstance(result, np.ndarray) else result


def _body_dump(fn):
    """The function's statements without its docstring, as an AST dump (names and order kept)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    return [ast.dump(node) for node in body]


def rename_report():
    """Patch 03 in the model: the old and new signatures, and whether the bodies are the same code.

    Compares ``split_huge_page_pmd()`` of level 0 with ``split_huge_pmd()`` as
    patch 03 defines it (docstrings ignored).
    """
    import inspect

    from ..series import BASE, P03

    old, new = BASE.functions["split_huge_page_pmd"], P03.functions["split_huge_pmd"]
    sig = lambda fn, name: f"{name}{inspect.signature(fn)}".replace("(k, ", "(")
    same = _body_dump(old) == _body_dump(new)
    return "\n".join([f"level 0-2: {sig(old, 'split_huge_page_pmd')}",
                      f"level 3:   {sig(new, 'split_huge_pmd')}",
                      f"same body: {'yes' if same else 'no'}"])


def rename_diff():
    """Unified diff of the two definitions compared by :func:`rename_report`, from the model's sources."""
    import difflib
    import inspect

    from ..series import BASE, P03

    a = inspect.getsource(BASE.functions["split_huge_page_pmd"]).splitlines()
    b = inspect.getsource(P03.functions["split_huge_pmd"]).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "split_huge_page_pmd (level 0)", "split_huge_pmd (level 3)",
                                          lineterm=""))


def huge_pmd_of(machine, pid, addr):
    """``(vma, pmd)``: the VMA holding ``addr`` and its PMD slot, what a call site hands to the split.

    ``pmd`` is thplab's handle of a page-table entry, ``(table pfn, index)``.
    """
    from .. import memory as mem

    mm = machine.processes[pid]
    return mm.find_vma(addr), mem.pmd_offset(machine.kernel, mm, addr)


def rename_split_diagram(level=3):
    """Diagram: fork a THP, then split the child's PMD the way ``level``'s call sites do (changes marked).

    The text twin ends with whether level 2 and level 3 give the same
    picture (the twins compared with the level number left out).
    """
    from ..diagrams import describe_thp_mappings, snapshot_thp, thp_mappings

    def run(lv):
        m = Machine.boot("16M", patches=lv)
        pid, addr, head = m.map_thp()
        child = m.fork(pid)
        before = snapshot_thp(m, head)
        vma, pmd = huge_pmd_of(m, child, addr)
        (m.kernel.split_huge_pmd(vma, pmd, addr) if m.kernel.has("split_huge_pmd")
         else m.kernel.split_huge_page_pmd(vma, addr, pmd))
        return m, head, before

    m, head, before = run(level)
    name = "split_huge_pmd(vma, pmd, address)" if m.kernel.has("split_huge_pmd") else \
        "split_huge_page_pmd(vma, address, pmd)"
    twins = {}
    for lv in (2, 3):
        mm_, h, b = run(lv)
        twins[lv] = describe_thp_mappings(mm_, h, b).replace(f"at level {lv}:", "at level N:")
    same = "the same" if twins[2] == twins[3] else "NOT the same"
    title = f"Level {level}: fork, then {name} on the child's PMD"
    return _titled(thp_mappings(m, head, previous=before, title=title),
                   f"{title}\n(levels 2 and 3 draw {same} picture)")
