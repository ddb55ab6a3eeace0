"""metalib.ensemble: test-time augmentation and ensembles of ProtoNets, against plain loops."""
from __future__ import annotations

import pytest
import torch

from metalib.augment import random_affine
from metalib.ensemble import ensemble_predictor, tta_embed
from metalib.matching import MatchingNet
from metalib.protonet import ProtoNet
from test_metric import _task  # random (B, N*K) / (B, N*Q) episodes of 28x28 images


def _models(n=2):
    torch.manual_seed(0)
    return [ProtoNet(hidden=8).eval() for _ in range(n)]


def test_tta_embed_is_the_mean_over_the_original_and_each_distortion():
    model, x = _models(1)[0], torch.rand(2, 5, 1, 28, 28)
    with torch.no_grad():
        got = tta_embed(model.embed, x, 3, torch.Generator().manual_seed(7))
        g = torch.Generator().manual_seed(7)
        copies = [x] + [random_affine(x, g) for _ in range(3)]
        want = sum(model.embed(c) for c in copies) / 4
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(tta_embed(model.embed, x, 0, g), model.embed(x))
        assert not torch.allclose(got, model.embed(x), atol=1e-4)  # the distortions do change it
    with pytest.raises(ValueError, match="copies"):
        tta_embed(model.embed, x, -1, g)


def test_ensemble_averages_each_models_log_probabilities():
    models, task = _models(2), _task()
    with torch.no_grad():
        got = ensemble_predictor(models)(task)
        want = sum(m(task).log_softmax(-1) for m in models) / 2
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(ensemble_predictor(models[:1])(task), models[0](task).log_softmax(-1))
        # with TTA: one generator, drawn model by model, support before query
        got = ensemble_predictor(models, copies=2, seed=3)(task)
        g, want = torch.Generator().manual_seed(3), 0
        for m in models:
            zs = tta_embed(m.embed_support, task.x_support, 2, g)
            zq = tta_embed(m.embed, task.x_query, 2, g)
            protos = torch.stack([zs[:, task.y_support[0] == c].mean(1) for c in range(3)], 1)  # (B, N, D)
            sq_dist = ((zq[:, :, None] - protos[:, None]) ** 2).sum(-1)  # (B, M, N), no expansion trick
            want = want + (-sq_dist).log_softmax(-1)
        torch.testing.assert_close(got, want / 2, atol=1e-4, rtol=1e-4)


def test_ensemble_rejects_what_it_cannot_average():
    with pytest.raises(ValueError, match="at least one"):
        ensemble_predictor([])
    with pytest.raises(TypeError, match="ProtoNet"):
        ensemble_predictor([MatchingNet()])


def test_benchmark_lake_rows_measure_tta_and_the_ensemble(tmp_path, monkeypatch):
    """benchmarks/metric.py --ensemble: its three Lake rows, here for two shipped models and 2 episodes."""
    import shutil
    import sys
    from pathlib import Path

    from metalib.checkpoint import checkpoint_dir

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    monkeypatch.delitem(sys.modules, "metric", raising=False)  # import benchmarks/metric.py afresh
    import metric

    for name in ("protonet_lake", "protonet_lake_within"):
        shutil.copy(checkpoint_dir() / f"{name}.pt", tmp_path)
    rows = metric.lake_ensemble_rows(tmp_path, episodes=2, copies=1)
    assert len(rows) == 3 and all(r.startswith("| ") and r.endswith("% |") for r in rows), rows
    assert "test-time augmentation (1 copies)" in rows[0] and "ensemble of 2: protonet_lake, protonet_lake_within" in rows[1]
