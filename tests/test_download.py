"""The real download code, exercised against a local HTTP server on 127.0.0.1 (no internet here).

`download_omniglot` must fetch only the missing zip, stream it to ``<name>.zip.part`` and rename it
when complete, verify it, and on a failed download leave no partial file behind.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from metalib.data import omniglot as og

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/served`` on a free localhost port; yield (url, folder, request log)."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):  # keep test output clean, record the paths
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", folder, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _real_zip(name: str) -> Path:
    path = og.find_zip(name) or SHARED / f"{name}.zip"
    if not path.is_file():
        pytest.skip(f"{name}.zip not available offline")
    return path


def test_downloads_only_the_missing_zip(server, tmp_path, monkeypatch):
    url, served, requests = server
    shutil.copy(_real_zip("images_evaluation"), served / "images_evaluation.zip")
    root = tmp_path / "data"
    (root / "omniglot").mkdir(parents=True)
    (root / "omniglot" / "images_background.zip").symlink_to(_real_zip("images_background"))
    monkeypatch.setattr(og, "URL_PREFIX", url)
    paths = og.download_omniglot(root, progress=False)
    got = root / "omniglot" / "images_evaluation.zip"
    assert paths["images_evaluation"] == got and got.read_bytes() == (served / "images_evaluation.zip").read_bytes()
    assert requests == ["/images_evaluation.zip"], f"expected one request for the missing zip, got {requests}"
    assert not list((root / "omniglot").glob("*.part")), "the .part file must be renamed when complete"


def test_failed_download_leaves_nothing(server, tmp_path, monkeypatch):
    url, _, _ = server  # serves an empty folder: every request is a 404
    monkeypatch.setattr(og, "URL_PREFIX", url)
    root = tmp_path / "data"
    with pytest.raises(og.OmniglotError, match="could not download .*METALIB_DATA"):
        og.download_omniglot(root, progress=False)
    leftovers = [p.name for p in (root / "omniglot").iterdir()] if (root / "omniglot").exists() else []
    assert leftovers == [], f"a failed download left {leftovers}"


def test_corrupt_download_is_rejected(server, tmp_path, monkeypatch):
    url, served, _ = server
    (served / "images_background.zip").write_bytes(b"<html>rate limited</html>")
    (served / "images_evaluation.zip").write_bytes(b"<html>rate limited</html>")
    monkeypatch.setattr(og, "URL_PREFIX", url)
    with pytest.raises(og.OmniglotError, match="not a readable zip"):
        og.download_omniglot(tmp_path / "data", progress=False)
    assert not list((tmp_path / "data" / "omniglot").iterdir()), "a download that fails verification is deleted"
