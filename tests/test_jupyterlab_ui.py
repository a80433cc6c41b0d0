"""A study notebook run the way a user runs it: in JupyterLab, in a real (headless) browser.

The test starts ``jupyter lab`` from this environment (offline and quiet, with throw-away
config, runtime, data, settings and workspace folders), opens the notebook in Debian's
chromium driven by Python playwright, types ``profile = "smoke"`` into the parameters cell,
runs every cell from the Run menu and checks what JupyterLab shows: an execution count on
every code cell, no error output, at least ``min_figures`` rendered figures and the marker
text. The notebook file on disk must be byte-for-byte unchanged afterwards (autosave is off
and the edited notebook is never saved).

What the notebook writes goes to ``$LANDSCAPE_OUTPUTS`` / ``$LANDSCAPE_RUNS``: a session- or
module-scoped fixture ``landscape_outputs_dir`` / ``landscape_runs_dir`` (e.g. in conftest.py,
to share a cache of trained smoke runs) wins, then those environment variables, else a
temporary folder -- never the repository's ``outputs/``.

Without chromium or playwright the test skips, except under CI (``CI=true``) where it fails.
Every request the page makes to anything but 127.0.0.1 is blocked (and reported). On failure
a screenshot is written to a temporary folder and its path printed, with the server log's tail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.test_report_browser import browser_missing

REPO = Path(__file__).resolve().parents[1]

# ---- What is checked; adjust these when the notebooks change. ---------------------------------
# Notebook path relative to the repository root, the least number of rendered figures, and a
# text that must appear in some output once the notebook ran with the smoke settings.
NOTEBOOK = "notebooks/02_curvature.ipynb"
MIN_FIGURES = 2
MARKER = "Settings: profile smoke"
CASES = [(NOTEBOOK, MIN_FIGURES, MARKER)]
# In the code cell tagged "parameters", the line starting with PARAMETER_LINE has that start
# replaced by SMOKE_LINE (the rest of the line, e.g. its comment, is kept).
PARAMETERS_TAG = "parameters"
PARAMETER_LINE = 'profile = "full"'
SMOKE_LINE = 'profile = "smoke"'
# Under $LANDSCAPE_OUTPUTS the run must create a path matching SMOKE_OUTPUT_GLOB (today
# <profile>/..., "lab/<profile>/..." works too) and, when the outputs folder is this test's own,
# nothing matching FULL_OUTPUT_GLOB (the full profile's). None: not checked.
SMOKE_OUTPUT_GLOB: str | None = "**/smoke"
FULL_OUTPUT_GLOB: str | None = "**/full"
# Seconds: Run All until every code cell has its execution count (trains 2 tiny runs on first use).
RUN_TIMEOUT_S = float(os.environ.get("LANDSCAPE_LAB_RUN_TIMEOUT", "240"))
SERVER_TIMEOUT_S = 60.0
UI_TIMEOUT_MS = 60_000

CHROMIUM = os.environ.get("LANDSCAPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# JupyterLab user settings: no autosave (the edited notebook must never reach the disk), no news
# or update checks, no extension manager, every cell attached to the DOM (no windowing, so the
# DOM holds every prompt and output), no auto-closed quotes or brackets while typing.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"checkForUpdates": False, "fetchNews": "false"},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
    "@jupyterlab/notebook-extension/tracker": {
        "windowingMode": "none",
        "codeCellConfig": {"lineNumbers": False, "lineWrap": False, "autoClosingBrackets": False},
    },
    "@jupyterlab/codemirror-extension/plugin": {"defaultConfig": {"autoClosingBrackets": False}},
}

pytestmark = [pytest.mark.slow, pytest.mark.browser]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_COUNT = re.compile(r"^\[(\d+)\]:?$")

# Runs in the page: what JupyterLab shows for the notebook at `path`. Error outputs are read
# from the notebook model (window.jupyterapp, exposed by --LabApp.expose_app_in_browser): in the
# DOM an error renders exactly like stderr (data-mime-type application/vnd.jupyter.stderr, no
# class of its own), so without the app the fallback looks for a traceback in stderr outputs.
_STATE_JS = r"""(path) => {
  const panels = [...document.querySelectorAll('.jp-NotebookPanel')];
  const nb = panels.find(p => !p.classList.contains('lm-mod-hidden')) || panels[0];
  const dialog = document.querySelector('.jp-Dialog');
  const state = {panels: panels.length, dialog: dialog ? dialog.innerText : null, errors: [],
                 prompts: [], kernel: null, figures: 0, text: '', app: !!window.jupyterapp};
  if (!nb) return state;
  const ind = nb.querySelector('.jp-Notebook-ExecutionIndicator');
  state.kernel = ind ? ind.getAttribute('data-status') : null;
  state.prompts = [...nb.querySelectorAll('.jp-CodeCell')].map(c => {
    const p = c.querySelector('.jp-InputPrompt');
    return p ? p.textContent.trim() : null;
  });
  const outs = [...nb.querySelectorAll('.jp-OutputArea-output')];
  state.text = outs.map(o => o.innerText).join('\n');
  state.figures = [...nb.querySelectorAll('.jp-OutputArea-output img')]
    .filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length;
  const app = window.jupyterapp;
  if (!app) {
    for (const o of nb.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
      if (o.innerText.includes('Traceback (most recent call last)')) state.errors.push('[DOM] ' + o.innerText);
    }
  } else {
    for (const w of app.shell.widgets('main')) {
      if (!w.context || w.context.path !== path || !w.content || !w.content.model) continue;
      const cells = w.content.model.cells;
      for (let i = 0; i < cells.length; i++) {
        const c = cells.get(i);
        if (c.type !== 'code') continue;
        for (let j = 0; j < c.outputs.length; j++) {
          const o = c.outputs.get(j);
          if (o.type !== 'error') continue;
          const e = o.toJSON();
          state.errors.push(`[cell ${i}] ${e.ename}: ${e.evalue}\n` + (e.traceback || []).join('\n'));
        }
      }
    }
  }
  return state;
}"""


# ---- prerequisites ------------------------------------------------------------------------------

def _require_browser() -> None:
    """Skip when chromium/playwright is missing -- but fail under CI."""
    reason = browser_missing()
    if reason:
        if os.environ.get("CI", "").strip().lower() in ("true", "1"):
            pytest.fail(f"JupyterLab UI test required under CI: {reason}")
        pytest.skip(reason)


# ---- the JupyterLab server ---------------------------------------------------------------------

@dataclass
class LabServer:
    proc: subprocess.Popen
    port: int
    token: str
    log: Path
    base: str = field(init=False)

    def __post_init__(self) -> None:
        self.base = f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0):
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def url(self, path: str) -> str:
        return f"{self.base}/{path}?token={self.token}&reset"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    def kernels(self) -> list[dict]:
        return self.api("/api/kernels")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Every live descendant of `pid` (Linux /proc; empty elsewhere)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _start_lab(tmp: Path, env: dict[str, str]) -> LabServer:
    settings_dir = tmp / "settings"
    for plugin, values in LAB_SETTINGS.items():
        f = settings_dir / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values, indent=2))
    (tmp / "workspaces").mkdir(exist_ok=True)
    token = secrets.token_hex(24)
    last_log = ""
    for attempt in range(3):  # a port taken between _free_port and the bind: try another
        port = _free_port()
        cmd = [sys.executable, "-m", "jupyterlab",  # = jupyter lab, on this very python
               "--no-browser", "--allow-root",
               f"--IdentityProvider.token={token}",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.root_dir={REPO}",
               "--ServerApp.open_browser=False",
               "--ServerApp.terminals_enabled=False",
               # a safety net should this process die without shutting the server down
               "--ServerApp.shutdown_no_activity_timeout=900",
               # offline: no news feed, no update check, no PyPI extension manager
               "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly",
               f"--LabApp.user_settings_dir={settings_dir}",
               f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
               "--LabApp.expose_app_in_browser=True",
               "--LanguageServerManager.autodetect=False",
               # checkpoints (made when a notebook is opened) go here, not next to the notebook
               f"--FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}"]
        log = tmp / f"server-{attempt}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        server = LabServer(proc, port, token, log)
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                server.api("/api/status", timeout=2)
                return server
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                time.sleep(0.25)
        last_log = server.log_tail()
        _stop_lab(server)
        if "already in use" not in last_log:
            break
    pytest.fail(f"jupyter lab did not answer within {SERVER_TIMEOUT_S:.0f} s:\n{last_log}")


def _stop_lab(server: LabServer) -> None:
    """Shut the kernels down through the API, then SIGTERM the server, then SIGKILL what is left."""
    proc = server.proc
    family: dict[int, list[str]] = {}  # the server's descendants (kernels), with their command lines
    if proc.poll() is None:
        family = {pid: _cmdline(pid) for pid in _children(proc.pid)}
        try:
            for k in server.kernels():
                server.api(f"/api/kernels/{k['id']}", method="DELETE", timeout=20)
        except (urllib.error.URLError, OSError, ValueError):
            pass
        family |= {pid: _cmdline(pid) for pid in _children(proc.pid) if pid not in family}
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for pid, cmdline in family.items():  # kernels run in sessions of their own: end any left, by id
        if cmdline and _cmdline(pid) == cmdline:  # still the same process
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# ---- fixtures -----------------------------------------------------------------------------------

def _dir_from(request, fixture: str, env_var: str) -> Path | None:
    try:
        return Path(request.getfixturevalue(fixture))
    except pytest.FixtureLookupError:
        pass
    value = os.environ.get(env_var)
    return Path(value) if value else None


@pytest.fixture(scope="module")
def lab_dirs(request, tmp_path_factory) -> dict[str, Path | bool]:
    """outputs/runs folders for the kernel, and whether they are this test's own."""
    outputs = _dir_from(request, "landscape_outputs_dir", "LANDSCAPE_OUTPUTS")
    runs = _dir_from(request, "landscape_runs_dir", "LANDSCAPE_RUNS")
    own = outputs is None
    if outputs is None:
        outputs = tmp_path_factory.mktemp("lab-outputs")
    return {"outputs": outputs, "runs": runs or outputs / "runs", "own": own}


@pytest.fixture(scope="module")
def lab_server(lab_dirs, tmp_path_factory):
    _require_browser()
    tmp = tmp_path_factory.mktemp("jupyterlab")
    env = dict(os.environ)
    for name in ("config", "data", "runtime", "ipython"):
        (tmp / name).mkdir()
    env.update({
        # fresh Jupyter folders: no user config, kernelspecs, workspaces or settings leak in;
        # the kernelspec python3 still resolves to this environment's python (sys.prefix).
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "LANDSCAPE_DATA": os.environ.get("LANDSCAPE_DATA", str(REPO.parent / "shared" / "data")),
        "LANDSCAPE_OUTPUTS": str(lab_dirs["outputs"]),
        "LANDSCAPE_RUNS": str(lab_dirs["runs"]),
    })
    env.pop("JUPYTER_TOKEN", None)
    server = _start_lab(tmp, env)
    try:
        yield server
    finally:
        _stop_lab(server)


@pytest.fixture(scope="module")
def chromium():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# ---- helpers for the page -----------------------------------------------------------------------

def _parameters_cell(nb_path: Path) -> tuple[int, int, str, str]:
    """(index among all cells, count of cells, source, source with the smoke line)."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    hits = [i for i, c in enumerate(cells)
            if c["cell_type"] == "code" and PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    assert len(hits) == 1, f"{nb_path.name}: {len(hits)} code cells tagged {PARAMETERS_TAG!r}, expected 1"
    src = cells[hits[0]]["source"]
    src = "".join(src) if isinstance(src, list) else src
    lines = src.split("\n")
    at = [k for k, line in enumerate(lines) if line.startswith(PARAMETER_LINE)]
    assert len(at) == 1, f"{nb_path.name}: no single line starting {PARAMETER_LINE!r} in\n{src}"
    lines[at[0]] = SMOKE_LINE + lines[at[0]][len(PARAMETER_LINE):]
    return hits[0], len(cells), src, "\n".join(lines)


def _editor_text(cell) -> str:
    return "\n".join(cell.locator(".cm-content .cm-line").evaluate_all("ls => ls.map(l => l.textContent)"))


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel").filter(has_text=re.compile(rf"^{re.escape(menu)}$")).click()
    entry = page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel").filter(
        has_text=re.compile(rf"^{re.escape(item)}$"))
    entry.first.click()


def _counts(prompts: list[str | None]) -> list[int | None]:
    return [int(m.group(1)) if p and (m := _COUNT.match(p)) else None for p in prompts]


def _session_kernel_idle(server: LabServer, path: str) -> bool:
    try:
        sessions = server.api("/api/sessions")
    except (urllib.error.URLError, OSError, ValueError):
        return False
    states = [s["kernel"]["execution_state"] for s in sessions if s.get("path") == path and s.get("kernel")]
    return states == ["idle"]


def _fail(state: dict, why: str) -> None:
    errors = "\n\n".join(_ANSI.sub("", e) for e in state.get("errors", []))
    pytest.fail(f"{why}\nprompts: {state.get('prompts')}\nkernel: {state.get('kernel')}\n"
                f"dialog: {state.get('dialog')}\n{errors}".rstrip())


# ---- the test -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("notebook", "min_figures", "marker"), CASES)
def test_notebook_runs_in_jupyterlab(chromium, lab_server, lab_dirs, notebook, min_figures, marker):
    nb_path = REPO / notebook
    before = nb_path.read_bytes()
    checkpoint = nb_path.parent / ".ipynb_checkpoints" / f"{nb_path.stem}-checkpoint{nb_path.suffix}"
    had_checkpoint = checkpoint.exists()
    index, n_cells, source, smoke_source = _parameters_cell(nb_path)

    blocked: list[str] = []
    page_errors: list[str] = []

    def route(r):
        url = r.request.url
        if url.startswith(("data:", "blob:", "about:")) or urlparse(url).hostname == "127.0.0.1":
            return r.continue_()
        blocked.append(url)
        return r.abort()

    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, service_workers="block")
    context.route("**/*", route)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    state: dict = {}
    try:
        page.goto(lab_server.url(f"lab/tree/{notebook}"), wait_until="domcontentloaded")
        panel = page.locator(".jp-NotebookPanel")
        cells = panel.locator(".jp-Cell")
        cells.nth(n_cells - 1).wait_for(state="attached")
        assert cells.count() == n_cells, f"JupyterLab shows {cells.count()} cells, the file has {n_cells}"
        cell = cells.nth(index)
        editor = cell.locator(".cm-content")
        editor.wait_for(state="visible")
        assert _editor_text(cell) == source, "the parameters cell in JupyterLab is not the file's"

        # Edit the parameters cell as a user does: click into it, select all, type.
        for attempt in range(2):  # a keystroke lost to a busy page: type it once more
            editor.click()
            page.keyboard.press("Control+a")
            page.keyboard.type(smoke_source)
            page.keyboard.press("Escape")  # back to command mode
            typed = _editor_text(cell)
            if typed == smoke_source:
                break
            print(f"\ntyping attempt {attempt + 1} gave {typed!r}")
        assert typed == smoke_source, f"typed text differs from the intended source:\n{typed!r}\n!=\n{smoke_source!r}"

        # The kernel (python3 from this environment) must be up and idle before Run All.
        page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(state="attached")
        _menu(page, "Edit", "Clear Outputs of All Cells")
        state = page.evaluate(_STATE_JS, notebook)
        assert all(c is None for c in _counts(state["prompts"])), f"counts left after clearing: {state['prompts']}"
        _menu(page, "Run", "Run All Cells")
        started = time.monotonic()

        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:  # poll what the page shows; fail as soon as an error output appears
            state = page.evaluate(_STATE_JS, notebook)
            if state["errors"]:
                _fail(state, "an error output appeared")
            if state["dialog"]:
                _fail(state, "JupyterLab opened a dialog")
            counts = _counts(state["prompts"])
            if (counts and None not in counts and state["kernel"] == "idle"
                    and _session_kernel_idle(lab_server, notebook)):
                break
            if time.monotonic() > deadline:
                _fail(state, f"not every code cell ran within {RUN_TIMEOUT_S:.0f} s")
            page.wait_for_timeout(1000)
        ran_s = time.monotonic() - started
        page.wait_for_timeout(500)  # let the last outputs and images render
        state = page.evaluate(_STATE_JS, notebook)

        counts = _counts(state["prompts"])
        assert None not in counts, f"code cells without an execution count: {state['prompts']}"
        assert counts == sorted(set(counts)), f"execution counts are not one run in order: {counts}"
        assert not state["errors"], "\n".join(_ANSI.sub("", e) for e in state["errors"])
        assert state["app"], "window.jupyterapp missing: error outputs were only checked in the DOM"
        assert state["figures"] >= min_figures, f"{state['figures']} figures rendered, expected >= {min_figures}"
        assert marker in state["text"], f"marker {marker!r} not in the outputs:\n{state['text'][-2000:]}"
        assert _editor_text(cell) == smoke_source
        outputs = Path(lab_dirs["outputs"])  # the kernel got $LANDSCAPE_OUTPUTS: the run wrote there
        if SMOKE_OUTPUT_GLOB:
            assert any(outputs.glob(SMOKE_OUTPUT_GLOB)), f"nothing matches {SMOKE_OUTPUT_GLOB} in {outputs}"
        if FULL_OUTPUT_GLOB and lab_dirs["own"]:
            assert not any(outputs.glob(FULL_OUTPUT_GLOB)), f"the full profile ran: {outputs / FULL_OUTPUT_GLOB}"
        kernels = [p for p in _children(lab_server.proc.pid) if "ipykernel_launcher" in " ".join(_cmdline(p))]
        assert kernels or not Path("/proc/self").exists(), "no ipykernel process under the server"
        for pid in kernels:
            assert _cmdline(pid)[0] == sys.executable, f"kernel runs {_cmdline(pid)[0]}, not {sys.executable}"
        assert not blocked, f"the page tried to reach the network: {blocked}"
    except BaseException:
        try:  # show the (last) stderr or error output, if any, rather than wherever Run All left the view
            page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').last \
                .scroll_into_view_if_needed(timeout=2000)
        except Exception:  # noqa: BLE001 - nothing to show
            pass
        shot = Path(tempfile.mkdtemp(prefix="jupyterlab-ui-")) / f"{nb_path.stem}.png"
        try:
            page.screenshot(path=str(shot))
            print(f"\nscreenshot: {shot}")
        except Exception as e:  # noqa: BLE001 - a failed screenshot must not hide the failure
            print(f"\nscreenshot failed: {e}")
        print(f"server log ({lab_server.log}):\n{lab_server.log_tail()}")
        if page_errors:
            print("page errors:\n" + "\n".join(page_errors[-10:]))
        if blocked:
            print("blocked requests:\n" + "\n".join(blocked[:20]))
        raise
    finally:
        context.close()  # never saved: the edited notebook is discarded with the page

    assert nb_path.read_bytes() == before, f"{notebook} changed on disk"
    assert had_checkpoint or not checkpoint.exists(), f"JupyterLab wrote a checkpoint next to {notebook}"
    print(f"\n{notebook}: ran in JupyterLab in {ran_s:.0f} s; {state['figures']} figures; "
          f"execution counts {counts}; outputs in {lab_dirs['outputs']}")
