"""The course works in a real browser: JupyterLab + ipywidgets, end to end, in headless Chromium.

nbval executes notebooks without a front end, so it cannot see a JupyterLab/ipywidgets version
mismatch (the widget model then fails to load in the page and the slider never appears). This
test does what a student does:

1. starts JupyterLab (the project's ``.venv``) on a free 127.0.0.1 port with a random token,
   serving a temporary copy of ``solutions/00_welcome.ipynb`` (the master copy: in the student
   notebook ``softmax`` is a stub, so the widget's output would be an error); nothing in the
   repository is modified;
2. opens it in headless Chromium (Debian's ``chromium``, driven by Playwright; both are installed
   on first use or the test is skipped with the reason, see tests/browser_support.py);
3. runs *Run > Run All Cells* from the menu and waits until the kernel is idle and every code
   cell shows an execution count (JupyterLab stops at the first error, so this also means no
   cell raised);
4. checks that the ipywidgets FloatSlider rendered, moves it with the keyboard and checks that
   the slider's value and the plot it drives (the output image) both change;
5. saves screenshots (tmp dir and ``.cache/browser/``) and prints their paths and the versions.

Runs in quick mode (METALIB_QUICK=1, from conftest.py) with METALIB_DATA/METALIB_CACHE inherited.
"""
from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from browser_support import (REPO, chromium_args, ensure_chromium, ensure_playwright,
                             server_python, start_lab, stop_lab)

NOTEBOOK = "00_welcome.ipynb"
ARTIFACT_DIR = REPO / ".cache" / "browser"  # .cache/ is git-ignored
PAGE_TIMEOUT_MS = 60_000  # loading JupyterLab's page and the notebook
RUN_ALL_TIMEOUT_S = 150.0  # quick mode needs ~10-20 s; generous for 2 shared cores
WIDGET_TIMEOUT_MS = 30_000
CHANGE_TIMEOUT_S = 30.0

# Prompts, per code cell, in document order (all cells stay in the DOM with JupyterLab's
# default windowing mode "contentVisibility").
_PROMPTS_JS = """() => Array.from(document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell .jp-InputPrompt'))
    .map(e => e.textContent.trim())"""
# Text of error outputs (tracebacks) in the notebook.
_ERRORS_JS = r"""() => Array.from(document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
    .map(e => e.textContent).filter(t => /Traceback|\w+Error\b/.test(t)).map(t => t.slice(-1500))"""


def _versions() -> dict[str, str]:
    """Versions of the front-end packages, as installed in the server's environment."""
    import subprocess

    names = ["jupyterlab", "ipywidgets", "jupyterlab_widgets", "widgetsnbextension",
             "jupyter_server", "ipykernel"]
    code = ("import json, importlib.metadata as m\n"
            f"print(json.dumps({{n: m.version(n) for n in {names!r}}}))")
    try:
        out = subprocess.run([server_python(), "-c", code], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        return json.loads(out)
    except Exception:  # noqa: BLE001 - versions are informative only
        found = {}
        for name in names:
            try:
                found[name] = version(name)
            except PackageNotFoundError:
                found[name] = "?"
        return found


def _fresh_copy(src: Path, dst: Path) -> int:
    """Copy a notebook without outputs, execution counts or saved widget state.

    Then a numbered prompt or a rendered widget can only come from this test's run.
    Returns the number of code cells.
    """
    nb = json.loads(src.read_text(encoding="utf-8"))
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in code_cells:
        cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("widgets", None)
    dst.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return len(code_cells)


def _report(capsys, line: str) -> None:
    """Print to the terminal even though pytest captures output."""
    with capsys.disabled():
        print(f"\n[test_browser] {line}", end="")


def _kernel_state(server) -> str:
    sessions = server.api("/api/sessions") or []
    states = [s.get("kernel", {}).get("execution_state", "?") for s in sessions]
    return ",".join(states) if states else "no kernel"


def _diagnostics(page, server, console: list[str]) -> str:
    try:
        prompts = page.evaluate(_PROMPTS_JS)
        errors = page.evaluate(_ERRORS_JS)
    except Exception as err:  # noqa: BLE001 - diagnostics must not hide the real failure
        prompts, errors = f"<{err!r}>", []
    return (f"\nprompts: {prompts}\nkernel: {_kernel_state(server)}\n"
            f"error outputs: {errors}\nbrowser console (errors, last 15): {console[-15:]}\n"
            f"--- server log (tail) ---\n{server.log_tail(3000)}")


def _run_all_cells(page) -> None:
    """Run > Run All Cells from the menu bar (command palette as a fallback)."""
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.click()
    try:
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click(timeout=10_000)
        page.locator('.lm-Menu-item[data-command="notebook:run-all-cells"]').click(timeout=10_000)
    except Exception:  # noqa: BLE001 - menu layout changed: use the command palette
        page.keyboard.press("Escape")
        page.keyboard.press("Control+Shift+C")
        page.keyboard.type("Run All Cells")
        page.keyboard.press("Enter")


def _wait_all_executed(page, server, n_code: int, console: list[str]) -> list[str]:
    """Wait until every code cell has an execution count and the kernel is idle."""
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    prompts: list[str] = []
    while time.monotonic() < deadline:
        prompts = page.evaluate(_PROMPTS_JS)
        done = len(prompts) == n_code and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
        if done and _kernel_state(server) == "idle":
            return prompts
        if page.evaluate(_ERRORS_JS):
            time.sleep(1.0)  # let the run stop, then report the traceback
            pytest.fail(f"a cell raised during Run All Cells:{_diagnostics(page, server, console)}",
                        pytrace=False)
        time.sleep(0.5)
    pytest.fail(f"Run All Cells did not finish within {RUN_ALL_TIMEOUT_S:.0f} s "
                f"(expected {n_code} numbered prompts):{_diagnostics(page, server, console)}",
                pytrace=False)


def _appears(locator, timeout_ms: float) -> bool:
    """Whether ``locator`` becomes visible within the timeout (the caller words the failure)."""
    try:
        locator.wait_for(state="visible", timeout=timeout_ms)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError (or a closed page)
        return False
    return True


def _wait_slider(page, server, console: list[str]):
    slider = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jupyter-widgets.widget-slider")
    if not _appears(slider.first, WIDGET_TIMEOUT_MS):
        shown = page.locator(".jp-OutputArea-output").all_inner_texts()
        hints = [t[:300] for t in shown if re.search(r"widget|interactive\(|Slider", t, re.I)]
        pytest.fail("ipywidgets slider never rendered (no .jupyter-widgets.widget-slider in "
                    "the page): JupyterLab/ipywidgets version mismatch, or the "
                    "@jupyter-widgets/jupyterlab-manager extension is missing?\n"
                    f"widget-related output text: {hints}{_diagnostics(page, server, console)}",
                    pytrace=False)
    assert slider.count() == 1, f"expected one slider in 00_welcome, found {slider.count()}"
    return slider.first


def _plot_src(cell) -> str | None:
    img = cell.locator(".jp-OutputArea-output img")
    return img.first.get_attribute("src") if img.count() else None


def _move_slider(cell, before_value: str, before_src: str):
    """Focus the slider handle and press End (then ArrowRight); wait for value and plot to change."""
    handle = cell.locator(".widget-slider .noUi-handle").first
    readout = cell.locator(".widget-slider .widget-readout").first
    handle.focus()
    keys = ["End"] + ["ArrowRight"] * 5
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    value, src = before_value, before_src
    while time.monotonic() < deadline:
        if keys:
            handle.press(keys.pop(0))
        time.sleep(0.5)
        value, src = readout.inner_text().strip(), _plot_src(cell)
        if value != before_value and src and src != before_src:
            return value, src
    return value, src


def test_notebook_runs_and_widget_works_in_chromium(tmp_path, capsys):
    chromium = ensure_chromium()
    sync_api = ensure_playwright()

    notebook_dir = tmp_path / "notebooks"
    notebook_dir.mkdir()
    n_code = _fresh_copy(REPO / "solutions" / NOTEBOOK, notebook_dir / NOTEBOOK)
    versions = _versions()
    _report(capsys, "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    server = start_lab(notebook_dir, tmp_path, secrets.token_hex(24))
    console: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            try:
                browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                             args=chromium_args(), timeout=PAGE_TIMEOUT_MS)
            except Exception as err:  # noqa: BLE001 - no usable browser: skip, saying why
                pytest.skip(f"Chromium at {chromium} could not be launched by Playwright: {err}")
            try:
                _report(capsys, f"browser: Chromium {browser.version} ({chromium}), "
                                f"playwright {version('playwright')}")
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(PAGE_TIMEOUT_MS)
                page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                try:
                    _exercise(page, server, n_code, console, tmp_path, capsys)
                except BaseException:
                    _failure_screenshot(page, tmp_path, capsys)
                    raise
            finally:
                browser.close()
    finally:
        stop_lab(server)


def _failure_screenshot(page, tmp_path: Path, capsys) -> None:
    """Keep what the page showed when the test failed (best effort)."""
    path = tmp_path / "failure.png"
    try:
        page.screenshot(path=str(path))
        ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, ARTIFACT_DIR / path.name)
    except Exception as err:  # noqa: BLE001 - never hide the real failure
        _report(capsys, f"could not save a failure screenshot: {err!r}")
        return
    _report(capsys, f"failure screenshot: {path} (copied to {ARTIFACT_DIR / path.name})")


def _exercise(page, server, n_code, console, tmp_path, capsys) -> None:
    """Open the notebook, run all cells, move the slider, save screenshots."""
    t0 = time.monotonic()
    page.goto(f"{server.base}/lab/tree/{NOTEBOOK}?reset&token={server.token}",
              wait_until="domcontentloaded")
    if not _appears(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").first,
                    PAGE_TIMEOUT_MS):
        pytest.fail(f"JupyterLab never showed the notebook {NOTEBOOK}:"
                    f"{_diagnostics(page, server, console)}", pytrace=False)
    t_open = time.monotonic() - t0

    _run_all_cells(page)
    prompts = _wait_all_executed(page, server, n_code, console)
    t_run = time.monotonic() - t0 - t_open

    cell, before_value, after_value = _check_widget(page, server, console, tmp_path)
    shots = _save_screenshots(page, cell, tmp_path)
    _report(capsys, f"opened in {t_open:.1f} s; Run All Cells ({len(prompts)} code cells, "
                    f"prompts {prompts[0]}..{prompts[-1]}) in {t_run:.1f} s; slider "
                    f"{before_value} -> {after_value} changed the plot")
    _report(capsys, "screenshots: " + ", ".join(str(p) for p in shots)
            + f" (copied to {ARTIFACT_DIR})\n")
    assert not page.evaluate(_ERRORS_JS), _diagnostics(page, server, console)


def _check_widget(page, server, console, tmp_path: Path):
    """The slider rendered with its plot; moving it changes value and plot. Returns
    (the slider's cell, value before, value after); saves widget_before.png."""
    slider = _wait_slider(page, server, console)
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell",
                        has=page.locator(".widget-slider")).first
    cell.scroll_into_view_if_needed()
    before_value = slider.locator(".widget-readout").first.inner_text().strip()
    before_src = _plot_src(cell)
    assert before_src, ("the slider rendered but its interact() output shows no plot image:"
                        f"{_diagnostics(page, server, console)}")
    assert before_value == "1.00", f"slider starts at {before_value!r}, the notebook sets 1.0"
    cell.screenshot(path=str(tmp_path / "widget_before.png"))

    after_value, after_src = _move_slider(cell, before_value, before_src)
    assert after_value != before_value, (
        f"pressing End/ArrowRight on the slider handle did not change its value ({after_value})"
        f"{_diagnostics(page, server, console)}")
    assert after_src and after_src != before_src, (
        f"slider moved {before_value} -> {after_value} but the plot image did not change: "
        f"the widget is not connected to the kernel?{_diagnostics(page, server, console)}")
    deadline = time.monotonic() + CHANGE_TIMEOUT_S  # let the last re-draw finish
    while _kernel_state(server) != "idle" and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(0.5)
    return cell, before_value, after_value


def _save_screenshots(page, cell, tmp_path: Path) -> list[Path]:
    """The JupyterLab window and the widget cell, in tmp_path and copied to ARTIFACT_DIR."""
    shots = [tmp_path / "jupyterlab.png", tmp_path / "widget_before.png",
             tmp_path / "widget_after.png"]
    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(shots[0]))
    cell.screenshot(path=str(shots[2]))
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    (ARTIFACT_DIR / "failure.png").unlink(missing_ok=True)  # from an earlier failed run
    for path in shots:
        shutil.copy2(path, ARTIFACT_DIR / path.name)
    return shots
