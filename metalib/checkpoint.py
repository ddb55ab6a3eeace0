"""Checkpoints: small state dicts plus plain metadata, written atomically, loaded safely.

Loading always uses ``torch.load(..., weights_only=True)``: a checkpoint holding pickled Python
objects (which could run code) is refused with a clear message. Used by `metalib.train` and by
every notebook that ships a pretrained model under ``data/checkpoints/``.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "load_checkpoint_of_kind", "resolve_checkpoint", "atomic_save",
           "checkpoint_dir", "UnsafeCheckpointError"]


class UnsafeCheckpointError(ValueError):
    """The file holds something other than tensors and plain Python values."""


def checkpoint_dir() -> Path:
    """``data/checkpoints`` of the project (shipped pretrained models), or ``$METALIB_CHECKPOINTS``
    (an installed wheel has no project folder: the Gradescope autograder ships them beside it)."""
    if os.environ.get("METALIB_CHECKPOINTS"):
        return Path(os.environ["METALIB_CHECKPOINTS"])
    return Path(__file__).resolve().parents[1] / "data" / "checkpoints"


def _plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (torch.Tensor, str, int, float, bool)) or x is None:
        return x
    raise TypeError(f"cannot store {type(x).__name__} in a checkpoint; convert it to tensors or plain values")


def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], **meta: Any) -> Path:
    """Write ``{"state_dict": ..., "meta": {...}}`` atomically (temp file, then rename).

    Args:
        path: destination ``.pt`` file.
        state_dict: tensors (e.g. ``model.state_dict()``); stored on the CPU.
        **meta: plain values only: config (a dataclass is converted), history, the command
            that reproduces the checkpoint, its measured accuracy.
    """
    blob = {"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "meta": _plain(meta)}
    return atomic_save(blob, path)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file.

    The file gets the permissions of an ordinary new file (0666 minus the umask), not mkstemp's 0600:
    the sandboxed grader reads the Omniglot cache as another user.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (``weights_only=True``).

    Returns:
        ``{"state_dict": {...}, "meta": {...}}``.

    Raises:
        FileNotFoundError: no such file (the message says how to produce it).
        UnsafeCheckpointError: the file contains pickled objects other than tensors/plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; train the model first (the notebook's "
                                f"TRAIN_FROM_SCRATCH switch) or check data/checkpoints/README.md")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError) as err:  # zip reader: truncated or not a torch file at all
        raise ValueError(f"checkpoint {path} is truncated or not a torch checkpoint ({str(err).splitlines()[0]}); "
                         f"re-create it (see data/checkpoints/README.md)") from err
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it contains pickled Python objects, not only tensors and plain "
            f"values, and loading it could run arbitrary code. Re-save it with metalib.save_checkpoint. "
            f"({str(err).splitlines()[0]})") from err
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise UnsafeCheckpointError(f"{path} is not a metalib checkpoint (no 'state_dict' key)")
    blob.setdefault("meta", {})
    return blob


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else a bare name ("protonet_1shot" or "protonet_1shot.pt") in ``data/checkpoints/``."""
    path = Path(path)
    if not path.exists() and not path.is_absolute():
        path = next((c for c in (checkpoint_dir() / path, checkpoint_dir() / f"{path}.pt") if c.exists()), path)
    return path


def load_checkpoint_of_kind(path: str | os.PathLike, kind: str, writer: str) -> tuple[Path, dict[str, Any]]:
    """``(resolved path, checkpoint)`` of a checkpoint whose metadata says ``kind`` and holds a ``config``.

    A bare name ("protonet_1shot" or "protonet_1shot.pt") is looked up in ``data/checkpoints/`` when it is
    not found as given. ``writer`` (e.g. "metalib.maml_train.save_maml") names the function that writes
    this kind, for the error raised on any other checkpoint.
    """
    path = resolve_checkpoint(path)
    blob = load_checkpoint(path)
    if blob["meta"].get("kind") != kind or "config" not in blob["meta"]:
        raise ValueError(f"{path} was not written by {writer} (no {kind} config in its metadata); "
                         f"load it with the function that saved it")
    return path, blob
