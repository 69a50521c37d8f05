"""Command line: ``python -m thplab <command>``.

    python -m thplab scenario fork-pin-split --level 0 --level 10
    python -m thplab scenario fork-pin-split --kernel v3.16 --kernel rfc-v1   # the same
    python -m thplab scenario fork-pin-split --kernel v4.5     # the design as merged
    python -m thplab problem --seed 7            # the question
    python -m thplab problem --seed 7 -c         # ... and its answer (OSTEP's -c)
    python -m thplab race split-vs-gup-fast --level 0
    python -m thplab costs
    python -m thplab patch 4 [--diff]             # a patch's card and the functions it changes
    python -m thplab patch 5 --kernel v4.5 --diff # a step of the merged series
    python -m thplab live [--recorded]            # the real kernel next to the model
    python -m thplab simplifications              # every place the model knowingly differs
"""

import argparse
import sys

from .errors import BadArgument, ThplabError


def _seed(text):
    """argparse type: a seed for numpy's ``default_rng``, an integer >= 0."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: not an integer") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"invalid seed {seed}: must be >= 0")
    return seed


def _level(text):
    """argparse type: a series level, 0 (the old kernel) to 10 (all patches)."""
    from .series import PATCHES

    try:
        level = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid level {text!r}: not an integer") from None
    if not 0 <= level <= len(PATCHES):
        raise argparse.ArgumentTypeError(f"invalid level {level}: the series levels are "
                                         f"0..{len(PATCHES)}")
    return level


def _kernel(text):
    """argparse type: a kernel by name (``v3.16``, ``rfc-v1``, ``v4.5``): its RFC level, or
    ``(stack, step)`` for a kernel of another stack."""
    from .series import KERNELS, kernel_level

    if text not in KERNELS:
        raise argparse.ArgumentTypeError(f"invalid kernel {text!r}: the kernels are "
                                         f"{', '.join(KERNELS)}")
    stack, level = kernel_level(text)
    return level if stack == "rfc-v1" else (stack, level)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "live":
        from .live import main as live_main

        return live_main(argv[1:])
    from .problems import KINDS
    from .races import RACES
    from .scenarios import SCENARIOS

    ap = argparse.ArgumentParser(prog="python -m thplab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("scenario", help="run a scenario and print its counters")
    sc.add_argument("name", choices=sorted(SCENARIOS))
    sc.add_argument("--level", type=_level, action="append", help="series level 0-10 (repeatable)")
    sc.add_argument("--kernel", type=_kernel, action="append", dest="level", metavar="NAME",
                    help="a kernel by name: v3.16 (level 0), rfc-v1 (level 10) or v4.5 (repeatable)")
    sc.add_argument("--seed", type=_seed, default=0)
    pr = sub.add_parser("problem", help="a predict-then-reveal problem")
    pr.add_argument("--seed", type=_seed, default=0)
    pr.add_argument("--kind", choices=KINDS)
    pr.add_argument("--level", type=_level)
    pr.add_argument("-c", "--compute", action="store_true", help="also print the answer")
    ra = sub.add_parser("race", help="play an interleaving of two CPUs")
    ra.add_argument("name", choices=sorted(RACES))
    ra.add_argument("--level", type=_level, action="append", help="series level 0-10 (repeatable)")
    ra.add_argument("--kernel", type=_kernel, action="append", dest="level", metavar="NAME",
                    help="a kernel by name: v3.16 (level 0) or rfc-v1 (level 10) (repeatable)")
    sub.add_parser("costs", help="atomic operations of get_page/put_page on a tail, per level")
    pa = sub.add_parser("patch", help="a patch of the series: its card and the kernel functions it changes")
    pa.add_argument("number", type=int, choices=range(1, 11), metavar="N",
                    help="patch number 1-10 (with --kernel v4.5: step 1-7)")
    pa.add_argument("--diff", action="store_true", help="also print the model's diff of each function")
    pa.add_argument("--kernel", choices=("rfc-v1", "v4.5"), default="rfc-v1",
                    help="rfc-v1 (the RFC's patches, default) or v4.5 (the merged series' seven steps)")
    sub.add_parser("live", help="the real kernel next to the model (see python -m thplab live --help)")
    sub.add_parser("simplifications", help="list every SIMPLIFICATION marked in the model's source")
    args = ap.parse_args(argv)
    try:
        _run(args)
    except ThplabError as e:
        # A request the model refuses that argparse could not see: one line, argparse's status.
        ap.exit(2, f"thplab: error: {e}\n")
    return 0


def _run(args):
    """Carry out the parsed command."""
    from .costs import cost_table
    from .problems import Problem
    from .races import RACES
    from .scenarios import SCENARIOS

    if args.command == "scenario":
        for level in args.level or [0, 10]:
            stack, level = level if isinstance(level, tuple) else (None, level)
            run = SCENARIOS[args.name].start(level, seed=args.seed, kernel=stack)
            run.run_all()
            print(run.summary(), end="\n\n")
    elif args.command == "problem":
        p = Problem.generate(args.seed, level=args.level, kind=args.kind)
        print(p.render())
        if args.compute:
            print(f"\nANSWER {p.answer}\n{p.explanation}")
    elif args.command == "race":
        for level in args.level or [0, 10]:
            if isinstance(level, tuple):
                raise BadArgument(f"the races are interleavings of the RFC's code: give a level "
                                  f"0-10, or --kernel v3.16 / rfc-v1, not {level[0]}")
            race = RACES[args.name](level)
            race.play()
            print(race.outcome(), end="\n\n")
    elif args.command == "costs":
        print(cost_table())
    elif args.command == "patch":
        from .series import STACKS
        from .series.text import patch_text

        if args.number > len(STACKS[args.kernel]):
            raise BadArgument(f"{args.kernel} has steps 1-{len(STACKS[args.kernel])}, not {args.number}")
        print(patch_text(args.number, diff=args.diff, stack=args.kernel))
    elif args.command == "simplifications":
        for where, text in simplifications():
            print(f"{where}\n    {text}\n")


def simplifications():
    """``(file:line, text)`` of every ``SIMPLIFICATION:`` note in the package, in file order.

    A note is a comment (it goes on while the following lines are comments)
    or a docstring paragraph (it goes on to the next blank line).
    """
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent
    marker = "SIMPLIFICATION" + ":"
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if marker not in line:
                continue
            comment = line.split(marker)[0].strip().startswith("#")
            text = [line.split(marker, 1)[1]]
            for more in lines[i + 1:]:
                more = more.strip()
                if marker in more or (comment and not more.startswith("#")) or (not comment and not more):
                    break
                text.append(more.lstrip("#:").replace('"""', ""))
                if not comment and more.endswith('"""'):
                    break
            note = re.sub(r"\s+", " ", " ".join(text)).strip()
            found.append((f"thplab/{path.relative_to(root)}:{i + 1}", note))
    return found


if __name__ == "__main__":
    sys.exit(main())
