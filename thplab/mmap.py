"""VMAs of a process: mmap, munmap, mprotect, fork and exit.

Mirrors ``mm/mmap.c``, ``mm/mprotect.c``, ``kernel/fork.c`` and ``mm/rmap.c``
(v3.14) for anonymous private mappings.  Boundaries that move to an address
inside a possible huge PMD split that PMD first (``vma_adjust_trans_huge``).
"""

from . import memory as mem
from .errors import OutOfMemory
from .mm_types import MmStruct, Vma
from .params import HPAGE_PMD_MASK, HPAGE_PMD_SIZE, PAGE_SHIFT, TASK_SIZE


def _link(vma, chain):
    vma.anon_vma_chain = list(chain)
    for av in chain:
        av.vmas.append(vma)


def unlink_anon_vmas(k, vma):
    """Mirrors ``unlink_anon_vmas()``: the VMA leaves every anon_vma's interval tree.

    An anon_vma whose tree is left empty loses its own reference.
    """
    for av in vma.anon_vma_chain:
        av.vmas.remove(vma)
        if not av.vmas:
            put_anon_vma(k, av)
    vma.anon_vma_chain = []


def put_anon_vma(k, av):
    """Mirrors ``put_anon_vma()``/``__put_anon_vma()``: free at refcount 0, then put the root.

    Pages still pointing at a freed anon_vma are unmapped ones a pin kept
    alive; the kernel's ``page_get_anon_vma()`` refuses them (``!page_mapped``),
    and :meth:`thplab.Machine.anon_vma_of` raises for them.
    """
    av.refcount -= 1
    if av.refcount == 0:
        del k.machine.anon_vmas[av.id]
        if av.root is not av:
            put_anon_vma(k, av.root)


def split_vma(k, mm, vma, address):
    """Mirrors ``__split_vma()``: cut ``vma`` at ``address``; return the upper part."""
    mem.vma_adjust_trans_huge(k, vma, address)
    new = Vma(mm=mm, vm_start=address, vm_end=vma.vm_end, vm_flags=vma.vm_flags,
              vm_pgoff=vma.vm_pgoff + ((address - vma.vm_start) >> PAGE_SHIFT),
              anon_vma=vma.anon_vma)
    _link(new, vma.anon_vma_chain)  # anon_vma_clone()
    vma.vm_end = address
    mm.vmas.insert(mm.vmas.index(vma) + 1, new)
    return new


def vma_merge(k, mm):
    """Mirrors the effect of ``vma_merge()``: join neighbours that can be one VMA."""
    i = 0
    while i + 1 < len(mm.vmas):
        a, b = mm.vmas[i], mm.vmas[i + 1]
        if (a.vm_end == b.vm_start and a.vm_flags == b.vm_flags and a.anon_vma is b.anon_vma
                and a.vm_pgoff + ((a.vm_end - a.vm_start) >> PAGE_SHIFT) == b.vm_pgoff):
            a.vm_end = b.vm_end
            unlink_anon_vmas(k, b)
            del mm.vmas[i + 1]
        else:
            i += 1


def get_unmapped_area(mm, length):
    """Mirrors ``get_unmapped_area()``: a free, 2 MiB-aligned ``[addr, addr + length)``, or None.

    SIMPLIFICATION: the kernel searches top-down from below the stack
    (``arch_get_unmapped_area_topdown``) and falls back to the rest of user
    space; thplab searches bottom-up from ``mm.mmap_base`` (which each
    ``mmap()`` moves past its mapping and a 2 MiB gap, so that lesson
    addresses are short and predictable), skipping mappings already there,
    and falls back to the whole of user space.  None is the kernel's -ENOMEM.
    """
    for floor in (mm.mmap_base, HPAGE_PMD_SIZE):
        addr = (floor + HPAGE_PMD_SIZE - 1) & HPAGE_PMD_MASK
        for vma in mm.vmas:                 # sorted by address
            if vma.vm_end <= addr:
                continue
            if addr + length <= vma.vm_start:
                break
            addr = (vma.vm_end + HPAGE_PMD_SIZE - 1) & HPAGE_PMD_MASK
        if addr + length <= TASK_SIZE:
            return addr
    return None


def mmap_region(k, mm, addr, length, vm_flags):
    """Mirrors ``mmap_region()`` for an anonymous private mapping (pgoff = addr >> PAGE_SHIFT)."""
    vma = Vma(mm=mm, vm_start=addr, vm_end=addr + length, vm_flags=vm_flags,
              vm_pgoff=addr >> PAGE_SHIFT)
    mm.vmas.append(vma)
    mm.vmas.sort(key=lambda v: v.vm_start)
    return vma


def _split_at(k, mm, start, end):
    """Split VMAs so that ``start`` and ``end`` are VMA boundaries; return the VMAs inside."""
    for vma in mm.vmas_in(start, end):
        if vma.vm_start < start < vma.vm_end:
            split_vma(k, mm, vma, start)
    for vma in mm.vmas_in(start, end):
        if vma.vm_start < end < vma.vm_end:
            split_vma(k, mm, vma, end)
    return mm.vmas_in(start, end)


def do_munmap(k, mm, start, end):
    """Mirrors ``do_munmap()``: split boundary VMAs, zap the range, free unused tables."""
    inside = _split_at(k, mm, start, end)
    for vma in inside:
        mm.vmas.remove(vma)
    for vma in inside:
        mem.zap_pmd_range(k, mm, vma, vma.vm_start, vma.vm_end)
    for vma in inside:
        unlink_anon_vmas(k, vma)
    mem.free_pgtables(k, mm, start, end)


def mprotect_fixup(k, mm, start, end, vm_flags_rwx):
    """Mirrors ``mprotect_fixup()`` + ``change_protection()`` for ``[start, end)``."""
    from .params import VM_EXEC, VM_READ, VM_WRITE

    for vma in _split_at(k, mm, start, end):
        vma.vm_flags = (vma.vm_flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | vm_flags_rwx
        mem.change_protection(k, mm, vma, vma.vm_start, vma.vm_end,
                              mem.vm_get_page_prot(vma.vm_flags))
    vma_merge(k, mm)


def dup_mmap(k, parent, child_pid):
    """Mirrors ``dup_mm()``/``dup_mmap()``: the child shares every page, COW-protected.

    On ``OutOfMemory`` the half-built child is torn down, as ``dup_mm()`` does.
    """
    child = MmStruct(pid=child_pid, pgd=mem.pgd_alloc(k), mmap_base=parent.mmap_base)
    try:
        for vma in parent.vmas:
            new = Vma(mm=child, vm_start=vma.vm_start, vm_end=vma.vm_end, vm_flags=vma.vm_flags,
                      vm_pgoff=vma.vm_pgoff)
            if vma.anon_vma is not None:  # anon_vma_fork()
                av = k.machine.new_anon_vma()
                av.root = vma.anon_vma.root
                av.root.refcount += 1           # get_anon_vma(anon_vma->root)
                new.anon_vma = av
                _link(new, vma.anon_vma_chain + [av])
            child.vmas.append(new)
            mem.copy_page_range(k, child, parent, vma)
    except OutOfMemory:
        exit_mmap(k, child)
        raise
    return child


def exit_mmap(k, mm):
    """Mirrors ``exit_mmap()``: unmap everything, free every table and the PGD."""
    vmas, mm.vmas = mm.vmas, []
    for vma in vmas:
        mem.zap_pmd_range(k, mm, vma, vma.vm_start, vma.vm_end)
    for vma in vmas:
        unlink_anon_vmas(k, vma)
    mem.free_all_pgtables(k, mm)
