"""The model's side of each experiment, and the real kernel next to it.

Each experiment of :mod:`thplab.live.experiments` again, as a scenario on a
thplab ``Machine`` with the same step names (:data:`MODEL_STEPS`);
:func:`predict` runs it on a model kernel, :func:`observed_quantities`
reduces what the real kernel showed to the same :data:`QUANTITIES`, and
:func:`compare` puts each observation next to the model's predictions -- by
default at series level 0 (the old kernel) and 10 (RFC v1); the lab adds
``"v4.5"``, the merged design (:data:`KERNELS`) -- with the reason today's
kernel differs. Why the old kernel and RFC v1 differ is history up to v4.5
(:data:`EXPLANATIONS`); today's kernel descends from v4.5, so where it differs
from v4.5 the reason is a later change, named by its :data:`thplab.later.LATER`
entry (:data:`LATER_STEPS`, :data:`LATER_QUANTITIES`, :data:`LATER_NOTES`),
or the row says it is unexplained.
"""

import numbers
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadArgument
from ..later import LATER
from ..machine import Machine
from ..page_flags import PageCompound, PageHead
from ..series import kernel_args
from .experiments import MAPPING_SIZE, MIDDLE, MPROTECT_NR, NO_PAGE_MAPCOUNT_NOTE, PIN_SUBPAGE
from .formats import THP_EVENTS
from .probes import HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE

__all__ = [
    "LEVEL_NAMES", "MERGED", "KERNELS", "kernel_label", "boot_model", "KPAGECOUNT_SUBPAGES",
    "QUANTITIES", "SPLIT_QUEUE", "MODEL_STEPS", "predict", "observed_quantities", "EXPLANATIONS",
    "STEP_EXPLANATIONS", "LATER_STEPS", "LATER_QUANTITIES", "LATER_NOTES", "LATER_EXPLANATIONS",
    "UNEXPLAINED", "ComparisonRow", "compare",
]

#: What the model kernels the lab compares with stand for: RFC series levels
#: by number, the merged design by the name ``Machine.boot(kernel=...)`` takes.
LEVEL_NAMES = {0: "v3.16", 10: "RFC v1", "v4.5": "merged"}
#: The model kernel today's kernel descends from: where they differ, the reason
#: is a change after it (thplab.later).
MERGED = "v4.5"
#: The kernels lesson 16 and ``python -m thplab live`` compare with.
KERNELS = (0, 10, MERGED)


def kernel_label(kernel):
    """A model kernel's column name: ``"L0 v3.16"``, ``"L4"``, ``"v4.5 merged"``."""
    prefix = kernel if isinstance(kernel, str) else f"L{kernel}"
    return f"{prefix} {LEVEL_NAMES.get(kernel, '')}".rstrip()


def boot_model(kernel):
    """The machine every prediction runs on, at ``kernel``.

    ``kernel`` is an RFC series level (an int, ``patches=``) or a name
    ``Machine.boot(kernel=...)`` takes (``"v4.5"``); anything else raises
    :class:`~thplab.errors.BadArgument`.
    """
    if isinstance(kernel, bool) or not isinstance(kernel, (numbers.Integral, str)):
        raise BadArgument(f"a model kernel is a series level (0-10) or a kernel name such as "
                          f"'v4.5', not {kernel!r}")
    return Machine.boot(nr_pages=4096, seed=0, **kernel_args(kernel))


#: Subpages whose kpagecount is compared: head, first tail, and MIDDLE.
KPAGECOUNT_SUBPAGES = (0, 1, MIDDLE)
#: The compared quantities, in display order: the vmstat events first.
QUANTITIES = THP_EVENTS + (
    "AnonHugePages kB", "VMAs", "subpages mapped", "page compound",
    *(f"kpagecount[{i}]" for i in KPAGECOUNT_SUBPAGES),
    "child AnonHugePages kB", "child subpages mapping the THP",
)
#: A model-only quantity (no row: the real kernel does not show it): how many
#: THPs wait on the deferred split queue, on kernels that have one (v4.5).
SPLIT_QUEUE = "deferred_split_count()"


# The scenarios only call Machine's public methods, so that a renamed entry
# point is a one-line change here.


def model_fault(m, procs, addr):
    return [("fault", lambda: m.touch(procs["self"], addr, HPAGE_PMD_SIZE, write=True))]


def model_partial_munmap(m, procs, addr):
    return model_fault(m, procs, addr) + [
        ("munmap", lambda: m.munmap(procs["self"], addr + MIDDLE * PAGE_SIZE, PAGE_SIZE))]


def model_mprotect(m, procs, addr):
    return model_fault(m, procs, addr) + [
        ("mprotect", lambda: m.mprotect(procs["self"], addr + MIDDLE * PAGE_SIZE,
                                        MPROTECT_NR * PAGE_SIZE, "r"))]


def model_fork(m, procs, addr):
    def fork():
        procs["child"] = m.fork(procs["self"])

    return model_fault(m, procs, addr) + [
        ("fork", fork),
        ("child_write", lambda: m.touch(procs["child"], addr + MIDDLE * PAGE_SIZE, PAGE_SIZE)),
        ("child_exit", lambda: m.exit(procs.pop("child"))),
    ]


def model_pin(m, procs, addr):
    pins = []

    def split():
        # The real kernel splits on madvise(MADV_COLD) (split_folio()); the
        # model calls split_huge_page() as such a caller does. The old kernel
        # split the page at munmap already: then there is no THP left to split.
        head = int(m.walk(procs["self"], [addr])["pfn"][0])
        if PageCompound(m.mem_map, head):
            m.split_huge_page(head)

    return model_fault(m, procs, addr) + [
        ("pin", lambda: pins.extend(m.get_user_pages_fast(procs["self"],
                                                          addr + PIN_SUBPAGE * PAGE_SIZE))),
        ("munmap", lambda: m.munmap(procs["self"], addr + MIDDLE * PAGE_SIZE, PAGE_SIZE)),
        ("split_pinned", split),
        ("unpin", lambda: m.put_page(pins)),
        ("split_unpinned", split),
    ]


def model_full_munmap(m, procs, addr):
    return model_fault(m, procs, addr) + [
        ("munmap", lambda: m.munmap(procs["self"], addr, HPAGE_PMD_SIZE))]


#: Experiment name -> function(machine, procs, addr) returning its
#: ``[(step name, operation)]`` on the model.
MODEL_STEPS = {
    "fault": model_fault,
    "partial_munmap": model_partial_munmap,
    "mprotect": model_mprotect,
    "fork": model_fork,
    "pin": model_pin,
    "full_munmap": model_full_munmap,
}


def model_quantities(m, procs, addr, thp_pfn, before, after):
    """The compared quantities of the model after one step (see :data:`QUANTITIES`)."""
    q = {name: after[name] - before[name] for name in THP_EVENTS if name in after}
    pid = procs["self"]
    subpages = addr + np.arange(HPAGE_PMD_NR, dtype=np.uint64) * PAGE_SIZE
    mapped = m.walk(pid, subpages)["pfn"] >= 0
    q["AnonHugePages kB"] = m.smaps_anon_huge_kb(pid, addr, HPAGE_PMD_SIZE)
    q["VMAs"] = len(m.processes[pid].vmas_in(addr, addr + HPAGE_PMD_SIZE))
    q["subpages mapped"] = int(mapped.sum())
    if mapped[0]:
        q["page compound"] = bool(PageHead(m.mem_map, thp_pfn))
        for i in KPAGECOUNT_SUBPAGES:
            if mapped[i]:
                q[f"kpagecount[{i}]"] = int(m.page_mapcount(thp_pfn + i))
    if m.kernel.has("deferred_split_count"):
        q[SPLIT_QUEUE] = m.deferred_split_count()
    if "child" in procs:
        child = m.walk(procs["child"], subpages)["pfn"]
        q["child AnonHugePages kB"] = m.smaps_anon_huge_kb(procs["child"], addr, HPAGE_PMD_SIZE)
        own = thp_pfn + np.arange(HPAGE_PMD_NR)
        q["child subpages mapping the THP"] = int((child == own).sum())
    return q


def observed_quantities(step):
    """The compared quantities of the real kernel after one step of a result."""
    q = {name: value for name, value in step["vmstat_delta"].items() if name in THP_EVENTS}
    view = step["views"]["self"]
    samples = {sample["index"]: sample for sample in view["samples"]}
    if view["smaps"] is not None:
        q["AnonHugePages kB"] = view["smaps"]["AnonHugePages"]
        q["VMAs"] = view["smaps"]["nr_vmas"]
    q["subpages mapped"] = view["mapped"]
    # Once the head is unmapped the THP may be freed and its frames reused:
    # they no longer say anything about it.
    if samples[0]["mapped"] and not view["physical"]:
        q["page compound"] = samples[0]["compound_head"]
        for i in KPAGECOUNT_SUBPAGES:
            if samples[i]["mapped"]:
                q[f"kpagecount[{i}]"] = samples[i]["kpagecount"]
    if child := step["views"].get("child"):
        q["child AnonHugePages kB"] = child["smaps"]["AnonHugePages"]
        q["child subpages mapping the THP"] = child.get("mapping_thp")
    return q


def predict(name, level):
    """What the model predicts for experiment `name` on model kernel `level`.

    Runs the experiment's scenario (:data:`MODEL_STEPS`) on
    :func:`boot_model`, i.e. ``Machine.boot(nr_pages=4096, patches=level,
    seed=0)`` for an RFC series level, ``Machine.boot(nr_pages=4096,
    kernel="v4.5", seed=0)`` for ``level="v4.5"``.

    Returns
    -------
    dict
        ``{step name: {quantity: value}}``, the quantities :func:`compare` uses
        (and :data:`SPLIT_QUEUE` where the kernel has the queue).
    """
    m = boot_model(level)
    procs = {"self": m.spawn()}
    addr = m.mmap(procs["self"], MAPPING_SIZE, prot="rw", thp=True)
    steps, thp_pfn = {}, -1
    for step, operation in MODEL_STEPS[name](m, procs, addr):
        before = m.vmstat.as_dict()
        operation()
        after = m.vmstat.as_dict()
        if thp_pfn < 0:
            thp_pfn = int(m.walk(procs["self"], [addr])["pfn"][0])
        steps[step] = model_quantities(m, procs, addr, thp_pfn, before, after)
    return steps


_COW = ("Since v5.8 (3917c80280c9, 'thp: change CoW semantics for anon-THP') a write to a "
        "shared PMD-mapped THP splits that PMD and copies one 4 KiB page; v3.16 and RFC v1 "
        "allocated a new THP and copied all 2 MiB (do_huge_pmd_wp_page()).")

#: Why today's kernel differs from the model, by quantity (all ``kpagecount[i]``
#: share ``"kpagecount"``).
EXPLANATIONS = {
    "thp_split": "v3.16's only split event, once per compound page split; RFC patch 05 "
                 "replaced it with thp_split_page, thp_split_page_failed and thp_split_pmd.",
    "thp_split_pmd": "Counted since RFC patch 05, once per PMD split into a page table; the "
                     "old kernel had no PMD-only split to count.",
    "thp_split_page": "RFC patch 05's name for a compound page split; since v4.5 a partially "
                      "unmapped THP is split later, by the deferred_split shrinker "
                      "(asynchronously, under memory pressure) or by a caller such as "
                      "madvise(MADV_COLD).",
    "thp_split_page_failed": "split_huge_page() can fail only since the redesign (RFC patch 06: "
                             "-EBUSY when page_count exceeds the mappings plus the caller's "
                             "reference); v3.16's split never failed, it moved tail pins.",
    "thp_deferred_split_page": "The deferred split queue came with the merged redesign "
                               "(v4.5, deferred_split_huge_page()), this counter with v4.6; "
                               "v3.16 split at once and RFC v1 left the page PTE-mapped.",
    "nr_anon_transparent_hugepages": "Since v4.5 this counts PMD-mapped THPs (-1 when the last "
                                     "PMD mapping goes, split or not). In v3.16 it dropped when "
                                     "the head's _mapcount reached -1 or the page was split; RFC "
                                     "v1 kept that rule, so there the PTE of subpage 0 going "
                                     "away dropped it too, and a later split once more.",
    "page compound": "v3.16 split the whole compound page here (split_huge_page_pmd() -> "
                     "split_huge_page()); since RFC patch 04 (merged in v4.5) only the PMD is "
                     "split and the compound page stays whole.",
    "kpagecount": "kpagecount reads page_mapcount(). In v3.16 a tail's _mapcount counted GUP "
                  "pins, and in RFC v1 a PMD mapping counted only in the head's _mapcount; "
                  "v4.5 added the compound (PMD) mapcount to every subpage, and v6.x reports "
                  "folio_precise_page_mapcount() (the folio average with "
                  "CONFIG_NO_PAGE_MAPCOUNT).",
}

#: Why today's kernel differs from the model after one (experiment, step),
#: whatever the quantity.
STEP_EXPLANATIONS = {
    ("fork", "child_write"): _COW,
    ("fork", "child_exit"): _COW,
}

#: The change after v4.5 (a :data:`thplab.later.LATER` name) that makes today's
#: kernel differ from v4.5 after one (experiment, step), whatever the quantity.
LATER_STEPS = {
    ("fork", "child_write"): "PMD split on COW",
    ("fork", "child_exit"): "PMD split on COW",
}
#: ... by quantity (all ``kpagecount[i]`` share ``"kpagecount"``).
LATER_QUANTITIES = {"thp_deferred_split_page": "thp_deferred_split_page"}
#: ... by quantity, where a note of the run says the kernel has the change.
LATER_NOTES = {NO_PAGE_MAPCOUNT_NOTE: {"kpagecount": "CONFIG_NO_PAGE_MAPCOUNT"}}


def _entry(name):
    return next(e for e in LATER if e.name == name)


def _cite(entry):
    """A :data:`~thplab.later.LATER` entry as a reference: name, version, commit or series, link."""
    ref = entry.commit if re.fullmatch(r"[0-9a-f]{12}", entry.commit) else f"'{entry.commit}'"
    pinned = "" if entry.verified else "; version not pinned down"
    return f"{entry.name} ({entry.version}, {ref}{pinned}): {entry.summary} {entry.link}"


#: Why today's kernel differs from v4.5, by :data:`thplab.later.LATER` name:
#: what v4.5 (and the older kernels) did, then the later change. When v4.5 is
#: compared, these replace the explanations of the same step or quantity above.
LATER_EXPLANATIONS = {
    "PMD split on COW": "v3.16, RFC v1 and v4.5 all allocated a new THP for the child here and "
                        "copied all 2 MiB (do_huge_pmd_wp_page()). Later: "
                        + _cite(_entry("PMD split on COW")),
    "thp_deferred_split_page": f"Not in v4.5 (added in {_entry('thp_deferred_split_page').version}). "
                               "The queue is v4.5's: it puts the partially unmapped THP on it "
                               "(deferred_split_huge_page(); the v4.5 model's deferred_split_count() "
                               "is 1 here) but counts no event; v3.16 split the page at once and "
                               "RFC v1 left it PTE-mapped, with no queue. Later: "
                               + _cite(_entry("thp_deferred_split_page")),
    "CONFIG_NO_PAGE_MAPCOUNT": "v4.5's page_mapcount() added a subpage's own PTE count to the "
                               "THP's PMD count; this kernel keeps no count per page of a large "
                               "folio, and kpagecount reports the folio's average mapcount. Later: "
                               + _cite(_entry("CONFIG_NO_PAGE_MAPCOUNT")),
}
#: Where today's kernel differs from v4.5 and no entry of thplab.later accounts for it.
UNEXPLAINED = ("Today's kernel differs from v4.5 here, and no change listed in thplab.later "
               "accounts for it: unexplained.")


@dataclass
class ComparisonRow:
    """One quantity after one step: the real kernel next to the model.

    ``observed`` or ``predicted[level]`` is ``None`` where that kernel has no
    such quantity (e.g. a vmstat event it does not count); ``verdict[level]``
    is then ``"n/a"``, else ``"match"`` or ``"differs"``; ``level`` is a
    model kernel as :func:`compare` was given it (``0``, ``10``, ``"v4.5"``).
    ``explanations`` says why today's kernel differs, where a verdict is not
    ``"match"``. ``later``: the :data:`thplab.later.LATER` entries behind a
    difference from v4.5 (empty where v4.5 matches, is not compared, or the
    difference is unexplained).
    """

    experiment: str
    step: str
    quantity: str
    observed: object
    predicted: dict
    verdict: dict
    explanations: list = field(default_factory=list)
    later: list = field(default_factory=list)


def _key(quantity):
    return "kpagecount" if quantity.startswith("kpagecount[") else quantity


def _explain(experiment, step, quantity):
    texts = [STEP_EXPLANATIONS.get((experiment, step)), EXPLANATIONS.get(_key(quantity))]
    return [text for text in texts if text]


def _later_names(result, step, quantity):
    """The LATER names that explain why today's kernel differs from v4.5 in this row."""
    names = [LATER_STEPS.get((result.name, step)), LATER_QUANTITIES.get(_key(quantity))]
    names += [by_key.get(_key(quantity)) for note, by_key in LATER_NOTES.items() if note in result.notes]
    return list(dict.fromkeys(name for name in names if name))


def _why(result, step, quantity, verdict, after_merged):
    """``(explanations, later entries)`` of one row.

    ``after_merged``: today's kernel differs from v4.5 in this row.
    """
    older = [kernel for kernel in verdict if kernel != MERGED]
    texts = ([] if all(verdict[k] == "match" for k in older)
             else _explain(result.name, step, quantity))
    if MERGED in verdict:
        # What v4.5 shares with the older kernels is told by the later change's text, where
        # v4.5 differs; where v4.5 matches, it is not why the older kernels differ.
        shared = ([STEP_EXPLANATIONS.get((result.name, step))] if (result.name, step) in LATER_STEPS
                  else []) + ([EXPLANATIONS.get(_key(quantity))]
                              if _key(quantity) in LATER_QUANTITIES else [])
        texts = [text for text in texts if text not in shared]
    if not after_merged:
        return texts, []
    names = _later_names(result, step, quantity)
    if not names:
        return texts + [UNEXPLAINED], []
    return texts + [LATER_EXPLANATIONS[name] for name in names], [_entry(name) for name in names]


def compare(result, levels=(0, 10)):
    """Put each observed quantity of `result` next to the model's predictions.

    Parameters
    ----------
    result : ExperimentResult
        A successful experiment (live or recorded).
    levels : sequence of int or str
        Model kernels to predict with: RFC series levels (0: old kernel, 10:
        RFC v1) and kernel names (``"v4.5"``: the merged design; see
        :func:`boot_model`). The lab compares with :data:`KERNELS`.

    Returns
    -------
    list of ComparisonRow
        Per step, in the order of :data:`QUANTITIES`. A
        vmstat event appears only if it moved somewhere (real kernel or model).
        Where v4.5 is compared and differs, the row names the later change
        (``row.later``) or says it is unexplained (:data:`UNEXPLAINED`).
    """
    levels = tuple(levels)
    predictions = {level: predict(result.name, level) for level in levels}
    rows = []
    for step in result.steps:
        observed = observed_quantities(step)
        predicted = {level: predictions[level].get(step["name"], {}) for level in levels}
        for quantity in QUANTITIES:
            values = {level: predicted[level].get(quantity) for level in levels}
            real = observed.get(quantity)
            if quantity in THP_EVENTS and not real and not any(values.values()):
                continue
            if real is None and all(value is None for value in values.values()):
                continue
            verdict = {level: "n/a" if real is None or value is None
                       else "match" if real == value else "differs"
                       for level, value in values.items()}
            # Neither today's kernel nor v4.5 has the quantity: nothing to explain.
            after_merged = MERGED in values and verdict[MERGED] != "match" and not (
                real is None and values[MERGED] is None)
            explain, later = _why(result, step["name"], quantity, verdict, after_merged)
            rows.append(ComparisonRow(result.name, step["name"], quantity, real, values,
                                      verdict, explain, later))
    return rows
