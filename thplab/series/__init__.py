"""The RFC series "[PATCH, RFC 00/10] THP refcounting redesign" (Kirill A. Shutemov, 9 June 2014).

``BASE`` is the kernel before the series; ``PATCHES[i]`` is patch i+1.  A
kernel at level k is ``Kernel(machine, k)``: the base with patches 1..k,
applied in order -- the way a series is bisected.
"""

from ._kernel import Kernel, Patch
from .p00_base import BASE
from .p01_drop_foll_split import P01
from .p02_pageanon import P02
from .p03_rename import P03
from .p04_pmd_split import P04
from .p05_vmstat import P05
from .p06_split_huge_page import P06
from .p07_generic_splitting import P07
from .p08_x86_splitting import P08
from .p09_futex import P09
from .p10_documentation import NEW_DOC, OLD_DOC, P10
from .trees import LEVEL0, describe_level0
from .v45 import STEPS as V45_STEPS

PATCHES = [P01, P02, P03, P04, P05, P06, P07, P08, P09, P10]

#: Stacks of steps on the base, by name: a kernel is the base plus a prefix of one.
#: ``"rfc-v1"`` is the series as posted on 9 June 2014; ``"v4.5"`` the redesign as
#: merged for v4.5 (v12 of the series, with 4.5.7's fixes), in seven steps.
STACKS = {"rfc-v1": PATCHES, "v4.5": V45_STEPS}

#: Names ``Machine.boot(kernel=...)`` takes: level 0's tree, then every stack.
KERNELS = (LEVEL0, *STACKS)


def kernel_level(kernel=None, patches=None):
    """``(stack, level)`` for ``Machine.boot(kernel=..., patches=...)``.

    No ``kernel``: the RFC prefix ``patches`` (0 by default).  ``LEVEL0``
    (``"v3.16"``): level 0.  A stack's name: its whole stack, or its first
    ``patches`` steps.  Raises :class:`~thplab.errors.BadArgument` otherwise.
    """
    from ..errors import BadArgument, as_int

    if kernel is None:
        stack, default = "rfc-v1", 0
    elif isinstance(kernel, str) and kernel == LEVEL0:
        if patches not in (None, 0):
            raise BadArgument(f"kernel {LEVEL0!r} is level 0, the kernel before the series; "
                              f"patches={patches!r} belongs to a stack ({', '.join(STACKS)})")
        return "rfc-v1", 0
    elif isinstance(kernel, str) and kernel in STACKS:
        stack, default = kernel, len(STACKS[kernel])
    else:
        raise BadArgument(f"unknown kernel {kernel!r}: thplab boots {', '.join(map(repr, KERNELS))} "
                          f"({LEVEL0} is level 0, the old kernel; rfc-v1 takes patches=0..{len(PATCHES)}, "
                          f"v4.5 patches=0..{len(V45_STEPS)})")
    level = default if patches is None else as_int(patches, "patches (the step of the stack)")
    if not 0 <= level <= len(STACKS[stack]):
        raise BadArgument(f"patches is the step of {stack}, 0..{len(STACKS[stack])}, got {level}")
    return stack, level

def kernel_args(level):
    """``Machine.boot`` keywords for ``level``: an RFC level (an int, ``patches=``) or a kernel
    by name (``"v4.5"``, ``kernel=``), the two ways the course's tables name a kernel."""
    return {"kernel": level} if isinstance(level, str) else {"patches": level}


BASE.data["TRANSHUGE_DOC"] = OLD_DOC
# Patch 01 deletes the FOLL_SPLIT promise, the last line of its section (its email: 11 lines).
P01.data["TRANSHUGE_DOC"] = {
    section: ("\n".join(text.split("\n")[:-1]) if section == "get_user_pages and follow_page" else text)
    for section, text in OLD_DOC.items()}



def patch_card(number, stack="rfc-v1"):
    """Text card of patch ``number`` (0 = the kernel before the series): subject, files, what, why, where.

    ``stack="v4.5"``: step ``number`` of the merged series instead.
    """
    if stack != "rfc-v1":
        p = STACKS[stack][number - 1]
        files = "\n".join(f"    {path}: {emails}" for path, emails in p.files.items())
        return (f"{p.title}\n  files (and the v12 emails that change them):\n{files}\n"
                f"  what: {p.summary}\n  why:  {p.why}\n  read: {p.link}")
    p = BASE if number == 0 else PATCHES[number - 1]
    files = "\n".join(f"    {path}: {lines}" for path, lines in p.files.items())
    src = "" if p.source == "posted" else ("\n  NOTE: this patch's email is not in the public archive; "
                                           "the model reconstructs it (see the module docstring).")
    if number == 0:
        return f"{p.subject}\n  what: {p.summary}\n  why:  {p.why}\n  read: {p.link}\n" + describe_level0()
    return (f"{p.title}\n  files (lines changed, from the patch's email; 'not archived': only the series' total is known):\n"
            f"{files}\n  what: {p.summary}\n  why:  {p.why}\n  read: {p.link}{src}")


def changed_functions(number, stack="rfc-v1"):
    """Kernel functions patch (or step) ``number`` replaces and removes: ``(replaced, removed)``, sorted."""
    p = STACKS[stack][number - 1]
    return sorted(n for n in p.functions), sorted(p.removed)


__all__ = ["BASE", "PATCHES", "V45_STEPS", "STACKS", "KERNELS", "LEVEL0", "kernel_level", "kernel_args", "Kernel", "Patch",
           "patch_card", "changed_functions", "OLD_DOC", "NEW_DOC"]
