"""
Attention over token layouts with thinking slots: who may attend to whom, and the backends that
compute it.

A layout's visibility is a few per-slot vectors and a handful of rules, O(L) memory:
  kind, step  (L,)   what each slot is (TEXT, PAUSE, REFLECT, REASON) and the text step it belongs to
  rules              Rule(key_kind, min_gap, max_gap, stopgrad, heads): within causal attention, the
                     pairs whose key is of key_kind and whose query is min_gap..max_gap steps later
                     are hidden, or (stopgrad) seen without sending gradient into the key's k and v
Each backend derives what it needs from that: FlexAttention a closed-form mask_mod and its block
masks, the dense backends (L, L) masks. The model picks one backend at set-up (make_attention) and
calls `prepare` once per layout; the result attends in every layer:

    attention = make_attention('auto', device, dropout, n_head)
    prepared = attention.prepare(vis)             # Prepared: masks built (and cached) per layout
    y = prepared.attend(q, k, v, dropout_p)       # (B, nh, Lq, hs), in each layer
"""

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Rule:
    """Within causal attention, the pairs whose key is a slot of kind `key_kind` and whose query's
    step is min_gap..max_gap (None: any number) steps after the key's are hidden; with stopgrad they
    stay visible but send no gradient into the key's k and v. heads: the heads it applies in (None:
    all; -1 is the last head)."""
    key_kind: int
    min_gap: int
    max_gap: Optional[int] = None
    stopgrad: bool = False
    heads: Optional[Tuple[int, ...]] = None


def pair_masks(rules, kind, step, q, k, h=None, head_sets=None):
    """(visible, passing) bool for query slots q, key slots k and heads h (broadcasting index
    tensors): the closed form every backend uses, as a FlexAttention mask_mod body and to build
    dense masks. passing: visible and sending gradient. head_sets[i]: rule i's (n_head,) bool, or None."""
    visible = k <= q
    passing = visible
    gap = step[q] - step[k]
    key_kind = kind[k]
    for i, rule in enumerate(rules):
        hit = (key_kind == rule.key_kind) & (gap >= rule.min_gap)
        if rule.max_gap is not None:
            hit = hit & (gap <= rule.max_gap)
        if head_sets is not None and head_sets[i] is not None:
            hit = hit & head_sets[i][h]
        if rule.stopgrad:
            passing = passing & ~hit
        else:
            visible = visible & ~hit
    return visible, passing & visible


@dataclass(frozen=True, eq=False)
class Visibility:
    """
    Attention rules for the queries q_slots (default: every slot) over the keys 0..L-1.
    kind, step: (L,) per-slot vectors; rules: a tuple of Rule. read: (R,) sorted query rows whose
    outputs are the only ones ever used (reasoning: the text slots), or None for all; nothing attends to a
    slot's last-layer output, so the model's last block then computes these rows alone. Tensors
    live on the CPU; backends keep their device copies and masks in `cache`.
    """
    kind: torch.Tensor
    step: torch.Tensor
    rules: Tuple[Rule, ...]
    q_slots: Optional[torch.Tensor] = None
    read: Optional[torch.Tensor] = None
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def k_len(self):
        return self.kind.numel()

    @property
    def queries(self):
        return torch.arange(self.k_len) if self.q_slots is None else self.q_slots

    @property
    def stopgrad(self):
        return any(r.stopgrad for r in self.rules)

    @property
    def per_head(self):
        return any(r.heads is not None for r in self.rules)

    def rows(self):
        """The Visibility of the read rows alone (the queries of the last block), built once."""
        if 'rows' not in self.cache:
            self.cache['rows'] = replace(self, q_slots=self.queries[self.read], read=None, cache={})
        return self.cache['rows']

    def without_read(self):
        return replace(self, read=None, cache={})

    def dense(self, n_head=1, device=None, rows=slice(None)):
        """(visible, passing) bool masks (H, Lq, Lk) on device, H = n_head when a rule names heads,
        else 1; `rows` selects query rows (for building large masks in pieces)."""
        device = device or 'cpu'
        n = n_head if self.per_head else 1
        q = self.queries[rows].to(device)[None, :, None]
        k = torch.arange(self.k_len, device=device)[None, None, :]
        h = torch.arange(n, device=device)[:, None, None]
        visible, passing = pair_masks(self.rules, self.kind.to(device), self.step.to(device), q, k, h,
                                      head_sets(self.rules, n, device))
        shape = (n, q.size(1), self.k_len)
        return visible.expand(shape), passing.expand(shape)

    @property
    def allow(self):
        """(Lq, Lk) bool on the CPU: the visible pairs (rules that name heads: (n_head, Lq, Lk) via dense)."""
        return self.dense()[0][0]

    @property
    def no_grad(self):
        """(Lq, Lk) bool: visible pairs that send no gradient, or None when there are none."""
        if not self.stopgrad:
            return None
        visible, passing = self.dense()
        return (visible & ~passing)[0]

    def pairs(self, n_head=1, chunk=512):
        """Visible (query, key) pairs, averaged over heads: what the FLOP count needs (counted by
        query chunks, so no (L, L) tensor is held at once)."""
        total = 0
        for start in range(0, self.queries.numel(), chunk):
            visible, _ = self.dense(n_head, rows=slice(start, start + chunk))
            total += int(visible.sum())
        return total / (n_head if self.per_head else 1)


def head_sets(rules, n_head, device):
    """Per rule, the (n_head,) bool of the heads it applies in, or None for all heads."""
    out = []
    for r in rules:
        if r.heads is None:
            out.append(None)
        else:
            wrong = [h for h in r.heads if not -n_head <= h < n_head]  # negative: counted from the last head
            if wrong:
                raise ValueError(f"a rule names head {wrong[0]}, the model has {n_head} heads")
            s = torch.zeros(n_head, dtype=torch.bool, device=device)
            s[list(r.heads)] = True
            out.append(s)
    return out


# ---- the pieces the backends share ------------------------------------------------------------

def merge_by_lse(y1, lse1, y2, lse2):
    """
    Attention over two disjoint key sets, each normalised over its own keys (y (B, nh, L, hs), lse
    (B, nh, L) their log-sum-exp), as attention over their union: exact, and differentiable through
    both. A row with no key in a set has lse -inf; clamping keeps its weight 0 and its gradient finite.
    """
    lse1, lse2 = lse1.float().clamp(min=-1e30), lse2.float().clamp(min=-1e30)
    lse = torch.logaddexp(lse1, lse2)
    w1, w2 = torch.exp(lse1 - lse)[..., None], torch.exp(lse2 - lse)[..., None]
    return (y1.float() * w1 + y2.float() * w2).to(y1.dtype)


def math_attention(q, k, v, mask, dropout_p):
    """Masked softmax attention written out, returning (y, lse): the public fallback for a split
    attention (stop-gradient), where SDPA would not return its log-sum-exp."""
    s = (q @ k.transpose(-2, -1)).float() * (1.0 / math.sqrt(q.size(-1)))  # (B, nh, Lq, Lk)
    s = s.masked_fill(~mask, float('-inf'))
    lse = torch.logsumexp(s, dim=-1).clamp(min=-1e30)  # (B, nh, Lq); -1e30 in a row with no key
    p = torch.exp(s - lse[..., None])
    if dropout_p > 0.0:
        p = F.dropout(p, dropout_p)
    return p.to(v.dtype) @ v, lse


def causal_attention(q, k, v, dropout_p):
    """Plain causal attention; after a KV cache the new queries are the last q.size(2) keys."""
    T, past = q.size(2), k.size(2) - q.size(2)
    if past == 0 or T == 1:  # causal over this call's slots; a single new query may see every key
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=(past == 0))
    mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(diagonal=past)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


@dataclass
class Prepared:
    """A layout's attention, ready for every layer: attend(q, k, v, dropout_p) for all its queries,
    and for the last block, rows_attend over the read rows (read: their slots on the device)."""
    attend: object
    rows_attend: object = None
    read: Optional[torch.Tensor] = None
    read_last: bool = True  # the last slot is a read row (else the caller must name its slot)


CAUSAL = Prepared(causal_attention)


# ---- backends ---------------------------------------------------------------------------------

class Backend:
    """prepare(vis, grad) -> Prepared. The dense backends cache it on vis, so a layout that repeats
    (reasoning, eval) builds its masks once. Without gradients, stop-gradient pairs are plain
    visible pairs."""

    name = None
    cache_on_layout = True

    def __init__(self, device, n_head):
        self.device, self.n_head = torch.device(device), n_head

    def prepare(self, vis, grad=True):
        if vis is None:
            return CAUSAL
        key = (self.name, self.device, grad)
        if key in vis.cache:
            return vis.cache[key]
        read = None
        if vis.read is not None:  # copied once per layout, whatever the backend caches
            read = vis.cache.setdefault(('read', self.device), vis.read.to(self.device))
        prepared = Prepared(self.attend_fn(vis, grad), None if vis.read is None else self.attend_fn(vis.rows(), grad),
                            read, vis.read is None or int(vis.read[-1]) == vis.queries.numel() - 1)
        if self.cache_on_layout:
            vis.cache[key] = prepared
        return prepared

    def attend_fn(self, vis, grad):
        raise NotImplementedError


class DenseSDPA(Backend):
    """Public SDPA with a dense bool mask, on any device and torch; with gradients through a
    stop-gradient rule, two written-out attentions over disjoint pair sets merged by log-sum-exp."""

    name = 'sdpa'

    def attend_fn(self, vis, grad):
        visible, passing = vis.dense(self.n_head, self.device)  # (1 or nh, Lq, Lk)
        if not (grad and vis.stopgrad):
            return lambda q, k, v, dropout_p: F.scaled_dot_product_attention(q, k, v, attn_mask=visible, dropout_p=dropout_p)
        no_grad = visible & ~passing

        def attend(q, k, v, dropout_p):
            y1, lse1 = math_attention(q, k, v, passing, dropout_p)
            y2, lse2 = math_attention(q, k.detach(), v.detach(), no_grad, dropout_p)
            return merge_by_lse(y1, lse1, y2, lse2)
        return attend


# The private CPU flash kernel takes is_causal and a mask together (public SDPA takes one of the two)
# and returns its log-sum-exp; it has the signature used here from torch 2.6 on (the oldest release
# this repo supports). Elsewhere the CPU falls back to DenseSDPA.
TORCH_VERSION = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2])
CPU_FLASH = TORCH_VERSION >= (2, 6) and hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu')


def additive(mask):
    """bool (H, Lq, Lk) -> float32 0 / -inf (1, H, Lq, Lk), the CPU kernel's mask form."""
    return torch.zeros(mask.shape, dtype=torch.float32).masked_fill_(~mask, float('-inf'))[None]


class StopGradFlashCPU(torch.autograd.Function):
    """
    Stop-gradient attention with one forward and one backward call of the CPU flash kernel. The
    forward attends with every visible pair. The backward runs on the forward's output and
    log-sum-exp with the gradient-passing pairs only: given that log-sum-exp it recomputes the
    forward's probabilities on those pairs, so dk and dv receive exactly them (exactly zero from the
    others), and dq their share. The stop-gradient pairs' share of dq is then added pair by pair:
    they are few (reasoning: a step's N slots for the next K steps' queries, O(L K N) of O(L^2)),
    and each is what the kernel computes, p = exp(s - lse), dq += p (dy.v - dy.y) k / sqrt(hs).
    (A dense mask computes every key block below the diagonal, so two calls over disjoint pair
    sets would cost two full forwards and backwards.) no_grad_q, no_grad_k: those pairs' query and
    key rows, as head * L + slot.
    """

    @staticmethod
    def forward(ctx, q, k, v, visible, passing, no_grad_q, no_grad_k, is_causal):
        y, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, is_causal, attn_mask=visible)
        ctx.save_for_backward(q, k, v, y, lse, passing, no_grad_q, no_grad_k)
        ctx.is_causal = is_causal
        return y

    @staticmethod
    def backward(ctx, grad_y):
        q, k, v, y, lse, passing, no_grad_q, no_grad_k = ctx.saved_tensors
        grad_q, grad_k, grad_v = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_y, q, k, v, y, lse, 0.0, ctx.is_causal, attn_mask=passing)
        B, H, Lq, hs = q.shape

        def rows(t, index):  # (B, H, L, hs) -> (B, P, hs): the pairs' query or key rows
            return t.reshape(B, -1, hs).index_select(1, index).float()
        qp, kp, vp = rows(q, no_grad_q), rows(k, no_grad_k), rows(v, no_grad_k)
        yp, gp = rows(y, no_grad_q), rows(grad_y, no_grad_q)
        scale = 1.0 / math.sqrt(hs)
        p = torch.exp((qp * kp).sum(-1) * scale - lse.reshape(B, -1).index_select(1, no_grad_q).float())  # (B, P)
        grad_s = p * ((gp * vp).sum(-1) - (gp * yp).sum(-1))  # (B, P)
        grad_q = grad_q.contiguous()
        grad_q.view(B, H * Lq, hs).index_add_(1, no_grad_q, (scale * grad_s[..., None] * kp).to(grad_q.dtype))
        return grad_q, grad_k, grad_v, None, None, None, None, None


class CPUFlash(Backend):
    """
    The CPU's flash kernel. A layout whose every slot queries runs as one call with is_causal, which
    skips the key blocks above the diagonal, and an additive mask for the holes below it (the
    kernel's causal alignment is top-left, right when Lq == Lk); other query sets pass the whole
    mask. Stop-gradient: StopGradFlashCPU. No attention dropout (make_attention picks DenseSDPA then).
    """

    name = 'cpu_flash'

    def attend_fn(self, vis, grad):
        visible, passing = vis.dense(self.n_head)
        causal = vis.q_slots is None  # every slot queries, in order (a training or eval layout)
        visible_add = additive(visible)
        if grad and vis.stopgrad:
            passing_add = additive(passing)
            h, q_slot, k_slot = (visible & ~passing).nonzero(as_tuple=True)
            if visible.size(0) == 1:  # the same pairs in every head
                h = torch.arange(self.n_head).repeat_interleave(h.numel())
                q_slot, k_slot = q_slot.repeat(self.n_head), k_slot.repeat(self.n_head)
            no_grad_q, no_grad_k = h * visible.size(1) + q_slot, h * visible.size(2) + k_slot
            return lambda q, k, v, dropout_p: StopGradFlashCPU.apply(q, k, v, visible_add, passing_add, no_grad_q,
                                                                     no_grad_k, causal)
        kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        return lambda q, k, v, dropout_p: kernel(q, k, v, 0.0, causal, attn_mask=visible_add)[0]


_flex = None


def flex_attention(q, k, v, block_mask, lse=False):
    """FlexAttention, compiled once (it runs fast, and on the CPU at all, only compiled); with lse
    also its log-sum-exp (B, nh, Lq)."""
    global _flex
    from torch.nn.attention import flex_attention as fa
    if _flex is None:
        _flex = torch.compile(fa.flex_attention, dynamic=False)
    if not lse:
        return _flex(q, k, v, block_mask=block_mask)
    if hasattr(fa, 'AuxRequest'):  # torch >= 2.9; return_lse is deprecated there
        y, aux = _flex(q, k, v, block_mask=block_mask, return_aux=fa.AuxRequest(lse=True))
        return y, aux.lse
    return _flex(q, k, v, block_mask=block_mask, return_lse=True)


class SlotBuffers:
    """
    Device copies of the per-slot vectors for one layout shape and rule set, and the mask_mods that
    read them. The mask_mods are the same function objects for every layout of that shape (a new
    closure per batch would make torch.compile recompile); a new layout is copied into the
    buffers and its block masks rebuilt on the device, a repeated layout reuses them.
    """

    def __init__(self, rules, q_len, k_len, n_head, device):
        from torch.nn.attention.flex_attention import create_block_mask
        self.create_block_mask = create_block_mask
        self.q_len, self.k_len, self.device = q_len, k_len, device
        self.heads = n_head if any(r.heads is not None for r in rules) else None
        self.kind = torch.zeros(k_len, dtype=torch.long, device=device)
        self.step = torch.zeros(k_len, dtype=torch.long, device=device)
        self.q_slots = torch.zeros(q_len, dtype=torch.long, device=device)
        self.current = None  # the CPU vectors now in the buffers
        self.masks = None
        sets = head_sets(rules, n_head, device)

        def pairs(h, q_idx, kv_idx):
            return pair_masks(rules, self.kind, self.step, self.q_slots[q_idx], kv_idx, h, sets)

        def no_grad(b, h, q_idx, kv_idx):
            visible, passing = pairs(h, q_idx, kv_idx)
            return visible & ~passing
        self.mask_mods = dict(visible=lambda b, h, q_idx, kv_idx: pairs(h, q_idx, kv_idx)[0],
                              passing=lambda b, h, q_idx, kv_idx: pairs(h, q_idx, kv_idx)[1], no_grad=no_grad)
        self.names = ('visible', 'passing', 'no_grad') if any(r.stopgrad for r in rules) else ('visible',)

    def block_masks(self, vis):
        """{name: BlockMask} for vis's layout: rebuilt on the device when the layout differs from
        the last one in the buffers (a block mask's mask_mod reads them: only the latest is valid)."""
        vectors = (vis.kind, vis.step, vis.queries)
        if self.current is None or not all(torch.equal(a, b) for a, b in zip(self.current, vectors)):
            for buf, src in zip((self.kind, self.step, self.q_slots), vectors):
                buf.copy_(src)
            self.current = vectors
            self.masks = {n: self.create_block_mask(self.mask_mods[n], None, self.heads, self.q_len, self.k_len,
                                                    device=self.device) for n in self.names}
        return self.masks


class Flex(Backend):
    """FlexAttention block masks from the rules' closed form (no dense mask on the device); the
    stop-gradient pair set by a second call on detached keys and values, merged by log-sum-exp."""

    name = 'flex'
    cache_on_layout = False  # its block masks live in SlotBuffers, valid for the latest layout only

    def __init__(self, device, n_head):
        super().__init__(device, n_head)
        self.buffers = {}

    def attend_fn(self, vis, grad):
        split = grad and vis.stopgrad
        key = (vis.rules, vis.queries.numel(), vis.k_len)
        if key not in self.buffers:
            self.buffers[key] = SlotBuffers(vis.rules, key[1], key[2], self.n_head, self.device)
        masks = self.buffers[key].block_masks(vis)
        if not split:
            visible = masks['visible']
            return lambda q, k, v, dropout_p: flex_attention(q, k, v, visible)
        passing, no_grad = masks['passing'], masks['no_grad']

        def attend(q, k, v, dropout_p):
            y1, lse1 = flex_attention(q, k, v, passing, lse=True)
            y2, lse2 = flex_attention(q, k.detach(), v.detach(), no_grad, lse=True)
            return merge_by_lse(y1, lse1, y2, lse2)
        return attend


BACKENDS = {b.name: b for b in (DenseSDPA, CPUFlash, Flex)}


def make_attention(name, device, dropout, n_head):
    """
    The backend for masked layouts, chosen once: 'auto' is FlexAttention on CUDA and the CPU flash
    kernel on the CPU, and dense-mask SDPA where those cannot run (attention dropout, an old torch).
    ValueError for a choice that cannot run here.
    """
    device = torch.device(device)
    if name == 'auto':
        if dropout > 0:
            name = 'sdpa'
        else:
            name = 'flex' if device.type == 'cuda' else 'cpu_flash' if (device.type == 'cpu' and CPU_FLASH) else 'sdpa'
    if name not in BACKENDS:
        raise ValueError(f"attention={name!r} must be 'auto', {', '.join(repr(n) for n in BACKENDS)}")
    if name in ('flex', 'cpu_flash') and dropout > 0:
        raise ValueError(f"attention={name!r} has no attention dropout: set dropout=0 or attention='sdpa'")
    if name == 'flex' and device.type != 'cuda':
        # tests build Flex on the CPU directly, at lengths where its CPU kernel is right (see test_attention)
        raise ValueError("attention='flex' runs on CUDA only: on the CPU FlexAttention has no backward, and its "
                         "compiled kernel gives wrong results at some lengths (torch 2.13): use attention='auto'")
    if name == 'cpu_flash' and not (device.type == 'cpu' and CPU_FLASH):
        raise ValueError(f"attention='cpu_flash' needs the CPU and torch >= 2.6 (here {device.type}, torch "
                         f"{torch.__version__}): use attention='auto'")
    return BACKENDS[name](device, n_head)
