"""Notebook 00: softmax written with logsumexp instead of max-subtraction."""
ALTERNATIVES = {
    "q1": [{"softmax": "def softmax(z: torch.Tensor) -> torch.Tensor:\n"
                       "    return torch.exp(z - torch.logsumexp(z, dim=-1, keepdim=True))\n"}],
}
