"""Every autograded check can fail: placeholder answers fail every test, public and hidden.

For each question of each master notebook (`placeholder_sweep` runs them without a kernel):

* the solution passes every test, and so do differently written correct answers (`CORRECT`, and every
  alternative of `tests/alternatives/`);
* every placeholder (zeros, ones, noise, a constant, the identity, the input unchanged, nothing) fails
  every test of the question, so no test can be passed without doing the work;
* realistic wrong answers (`WRONG`) fail at least one public test, so the student never reads "Public
  tests passed" for them; answers that call what the notebook forbids fail every test;
* every failure has a message, and every ``assert`` in a test cell carries one.

For assignments with a judge, the judge's probes (`placeholder_sweep.run_probes`) count as tests too.
"""
from __future__ import annotations

import ast
from functools import lru_cache

import pytest

import placeholder_sweep as ps
from alternatives import load
from metalib.assignments import masters

NAMES = [m.stem for m in masters()]
ALTERNATIVES = load()
QUESTIONS = [(n, q.name) for n in NAMES for q in ps.assignment(n).auto_questions]

SOFTMAX = "def softmax(z):\n    {}\n"
# Correct answers written differently from the masters' solutions: each must pass every test.
CORRECT = {
    ("00_welcome", "q1"): {
        "exp(z - logsumexp z)": SOFTMAX.format("return torch.exp(z - torch.logsumexp(z, dim=-1, keepdim=True))"),
        "amax shift": SOFTMAX.format("e = (z - z.amax(-1, keepdim=True)).exp()\n    return e / e.sum(-1, keepdim=True)"),
        "float64 inside": SOFTMAX.format("w = z.double()\n    e = (w - w.max(-1, keepdim=True).values).exp()\n"
                                         "    return (e / e.sum(-1, keepdim=True)).to(z.dtype)"),
    },
    ("04_prototypical_networks", "q1"): {
        "loop over classes": '''
def prototypes(z_support, y_support, n_way):
    return torch.stack([torch.stack([z_support[b][y_support[b] == c].mean(0) for c in range(n_way)])
                        for b in range(z_support.shape[0])])
''',
    },
    ("04_prototypical_networks", "q2"): {
        "cdist": '''
def proto_logits(z_query, protos, similarity="euclidean"):
    if similarity == "dot":
        return z_query @ protos.transpose(1, 2)
    if similarity == "euclidean":
        return -torch.cdist(z_query, protos, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    raise ValueError(similarity)
''',
    },
    ("05_maml", "q1"): {
        "torch.func.grad": '''
def adapt(fmodel, params, x, y, alpha, steps, loss_fn):
    phi = {n: p for n, p in params.items()}
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(fmodel(phi, x), y), tuple(phi.values()), create_graph=True)
        phi = dict(zip(phi, (p - alpha * g for p, g in zip(phi.values(), grads))))
    return phi
''',
    },
    ("06_maml_gradient", "q1"): {
        "autograd.functional.hessian": '''
def inner_step_jacobian(inner_loss, theta, alpha):
    H = torch.autograd.functional.hessian(inner_loss, theta)
    return torch.eye(len(theta), dtype=theta.dtype) - alpha * H
''',
        "torch.func.hessian": '''
def inner_step_jacobian(inner_loss, theta, alpha):
    return torch.eye(theta.numel(), dtype=theta.dtype) - alpha * torch.func.hessian(inner_loss)(theta)
''',
    },
    ("06_maml_gradient", "q2"): {
        "transpose of the chain rule's product": '''
def g_maml_explicit(inner_loss, outer_loss, theta0, alpha, k):
    thetas = inner_trajectory(inner_loss, theta0, alpha, k)
    jac = torch.eye(theta0.numel(), dtype=theta0.dtype)  # d theta_k / d theta_0 = J_{k-1} ... J_0
    for i in range(k):
        jac = inner_step_jacobian(inner_loss, thetas[i], alpha) @ jac
    return jac.T @ torch.func.grad(outer_loss)(thetas[k])
''',
    },
    ("06_maml_gradient", "q4"): {
        "norms as floats": '''
def relative_error(approx, exact):
    return (approx - exact).norm().item() / exact.norm().item()
''',
    },
}

# Realistic wrong answers: each must fail at least one public test ("all": every test).
WRONG = {
    ("00_welcome", "q1"): {
        "torch.softmax (forbidden)": ("all", SOFTMAX.format("return torch.softmax(z, dim=-1)")),
        "F.softmax (forbidden)": ("all", SOFTMAX.format("import torch.nn.functional as F\n    return F.softmax(z, dim=-1)")),
        "Tensor.softmax (forbidden)": ("all", SOFTMAX.format("return z.softmax(-1)")),
        "exp(log_softmax) (forbidden)": ("all", SOFTMAX.format("return torch.log_softmax(z, -1).exp()")),
        "no shift: overflows": ("public", SOFTMAX.format("e = z.exp()\n    return e / e.sum(-1, keepdim=True)")),
        "over the first dimension": ("public", SOFTMAX.format(
            "e = (z - z.max(0, keepdim=True).values).exp()\n    return e / e.sum(0, keepdim=True)")),
    },
    ("01_supervised_meta_learning", "q1"): {
        "always the first K+Q drawings": ("public", '''
def sample_episode(images, n_way, k_shot, n_query, generator):
    C, M = images.shape[:2]
    if n_way > C or k_shot + n_query > M:
        raise ValueError("episode too large for these images")
    classes = torch.randperm(C, generator=generator)[:n_way]
    x = images[classes, :k_shot + n_query].float().div(255).unsqueeze(2)
    labels = torch.arange(n_way)
    return Task(x[:, :k_shot].reshape(-1, *x.shape[2:]), labels.repeat_interleave(k_shot),
                x[:, k_shot:].reshape(-1, *x.shape[2:]), labels.repeat_interleave(n_query))
'''),
    },
    ("01_supervised_meta_learning", "q2"): {
        "adapts on the query set": ("public", '''
def meta_objective(theta, tasks, adapt, loss):
    return sum(loss(adapt(theta, t.x_query, t.y_query), t.x_query, t.y_query)
               for t in (tasks.select(i) for i in range(tasks.batch_size)))
'''),
    },
    ("02_black_box", "q2"): {
        "loss on every position": ("public", "def query_only_loss(logits, targets, n_support):\n"
                                             "    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))\n"),
        "loss on the support positions": ("public", "def query_only_loss(logits, targets, n_support):\n"
                                                    "    return F.cross_entropy(logits[:, :n_support].flatten(0, 1), "
                                                    "targets[:, :n_support].flatten())\n"),
    },
    ("03_matching_networks", "q1"): {
        "always the dot kernel": ("public", "def attention_weights(z_query, z_support, kernel='cosine'):\n"
                                            "    return (z_query @ z_support.transpose(-1, -2)).softmax(-1)\n"),
        "softmax over the queries": ("public", "def attention_weights(z_query, z_support, kernel='cosine'):\n"
                                               "    if kernel == 'cosine':\n"
                                               "        z_query, z_support = F.normalize(z_query, dim=-1), F.normalize(z_support, dim=-1)\n"
                                               "    return (z_query @ z_support.transpose(-1, -2)).softmax(1)\n"),
    },
    ("04_prototypical_networks", "q2"): {
        "distance instead of its negative square": ("public", '''
def proto_logits(z_query, protos, similarity="euclidean"):
    if similarity == "dot":
        return z_query @ protos.transpose(1, 2)
    return -torch.cdist(z_query, protos)
'''),
    },
    ("05_maml", "q1"): {
        "no create_graph (first order)": ("public", '''
def adapt(fmodel, params, x, y, alpha, steps, loss_fn):
    phi = dict(params)
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(fmodel(phi, x), y), list(phi.values()))
        phi = {n: p - alpha * g for (n, p), g in zip(phi.items(), grads)}
    return phi
'''),
    },
    ("05_maml", "q2"): {
        "second order": ("public", '''
def adapt_first_order(fmodel, params, x, y, alpha, steps, loss_fn):
    phi = dict(params)
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(fmodel(phi, x), y), list(phi.values()), create_graph=True)
        phi = {n: p - alpha * g for (n, p), g in zip(phi.items(), grads)}
    return phi
'''),
    },
    ("06_maml_gradient", "q2"): {
        "product in the wrong order": ("public", '''
def g_maml_explicit(inner_loss, outer_loss, theta0, alpha, k):
    thetas = inner_trajectory(inner_loss, theta0, alpha, k)
    product = torch.eye(theta0.numel(), dtype=theta0.dtype)
    for i in range(k):
        product = inner_step_jacobian(inner_loss, thetas[i], alpha) @ product  # J_{k-1} ... J_0
    return product @ torch.func.grad(outer_loss)(thetas[k])
'''),
    },
    ("06_maml_gradient", "q4"): {
        "absolute error": ("all", "def relative_error(approx, exact):\n"
                                  "    return float(torch.linalg.vector_norm(approx - exact))\n"),
        "divides by the approximation": ("public", "def relative_error(approx, exact):\n"
                                                   "    return float((approx - exact).norm() / approx.norm())\n"),
    },
    ("07_meta_rl_rl2", "q1"): {
        "knows the probabilities (n * 2/3)": ("public", "def bayes_value_two_arms(n):\n    return 2 * n / 3\n"),
    },
    ("08_maml_rl", "q1"): {},  # filled from the solution below (first order: no create_graph)
    ("09_choosing_a_meta_learner", "q1b"): {
        "one scalar rate (the mean of the rates)": ("public", "def metasgd_step(params, grads, rates):\n"
                                                    "    return {n: params[n] - rates[n].mean() * grads[n] for n in params}\n"),
        "steps uphill (θ + α g)": ("all", "def metasgd_step(params, grads, rates):\n"
                                           "    return {n: params[n] + rates[n] * grads[n] for n in params}\n"),
        "detaches the gradients": ("public", "def metasgd_step(params, grads, rates):\n"
                                             "    return {n: params[n] - rates[n] * grads[n].detach() for n in params}\n"),
        "in place": ("public", "def metasgd_step(params, grads, rates):\n"
                               "    for n in params:\n        params[n].sub_(rates[n] * grads[n])\n    return params\n"),
    },
    ("08_maml_rl", "q2"): {
        "minus the squared distance": ("public", "def stay_at_origin_return():\n    return -100 / 6\n"),
    },
    ("09_choosing_a_meta_learner", "q1"): {
        "W = c, b = -|c|^2 / 2 (half the logits)": ("public", """
def proto_head(z_support, y_support, n_way):
    c = pn.prototypes(z_support, y_support, n_way)
    return c, -(c ** 2).sum(-1) / 2
"""),
    },
    ("09_choosing_a_meta_learner", "q3"): {
        "one permutation for every task": ("public", """
def shuffle_labels(task, generator):
    perm = torch.randperm(int(task.y_support.max()) + 1, generator=generator)
    return task._replace(y_support=perm[task.y_support], y_query=perm[task.y_query])
"""),
    },
}


def _solution_source(name: str, function: str) -> str:
    from grading_corpus import _solution_sources
    return _solution_sources(name)[function]


def _wrong(name: str, question: str) -> dict[str, tuple[str, str]]:
    wrong = dict(WRONG.get((name, question), {}))
    if (name, question) == ("07_meta_rl_rl2", "q2"):
        src = _solution_source(name, "play_trials")
        rule = 'if reset == "episode" or (reset == "task" and episode == 0):'
        assert rule in src, "the reset rule of the solution changed: update this test"
        wrong["never resets"] = ("public", src.replace(rule, "if False:"))
        wrong["resets every episode"] = ("public", src.replace(rule, "if True:"))
    if (name, question) == ("08_maml_rl", "q1"):
        src = _solution_source(name, "inner_step")
        assert "create_graph=True" in src, "the solution changed: update this test"
        wrong["first order (no create_graph)"] = ("public", src.replace("create_graph=True", "create_graph=False"))
    return wrong


@lru_cache(maxsize=None)
def _results(name: str) -> dict:
    out = {}
    for q in ps.assignment(name).auto_questions:
        variants = {f"correct: {k}": v for k, v in CORRECT.get((name, q.name), {}).items()}
        for i, answer in enumerate(ALTERNATIVES.get(name, {}).get(q.name, [])):  # tests/alternatives/, without a kernel
            variants[f"correct: alternative {i}"] = "\n\n".join(answer.values())
        variants.update({f"wrong: {k}": src for k, (_, src) in _wrong(name, q.name).items()})
        out[q.name] = ps.sweep(name, q, variants)
    return out


def _probes(outcomes: list) -> list:
    return [o for o in outcomes if o.test.startswith("probe ")]


def _otter(outcomes: list) -> list:
    return [o for o in outcomes if not o.test.startswith("probe ")]


@pytest.mark.parametrize("name", NAMES)
def test_judged_questions_are_swept_through_their_probes(name):
    """The sweep covers the judge: every judged question has public and hidden probes in its outcomes."""
    probes, _ = ps.judged_probes(name)
    for q in {p.question for p in probes}:
        outcomes = _probes(_results(name)[q]["solution"])
        assert {o.hidden for o in outcomes} == {False, True}, f"{name} {q}: {[o.test for o in outcomes]}"


@pytest.mark.parametrize("name,question", QUESTIONS, ids=[f"{n[:2]}-{q}" for n, q in QUESTIONS])
def test_solutions_and_other_correct_answers_pass_every_test(name, question):
    results = _results(name)[question]
    for label, outcomes in results.items():
        if label == "solution" or label.startswith("variant: correct: "):
            failed = [(o.test, o.message[:300]) for o in outcomes if not o.passed]
            assert not failed, f"{name} {question}, {label}: tests fail on a correct answer: {failed}"


@pytest.mark.parametrize("name,question", QUESTIONS, ids=[f"{n[:2]}-{q}" for n, q in QUESTIONS])
def test_every_placeholder_fails_every_test(name, question):
    results = _results(name)[question]
    kinds = [label for label in results if label.startswith("placeholder: ")]
    assert len(kinds) >= len(ps.PLACEHOLDERS) - 1, f"only {kinds} were tried"
    passing = {label: [o.test for o in results[label] if o.passed] for label in kinds}
    passing = {k: v for k, v in passing.items() if v}
    assert not passing, f"{name} {question}: tests pass on placeholder answers: {passing}"


def _calls(name: str, test: str, source: str) -> bool:
    """Whether ``test`` (an Otter test, or "probe <name>" of the judge) may call a function ``source`` defines."""
    import re

    from metalib.grading.assignment import defined_functions

    if not test.startswith("probe "):
        return True
    code = next(p.code for p in ps.judged_probes(name)[0] if f"probe {p.name}" == test)
    return any(re.search(rf"\b{f}\b", code) for f in defined_functions(source))


@pytest.mark.parametrize("name,question", QUESTIONS, ids=[f"{n[:2]}-{q}" for n, q in QUESTIONS])
def test_wrong_answers_fail_a_public_test(name, question):
    results = _results(name)[question]
    for label, (scope, src) in _wrong(name, question).items():
        outcomes = results[f"variant: wrong: {label}"]
        if scope == "all":  # a judge's probe that never calls the wrong function may pass
            passing = [o.test for o in outcomes if o.passed and _calls(name, o.test, _wrong(name, question)[label][1])]
            assert not passing, f"{name} {question}, wrong answer '{label}' passes {passing}"
        else:  # Otter's tests (what grader.check shows) and the judge's probes (what the grader scores), each
            for group in (o for o in (_otter(outcomes), _probes(outcomes)) if o):
                assert any(not o.passed for o in group if not o.hidden), (
                    f"{name} {question}, wrong answer '{label}' passes every public test: "
                    f"the student would read 'Public tests passed'")


@pytest.mark.parametrize("name,question", QUESTIONS, ids=[f"{n[:2]}-{q}" for n, q in QUESTIONS])
def test_every_failure_says_what_was_expected(name, question):
    for label, outcomes in _results(name)[question].items():
        silent = [o.test for o in outcomes if not o.passed and not o.message.split(":", 1)[-1].strip()]
        assert not silent, f"{name} {question}, {label}: {silent} fail without a message"


@pytest.mark.parametrize("name", NAMES)
def test_every_assert_in_a_test_cell_has_a_message(name):
    bare = []
    for q in ps.assignment(name).auto_questions:
        for t in q.tests:
            bare += [f"{t.name} line {n.lineno}" for n in ast.walk(ast.parse(t.source))
                     if isinstance(n, ast.Assert) and n.msg is None]
    assert not bare, f"{name}: asserts without a message (a student would see an empty AssertionError): {bare}"
