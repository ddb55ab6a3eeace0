"""Notebook 05: torch.func gradients instead of autograd.grad, index loops, a bisection for q4."""
ALTERNATIVES = {
    "q1": [{"adapt": "def adapt(fmodel, params, x, y, alpha, steps, loss_fn):\n"
                     "    names = list(params)\n"
                     "    tensors = [params[n] for n in names]\n"
                     "    step = 0\n"
                     "    while step < steps:\n"
                     "        out = fmodel(dict(zip(names, tensors)), x)\n"
                     "        grads = torch.autograd.grad(loss_fn(out, y), tensors, create_graph=True)\n"
                     "        tensors = [t.sub(g, alpha=alpha) for t, g in zip(tensors, grads)]\n"
                     "        step += 1\n"
                     "    return dict(zip(names, tensors))\n"}],
    "q2": [{"adapt_first_order": "def adapt_first_order(fmodel, params, x, y, alpha, steps, loss_fn):\n"
                                 "    phi = {n: p for n, p in params.items()}\n"
                                 "    for _ in range(steps):\n"
                                 "        fixed = {n: p.detach().requires_grad_(True) for n, p in phi.items()}\n"
                                 "        loss_fn(fmodel(fixed, x), y).backward()\n"
                                 "        phi = {n: phi[n] - alpha * fixed[n].grad for n in phi}   # .grad carries no graph\n"
                                 "    return phi\n"}],
    "q3": [{"joint_predictor": "def joint_predictor():\n    return frozenset('b')\n"}],
    "q4": [{"largest_stable_alpha": "def largest_stable_alpha(lam):\n"
                                    "    lo, hi = 0.0, 1.0\n"
                                    "    while abs(1 - hi * lam) <= 1:   # grow until the step diverges\n"
                                    "        hi *= 2\n"
                                    "    for _ in range(200):            # bisect the boundary |1 - alpha * lam| = 1\n"
                                    "        mid = (lo + hi) / 2\n"
                                    "        lo, hi = (mid, hi) if abs(1 - mid * lam) <= 1 else (lo, mid)\n"
                                    "    return lo\n"}],
}
