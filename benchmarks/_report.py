"""Shared pieces of the benchmark scripts: the machine line, and printing (and saving) the markdown result."""
from __future__ import annotations

import os
import platform

import torch


def emit(text: str, out: str | None) -> None:
    """Print ``text`` (a blank line first) and write it to ``out`` when given."""
    print("\n" + text)
    if out:
        with open(out, "w") as fh:
            fh.write(text + "\n")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("?" where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "?")
    except OSError:
        return "?"


def machine() -> str:
    """CPU, cores, torch threads, versions and the GPU if any: the machine line of the results tables."""
    gpu = f", GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})" if torch.cuda.is_available() else ""
    return (f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"python {platform.python_version()}{gpu}")
