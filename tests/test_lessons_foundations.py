"""Tests of thplab.lessons.foundations: the course map and the helpers of lessons 00-05."""

import re
from pathlib import Path

import numpy as np
import pytest

from thplab import KernelFunctionRemoved, Machine
from thplab import pgtable as pt
from thplab.lessons import foundations as f
from thplab.params import EBUSY, HPAGE_PMD_NR, PAGE_SIZE

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ course map

def test_lessons_are_numbered_in_order_with_their_file_names():
    assert [x.number for x in f.LESSONS] == list(range(17))
    slugs = ["index", "thp-primer", "old-refcounting", "patch-01-drop-foll-split", "patch-02-pageanon",
             "patch-03-rename", "patch-04-pmd-split", "patch-05-vmstat", "patch-06-split-huge-page",
             "patch-07-generic-splitting", "patch-08-x86-splitting", "patch-09-futex",
             "patch-10-documentation", "old-vs-new", "open-problems", "merged-design", "live-kernel-lab"]
    assert [x.file for x in f.LESSONS] == [f"{i:02d}-{s}.ipynb" for i, s in enumerate(slugs)]
    assert all(x.title and x.summary and "\n" not in x.summary for x in f.LESSONS)
    assert max(len(x.summary) for x in f.LESSONS) <= 92      # one line of the text map


def test_lesson_heading_link_and_map():
    assert f.lesson_heading(6) == "# Lesson 06 — Patch 04: split the PMD, not the page"
    assert f.lesson_link(7) == "[lesson 07](07-patch-05-vmstat.ipynb)"
    text = f.lesson_map()
    assert text.count("\n") == 2 * len(f.LESSONS) - 1
    md = f.lesson_map(markdown=True)
    assert "[Patch 01: drop FOLL_SPLIT](03-patch-01-drop-foll-split.ipynb)" in md
    with pytest.raises(ValueError, match="no lesson 17"):
        f.lesson(17)


def test_existing_lesson_notebooks_use_the_map_titles():
    """A lesson that exists starts with the heading the map gives it."""
    import json

    for x in f.LESSONS:
        path = REPO / "notebooks" / x.file
        if not path.exists():
            continue
        first = json.loads(path.read_text())["cells"][0]
        src = "".join(first["source"]) if isinstance(first["source"], list) else first["source"]
        assert src.splitlines()[0] == f.lesson_heading(x.number), x.file


# ------------------------------------------------------------------ 00

def test_course_map_diagram_is_the_path_of_the_17_lessons():
    d = f.course_map_diagram()
    assert d.svg.count('class="lesson"') == 17 and d.svg.count('data-arrow="next"') == 16
    for n in f.CORE_LESSONS:
        assert f"{n:02d}  ★ core" in d.svg and f"{n:02d} " in d.text
    assert d.svg.count("★ core") == len(f.CORE_LESSONS) and d.svg.count('data-core="1"') == len(f.CORE_LESSONS)
    assert "Patch 04" in d.svg and "split the PMD, not the" in d.svg
    assert max(map(len, d.text.splitlines())) <= 100


def test_package_versions_come_from_metadata():
    from importlib.metadata import version

    v = f.package_versions(("numpy", "no-such-package-thplab"))
    assert v == {"numpy": version("numpy"), "no-such-package-thplab": "not installed"}


@pytest.mark.parametrize("seed", range(10))
def test_mem_map_question_counts_frames_or_thps(seed):
    q = f.MemMapQuestion.generate(seed)
    size = q.params[0].split()[1]
    frames = len(Machine.boot(size).mem_map)
    assert q.answer in (frames, frames // 512)
    assert q.render().startswith(f"ARG seed {seed}\nARG machine {size}")
    assert q.check(q.answer)[0] and q.answer not in q.diagnoses
    wrong = next(iter(q.diagnoses))
    assert q.diagnoses[wrong] in q.check(wrong)[1]
    assert "No answer yet" in q.check(None)[1]


def test_counter_button_counts_clicks():
    c = f.counter_button()
    assert c.label.value == "clicks: 0"
    c.button.click()
    c.button.click()
    assert c.clicks == 2 and c.label.value == "clicks: 2"


# ------------------------------------------------------------------ 01

def test_worked_example_indices():
    assert f.WORKED_EXAMPLE == 0x7F0000205ABC
    assert f.address_indices(f.WORKED_EXAMPLE) == {"PGD": 254, "PUD": 0, "PMD": 1, "PTE": 5, "offset": 0xABC}
    assert f.format_indices(0x7F0000205ABC) == "0x7f0000205abc -> PGD 254, PUD 0, PMD 1, PTE 5, offset 0xabc"


def test_primer_machine_maps_a_thp_and_a_4k_page():
    m, pid, thp, small = f.primer_machine()
    w = m.walk(pid, [thp, small])
    assert w["level"].tolist() == [2, 1]     # huge PMD, PTE
    head = int(w["pfn"][0])
    rows = m.page_walk(pid, f.WORKED_EXAMPLE)
    assert [r["index"] for r in rows[:3]] == [254, 0, 1]
    assert "subpage 5" in rows[3]["meaning"]
    table = f.struct_page_table(m, [head, head + 1, head + 5], ["head", "page[1]", "page[5]"])
    lines = table.splitlines()
    assert re.search(r"head\s+0x200\s+uptodate,lru,head,swapbacked\s+-\s+-\s+1\s+0\s+1\s+anon_vma 1 \| ANON", lines[1])
    assert re.search(r"page\[1\]\s+0x201\s+tail\s+0x200\s+9\s+0\s+-1\s+0\s+NULL", lines[2])
    assert "walk of 0x7f0000205abc" in f.walk_text(m, pid, f.WORKED_EXAMPLE)


def test_struct_pages_is_narrow_by_default_and_whole_on_demand():
    m, pid, thp, small = f.primer_machine()
    head = int(m.walk(pid, [thp])["pfn"][0])
    pfns = [head, head + 1, head + 511, int(m.walk(pid, [small])["pfn"][0])]
    narrow = f.struct_pages(m, pfns, ["head", "page[1]", "page[511]", "4 KiB page"])
    assert narrow.splitlines()[0].split() == ["pfn", "flags", "_count", "_mapcount", "mapping", "index"]
    assert max(len(line) for line in narrow.splitlines()) <= 100
    assert "anon_vma 1 | ANON  0x7f0000200" in narrow          # mapping decoded, index in hex
    wide = f.struct_pages(m, pfns, all_columns=True)
    assert wide.splitlines()[0].split() == ["pfn", "flags", "first_page", "order", "_count", "_mapcount",
                                            "page_mapcount", "mapping", "index"]
    assert f.struct_page_table(m, pfns) == wide


def test_index_question_diagnoses_the_usual_slips():
    for seed in range(20):
        q = f.IndexQuestion.generate(seed)
        address = int(re.search(r"address (0x[0-9a-f]+) use", q.question)[1], 16)
        level = re.search(r"Which (\w+) index", q.question)[1]
        assert q.answer not in q.diagnoses
        shift = dict(PGD=39, PUD=30, PMD=21, PTE=12)[level]
        for other, bits in (("PUD", 30), ("PMD", 21)):
            value = f.address_indices(address)[other]
            if other != level and value != q.answer:
                assert f"{abs(bits - shift)} bits off" in q.check(value)[1] or "Or" in q.check(value)[1]
        if int(str(q.answer), 16) != q.answer:
            assert "with 0x in front" in q.check(f"0x{q.answer}")[1]


def test_fault_count_question_diagnoses_bias_and_head_reads():
    asked = {}
    for s in range(40):
        q = f.FaultCountQuestion.generate(s, level=0)
        for wrong, text in q.diagnoses.items():
            assert wrong != q.answer and text in q.check(wrong)[1]
        asked[q.question] = q
    # the -1 bias and "page_count() reads the head" are the slips named
    head = next(q for q in asked.values() if "raw _mapcount of the head" in q.question)
    assert "-1 bias" in head.check(1)[1]
    tail = next(q for q in asked.values() if "page_count() of subpage" in q.question)
    assert "reads the head" in tail.check(0)[1]


@pytest.mark.parametrize("seed", range(12))
def test_index_question_answer_is_the_walk(seed):
    q = f.IndexQuestion.generate(seed)
    assert q.render().startswith(f"ARG seed {seed}")
    address = int(re.search(r"address (0x[0-9a-f]+) use", q.question)[1], 16)
    level = re.search(r"Which (\w+) index", q.question)[1]
    want = int({"PGD": pt.pgd_index, "PUD": pt.pud_index, "PMD": pt.pmd_index, "PTE": pt.pte_index}[level](address))
    assert q.answer == want
    assert q.check(hex(want))[0] and q.check(str(want))[0]
    assert not q.check(want + 1)[0]
    assert not q.check("PMD")[0]
    assert f.IndexQuestion.generate(seed).render() == q.render()   # seeded


@pytest.mark.parametrize("seed", range(8))
def test_fault_count_question(seed):
    q = f.FaultCountQuestion.generate(seed)
    assert q.answer in (-1, 0, 1)
    assert q.check(q.answer)[0]


def test_fault_count_question_values_match_prep_compound_page():
    for level in (0, 10):
        for s in range(20):
            q = f.FaultCountQuestion.generate(s, level=level)
            text = q.question
            expect = {"raw _count of the head": 1, "raw _mapcount of the head": 0,
                      "page_mapcount() of the head": 1}
            for key, v in expect.items():
                if key in text:
                    assert q.answer == v
            if re.search(r"raw _count of subpage", text):
                assert q.answer == 0
            if re.search(r"raw _mapcount of subpage", text):
                assert q.answer == -1
            if "page_count() of subpage" in text:
                assert q.answer == 1


# ------------------------------------------------------------------ 02

def test_old_split_redistributes_pins():
    m, pid, addr, head = f.old_split_machine(0, forks=1, pins=(5,))
    assert int(m.page_count(head)) == 3 and int(m.page_mapcount(head + 5)) == 1
    ret, rec = f.record_old_split(m, head)
    assert ret == 0
    names = [s.name for s in rec.steps]
    assert names.count("pmdp_splitting_flush: _PAGE_SPLITTING set") == 2
    assert "__split_huge_page_refcount: counts redistributed" in names
    # M = 2 processes; tail 5 has one pin
    assert int(m.mem_map["_count"][head + 5]) == 3
    assert int(m.mem_map["_count"][head + 1]) == 2
    assert int(m.mem_map["_count"][head]) == 2
    m.check()


def test_describe_step_of_old_split_names_flags_and_ptes():
    from thplab.widgets import describe_step

    m, pid, addr, head = f.old_split_machine(0, forks=1, pins=(5,))
    _, rec = f.record_old_split(m, head)
    text = "\n".join(describe_step(rec, i, pages=np.array([head, head + 1, head + 5]))
                     for i in range(len(rec.steps)))
    assert "flags +compound_lock" in text and "flags -compound_lock" in text
    assert f"4 KiB page pfn {head + 1:#x}" in text       # PTE entries decode as pages
    assert "SPLITTING" in text


@pytest.mark.parametrize("seed", range(12))
def test_old_split_tail_question(seed):
    q = f.OldSplitTailQuestion.generate(seed)
    asked = int(re.search(r"subpage (\d+) after the split", q.question)[1])
    mappers = int(re.search(r"processes mapping the THP: (\d+)", q.render())[1])
    pins = re.findall(r"subpage (\d+) x(\d+)", q.render())
    mine = sum(int(n) for s, n in pins if int(s) == asked)
    assert q.answer == mappers + mine
    assert q.check(q.answer)[0] and not q.check(q.answer + 1)[0]
    assert q.answer not in q.diagnoses
    assert "You kept the +1" in q.check(q.answer + 1)[1]
    from thplab.problems import NOT_ANSWERED

    assert q.check(None) == (False, NOT_ANSWERED)


def test_old_split_tail_question_is_a_transfer_question():
    """Over seeds the state varies and so does the answer (not one number for every seed)."""
    qs = [f.OldSplitTailQuestion.generate(s) for s in range(30)]
    assert len({q.answer for q in qs}) >= 4
    assert len({q.render() for q in qs}) == 30
    assert any("subpage 0 after" in q.question for q in qs)   # the head is asked about too


def test_old_split_actions_name_each_change_by_its_action():
    m, pid, addr, head = f.old_split_machine(0, forks=1, pins=(5,))
    _, rec = f.record_old_split(m, head)
    actions = f.old_split_actions(rec, head)
    kinds = [a.kind for a in actions.steps]
    assert kinds == ["before", "get", "splitting", "splitting", "lock", "refcount", "unlock", "put_tails",
                     "fill", "invalidate", "populate", "fill", "invalidate", "populate", "thp_split", "put"]
    by_kind = {}
    for a in actions.steps[1:]:
        by_kind.setdefault(a.kind, []).append(a)
    # every process's actions in phase 3 name that process, in order pid 1 then pid 2
    for kind in ("splitting", "fill", "invalidate", "populate"):
        assert [a.label.count("pid 1") for a in by_kind[kind]] == [1, 0], kind
        assert [a.label.count("pid 2") for a in by_kind[kind]] == [0, 1], kind
    # the change each action lists is its own: the fill lists PTEs only, pmdp_invalidate a PMD only
    assert all(t.startswith("512 PTEs") for a in by_kind["fill"] for _, t in a.rows)
    assert all("-P " in t and "PMD" in t for a in by_kind["invalidate"] for _, t in a.rows)
    assert [t for _, t in by_kind["unlock"][0].rows] == [f"pfn {head:#x}: flags -compound_lock"]
    assert all("_count" in t for _, t in by_kind["put_tails"][0].rows)
    # interrupts from the model's irqs_off: off only between the lock and the unlock
    assert [a.irqs for a in actions.steps if a.kind in ("lock", "refcount", "unlock", "put_tails")] == [
        ("on", "off"), ("off", "off"), ("off", "on"), ("on", "on")]
    text = actions.text(pages=[head, head + 1, head + 5])
    assert max(len(line) for line in text.splitlines()) <= 100
    assert f"pfn {head + 5:#x}: _count 0 -> 4" in text and "index 0x0 -> 0x7f0000005" in text


def test_step_through_shows_the_actions():
    from thplab import widgets

    m, pid, addr, head = f.old_split_machine(0, forks=1, pins=(5,))
    _, rec = f.record_old_split(m, head)
    actions = f.old_split_actions(rec, head)
    view = widgets.StepThrough(actions, pages=[head, head + 5], describe=f.describe_action)
    assert view.slider.max == len(actions.steps) - 1
    view.slider.value = 9
    assert "pmdp_invalidate(): pid 1" in view.output.value and "512 PTEs" not in view.output.value


# ------------------------------------------------------------------ 03

@pytest.mark.parametrize("level,subpage,pinned,status,thp,leaked", [
    (0, 7, False, 1, False, 0), (0, 7, True, 1, False, 0), (1, 7, False, -EBUSY, True, 0),
    (1, 0, True, 1, False, 0), (4, 0, False, -EBUSY, True, 1), (5, 7, True, -EBUSY, True, 0),
    (10, 0, False, 1, False, 0), (10, 0, True, -EBUSY, True, 1), (10, 7, False, -EBUSY, True, 0)])
def test_move_pages_case(level, subpage, pinned, status, thp, leaked):
    c = f.move_pages_case(level, pinned, subpage)
    assert c["status"] == status and c["thp"] == thp and c["leaked"] == leaked
    assert c["node"] == (1 if status == 1 else 0)


def test_move_pages_table_and_events():
    text = f.move_pages_table()
    rows = [line.split() for line in text.splitlines()[2:]]
    # every row is what move_pages_case() reports; "either" only where the pin changes nothing
    for row in rows:
        level, subpage, pinned = int(row[0]), int(row[1]), row[3]
        for pin in ((False, True) if pinned == "either" else (pinned == "yes",)):
            c = f.move_pages_case(level, pin, subpage)
            assert " ".join(row[4:]).startswith(f._status_text(c["status"]) + " ")
            assert (row[8] if row[4] == "-EBUSY" else row[9]) == (str(c["leaked"]) if c["leaked"] else "-")
    # level 0 never fails; a tail fails at every other level; the head at 4 and pinned 10
    assert sum(r[4] == "-EBUSY" for r in rows) == 3 + 1 + 1
    assert [r[3] for r in rows if r[0] == "10" and r[1] == "0"] == ["no", "yes"]
    assert "thp_split_page_failed +1" in text and "thp_split +1" in text
    assert max(map(len, text.splitlines())) <= 100


def test_move_pages_diagram_shows_the_leak_in_the_heads_count():
    d = f.move_pages_diagram(4, subpage=0)
    assert d.text.startswith("Level 4: move_pages(subpage 0 -> node 1) = -EBUSY; 1 leaked reference")
    assert "_count 2 (was 1)" in d.svg and 'class="changed"' in d.svg
    moved = f.move_pages_diagram(1, subpage=0)
    assert "nothing leaked" in moved.text and "subpage 0 free" in moved.svg
    # the widened canvas holds the longest run label
    assert f'width="{moved.drawing.width}"' in moved.svg and moved.drawing.width <= 900   # wrapped labels
    pinned = f.move_pages_diagram(10, subpage=0, pin=5)
    assert "pin on subpage 5; 1 leaked" in pinned.text and "pins 1" in pinned.text


def test_move_pages_explorer_watches_the_subpages_it_moves():
    run = f.MOVE_PAGES.start(1).run_all()
    assert [r["subpage"] for r in run.counters()] == list(f.MOVE_WATCH)
    rows = {int(line.split()[0]): line.split()[1] for line in run.table().splitlines()[2:]}
    assert rows[7] == "page" and rows[9] == "free" and rows[0] == "free"   # 7 stayed, 0 and 9 moved
    assert "subpage" in run.summary() and re.search(r"^ +7  ", run.summary(), re.M)


@pytest.mark.parametrize("seed", range(12))
def test_leak_question(seed):
    q = f.LeakQuestion.generate(seed)
    level = int(re.search(r"ARG level (\d+)", q.render())[1])
    pinned = "subpage 5: yes" in q.render()
    subpages = [int(x) for x in re.search(r"subpages \[([^\]]*)\]", q.render())[1].split(",")]
    assert q.answer == (subpages.count(0) if f._head_split_fails(level, pinned) else 0)
    assert q.answer not in q.diagnoses
    assert q.check(None)[1].startswith("No answer yet")
    for wrong, hint in q.diagnoses.items():
        assert hint in q.check(wrong)[1]


def test_leak_question_answers_vary():
    assert len({f.LeakQuestion.generate(s).answer for s in range(40)}) >= 3


def test_patch_cards_fit_100_columns_and_keep_every_word():
    from thplab.series import patch_card

    for n in (1, 2, 3):
        text = f.patch_card_text(n)
        assert max(map(len, text.splitlines())) <= 100
        assert text.split() == patch_card(n).split()


def test_foll_split_demo():
    assert "the THP was split" in f.foll_split_demo(0)
    assert "KernelFunctionRemoved" in f.foll_split_demo(1)


# ------------------------------------------------------------------ 04

def test_runs():
    assert f.runs(np.array([True] + [False] * 511)) == "0: True; 1-511: False"
    assert f.runs(np.array([1, 1, 2])) == "0-1: 1; 2: 2"


def test_page_anon_runs_levels():
    for level, want in ((1, "(1 of 512 true)"), (2, "(512 of 512 true)")):
        m, pid, thp, _ = f.primer_machine(level)
        head = int(m.walk(pid, [thp])["pfn"][0])
        assert f.page_anon_runs(m, head).endswith(want)


def test_without_patch_restores_the_old_function_and_refuses_future_patches():
    m = Machine.boot("16M", patches=4)
    f.without_patch(m, "PageAnon", 2)
    pid = m.spawn()
    m.touch(pid, m.mmap(pid, 2 << 20), 2 << 20)
    head = int(m.thp_heads()[0])
    assert m.kernel.PageAnon(np.arange(head, head + HPAGE_PMD_NR)).sum() == 1
    with pytest.raises(ValueError, match="not applied"):
        f.without_patch(Machine.boot("16M", patches=1), "PageAnon", 2)


def test_pageanon_counterfactual():
    lines = f.pageanon_counterfactual().splitlines()
    assert re.search(r"^patch 02.*\s0\s+508\s+0\s+ok$", lines[3])
    assert re.search(r"^v3.16.*\s1\s+513\s+-5\s+violated:$", lines[4])
    assert lines[5].endswith("pid 1: MM_FILEPAGES is -5 for anonymous memory")
    assert max(map(len, lines)) <= 90


@pytest.mark.parametrize("seed", range(8))
def test_file_rss_question(seed):
    q = f.FileRssQuestion.generate(seed)
    m = re.search(r"munmap subpages? (\d+)(?:-(\d+))?", q.render())
    first, last = int(m[1]), int(m[2] or m[1])
    assert q.answer == -((last - first + 1) - (first == 0))


# ------------------------------------------------------------------ 05

def test_compare_levels():
    assert f.compare_levels("fork-split-pmd", (2, 3)).endswith("verdict: same behaviour")
    text = f.compare_levels("fork-split-pmd", (3, 4))
    assert "DIFFERENT" in text and text.endswith("behaviour differs")
    # a differing step says what differs, level by level
    assert "pid 1: 512 PTEs (level 3) vs one huge PMD (level 4)" in text
    assert "events thp_split +1 vs none" in text
    assert "pid 1:" not in f.compare_levels("fork-split-pmd", (3, 4), detail=False)


def test_split_huge_pmd_with_the_new_argument_order():
    m = Machine.boot("16M", patches=3)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    vma, pmd = f.huge_pmd_of(m, child, addr)
    assert vma.mm.pid == child and pt.pmd_trans_huge(m.pgtables.entries[m.pgtables.row_of[pmd[0]], pmd[1]])
    with pytest.raises(KernelFunctionRemoved):
        m.kernel.split_huge_page_pmd(vma, addr, pmd)
    m.kernel.split_huge_pmd(vma, pmd, addr)
    assert not len(m.thp_heads()) and (m.walk(pid, [addr])["level"] == 1).all()


def test_rename_split_diagram_same_picture_at_levels_2_and_3():
    d = f.rename_split_diagram(3)
    assert "split_huge_pmd(vma, pmd, address)" in d.text and "(levels 2 and 3 draw the same picture)" in d.text
    assert "split_huge_page_pmd(vma, address, pmd)" in f.rename_split_diagram(2).text


def test_split_huge_page_pmd_is_gone_at_level_3():
    assert Machine.boot("16M", patches=2).kernel.has("split_huge_page_pmd")
    with pytest.raises(KernelFunctionRemoved, match="patch 03"):
        Machine.boot("16M", patches=3).kernel.split_huge_page_pmd


def test_move_pages_scenario_levels():
    out = {}
    for level in (0, 1, 4, 10):
        run = f.MOVE_PAGES.start(level)
        run.run_all()
        out[level] = [run.results[i][1] for i in (2, 3, 5)]
        run.machine.check()
    assert out == {0: ["node 1", "node 1", "node 1"], 1: ["-EBUSY", "node 1", "node 1"],
                   4: ["-EBUSY", "-EBUSY", "-EBUSY"], 10: ["-EBUSY", "-EBUSY", "-EBUSY"]}


@pytest.mark.parametrize("seed", range(10))
def test_move_pages_question(seed):
    q = f.MovePagesQuestion.generate(seed)
    level = int(re.search(r"ARG level (\d+)", q.render())[1])
    pinned = "subpage 5: yes" in q.render()
    subpage = int(re.search(r"move subpage (\d+)", q.render())[1])
    assert q.answer == f.move_pages_case(level, pinned, subpage)["status"]
    head_fails = 4 <= level < 6 or (level >= 6 and pinned)
    assert q.answer == (1 if level == 0 or (subpage == 0 and not head_fails) else -EBUSY)


@pytest.mark.parametrize("seed", range(12))
def test_page_anon_question(seed):
    q = f.PageAnonQuestion.generate(seed)
    level = int(re.search(r"ARG level (\d+)", q.render())[1])
    asked = re.search(r"pages asked: (.*)", q.render())[1]
    subpages = [int(x) for x in re.findall(r"subpage (\d+)", asked)]
    small = int((re.search(r"(\d+) ordinary", asked) or [0, 0])[1])
    total = len(subpages) + small
    assert q.answer == (total if level >= 2 else (0 in subpages) + small)
    assert q.answer not in q.diagnoses


def test_page_anon_question_is_not_one_answer():
    answers = [f.PageAnonQuestion.generate(s).answer for s in range(40)]
    assert max(answers.count(a) for a in set(answers)) <= 15


def test_pte_mapped_pictures_count_page_anon():
    d = f.pte_mapped_diagram(4)
    assert "512 of 512 subpages with patch 02, 1 without" in d.text
    assert "512 PTEs in 1 run(s)" in d.text and "a compound page (THP)" in d.text
    chart = f.page_anon_chart(4)
    assert "1-511: False (1 of 512)" in chart.text and "0-511: True (512 of 512)" in chart.text
    # subpages 0-11 drawn: with patch 02 all anon; without, only the head (11 cells say "no")
    assert chart.svg.count(">no<") == 11 and chart.svg.count(">anon<") == 13


def test_rmap_walk_choice_without_patch_02_finds_nothing_for_a_tail():
    m, pid, addr, head, _ = f.pte_mapped_thp(4, old_pageanon=True)
    old = f.rmap_walk_choice(m, [head, head + 5], ["subpage 0", "subpage 5"]).splitlines()
    assert "anon (anon_vma" in old[2] and "file" in old[3] and "NULL" in old[3]
    assert " 1 map " in old[2] and " 0 maps " in old[3]  # the head's PTE is found, subpage 5's is not
    m, pid, addr, head, _ = f.pte_mapped_thp(4)
    new = f.rmap_walk_choice(m, [head + 5], ["subpage 5"], name="with patch 02").splitlines()
    assert new[0] == "with patch 02:" and f"pid {pid} {addr:#x}-" in new[2] and " 1 map " in new[2]


def test_rmap_walk_finds_every_mapping_the_model_has():
    """The count is a page-table lookup: a fork doubles it, an munmap of the subpage drops the parent's."""
    m, pid, addr, head, _ = f.pte_mapped_thp(4)
    m.fork(pid)
    assert " 2 maps " in f.rmap_walk_choice(m, [head + 5]).splitlines()[2]
    m.munmap(pid, addr + 5 * PAGE_SIZE, PAGE_SIZE)
    assert " 1 map " in f.rmap_walk_choice(m, [head + 5]).splitlines()[2]


def test_mapping_table():
    m, pid, addr, head, _ = f.pte_mapped_thp(4)
    lines = f.mapping_table(m, [head, head + 7], ["head", "page[7]"]).splitlines()
    assert "head" in lines[1] and "ANON" in lines[1]
    assert lines[2].split()[2:] == ["tail", f"{head:#x}", "NULL"]


def test_rename_report_and_diff():
    text = f.rename_report()
    assert "split_huge_page_pmd(vma, address, pmdp)" in text
    assert "split_huge_pmd(vma, pmdp, address)" in text
    assert text.endswith("same body: yes")
    diff = f.rename_diff()
    assert "-def split_huge_page_pmd(k, vma, address, pmdp):" in diff
    assert "+def split_huge_pmd(k, vma, pmdp, address):" in diff


def test_index_notebook_shows_the_current_map():
    """Lesson 00's markdown map is generated from LESSONS; rebuild it when a title changes."""
    import json

    path = REPO / "notebooks" / "00-index.ipynb"
    if not path.exists():
        pytest.skip("no lesson 00 yet")
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells)
    assert f.lesson_map(markdown=True) in text


def test_patch_card_links_are_pinned_or_say_so():
    """A card's links name one fixed text: a posted email (Message-Id), an LWN article, a file at a
    tagged version, a commit -- or, for a git branch that cannot be pinned, say "not pinned"."""
    from thplab.series import BASE, PATCHES, patch_card

    pinned = re.compile(r"https://(lore\.kernel\.org/linux-mm/[^/\s]+@[^/\s]+/|lwn\.net/Articles/\d+/"
                        r"|elixir\.bootlin\.com/linux/v\d[\w.-]*/\S+|git\.kernel\.org/\S+/c/[0-9a-f]{12,})")
    for p in (BASE, *PATCHES):
        for url in re.findall(r"https://\S+", p.link):
            url = url.rstrip(").,;")
            assert pinned.fullmatch(url) or "not pinned" in p.link, (p.number, url)
        assert f"read: {p.link}" in patch_card(p.number)
    assert "not pinned" in PATCHES[3].link and "lore.kernel.org" in PATCHES[3].link
    assert "not pinned" in PATCHES[9].link and "lore.kernel.org" in PATCHES[9].link
