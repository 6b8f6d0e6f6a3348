"""
A GPT-2 language model that attends through a visibility spec.

The model knows nothing about thinking-token modes. A mode (see modes.py) turns text into a
token layout and hands the model, besides token ids:
  pos      (L,)    position of each slot (slots may share a position)
  slot     (L,)    index into the slot embeddings (0 = none), for reasoning slots
  vis      attention.Visibility: who may attend to whom, where attention must not pass gradient,
                   and optionally which slots' outputs are ever read (the last block computes only those)
  predict  (P,)    the slots the LM head runs on (None = every slot)
With all of them left at None this is exactly GPT-2 with SDPA's `is_causal` fast path. How attention
is computed (FlexAttention, the CPU flash kernel, dense masks) is attention.py's business.

Parameter names follow the GPT-2 checkpoints (transformer.wte, transformer.h.N.attn.c_attn, ...).
"""

import math
import inspect
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from attention import DenseSDPA, Prepared, make_attention


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


class Linear(nn.Linear):
    """
    nn.Linear, except for inference on a few rows on the CPU (decoding), which computes y^T = W x^T
    with at least two columns: decoding is bound by reading W, which MKL's kernels for x W^T on 1-8
    rows do on one thread, and W x^T with every thread (docs/design.md: Sampling). A single row is doubled
    (the extra column is free). Training and GPUs use F.linear unchanged.
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

    def forward(self, x, attend, cache=None, rows=None):
        """x (B, T, C) -> (B, T, C); with rows (R,), only those slots query: -> (B, R, C). attend is
        the layout's attention (attention.Prepared), the same in every layer."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, nh, past+T, hs)
        if rows is not None:
            q = q[:, :, rows]  # (B, nh, R, hs)
        y = attend(q, k, v, self.attn_dropout if self.training else 0.0)  # (B, nh, T or R, hs)
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

    def forward(self, x, attend, cache=None, rows=None):
        """x (B, T, C) -> (B, T, C), or (B, R, C) for the slots in rows (see CausalSelfAttention)."""
        a = self.attn(self.ln_1(x), attend, cache, rows)
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
        self.set_attention()

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

    def set_attention(self, name='auto'):
        """Choose the attention backend for masked layouts ('auto', 'flex', 'sdpa', 'cpu_flash'; see
        attention.make_attention) for the device the model is on now. KV-cached decoding attends
        from a few queries and always uses dense-mask SDPA."""
        device = self.lm_head.weight.device
        self.attention_name = name
        self.attention = make_attention(name, device, self.config.dropout, self.config.n_head)
        self.decoding = DenseSDPA(device, self.config.n_head)

    def prepare(self, idx, targets=None, pos=None, slot=None, vis=None, predict=None, cache=None, decoding=False):
        """
        The forward pass's inputs on the model's device, checked, with the Visibility turned into the
        backend's Prepared attention (built once per layout). Everything that needs the host happens
        here, so a compiled forward on prepared inputs has no graph break or host sync; forward calls
        this itself when handed a Visibility. With vis.read set, predict (layout slots) must lie
        within the read slots, and is mapped onto them. decoding (sampling, where every call has a
        new length) and a KV cache take dense-mask SDPA, which needs no compilation per shape.
        """
        device = self.lm_head.weight.device
        if self.attention.device != device:  # moved since set_attention: same choice, new device
            self.set_attention(self.attention_name)
        start = cache.length if cache is not None else 0
        n_positions = self.config.n_positions
        if pos is None:
            if start + idx.size(1) > n_positions:
                raise ValueError(f"position {start + idx.size(1) - 1} is beyond the model's {n_positions} positions")
            pos = torch.arange(start, start + idx.size(1), dtype=torch.long)  # (L,)
        elif pos.device.type == 'cpu' and int(pos.max()) >= n_positions:
            # checked where it is free: modes.py's layouts fit the position table by construction
            raise ValueError(f"position {int(pos.max())} is beyond the model's {n_positions} positions")
        backend = self.decoding if decoding or cache is not None else self.attention
        attend = backend.prepare(vis, grad=torch.is_grad_enabled())
        if attend.read is not None:
            if predict is not None:  # map layout slots onto the read rows
                rows, predict = vis.read, predict.cpu()
                predict_rows = torch.searchsorted(rows, predict).clamp_(max=rows.numel() - 1)
                if not torch.equal(rows[predict_rows], predict):
                    raise ValueError("predict names slots outside vis.read, whose outputs the last block does not compute")
                predict = predict_rows
            elif targets is None and not attend.read_last:
                raise ValueError("the last slot is not in vis.read: name the slot to read with predict")

        def to_device(t):
            if t is None or t.device == device:
                return t
            if device.type == 'cuda' and t.device.type == 'cpu':  # overlaps the copy with queued work
                return t.pin_memory().to(device, non_blocking=True)
            return t.to(device)
        return dict(idx=to_device(idx), targets=to_device(targets), pos=to_device(pos), slot=to_device(slot),
                    vis=attend, predict=to_device(predict), cache=cache)

    def forward(self, idx, targets=None, pos=None, slot=None, vis=None, predict=None, cache=None):
        """
        idx: (B, L) token ids. targets: (B, P) next-token ids for the predicted slots, -1 = no loss.
        vis: a Visibility (None = causal), or the Prepared attention from prepare. Returns (logits
        (B, P, V), loss); without targets only the last slot's logits (B, 1, V). With vis.read set,
        predict=None means the read slots.
        """
        if not isinstance(vis, Prepared):
            return self(**self.prepare(idx, targets, pos, slot, vis, predict, cache))
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, L, C)
        if slot is not None and self.config.n_slot_embd > 0:
            x = x + self.transformer.wse(slot)  # (L, C) broadcast over the batch
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            if vis.read is not None and i == self.config.n_layer - 1:
                # only the read slots' outputs are ever used: the last block computes those rows alone
                x = block(x, vis.rows_attend, cache, vis.read)  # (B, R, C)
            else:
                x = block(x, vis.attend, cache)  # (B, L, C)
        if cache is not None:
            cache.length += idx.size(1)
        x = self.transformer.ln_f(x)
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
        # the fused kernel exists for CUDA and, since torch 2.4, for the CPU (several times foreach's speed)
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
