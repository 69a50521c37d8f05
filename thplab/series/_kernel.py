"""How thplab builds a kernel: the base plus a prefix of the patch series.

A :class:`Patch` records the kernel functions one patch of the RFC series
replaces or removes.  :class:`Kernel` stacks patches 1..k on the base, the way
a series is bisected, and answers ``kernel.<name>`` from the newest definition.
Shared code calls ``k.get_page(...)``; it never asks which level it runs at.
"""

import types
from dataclasses import dataclass, field

from ..errors import KernelFunctionRemoved


@dataclass(eq=False)
class Patch:
    """One email of the series: its metadata and the functions it changes."""

    number: int
    subject: str
    #: ``{path: lines changed}`` from the patch's email; a string where it is not archived.
    files: dict
    summary: str
    why: str
    link: str
    #: How sure thplab is about this patch's content: "posted" (read in the
    #: archive) or "reconstructed" (body not archived; see kernel-semantics §2.0).
    source: str = "posted"
    capabilities: dict = field(default_factory=dict)
    functions: dict = field(default_factory=dict)
    removed: dict = field(default_factory=dict)
    #: Kernel data this patch defines or replaces (e.g. ``VM_EVENTS``).
    data: dict = field(default_factory=dict)
    #: The stack this is a step of (``STACKS``): "rfc-v1" (one email each) or "v4.5".
    series: str = "rfc-v1"
    #: For a v4.5 step: the emails of "[PATCHv12 00/37]" it stands for, e.g. "01-10".
    emails: str = ""

    def replaces(self, fn=None, *, name=None):
        """Decorator: ``fn`` is this patch's version of the kernel function of its name."""
        def register(f):
            self.functions[name or f.__name__] = f
            return f
        return register(fn) if fn is not None else register

    def removes(self, *names, why):
        """Record kernel functions that no longer exist after this patch."""
        for n in names:
            self.removed[n] = why

    @property
    def title(self):
        if self.series == "v4.5":
            return f"v4.5 step {self.number}/7 ([PATCHv12 {self.emails}/37]): {self.subject}"
        return f"[PATCH, RFC {self.number:02d}/10] {self.subject}"

    @property
    def label(self):
        """How error messages name it: ``'patch 04'`` or ``'v4.5 step 2'``."""
        return f"v4.5 step {self.number}" if self.series == "v4.5" else f"patch {self.number:02d}"


class _Removed:
    def __init__(self, name, patch, why):
        self.name, self.patch, self.why = name, patch, why


class Kernel:
    """A kernel: ``BASE`` with patches ``1..level`` of the series applied in order.

    Attribute access returns the newest definition bound to this kernel, so
    ``k.put_page(pages)`` runs the put_page of this level.  A function a
    patch removed raises :class:`KernelFunctionRemoved` with the reason.
    """

    def __init__(self, machine, level, stack="rfc-v1"):
        from . import BASE, STACKS

        steps = STACKS[stack]
        if not 0 <= level <= len(steps):
            raise ValueError(f"{stack} level must be 0..{len(steps)}, got {level}")
        self.machine = machine
        self.level = level
        #: Which stack of steps on the base this kernel is a prefix of (``STACKS``).
        self.stack = stack
        self.patches = steps[:level]
        self._table = {}
        self._history = {}
        self.caps = {}
        for patch in [BASE] + list(self.patches):
            self.caps.update(patch.capabilities)
            for name, fn in patch.functions.items():
                self._history.setdefault(name, []).append((patch, fn))
                self._table[name] = fn
            for name, value in patch.data.items():
                self._history.setdefault(name, []).append((patch, value))
                self.__dict__[name] = value
            for name, why in patch.removed.items():
                self._history.setdefault(name, []).append((patch, None))
                self._table[name] = _Removed(name, patch, why)

    def __getattr__(self, name):
        table = self.__dict__.get("_table")
        if table is None or name not in table:
            raise AttributeError(f"kernel level {self.__dict__.get('level')} has no "
                                 f"function or attribute {name!r}")
        fn = table[name]
        if isinstance(fn, _Removed):
            where = f"series level {self.level}" if self.stack == "rfc-v1" else self.name
            raise KernelFunctionRemoved(
                f"{name}() does not exist at {where}: removed by {fn.patch.label} "
                f"({fn.patch.subject}). {fn.why}")
        bound = types.MethodType(fn, self)
        self.__dict__[name] = bound
        return bound

    @property
    def name(self):
        """``'v3.16 (level 0)'``, ``'rfc-v1 level 4'``, ``'v4.5 step 3'`` or ``'v4.5'`` (its
        whole stack): the kernel and its step, as tables show it."""
        from . import STACKS
        from .trees import LEVEL0

        if self.level == 0:
            return f"{LEVEL0} (level 0)"
        if self.stack == "v4.5":
            return "v4.5" if self.level == len(STACKS["v4.5"]) else f"v4.5 step {self.level}"
        return f"{self.stack} level {self.level}"

    def __repr__(self):
        top = self.patches[-1].title if self.patches else "old kernel (before the series)"
        return f"<Kernel {self.name}: {top}>"

    def has(self, name):
        """Whether this kernel defines ``name`` (not removed)."""
        return name in self._table and not isinstance(self._table[name], _Removed)

    def defined_by(self, name):
        """The patch (or base) whose definition of ``name`` this kernel runs."""
        patch = None
        for p, _ in self._history.get(name, []):
            patch = p
        return patch

    def previous(self, name, patch):
        """The definition of ``name`` just before ``patch`` (for patches that wrap one)."""
        fn = None
        for p, f in self._history.get(name, []):
            if p is patch:
                break
            fn = f
        if fn is None:
            raise KernelFunctionRemoved(f"{name}() has no definition before {patch.label}")
        return types.MethodType(fn, self)

    # Python-only helpers the model code uses; not kernel functions.
    @property
    def mem_map(self):
        return self.machine.mem_map

    def count_vm_event(self, name, n=1):
        """Mirrors ``count_vm_event()``; the event must exist at this level."""
        self.machine.vmstat.count(name, n)

    def cost(self, what, n=1):
        """Count ``n`` operations of kind ``what`` for the cost model."""
        self.machine.costs[what] += int(n)

    def point(self, name, **detail):
        """A kernel-named point where a step-through records and an interleaving may switch."""
        tracer = self.machine.tracer
        if tracer is not None:
            tracer.point(name, detail)
