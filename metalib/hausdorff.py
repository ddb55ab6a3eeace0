"""The Modified Hausdorff distance classifier: the reference result of Lake et al.'s 20 one-shot runs.

Lake, Salakhutdinov & Tenenbaum (2015) ship a demo with their benchmark (``demo_classification.py`` in
github.com/brendenlake/omniglot, ``python/one-shot-classification/``) that classifies each query of a run
as the support image at the smallest Modified Hausdorff distance (Dubuisson & Jain 1994) and reports
38.8% error over the 20 runs. Reimplemented here, with the demo's choices:

* an image is the set of its ink pixels at 105x105, as (row, column) coordinates, **centred** on their
  mean (so position in the frame does not count);
* MHD(A, B) = max(mean over a in A of min_b |a - b|, mean over b in B of min_a |a - b|) (symmetric);
* the demo computes cost[query, support] and takes the argmin (the first support on ties).

Reproducing 38.8% checks that `metalib.data.lake_runs` reads the runs and their answers correctly.
Taught in notebook 04's optional case study (its "Going further" appendix).
"""
from __future__ import annotations

import torch

__all__ = ["ink_points", "modified_hausdorff", "mhd_costs", "mhd_predict"]


def ink_points(image: torch.Tensor) -> torch.Tensor:
    """Centred float64 (n, 2) coordinates (row, column) of the ink pixels of one (H, W) image (ink > 127)."""
    points = (image > 127).nonzero().double()
    if len(points) == 0:
        raise ValueError("an image without ink has no Hausdorff distance")
    return points - points.mean(0)


def modified_hausdorff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MHD between point sets a (n, 2) and b (m, 2): a 0-d tensor."""
    d = torch.cdist(a, b)  # (n, m)
    return torch.maximum(d.min(1).values.mean(), d.min(0).values.mean())


def mhd_costs(queries: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
    """cost[q, s] = MHD(query q, support s) for uint8 images (Q, H, W) and (S, H, W): float64 (Q, S).

    One `torch.cdist` per pair (about 900 x 900 ink points each; padding the supports into one batch
    doubles the work, since the largest has twice the mean's points).
    """
    sup = [ink_points(s) for s in supports]
    return torch.stack([torch.stack([modified_hausdorff(ink_points(q), s) for s in sup]) for q in queries])


def mhd_predict(runs) -> torch.Tensor:
    """Predicted support index (R, 20) of every query of `metalib.data.lake_runs.LakeRuns` (105x105)."""
    return torch.stack([mhd_costs(q, s).argmin(1) for q, s in zip(runs.query, runs.support)])
