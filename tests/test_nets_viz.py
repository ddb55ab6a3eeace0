"""nets: Conv-4 / MLP shapes and functional use; viz: every plot and the episode browser widget."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.func import functional_call  # noqa: E402

import metalib  # noqa: E402
from metalib import MLP, Conv4, viz  # noqa: E402
from metalib.evaluate import Accuracy  # noqa: E402
from metalib.train import History  # noqa: E402


@pytest.mark.parametrize("batch_norm", [True, False])
def test_conv4_shapes_any_leading_dims(batch_norm):
    net = Conv4(hidden=16, batch_norm=batch_norm).eval()
    x = torch.rand(2, 3, 1, 28, 28)  # (B, N*K, 1, 28, 28)
    assert net(x).shape == (2, 3, 16)  # 28 -> 14 -> 7 -> 3 -> 1: hidden features
    assert torch.allclose(net(x)[1, 2], net(x[1, 2:3])[0], atol=1e-6), "leading dims must not mix samples (eval mode)"
    assert Conv4(hidden=16, n_classes=5)(x).shape == (2, 3, 5)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert has_bn == batch_norm


def test_functional_call_matches_module():
    torch.manual_seed(0)
    for net, x in ((Conv4(hidden=8, n_classes=3).eval(), torch.rand(4, 1, 28, 28)), (MLP(1, [40, 40], 1), torch.rand(6, 1))):
        params = {k: v.detach().clone() for k, v in net.named_parameters()}
        buffers = dict(net.named_buffers())
        assert torch.allclose(functional_call(net, {**params, **buffers}, (x,)), net(x))
        shifted = {k: v + 0.1 for k, v in params.items()}
        assert not torch.allclose(functional_call(net, {**shifted, **buffers}, (x,)), net(x))


@pytest.fixture(scope="module")
def split():
    return metalib.omniglot_split(metalib.load_omniglot(), "vinyals", "test")


def test_show_task_layout_and_prediction_frames(split):
    task = metalib.EpisodeSampler(split, 4, 2, 3, seed=0).sample(2)
    wrong = (task.y_query + 1) % 4
    fig = viz.show_task(task, 1, max_query=2, predictions=wrong)
    assert len(fig.axes) == 4 * (2 + 2)  # N columns x (K support + shown queries) rows
    colors = {tuple(s.get_edgecolor()) for ax in fig.axes[8:] for s in ax.spines.values()}
    assert matplotlib.colors.to_rgba("tab:red") in colors and matplotlib.colors.to_rgba("tab:green") not in colors
    plt.close(fig)


def test_plot_accuracies_and_history():
    results = {"5-way 1-shot": {"a": Accuracy(0.9, 0.01, 600), "b": Accuracy(0.5, 0.02, 600)},
               "5-way 5-shot": {"a": Accuracy(0.95, 0.01, 600)}}
    ax = viz.plot_accuracies(results, title="t")
    assert len(ax.patches) == 3 and [t.get_text() for t in ax.get_xticklabels()] == list(results)
    hist = History(train=[{"step": i, "loss": 1 / i, "acc": 0.1 * i, "time": i} for i in range(1, 21)],
                   val=[{"step": 10, "time": 10, "acc": 0.5}])
    axes = viz.plot_history(hist, keys=("loss", "acc", "missing"))
    assert len(axes) == 2, "metrics absent from the history are skipped"
    plt.close("all")


def test_episode_browser_redraws_on_change(split, monkeypatch):
    drawn = []
    real = viz.show_task

    def spy(task, *args, **kwargs):
        drawn.append((int(task.y_support.max()) + 1, task.x_support.shape[1]))  # (N, N*K)
        return real(task, *args, **kwargs)

    monkeypatch.setattr(viz, "show_task", spy)
    box = viz.episode_browser(split, n_way=3, k_shot=1, n_query=1, seed=0)
    assert drawn == [(3, 3)], "the browser draws an episode when it opens"
    w_n, w_k = box.children[0].children
    w_seed, button = box.children[1].children[1:]
    w_k.value = 2
    w_n.value = 20
    button.click()  # "new episode": next seed
    assert w_seed.value == 1
    assert drawn[1:] == [(3, 6), (20, 40), (20, 40)]
    plt.close("all")
