"""The machinery every coding exercise shares: cases from the model, a checker, a report.

An :class:`Exercise` asks the learner to write one small function that states
a kernel rule on plain ints and numpy arrays.  :meth:`Exercise.check` runs it
on seeded cases -- states built on a :class:`~thplab.machine.Machine`, with the
answer read from the model after the kernel code ran -- and returns a
:class:`Report`: "not done yet", "all N cases agree", or the first case that
differs, with a diagnosis when the wrong answers are those of a known mistake.
Nothing the learner's function does (returning nonsense, raising) escapes the
checker as an exception.
"""

import html
import inspect
import textwrap
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadArgument

#: What an untouched skeleton returns (its body is ``return NotImplemented`` or ``...``).
_UNIMPLEMENTED = (NotImplemented, None, Ellipsis)


class Text(str):
    """A string that shows as itself as a cell's last expression (no quotes, real line breaks)."""

    def __repr__(self):
        return str(self)


class BadReturn(Exception):
    """The learner's function returned something of the wrong shape; the message says what."""


@dataclass
class Case:
    """One seeded state: how it was made, the function's arguments, and the model's answer."""

    seed: int
    steps: list
    args: tuple
    expected: tuple
    #: What the model did, in a few words ("split_huge_page() returned -EBUSY").
    note: str = ""


@dataclass
class Output:
    """One component of a function's result: its name and kind (``int``, ``bool`` or an array length)."""

    name: str
    kind: object


def summarize(value):
    """An int, a bool or a 1-D array as a short text: arrays as their most common value plus exceptions.

    ``[1, 1, 3, 3, 1]`` reads ``5 values: all 1 except [2-3]=3``.
    """
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if np.ndim(value) == 0:
        return str(int(value))
    a = np.asarray(value)
    if not len(a):
        return "no values"
    values, counts = np.unique(a, return_counts=True)
    common = values[np.argmax(counts)]
    odd = np.flatnonzero(a != common)
    text = f"{len(a)} values: all {common}"
    if len(odd):
        # Runs of equal values at consecutive indices: [406-417]=0.
        cuts = np.flatnonzero((np.diff(odd) != 1) | (a[odd[1:]] != a[odd[:-1]])) + 1
        runs = [(r[0], r[-1]) for r in np.split(odd, cuts)]
        shown = ", ".join(f"[{i}]={a[i]}" if i == j else f"[{i}-{j}]={a[i]}" for i, j in runs[:4])
        text += f" except {shown}" + (f" and {len(runs) - 4} more runs" if len(runs) > 4 else "")
    return text


def wrap(text, indent=""):
    """``text`` broken into lines of at most 100 columns, continuation lines indented."""
    return textwrap.fill(text, width=100, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def last_line(exc):
    """The last line of a traceback for ``exc``: ``ZeroDivisionError: division by zero``."""
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


class Exercise:
    """A function to write, the model's cases to check it on, hints and a solution.

    Subclasses set the class attributes and implement :meth:`case`.
    ``function`` is the solution (its source is :meth:`solution`);
    ``mistakes`` lists ``(wrong_function, what_it_means)`` pairs, each a
    typical wrong answer written the way a learner would write it.
    """

    name = ""
    title = ""
    lesson = ""
    level = 0
    statement = ""
    skeleton = ""
    hints = ()
    function = None
    mistakes = ()
    #: The components of the function's result, in order.
    outputs = ()
    #: Names of the function's arguments, as in the skeleton.
    arg_names = ()

    def __init__(self):
        self._cases = {}
        self._next_hint = 0

    def __repr__(self):
        return f"<exercise {self.name!r}: {self.title} (lesson {self.lesson}, level {self.level})>"

    # ----------------------------------------------------------- cases

    def case(self, seed):
        """One :class:`Case`, built on a machine seeded with ``seed`` (deterministic)."""
        raise NotImplementedError

    def _cached(self, seed):
        if seed not in self._cases:
            self._cases[seed] = self.case(seed)
        return self._cases[seed]

    def cases(self, n=50, seed=0):
        """Cases for seeds ``seed .. seed + n - 1`` (built once, then kept)."""
        return [self._cached(s) for s in range(seed, seed + n)]

    def reference(self, case):
        """The model's answer for ``case`` (read from the machine when the case was built)."""
        return case.expected

    # ----------------------------------------------------------- checking

    def normalize(self, value):
        """The learner's result as a tuple matching :attr:`outputs`, or :class:`BadReturn`."""
        single = len(self.outputs) == 1
        parts = (value,) if single else value
        if not single and (not isinstance(value, (tuple, list)) or len(value) != len(self.outputs)):
            raise BadReturn(f"{_type(value)}; it should return {len(self.outputs)} values: "
                            + ", ".join(o.name for o in self.outputs))
        out = []
        for o, part in zip(self.outputs, parts):
            got = _type(part) if single else f"{_type(part)} as {o.name}"
            if o.kind == "bool":
                if not isinstance(part, (bool, np.bool_)):
                    raise BadReturn(f"{got}; that should be True or False")
                out.append(bool(part))
            elif o.kind == "int":
                if isinstance(part, (bool, np.bool_)) or not isinstance(part, (int, np.integer)):
                    raise BadReturn(f"{got}; that should be a whole number")
                out.append(int(part))
            else:
                try:
                    a = np.asarray(part)
                except (TypeError, ValueError):
                    a = np.asarray([])
                if a.dtype.kind not in "iub" or a.shape != (o.kind,):
                    raise BadReturn(f"{got}; that should be an array of {o.kind} whole numbers")
                out.append(a.astype(np.int64))
        return tuple(out)

    @staticmethod
    def _same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(a, b))

    def _run(self, fn, case):
        """``("ok", result) | ("unwritten", why) | ("raised", text) | ("bad", text)`` for one case."""
        args = tuple(np.array(a) if isinstance(a, np.ndarray) else
                     [np.array(x) for x in a] if isinstance(a, list) else a for a in case.args)
        try:
            # A numpy warning (division by zero, overflow) becomes an error reported like one.
            with warnings.catch_warnings(), np.errstate(all="raise"):
                warnings.simplefilter("error")
                value = fn(*args)
        except NotImplementedError:
            return "unwritten", "raises NotImplementedError"
        except Exception as exc:  # the learner's bug is reported, never raised
            return "raised", last_line(exc)
        if any(value is u for u in _UNIMPLEMENTED):
            return "unwritten", ("returns None (is a return statement missing?)" if value is None
                            else f"still returns {value!r}")
        try:
            return "ok", self.normalize(value)
        except BadReturn as exc:
            return "bad", str(exc)

    def check(self, fn, n=50, seed=0):
        """Run ``fn`` on ``n`` seeded cases and compare with the model; return a :class:`Report`."""
        if not callable(fn):
            return Report(self, "error", [f"ex.check() takes your function itself, e.g. "
                                          f"ex.check({self.function.__name__}); got {_type(fn)}."])
        if n < 1:
            raise BadArgument(f"check {n} cases? give n >= 1")
        fname = getattr(fn, "__name__", "your function")
        cases, answers = [], []
        # Cases are built as they are needed, so an untouched skeleton is answered at once.
        for s in range(seed, seed + n):
            case = self._cached(s)
            cases.append(case)
            status, result = self._run(fn, case)
            if status == "unwritten":
                return Report(self, "unwritten", [
                    f"{self.name}: not done yet -- {fname}() {result}.",
                    "Write its body, run that cell, then run this check again.",
                    "Stuck? ex.hint() gives a hint; print(ex.solution()) shows an answer."])
            if status in ("raised", "bad"):
                what = "raised" if status == "raised" else "returned"
                return Report(self, "error", [wrap(f"{self.name}: {fname}() {what} {result}", "  ")]
                              + self._explain(case) + ["Fix it, run that cell, then run this check again."])
            answers.append(result)
        wrong = [i for i, (c, a) in enumerate(zip(cases, answers)) if not self._same(c.expected, a)]
        if not wrong:
            return Report(self, "pass", [
                f"{self.name}: all {n} cases agree with the model (seeds {seed}-{seed + n - 1}).",
                "Compare your code with print(ex.solution()) if you like."])
        first = cases[wrong[0]]
        lines = [f"{self.name}: {len(wrong)} of {n} cases differ from the model. The first one:"]
        lines += self._explain(first)
        lines += self._show("the model", first.expected, first.note)
        lines += self._show("yours", answers[wrong[0]])
        lines += self._differences(first.expected, answers[wrong[0]])
        diagnosis = self._diagnose(cases, answers, wrong[0])
        if diagnosis:
            lines.append(wrap("DIAGNOSIS: " + diagnosis, "  "))
        lines.append("Change your function, run its cell, then run this check again (ex.hint() helps).")
        return Report(self, "fail", lines, diagnosis=diagnosis)

    def _explain(self, case):
        lines = [wrap(f"  case seed {case.seed}, level {self.level}: " + "; ".join(case.steps), "    ")]
        for name, value in zip(self.arg_names, case.args):
            if isinstance(value, list):
                lines.append(f"  {name} = a list of {len(value)} arrays:")
                lines += [wrap(f"    [{i}] {summarize(v)}", "      ") for i, v in enumerate(value)]
            else:
                lines.append(wrap(f"  {name} = {summarize(value)}", "    "))
        return lines

    def _show(self, who, result, note=""):
        note = f" ({note})" if note else ""
        if len(self.outputs) == 1:
            return [wrap(f"  {who + ':':<10} {summarize(result[0])}{note}", "    ")]
        return [f"  {who}{note}:"] + [wrap(f"    {o.name} = {summarize(r)}", "      ")
                                      for o, r in zip(self.outputs, result)]

    def _differences(self, expected, got):
        """One line per wrong component of a multi-part result: where it first differs."""
        if len(self.outputs) == 1:
            return []
        lines = []
        for o, e, g in zip(self.outputs, expected, got):
            if np.array_equal(e, g):
                continue
            if np.ndim(e) == 0:
                lines.append(f"  {o.name} differs: the model {e}, yours {g}")
            else:
                bad = np.flatnonzero(e != g)
                lines.append(f"  {o.name} differs at {len(bad)} of {len(e)} indices; first [{bad[0]}]: "
                             f"the model {e[bad[0]]}, yours {g[bad[0]]}")
        return lines

    def _diagnose(self, cases, answers, first):
        """The meaning of the first known mistake that gives the learner's answers.

        Best: a mistake that agrees with every answer; else one that agrees on
        the first differing case.
        """
        fallback = None
        for wrong_fn, meaning in self.mistakes:
            theirs = [self._run(wrong_fn, c) for c in cases]
            if all(s == "ok" and self._same(r, a) for (s, r), a in zip(theirs, answers)):
                return meaning
            status, result = theirs[first]
            if fallback is None and status == "ok" and self._same(result, answers[first]):
                fallback = meaning
        return fallback

    # ----------------------------------------------------------- help

    def hint(self, k=None):
        """Hint ``k`` (1-based), or the next one not yet shown."""
        if k is None:
            k = self._next_hint + 1
        if not 1 <= k <= len(self.hints):
            return Text(f"There are {len(self.hints)} hints; print(ex.solution()) shows an answer.")
        self._next_hint = max(self._next_hint, k)
        more = " (ex.hint() again for the next)" if k < len(self.hints) else ""
        return Text(wrap(f"Hint {k} of {len(self.hints)}{more}: {self.hints[k - 1]}", "  "))

    def solution(self):
        """The source of a correct function (print it to read it)."""
        source = inspect.getsource(self.function)
        return ("import numpy as np\n\n\n" + source) if "np." in source else source


def _type(value):
    if isinstance(value, np.ndarray):
        return f"a numpy array of shape {value.shape}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


@dataclass
class Report:
    """What :meth:`Exercise.check` found: ``status`` is ``unwritten``, ``pass``, ``fail`` or ``error``."""

    exercise: Exercise
    status: str
    lines: list = field(default_factory=list)
    diagnosis: str = None

    @property
    def passed(self):
        return self.status == "pass"

    def __str__(self):
        return "\n".join(self.lines)

    __repr__ = __str__

    def _repr_html_(self):
        color = {"pass": "#2e7d32", "fail": "#c62828", "error": "#c62828"}.get(self.status, "#757575")
        # The verdict line and the diagnosis in bold; the rest as the text twin shows it.
        lines = [f"<b>{html.escape(line)}</b>" if i == 0 or line.startswith("DIAGNOSIS") else html.escape(line)
                 for i, line in enumerate(str(self).splitlines())]
        return (f'<pre style="border-left: 4px solid {color}; padding-left: 8px; '
                f'white-space: pre-wrap">' + "\n".join(lines) + "</pre>")
