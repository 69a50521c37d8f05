"""Patches as text: the card wrapped to 100 columns, the kernel functions a patch changes, and
the model's diff of each with decorators and docstrings left out.

The text twin of :class:`thplab.widgets.PatchDiff` and what ``python -m thplab patch N --diff``
prints; standard library only, so the CLI needs no ipywidgets.
"""

import ast
import difflib
import inspect
import re
import textwrap

from . import STACKS, Kernel, changed_functions, patch_card

#: Functions the series registers with ``@replaces`` that are thplab's own, not the kernel's:
#: ``split_pmd`` is the one name the model's call sites use for what the kernel calls
#: split_huge_page_pmd() before patch 03 and split_huge_pmd() after it (its docstring says so);
#: ``check_refcounts`` holds each level's counting identities for :func:`thplab.invariants`.
#: The series has no flag for them, so a patch's kernel functions are its registered ones minus these.
MODEL_ONLY = frozenset({"check_refcounts", "split_pmd"})


def _label(number, stack):
    return f"{number:02d}" if stack == "rfc-v1" else f"step {number}"


def kernel_functions(number, stack="rfc-v1"):
    """``(replaced, removed)``: the kernel functions patch ``number`` (or a step of ``stack``)
    changes, sorted, without the model's own helpers (:data:`MODEL_ONLY`)."""
    replaced, removed = changed_functions(number, stack)
    return ([n for n in replaced if n not in MODEL_ONLY], [n for n in removed if n not in MODEL_ONLY])


def _code_lines(fn):
    """``fn``'s source without its ``@...replaces`` decorator and its docstring: only the code."""
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
    node = ast.parse("\n".join(lines)).body[0]
    drop = set()
    for deco in node.decorator_list:
        if "replaces" in ast.unparse(deco):
            drop.update(range(deco.lineno - 1, deco.end_lineno))
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        drop.update(range(first.lineno - 1, first.end_lineno))
    return [line for i, line in enumerate(lines) if i not in drop]


def code_diff(number, name, stack="rfc-v1"):
    """Unified diff of kernel function ``name`` before and after patch ``number``, code only.

    The definition before is the one a kernel at level ``number - 1`` runs (none: the function
    is new, every line is added); decorators and docstrings are left out, so the diff shows
    what the code does differently.  ``""`` when only the docstring changed.
    """

    before_kernel = Kernel(None, number - 1, stack)
    before = getattr(before_kernel, name).__func__ if before_kernel.has(name) else None
    after = STACKS[stack][number - 1].functions.get(name)
    a = _code_lines(before) if before else []
    b = _code_lines(after) if after else []
    label = _label(number, stack)
    return "\n".join(difflib.unified_diff(a, b, f"{name} before {label}", f"{name} after {label}",
                                          lineterm=""))


def _wrap(text, indent=""):
    """``text`` wrapped to 100 columns, continuation lines indented by ``indent``."""
    return textwrap.fill(text, 100, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def function_text(number, name, stack="rfc-v1"):
    """The model's code diff of kernel function ``name`` in patch ``number``, or why there is none."""
    patch = STACKS[stack][number - 1]
    if name in patch.removed:
        return _wrap(f"{name}() is removed by this patch. {patch.removed[name]}")
    return (code_diff(number, name, stack)
            or f"{name}(): the model's code is the same before and after this patch.")


def patch_text(number, diff=True, stack="rfc-v1"):
    """Patch ``number``'s card (wrapped to 100 columns), the kernel functions it replaces and
    removes, and with ``diff`` the model's code diff of each: the text twin of
    :class:`PatchDiff`, and what ``python -m thplab patch N --diff`` prints (``stack="v4.5"``:
    ``--kernel v4.5``, a step of the merged series)."""
    replaced, removed = kernel_functions(number, stack)
    lines = [patch_card_text(number, stack=stack),
             _wrap("  replaces: " + (", ".join(f"{n}()" for n in replaced) or "-"), " " * 12),
             _wrap("  removes:  " + (", ".join(f"{n}()" for n in removed) or "-"), " " * 12)]
    if diff:
        lines += ["\n" + function_text(number, name, stack) for name in replaced + removed]
    return "\n".join(lines)


def patch_card_text(number, width=100, stack="rfc-v1"):
    """:func:`thplab.series.patch_card` wrapped to ``width`` columns (continuation lines indented)."""
    out = []
    for line in patch_card(number, stack).splitlines():
        if len(line) <= width:
            out.append(line)
            continue
        prefix = re.match(r"\s*\S+:\s+|\s*", line)[0]
        hang = " " * len(prefix)
        parts = textwrap.wrap(line[len(prefix):], width - len(prefix), break_long_words=False,
                              break_on_hyphens=False)
        for i, part in enumerate(parts):
            lead = prefix if i == 0 else hang
            if len(lead) + len(part) <= width:
                out.append(lead + part)
            else:  # a link longer than the hanging indent allows: its own line, indented 2
                out += ([prefix.rstrip()] if i == 0 else []) + ["  " + part]
    return "\n".join(out)


__all__ = ["MODEL_ONLY", "kernel_functions", "code_diff", "function_text", "patch_card_text", "patch_text"]
