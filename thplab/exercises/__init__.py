"""Coding exercises: write the function that states a kernel rule; the model checks it.

Three cells in a notebook::

    ex = exercises.get("can-split"); print(ex.statement)
    # a cell with your function, started from print(ex.skeleton)
    ex.check(can_split)

``ex.check()`` runs your function on 50 seeded states of the model and says
"not done yet", "all 50 cases agree", or shows the first case that differs
(the steps that built it, the inputs, the model's answer and yours) with a
DIAGNOSIS when your answers are those of a typical mistake.  ``ex.hint()``
gives the next hint; ``print(ex.solution())`` shows an answer, only when asked.

>>> ex = get("can-split")
>>> namespace = {}
>>> exec(ex.skeleton, namespace)
>>> ex.check(namespace["can_split"], n=3).status
'unwritten'
"""

from ._base import Case, Exercise, Report, Text
from .can_split import EXERCISE as _can_split
from .held_memory import EXERCISE as _held_memory
from .old_refcount_handover import EXERCISE as _old_refcount_handover
from .split_huge_pmd_arithmetic import EXERCISE as _split_huge_pmd_arithmetic
from .total_mapcount_v45 import EXERCISE as _total_mapcount

#: Every exercise by name, in lesson order.
EXERCISES = {ex.name: ex for ex in (_old_refcount_handover, _split_huge_pmd_arithmetic, _can_split,
                                    _held_memory, _total_mapcount)}


def get(name):
    """The exercise called ``name`` (see :func:`describe` for the list)."""
    try:
        return EXERCISES[name]
    except KeyError:
        raise KeyError(f"no exercise {name!r}; there are: {', '.join(EXERCISES)}") from None


def describe():
    """One line per exercise: name, lesson, level and what to write."""
    lines = ["Coding exercises (exercises.get(name); print(ex.statement) for the task):"]
    lines += [f"  {ex.name:<27} lesson {ex.lesson}, level {ex.level:>2}: {ex.title}"
              for ex in EXERCISES.values()]
    return Text("\n".join(lines))


__all__ = ["EXERCISES", "get", "describe", "Exercise", "Report", "Case", "Text"]
