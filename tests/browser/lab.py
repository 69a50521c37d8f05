"""JupyterLab server + notebook-level helpers for the real-browser tests.

`LabServer` runs JupyterLab from the current Python environment (``sys.executable -m jupyter
lab``) on a free loopback port with a random token, fully isolated in a temporary directory:

* the notebooks are served from a *copy* of the repository's ``notebooks/`` (and of
  ``tests/browser/fixtures/``) laid out under the same relative paths, so URLs are
  ``lab/tree/notebooks/<name>`` and running a lesson can never write outputs, checkpoints or
  files the kernel creates into the working tree;
* the JupyterLab "app settings" directory is a temporary one holding the repository's
  ``etc/jupyterlab/overrides.json`` (the same file ``postBuild`` and ``make`` install), plus a
  test-only ``overrides.d/`` file (autosave off, no news/update toasts);
* user settings, workspaces, Jupyter config/data/runtime dirs and the IPython dir are all
  temporary: nothing is read from or written to the user's home.

The notebook helpers (`open_notebook`, `run_all_cells`, `wait_until_settled`, `notebook_report`,
`check_report`, `full_screenshot`) drive the page that shows one notebook; ``drive.py`` has the
widget-level helpers for lesson-specific interactions.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .drive import notebook

REPO = Path(__file__).resolve().parents[2]
OVERRIDES_FILE = REPO / "etc" / "jupyterlab" / "overrides.json"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARTIFACTS = REPO / "test-artifacts" / "browser"

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]

# Settings that only the browser test needs (never for learners).
TEST_ONLY_OVERRIDES = {
    # Never write executed notebooks back (the served copy would not matter, but be explicit).
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    # No "would you like news?" / update toasts covering the page. The network is closed anyway.
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}

WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
BAD_OUTPUT_TEXT = ("HBox(children=", "VBox(children=", "Error displaying widget", "model not found")


# --------------------------------------------------------------------------- discovery
def lesson_notebooks() -> list[Path]:
    """Every ``notebooks/**/*.ipynb`` (sorted, checkpoints excluded), relative to the repo."""
    root = REPO / "notebooks"
    if not root.is_dir():
        return []
    return sorted(
        p.relative_to(REPO)
        for p in root.rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts
    )


def fixture_notebooks() -> list[Path]:
    return sorted(p.relative_to(REPO) for p in FIXTURES.glob("*.ipynb"))


def chromium_path() -> str:
    return os.environ.get("THPLAB_CHROMIUM", "/usr/bin/chromium")


# --------------------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A JupyterLab server in its own temporary world. Use `start()` / `stop()`."""

    workdir: Path
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str, **query: str) -> str:
        """Browser URL for ``path`` (e.g. ``lab/tree/notebooks/x.ipynb``), token included."""
        q = "&".join([f"token={self.token}"] + [f"{k}={v}" if v else k for k, v in query.items()])
        return f"{self.base_url}{path.lstrip('/')}?{q}"

    # -- REST ---------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path.lstrip("/"),
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def shutdown_all_sessions(self) -> None:
        """Stop every kernel (one lesson at a time keeps 2 cores free for the browser)."""
        try:
            for s in self.api("GET", "api/sessions"):
                self.api("DELETE", f"api/sessions/{s['id']}")
            for k in self.api("GET", "api/kernels"):
                self.api("DELETE", f"api/kernels/{k['id']}")
        except (urllib.error.URLError, OSError):
            pass

    # -- lifecycle ----------------------------------------------------------
    def _prepare(self) -> list[str]:
        w = self.workdir
        # Served tree: copies, same relative layout as the repo.
        if (REPO / "notebooks").is_dir():
            shutil.copytree(
                REPO / "notebooks",
                self.root / "notebooks",
                ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
            )
        else:
            (self.root / "notebooks").mkdir(parents=True)
        shutil.copytree(FIXTURES, self.root / FIXTURES.relative_to(REPO))

        # App settings dir = <app dir>/settings; keep <app dir>/static pointing at the real
        # build so jupyterlab_server still reads the core extension metadata from it.
        app_dir = w / "lab-app"
        settings = app_dir / "settings"
        (settings / "overrides.d").mkdir(parents=True)
        shutil.copy(OVERRIDES_FILE, settings / "overrides.json")
        (settings / "overrides.d" / "zz-thplab-browser-test.json").write_text(
            json.dumps(TEST_ONLY_OVERRIDES, indent=2)
        )
        real_static = Path(sys.prefix) / "share" / "jupyter" / "lab" / "static"
        if real_static.is_dir():
            (app_dir / "static").symlink_to(real_static, target_is_directory=True)

        for d in ("user-settings", "workspaces", "config", "data", "runtime", "ipython"):
            (w / d).mkdir()

        self.port = _free_port()
        return [
            sys.executable, "-m", "jupyter", "lab",
            "--no-browser",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.app_settings_dir={settings}",
            f"--LabApp.user_settings_dir={w / 'user-settings'}",
            f"--LabApp.workspaces_dir={w / 'workspaces'}",
            # lets the tests call JupyterLab commands (e.g. notebook:run-all-cells) directly
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.shutdown_no_activity_timeout=0",
        ] + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])

    def start(self, timeout: float = 90.0) -> "LabServer":
        cmd = self._prepare()
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(self.workdir / "config"),
            JUPYTER_DATA_DIR=str(self.workdir / "data"),
            JUPYTER_RUNTIME_DIR=str(self.workdir / "runtime"),
            IPYTHONDIR=str(self.workdir / "ipython"),
            JUPYTER_PLATFORM_DIRS="1",
            JUPYTER_PREFER_ENV_PATH="1",
            PYTHONUNBUFFERED="1",
        )
        env.pop("JUPYTER_PATH", None)
        env.pop("JUPYTERLAB_SETTINGS_DIR", None)
        env.pop("JUPYTERLAB_WORKSPACES_DIR", None)
        self.log_path = self.workdir / "jupyterlab.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {self.proc.returncode} during start-up:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "api/status", timeout=2)
                return self
            except (urllib.error.URLError, OSError, json.JSONDecodeError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"JupyterLab did not answer /api/status within {timeout:.0f}s:\n{self.log_tail()}"
                    )
                time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.shutdown_all_sessions()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, n: int = 60) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


# --------------------------------------------------------------------------- page helpers
# JavaScript run in the page. `window.jupyterapp` exists because of expose_app_in_browser.
_JS_NOTEBOOK_READY = """
(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return false;
  const w = app.shell.currentWidget;
  if (!w || !w.context || w.context.path !== path || !w.context.isReady) return false;
  const s = w.sessionContext;
  if (!s || !s.isReady || !s.session || !s.session.kernel) return false;
  return s.session.kernel.status === 'idle' && s.session.kernel.connectionStatus === 'connected';
}
"""

_JS_RUN_ALL = """
async () => {
  const app = window.jupyterapp;
  await app.commands.execute('notebook:run-all-cells');
  return true;
}
"""

_JS_SETTLED = """
() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  if (!k || k.status !== 'idle') return false;
  for (const cell of w.content.widgets) {
    if (cell.model.type !== 'code') continue;
    const st = cell.model.executionState;          // JupyterLab >= 4.1
    if (st === 'running') return false;
    const p = cell.promptNode ? cell.promptNode.textContent : '';
    if (p && p.includes('[*]')) return false;
  }
  const dom = w.node.querySelectorAll('.jp-InputPrompt');
  for (const n of dom) if (n.textContent.includes('[*]')) return false;
  return true;
}
"""

_JS_REPORT = """
async ({widgetMime, bad}) => {
  const w = window.jupyterapp.shell.currentWidget;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = [];
  for (const cell of w.content.widgets) {
    const m = cell.model;
    const c = {type: m.type, source: m.sharedModel.getSource(),
               tags: (m.getMetadata && m.getMetadata('tags')) || []};
    if (m.type === 'code') {
      c.execution_count = m.executionCount;
      c.outputs = m.outputs.toJSON();
    }
    cells.push(c);
  }
  const outs = Array.from(w.node.querySelectorAll('.jp-OutputArea-output'));
  const texts = outs.map(o => o.innerText || '');
  const badTexts = [];
  for (const t of texts) for (const b of bad) if (t.includes(b)) badTexts.push(t.slice(0, 300));
  const stderrTracebacks = Array.from(
      w.node.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
    .map(n => n.innerText || '').filter(t => t.includes('Traceback')).map(t => t.slice(0, 2000));
  const domErrors = Array.from(
      w.node.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]'))
    .map(n => (n.innerText || '').slice(0, 2000));
  // An output area holding a live (rendered) widget view.
  const liveWidgetOutputs = outs.filter(
      o => o.querySelector('.jupyter-widgets, .lm-Widget.jupyter-widgets, [class*="widget-"]')).length;
  let kernelInfo = null;
  if (kernel) {
    try {
      const reply = await Promise.race([
        kernel.requestKernelInfo(),
        new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), 10000)),
      ]);
      kernelInfo = reply && reply.content ? reply.content.status : 'no-reply';
    } catch (e) { kernelInfo = 'error: ' + e.message; }
  }
  return {
    path: w.context.path,
    kernel_status: kernel ? kernel.status : null,
    kernel_connection: kernel ? kernel.connectionStatus : null,
    kernel_id: kernel ? kernel.id : null,
    kernel_info: kernelInfo,
    cells,
    bad_texts: badTexts,
    stderr_tracebacks: stderrTracebacks,
    dom_errors: domErrors,
    live_widget_outputs: liveWidgetOutputs,
  };
}
"""


def open_notebook(page, lab: LabServer, relpath: str | Path, timeout: float = 120.0) -> None:
    """Open ``relpath`` (relative to the served root) in a fresh workspace and wait until its
    kernel is connected and idle."""
    relpath = Path(relpath).as_posix()
    # `reset` starts from an empty workspace, so no tab of an earlier test is restored.
    page.goto(lab.url(f"lab/tree/{relpath}", reset=""), wait_until="domcontentloaded")
    page.wait_for_function(_JS_NOTEBOOK_READY, arg=relpath, timeout=timeout * 1000, polling=250)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.wait_for(
        state="visible", timeout=timeout * 1000
    )


def run_all_cells(page, timeout: float = 300.0) -> None:
    """Run → Run All Cells (the JupyterLab command behind that menu item), then wait until
    the kernel is idle and no cell shows ``[*]``."""
    page.evaluate(_JS_RUN_ALL)  # resolves when the last queued cell finished (or one failed)
    wait_until_settled(page, timeout=timeout)


def run_all_cells_via_menu(page, timeout: float = 300.0) -> None:
    """Same as `run_all_cells` but clicks the menu bar like a person would."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-content .lm-Menu-item", has_text="Run All Cells").first.click()
    # Give the queue a moment to start, then wait for it to drain.
    page.wait_for_timeout(500)
    wait_until_settled(page, timeout=timeout)


def wait_until_settled(page, timeout: float = 300.0, quiet: float = 0.5) -> None:
    """Wait until the kernel is idle and no cell is queued/running, ``quiet`` seconds in a row."""
    deadline = time.monotonic() + timeout
    while True:
        page.wait_for_function(_JS_SETTLED, timeout=max(1.0, deadline - time.monotonic()) * 1000,
                               polling=200)
        page.wait_for_timeout(quiet * 1000)
        if page.evaluate(_JS_SETTLED):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("notebook did not settle")


def notebook_report(page) -> dict:
    return page.evaluate(_JS_REPORT, {"widgetMime": WIDGET_VIEW_MIME, "bad": list(BAD_OUTPUT_TEXT)})


_WIDGET_SOURCE = re.compile(r"\bwidgets\.|\binteract(ive)?\(|thplab\.widgets|ipywidgets")


def expected_widget_outputs(report: dict) -> int:
    """How many live widget views the notebook must show after Run All.

    * every output that carries a widget view (``application/vnd.jupyter.widget-view+json``)
      must render as a live widget;
    * if any code cell uses widgets (``widgets.``, ``interact(``, ``ipywidgets``,
      ``thplab.widgets``) or is tagged ``widget``/``widgets``, at least one live widget is
      required. (A bare ``display(`` does not count: lessons display Markdown/figures too.)
    """
    views = 0
    uses_widgets = False
    for c in report["cells"]:
        if c["type"] != "code":
            continue
        for o in c.get("outputs", []):
            if WIDGET_VIEW_MIME in (o.get("data") or {}):
                views += 1
        src = c["source"]
        if _WIDGET_SOURCE.search(src) or {"widget", "widgets"} & set(c["tags"]):
            uses_widgets = True
    minimum = 1 if uses_widgets else 0
    return max(views, minimum)


def error_outputs(report: dict) -> list[str]:
    errs = []
    for i, c in enumerate(report["cells"]):
        for o in c.get("outputs", []) if c["type"] == "code" else []:
            if o.get("output_type") == "error":
                tb = "\n".join(o.get("traceback") or [])
                tb = re.sub(r"\x1b\[[0-9;]*m", "", tb)
                errs.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}\n{tb[-3000:]}")
            elif o.get("output_type") == "stream" and o.get("name") == "stderr":
                text = "".join(o.get("text") or "")
                if "Traceback" in text:
                    errs.append(f"cell {i}: traceback on stderr:\n{text[-3000:]}")
    return errs


def check_report(report: dict, live_widgets_seen: int | None = None) -> list[str]:
    """Return a list of problems (empty = the notebook ran cleanly in the browser)."""
    problems = []
    problems += error_outputs(report)
    problems += [f"traceback in stderr output:\n{t}" for t in report["stderr_tracebacks"]]
    problems += [f"error output rendered:\n{t}" for t in report["dom_errors"]]
    problems += [f"widget shown as text / not rendered: {t!r}" for t in report["bad_texts"]]
    not_run = [
        i for i, c in enumerate(report["cells"])
        if c["type"] == "code" and c["source"].strip() and c.get("execution_count") is None
    ]
    if not_run and not problems:
        problems.append(f"code cells never executed: {not_run}")
    want = expected_widget_outputs(report)
    have = report["live_widget_outputs"] if live_widgets_seen is None else live_widgets_seen
    if have < want:
        problems.append(f"expected at least {want} live widget view(s), found {have}")
    if report["kernel_status"] in (None, "dead", "unknown") or report["kernel_info"] != "ok":
        problems.append(
            f"kernel not alive at the end: status={report['kernel_status']} "
            f"connection={report['kernel_connection']} kernel_info={report['kernel_info']}"
        )
    return problems


def wait_for_widgets(page, want: int, timeout: float = 20.0) -> int:
    """Wait (up to ``timeout``) until ``want`` output areas hold a live widget; return count."""
    js = """(want) => {
      const w = window.jupyterapp.shell.currentWidget;
      const outs = Array.from(w.node.querySelectorAll('.jp-OutputArea-output'));
      const n = outs.filter(o => o.querySelector('.jupyter-widgets, [class*="widget-"]')).length;
      return n >= want ? n : false;
    }"""
    try:
        return page.wait_for_function(js, arg=want, timeout=timeout * 1000, polling=250).json_value()
    except Exception:  # noqa: BLE001 - report the count we have, the caller asserts
        return notebook_report(page)["live_widget_outputs"]


def full_screenshot(page, path: Path, max_height: int = 16000) -> Path:
    """Screenshot the whole notebook: grow the viewport to the notebook's scroll height first
    (JupyterLab scrolls inside a panel, so a plain full-page shot would show one screen)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or {"width": 1280, "height": 900}
    height = page.evaluate(
        """() => {
          const w = window.jupyterapp.shell.currentWidget;
          const s = w && w.node.querySelector('.jp-WindowedPanel-outer');
          const chrome = window.innerHeight - (s ? s.clientHeight : 0);
          return s ? s.scrollHeight + chrome + 40 : document.body.scrollHeight;
        }"""
    )
    page.set_viewport_size({"width": size["width"], "height": int(min(max(height, size["height"]), max_height))})
    page.wait_for_timeout(300)
    page.evaluate(
        """() => {
          const w = window.jupyterapp.shell.currentWidget;
          const s = w && w.node.querySelector('.jp-WindowedPanel-outer');
          if (s) s.scrollTop = 0;
        }"""
    )
    page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


# --------------------------------------------------------------------------- diagrams
# A thplab diagram leaves a text/html output with the SVG inline in ``div.thplab-diagram`` (and
# an image/svg+xml twin in the same bundle). Widgets that redraw a diagram (ScenarioExplorer)
# put the same markup inside a widget view; those are counted apart from the static outputs.
_JS_DIAGRAMS = """
() => {
  const w = window.jupyterapp.shell.currentWidget;
  let outputs = 0;                     // diagram outputs the notebook model holds
  for (const cell of w.content.widgets) {
    if (cell.model.type !== 'code') continue;
    for (const o of cell.model.outputs.toJSON()) {
      const h = o.data && o.data['text/html'];
      const html = Array.isArray(h) ? h.join('') : (h || '');
      if (html.includes('class="thplab-diagram"') && o.data['image/svg+xml']) outputs += 1;
    }
  }
  const shown = Array.from(w.node.querySelectorAll('.jp-OutputArea-output div.thplab-diagram > svg'));
  const inWidget = (n) => !!n.closest('.jupyter-widgets, .widget-html');
  const rendered = shown.filter(n => !inWidget(n) && n.getBoundingClientRect().width > 0);
  return {outputs, rendered: rendered.length, in_widgets: shown.filter(inWidget).length};
}
"""


def diagram_counts(page) -> dict:
    """``{"outputs", "rendered", "in_widgets"}``: static diagram outputs in the notebook model,
    the ones drawn in the page (an inline ``<svg>`` with a width, outside any widget), and the
    diagrams shown inside widget views."""
    return page.evaluate(_JS_DIAGRAMS)


def wait_for_diagrams(page, timeout: float = 20.0) -> dict:
    """Wait until every static diagram output of the model is drawn in the page (JupyterLab's
    "defer" windowing attaches cells that are out of view a little later); return the counts."""
    js = """() => { const c = (%s)(); return c.rendered >= c.outputs ? c : false; }""" % _JS_DIAGRAMS
    try:
        return page.wait_for_function(js, timeout=timeout * 1000, polling=250).json_value()
    except Exception:  # noqa: BLE001 - the caller asserts on what is there
        return diagram_counts(page)


def diagram_screenshot(page, path: Path) -> Path | None:
    """Screenshot one screen (the normal viewport) scrolled so that the first drawn diagram
    output sits near the top, below the last lines of its cell's input; ``None`` if there is
    none."""
    first = notebook(page).locator(".jp-OutputArea-output:has(div.thplab-diagram > svg)").filter(
        has_not=page.locator(".jupyter-widgets")).first
    if not first.count():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    first.evaluate(
        """n => {
          n.scrollIntoView({block: 'start'});
          const s = n.closest('.jp-WindowedPanel-outer');
          if (s) s.scrollTop = Math.max(0, s.scrollTop - 100);  // the end of the cell's input too
        }"""
    )
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    return path
