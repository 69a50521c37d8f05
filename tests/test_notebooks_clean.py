"""Notebooks are committed clean and in order.

Every ``notebooks/**/*.ipynb``: no outputs, no execution counts, no saved widget state, at least
one deterministic cell marked ``# NBVAL_CHECK_OUTPUT`` (checked by ``pytest --nbval-lax``), a
Python 3 kernel, and a file name that starts with its two-digit order (``03-split.ipynb``).
The browser harness's fixture notebooks must be clean too.
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


def assert_clean(path: Path) -> None:
    nb = _load(path)
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            if cell.get("outputs"):
                problems.append(f"cell {i} has outputs")
            if cell.get("execution_count") is not None:
                problems.append(f"cell {i} has execution_count {cell['execution_count']}")
        meta = cell.get("metadata", {})
        if "execution" in meta:
            problems.append(f"cell {i} has execution timing metadata")
        if "widgets" in meta:
            problems.append(f"cell {i} has widget metadata")
    if "widgets" in nb.get("metadata", {}):
        problems.append("notebook metadata has saved widget state ('widgets')")
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    assert not problems, f"{shown} is not clean (clear outputs before committing):\n" + "\n".join(problems)


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
    marked = [c for c in nb["cells"]
              if c["cell_type"] == "code" and "# NBVAL_CHECK_OUTPUT" in _source(c)]
    assert marked, f"{path.name}: no code cell marked '# NBVAL_CHECK_OUTPUT'"


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


def test_clean_check_catches_dirty_notebook(tmp_path):
    """The checker itself rejects what it must (so an empty notebooks/ still tests something)."""
    dirty = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {}}},
        "cells": [{"cell_type": "code", "id": "a", "metadata": {}, "execution_count": 3,
                   "outputs": [{"output_type": "stream", "name": "stdout", "text": "x"}],
                   "source": "print('x')"}],
    }
    p = tmp_path / "01-dirty.ipynb"
    p.write_text(json.dumps(dirty))
    with pytest.raises(AssertionError) as exc:
        assert_clean(p)
    msg = str(exc.value)
    assert "outputs" in msg and "execution_count" in msg and "widget state" in msg
