"""An nbclient ``NotebookClient`` that cannot sleep through a kernel's reply.

Used by the grader's runner (`metalib.grading.runner`), the test suite's notebook runs
(``tests/notebook_runner.py``) and the demo-mode benchmark: every place where the project executes a
notebook in a kernel.

Why. nbclient waits for a cell's ``execute_reply`` with a single ``get_msg(timeout=T)`` on the shell
channel, ``T`` being the cell timeout (600 s in the tests). jupyter_client's asynchronous channels wait
through ``zmq.asyncio``, which watches ZeroMQ's edge-triggered file descriptor. When that wake-up is
missed, the poll does not return when the message arrives but only when ``T`` runs out; at that moment
pyzmq polls once more, finds the message and returns it as if nothing happened (pyzmq issues #1558 and
#2173 describe the same symptom). In this project's CI that cost a run 600 s, about once in three runs,
and the test still passed: the notebook's cells had taken seconds (their kernel-side timestamps say so).

The fix is local and does not change what any wait means: each channel's ``get_msg`` waits in slices
of at most ``SLICE`` seconds until its own deadline, so a missed wake-up costs at most one slice. A
slice that ends without a message raises nothing; only the caller's own deadline raises ``Empty``.
"""
from __future__ import annotations

import time
from queue import Empty

from nbclient import NotebookClient
from nbclient.util import run_sync

SLICE = 0.5  # seconds: the most a missed wake-up can delay a message


def sliced(get_msg, slice_s: float = SLICE):
    """``get_msg(timeout=None)`` (an async channel's) made to wait in slices of ``slice_s`` seconds.

    Same contract as the original: returns the next message, or raises ``queue.Empty`` once
    ``timeout`` seconds (``None``: no limit) have passed without one."""
    if slice_s <= 0:
        raise ValueError(f"slice_s must be positive, got {slice_s}")

    async def get_msg_sliced(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout))
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = slice_s if left is None else max(0.0, min(slice_s, left))
            try:
                return await get_msg(timeout=step)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    get_msg_sliced.__wrapped__ = get_msg
    return get_msg_sliced


class SlicedNotebookClient(NotebookClient):
    """``NotebookClient`` whose shell and IOPub waits are `sliced` (see the module docstring)."""

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):  # a new client's channels: wrapped once
            channel.get_msg = sliced(channel.get_msg)
        return kc

    # nbclient's synchronous wrapper was bound to the base class's coroutine; rebind it to this one
    # (``setup_kernel()``, the synchronous context manager, calls it).
    start_new_kernel_client = run_sync(async_start_new_kernel_client)
