"""Lesson 15: the real kernel next to the model.

:func:`format_experiment`, :func:`verdict_table` and :class:`LiveQuestion`
read a (recorded or live) :class:`thplab.live.LiveRun`; :func:`live_status`
says what this machine allows; :func:`live_report` runs the experiments when
the kernel allows.  Only the recorded run is deterministic.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np


from ..problems import check_number

__all__ = ["format_experiment", "verdict_table", "LiveQuestion", "live_status", "live_report"]


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
        return check_number(guess, self.answer, self.explanation, who=f"the {self.source} kernel reported")


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
