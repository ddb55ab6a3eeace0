"""`make lab` must reach a running JupyterLab server.

When the tests run inside the project's own ``.venv`` (as ``make test`` and CI do), this test runs
the README's course command itself, ``make lab LAB_ARGS="..."`` (its set-up step is then a no-op
and its data step verifies the Omniglot cache), on a free port of 127.0.0.1 with a random token.
Elsewhere it starts the same server directly (``python -m jupyter lab
--notebook-dir=<repo>/notebooks``). It checks that the REST API answers, that ``/lab`` serves the
JupyterLab page, that the contents API lists the notebook directory, and that the course's
settings (``jupyter-config/``) disable JupyterLab's news pop-up.

Isolation: only the *per-user* Jupyter directories are redirected into a
temporary folder (config, data, runtime), so that a ``~/.jupyter`` config, a
stale runtime file or a HOME without write access cannot change the result.
The environment-level directories of the interpreter (``<prefix>/etc/jupyter``
and ``<prefix>/share/jupyter``, where the server extensions are enabled and
the lab extensions live) are still searched; the extension check below makes
sure of that.

All traffic goes to 127.0.0.1, proxies are bypassed, every wait is bounded,
and the server is always stopped (SIGTERM, 10 s grace, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0  # upper bound; a healthy start takes a few seconds
REQUEST_TIMEOUT_S = 10.0
POLL_REQUEST_TIMEOUT_S = 2.0  # per /api/status try while waiting for startup
STOP_GRACE_S = 10.0
LAB_CONFIG_DIR = REPO / "jupyter-config"  # put first on JUPYTER_CONFIG_PATH by `make lab`
NEWS_PLUGIN = "@jupyterlab/apputils-extension:announcements"  # asks "... official Jupyter news?"
PORT_ATTEMPTS = 3  # only retried when another process grabbed the port first

# Never send these requests through an HTTP(S) proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, str, bytes]:
    """GET ``url``; return (status, content type, body). HTTP errors are returned, not raised."""
    assert url.startswith(f"http://{HOST}:"), url
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def _tail(path: Path, n_chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"<could not read {path}: {err}>"
    return text[-n_chars:]


def _page_config(html: str) -> dict:
    """The JSON of ``<script id="jupyter-config-data">`` in the /lab page."""
    marker = 'id="jupyter-config-data"'
    start = html.find(marker)
    assert start != -1, f"no jupyter-config-data in /lab page:\n{html[:2000]}"
    start = html.index(">", start) + 1
    end = html.index("</script>", start)
    return json.loads(html[start:end])


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the server's whole process group (make and the jupyter it started)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=STOP_GRACE_S)
    _signal_group(proc, signal.SIGKILL)  # a jupyter left behind by make


def _use_make() -> bool:
    """True when the tests run in the project's own installed .venv and make exists."""
    import shutil

    venv = REPO / ".venv"
    return (shutil.which("make") is not None and (venv / ".installed").is_file()
            and Path(sys.prefix).resolve() == venv.resolve())


def _notebook_dir(tmp_path: Path) -> Path:
    repo_notebooks = REPO / "notebooks"
    if repo_notebooks.is_dir():
        return repo_notebooks
    fallback = tmp_path / "notebooks"
    fallback.mkdir()
    return fallback


def _lab_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
    ):
        path = tmp_path / "jupyter" / sub
        path.mkdir(parents=True)
        env[var] = str(path)
    # Settings/workspaces default to subfolders of JUPYTER_CONFIG_DIR; drop any
    # explicit override from the caller's environment so they follow it.
    env.pop("JUPYTERLAB_SETTINGS_DIR", None)
    env.pop("JUPYTERLAB_WORKSPACES_DIR", None)
    # `jupyter lab` execs `jupyter-lab`; make the test interpreter's scripts
    # directory win even when the venv is not activated.
    scripts_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts_dir, env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start_server(notebook_dir: Path, env: dict[str, str], token: str, log_path: Path):
    """Start ``jupyter lab``; return (proc, port) once /api/status answers 200.

    Fails the test (after stopping the server) if it exits early or does not
    answer within STARTUP_TIMEOUT_S.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = _free_port()
        server_args = [
            "--no-browser",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",  # fail rather than move to another port
            f"--ServerApp.ip={HOST}",
            # ServerApp.token is deprecated since jupyter_server 2.0 (same effect).
            f"--IdentityProvider.token={token}",
            "--ServerApp.open_browser=False",
        ]
        if _use_make() and notebook_dir == REPO / "notebooks":
            # the README's course command; the Makefile adds --allow-root itself when root
            cmd = ["make", "--no-print-directory", "lab", "LAB_ARGS=" + " ".join(server_args)]
        else:
            cmd = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={notebook_dir}", *server_args]
            # what `make lab` adds (Makefile, LAB_CONFIG): the course's JupyterLab settings
            env = {**env, "JUPYTER_CONFIG_PATH": str(LAB_CONFIG_DIR)}
        if cmd[0] != "make" and hasattr(os, "geteuid") and os.geteuid() == 0:
            # Containers/CI often run as root, where `jupyter lab` refuses to
            # start without this flag (`make lab LAB_ARGS=--allow-root`).
            cmd.append("--allow-root")
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so _stop reaches jupyter under make
            )
        finally:
            log.close()  # the child holds its own copy of the descriptor

        status_url = f"http://{HOST}:{port}/api/status?token={token}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_error = "no request made"
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    code, _, _ = _get(status_url, timeout=POLL_REQUEST_TIMEOUT_S)
                except OSError as err:  # connection refused while starting up
                    last_error = repr(err)
                else:
                    if code == 200:
                        return proc, port
                    last_error = f"HTTP {code}"
                time.sleep(0.25)
        except BaseException:
            _stop(proc)
            raise

        exited = proc.poll() is not None
        _stop(proc)
        output = _tail(log_path)
        if exited and "already in use" in output and attempt < PORT_ATTEMPTS:
            continue  # lost the race for the port; try another one
        if exited:
            pytest.fail(
                f"`{' '.join(cmd)}` exited early with code {proc.returncode}.\n"
                f"--- server output (tail) ---\n{output}"
            )
        pytest.fail(
            f"JupyterLab did not answer {status_url.split('?')[0]} within "
            f"{STARTUP_TIMEOUT_S:.0f} s (last: {last_error}).\n"
            f"--- server output (tail) ---\n{output}"
        )
    raise AssertionError("unreachable")


def test_jupyter_lab_serves_notebooks(tmp_path):
    notebook_dir = _notebook_dir(tmp_path)
    env = _lab_env(tmp_path)
    token = secrets.token_hex(24)
    log_path = tmp_path / "jupyter-lab.log"

    proc, port = _start_server(notebook_dir, env, token, log_path)
    base = f"http://{HOST}:{port}"
    try:
        # The API refuses requests without the token: the server is not open.
        code, _, _ = _get(f"{base}/api/contents")
        assert code == 403, f"/api/contents without token gave HTTP {code}, expected 403"

        code, ctype, body = _get(f"{base}/api/status?token={token}")
        assert code == 200
        status = json.loads(body)
        assert "started" in status, status

        code, ctype, body = _get(f"{base}/lab?token={token}")
        assert code == 200, f"/lab gave HTTP {code}:\n{body[:2000]!r}"
        assert "text/html" in ctype, ctype
        html = body.decode("utf-8", errors="replace")
        assert "JupyterLab" in html, html[:2000]

        code, ctype, body = _get(f"{base}/api/contents?token={token}")
        assert code == 200, f"/api/contents gave HTTP {code}:\n{body[:2000]!r}"
        assert "application/json" in ctype, ctype
        listing = json.loads(body)
        assert listing["type"] == "directory", listing
        assert isinstance(listing["content"], list), listing
        on_disk = sorted(
            p.name for p in notebook_dir.iterdir() if not p.name.startswith(".")
        )
        listed = sorted(item["name"] for item in listing["content"])
        assert set(listed) <= set(on_disk), (listed, on_disk)
        assert {n for n in on_disk if n.endswith(".ipynb")} <= set(listed), (listed, on_disk)

        # The page config embedded in /lab lists the prebuilt lab extensions
        # found on disk; those installed in the environment (ipywidgets is a
        # course dependency) must still be found despite the temporary user
        # dirs.  (Read from the page rather than /lab/api/extensions, which
        # may contact PyPI.)
        page_config = _page_config(html)
        names = {ext.get("name") for ext in page_config["federated_extensions"]}
        assert "@jupyter-widgets/jupyterlab-manager" in names, sorted(names)
        # No news pop-up greets a new student: the plugin that asks is disabled.
        assert NEWS_PLUGIN in page_config.get("disabledExtensions", []), page_config.get("disabledExtensions")

        assert proc.poll() is None, (
            f"server exited during the checks (code {proc.returncode}).\n"
            f"--- server output (tail) ---\n{_tail(log_path)}"
        )
    finally:
        _stop(proc)
    assert proc.returncode is not None
