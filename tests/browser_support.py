"""Helpers for tests/test_browser.py: get a headless Chromium, start a throw-away JupyterLab.

Browser: Debian's ``chromium`` package (``/usr/bin/chromium``) driven by Playwright for Python.
Playwright's own browser download (``playwright install``) is never used; the test launches the
system binary with ``executable_path``. What is missing is installed once and then found again:

* ``playwright`` is pip-installed into the running interpreter when it cannot be imported;
* ``chromium`` is apt-installed when no binary is found and the tests run as root with apt-get.

Set ``METALIB_BROWSER_INSTALL=0`` to forbid both installs (the test is then skipped when
something is missing) and ``METALIB_CHROMIUM=/path/to/chrome`` to use another Chromium build.
Every failure to obtain the browser becomes a ``pytest.skip`` whose reason says what to install.

Server: ``jupyter lab`` from the project's ``.venv`` (or the test interpreter when there is none)
on a free port of 127.0.0.1 with a random token, serving a temporary folder, with the per-user
Jupyter/IPython folders redirected into the test's tmp dir so user configuration cannot change
the result. The server, and any kernel it started, is always stopped.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PIP_TIMEOUT_S = 300
APT_TIMEOUT_S = 600
STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0

# Never send the test's requests through an HTTP(S) proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- browser
def _installs_allowed() -> bool:
    return os.environ.get("METALIB_BROWSER_INSTALL", "1").strip().lower() not in {"0", "no", "false"}


def _run_install(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[bool, str]:
    """Run an install command; return (ok, tail of its output)."""
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=timeout, env=env, text=True)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, repr(err)
    return res.returncode == 0, (res.stdout or "")[-1500:]


def find_chromium() -> str | None:
    override = os.environ.get("METALIB_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def ensure_chromium() -> str:
    """Path of a Chromium binary; apt-installs Debian's ``chromium`` if possible, else skips."""
    path = find_chromium()
    if path:
        return path
    how = "install Debian's `chromium` package (apt-get install -y chromium)"
    if not _installs_allowed():
        pytest.skip(f"no Chromium found and METALIB_BROWSER_INSTALL=0: {how}")
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        pytest.skip(f"no Chromium found and cannot apt-get it here (not root or no apt-get): {how}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=120", "chromium"]
    ok, out = _run_install(install, APT_TIMEOUT_S, env)
    if not ok:  # stale or empty package lists: refresh once and retry
        _run_install(["apt-get", "update", "-q"], APT_TIMEOUT_S, env)
        ok, out = _run_install(install, APT_TIMEOUT_S, env)
    path = find_chromium()
    if not path:
        pytest.skip(f"no Chromium: `{' '.join(install)}` failed (offline apt mirror?):\n{out}")
    return path


def ensure_playwright():
    """Import ``playwright.sync_api``; pip-installs ``playwright`` once if missing, else skips."""
    if importlib.util.find_spec("playwright") is None:
        if not _installs_allowed():
            pytest.skip("Playwright is not installed and METALIB_BROWSER_INSTALL=0: "
                        f"{sys.executable} -m pip install playwright")
        ok, out = _run_install([sys.executable, "-m", "pip", "install", "--quiet", "playwright"],
                               PIP_TIMEOUT_S)
        importlib.invalidate_caches()
        if not ok or importlib.util.find_spec("playwright") is None:
            pytest.skip(f"Playwright could not be pip-installed into {sys.prefix}:\n{out}")
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError as err:  # e.g. a wheel for another platform
        pytest.skip(f"Playwright is installed but cannot be imported: {err!r}")


def chromium_args() -> list[str]:
    args = ["--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
    return args


# --------------------------------------------------------------------------- server
@dataclass
class LabServer:
    proc: subprocess.Popen
    port: int
    token: str
    log_path: Path
    cmd: list[str]

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def api(self, path: str, timeout: float = 10.0):
        """GET a JSON API path (token in the header); returns the decoded body or None."""
        req = urllib.request.Request(f"{self.base}{path}",
                                     headers={"Authorization": f"token {self.token}"})
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError as err:
            return f"<could not read {self.log_path}: {err}>"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_python() -> str:
    """The project's .venv interpreter (the course's `jupyter lab`), else the test interpreter."""
    venv_python = REPO / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.is_file() else sys.executable


def lab_env(tmp: Path) -> dict[str, str]:
    """The server's environment: the test session's METALIB_* plus private Jupyter folders."""
    env = dict(os.environ)
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime", "IPYTHONDIR": "ipython",
            "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces"}
    for var, sub in dirs.items():
        path = tmp / "jupyter" / sub
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    # No news/update pop-ups (they would try the internet and cover the page).
    notif = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True, exist_ok=True)
    (notif / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env.pop("MPLBACKEND", None)  # kernels use Jupyter's inline backend: plots become <img>
    env["PATH"] = os.pathsep.join([str(Path(server_python()).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("METALIB_QUICK", "1")
    return env


def start_lab(notebook_dir: Path, tmp: Path, token: str) -> LabServer:
    """Start ``jupyter lab`` and wait until /api/status answers; fails the test otherwise."""
    env = lab_env(tmp)
    for attempt in range(3):  # retried only when another process took the port first
        port = _free_port()
        cmd = [server_python(), "-m", "jupyter", "lab", "--no-browser",
               f"--notebook-dir={notebook_dir}", f"--ServerApp.ip={HOST}",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        log_path = tmp / f"jupyter-lab-{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=notebook_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = LabServer(proc, port, token, log_path, cmd)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if server.api("/api/status", timeout=2.0) is not None:
                    return server
                time.sleep(0.25)
        except BaseException:
            stop_lab(server)
            raise
        exited = proc.poll() is not None
        stop_lab(server)
        if exited and "already in use" in server.log_tail():
            continue
        what = f"exited with code {proc.returncode}" if exited else \
            f"did not answer within {STARTUP_TIMEOUT_S:.0f} s"
        pytest.fail(f"`{' '.join(cmd)}` {what}.\n--- server log ---\n{server.log_tail()}")
    pytest.fail("JupyterLab: no free port after 3 attempts")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _kill_kernels(pids: list[int]) -> None:
    """SIGKILL those of ``pids`` that are still ipykernel processes."""
    for pid in pids:
        try:
            if b"ipykernel" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError, PermissionError):
            pass


def stop_lab(server: LabServer) -> None:
    """SIGTERM the server (it shuts its kernels down), then SIGKILL whatever it left behind.

    Kernels run in their own sessions, so they are collected by pid before the server stops.
    """
    proc = server.proc
    kernels = _children(proc.pid)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=STOP_GRACE_S)
    _kill_kernels(kernels)  # only kernels the server failed to stop
