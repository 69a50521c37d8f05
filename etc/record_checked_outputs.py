"""Prepare lesson notebooks for committing: clean, except the outputs nbval must check.

``pytest --nbval-lax`` compares a cell's output only when the cell is marked
``# NBVAL_CHECK_OUTPUT`` *and* the committed cell has been run (nbval skips the comparison for
a cell whose stored ``execution_count`` is null). So a committed lesson keeps, for its marked
cells only, the outputs and execution count of a fresh run; every other cell is committed
without outputs or execution count, and no widget state or timing metadata is kept.

Usage (from the repository root, in the project's venv)::

    .venv/bin/python etc/record_checked_outputs.py                 # every notebooks/**/*.ipynb
    .venv/bin/python etc/record_checked_outputs.py notebooks/03-split.ipynb
    .venv/bin/python etc/record_checked_outputs.py --strip-only ...  # no run: just clean

or ``make notebooks``. Each notebook runs top to bottom in a fresh kernel, in its own folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MARK = "# NBVAL_CHECK_OUTPUT"
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
REPO = Path(__file__).resolve().parents[1]


def _is_marked(cell) -> bool:
    return cell.cell_type == "code" and MARK in cell.source


def clean(nb, keep_marked: bool) -> list[str]:
    """Strip ``nb`` in place; return problems (marked cells that cannot be recorded)."""
    problems = []
    nb.metadata.pop("widgets", None)
    # the kernel records the exact Python version: machine-dependent churn in every diff
    nb.metadata.get("language_info", {}).pop("version", None)
    for i, cell in enumerate(nb.cells):
        for key in ("execution", "widgets"):
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        if keep_marked and _is_marked(cell):
            for out in cell.outputs:
                if any(m in out.get("data", {}) for m in WIDGET_MIMES):
                    problems.append(f"cell {i} is marked {MARK} but displays a widget")
                if out.get("output_type") == "error":
                    problems.append(f"cell {i} is marked {MARK} but raised {out.get('ename')}")
            continue
        cell.outputs = []
        cell.execution_count = None
    return problems


def process(path: Path, run: bool, timeout: int) -> list[str]:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if run:
        from nbclient import NotebookClient

        # allow_errors: report a failing marked cell by name instead of a bare traceback
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    problems = clean(nb, keep_marked=run)
    if not problems:
        nbformat.write(nb, path)
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--strip-only", action="store_true",
                    help="do not run: clear all outputs (keeps marked cells' outputs as they are)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = ap.parse_args(argv)
    paths = args.paths or sorted(
        p for p in (REPO / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )
    failed = 0
    for path in paths:
        if args.strip_only:
            import nbformat

            nb = nbformat.read(path, as_version=4)
            problems = clean(nb, keep_marked=True)  # leaves marked cells' outputs alone
            nbformat.write(nb, path)
            status = "stripped" if not problems else "stripped, but"
        else:
            problems = process(path, run=True, timeout=args.timeout)
            status = "recorded" if not problems else "NOT WRITTEN"
        print(f"{path}: {status}")
        for p in problems:
            print(f"  - {p}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
