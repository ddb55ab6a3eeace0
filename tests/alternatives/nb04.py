"""Notebook 04: prototypes by index_add and bincount, Euclidean logits by the expanded square, the excess as a
sum over the K points, the vanishing-scale probability as a softmax of equal logits."""
ALTERNATIVES = {
    "q1": [{"prototypes": '''
def prototypes(z_support, y_support, n_way):
    B, S, D = z_support.shape
    flat = (y_support + n_way * torch.arange(B)[:, None]).reshape(-1)
    sums = z_support.new_zeros(B * n_way, D).index_add(0, flat, z_support.reshape(-1, D))
    counts = torch.bincount(flat, minlength=B * n_way).to(z_support.dtype)
    return (sums / counts[:, None]).view(B, n_way, D)
'''}],
    "q2": [{"proto_logits": '''
def proto_logits(z_query, protos, similarity="euclidean"):
    if similarity not in ("euclidean", "dot"):
        raise ValueError(similarity)
    dots = torch.einsum("bmd,bnd->bmn", z_query, protos)
    if similarity == "dot":
        return dots
    return 2 * dots - (z_query ** 2).sum(-1, keepdim=True) - (protos ** 2).sum(-1)[:, None, :]
'''}],
    "q3": [{"excess_sq_distance": "def excess_sq_distance(k_shot, r):\n    return sum(r * r for _ in range(k_shot))\n"}],
    "q4": [{"p_true_at_zero_scale": "def p_true_at_zero_scale(n_way):\n"
                                    "    return torch.zeros(n_way, dtype=torch.float64).softmax(0)[0].item()\n"}],
}
