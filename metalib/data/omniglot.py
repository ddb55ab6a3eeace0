"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): download, verify, decode, cache.

The two official zips (``images_background.zip``: 30 alphabets, 964 characters;
``images_evaluation.zip``: 20 alphabets, 659 characters; 20 drawings each, 105x105 1-bit PNGs,
layout ``images_<set>/<Alphabet>/characterNN/NNNN_DD.png``) are decoded once into a cached
uint8 tensor ``images`` of shape (1623, 20, 28, 28) (another side with ``size=``): character-major, drawers 01..20 in order.

Resize filter: each 1-bit image is converted to 8-bit grayscale and resized with Lanczos
(antialiased), then inverted so ink = 255 and background = 0. (Pillow silently uses nearest
neighbour when asked for Lanczos on a 1-bit image; MAML's preprocessing effectively did that.)

Splits are in `metalib.data.splits`. Taught in notebook 01 (supervised meta-learning).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import atomic_save

__all__ = [
    "Omniglot", "OmniglotError", "load_omniglot", "download_omniglot", "verify_zip",
    "data_root", "find_zip", "cache_path", "preprocess_png", "ZIP_NAMES", "URL_PREFIX",
]

URL_PREFIX = "https://github.com/brendenlake/omniglot/raw/master/python"
ZIP_NAMES = ("images_background", "images_evaluation")
#: number of characters in each zip (content check)
EXPECTED_CHARS = {"images_background": 964, "images_evaluation": 659}
DRAWERS = 20
SIZE = 28
CACHE_VERSION = 2
#: known-good checksums: upstream md5 (brendenlake/omniglot) and the repacked offline copy's sha256
KNOWN_MD5 = {"images_background": "68d2efa1b9178cc56df9314c21c6e718",
             "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
KNOWN_SHA256 = {"images_background": "4afbe449cc5d17eb17a651c06a54bd04ad56d18088fd4abd52e7c56f62f26db6",
                "images_evaluation": "43bcc2c1547eca6f5135272ed9583ce0f52b37d7fd90f9ba07c52f456c100e94"}
_PNG_RE = re.compile(r"^(images_\w+)/([^/]+)/character(\d+)/(\d+)_(\d+)\.png$")


class OmniglotError(RuntimeError):
    """Omniglot is missing, corrupt, or does not have the expected content."""


@dataclass(frozen=True)
class Omniglot:
    """The decoded dataset (all 1623 characters), as stored in the cache.

    Attributes:
        images: uint8 (1623, 20, size, size), ink = 255 (size 28 unless ``load_omniglot(size=...)``).
        alphabet: int64 (1623,) index into ``alphabet_names``.
        background: bool (1623,) True for characters of images_background.
        drawer: int64 (1623, 20) the drawer (the DD in ``NNNN_DD.png``, 1..20) of each image.
        file_id: int64 (1623,) the NNNN in the file names (1..1623).
        char_names: "Alphabet/characterNN" for each character.
        alphabet_names: "images_<set>/Alphabet" for each alphabet.
    """
    images: torch.Tensor
    alphabet: torch.Tensor
    background: torch.Tensor
    drawer: torch.Tensor
    file_id: torch.Tensor
    char_names: tuple[str, ...]
    alphabet_names: tuple[str, ...]

    @property
    def n_chars(self) -> int:
        return self.images.shape[0]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root``, else ``METALIB_DATA``, else the project's ``data/``, else ~/.cache/metalib."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("METALIB_DATA")
    if env:
        return Path(env).expanduser()
    project = Path(__file__).resolve().parents[2]
    if (project / "pyproject.toml").exists():
        return project / "data"
    return Path.home() / ".cache" / "metalib"


def find_zip(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """Return the path of ``<name>.zip`` under ``root/omniglot/`` or ``root/``, or None."""
    base = data_root(root)
    for folder in (base / "omniglot", base):
        path = folder / f"{name}.zip"
        if path.is_file():
            return path
    return None


def _writable(folder: Path) -> bool:
    """True if ``folder`` exists (or can be made) and its mode has a write bit.

    The mode bits are checked, not just ``os.access``: root may write anywhere, but a folder
    marked read-only (like a shared dataset copy) must not receive our cache.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return bool(folder.stat().st_mode & 0o222) and os.access(folder, os.W_OK)


def cache_path(root: str | os.PathLike | None = None, size: int = SIZE) -> Path:
    """Where the decoded tensor cache lives: ``METALIB_CACHE``, else beside the zips if writable, else ~/.cache/metalib."""
    env = os.environ.get("METALIB_CACHE")
    if env:
        return Path(env).expanduser() / f"omniglot{size}_v{CACHE_VERSION}.pt"
    folder = data_root(root) / "omniglot"
    if not _writable(folder):
        folder = Path.home() / ".cache" / "metalib"
    return folder / f"omniglot{size}_v{CACHE_VERSION}.pt"


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def verify_zip(path: str | os.PathLike, name: str) -> str:
    """Check one zip: a known checksum, or else a full content check.

    Args:
        path: the zip file.
        name: ``images_background`` or ``images_evaluation``.

    Returns:
        The file's sha256 (used to tie the cache to its source).

    Raises:
        OmniglotError: the file is not a readable zip or lacks the expected characters.
    """
    path = Path(path)
    md5, sha = _digests(path)
    if md5 == KNOWN_MD5[name] or sha == KNOWN_SHA256[name]:
        return sha
    counts = _count_characters(path, name)
    bad = {c: n for c, n in counts.items() if n != DRAWERS}
    if len(counts) != EXPECTED_CHARS[name] or bad:
        raise OmniglotError(
            f"{path} has {len(counts)} characters (expected {EXPECTED_CHARS[name]}) and "
            f"{len(bad)} characters without {DRAWERS} drawings: it is not the official Omniglot zip. "
            f"Delete it and run `python -m metalib download omniglot`.")
    warnings.warn(f"{path}: unknown checksum, but the content check passed "
                  f"({len(counts)} characters x {DRAWERS} drawings)", stacklevel=2)
    return sha


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise OmniglotError(f"{path} is not a readable zip ({err}); it is probably truncated. "
                            f"Delete it and run `python -m metalib download omniglot`.") from err


def _count_characters(path: Path, name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with _open_zip(path) as zf:
        for entry in zf.namelist():
            m = _PNG_RE.match(entry)
            if m and m.group(1) == name:
                key = f"{m.group(2)}/character{m.group(3)}"
                counts[key] = counts.get(key, 0) + 1
    return counts


def download_omniglot(root: str | os.PathLike | None = None, *, progress: bool = True) -> dict[str, Path]:
    """Make sure both zips are present and verified, downloading what is missing.

    Downloads go to ``<root>/omniglot/<name>.zip.part`` with a progress bar, then are renamed.

    Returns:
        ``{name: path}`` for both zips.

    Raises:
        OmniglotError: a download failed or a zip does not verify.
    """
    return _ensure_zips(root, progress=progress)[0]


def _ensure_zips(root, *, progress: bool) -> tuple[dict[str, Path], dict[str, str]]:
    paths, shas = {}, {}
    for name in ZIP_NAMES:
        path = find_zip(name, root)
        fresh = path is None
        if fresh:
            path = data_root(root) / "omniglot" / f"{name}.zip"
            _download(f"{URL_PREFIX}/{name}.zip", path, progress=progress)
        try:
            shas[name] = verify_zip(path, name)
        except OmniglotError:
            if fresh:  # never keep a bad download (e.g. an HTML error page saved as .zip)
                path.unlink(missing_ok=True)
            raise
        paths[name] = path
    return paths, shas


def _download(url: str, dest: Path, *, progress: bool, sha256: str | None = None) -> None:
    """Stream ``url`` to ``dest`` + ".part", then rename it to ``dest``; nothing is left behind on failure.

    With ``sha256`` the finished ``.part`` file must have that checksum, or it is deleted and refused.
    """
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as err:
        part.unlink(missing_ok=True)
        raise OmniglotError(
            f"could not download {url} ({err}). Without internet, copy {dest.name} (like the other Omniglot "
            f"zips) into {dest.parent} or point METALIB_DATA at a folder holding it.") from err
    if sha256 is not None and (got := _digests(part)[1]) != sha256:
        part.unlink(missing_ok=True)
        raise OmniglotError(f"the download of {url} has sha256 {got}, expected {sha256}: refused and deleted "
                            f"(a proxy's error page or a changed upstream file). Try again, or copy the file into {dest.parent}.")
    os.replace(part, dest)


def _decode_zip(path: Path, name: str, progress: bool, size: int = SIZE
                ) -> tuple[list[str], list[int], list[list[int]], np.ndarray]:
    """Decode one zip to (character names, file ids, drawers, uint8 images (C, 20, size, size))."""
    from tqdm.auto import tqdm

    by_char: dict[str, list[tuple[int, int, str]]] = {}
    with _open_zip(path) as zf:
        for entry in zf.namelist():
            m = _PNG_RE.match(entry)
            if m and m.group(1) == name:
                key = f"{m.group(2)}/character{m.group(3)}"
                by_char.setdefault(key, []).append((int(m.group(5)), int(m.group(4)), entry))
        chars = sorted(by_char)
        out = np.empty((len(chars), DRAWERS, size, size), dtype=np.uint8)
        ids, drawers = [], []
        for c, key in enumerate(tqdm(chars, desc=f"decoding {name}", unit="char", disable=not progress)):
            drawings = sorted(by_char[key])
            if len(drawings) != DRAWERS:
                raise OmniglotError(f"{path}: {key} has {len(drawings)} drawings, expected {DRAWERS}")
            ids.append(drawings[0][1])
            drawers.append([d for d, _, _ in drawings])
            for d, (_, _, entry) in enumerate(drawings):
                try:
                    out[c, d] = preprocess_png(zf.read(entry), size)
                except (zipfile.BadZipFile, OSError, ValueError) as err:
                    raise OmniglotError(f"{path}: cannot read {entry} ({err}); the zip is corrupt. "
                                        f"Delete it and run `python -m metalib download omniglot`.") from err
    return chars, ids, drawers, out


def preprocess_png(png: bytes, size: int = SIZE) -> np.ndarray:
    """One drawing as the cache stores it: uint8 (size, size), ink = 255 (see the module docstring).

    The PNG is converted to 8-bit grayscale, resized with Lanczos and inverted. Every image the models
    see goes through here (the cache, and Lake et al.'s 20 runs in `metalib.data.lake_runs`).
    """
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("L")
    return 255 - np.asarray(img.resize((size, size), Image.LANCZOS))


def _build(paths: dict[str, Path], shas: dict[str, str], progress: bool, size: int = SIZE) -> dict:
    names, ids, drawers, arrays, alphabets, background = [], [], [], [], [], []
    alphabet_names: list[str] = []
    for name in ZIP_NAMES:
        chars, file_ids, char_drawers, images = _decode_zip(paths[name], name, progress, size)
        if len(chars) != EXPECTED_CHARS[name]:
            raise OmniglotError(f"{paths[name]} has {len(chars)} characters, expected {EXPECTED_CHARS[name]}")
        for key in chars:
            alpha = f"{name}/{key.split('/')[0]}"
            if alpha not in alphabet_names:
                alphabet_names.append(alpha)
            alphabets.append(alphabet_names.index(alpha))
        names += chars
        ids += file_ids
        drawers += char_drawers
        arrays.append(images)
        background += [name == "images_background"] * len(chars)
    return {
        "version": CACHE_VERSION, "sources": shas,
        "images": torch.from_numpy(np.concatenate(arrays)),
        "alphabet": torch.tensor(alphabets), "background": torch.tensor(background),
        "drawer": torch.tensor(drawers), "file_id": torch.tensor(ids), "char_names": names, "alphabet_names": alphabet_names,
    }


def load_omniglot(root: str | os.PathLike | None = None, *, download: bool = True,
                  progress: bool = True, size: int = SIZE) -> Omniglot:
    """Load all 1623 characters, decoding the zips into the cache on first use.

    Args:
        root: folder holding (or to receive) the zips; default `data_root()`.
        download: fetch missing zips from GitHub. If False, a missing zip is an error.
        progress: show download and decoding progress bars.
        size: side of the square images (default 28, the papers'; 16..105, the originals are 105x105).
            Each size has its own cache file.

    Returns:
        An `Omniglot` with CPU tensors (move ``images`` to the device once, see `metalib.tasks`).

    Raises:
        OmniglotError: zips missing (message names the download command), corrupt, or wrong.
    """
    if not 16 <= int(size) <= 105:
        raise ValueError(f"size must be between 16 (Conv-4 pools four times) and 105 (the original drawings), got {size}")
    cache = cache_path(root, size)
    if cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
        except Exception as err:  # truncated or foreign file: rebuild it from the zips
            warnings.warn(f"ignoring unreadable Omniglot cache {cache} ({type(err).__name__}); rebuilding it", stacklevel=2)
            blob = {}
        if isinstance(blob, dict) and blob.get("version") == CACHE_VERSION:
            return _from_blob(blob)
    missing = [n for n in ZIP_NAMES if find_zip(n, root) is None]
    if missing and not download:
        raise OmniglotError(
            f"Omniglot zips {missing} not found in {data_root(root)} or {data_root(root) / 'omniglot'}. "
            f"Run `python -m metalib download omniglot`, or set METALIB_DATA to a folder holding them.")
    paths, shas = _ensure_zips(root, progress=progress)
    blob = _build(paths, shas, progress, size)
    atomic_save(blob, cache)
    return _from_blob(blob)


def _from_blob(blob: dict) -> Omniglot:
    return Omniglot(images=blob["images"], alphabet=blob["alphabet"], background=blob["background"],
                    drawer=blob["drawer"], file_id=blob["file_id"], char_names=tuple(blob["char_names"]),
                    alphabet_names=tuple(blob["alphabet_names"]))
