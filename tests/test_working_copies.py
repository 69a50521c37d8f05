"""Learners work on git-ignored copies of the lessons (etc/working_copies.py, used by make lab and postBuild)."""

import importlib.util
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("working_copies", REPO / "etc" / "working_copies.py")
wc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wc)


def tracked(tmp_path):
    t = tmp_path / "notebooks"
    t.mkdir()
    for name in ("00-index.ipynb", "03-patch-01.ipynb", "glossary.md"):
        (t / name).write_text(f"tracked {name}\n")
    return t


def test_copies_are_made_once_and_kept(tmp_path):
    t, c = tracked(tmp_path), tmp_path / "lessons"
    assert wc.sync(t, c) == []
    assert sorted(p.name for p in c.iterdir()) == [".origin.json", "00-index.ipynb", "03-patch-01.ipynb",
                                                   "glossary.md"]
    (c / "03-patch-01.ipynb").write_text("my outputs and edits\n")
    assert wc.sync(t, c) == []                                # an edited copy is not stale
    assert (c / "03-patch-01.ipynb").read_text() == "my outputs and edits\n"
    assert (t / "03-patch-01.ipynb").read_text() == "tracked 03-patch-01.ipynb\n"


def test_a_newer_tracked_lesson_is_reported_and_reset_takes_it(tmp_path):
    t, c = tracked(tmp_path), tmp_path / "lessons"
    wc.sync(t, c)
    (c / "03-patch-01.ipynb").write_text("my edits\n")
    (t / "03-patch-01.ipynb").write_text("the lesson after git pull\n")
    assert wc.sync(t, c) == ["03-patch-01.ipynb"]
    assert (c / "03-patch-01.ipynb").read_text() == "my edits\n"  # never replaced behind your back
    assert wc.reset(["03"], t, c) == ["03-patch-01.ipynb"]
    assert (c / "03-patch-01.ipynb").read_text() == "the lesson after git pull\n"
    assert wc.sync(t, c) == []
    assert wc.reset([], t, c) == ["00-index.ipynb", "03-patch-01.ipynb", "glossary.md"]


def test_the_working_copies_are_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "-q", "lessons/00-index.ipynb"], cwd=REPO)
    assert out.returncode == 0, "lessons/ must be git-ignored"


def test_every_lesson_and_the_glossary_get_a_copy():
    names = [p.name for p in wc.sources()]
    assert "glossary.md" in names and "00-index.ipynb" in names
    assert len([n for n in names if n.endswith(".ipynb")]) == len(list((REPO / "notebooks").glob("*.ipynb")))
