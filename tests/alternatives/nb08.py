"""Notebook 08: one vectorised autograd call over per-task views, a midpoint-rule integral, a set built from a string."""
ALTERNATIVES = {
    "q1": [{"inner_step": '''def inner_step(policy, params, traj, lr, gamma=0.99):
    B, K, T, D = traj.obs.shape
    G = discounted_returns(traj.rewards, gamma)
    b = linear_baseline(traj.obs, G)
    views = {n: p.unsqueeze(0).expand(B, *p.shape) for n, p in params.items()}   # one view of theta per task
    logp = policy.log_prob(views, traj.obs.reshape(B, K * T, D), traj.actions.reshape(B, K * T, -1))   # (B, K*T)
    losses = -(logp * (G - b).reshape(B, K * T)).mean(1)                         # (B,) one loss per task
    grads = torch.autograd.grad(losses.sum(), list(views.values()), create_graph=True)
    return {n: v - lr * g for (n, v), g in zip(views.items(), grads)}
'''}],
    "q2": [{"stay_at_origin_return": "def stay_at_origin_return():\n"
                                     "    n = 1000                                       # midpoint rule on an n x n grid\n"
                                     "    xs = (torch.arange(n, dtype=torch.float64) + 0.5) / n - 0.5\n"
                                     "    return float(-100 * torch.sqrt(xs[:, None] ** 2 + xs[None, :] ** 2).mean())\n"}],
    "q3": [{"adaptation_predictions": "def adaptation_predictions():\n    return set('db')\n"}],
}
