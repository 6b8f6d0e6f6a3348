"""
A GPT-2 language model that attends through a visibility spec.

The model knows nothing about thinking-token modes. A mode (see modes.py) turns text into a
token layout and hands the model, besides token ids:
  pos      (L,)    position of each slot (slots may share a position)
  slot     (L,)    index into the slot embeddings (0 = none), for reasoning slots
  vis      Visibility: who may attend to whom, where attention must not pass gradient, and
                   optionally which slots' outputs are ever read (the last block computes only those)
  predict  (P,)    the slots the LM head runs on (None = every slot)
With all of them left at None this is exactly GPT-2 with SDPA's `is_causal` fast path.

Parameter names follow the GPT-2 checkpoints (transformer.wte, transformer.h.N.attn.c_attn, ...).
"""

import math
import inspect
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    n_positions: int = 1024  # rows of the position table: layout slots, not text tokens
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2; False is a bit better and faster
    n_slot_embd: int = 0  # learned per-slot-index embeddings (reasoning slots 1..n); 0 = none
    # GELU as nn.GELU's `approximate`: exact ('none', as nanoGPT) for models trained here; GPT-2's
    # checkpoints were trained with the tanh approximation (HF's 'gelu_new'), so from_pretrained sets 'tanh'
    gelu_approximate: str = 'none'


def pad_vocab(n, multiple=64):
    return ((n + multiple - 1) // multiple) * multiple


class Visibility:
    """
    Attention rules for Lq queries over Lk keys.
    allow:   (Lq, Lk) bool, True where the query may attend the key; always within causal attention.
    no_grad: (Lq, Lk) bool subset of allow, or None: the query attends the key in the forward
             pass but sends no gradient into that key's k and v (the stop-gradient variant).
    read:    (R,) sorted query rows whose outputs are the only ones ever used (predicted from), or
             None for all. Nothing attends to a slot's last-layer output, so the last block then
             computes attention and MLP for these rows only (reasoning: the text slots).
    q_slots: (Lq,) the key index of each query; default: the queries are the last Lq keys.
    Index tensors live on the CPU. Built once per layout and cached by whoever builds it (modes.py);
    the model derives the dense-mask chunks, the CPU's additive mask, FlexAttention block masks and
    the read rows' Visibility from it lazily and keeps them here, so they are built once too.
    """

    QUERY_CHUNK = 256  # dense-mask attention runs over query chunks of this many slots (see chunks)
    # On the CPU, a layout whose every slot queries (training, eval) runs as one flash-kernel call
    # with is_causal and an additive mask instead (see cpu_flash_attention); False: by chunks too.
    CPU_ONE_CALL = True

    def __init__(self, allow, no_grad=None, read=None, q_slots=None):
        self.allow = allow
        self.no_grad = no_grad if (no_grad is not None and bool(no_grad.any())) else None
        Lq, Lk = allow.shape
        self.q_slots = torch.arange(Lk - Lq, Lk) if q_slots is None else q_slots
        self.read = read
        self._read_vis = None
        self._device_masks = {}

    def read_rows(self):
        """The Visibility of the read rows alone (the queries of the last block), built once."""
        if self._read_vis is None:
            self._read_vis = Visibility(self.allow[self.read], None if self.no_grad is None else self.no_grad[self.read],
                                        q_slots=self.q_slots[self.read])
        return self._read_vis

    def read_index(self, device):
        key = ('read', device)
        if key not in self._device_masks:
            self._device_masks[key] = self.read.to(device)
        return self._device_masks[key]

    def mask(self, device, with_grad):
        """The dense bool mask for SDPA on `device`: (Lq, 2Lk) when gradients must be routed."""
        key = ('dense', device, with_grad)
        if key not in self._device_masks:
            m = self.allow
            if with_grad:
                # Stop-gradient by key duplication: keys/values are concatenated with detached copies
                # (B, nh, 2*Lk, hs) and every (query, key) pair is routed to exactly one copy, so the
                # softmax is unchanged while the detached half carries no gradient to k and v.
                m = torch.cat([self.allow & ~self.no_grad, self.no_grad], dim=1)  # (Lq, 2Lk)
            self._device_masks[key] = m.to(device)
        return self._device_masks[key]

    def additive_mask(self, dtype, passing_grad=False):
        """(L, L) 0 / -inf float mask for the CPU flash kernel, built once per dtype: of `allow`, or
        with passing_grad of the pairs that pass gradient (allow minus no_grad)."""
        key = ('additive', dtype, passing_grad)
        if key not in self._device_masks:
            keep = self.allow & ~self.no_grad if passing_grad else self.allow
            self._device_masks[key] = torch.zeros(keep.shape, dtype=dtype).masked_fill_(~keep, float('-inf'))
        return self._device_masks[key]

    def chunks(self, device, with_grad):
        """
        [(q_start, q_end, n_keys, mask)] covering the queries. The rules lie within causal attention,
        so queries q_start..q_end-1 can only see the first n_keys keys (up to the last one's slot), and
        each chunk attends to that prefix alone: the fully masked blocks above the diagonal, which
        SDPA's is_causal skips but a dense mask would compute, are never computed. mask is the
        chunk's (q_end - q_start, n_keys) rows, or (.., 2 n_keys) with gradients routed to the
        detached key copies as in `mask`.
        """
        key = ('chunks', device, with_grad, self.QUERY_CHUNK)
        if key not in self._device_masks:
            Lq, Lk = self.allow.shape
            m = self.mask(device, with_grad)
            out = []
            for q0 in range(0, Lq, self.QUERY_CHUNK):
                q1 = min(q0 + self.QUERY_CHUNK, Lq)
                n = int(self.q_slots[q1 - 1]) + 1
                rows = m[q0:q1]
                out.append((q0, q1, n, torch.cat([rows[:, :n], rows[:, Lk:Lk + n]], 1) if with_grad else rows[:, :n]))
            self._device_masks[key] = out
        return self._device_masks[key]

    def block_mask(self, device, with_grad):
        """The same rules as a FlexAttention BlockMask, built once per device."""
        key = ('flex', device, with_grad)
        if key not in self._device_masks:
            from torch.nn.attention.flex_attention import create_block_mask
            dense = self.mask(device, with_grad)

            def mask_mod(b, h, q_idx, kv_idx):
                return dense[q_idx, kv_idx]
            Lq, Lk = dense.shape
            self._device_masks[key] = create_block_mask(mask_mod, None, None, Lq, Lk, device=device)
        return self._device_masks[key]


_compiled_flex_attention = None


def flex_attention(q, k, v, block_mask):
    # FlexAttention only runs fast (and on CPU, only runs) when compiled; compile it once.
    global _compiled_flex_attention
    if _compiled_flex_attention is None:
        from torch.nn.attention.flex_attention import flex_attention as fa
        _compiled_flex_attention = torch.compile(fa, dynamic=False)
    return _compiled_flex_attention(q, k, v, block_mask=block_mask)


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


class StopGradFlashCPU(torch.autograd.Function):
    """
    Stop-gradient attention in one call of the CPU flash kernel. The forward attends with every
    allowed pair. The backward runs the kernel's backward twice on the forward's output and
    log-sum-exp: with the allowed pairs for dq, and with the pairs that pass gradient for dk and dv.
    Given the forward's log-sum-exp, the second recomputes the forward's probabilities on the pairs
    it keeps and zero elsewhere, so dk and dv receive exactly those pairs (the chunked path gets the
    same by duplicating the keys: twice the forward and backward work; this is once and twice; a
    124M reasoning N=1 step on 2 CPU threads took 11.3 s against 12.1 s by chunks).
    """

    @staticmethod
    def forward(ctx, q, k, v, allow_mask, grad_mask):
        y, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, attn_mask=allow_mask)
        ctx.save_for_backward(q, k, v, y, lse, allow_mask, grad_mask)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        q, k, v, y, lse, allow_mask, grad_mask = ctx.saved_tensors
        flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        grad_q = flash_backward(grad_y, q, k, v, y, lse, 0.0, True, attn_mask=allow_mask)[0]
        _, grad_k, grad_v = flash_backward(grad_y, q, k, v, y, lse, 0.0, True, attn_mask=grad_mask)
        return grad_q, grad_k, grad_v, None, None


def cpu_flash_attention(q, k, v, vis, with_grad):
    """
    Attention over a layout whose every slot queries (Lq == Lk), in one call of PyTorch's CPU flash
    kernel, which takes is_causal and a mask together: is_causal skips the key blocks above the
    diagonal and the mask removes the holes below it (the public SDPA accepts only one of the two;
    the kernel's causal alignment is top-left, right when Lq == Lk). At 124M, reasoning N=3 (4096
    slots) this is ~10% faster than the query chunks. q, k, v (B, nh, L, hs) -> (B, nh, L, hs), laid
    out like q in memory: (B, L, nh, hs), c_proj's order, so no copy follows.
    """
    if with_grad:
        return StopGradFlashCPU.apply(q, k, v, vis.additive_mask(q.dtype), vis.additive_mask(q.dtype, passing_grad=True))
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, True, attn_mask=vis.additive_mask(q.dtype))[0]


class KeyPrefixes(torch.autograd.Function):
    """
    The first n keys (or values) of x (B, nh, L, hs) for each n in sizes, as views. Slicing each
    prefix on its own would make autograd allocate and zero a full-size gradient per prefix before
    summing them (at 4096 slots on CPU: 16 per layer, a 124M step's largest non-matmul cost in the
    profile). Here the prefixes' gradients are summed into one buffer.
    """

    @staticmethod
    def forward(ctx, x, sizes):
        ctx.shape, ctx.sizes = x.shape, sizes
        return tuple(x[:, :, :n] for n in sizes)

    @staticmethod
    def backward(ctx, *grads):
        grad = None
        for n, g in zip(ctx.sizes, grads):
            if g is not None:
                if grad is None:
                    grad = g.new_zeros(ctx.shape)  # (B, nh, L, hs)
                grad[:, :, :n] += g
        return grad, None


class Linear(nn.Linear):
    """
    nn.Linear, except for inference on a few rows on the CPU (decoding), where it computes
    y^T = W x^T with at least two columns. Decoding is bound by reading W from memory, and x W^T on
    1-8 rows goes to MKL's matrix-vector and small-matrix kernels, which read W on one thread at
    ~13 GB/s here (2-core EPYC); W x^T on two columns reads it with every thread. Measured on the
    124M shapes, fp32, weights out of cache: 768->2304 took 549 us (1 row) and 917 us (2 rows) as
    x W^T, 236 us as W x^T; the 50304-row LM head 12.4 ms vs 5.9 ms. A single row is doubled (the
    extra column is free: the time is spent reading W). Training and GPUs use F.linear unchanged.
    """

    DECODE_ROWS = 8

    def forward(self, x):
        rows = x.numel() // self.in_features
        if torch.is_grad_enabled() or x.device.type != 'cpu' or rows > self.DECODE_ROWS:
            return F.linear(x, self.weight, self.bias)
        x2 = x.reshape(rows, self.in_features).contiguous()
        xt = (x2.repeat(2, 1) if rows == 1 else x2).t()  # (in, >=2), column-major: MKL's fast layout here
        yt = self.weight @ xt if self.bias is None else torch.addmm(self.bias[:, None], self.weight, xt)  # (out, >=2)
        return yt[:, :rows].t().contiguous().view(*x.shape[:-1], self.out_features)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.layer_idx = layer_idx
        self.use_flex = False  # set by GPT.set_attention_backend

    def forward(self, x, vis=None, cache=None, rows=None):
        """x (B, T, C) -> (B, T, C); with rows (R,), only those slots query: -> (B, R, C), vis being
        the Visibility of those rows."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(self.layer_idx, k, v)  # (B, nh, past+T, hs)
        if rows is not None:
            q = q[:, :, rows]  # (B, nh, R, hs)
        dropout_p = self.attn_dropout if self.training else 0.0

        if vis is None:
            if past == 0 or T == 1:
                # causal over this call's slots; a single new query may see every cached key
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=(past == 0))
            else:  # several new queries after a cache: causal, aligned to the bottom right
                mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        else:
            with_grad = vis.no_grad is not None and torch.is_grad_enabled()
            # FlexAttention has no backward on CPU: there it serves inference (and tests) only
            if self.use_flex and dropout_p == 0.0 and cache is None and (x.is_cuda or not torch.is_grad_enabled()):
                if with_grad:  # route gradient-free pairs to detached copies (see Visibility)
                    k = torch.cat([k, k.detach()], dim=2)  # (B, nh, 2L, hs)
                    v = torch.cat([v, v.detach()], dim=2)  # (B, nh, 2L, hs)
                y = flex_attention(q, k, v, vis.block_mask(x.device, with_grad))
            elif (vis.CPU_ONE_CALL and x.device.type == 'cpu' and dropout_p == 0.0 and cache is None
                  and rows is None and vis.allow.size(0) == vis.allow.size(1)):
                y = cpu_flash_attention(q, k, v, vis, with_grad)  # a training or eval layout
            else:  # SDPA with a dense mask, by query chunks that see only the keys up to their last query
                chunks = vis.chunks(x.device, with_grad)
                sizes = tuple(n for _, _, n, _ in chunks)
                if sizes == (k.size(2),):  # one chunk over every key
                    k_prefixes, v_prefixes = (k,), (v,)
                else:
                    k_prefixes, v_prefixes = KeyPrefixes.apply(k, sizes), KeyPrefixes.apply(v, sizes)
                # split, not sliced: the chunks' gradients are concatenated, not zero-padded and summed
                q_chunks = q.split([q1 - q0 for q0, q1, _, _ in chunks], dim=2)
                ys = []
                for (_, _, n, mask), qc, kc, vc in zip(chunks, q_chunks, k_prefixes, v_prefixes):  # kc, vc: (B, nh, n, hs)
                    if with_grad:  # route gradient-free pairs to detached copies (see Visibility)
                        kc, vc = torch.cat([kc, kc.detach()], dim=2), torch.cat([vc, vc.detach()], dim=2)  # (B, nh, 2n, hs)
                    yc = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask, dropout_p=dropout_p)
                    ys.append(yc.transpose(1, 2))  # (B, chunk, nh, hs)
                # joined along the slots in the (B, T, nh, hs) order c_proj reads, so the
                # .contiguous() below copies nothing (SDPA's own output is laid out that way too)
                y = (torch.cat(ys, dim=1) if len(ys) > 1 else ys[0]).transpose(1, 2)  # (B, nh, T or R, hs)
        y = y.transpose(1, 2).contiguous().view(B, q.size(2), C)  # (B, T or R, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, vis=None, cache=None, rows=None):
        """x (B, T, C) -> (B, T, C), or (B, R, C) for the slots in rows (see CausalSelfAttention)."""
        a = self.attn(self.ln_1(x), vis, cache, rows)
        x = (x if rows is None else x[:, rows]) + a
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None
        assert config.n_positions is not None
        self.config = config
        modules = dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.n_positions, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        )
        if config.n_slot_embd > 0:
            # row 0 (text slots) stays zero and untrained, so a text slot is embedded as in GPT-2
            modules['wse'] = nn.Embedding(config.n_slot_embd + 1, config.n_embd, padding_idx=0)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying (https://paperswithcode.com/method/weight-tying)
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer)
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.n_slot_embd > 0:
            with torch.no_grad():
                self.transformer.wse.weight[0].zero_()

    def get_num_params(self, non_embedding=True):
        """Parameter count; the position table is left out by default (tied wte is counted once)."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def set_attention_backend(self, use_flex):
        """FlexAttention for masked layouts instead of dense-mask SDPA (on CPU: forward passes only)."""
        for block in self.transformer.h:
            block.attn.use_flex = use_flex

    def forward(self, idx, targets=None, pos=None, slot=None, vis=None, predict=None, cache=None):
        """
        idx: (B, L) token ids. targets: (B, P) next-token ids for the predicted slots, -1 = no loss.
        Returns (logits (B, P, V), loss); without targets only the last slot's logits (B, 1, V).
        With vis.read set, predict=None means the read slots, and predict must lie within them.
        """
        device = idx.device
        b, t = idx.size()
        start = cache.length if cache is not None else 0
        if pos is None:
            if start + t > self.config.n_positions:
                raise ValueError(f"position {start + t - 1} is beyond the model's {self.config.n_positions} positions")
            pos = torch.arange(start, start + t, dtype=torch.long, device=device)  # (L,)
        elif pos.device.type == 'cpu' and int(pos.max()) >= self.config.n_positions:
            # checked where it is free: on a GPU it would be a host sync (and a torch.compile graph
            # break) every step, and modes.py's layouts fit the position table by construction
            raise ValueError(f"position {int(pos.max())} is beyond the model's {self.config.n_positions} positions")

        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, L, C)
        if slot is not None and self.config.n_slot_embd > 0:
            x = x + self.transformer.wse(slot)  # (L, C) broadcast over the batch
        x = self.transformer.drop(x)
        read = None if vis is None else vis.read
        for i, block in enumerate(self.transformer.h):
            if read is not None and i == self.config.n_layer - 1:
                # only the read slots' outputs are ever used: the last block computes those rows alone
                x = block(x, vis.read_rows(), cache, vis.read_index(device))  # (B, R, C)
            else:
                x = block(x, vis, cache)  # (B, L, C)
        if cache is not None:
            cache.length += t
        x = self.transformer.ln_f(x)
        if read is not None:  # predict indexes the layout's slots: map it onto the read rows
            if predict is not None:
                rows = vis.read_index(device)
                predict_rows = torch.searchsorted(rows, predict).clamp_(max=rows.numel() - 1)
                if not torch.equal(rows[predict_rows], predict):
                    raise ValueError("predict names slots outside vis.read, whose outputs the last block does not compute")
                predict = predict_rows
            elif targets is None and int(read[-1]) != t - 1:
                raise ValueError("the last slot is not in vis.read: name the slot to read with predict")

        if targets is not None:
            if predict is not None:
                x = x[:, predict]  # (B, P, C): the LM head runs only where something is predicted
            logits = self.lm_head(x)  # (B, P, V)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        else:
            # inference: the caller names the slot to read (default: the last one)
            x = x[:, [-1]] if predict is None else x[:, predict]
            logits = self.lm_head(x)  # (B, P, V)
            loss = None
        return logits, loss

    @classmethod
    def from_pretrained(cls, model_type, override_args=None):
        """
        GPT-2 weights from Hugging Face: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', or a local
        directory holding a saved GPT2LMHeadModel. The vocab is padded to a multiple of 64 so the
        special thinking tokens have ids; padded rows are initialised like the rest of wte.
        """
        try:
            from transformers import GPT2LMHeadModel
        except ImportError:
            raise SystemExit("error: from_pretrained needs the optional package transformers: pip install transformers")
        override_args = override_args or {}
        assert set(override_args) <= {'dropout'}, "only dropout can be overridden"
        model_hf = GPT2LMHeadModel.from_pretrained(model_type)
        hf = model_hf.config
        approximate = {'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh', 'gelu': 'none'}.get(hf.activation_function)
        if approximate is None:
            raise SystemExit(f"error: {model_type} uses activation {hf.activation_function!r}; only GELU "
                             f"(exact or tanh-approximated) GPT-2 models can be loaded")
        config = GPTConfig(n_positions=hf.n_positions, vocab_size=pad_vocab(hf.vocab_size),
                           n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd, bias=True,
                           dropout=override_args.get('dropout', 0.0), gelu_approximate=approximate)
        model = GPT(config)
        sd = model.state_dict()
        sd_hf = model_hf.state_dict()
        # HF uses Conv1D modules, whose weights are the transpose of our Linear weights
        transposed = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
        keys = [k for k in sd_hf if not k.endswith(('.attn.masked_bias', '.attn.bias'))]
        with torch.no_grad():
            for k in keys:
                if k.endswith(transposed):
                    assert sd_hf[k].shape[::-1] == sd[k].shape, k
                    sd[k].copy_(sd_hf[k].t())
                elif k in ('transformer.wte.weight', 'lm_head.weight'):
                    sd[k][:hf.vocab_size].copy_(sd_hf[k])  # tied; padded rows keep their init
                else:
                    assert sd_hf[k].shape == sd[k].shape, k
                    sd[k].copy_(sd_hf[k])
        return model

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # weight decay on 2-D tensors (matmul weights, embeddings), none on biases and LayerNorms
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{'params': decay, 'weight_decay': weight_decay},
                  {'params': no_decay, 'weight_decay': 0.0}]
        # the fused kernel exists for CUDA and, since torch 2.4, for the CPU, where it took the 124M
        # step's AdamW from 303 to 66 ms here (0.80M CPU recipe: 1.6 -> 0.3 ms) against foreach
        use_fused = device_type in ('cuda', 'cpu') and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        extra = dict(fused=True) if use_fused else dict()
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def flops_per_layout(self, attended_pairs, n_slots, n_predicted, read=None):
        """
        Training FLOPs (forward + backward) for one sequence whose layout has n_slots slots,
        attended_pairs visible (query, key) pairs and n_predicted slots through the LM head.
        Counts the matmul work the model does: 6 FLOPs per weight per slot for the blocks, 6 per
        LM-head weight per predicted slot, and 2*2*hs per visible pair per head for QK^T and AV (x3
        for backward). read = (n_read, read_pairs) when the last block computes only the read rows
        (Visibility.read): there every slot still goes through c_attn (keys and values), and only
        the read rows through the rest. Masked pairs and skipped rows are not counted, so MFU
        cannot exceed 100% by overcounting.
        """
        cfg = self.config
        layer_params = sum(p.numel() for p in self.transformer.h.parameters()) // cfg.n_layer
        head_params = self.lm_head.weight.numel()
        pair_flops = 3 * 4 * cfg.n_embd  # n_head * hs == n_embd
        full_layers = cfg.n_layer if read is None else cfg.n_layer - 1
        flops = full_layers * (6 * layer_params * n_slots + pair_flops * attended_pairs)
        if read is not None:
            n_read, read_pairs = read
            c_attn = sum(p.numel() for p in self.transformer.h[-1].attn.c_attn.parameters())
            flops += 6 * c_attn * n_slots + 6 * (layer_params - c_attn) * n_read + pair_flops * read_pairs
        return flops + 6 * head_params * n_predicted


# Peak dense bf16 tensor-core FLOP/s of the GPUs we know; anything else uses the config's peak_flops.
KNOWN_PEAK_FLOPS = {'A100': 312e12, 'H100': 989e12, 'H200': 989e12}


def peak_flops_for(device, configured=0.0):
    """Peak FLOP/s for MFU: the configured value if given, else a known GPU's, else 0 (unknown)."""
    if configured:
        return configured
    if device.startswith('cuda') and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
        for key, flops in KNOWN_PEAK_FLOPS.items():
            if key in name:
                return flops
    return 0.0
