"""Notebooks are committed clean and in order, and their checked outputs are recorded.

Every ``notebooks/*.ipynb``: no outputs, no execution counts, no saved widget state or timing
metadata; at least one cell marked ``# NBVAL_CHECK_OUTPUT``, whose expected output is recorded
(for the cell's current source) in ``tests/notebook_outputs/<lesson>.json`` -- nbval checks
it against a copy with the output put back (etc/notebook_outputs.py); a Python 3 kernel; a
file name that starts with its two-digit order. The browser fixtures must be clean too.

To produce exactly this state: ``make notebooks``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
FIXTURE_DIR = REPO / "tests" / "browser" / "fixtures"


def _find(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


LESSONS = _find(NOTEBOOK_DIR)
FIXTURES = _find(FIXTURE_DIR)


def _ids(paths):
    return [p.relative_to(REPO).as_posix() for p in paths]


def _load(path: Path) -> dict:
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb.get("nbformat") == 4, f"{path.name}: nbformat {nb.get('nbformat')}, expected 4"
    return nb


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


MARK = "# NBVAL_CHECK_OUTPUT"
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")


def _marked(cell) -> bool:
    return cell["cell_type"] == "code" and MARK in _source(cell)


def assert_clean(path: Path) -> None:
    nb = _load(path)
    problems = []
    for i, cell in enumerate(nb["cells"]):
        meta = cell.get("metadata", {})
        if "execution" in meta:
            problems.append(f"cell {i} has execution timing metadata")
        if "widgets" in meta:
            problems.append(f"cell {i} has widget metadata")
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell['execution_count']}")
    if "widgets" in nb.get("metadata", {}):
        problems.append("notebook metadata has saved widget state ('widgets')")
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    assert not problems, (
        f"{shown} is not clean — run `make notebooks` (or "
        f"`.venv/bin/python etc/notebook_outputs.py record {shown}`):\n" + "\n".join(problems)
    )


@pytest.mark.parametrize("path", LESSONS + FIXTURES, ids=_ids(LESSONS + FIXTURES))
def test_notebook_is_clean(path):
    assert_clean(path)


@pytest.mark.parametrize("path", LESSONS + FIXTURES, ids=_ids(LESSONS + FIXTURES))
def test_notebook_kernel_and_format(path):
    nb = _load(path)
    ks = nb.get("metadata", {}).get("kernelspec", {})
    assert ks.get("name") == "python3", f"{path.name}: kernelspec {ks!r}, expected python3"
    # nbformat's own validation when available (it comes with JupyterLab)
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))


@pytest.mark.parametrize("path", LESSONS, ids=_ids(LESSONS))
def test_lesson_has_checked_output_cell(path):
    nb = _load(path)
    marked = [c for c in nb["cells"] if _marked(c)]
    assert marked, f"{path.name}: no code cell marked '# NBVAL_CHECK_OUTPUT'"


@pytest.mark.parametrize("path", LESSONS, ids=_ids(LESSONS))
def test_checked_outputs_are_recorded_for_current_sources(path):
    """Every marked cell has an expected output recorded for exactly its current source."""
    import hashlib

    rec_path = REPO / "tests" / "notebook_outputs" / f"{path.stem}.json"
    assert rec_path.exists(), f"{path.name}: no {rec_path.relative_to(REPO)}; run `make notebooks`"
    recorded = json.loads(rec_path.read_text())["cells"]
    for i, cell in enumerate(_load(path)["cells"]):
        if _marked(cell):
            sha = hashlib.sha256(_source(cell).encode()).hexdigest()[:16]
            rec = recorded.get(str(i))
            assert rec and rec["source_sha"] == sha, (
                f"{path.name} cell {i}: recorded output is missing or stale; run `make notebooks`")
            assert rec["outputs"], f"{path.name} cell {i}: recorded output is empty"


@pytest.mark.parametrize("path", LESSONS, ids=_ids(LESSONS))
def test_lesson_name_has_order(path):
    assert re.match(r"^\d{2}-[A-Za-z0-9][A-Za-z0-9_.-]*\.ipynb$", path.name), (
        f"{path.name}: lesson files are named NN-slug.ipynb (two-digit order first)"
    )


def test_lesson_set():
    """The entry point that `make lab` and the Binder link open exists once there are lessons."""
    if not LESSONS:
        assert not list(NOTEBOOK_DIR.rglob("*.ipynb")) if NOTEBOOK_DIR.is_dir() else True
        return
    assert (NOTEBOOK_DIR / "00-index.ipynb").exists(), "notebooks/00-index.ipynb is the entry point"


def _write(tmp_path, cells, metadata=None) -> Path:
    p = tmp_path / "01-x.ipynb"
    p.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": metadata or {},
                             "cells": cells}))
    return p


def _code(source, count=None, outputs=()):
    return {"cell_type": "code", "id": "c%d" % abs(hash(source)), "metadata": {},
            "execution_count": count, "outputs": list(outputs), "source": source}


STDOUT = {"output_type": "stream", "name": "stdout", "text": "4\n"}


def test_clean_check_catches_dirty_notebook(tmp_path):
    """The checker itself rejects what it must (so an empty notebooks/ still tests something)."""
    p = _write(tmp_path, [_code("print('x')", 3, [STDOUT])],
               metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {}}})
    with pytest.raises(AssertionError) as exc:
        assert_clean(p)
    msg = str(exc.value)
    assert "outputs" in msg and "execution_count" in msg and "widget state" in msg


def test_clean_check_rejects_outputs_even_in_marked_cells(tmp_path):
    marked = MARK + "\nprint(2 + 2)"
    assert_clean(_write(tmp_path, [_code(marked), _code("x = 1")]))
    with pytest.raises(AssertionError, match="has outputs"):
        assert_clean(_write(tmp_path, [_code(marked, 1, [STDOUT])]))
