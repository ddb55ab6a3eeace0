"""Shared ending of the benchmark scripts: print the markdown result and optionally save it."""
from __future__ import annotations


def emit(text: str, out: str | None) -> None:
    """Print ``text`` (a blank line first) and write it to ``out`` when given."""
    print("\n" + text)
    if out:
        with open(out, "w") as fh:
            fh.write(text + "\n")
