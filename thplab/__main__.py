"""Command line: ``python -m thplab <command>``.

    python -m thplab scenario fork-pin-split --level 0 --level 10
    python -m thplab problem --seed 7            # the question
    python -m thplab problem --seed 7 -c         # ... and its answer (OSTEP's -c)
    python -m thplab race split-vs-gup-fast --level 0
    python -m thplab costs
    python -m thplab live [--recorded]            # the real kernel next to the model
"""

import argparse
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "live":
        from .live import main as live_main

        return live_main(argv[1:])
    from .costs import cost_table
    from .problems import KINDS, Problem
    from .races import RACES
    from .scenarios import SCENARIOS

    ap = argparse.ArgumentParser(prog="python -m thplab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("scenario", help="run a scenario and print its counters")
    sc.add_argument("name", choices=sorted(SCENARIOS))
    sc.add_argument("--level", type=int, action="append", help="series level 0-10 (repeatable)")
    sc.add_argument("--seed", type=int, default=0)
    pr = sub.add_parser("problem", help="a predict-then-reveal problem")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--kind", choices=KINDS)
    pr.add_argument("--level", type=int)
    pr.add_argument("-c", "--compute", action="store_true", help="also print the answer")
    ra = sub.add_parser("race", help="play an interleaving of two CPUs")
    ra.add_argument("name", choices=sorted(RACES))
    ra.add_argument("--level", type=int, action="append")
    sub.add_parser("costs", help="atomic operations of get_page/put_page on a tail, per level")
    sub.add_parser("live", help="the real kernel next to the model (see python -m thplab live --help)")
    args = ap.parse_args(argv)

    if args.command == "scenario":
        for level in args.level or [0, 10]:
            run = SCENARIOS[args.name].start(level, seed=args.seed)
            run.run_all()
            print(run.summary(), end="\n\n")
    elif args.command == "problem":
        p = Problem.generate(args.seed, level=args.level, kind=args.kind)
        print(p.render())
        if args.compute:
            print(f"\nANSWER {p.answer}\n{p.explanation}")
    elif args.command == "race":
        for level in args.level or [0, 10]:
            race = RACES[args.name](level)
            race.play()
            print(race.outcome(), end="\n\n")
    elif args.command == "costs":
        print(cost_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
