"""Seeded predict-then-reveal exercises.

One code path makes the problem and the answer: a problem is a scenario run
on the model, and the question asks for a number the model then reports.
Every problem shows its seed, so ``Problem.generate(seed=7)`` gives the same
problem to everyone.

>>> p = Problem.generate(seed=3)
>>> print(p.render())                                         # doctest: +SKIP
>>> p.check(p.answer)[0]
True
"""

from dataclasses import dataclass, field

import numpy as np

from .errors import BadArgument
from .params import HPAGE_PMD_NR
from .scenarios import Scenario, fault_thp, munmap_subpages, pin_subpage, split_page, split_pmd_in

KINDS = ("page_count", "tail_mapcount", "split_result", "held_pages")


#: Error names a learner may type for a status (``-EBUSY``); the values are x86-64 Linux's.
ERRNO = {"ENOENT": 2, "EAGAIN": 11, "ENOMEM": 12, "EACCES": 13, "EFAULT": 14, "EBUSY": 16, "EINVAL": 22}

#: What :func:`check_number` says to an empty answer: the question stays open, nothing is revealed.
NOT_ANSWERED = ("No answer yet: nothing is revealed until you commit to one.\n"
                "Set guess = <your answer> (a number, hex like 0x200, or -EBUSY) and run the cell again.")


def read_number(guess):
    """A learner's answer as an int: ``12``, ``"0x1f"``, ``"1_000"``, ``"-EBUSY"``; None if unreadable."""
    if isinstance(guess, (int, np.integer)) and not isinstance(guess, bool):
        return int(guess)
    text = str(guess).strip().replace("_", "")
    sign, name = (-1, text[1:]) if text.startswith("-") else (1, text)
    if name.upper() in ERRNO:
        return sign * ERRNO[name.upper()]
    try:
        return int(text, 0) if text.lstrip("-").lower().startswith("0x") else int(text)
    except ValueError:
        return None


def _show(value, as_hex):
    if value < 0 and -value in ERRNO.values():
        name = next(n for n, v in ERRNO.items() if v == -value)
        return f"{value} (-{name})"
    return f"{value:#x}" if as_hex else str(value)


def check_number(guess, answer, explanation, who="the model says", diagnoses=None, hex_answer=False):
    """``(correct, message)`` for a learner's whole-number answer.

    ``guess`` None or blank means "not answered yet": the message says so and
    reveals nothing.  Decimal, hex (``0x1f``) and errno names (``-EBUSY``) are
    read; the answer is echoed in hex when the learner wrote hex or
    ``hex_answer`` is set.  ``diagnoses`` maps a typical wrong answer to what
    it usually means ("you counted the unmapped subpages").
    """
    if guess is None or not str(guess).strip():
        return False, NOT_ANSWERED
    value = read_number(guess)
    if value is None:
        return False, (f"Please answer with a whole number, hex like 0x200, or an error like -EBUSY "
                       f"(you typed {guess!r}).")
    as_hex = hex_answer or str(guess).strip().lower().startswith(("0x", "-0x"))
    if value == answer:
        return True, f"Right: {_show(answer, as_hex)}. {explanation}"
    hint = (diagnoses or {}).get(value)
    return False, (f"Not quite: you said {_show(value, as_hex)}, {who} {_show(answer, as_hex)}. "
                   + (f"{hint} " if hint else "") + explanation)


@dataclass
class Exercise:
    """A predict-then-reveal question whose answer the model computed.

    ``render()`` shows the parameters first (seed, level, then the steps);
    ``check(guess)`` takes a whole number (decimal or hex) and says why.
    :class:`thplab.widgets.Quiz` takes anything with these two methods.
    """

    seed: int
    level: int
    kind: str
    steps: list
    question: str
    answer: int
    explanation: str

    def render(self):
        """The problem as text, parameters first (OSTEP style)."""
        applied = {0: " (old kernel)", 1: " (patch 01 applied)"}.get(self.level,
                                                                     f" (patches 01-{self.level:02d} applied)")
        lines = [f"ARG seed {self.seed}", f"ARG level {self.level}{applied}", "", "Steps:"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        lines += ["", self.question]
        return "\n".join(lines)

    def check(self, guess):
        """``(correct, message)`` for a learner's guess (a whole number; hex like 0x1f is fine)."""
        return check_number(guess, self.answer, self.explanation)


@dataclass
class Problem(Exercise):
    """A question about a generated scenario (:data:`KINDS`), its answer, and the reasoning."""

    args: dict = field(default_factory=dict)

    @classmethod
    def generate(cls, seed=0, level=None, kind=None, levels=(0, 10)):
        """Draw a problem from ``numpy.random.default_rng(seed)``.

        ``level`` and ``kind`` fix those choices; otherwise they are drawn too
        (``level`` from ``levels``).
        """
        rng = np.random.default_rng(seed)
        level = int(rng.choice(levels)) if level is None else int(level)
        kind = str(rng.choice(KINDS)) if kind is None else kind
        if kind not in KINDS:
            raise BadArgument(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        forks = int(rng.integers(0, 3))
        pinned = sorted(set(rng.integers(1, HPAGE_PMD_NR, size=int(rng.integers(0, 3))).tolist()))
        steps = [("fault a THP", fault_thp)] + [("fork()", _fork_from_parent)] * forks
        steps += [(f"pin subpage {i} (gup-fast)", pin_subpage(i)) for i in pinned]
        args = {"forks": forks, "pinned": pinned}
        if kind == "tail_mapcount":
            i = int(rng.integers(1, HPAGE_PMD_NR))
            if forks:
                steps.append(("split the last child's PMD", split_pmd_in("child")))
            args["subpage"] = i
        elif kind == "held_pages":
            first, nr = int(rng.integers(1, 400)), int(rng.integers(1, 64))
            steps.append((f"munmap subpages {first}-{first + nr - 1}", munmap_subpages(first, nr)))
            args.update(first=first, nr=nr)
        elif kind == "split_result":
            steps.append(("split_huge_page()", split_page))
        run = Scenario("problem", "exercise", "", steps).start(level, seed=seed)
        run.run_all()
        answer, why = _answer(run, kind, args)
        question = {
            "page_count": "What is page_count() of the THP's head page now?",
            "tail_mapcount": f"What does page_mapcount() return for subpage {args.get('subpage')} now?",
            "split_result": "What did split_huge_page() return? (0 for success, -16 for -EBUSY)",
            "held_pages": "How many 4 KiB subpages of the THP are still allocated although no "
                          "page table maps them and nobody pins them?",
        }[kind]
        return cls(seed, level, kind, [label for label, _ in steps], question, answer, why, args)


def _fork_from_parent(run):
    run.child = run.machine.fork(run.pid)


def _answer(run, kind, args):
    m = run.machine
    k = m.kernel
    head = run.head
    nr_pins = len(args["pinned"])
    mappers = 1 + args["forks"]
    if kind == "page_count":
        count = int(m.page_count(head))
        if k.caps["tail_pins"]:
            why = (f"Old scheme: head _count = PMD mappings ({mappers}) + pins on tails "
                   f"({nr_pins}), each pin also sitting in its tail's _mapcount.")
        else:
            why = (f"New scheme: head _count = Σ page_mapcount over subpages (a PMD counts once: "
                   f"{mappers}) + pins ({nr_pins}); tails keep _count 0.")
        return count, why
    if kind == "tail_mapcount":
        i = args["subpage"]
        page = head + i
        value = int(m.page_mapcount(page))
        if k.caps["tail_pins"] and m.mem_map["flags"][page] & (1 << 15):
            why = (f"Before patch 04 a tail's _mapcount counts pins on it, not mappings: subpage {i} "
                   f"has {int(m.pins[page])} pin(s).")
        elif k.caps["tail_pins"]:
            why = ("Before patch 04 splitting a PMD splits the whole THP in every process; subpage "
                   f"{i} is now an ordinary page, mapped by {value} PTE(s).")
        else:
            why = (f"From patch 04 a tail's _mapcount counts PTEs mapping it; PMD mappings do not show "
                   f"in tails. Subpage {i} is mapped by {value} PTE(s); pins live only in the head's _count.")
        return value, why
    if kind == "split_result":
        label, result, _ = run.results[-1]
        value = int(result)
        if not k.caps["split_huge_page_works"]:
            why = ("Between patches 04 and 06 split_huge_page() is a stub that always returns -EBUSY: "
                   "tail pins are gone and the new split has not arrived yet.")
        elif value == 0:
            why = ("The old split never fails: pins are handed to the tails they were taken on."
                   if k.caps["tail_pins"] else
                   "No pins: Σ page_mapcount == page_count - 1 (the caller's reference), so it splits.")
        else:
            why = (f"{nr_pins} pin(s): Σ page_mapcount != page_count - 1, so the new split refuses "
                   "with -EBUSY rather than lose track of which subpage is pinned.")
        return value, why
    from .invariants import held_pages

    held = held_pages(m).get(head, 0) if m.mem_map["flags"][head] & (1 << 14) else 0
    if k.caps["pte_mapped_thp"]:
        why = (f"From patch 04 munmap() of part of a THP splits only the PMD. Of the {args['nr']} "
               f"subpages unmapped here, {held} are mapped by no other process and pinned by no one, "
               "yet stay allocated inside the compound page until all of it is freed.")
    else:
        why = ("Before patch 04 a partial munmap() splits the whole THP first, so the unmapped "
               "subpages are ordinary pages and are freed at once.")
    return held, why
