"""Address spaces: ``mm_struct``, ``vm_area_struct`` and ``anon_vma``.

Mirrors ``include/linux/mm_types.h`` and ``include/linux/rmap.h`` (v3.14).
There are few of these, so they are plain Python objects.
"""

from dataclasses import dataclass, field

from .params import PAGE_SHIFT, VM_EXEC, VM_READ, VM_WRITE


@dataclass(eq=False)
class AnonVma:
    """Mirrors ``struct anon_vma``: the rmap anchor of anonymous pages.

    ``vmas`` plays the part of the interval tree reached through
    ``anon_vma_chain``: every VMA that may map a page whose ``mapping`` points
    here.  New VMAs (fork children, split halves) are appended at the end, as
    the kernel adds them at the tail, so a walk started before a fork sees
    the child later.
    """

    id: int
    root: "AnonVma" = None
    vmas: list = field(default_factory=list)
    #: ``refcount``: 1 for the anon_vma itself while any VMA links it, plus 1
    #: per other anon_vma whose ``root`` it is (``anon_vma_fork()`` takes
    #: ``get_anon_vma(anon_vma->root)``).  At 0 it is freed (:func:`thplab.mmap.put_anon_vma`).
    refcount: int = 1

    def __repr__(self):
        return f"<anon_vma {self.id} ({len(self.vmas)} vmas)>"


@dataclass(eq=False)
class Vma:
    """Mirrors ``struct vm_area_struct`` for an anonymous private mapping."""

    mm: "MmStruct"
    vm_start: int
    vm_end: int
    vm_flags: int
    vm_pgoff: int
    #: ``anon_vma``: where pages faulted through this VMA are anchored.
    anon_vma: AnonVma = None
    #: ``anon_vma_chain``: every anon_vma this VMA is linked to (own + ancestors').
    anon_vma_chain: list = field(default_factory=list)

    def __repr__(self):
        prot = "".join(c if self.vm_flags & f else "-"
                       for c, f in (("r", VM_READ), ("w", VM_WRITE), ("x", VM_EXEC)))
        return f"<vma {self.vm_start:#x}-{self.vm_end:#x} {prot}p pid {self.mm.pid}>"

    def contains(self, address):
        return self.vm_start <= address < self.vm_end

    def linear_page_index(self, address):
        """Mirrors ``linear_page_index()``: the ``page->index`` of an address."""
        return ((address - self.vm_start) >> PAGE_SHIFT) + self.vm_pgoff

    def vma_address(self, index):
        """Mirrors ``vma_address()``: where a page of ``index`` sits in this VMA (may be outside)."""
        return self.vm_start + ((index - self.vm_pgoff) << PAGE_SHIFT)


@dataclass(eq=False)
class MmStruct:
    """Mirrors ``struct mm_struct``; in thplab a process is its address space."""

    pid: int
    pgd: int
    vmas: list = field(default_factory=list)
    #: ``nr_ptes``: PTE-table pages, including deposited ones (v3.14).
    nr_ptes: int = 0
    #: ``MM_ANONPAGES`` of ``mm->rss_stat``: 4 KiB pages mapped, 512 per huge PMD.
    anon_rss: int = 0
    #: ``MM_FILEPAGES``: mapped pages ``PageAnon()`` does not recognise.  Always
    #: 0 for anonymous memory -- unless ``PageAnon()`` misreads a tail page.
    file_rss: int = 0
    #: ``pmd_huge_pte``: deposited PTE tables, kept per PMD-table page as with
    #: split PMD ptlocks (``virt_to_page(pmd)->pmd_huge_pte``).
    pmd_huge_pte: dict = field(default_factory=dict)
    #: thplab's bump pointer for ``mmap()`` without an address hint.
    mmap_base: int = 0

    def __repr__(self):
        return f"<mm pid {self.pid}: {len(self.vmas)} vmas>"

    def find_vma(self, address):
        """The VMA containing ``address``, or None.

        SIMPLIFICATION: the kernel's ``find_vma()`` returns the first VMA
        ending above the address; thplab returns only a containing one.
        """
        for vma in self.vmas:
            if vma.vm_start <= address < vma.vm_end:
                return vma
        return None

    def vmas_in(self, start, end):
        """VMAs overlapping ``[start, end)``, in address order."""
        return [v for v in self.vmas if v.vm_start < end and v.vm_end > start]
