"""Reference check: the vectorised from-scratch baseline equals training each task's net alone."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from metalib import Task
from metalib.baselines import ScratchConfig, train_from_scratch
from metalib.nets import Conv4


def _per_task_reference(task: Task, cfg: ScratchConfig, seed: int) -> torch.Tensor:
    n_way = int(task.y_support.max()) + 1
    torch.manual_seed(seed)  # the same initialisations, created in the same order
    nets = [Conv4(hidden=cfg.hidden, n_classes=n_way, batch_norm=False) for _ in range(task.batch_size)]
    out = []
    for b, net in enumerate(nets):
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        for _ in range(cfg.steps):
            loss = F.cross_entropy(net(task.x_support[b]), task.y_support[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out.append(net(task.x_query[b]))
    return torch.stack(out)


def test_vectorised_scratch_training_equals_per_task_loop():
    g = torch.Generator().manual_seed(0)
    B, N, K, Q = 3, 4, 2, 3
    task = Task(torch.rand(B, N * K, 1, 28, 28, generator=g), torch.arange(N).repeat_interleave(K).repeat(B, 1),
                torch.rand(B, N * Q, 1, 28, 28, generator=g), torch.arange(N).repeat_interleave(Q).repeat(B, 1))
    cfg = ScratchConfig(steps=6, lr=1e-2, hidden=8)
    got = train_from_scratch(task, cfg, seed=3)
    want = _per_task_reference(task, cfg, seed=3)
    assert got.shape == (B, N * Q, N)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # and the training did something: the logits differ from the untrained nets'
    untrained = _per_task_reference(task, ScratchConfig(steps=0, hidden=8), seed=3)
    assert (got - untrained).abs().max() > 1e-3
