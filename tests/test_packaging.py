"""The ways of installing thplab agree with each other.

pyproject.toml (pip / `make`), environment.yml + postBuild (conda / Binder), the JupyterLab
settings override they both install, the Makefile's newcomer targets, CI's entry point and the
README's set-up commands.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = REPO / "etc" / "jupyterlab" / "overrides.json"
INSTALLER = REPO / "etc" / "jupyterlab" / "install_overrides.py"

# conda-forge name -> PyPI name, where they differ (none today; add e.g. "pytables": "tables").
CONDA_TO_PIP: dict[str, str] = {}
# conda packages that are tooling, not thplab dependencies
CONDA_TOOLING = {"python", "pip"}

NOTEBOOK_TRACKER = "@jupyterlab/notebook-extension:tracker"


# --------------------------------------------------------------------------- loaders
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pip_requirements(*extras: str) -> dict[str, Requirement]:
    proj = pyproject()["project"]
    reqs = list(proj["dependencies"])
    for extra in extras:
        reqs += proj["optional-dependencies"][extra]
    out = {}
    for r in map(Requirement, reqs):
        out[canonicalize_name(r.name)] = r
    return out


def environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


_CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$")


def conda_to_specifier(spec: str) -> SpecifierSet:
    """Translate a conda version spec to a pip SpecifierSet (the subset we use).

    ``=4`` / ``=4.*`` mean 4.x; ``=3.11`` means 3.11.x; ``==1.2.3`` is exact; ``>=``, ``<``,
    ``,`` behave as in pip; empty means any version.
    """
    spec = spec.strip()
    if not spec:
        return SpecifierSet()
    parts = []
    for piece in spec.split(","):
        piece = piece.strip()
        m = re.fullmatch(r"=(?!=)\s*([0-9][0-9.]*?)(\.\*)?", piece)
        if m:
            nums = [int(x) for x in m.group(1).split(".")]
            upper = nums[:-1] + [nums[-1] + 1]
            parts.append(f">={'.'.join(map(str, nums))}")
            parts.append(f"<{'.'.join(map(str, upper))}")
        else:
            parts.append(piece)
    return SpecifierSet(",".join(parts))


def conda_dependencies() -> tuple[dict[str, SpecifierSet], list[str]]:
    conda: dict[str, SpecifierSet] = {}
    pip_section: list[str] = []
    for dep in environment()["dependencies"]:
        if isinstance(dep, dict):
            pip_section += dep.get("pip", [])
            continue
        m = _CONDA_SPEC.match(dep)
        assert m, f"cannot parse conda dependency {dep!r}"
        name, spec = m.groups()
        conda[canonicalize_name(CONDA_TO_PIP.get(name, name))] = conda_to_specifier(spec)
    return conda, pip_section


def _candidates(*specsets: SpecifierSet) -> list[Version]:
    """Versions around every bound mentioned by the specifier sets."""
    out = {Version("0"), Version("9999")}
    for ss in specsets:
        for s in ss:
            v = Version(s.version.replace(".*", ""))
            rel = list(v.release) + [0, 0]
            out |= {
                v,
                Version(f"{rel[0]}.{rel[1]}.{rel[2] + 1}"),
                Version(f"{rel[0]}.{rel[1] + 1}"),
                Version(f"{rel[0]}.{rel[1]}.99"),
                Version(f"{rel[0]}.99"),
                Version(f"{rel[0] + 1}"),
            }
    return sorted(out)


def compatible(a: SpecifierSet, b: SpecifierSet) -> bool:
    """Some version satisfies both (checked on versions around their bounds)."""
    return any(a.contains(v, prereleases=False) and b.contains(v, prereleases=False)
               for v in _candidates(a, b))


# --------------------------------------------------------------------------- pyproject
def test_pyproject_basics():
    data = pyproject()
    proj = data["project"]
    assert proj["name"] == "thplab"
    assert SpecifierSet(proj["requires-python"]) == SpecifierSet(">=3.11")
    core = pip_requirements()
    assert set(core) == {"numpy"}, "the core package depends on numpy only"
    assert core["numpy"].specifier.contains("1.26") and not core["numpy"].specifier.contains("1.25")
    find = data["tool"]["setuptools"]["packages"]["find"]
    assert "thplab*" in find["include"] and find.get("where", ["."]) == ["."]
    extras = proj["optional-dependencies"]
    assert {"lab", "site", "test"} <= set(extras)
    lab = pip_requirements("lab")
    for name in ("jupyterlab", "notebook", "ipywidgets", "matplotlib", "ipykernel"):
        assert name in lab, name
    assert lab["jupyterlab"].specifier.contains("4.2.0") and not lab["jupyterlab"].specifier.contains("5.0")
    site = pip_requirements("site")
    assert {"sphinx", "myst-nb", "sphinx-book-theme"} <= set(site), "the site builds offline from these"
    assert site["sphinx"].specifier.contains("8.0") and not site["sphinx"].specifier.contains("10.0")
    test = {canonicalize_name(Requirement(r).name) for r in extras["test"]}
    assert {"pytest", "nbval", "hypothesis", "playwright", "pyyaml"} <= test


def test_pytest_config():
    ini = pyproject()["tool"]["pytest"]["ini_options"]
    assert ini["testpaths"] == ["tests"]
    names = {m.split(":")[0].strip() for m in ini["markers"]}
    assert {"browser", "live", "slow"} <= names
    assert "nbval" not in ini.get("addopts", ""), "nbval must not be enabled globally"


# --------------------------------------------------------------------------- conda / Binder
def test_environment_yml_channels_and_python():
    env = environment()
    assert env["channels"] == ["conda-forge"]
    conda, _ = conda_dependencies()
    requires_python = SpecifierSet(pyproject()["project"]["requires-python"])
    assert "python" in conda
    assert compatible(conda["python"], requires_python), (conda["python"], requires_python)
    assert conda["python"].contains("3.11.9"), "Binder image pinned to Python 3.11"


def test_environment_yml_installs_thplab_itself():
    _, pip_section = conda_dependencies()
    assert any(line.strip() == "-e .[lab]" for line in pip_section), (
        "pip installs thplab with its lab extra, so pip enforces pyproject's pins", pip_section)
    conda, _ = conda_dependencies()
    assert "pip" in conda, "conda must provide pip for the pip: section"


def test_environment_yml_matches_pyproject():
    """Same packages (core + `lab` extra), with identical version constraints."""
    conda, _ = conda_dependencies()
    pip = pip_requirements("lab")
    conda_pkgs = set(conda) - CONDA_TOOLING
    assert conda_pkgs == set(pip), (
        f"only in environment.yml: {sorted(conda_pkgs - set(pip))}; "
        f"only in pyproject.toml: {sorted(set(pip) - conda_pkgs)}"
    )
    for name, req in pip.items():
        assert conda[name] == req.specifier, (
            f"{name}: environment.yml {conda[name]} vs pyproject.toml {req.specifier}"
        )


def test_conda_spec_translation():
    assert conda_to_specifier("=4") == SpecifierSet(">=4,<5")
    assert conda_to_specifier("=3.11") == SpecifierSet(">=3.11,<3.12")
    assert conda_to_specifier("=8.*") == SpecifierSet(">=8,<9")
    assert conda_to_specifier(">=1.26") == SpecifierSet(">=1.26")
    assert compatible(conda_to_specifier("=4"), SpecifierSet(">=4.2,<5"))
    assert not compatible(conda_to_specifier("=3"), SpecifierSet(">=4"))
    assert not compatible(conda_to_specifier("=7"), SpecifierSet(">=6,<7"))


def test_postbuild():
    path = REPO / "postBuild"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash") or text.startswith("#!/bin/bash")
    assert re.search(r"^set -euo pipefail\s*$", text, re.M), "postBuild needs `set -euo pipefail`"
    assert os.access(path, os.X_OK), "postBuild must be executable"
    assert "etc/jupyterlab/install_overrides.py" in text, "postBuild installs the shared overrides"
    # Anything postBuild pip-installs must be declared in pyproject.toml (or be the repo itself).
    declared = set(pip_requirements("lab", "test"))
    for m in re.finditer(r"pip install ([^\n#]+)", text):
        for arg in m.group(1).split():
            if arg.startswith("-") or arg in (".", "./") or arg.startswith(".["):
                continue
            assert canonicalize_name(Requirement(arg.strip("'\"")).name) in declared, arg
    assert not (REPO / "binder").exists(), "keep Binder files at the root (no binder/ folder)"


# --------------------------------------------------------------------------- JupyterLab settings
def test_overrides_file():
    data = json.loads(OVERRIDES.read_text())
    assert data[NOTEBOOK_TRACKER]["windowingMode"] == "defer"


def _installed_schema(plugin: str) -> dict | None:
    pkg, _, name = plugin.partition(":")
    for prefix in {sys.prefix, sys.base_prefix}:
        f = Path(prefix) / "share" / "jupyter" / "lab" / "schemas" / pkg / f"{name}.json"
        if f.exists():
            return json.loads(f.read_text())
    return None


def test_overrides_match_installed_jupyterlab_schemas():
    """Every overridden key exists in the installed JupyterLab's schema and the value is allowed."""
    data = json.loads(OVERRIDES.read_text())
    schemas = {plugin: _installed_schema(plugin) for plugin in data}
    if all(s is None for s in schemas.values()):
        pytest.skip("JupyterLab is not installed in this environment")
    for plugin, values in data.items():
        schema = schemas[plugin]
        assert schema is not None, f"no schema for {plugin} in the installed JupyterLab"
        for key, value in values.items():
            prop = schema["properties"].get(key)
            assert prop is not None, f"{plugin} has no setting {key!r}"
            allowed = [o["const"] for o in prop.get("oneOf", []) if "const" in o] + prop.get("enum", [])
            if allowed:
                assert value in allowed, f"{plugin}:{key}={value!r} not in {allowed}"


def test_override_installer_merges(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("install_overrides", INSTALLER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    target = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({
        "other:plugin": {"x": 1},
        NOTEBOOK_TRACKER: {"windowingMode": "full", "kernelShutdown": True},
    }))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert mod.main() == 0
    got = json.loads(target.read_text())
    assert got["other:plugin"] == {"x": 1}
    assert got[NOTEBOOK_TRACKER] == {"windowingMode": "defer", "kernelShutdown": True}
    assert mod.main() == 0  # idempotent
    assert json.loads(target.read_text()) == got


# --------------------------------------------------------------------------- entry points
def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def test_makefile_targets():
    targets = _makefile_targets()
    assert {"lab", "test"} <= targets
    text = (REPO / "Makefile").read_text()
    assert "-m venv" in text and re.search(r"pip install .*-e '\.\[lab,site,test\]'", text)
    assert "install_overrides.py" in text
    assert "--nbval-lax" in text and "notebook_outputs.py inject build/nbval" in text
    assert "notebook_outputs.py record" in text
    assert "notebooks/00-index.ipynb" in text
    # the site: built from the lessons nbval ran, tested in phase 3, not twice
    assert {"site", "test-site"} <= targets
    assert "-p nbval_executed --executed-dir build/executed" in text and "PYTHONPATH=etc/website" in text
    assert "etc/website/build.py" in text and "--ignore=tests/browser/test_site.py" in text
    assert [int(n) for n in re.findall(r"== make test (\d)/3", text)] == [1, 2, 3]


def test_ci_runs_make_test():
    path = REPO / ".ci" / "run"
    text = path.read_text()
    assert re.search(r"^set -euo pipefail\s*$", text, re.M)
    commands = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "make test" in commands, commands


def test_readme_setup_commands():
    readme = REPO / "README.md"
    if not readme.exists():
        pytest.skip("no README.md yet")
    text = readme.read_text()
    assert "make lab" in text and "make test" in text


def test_gitignore():
    lines = {ln.strip() for ln in (REPO / ".gitignore").read_text().splitlines()}
    for entry in (".venv/", "__pycache__/", "*.egg-info/", ".ipynb_checkpoints/", "test-artifacts/",
                  ".pytest_cache/", ".hypothesis/"):
        assert entry in lines, entry
