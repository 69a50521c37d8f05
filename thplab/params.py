"""Constants of x86-64 Linux memory management, as in v3.14.

Mirrors ``arch/x86/include/asm/page_types.h``, ``pgtable_64_types.h`` and
``include/linux/huge_mm.h``.
"""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

PMD_SHIFT = 21
PUD_SHIFT = 30
PGDIR_SHIFT = 39
PTRS_PER_PTE = PTRS_PER_PMD = PTRS_PER_PUD = PTRS_PER_PGD = 512

HPAGE_PMD_ORDER = PMD_SHIFT - PAGE_SHIFT
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
HPAGE_PMD_SIZE = 1 << PMD_SHIFT
HPAGE_PMD_MASK = ~(HPAGE_PMD_SIZE - 1)

#: ``TASK_SIZE_MAX`` for 47-bit user space (arch/x86/include/asm/processor.h).
TASK_SIZE = (1 << 47) - PAGE_SIZE
#: Where thplab's ``mmap()`` starts looking for free address space
#: (``mm->mmap_base``; see :func:`thplab.mmap.get_unmapped_area`).
MMAP_BASE = 0x7F0000000000

#: Largest buddy order. SIMPLIFICATION: the kernel's MAX_ORDER is 11 (4 MiB
#: blocks on x86-64); thplab stops at the THP order so a machine is a whole
#: number of 2 MiB blocks.
MAX_ORDER = HPAGE_PMD_ORDER

#: ``page->_mapcount`` of the first page of a free buddy block (include/linux/mm.h).
PAGE_BUDDY_MAPCOUNT_VALUE = -128

# errno values returned by kernel functions (include/uapi/asm-generic/errno-base.h).
ENOENT = 2
EAGAIN = 11
ENOMEM = 12
EACCES = 13
EFAULT = 14
EBUSY = 16
EINVAL = 22

# mmap protections (include/uapi/asm-generic/mman-common.h).
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0x0, 0x1, 0x2, 0x4

# vm_flags (include/linux/mm.h, v3.14).
VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000

# get_user_pages() flags (include/linux/mm.h, v3.14).
FOLL_WRITE = 0x01
FOLL_TOUCH = 0x02
FOLL_GET = 0x04
FOLL_SPLIT = 0x80

#: ``access_ok()``/``get_futex_key()`` access types (asm/uaccess.h): FUTEX_WAIT and
#: FUTEX_WAKE ask for VERIFY_READ, FUTEX_WAKE_OP's second word for VERIFY_WRITE.
VERIFY_READ, VERIFY_WRITE = 0, 1

#: A shrinker's ``scan_objects`` says "stop, nothing more to do" (include/linux/shrinker.h: ``~0UL``).
SHRINK_STOP = (1 << 64) - 1
