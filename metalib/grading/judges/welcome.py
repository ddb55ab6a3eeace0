"""Judge of notebook 00 (welcome: a stable softmax), checked outside the student's process.

The public probes use the public tests' inputs; the hidden ones draw their logits (shape, scale,
seed) when grading starts. Expected values are float64 ``torch.softmax`` in the grader's process.
Using softmax itself is forbidden: the probe records (in the sandbox) which of ``softmax``,
``log_softmax``, ``special_softmax`` the answer called, through every spelling, and the judge fails it.
"""
from __future__ import annotations

import random

from ..judge import Judge, Probe
from .common import RECORDER, nothing, tensors

FORBIDDEN = ("softmax", "log_softmax", "special_softmax")


def _probe(make_z: str) -> str:
    return RECORDER + (f"z = {make_z}\n"
                       f"with _Recorder({FORBIDDEN!r}) as _rec:\n"
                       "    p = softmax(z)\n"
                       "result = {'p': p, 'called': list(_rec.called)}\n")


def _softmax(name: str, *, rtol: float, atol: float = 1e-6, dtype: bool = False, finite: bool = False,
             sums: bool = False):
    values = tensors(name, atol=atol, rtol=rtol, dtype=dtype, finite=finite)

    def check(got, expected):
        if not isinstance(got, dict) or not isinstance(got.get("called"), list):
            raise AssertionError("the probe's measurement did not come back")
        if got["called"]:
            raise AssertionError(f"`{got['called'][0]}` was called, but this exercise asks you not to use "
                                 f"{' / '.join(FORBIDDEN)}: build softmax from exp and sum")
        nothing(got.get("p"), name)
        values(got["p"], expected["p"])
        if sums:
            p = got["p"].double()
            tensors("row sums", atol=1e-5)(p.sum(-1), p.new_ones(p.shape[:-1]))
    return check


EPS32 = 2.0 ** -23  # float32 precision: logits as large as m are stored to within m * EPS32


def make_probes(rng: random.Random) -> list[Probe]:
    shape = tuple(rng.randint(2, 6) for _ in range(rng.randint(3, 4))) + (rng.randint(5, 13),)
    scale = round(rng.uniform(5.0, 12.0), 3)  # float32 exp(z) overflows past 88: only a shift keeps 1000s finite
    vec = [round(rng.gauss(0, 4), 4) for _ in range(rng.randint(2, 9))]
    a, b = round(rng.uniform(500, 3000), 1), round(rng.uniform(500, 3000), 1)
    big = [[a, a + round(rng.uniform(-3, 3), 2), a + round(rng.uniform(-3, 3), 2)], [-b, 0.0, b]]
    return [
        Probe("q1", "test_softmax_matches_torch", False,
              _probe("torch.randn(4, 7, generator=torch.Generator().manual_seed(0))"),
              check=_softmax("softmax(z)", rtol=1e-5)),
        Probe("q1", "test_softmax_is_stable", False,
              _probe("torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]])"),
              check=_softmax("softmax of large logits (subtract the row maximum before exp)", finite=True,
                             rtol=EPS32 * 1002)),
        Probe("q1", "test_softmax_any_shape", True,
              _probe(f"{scale} * torch.randn({shape}, generator=torch.Generator().manual_seed({rng.randrange(10**6)}))"),
              check=_softmax(f"softmax of a {len(shape)}-d tensor, over the last dimension", finite=True,
                             rtol=EPS32 * scale * 6, sums=True)),
        Probe("q1", "test_softmax_float64_and_1d", True, _probe(f"torch.tensor({vec}, dtype=torch.float64)"),
              check=_softmax("softmax of a float64 vector", atol=1e-12, rtol=1e-10, dtype=True)),
        Probe("q1", "test_softmax_large_logits_other_rows", True, _probe(f"torch.tensor({big})"),
              check=_softmax("softmax of other large logits (subtract the row maximum before exp)", finite=True,
                             rtol=EPS32 * 3100)),
    ]


def references() -> dict:
    import torch

    def softmax(z):  # in float64, for float32 logits too (the comparison casts the answer to float64)
        return torch.softmax(z.double(), dim=-1)

    return {"softmax": softmax}


JUDGE = Judge("00_welcome", make_probes, references)
