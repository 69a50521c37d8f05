"""v4.5 step 7 (emails 34-37 of v12, with the fixes of 4.5.0 and 4.5.7): deferred split; THP is back.

Unmapping part of a THP used to split it at once.  v4.5 cannot split inside
``page_remove_rmap()`` (wrong locks), and on ``exit()`` splitting a page that
is about to be freed would be wasted work.  So a THP that loses a mapping of
some subpage while others stay mapped is put on a queue (34/37,
9a982250f773), one per NUMA node; a shrinker splits the queued pages when
memory is needed -- freeing the subpages nothing maps -- and freeing a
queued THP takes it off the queue.  Until the shrinker runs, the unmapped
subpages stay allocated: the memory the RFC's cover letter warned about.

The queue is per node and the scan takes at most ``nr_to_scan`` pages
(posted on 21 Jan 2016 after Andrea Arcangeli's review of 34/37, in 4.5.0).
THP is enabled again (35/37).  4.5.7 (a 4.5.y stable change) adds
``page_trans_huge_mapcount()`` for the COW-reuse decisions: a write may reuse
a THP or one of its subpages only if no subpage is mapped twice.  36/37
(documentation) and 37/37 (mlocked THPs; thplab has no mlock) change no
counter thplab keeps.
"""

import numpy as np

from ... import memory as mem
from ... import pgtable as pt
from ...errors import VMBug
from ...page_alloc import dump_page
from ...page_flags import PageCompound, PageHead, compound_head
from ...params import HPAGE_PMD_NR, SHRINK_STOP
from .._kernel import Patch
from ..p00_base import _pages, _release, huge_pmd_copy
from ..p04_pmd_split import _drop_heads
from . import s04_compound_mapcount as s04
from .s06_split_huge_page import split_huge_page_to_list_with
from ._common import cm_raw, double_mapped, email

S07 = Patch(
    number=7,
    series="v4.5",
    emails="34-37",
    subject="deferred split queue and its shrinker; THP enabled again",
    files={"mm/huge_memory.c": "34, 35, 37/37", "mm/rmap.c": "34/37", "include/linux/mm.h": "34/37",
           "include/linux/mmzone.h": "34/37 + Jan 2016 fix", "mm/page_alloc.c": "34/37",
           "mm/Kconfig": "35/37", "Documentation/vm/transhuge.txt": "36/37",
           "mm/swapfile.c": "4.5.y stable", "mm/memory.c": "4.5.y stable"},
    summary="A THP that loses the mapping of some subpage while it stays compound is queued; "
            "deferred_split_scan() splits queued THPs under memory pressure and frees their "
            "unmapped subpages; free_transhuge_page() unqueues. THP faults work again. "
            "COW reuse asks page_trans_huge_mapcount().",
    why="page_remove_rmap() cannot split (wrong locking context), and splitting on exit would "
        "be wasted: the split waits for memory pressure.",
    link=email(34),
    capabilities={"thp_broken": False, "deferred_split": True},
)


def _node_of(k, heads):
    return np.asarray(heads) * k.machine.nodes // k.machine.nr_pages


@S07.replaces
def deferred_split_huge_page(k, page):
    """Mirrors ``deferred_split_huge_page()`` (4.5.7 mm/huge_memory.c#L3506): queue THPs not yet queued.

    At the tail of their node's queue, under ``split_queue_lock`` with
    interrupts off.  (``thp_deferred_split_page`` counts this from v4.6 on.)
    """
    heads = np.unique(_pages(page))
    m = k.machine
    for head, nid in zip(heads.tolist(), _node_of(k, heads).tolist()):
        if head not in m.split_scan_lists[nid]:     # list_empty(page_deferred_list(page))
            m.split_queues[nid].setdefault(head, None)


@S07.replaces
def free_transhuge_page(k, page):
    """Mirrors ``free_transhuge_page()`` (4.5.7 mm/huge_memory.c#L3492): unqueue THPs about to be freed.

    ``free_tail_pages_check()`` then wants page[1]'s ``compound_mapcount`` at
    -1 (nothing maps the THP by a PMD) and no ``PG_double_map``.
    """
    heads = _pages(page)
    if (cm_raw(k, heads) != -1).any() or double_mapped(k, heads).any():
        bad = int(heads[(cm_raw(k, heads) != -1) | double_mapped(k, heads)][0])
        raise VMBug(dump_page(k.mem_map, bad + 1, "free_tail_pages_check: compound_mapcount or DoubleMap"))
    for head, nid in zip(heads.tolist(), _node_of(k, heads).tolist()):
        _unlink(k, head, nid)


def _unlink(k, head, nid):
    """``list_del()`` of the THP's deferred-list link, from the queue or a scan's local list."""
    k.machine.split_queues[nid].pop(head, None)
    k.machine.split_scan_lists[nid].pop(head, None)


@S07.replaces
def put_page(k, page):
    """Mirrors ``put_page()`` (4.5.7 include/linux/mm.h#L712, mm/swap.c#L94): head ``_count`` -1.

    At 0 a THP goes through its destructor, :func:`free_transhuge_page`.
    """
    pages = _pages(page)
    heads = compound_head(k.mem_map, pages)
    _drop_heads(k, pages, heads)
    dead = np.unique(heads[k.mem_map["_count"][heads] == 0])
    thps = dead[PageHead(k.mem_map, dead)]
    if len(thps):
        k.free_transhuge_page(thps)
    _release(k, dead)
    k.cost("atomic", len(pages))


@S07.replaces
def page_remove_rmap(k, page, compound=False):
    """Mirrors ``page_remove_rmap()`` (4.5.7 mm/rmap.c#L1378) with 34/37's queueing, vectorized.

    A subpage of a compound page that no PTE maps any more (``_mapcount``
    reached -1) queues the THP for a deferred split.
    """
    pages = _pages(page)
    if compound:
        k.page_remove_anon_compound_rmap(pages)
        return
    mem_map = k.mem_map
    np.add.at(mem_map["_mapcount"], pages, -1)
    gone = pages[mem_map["_mapcount"][pages] == -1]
    gone = gone[PageCompound(mem_map, gone)]
    if len(gone):
        k.deferred_split_huge_page(compound_head(mem_map, gone))


@S07.replaces
def page_remove_anon_compound_rmap(k, heads):
    """Mirrors ``page_remove_anon_compound_rmap()`` (4.5.7 mm/rmap.c#L1333) with 34/37's queueing.

    After the last PMD mapping: a THP with ``nr > 0`` subpages left unmapped
    is queued -- after a plain full munmap that is all 512 of them, and the
    THP leaves the queue again when its last reference is put.
    """
    queued = s04.compound_unmap(k, heads)
    if len(queued):
        k.deferred_split_huge_page(queued)


@S07.replaces
def split_huge_page_to_list(k, page, list=None):
    """Mirrors ``split_huge_page_to_list()`` (4.5.7 mm/huge_memory.c#L3412) with 34/37's unqueueing.

    As at step 6; once the frozen page passed its check it leaves the queue
    under ``split_queue_lock`` (interrupts off).
    """
    def unlink(head):
        _unlink(k, head, int(_node_of(k, head)))

    return split_huge_page_to_list_with(k, page, list, unlink)


@S07.replaces
def page_trans_huge_mapcount(k, page):
    """Mirrors ``page_trans_huge_mapcount(page, &total)`` (4.5.7 mm/huge_memory.c#L3359).

    For a THP subpage: the largest ``page_mapcount()`` of any of the 512
    subpages, and ``total_mapcount()``; for a 4 KiB page its mapcount twice.
    Returns ``(mapcount, total)``.
    """
    mem_map = k.mem_map
    page = int(page)
    if not PageCompound(mem_map, page):
        n = int(mem_map["_mapcount"][page]) + 1
        return n, n
    head = int(compound_head(mem_map, page))
    counts = mem_map["_mapcount"][head:head + HPAGE_PMD_NR] + 1
    ret, total = int(counts.max()), int(counts.sum())
    if double_mapped(k, head):
        ret, total = ret - 1, total - HPAGE_PMD_NR
    cm = int(cm_raw(k, head)) + 1
    return ret + cm, total + cm


@S07.replaces
def reuse_swap_page(k, page):
    """Mirrors ``reuse_swap_page()`` (4.5.7 mm/swapfile.c#L924) for a page not in the swap cache.

    Reuse when no subpage of the THP is mapped more than once -- even if
    another process maps a *different* subpage; ``page_count`` is not asked.
    """
    return k.page_trans_huge_mapcount(page)[0] <= 1


@S07.replaces
def do_huge_pmd_wp_page(k, mm, vma, address, pmdp, orig_pmd):
    """Mirrors ``do_huge_pmd_wp_page()`` (4.5.7 mm/huge_memory.c#L1235): write to a read-only huge PMD.

    Reuse the THP if ``page_trans_huge_mapcount(page) == 1`` -- nothing else
    maps it or any of its subpages; otherwise copy it (2 MiB, or 512 small
    pages if no THP is free; the PMD is split if even those are not).
    """
    page = int(pt.pmd_pfn(orig_pmd))
    if k.page_trans_huge_mapcount(page)[0] == 1:
        mem.set_entry(k, pmdp, pt.set_bits(orig_pmd, pt._PAGE_RW | pt._PAGE_DIRTY | pt._PAGE_ACCESSED))
        return 0
    return huge_pmd_copy(k, vma, address, pmdp, page)


@S07.replaces
def deferred_split_count(k, node=0):
    """Mirrors ``deferred_split_count()`` (4.5.7 mm/huge_memory.c#L3521): ``split_queue_len`` of the node."""
    return len(k.machine.split_queues[node])


@S07.replaces
def deferred_split_scan(k, nr_to_scan, node=0):
    """Mirrors ``deferred_split_scan()`` (4.5.7 mm/huge_memory.c#L3528): split up to ``nr_to_scan`` queued THPs.

    Under the queue lock, from the queue's head: pin each THP
    (``get_page_unless_zero()``; one being freed is unlinked instead) and
    move it to a local list -- at that list's head, so the list runs in
    reverse.  Then, in that order, lock, ``split_huge_page()``, unlock, put:
    a split THP has left the queue, the rest go back to its tail.  Returns
    how many were split, or ``SHRINK_STOP`` if none was and the queue is empty.
    """
    queue, local = k.machine.split_queues[node], k.machine.split_scan_lists[node]
    mem_map = k.mem_map
    taken = []
    for head in list(queue)[:max(int(nr_to_scan), 1)]:
        del queue[head]
        if mem_map["_count"][head] > 0:           # get_page_unless_zero()
            mem_map["_count"][head] += 1
            taken.insert(0, head)                  # list_move(): to the local list's head
    local.update(dict.fromkeys(taken))
    split = 0
    for head in taken:
        k.lock_page(head)
        if not k.split_huge_page(head):            # a split THP has left the local list
            split += 1
        k.unlock_page(head)
        k.put_page(head)
    for head in list(local):                       # list_splice_tail()
        queue[head] = None
    local.clear()
    if not split and not queue:
        return SHRINK_STOP
    return split


#: ``SHRINK_BATCH`` (include/linux/shrinker.h) and ``DEFAULT_SEEKS`` of the deferred split shrinker.
SHRINK_BATCH, DEFAULT_SEEKS = 128, 2


@S07.replaces
def drop_slab(k):
    """Mirrors ``drop_slab()`` (4.5.7 mm/vmscan.c#L469) -- ``echo 2 > /proc/sys/vm/drop_caches``.

    Per node, ``shrink_slab(nr_scanned=1000, nr_eligible=1000)`` until a pass
    frees 10 objects or fewer; of the shrinkers, thplab has the deferred split
    one only.  ``do_shrink_slab()`` (mm/vmscan.c#L267) asks it for
    ``count`` = the queue length, scans about twice that (plus what earlier
    calls left over, ``nr_deferred``), in batches of 128, and keeps what it
    did not scan for the next call.  SIMPLIFICATION: no memcg, no slab caches.
    """
    for node in range(k.machine.nodes):
        while True:
            freed = _do_shrink_slab(k, node, 1000, 1000)
            if freed <= 10:
                break


def _do_shrink_slab(k, node, nr_scanned, nr_eligible):
    """``do_shrink_slab()`` for the deferred split shrinker on ``node``: the THPs it split."""
    m = k.machine
    freeable = k.deferred_split_count(node)
    if freeable == 0:
        return 0
    nr, m.shrinker_nr_deferred[node] = m.shrinker_nr_deferred[node], 0
    delta = (4 * nr_scanned) // DEFAULT_SEEKS * freeable // (nr_eligible + 1)
    total_scan = nr + delta
    if delta < freeable // 4:
        total_scan = min(total_scan, freeable // 2)
    total_scan = min(total_scan, freeable * 2)
    freed = 0
    while total_scan >= SHRINK_BATCH or total_scan >= freeable:
        nr_to_scan = min(SHRINK_BATCH, total_scan)
        ret = k.deferred_split_scan(nr_to_scan, node)
        if ret == SHRINK_STOP:
            break
        freed += ret
        total_scan -= nr_to_scan
    if total_scan > 0:
        m.shrinker_nr_deferred[node] += total_scan
    return freed


@S07.replaces
def check_refcounts(k, thps):
    """The v4.5 identities (step 4's) and the deferred split queue's.

    Every queued page is a THP head; a THP with a subpage that nothing maps
    -- no PMD, no PTE -- is queued: each such unmap queues it, and only a
    split or a free takes it off.  (A queued THP may be wholly mapped again:
    a split that failed after the freeze maps every subpage back by PTEs.)
    """
    m = k.machine
    queued = np.array(sorted(h for q in m.split_queues for h in q), dtype=np.int64)
    problems, seen = {}, []
    for t in s04.identity_checks(k, thps, problems):
        unmapped = ((t.pte == 0) & (t.pmd == 0)[:, None]).any(axis=1)
        missing = t.heads[unmapped & ~np.isin(t.heads, queued)]
        if len(missing):
            problems.setdefault("queue", f"THP {missing[0]:#x} has a subpage nothing maps but is not on "
                                         "the deferred split queue")
        seen.append(t.heads[np.isin(t.heads, queued)])
    stray = np.setdiff1d(queued, np.concatenate(seen) if seen else queued[:0])
    if len(stray):
        problems["stray"] = f"pfn {stray[0]:#x} is on the deferred split queue but is not a THP head"
    if any(m.split_scan_lists):
        problems["scan"] = "a deferred_split_scan() local list was left non-empty"
    return list(problems.values())
