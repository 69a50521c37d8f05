"""The long run: >= 100,000 random operations over all RFC levels, and 9,100 more at each
behaviourally different step of the v4.5 stack (1, 3, 7), ``m.check()`` after every one.

Opt-in: marked ``longrun``, which pyproject.toml's addopts deselect; run it with
``make longrun`` (``pytest -m longrun -s tests/test_longrun.py``).  Figures of the last
run are in benchmarks/README.md.

The operations are tests/test_properties.py's :class:`Driver` with choices from a
seeded numpy generator instead of hypothesis, so 100,000 steps take minutes, and a
failure is replayed exactly from its level, episode and seed.
"""

import time

import numpy as np
import pytest

from conftest import LEVELS
from test_properties import M2, Driver, RngDraws
from thplab import Machine

#: Operations per level (9,100 x 11 levels = 100,100), run in episodes of EPISODE steps
#: on fresh machines, so that teardown (exit everything, every page back) is checked often.
OPS_PER_LEVEL = 9_100
EPISODE = 700

#: (stack, level): every RFC level, and the v4.5 steps that behave differently (2-6 have no THP).
KERNELS = [("rfc-v1", level) for level in LEVELS] + [("v4.5", step) for step in (1, 3, 7)]


@pytest.mark.longrun
@pytest.mark.parametrize("stack,level", KERNELS, ids=[f"{s}-{lv}" for s, lv in KERNELS])
def test_long_random_run_keeps_every_invariant(stack, level):
    t0 = time.perf_counter()
    ops = steps = episode = 0
    while ops < OPS_PER_LEVEL:
        seed = 1000 * level + episode + (50_000 if stack == "v4.5" else 0)
        m = Machine.boot("32M", kernel=stack, patches=level, seed=seed, nodes=2)
        d = Driver(m, RngDraws(np.random.default_rng(seed)))
        pid = m.spawn()
        m.mmap(pid, 2 * M2)
        for step in range(EPISODE):
            try:
                d.step()                        # m.check() after every step
            except Exception as e:
                raise AssertionError(f"{m.kernel.name} episode {episode} (seed {seed}) step {step}: "
                                     f"{type(e).__name__}: {e}\nlast operations: {d.log[-5:]}") from e
        d.teardown()
        # the log has one line per operation run (steps that found nothing to do add none)
        ops += sum(not line.startswith("  ->") for line in d.log)
        steps += EPISODE
        episode += 1
    print(f"\nlongrun {stack} level {level}: {ops} operations in {steps} steps ({episode} episodes), "
          f"check() after each, {time.perf_counter() - t0:.1f} s")
