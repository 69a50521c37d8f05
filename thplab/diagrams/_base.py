"""What every diagram shares: the :class:`Diagram` wrapper, the palette, fonts, defs and run detection.

A diagram is drawn with drawsvg on a white background, carries a ``<title>``
and a ``<desc>`` (its text twin), and never says anything with colour alone:
every coloured thing also has a label, a hatch, a marker or a dash style.
Element ids are made from a hash of the drawing itself, so the same state
gives the same bytes and two different diagrams on one page never share ids.
"""

import collections
import functools
import hashlib
import io
import itertools
import re
import html

import drawsvg as dw
import numpy as np

from ..viz import OKABE_ITO

#: Okabe-Ito by role (the names say what a colour *means*, never the only cue).
ORANGE, SKY, GREEN, YELLOW, BLUE, VERMILION, PURPLE, BLACK = OKABE_ITO
GREY = "#767676"      # 4.5:1 on white: readable text
PALE = "#F2F2F2"

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
#: Text sizes in px (never below 11 for labels; the smallest note is 11 too).
TITLE_SIZE, LABEL_SIZE, SMALL_SIZE = 15, 12, 11
#: Widest a diagram may be to fit the notebook column at 1280 px with JupyterLab's file browser
#: open (830-900 px of content) at 100 % zoom.
COLUMN_WIDTH = 860

#: Advance widths of DejaVu Sans (the first font of :data:`FONT`), in hundredths of an em, for
#: ASCII 32..126; the bold face is about 10 % wider.  Verdana and Arial are no wider, so a line
#: measured with these fits in every font the diagrams name.
_ADVANCE = (32, 40, 46, 84, 64, 95, 78, 27, 39, 39, 50, 84, 32, 36, 32, 34, 64, 64, 64, 64, 64, 64, 64, 64,
            64, 64, 34, 34, 84, 84, 84, 53, 100, 68, 69, 70, 77, 63, 58, 77, 75, 29, 29, 66, 56, 86, 75, 79,
            60, 79, 69, 63, 61, 73, 68, 99, 69, 61, 69, 39, 34, 39, 84, 50, 50, 61, 63, 55, 63, 62, 35, 63,
            63, 28, 28, 58, 28, 97, 63, 61, 63, 63, 41, 52, 39, 63, 59, 82, 59, 59, 52, 64, 34, 64, 84)

#: Stand-in for the id prefix, replaced by a hash of the finished SVG.
_ID = "IDPFX"


#: The root element's ``width`` attribute (in px) of an SVG document.
_WIDTH = re.compile(r'<svg\b[^>]*?\swidth="([0-9.]+)(?:px)?"')


def ref(name):
    """``url(#...)`` of a def made by :class:`Canvas` (hatches, markers)."""
    return f"url(#{_ID}-{name})"


class Diagram:
    """An SVG drawing with its text twin; displays itself in Jupyter.

    ``.svg`` is the SVG document (str), ``.text`` the text twin, ``.title``
    its title.  ``_repr_mimebundle_`` offers ``image/svg+xml`` and
    ``text/plain`` (the twin), so a screen reader or a terminal gets words.
    """

    def __init__(self, drawing, text, title, kind="diagram"):
        self.drawing = drawing
        self.text = text
        self.title = title
        self.kind = kind
        self._svg = None

    @property
    def svg(self):
        if self._svg is None:
            raw = _svg_document(self.drawing)
            digest = hashlib.sha1(raw.encode()).hexdigest()[:10]
            self._svg = raw.replace(_ID, f"thp{digest}")
        return self._svg

    @property
    def id(self):
        """The prefix of every id in the SVG (``thp`` and a hash of the drawing), or None."""
        match = re.search(r'\sid="(thp[0-9a-f]+)-', self.svg)
        return match[1] if match else None

    @classmethod
    def from_svg(cls, svg, text, title, kind="chart"):
        """A Diagram around a finished SVG document (e.g. a matplotlib figure's)."""
        d = cls(None, text, title, kind)
        d._svg = svg
        return d

    def _repr_svg_(self):
        return self.svg

    @property
    def html(self):
        """The SVG inline, scaled down to fit a narrow column but never below 82 % of its size.

        JupyterLab shows an ``image/svg+xml`` output as an ``<img>`` at its own
        width, so a diagram wider than the notebook column is cut off; inline,
        it can shrink.  82 % keeps 11 px labels at 9 px or more; past that the
        box scrolls sideways instead.
        """
        match = _WIDTH.search(self.svg)
        width = int(float(match[1])) if match else 0
        style = (f' style="max-width:100%;height:auto;min-width:{int(width * 0.82)}px"'
                 if width else ' style="max-width:100%;height:auto"')
        return ('<div class="thplab-diagram" style="overflow-x:auto;max-width:100%">'
                + self.svg.replace("<svg ", "<svg" + style + " ", 1) + "</div>")

    def _repr_html_(self):
        return self.html

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self.html, "image/svg+xml": self.svg, "text/plain": self.text}

    def __repr__(self):
        return f"<Diagram {self.kind}: {self.title}>"

    def save(self, path):
        """Write the SVG to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.svg)


def _svg_document(drawing):
    """``drawing.as_svg(header="")``, written in one pass instead of three.

    drawsvg's ``as_svg`` walks every element once for linked defs and once
    more to name elements used twice before it writes them; a course diagram
    has neither (its patterns and markers are in ``other_defs`` with explicit
    ids, and attributes name them as ``url(#...)`` strings), and the two walks
    were half of an explorer Step's serialisation.  tests/test_diagrams.py
    checks that every diagram it draws comes out identical to ``as_svg``.
    """
    from drawsvg import types
    from drawsvg.drawing import SVG_END, SVG_START

    context = drawing.context
    out = io.StringIO()
    width, height = drawing.calc_render_size()
    args = dict(width=width, height=height, viewBox=" ".join(map(str, drawing.view_box)))
    args.update(drawing.svg_args)
    out.write(SVG_START)
    context.write_svg_document_args(drawing, args, out)
    out.write(">\n<defs>\n")
    counter = itertools.count()
    id_map = collections.defaultdict(lambda: f"{drawing.id_prefix}{next(counter)}")
    seen = set()

    def is_duplicate(element):
        dup = id(element) in seen
        seen.add(id(element))
        return dup

    for group, end in ((drawing.other_defs, "</defs>\n"), (drawing.all_elements(context=context), SVG_END)):
        for element in group:
            element.write_svg_element(id_map, is_duplicate, out, types.LocalContext(context, element, drawing, group),
                                      False)
            out.write("\n")
        out.write(end)
    return out.getvalue()


class _Desc(dw.elements._TextContainingElement):
    TAG_NAME = "desc"


class Canvas:
    """A drawsvg Drawing with the course's conventions: size, background, title, desc, defs."""

    def __init__(self, width, height, title, text):
        self.width, self.height = int(width), int(height)
        self.d = dw.Drawing(self.width, self.height, id_prefix=f"{_ID}-a", role="img",
                            aria_labelledby=f"{_ID}-title {_ID}-desc", font_family=FONT)
        self.d.view_box = (0, 0, self.width, self.height)
        self.d.append(dw.elements.Title(title, id=f"{_ID}-title"))
        self.d.append(_Desc(text, id=f"{_ID}-desc"))
        self.bg = dw.Rectangle(0, 0, self.width, self.height, fill="white", class_="background")
        self.d.append(self.bg)
        self._defs = set()
        self.title, self.twin = title, text

    def resize(self, height):
        """Set the final height (drawings are laid out top-down, then cut to size)."""
        self.height = int(height)
        self.d.height = self.height
        self.d.view_box = (0, 0, self.width, self.height)
        self.bg.args["height"] = self.height

    # ------------------------------------------------------------- defs
    def hatch(self, name, colour, kind="diag", bg="white"):
        """A hatch pattern usable as ``fill=ref(name)``; kinds: diag, cross, dots, horiz."""
        if name in self._defs:
            return ref(name)
        p = dw.Pattern(8, 8, id=f"{_ID}-{name}")
        p.append(dw.Rectangle(0, 0, 8, 8, fill=bg))
        if kind == "diag":
            p.append(dw.Line(0, 8, 8, 0, stroke=colour, stroke_width=1.6))
            p.append(dw.Line(-2, 2, 2, -2, stroke=colour, stroke_width=1.6))
            p.append(dw.Line(6, 10, 10, 6, stroke=colour, stroke_width=1.6))
        elif kind == "cross":
            p.append(dw.Line(0, 8, 8, 0, stroke=colour, stroke_width=1.2))
            p.append(dw.Line(0, 0, 8, 8, stroke=colour, stroke_width=1.2))
        elif kind == "dots":
            p.append(dw.Circle(4, 4, 1.6, fill=colour))
        elif kind == "horiz":
            p.append(dw.Line(0, 4, 8, 4, stroke=colour, stroke_width=1.6))
        self.d.append_def(p)
        self._defs.add(name)
        return ref(name)

    def arrowhead(self, name="arrow", colour=BLACK):
        """An arrowhead marker for ``marker_end=ref(name)``."""
        if name in self._defs:
            return ref(name)
        m = dw.Marker(-1, -0.6, 0.4, 0.6, scale=7, orient="auto", id=f"{_ID}-{name}")
        m.append(dw.Lines(-1, -0.6, 0.4, 0, -1, 0.6, close=True, fill=colour))
        self.d.append_def(m)
        self._defs.add(name)
        return ref(name)

    # ------------------------------------------------------------- drawing
    def add(self, element):
        self.d.append(element)
        return element

    def text(self, s, x, y, size=LABEL_SIZE, anchor="start", weight=None, mono=False, fill=BLACK, **kw):
        t = dw.Text(str(s), size, x, y, text_anchor=anchor, fill=fill,
                    font_family=MONO if mono else None, font_weight=weight, **kw)
        return self.add(t)

    def heading(self, s, x=12, y=22):
        return self.text(s, x, y, size=TITLE_SIZE, weight="bold", class_="heading")

    def box(self, x, y, w, h, fill="white", stroke=BLACK, tip=None, **kw):
        r = dw.Rectangle(x, y, w, h, fill=fill, stroke=stroke, **kw)
        if tip:
            r.append_title(tip)
        return self.add(r)

    def arrow(self, x1, y1, x2, y2, colour=BLACK, kind="arrow", dash=None, width=1.6, tip=None, **kw):
        """A straight arrow; ``kind`` goes into ``data-arrow`` so tests (and readers of the SVG) can count them."""
        line = dw.Line(x1, y1, x2, y2, stroke=colour, stroke_width=width,
                       marker_end=self.arrowhead("arrow-" + colour.lstrip("#"), colour),
                       stroke_dasharray=dash, class_="arrow", data_arrow=kind, **kw)
        if tip:
            line.append_title(tip)
        return self.add(line)

    def finish(self, kind):
        return Diagram(self.d, self.twin, self.title, kind)


def text_width(s, size, bold=False):
    """Estimated width in px of ``s`` set in :data:`FONT` at ``size`` px (non-ASCII: 1 em)."""
    return _ems(str(s)) * size * (1.1 if bold else 1.0)


@functools.lru_cache(maxsize=8192)
def _ems(s):
    # Cached: wrap() measures every growing prefix of a label, and every redraw the same labels.
    return sum(_ADVANCE[o - 32] if 32 <= o < 127 else 100 for o in map(ord, s)) / 100


def wrap(s, width, size, bold=False, max_lines=None):
    """Break ``s`` into lines no wider than ``width`` px (see :func:`text_width`).

    Lines break at spaces, each line but the last keeping its space, so the
    lines joined give ``s`` back (and so does the ``<text>`` of their tspans).
    A word longer than a line is cut after an ``_``, ``(`` or ``,`` where it can
    be, else anywhere.  With ``max_lines``, the last line kept ends in "…"
    (the caller puts the whole text in a ``<title>``).
    """
    s = " ".join(str(s).split())
    lines, line = [], ""
    for word in s.split(" "):
        cand = f"{line} {word}" if line else word
        if text_width(cand, size, bold) <= width:
            line = cand
            continue
        if line:
            lines.append(line + " ")
        while text_width(word, size, bold) > width:
            cut = _cut(word, width, size, bold)
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    lines.append(line)
    if max_lines and len(lines) > max_lines:
        last = lines[max_lines - 1].rstrip()
        while last and text_width(last + "…", size, bold) > width:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last + "…"]
    return lines


def _cut(word, width, size, bold):
    """Where to cut a word wider than ``width``: after the last ``_ ( ,`` that fits, else the last char."""
    fit = max(i for i in range(1, len(word) + 1) if text_width(word[:i], size, bold) <= width or i == 1)
    soft = [i + 1 for i in range(fit - 1) if word[i] in "_(,"]
    return soft[-1] if soft and soft[-1] > fit // 2 else fit


def runs(values):
    """Runs of equal rows: ``[(start, stop)]`` over the first axis of ``values`` (vectorized).

    ``values`` is ``(n,)`` or ``(n, k)``; a run ends where any column changes.
    """
    v = np.asarray(values)
    if v.ndim == 1:
        v = v[:, None]
    if not len(v):
        return []
    change = np.flatnonzero((np.diff(v, axis=0) != 0).any(axis=1)) + 1
    edges = np.concatenate([[0], change, [len(v)]])
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def span(start, stop):
    """``"5"`` or ``"8-11"`` for subpages ``[start, stop)``."""
    return f"{start}" if stop - start == 1 else f"{start}-{stop - 1}"


def esc(s):
    return html.escape(str(s), quote=False)
