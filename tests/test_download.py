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


def _fake_runs_zip(path: Path) -> str:
    """A small zip standing in for all_runs.zip; returns its sha256."""
    import hashlib
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("run01/class_labels.txt", "run01/test/item01.png run01/training/class01.png\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_runs_fetches_and_verifies(server, tmp_path, monkeypatch):
    """`download_runs` fetches <URL_PREFIX>/one-shot-classification/all_runs.zip and keeps it once its sha256 matches."""
    from metalib.data import lake_runs

    url, served, requests = server
    (served / "one-shot-classification").mkdir()
    sha = _fake_runs_zip(served / "one-shot-classification" / "all_runs.zip")
    monkeypatch.setattr(og, "URL_PREFIX", url)
    monkeypatch.setattr(lake_runs, "RUNS_SHA256", sha)
    root = tmp_path / "data"
    path = lake_runs.download_runs(root, progress=False)
    assert path == root / "omniglot" / "all_runs.zip"
    assert path.read_bytes() == (served / "one-shot-classification" / "all_runs.zip").read_bytes()
    assert requests == ["/one-shot-classification/all_runs.zip"]
    assert lake_runs.download_runs(root, progress=False) == path and len(requests) == 1, "found, not fetched again"


def test_download_runs_refuses_a_bad_checksum(server, tmp_path, monkeypatch):
    """A download whose sha256 is not the official one is refused, and neither it nor its .part file is kept."""
    from metalib.data import lake_runs

    url, served, _ = server
    (served / "one-shot-classification").mkdir()
    _fake_runs_zip(served / "one-shot-classification" / "all_runs.zip")  # not the official bytes
    monkeypatch.setattr(og, "URL_PREFIX", url)
    root = tmp_path / "data"
    with pytest.raises(og.OmniglotError, match=f"expected {lake_runs.RUNS_SHA256}"):
        lake_runs.download_runs(root, progress=False)
    assert list((root / "omniglot").iterdir()) == [], "a download that fails its checksum is deleted"


def test_runs_are_found_offline_and_checked(tmp_path, monkeypatch):
    """Offline, all_runs.zip is found like the other zips (METALIB_DATA); a local file with other bytes is refused."""
    from metalib.data import lake_runs

    real = og.find_zip("all_runs") or SHARED / "all_runs.zip"
    if not real.is_file():
        pytest.skip("all_runs.zip not available offline")
    monkeypatch.setattr(og, "URL_PREFIX", "http://127.0.0.1:9")  # any download attempt fails
    monkeypatch.setenv("METALIB_DATA", str(real.parent.parent))
    assert lake_runs.download_runs(progress=False) == real
    (tmp_path / "omniglot").mkdir()
    _fake_runs_zip(tmp_path / "omniglot" / "all_runs.zip")
    with pytest.raises(og.OmniglotError, match="not that of Lake et al.'s all_runs.zip"):
        lake_runs.download_runs(tmp_path, progress=False)
    with pytest.raises(og.OmniglotError, match="not found"):
        lake_runs.download_runs(tmp_path / "empty", download=False)
