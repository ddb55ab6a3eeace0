"""metalib.protonet: behaviour that `make mutants MODULES=protonet.py` showed untested by tests/test_metric.py.

Each test is named after what it guards and compares with an independent value (a hand-computed
number, the documented default, the submodule called directly), never with the code under test.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from metalib.protonet import Embedders, ProtoNet, prototypes, similarity_logits


def _bn_count(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_protonet_defaults_are_the_papers_conv4():
    """Snell et al.: Conv-4 with 64 filters, BatchNorm, pooled to a 64-d embedding, euclidean, one embedder."""
    model = ProtoNet()
    assert model.similarity == "euclidean"
    assert model.g is None, "the support shares the query embedder f by default"
    assert _bn_count(model.f) == 4
    assert model.embed(torch.rand(2, 1, 28, 28)).shape == (2, 64)


def test_embedders_defaults_are_the_papers_conv4():
    """Embedders (MatchingNet's base) used with its defaults: 64 filters, BatchNorm, pooled, no separate g."""
    emb = Embedders()
    assert emb.g is None and _bn_count(emb.f) == 4
    assert emb.embed(torch.rand(3, 1, 28, 28)).shape == (3, 64)
    assert emb.embed_support(torch.rand(3, 1, 28, 28)).shape == (3, 64)


def test_embedders_pass_their_options_to_both_conv4s():
    emb = Embedders(hidden=8, separate_support=True, batch_norm=False, final_pool=False)
    assert emb.g is not None and _bn_count(emb) == 0
    with_bn = Embedders(hidden=8, separate_support=True)
    assert _bn_count(with_bn.f) == 4 and _bn_count(with_bn.g) == 4, "g is a Conv-4 like f, with BatchNorm"
    x = torch.rand(2, 1, 28, 28)
    assert emb.embed(x).shape == (2, 8 * 9) and emb.embed_support(x).shape == (2, 8 * 9)


def test_separate_support_embeds_the_support_with_g_and_the_query_with_f():
    torch.manual_seed(0)
    model = ProtoNet(hidden=8, separate_support=True).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        f, g = model.f(x), model.g(x)
        assert not torch.allclose(f, g)  # two independently initialised Conv-4s
        torch.testing.assert_close(model.embed_support(x), g)
        torch.testing.assert_close(model.embed(x), f)


def test_embed_accepts_a_single_unbatched_image_and_rejects_colour_images():
    model = ProtoNet(hidden=8).eval()
    x = torch.rand(1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), model.embed(x[None])[0])
    with pytest.raises(ValueError, match=r"^expected float images \(\.\.\., 1, H, W\) in \[0, 1\] \(the dataset "
                                         r"cache's uint8 / 255\), got dtype torch.float32 and shape \(2, 3, 28, 28\)$"):
        model.embed(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"got dtype torch.float32 and shape \(28, 28\)$"):
        model.embed_support(torch.rand(28, 28))


def test_protonet_rejects_an_unknown_similarity_with_the_choices():
    with pytest.raises(ValueError, match=r"^similarity must be one of \('euclidean', 'dot'\), got 'cosine'$"):
        ProtoNet("cosine")
    with pytest.raises(ValueError, match=r"^similarity must be one of \('euclidean', 'dot'\), got 'l2'$"):
        similarity_logits(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), "l2")


def test_prototype_errors_give_the_label_range_and_the_rule():
    zs = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"^support labels must lie in 0\.\.2, got -1\.\.1$"):
        prototypes(zs, torch.tensor([0, -1, 1, 0]), 3)
    with pytest.raises(ValueError, match=r"^a class has no support example, so it has no prototype; "
                                         r"every class 0\.\.N-1 needs >= 1$"):
        prototypes(zs, torch.tensor([0, 0, 2, 2]), 3)


def test_forward_infers_n_way_from_the_labels_or_takes_it():
    """Hand-made embeddings through a model whose f is the identity on 2-pixel 'images'."""
    model = ProtoNet(hidden=8)
    model.f = nn.Flatten(-3)  # (..., 1, 1, 2) -> (..., 2): the embedding is the pixel pair
    from metalib.tasks import Task
    xs = torch.tensor([[0., 0.], [2., 0.], [0., 2.]]).reshape(1, 3, 1, 1, 2)
    xq = torch.tensor([[1., 1.]]).reshape(1, 1, 1, 1, 2)
    task = Task(xs, torch.tensor([[0, 0, 1]]), xq, torch.tensor([[0]]))
    # prototypes (1, 0) and (0, 2): logits -|(0,1)|^2 = -1, -|(1,-1)|^2 = -2
    assert model(task).tolist() == [[[-1.0, -2.0]]]
    with pytest.raises(ValueError, match="no support example"):
        model(task, n_way=3)  # class 2 has no support example
    model.similarity = "dot"
    assert model(task).tolist() == [[[1.0, 2.0]]]  # (1,1).(1,0) and (1,1).(0,2): forward uses its similarity


def test_similarity_logits_default_to_the_papers_negative_squared_distance():
    zq, protos = torch.tensor([[[1., 1.]]]), torch.tensor([[[1., 0.], [0., 2.]]])
    assert similarity_logits(zq, protos).tolist() == [[[-1.0, -2.0]]]
