"""Notebook 02: the support shuffled by one `torch.randperm` per task (the hidden tests check the order's
distribution, not the random call), the loss from log_softmax and gather, the plateau as -log(1/N)."""
ALTERNATIVES = {
    "q1": [{"build_sequence": '''
def build_sequence(z_support, y_support, z_query, n_way, generator=None):
    B, S, D = z_support.shape
    seqs, orders = [], []
    for b in range(B):
        perm = torch.arange(S) if generator is None else torch.randperm(S, generator=generator)
        labels = y_support[b, perm]
        support = torch.cat([z_support[b, perm], F.one_hot(labels, n_way).to(z_support.dtype)], dim=1)
        query = torch.cat([z_query[b], z_query.new_zeros(z_query.shape[1], n_way)], dim=1)
        seqs.append(torch.cat([support, query]))
        orders.append(labels)
    return torch.stack(seqs), torch.stack(orders)
'''}],
    "q2": [{"query_only_loss": '''
def query_only_loss(logits, targets, n_support):
    logp = logits[:, n_support:].log_softmax(-1)                       # (B, M, N)
    picked = logp.gather(-1, targets[:, n_support:, None]).squeeze(-1)  # (B, M)
    return -picked.mean()
'''}],
    "q3": [{"plateau_loss": "def plateau_loss(n_way):\n    return -torch.log(torch.tensor(1.0 / n_way, dtype=torch.float64)).item()\n"}],
    "q4": [{"sure_to_improve": "def sure_to_improve():\n    return {'lstm', 'prototype'} - {'lstm'}\n"}],
}
