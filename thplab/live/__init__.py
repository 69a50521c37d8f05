"""Probes of the real Linux kernel under the notebook, and experiments on it.

Everything the model simulates can also be watched on the kernel this machine
runs. The package, one module per concern (each imports only those above it):

* :mod:`~thplab.live.formats` -- the layouts of the /proc and /sys files and
  pure parsers of their text and bytes
* :mod:`~thplab.live.probes` -- reading them (never writing):
  :func:`read_thp_settings`, :func:`read_vmstat`, :func:`read_smaps`,
  :func:`read_pagemap`, :func:`read_kpageflags`, :func:`read_kpagecount`,
  :func:`read_kernel_config`, :func:`thp_unavailable_reason`,
  :func:`recorded_only` (``THPLAB_LIVE=recorded``: the recorded run, not this kernel)
* :mod:`~thplab.live.syscalls` -- the libc calls (``Libc``, ``MADV_*``, ...)
  of the experiments and ``benchmarks/bench_vs_kernel.py``
* :mod:`~thplab.live.experiments` -- what each experiment does, inside the
  child process (:data:`EXPERIMENTS`)
* :mod:`~thplab.live.runs` -- starting that child (:func:`run_experiment`,
  :func:`run_all`) and the results (:class:`LiveRun`,
  :func:`load_recorded`: a run recorded on a real machine, for when live
  probing is unavailable; its ``source`` is ``"recorded"``)
* :mod:`~thplab.live.comparison` -- the same experiments on the model
  (:func:`predict`) and :func:`compare`, the real kernel next to the model
  at series level 0 (the old kernel), 10 (RFC v1) and, for the lab, v4.5
  (:data:`KERNELS`), each difference from v4.5 named by a later change of
  :mod:`thplab.later`
* :mod:`~thplab.live.report` -- :func:`format_run` and :func:`main`,
  ``python -m thplab live``
* :mod:`~thplab.live.child` -- the child's entry point (not imported here)

What the lessons and the CLI use is re-exported here (``from thplab import
live; live.compare(...)``). ``PROC`` and ``SYS_THP`` are not: the probes
read them from :mod:`thplab.live.probes` at call time, so that is where a
test points them at sample files (``live.probes.PROC = ...``).
"""

from . import comparison, experiments, formats, probes, report, runs, syscalls  # noqa: F401
from .comparison import *  # noqa: F401,F403
from .experiments import EXPERIMENTS
from .formats import *  # noqa: F401,F403
from .probes import (HPAGE_PMD_NR, PAGE_SIZE, KernelConfig, KpageValues, Pagemap, SmapsRange,
                     ThpSettings, Vmstat, read_kernel_config, read_kpagecount, read_kpageflags,
                     read_pagemap, read_smaps, read_thp_settings, read_vmstat, recorded_only,
                     thp_unavailable_reason)
# lessons/live_lab.py formats its tables' cells as the report does.
from .report import _cell, format_run, main  # noqa: F401
from .runs import *  # noqa: F401,F403

__all__ = [
    *formats.__all__,
    "PAGE_SIZE", "HPAGE_PMD_NR", "ThpSettings", "Vmstat", "SmapsRange", "Pagemap",
    "KpageValues", "KernelConfig", "read_thp_settings", "read_vmstat", "read_smaps",
    "read_pagemap", "read_kpageflags", "read_kpagecount", "read_kernel_config",
    "thp_unavailable_reason", "recorded_only",
    "EXPERIMENTS", *runs.__all__, *comparison.__all__, *report.__all__,
]
