"""x86-64 4-level page tables: entry bits, address slicing, and table storage.

Mirrors ``arch/x86/include/asm/pgtable_types.h`` and ``pgtable_64_types.h``
(v3.16).  Every helper works on scalars and on numpy arrays alike, so a walk
over thousands of addresses is one vector operation per level.
"""

import numpy as np

from .errors import VMBug
from .params import PAGE_SHIFT, PGDIR_SHIFT, PMD_SHIFT, PTRS_PER_PTE, PUD_SHIFT

_PAGE_BIT_PRESENT = 0
_PAGE_BIT_RW = 1
_PAGE_BIT_USER = 2
_PAGE_BIT_PWT = 3
_PAGE_BIT_PCD = 4
_PAGE_BIT_ACCESSED = 5
_PAGE_BIT_DIRTY = 6
_PAGE_BIT_PSE = 7
_PAGE_BIT_GLOBAL = 8
_PAGE_BIT_SOFTW1 = 9
_PAGE_BIT_SOFTW2 = 10
_PAGE_BIT_SOFTW3 = 11
_PAGE_BIT_NX = 63

_PAGE_PRESENT = 1 << _PAGE_BIT_PRESENT
_PAGE_RW = 1 << _PAGE_BIT_RW
_PAGE_USER = 1 << _PAGE_BIT_USER
_PAGE_PWT = 1 << _PAGE_BIT_PWT
_PAGE_PCD = 1 << _PAGE_BIT_PCD
_PAGE_ACCESSED = 1 << _PAGE_BIT_ACCESSED
_PAGE_DIRTY = 1 << _PAGE_BIT_DIRTY
_PAGE_PSE = 1 << _PAGE_BIT_PSE
_PAGE_GLOBAL = 1 << _PAGE_BIT_GLOBAL
#: Not-present but mapped (PROT_NONE) reuses the GLOBAL bit (v3.16).
_PAGE_PROTNONE = _PAGE_GLOBAL
_PAGE_NX = 1 << _PAGE_BIT_NX

#: ``_PAGE_BIT_SPLITTING`` moved from bit 9 (v3.14) to bit 10 (``_PAGE_BIT_SOFTW2``)
#: with c46a7c817e66, merged for v3.16, the tree the RFC was written on (series/trees.py),
#: so thplab uses bit 10.  Patch 08 of the series deletes it.
_PAGE_BIT_SPLITTING = _PAGE_BIT_SOFTW2
_PAGE_SPLITTING = 1 << _PAGE_BIT_SPLITTING

#: Physical-address bits of an entry: ``__PHYSICAL_MASK_SHIFT`` is 46 in v3.16.
PTE_PFN_MASK = ((1 << 46) - 1) & ~((1 << PAGE_SHIFT) - 1)
#: In a 2 MiB leaf, bit 12 is PAT, so the frame address starts at bit 21.
PMD_PFN_MASK = ((1 << 46) - 1) & ~((1 << PMD_SHIFT) - 1)

#: ``_PAGE_TABLE``: what ``pmd_populate()``/``pud_populate()`` store beside the
#: table's address.
_PAGE_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY

# Page protections for private mappings (arch/x86/include/asm/pgtable_types.h).
PAGE_NONE = _PAGE_PROTNONE | _PAGE_ACCESSED
PAGE_READONLY = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED | _PAGE_NX
PAGE_COPY = PAGE_READONLY
PAGE_READONLY_EXEC = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED
PAGE_COPY_EXEC = PAGE_READONLY_EXEC

#: ``protection_map[]`` for private mappings, indexed by VM_READ|VM_WRITE|VM_EXEC.
#: A private writable mapping gets *no* RW bit: write access is granted per
#: page by the fault handler (``maybe_mkwrite``), which is what makes COW work.
PROTECTION_MAP = (PAGE_NONE, PAGE_READONLY, PAGE_COPY, PAGE_COPY,
                  PAGE_READONLY_EXEC, PAGE_READONLY_EXEC, PAGE_COPY_EXEC, PAGE_COPY_EXEC)

BIT_NAMES = (
    (_PAGE_BIT_PRESENT, "P"), (_PAGE_BIT_RW, "RW"), (_PAGE_BIT_USER, "US"),
    (_PAGE_BIT_PWT, "PWT"), (_PAGE_BIT_PCD, "PCD"), (_PAGE_BIT_ACCESSED, "A"),
    (_PAGE_BIT_DIRTY, "D"), (_PAGE_BIT_PSE, "PSE"), (_PAGE_BIT_GLOBAL, "G/PROTNONE"),
    (_PAGE_BIT_SOFTW1, "SW1"), (_PAGE_BIT_SOFTW2, "SPLITTING"), (_PAGE_BIT_SOFTW3, "SW3"),
    (_PAGE_BIT_NX, "NX"),
)


def pgd_index(address):
    """Mirrors ``pgd_index()``: bits 47..39 of the address."""
    return (np.asarray(address, dtype=np.uint64) >> np.uint64(PGDIR_SHIFT)) & np.uint64(511)


def pud_index(address):
    """Mirrors ``pud_index()``: bits 38..30."""
    return (np.asarray(address, dtype=np.uint64) >> np.uint64(PUD_SHIFT)) & np.uint64(511)


def pmd_index(address):
    """Mirrors ``pmd_index()``: bits 29..21."""
    return (np.asarray(address, dtype=np.uint64) >> np.uint64(PMD_SHIFT)) & np.uint64(511)


def pte_index(address):
    """Mirrors ``pte_index()``: bits 20..12."""
    return (np.asarray(address, dtype=np.uint64) >> np.uint64(PAGE_SHIFT)) & np.uint64(511)


def _u64(x):
    return np.asarray(x, dtype=np.uint64)


def _has(entry, bits):
    return (_u64(entry) & np.uint64(bits)) != 0


def pte_pfn(pte):
    """Mirrors ``pte_pfn()``: the frame number of a 4 KiB entry (or table pointer)."""
    return ((_u64(pte) & np.uint64(PTE_PFN_MASK)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)


def pmd_pfn(pmd):
    """Mirrors ``pmd_pfn()`` for a 2 MiB leaf: the head page's frame number."""
    return ((_u64(pmd) & np.uint64(PMD_PFN_MASK)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)


def pte_present(pte):
    """Mirrors ``pte_present()``: PRESENT or PROTNONE (a PROT_NONE page is still mapped)."""
    return _has(pte, _PAGE_PRESENT | _PAGE_PROTNONE)


def pmd_none(pmd):
    """Mirrors ``pmd_none()``."""
    return _u64(pmd) == 0


def pmd_present(pmd):
    """Mirrors ``pmd_present()``: PSE counts, because a split briefly clears PRESENT."""
    return _has(pmd, _PAGE_PRESENT | _PAGE_PROTNONE | _PAGE_PSE)


def pmd_trans_huge(pmd):
    """Mirrors ``pmd_trans_huge()``: the PMD is a 2 MiB leaf (PSE set)."""
    return _has(pmd, _PAGE_PSE)


def pmd_trans_splitting(pmd):
    """Mirrors ``pmd_trans_splitting()`` (removed by patch 08 of the series)."""
    return _has(pmd, _PAGE_SPLITTING)


def pte_write(pte):
    """Mirrors ``pte_write()`` / ``pmd_write()``."""
    return _has(pte, _PAGE_RW)


def pte_dirty(pte):
    """Mirrors ``pte_dirty()`` / ``pmd_dirty()``."""
    return _has(pte, _PAGE_DIRTY)


def pte_young(pte):
    """Mirrors ``pte_young()`` / ``pmd_young()``."""
    return _has(pte, _PAGE_ACCESSED)


def mk_pte(pfn, prot):
    """Mirrors ``mk_pte()``/``pfn_pte()``: frame number plus protection bits."""
    return (_u64(pfn) << np.uint64(PAGE_SHIFT)) | _u64(prot)


def mk_huge_pmd(pfn, prot):
    """Mirrors ``mk_huge_pmd()``: a 2 MiB leaf for the head page ``pfn``."""
    return mk_pte(pfn, prot) | np.uint64(_PAGE_PSE)


def mk_table_entry(table_pfn):
    """What ``pmd_populate()``/``pud_populate()``/``pgd_populate()`` store."""
    return mk_pte(table_pfn, _PAGE_TABLE)


def set_bits(entry, bits):
    """``pte_mkwrite``/``pte_mkdirty``/... in one: OR ``bits`` into ``entry``."""
    return _u64(entry) | np.uint64(bits)


def clear_bits(entry, bits):
    """``pte_wrprotect``/``pte_mkold``/... in one: clear ``bits`` in ``entry``."""
    return _u64(entry) & ~np.uint64(bits)


def pte_modify(entry, newprot):
    """Mirrors ``pte_modify()``: keep frame, A, D and PSE; take protection from ``newprot``."""
    chg = np.uint64(PTE_PFN_MASK | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_PSE | _PAGE_SPLITTING)
    return (_u64(entry) & chg) | (_u64(newprot) & ~chg)


# Migration entries (4.5.7 arch/x86/include/asm/pgtable_64.h#L144-L156, include/linux/swap.h#L44-L73):
# a swap entry is a PTE without PRESENT/PROTNONE, its type in bits 1-5 and its offset -- for a
# migration entry the pfn -- from bit 9.  With CONFIG_MIGRATION and CONFIG_MEMORY_FAILURE,
# MAX_SWAPFILES is 32 - 2 - 1 = 29, so the two migration types are 30 and 31.
SWP_TYPE_SHIFT = _PAGE_BIT_PRESENT + 1
SWP_OFFSET_SHIFT = _PAGE_BIT_GLOBAL + 1        # _PAGE_BIT_PROTNONE is _PAGE_BIT_GLOBAL
SWP_MIGRATION_READ, SWP_MIGRATION_WRITE = 30, 31


def make_migration_entry(pfn, write):
    """Mirrors ``swp_entry_to_pte(make_migration_entry(page, write))``: a not-present PTE naming ``pfn``."""
    kind = np.where(np.asarray(write, bool), SWP_MIGRATION_WRITE, SWP_MIGRATION_READ)
    return (_u64(kind) << np.uint64(SWP_TYPE_SHIFT)) | (_u64(pfn) << np.uint64(SWP_OFFSET_SHIFT))


def is_migration_entry(pte):
    """Mirrors ``is_swap_pte()`` && ``is_migration_entry()``, per entry."""
    pte = _u64(pte)
    kind = (pte >> np.uint64(SWP_TYPE_SHIFT)) & np.uint64(31)
    return (pte != 0) & ~pte_present(pte) & ((kind == SWP_MIGRATION_READ) | (kind == SWP_MIGRATION_WRITE))


def migration_entry_pfn(pte):
    """The pfn a migration entry names (``migration_entry_to_page()``)."""
    return (_u64(pte) >> np.uint64(SWP_OFFSET_SHIFT)).astype(np.int64)


def is_write_migration_entry(pte):
    """Mirrors ``is_write_migration_entry()``: was the PTE writable?"""
    return ((_u64(pte) >> np.uint64(SWP_TYPE_SHIFT)) & np.uint64(31)) == SWP_MIGRATION_WRITE


def decode_entry(entry, level="pte"):
    """Describe one page-table entry in words, e.g. ``'pfn 0x12400 P RW US A D PSE NX'``.

    ``level`` is ``"pte"``, ``"pmd"``, ``"pud"`` or ``"pgd"``; for a PMD with
    PSE the frame is read as a 2 MiB leaf.
    """
    e = int(entry)
    if e == 0:
        return "none"
    huge = level == "pmd" and e & _PAGE_PSE
    pfn = int(pmd_pfn(e)) if huge else int(pte_pfn(e))
    names = [name for bit, name in BIT_NAMES if e >> bit & 1]
    if level != "pte" and not huge:
        names = [n for n in names if n != "PSE"]
        kind = "table"
    elif huge:
        kind = "2 MiB page"
    else:
        kind = "4 KiB page"
    return f"{kind} pfn {pfn:#x} [{' '.join(names)}]"


#: ``row_of`` of a PTE-table page no entry has been written to yet: it has no row.
UNWRITTEN = -2


class PageTables:
    """The contents of every page-table page, one row of 512 ``uint64`` each.

    A table lives in a page allocated from ``mem_map`` (as ``pte_alloc_one()``
    does); ``row_of[pfn]`` finds its row.  Rows are reused after ``pte_free()``.

    A new PTE table gets its row when first opened (:meth:`table`): until
    then it is all none entries and takes no memory here.  Most PTE tables
    of a THP-heavy machine are the ones deposited beside huge PMDs
    (``pgtable_trans_huge_deposit()``), which stay empty until a split.
    """

    def __init__(self, nr_pages, capacity=64):
        self.entries = np.zeros((capacity, PTRS_PER_PTE), dtype=np.uint64)
        self.row_of = np.full(nr_pages, -1, dtype=np.int32)
        self.pfn_of = np.full(capacity, -1, dtype=np.int64)
        #: 1 = PTE table, 2 = PMD, 3 = PUD, 4 = PGD; 0 = unused row.
        self.level = np.zeros(capacity, dtype=np.int8)
        self._free_rows = list(range(capacity - 1, -1, -1))
        #: PTE tables without a row yet (``row_of`` :data:`UNWRITTEN`).
        self._unwritten = set()

    def _grow(self):
        """Double the pool.  Views from :meth:`table` taken before still show the old pool."""
        old = len(self.pfn_of)
        # np.zeros leaves the new rows to the host's zero pages until first written.
        entries = np.zeros((2 * old, PTRS_PER_PTE), dtype=np.uint64)
        entries[:old] = self.entries
        self.entries = entries
        self.pfn_of = np.concatenate([self.pfn_of, np.full(old, -1, dtype=np.int64)])
        self.level = np.concatenate([self.level, np.zeros(old, dtype=np.int8)])
        self._free_rows = list(range(2 * old - 1, old - 1, -1)) + self._free_rows

    def _give_row(self, pfn, level):
        if not self._free_rows:
            self._grow()
        row = self._free_rows.pop()
        self.entries[row] = 0
        self.row_of[pfn] = row
        self.pfn_of[row] = pfn
        self.level[row] = level
        return row

    def add(self, pfn, level):
        """Start using page ``pfn`` as a zero-filled table of ``level``."""
        if level == 1:
            self.row_of[pfn] = UNWRITTEN
            self._unwritten.add(int(pfn))
        else:
            self._give_row(pfn, level)

    def add_many(self, pfns, level):
        """:meth:`add` for an array of pages."""
        pfns = np.asarray(pfns, dtype=np.int64)
        if level == 1:
            self.row_of[pfns] = UNWRITTEN
            self._unwritten.update(pfns.tolist())
        else:
            for pfn in pfns.tolist():
                self._give_row(pfn, level)

    def remove_many(self, pfns):
        """:meth:`remove` for an array of table pages (rows freed in that order)."""
        pfns = np.asarray(pfns, dtype=np.int64)
        rows = self.row_of[pfns]
        if (rows == -1).any():
            raise VMBug(f"pfn {int(pfns[rows == -1][0]):#x} is not a page table")
        self._unwritten.difference_update(pfns[rows == UNWRITTEN].tolist())
        rows = rows[rows >= 0]
        self.row_of[pfns] = -1
        self.pfn_of[rows] = -1
        self.level[rows] = 0
        self.entries[rows] = 0
        self._free_rows.extend(rows.tolist())

    def remove(self, pfn):
        """Stop using page ``pfn`` as a table."""
        self.remove_many([pfn])

    def table(self, pfn):
        """The 512 entries of table ``pfn`` (a writable view; a PTE table gets its row now)."""
        row = self.row_of[pfn]
        if row == UNWRITTEN:
            self._unwritten.discard(int(pfn))
            row = self._give_row(pfn, 1)
        elif row < 0:
            raise VMBug(f"pfn {pfn:#x} is not a page table")
        return self.entries[row]

    def rows(self, pfns):
        """The entries of tables ``pfns`` as an array of rows (a copy; none for a table with no row)."""
        rows = self.row_of[np.asarray(pfns, dtype=np.int64)]
        out = self.entries[np.maximum(rows, 0)]
        out[rows < 0] = 0
        return out

    def live_rows(self, level=None):
        """Rows in use, optionally only those of one level (a PTE table not yet opened has none)."""
        used = self.pfn_of >= 0
        if level is not None:
            used &= self.level == level
        return np.flatnonzero(used)

    def table_pfns(self, level=None):
        """Pages in use as tables (optionally of one level), in pfn order."""
        used = self.pfn_of >= 0
        if level is not None:
            used &= self.level == level
        pfns = self.pfn_of[used]
        if level in (None, 1) and self._unwritten:
            pfns = np.concatenate([pfns, np.fromiter(self._unwritten, np.int64, len(self._unwritten))])
        return np.sort(pfns)

    def copy(self):
        new = PageTables.__new__(PageTables)
        new.entries = self.entries.copy()
        new.row_of = self.row_of.copy()
        new.pfn_of = self.pfn_of.copy()
        new.level = self.level.copy()
        new._free_rows = list(self._free_rows)
        new._unwritten = set(self._unwritten)
        return new
