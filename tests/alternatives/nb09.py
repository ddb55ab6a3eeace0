"""Notebook 09: class means from one-hot matrices, torch.addcmul over the dict, a set built from a list,
argsort of uniforms with gather."""
ALTERNATIVES = {
    "q1": [{"proto_head": "def proto_head(z_support, y_support, n_way):\n"
                          "    onehot = F.one_hot(y_support, n_way).to(z_support.dtype)          # (B, S, N)\n"
                          "    sums = onehot.transpose(1, 2) @ z_support                          # (B, N, D)\n"
                          "    means = sums / onehot.sum(1).unsqueeze(-1)\n"
                          "    return means + means, -torch.einsum('bnd,bnd->bn', means, means)\n"}],
    "q1b": [{"metasgd_step": "def metasgd_step(params, grads, rates):\n"
                             "    out = {}\n"
                             "    for key in params:\n"
                             "        out[key] = torch.addcmul(params[key], rates[key], grads[key], value=-1.0)\n"
                             "    return out\n"}],
    "q2": [{"any_way_rows": "def any_way_rows():\n"
                            "    return set(['protomaml', 'protonet', 'matching', 'finetune'])\n"}],
    "q3": [{"shuffle_labels": "def shuffle_labels(task, generator):\n"
                              "    B = task.y_support.shape[0]\n"
                              "    n_way = int(task.y_support.max().item()) + 1\n"
                              "    perms = torch.rand(B, n_way, generator=generator).argsort(dim=1).to(task.y_support.device)\n"
                              "    return task._replace(y_support=perms.gather(1, task.y_support), y_query=perms.gather(1, task.y_query))\n"}],
}
