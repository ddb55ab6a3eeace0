"""Notebook 03: attention from F.cosine_similarity and einsum, the label mixture by scatter_add, the cosine bound
as 1 / (1 + (S - 1) e^-2), the trends as a set union."""
ALTERNATIVES = {
    "q1": [{"attention_weights": '''
def attention_weights(z_query, z_support, kernel="cosine"):
    if kernel == "dot":
        sims = torch.einsum("bmd,bsd->bms", z_query, z_support)
    elif kernel == "cosine":
        sims = F.cosine_similarity(z_query[:, :, None, :], z_support[:, None, :, :], dim=-1)
    else:
        raise ValueError(kernel)
    return torch.softmax(sims, dim=-1)
'''}],
    "q2": [{"matching_predict": '''
def matching_predict(attn, y_support, n_way):
    out = attn.new_zeros(*attn.shape[:2], n_way)
    return out.scatter_add(2, y_support[:, None, :].expand_as(attn), attn)
'''}],
    "q3": [{"max_unscaled_attention": "def max_unscaled_attention(n_support):\n"
                                      "    return 1.0 / (1.0 + (n_support - 1) * math.exp(-2.0))\n"}],
    "q4": [{"grid_trends": "def grid_trends():\n    return set(['more_shots_help']) | {'more_ways_hurt'}\n"}],
}
