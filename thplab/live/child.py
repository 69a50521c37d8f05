"""``python -m thplab.live.child NAME``: one experiment, its result as JSON on stdout.

The process :func:`thplab.live.run_experiment` starts. Not imported by
:mod:`thplab.live`, so that ``-m`` runs it once, as ``__main__``.
"""

import json
import sys

from .experiments import run


def main(argv):
    (name,) = argv
    json.dump(run(name), sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
