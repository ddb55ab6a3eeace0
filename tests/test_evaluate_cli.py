"""`python -m metalib evaluate`: every checkpoint kind and protocol, on tiny untrained checkpoints.

ProtoNet (alone, ensemble, test-time augmentation), Matching Net and the MAML family on random test
episodes; ProtoNets on Lake et al.'s 20 official runs (the printed error must equal a direct computation);
and a clear refusal for what cannot be tested honestly or at all.
"""
from __future__ import annotations

import re

import pytest
import torch

from metalib.__main__ import main
from metalib.checkpoint import save_checkpoint
from metalib.maml_train import MAMLConfig, build_learner, save_maml
from metalib.metric_train import MetricConfig, build_model, save_metric
from metalib.train import TrainConfig

CPU = ["--device", "cpu"]
LINE = re.compile(r"error (\d+\.\d)% \(95% CI ±(\d+\.\d)\) over 400 trials$")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Tiny (8-filter) untrained checkpoints of each kind."""
    d = tmp_path_factory.mktemp("ckpts")
    tiny = TrainConfig(steps=1)
    out = {}
    for name, cfg in {"proto_lake": MetricConfig("protonet", hidden=8, split="lake", train=tiny),
                      "proto_lake2": MetricConfig("protonet", hidden=8, split="lake",
                                                  train=TrainConfig(steps=1, seed=1)),
                      "proto": MetricConfig("protonet", hidden=8, train=tiny),
                      "matching": MetricConfig("matching", hidden=8, train=tiny)}.items():
        out[name] = save_metric(build_model(cfg), cfg, d / f"{name}.pt")
    for name, cfg in {"fomaml": MAMLConfig("fomaml", hidden=8, eval_steps=2, train=tiny),
                      "reptile": MAMLConfig("reptile", hidden=8, inner_lr=0.1, eval_steps=1, train=tiny),
                      "sine": MAMLConfig("maml", "sinusoid", hidden=8, train=tiny)}.items():
        out[name] = save_maml(build_learner(cfg), cfg, d / f"{name}.pt")
    out["blackbox"] = save_checkpoint(d / "blackbox.pt", {"w": torch.zeros(1)}, config={"learner": "lstm"})
    return {k: str(v) for k, v in out.items()}


def _run(args, capsys):
    code = main([*args, *CPU])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err


def test_lake_runs_error_line_matches_a_direct_computation(ckpts, capsys):
    from metalib.data.lake_runs import load_lake_runs, score_runs
    from metalib.metric_train import load_metric

    code, out, _ = _run(["evaluate", ckpts["proto_lake"], "--split", "lake-runs"], capsys)
    assert code == 0 and "Lake et al.'s 20 official runs" in out
    m = LINE.search(out)
    assert m, out
    model, _ = load_metric(ckpts["proto_lake"])
    with torch.no_grad():
        direct = score_runs(model, load_lake_runs(download=False))
    assert m.groups() == (f"{direct.error:.1f}", f"{direct.ci95:.1f}")


def test_lake_runs_ensemble_with_tta(ckpts, capsys):
    code, out, _ = _run(["evaluate", ckpts["proto_lake"], ckpts["proto_lake2"], "--split", "lake-runs", "--tta", "1"],
                        capsys)
    assert code == 0 and LINE.search(out), out
    assert out.startswith(f"{ckpts['proto_lake']} + {ckpts['proto_lake2']} (test-time augmentation: 1 copies)")


@pytest.mark.parametrize("kind, what", [("proto", "5-way 1-shot (vinyals test"),
                                        ("matching", "5-way 1-shot (vinyals test"),
                                        ("fomaml", "after 2 inner steps: 5-way 1-shot"),
                                        ("reptile", "after 1 inner steps: 5-way 1-shot")])
def test_random_episodes_every_kind(ckpts, capsys, kind, what):
    code, out, err = _run(["evaluate", ckpts[kind], "--ways", "5", "--shots", "1", "--episodes", "4"], capsys)
    assert code == 0, err
    assert what in out and out.endswith("(95% CI, 4 episodes)"), out


def test_maml_inner_steps_override(ckpts, capsys):
    code, out, _ = _run(["evaluate", ckpts["fomaml"], "--episodes", "2", "--inner-steps", "0"], capsys)
    assert code == 0 and "after 0 inner steps" in out


def test_protonet_on_lake_within_alphabet_episodes(ckpts, capsys):
    code, out, _ = _run(["evaluate", ckpts["proto_lake"], "--ways", "20", "--episodes", "2", "--within-alphabet"], capsys)
    assert code == 0 and "lake within-alphabet random episodes test, 1 queries/class" in out


@pytest.mark.parametrize("args, message", [
    (["{sine}"], "regression, not a classifier"),
    (["{blackbox}"], "black-box learner"),
    (["{fomaml}", "--ways", "20"], "5-way output layer: evaluate it with --ways 5"),
    (["{fomaml}", "--split", "lake-runs"], "trained on the 'vinyals' split"),
    (["{proto}", "--split", "lake-runs"], "the 'lake' test classes may be among its training classes"),
    (["{proto_lake}", "--split", "vinyals"], "--split lake or lake-runs"),
    (["{proto_lake}", "{proto}"], "an ensemble needs models trained on one split"),
    (["{proto}", "{matching}"], "averages ProtoNet embeddings"),
    (["{fomaml}", "--tta", "1"], "ProtoNets only"),
    (["{proto}", "--tta", "-1"], "--tta must be >= 0"),
])
def test_refusals(ckpts, capsys, args, message):
    code, _, err = _run(["evaluate", *(a.format(**ckpts) for a in args), "--episodes", "1"], capsys)
    assert code == 2 and message in err, err


def test_select_by_validation_ignores_models_trained_on_their_validation_classes():
    """The single Lake model is chosen by its final held-out validation accuracy, never by test data."""
    from metalib.checkpoint_eval import select_by_validation

    def meta(*accs, part="train"):
        return {"config": {"train_part": part}, "history": {"val": [{"acc": a} for a in accs]}}

    assert select_by_validation({"a": meta(0.99, 0.90), "b": meta(0.5, 0.95), "c": meta(0.99, part="trainval")}) == "b"
    with pytest.raises(ValueError, match="held-out validation"):
        select_by_validation({"c": meta(0.99, part="trainval")})


def test_maml_classifier_predicts_after_its_own_inner_steps(ckpts):
    """A MAML-family checkpoint predicts after its config's test-time steps (or --inner-steps), not its training steps."""
    from metalib.checkpoint_eval import load_classifier
    from metalib.maml_train import load_maml
    from metalib.tasks import Task

    g = torch.Generator().manual_seed(0)
    task = Task(torch.rand(1, 5, 1, 28, 28, generator=g), torch.arange(5)[None],
                torch.rand(1, 5, 1, 28, 28, generator=g), torch.arange(5)[None])
    learner, _ = load_maml(ckpts["fomaml"])  # trained with 1 inner step, tested with 2
    assert not torch.allclose(learner.predict(task, 2), learner.predict(task, 1))
    torch.testing.assert_close(load_classifier(ckpts["fomaml"]).predict(task), learner.predict(task, 2))
    torch.testing.assert_close(load_classifier(ckpts["fomaml"], inner_steps=0).predict(task), learner.predict(task, 0))
