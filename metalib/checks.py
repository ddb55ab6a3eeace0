"""Tolerance-based checks with messages that say what is wrong and where.

Used by the autograder tests in every notebook and by metalib's own tests, e.g.
``prototype for class 2 differs: max abs error 0.31 at [5] (tolerance atol=1e-05, rtol=1e-05)``.
Taught in notebook 00 (how checks work).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

__all__ = ["assert_close", "assert_rows_close", "assert_shape", "assert_finite", "assert_episode", "forbid_calls"]


def _as_tensor(x, name: str) -> torch.Tensor:
    if x is None or x is Ellipsis:
        raise AssertionError(f"{name} is {x!r}: the function returned nothing. Did you finish the exercise "
                             f"(replace `...`) and `return` the result?")
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise AssertionError(f"{name} should be a tensor, got {type(x).__name__}") from err


def assert_shape(x, shape: Sequence[int], name: str = "value") -> None:
    """Fail unless ``x`` has exactly ``shape`` (use -1 for any size)."""
    t = _as_tensor(x, name)
    ok = t.dim() == len(shape) and all(s == -1 or s == d for s, d in zip(shape, t.shape))
    if not ok:
        raise AssertionError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def assert_finite(x, name: str = "value") -> None:
    """Fail if ``x`` has NaN or infinite entries, saying how many."""
    t = _as_tensor(x, name)
    if t.is_floating_point() and not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).sum().item()
        raise AssertionError(f"{name} has {bad} NaN/inf entries out of {t.numel()}")


def assert_close(actual, expected, *, name: str = "value", atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Fail unless ``actual`` matches ``expected`` elementwise within ``atol + rtol * |expected|``.

    The message gives the shapes when they differ, otherwise the largest error and where it is.

    Non-finite expected values: an expected ``+inf`` or ``-inf`` is matched only by the same infinity,
    and an expected NaN by nothing. NaN marks an undefined reference value (``0/0``), and two
    undefined values are not evidence of agreement (IEEE: NaN != NaN; ``torch.testing.assert_close``
    also needs ``equal_nan=True`` to accept them), so a test must not compare there. Wherever the
    expected value is finite, the actual value must be finite too.
    """
    a = _as_tensor(actual, name)
    e = _as_tensor(expected, f"expected {name}")
    if a.shape != e.shape:
        raise AssertionError(f"{name} has shape {tuple(a.shape)}, expected {tuple(e.shape)}")
    a64, e64 = a.detach().to("cpu", torch.float64), e.detach().to("cpu", torch.float64)
    finite = torch.isfinite(e64)
    if not finite.all():
        _non_finite_expected(a64, e64, finite, name)  # the infinities match: compare the rest
        a64, e64 = a64.where(finite, 0.0), e64.where(finite, 0.0)
    assert_finite(a64, name)
    err = (a64 - e64).abs()
    bound = atol + rtol * e64.abs()
    if (err > bound).any():
        worst = int(torch.argmax(err - bound))
        raise AssertionError(
            f"{name} differs: max abs error {err.max().item():.3g} at {_index(worst, a64.shape)} "
            f"(got {a64.flatten()[worst].item():.6g}, expected {e64.flatten()[worst].item():.6g}; "
            f"tolerance atol={atol:g}, rtol={rtol:g})")


def _index(flat: int, shape) -> str:
    where = list(torch.unravel_index(torch.tensor(flat), tuple(shape))) if len(shape) else []
    return "[" + ", ".join(str(int(i)) for i in where) + "]"


def _non_finite_expected(a64: torch.Tensor, e64: torch.Tensor, finite: torch.Tensor, name: str) -> None:
    """Fail where the expected value is NaN, or an infinity that ``a64`` does not equal."""
    nan = torch.isnan(e64)
    if nan.any():
        raise AssertionError(
            f"expected {name} is NaN at {_index(int(torch.nonzero(nan.flatten())[0]), e64.shape)}: the reference "
            f"value is undefined there, so nothing can match it (NaN != NaN); compare only where it is defined")
    wrong = ~finite & (a64 != e64)
    if wrong.any():
        i = int(torch.nonzero(wrong.flatten())[0])
        raise AssertionError(f"{name} at {_index(i, e64.shape)} is {a64.flatten()[i].item():.6g}, "
                             f"expected {e64.flatten()[i].item():g}")


def assert_rows_close(actual, expected, *, row_name: str = "row", atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Like `assert_close` but names the first differing row, e.g. "prototype for class 2 differs"."""
    a = _as_tensor(actual, row_name)
    e = _as_tensor(expected, f"expected {row_name}")
    if a.shape != e.shape:
        raise AssertionError(f"{row_name}s have shape {tuple(a.shape)}, expected {tuple(e.shape)}")
    for i in range(a.shape[0]):
        assert_close(a[i], e[i], name=f"{row_name} {i}", atol=atol, rtol=rtol)


def assert_episode(task, images: torch.Tensor, n_way: int, k_shot: int, n_query: int) -> None:
    """Check that ``task`` is a valid single N-way K-shot episode drawn from ``images`` (C, M, H, W).

    Checks shapes, dtypes, labels 0..N-1 with K (support) and Q (query) per label, that every
    image is one of the class's images scaled to [0, 1], that each label maps to one class,
    that the N classes are distinct, and that no drawing is both in support and query.
    """
    if task is None or task is Ellipsis:
        raise AssertionError(f"the episode is {task!r}: the function returned nothing. Did you finish the "
                             f"exercise (replace `...`) and `return` a Task?")
    try:
        xs, ys, xq, yq = task
    except (TypeError, ValueError) as err:
        raise AssertionError(f"expected Task(x_support, y_support, x_query, y_query), got {type(task).__name__}") from err
    h, w = images.shape[-2:]
    assert_shape(xs, (n_way * k_shot, 1, h, w), "x_support")
    assert_shape(xq, (n_way * n_query, 1, h, w), "x_query")
    assert_shape(ys, (n_way * k_shot,), "y_support")
    assert_shape(yq, (n_way * n_query,), "y_query")
    for nm, y, per in (("y_support", ys, k_shot), ("y_query", yq, n_query)):
        if y.dtype != torch.int64:
            raise AssertionError(f"{nm} should be int64 class ids, got {y.dtype}")
        if y.min() < 0 or y.max() >= n_way:
            raise AssertionError(f"{nm} should hold labels 0..{n_way - 1}, got values from {int(y.min())} to {int(y.max())}")
        counts = torch.bincount(y, minlength=n_way)
        if not (counts == per).all():
            raise AssertionError(f"{nm} should hold each label 0..{n_way - 1} exactly {per} times, got counts {counts.tolist()}")
    flat = images.reshape(-1, h * w).cpu().to(torch.float64) / 255  # (C*M, H*W)
    owner = torch.arange(images.shape[0]).repeat_interleave(images.shape[1])  # (C*M,)

    def locate(x, nm):
        d = torch.cdist(x.reshape(len(x), -1).detach().cpu().double(), flat,
                        compute_mode="donot_use_mm_for_euclid_dist")  # (n, C*M), exact distances
        dist, j = d.min(dim=1)  # j: the first of any identical images
        if (dist > 1e-3).any():
            raise AssertionError(f"{nm}[{int(torch.argmax(dist))}] is not one of the split's images scaled to [0, 1] "
                                 f"(divide the uint8 images by 255)")
        copies = (d <= 1e-3).sum(1)  # identical images in the split (Omniglot has a few)
        return j, copies
    (js, cs), (jq, cq) = locate(xs, "x_support"), locate(xq, "x_query")
    cls_of_label = {}
    for j, y in zip(torch.cat([js, jq]).tolist(), torch.cat([ys, yq]).cpu().tolist()):
        c = int(owner[j])
        if cls_of_label.setdefault(y, c) != c:
            raise AssertionError(f"label {y} is used for images of two different classes")
    if len(set(cls_of_label.values())) != n_way:
        raise AssertionError(f"the {n_way} labels should come from {n_way} distinct classes")
    copies = dict(zip(torch.cat([js, jq]).tolist(), torch.cat([cs, cq]).tolist()))
    uses = torch.bincount(torch.cat([js, jq]), minlength=len(flat))
    in_both = set(js.tolist()) & set(jq.tolist())
    for j in torch.nonzero(uses).flatten().tolist():
        if uses[j] > copies[j]:
            if j in in_both:
                raise AssertionError("a drawing appears in both the support and the query set: "
                                     "D^tr and D^ts must be disjoint")
            raise AssertionError("a drawing appears twice in one set: sample drawings without replacement")


@contextlib.contextmanager
def forbid_calls(*names: str, why: str = "") -> Iterator[None]:
    """Inside the block, calling a torch function named in ``names`` fails with an AssertionError.

    Names are matched against the function's ``__name__`` through a ``TorchFunctionMode``, so every
    spelling is caught: ``torch.softmax``, ``F.softmax``, ``z.softmax``, ``nn.Softmax()``, an alias
    imported under another name ("softmax" covers all of these; ``torch.special.softmax`` is
    "special_softmax"). ``why`` is appended to the message, e.g. "build it from exp and sum".
    """
    from torch.overrides import TorchFunctionMode

    class _Forbid(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in names:
                raise AssertionError(f"`{name}` was called, but this exercise asks you not to use "
                                     f"{' / '.join(names)}" + (f": {why}" if why else ""))
            return func(*args, **(kwargs or {}))

    with _Forbid():
        yield
