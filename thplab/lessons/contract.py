"""Lesson 12 (patch 10): Documentation/vm/transhuge.txt as the contract.

:func:`doc_sections` and :func:`doc_diff` show ``kernel.TRANSHUGE_DOC`` across
levels (:func:`doc_links`: where each promise is written down); :data:`PROMISES` and :func:`contract_table` check each promise of the
new ``transhuge.txt`` against the model; :func:`split_huge_pmd_trials` and
:func:`split_huge_page_trials` run the two splits on many seeded random states;
:class:`SplitPmdProblem` is a quiz on "a page split also splits every PMD
that maps the page".  Each ``*_text`` helper is the text twin a lesson prints in a checked cell.
"""

import copy
import difflib
import functools
import textwrap
from dataclasses import dataclass, field

import numpy as np

from .. import costs
from ..errors import BadAddress, as_int
from ..invariants import mapping_counts
from ..machine import Machine
from ..page_flags import PageCompound, PageHead
from ..params import EBUSY, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from ..series import BASE, PATCHES
from ..series.p10_documentation import links, promises
from ..problems import check_number
from ._common import _REFUSED, _events, _observe, _boot

__all__ = ["DOC_LEVELS", "transhuge_doc", "doc_sections", "doc_diff", "doc_links", "Promise", "PROMISES",
           "check_promises", "contract_table", "RandomState", "random_state", "huge_pmds",
           "split_huge_pmd_trials", "split_huge_page_trials", "trials_text", "SplitPmdProblem"]


#: The levels lesson 12 compares: what v3.14/v3.16 document, after patch 01
#: (FOLL_SPLIT promise gone), after patch 10 (the rewrite, reconstructed).
DOC_LEVELS = (0, 1, 10)


def transhuge_doc(level):
    """``kernel.TRANSHUGE_DOC`` at series ``level`` (``{section: promises, one a line}``), without booting."""
    doc = BASE.data["TRANSHUGE_DOC"]
    for patch in PATCHES[:level]:
        doc = patch.data.get("TRANSHUGE_DOC", doc)
    return doc


def _sections(levels):
    names = []
    for level in levels:
        names += [s for s in transhuge_doc(level) if s not in names]
    return names


def _wrap(text, width, first, rest):
    if not width:
        return [first + text]
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest)


def doc_sections(levels=DOC_LEVELS, width=78, show_all=False):
    """The documented promises at several levels, section by section, as text.

    Each promise is one line of thplab's own words ending in a source tag
    (``[v3.16 L248]``: see :func:`doc_links`); the columns mark the levels whose
    documentation makes it (``x``) or not (``.``).  By default only the promises
    that some level does not make are listed, and a section's unchanged ones are
    counted on one line; ``show_all=True`` lists every promise.
    """
    head = "".join(f"L{level:<3}" for level in levels)
    what = "" if show_all else " (only what differs between the levels)"
    lines = [f"transhuge.txt promise by promise; x = documented at that level{what}", head.rstrip()]
    pad = " " * len(head)
    for section in _sections(levels):
        lines.append(f"== {section}")
        missing = [str(level) for level in levels if section not in transhuge_doc(level)]
        if missing:
            lines.append(f"{pad}(no such section at level {', '.join(missing)})")
        made = {level: promises(transhuge_doc(level).get(section, "")) for level in levels}
        seen = []
        for level in levels:
            seen += [p for p in made[level] if p not in seen]
        kept = [p for p in seen if all(p in made[level] for level in levels)]
        for promise in seen:
            if show_all or promise not in kept:
                marks = "".join(("x" if promise in made[level] else ".").ljust(4) for level in levels)
                lines += _wrap(promise, width, marks, pad)
        if kept and not show_all:
            lines.append(f"{pad}({len(kept)} more promise{'s' * (len(kept) > 1)}, made at every level)")
        lines.append("")
    return "\n".join(lines).rstrip()


def doc_diff(a=0, b=10, width=78):
    """Section-by-section unified diff (``difflib``) of the promise lists from level ``a`` to ``b``.

    One promise is one diff line; with ``width``, a long line wraps and its
    continuation lines repeat the ``-``/``+``/`` `` marker, indented.
    """
    old, new = transhuge_doc(a), transhuge_doc(b)
    out = [f"transhuge.txt promises, level {a} -> level {b}"]
    for section in _sections((a, b)):
        before = promises(old.get(section, ""))
        after = promises(new.get(section, ""))
        if before == after:
            out.append(f"== {section}: unchanged")
            continue
        state = ("section removed" if section not in new else "new section" if section not in old
                 else "changed")
        out.append(f"== {section}: {state}")
        for line in list(difflib.unified_diff(before, after, f"level {a}", f"level {b}",
                                              lineterm="", n=1))[2:]:
            if line.startswith("@@"):
                continue
            out += _wrap(line[1:], width, line[0], line[0] + "   ")
    return "\n".join(out)


def doc_links(levels=DOC_LEVELS):
    """Every source tag the promises at ``levels`` use, with the URL it stands for."""
    tags = {}
    for level in levels:
        for text in transhuge_doc(level).values():
            for promise in promises(text):
                tag = promise.rsplit("[", 1)[1].rstrip("]")
                for part, url in zip((t.strip() for t in tag.split(";")), links(promise)):
                    tags.setdefault(part, url)
    order = sorted(tags, key=lambda t: (t[0] != "v" or t.startswith("v2 "), t.split(" L")[0],
                                        int(t.split(" L")[1]) if " L" in t else 0, t))
    return "\n".join(f"{tag:<13} {tags[tag]}" for tag in order)


@dataclass
class Promise:
    """One promise of the level-10 ``transhuge.txt`` and the model experiment that checks it.

    ``check(level)`` returns ``(holds, evidence)``: ``holds`` is True or
    False, or None where the promise cannot apply (an event this kernel
    does not count).
    """

    section: str
    text: str
    check: object


def _promise_split_all_pmds(level):
    m = _boot(level)
    pid, _, head = m.map_thp()
    m.fork(pid)
    m.fork(pid)
    ret, delta = _observe(m, lambda: m.split_huge_page(head))
    evidence = f"3 PMDs map it: split_huge_page() -> {ret}; {_events(delta)}"
    if "thp_split_page" not in m.vmstat:
        return None, evidence
    return ret == 0 and delta.get("thp_split_page") == 1 and delta.get("thp_split_pmd") == 3, evidence


def _promise_split_fails_if_pinned(level):
    m = _boot(level)
    pid, addr, head = m.map_thp()
    m.get_user_pages_fast(pid, addr + 5 * PAGE_SIZE)
    ret, delta = _observe(m, lambda: m.split_huge_page(head))
    evidence = f"pin on subpage 5: split_huge_page() -> {ret}; {_events(delta)}"
    if "thp_split_page_failed" not in m.vmstat:
        return None, evidence
    return ret == -EBUSY and delta.get("thp_split_page_failed") == 1, evidence


def _promise_split_pmd_on(op):
    def check(level):
        m = _boot(level)
        pid, addr, head = m.map_thp()
        if op == "mprotect":
            call = "mprotect(subpages 8-15, PROT_READ)"
            _, delta = _observe(m, lambda: m.mprotect(pid, addr + 8 * PAGE_SIZE, 8 * PAGE_SIZE, "r"))
        else:
            call = "munmap(subpages 8-11)"
            _, delta = _observe(m, lambda: m.munmap(pid, addr + 8 * PAGE_SIZE, 4 * PAGE_SIZE))
        compound = bool(PageHead(m.mem_map, head))
        evidence = f"{call}: {_events(delta)}; still a compound page: {'yes' if compound else 'no'}"
        if "thp_split_pmd" not in m.vmstat:
            return None, evidence
        return delta.get("thp_split_pmd") == 1 and "thp_split_page" not in delta and compound, evidence
    return check


def _promise_gup_as_usual(level):
    m = _boot(level)
    pid, addr, head = m.map_thp()
    pages = m.get_user_pages(pid, addr + 5 * PAGE_SIZE)
    huge = int(m.walk(pid, [addr])["level"][0]) == 2
    return (int(pages[0]) == head + 5 and huge,
            f"get_user_pages(subpage 5) -> head + {int(pages[0]) - head}; PMD still huge: "
            f"{'yes' if huge else 'no'}")


def _promise_names(present, absent):
    def check(level):
        k = _boot(level, "4M").kernel
        found = {n: k.has(n) for n in present + absent}
        holds = all(found[n] for n in present) and not any(found[n] for n in absent)
        return holds, ", ".join(f"{n}() {'exists' if v else 'gone'}" for n, v in found.items())
    return check


def _promise_head_refcounting(level):
    m = _boot(level)
    pid, addr, head = m.map_thp()
    tail = head + 5

    def fields():
        return (int(m.mem_map["_count"][head]), int(m.mem_map["_count"][tail]),
                int(m.mem_map["_mapcount"][tail]))

    h0, t0, tm0 = fields()
    m.get_user_pages_fast(pid, addr + 5 * PAGE_SIZE)
    h1, t1, tm1 = fields()
    return (h1 - h0 == 1 and t1 == t0 == 0 and tm1 == tm0,
            f"pin on subpage 5: head _count {h1 - h0:+d}, tail _count {t1 - t0:+d}, "
            f"tail _mapcount {tm1 - tm0:+d}")


def _promise_split_distributes(level):
    m = _boot(level)
    pid, addr, head = m.map_thp()
    child = m.fork(pid)
    m.munmap(child, addr + 100 * PAGE_SIZE, 50 * PAGE_SIZE)
    ret = m.split_huge_page(head) if PageCompound(m.mem_map, head) else "not needed (already split)"
    counts = mapping_counts(m)
    pages = np.arange(head, head + HPAGE_PMD_NR)
    mapped = counts["pte_maps"][pages] + counts["pmd_maps"][pages]
    ok = bool((m.mem_map["_count"][pages] == mapped + m.pins[pages]).all())
    return ok, (f"fork, child unmaps subpages 100-149, split_huge_page() -> {ret}; "
                f"every subpage's _count == its mappings: {'yes' if ok else 'no'} "
                f"(_count 2 x {int((m.mem_map['_count'][pages] == 2).sum())}, "
                f"1 x {int((m.mem_map['_count'][pages] == 1).sum())})")


def _promise_compound_lock(level):
    c = costs.tail_get_put(level)
    get, put = c["get_page"], c["put_page"]
    holds = get.get("compound_lock", 0) >= 1 and put.get("compound_lock", 0) >= 1
    return holds, (f"get_page(tail): {get.get('atomic', 0)} atomics, {get.get('compound_lock', 0)} "
                   f"compound_lock; put_page(tail): {put.get('atomic', 0)} atomics, "
                   f"{put.get('compound_lock', 0)} compound_lock")


def _promise_split_iff_unpinned(level, nr_states=40):
    t = split_huge_page_trials(level, nr_states)
    holds = t["disagree"] == 0 and not t["problems"]
    return holds, (f"{t['thps']} THPs in {t['states']} random states: {t['pinned']} pinned -> "
                   f"{t['ebusy_pinned']} -EBUSY; {t['thps'] - t['pinned']} unpinned -> "
                   f"{t['ok_unpinned']} split")


def _promise_split_pmd_never_fails(level, nr_states=40):
    t = split_huge_pmd_trials(level, nr_states)
    holds = not t["failures"]
    kept = f"; compound page kept {t['compound_kept']}/{t['pmds']}"
    return holds, f"{t['pmds']} huge PMDs in {t['states']} random states: {len(t['failures'])} failures{kept}"


#: The promises of the level-10 ``transhuge.txt``, in the order of its sections.
PROMISES = [
    Promise("Monitoring usage", "thp_split_page: a page split also splits every PMD that maps it",
            _promise_split_all_pmds),
    Promise("Monitoring usage", "thp_split_page_failed counts a split refused because the page is pinned",
            _promise_split_fails_if_pinned),
    Promise("Monitoring usage", "thp_split_pmd counts mprotect() on part of a huge page; the page is not split",
            _promise_split_pmd_on("mprotect")),
    Promise("Monitoring usage", "thp_split_pmd counts munmap() on part of a huge page; the page is not split",
            _promise_split_pmd_on("munmap")),
    Promise("get_user_pages and follow_page", "they hand back head or tail pages as on hugetlbfs; nothing is split",
            _promise_gup_as_usual),
    Promise("Graceful fallback", "split_huge_pmd(vma, pmd, addr) is the call for unaware code",
            _promise_names(["split_huge_pmd"], ["split_huge_page_pmd"])),
    Promise("Locking in hugepage aware code", "no splitting PMD state to wait for any more",
            _promise_names([], ["pmd_trans_splitting", "wait_split_huge_page"])),
    Promise("Refcounts and transparent huge pages", "all refcounting is done on the head page",
            _promise_head_refcounting),
    Promise("Refcounts and transparent huge pages",
            "split_huge_page distributes the refcounts taken by page table entries",
            _promise_split_distributes),
    Promise("Refcounts and transparent huge pages",
            "split fails iff a reference is not a mapping (here: a pin): count must be Σ mapcount + 1",
            _promise_split_iff_unpinned),
    Promise("Refcounts and transparent huge pages",
            "compound_lock still serialises get/put_page on tails against the split",
            _promise_compound_lock),
    Promise("Refcounts and transparent huge pages",
            "split_huge_pmd can be called at any time and never fails",
            _promise_split_pmd_never_fails),
]


def check_promises(level):
    """``[(promise, holds, evidence)]`` for every promise of :data:`PROMISES` at ``level``."""
    return [(p, *p.check(level)) for p in PROMISES]


def _verdict(holds):
    return {True: "kept", False: "NOT kept", None: "n/a"}[holds]


def contract_table(levels=(10, 0), width=100):
    """Each promise of the new documentation, checked by the model at each of ``levels``.

    The first level is the one the documentation describes (10); the others
    show which promises the old kernel did not keep.
    """
    results = {level: check_promises(level) for level in levels}
    lines = [f"transhuge.txt after patch 10, each promise checked on the model at levels "
             f"{', '.join(map(str, levels))}", "(kept / NOT kept by that kernel; n/a: it has no such event)"]
    section = None
    for i, promise in enumerate(PROMISES):
        if promise.section != section:
            section = promise.section
            lines += ["", f"== {section}"]
        lines.append(f"  {i + 1:>2}. {promise.text}")
        for level in levels:
            _, holds, evidence = results[level][i]
            lines += textwrap.wrap(evidence, width, initial_indent=f"      L{level:<2} {_verdict(holds):<9}",
                                   subsequent_indent=" " * 19)
    return "\n".join(lines)


@dataclass
class RandomState:
    """A machine after a seeded random workload on THPs (see :func:`random_state`)."""

    machine: Machine
    pids: list
    base: int
    nr_thps: int
    log: list = field(default_factory=list)


_OPS = ("fork", "pin", "munmap", "mprotect", "split_pmd")


def random_state(level, seed=0, nr_ops=6, max_thps=3):
    """Fault 1..``max_thps`` THPs, then apply ``nr_ops`` random operations.

    Operations: fork (at most three processes), a gup-fast pin, munmap or
    mprotect of a random run of subpages, split_huge_pmd in a random process.
    Every draw comes from the machine's generator (``machine.rng``), so
    ``random_state(level, seed)`` is the same state every time. A request
    the kernel would refuse (an address no longer mapped...) is skipped and
    logged as such; refusals change nothing.
    """
    m = Machine.boot("32M", patches=level, seed=seed)
    rng = m.rng
    pid = m.spawn()
    nr_thps = int(rng.integers(1, max_thps + 1))
    base = m.mmap(pid, nr_thps * HPAGE_PMD_SIZE)
    m.touch(pid, base, nr_thps * HPAGE_PMD_SIZE)
    state = RandomState(m, [pid], base, nr_thps, [f"fault {nr_thps} THP(s) in pid {pid}"])
    for _ in range(nr_ops):
        op = _OPS[int(rng.integers(len(_OPS)))]
        who = state.pids[int(rng.integers(len(state.pids)))]
        thp = int(rng.integers(nr_thps))
        first = int(rng.integers(HPAGE_PMD_NR))
        nr = min(int(rng.integers(1, 65)), HPAGE_PMD_NR - first)
        addr = base + thp * HPAGE_PMD_SIZE + first * PAGE_SIZE
        what = {"fork": f"fork pid {who}", "pin": f"pin THP {thp} subpage {first} in pid {who}",
                "munmap": f"munmap THP {thp} subpages {first}-{first + nr - 1} in pid {who}",
                "mprotect": f"mprotect THP {thp} subpages {first}-{first + nr - 1} in pid {who}",
                "split_pmd": f"split_huge_pmd THP {thp} in pid {who}"}[op]
        try:
            if op == "fork":
                if len(state.pids) >= 3:
                    raise BadAddress("enough processes")
                state.pids.append(m.fork(who))
            elif op == "pin":
                m.get_user_pages_fast(who, addr)
            elif op == "munmap":
                m.munmap(who, addr, nr * PAGE_SIZE)
            elif op == "mprotect":
                m.mprotect(who, addr, nr * PAGE_SIZE, "r")
            else:
                m.split_huge_pmd(who, base + thp * HPAGE_PMD_SIZE)
            state.log.append(what)
        except _REFUSED:
            state.log.append(what + " (refused, skipped)")
    return state


def _huge_pmds(m):
    """``[(pid, address, head pfn)]`` of every huge PMD in every process of machine ``m``."""
    out = []
    for pid, mm in sorted(m.processes.items()):
        for vma in mm.vmas:
            start = -(-vma.vm_start // HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE
            addrs = np.arange(start, vma.vm_end, HPAGE_PMD_SIZE, dtype=np.uint64)
            if len(addrs):
                w = m.walk(pid, addrs)
                huge = w["level"] == 2
                out += [(pid, int(a), int(pfn)) for a, pfn in zip(addrs[huge], w["pfn"][huge])]
    return out


def huge_pmds(m):
    """``[(pid, address)]`` of every huge PMD in every process of machine ``m``."""
    return [(pid, addr) for pid, addr, _ in _huge_pmds(m)]


def _trials_key(level, nr_states, seed):
    """The trials' arguments as ints: the key of their cache (a list would be unhashable)."""
    return (as_int(level, "level (the series level)"), as_int(nr_states, "nr_states"),
            as_int(seed, "seed"))


def split_huge_pmd_trials(level, nr_states=40, seed=0):
    """Call ``split_huge_pmd()`` on every huge PMD of ``nr_states`` random states.

    A failure is anything but: no exception, the PMD now points to a PTE
    table, the machine consistent (``check()``), one ``thp_split_pmd`` where
    the kernel counts it. Returns counts and the failures' descriptions.
    Run once per arguments (the model is deterministic; lesson 12 prints the
    same trials in :func:`contract_table` and :func:`trials_text`), a fresh
    copy each call.
    """
    return copy.deepcopy(_split_huge_pmd_trials(*_trials_key(level, nr_states, seed)))


@functools.lru_cache(maxsize=8)
def _split_huge_pmd_trials(level, nr_states, seed):
    out = {"level": level, "states": nr_states, "pmds": 0, "compound_kept": 0, "failures": []}
    for s in range(seed, seed + nr_states):
        m = random_state(level, s).machine
        # Look again after every split: before patch 04 one split_huge_pmd()
        # splits the whole THP, and with it every other PMD mapping it.
        while pmds := _huge_pmds(m):
            pid, addr, head = pmds[0]
            out["pmds"] += 1
            try:
                _, delta = _observe(m, lambda: m.split_huge_pmd(pid, addr))
                m.check()
            except Exception as exc:  # noqa: BLE001 - a failure is what we count
                out["failures"].append(f"seed {s}, pid {pid}, {addr:#x}: {type(exc).__name__}: {exc}")
                break
            if int(m.walk(pid, [addr])["level"][0]) == 2:
                out["failures"].append(f"seed {s}, pid {pid}, {addr:#x}: PMD still huge")
                break
            if "thp_split_pmd" in m.vmstat and delta.get("thp_split_pmd") != 1:
                out["failures"].append(f"seed {s}, pid {pid}, {addr:#x}: {_events(delta)}")
            out["compound_kept"] += bool(PageHead(m.mem_map, head))
    return out


def split_huge_page_trials(level, nr_states=40, seed=0):
    """Call ``split_huge_page()`` on every THP of ``nr_states`` random states.

    The prediction of the new documentation: it succeeds (0) exactly when
    every reference but the caller's is a mapping (``Σ page_mapcount ==
    page_count − 1``), and fails with ``-EBUSY`` otherwise.  In the kernel the
    extra reference may be a GUP pin, a per-CPU LRU pagevec's or a racing
    ``get_page()``'s; in these random states it can only be a pin, so the trials
    count pinned THPs.  Run once per arguments, like :func:`split_huge_pmd_trials`.
    """
    return copy.deepcopy(_split_huge_page_trials(*_trials_key(level, nr_states, seed)))


@functools.lru_cache(maxsize=8)
def _split_huge_page_trials(level, nr_states, seed):
    out = {"level": level, "states": nr_states, "thps": 0, "pinned": 0, "ebusy_pinned": 0,
           "ok_unpinned": 0, "disagree": 0, "problems": []}
    for s in range(seed, seed + nr_states):
        m = random_state(level, s).machine
        for head in m.thp_heads().tolist():
            pinned = bool(m.pins[head:head + HPAGE_PMD_NR].any())
            ret = m.split_huge_page(head)
            out["thps"] += 1
            out["pinned"] += pinned
            out["ebusy_pinned"] += pinned and ret == -EBUSY
            out["ok_unpinned"] += (not pinned) and ret == 0
            out["disagree"] += (ret == 0) == pinned
            try:
                m.check()
            except Exception as exc:  # noqa: BLE001
                out["problems"].append(f"seed {s}, head {head:#x}: {exc}")
    return out


def trials_text(levels=(0, 10), nr_states=40):
    """Text of :func:`split_huge_pmd_trials` and :func:`split_huge_page_trials` at ``levels``."""
    lines = [f"{nr_states} random states per level (seeds 0-{nr_states - 1}; random_state(level, seed))"]
    for level in levels:
        p = split_huge_pmd_trials(level, nr_states)
        g = split_huge_page_trials(level, nr_states)
        lines += [
            f"level {level}:",
            f"  split_huge_pmd  on {p['pmds']} huge PMDs: {len(p['failures'])} failures; "
            f"compound page kept {p['compound_kept']} times",
            f"  split_huge_page on {g['thps']} THPs ({g['pinned']} pinned): -EBUSY on "
            f"{g['ebusy_pinned']} pinned, 0 on {g['ok_unpinned']} unpinned;",
            f"    {g['disagree']} outcome(s) against the rule 'fails iff a reference is not a mapping'",
        ]
        lines += [f"  failure: {f}" for f in p["failures"][:3] + g["problems"][:3]]
    return "\n".join(lines)


@dataclass
class SplitPmdProblem:
    """How many ``thp_split_pmd`` events does a successful ``split_huge_page()`` count?

    The level-10 documentation: a page split also splits every PMD that
    maps the page. A seeded number of forks shares the THP,
    and some processes have already split their own PMD.
    """

    seed: int
    level: int
    steps: list
    answer: int
    explanation: str

    @classmethod
    def generate(cls, seed=0, level=10):
        rng = np.random.default_rng(seed)
        forks = int(rng.integers(0, 4))
        pre_split = int(rng.integers(0, forks + 2))
        m = _boot(level, seed=seed)
        pid, addr, head = m.map_thp()
        pids = [pid] + [m.fork(pid) for _ in range(forks)]
        steps = ["fault a THP in pid 1"] + [f"fork() -> pid {p}" for p in pids[1:]]
        for p in pids[:pre_split]:
            m.split_huge_pmd(p, addr)
            steps.append(f"split_huge_pmd() in pid {p}")
        ret, delta = _observe(m, lambda: m.split_huge_page(head))
        steps.append(f"split_huge_page() -> {ret}")
        answer = delta.get("thp_split_pmd", 0)
        why = (f"{len(pids)} process(es) mapped the THP, {pre_split} had already split their PMD: "
               f"split_huge_page() converted the remaining {answer} huge PMD(s) to PTE tables, "
               "one thp_split_pmd each, then counted thp_split_page once.")
        return cls(seed, level, steps, answer, why)

    def render(self):
        lines = [f"ARG seed {self.seed}", f"ARG level {self.level}", "", "Steps:"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        lines += ["", "How much did /proc/vmstat thp_split_pmd grow in the last step?"]
        return "\n".join(lines)

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation)
