"""Notebook 06: other autograd routes (autograd.functional Hessians, torch.func HVPs), loops and explicit matrices."""
_HVP_JVP = '''def hessian_vector_product(loss, theta, v):
    # the gradient of the scalar grad(L) . v, with torch.func instead of autograd.grad: H v, never H
    return torch.func.grad(lambda t: torch.dot(torch.func.grad(loss)(t), v))(theta.detach())


def g_maml_hvp(inner_loss, outer_loss, theta0, alpha, k):
    thetas = inner_trajectory(inner_loss, theta0, alpha, k)
    v = torch.func.grad(outer_loss)(thetas[-1])
    for theta in thetas[-2::-1]:
        v = v - alpha * hessian_vector_product(inner_loss, theta, v)
    return v
'''
_FO_AUTOGRAD = '''def g_first_order(inner_loss, outer_loss, theta0, alpha, k):
    thetas = inner_trajectory(inner_loss, theta0, alpha, k)
    theta = thetas[k].detach().requires_grad_(True)
    return torch.autograd.grad(outer_loss(theta), theta)[0]


def relative_error(approx, exact):
    return ((approx - exact).pow(2).sum().sqrt() / exact.pow(2).sum().sqrt()).item()
'''
ALTERNATIVES = {
    "q1": [{"inner_step_jacobian": "def inner_step_jacobian(inner_loss, theta, alpha):\n"
                                   "    H = torch.autograd.functional.hessian(inner_loss, theta.detach())\n"
                                   "    return torch.diag(torch.ones_like(theta)) - alpha * H\n"}],
    "q1b": [{"two_step_meta_gradient": "def two_step_meta_gradient(H0, H1, grad1, alpha):\n"
                                       "    a = torch.as_tensor(alpha, dtype=grad1.dtype).expand_as(grad1)\n"
                                       "    I = torch.eye(grad1.numel(), dtype=grad1.dtype)\n"
                                       "    J0, J1 = I - a[:, None] * H0, I - a[:, None] * H1   # rows scaled: diag(alpha) H\n"
                                       "    return J0.T @ (J1.T @ grad1)\n"}],
    "q2": [{"g_maml_explicit": "def g_maml_explicit(inner_loss, outer_loss, theta0, alpha, k):\n"
                               "    thetas = inner_trajectory(inner_loss, theta0, alpha, k)\n"
                               "    v = torch.func.grad(outer_loss)(thetas[k])\n"
                               "    for i in range(k - 1, -1, -1):     # the last step's factor first\n"
                               "        v = inner_step_jacobian(inner_loss, thetas[i], alpha) @ v\n"
                               "    return v\n"}],
    "q2b": [{"conv4_hessian_gib": "def conv4_hessian_gib():\n"
                                  "    sizes = [(1, 64)] + [(64, 64)] * 3\n"
                                  "    n = sum(c_in * c_out * 9 + c_out + 2 * c_out for c_in, c_out in sizes) + 65 * 5\n"
                                  "    return (n ** 2) * 32 / 8 / 1024 ** 3\n"}],
    "q3": [{"hessian_vector_product": _HVP_JVP, "g_maml_hvp": _HVP_JVP}],
    "q4": [{"g_first_order": _FO_AUTOGRAD, "relative_error": _FO_AUTOGRAD}],
}
