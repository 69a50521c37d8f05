"""Lesson 16: the real kernel next to the model.

:func:`live_vs_model` draws one step of an experiment -- the THP's 512 page
frames as the real kernel reported them (pagemap, kpageflags, kpagecount)
next to the model's frames at levels 0 and 10 and at v4.5 -- with the run
vocabulary of :func:`thplab.diagrams.thp_mappings`.  Every helper compares
with :data:`KERNELS` (level 0, level 10, ``"v4.5"``) unless told otherwise.
:func:`differences` lists only the compared rows where a model kernel does
not match (all rows on demand), with reasons numbered once for the whole
lesson (:func:`reasons`); :func:`after_v45` lists what is left between
today's kernel and v4.5, each row with the later change that explains it;
:func:`live_vs_recorded` shows where a live run differs from the recorded one.
:class:`LiveQuestion` (predict what the real kernel showed) and
:class:`LevelQuestion` (predict the model at an in-between level) are the
lesson's questions.  :func:`live_status` says what this machine allows;
:func:`live_report` runs the experiments when the kernel allows.  Only the
recorded run is deterministic.
"""

import dataclasses
import textwrap
from dataclasses import dataclass

import numpy as np

from ..params import HPAGE_PMD_NR
from ..problems import check_number

__all__ = ["KERNELS", "format_experiment", "verdict_table", "reasons", "differences", "after_v45",
           "live_vs_recorded",
           "real_frames", "model_frames", "live_vs_model", "LiveQuestion", "LevelQuestion",
           "live_status", "live_report", "STEPS"]

#: The step each experiment is drawn at in the lesson: the one whose frames say the most.
STEPS = {"fault": "fault", "partial_munmap": "munmap", "mprotect": "mprotect", "fork": "child_write",
         "pin": "split_pinned", "full_munmap": "munmap"}

_LABEL = {"live": "LIVE", "recorded": "RECORDED"}

#: The model kernels the lesson compares with: :data:`thplab.live.KERNELS`
#: (level 0, RFC v1, the merged v4.5 today's kernel descends from).
KERNELS = (0, 10, "v4.5")


def _source(run):
    return _LABEL.get(run.source, run.source.upper())


def format_experiment(run, name, levels=KERNELS, width=100):
    """:func:`thplab.live.format_run` for one experiment of ``run`` (live or recorded)."""
    from .. import live

    one = dataclasses.replace(run, experiments={name: run.experiments[name]})
    return live.format_run(one, levels, width)


def verdict_table(run, levels=KERNELS):
    """Per experiment: how many compared quantities match, differ or are n/a, per model kernel."""
    from .. import live

    lines = [f"{_source(run)}: Linux {run.kernel}, {run.date}",
             f"{'experiment':<16}{'rows':>5}" + "".join(
                 f"{_short(lv) + ' match':>11}{'differs':>8}{'n/a':>4}" for lv in levels)]
    for name, result in run.experiments.items():
        if result.status != "ok":
            lines.append(f"{name:<16}  {result.status}: {result.reason}")
            continue
        rows = live.compare(result, levels)
        cells = ""
        for lv in levels:
            v = [r.verdict[lv] for r in rows]
            cells += f"{v.count('match'):>11}{v.count('differs'):>8}{v.count('n/a'):>4}"
        lines.append(f"{name:<16}{len(rows):>5}{cells}")
    return "\n".join(lines)


# ------------------------------------------------------------------ tables without the walls


def _short(kernel):
    """A model kernel in a narrow column: ``L0``, ``L10``, ``v4.5``."""
    return kernel if isinstance(kernel, str) else f"L{kernel}"


def _reason_texts(levels=KERNELS):
    """Every reason :func:`thplab.live.compare` can give with ``levels``, in a fixed order (their numbers).

    With v4.5 compared, the later changes' texts replace those of the steps and quantities they cover.
    """
    from .. import live

    texts = list(live.EXPLANATIONS.values()) + list(live.STEP_EXPLANATIONS.values())
    if live.MERGED in levels:
        covered = ({live.STEP_EXPLANATIONS[key] for key in live.LATER_STEPS}
                   | {live.EXPLANATIONS[key] for key in live.LATER_QUANTITIES})
        texts = [t for t in texts if t not in covered] + [*live.LATER_EXPLANATIONS.values(), live.UNEXPLAINED]
    return list(dict.fromkeys(texts))


def reasons(width=100, levels=KERNELS):
    """The numbered reasons behind the *differs* and *n/a* rows, printed once for the lesson."""
    lines = []
    for number, text in enumerate(_reason_texts(levels), 1):
        lines += textwrap.wrap(text, width, initial_indent=f"[{number}] ", subsequent_indent="    ",
                               break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines)


def _cell(value):
    from .. import live

    return live._cell(value)


def differences(run, name, levels=KERNELS, all_rows=False):
    """One experiment's compared rows where some model kernel does not match the real kernel.

    ``all_rows=True`` shows every compared row.  The ``fault`` step, common to
    every experiment, is shown under ``fault`` only.  ``[n]`` refers to
    :func:`reasons`.  Each model cell is its prediction and the verdict.
    """
    from .. import live

    result = run.experiments[name]
    head = f"{_source(run)} {name} (Linux {run.kernel}): {live.EXPERIMENTS[name]}"
    if result.status != "ok":
        return f"{head}\n  {result.status}: {result.reason}"
    numbers = {text: i for i, text in enumerate(_reason_texts(levels), 1)}
    # Fits 100 columns with three kernels: the widest cell is "2048 differs".
    lines = [head, f"  {'step':<15}{'quantity':<30}{'real':>5}  "
             + "".join(f"{live.kernel_label(lv):<13}" for lv in levels) + "why"]
    shown, last = 0, None
    for row in live.compare(result, levels):
        if row.step == "fault" and name != "fault":
            continue
        if not all_rows and all(v == "match" for v in row.verdict.values()):
            continue
        step = row.step if row.step != last else ""
        last = row.step
        cells = "".join(f"{_cell(row.predicted[lv]) + ' ' + row.verdict[lv]:<13}" for lv in levels)
        why = " ".join(f"[{numbers[t]}]" for t in row.explanations)
        lines.append(f"  {step:<15}{row.quantity:<30}{_cell(row.observed):>5}  {cells}{why}".rstrip())
        shown += 1
    if not shown:
        lines.append(f"  every compared row matches {'both' if len(levels) == 2 else 'every'} model kernel")
    return "\n".join(lines)


def after_v45(run, width=100):
    """What is left between today's kernel and v4.5: each row where v4.5 does not match, and why.

    Per row the experiment, step and quantity, the real value and v4.5's, and ``[n]``: the change
    after v4.5 that explains it, listed below with its :data:`thplab.later.LATER` entry (name,
    version, link) -- or "unexplained".  The fault every experiment starts with is shown under
    ``fault`` only.  Last, the entries of thplab.later that no row of this run needed.
    """
    from .. import live
    from ..later import LATER

    lines = [f"{_source(run)} Linux {run.kernel}: the rows where v4.5 does not match",
             f"  {'experiment':<15}{'step':<15}{'quantity':<30}{'real':>5}{'v4.5':>6}  why"]
    used = []
    for name, result in run.experiments.items():
        if result.status != "ok":
            lines.append(f"  {name:<15}{result.status}: {result.reason}")
            continue
        for row in live.compare(result, (live.MERGED,)):
            if (row.step == "fault" and name != "fault") or row.verdict[live.MERGED] == "match":
                continue
            if row.observed is None and row.predicted[live.MERGED] is None:
                continue
            used += [e for e in row.later if e not in used]
            why = " ".join(f"[{used.index(e) + 1}]" for e in row.later) or "unexplained"
            lines.append(f"  {name:<15}{row.step:<15}{row.quantity:<30}{_cell(row.observed):>5}"
                         f"{_cell(row.predicted[live.MERGED]):>6}  {why}")
    if len(lines) == 2:
        lines.append("  none: every compared row matches v4.5")
    lines += ["", "The later changes (thplab.later):"]
    for number, e in enumerate(used, 1):
        lines += textwrap.wrap(f"[{number}] {e.name}, {e.version}: {e.summary}", width,
                               subsequent_indent="    ")
        lines.append(" " * max(0, min(4, width - len(e.link))) + e.link)
    unused = [e.name for e in LATER if e not in used]
    lines += textwrap.wrap("Not needed by any row of this run: " + "; ".join(unused) + ".", width,
                           break_on_hyphens=False)
    return "\n".join(lines)


def live_vs_recorded(live_run, recorded):
    """Where a live run saw something else than the recorded run: one line per differing quantity."""
    from ..live.comparison import observed_quantities

    lines = [f"LIVE Linux {live_run.kernel} vs RECORDED Linux {recorded.kernel}: quantities that differ"]
    for name, result in live_run.experiments.items():
        if result.status != "ok":
            lines.append(f"  {name}: {result.status}: {result.reason}")
            continue
        if recorded.experiments.get(name) is None or recorded.experiments[name].status != "ok":
            lines.append(f"  {name}: not in the recorded run")
            continue
        old = {s["name"]: observed_quantities(s) for s in recorded.experiments[name].steps}
        for step in result.steps:
            new, was = observed_quantities(step), old.get(step["name"], {})
            for quantity in dict.fromkeys([*was, *new]):
                if new.get(quantity) != was.get(quantity):
                    lines.append(f"  {name:<15}{step['name']:<15}{quantity:<31}"
                                 f"recorded {_cell(was.get(quantity)):>5}   live {_cell(new.get(quantity)):>5}")
    if len(lines) == 1:
        lines.append("  none: this kernel reported what the recorded one did, row for row")
    return "\n".join(lines)


# ------------------------------------------------------------------ the frames, real and model

#: Frame kinds (the colours of thp_mappings); -1 = not known.
KIND_NAMES = {0: "not compound", 1: "head", 2: "tail", 3: "free"}
UNKNOWN = -1
#: Characters per line of a run label in :func:`live_vs_model` (its columns are 282 px wide).
_LABEL_CHARS = 30


@dataclass
class Frames:
    """The 512 frames of the THP after one step, as one side (real or model) shows them.

    ``kind`` (:data:`KIND_NAMES`), ``kpagecount`` and, per process, ``maps``
    (1 where it maps its own subpage of the THP, 0 where not) are int arrays
    with -1 where that side did not say.  ``how`` per process: "PMD", "PTEs"
    or "none".  ``sampled``: subpages read one by one (real kernel only).
    """

    title: str
    detail: str
    kind: np.ndarray
    kpagecount: np.ndarray
    maps: dict
    how: dict
    sampled: tuple = ()
    note: str = ""

    def values(self):
        """``(512, 2 + processes)``: the columns runs are cut on."""
        return np.stack([self.kind, self.kpagecount, *self.maps.values()], axis=1)


def _fill(samples, counts):
    """Per subpage: the sampled values, and the others where the 512-frame counts force them.

    ``counts`` is ``{value: frames}`` over all 512 frames (None if unknown).
    If after taking out the samples only one value is left for all the
    unsampled frames, they get it; otherwise they stay unknown.
    """
    out = np.full(HPAGE_PMD_NR, UNKNOWN, np.int64)
    out[list(samples)] = list(samples.values())
    if counts is None:
        return out
    left = dict(counts)
    for value in samples.values():
        left[value] = left.get(value, 0) - 1
    rest = {v: n for v, n in left.items() if n}
    unsampled = HPAGE_PMD_NR - len(samples)
    if len(rest) == 1 and next(iter(rest.values())) == unsampled:
        out[out == UNKNOWN] = next(iter(rest))
    return out


def _real_maps(view, anon_huge_kb):
    """Which subpages one process maps (its own subpage of the THP), and how: PMD, PTEs or none."""
    samples = {s["index"]: s for s in view["samples"]}
    key = "mapping_thp" if "mapping_thp" in view else "mapped"
    mapped = _fill({i: int(s.get(key, s["mapped"])) for i, s in samples.items()},
                   {1: view[key], 0: HPAGE_PMD_NR - view[key]})
    how = "none" if not view[key] else "PMD" if anon_huge_kb == 2048 else "PTEs"
    return mapped, how


def real_frames(run, name, step):
    """:class:`Frames` of the real kernel after ``step`` of experiment ``name`` of ``run``.

    Seven subpages are recorded one by one (flags, kpagecount, pagemap bits);
    the other frames get a value only where the counts over all 512 frames
    leave no choice (e.g. 511 frames with kpagecount 1, and the one sampled
    frame with 0).
    """
    result = run.experiments[name]
    s = result.step(step)
    views = {"self": s["views"]["self"]}
    if "child" in s["views"]:
        views["child"] = s["views"]["child"]
    maps, how = {}, {}
    for who, view in views.items():
        maps[who], how[who] = _real_maps(view, (view["smaps"] or {}).get("AnonHugePages"))
    view = views["self"]
    samples = {x["index"]: x for x in view["samples"]}
    kind = np.full(HPAGE_PMD_NR, UNKNOWN, np.int64)
    count = np.full(HPAGE_PMD_NR, UNKNOWN, np.int64)
    note = ""
    if view["physical"]:
        note = f"frames not readable: {view['physical']}"
    else:
        compound = _fill({i: int(x["compound_head"] or x["compound_tail"]) for i, x in samples.items()},
                         {1: view["compound"], 0: HPAGE_PMD_NR - view["compound"]})
        kind = np.where(compound == 1, 2, np.where(compound == 0, 0, UNKNOWN))
        for i, x in samples.items():
            kind[i] = 1 if x["compound_head"] else 2 if x["compound_tail"] else 0
        count = _fill({i: x["kpagecount"] for i, x in samples.items()},
                      {int(v): n for v, n in view["kpagecount"].items()})
    return Frames(f"real kernel, {_source(run)}", f"Linux {run.kernel}, {run.date[:10]}", kind, count,
                  maps, how, tuple(sorted(samples)), note)


def _model_machine(name, step, level):
    """The model's Machine, process ids, address and THP head pfn right after ``step`` of ``name``."""
    from ..live.comparison import MODEL_STEPS, boot_model
    from ..live.experiments import MAPPING_SIZE

    m = boot_model(level)
    procs = {"self": m.spawn()}
    addr = m.mmap(procs["self"], MAPPING_SIZE, prot="rw", thp=True)
    head = -1
    for name_, operation in MODEL_STEPS[name](m, procs, addr):
        operation()
        if head < 0:
            head = int(m.walk(procs["self"], [addr])["pfn"][0])
        if name_ == step:
            return m, procs, addr, head
    raise KeyError(f"{name} has no step {step!r}")


def _model_name(level):
    """``level 0 (v3.16)``, ``level 4 (patches 01-04)``, ``v4.5 (merged)``: a model kernel in a sentence."""
    from .. import live

    if isinstance(level, str):
        return f"{level} ({live.LEVEL_NAMES[level]})" if level in live.LEVEL_NAMES else level
    return f"level {level} ({live.LEVEL_NAMES.get(level, f'patches 01-{level:02d}')})"


def model_frames(name, step, level):
    """:class:`Frames` of the model at ``level`` after ``step`` of experiment ``name``.

    ``level`` is a model kernel as :func:`thplab.live.compare` takes it (``10``,
    ``"v4.5"``).  The model runs the experiment's scenario
    (:data:`thplab.live.MODEL_STEPS`); ``kpagecount`` is ``page_mapcount()``
    of that kernel, what /proc/kpagecount reports.
    """
    from ..diagrams import process_maps
    from ..page_flags import PageHead, PageTail, Use
    from ..params import PAGE_SIZE

    m, procs, addr, head = _model_machine(name, step, level)
    frames = head + np.arange(HPAGE_PMD_NR)
    free = m.mem_map["use"][frames] == Use.free
    kind = np.where(free, 3, np.where(PageHead(m.mem_map, frames), 1,
                                      np.where(PageTail(m.mem_map, frames), 2, 0)))
    count = np.where(free, 0, np.asarray(m.page_mapcount(frames), np.int64))
    subpages = addr + np.arange(HPAGE_PMD_NR, dtype=np.uint64) * PAGE_SIZE
    tables = process_maps(m, head)
    maps, how = {}, {}
    for who, pid in procs.items():
        maps[who] = (m.walk(pid, subpages)["pfn"] == frames).astype(np.int64)
        t = tables.get(pid, {})
        how[who] = "PMD" if t.get("pmd") else "PTEs" if maps[who].any() else "none"
    return Frames(f"model, {_model_name(level)}", f"frames {head:#x}-{head + HPAGE_PMD_NR - 1:#x}",
                  kind, count, maps, how)


def _differs(model, real):
    """Per subpage: the fields where ``model`` says something else than the real kernel (names)."""
    comparable = (real.kind >= 0) & ((real.kind != 0) | np.any([v == 1 for v in real.maps.values()], axis=0))
    out = [[] for _ in range(HPAGE_PMD_NR)]
    compound = lambda k: np.where(k == 3, 0, k)  # a freed frame is "not compound" to kpageflags
    for field, a, b in [("kind", compound(model.kind), real.kind), ("kpagecount", model.kpagecount, real.kpagecount)]:
        for i in np.flatnonzero(comparable & (b >= 0) & (a != b)):
            out[i].append(field)
    for who, v in model.maps.items():
        r = real.maps.get(who)
        if r is not None:
            for i in np.flatnonzero((r >= 0) & (r != v)):
                out[i].append(f"maps {who}")
    return out


def _run_text(frames, s, t, diff=None, real=None):
    from ..diagrams._base import span

    kind = int(frames.kind[s])
    what = "not recorded" if kind < 0 else KIND_NAMES[kind]
    count = int(frames.kpagecount[s])
    text = f"{span(s, t)} {what}" + (f" · kpagecount {count}" if count >= 0 else "")
    if diff:
        was = []
        for field in diff:
            if field == "kind":
                was.append(KIND_NAMES[int(real.kind[s])])
            elif field == "kpagecount":
                was.append(f"kpagecount {int(real.kpagecount[s])}")
            else:
                who = field[5:]
                was.append(f"{who} {'maps it' if real.maps[who][s] else 'does not map it'}")
        text += "\n≠ real: " + ", ".join(was)
    return text


def _twin_lines(frames, cuts, diffs=None, real=None):
    lines = [f"{frames.title}; {frames.detail}:"]
    for who, how in frames.how.items():
        n = int((frames.maps[who] == 1).sum())
        through = f" through {'a huge PMD' if how == 'PMD' else 'PTEs'}" if how != "none" else ""
        lines.append(f"  {who} maps {n} of the THP's 512 subpages{through}")
    for s, t in cuts:
        mapped = [who for who, v in frames.maps.items() if v[s] == 1]
        where = f"; mapped by {', '.join(mapped)}" if mapped else "; mapped by nobody"
        text = _run_text(frames, s, t, diffs[s] if diffs else None, real).replace("\n", "  ")
        lines.append(f"  {text}{where}")
    if frames.sampled:
        lines.append(f"  (subpages {', '.join(map(str, frames.sampled))} read one by one; the others follow "
                     "from the counts over all 512 frames where those leave no choice)")
    if frames.note:
        lines.append(f"  {frames.note}")
    return lines


def live_vs_model(run, name, step=None, levels=KERNELS):
    """Diagram: the THP's 512 frames after ``step`` of experiment ``name`` -- the real kernel and the model.

    Left the real kernel (labelled RECORDED or LIVE with its kernel and
    date), then the model at each of ``levels`` (model kernels: series
    levels, ``"v4.5"``) after the same step, all on
    one vertical scale of subpages.  Each strip is cut into runs of equal
    values (kind, kpagecount, who maps the frame) as in
    :func:`thplab.diagrams.thp_mappings`; left of a strip one bar per process
    says which subpages it maps (PMD: horizontal hatch, PTEs: dots).  A model
    run that differs from the real kernel is outlined with thick dashes and
    its label says the real value after "≠".
    """
    import drawsvg as dw

    from ..diagrams import runs
    from ..diagrams._base import BLACK, BLUE, GREY, ORANGE, PALE, SKY, SMALL_SIZE, VERMILION, Canvas

    result = run.experiments[name]
    step = step or result.steps[-1]["name"]
    op = result.step(step)["op"]
    real = real_frames(run, name, step)
    models = [model_frames(name, step, lv) for lv in levels]
    diffs = [_differs(mf, real) for mf in models]

    def cut(frames, diff=None):
        v = frames.values()
        if diff is not None:
            # A run of the model that differs must also have one real value to name after "≠".
            kinds, differ = {}, np.array([bool(d) for d in diff])
            v = np.column_stack([v, [kinds.setdefault(tuple(d), len(kinds)) for d in diff],
                                 np.where(differ[:, None], real.values(), 0)])
        return runs(v)

    cuts = [cut(real)] + [cut(mf, d) for mf, d in zip(models, diffs)]
    edges = sorted({e for c in cuts for s, t in c for e in (s, t)})
    segments = list(zip(edges[:-1], edges[1:]))
    def wrap(text):  # [(line, bold)]: the run, then (bold) how the real kernel differs
        first, *differ = text.split("\n")
        return ([(line, False) for line in textwrap.wrap(first, _LABEL_CHARS)]
                + [(line, True) for part in differ for line in textwrap.wrap(part, _LABEL_CHARS)])

    labels = [{s: wrap(_run_text(f, s, t, d[s] if d else None, real)) for s, t in c}
              for f, c, d in zip([real] + models, cuts, [None] + diffs)]
    # Each segment is tall enough for the longest label that starts on it, the rest proportional.
    top, line_h, avail = 106, 14, 300
    mins = [6 + line_h * max(len(col.get(s, [""])) for col in labels) for s, _ in segments]
    extra = max(avail - sum(mins), 0)
    heights = [h + extra * (t - s) / HPAGE_PMD_NR for h, (s, t) in zip(mins, segments)]
    ys = dict(zip(edges, np.concatenate([[top], top + np.cumsum(heights)]).tolist()))

    def y_of(sub):
        for (s, t), h in zip(segments, heights):
            if s <= sub < t:
                return ys[s] + h * (sub - s) / (t - s)
        return ys[edges[-1]]

    heading = f"{name} after '{step}': the real kernel ({_source(run)}) and the model"
    twin = [heading, f"step '{step}': {op}"] + _twin_lines(real, cuts[0])
    for mf, c, d in zip(models, cuts[1:], diffs):
        twin += _twin_lines(mf, c, d, real)
    twin = [w for line in twin for w in textwrap.wrap(line, 100, subsequent_indent="    ")]
    col_w = 282
    width = 12 + col_w * (1 + len(models))
    bottom = ys[edges[-1]]
    c = Canvas(width, bottom + 96, heading, "\n".join(twin))
    c.heading(heading)
    c.text(f"step '{step}': {op}", 12, 42, size=SMALL_SIZE)
    fills = {0: PALE, 1: ORANGE, 2: SKY, 3: c.hatch("free", GREY, "cross"), UNKNOWN: c.hatch("unknown", GREY, "diag")}
    bar_fill = {"PMD": c.hatch("pmd", BLUE, "horiz"), "PTEs": c.hatch("ptes", ORANGE, "dots")}
    for j, (frames, runs_) in enumerate(zip([real] + models, cuts)):
        x0 = 12 + j * col_w
        diff = diffs[j - 1] if j else None
        c.text(frames.title, x0, 64, weight="bold", class_="column-title")
        c.text(frames.detail, x0, 80, size=SMALL_SIZE, fill=GREY if j else BLACK)
        procs = list(frames.maps)
        strip_x = x0 + 30 * len(procs) + 4
        for k, who in enumerate(procs):
            bx = x0 + 30 * k
            c.text(who, bx + 8, top - 6, size=SMALL_SIZE, anchor="middle")
            for s, t in runs(frames.maps[who]):
                v = int(frames.maps[who][s])
                fill = bar_fill[frames.how[who]] if v == 1 else "white" if v == 0 else fills[UNKNOWN]
                c.box(bx + 2, ys[s], 12, y_of(t) - ys[s], fill=fill, stroke=BLACK, stroke_width=0.8,
                      class_="maps", data_who=who, data_first=s, data_last=t - 1, data_maps=v,
                      tip=f"{who}: {'maps' if v == 1 else 'does not map' if v == 0 else 'unknown'} "
                          f"subpages {s}-{t - 1}" + (f" ({frames.how[who]})" if v == 1 else ""))
        c.text("frames", strip_x + 18, top - 6, size=SMALL_SIZE, anchor="middle")
        for s, t in runs_:
            y0, y1 = ys[s], y_of(t)
            label = labels[j][s]
            c.box(strip_x, y0, 36, y1 - y0, fill=fills[int(frames.kind[s])], stroke=BLACK, stroke_width=1,
                  class_="run", data_first=s, data_last=t - 1, data_kind=KIND_NAMES.get(int(frames.kind[s]), "unknown"),
                  data_kpagecount=int(frames.kpagecount[s]), tip=" ".join(line for line, _ in label))
            if diff and diff[s]:
                c.box(strip_x - 3, y0 + 1, 42, y1 - y0 - 2, fill="none", stroke=VERMILION, stroke_width=3,
                      stroke_dasharray="7 4", class_="differs", data_first=s, data_last=t - 1)
            for k, (line, bold) in enumerate(label):
                c.text(line, strip_x + 44, y0 + 14 + line_h * k, size=SMALL_SIZE, class_="run-label",
                       weight="bold" if bold else None)
        for i in frames.sampled:
            y = y_of(i + 0.5)
            c.add(dw.Lines(strip_x - 7, y - 4, strip_x - 1, y, strip_x - 7, y + 4, close=True, fill=BLACK,
                           class_="sample"))
        if frames.note:
            c.text("frames not readable here (see the text twin)", x0, bottom + 16, size=SMALL_SIZE, fill=GREY)

    # ---- one legend for the whole picture, in lines that fit the width
    ly, x = bottom + 36, 12
    items = [("head", ORANGE), ("tail", SKY), ("not compound", PALE), ("free", fills[3]),
             ("not recorded", fills[UNKNOWN]), ("mapped by a PMD", bar_fill["PMD"]),
             ("mapped by PTEs", bar_fill["PTEs"]), ("subpage read one by one", None)]
    for label, fill in items:
        step_w = 34 + 6.4 * len(label)
        if x + step_w > width:
            ly, x = ly + 20, 12
        if fill is None:
            c.add(dw.Lines(x + 4, ly - 8, x + 10, ly - 4, x + 4, ly, close=True, fill=BLACK))
        else:
            c.box(x, ly - 11, 16, 14, fill=fill, stroke=BLACK)
        c.text(label, x + 22, ly, size=SMALL_SIZE)
        x += step_w
    c.box(12, ly + 9, 16, 14, fill="none", stroke=VERMILION, stroke_width=3, stroke_dasharray="7 4")
    c.text("≠ real: the model differs from the kernel there; the bold line gives the kernel's value.",
           36, ly + 20, size=SMALL_SIZE)
    c.text("kpagecount: /proc/kpagecount of the frame; for the model, page_mapcount() at its level.",
           36, ly + 36, size=SMALL_SIZE)
    c.resize(ly + 48)
    return c.finish("live_vs_model")


# ------------------------------------------------------------------ questions


def _diagnoses(answer, predicted, explanations):
    """Wrong answers that are a model kernel's prediction, and why today's kernel says otherwise."""
    why = " ".join(explanations)
    out = {}
    for level, value in predicted.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int) and value != answer and value not in out:
            out[value] = (f"That is what the model predicts at {_model_name(level)}; the real kernel "
                          "differs from it here, for the reason below." + (f" {why}" if why else ""))
    return out


#: Wrong answers to the rows lesson 16 asks about that no model level predicts, with what each means.
ROW_DIAGNOSES = {
    ("fork", "fork", "kpagecount[1]"): {
        1: "1 counts one mapping: the child's PMD maps subpage 1 too."},
    ("pin", "split_pinned", "thp_split_page_failed"): {
        0: "0 would mean the split went through (or never ran): the pin is one reference more than "
           "the mappings explain, so the split is refused and counted."},
}


@dataclass
class LiveQuestion:
    """Predict what the real kernel reported, before the recorded row is shown.

    ``for_row(experiment, step, quantity)`` asks for one compared quantity;
    ``generate(seed, run)`` picks one where the real kernel differs from a
    model kernel, so the rules of lessons 13-15 (what v4.5 changed) and the
    later changes are needed to answer.  A wrong answer that equals a model
    kernel's prediction is diagnosed as such.
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
    diagnoses: dict = None

    @classmethod
    def for_row(cls, experiment, step, quantity, run=None, levels=KERNELS, seed=None, diagnoses=None):
        """The question on one compared row; ``diagnoses`` adds wrong answers the model levels do not give.

        Rows the lesson asks about carry their own (:data:`ROW_DIAGNOSES`), kept here so that the
        question's cell does not show a learner what the wrong answers are.
        """
        diagnoses = {**ROW_DIAGNOSES.get((experiment, step, quantity), {}), **(diagnoses or {})}
        from .. import live

        run = run or live.load_recorded()
        result = run.experiments[experiment]
        row = next(r for r in live.compare(result, levels) if r.step == step and r.quantity == quantity)
        answer = int(row.observed)
        preds = "; ".join(f"{_model_name(lv)} predicts {_cell(row.predicted[lv])} ({row.verdict[lv]})"
                          for lv in levels)
        why = f"The model: {preds}." + "".join(f" {t}" for t in row.explanations)
        return cls(seed, run.kernel, run.source, experiment, step, result.step(step)["op"], quantity, answer,
                   why, {**(diagnoses or {}), **_diagnoses(answer, row.predicted, [])})

    @classmethod
    def generate(cls, seed=0, run=None, levels=KERNELS):
        from .. import live

        run = run or live.load_recorded()
        candidates = []
        for name, result in run.experiments.items():
            if result.status != "ok":
                continue
            for row in live.compare(result, levels):
                if row.step == "fault" and name != "fault":
                    continue
                if isinstance(row.observed, bool) or not isinstance(row.observed, int):
                    continue
                if all(v == "match" for v in row.verdict.values()):
                    continue
                candidates.append((name, row.step, row.quantity))
        rng = np.random.default_rng(seed)
        name, step, quantity = candidates[int(rng.integers(len(candidates)))]
        return cls.for_row(name, step, quantity, run, levels, seed)

    def render(self):
        lines = ([f"ARG seed {self.seed}"] if self.seed is not None else []) + [
            f"ARG kernel Linux {self.kernel} ({_LABEL.get(self.source, self.source.upper())})",
            f"ARG experiment {self.experiment}", "",
            f"Step '{self.step}': {self.op}", "",
            f"What did the real kernel report for '{self.quantity}' after this step?"
            + (" (a /proc/vmstat delta)" if self.quantity.startswith(("thp_", "nr_")) else "")
            + (" (1 = yes, 0 = no)" if self.quantity == "page compound" else "")]
        return "\n".join(lines)

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, who=f"the {self.source} kernel reported",
                            diagnoses=self.diagnoses)


@dataclass
class LevelQuestion:
    """Transfer: the recorded tables show levels 0 and 10; predict the model at a level in between.

    The row is one where levels 0 and 10 disagree, so some patch in between
    changes it; the feedback names the patches that do (found by running the
    model at every level) and diagnoses the two end levels' values.
    """

    seed: int
    experiment: str
    step: str
    quantity: str
    level: int
    answer: int
    explanation: str
    diagnoses: dict

    @classmethod
    def generate(cls, seed=0):
        from .. import live

        rng = np.random.default_rng(seed)
        by_experiment = {}
        for name in live.EXPERIMENTS:
            paths = [live.predict(name, lv) for lv in range(11)]
            rows = {}
            for step, values in paths[10].items():
                if step == "fault" and name != "fault":
                    continue
                for quantity in values:
                    path = tuple(p.get(step, {}).get(quantity) for p in paths)
                    # An event that merely exists from some patch on (None -> 0) asks nothing.
                    if path[10] is not None and path[0] != path[10] and any(v for v in path if v is not None):
                        # The same values along the series after another step ask the same thing.
                        rows.setdefault((quantity, path), (step, quantity, path))
            if rows:
                by_experiment[name] = list(rows.values())
        name = list(by_experiment)[int(rng.integers(len(by_experiment)))]
        step, quantity, path = by_experiment[name][int(rng.integers(len(by_experiment[name])))]
        changes = [lv for lv in range(1, 11) if path[lv] != path[lv - 1]]
        level = int(rng.choice([lv for lv in range(1, 10) if path[lv] is not None]))
        answer = int(path[level])
        steps = ", ".join(f"patch {lv:02d} ({_cell(path[lv - 1])} -> {_cell(path[lv])})" for lv in changes)
        has = "patch 01" if level == 1 else f"patches 01-{level:02d}"
        why = f"Along the series this value changes at {steps}; level {level} has {has}."
        diagnoses = {}
        for end, missed in ((0, [lv for lv in changes if lv <= level]),
                            (10, [lv for lv in changes if lv > level])):
            if path[end] is not None and int(path[end]) != answer and missed:
                patches = ", ".join(f"{lv:02d}" for lv in missed)
                where = "is already in" if end == 0 else "comes after"
                diagnoses[int(path[end])] = (f"That is level {end}'s value; patch {patches}, which changes "
                                             f"it, {where} level {level}.")
        return cls(seed, name, step, quantity, level, answer, why, diagnoses)

    def render(self):
        from .. import live

        yes_no = " (1 = yes, 0 = no)" if self.quantity == "page compound" else ""
        op = live.load_recorded().experiments[self.experiment].step(self.step)["op"]
        return "\n".join([
            f"ARG seed {self.seed}", f"ARG experiment {self.experiment}: {live.EXPERIMENTS[self.experiment]}",
            f"ARG model Machine.boot(nr_pages=4096, patches={self.level}, seed=0)", "",
            f"Step '{self.step}': {op}", "",
            f"After step '{self.step}', what does the model at level {self.level} predict for "
            f"'{self.quantity}'{yes_no}?"])

    def check(self, guess):
        return check_number(guess, self.answer, self.explanation, who=f"level {self.level} says",
                            diagnoses=self.diagnoses)


# ------------------------------------------------------------------ this machine


def _thp_line(s):
    """One line of THP settings (a :class:`~thplab.live.ThpSettings`)."""
    return (f"THP: enabled=[{s.enabled}] defrag=[{s.defrag}] hpage_pmd_size={s.hpage_pmd_size} "
            f"use_zero_page={int(bool(s.use_zero_page))}"
            + (f" hugepages-2048kB/enabled=[{s.pmd_size_enabled}]" if s.pmd_size_enabled else ""))


def _recorded_label(recorded):
    return (f"RECORDED on Linux {recorded.kernel}, {recorded.date} -- not this machine\n"
            "(THPLAB_LIVE=recorded; unset it to read this machine)")


def live_status():
    """What this machine offers the live experiments, as text (varies by machine: never a checked cell).

    With ``THPLAB_LIVE=recorded`` (:func:`thplab.live.recorded_only`), what the recorded run's
    machine offered, labelled as such.
    """
    import platform

    from .. import live

    if live.recorded_only():
        recorded = live.load_recorded()
        return "\n".join([_recorded_label(recorded), _thp_line(live.ThpSettings(**recorded.settings)),
                          "experiments: ran there (the recorded run below)"])
    s = live.read_thp_settings()
    lines = [f"kernel: Linux {platform.release()}"]
    lines.append(_thp_line(s) if s.available else f"THP settings: {s.reason}")
    reason = live.thp_unavailable_reason()
    lines.append("experiments: can run here" if not reason else f"experiments: cannot run here ({reason})")
    if not reason:
        frames = ("readable" if live.read_kpageflags([0]).available
                  else "not readable (needs root): the kpagecount and 'page compound' rows will be missing")
        lines.append(f"physical page frames: {frames}")
    return "\n".join(lines)


def live_report(levels=KERNELS, names=None, timeout=10.0):
    """Run the live experiments if this kernel allows; return ``(run or None, text)``.

    The text is the verdict counts of the live run and only what it saw
    differently from the recorded run (:func:`live_vs_recorded`).  Without
    THP, ``/proc`` or root the text says what is missing (and the THP
    settings that could be read); nothing raises.  With ``THPLAB_LIVE=recorded``
    the text is the recorded run's verdict counts, labelled as recorded.
    """
    from .. import live

    if live.recorded_only():
        recorded = live.load_recorded()
        return None, _recorded_label(recorded) + "\n\n" + verdict_table(recorded, levels)
    reason = live.thp_unavailable_reason()
    if reason:
        s = live.read_thp_settings()
        settings = (f"enabled=[{s.enabled}] defrag=[{s.defrag}]" if s.available
                    else "THP settings unreadable")
        return None, (f"Live experiments cannot run here: {reason}.\n{settings}\n"
                      "The recorded run above is what they show on a machine that allows them.")
    run = live.run_all(names, timeout)
    return run, verdict_table(run, levels) + "\n\n" + live_vs_recorded(run, live.load_recorded())
