"""Every widget in lessons 01-12 and 14 is followed by its static twin.

Saved notebooks carry no widget state, so a reader without a running kernel (nbconvert HTML, the
course site, a notebook opened read-only) sees nothing where a widget was.  Each cell that displays
a widget must therefore be followed -- in the next code cell -- by a *static twin*: a cell marked
``# NBVAL_CHECK_OUTPUT`` whose recorded output (``tests/notebook_outputs/``) is a diagram (SVG) or
text, so the same information is there without a kernel and nbval keeps it honest.

How widget cells are found (the marker): a code cell is a widget cell when it calls one of the views
of :mod:`thplab.widgets` -- every class there that derives from ``thplab.widgets._View`` (found by
introspection, so a new view is covered without editing this test), written ``widgets.Name(``, as the
lessons do.  Lessons display widgets no other way: the lesson and exercise modules build no
ipywidgets of their own except lesson 00's click counter (checked below).

For a ``widgets.Quiz`` the twin must pose the *same* question: it calls the same problem generator
(the Quiz's ``factory``, or ``Problem.generate`` with the Quiz's ``kind`` and ``levels``) with the
Quiz's seed, so the plain-code reader answers the problem the widget starts with.  For a
``widgets.PatchDiff(N)`` it prints patch N's diff (``widgets.code_diff(N, ...)`` or
``widgets.patch_text(N)``).
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted(p for p in (REPO / "notebooks").glob("*.ipynb") if p.name[:2] not in ("00", "13", "16"))
MARK = "# NBVAL_CHECK_OUTPUT"
STATIC_MIMES = ("image/svg+xml", "text/plain")


def _views():
    widgets = pytest.importorskip("thplab.widgets")
    return sorted(name for name, obj in vars(widgets).items()
                  if inspect.isclass(obj) and issubclass(obj, widgets._View) and obj is not widgets._View)


def _source(cell) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _widget_calls(source, views):
    """The ``widgets.<View>(...)`` calls in a cell's code, as AST nodes."""
    return [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr in views
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "widgets"]


def _static(outputs) -> bool:
    return any(o.get("output_type") == "stream" and o.get("text", "").strip()
               or any(m in o.get("data", {}) for m in STATIC_MIMES) for o in outputs)


def _quiz_question(call):
    """``(generator, seed, keywords)`` of a ``widgets.Quiz(...)`` call, all as source text."""
    kw = {k.arg: ast.unparse(k.value) for k in call.keywords}
    seed = kw.pop("seed", ast.unparse(call.args[0]) if call.args else "0")
    factory = call.keywords[[k.arg for k in call.keywords].index("factory")].value if "factory" in kw else None
    if factory is None:
        return "Problem.generate", seed, {k: v for k, v in kw.items() if k in ("kind", "levels")}
    if isinstance(factory, ast.Call) and ast.unparse(factory.func) in ("functools.partial", "partial"):
        return (ast.unparse(factory.args[0]), seed,
                {k.arg: ast.unparse(k.value) for k in factory.keywords})
    return ast.unparse(factory), seed, {}


def _poses(twin_source, generator, seed, keywords) -> bool:
    for node in ast.walk(ast.parse(twin_source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == generator:
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            twin_seed = kw.pop("seed", ast.unparse(node.args[0]) if node.args else "0")
            if twin_seed == seed and all(kw.get(k) == v for k, v in keywords.items()):
                return True
    return False


def twin_problems(path: Path, views) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    rec_path = REPO / "tests" / "notebook_outputs" / f"{path.stem}.json"
    recorded = json.loads(rec_path.read_text())["cells"] if rec_path.exists() else {}
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    problems = []
    for n, i in enumerate(code):
        calls = _widget_calls(_source(cells[i]), views)
        if not calls:
            continue
        shown = ", ".join(sorted({c.func.attr for c in calls}))
        if n + 1 == len(code):
            problems.append(f"cell {i} ({shown}): no code cell follows it")
            continue
        j = code[n + 1]
        twin = _source(cells[j])
        if MARK not in twin or _widget_calls(twin, views):
            problems.append(f"cell {i} ({shown}): the next code cell, {j}, is not a static twin "
                            f"(a '{MARK}' cell showing a diagram or text)")
            continue
        if not _static(recorded.get(str(j), {}).get("outputs", [])):
            problems.append(f"cell {i} ({shown}): its twin, cell {j}, has no recorded diagram or text")
        for call in calls:
            if call.func.attr == "PatchDiff" and not re.search(
                    rf"\b(code_diff|patch_text)\({ast.unparse(call.args[0])}\b", twin):
                problems.append(f"cell {i} (PatchDiff): its twin, cell {j}, prints no diff of that patch "
                                "(widgets.code_diff or widgets.patch_text)")
            if call.func.attr == "Quiz" and not _poses(twin, *_quiz_question(call)):
                generator, seed, keywords = _quiz_question(call)
                problems.append(f"cell {i} (Quiz): its twin, cell {j}, does not call {generator} with "
                                f"seed={seed}" + "".join(f", {k}={v}" for k, v in keywords.items()))
    return problems


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_every_widget_is_followed_by_its_static_twin(path):
    problems = twin_problems(path, _views())
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_the_marker_knows_every_view():
    """The introspected views are the ones the lessons use, and no lesson module builds its own widget."""
    assert {"Quiz", "StepThrough", "ScenarioExplorer", "RaceView", "PatchDiff", "AddressSlicer"} <= set(_views())
    builders = [p.relative_to(REPO).as_posix() for d in ("lessons", "exercises")
                for p in sorted((REPO / "thplab" / d).glob("*.py")) if "ipywidgets" in p.read_text()]
    assert builders == ["thplab/lessons/foundations.py"]  # CounterCheck, lesson 00 only
    assert "counter_button" not in "".join(p.read_text() for p in LESSONS)


def _notebook(tmp_path, sources):
    cells = [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
              "source": s} for i, s in enumerate(sources)]
    p = tmp_path / "99-x.ipynb"
    p.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}))
    return p


def test_the_check_finds_missing_and_wrong_twins(tmp_path):
    views = _views()
    quiz = "widgets.Quiz(seed=3, factory=fnd.IndexQuestion.generate)"
    twin = MARK + "\nproblem = fnd.IndexQuestion.generate(seed={})\nprint(problem.render())"
    cases = {
        (quiz, "print(1)"): "is not a static twin",
        (quiz, quiz): "is not a static twin",
        (quiz, twin.format(4)): "does not call fnd.IndexQuestion.generate with seed=3",
        ("widgets.Quiz(seed=1, kind='page_count', levels=(0,))",
         MARK + "\nProblem.generate(seed=1, kind='page_count', levels=(3, 4))"): "kind='page_count'",
        ("widgets.StepThrough(rec)",): "no code cell follows it",
        ("widgets.PatchDiff(4)", MARK + "\nprint(widgets.code_diff(6, 'get_page'))"): "prints no diff of that patch",
    }
    for sources, expected in cases.items():
        found = twin_problems(_notebook(tmp_path, list(sources)), views)
        assert any(expected in p for p in found), (sources, found)
    # a right twin passes the question check (its recorded output is missing here, and that is reported)
    found = twin_problems(_notebook(tmp_path, [quiz, twin.format(3)]), views)
    assert found and all("no recorded diagram or text" in p for p in found), found
    assert not re.search("not a static twin|does not call", " ".join(found))
