"""metalib.families (notebook 09, benchmarks/families.py): one budget and one backbone for every family; a row
trains, tests and renders end to end in quick mode; fixed-width learners answer only their own N."""
from __future__ import annotations

import dataclasses

import torch

from metalib import families
from metalib.families import FAMILIES, FamiliesConfig, evaluate_family, markdown_tables, method_config, run_family


def test_every_family_gets_the_same_budget_backbone_and_split():
    fc = FamiliesConfig(budget_s=123.0, hidden=32, seed=3)
    for name in FAMILIES:
        cfg = method_config(name, fc)
        train = cfg.train
        assert train.time_budget == 123.0 and train.seed == 3, name
        width = {"finetune": "hidden", "blackbox": "conv_hidden"}.get(name, "hidden")
        assert getattr(cfg, width) == 32, name
        assert getattr(cfg, "split", "vinyals") == "vinyals", name
        assert train.steps >= 10 ** 6, f"{name}: the time budget, not the steps, must end the run"


def test_fixed_width_rows_answer_only_their_own_way_and_render_as_na():
    fc = FamiliesConfig(episodes=2, queries=1)
    calls = []

    def predict(task):
        calls.append(task.y_support.shape)
        n = int(task.y_support.max()) + 1
        return torch.zeros(*task.y_query.shape, n)
    scores = evaluate_family(predict, 5, fc, settings=((5, 1), (20, 1)), digit_settings=((5, 1), (10, 1)))
    assert scores["test"]["20w1s"] is None and scores["digits"]["10w1s"] is None
    assert scores["test"]["5w1s"][2] == 2 and 0.0 <= scores["digits"]["5w1s"][0] <= 1.0
    assert all(shape[-1] == 5 for shape in calls), "a 5-way learner was given another N"


def test_a_row_trains_tests_and_renders_in_quick_mode():
    fc = dataclasses.replace(FamiliesConfig(), **FamiliesConfig().quick_overrides())
    row = run_family("protomaml", fc, log=None)
    assert row["n_way"] is None and row["steps"] >= 1 and row["stopped"] in ("time budget", "finished")
    assert set(row["test"]) == {f"{n}w{k}s" for n, k in families.SETTINGS}
    assert all(v is not None for v in row["test"].values()), "ProtoMAML's head fits any N"
    results = {"config": dataclasses.asdict(fc), "machine": "test", "command": "pytest", "date": "today",
               "settings": [list(s) for s in families.SETTINGS],
               "digit_settings": [list(s) for s in families.DIGIT_SETTINGS],
               "methods": {"protomaml": row, "maml": {**row, "name": "maml", "label": "MAML",
                                                      "test": {**row["test"], "20w1s": None}}}}
    text = markdown_tables(results)
    assert "| ProtoMAML | 5-way 1-shot |" in text and "n/a" in text and "Domain shift" in text


def test_compact_history_keeps_the_last_row_and_all_validation():
    h = {"train": [{"step": i} for i in range(1, 1001)], "val": [{"step": 500}, {"step": 1000}], "stopped": "x"}
    c = families.compact_history(h, keep=100)
    assert len(c["train"]) <= 101 and c["train"][-1]["step"] == 1000 and c["val"] == h["val"]
