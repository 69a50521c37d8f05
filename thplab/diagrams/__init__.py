"""SVG diagrams drawn from the model's state -- a view: the model never imports this package.

Each diagram function is a pure function of model state (and of what to
highlight) and returns a :class:`Diagram`: it shows itself in Jupyter as SVG,
``.svg`` is the document, ``.text`` its text twin (also each function's
``describe_*`` companion).  Needs ``drawsvg`` (the ``lab`` extra); the charts
need matplotlib.

============================  ========  =========================================================
diagram                       lessons   drawn from
============================  ========  =========================================================
page_table_walk, huge_vs_pte  01        ``Machine.page_walk()``
thp_mappings                  06-14     page tables (:func:`process_maps`) and ``mem_map``
split_swimlane                02        a :class:`~thplab.trace.Recorder` of the old split
split_counters                08        a Recorder of the RFC split (level >= 6)
race_swimlane                 09-11     a played :class:`~thplab.races.Race`
pmd_state_machine             10        ``kernel.has()`` / ``kernel.caps``
held_memory_chart, ...        01,13,14  lesson helpers' data, via matplotlib
============================  ========  =========================================================
"""

from ._base import Diagram, runs
from .charts import (costs_chart, describe_mem_map_used, figure_diagram, held_memory_chart, mem_map_chart,
                     plot_costs_by_kernel, plot_held_memory_log, plot_mem_map_used)
from .mappings import ThpSnapshot, describe_thp_mappings, process_maps, snapshot_thp, thp_mappings
from .states import describe_pmd_state_machine, pmd_state_machine, pmd_transitions
from .swimlanes import (describe_race_swimlane, describe_split_counters, describe_split_swimlane, pmd_state,
                        race_swimlane, split_counters, split_swimlane)
from .walk import describe_huge_vs_pte, describe_page_table_walk, huge_vs_pte, page_table_walk

__all__ = [
    "Diagram", "runs",
    "page_table_walk", "describe_page_table_walk", "huge_vs_pte", "describe_huge_vs_pte",
    "thp_mappings", "describe_thp_mappings", "snapshot_thp", "ThpSnapshot", "process_maps",
    "split_swimlane", "describe_split_swimlane", "split_counters", "describe_split_counters",
    "race_swimlane", "describe_race_swimlane", "pmd_state",
    "pmd_state_machine", "describe_pmd_state_machine", "pmd_transitions",
    "figure_diagram", "plot_held_memory_log", "held_memory_chart", "plot_costs_by_kernel", "costs_chart",
    "plot_mem_map_used", "describe_mem_map_used", "mem_map_chart",
]
