"""``python -m thplab.live.child NAME PARENT_PID``: one experiment, its result as JSON on stdout.

The process :func:`thplab.live.run_experiment` starts. It dies with its
parent (:func:`~thplab.live.syscalls.die_with_parent`): a notebook kernel or
terminal killed mid-experiment leaves no process behind holding a THP. Not
imported by :mod:`thplab.live`, so that ``-m`` runs it once, as ``__main__``.
"""

import json
import sys

from .experiments import run
from .syscalls import die_with_parent


def main(argv):
    name, parent_pid = argv
    die_with_parent(int(parent_pid))
    json.dump(run(name), sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
