"""pytest plugin: keep each lesson as nbval ran it, outputs and all, for the course website.

``make test-notebooks`` loads it (``-p nbval_executed --executed-dir build/executed``, with
etc/website on ``PYTHONPATH``). After the run, every notebook whose cells all passed is written
to the executed directory with the outputs its cells produced in this run; a notebook with a
failed cell is not written (and an older copy of it is removed), so ``make site``
(etc/website/build.py) runs that lesson itself instead of showing a broken run.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest


def pytest_addoption(parser):
    parser.addoption("--executed-dir", type=Path, default=None,
                     help="write each notebook nbval ran, with its outputs, into this directory")


class _Executed:
    def __init__(self, dest: Path):
        self.dest = dest
        self.files = {}      # IPyNbFile -> {cell index in its notebook: outputs}
        self.failed = set()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        parent = getattr(item, "parent", None)
        if not hasattr(item, "test_outputs") or not hasattr(parent, "nb"):
            return
        if report.failed:
            self.failed.add(parent)
        if call.when == "call":
            index = next(i for i, cell in enumerate(parent.nb.cells) if cell is item.cell)
            self.files.setdefault(parent, {})[index] = item.test_outputs or []

    def pytest_sessionfinish(self, session):
        self.dest.mkdir(parents=True, exist_ok=True)
        for parent, outputs in self.files.items():
            target = self.dest / Path(str(parent.fspath)).name
            if parent in self.failed:
                target.unlink(missing_ok=True)
                continue
            nb = copy.deepcopy(parent.nb)
            for index, outs in outputs.items():
                nb.cells[index].outputs = [nbformat.from_dict(o) for o in outs]
                nb.cells[index].execution_count = index + 1
            nbformat.write(nb, target)


def pytest_configure(config):
    dest = config.getoption("--executed-dir")
    if dest is not None:
        config.pluginmanager.register(_Executed(dest), "nbval-executed-writer")
