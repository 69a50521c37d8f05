"""Running the experiments in child processes, and their results.

:func:`run_experiment` starts one experiment in a fresh interpreter
(:mod:`thplab.live.child`) with a timeout and reads its JSON result into an
:class:`ExperimentResult`; :func:`run_all` runs several into a
:class:`LiveRun`. :func:`load_recorded` returns a run recorded on a real
machine, for when live probing is unavailable; its ``source`` is
``"recorded"``.
"""

import dataclasses
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import probes
from .experiments import EXPERIMENTS, utc_now

__all__ = ["RECORDED_PATH", "ExperimentResult", "LiveRun", "run_experiment", "run_all",
           "save_run", "load_recorded"]

#: Where :func:`load_recorded` finds the shipped recording.
RECORDED_PATH = Path(__file__).resolve().parent.parent / "data" / "live-recorded.json"


@dataclass
class ExperimentResult:
    """What one experiment observed on the real kernel.

    Attributes
    ----------
    name : str
        Key of :data:`EXPERIMENTS`.
    status : str
        ``"ok"``, ``"unavailable"`` (with ``reason``) or ``"failed"``
        (``reason`` has the error).
    kernel, date : str
        ``uname -r`` and the UTC time of the run (ISO 8601).
    steps : list of dict
        Per operation: ``name``, ``op`` (the syscalls), ``vmstat_delta``
        (see :func:`thplab.live.formats.vmstat_delta`), and ``views`` (``"self"``, and
        ``"child"`` after a fork), each with ``smaps`` figures, page counts
        over the 512 subpages, and per-subpage ``samples``.
    notes : list of str
    source : str
        ``"live"``, or ``"recorded"`` when loaded by :func:`load_recorded`.
    """

    name: str
    status: str
    reason: str = ""
    kernel: str = ""
    date: str = ""
    steps: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    source: str = "live"

    def step(self, name):
        """The step called `name` (``KeyError`` if absent)."""
        for step in self.steps:
            if step["name"] == name:
                return step
        raise KeyError(f"{self.name} has no step {name!r}")

    @classmethod
    def from_dict(cls, data):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class LiveRun:
    """A set of experiment results, with the machine they ran on."""

    source: str
    kernel: str
    date: str
    settings: dict
    experiments: dict

    @classmethod
    def from_dict(cls, data, source=None):
        source = source or data.get("source", "live")
        experiments = {name: ExperimentResult.from_dict({**data["experiments"][name],
                                                         "source": source})
                       for name in EXPERIMENTS if name in data["experiments"]}
        return cls(source, data["kernel"], data["date"], data["settings"], experiments)

    def to_dict(self):
        return dataclasses.asdict(self)


def _child_env():
    """Environment for the experiment child: this ``thplab`` first on ``sys.path``."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def run_experiment(name, timeout=10.0):
    """Run one experiment in a child process and return its result.

    The child (``python -m thplab.live.child NAME PID``) maps 4 MiB, so a
    crash, a hang (killed after `timeout` seconds) or a leak cannot hurt the
    caller, typically a notebook kernel; and it is killed when the caller
    dies (:mod:`thplab.live.child`).

    Returns
    -------
    ExperimentResult
        ``status`` is ``"unavailable"`` when the machine cannot run it (not
        Linux, THP off, probes unreadable) and ``"failed"`` when the child
        crashed or timed out.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    header = {"name": name, "kernel": platform.release(), "date": utc_now()}
    if reason := probes.thp_unavailable_reason():
        return ExperimentResult(status="unavailable", reason=reason, **header)
    command = [sys.executable, "-m", "thplab.live.child", name, str(os.getpid())]
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                               env=_child_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ExperimentResult(status="failed", reason=f"timed out after {timeout} s", **header)
    if child.returncode != 0:
        tail = (child.stderr.strip().splitlines() or [""])[-1]
        return ExperimentResult(status="failed",
                                reason=f"child exited with {child.returncode}: {tail}", **header)
    return ExperimentResult.from_dict(json.loads(child.stdout))


def run_all(names=None, timeout=10.0, progress=None):
    """Run experiments (all of :data:`EXPERIMENTS` by default) and return a :class:`LiveRun`.

    ``progress(number, total, name, result)``, if given, is called before each
    experiment (``result`` None) and after it (its result).
    """
    settings = probes.read_thp_settings()
    names = list(names or EXPERIMENTS)
    results = {}
    for number, name in enumerate(names, 1):
        if progress:
            progress(number, len(names), name, None)
        results[name] = run_experiment(name, timeout)
        if progress:
            progress(number, len(names), name, results[name])
    return LiveRun("live", platform.release(), utc_now(), dataclasses.asdict(settings), results)


def save_run(run, path):
    """Write `run` as JSON (the format of :func:`load_recorded`)."""
    Path(path).write_text(json.dumps(run.to_dict(), indent=1, sort_keys=True) + "\n")


def load_recorded(path=None):
    """Load the run recorded on a real machine and shipped with thplab.

    Its ``source`` (and each result's) is ``"recorded"``: show it labelled
    as such, with its ``kernel`` and ``date``, never as a live reading.
    """
    data = json.loads(Path(path or RECORDED_PATH).read_text())
    return LiveRun.from_dict(data, source="recorded")

