"""
The KV cache of generation (modes.generate): it lives apart from the model, which only fills it.
"""

import torch


class KVCache:
    """Keys and values of every layer for the slots seen so far, preallocated up to max_len."""

    def __init__(self, config, batch_size, max_len, device, dtype):
        hs = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_len, hs)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # slots already stored; advanced by GPT.forward after all layers ran

    def update(self, layer, k, v):
        """Store this call's k, v (B, nh, T, hs); return all keys/values so far (B, nh, length+T, hs)."""
        start, end = self.length, self.length + k.size(2)
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]
