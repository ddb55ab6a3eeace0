"""Notebook 01: an episode sampler from argsorted uniforms and Python lists, the objective as a stacked sum,
the pooled slope as a tensor mean, the Newton step as a reciprocal power."""
ALTERNATIVES = {
    "q1": [{"sample_episode": '''
def sample_episode(images, n_way, k_shot, n_query, generator):
    C, M = images.shape[:2]
    if n_way > C or k_shot + n_query > M:
        raise ValueError("episode too large for these images")
    classes = torch.rand(C, generator=generator).argsort()[:n_way]
    xs, xq = [], []
    for c in classes.tolist():
        pick = torch.rand(M, generator=generator).argsort()[:k_shot + n_query]
        imgs = images[c, pick].float().unsqueeze(1) / 255
        xs.append(imgs[:k_shot])
        xq.append(imgs[k_shot:])
    labels = torch.arange(n_way)
    return Task(torch.cat(xs), labels.repeat_interleave(k_shot), torch.cat(xq), labels.repeat_interleave(n_query))
'''}],
    "q2": [{"meta_objective": '''
def meta_objective(theta, tasks, adapt, loss):
    losses = []
    for t in (tasks.select(i) for i in range(tasks.batch_size)):
        losses.append(loss(adapt(theta, t.x_support, t.y_support), t.x_query, t.y_query))
    return torch.stack(losses).sum()
'''}],
    "q3": [{"pooled_slope": "def pooled_slope(w_low, w_high):\n"
                            "    return torch.tensor([w_low, w_high], dtype=torch.float64).mean().item()\n"}],
    "q4": [{"newton_step": "def newton_step(mean_x2):\n    return (2.0 * mean_x2) ** -1\n"}],
}
