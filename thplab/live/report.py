"""The lab in a terminal: the comparison as text, and ``python -m thplab live``.

``thplab/__main__.py`` dispatches the ``live`` sub-command to :func:`main`.
"""

import argparse
import json
import signal
import sys
import textwrap

from . import probes
from .comparison import KERNELS, compare, kernel_label
from .experiments import EXPERIMENTS
from .formats import THP_EVENTS
from .runs import load_recorded, run_all, save_run

__all__ = ["format_run", "main"]


def _cell(value):
    """One value in a table: ``-`` where that kernel has no such quantity, yes/no, or the number."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def format_run(run, levels=(0, 10), width=100):
    """The comparison of a :class:`LiveRun` with the model, as terminal text.

    ``levels`` are the model kernels, as :func:`~thplab.live.compare` takes
    them (``python -m thplab live`` passes :data:`~thplab.live.KERNELS`).

    Every experiment starts with the same fault, shown once (under ``fault``).
    After the first step a row appears only if its quantity changed (real or
    model) or, for a vmstat event, moved. Footnotes give the explanations of
    :func:`compare`; each note of the experiments is printed once.
    """
    label = ("LIVE, this machine" if run.source == "live"
             else "RECORDED on another machine, not a live reading")
    settings = run.settings
    lines = [f"thplab live: Linux {run.kernel}, {run.date} ({label})"]
    if settings.get("available"):
        lines.append(f"THP: enabled=[{settings['enabled']}] defrag=[{settings['defrag']}] "
                     f"hpage_pmd_size={settings['hpage_pmd_size']} "
                     f"use_zero_page={int(settings['use_zero_page'])}")
    boots = ["patches=LEVEL" if not isinstance(level, str) else f"kernel={level!r}"
             for level in levels]
    lines.append(f"Model: Machine.boot(nr_pages=4096, {' or '.join(dict.fromkeys(boots))}, seed=0). "
                 "Rows show what moved or changed; '-' means that kernel has no such quantity.")
    header = f"  {'step':<15}{'quantity':<31}{'real':>5}" + "".join(
        f"  {kernel_label(level):<13}" for level in levels)
    printed_notes = set()
    for name, result in run.experiments.items():
        lines += ["", f"== {name}: {EXPERIMENTS[name]}"]
        if result.status != "ok":
            lines.append(f"  {result.status}: {result.reason}")
            continue
        lines.append(header.rstrip())
        footnotes, last_step, previous = [], None, {}
        for row in compare(result, levels):
            values = (row.observed, [row.predicted[level] for level in levels])
            unchanged = row.step != "fault" and previous.get(row.quantity) == values
            previous[row.quantity] = values
            if (row.step == "fault" and name != "fault") or (
                    unchanged and row.quantity not in THP_EVENTS):
                continue
            for text in row.explanations:
                if text not in footnotes:
                    footnotes.append(text)
            refs = "".join(f" [{footnotes.index(text) + 1}]" for text in row.explanations)
            step = row.step if row.step != last_step else ""
            last_step = row.step
            cells = "".join(f"  {_cell(row.predicted[level]) + ' ' + row.verdict[level]:<13}"
                            for level in levels)
            lines.append(f"  {step:<15}{row.quantity:<31}{_cell(row.observed):>5}{cells}{refs}"
                         .rstrip())
        for number, text in enumerate(footnotes, 1):
            lines += textwrap.wrap(text, width, initial_indent=f"  [{number}] ",
                                   subsequent_indent="      ", break_on_hyphens=False)
        for note in result.notes:
            if note not in printed_notes:
                printed_notes.add(note)
                lines += textwrap.wrap(note, width, initial_indent="  note: ",
                                       subsequent_indent="        ")
    return "\n".join(lines)


def progress_printer(stream):
    """A ``run_all(progress=...)`` callback: one line per experiment on ``stream``.

    ``thplab live: 3/6 fork ... ok``: the name as it starts (the line is
    flushed, so a slow experiment shows which one it is), the status when done.
    """
    def progress(number, total, name, result):
        if result is None:
            stream.write(f"thplab live: {number}/{total} {name} ...")
        else:
            stream.write(f" {result.status}\n")
        stream.flush()
    return progress


def main(argv=None):
    """``python -m thplab live``: run the experiments and print them next to the model.

    Without live probing (not Linux, THP off, not root) it prints the
    recorded run instead, labelled as such. Returns the exit status: 1 if
    an experiment failed; 130 after Ctrl-C (128 + SIGINT, as a shell reports
    an interrupted command), which ends the run with one line on stderr and
    no traceback (the experiment child is killed on the way out).
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("thplab live: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _model_kernel(text):
    """``--levels`` takes RFC series levels and kernel names: ``4`` -> 4, ``v4.5`` -> ``"v4.5"``."""
    from ..series import KERNELS as NAMES

    if text.isdigit():
        return int(text)
    if text in NAMES:
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is neither a series level (0-10) nor a kernel "
                                     f"name ({', '.join(NAMES)})")


def _main(argv):
    parser = argparse.ArgumentParser(
        prog="python -m thplab live",
        description="Run THP experiments on this machine's kernel and compare them with the "
                    "thplab model at series level 0 (old kernel), 10 (RFC v1) and v4.5 (the "
                    "merged design today's kernel descends from).")
    parser.add_argument("--recorded", action="store_true",
                        help="show the run recorded with thplab instead of probing this kernel")
    parser.add_argument("--experiment", action="append", choices=list(EXPERIMENTS),
                        help="run only this experiment (repeatable)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds each experiment may take (default 10)")
    parser.add_argument("--levels", type=_model_kernel, nargs="+", default=list(KERNELS),
                        metavar="KERNEL",
                        help="model kernels to compare with: series levels and kernel names "
                             f"(default: {' '.join(map(str, KERNELS))})")
    parser.add_argument("--json", action="store_true", help="print the run as JSON")
    parser.add_argument("--record", metavar="PATH", help="also save the live run as JSON to PATH")
    args = parser.parse_args(argv)

    reason = "" if args.recorded else probes.thp_unavailable_reason()
    if args.recorded or reason:
        if reason:
            print(f"live probing unavailable: {reason}", file=sys.stderr)
        run = load_recorded()
        if args.experiment:
            run.experiments = {name: run.experiments[name] for name in args.experiment}
    else:
        # Progress on a terminal only: a pipe or a log gets the report alone.
        run = run_all(args.experiment, args.timeout,
                      progress=progress_printer(sys.stderr) if sys.stderr.isatty() else None)
        if args.record:
            save_run(run, args.record)
    print(json.dumps(run.to_dict(), indent=1) if args.json else format_run(run, args.levels))
    return int(any(result.status == "failed" for result in run.experiments.values()))
