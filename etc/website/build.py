"""Build the course as a static website: ``make site`` -> build/site/index.html.

Sphinx, MyST-NB and the book theme, all installed from PyPI (the ``site`` extra): the build
reads nothing from the network, and the pages load nothing from it. The source tree,
build/site-src/, is made here from notebooks/:

* each lesson with its outputs: the copy ``make test-notebooks`` executed (build/executed/,
  written by the ``nbval_executed`` plugin) when its cells match the tracked lesson's,
  otherwise the lesson is run here;
* a lesson that reads the machine it runs on (it imports ``thplab.live``) is always run here
  with ``THPLAB_LIVE=recorded``: the site shows the run recorded with thplab, labelled as
  recorded, never the build machine's kernel as if it were the reader's;
* a "launch on Binder" link at the top of every lesson, to that lesson's working copy
  (the README's Binder address, with the owner from ``SITE_OWNER``);
* widgets replaced by a note: they need a running kernel; their static twins follow them;
* links that leave notebooks/ (``../README.md#...``) pointed at the repository on GitHub;
* the glossary's HTML anchors made MyST targets, so that Sphinx checks every link to a term.

    python etc/website/build.py [--executed build/executed] [--out build/site]
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LESSONS = REPO / "notebooks"
README = REPO / "README.md"

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: The README's Binder address: the one place it is written down.
BINDER_URL = re.compile(r"https://mybinder\.org/v2/gh/<owner>/(?P<repo>[\w.-]+)/(?P<ref>[\w.-]+)"
                        r"\?urlpath=(?P<urlpath>lab/tree/lessons/)00-index\.ipynb")
#: A GitHub account name (what SITE_OWNER must be).
GITHUB_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?")
NBVAL_MARKER = re.compile(r"^# NBVAL_\w+[ \t]*\n?", re.M)
LEAVING_LINK = re.compile(r"\]\(\.\./([^)\s]+)\)")
#: The glossary's anchors (raw HTML, which JupyterLab follows) and the links to them.
TERM_ANCHOR = re.compile(r'^<a id="(term-[\w-]+)"></a>$', re.M)
TERM_LINK = re.compile(r"\]\(glossary\.md#(term-[\w-]+)\)")
WIDGET_NOTE = (
    '<p class="thplab-widget-note">A widget is here in JupyterLab. It needs a running kernel, so it '
    'is not live on this website: launch the lesson on Binder (link at the top) to use it. Where the '
    'lesson needs what it shows, its static twin follows: a diagram or printed text of the same state.</p>'
)


class SiteError(Exception):
    """Why the site cannot be built, in one message."""


def binder_base(owner: str) -> tuple[str, str]:
    """``(lesson URL prefix, repository URL)`` from the README's Binder address and `owner`."""
    if not GITHUB_OWNER.fullmatch(owner):
        raise SiteError(f"SITE_OWNER={owner!r} is not a GitHub account name (letters, digits, inner dashes)")
    found = BINDER_URL.search(README.read_text())
    if found is None:
        raise SiteError(f"{README} has no Binder address of the form {BINDER_URL.pattern}")
    prefix = f"https://mybinder.org/v2/gh/{owner}/{found['repo']}/{found['ref']}?urlpath={found['urlpath']}"
    return prefix, f"https://github.com/{owner}/{found['repo']}"


def _sources(nb) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def _reads_this_machine(nb) -> bool:
    return any(cell.cell_type == "code" and re.search(r"\bfrom thplab import\b.*\blive\b|\bthplab\.live\b",
                                                      cell.source)
               for cell in nb.cells)


def _errors(nb) -> list[str]:
    return [f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.outputs if out.get("output_type") == "error"]


def execute(path: Path, nb, recorded: bool, timeout: int = 600):
    """Run `nb` (read from `path`) in a fresh kernel in notebooks/; raise on an error output."""
    from nbclient import NotebookClient

    env = dict(os.environ, **({"THPLAB_LIVE": "recorded"} if recorded else {}))
    nb = copy.deepcopy(nb)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(LESSONS)}}).execute(env=env)
    if problems := _errors(nb):
        raise SiteError(f"{path.name} raised when run for the site:\n  " + "\n  ".join(problems))
    return nb


def lesson_with_outputs(path: Path, executed: Path) -> tuple[object, str]:
    """The lesson `path` with outputs, and where they came from."""
    tracked = nbformat.read(path, as_version=4)
    if _reads_this_machine(tracked):
        return execute(path, tracked, recorded=True), "run here, THPLAB_LIVE=recorded"
    copy_path = executed / path.name
    if copy_path.exists():
        ran = nbformat.read(copy_path, as_version=4)
        if _sources(ran) == _sources(tracked) and not _errors(ran):
            return ran, f"as run by nbval, from {executed}"
    return execute(path, tracked, recorded=False), "run here"


def site_markdown(text: str, repo_url: str) -> str:
    """Markdown of a lesson or the glossary, with its links as the site needs them."""
    text = LEAVING_LINK.sub(lambda m: f"]({repo_url}/blob/HEAD/{m[1]})", text)
    text = TERM_LINK.sub(r"](#\1)", text)
    return TERM_ANCHOR.sub(r"(\1)=", text)


def for_the_site(nb, launch_url: str, repo_url: str):
    """Add the Binder link, replace widgets by a note, drop nbval's markers, point links that leave
    notebooks/ at GitHub."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = site_markdown(cell.source, repo_url)
        elif cell.cell_type == "code":
            # nbval's markers are for the course's tests, not for a reader
            cell.source = NBVAL_MARKER.sub("", cell.source)
            outputs = []
            for out in cell.outputs:
                if WIDGET_VIEW in out.get("data", {}):
                    out = nbformat.v4.new_output("display_data", data={"text/html": WIDGET_NOTE})
                outputs.append(out)
            cell.outputs = outputs
    launch = nbformat.v4.new_markdown_cell(
        f'<p class="thplab-launch"><a href="{launch_url}">Launch this lesson on Binder</a> '
        "(JupyterLab, live widgets; your own copy of the lesson)</p>")
    nb.cells.insert(0, launch)
    return nb


def make_source(src: Path, executed: Path, owner: str, log=print) -> None:
    """Write the Sphinx source tree `src`: landing page, lessons with outputs, glossary."""
    prefix, repo_url = binder_base(owner)
    lessons = sorted(LESSONS.glob("*.ipynb"))
    if not lessons:
        raise SiteError(f"no lessons in {LESSONS}")
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    shutil.copy(HERE / "index.md", src / "index.md")
    for extra in LESSONS.iterdir():
        if extra.is_file() and extra.suffix == ".md":
            (src / extra.name).write_text(site_markdown(extra.read_text(), repo_url))
    for path in lessons:
        start = time.monotonic()
        nb, origin = lesson_with_outputs(path, executed)
        nbformat.write(for_the_site(nb, prefix + path.name, repo_url), src / path.name)
        log(f"  {path.name}: {origin} ({time.monotonic() - start:.1f} s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--executed", type=Path, default=REPO / "build" / "executed",
                    help="lessons executed by `make test-notebooks` (default: build/executed)")
    ap.add_argument("--src", type=Path, default=REPO / "build" / "site-src", help="Sphinx source tree to write")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "site", help="where the HTML goes")
    ap.add_argument("--owner", default=os.environ.get("SITE_OWNER", "OWNER"),
                    help="GitHub account hosting the repository, for the Binder links (default: $SITE_OWNER)")
    args = ap.parse_args(argv)
    start = time.monotonic()
    if args.owner == "OWNER":
        print("site: Binder links say OWNER: set SITE_OWNER=<GitHub account> for working ones")
    try:
        print(f"site: lessons into {args.src}")
        make_source(args.src, args.executed, args.owner)
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out.exists():
        shutil.rmtree(args.out)
    cmd = [sys.executable, "-m", "sphinx", "-q", "-b", "html", "-c", str(HERE), str(args.src), str(args.out)]
    if subprocess.run(cmd).returncode:
        print("error: sphinx-build failed (see above)", file=sys.stderr)
        return 1
    print(f"site: {args.out / 'index.html'} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
