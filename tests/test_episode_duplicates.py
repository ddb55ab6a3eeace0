"""Omniglot holds two pixel-identical drawings (Braille/character01, drawings 3 and 19):
assert_episode must accept an episode that uses both, and still reject one drawing used twice.
(Pixels cannot tell "drawing 3 twice" from "drawings 3 and 19": that case is accepted.)"""
from __future__ import annotations

import pytest
import torch

import metalib
from metalib import Task, checks


def _episode(images: torch.Tensor, support: int, query: int) -> Task:
    x = images.float() / 255
    # 2-way 1-shot 1-query: class 0 is the duplicated character, class 1 the next one
    return Task(torch.stack([x[0, support], x[1, 0]]).unsqueeze(1), torch.tensor([0, 1]),
                torch.stack([x[0, query], x[1, 1]]).unsqueeze(1), torch.tensor([0, 1]))


def test_identical_drawings_are_distinct_drawings():
    data = metalib.load_omniglot()
    c = data.char_names.index("Braille/character01")
    images = data.images[c:c + 2]  # (2, 20, 28, 28)
    assert torch.equal(images[0, 2], images[0, 18]), "the dataset changed: drawings 3 and 19 are no longer identical"
    checks.assert_episode(_episode(images, 2, 18), images, n_way=2, k_shot=1, n_query=1)
    with pytest.raises(AssertionError, match="both the support and the query"):
        checks.assert_episode(_episode(images, 5, 5), images, n_way=2, k_shot=1, n_query=1)
