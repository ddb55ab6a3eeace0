"""Fast tests of notebook 06's judge (`metalib.grading.judges.maml_gradient`), from `make mutants`.

`tools/mutants.py grading/ --only 'metalib.grading.judges.maml_gradient.*'` showed the judge
untested outside the sandboxed grading runs: the probe code each helper writes (problems, seeds,
step sizes, the perturbed point), which inputs `make_probes` draws and from which ranges, each
probe's tolerances and check, the memory check's threshold and messages, the two GiB checks'
boundaries and messages, and the references (I - alpha H, the two-step product, the Conv-4's
parameter count). Here each is compared with exact expected text, hand-computed values and edges.
"""
from __future__ import annotations

import torch

from metalib import maml_gradient as mg
from metalib.grading.judge import judge_for
from metalib.grading.judges import maml_gradient as mj
from judge_fakes import ScriptedRng as _ScriptedRng, fails as _fails  # noqa: E402

HEAD = "import torch\nfrom metalib import problem1 as p1\ntorch.set_default_dtype(torch.float64)\n"


def test_head_and_problem_snippets_read_exactly():
    assert mj.HEAD == HEAD
    rng = _ScriptedRng(3, 8, 0.123456, 42)
    assert mj._mlp(rng) == "p1.regression_problem(seed=42, hidden=(3, 8), alpha=0.1235)"
    assert rng.calls == [("randint", 3, 8), ("randint", 3, 8), ("uniform", 0.02, 0.12), ("randrange", 10**6)]
    rng = _ScriptedRng(4, 5, 7)
    assert mj._mlp(rng, alpha=0.5) == "p1.regression_problem(seed=7, hidden=(4, 5), alpha=0.5)"
    assert rng.calls == [("randint", 3, 8), ("randint", 3, 8), ("randrange", 10**6)]
    rng = _ScriptedRng(6, 99, 0.333333)
    assert mj._quadratic(rng) == "p1.quadratic_problem(n=6, seed=99, alpha=0.3333)"
    assert rng.calls == [("randint", 5, 10), ("randrange", 10**6), ("uniform", 0.1, 0.45)]


def test_probe_code_helpers_read_exactly():
    assert mj._jacobian("P", "0.3") == HEAD + "prob = P\ntheta = prob.theta0\nresult = inner_step_jacobian(prob.inner, theta, 0.3)\n"
    assert mj._jacobian("P", "0.3", perturb=5) == HEAD + (
        "prob = P\ntheta = prob.theta0 + 0.1 * torch.randn(prob.theta0.shape, generator=torch.Generator().manual_seed(5))\n"
        "result = inner_step_jacobian(prob.inner, theta, 0.3)\n")
    assert mj._jacobian("P", "0.3", perturb=0) != mj._jacobian("P", "0.3")     # seed 0 still perturbs
    assert mj._g("f", "P", [1, 2]) == HEAD + "prob = P\nresult = [f(prob.inner, prob.outer, prob.theta0, prob.alpha, k) for k in (1, 2)]\n"
    assert mj._hvp("P", 3) == HEAD + ("prob = P\nv = torch.randn(prob.theta0.shape, generator=torch.Generator().manual_seed(3))\n"
                                      "result = hessian_vector_product(prob.inner, prob.theta0, v)\n")
    assert mj._two_step(7, 4, "0.2") == HEAD + (
        "g = torch.Generator().manual_seed(7)\nB0, B1 = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)\n"
        "H0, H1, g1 = B0 + B0.T, B1 + B1.T, torch.randn(4, generator=g)\nrates = 0.05 + 0.3 * torch.rand(4, generator=g)\n"
        "result = two_step_meta_gradient(H0, H1, g1, 0.2)\n")
    assert mj.TWO_STEP_PUBLIC == HEAD + ("A = torch.tensor([[2.0, 1.0], [1.0, 3.0]])\n"
                                         "result = two_step_meta_gradient(A, A, torch.tensor([1.0, -1.0]), 0.1)\n")
    assert mj._relative_errors([([1.0], [2.0])]) == HEAD + (
        "result = [relative_error(torch.tensor(a), torch.tensor(b)) for a, b in [([1.0], [2.0])]]\n")
    assert mj.MEMORY == HEAD + (
        "from metalib.profiling import MemoryTracker\nprob = p1.regression_problem(seed=2, hidden=(40, 40))\n"
        "with MemoryTracker() as tracker:\n    g = g_maml_hvp(prob.inner, prob.outer, prob.theta0, prob.alpha, 2)\n"
        'result = {"g": g, "largest": int(tracker.largest)}\n')


def test_two_step_probe_draws_symmetric_hessians_and_positive_rates():
    seen = {}

    def two_step_meta_gradient(H0, H1, g1, alpha):
        seen.update(H0=H0, H1=H1, g1=g1, alpha=alpha)
        return g1

    ns = {"two_step_meta_gradient": two_step_meta_gradient}
    try:
        exec(mj._two_step(3, 5, "rates"), ns)
    finally:
        torch.set_default_dtype(torch.float32)
    H0, H1, rates = seen["H0"], seen["H1"], seen["alpha"]
    assert H0.shape == H1.shape == (5, 5) and seen["g1"].shape == (5,) and H0.dtype == torch.float64
    assert torch.equal(H0, H0.T) and torch.equal(H1, H1.T) and not torch.allclose(H0 @ H1, H1 @ H0)
    assert rates.shape == (5,) and bool((rates >= 0.05).all()) and bool((rates <= 0.35).all())
    assert float(rates.max() - rates.min()) > 0.01


def test_make_probes_draws_and_composes_its_probes():
    rng = _ScriptedRng(
        3, 4, 0.05, 11, 0.5, 12,                       # jacobian_other_mlp_point_alpha: mlp, alpha, perturb
        6, 13, 0.2, 0.1,                               # jacobian_other_quadratic: quadratic, alpha
        14, 5, 0.15,                                   # two_step_other_hessians
        15, 6,                                         # two_step_meta_sgd_rates
        4, 5, 0.06, 16, 5,                             # explicit_other_mlp
        7, 17, 0.3, 4,                                 # explicit_other_quadratic
        5, 6, 0.07, 18, 19,                            # hvp_other_vector
        8, 20, 0.25, 6,                                # g_maml_hvp_other_quadratic
        6, 7, 0.08, 21, 3,                             # g_maml_hvp_other_mlp
        0.1, 7, 8, 22, 2,                              # first_order_other_mlp: alpha, mlp, k
        3, 12, *[0.5 + i for i in range(30)])          # relative_error_other_vectors: sizes, then the gauss draws
    probes = mj.make_probes(rng)
    assert rng.values == []
    assert rng.calls == [
        ("randint", 3, 8), ("randint", 3, 8), ("uniform", 0.02, 0.12), ("randrange", 10**6), ("uniform", 0.2, 0.9),
        ("randrange", 10**6),
        ("randint", 5, 10), ("randrange", 10**6), ("uniform", 0.1, 0.45), ("uniform", 0.05, 0.5),
        ("randrange", 10**6), ("randint", 4, 8), ("uniform", 0.05, 0.3),
        ("randrange", 10**6), ("randint", 4, 8),
        ("randint", 3, 8), ("randint", 3, 8), ("uniform", 0.02, 0.12), ("randrange", 10**6), ("randint", 4, 6),
        ("randint", 5, 10), ("randrange", 10**6), ("uniform", 0.1, 0.45), ("randint", 3, 5),
        ("randint", 3, 8), ("randint", 3, 8), ("uniform", 0.02, 0.12), ("randrange", 10**6), ("randrange", 10**6),
        ("randint", 5, 10), ("randrange", 10**6), ("uniform", 0.1, 0.45), ("randint", 4, 7),
        ("randint", 3, 8), ("randint", 3, 8), ("uniform", 0.02, 0.12), ("randrange", 10**6), ("randint", 2, 4),
        ("uniform", 0.05, 0.2), ("randint", 3, 8), ("randint", 3, 8), ("randrange", 10**6), ("randint", 1, 5),
        ("randint", 2, 9), ("randint", 10, 40), *[("gauss", 0, 1)] * 30]
    mlp0, default = "p1.regression_problem(seed=0)", (None, 1e-10, 1e-8)
    want = [
        ("q1", "jacobian_quadratic", False, HEAD + "prob = p1.quadratic_problem(n=4, seed=0)\ntheta = prob.theta0\n"
         "result = inner_step_jacobian(prob.inner, theta, 0.3)\n", *default),
        ("q1", "jacobian_mlp", False, mj._jacobian(mlp0, "0.05"), *default),
        ("q1", "jacobian_other_mlp_point_alpha", True,
         mj._jacobian("p1.regression_problem(seed=11, hidden=(3, 4), alpha=0.05)", "0.5", perturb=12), *default),
        ("q1", "jacobian_other_quadratic", True, mj._jacobian("p1.quadratic_problem(n=6, seed=13, alpha=0.2)", "0.1"),
         *default),
        ("q1b", "two_step_quadratic_scalar", False, mj.TWO_STEP_PUBLIC, None, 1e-12, 1e-10),
        ("q1b", "two_step_other_hessians", True, mj._two_step(14, 5, "0.15"), None, 1e-10, 1e-8),
        ("q1b", "two_step_meta_sgd_rates", True, mj._two_step(15, 6, "rates"), None, 1e-10, 1e-8),
        ("q2b", "conv4_hessian_gib_is_n_squared_floats", False, "result = conv4_hessian_gib()\n", mj._n_squared,
         1e-10, 1e-8),
        ("q2b", "conv4_hessian_gib", True, "result = conv4_hessian_gib()\n", mj._hessian_gib, 1e-10, 1e-8),
        ("q2", "explicit_quadratic_k1_k2", False, mj._g("g_maml_explicit", "p1.quadratic_problem(n=5, seed=0)", (1, 2)),
         *default),
        ("q2", "explicit_mlp_k3", False, mj._g("g_maml_explicit", mlp0, (3,)), *default),
        ("q2", "explicit_other_mlp", True,
         mj._g("g_maml_explicit", "p1.regression_problem(seed=16, hidden=(4, 5), alpha=0.06)", (0, 5)), *default),
        ("q2", "explicit_other_quadratic", True,
         mj._g("g_maml_explicit", "p1.quadratic_problem(n=7, seed=17, alpha=0.3)", (4,)), *default),
        ("q3", "hvp_mlp", False, mj._hvp("p1.regression_problem(seed=1)", 0), *default),
        ("q3", "hvp_mlp_k1_k3", False, mj._g("g_maml_hvp", mlp0, (1, 3)), *default),
        ("q3", "hvp_never_forms_a_hessian", False, mj.MEMORY, mj._no_hessian, 1e-10, 1e-8),
        ("q3", "hvp_other_vector", True, mj._hvp("p1.regression_problem(seed=18, hidden=(5, 6), alpha=0.07)", 19),
         *default),
        ("q3", "g_maml_hvp_other_quadratic", True,
         mj._g("g_maml_hvp", "p1.quadratic_problem(n=8, seed=20, alpha=0.25)", (0, 1, 6)), *default),
        ("q3", "g_maml_hvp_other_mlp", True,
         mj._g("g_maml_hvp", "p1.regression_problem(seed=21, hidden=(6, 7), alpha=0.08)", (3,)), *default),
        ("q4", "first_order_k2", False, mj._g("g_first_order", mlp0, (2,)), None, 1e-12, 1e-10),
        ("q4", "relative_error_public_pair", False, mj._relative_errors([([3.0, 0.0], [0.0, 4.0])]), None, 0, 1e-12),
        ("q4", "first_order_other_mlp", True,
         mj._g("g_first_order", "p1.regression_problem(seed=22, hidden=(7, 8), alpha=0.1)", (2,)), None, 1e-12, 1e-10),
        ("q4", "relative_error_other_vectors", True,
         mj._relative_errors([([0.5, 1.5, 2.5], [3.5, 4.5, 5.5]),
                              ([6.5, 7.5, 8.5, 9.5, 10.5, 11.5, 12.5, 13.5, 14.5, 15.5, 16.5, 17.5],
                               [18.5, 19.5, 20.5, 21.5, 22.5, 23.5, 24.5, 25.5, 26.5, 27.5, 28.5, 29.5])]), None, 0, 1e-10),
    ]
    got = [(p.question, p.name, p.hidden, p.code, p.check, p.atol, p.rtol) for p in probes]
    for g, w in zip(got, want, strict=True):
        assert g == w, g[1]


def test_vectors_are_rounded_to_six_decimals():
    values = [3, 4, 0.05, 11, 0.5, 12, 6, 13, 0.2, 0.1, 14, 5, 0.15, 15, 6, 4, 5, 0.06, 16, 5, 7, 17, 0.3, 4,
              5, 6, 0.07, 18, 19, 8, 20, 0.25, 6, 6, 7, 0.08, 21, 3, 0.1, 7, 8, 22, 2, 2, 10,
              *[1.23456789] * 24]
    probe = mj.make_probes(_ScriptedRng(*values))[-1]
    assert "([1.234568, 1.234568], [1.234568, 1.234568])" in probe.code
    values[38] = 0.123456789                              # first_order_other_mlp's alpha is rounded too
    probe = mj.make_probes(_ScriptedRng(*values))[-2]
    assert "alpha=0.1235)" in probe.code
    values[4], values[9], values[12] = 0.555555555, 0.333333333, 0.177777777    # the step sizes drawn for q1, q1b
    probes = mj.make_probes(_ScriptedRng(*values))
    assert probes[2].code.endswith("result = inner_step_jacobian(prob.inner, theta, 0.5556)\n")
    assert probes[3].code.endswith("result = inner_step_jacobian(prob.inner, theta, 0.3333)\n")
    assert probes[5].code.endswith("result = two_step_meta_gradient(H0, H1, g1, 0.1778)\n")


def _quad():
    A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    return A, (lambda t: 0.5 * t @ A @ t)


def test_reference_jacobian_is_identity_minus_alpha_hessian():
    A, loss = _quad()
    J = mj.references()["inner_step_jacobian"](loss, torch.tensor([0.3, -0.2], dtype=torch.float64), 0.1)
    torch.testing.assert_close(J, torch.tensor([[0.8, -0.1], [-0.1, 0.7]], dtype=torch.float64))
    assert J.dtype == torch.float64
    A16 = A.to(torch.bfloat16)
    J16 = mj.references()["inner_step_jacobian"](lambda t: 0.5 * t @ A16 @ t, torch.tensor([0.3, -0.2], dtype=torch.bfloat16), 0.5)
    assert J16.dtype == torch.bfloat16
    torch.testing.assert_close(J16, torch.tensor([[0.0, -0.5], [-0.5, -0.5]], dtype=torch.bfloat16))


def test_reference_two_step_by_hand():
    ref = mj.references()["two_step_meta_gradient"]
    A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    B = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    g = torch.tensor([1.0, -1.0], dtype=torch.float64)
    # J_A = I - 0.1 A = [[0.8, -0.1], [-0.1, 0.7]], J_B = [[0.9, 0], [0, 1.1]]; J_A^T J_B^T g = J_A [0.9, -1.1]
    torch.testing.assert_close(ref(A, B, g, 0.1), torch.tensor([0.8 * 0.9 + 0.1 * 1.1, -0.1 * 0.9 - 0.7 * 1.1],
                                                               dtype=torch.float64))
    # per-parameter rates (0.1, 0.2): J_A = [[0.8, -0.1], [-0.2, 0.4]], J_B = [[0.9, 0], [0, 1.2]]
    # J_B^T g = [0.9, -1.2]; J_A^T [0.9, -1.2] = [0.8*0.9 + 0.2*1.2, -0.1*0.9 - 0.4*1.2]
    rates = torch.tensor([0.1, 0.2], dtype=torch.float64)
    torch.testing.assert_close(ref(A, B, g, rates), torch.tensor([0.72 + 0.24, -0.09 - 0.48], dtype=torch.float64))
    out = ref(A, B, g, 1)                  # an int step size: J_A = I - A, J_B = diag(0, 2), J_B^T g = [0, -2]
    torch.testing.assert_close(out, torch.tensor([2.0, 4.0], dtype=torch.float64))
    # bfloat16 throughout (no float32 identity or step sizes): J_A = [[0, -0.5], [-0.5, -0.5]], J_B = diag(0.5, 1.5)
    bf = torch.bfloat16
    out = ref(A.to(bf), B.to(bf), g.to(bf), 0.5)
    assert out.dtype == bf
    torch.testing.assert_close(out, torch.tensor([0.75, 0.5], dtype=bf))


def test_reference_conv4_hessian_gib_counts_every_parameter():
    # Conv-4 on 1 channel, 64 filters, 5-way head: (9*64 + 64) + 3 (9*64*64 + 64) + 4 * 128 (BatchNorm) + 64*5 + 5
    n = (9 * 64 + 64) + 3 * (9 * 64 * 64 + 64) + 4 * 128 + 64 * 5 + 5
    assert n == 112261
    assert mj.references()["conv4_hessian_gib"]() == n * n * 4 / 2 ** 30


def test_references_map_names_to_metalib():
    refs = mj.references()
    assert set(refs) == {"inner_step_jacobian", "two_step_meta_gradient", "conv4_hessian_gib", "g_maml_explicit",
                         "hessian_vector_product", "g_maml_hvp", "g_first_order", "relative_error"}
    assert refs["g_maml_explicit"] is mg.g_maml_autograd and refs["g_maml_hvp"] is mg.g_maml_autograd
    assert refs["hessian_vector_product"] is mg.hvp and refs["g_first_order"] is mg.g_first_order
    assert refs["relative_error"] is mg.relative_error


def test_judge_is_registered_with_its_hidden_references():
    assert judge_for("06_maml_gradient") is mj.JUDGE
    assert mj.JUDGE.assignment == "06_maml_gradient" and mj.JUDGE.make_probes is mj.make_probes
    assert mj.JUDGE.references is mj.references and mj.JUDGE.guarded == {}
    assert mj.JUDGE.unavailable == {"metalib.maml_gradient": (
        "_hessian", "hvp", "g_maml_hessian", "g_maml_hvp", "g_maml_autograd", "g_maml_finite_differences",
        "g_maml_quadratic", "g_first_order", "relative_error")}


def test_no_hessian_threshold_and_messages():
    g = torch.zeros(5, dtype=torch.float64)                # n = 5: n*n // 10 = 2
    e = {"g": g}
    mj._no_hessian({"g": g, "largest": 1}, e)
    _fails(mj._no_hessian, {"g": g, "largest": 2}, e, "an operation created a tensor of 2 elements, about the n*n = "
           "25 of a Hessian: use Hessian-vector products only")
    g10 = torch.zeros(10, dtype=torch.float64)             # n = 10: n*n // 10 = 10
    mj._no_hessian({"g": g10, "largest": 9}, {"g": g10})
    big = torch.zeros(100, dtype=torch.float64)
    _fails(mj._no_hessian, {"g": big, "largest": 1000}, {"g": big}, "an operation created a tensor of 1,000 elements, "
           "about the n*n = 10,000 of a Hessian: use Hessian-vector products only")
    for got in ([1], {"g": g}, {"g": g, "largest": 1.0}, {"g": g, "largest": True}):
        _fails(mj._no_hessian, got, e, "the memory measurement did not come back")
    _fails(mj._no_hessian, {"g": g + 1, "largest": 0}, e,
           "g_maml_hvp on the n=1761 MLP differs: max abs error 1 at [0] (got 1, expected 0; tolerance atol=1e-10, rtol=1e-08)")
    mj._no_hessian({"g": g + 0.5e-10, "largest": 0}, e)
    _fails(mj._no_hessian, {"largest": 0}, e, "g_maml_hvp on the n=1761 MLP: expected a tensor, got NoneType")


def _gib(n):
    return n * n * 4 / 2 ** 30


def test_n_squared_boundaries_and_messages():
    mj._n_squared(_gib(50_001), None)
    mj._n_squared(_gib(50_001.005), None)
    mj._n_squared(_gib(112261), None)
    not_whole = ("GiB is not n * n * 4 bytes for a whole number n of parameters above 50,000 "
                 "(one 3x3 convolution from 64 to 64 channels has 36,864)")
    for n in (50_000, 50_001.02, 36_864, 50_001.5):
        _fails(mj._n_squared, _gib(n), None, f"{_gib(n)} {not_whole}")
    for got in (0, -1.0, float("inf"), float("nan"), True, "46.9", None):
        _fails(mj._n_squared, got, None, f"return a positive number of GiB, got {got!r}")
    mj._n_squared(16, None)                                # an int answer (n = 65536 gives exactly 16 GiB)
    _fails(mj._n_squared, 0.5, None, f"0.5 {not_whole}")


def test_hessian_gib_boundaries_and_messages():
    e = 10.0
    mj._hessian_gib(e, e)
    mj._hessian_gib(e + 0.29, e)
    mj._hessian_gib(e - 0.29, e)
    mj._hessian_gib(10, e)
    wrong = "GiB is not it: count every parameter (conv weights and biases, BatchNorm scale and shift, the head), " \
            "square the count, 4 bytes per entry"
    for got in (e + 0.31, e - 0.31, 2 * e + 0.31, 2 * e - 0.31, 0.0):
        _fails(mj._hessian_gib, got, e, f"{got:.3g} {wrong}")
    for got in (2 * e, 2 * e + 0.29, 2 * e - 0.29):
        _fails(mj._hessian_gib, got, e, "that is float64 (8 bytes per entry); the question asks for float32")
    gb = e * 2 ** 30 / 1e9
    for got in (gb, gb + 0.09, gb - 0.09, gb + 0.1 - 1e-9, gb - 0.1 + 1e-9):
        _fails(mj._hessian_gib, got, e, "that is in GB (10**9 bytes); 1 GiB is 2**30 bytes")
    for got in (gb + 0.11, gb - 0.11):
        _fails(mj._hessian_gib, got, e, f"{got:.3g} {wrong}")
    for got in (float("inf"), float("nan"), True, "10", None):
        _fails(mj._hessian_gib, got, e, f"return a finite number of GiB, got {got!r}")
    # exact edges: |0.3 - 2 * 0| is exactly 0.3 (not float64; still wrong), |0.168435456 - 0.25 * 2**30 / 1e9| exactly 0.1
    _fails(mj._hessian_gib, 0.3, 0.0, f"0.3 {wrong}")
    assert abs(0.168435456 - 0.25 * 2 ** 30 / 1e9) == 0.1
    mj._hessian_gib(0.168435456, 0.25)                      # not GB, and within 0.3 of the answer
