"""Lesson 06 (patch 04): the helpers in thplab.lessons.pmd_split."""

import pytest

from thplab import diagrams, widgets
from thplab.errors import BadArgument
from thplab.invariants import problems
from thplab.lessons import pmd_split as ps
from thplab.params import HPAGE_PMD_NR
from thplab.problems import NOT_ANSWERED


def test_split_pmd_trace_passes_through_an_empty_pmd():
    trace = ps.split_pmd_trace(level=4)
    states = [diagrams.pmd_state(ps._entry(s.state, trace.slot)) for s in trace.recorder.steps]
    assert states == ["huge", "empty", "table", "table"]
    cleared = trace.recorder.steps[1].state.mem_map
    # In the window: the head already has the 511 new references, the tails do not count their PTEs yet.
    assert cleared["_count"][trace.head] == 2 + HPAGE_PMD_NR - 1
    assert cleared["_mapcount"][trace.head + 1] == -1
    trace.machine.check()


def test_pmd_window_table_reads_the_model():
    text = ps.pmd_window_table(ps.split_pmd_trace(level=4))
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines)
    cleared = next(line for line in lines if line.startswith("PMD cleared"))
    assert "0x0 empty" in cleared and "513" in cleared and ps.LOCKLESS_SEES["empty"] in cleared
    assert next(line for line in lines if line.startswith("start")).split()[2] == "huge"


def test_split_pmd_trace_needs_patch_04():
    with pytest.raises(BadArgument, match="patch 04"):
        ps.split_pmd_trace(level=3)
    with pytest.raises(BadArgument, match="patch 04"):
        ps.empty_pmd_race(level=0)


@pytest.mark.parametrize("level", [4, 6, 10])
def test_empty_pmd_race_leaves_ptes_outside_every_vma(level):
    race = ps.empty_pmd_race(level)
    race.play()
    il = race.interleaving
    assert il.finished and not il.errors
    assert any("PMD read without its lock: empty" in s.name for s in il.steps)
    assert any("outside every VMA" in p for p in problems(race.machine))
    assert race.machine.mem_map["_count"][race.head] == HPAGE_PMD_NR   # munmap() dropped nothing
    lane = diagrams.race_swimlane(race)
    assert "THE ACCOUNTING BREAKS HERE" in lane.text and "PTE table populated" in lane.svg


def test_a_lockless_walker_on_a_whole_pmd_sees_huge():
    """Without the race, munmap() of the whole 2 MiB sees the huge PMD and unmaps it: nothing left."""
    from thplab import Machine

    m = Machine.boot("8M", patches=4)
    pid, addr, head = m.map_thp()
    m.split_huge_pmd(pid, addr)
    m.munmap(pid, addr, 2 << 20)
    m.check()
    assert not len(m.thp_heads())


@pytest.mark.parametrize("seed", range(16))
def test_munmap_problem_answers_and_diagnoses(seed):
    p = ps.munmap_problem(seed)
    assert p.render().startswith(f"ARG seed {seed}\nARG level 4")
    split = any("in the parent" in s for s in p.steps)
    if p.kind == "page_count":
        assert p.answer == (HPAGE_PMD_NR if split else 1) + HPAGE_PMD_NR - 1
    else:
        assert p.answer == (1 if split else 0)
    assert p.check(None) == (False, NOT_ANSWERED)
    assert p.check(p.answer)[0]
    for wrong, hint in p.diagnoses.items():
        ok, message = p.check(wrong)
        assert not ok and hint in message
    assert p.answer not in p.diagnoses


def test_munmap_problem_diagnoses_the_pmd_counted_in_a_tail():
    p = next(q for q in map(ps.munmap_problem, range(40))
             if q.kind == "tail_mapcount" and not any("in the parent" in s for s in q.steps))
    assert "only in the head" in p.check(1)[1]


def test_quiz_takes_munmap_problem():
    quiz = widgets.Quiz(seed=0, factory=ps.munmap_problem)
    assert "ARG seed 0" in quiz.problem.render()
