"""Lessons 07-11 (patches 05-09): the helpers in thplab.lessons.series_middle."""

import functools
import re

import pytest

from thplab import Machine, widgets
from thplab.errors import KernelFunctionRemoved
from thplab.invariants import problems
from thplab.lessons import series_middle as sm
from thplab.scenarios import SCENARIOS

SPLIT_EVENTS = ("thp_split", "thp_split_page", "thp_split_page_failed", "thp_split_pmd")


# ------------------------------------------------------------------ lesson 07

@pytest.mark.parametrize("op, level, want", [
    ("partial munmap", 0, {"thp_split": 1}),
    ("partial munmap", 4, {}),
    ("partial munmap", 5, {"thp_split_pmd": 1}),
    ("mprotect part", 10, {"thp_split_pmd": 1}),
    ("split, no pin", 5, {"thp_split_page_failed": 1}),        # the -EBUSY stub
    ("split, no pin", 10, {"thp_split_page": 1, "thp_split_pmd": 1}),
    ("split, pinned", 0, {"thp_split": 1}),                     # the old split never fails
    ("split, pinned", 10, {"thp_split_page_failed": 1}),        # racy check: no PMD split
    ("fork + split_huge_pmd", 0, {"thp_split": 1}),
    ("fork + split_huge_pmd", 10, {"thp_split_pmd": 1}),
    ("fork + split page", 10, {"thp_split_page": 1, "thp_split_pmd": 2}),
])
def test_operation_events(op, level, want):
    assert sm.operation_events(op, level) == want


def test_event_table_lists_every_operation_and_level():
    text = sm.event_table(levels=(0, 5, 10))
    lines = text.splitlines()
    assert "level 0 (old kernel)" in lines[0] and "level 10 (after 10)" in lines[0]
    assert len(lines) == 2 + len(sm.OPERATIONS)
    row = next(line for line in lines if line.startswith("fork + split page"))
    assert "thp_split +1" in row and "thp_split_pmd +2" in row
    assert all(line == line.rstrip() for line in lines)
    assert "(none)" in sm.event_table(levels=(4,))


@pytest.mark.parametrize("level, present, absent", [
    (4, ["thp_split 0"], ["thp_split_pmd"]),
    (5, ["thp_split_page 0", "thp_split_page_failed 0", "thp_split_pmd 0"], ["thp_split 0"]),
])
def test_thp_vmstat_lines(level, present, absent):
    text = sm.thp_vmstat(Machine.boot("16M", patches=level))
    for line in present:
        assert line in text.splitlines()
    for name in absent:
        assert name not in text.splitlines()
    assert all(line.startswith(("thp_", "nr_anon_transparent")) for line in text.splitlines())


def test_vmstat_tour_deltas_at_levels_4_and_5():
    deltas = {}
    for level in (4, 5):
        run = sm.VMSTAT_TOUR.start(level)
        run.run_all()
        run.machine.check()
        deltas[level] = [d for _, _, d in run.results]
    assert all(d.keys() <= {"thp_fault_alloc"} for d in deltas[4])
    assert deltas[5][2] == {"thp_split_pmd": 1}                 # child's mprotect
    assert deltas[5][4] == {"thp_split_page_failed": 1}         # the stub
    assert deltas[5][7] == {"thp_split_pmd": 1}                 # parent's partial munmap


def test_vmstat_moved_around_a_pmd_split_and_a_partial_munmap():
    m = Machine.boot("16M", patches=5)
    parent, addr, head = m.map_thp()
    child = m.fork(parent)
    before = m.vmstat.as_dict()
    m.split_huge_pmd(child, addr)
    assert sm.vmstat_moved(before, m.vmstat.as_dict()) == "thp_split_pmd +1"
    before = m.vmstat.as_dict()
    m.munmap(child, addr + 8 * 4096, 4 * 4096)        # the child's PMD is already split
    assert sm.vmstat_moved(before, m.vmstat.as_dict()) == "(none)"
    before = m.vmstat.as_dict()
    assert m.split_huge_page(head) == -16
    assert sm.vmstat_moved(before, m.vmstat.as_dict()) == "thp_split_page_failed +1"


@pytest.mark.parametrize("seed", range(12))
def test_event_problem_answers_from_the_model(seed):
    p = sm.event_problem(seed)
    assert p.render().startswith(f"ARG seed {seed}\nARG level {p.level}")
    event = re.search(r"vmstat (\w+) go up", p.question)[1]
    op = next(name for name, sc in sm.OPERATIONS.items() if [l for l, _ in sc.steps] == p.steps)
    assert p.answer == sm.operation_events(op, p.level).get(event, 0)
    assert p.check(str(p.answer))[0] and not p.check(str(p.answer + 1))[0]
    assert not p.check("two")[0]
    again = sm.event_problem(seed)
    assert (again.question, again.answer, again.level) == (p.question, p.answer, p.level)


def test_event_problem_levels_4_5_only_ask_existing_events():
    for seed in range(10):
        p = sm.event_problem(seed, levels=(4, 5))
        event = re.search(r"vmstat (\w+) go up", p.question)[1]
        assert event in Machine.boot("16M", patches=p.level).kernel.VM_EVENTS


def test_recorded_comparison_has_no_date():
    text = sm.recorded_comparison(("partial_munmap",), levels=(0, 5))
    assert text.startswith("Recorded on Linux ")
    assert not re.search(r"\d{4}-\d\d-\d\dT", text)
    assert "thp_split_pmd" in text and "thp_deferred_split_page" in text


def test_recorded_comparison_shows_the_differences_and_every_row_on_demand():
    short = sm.recorded_comparison(("partial_munmap", "mprotect"), levels=(0, 5))
    full = sm.recorded_comparison(("partial_munmap", "mprotect"), levels=(0, 5), show_all=True)
    rows = [line for line in short.splitlines() if line.startswith("  ") and re.search(r" (match|differs|n/a) ", line)]
    assert rows and all(re.search(r"differs|n/a", line) for line in rows)      # no all-match row
    assert "AnonHugePages kB" not in short and "AnonHugePages kB" in full        # 0, 0 match, 0 match
    assert "note:" not in short and "note:" in full
    assert len(short.splitlines()) < len(full.splitlines()) / 2
    # each reason once, numbered in order of first use, and every number used is printed
    used = sorted({int(n) for n in re.findall(r"\[(\d+)\]", "\n".join(rows))})
    printed = [int(n) for n in re.findall(r"^\[(\d+)\] ", short, flags=re.M)]
    assert used == printed == list(range(1, len(printed) + 1))
    assert max(map(len, short.splitlines())) <= 100


# ------------------------------------------------------------------ lesson 08

def test_split_trace_unpinned_level_6_arithmetic():
    result, rec, run = sm.split_trace(6)
    assert result == 0
    names = [s.name for s in rec.steps]
    assert any("racy check" in n for n in names)
    assert any("compound_lock taken" in n for n in names)
    assert sum("PMD cleared" in n for n in names) == 2            # both processes' PMDs
    mm, head = run.machine.mem_map, run.head
    assert not (mm["flags"][head] & (1 << 15))                      # no longer a head
    assert int(mm["_count"][head + 5]) == 2 and int(mm["_mapcount"][head + 5]) == 1
    assert run.machine.vmstat["thp_split_pmd"] == 2 and run.machine.vmstat["thp_split_page"] == 1
    assert not problems(run.machine)


def test_split_trace_pinned_fails_at_the_racy_check():
    result, rec, run = sm.split_trace(6, pin=True)
    assert result == -16
    assert [s.name for s in rec.steps][1].startswith("split_huge_page: racy check")
    assert run.machine.vmstat["thp_split_pmd"] == 0
    assert run.machine.vmstat["thp_split_page_failed"] == 1


def test_split_verdict_both_ways():
    run = SCENARIOS["fork-pin-split"].start(6)
    run.run_to(3)
    assert "fails with -EBUSY" in sm.split_verdict(run.machine, run.head)
    assert "1 reference is not a mapping (a pin)" in sm.split_verdict(run.machine, run.head)
    run.run_to(5)  # pin dropped
    assert "so it splits (returns 0)" in sm.split_verdict(run.machine, run.head)


@pytest.mark.parametrize("seed", range(20))
def test_count_problem_matches_the_identity(seed):
    p = sm.count_problem(seed)
    assert p.level == 6 and p.kind in ("total_mapcount", "page_count")
    assert p.check(p.answer)[0] and not p.check(p.answer - 1)[0]
    nums = dict(re.findall(r"(Σ page_mapcount|page_count) = (\d+)", p.explanation))
    pins = sum("pin subpage" in s for s in p.steps)
    assert int(nums["page_count"]) == int(nums["Σ page_mapcount"]) + pins
    want = int(nums["Σ page_mapcount"] if p.kind == "total_mapcount" else nums["page_count"])
    assert p.answer == want
    assert ("-EBUSY" in p.explanation) == (pins > 0)


def test_count_problem_kinds_and_errors():
    assert sm.count_problem(3, kind="page_count").kind == "page_count"
    with pytest.raises(ValueError):
        sm.count_problem(3, kind="bogus")


# ------------------------------------------------------------------ lesson 09

@pytest.mark.parametrize("op, level, waits_on", [
    ("get_user_pages_fast", 0, "wait_split_huge_page: anon_vma_lock_write: waiting"),
    ("get_user_pages", 0, "wait_split_huge_page: anon_vma_lock_write: waiting"),
    ("write fault", 0, "__handle_mm_fault: PMD is splitting, retry the fault"),
    ("get_user_pages_fast", 10, "pmd_lock: waiting"),
    ("get_user_pages", 10, "pmd_lock: waiting"),
    ("write fault", 10, "pmd_lock: waiting"),
])
def test_split_meets(op, level, waits_on):
    race = sm.split_meets(op, level)
    race.play()
    il = race.interleaving
    cpu1 = [s.name for s in il.steps if s.cpu == "CPU1"]
    assert any(waits_on in n for n in cpu1)
    assert il.results["CPU0"] == 0 and not il.errors
    assert not problems(race.machine)
    if op == "get_user_pages_fast" and level == 0:
        assert "0x80000000002004e7" in il.log()            # gup-fast saw the SPLITTING bit
    with pytest.raises(ValueError):
        sm.split_meets("munmap", level)


def test_where_it_waits_text():
    old, new = sm.where_it_waits(0), sm.where_it_waits(10)
    assert "wait_split_huge_page" in old and "wait_split_huge_page" not in new
    assert "pmd_lock: waiting" in new


def test_splitting_bit_census_counts_pmds_not_points():
    text = sm.splitting_bit_census(SCENARIOS["fork-pin-split"], levels=(0, 4, 10))
    assert "points" not in text                                  # a fact about the kernel, not the model
    rows = {int(line.split()[0]): line.split() for line in text.splitlines()[2:]}
    assert rows[0][-2:] == ["2", "2"]        # both PMDs marked at once, and through the refcount split
    for lv in (4, 10):
        assert rows[lv][-2:] == ["0", "0"]


@pytest.mark.parametrize("seed", range(10))
def test_splitting_problem(seed):
    p = sm.splitting_problem(seed)
    forks = p.steps.count("fork()")
    if p.level < 4:
        assert p.answer == forks + 1
    else:
        assert p.answer == 0
        assert "old kernel's answer" in p.check(forks + 1)[1]
    assert p.check(p.answer)[0]
    assert p.check(None)[1].startswith("No answer yet")


def test_splitting_problem_diagnoses_a_forgotten_parent():
    p = next(p for p in map(sm.splitting_problem, range(40)) if p.level < 4 and p.steps.count("fork()"))
    forks = p.steps.count("fork()")
    assert "forgot the parent" in p.check(forks)[1]


# ------------------------------------------------------------------ lesson 10

def test_pmd_during_split_old_and_new():
    old = sm.pmd_during_split(0)
    assert "0x80000000002004e7" in old and "SPLITTING" in old
    assert "pmd_trans_splitting 1" in old
    assert "pmd_trans_huge 1, pmd_present 1, pmd_trans_splitting 1" in old  # after pmdp_invalidate
    new = sm.pmd_during_split(8)
    assert "SPLITTING" not in new and "pmd_trans_splitting" not in new
    assert "none" in new
    m8 = Machine.boot("8M", patches=8)
    with pytest.raises(KernelFunctionRemoved, match="patch 08"):
        m8.kernel.pmd_trans_splitting(0x80000000002004e7)
    assert Machine.boot("8M", patches=7).kernel.has("pmd_trans_splitting")


@pytest.mark.parametrize("seed", range(16))
def test_pmd_problem_asks_a_new_state(seed):
    p = sm.pmd_problem(seed)
    entry = int(re.search(r"holds (0x[0-9a-f]+)", p.question)[1], 16)
    assert p.check(p.answer)[0] and p.check(hex(p.answer))[0]
    assert p.answer not in p.diagnoses
    if p.kind == "value_after":
        assert p.hex_answer and hex(p.answer) in p.explanation
        if p.level == 8:
            assert p.answer == 0
        elif "splitting_flush" in p.question:
            assert p.answer == entry | 0x400
            assert "bit 9" in p.check(entry | 0x200)[1]
        else:
            assert p.answer == (entry | 0x400) & ~1
    else:
        assert p.answer == 1 and (entry & 1) == 0               # not present, yet pmd_present()
        assert ("Global bit" in p.check(0)[1]) == ("PROT_NONE" in p.steps[1])


def test_pmd_problem_kinds_cover_both_levels():
    got = {(p.level, p.kind) for p in map(sm.pmd_problem, range(40))}
    assert got == {(0, "value_after"), (0, "pmd_present"), (8, "value_after"), (8, "pmd_present")}


def test_splitting_pmd_walk_draws_the_marked_pmd():
    d = sm.splitting_pmd_walk(0)
    assert "0x80000000002004e7" in d.text and "SPLITTING" in d.text and "subpage 5" in d.text
    assert "SPLITTING" in d.svg
    with pytest.raises(ValueError, match="never marks"):
        sm.splitting_pmd_walk(8)


# ------------------------------------------------------------------ lesson 11

def test_futex_at_table():
    got = {(lv, i): (r["refs"], r["split"], r["waited"])
           for lv in (0, 8, 9) for i in range(len(sm._points(lv)))
           for r in [sm.futex_at(lv, i)]}
    assert got[0, 1] == (0, 0, True)          # interrupts off: the split waits for the IPI
    assert got[0, 2] == (2, 0, True)          # head + tail reference during the swap
    assert got[0, 3] == (1, 0, False)         # the old split succeeds under the futex's pin
    assert got[8, 0] == (1, -16, False)       # a pin on a tail already stops the split
    assert got[8, 1] == (0, 0, True)          # the special case's window without any pin
    assert got[9, 0] == (1, -16, False) and got[9, 1] == (1, -16, False)
    assert len(sm._points(9)) == 2


def test_futex_swap_race():
    race = sm.futex_swap_race(0)
    race.play()
    log = race.interleaving.log()
    assert log.index("TLB-flush IPI waits for CPU1") < log.index("get_futex_key: lock_page(head)")
    assert race.interleaving.results["CPU0"] == 0
    assert not problems(race.machine)
    race9 = sm.futex_swap_race(9)
    race9.play()
    assert race9.interleaving.results["CPU0"] == -16


@pytest.mark.parametrize("seed", range(8))
def test_futex_problem_is_a_state_the_table_does_not_show(seed):
    p = sm.futex_problem(seed)
    assert p.level in (0, 8, 9)
    assert "subpage 0" in p.steps[1] or "subpage 511" in p.steps[1] or "PTEs" in p.steps[1]
    assert p.check(p.answer)[0] and not p.check(p.answer + 7)[0]
    assert p.answer not in p.diagnoses and p.diagnoses
    if p.kind == "split" and p.level == 9:
        assert p.answer == -16


def test_futex_at_head_and_pte_mapped():
    head0 = [sm.futex_at(0, i, subpage=0) for i in range(len(sm._points(0, subpage=0)))]
    assert [r["refs"] for r in head0] == [1, 1] and not any(r["waited"] for r in head0)  # no special case
    window = sm.futex_at(8, 1, pte_mapped=True)      # the dance runs on a PTE-mapped tail too
    # no huge PMD left to flush: the split sends no IPI, so nothing waits for CPU1's interrupts
    assert window["irqs_off"] and window["refs"] == 0 and window["split"] == 0 and not window["waited"]
    assert all(sm.futex_at(9, i, pte_mapped=True)["split"] == -16 for i in range(2))


def test_futex_text_twins():
    assert "lock_page(compound_head(page))" in sm.futex_solo(9)
    assert "interrupts off" in sm.futex_solo(0)
    table = sm.futex_table(levels=(9,))
    assert len(table.splitlines()) == 3


# ------------------------------------------------------------------ widgets driven from Python

def test_quiz_takes_lesson_factories():
    for factory in (sm.event_problem, functools.partial(sm.event_problem, levels=(4, 5)),
                    sm.count_problem, sm.splitting_problem, sm.pmd_problem, sm.futex_problem):
        quiz = widgets.Quiz(seed=2, factory=factory)
        assert "ARG seed 2" in quiz.problem_html.value
        quiz.answer.value = str(quiz.problem.answer)
        assert quiz.check()
        first = quiz.problem.question
        quiz.new_button.click()
        assert quiz.seed == 3 and "ARG seed 3" in quiz.problem_html.value
        assert quiz.problem.question is not None and first is not None


def test_scenario_explorer_vmstat_tour_shows_deltas():
    ex = widgets.ScenarioExplorer(sm.VMSTAT_TOUR, levels=(4, 5), figure=False)
    ex.run_button.click()
    assert "thp_split_page_failed +1" in ex.status.value
    ex.kernel.value = 4
    assert "thp_split_page_failed" not in ex.status.value
    assert "split_huge_page() -&gt; -16" in ex.status.value


def test_step_through_on_split_trace():
    _, rec, run = sm.split_trace(6)
    view = widgets.StepThrough(rec, pages=[run.head, run.head + 1, run.head + 5])
    view.slider.value = 1
    assert "racy check" in view.output.value
    view.slider.value = view.slider.max
    view.prev_button.click()
    assert "split_huge_page: done" in view.output.value


def test_race_view_futex_levels_8_9():
    view = widgets.RaceView("futex-vs-split", levels=(8, 9))
    view.play_button.click()
    assert "CPU0 -&gt; 0" in view.log.value
    view.kernel.value = 9
    view.play_button.click()
    assert "CPU0 -&gt; -16" in view.log.value
    view.reset()
    assert "CPU0 -&gt;" not in view.log.value and "0 -: start" in view.log.value


def test_live_thp_vmstat_is_text():
    text = sm.live_thp_vmstat()
    assert isinstance(text, str) and text
    assert text.startswith("/proc/vmstat not readable") or all(
        len(line.split()) == 2 for line in text.splitlines())


# ------------------------------------------------------------------ lessons 09-11: the swimlanes they draw

def _swimlane(name, level, **kw):
    from thplab import diagrams
    from thplab.races import RACES

    race = RACES[name](level, **kw)
    race.play()
    return race, diagrams.race_swimlane(race)


def test_lesson_09_swimlanes_old_waits_new_refuses():
    race0, d0 = _swimlane("split-vs-gup-fast", 0)
    race7, d7 = _swimlane("split-vs-gup-fast", 7)
    for d in (d0, d7):
        assert "ipi-sent" in d.svg and "ipi-ack" in d.svg and "irqs-off" in d.svg
        assert "irqs off on CPU1; waiting" in d.text
    assert race0.interleaving.results["CPU0"] == 0 and race7.interleaving.results["CPU0"] == -16
    assert "_PAGE_SPLITTING set" in d0.text and "_PAGE_SPLITTING" not in d7.text


def test_lesson_09_no_compound_lock_what_if_changes_nothing_in_this_race():
    # The lesson explains why: gup-fast never takes compound_lock, and the IPI already orders the CPUs.
    for level in (0, 7):
        as_written, _ = _swimlane("split-vs-gup-fast", level)
        what_if, _ = _swimlane("split-vs-gup-fast", level, without=("compound_lock",))
        assert [s.name for s in as_written.interleaving.steps] == [s.name for s in what_if.interleaving.steps]
    broken, d = _swimlane("split-vs-gup-fast", 8, without=("tlb_flush_ipi",))
    assert "THE ACCOUNTING BREAKS HERE" in d.text and problems(broken.machine)


def test_lesson_11_swimlanes_irqs_off_window_only_in_the_old_kernel():
    _, d0 = _swimlane("futex-vs-split", 0)
    race9, d9 = _swimlane("futex-vs-split", 9)
    assert "ipi-sent" in d0.svg and d0.svg.count('class="irqs-off"') >= 2
    assert "wait_split_huge_page" in d0.text
    assert "ipi-sent" not in d9.svg and race9.interleaving.results["CPU0"] == -16


def test_lesson_texts_fit_100_columns():
    texts = [sm.futex_table(), sm.pmd_during_split(0), sm.pmd_during_split(8),
             sm.splitting_bit_census(SCENARIOS["fork-pin-split"], levels=(0, 10))]
    texts += [p.render() for p in (sm.pmd_problem(21), sm.futex_problem(4), sm.splitting_problem(9))]
    for text in texts:
        assert max(map(len, text.splitlines())) <= 100, text
