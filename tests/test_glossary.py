"""notebooks/glossary.md: one anchored heading per term, and every lesson link to a term resolves.

The anchor scheme works in JupyterLab and in a MyST/Sphinx site alike: a raw ``<a id="term-..."></a>``
line right before each ``### Term`` heading, linked from lessons as ``glossary.md#term-...``.
"""

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
GLOSSARY = NOTEBOOKS / "glossary.md"
ANCHOR = re.compile(r'<a id="(term-[a-z0-9-]+)"></a>')

#: Terms the lessons rely on (ids without the ``term-`` prefix).
REQUIRED = """vma cow lru pfn struct-page compound-page head-page tail-page thp pmd huge-pmd rss gup foll-flags
follow-page pin count mapcount compound-lock page-splitting split-huge-page split-huge-pmd ipi gup-fast
deposited-page-table stub identity anon-vma pageanon futex vmstat folio deferred-split migration-entry doublemap
compound-mapcount freeze prot-none lru-pagevec swap-cache move-pages khugepaged mthp pageanonexclusive""".split()


def _terms():
    """``[(anchor id, heading)]`` in file order; fails on a heading without its anchor."""
    lines = GLOSSARY.read_text(encoding="utf-8").splitlines()
    terms = []
    for i, line in enumerate(lines):
        if line.startswith("### "):
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            m = ANCHOR.fullmatch(lines[j].strip()) if j >= 0 else None
            assert m, f"glossary heading {line!r} is not preceded by an <a id=\"term-...\"></a> line"
            terms.append((m.group(1), line[4:]))
    return terms


def _lesson_sources():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            src = cell["source"]
            yield path.name, "".join(src) if isinstance(src, list) else src


def test_glossary_has_35_anchored_terms_with_unique_ids():
    terms = _terms()
    ids = [t for t, _ in terms]
    assert len(terms) >= 35
    assert len(ids) == len(set(ids))
    assert len(ANCHOR.findall(GLOSSARY.read_text(encoding="utf-8"))) == len(ids)  # no stray anchors
    missing = [t for t in REQUIRED if f"term-{t}" not in ids]
    assert not missing, missing


def test_every_glossary_link_in_the_lessons_resolves():
    ids = {t for t, _ in _terms()}
    links = [(name, frag) for name, src in _lesson_sources()
             for frag in re.findall(r"glossary\.md#([^)\s]+)", src)]
    assert len(links) >= 100
    bad = [(name, frag) for name, frag in links if frag not in ids]
    assert not bad, bad
    linked = {name for name, _ in links}
    assert linked == {p.name for p in NOTEBOOKS.glob("*.ipynb")}, "every lesson links to the glossary"


def test_glossary_links_resolve_inside_and_to_lessons():
    text = GLOSSARY.read_text(encoding="utf-8")
    ids = {t for t, _ in _terms()}
    for frag in re.findall(r"\]\(#([^)]+)\)", text):
        assert frag in ids, frag
    for target in re.findall(r"\]\((\d\d-[^)#]+\.ipynb)\)", text):
        assert (NOTEBOOKS / target).exists(), target
    for url in re.findall(r"\((https://elixir\.bootlin\.com/[^)]+)\)", text):
        assert re.match(r"https://elixir\.bootlin\.com/linux/v\d+\.\d+(\.\d+)?/source/", url), url
