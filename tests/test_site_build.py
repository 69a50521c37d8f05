"""etc/website/build.py without Sphinx or a kernel: the Binder link, the links it rewrites,
widgets, and when it trusts a lesson executed by nbval (the site in a browser:
tests/browser/test_site.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("site_build", REPO / "etc" / "website" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_binder_link_comes_from_the_readme():
    prefix, repo = build.binder_base("someone")
    assert prefix == "https://mybinder.org/v2/gh/someone/thplab/HEAD?urlpath=lab/tree/lessons/"
    assert repo == "https://github.com/someone/thplab"


@pytest.mark.parametrize("owner", ["", "-dash", "a/b", "x" * 40, "<owner>"])
def test_bad_site_owner_is_a_clear_error(owner):
    with pytest.raises(build.SiteError, match="is not a GitHub account name"):
        build.binder_base(owner)


def test_links_for_the_site():
    text = ('<a id="term-vma"></a>\n\n### VMA\n\nSee [THP](glossary.md#term-thp), [lesson 01](01-thp-primer.ipynb)'
            " and [the README](../README.md#when-widgets-show-as-text).")
    out = build.site_markdown(text, "https://github.com/o/thplab")
    assert out.startswith("(term-vma)=\n\n### VMA")
    assert "[THP](#term-thp)" in out and "[lesson 01](01-thp-primer.ipynb)" in out
    assert "[the README](https://github.com/o/thplab/blob/HEAD/README.md#when-widgets-show-as-text)" in out


def test_widgets_become_a_note_and_the_lesson_gets_its_binder_link():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("w")])
    nb.metadata["widgets"] = {"state": {}}
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={
        build.WIDGET_VIEW: {"model_id": "x"}, "text/plain": "HBox(children=(Button(...),))"})]
    out = build.for_the_site(nb, "https://binder/lessons/01-x.ipynb", "https://github.com/o/thplab")
    assert "widgets" not in out.metadata
    assert '<a href="https://binder/lessons/01-x.ipynb">Launch this lesson on Binder</a>' in out.cells[0].source
    assert out.cells[1].outputs[0]["data"] == {"text/html": build.WIDGET_NOTE}


def test_nbval_markers_are_not_shown_to_readers():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)  # NBVAL_x stays")])
    out = build.for_the_site(nb, "https://binder/lessons/01-x.ipynb", "https://github.com/o/thplab")
    assert out.cells[1].source == "print(1)  # NBVAL_x stays"


def test_an_executed_copy_is_used_only_if_it_is_the_lesson_as_tracked(tmp_path, monkeypatch):
    lesson = REPO / "notebooks" / "01-thp-primer.ipynb"
    ran = nbformat.read(lesson, as_version=4)
    ran.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    nbformat.write(ran, tmp_path / lesson.name)
    monkeypatch.setattr(build, "execute", lambda path, nb, recorded: ("executed", recorded))
    nb, origin = build.lesson_with_outputs(lesson, tmp_path)
    assert origin.startswith("as run by nbval") and nb.cells[1].outputs[0]["text"] == "ran\n"
    ran.cells[0].source += " (edited since)"
    nbformat.write(ran, tmp_path / lesson.name)
    assert build.lesson_with_outputs(lesson, tmp_path) == (("executed", False), "run here")
    # the live lab is always run again, in recorded mode
    live_lab = REPO / "notebooks" / "16-live-kernel-lab.ipynb"
    assert build.lesson_with_outputs(live_lab, tmp_path)[0] == ("executed", True)
