"""Learners' working copies of the lessons, so that running and editing them never touches git.

``make lab`` (and Binder's ``postBuild``) open ``lessons/``, a git-ignored folder holding copies
of ``notebooks/*.ipynb`` and ``notebooks/glossary.md``.  A copy is made when it is missing and
kept afterwards, whatever the learner does to it.  ``lessons/.origin.json`` remembers which
version of the tracked file each copy was made from, so that after a ``git pull`` the learner is
told which lessons changed and how to take the new version::

    python etc/working_copies.py sync              # make missing copies, report stale ones
    python etc/working_copies.py reset 03 glossary # replace these copies with the tracked files
    python etc/working_copies.py reset --all       # replace every copy
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACKED = REPO / "notebooks"
COPIES = REPO / "lessons"
ORIGIN = ".origin.json"


def sources(tracked: Path = TRACKED) -> list[Path]:
    """The files a learner gets a copy of: every lesson and the glossary."""
    return sorted(tracked.glob("*.ipynb")) + [tracked / "glossary.md"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _origin(copies: Path) -> dict:
    try:
        return json.loads((copies / ORIGIN).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_origin(copies: Path, origin: dict) -> None:
    (copies / ORIGIN).write_text(json.dumps(origin, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def sync(tracked: Path = TRACKED, copies: Path = COPIES) -> list[str]:
    """Copy what is missing; return the names of copies older than their tracked file."""
    copies.mkdir(exist_ok=True)
    origin, stale = _origin(copies), []
    for src in sources(tracked):
        dst = copies / src.name
        if not dst.exists():
            shutil.copy2(src, dst)
            origin[src.name] = digest(src)
        elif origin.get(src.name) != digest(src):
            stale.append(src.name)
    _save_origin(copies, origin)
    return stale


def reset(names: list[str], tracked: Path = TRACKED, copies: Path = COPIES) -> list[str]:
    """Replace the copies matching ``names`` (``"03"``, ``"glossary"``, a file name) or all if empty."""
    copies.mkdir(exist_ok=True)
    origin, done = _origin(copies), []
    chosen = [s for s in sources(tracked) if not names or any(s.name.startswith(n) for n in names)]
    if names and not chosen:
        raise SystemExit(f"no lesson matches {' '.join(names)}; names start with 00..15 or 'glossary'")
    for src in chosen:
        shutil.copy2(src, copies / src.name)
        origin[src.name] = digest(src)
        done.append(src.name)
    _save_origin(copies, origin)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="make missing copies, report stale ones")
    r = sub.add_parser("reset", help="replace copies with the tracked lessons (your edits are lost)")
    r.add_argument("names", nargs="*", help="lesson numbers or file names, e.g. 03 glossary")
    r.add_argument("--all", action="store_true", help="every lesson")
    args = parser.parse_args(argv)
    if args.command == "sync":
        stale = sync()
        print(f"lessons/: your working copies ({len(sources())} files; git ignores them)")
        if stale:
            print("These lessons changed since your copy was made (e.g. after git pull):")
            for name in stale:
                print(f"  {name}")
            print("Keep your copy, or take the new version (your edits in it are lost):")
            print(f"  make reset LESSONS=\"{' '.join(n[:2] if n[0].isdigit() else n[:-3] for n in stale)}\"")
        return 0
    if not args.names and not args.all:
        parser.error("say which lessons to reset (e.g. 03), or --all")
    for name in reset([] if args.all else args.names):
        print(f"lessons/{name}: replaced with the tracked version")
    return 0


if __name__ == "__main__":
    sys.exit(main())
