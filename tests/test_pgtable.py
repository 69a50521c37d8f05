"""thplab.pgtable: x86-64 address slicing, entry encoding and the table pool (kernel-semantics §4)."""

import numpy as np
import pytest

from thplab import pgtable as pt
from thplab.errors import VMBug
from thplab.params import HPAGE_PMD_NR, PAGE_SHIFT, PAGE_SIZE


# ------------------------------------------------------------------ address slicing (§4.1)

def test_worked_example_va_0x7f0000205abc_slices_to_254_0_1_5_0xabc():
    va = 0x7F0000205ABC
    assert int(pt.pgd_index(va)) == 254
    assert int(pt.pud_index(va)) == 0
    assert int(pt.pmd_index(va)) == 1
    assert int(pt.pte_index(va)) == 5
    assert va & (PAGE_SIZE - 1) == 0xABC
    # inside the 2 MiB THP mapped at 0x7f0000200000: offset 0x5abc, subpage 5
    assert va & ((1 << 21) - 1) == 0x5ABC
    assert (va & ((1 << 21) - 1)) >> PAGE_SHIFT == 5


def test_index_functions_take_bits_47_39_38_30_29_21_20_12():
    va = (300 << 39) | (7 << 30) | (511 << 21) | (42 << 12) | 0x123
    assert (int(pt.pgd_index(va)), int(pt.pud_index(va)), int(pt.pmd_index(va)),
            int(pt.pte_index(va))) == (300, 7, 511, 42)


def test_index_functions_are_vectorized():
    vas = np.array([0, 1 << 12, 1 << 21, 1 << 30, 1 << 39, (1 << 47) - 1], dtype=np.uint64)
    assert pt.pte_index(vas).tolist() == [0, 1, 0, 0, 0, 511]
    assert pt.pmd_index(vas).tolist() == [0, 0, 1, 0, 0, 511]
    assert pt.pud_index(vas).tolist() == [0, 0, 0, 1, 0, 511]
    assert pt.pgd_index(vas).tolist() == [0, 0, 0, 0, 1, 255]


# ------------------------------------------------------------------ entry encoding (§4.2)

def test_thp_pmd_leaf_for_head_pfn_0x12400_writable_dirty_is_0x80000000124000e7():
    e = pt.set_bits(pt.mk_huge_pmd(0x12400, pt.PAGE_COPY), pt._PAGE_DIRTY | pt._PAGE_RW)
    assert int(e) == 0x80000000124000E7
    assert bool(pt.pmd_trans_huge(e)) and bool(pt.pte_write(e)) and bool(pt.pte_dirty(e))
    assert bool(pt.pte_young(e)) and bool(pt.pmd_present(e))
    assert int(pt.pmd_pfn(e)) == 0x12400


def test_pte_table_pointer_for_table_pfn_0x3456_is_0x3456067():
    e = pt.mk_table_entry(0x3456)
    assert int(e) == 0x3456067
    assert int(e) & 0xFFF == pt._PAGE_TABLE == 0x67
    assert not pt.pmd_trans_huge(e)
    assert int(pt.pte_pfn(e)) == 0x3456


def test_pte_after_split_of_subpage_5_in_3_14_is_0x8000000012405067():
    # from a writable PMD: PAGE_COPY | RW | D
    e = pt.set_bits(pt.mk_pte(0x12400 + 5, pt.PAGE_COPY), pt._PAGE_DIRTY | pt._PAGE_RW)
    assert int(e) == 0x8000000012405067
    assert bool(pt.pte_write(e)) and not pt.pmd_trans_huge(e)


def test_pmd_pfn_ignores_bit_12_pat_of_a_2mib_leaf():
    e = pt.mk_huge_pmd(0x12400, pt.PAGE_COPY) | np.uint64(1 << 12)
    assert int(pt.pmd_pfn(e)) == 0x12400
    assert int(pt.pte_pfn(e)) == 0x12401


def test_pfn_masks_stop_at_physical_bit_46():
    e = np.uint64((1 << 63) | (1 << 50) | (0x12345 << 12))
    assert int(pt.pte_pfn(e)) == 0x12345


def test_protection_map_private_writable_has_no_rw_bit():
    assert pt.PROTECTION_MAP[0b011] == pt.PAGE_COPY
    assert not pt.PAGE_COPY & pt._PAGE_RW
    assert pt.PAGE_COPY & pt._PAGE_NX
    assert not pt.PAGE_READONLY_EXEC & pt._PAGE_NX
    assert pt.PROTECTION_MAP[0] == pt.PAGE_NONE
    assert not pt.PAGE_NONE & pt._PAGE_PRESENT


def test_prot_none_entry_is_present_for_the_kernel_but_not_for_the_mmu():
    e = pt.mk_pte(7, pt.PAGE_NONE)
    assert bool(pt.pte_present(e))
    assert not int(e) & pt._PAGE_PRESENT


def test_pmd_present_counts_pse_during_split_invalidate():
    e = pt.clear_bits(pt.mk_huge_pmd(0x200, pt.PAGE_COPY), pt._PAGE_PRESENT)
    assert bool(pt.pmd_present(e)) and bool(pt.pmd_trans_huge(e))


def test_splitting_bit_is_software_bit_10():
    assert pt._PAGE_SPLITTING == 1 << 10
    e = pt.set_bits(pt.mk_huge_pmd(0x200, pt.PAGE_COPY), pt._PAGE_SPLITTING)
    assert bool(pt.pmd_trans_splitting(e))
    assert not pt.pmd_trans_splitting(pt.mk_huge_pmd(0x200, pt.PAGE_COPY))


def test_pte_modify_keeps_frame_accessed_dirty_pse_and_takes_new_protection():
    e = pt.set_bits(pt.mk_huge_pmd(0x12400, pt.PAGE_COPY), pt._PAGE_DIRTY | pt._PAGE_RW)
    ro = pt.pte_modify(e, pt.PAGE_READONLY)
    assert int(pt.pmd_pfn(ro)) == 0x12400
    assert bool(pt.pmd_trans_huge(ro)) and bool(pt.pte_dirty(ro)) and bool(pt.pte_young(ro))
    assert not pt.pte_write(ro)
    none = pt.pte_modify(e, pt.PAGE_NONE)
    assert not int(none) & pt._PAGE_PRESENT and bool(pt.pte_present(none))


def test_set_and_clear_bits_are_vectorized():
    es = pt.mk_pte(np.arange(4), pt.PAGE_COPY)
    rw = pt.set_bits(es, pt._PAGE_RW)
    assert pt.pte_write(rw).all() and not pt.pte_write(pt.clear_bits(rw, pt._PAGE_RW)).any()
    assert pt.pte_pfn(rw).tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------ decode_entry

def test_decode_entry_names_kind_frame_and_bits():
    assert pt.decode_entry(0x80000000124000E7, "pmd") == "2 MiB page pfn 0x12400 [P RW US A D PSE NX]"
    assert pt.decode_entry(0x3456067, "pmd") == "table pfn 0x3456 [P RW US A D]"
    assert pt.decode_entry(0x8000000012405067) == "4 KiB page pfn 0x12405 [P RW US A D NX]"
    assert pt.decode_entry(0) == "none"
    assert pt.decode_entry(0, "pmd") == "none"


def test_decode_entry_names_the_splitting_bit():
    e = int(pt.set_bits(pt.mk_huge_pmd(0x200, pt.PAGE_COPY), pt._PAGE_SPLITTING))
    assert "SPLITTING" in pt.decode_entry(e, "pmd")


def test_decode_entry_in_a_4k_pte_reads_bit_7_as_part_of_the_entry_not_a_leaf():
    # bit 7 of a 4 KiB PTE is PAT; decode_entry reads the frame with pte_pfn there
    assert pt.decode_entry(0x12400 << 12 | 0x85).startswith("4 KiB page pfn 0x12400")


# ------------------------------------------------------------------ PageTables pool

def test_page_tables_add_table_remove_and_row_reuse():
    tables = pt.PageTables(nr_pages=HPAGE_PMD_NR, capacity=2)
    tables.add(10, 2)
    tables.add(11, 3)
    assert tables.row_of[10] == 0 and tables.row_of[11] == 1
    tables.table(10)[3] = 99
    assert int(tables.entries[0, 3]) == 99
    assert tables.live_rows().tolist() == [0, 1]
    assert tables.live_rows(level=3).tolist() == [1]
    tables.add(12, 2)  # grows
    assert tables.row_of[12] == 2 and len(tables.pfn_of) == 4
    tables.remove(10)
    assert tables.row_of[10] == -1 and int(tables.entries[0].sum()) == 0
    tables.add(13, 4)
    assert tables.row_of[13] == 0  # a freed row is reused, and zeroed
    assert int(tables.table(13).sum()) == 0


def test_a_pte_table_gets_its_row_when_first_opened():
    """A deposited (or any new) PTE table is all none entries: no pool row until opened."""
    tables = pt.PageTables(nr_pages=HPAGE_PMD_NR, capacity=2)
    tables.add_many([20, 21, 22], 1)
    assert (tables.row_of[[20, 21, 22]] == pt.UNWRITTEN).all() and len(tables.live_rows()) == 0
    assert tables.table_pfns().tolist() == [20, 21, 22] == tables.table_pfns(level=1).tolist()
    assert (tables.rows([20, 22]) == 0).all()
    tables.table(21)[5] = 7
    assert tables.row_of[21] >= 0 and tables.live_rows(level=1).tolist() == [tables.row_of[21]]
    assert tables.rows([21, 20])[:, 5].tolist() == [7, 0]
    assert tables.table_pfns().tolist() == [20, 21, 22]
    tables.remove_many([20, 21])
    tables.remove(22)
    assert tables.table_pfns().tolist() == [] and (tables.row_of == -1).all()
    with pytest.raises(VMBug):
        tables.table(20)
    with pytest.raises(VMBug):
        tables.remove(21)


def test_page_tables_refuse_a_pfn_that_is_not_a_table():
    tables = pt.PageTables(nr_pages=HPAGE_PMD_NR)
    with pytest.raises(VMBug):
        tables.table(5)
    with pytest.raises(VMBug):
        tables.remove(5)


def test_page_tables_copy_is_independent():
    tables = pt.PageTables(nr_pages=HPAGE_PMD_NR)
    tables.add(1, 1)
    dup = tables.copy()
    dup.table(1)[0] = 7
    assert int(tables.table(1)[0]) == 0
