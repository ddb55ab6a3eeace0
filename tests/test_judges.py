"""The judges of notebooks 05, 07, 08 and 09 (`metalib/grading/judges/`): checks outside the student's process.

Each notebook is graded by the real sandboxed grader (`grade_folder`): the master's solutions get full
marks, the blank student notebook zero, and a submission whose answers are wrong but of the right kind
(zeros of the right shape, the parameters unchanged, the task unchanged, a wrong choice), which
patches `metalib.checks`, ``math.isclose``, ``torch.allclose``/``torch.equal`` and ``json.dump`` in its
kernel, gets zero too: the comparison happens in the grader's process. Some of its answers call the
library's reference through ``importlib`` or ``sys.modules`` (the notebooks' own experiments need those
references, so they are guarded, not hidden: `metalib.grading.guard`); they raise while the probes run,
and the grader flags them. (The placeholder answers run
through the same probes without a kernel in tests/test_placeholders.py; the alternatives of
tests/alternatives/ through the grader in tests/test_alternatives.py.)
"""
from __future__ import annotations

import random

import nbformat
import pytest

from adversarial_corpus import CHECK_TAMPERING
from grading_corpus import answer_index, solved
from metalib.assignments import NOTEBOOKS, SOLUTIONS
from metalib.grading import Assignment, grade_folder
from metalib.grading.judge import judge_for

PATCH = CHECK_TAMPERING["patch_json_and_checks"] + "torch.equal = lambda *a, **k: True\n"

# answers of the right kind that do none of the work, or that call the library's reference by a route the
# static check cannot see (importlib, sys.modules, a name bound outside the answer): ROUTED, guarded while grading
ROUTED = {"05_maml": {"adapt"}, "07_meta_rl_rl2": {"bayes_value_two_arms"}, "08_maml_rl": {"inner_step"},
          "09_choosing_a_meta_learner": {"proto_head", "metasgd_step"}}
TAMPERED = {
    "05_maml": {
        "adapt": "def adapt(fmodel, params, x, y, alpha, steps, loss_fn):\n    import importlib\n"
                 "    lib = importlib.import_module('metalib.maml')\n"
                 "    return lib.adapt(fmodel, params, x, y, inner_lr=alpha, steps=steps, loss_fn=loss_fn)\n",
        "adapt_first_order": "def adapt_first_order(fmodel, params, x, y, alpha, steps, loss_fn):\n"
                             "    return {n: p * 1.0 for n, p in params.items()}\n",
        "joint_predictor": "def joint_predictor():\n    return {'e'}\n",
        "largest_stable_alpha": "def largest_stable_alpha(lam):\n    return 1.0\n",
    },
    "07_meta_rl_rl2": {
        "bayes_value_two_arms": "def bayes_value_two_arms(n):\n    import importlib\n"
                                "    return importlib.import_module('metalib.rl.baselines').bayes_optimal_value(2, n)\n",
        "count_states": "def count_states(n):\n    return 1\n",
        "play_trials": "def play_trials(policy, env, task_batches, reset='task', generator=None, greedy=False):\n"
                       "    return torch.zeros(task_batches[0].shape[0], len(task_batches) * env.n_episodes * env.episode_len)\n",
        "best_first_episode_rules": "def best_first_episode_rules():\n    return {'always'}\n",
    },
    "08_maml_rl": {
        "stay_at_origin_return": "def stay_at_origin_return():\n    return 0.0\n",
        "inner_step": "def inner_step(policy, params, traj, lr, gamma=0.99):\n    import importlib, sys\n"
                      "    importlib.import_module('metalib.rl.maml_rl')\n    m = sys.modules['metalib.rl.maml_rl']\n"
                      "    return m.adapt(policy, params, traj, m.advantages(traj, gamma, 'linear', normalize=False), lr)\n",
        "adaptation_predictions": "def adaptation_predictions():\n    return {'e'}\n",
    },
    "09_choosing_a_meta_learner": {
        "proto_head": "def proto_head(z_support, y_support, n_way):\n    import importlib\n"
                      "    return importlib.import_module('metalib.protomaml').proto_head(z_support, y_support, n_way)\n",
        "any_way_rows": "def any_way_rows():\n    return {'everything'}\n",
        "shuffle_labels": "def shuffle_labels(task, generator):\n    return task\n",
        "metasgd_step": "import sys\nfrom metalib import maml as _m\n_step = sys.modules['metalib.maml'].__dict__['sgd_step']\n\n"
                        "def metasgd_step(params, grads, rates):\n    return _step(params, grads, rates)\n",
    },
}


def _tampered(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for i, (fn, src) in enumerate(TAMPERED[name].items()):
        nb.cells[answer_index(nb, fn)].source = src + ("\n\n" + PATCH if i == 0 else "")
    return nb


def _probes(name: str, seed: int) -> list:
    """The judge's probes, each under the question that now defines its function (as the grader files them)."""
    from metalib.grading.folder import _by_function

    judge = judge_for(name)
    return _by_function(judge.probes(random.Random(seed)), Assignment.from_master(SOLUTIONS / f"{name}.ipynb"),
                        judge.references())


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_judge_covers_every_question_and_draws_hidden_inputs(name):
    judge, assignment = judge_for(name), Assignment.from_master(SOLUTIONS / f"{name}.ipynb")
    a, b = _probes(name, 1), _probes(name, 2)
    assert [p.code for p in a if not p.hidden] == [p.code for p in b if not p.hidden]
    # every question whose function the judge knows is judged, with public and hidden probes
    known = {q.name for q in assignment.auto_questions if set(q.functions) & set(judge.references())}
    assert len(known) >= 3 and {p.question for p in a if p.hidden} == {p.question for p in a if not p.hidden} == known
    # hidden inputs drawn per run, except for answers that take no input (predictions, a constant)
    no_input = {p.question for p in a if any(f"{f}()" in p.code for f in judge.references())}
    changed = {p.question for p, q in zip(a, b) if p.hidden and p.code != q.code}
    assert changed == known - no_input, (changed, known, no_input)


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_honest_blank_and_tampered_submissions(name, tmp_path):
    assignment = Assignment.from_master(SOLUTIONS / f"{name}.ipynb")
    subs = tmp_path / "submissions"
    subs.mkdir()
    nbformat.write(solved(name), subs / "honest.ipynb")
    nbformat.write(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4), subs / "blank.ipynb")
    nbformat.write(_tampered(name), subs / "tampered.ipynb")
    results = {r.file: r for r in grade_folder(subs, assignment, out=tmp_path / "out", timeout=120, jobs=2,
                                                 progress=False)}
    full = {q.name: q.points for q in assignment.auto_questions}
    zero = {q: 0.0 for q in full}
    routed = {q.name for q in assignment.auto_questions if set(q.functions) & ROUTED[name]}
    for file, want in {"honest.ipynb": full, "blank.ipynb": zero, "tampered.ipynb": zero}.items():
        r = results[file]
        failed = {q: [t[:1] + t[3:] for t in ts if not t[2]] for q, ts in r.tests.items() if any(not t[2] for t in ts)}
        assert r.status == "graded" and r.scores == want, (file, r.status, r.scores, failed, r.flags)
        if file == "tampered.ipynb":  # the reference, reached by a route the static check misses, raised
            assert set(r.flags) == routed and all("(not available while grading)" in " ".join(r.flags[q])
                                                  for q in routed), r.flags
        else:
            assert not r.flags, (file, r.flags)
    # each test case, public or hidden, fails on the blank student notebook (one that passes checks nothing)
    assert not [t[0] for ts in results["blank.ipynb"].tests.values() for t in ts if t[2]]
    tampered = results["tampered.ipynb"].tests
    passed = [t[0] for q in {p.question for p in _probes(name, 0)} for t in tampered[q] if t[2]]
    assert not passed, f"probes passed on answers that do no work, with the checks patched: {passed}"


def _blank_answers(name: str) -> str:
    """The student notebook's answer cells (the stubs, with their partial code), as one source."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    return "\n\n".join(nb.cells[answer_index(nb, fn)].source for fn in TAMPERED[name])


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_blank_answers_fail_every_probe_whatever_the_draw(name):
    """The stubs' partial code (07's play_trials loop without its reset rule and input update) earns
    nothing for other hidden draws than the one graded above (an untrained policy often earns the
    same rewards whatever it sees: the probes compare what it saw too)."""
    import placeholder_sweep as ps
    from metalib.grading.judge import compare, expected_value

    judge, probes = judge_for(name), []
    references = judge.references()
    for seed in (1, 2):
        probes += [p for p in _probes(name, seed) if p.hidden or seed == 1]
    expected = {id(p): expected_value(p, references) for p in probes}
    ns = ps.namespace(name)
    exec(compile(_blank_answers(name), "<blank answers>", "exec"), ns)
    passing = []
    for p in probes:
        local = dict(ns)
        try:
            exec(compile(p.code, p.name, "exec"), local)
            (p.check or (lambda got, want: compare(got, want, atol=p.atol, rtol=p.rtol)))(local["result"], expected[id(p)])
            passing.append(p.name)
        except Exception:  # noqa: BLE001 - the stub raised, or the judge said no
            pass
    assert not passing, f"{name}: probes pass on the blank notebook's answers: {passing}"
