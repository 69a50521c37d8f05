"""Step through a kernel operation, or interleave two, at kernel-named points.

Kernel functions call ``k.point("name", ...)`` right after something worth
seeing has happened, and the name says what (``__split_huge_page_refcount:
compound_lock taken``...): a log line is an action done, never one about to be
done.  The exceptions say so in their names ("tail pins taken, head not yet").

* :class:`Recorder` keeps a snapshot of the machine at every point of
  whatever runs inside it, so a lesson can step through and diff states.
* :class:`Interleaving` runs two operations on two simulated CPUs and
  switches between them at points, the way a race happens.  A CPU that has
  to wait (a lock held, a TLB-flush IPI that cannot be delivered) reports a
  *waiting* point and makes no progress until the other CPU lets it.

Both need small machines: every point copies ``mem_map``.
"""

import threading
from dataclasses import dataclass

import numpy as np

from .errors import ThplabError, VMBug

_MAX_SNAPSHOT_PAGES = 1 << 18


@dataclass
class Snapshot:
    """The machine at one point: ``struct page`` array, page-table pool, vmstat."""

    mem_map: np.ndarray
    tables: np.ndarray
    table_pfns: np.ndarray
    table_levels: np.ndarray
    vmstat: dict

    @classmethod
    def take(cls, machine):
        if machine.nr_pages > _MAX_SNAPSHOT_PAGES:
            raise ThplabError("step-through needs a machine of at most 1 GiB")
        pts = machine.pgtables
        return cls(machine.mem_map.copy(), pts.entries.copy(), pts.pfn_of.copy(), pts.level.copy(),
                   machine.vmstat.as_dict())

    def changes(self, before, pages=None):
        """What changed since ``before``: ``(pfn, field, old, new)`` rows for struct pages,
        ``(name, old, new)`` for vmstat and ``(table pfn, index, old, new, level)`` for entries
        (level "pte", "pmd", "pud" or "pgd": how to read the entry)."""
        a, b = before.mem_map, self.mem_map
        idx = np.arange(len(b)) if pages is None else np.asarray(pages)
        page_rows = []
        for f in ("_count", "_mapcount", "flags", "mapping", "index"):
            diff = idx[a[f][idx] != b[f][idx]]
            page_rows += [(int(p), f, int(a[f][p]), int(b[f][p])) for p in diff]
        stat_rows = [(n, before.vmstat[n], v) for n, v in self.vmstat.items() if before.vmstat.get(n) != v]
        n = min(len(before.tables), len(self.tables))
        rows, cols = np.nonzero(before.tables[:n] != self.tables[:n])
        names = {1: "pte", 2: "pmd", 3: "pud", 4: "pgd"}

        def where(r):
            live = self if self.table_pfns[r] >= 0 else before
            return int(live.table_pfns[r]), names.get(int(live.table_levels[r]), "pmd")

        entry_rows = [(where(r)[0], int(c), int(before.tables[r, c]), int(self.tables[r, c]), where(r)[1])
                      for r, c in zip(rows, cols)]
        return {"pages": sorted(page_rows), "vmstat": stat_rows, "entries": entry_rows}


@dataclass
class Step:
    """One point reached: where, on which CPU, with what detail, and the state after it."""

    name: str
    cpu: str
    detail: dict
    state: Snapshot
    waiting: bool = False
    #: The CPUs with interrupts off at this point (``local_irq_disable()``,
    #: ``compound_lock_irqsave()``, ``spin_lock_irq(&zone->lru_lock)``).
    irqs_off: frozenset = frozenset()

    @classmethod
    def at(cls, machine, name, cpu, detail, waiting=False):
        """The step reached now: ``machine``'s state and which CPUs have interrupts off."""
        return cls(name, cpu, dict(detail), Snapshot.take(machine), waiting,
                   frozenset(machine.smp.irqs_off))

    def __str__(self):
        extra = ", ".join(f"{k}={format_value(k, v)}" for k, v in self.detail.items())
        return f"{self.cpu}: {self.name}" + (f" ({extra})" if extra else "") + (" [waiting]" if self.waiting else "")


def format_value(key, value):
    """A point's detail or a CPU's result as the course prints numbers: pfns and addresses in hex.

    ``head`` is a pfn; an array is the pfns ``get_user_pages()`` returned; a pair of ints is a
    futex key ``(pid, address)``.  Counts, errnos and text are printed as they are.
    """
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        return "[" + ", ".join(f"{int(p):#x}" for p in value) + "]"
    if key == "head" and isinstance(value, (int, np.integer)):
        return f"{int(value):#x}"
    if (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(v, (int, np.integer)) for v in value)):
        return f"(pid {int(value[0])}, {int(value[1]):#x})"
    return str(value)


class Recorder:
    """Record every point of the operations run inside ``with Recorder(machine) as rec:``."""

    interleaving = False

    def __init__(self, machine):
        self.machine = machine
        self.steps = []

    def __enter__(self):
        if self.machine.tracer is not None:
            raise ThplabError("this machine is already being traced")
        self.machine.tracer = self
        self.steps = [Step.at(self.machine, "start", self.machine.smp.cpu, {})]
        return self

    def __exit__(self, *exc):
        self.machine.tracer = None
        self.steps.append(Step.at(self.machine, "end", self.machine.smp.cpu, {}))
        return False

    def point(self, name, detail):
        self.steps.append(Step.at(self.machine, name, self.machine.smp.cpu, detail))

    def diff(self, i, pages=None):
        """Changes from step ``i - 1`` to step ``i``."""
        return self.steps[i].state.changes(self.steps[i - 1].state, pages)


def record(machine, fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` under a :class:`Recorder`; return ``(result, recorder)``."""
    with Recorder(machine) as rec:
        result = fn(*args, **kwargs)
    return result, rec


class _Aborted(BaseException):
    """Unwinds an operation thread when its interleaving is closed."""


class Interleaving:
    """Two (or more) operations on one machine, on CPUs named after the keywords.

    >>> il = Interleaving(machine, CPU0=lambda: machine.split_huge_page(h),
    ...                   CPU1=lambda: machine.get_user_pages_fast(pid, addr))  # doctest: +SKIP
    >>> il.run("CPU1 CPU0 CPU0 CPU1")                                         # doctest: +SKIP

    :meth:`step` lets one CPU run to its next point.  The machine must not be
    used for anything else until :meth:`finish` (or :meth:`close`).
    """

    interleaving = True

    def __init__(self, machine, **ops):
        if machine.tracer is not None:
            raise ThplabError("this machine is already being traced")
        if not ops:
            raise ValueError("give at least one operation, e.g. CPU0=lambda: ...")
        self.machine = machine
        self.cpus = list(ops)
        self.steps = [Step.at(machine, "start", "-", {})]
        self.results = {}
        self.errors = {}
        self._go = {c: threading.Event() for c in ops}
        self._back = threading.Event()
        self._aborted = False
        self._running = None
        self._waiting = dict.fromkeys(ops, False)
        #: Set by a CPU's thread once its operation returned, *before* it reports back: a
        #: thread still alive for a moment after that must not be stepped again.
        self._done = dict.fromkeys(ops, False)
        self._threads = {c: threading.Thread(target=self._body, args=(c, fn), daemon=True,
                                             name=f"thplab-{c}") for c, fn in ops.items()}
        machine.tracer = self
        for t in self._threads.values():
            t.start()

    def _body(self, cpu, fn):
        self.machine.smp.cpu = cpu
        self._go[cpu].wait()
        self._go[cpu].clear()
        try:
            if not self._aborted:
                self.results[cpu] = fn()
        except _Aborted:
            pass
        except Exception as exc:  # reported to the learner, not raised in another thread
            self.errors[cpu] = exc
        finally:
            self._waiting[cpu] = False
            self._done[cpu] = True
            self.steps.append(Step.at(self.machine, "done" if cpu not in self.errors else f"error: {self.errors[cpu]}",
                                      cpu, {"result": self.results.get(cpu)}))
            self._back.set()

    def point(self, name, detail):
        if threading.current_thread() not in self._threads.values():
            raise ThplabError("this machine is in the middle of an interleaving; "
                              "finish() or close() it before using the machine")
        cpu = self.machine.smp.cpu
        if self._aborted:
            raise _Aborted
        waiting = bool(detail.pop("blocked", False))
        self._waiting[cpu] = waiting
        self.steps.append(Step.at(self.machine, name, cpu, detail, waiting))
        self._back.set()
        self._go[cpu].wait()
        self._go[cpu].clear()
        if self._aborted:
            raise _Aborted

    def done(self, cpu):
        return self._done[cpu]

    @property
    def finished(self):
        return all(self._done.values())

    def waiting(self, cpu):
        """Whether ``cpu`` is spinning on something another CPU holds."""
        return self._waiting[cpu] and not self.done(cpu)

    def step(self, cpu):
        """Let ``cpu`` run to its next point; return that :class:`Step` (or None if it is done)."""
        if cpu not in self._threads:
            raise ValueError(f"no CPU named {cpu!r}; CPUs here: {', '.join(self.cpus)}")
        if self._aborted:
            raise ThplabError("this interleaving was closed")
        if self._done[cpu]:
            return None
        self._back.clear()
        self._go[cpu].set()
        if not self._back.wait(timeout=30):
            raise VMBug(f"{cpu} did not reach a point within 30 s")
        if self.finished:
            self.machine.tracer = None
        return self.steps[-1]

    def run(self, schedule):
        """Step CPUs in the order given (``"CPU0 CPU1 CPU1"`` or a list); return the steps taken."""
        order = schedule.split() if isinstance(schedule, str) else list(schedule)
        return [s for s in (self.step(c) for c in order) if s is not None]

    def run_until(self, cpu, text, max_steps=100):
        """Step ``cpu`` until it reaches a point whose name contains ``text``, has to wait, or finishes."""
        for _ in range(max_steps):
            step = self.step(cpu)
            if step is None or text in step.name or step.waiting or self.done(cpu):
                return step
        raise VMBug(f"{cpu} never reached a point containing {text!r}")

    def finish(self, max_steps=10_000):
        """Run the CPUs, skipping waiting ones while another can move, until all are done.

        When every CPU is waiting, they take turns: each re-checks what it waits
        for (a lock the other may have dropped since it last looked).
        """
        last = None
        for _ in range(max_steps):
            live = [c for c in self.cpus if not self._done[c]]
            if not live:
                self.machine.tracer = None
                return self.results
            movable = [c for c in live if not self.waiting(c)]
            if not movable:
                movable = [c for c in live if c != last] or live
            last = movable[0]
            self.step(last)
        raise VMBug(f"interleaving did not finish in {max_steps} steps (livelock?)")

    def close(self):
        """Abandon the operations still running; the machine is left as it is (do not reuse it)."""
        self._aborted = True
        for cpu, t in self._threads.items():
            self._go[cpu].set()
            t.join(timeout=5)
        self.machine.tracer = None

    def log(self):
        """One line per step."""
        return "\n".join(f"{i:3d} {s}" for i, s in enumerate(self.steps))
