"""CPUs, locks and interrupts, as far as the refcounting races need them.

thplab runs one operation at a time unless an :class:`~thplab.trace.Interleaving`
drives two of them on two simulated CPUs, switching at kernel-named points.
The locks below are the ones the THP refcounting design leans on: the
anon_vma rwsem, ``compound_lock`` (a bit spinlock in the head's flags), the
page lock, the PMD lock (``pmd_lock()``, one per PMD table with split PMD
ptlocks), ``zone->lru_lock``, and interrupts disabled on a CPU (which holds
up a TLB-flush IPI).  Interrupts go off where the kernel turns them off:
gup-fast and the futex re-pin (``local_irq_disable()``), every
``compound_lock_irqsave()`` and ``spin_lock_irq(&zone->lru_lock)``.

For "what if" experiments a machine can run *without* one protection
(``Smp.without``): ``"compound_lock"`` makes that lock a no-op and
``"tlb_flush_ipi"`` lets a TLB flush complete while another CPU has
interrupts off.  No real kernel ran like that; races on such a machine show
what the protection was for.

SIMPLIFICATION: the PMD lock is taken only where a split meets a fault (PMD
splitting, installing a huge PMD, populating an empty PMD); other page-table
locks and ``mmap_sem`` are not modelled; ``zone->lru_lock`` only where the
refcount split takes it (one lock for the whole machine: thplab has one zone).
"""

import threading

import numpy as np

from .errors import VMBug
from .page_flags import PG


class Smp:
    """Lock and interrupt state of a machine's CPUs."""

    def __init__(self, machine):
        self.machine = machine
        self.held = {}
        self.irqs_off = set()
        #: Per CPU that sent a TLB-flush IPI, the CPUs that have not taken it yet: those that
        #: had interrupts off when it was sent take it when theirs come back on.
        self.ipis = {}
        #: Per CPU, the interrupt state each irq-disabling lock found (``flags`` of irqsave).
        self._saved = {}
        #: Protections switched off for a "what if" experiment (see the module docstring).
        self.without = frozenset()
        self._local = threading.local()

    @property
    def cpu(self):
        """Name of the CPU running the current operation."""
        return getattr(self._local, "cpu", "CPU0")

    @cpu.setter
    def cpu(self, name):
        self._local.cpu = name

    def _wait(self, k, busy, what):
        while busy():
            if self.machine.tracer is None or not getattr(self.machine.tracer, "interleaving", False):
                raise VMBug(f"{self.cpu} would wait forever: {what}")
            k.point(what, blocked=True)

    def lock(self, k, key, what, irq=False):
        """Take lock ``key``; under an interleaving, spin (at a point) while another CPU holds it.

        With ``irq`` (``spin_lock_irq``, ``compound_lock_irqsave``) interrupts go
        off first, as in the kernel, and :meth:`unlock` with ``irq`` puts back
        what was there before.
        """
        me = self.cpu
        if key[0] in self.without:  # the what-if removes the lock and the irqsave around it
            return
        if irq:
            self._saved.setdefault(me, []).append(me in self.irqs_off)
            self.irqs_off.add(me)
        self._wait(k, lambda: self.held.get(key, me) != me, f"{what}: waiting, held by {self.held.get(key)}")
        self.held[key] = me
        if key[0] == "compound_lock":
            k.machine.mem_map["flags"][key[1]] |= np.uint32(1 << PG.compound_lock)
        elif key[0] == "page_lock":
            k.machine.mem_map["flags"][key[1]] |= np.uint32(1 << PG.locked)

    def unlock(self, k, key, irq=False):
        if key[0] in self.without:
            return
        if self.held.get(key) != self.cpu:
            raise VMBug(f"{self.cpu} unlocks {key} it does not hold")
        del self.held[key]
        if key[0] == "compound_lock":
            k.machine.mem_map["flags"][key[1]] &= ~np.uint32(1 << PG.compound_lock)
        elif key[0] == "page_lock":
            k.machine.mem_map["flags"][key[1]] &= ~np.uint32(1 << PG.locked)
        if irq and not self._saved[self.cpu].pop():
            taken = self.local_irq_enable()
            if taken:
                k.point(f"{what_taken(taken)} (interrupts back on)")

    def is_locked(self, key):
        return key in self.held

    def local_irq_disable(self):
        self.irqs_off.add(self.cpu)

    def local_irq_enable(self):
        """Interrupts back on: the TLB-flush IPIs held up here are taken now; returns their senders."""
        me = self.cpu
        self.irqs_off.discard(me)
        taken = sorted(sender for sender, targets in self.ipis.items() if me in targets)
        for sender in taken:
            self.ipis[sender].discard(me)
        return taken

    def flush_tlb_range(self, k, what):
        """Mirrors ``flush_tlb_range()``: the IPI completes only when no other CPU has IRQs off."""
        me = self.cpu
        if "tlb_flush_ipi" in self.without:
            return
        # The IPI reaches every other CPU at once; one with interrupts off takes it only when
        # they come back on (local_irq_enable), and the flush waits for all (smp_call_function_many).
        self.ipis[me] = self.irqs_off - {me}
        try:
            self._wait(k, lambda: bool(self.ipis[me]),
                       f"{what}: TLB-flush IPI waits for {', '.join(sorted(self.ipis[me]))} "
                       "(interrupts disabled there)")
        finally:
            del self.ipis[me]


def what_taken(senders):
    """The words for a CPU taking the TLB-flush IPIs of ``senders``."""
    return "takes the TLB-flush IPI from " + " and ".join(senders)
