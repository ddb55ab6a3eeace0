"""Plots and widgets (kept out of the training code).

* `show_task`: the support set D^tr and the query set D^ts of one episode;
* `episode_browser`: an ipywidgets control to sample and look at episodes (notebook 01);
* `plot_history`: training curves from a `metalib.train.History`;
* `plot_accuracies`: grouped bars with 95% confidence intervals.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from .evaluate import Accuracy
from .tasks import EpisodeSampler, Task

__all__ = ["show_task", "episode_browser", "plot_history", "plot_accuracies"]


def show_task(task: Task, index: int = 0, *, max_query: int = 3, predictions: torch.Tensor | None = None,
              title: str | None = None):
    """Draw task ``index`` of a batch: one column per class, support on top, queries below.

    Args:
        task: a batched `Task` of images (B, M, 1, H, W).
        index: which task of the batch.
        max_query: query images shown per class.
        predictions: optional (B, N*Q) predicted labels; wrong ones are framed in red.

    Returns:
        The matplotlib figure.
    """
    t = task.select(index)
    n_way = int(t.y_support.max()) + 1
    k_shot = int((t.y_support == 0).sum())
    q_shown = min(max_query, int((t.y_query == 0).sum()))
    rows = k_shot + q_shown
    fig, axes = plt.subplots(rows, n_way, figsize=(1.1 * n_way, 1.1 * rows + 0.4), squeeze=False)
    for c in range(n_way):
        sup = t.x_support[t.y_support == c]
        qry_idx = torch.nonzero(t.y_query == c).flatten()[:q_shown]
        for r in range(rows):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if r < k_shot:
                ax.imshow(sup[r, 0].cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
                if r == 0:
                    ax.set_title(f"class {c}", fontsize=8)
                for s in ax.spines.values():
                    s.set_color("tab:blue"), s.set_linewidth(2)
            else:
                j = int(qry_idx[r - k_shot])
                ax.imshow(t.x_query[j, 0].cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
                if predictions is not None:
                    ok = int(predictions[index, j]) == c
                    for s in ax.spines.values():
                        s.set_color("tab:green" if ok else "tab:red"), s.set_linewidth(2)
    axes[0, 0].set_ylabel("D^tr", fontsize=8)
    if q_shown:
        axes[k_shot, 0].set_ylabel("D^ts", fontsize=8)
    fig.suptitle(title or f"{n_way}-way {k_shot}-shot task (blue: support D^tr; below: queries D^ts)", fontsize=9)
    fig.tight_layout()
    return fig


def episode_browser(split, *, n_way: int = 5, k_shot: int = 1, n_query: int = 2, seed: int = 0):
    """An ipywidgets control: sliders for N, K, Q and the seed; each change draws a fresh episode.

    Returns:
        The widget (display it, or let the notebook show it as the cell's value).
    """
    import ipywidgets as widgets
    from IPython.display import display

    per_class = split.images.shape[1]
    w_n = widgets.IntSlider(value=n_way, min=2, max=min(20, split.n_classes), description="N (way)")
    w_k = widgets.IntSlider(value=k_shot, min=1, max=per_class - 1, description="K (shot)")
    w_q = widgets.IntSlider(value=n_query, min=1, max=per_class - 1, description="Q (queries)")
    w_seed = widgets.IntText(value=seed, description="seed")
    button = widgets.Button(description="new episode", icon="refresh")
    out = widgets.Output()

    def draw(*_):
        with out:
            out.clear_output(wait=True)
            q = min(w_q.value, per_class - w_k.value)
            sampler = EpisodeSampler(split, w_n.value, w_k.value, q, seed=w_seed.value)
            task, classes = sampler.sample_with_classes(1)
            names = [split.class_names[i] for i in classes[0].tolist()]
            fig = show_task(task, 0, max_query=q)
            display(fig)
            plt.close(fig)
            print("classes:", ", ".join(f"{c}={n}" for c, n in enumerate(names)))

    def next_seed(_):
        w_seed.value += 1  # triggers draw through the observer

    for w in (w_n, w_k, w_q, w_seed):
        w.observe(draw, names="value")
    button.on_click(next_seed)
    draw()
    box = widgets.VBox([widgets.HBox([w_n, w_k]), widgets.HBox([w_q, w_seed, button]), out])
    return box


def plot_history(history, keys: Sequence[str] = ("loss", "acc"), *, ax=None, smooth: int = 10):
    """Training curves (moving average over ``smooth`` steps) and validation points."""
    keys = [k for k in keys if history.series(k)[0] or history.series(k, "val")[0]]
    if ax is None:
        _, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
        axes = axes[0]
    else:
        axes = [ax] * len(keys)
    for a, key in zip(axes, keys):
        steps, values = history.series(key)
        if values:
            v = torch.tensor(values)
            if smooth > 1 and len(v) >= smooth:
                v = torch.nn.functional.avg_pool1d(v.view(1, 1, -1), smooth, 1).flatten()
                steps = steps[smooth - 1:]
            a.plot(steps, v.tolist(), label=f"train {key}")
        vs, vv = history.series(key, "val")
        if vv:
            a.plot(vs, vv, "o-", label=f"validation {key}")
        a.set_xlabel("meta-training step")
        a.set_ylabel(key)
        a.legend()
    plt.tight_layout()
    return axes


def plot_accuracies(results: Mapping[str, Mapping[str, Accuracy]], *, ax=None, title: str = ""):
    """Grouped bars: ``results[setting][method]`` -> `Accuracy`, with 95% CI error bars.

    Returns:
        The matplotlib axes.
    """
    settings = list(results)
    methods = list(dict.fromkeys(m for s in settings for m in results[s]))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.4 * len(settings) * max(1, len(methods)) / 2, 3.6))
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i, s in enumerate(settings) if m in results[s]]
        accs = [results[s][m] for s in settings if m in results[s]]
        bars = ax.bar(xs, [100 * a.mean for a in accs], width, yerr=[100 * a.ci95 for a in accs],
                      capsize=3, label=m)
        ax.bar_label(bars, labels=[f"{100 * a.mean:.1f}" for a in accs], fontsize=7, padding=2)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylabel("query accuracy (%) ± 95% CI")
    ax.set_ylim(0, 108)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(len(methods), 4), frameon=False)
    if title:
        ax.set_title(title)
    plt.tight_layout()
    return ax
