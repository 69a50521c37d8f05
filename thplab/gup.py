"""``get_user_pages()`` and ``get_user_pages_fast()``.

Mirrors ``mm/gup.c`` (v3.16) and ``arch/x86/mm/gup.c``.  The level-dependent
steps (``follow_page_mask``, ``gup_pmd_range``, ``gup_huge_pmd``) come from
the kernel table.  Pages are handled a PMD's worth at a time, as arrays.

SIMPLIFICATION: ``FOLL_TOUCH`` does not mark entries young or dirty, nor call
``mark_page_accessed()``; the CPU's own accessed/dirty updates are not
modelled either: entries keep the bits the fault path gave them.
"""

import numpy as np

from .smp import what_taken
from .errors import KernelFunctionRemoved, OutOfMemory, Segfault, VMBug
from .params import (EFAULT, FOLL_GET, FOLL_SPLIT, FOLL_TOUCH, FOLL_WRITE, HPAGE_PMD_MASK,
                     HPAGE_PMD_SIZE, PAGE_SHIFT, VM_READ, VM_WRITE)


def _chunk(addr, remaining):
    return min(remaining, ((addr & HPAGE_PMD_MASK) + HPAGE_PMD_SIZE - addr) >> PAGE_SHIFT)


def get_user_pages(k, mm, start, nr_pages, write=False, foll_split=False):
    """Mirrors ``__get_user_pages()``: pin ``nr_pages`` pages from ``start``, faulting as needed.

    Returns the pinned pages (each holds one reference, dropped with ``put_page()``),
    or a negative errno when the first page gave one (v4.5's failed ``FOLL_SPLIT``).
    When a fault runs out of memory after some pages were pinned, those pages are
    returned -- fewer than asked, as the kernel's ``return i ? i : -ENOMEM`` --
    so that no reference is lost; with none pinned, :class:`OutOfMemory` propagates.
    A VMA that does not allow the access ends the walk the same way, with
    :class:`Segfault` (errno ``EFAULT``) when nothing was pinned: v3.16's
    ``check_vma_flags()`` (mm/gup.c#L318), called at each new VMA.
    ``Machine`` checks this before calling; kernel callers such as
    ``get_futex_key()`` rely on the ``-EFAULT``.
    """
    flags = FOLL_GET | FOLL_TOUCH | (FOLL_WRITE if write else 0)
    if foll_split:
        if not k.caps["foll_split"]:
            raise KernelFunctionRemoved("FOLL_SPLIT does not exist at this level: patch 01 "
                                        "(mm, thp: drop FOLL_SPLIT) removed it")
        flags |= FOLL_SPLIT
    out = []
    addr, remaining = start, nr_pages
    faults = 0
    while remaining:
        vma = mm.find_vma(addr)
        need = VM_WRITE if write else VM_READ
        if vma is None or not vma.vm_flags & need:
            if out:
                break
            raise Segfault(f"get_user_pages: {addr:#x} is not mapped "
                           f"{'writable' if write else 'readable'} (-EFAULT)", EFAULT)
        n = _chunk(addr, remaining)
        pages = k.follow_page_mask(vma, addr, flags, n)
        if pages is not None and np.ndim(pages) == 0:
            # An ERR_PTR from follow_page_mask() (v4.5's FOLL_SPLIT): return i ? i : PTR_ERR(page).
            if out:
                break
            return int(pages)
        if pages is None or not len(pages):
            faults += 1
            if faults > 64:
                raise VMBug(f"get_user_pages: page at {addr:#x} never became present")
            k.point("get_user_pages: follow_page_mask found no page, faultin_page next", address=hex(addr))
            try:
                k.__handle_mm_fault(mm, vma, addr, write)
            except OutOfMemory:
                if not out:
                    raise
                break
            continue
        faults = 0
        out.append(pages)
        addr += len(pages) << PAGE_SHIFT
        remaining -= len(pages)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def __get_user_pages_fast(k, mm, start, nr_pages, write=False):
    """Mirrors ``__get_user_pages_fast()``: the lock-free walk only, caller has IRQs off.

    Returns the pages pinned, possibly fewer than asked (or an empty array).
    """
    out = []
    addr, remaining = start, nr_pages
    while remaining:
        n = _chunk(addr, remaining)
        pages = k.gup_pmd_range(mm, addr, n, write)
        if pages is None or not len(pages):
            break
        out.append(pages)
        addr += len(pages) << PAGE_SHIFT
        remaining -= len(pages)
        if len(pages) < n:
            break
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def get_user_pages_fast(k, mm, start, nr_pages, write=False):
    """Mirrors ``get_user_pages_fast()`` (x86): interrupts off, walk; the rest by the slow path."""
    smp = k.machine.smp
    smp.local_irq_disable()
    k.point("get_user_pages_fast: local_irq_disable")
    try:
        fast = __get_user_pages_fast(k, mm, start, nr_pages, write)
    finally:
        taken = smp.local_irq_enable()
    k.point("get_user_pages_fast: local_irq_enable" + (f"; {what_taken(taken)}" if taken else ""),
            pinned=len(fast))
    if len(fast) == nr_pages:
        return fast
    try:
        rest = get_user_pages(k, mm, start + (len(fast) << PAGE_SHIFT), nr_pages - len(fast), write)
    except (OutOfMemory, Segfault):
        if not len(fast):
            raise
        return fast  # the kernel returns the pages pinned so far
    return np.concatenate([fast, rest])
