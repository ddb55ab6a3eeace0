"""metalib.matching: behaviour that `make mutants MODULES=matching.py` showed untested by tests/test_metric.py.

Each test is named after what it guards and compares with an independent value (a hand-computed
number, the documented default, a plain formula), never with the code under test.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metalib.matching import FullContextEmbedding, MatchingNet, attention, attention_logits, label_log_probs
from metalib.tasks import Task


def _pixels_model(**kw) -> MatchingNet:
    """A MatchingNet whose f is the identity on 2-pixel 'images' (..., 1, 1, 2) -> (..., 2)."""
    model = MatchingNet(hidden=2, **kw)
    model.f = nn.Flatten(-3)
    return model


def _task():
    # support: class 0 at (1, 0) and (0, 1), class 1 at (-1, 0); one query at (1, 1)
    xs = torch.tensor([[1., 0.], [0., 1.], [-1., 0.]]).reshape(1, 3, 1, 1, 2)
    xq = torch.tensor([[1., 1.]]).reshape(1, 1, 1, 1, 2)
    return Task(xs, torch.tensor([[0, 0, 1]]), xq, torch.tensor([[0]]))


def _by_hand(scores):
    """log p(class) from attention scores (s0, s1, s2) with labels (0, 0, 1), as in the paper."""
    w = [math.exp(s) for s in scores]
    return [math.log((w[0] + w[1]) / sum(w)), math.log(w[2] / sum(w))]


def test_matching_net_defaults_are_cosine_scaled_by_ten_without_fce():
    model = MatchingNet()
    assert model.kernel == "cosine" and model.fce is None and model.g is None
    assert model.log_scale is not None and math.isclose(model.log_scale.exp().item(), 10.0, rel_tol=1e-6)
    assert model.embed(torch.rand(2, 1, 28, 28)).shape == (2, 64)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4


def test_matching_net_separate_support_embeds_the_support_with_g():
    torch.manual_seed(0)
    model = MatchingNet(hidden=8, separate_support=True).eval()
    assert model.g is not None
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.embed_support(x), model.g(x))
        assert not torch.allclose(model.embed_support(x), model.embed(x))


def test_fce_defaults_to_five_steps():
    assert FullContextEmbedding(4).steps == 5
    model = MatchingNet(hidden=4, fce=True)
    assert isinstance(model.fce, FullContextEmbedding) and model.fce.steps == 5
    assert MatchingNet(hidden=4, fce=True, fce_steps=2).fce.steps == 2


def test_cosine_kernel_with_the_scale_by_hand():
    """cos((1,1), .) = (1/sqrt2, 1/sqrt2, -1/sqrt2), times the scale 10."""
    model = _pixels_model()
    c = 1 / math.sqrt(2)
    got = model(_task())[0, 0]
    torch.testing.assert_close(got, torch.tensor(_by_hand([10 * c, 10 * c, -10 * c])))


def test_dot_kernel_is_never_scaled():
    """The seed's dot-product kernel is used as is: no learned scale, even when ``scale`` is given."""
    for scale in (10.0, 3.0):
        model = _pixels_model(kernel="dot", scale=scale)
        assert model.log_scale is None
        torch.testing.assert_close(model(_task())[0, 0], torch.tensor(_by_hand([1.0, 1.0, -1.0])))


def test_unscaled_cosine_kernel_by_hand():
    model = _pixels_model(scale=None)
    c = 1 / math.sqrt(2)
    torch.testing.assert_close(model(_task())[0, 0], torch.tensor(_by_hand([c, c, -c])))


def test_forward_infers_n_way_from_the_labels_or_takes_it():
    model = _pixels_model(kernel="dot")
    assert model(_task()).shape == (1, 1, 2)
    with pytest.raises(ValueError, match=r"^a class in 0\.\.2 has no support example; every class needs >= 1 "
                                         r"\(or pass the n_way the labels actually use\)$"):
        model(_task(), n_way=3)


def test_cosine_normalises_each_embedding_not_each_feature():
    """Cosine of (3, 4) with (1, 0) and (0, 2): 0.6 and 0.8, whatever the other vectors are."""
    zq = torch.tensor([[[3., 4.]]])
    zs = torch.tensor([[[1., 0.], [0., 2.]]])
    torch.testing.assert_close(attention_logits(zq, zs, "cosine"), torch.tensor([[[0.6, 0.8]]]))
    torch.testing.assert_close(attention_logits(zq, zs, "dot"), torch.tensor([[[3., 8.]]]))
    with pytest.raises(ValueError, match=r"^kernel must be one of \('cosine', 'dot'\), got 'l2'$"):
        attention_logits(zq, zs, "l2")
    with pytest.raises(ValueError, match=r"^kernel must be one of \('cosine', 'dot'\), got 'l2'$"):
        MatchingNet("l2")


def test_label_log_probs_by_hand():
    scores = torch.tensor([[[0.0, math.log(3.0), 0.0]]])  # weights 1, 3, 1 over labels 1, 0, 1
    got = label_log_probs(scores, torch.tensor([[1, 0, 1]]), 2)
    torch.testing.assert_close(got, torch.tensor([[[math.log(3 / 5), math.log(2 / 5)]]]))


def test_kernel_defaults_to_the_papers_cosine():
    zq = torch.tensor([[[3., 4.]]])
    zs = torch.tensor([[[1., 0.], [0., 2.]]])
    torch.testing.assert_close(attention_logits(zq, zs), torch.tensor([[[0.6, 0.8]]]))
    e6, e8 = math.exp(0.6), math.exp(0.8)
    torch.testing.assert_close(attention(zq, zs), torch.tensor([[[e6 / (e6 + e8), e8 / (e6 + e8)]]]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_label_log_probs_keep_the_dtype_of_the_scores(dtype):
    """Half-precision scores give half-precision log-probabilities (the one-hot mask follows their dtype)."""
    scores = torch.tensor([[[0.0, math.log(3.0), 0.0]]], dtype=dtype)
    got = label_log_probs(scores, torch.tensor([[1, 0, 1]]), 2)
    assert got.dtype == dtype
    want = torch.tensor([[[math.log(3 / 5), math.log(2 / 5)]]], dtype=torch.float64)
    torch.testing.assert_close(got.double(), want, atol=2e-2 if dtype == torch.bfloat16 else 1e-12, rtol=0)
