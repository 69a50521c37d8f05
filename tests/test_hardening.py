"""Ordinary calls that used to break the machine (issue #9), and the structure behind them."""

import ast
from pathlib import Path

THPLAB = Path(__file__).resolve().parents[1] / "thplab"


def _imported_modules(path):
    """Every thplab module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add(node.module or "")
    return found


def test_migrate_does_not_import_the_series():
    """The series imports migrate (move_pages); migrate must not import the series back."""
    assert not {m for m in _imported_modules(THPLAB / "migrate.py") if m.startswith("series")}
