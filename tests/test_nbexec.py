"""metalib.grading.nbexec: a missed ZeroMQ wake-up costs one slice, not the cell's whole timeout."""
from __future__ import annotations

import asyncio
from queue import Empty

import nbformat
import pytest

from metalib.grading.nbexec import SlicedNotebookClient, sliced


class MissedWakeup:
    """A channel's ``get_msg`` as pyzmq behaves after a missed edge-triggered wake-up: the message is
    there, but the poll only notices it when its timeout runs out (never, with no timeout)."""

    def __init__(self, messages=()):
        self.messages = list(messages)
        self.calls = []

    async def get_msg(self, timeout=None):
        self.calls.append(timeout)
        if timeout is None:
            await asyncio.Event().wait()  # sleeps through the message for good
        await asyncio.sleep(timeout)
        if self.messages:
            return self.messages.pop(0)
        raise Empty


def run(coro, limit: float):
    async def bounded():
        return await asyncio.wait_for(coro, limit)
    return asyncio.run(bounded())


def test_a_missed_wakeup_costs_one_slice_not_the_cell_timeout():
    channel = MissedWakeup(["reply"])
    # Unsliced, this call would return after 600 s; the bound of 5 s fails the test then.
    get_msg = sliced(channel.get_msg, 0.05)
    assert get_msg.__wrapped__ == channel.get_msg  # what the clients' channels are recognised by
    assert run(get_msg(timeout=600), limit=5) == "reply"
    assert max(channel.calls) <= 0.05


def test_a_missed_wakeup_with_no_timeout_still_returns():
    channel = MissedWakeup(["output"])
    assert run(sliced(channel.get_msg, 0.05)(timeout=None), limit=5) == "output"


def test_empty_is_raised_at_the_callers_deadline_not_at_the_first_slice():
    channel = MissedWakeup()
    with pytest.raises(Empty):
        run(sliced(channel.get_msg, 0.05)(timeout=0.3), limit=5)
    assert len(channel.calls) >= 4, channel.calls  # kept waiting, slice after slice, until 0.3 s
    assert all(0 <= t <= 0.05 for t in channel.calls)


def test_no_timeout_and_no_message_waits_on():
    channel = MissedWakeup()
    with pytest.raises(asyncio.TimeoutError):
        run(sliced(channel.get_msg, 0.05)(timeout=None), limit=0.4)
    assert len(channel.calls) >= 3


def test_zero_timeout_polls_once():
    channel = MissedWakeup(["now"])
    assert run(sliced(channel.get_msg, 0.05)(timeout=0), limit=5) == "now"
    assert channel.calls == [0.0]


def test_a_slice_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        sliced(MissedWakeup().get_msg, 0)


def _tiny_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    return nb


def _wrapped(client):
    return [hasattr(ch.get_msg, "__wrapped__") for ch in (client.kc.shell_channel, client.kc.iopub_channel)]


def test_the_client_slices_its_kernels_channels_in_execute(monkeypatch):
    seen = []
    original = SlicedNotebookClient.async_execute_cell

    async def spy(self, *args, **kwargs):
        seen.append(_wrapped(self))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SlicedNotebookClient, "async_execute_cell", spy)
    nb = _tiny_notebook()
    SlicedNotebookClient(nb, timeout=60, kernel_name="python3").execute()
    assert seen == [[True, True]]
    assert nb.cells[0].outputs[0]["text"] == "42\n"


def test_the_client_slices_its_kernels_channels_in_setup_kernel():
    """benchmarks/demo_mode.py drives cells one by one inside the synchronous ``setup_kernel()``."""
    nb = _tiny_notebook()
    client = SlicedNotebookClient(nb, timeout=60, kernel_name="python3")
    with client.setup_kernel():
        assert _wrapped(client) == [True, True]
        client.execute_cell(nb.cells[0], 0)
    assert nb.cells[0].outputs[0]["text"] == "42\n"
