"""What changed after v4.5: the one list of later THP refcounting and mapcount changes.

thplab models the old kernel, RFC v1 (levels 0-10) and the merged v4.5 design
(``kernel="v4.5"``, lesson 15); nothing after v4.5 is simulated.  This
module is the course's single place for what came later, so lessons cite it
instead of keeping their own lists.  Each :class:`Later` entry says what
changed in thplab's own words, where (a commit id, or the series when the
mainline id was not confirmed) and how thplab knows (``evidence``).  An entry
whose version could not be pinned down says "about vX" and has
``verified=False``.
"""

import re
import textwrap
from dataclasses import dataclass

__all__ = ["Later", "LATER", "version_key", "describe_later"]


@dataclass(frozen=True)
class Later:
    """One change after v4.5."""

    name: str       #: what changed, by its kernel name
    version: str    #: first release with it: "v5.16", or "about v6.3" when not pinned down
    year: int       #: year of that release
    commit: str     #: mainline commit id (12 hex digits) or the patch series' title
    link: str       #: a pinned URL: a commit, a lore message, or a file at a tagged version
    summary: str    #: one sentence in plain words (thplab's own)
    verified: bool  #: version and commit confirmed in a primary source
    evidence: str   #: where the version and commit were confirmed (or why not)


def _commit(sha):
    return f"https://git.kernel.org/torvalds/c/{sha}"


LATER = (
    Later("thp_deferred_split_page", "v4.6", 2016, "thp, vmstats: count deferred split events",
          "https://lore.kernel.org/linux-mm/1455009302-57702-1-git-send-email-kirill.shutemov@linux.intel.com/",
          "A /proc/vmstat counter of THPs put on the deferred split queue, so the partially unmapped "
          "pages that v4.5 keeps until memory pressure can be seen.",
          True, "posted 9 Feb 2016; listed in mmotm's since-4.5 branch of 29 Mar 2016 (the 4.6 merge "
          "window); absent from the 4.5.0 and 4.5.7 trees, present in 4.6.2's (mm/vmstat.c#L851, "
          "mm/huge_memory.c#L3400), docs/v4.5-stack.md §3.1"),
    Later("FOLL_PIN / pin_user_pages()", "v5.6", 2020, "eddb1c228f79", _commit("eddb1c228f79"),
          "A second kind of get_user_pages() reference, for DMA and other long holds, that the page "
          "records apart from ordinary references, so the kernel can ask 'may this page be pinned?'.",
          True, "commit id from a Fixes: tag on linux-mm; 'in v5.6-rc1' per a driver's compatibility "
          "comment quoting the same commit"),
    Later("PMD split on COW", "v5.8", 2020, "3917c80280c9", _commit("3917c80280c9"),
          "A write fault on a shared THP no longer copies 2 MiB: it splits that process's PMD and "
          "copies the one 4 KiB page written.",
          True, "'thp: change CoW semantics for anon-THP' (Kirill Shutemov, April 2020); a later fix "
          "citing it carries 'Cc: stable # v5.8+'"),
    Later("folios", "v5.16", 2022, "7b230db3b8d3", _commit("7b230db3b8d3"),
          "struct folio names a head page (or a single page) as a type, so code that wants the whole "
          "compound page says so; a THP becomes a large folio.",
          True, "'mm: Introduce struct folio' is in the pull request 'Memory folios for v5.16' "
          "(Matthew Wilcox, 31 Oct 2021)"),
    Later("PageAnonExclusive", "v5.19", 2022, "6c287605fd56", _commit("6c287605fd56"),
          "A flag on an anonymous page that says one process owns it exclusively; a read-only pin "
          "first makes the page exclusive, so a later COW cannot move the process away from "
          "the pinned copy.",
          True, "'mm: remember exclusively mapped anonymous pages with PG_anon_exclusive' (David "
          "Hildenbrand) is in 'MM updates for 5.19-rc1' (25 May 2022)"),
    Later("PageDoubleMap removed", "v6.2", 2023, "cb67f4282bf9", _commit("cb67f4282bf9"),
          "The flag for 'mapped by a PMD and by PTEs' goes: the first tail keeps a total of the "
          "subpages' PTE mappings instead, which answers the same question.",
          True, "Hugh Dickins, 'mm,thp,rmap: simplify compound page mapcount handling' (2 Nov 2022), "
          "merged for 6.2-rc1; the mainline id is cited by later hugetlb fixes"),
    Later("_entire_mapcount, _nr_pages_mapped", "about v6.3", 2023,
          "folio field renames after the v6.2 rework",
          "https://elixir.bootlin.com/linux/v6.6/source/include/linux/mm_types.h",
          "The folio's counter of PMD (whole-folio) mappings is called _entire_mapcount and the count "
          "of its pages mapped by PTEs _nr_pages_mapped, the split the RFC lacked.",
          False, "field names seen in mm patches of 2023-2024; the release that renamed them was not "
          "found (the link shows them in v6.6)"),
    Later("multi-size THP (mTHP)", "v6.8", 2024, "3485b88390b0", _commit("3485b88390b0"),
          "Anonymous memory can be faulted in large folios smaller than 2 MiB (16 KiB, 64 KiB, ...), "
          "each size switched on in sysfs; they are always mapped by PTEs.",
          True, "series 'Multi-size THP for anonymous memory' (Ryan Roberts) in 'MM updates for "
          "6.8-rc1' (8 Jan 2024); id of its sysfs patch from Fixes: tags and a stable backport note"),
    Later("_large_mapcount", "v6.10", 2024, "05c5323b2a34", _commit("05c5323b2a34"),
          "One counter of all mappings of a large folio, PMDs and PTEs alike, so 'is it mapped, and "
          "how often' is one read instead of a walk over the pages.",
          True, "'mm: track mapcount of large folios in single value' (David Hildenbrand) is in 'MM "
          "updates for 6.10-rc1' (17 May 2024); id from Fixes: tags"),
    Later("CONFIG_NO_PAGE_MAPCOUNT", "v6.15", 2025,
          "mm: MM owner tracking for large folios (!hugetlb) + CONFIG_NO_PAGE_MAPCOUNT",
          "https://lore.kernel.org/linux-mm/20250330165732.f4c1493615375623f67e38eb@linux-foundation.org/",
          "An experimental option to stop keeping a mapcount in each page of a large folio at all; "
          "the folio's own counters and the processes it is mapped into are tracked instead.",
          True, "the 20-patch series by David Hildenbrand is in 'MM updates for 6.15-rc1' (30 Mar "
          "2025, the link); the mainline commit ids were not confirmed"),
)


def version_key(version):
    """``"about v6.3"`` -> ``(6, 3)``: orders entries by release."""
    return tuple(int(x) for x in re.search(r"v(\d+(?:\.\d+)*)", version)[1].split("."))


def describe_later(entries=LATER, width=100):
    """The list as text: one paragraph per change, version first; unverified ones say so.

    A series is named by its title; the link goes on a line of its own, indented less when a long
    one would not fit.
    """
    out = []
    for e in entries:
        body = e.summary + ("" if e.verified else " (version not pinned down)")
        out.append(f"{e.version:<11} {e.name}")
        out += textwrap.wrap(body, width, initial_indent=" " * 12, subsequent_indent=" " * 12)
        if not re.fullmatch(r"[0-9a-f]{12}", e.commit):  # a series: its title (commit links carry the id)
            out += textwrap.wrap(f"'{e.commit}'", width, initial_indent=" " * 12, subsequent_indent=" " * 12)
        out.append(" " * max(0, min(12, width - len(e.link))) + e.link)
    return "\n".join(out)
