"""Coding exercises (thplab.exercises): the checkers accept the solutions, catch the typical
mistakes with the right diagnosis, treat an untouched skeleton as "not done yet", and never
let a learner's bug escape as an exception."""

import warnings

import numpy as np
import pytest

from thplab import Machine, exercises
from thplab.exercises._base import summarize
from thplab.params import HPAGE_PMD_NR
from thplab.trace import Recorder

NAMES = list(exercises.EXERCISES)


def _flat(text):
    return " ".join(str(text).split())


def _skeleton_function(ex, body=None):
    """The function defined by ``ex.skeleton``, its body optionally replaced by ``body``."""
    source = ex.skeleton
    if body is not None:
        source = source.replace("return NotImplemented  # replace with your code", body)
    namespace = {}
    exec(source, namespace)
    return namespace[ex.function.__name__]


def test_registry_and_describe():
    assert NAMES == ["old-refcount-handover", "split-huge-pmd-arithmetic", "can-split", "held-memory",
                     "total-mapcount"]
    text = exercises.describe()
    assert all(name in text for name in NAMES)
    assert repr(text) == str(text)  # shows without quotes as a cell's last expression
    with pytest.raises(KeyError, match="can-split"):
        exercises.get("no-such-exercise")


@pytest.mark.parametrize("name", NAMES)
def test_solution_passes(name):
    ex = exercises.get(name)
    report = ex.check(ex.function, n=50)
    assert report.status == "pass", str(report)
    assert "all 50 cases agree" in str(report)
    assert report.passed


@pytest.mark.parametrize("name", NAMES)
def test_solution_text_runs_on_its_own(name):
    ex = exercises.get(name)
    namespace = {}
    exec(ex.solution(), namespace)
    assert ex.check(namespace[ex.function.__name__], n=20).passed


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("body", [None, "...", "raise NotImplementedError", "pass"])
def test_untouched_skeleton_is_not_done_yet(name, body):
    ex = exercises.get(name)
    fn = _skeleton_function(ex, body)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = ex.check(fn)
    assert report.status == "unwritten"
    assert "not done yet" in str(report)
    assert "DIAGNOSIS" not in str(report) and "the model" not in str(report)  # nothing revealed


@pytest.mark.parametrize("name", NAMES)
def test_each_typical_mistake_gets_its_diagnosis(name):
    ex = exercises.get(name)
    assert len(ex.mistakes) >= 3
    for wrong, meaning in ex.mistakes:
        report = ex.check(wrong)
        assert report.status == "fail", f"{wrong.__name__} passed"
        assert report.diagnosis == meaning, f"{wrong.__name__}: {report.diagnosis}"
        assert _flat(meaning) in _flat(report)
        assert "the model" in str(report) and "yours" in str(report)


@pytest.mark.parametrize("name", NAMES)
def test_a_raising_function_is_reported_not_raised(name):
    ex = exercises.get(name)

    def broken(*args):
        return len(args) // 0

    report = ex.check(broken)
    assert report.status == "error"
    assert "ZeroDivisionError: integer division or modulo by zero" in str(report)
    assert "case seed 0" in str(report)


def test_numpy_warnings_and_bad_returns_are_reported():
    ex = exercises.get("can-split")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = ex.check(lambda page_count, mapcounts: mapcounts.sum() / 0 > 1)
    assert report.status == "error" and "FloatingPointError" in str(report)
    report = ex.check(lambda page_count, mapcounts: 0)
    assert report.status == "error" and "int 0; that should be True or False" in str(report)
    report = exercises.get("old-refcount-handover").check(lambda a, b, c: (1, 2))
    assert report.status == "error" and "should return 3 values" in str(report)
    assert ex.check(None).status == "error"


def test_learner_may_change_the_input_arrays():
    ex = exercises.get("split-huge-pmd-arithmetic")
    before = [c.args[2].copy() for c in ex.cases(5)]

    def in_place(head_count, head_mapcount, tail_mapcounts):
        tail_mapcounts += 1
        return head_count + 511, head_mapcount, tail_mapcounts

    assert ex.check(in_place, n=5).passed
    assert all((c.args[2] == b).all() for c, b in zip(ex.cases(5), before))


@pytest.mark.parametrize("name", NAMES)
def test_cases_are_deterministic(name):
    fresh = type(exercises.get(name))()
    again = type(exercises.get(name))()
    for seed in (0, 7, 31):
        a, b = fresh.case(seed), again.case(seed)
        assert a.steps == b.steps and a.note == b.note
        for x, y in zip(a.args + a.expected, b.args + b.expected):
            assert all(np.array_equal(p, q) for p, q in zip(x, y)) if isinstance(x, list) \
                else np.array_equal(x, y)
    assert fresh.case(0).steps != fresh.case(1).steps


def test_cases_cover_the_interesting_states():
    split = [c.expected[0] for c in exercises.get("can-split").cases()]
    rule_one = [c for c in exercises.get("can-split").cases() if c.args[1][0] == 0]
    assert 10 <= sum(split) <= 40 and rule_one and not any(c.expected[0] for c in rule_one)
    freed = [c for c in exercises.get("held-memory").cases() if not all(t.any() for t in c.args[0])]
    assert 10 <= len(freed) <= 40
    pins = [int(c.args[2].max()) for c in exercises.get("old-refcount-handover").cases()]
    assert 0 in pins and max(pins) >= 2
    pte_mapped = [c for c in exercises.get("split-huge-pmd-arithmetic").cases() if (c.args[2] >= 0).any()]
    assert len(pte_mapped) >= 25
    v45 = exercises.get("total-mapcount").cases()
    double_map = [c for c in v45 if c.args[2]]
    assert 8 <= len(double_map) <= 40 and any(c.args[0] == -1 for c in v45)
    assert any(c.args[0] >= 1 for c in double_map)     # DoubleMap with more than one PMD left


def test_can_split_page_count_is_what_the_split_reads():
    m = Machine.boot("8M", patches=10, seed=0)
    pid, addr, head = m.map_thp()
    m.fork(pid)
    m.get_user_pages_fast(pid, addr, 1)
    seen_by_learner = int(m.page_count(head)) + 1
    with Recorder(m) as rec:
        m.split_huge_page(head)
    racy = next(s for s in rec.steps if s.name == "split_huge_page: racy check")
    assert racy.detail["page_count"] == seen_by_learner
    assert racy.detail["total_mapcount"] == int(m.page_mapcount(np.arange(head, head + HPAGE_PMD_NR)).sum())


def test_handover_is_read_before_the_tails_put_page():
    ex = exercises.get("old-refcount-handover")
    case = ex.case(3)
    head_count, head_mapcount, tail_pins = case.args
    # After the split each tail keeps M + its pins: one less than at "counts redistributed".
    assert (case.expected[1] == head_mapcount + 1 + tail_pins + 1).all()
    assert case.expected[0] == head_count - tail_pins.sum()


def test_help_texts():
    ex = type(exercises.get("can-split"))()
    first, second = ex.hint(), ex.hint()
    assert first.startswith("Hint 1 of") and second.startswith("Hint 2 of")
    assert ex.hint(1) == first and "solution" in ex.hint(99)
    assert "def can_split" in ex.solution() and "NotImplemented" not in ex.solution()
    for name in NAMES:
        ex = exercises.get(name)
        assert ex.function.__name__ in ex.statement and ex.function.__name__ in ex.skeleton
        assert f'exercises.get("{name}")' in ex.statement and "ex.hint()" in ex.statement
        assert "https://" in ex.statement
        texts = [ex.statement, ex.skeleton, ex.solution()] + [str(ex.check(w)) for w, _ in ex.mistakes]
        long = [line for t in texts for line in t.splitlines() if len(line) > 100]
        assert not long, long
    assert "not archived" in exercises.get("split-huge-pmd-arithmetic").statement


def test_report_shows_as_text_and_html():
    ex = exercises.get("held-memory")
    report = ex.check(ex.mistakes[0][0])
    assert repr(report) == str(report)
    html = report._repr_html_()
    assert html.startswith("<pre") and "DIAGNOSIS" in html and "&lt;" not in str(report)


def test_summarize_reads_runs():
    assert summarize(np.array([1, 1, 3, 3, 1])) == "5 values: all 1 except [2-3]=3"
    assert summarize(np.array([0, 5, 0, 0])) == "4 values: all 0 except [1]=5"
    assert summarize(np.bool_(True)) == "True" and summarize(7) == "7"


def test_package_docstring_example():
    import doctest

    assert doctest.testmod(exercises, raise_on_error=True).attempted >= 3
