"""Keep lessons clean in git while ``pytest --nbval-lax`` still checks their numbers.

Committed notebooks carry no outputs at all.  The expected output of every cell
marked ``# NBVAL_CHECK_OUTPUT`` lives in ``tests/notebook_outputs/<lesson>.json``,
keyed by cell index and a hash of the cell's source (so an edited cell with a
stale record is caught).  nbval only compares a marked cell whose stored
``execution_count`` is set, so the test run works on copies:

    python etc/notebook_outputs.py record [NOTEBOOK ...]   # run lessons, store expected outputs, strip
    python etc/notebook_outputs.py inject DEST              # copies of all lessons with outputs put back
    python etc/notebook_outputs.py strip [NOTEBOOK ...]     # just clean

``make notebooks`` records; ``make test`` injects into ``build/nbval`` and runs nbval there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

MARK = "# NBVAL_CHECK_OUTPUT"
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
REPO = Path(__file__).resolve().parents[1]
LESSONS = REPO / "notebooks"
RECORDS = REPO / "tests" / "notebook_outputs"


def lessons() -> list[Path]:
    return sorted(p for p in LESSONS.glob("*.ipynb"))


def source_hash(cell) -> str:
    src = cell.source if isinstance(cell.source, str) else "".join(cell.source)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def is_marked(cell) -> bool:
    src = cell.source if isinstance(cell.source, str) else "".join(cell.source)
    return cell.cell_type == "code" and MARK in src


def strip(nb) -> None:
    """No outputs, no execution counts, no widget state, no timing or version metadata."""
    nb.metadata.pop("widgets", None)
    nb.metadata.get("language_info", {}).pop("version", None)
    for cell in nb.cells:
        for key in ("execution", "widgets", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None


def _merge_streams(outputs) -> list[dict]:
    """Join consecutive stdout (or stderr) chunks: how the kernel chunks a stream varies by run,
    nbval compares them joined anyway, and joined records give stable diffs."""
    merged: list[dict] = []
    for o in outputs:
        o = dict(o)
        prev = merged[-1] if merged else None
        if (o.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                and prev.get("name") == o.get("name")):
            prev["text"] = prev["text"] + o["text"]
        else:
            merged.append(o)
    return merged


def record(path: Path, timeout: int) -> list[str]:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    problems, cells = [], {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            if out.get("output_type") == "error":
                problems.append(f"cell {i} raised {out.get('ename')}: {out.get('evalue')}")
        if is_marked(cell):
            if any(m in out.get("data", {}) for out in cell.outputs for m in WIDGET_MIMES):
                problems.append(f"cell {i} is marked {MARK} but displays a widget")
            outputs = _merge_streams(cell.outputs)
            for o in outputs:
                o.pop("execution_count", None)
                o.get("metadata", {}).clear()
            cells[str(i)] = {"source_sha": source_hash(cell), "outputs": outputs}
    if not cells:
        problems.append(f"no cell is marked {MARK}")
    if not problems:
        RECORDS.mkdir(parents=True, exist_ok=True)
        (RECORDS / f"{path.stem}.json").write_text(json.dumps({"cells": cells}, indent=1, sort_keys=True) + "\n")
        strip(nb)
        nbformat.write(nb, path)
    return problems


def inject(dest: Path) -> list[str]:
    """Write copies of the lessons into ``dest`` with recorded outputs in marked cells."""
    import nbformat

    problems = []
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for extra in LESSONS.iterdir():
        if extra.suffix != ".ipynb" and extra.is_file():
            shutil.copy(extra, dest / extra.name)
    for path in lessons():
        nb = nbformat.read(path, as_version=4)
        rec_path = RECORDS / f"{path.stem}.json"
        recorded = json.loads(rec_path.read_text())["cells"] if rec_path.exists() else {}
        for i, cell in enumerate(nb.cells):
            if not is_marked(cell):
                continue
            rec = recorded.get(str(i))
            if rec is None or rec["source_sha"] != source_hash(cell):
                problems.append(f"{path.name} cell {i}: no up-to-date recorded output (run `make notebooks`)")
                continue
            cell.outputs = [nbformat.from_dict(o) for o in rec["outputs"]]
            cell.execution_count = i + 1
        nbformat.write(nb, dest / path.name)
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("record", "inject", "strip"))
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args(argv)
    if args.action == "inject":
        if len(args.paths) != 1:
            ap.error("inject takes one destination folder")
        problems = inject(args.paths[0])
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    failed = 0
    for path in args.paths or lessons():
        if args.action == "strip":
            import nbformat

            nb = nbformat.read(path, as_version=4)
            strip(nb)
            nbformat.write(nb, path)
            print(f"{path}: stripped")
            continue
        problems = record(path, args.timeout)
        print(f"{path}: {'recorded' if not problems else 'NOT RECORDED'}")
        for p in problems:
            print(f"  - {p}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
