"""Install thplab's JupyterLab settings overrides into the running Python environment.

Merges ``etc/jupyterlab/overrides.json`` (next to this file) into
``<sys.prefix>/share/jupyter/lab/settings/overrides.json``, the "app settings" overrides that
JupyterLab 4 reads at start-up.  Keys already present there and not set by thplab are kept.

Used by both ``postBuild`` (conda / Binder) and the ``Makefile`` (pip venv), so there is one
source of truth for the settings.  Run it with the environment's own interpreter::

    python etc/jupyterlab/install_overrides.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("overrides.json")


def merge(base: dict, extra: dict) -> dict:
    """Recursively merge ``extra`` into ``base`` (``extra`` wins) and return ``base``."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def main() -> int:
    target = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    wanted = json.loads(SOURCE.read_text(encoding="utf-8"))
    current: dict = {}
    if target.exists():
        try:
            current = json.loads(target.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            print(f"warning: {target} is not valid JSON; replacing it", file=sys.stderr)
    merged = merge(current, wanted)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"JupyterLab settings overrides installed in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
