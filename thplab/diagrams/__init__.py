"""SVG diagrams drawn from the model's state -- a view: the model never imports this package.

Each diagram function is a pure function of model state (and of what to
highlight) and returns a :class:`Diagram`: it shows itself in Jupyter as SVG,
``.svg`` is the document, ``.text`` its text twin (also each function's
``describe_*`` companion).  Needs ``drawsvg`` (the ``lab`` extra).
"""

from ._base import Diagram, runs
from .walk import describe_huge_vs_pte, describe_page_table_walk, huge_vs_pte, page_table_walk

__all__ = ["Diagram", "runs",
           "page_table_walk", "describe_page_table_walk", "huge_vs_pte", "describe_huge_vs_pte"]

from .mappings import ThpSnapshot, describe_thp_mappings, process_maps, snapshot_thp, thp_mappings  # noqa: E402

__all__ += ["thp_mappings", "describe_thp_mappings", "snapshot_thp", "ThpSnapshot", "process_maps"]

from .states import describe_pmd_state_machine, pmd_state_machine, pmd_transitions  # noqa: E402

__all__ += ["pmd_state_machine", "describe_pmd_state_machine", "pmd_transitions"]

from .swimlanes import (describe_race_swimlane, describe_split_counters, describe_split_swimlane,  # noqa: E402
                        pmd_state, race_swimlane, split_counters, split_swimlane)

__all__ += ["split_swimlane", "describe_split_swimlane", "split_counters", "describe_split_counters",
            "race_swimlane", "describe_race_swimlane", "pmd_state"]

from .charts import (costs_chart, describe_mem_map_used, figure_diagram, held_memory_chart,  # noqa: E402
                     mem_map_chart, plot_costs_by_kernel, plot_held_memory_log, plot_mem_map_used)

__all__ += ["figure_diagram", "plot_held_memory_log", "held_memory_chart", "plot_costs_by_kernel", "costs_chart",
            "plot_mem_map_used", "describe_mem_map_used", "mem_map_chart"]
