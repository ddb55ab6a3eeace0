"""Quick mode: one switch that shrinks every experiment for CI and fast previews.

Every experiment has one frozen dataclass config. ``METALIB_QUICK=1`` makes `maybe_quick`
return ``dataclasses.replace(cfg, **cfg.quick_overrides())`` — smaller sizes, same code path.

Taught in notebook 00 (welcome).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, TypeVar

__all__ = ["is_quick", "maybe_quick", "QUICK_ENV"]

QUICK_ENV = "METALIB_QUICK"
C = TypeVar("C")


def is_quick() -> bool:
    """True when ``METALIB_QUICK`` is set to 1/true/yes (case-insensitive)."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def maybe_quick(cfg: C, **overrides: Any) -> C:
    """Shrink ``cfg`` in quick mode; return it unchanged otherwise.

    Args:
        cfg: a frozen dataclass instance.
        **overrides: the quick-mode values (fields of ``cfg``). If none are given, the
            config's own ``quick_overrides()`` method supplies them.

    Returns:
        ``cfg`` or ``dataclasses.replace(cfg, **overrides)``.

    Raises:
        TypeError: ``cfg`` is not a dataclass instance.
        ValueError: an override names a field the config does not have.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"maybe_quick expects a dataclass instance, got {type(cfg).__name__}")
    if not is_quick():
        return cfg
    if not overrides and hasattr(cfg, "quick_overrides"):
        overrides = cfg.quick_overrides()
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"quick-mode overrides {unknown} are not fields of {type(cfg).__name__}; fields are {sorted(names)}")
    return dataclasses.replace(cfg, **overrides)
