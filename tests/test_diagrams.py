"""SVG diagrams drawn from known model states: the labels, arrows and values they must show."""

import re
import xml.etree.ElementTree as ET

import pytest

from thplab import Machine, diagrams as D
from thplab.lessons import foundations as fnd
from thplab.params import PAGE_SIZE

NS = {"s": "http://www.w3.org/2000/svg"}
_ID_RE = re.compile(D._base._ID)


def parse(diagram):
    root = ET.fromstring(diagram.svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def texts(root):
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def by_attr(root, name, value=None):
    return [e for e in root.iter() if name in e.attrib and (value is None or e.attrib[name] == str(value))]


def check_conventions(diagram):
    """White background, title + desc, explicit size + viewBox, text >= 11 px, ids unique to the drawing."""
    if diagram.drawing is not None:  # thplab's one-pass writer gives exactly drawsvg's document
        assert diagram.svg == _ID_RE.sub(diagram.id, diagram.drawing.as_svg(header=""))
    root = parse(diagram)
    w, h = float(root.attrib["width"]), float(root.attrib["height"])
    assert root.attrib["viewBox"] == f"0 0 {root.attrib['width']} {root.attrib['height']}"
    assert w > 100 and h > 100
    title = root.find("s:title", NS)
    desc = root.find("s:desc", NS)
    assert title is not None and title.text and desc is not None and desc.text == diagram.text
    bg = [e for e in root if e.tag.endswith("rect")][0]
    assert bg.attrib["fill"] == "white" and float(bg.attrib["width"]) == w and float(bg.attrib["height"]) == h
    sizes = [float(e.attrib["font-size"]) for e in root.iter() if "font-size" in e.attrib]
    assert sizes and min(sizes) >= 11, min(sizes)
    ids = [e.attrib["id"] for e in root.iter() if "id" in e.attrib]
    assert len(ids) == len(set(ids))
    prefix = {i.split("-")[0] for i in ids}
    assert len(prefix) == 1 and prefix.pop().startswith("thp")
    for url in re.findall(r"url\(#([^)]+)\)", diagram.svg):
        assert url in ids, url
    bundle = diagram._repr_mimebundle_()
    assert bundle["image/svg+xml"] == diagram.svg and bundle["text/plain"] == diagram.text
    return root


# --------------------------------------------------------------------------- 1. page-table walk
@pytest.fixture(scope="module")
def primer():
    return fnd.primer_machine()


def test_walk_of_a_huge_pmd(primer):
    m, pid, thp, small = primer
    d = D.page_table_walk(m, pid, fnd.WORKED_EXAMPLE)
    root = check_conventions(d)
    t = texts(root)
    fields = {e.attrib["data-field"]: "".join(e.itertext()) for e in by_attr(root, "data-field")
              if e.tag.endswith("text")}
    assert fields == {"PGD": "254 = 0xfe", "PUD": "0 = 0x0", "PMD": "1 = 0x1", "offset": "23228 = 0x5abc"}
    assert "bits 20..0" in t and "bits 47..39" in t and "bits 20..12" not in t  # no PTE index under a huge PMD
    tables = [e.attrib["data-level"] for e in by_attr(root, "class", "table")]
    assert tables == ["PGD", "PUD", "PMD"]
    entries = {e.attrib["data-level"]: (e.attrib["data-index"], e.attrib["data-entry"])
               for e in by_attr(root, "class", "entry")}
    assert entries["PGD"] == ("254", "0x1067") and entries["PMD"][0] == "1"
    assert "0x80000000002000e7" in t and any("PSE" in s for s in t) and "PSE set: a 2 MiB leaf" in t
    arrows = [e.attrib["data-arrow"] for e in by_attr(root, "data-arrow")]
    assert arrows.count("index") == 3 and arrows.count("next-table") == 2 and arrows.count("leaf") == 1
    assert "= subpage 5" in t and "pfn 0x205" in t
    assert "PMD bits 29..21 = 1 (0x1)" in d.text and "subpage 5, pfn 0x205" in d.text


def test_walk_of_a_pte_and_side_by_side(primer):
    m, pid, thp, small = primer
    d = D.page_table_walk(m, pid, small + 0x123)
    root = check_conventions(d)
    assert [e.attrib["data-level"] for e in by_attr(root, "class", "table")] == ["PGD", "PUD", "PMD", "PTE"]
    assert "bits 11..0" in texts(root) and "a 4 KiB leaf" in texts(root)
    assert [e.attrib["data-arrow"] for e in by_attr(root, "data-arrow")].count("index") == 4
    both = D.huge_vs_pte(m, pid, fnd.WORKED_EXAMPLE, small + 0x123)
    root = check_conventions(both)
    assert [e.attrib["data-level"] for e in by_attr(root, "class", "table")] == \
        ["PGD", "PUD", "PMD", "PGD", "PUD", "PMD", "PTE"]


def test_walk_that_stops_at_an_empty_entry():
    m = Machine.boot("8M")
    pid = m.spawn()
    addr = m.mmap(pid, 2 << 20)
    d = D.page_table_walk(m, pid, addr)
    root = check_conventions(d)
    assert "empty: the walk stops" in texts(root) and not by_attr(root, "class", "leaf")


def test_same_state_same_bytes_and_distinct_ids(primer):
    m, pid, thp, small = primer
    a = D.page_table_walk(m, pid, fnd.WORKED_EXAMPLE).svg
    assert a == D.page_table_walk(m, pid, fnd.WORKED_EXAMPLE).svg
    b = D.page_table_walk(m, pid, small).svg
    assert re.search(r'id="(thp\w+)-', a)[1] != re.search(r'id="(thp\w+)-', b)[1]


# --------------------------------------------------------------------------- 2. THP mappings
@pytest.fixture
def parent_pmd_child_ptes():
    """Level 4: one THP mapped by a PMD in the parent and by PTEs in the child; subpage 5 pinned."""
    m = Machine.boot("16M", patches=4)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    before = D.snapshot_thp(m, head)
    m.split_huge_pmd(child, addr)
    m.get_user_pages_fast(pid, addr + 5 * PAGE_SIZE)
    return m, pid, child, addr, head, before


def test_thp_mappings_pmd_in_parent_ptes_in_child(parent_pmd_child_ptes):
    m, pid, child, addr, head, before = parent_pmd_child_ptes
    d = D.thp_mappings(m, head)
    root = check_conventions(d)
    arrows = [e.attrib["data-arrow"] for e in by_attr(root, "data-arrow")]
    assert arrows.count("pmd") == 1 and arrows.count("pte") == 1
    procs = [e.attrib["data-pid"] for e in by_attr(root, "class", "process")]
    assert procs == [str(pid), str(child)]
    runs = {(int(e.attrib["data-first"]), int(e.attrib["data-last"])): e for e in by_attr(root, "class", "run")}
    assert list(runs) == [(0, 0), (1, 4), (5, 5), (6, 511)]
    head_run, pinned = runs[(0, 0)], runs[(5, 5)]
    # head: 1 (PMD) + 512 (PTEs) + 1 pin; _mapcount 1 = parent PMD + child PTE of subpage 0
    assert head_run.attrib["data-kind"] == "head" and head_run.attrib["data-count"] == "514"
    assert head_run.attrib["data-mapcount"] == "1" and head_run.attrib["data-page-mapcount"] == "2"
    assert pinned.attrib["data-pins"] == "1" and pinned.attrib["data-kind"] == "tail"
    assert pinned.find("s:title", NS).text.startswith("subpage 5 tail: _count 0  _mapcount 0  page_mapcount 1  pins 1")
    t = texts(root)
    assert any(s.startswith("subpage 5 tail:") and "pins 1" in s for s in t)
    assert any("machine.pins" in s and "not a struct page field" in s for s in t)
    assert len(by_attr(root, "class", "pin-marker")) == 1
    assert not by_attr(root, "class", "changed")  # no previous: nothing marked
    assert f"pid {pid}: one huge PMD" in d.text and f"pid {child}: 512 PTEs in 1 run(s)" in d.text
    # Why tails read page_mapcount 1 though two processes map them: said in the picture and its twin.
    note = "RFC v1: a PMD map is counted in the head's _mapcount only; a tail's page_mapcount counts its PTEs"
    assert note in t and note in d.text


def test_thp_mappings_says_why_tails_miss_the_pmd_only_where_both_kinds_map():
    m = Machine.boot("16M", patches=4)
    pid, addr, head = m.map_thp()
    assert "counted in the head's _mapcount only" not in D.thp_mappings(m, head).text  # PMD only
    old = Machine.boot("16M", patches=0)
    pid, addr, head = old.map_thp()
    old.fork(pid)
    assert "RFC v1" not in D.thp_mappings(old, head).text


def test_thp_mappings_marks_what_changed_not_by_colour_alone(parent_pmd_child_ptes):
    m, pid, child, addr, head, before = parent_pmd_child_ptes
    root = check_conventions(D.thp_mappings(m, head, previous=before))
    changed = by_attr(root, "class", "changed")
    assert changed and all(e.attrib.get("stroke-dasharray") for e in changed)
    assert {e.attrib.get("data-pid") for e in changed if "data-pid" in e.attrib} == {str(child)}
    t = texts(root)
    assert any(s.startswith("▲ subpage 0 head: _count 514 (was 2)") for s in t)
    assert f"pid {child}   ▲ changed" in t
    same = D.thp_mappings(m, head, previous=D.snapshot_thp(m, head))
    assert not by_attr(parse(same), "class", "changed")


def test_thp_mappings_ptes_in_runs_and_cow_copies():
    m = Machine.boot("16M", patches=10)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    m.split_huge_pmd(child, addr)
    m.split_huge_pmd(pid, addr)  # both PTE-mapped: subpage 20's page_mapcount is 2, so a write copies
    m.munmap(child, addr + 8 * PAGE_SIZE, 4 * PAGE_SIZE)
    m.touch(child, addr + 20 * PAGE_SIZE, PAGE_SIZE)  # COW: the child gets its own copy of subpage 20
    maps = D.process_maps(m, head)
    assert [(s, n) for _, s, n, _ in maps[child]["ptes"]] == [(0, 8), (12, 8), (21, 491)]
    assert maps[child]["other_ptes"] == 1 and not maps[pid]["pmd"] and len(maps[pid]["ptes"]) == 1
    root = check_conventions(D.thp_mappings(m, head))
    arrows = [e.attrib["data-arrow"] for e in by_attr(root, "data-arrow")]
    assert arrows.count("pte") == 4 and arrows.count("pmd") == 0
    assert any("COW" in s for s in texts(root))


def test_thp_mappings_after_a_full_split_is_not_compound():
    m = Machine.boot("16M", patches=10)
    pid, addr, head = m.map_thp()
    m.fork(pid)
    assert m.split_huge_page(head) == 0
    d = D.thp_mappings(m, head)
    root = check_conventions(d)
    assert "not compound" in root.find("s:title", NS).text and "not compound" in d.text
    kinds = {e.attrib["data-kind"] for e in by_attr(root, "class", "run")}
    assert kinds == {"page"}
    assert [e.attrib["data-arrow"] for e in by_attr(root, "data-arrow")].count("pte") == 2


def test_thp_mappings_of_freed_frames():
    m = Machine.boot("16M", patches=10)
    pid, addr, head = m.map_thp()
    m.exit(pid)
    root = check_conventions(D.thp_mappings(m, head))
    assert {e.attrib["data-kind"] for e in by_attr(root, "class", "run")} == {"free"}


def test_runs_are_vectorized_and_exact():
    import numpy as np

    assert D.runs(np.array([1, 1, 2, 2, 2, 1])) == [(0, 2), (2, 5), (5, 6)]
    assert D.runs(np.array([[0, 1], [0, 1], [0, 2]])) == [(0, 2), (2, 3)]
    assert D.runs(np.array([])) == []


# --------------------------------------------------------------------------- the explorer
def test_scenario_explorer_shows_the_mappings_diagram_in_one_html_widget():
    import ipywidgets as w

    from thplab import widgets

    e = widgets.ScenarioExplorer("fork-split-pmd", levels=(3, 4), figure=True)
    assert isinstance(e.view, w.HTML) and e.plot.value == "" and "no THP yet" in e.view.value
    view = e.view
    e.step_button.click()
    assert e.view is view and e.plot.value.startswith("<div class=\"thplab-diagram\"")
    assert "changed" not in e.plot.value
    e.step_button.click()  # fork: the head's counters change
    assert "▲" in e.plot.value and e.diagram.html == e.plot.value
    for part in (e.status, e.table, e.plot, e.caption):  # the one widget shows every part, in this order
        assert part.value and part.value in e.view.value
    assert [e.view.value.index(p.value) for p in (e.status, e.table, e.plot, e.caption)] == sorted(
        e.view.value.index(p.value) for p in (e.status, e.table, e.plot, e.caption))
    e.step_button.click()  # the child's PMD is split (only the child's, at level 4)
    root = parse(e.diagram)
    assert [a.attrib["data-arrow"] for a in by_attr(root, "data-arrow")].count("pmd") == 1
    e.kernel.value = 3  # before patch 04: the whole THP is split
    assert "not compound" in e.diagram.title and e.view is view


def test_scenario_explorer_step_is_one_widget_message_and_marks_changes_on_both_kernels():
    from thplab import widgets
    from thplab.scenarios import SCENARIOS

    e = widgets.ScenarioExplorer("fork-pin-split", levels=(0, 10))
    sent = []
    for widget in (e.view, e.step_button, e.run_button, e.kernel):
        widget.observe(lambda change, widget=widget: sent.append(widget), names=["value", "disabled"])
    e.step_button.click()
    e.step_button.click()  # fork
    assert sent == [e.view, e.view]
    # the kernel not on show stepped too, and toggling to it marks what its last step changed
    ref = SCENARIOS["fork-pin-split"].start(0)
    ref.run_to(2)
    assert e.runs[0].table() == ref.table() and e.runs[10].done == 2
    e.kernel.value = 0
    assert "▲" in e.plot.value and f"pid {e.runs[0].child}   ▲ changed" in texts(parse(e.diagram))
    assert e.table.value == widgets._pre(ref.table())
    assert e.status.value == widgets._pre(ref.summary().rpartition("\nlevel ")[0])
    # the snapshot a drawing was made from is the next step's "previous"
    drawn = e.diagram.snapshot
    e.step_button.click()
    assert e.previous[0] is drawn


# --------------------------------------------------------------------------- 3. the old split
def test_split_swimlane_three_phases_two_processes_one_pin():
    m, pid, addr, head = fnd.old_split_machine(0, forks=1, pins=(5,))
    _, rec = fnd.record_old_split(m, head)
    d = D.split_swimlane(m, rec, head)
    root = check_conventions(d)
    phases = [e.attrib["data-phase"] for e in by_attr(root, "class", "phase")]
    assert phases == ["before", "phase 1", "phase 2", "phase 3", "after"]
    states = [(e.attrib["data-pid"], e.attrib["data-state"]) for e in by_attr(root, "class", "pmd-state")]
    assert states[:2] == [("1", "huge"), ("2", "huge")]
    assert states[2:4] == [("1", "splitting"), ("2", "splitting")]
    assert states[-2:] == [("1", "table"), ("2", "table")]
    # Each phase shows its end state: phase 3 ends after both pmd_populate() calls.
    assert states[-4:] == [("1", "table"), ("2", "table")] * 2 and ("2", "invalidated") not in states
    t = texts(root)
    assert "◆ subpage 5: _count 0, _mapcount 0 (= 1 pin(s) in a tail)" in t  # the pin sits in the tail
    assert any(s.startswith("subpage 5: _count 3") for s in t)  # after: 2 mappings + 1 pin
    assert "phase 1: mark every PMD _PAGE_SPLITTING" in d.text and "pid 2 splitting" in d.text
    assert "__split_huge_page_map: PTEs filled, pmdp_invalidate" in d.text  # the window, named in the points
    # each pid: huge -> splitting -> table
    assert len(by_attr(root, "data-arrow", "pmd-change")) == 2 + 2


# --------------------------------------------------------------------------- 6. the new split's test
def test_split_counters_pass_and_fail():
    from thplab.lessons.series_middle import split_trace

    _, rec, run = split_trace(6, pin=True)
    root = check_conventions(D.split_counters(rec, run.head))
    verdicts = {int(e.attrib["data-step"]): e.attrib["data-verdict"] for e in by_attr(root, "class", "verdict")}
    assert verdicts == {0: "n/a", 1: "fail", 2: "fail", 3: "n/a"}
    bars = {(int(e.attrib["data-step"]), e.attrib["data-series"]): int(e.attrib["data-value"])
            for e in by_attr(root, "class", "bar")}
    assert bars[(1, "count")] == 4 and bars[(1, "total")] == 2  # 2 PMDs + pin + caller: 4 - 1 != 2
    assert "✘ fail" in texts(root) and len(by_attr(root, "class", "kernel-checks")) == 1

    result, rec, run = split_trace(6, pin=False)
    assert result == 0
    d = D.split_counters(rec, run.head)
    root = check_conventions(d)
    verdicts = [e.attrib["data-verdict"] for e in by_attr(root, "class", "verdict")]
    assert verdicts[1] == "pass" and "fail" in verdicts and verdicts[-1] == "n/a"
    assert "compound_lock taken: head _count 1025, Σ page_mapcount 1024 -- PASS" in d.text
    assert len(by_attr(root, "class", "kernel-checks")) == 2


# --------------------------------------------------------------------------- 4. races
def test_race_swimlane_ipi_and_interrupts_off():
    from thplab.races import RACES

    race = RACES["split-vs-gup-fast"](0)
    race.play()
    d = D.race_swimlane(race)
    root = check_conventions(d)
    arrows = [e.attrib["data-arrow"] for e in by_attr(root, "data-arrow")]
    assert arrows.count("ipi-sent") == 1 and arrows.count("ipi-ack") == 1
    bands = by_attr(root, "class", "irqs-off")
    assert [(b.attrib["data-cpu"], b.attrib["data-first"], b.attrib["data-last"]) for b in sorted(bands, key=lambda b: int(b.attrib["data-first"]))] == [
        ("CPU1", "1", "8"),     # local_irq_disable() .. local_irq_enable() in gup-fast
        ("CPU0", "11", "12")]   # spin_lock_irq(&zone->lru_lock) in __split_huge_page_refcount
    points = by_attr(root, "class", "point")
    assert len(points) == len(race.interleaving.steps) + 1  # "start" is drawn in both lanes
    waiting = [p for p in points if p.attrib["data-waiting"] == "1"]
    assert len(waiting) == 1 and waiting[0].attrib["data-cpu"] == "CPU0"
    assert not by_attr(root, "class", "broken")
    assert {e.attrib["data-lock"] for e in by_attr(root, "class", "lock")} == {"compound_lock"}


def test_race_swimlane_what_if_marks_where_it_breaks():
    from thplab.races import RACES

    race = RACES["split-vs-gup-fast"](0, without=("tlb_flush_ipi",))
    race.play()
    d = D.race_swimlane(race)
    root = check_conventions(d)
    assert not [a for a in by_attr(root, "data-arrow") if a.attrib["data-arrow"].startswith("ipi")]
    broken = [p for p in by_attr(root, "class", "point") if p.attrib["stroke"] == D._base.VERMILION]
    # the step where CPU1 acts on the PMD value it read before the split: its tail pin
    at = next(i for i, s in enumerate(race.interleaving.steps) if s.name.startswith("gup_huge_pmd"))
    assert [p.attrib["data-step"] for p in broken] == [str(at)]
    assert "✘ the accounting breaks here" in texts(root)
    assert (f"{at} CPU1: gup_huge_pmd: tail pins taken, head not yet [irqs off on CPU1; "
            "THE ACCOUNTING BREAKS HERE]") in d.text
    assert "what-if without tlb_flush_ipi" in root.find("s:title", NS).text

    race = RACES["put-page-vs-split"](0, without=("compound_lock",))
    race.play()
    text = D.describe_race_swimlane(race)
    at = next(i for i, s in enumerate(race.interleaving.steps) if s.name.startswith("error"))
    assert f"{at} CPU1: error: page:pfn 0x200" in text and text.count("THE ACCOUNTING BREAKS HERE") == 1
    broken = [p.attrib["data-step"] for p in by_attr(parse(D.race_swimlane(race)), "class", "point")
              if p.attrib["stroke"] == D._base.VERMILION]
    assert broken == [str(at)]


def test_race_swimlane_of_a_partial_run_shows_the_recorded_interrupt_state():
    from thplab.races import RACES

    race = RACES["split-vs-gup-fast"](0)
    race.interleaving.run("CPU1 CPU1")
    assert [sorted(s.irqs_off) for s in race.interleaving.steps] == [[], ["CPU1"], ["CPU1"]]
    root = check_conventions(D.race_swimlane(race))
    assert [(b.attrib["data-cpu"], b.attrib["data-first"], b.attrib["data-last"])
            for b in by_attr(root, "class", "irqs-off")] == [("CPU1", "1", "2")]
    race.interleaving.close()


def _lesson_races():
    """Every race lessons 09-11 play or let a learner play (their RaceViews' kernels and what-ifs)."""
    from thplab.lessons import series_middle as sm
    from thplab.races import RACES
    from thplab.widgets import RaceView

    made = [(name, level, without) for name, levels in (("split-vs-gup-fast", (0, 7, 8)),
                                                        ("futex-vs-split", (0, 8, 9)), ("put-page-vs-split", (0,)))
            for level in levels for _, without in RaceView.WHAT_IF]
    races = [(f"{n} {lv} {'-'.join(w) or 'as written'}", lambda n=n, lv=lv, w=w: RACES[n](lv, without=w))
             for n, lv, w in made]
    races += [(f"split_meets {op} {lv}", lambda op=op, lv=lv: sm.split_meets(op, lv))
              for op in sm.MEET_OPS for lv in (0, 7)]
    return races + [("futex_swap_race 0", lambda: sm.futex_swap_race(0))]


@pytest.mark.parametrize("make", [m for _, m in _lesson_races()], ids=[n for n, _ in _lesson_races()])
def test_race_swimlanes_of_the_lessons_fit_the_column_with_every_label(make):
    race = make()
    race.play()
    d = D.race_swimlane(race)
    root = check_conventions(d)
    assert float(root.attrib["width"]) <= D._base.COLUMN_WIDTH
    steps = race.interleaving.steps
    labels = {}
    for e in by_attr(root, "class", "point-label"):
        labels.setdefault(int(e.attrib["data-step"]), set()).add("".join(e.itertext()))
    points = {int(p.attrib["data-step"]): p.find("s:title", NS).text for p in by_attr(root, "class", "point")}
    for i, s in enumerate(steps):
        name = " ".join(s.name.split())
        assert labels[i] == {f"{i}. " + ("WAITS: " if s.waiting else "") + name}, i  # whole, not cut short
        assert points[i] == str(s)
    # wrapped, not shrunk: each line of a label fits the box it is in
    box = D.swimlanes._BOX_W - 14
    for e in by_attr(root, "class", "point-label"):
        lines = [t.text for t in e] or [e.text]
        assert all(D._base.text_width(line.rstrip(), 11) <= box for line in lines), lines


def test_a_name_longer_than_six_lines_ends_in_an_ellipsis_and_stays_whole_in_the_title():
    from thplab.races import RACES

    race = RACES["put-page-vs-split"](0, without=("compound_lock",))
    race.play()
    step = race.interleaving.steps[-2]
    step.name = "error: " + "a very long dump_page() line, " * 12
    root = parse(D.race_swimlane(race))
    i = len(race.interleaving.steps) - 2
    label = [e for e in by_attr(root, "data-step", i) if e.attrib.get("class") == "point-label"][0]
    lines = [t.text for t in label]
    assert len(lines) == 6 and lines[-1].endswith("…")
    point = [e for e in by_attr(root, "data-step", i) if e.attrib.get("class") == "point"][0]
    assert point.find("s:title", NS).text == str(step)


def test_text_width_matches_the_font_the_diagrams_name_first():
    """The wrap estimate is DejaVu Sans's own advance widths (read here from the font file)."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font, LoadFlags

    font = FT2Font(font_manager.findfont("DejaVu Sans"))
    font.set_size(11, 72)

    def real(s):
        return sum(font.load_char(ord(ch), flags=LoadFlags.NO_HINTING).linearHoriAdvance for ch in s) / 65536

    for s in ("__split_huge_page_refcount: counts redistributed", "pmdp_splitting_flush: TLB-flush IPI",
              "flags:['uptodate', 'lru', 'swapbacked'] 0x7f0000000", "WAITS: CPU0 {} | ~ @#%&*"):
        assert abs(D._base.text_width(s, 11) - real(s)) <= 0.01 * real(s) + 0.5, s


def test_wrap_breaks_at_spaces_and_gives_the_text_back():
    wrap = D._base.wrap
    s = "get_futex_key: tail page; interrupts off, re-pin and take the head"
    lines = wrap(s, 150, 11)
    assert len(lines) > 2 and "".join(lines) == s and all(line.endswith(" ") for line in lines[:-1])
    long_word = "__split_huge_page_refcount_and_more_and_more_and_more"
    cut = wrap(long_word, 120, 11)
    assert "".join(cut) == long_word and cut[0].endswith("_")
    assert all(D._base.text_width(line, 11) <= 120 for line in cut)
    assert wrap(s, 150, 11, max_lines=2)[-1].endswith("…")


# --------------------------------------------------------------------------- 5. PMD state machine
def test_pmd_state_machine_old_vs_rfc():
    d = D.pmd_state_machine(0, 10)
    root = check_conventions(d)
    trans = [(e.attrib["data-from"], e.attrib["data-to"], e.attrib["data-path"])
             for e in by_attr(root, "data-arrow", "transition")]
    old, new = trans[:7], trans[7:]
    assert ("huge", "splitting", "old-split") in old and ("splitting", "invalidated", "old-split") in old
    assert ("invalidated", "table", "old-split") in old and not [t for t in old if t[2] == "new-split"]
    assert ("huge", "empty", "new-split") in new and ("empty", "table", "new-split") in new
    assert not [t for t in new if t[2] == "old-split"]
    status = [(e.attrib["data-state"], e.attrib["data-status"]) for e in by_attr(root, "class", "state")]
    assert status[5:] == [("empty", "live"), ("huge", "live"), ("splitting", "gone"), ("invalidated", "gone"),
                          ("table", "live")]
    assert float(root.attrib["width"]) <= D._base.COLUMN_WIDTH  # two kernels: one panel under the other
    ys = {}
    for e in by_attr(root, "class", "state"):
        ys.setdefault(e.attrib["data-state"], []).append(float(e.attrib["y"]))
    assert all(len(v) == 2 and v[1] >= v[0] + 400 for v in ys.values()), ys
    assert [t for t in texts(root) if t.endswith(")") and "(level" in t] == ["old kernel (level 0)",
                                                                            "after patch 10 (level 10)"]
    mid = parse(D.pmd_state_machine(6))
    assert ("splitting", "defined") in [(e.attrib["data-state"], e.attrib["data-status"])
                                        for e in by_attr(mid, "class", "state")]
    assert "splitting (bit defined, nothing sets it)" in D.describe_pmd_state_machine(6)


# --------------------------------------------------------------------------- charts
def _chart_conventions(diagram):
    root = parse(diagram)
    assert root.find("s:title", NS).text == diagram.title and root.find("s:desc", NS).text == diagram.text
    assert root.attrib["width"].endswith("pt") and root.attrib["viewBox"].startswith("0 0 ")
    sizes = [float(x) for x in re.findall(r"font(?:-size)?:\s*([0-9.]+)px", diagram.svg)]
    assert sizes and min(sizes) >= 9, min(sizes)  # matplotlib SVG units are points: 9 pt = 12 px at 100%
    return root, texts(root)


def test_charts_are_vector_svg_with_twins():
    import matplotlib

    matplotlib.use("Agg")
    from thplab.lessons.compare import costs_by_label
    from thplab.lessons.open_problems import held_memory_sweep

    sweep = held_memory_sweep(unmapped=(0, 256, 511), nr_thps=2)
    held = D.held_memory_chart(sweep)
    root, t = _chart_conventions(held)
    assert "512× more in use than mapped" in t and "in use (allocated), old kernel = mapped" in t
    assert "k=511: mapped 8, in use at level 0 8, in use at level 10 4096" in held.text
    assert held.svg == D.held_memory_chart(sweep).svg

    costs = D.costs_chart(costs_by_label((0, 10)))
    root, t = _chart_conventions(costs)
    assert "4 atomic" in t and "get_page(tail), level 10" in t

    m, pid, thp, small = fnd.primer_machine()
    mm = D.mem_map_chart(m)
    root, t = _chart_conventions(mm)
    assert "0x201–0x3ff" in t and "0x200" in t and any("are all free and not drawn" in s for s in t)
    assert "THP head 0x200, THP tail 0x201-0x3ff" in mm.text


def test_the_model_never_imports_the_diagrams():
    import subprocess
    import sys

    code = ("import sys, thplab, thplab.machine, thplab.scenarios, thplab.races, thplab.trace, thplab.problems, "
            "thplab.invariants, thplab.lessons.foundations; "
            "assert 'thplab.diagrams' not in sys.modules and 'drawsvg' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_wide_diagram_shrinks_to_its_column_in_html_but_not_below_82_percent():
    m = Machine.boot("16M", patches=4, seed=0)
    pid, addr, head = m.map_thp()
    d = D.thp_mappings(m, head)
    bundle = d._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/svg+xml", "text/plain"}
    width = int(parse(d).attrib["width"])
    html = bundle["text/html"]
    assert html.startswith('<div class="thplab-diagram" style="overflow-x:auto')
    assert f"min-width:{int(width * 0.82)}px" in html and "max-width:100%" in html
    assert d.svg in html.replace(f' style="max-width:100%;height:auto;min-width:{int(width * 0.82)}px"', "", 1)


def test_thp_mappings_fits_a_notebook_column_with_every_run_label_whole():
    """860 px wide (JupyterLab at 1280 px with the file browser open); long run labels wrap, none is cut."""
    import re

    from thplab import Machine, diagrams
    from thplab.diagrams._base import runs
    from thplab.diagrams.mappings import _run_label, snapshot_thp

    for kernel in ("rfc-v1", "v4.5"):
        m = Machine.boot("16M", kernel=kernel)
        pid, addr, head = m.map_thp()
        child = m.fork(pid)
        before = snapshot_thp(m, head)
        m.mprotect(child, addr, 4096, "r")
        m.munmap(child, addr + 9 * 4096, 3 * 4096)
        m.get_user_pages(pid, addr + 40 * 4096)
        d = diagrams.thp_mappings(m, head, previous=before)
        assert int(re.search(r'<svg[^>]*\swidth="(\d+)"', d.svg)[1]) <= 860
        assert "▲" in d.svg
        plain = diagrams.thp_mappings(m, head)
        assert int(re.search(r'<svg[^>]*\swidth="(\d+)"', plain.svg)[1]) <= 860
        shown = "".join(re.findall(r'class="run-label"[^>]*>([^<]*)<', plain.svg))
        snap = snapshot_thp(m, head)
        for s, t in runs(snap.values):
            label, _ = _run_label(snap.values[s], s, t)
            assert " ".join(label.split()) in shown, label      # wrapped lines join back to the label


def test_split_swimlane_and_split_counters_fit_a_notebook_column():
    import re

    from thplab import Machine, diagrams
    from thplab.trace import record

    m = Machine.boot("8M", patches=0, seed=0)
    pid, addr, head = m.map_thp()
    m.fork(pid)
    m.get_user_pages(pid, addr + 5 * 4096)
    _, rec = record(m, m.split_huge_page, head)
    lane = diagrams.split_swimlane(m, rec, head)
    assert int(re.search(r'<svg[^>]*\swidth="(\d+)"', lane.svg)[1]) <= 860
    assert lane.svg.count('class="counter"') >= 10 and "(= 1 pin(s) in a tail)" in lane.svg
    for kw in ({"patches": 10}, {"kernel": "v4.5"}):
        m = Machine.boot("8M", seed=0, **kw)
        pid, addr, head = m.map_thp()
        child = m.fork(pid)
        m.split_huge_pmd(child, addr)
        _, rec = record(m, m.split_huge_page, head)
        d = diagrams.split_counters(rec, head)
        assert int(re.search(r'<svg[^>]*\swidth="(\d+)"', d.svg)[1]) <= 860
        assert d.svg.count('class="verdict"') == len(rec.steps)
        assert ("total_mapcount" in d.svg) == ("kernel" in kw)
