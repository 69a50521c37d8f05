"""Helpers of the synthesis lessons 12-15: the contract, old vs new, open problems, live.

* Lesson 12 (patch 10): :func:`doc_sections` and :func:`doc_diff` show
  ``kernel.TRANSHUGE_DOC`` across levels; :data:`PROMISES` and
  :func:`contract_table` check each promise of the new ``transhuge.txt``
  against the model; :func:`split_huge_pmd_trials` and
  :func:`split_huge_page_trials` run the two splits on many random states;
  :class:`SplitPmdProblem` is a quiz on "split_huge_page implies splitting
  all PMDs".
* Lesson 13: :func:`compare_scenario` puts a scenario at two levels side by
  side; :func:`identity_report` spells out a level's accounting identity with
  the numbers of one state; :func:`pinned_split` records ``split_huge_page()``
  of a pinned THP for a step-through; :class:`CostProblem` asks for counted
  operations of ``get_page()``/``put_page()`` on tails.
* Lesson 14: :func:`partial_munmap_workload` and :func:`held_memory_sweep`
  measure memory that partial ``munmap()`` leaves held; :func:`unaligned_vmas`
  builds VMAs that start or end inside a compound page;
  :func:`mapcount_ambiguity` builds two states whose ``struct page``\\ s are
  identical but whose page tables differ; :func:`cow_reuse` shows what that
  costs at a write fault.
* Lesson 15: :func:`format_experiment`, :func:`verdict_table` and
  :class:`LiveQuestion` read a (recorded or live) :class:`thplab.live.LiveRun`;
  :func:`live_report` runs the experiments when the kernel allows.

Everything is seeded and deterministic; each ``*_text`` / ``format_*``
helper is the text twin a lesson prints in a checked cell.
"""

import dataclasses
import difflib
import textwrap
from dataclasses import dataclass, field

import numpy as np

from .. import costs
from ..errors import BadAddress, BadPage, OutOfMemory, Segfault
from ..invariants import held_pages, mapping_counts
from ..machine import Machine
from ..page_flags import PageCompound, PageHead, Use, compound_head
from ..params import EBUSY, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE
from ..scenarios import SCENARIOS, WATCH
from ..series import BASE, PATCHES
from ..trace import record

__all__ = [
    "DOC_LEVELS", "transhuge_doc", "doc_sections", "doc_diff",
    "Promise", "PROMISES", "check_promises", "contract_table",
    "RandomState", "random_state", "huge_pmds", "split_huge_pmd_trials", "split_huge_page_trials",
    "trials_text", "SplitPmdProblem",
    "compare_scenario", "identity_report", "pinned_split", "step_summary", "CostProblem",
    "costs_by_label", "held_series", "PmdCountProblem",
    "partial_munmap_workload", "workload_text", "held_memory_sweep", "sweep_text",
    "unaligned_vmas", "vma_text", "mapcount_ambiguity", "ambiguity_text", "cow_reuse",
    "cow_text", "cow_pte_reuse", "format_experiment", "verdict_table", "LiveQuestion", "live_status",
    "live_report",
]

KIB = PAGE_SIZE // 1024
#: Requests the kernel refuses before changing anything; a random workload skips them.
_REFUSED = (BadAddress, Segfault, BadPage, OutOfMemory)


def _delta(before, after):
    return {n: v - before[n] for n, v in after.items() if v != before[n] and n.startswith("thp_")}


def _events(delta):
    return ", ".join(f"{n} {v:+d}" for n, v in delta.items()) or "no THP event"


def _observe(m, fn):
    """Run ``fn()``; return its result and the THP vmstat events it counted."""
    before = m.vmstat.as_dict()
    result = fn()
    return result, _delta(before, m.vmstat.as_dict())


def _thp(m, pid=None):
    """Map and fault one THP in ``pid`` (a new process by default); return ``(pid, addr, head)``."""
    return m.map_thp(pid)


def _ranges(values):
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    values = np.asarray(values, dtype=np.int64)
    if not len(values):
        return "none"
    cuts = np.flatnonzero(np.diff(values) != 1) + 1
    parts = []
    for run in np.split(values, cuts):
        parts.append(f"{run[0]}" if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts)


# =====================================================================================
# Lesson 12: Documentation/vm/transhuge.txt as the contract

#: The levels lesson 12 compares: the old text, after patch 01 (FOLL_SPLIT
#: paragraph gone), after patch 10 (the rewrite).
DOC_LEVELS = (0, 1, 10)


def transhuge_doc(level):
    """``kernel.TRANSHUGE_DOC`` at series ``level`` (``{section: text}``), without booting."""
    doc = BASE.data["TRANSHUGE_DOC"]
    for patch in PATCHES[:level]:
        doc = patch.data.get("TRANSHUGE_DOC", doc)
    return doc


def _sections(levels):
    names = []
    for level in levels:
        names += [s for s in transhuge_doc(level) if s not in names]
    return names


def doc_sections(levels=DOC_LEVELS, width=78):
    """The documentation at several levels, section by section, as text.

    A section that a level does not have reads "(no such section)"; an
    emptied one reads "(empty)".
    """
    lines = []
    for section in _sections(levels):
        lines.append(f"== {section}")
        for level in levels:
            doc = transhuge_doc(level)
            tag = f"  level {level:>2}: "
            if section not in doc:
                lines.append(tag + "(no such section)")
            elif not doc[section]:
                lines.append(tag + "(empty)")
            else:
                lines += textwrap.wrap(doc[section], width, initial_indent=tag,
                                       subsequent_indent=" " * len(tag))
        lines.append("")
    return "\n".join(lines).rstrip()


def doc_diff(a=0, b=10, width=72):
    """Section-by-section unified diff (``difflib``) of the documentation from level ``a`` to ``b``.

    The texts are wrapped at ``width`` columns first, so that the diff shows
    the changed lines rather than one changed paragraph.
    """
    old, new = transhuge_doc(a), transhuge_doc(b)
    out = [f"transhuge.txt, level {a} -> level {b}"]
    for section in _sections((a, b)):
        before = textwrap.wrap(old.get(section, ""), width)
        after = textwrap.wrap(new.get(section, ""), width)
        if before == after:
            out.append(f"== {section}: unchanged")
            continue
        state = ("section removed" if section not in new else "new section" if section not in old
                 else "rewritten")
        out.append(f"== {section}: {state}")
        out += list(difflib.unified_diff(before, after, f"level {a}", f"level {b}",
                                         lineterm="", n=1))[2:]
    return "\n".join(out)


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


def _boot(level, mem="16M", seed=0):
    return Machine.boot(mem, patches=level, seed=seed)


def _promise_split_all_pmds(level):
    m = _boot(level)
    pid, _, head = _thp(m)
    m.fork(pid)
    m.fork(pid)
    ret, delta = _observe(m, lambda: m.split_huge_page(head))
    evidence = f"3 PMDs map it: split_huge_page() -> {ret}; {_events(delta)}"
    if "thp_split_page" not in m.vmstat:
        return None, evidence
    return ret == 0 and delta.get("thp_split_page") == 1 and delta.get("thp_split_pmd") == 3, evidence


def _promise_split_fails_if_pinned(level):
    m = _boot(level)
    pid, addr, head = _thp(m)
    m.get_user_pages_fast(pid, addr + 5 * PAGE_SIZE)
    ret, delta = _observe(m, lambda: m.split_huge_page(head))
    evidence = f"pin on subpage 5: split_huge_page() -> {ret}; {_events(delta)}"
    if "thp_split_page_failed" not in m.vmstat:
        return None, evidence
    return ret == -EBUSY and delta.get("thp_split_page_failed") == 1, evidence


def _promise_split_pmd_on(op):
    def check(level):
        m = _boot(level)
        pid, addr, head = _thp(m)
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
    pid, addr, head = _thp(m)
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
    pid, addr, head = _thp(m)
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
    pid, addr, head = _thp(m)
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
    Promise("vmstat", "thp_split_page implies splitting all PMDs the page is mapped with",
            _promise_split_all_pmds),
    Promise("vmstat", "thp_split_page_failed counts a split refused because the page is pinned",
            _promise_split_fails_if_pinned),
    Promise("vmstat", "thp_split_pmd counts mprotect() on part of a huge page; the page is not split",
            _promise_split_pmd_on("mprotect")),
    Promise("vmstat", "thp_split_pmd counts munmap() on part of a huge page; the page is not split",
            _promise_split_pmd_on("munmap")),
    Promise("get_user_pages and follow_page", "they return head or tail pages as usual, no split",
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
            "split fails iff pinned: page count must equal sum of mapcounts + 1",
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


def huge_pmds(m):
    """``[(pid, address)]`` of every huge PMD in every process of machine ``m``."""
    out = []
    for pid, mm in sorted(m.processes.items()):
        for vma in mm.vmas:
            start = -(-vma.vm_start // HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE
            addrs = np.arange(start, vma.vm_end, HPAGE_PMD_SIZE, dtype=np.uint64)
            if len(addrs):
                levels = m.walk(pid, addrs)["level"]
                out += [(pid, int(a)) for a in addrs[levels == 2]]
    return out


def split_huge_pmd_trials(level, nr_states=40, seed=0):
    """Call ``split_huge_pmd()`` on every huge PMD of ``nr_states`` random states.

    A failure is anything but: no exception, the PMD now points to a PTE
    table, the machine consistent (``check()``), one ``thp_split_pmd`` where
    the kernel counts it. Returns counts and the failures' descriptions.
    """
    out = {"level": level, "states": nr_states, "pmds": 0, "compound_kept": 0, "failures": []}
    for s in range(seed, seed + nr_states):
        m = random_state(level, s).machine
        # Look again after every split: before patch 04 one split_huge_pmd()
        # splits the whole THP, and with it every other PMD mapping it.
        while pmds := huge_pmds(m):
            pid, addr = pmds[0]
            head = int(m.walk(pid, [addr])["pfn"][0])
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
    nobody pins any subpage (``Σ page_mapcount == page_count − 1`` with the
    caller's reference), and fails with ``-EBUSY`` otherwise.
    """
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
            f"    {g['disagree']} outcome(s) against the rule 'fails iff pinned'",
        ]
        lines += [f"  failure: {f}" for f in p["failures"][:3] + g["problems"][:3]]
    return "\n".join(lines)


@dataclass
class SplitPmdProblem:
    """How many ``thp_split_pmd`` events does a successful ``split_huge_page()`` count?

    The level-10 documentation: splitting the page "implies splitting all
    PMD the page is mapped with". A seeded number of forks shares the THP,
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
        pid, addr, head = _thp(m)
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
        return _check_int(guess, self.answer, self.explanation)


def _check_int(guess, answer, explanation, who="the model says"):
    try:
        value = int(str(guess).strip())
    except ValueError:
        return False, f"Please answer with a whole number (you typed {guess!r})."
    if value == answer:
        return True, f"Right: {answer}. {explanation}"
    return False, f"Not quite: you said {value}, {who} {answer}. {explanation}"


# =====================================================================================
# Lesson 13: old vs new

_LABEL, _COL = 30, 34


def _lines(label, cells):
    """One row of a side-by-side table; label and cells wrap; ``*`` marks cells that differ."""
    parts = [[c] if len(c) < _COL else textwrap.wrap(c, _COL - 2) for c in cells]
    labels = textwrap.wrap(label, _LABEL - 2) or [""]
    mark = " *" if len(set(cells)) > 1 else ""
    out = []
    for i in range(max(len(labels), *map(len, parts))):
        text = f"  {labels[i] if i < len(labels) else '':<{_LABEL}}" + "".join(
            f"{(p[i] if i < len(p) else ''):<{_COL}}" for p in parts)
        out.append(text.rstrip() + (mark if i == 0 else ""))
    return out


def _cell_result(result, delta):
    if result is None:
        res = ""
    elif isinstance(result, np.ndarray):
        res = "-> pfns " + ", ".join(f"{int(p):#x}" for p in result)
    else:
        res = f"-> {result}"
    events = ", ".join(f"{k} +{v}" for k, v in delta.items())
    return "; ".join(x for x in (res, events) if x) or "-"


def _counter_cell(run, row):
    if row is None:
        return "-"
    if run.machine.mem_map["use"][row["pfn"]] == Use.free:
        return "free (in the buddy allocator)"
    return (f"{row['kind']:<5}{row['_count']:>7}{row['_mapcount']:>11}"
            f"{row['page_count']:>5}{row['page_mapcount']:>4}")


def compare_scenario(name, levels=(0, 10), watch=WATCH, seed=0):
    """A scenario run at each of ``levels``, side by side, as text.

    Per step: the result and the THP vmstat events. Then who maps the
    scenario's 2 MiB in each process, and the watched subpages' counters:
    kind, raw ``_count``, raw ``_mapcount``, ``page_count()`` (pc) and
    ``page_mapcount()`` (pm). Rows where the levels differ end in ``*``.
    """
    scenario = SCENARIOS[name]
    runs = [scenario.start(level, seed=seed) for level in levels]
    for run in runs:
        run.run_all()
    lines = [f"== {name}: {scenario.title}", f"   {scenario.description}"]
    lines += _lines("", [f"level {lv}" + (" (old kernel)" if lv == 0 else " (RFC v1)" if lv == 10 else "")
                         for lv in levels])
    lines[-1] = lines[-1].rstrip(" *")
    for i, label in enumerate(runs[0].labels):
        lines += _lines(f"{i + 1}. {label}", [_cell_result(*run.results[i][1:]) for run in runs])
    lines.append("  who maps the 2 MiB range:")
    maps = [run.mappings() for run in runs]
    for pid in sorted(set().union(*maps)):
        lines += _lines(f"  pid {pid}", [mp.get(pid, "(exited)") for mp in maps])
    lines += _lines("  subpage", [f"{'kind':<5}{'_count':>7}{'_mapcount':>11}{'pc':>5}{'pm':>4}"] * len(runs))
    lines[-1] = lines[-1].rstrip(" *")
    rows = [{r["subpage"]: r for r in run.counters(watch)} for run in runs]
    for i in watch:
        lines += _lines(f"  {i:>7}", [_counter_cell(run, r.get(i)) for run, r in zip(runs, rows)])
    return "\n".join(lines)


def identity_report(run):
    """The accounting identity of ``run``'s level, with the numbers of its current state.

    Old scheme (tail-page refcounting, levels 0-3): head ``_count`` = PMD
    maps + tail pins + head pins, where a tail pin is read from the tail's
    ``_mapcount``. RFC v1 (levels 4-10): head ``_count`` = Σ
    ``page_mapcount()`` over the 512 subpages + pins. The right-hand side is
    read from ``struct page``\\ s, then confirmed against the ground truth
    (page tables and ``machine.pins``) by ``machine.check()``.
    """
    m = run.machine
    head = run.head
    mm = m.mem_map
    level = m.level
    lines = [f"level {level}, after {run.done} steps ({', '.join(run.labels[:run.done])})"]
    if head is None or not PageHead(mm, head):
        lines.append("  no compound page any more: every 4 KiB page has _count = its mappings + its pins")
        m.check()
        lines.append("  machine.check(): every invariant holds")
        return "\n".join(lines)
    pages = np.arange(head, head + HPAGE_PMD_NR)
    count = int(mm["_count"][head])
    counts = mapping_counts(m)
    pins = m.pins[pages]
    if m.kernel.caps["tail_pins"]:
        pmd = int(mm["_mapcount"][head]) + 1
        tail_pins = mm["_mapcount"][pages[1:]] + 1
        head_pins = count - pmd - int(tail_pins.sum())
        pinned = np.flatnonzero(tail_pins) + 1
        lines += [
            "  old identity: head _count = PMD maps + tail pins + head pins",
            f"  {count} = {pmd} + {int(tail_pins.sum())} + {head_pins}",
            f"    PMD maps  = page_mapcount(head) = head _mapcount + 1 = {pmd}",
            f"    tail pins = Σ (tail _mapcount + 1) = {int(tail_pins.sum())}"
            + (f" (subpage {_ranges(pinned)})" if len(pinned) else ""),
            f"    head pins = what is left = {head_pins}",
            f"  ground truth: {int(counts['pmd_maps'][head])} huge PMD(s) map it, "
            f"{int(pins[1:].sum())} pin(s) on tails, {int(pins[0])} on the head",
        ]
    else:
        pm = mm["_mapcount"][pages] + 1
        total = int(pm.sum())
        nr_pins = count - total
        lines += [
            "  v1 identity: head _count = Σ page_mapcount(subpage i), i = 0..511, + pins",
            f"  {count} = {total} + {nr_pins}",
            f"    page_mapcount(head) = {int(pm[0])} (PMD maps {int(counts['pmd_maps'][head])} "
            f"+ PTEs of subpage 0 {int(counts['pte_maps'][head])})",
            f"    Σ page_mapcount(tails) = {int(pm[1:].sum())} (PTEs mapping tails)",
            f"    pins = what is left = {nr_pins}",
            f"  ground truth: {int(pins.sum())} pin(s) held"
            + (f" (subpage {_ranges(np.flatnonzero(pins))})" if pins.any() else ""),
        ]
    m.check()
    lines.append("  machine.check(): every invariant of this level holds")
    return "\n".join(lines)


def pinned_split(level, seed=0):
    """``split_huge_page()`` of a shared THP with a gup pin on subpage 5, recorded point by point.

    Runs the first three steps of the ``fork-pin-split`` scenario (fault,
    fork, pin subpage 5), then records the split with
    :func:`thplab.trace.record`. Returns ``(run, result, recorder)``; watch
    ``run.subpages()`` in a :class:`thplab.widgets.StepThrough`.
    """
    run = SCENARIOS["fork-pin-split"].start(level, seed=seed).run_to(3)
    result, recorder = record(run.machine, run.machine.split_huge_page, run.head)
    return run, result, recorder


def step_summary(recorder, pages=None):
    """One line per recorded point: its name and how much changed there."""
    lines = []
    for i, step in enumerate(recorder.steps):
        if i == 0:
            lines.append(f"{i:>3}  {step}")
            continue
        ch = recorder.diff(i, pages)
        stats = ", ".join(f"{n} {a} -> {b}" for n, a, b in ch["vmstat"])
        what = [f"{len(ch['pages'])} struct page field(s)" if ch["pages"] else "",
                f"{len(ch['entries'])} page-table entr{'y' if len(ch['entries']) == 1 else 'ies'}"
                if ch["entries"] else "", stats]
        what = "; ".join(w for w in what if w) or "nothing changed"
        lines.append(f"{i:>3}  {step}\n       {what}")
    return "\n".join(lines)


@dataclass
class CostProblem:
    """Counted operations of ``get_page()`` + ``put_page()`` on tail pages at one level.

    Answers come from :func:`thplab.costs.tail_get_put`, the same code path
    as :func:`thplab.costs.cost_table`.
    """

    seed: int
    level: int
    nr: int
    kind: str
    answer: int
    explanation: str

    @classmethod
    def generate(cls, seed=0, levels=(0, 10)):
        rng = np.random.default_rng(seed)
        level = int(rng.choice(levels))
        nr = int(rng.integers(1, 9))
        kind = str(rng.choice(("atomic", "compound_lock", "irq_save")))
        c = costs.tail_get_put(level)
        get, put = c["get_page"].get(kind, 0), c["put_page"].get(kind, 0)
        answer = nr * (get + put)
        why = (f"At level {level} one get_page(tail) costs {get} and one put_page(tail) {put} "
               f"{kind} operation(s): {nr} x ({get} + {put}) = {answer}.")
        return cls(seed, level, nr, kind, answer, why)

    def render(self):
        return "\n".join([
            f"ARG seed {self.seed}", f"ARG level {self.level}"
            + (" (old kernel)" if self.level == 0 else f" (patches 01-{self.level:02d} applied)"), "",
            f"A driver takes a reference on {self.nr} different tail pages of one PMD-mapped THP with",
            f"get_page() and later drops them with put_page(): {2 * self.nr} calls.",
            "",
            f"How many '{self.kind}' operations do these calls cost in all?"])

    def check(self, guess):
        return _check_int(guess, self.answer, self.explanation)


def costs_by_label(levels=(0, 10)):
    """``{"get_page(tail), level L": costs, ...}`` for :func:`thplab.viz.plot_costs`."""
    out = {}
    for level in levels:
        c = costs.tail_get_put(level)
        for call in ("get_page", "put_page"):
            out[f"{call}(tail), level {level}"] = c[call]
    return out


# =====================================================================================
# Lesson 14: what the RFC left open

def _anon_kb(m):
    return int((m.mem_map["use"] == Use.anon).sum()) * KIB


def partial_munmap_workload(level, nr_thps=16, seed=0):
    """Fault ``nr_thps`` THPs, then ``munmap()`` one random run of subpages inside each.

    Run lengths are 1..511 subpages, drawn from ``machine.rng``. Returns a
    dict: ``mapped_kb`` (what the process still maps: its RSS),
    ``held_kb`` (subpages allocated inside compound pages that no page table
    maps and nobody pins: :func:`thplab.invariants.held_pages`),
    ``anon_kb`` (all anonymous memory allocated), ``thps`` (compound pages
    left) and ``unmapped_kb`` (what the munmap() calls gave back to the
    process's address space).
    """
    m = Machine.boot("64M", patches=level, seed=seed)
    rng = m.rng
    pid = m.spawn()
    base = m.mmap(pid, nr_thps * HPAGE_PMD_SIZE)
    m.touch(pid, base, nr_thps * HPAGE_PMD_SIZE)
    unmapped = 0
    for i in range(nr_thps):
        nr = int(rng.integers(1, HPAGE_PMD_NR))
        first = int(rng.integers(0, HPAGE_PMD_NR - nr + 1))
        m.munmap(pid, base + i * HPAGE_PMD_SIZE + first * PAGE_SIZE, nr * PAGE_SIZE)
        unmapped += nr
    m.check()
    return {"level": level, "seed": seed, "nr_thps": nr_thps,
            "unmapped_kb": unmapped * KIB, "mapped_kb": m.anon_rss(pid) * KIB,
            "held_kb": sum(held_pages(m).values()) * KIB, "anon_kb": _anon_kb(m),
            "thps": len(m.thp_heads())}


def workload_text(levels=(0, 10), nr_thps=16, seed=0):
    """Text twin of :func:`partial_munmap_workload` at each of ``levels``."""
    lines = [f"{nr_thps} THPs ({nr_thps * 2} MiB), one random munmap() of 1-511 subpages in each "
             f"(seed {seed}); KiB",
             f"{'level':>5}{'unmapped':>10}{'mapped':>10}{'held':>10}{'anon in use':>13}{'THPs left':>11}"]
    for level in levels:
        r = partial_munmap_workload(level, nr_thps, seed)
        lines.append(f"{level:>5}{r['unmapped_kb']:>10}{r['mapped_kb']:>10}{r['held_kb']:>10}"
                     f"{r['anon_kb']:>13}{r['thps']:>11}")
    lines.append("held = allocated inside a compound page, mapped by no page table, pinned by nobody")
    return "\n".join(lines)


#: Subpages unmapped from the end of each THP in :func:`held_memory_sweep`.
SWEEP = (0, 64, 128, 256, 384, 448, 480, 511)


def held_memory_sweep(levels=(0, 10), unmapped=SWEEP, nr_thps=8):
    """Unmap the last ``k`` subpages of each of ``nr_thps`` THPs, for each ``k``; measure what is held.

    ``k = 511`` is the worst case Andrea Arcangeli named in the review: 4 KiB
    still mapped per THP, 2 MiB still allocated. Returns ``{"sizes_kb",
    "mapped_kb", "held_kb": {level: [...]}, "anon_kb": {level: [...]}}``,
    totals over the ``nr_thps`` THPs.
    """
    out = {"nr_thps": nr_thps, "unmapped": list(unmapped),
           "sizes_kb": [k * KIB for k in unmapped], "mapped_kb": [],
           "held_kb": {lv: [] for lv in levels}, "anon_kb": {lv: [] for lv in levels}}
    for k in unmapped:
        for level in levels:
            m = Machine.boot("32M", patches=level, seed=0)
            pid = m.spawn()
            base = m.mmap(pid, nr_thps * HPAGE_PMD_SIZE)
            m.touch(pid, base, nr_thps * HPAGE_PMD_SIZE)
            if k:
                for i in range(nr_thps):
                    m.munmap(pid, base + (i + 1) * HPAGE_PMD_SIZE - k * PAGE_SIZE, k * PAGE_SIZE)
            m.check()
            out["held_kb"][level].append(sum(held_pages(m).values()) * KIB)
            out["anon_kb"][level].append(_anon_kb(m))
            if level == levels[0]:
                out["mapped_kb"].append(m.anon_rss(pid) * KIB)
    return out


def sweep_text(sweep):
    """Text twin of a :func:`held_memory_sweep` (and of ``viz.plot_held_memory`` drawn from it)."""
    levels = list(sweep["held_kb"])
    lines = [f"{sweep['nr_thps']} THPs; the last k subpages of each unmapped (KiB, totals)",
             f"{'k':>5}{'mapped':>9}" + "".join(f"{f'held L{lv}':>11}" for lv in levels)
             + "".join(f"{f'in use L{lv}':>12}" for lv in levels) + f"{'in use/mapped':>15}"]
    for i, k in enumerate(sweep["unmapped"]):
        mapped = sweep["mapped_kb"][i]
        ratio = sweep["anon_kb"][levels[-1]][i] / mapped if mapped else float("inf")
        lines.append(f"{k:>5}{mapped:>9}" + "".join(f"{sweep['held_kb'][lv][i]:>11}" for lv in levels)
                     + "".join(f"{sweep['anon_kb'][lv][i]:>12}" for lv in levels)
                     + f"{f'{ratio:.3g}x':>15}")
    lines.append(f"in use = anonymous memory allocated; the last column is level {levels[-1]}")
    return "\n".join(lines)


def unaligned_vmas(level, seed=0):
    """Two THPs, then ``mprotect(PROT_READ)`` of the 2 MiB from 1 MiB to 3 MiB.

    Both new VMA boundaries fall inside a compound page. Returns
    ``(machine, pid, addr)``; :func:`vma_text` describes the result.
    """
    m = Machine.boot("16M", patches=level, seed=seed)
    pid = m.spawn()
    addr = m.mmap(pid, 2 * HPAGE_PMD_SIZE)
    m.touch(pid, addr, 2 * HPAGE_PMD_SIZE)
    m.mprotect(pid, addr + HPAGE_PMD_SIZE // 2, HPAGE_PMD_SIZE, "r")
    m.check()
    return m, pid, addr


def vma_text(m, pid):
    """Every VMA of ``pid`` and what it maps: 4 KiB pages, or which subpages of which compound page.

    Ends with the compound pages that more than one VMA maps.
    """
    mm = m.processes[pid]
    lines = [f"level {m.level}, pid {pid}: {len(mm.vmas)} VMA(s)"]
    spans = {}
    for vma in mm.vmas:
        addrs = np.arange(vma.vm_start, vma.vm_end, PAGE_SIZE, dtype=np.uint64)
        w = m.walk(pid, addrs)
        pfns = w["pfn"][w["level"] > 0]
        huge, ptes = int((w["level"] == 2).sum()), int((w["level"] == 1).sum())
        lines.append(f"  {repr(vma)[1:-1]} ({len(addrs)} pages, {huge} via a huge PMD, {ptes} via PTEs)")
        compound = PageCompound(m.mem_map, pfns)
        if (~compound).any():
            lines.append(f"      {int((~compound).sum())} ordinary 4 KiB pages")
        heads = compound_head(m.mem_map, pfns[compound])
        for head in np.unique(heads).tolist():
            sub = np.sort(pfns[compound][heads == head] - head)
            spans.setdefault(head, []).append(vma)
            lines.append(f"      compound page at pfn {head:#x}: subpages {_ranges(sub)}")
    shared = {h: v for h, v in spans.items() if len(v) > 1}
    lines.append("  compound pages spanning several VMAs: " + (", ".join(
        f"pfn {h:#x} ({len(v)} VMAs)" for h, v in shared.items()) or "none"))
    return "\n".join(lines)


def _state_pmd(level, seed):
    """Parent maps the THP with its PMD; a child maps subpages 1-511 with PTEs."""
    m = Machine.boot("16M", patches=level, seed=seed)
    pid, addr, head = _thp(m)
    child = m.fork(pid)
    m.split_huge_pmd(child, addr)
    m.munmap(child, addr, PAGE_SIZE)
    return m, pid, child, addr, head


def _state_pte(level, seed):
    """One process maps all 512 subpages with PTEs (its PMD was split)."""
    m = Machine.boot("16M", patches=level, seed=seed)
    pid, addr, head = _thp(m)
    m.split_huge_pmd(pid, addr)
    return m, pid, None, addr, head


def mapcount_ambiguity(level=10, seed=0):
    """Two machines whose THP ``struct page``\\ s are identical, field by field.

    ``"A"``: fault, fork, the child splits its PMD and unmaps subpage 0 --
    the parent maps the THP with a **PMD**. ``"B"``: fault, split the PMD --
    one process maps subpage 0 with a **PTE** (and the tails too). Head
    ``_mapcount`` is 0 in both: one PMD mapping or one PTE mapping of subpage
    0 look the same. Returns ``{"A": (machine, pid, child, addr, head), "B": ...}``.
    """
    return {"A": _state_pmd(level, seed), "B": _state_pte(level, seed)}


def ambiguity_text(states):
    """Text twin of :func:`mapcount_ambiguity`: what ``struct page`` says, then what the page tables say."""
    (ma, *_, ha), (mb, *_, hb) = states["A"], states["B"]
    fields = ma.mem_map.dtype.names
    same = all((ma.mem_map[f][ha:ha + HPAGE_PMD_NR] == mb.mem_map[f][hb:hb + HPAGE_PMD_NR]).all()
               for f in fields)
    lines = [f"level {ma.level}",
             "A: fault, fork, child split_huge_pmd + munmap subpage 0 (parent keeps its PMD)",
             "B: fault, split_huge_pmd (one process, 512 PTEs)", "",
             f"{'struct page says':<40}{'A':>8}{'B':>8}"]
    for label, fn in (("head _count", lambda m, h: int(m.mem_map["_count"][h])),
                      ("head _mapcount (raw)", lambda m, h: int(m.mem_map["_mapcount"][h])),
                      ("page_mapcount(head)", lambda m, h: int(m.page_mapcount(h))),
                      ("tails with _mapcount 0 (1 PTE)",
                       lambda m, h: int((m.mem_map["_mapcount"][h + 1:h + HPAGE_PMD_NR] == 0).sum())),
                      ("PageHead(head)", lambda m, h: int(PageHead(m.mem_map, h)))):
        lines.append(f"  {label:<38}{fn(ma, ha):>8}{fn(mb, hb):>8}")
    lines.append(f"  all {len(fields)} fields of all 512 struct pages equal: {'yes' if same else 'no'}")
    ca, cb = mapping_counts(ma), mapping_counts(mb)
    lines += ["", f"{'page tables say (walk every process)':<40}{'A':>8}{'B':>8}",
              f"  {'huge PMDs mapping the THP':<38}{int(ca['pmd_maps'][ha]):>8}{int(cb['pmd_maps'][hb]):>8}",
              f"  {'PTEs mapping subpage 0':<38}{int(ca['pte_maps'][ha]):>8}{int(cb['pte_maps'][hb]):>8}",
              f"  {'VMAs an rmap walk must visit':<38}{len(ma.anon_vma_of(ha).vmas):>8}"
              f"{len(mb.anon_vma_of(hb).vmas):>8}"]
    return "\n".join(lines)


def cow_reuse(level=10, seed=0, subpage=5):
    """A write fault on the parent's write-protected PMD in state ``"A"`` of :func:`mapcount_ambiguity`.

    The naive rule "reuse the THP if ``page_mapcount(head) == 1``" would
    reuse it: the head's ``_mapcount`` counts only the parent's PMD, since
    the child unmapped subpage 0. But the child still maps subpages 1-511
    with PTEs and would see the parent's writes. thplab's
    ``do_huge_pmd_wp_page()`` (patch 04, a SIMPLIFICATION of what v1 must
    have done) also reads the 511 tails' ``_mapcount`` and copies.
    """
    m, pid, child, addr, head = _state_pmd(level, seed)
    mapcount = int(m.page_mapcount(head))
    tails = int((m.mem_map["_mapcount"][head + 1:head + HPAGE_PMD_NR] >= 0).sum())
    _, delta = _observe(m, lambda: m.touch(pid, addr + subpage * PAGE_SIZE, PAGE_SIZE))
    w = m.walk(pid, [addr])
    new = int(w["pfn"][0])
    child_pfn = int(m.walk(child, [addr + subpage * PAGE_SIZE])["pfn"][0])
    m.check()
    return {"level": level, "page_mapcount_head": mapcount, "naive_reuse": mapcount == 1,
            "tails_mapped": tails, "decision": "reuse" if new == head else "copy", "events": delta,
            "parent_pfn": new, "parent_level": int(w["level"][0]), "child_pfn": child_pfn,
            "head": head, "struct_pages_read": HPAGE_PMD_NR if m.kernel.caps["pte_mapped_thp"] else 1}


def cow_text(result, subpage=5):
    """Text twin of :func:`cow_reuse`."""
    r = result
    return "\n".join([
        f"level {r['level']}: state A, then the parent writes subpage {subpage}",
        f"  page_mapcount(head) before the write: {r['page_mapcount_head']} -> naive rule says "
        f"{'reuse' if r['naive_reuse'] else 'copy'}",
        f"  tails mapped by PTEs (the child's): {r['tails_mapped']}",
        f"  thplab's do_huge_pmd_wp_page(): {r['decision']} "
        f"({r['struct_pages_read']} struct pages read to decide); {_events(r['events'])}",
        f"  parent now maps pfn {r['parent_pfn']:#x} via "
        f"{'a huge PMD' if r['parent_level'] == 2 else 'PTEs'}; child still maps subpage {subpage} "
        f"at pfn {r['child_pfn']:#x} (= old head {r['head']:#x} + {r['child_pfn'] - r['head']})",
    ])


def held_series(sweep):
    """``{"level L": held KiB per k}`` of a :func:`held_memory_sweep`, for ``viz.plot_held_memory``."""
    return {f"level {lv}" + (" (old kernel)" if lv == 0 else " (RFC v1)" if lv == 10 else ""): held
            for lv, held in sweep["held_kb"].items()}


@dataclass
class PmdCountProblem:
    """``page_mapcount(head)`` is given; how many of those mappings are huge PMDs?

    At levels 4-10 the head's ``_mapcount`` counts PMD mappings *and* PTE
    mappings of subpage 0, so only the steps (the page tables) can tell.
    Seeded: forks, per process a PMD split or not, and for some split ones
    an ``munmap()`` of subpage 0.
    """

    seed: int
    level: int
    steps: list
    mapcount: int
    answer: int
    explanation: str

    @classmethod
    def generate(cls, seed=0, level=10):
        rng = np.random.default_rng(seed)
        m = _boot(level, seed=seed)
        pid, addr, head = _thp(m)
        pids = [pid] + [m.fork(pid) for _ in range(int(rng.integers(1, 4)))]
        steps = ["fault a THP in pid 1"] + [f"fork() -> pid {p}" for p in pids[1:]]
        for p in pids:
            action = int(rng.integers(3))
            if action >= 1:
                m.split_huge_pmd(p, addr)
                steps.append(f"split_huge_pmd() in pid {p}")
            if action == 2:
                m.munmap(p, addr, PAGE_SIZE)
                steps.append(f"munmap() subpage 0 in pid {p}")
        counts = mapping_counts(m)
        pmds, ptes = int(counts["pmd_maps"][head]), int(counts["pte_maps"][head])
        mapcount = int(m.page_mapcount(head))
        why = (f"page_mapcount(head) = {mapcount} = {pmds} huge PMD(s) + {ptes} PTE(s) of subpage 0. "
               "The head's _mapcount cannot tell them apart; the page tables (the steps) can.")
        return cls(seed, level, steps, mapcount, pmds, why)

    def render(self):
        lines = [f"ARG seed {self.seed}", f"ARG level {self.level}", "", "Steps:"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        lines += ["", f"Now page_mapcount(head) is {self.mapcount}.",
                  "How many huge PMDs map the THP?"]
        return "\n".join(lines)

    def check(self, guess):
        return _check_int(guess, self.answer, self.explanation)


def cow_pte_reuse(levels=(0, 10), subpage=7):
    """The mirror case of :func:`cow_reuse`: the *child* writes through its PTE. Text, per level.

    After fork and a PMD split in the child, ``do_wp_page()`` reuses a page
    when ``page_mapcount(page) == 1``. From patch 04 on a tail's mapcount
    counts only PTEs, not the parent's PMD, so it reads 1 and the child
    writes into memory the parent still maps -- a hazard of RFC v1 as
    posted, which thplab reproduces (v2 added ``compound_mapcount``).
    """
    lines = [f"fault, fork, the child splits its PMD, then writes subpage {subpage} through its PTE"]
    for level in levels:
        m = Machine.boot("16M", patches=level, seed=0)
        pid, addr, head = _thp(m)
        child = m.fork(pid)
        m.split_huge_pmd(child, addr)
        va = addr + subpage * PAGE_SIZE
        mapcount = int(m.page_mapcount(int(m.walk(child, [va])["pfn"][0])))
        m.touch(child, va, PAGE_SIZE)
        m.check()
        in_child, in_parent = (int(m.walk(p, [va])["pfn"][0]) for p in (child, pid))
        shared = in_child == in_parent
        lines.append(f"  level {level:>2}: page_mapcount(subpage {subpage}) = {mapcount} -> "
                     f"{'reuse' if shared else 'copy'}; child writes pfn {in_child:#x}, parent maps "
                     f"pfn {in_parent:#x}" + ("\n            the same page: the parent sees the child's write"
                                             if shared else ""))
    return "\n".join(lines)


# =====================================================================================
# Lesson 15: the real kernel

def format_experiment(run, name, levels=(0, 10), width=100):
    """:func:`thplab.live.format_run` for one experiment of ``run`` (live or recorded)."""
    from .. import live

    one = dataclasses.replace(run, experiments={name: run.experiments[name]})
    return live.format_run(one, levels, width)


def verdict_table(run, levels=(0, 10)):
    """Per experiment: how many compared quantities match, differ or are n/a, per model level."""
    from .. import live

    label = "LIVE" if run.source == "live" else "RECORDED"
    lines = [f"{label}: Linux {run.kernel}, {run.date}",
             f"{'experiment':<16}{'rows':>5}" + "".join(
                 f"{f'L{lv} match':>10}{'differs':>9}{'n/a':>5}" for lv in levels)]
    for name, result in run.experiments.items():
        if result.status != "ok":
            lines.append(f"{name:<16}  {result.status}: {result.reason}")
            continue
        rows = live.compare(result, levels)
        cells = ""
        for lv in levels:
            v = [r.verdict[lv] for r in rows]
            cells += f"{v.count('match'):>10}{v.count('differs'):>9}{v.count('n/a'):>5}"
        lines.append(f"{name:<16}{len(rows):>5}{cells}")
    return "\n".join(lines)


@dataclass
class LiveQuestion:
    """What did the real kernel report? A question drawn from a (recorded) run's comparison.

    ``generate(seed, run)`` picks one compared quantity whose observed value
    is a number; the explanation gives the model's predictions at levels 0
    and 10 and why today's kernel differs, where it does.
    """

    seed: int
    kernel: str
    source: str
    experiment: str
    step: str
    op: str
    quantity: str
    answer: int
    explanation: str

    @classmethod
    def generate(cls, seed=0, run=None, levels=(0, 10)):
        from .. import live

        run = run or live.load_recorded()
        candidates = []
        for name, result in run.experiments.items():
            if result.status != "ok":
                continue
            ops = {s["name"]: s["op"] for s in result.steps}
            previous = {}
            for row in live.compare(result, levels):
                values = (row.observed, tuple(row.predicted.values()))
                changed = previous.get(row.quantity) != values
                previous[row.quantity] = values
                # As format_run shows them: the fault once, then what moved or changed.
                if (row.step == "fault" and name != "fault") or not changed:
                    continue
                if isinstance(row.observed, bool) or not isinstance(row.observed, int):
                    continue
                candidates.append((name, ops[row.step], row))
        rng = np.random.default_rng(seed)
        name, op, row = candidates[int(rng.integers(len(candidates)))]
        preds = "; ".join(f"level {lv} predicts {'-' if row.predicted[lv] is None else row.predicted[lv]}"
                          f" ({row.verdict[lv]})" for lv in levels)
        why = f"The model: {preds}." + "".join(f" {t}" for t in row.explanations)
        return cls(seed, run.kernel, run.source, name, row.step, op, row.quantity, int(row.observed), why)

    def render(self):
        return "\n".join([
            f"ARG seed {self.seed}",
            f"ARG kernel Linux {self.kernel} ({self.source.upper()})",
            f"ARG experiment {self.experiment}", "",
            f"Step '{self.step}': {self.op}", "",
            f"What did the real kernel report for '{self.quantity}' after this step?"
            + (" (a /proc/vmstat delta)" if self.quantity.startswith(("thp_", "nr_")) else "")])

    def check(self, guess):
        return _check_int(guess, self.answer, self.explanation, who=f"the {self.source} kernel reported")


def live_status():
    """What this machine offers the live experiments, as text (varies by machine: never a checked cell)."""
    import platform

    from .. import live

    s = live.read_thp_settings()
    lines = [f"kernel: Linux {platform.release()}"]
    if s.available:
        lines.append(f"THP: enabled=[{s.enabled}] defrag=[{s.defrag}] hpage_pmd_size={s.hpage_pmd_size} "
                     f"use_zero_page={int(bool(s.use_zero_page))}"
                     + (f" hugepages-2048kB/enabled=[{s.pmd_size_enabled}]" if s.pmd_size_enabled else ""))
    else:
        lines.append(f"THP settings: {s.reason}")
    reason = live.thp_unavailable_reason()
    lines.append("experiments: can run here" if not reason else f"experiments: cannot run here ({reason})")
    if not reason:
        frames = ("readable" if live.read_kpageflags([0]).available
                  else "not readable (needs root): the kpagecount and 'page compound' rows will be missing")
        lines.append(f"physical page frames: {frames}")
    return "\n".join(lines)


def live_report(levels=(0, 10), names=None, timeout=10.0):
    """Run the live experiments if this kernel allows; return ``(run or None, text)``.

    Without THP, ``/proc`` or root the text says what is missing (and the
    THP settings that could be read); nothing raises.
    """
    from .. import live

    reason = live.thp_unavailable_reason()
    if reason:
        s = live.read_thp_settings()
        settings = (f"enabled=[{s.enabled}] defrag=[{s.defrag}]" if s.available
                    else "THP settings unreadable")
        return None, (f"Live experiments cannot run here: {reason}.\n{settings}\n"
                      "The recorded run above is what they show on a machine that allows them.")
    run = live.run_all(names, timeout)
    return run, live.format_run(run, levels)
