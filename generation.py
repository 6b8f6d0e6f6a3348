"""
Sampling with thinking tokens: the decoding loops, apart from the model (which only fills the KV
cache) and from the layouts (modes.py).

generate() samples with a mode's inference layout. With the fixed policy every row has the same
layout, built by modes.py step by step. With think_policy='entropy' (modes.ThinkingPolicy) each row
decides, after every text token, how many thinking slots that token gets, so rows' layouts diverge:
ThinkingDecoder keeps them in one batch and one KV cache, each row with its own positions and mask.
teacher_forced() runs the same decoder on known text, making exactly the decisions sampling would.
"""

import torch
from torch.nn import functional as F

from attention import Prepared, pair_masks
from kv_cache import KVCache
from modes import TEXT


def check_sampling(temperature, top_k):
    """ValueError unless generate can sample with these (checked before a model is loaded)."""
    if temperature < 0 or (top_k or 0) < 0:
        raise ValueError("temperature must be >= 0 (0 = greedy) and top_k >= 0 (0 = all)")


def text_logits(logits, mode):
    """(..., V) -> float logits with the special and padding ids at -inf: they are never output."""
    logits = logits.float()
    logits[..., mode.text_vocab_size:] = -float('inf')
    return logits


def pick(logits, temperature, top_k, generator):
    """(B, V) text logits -> (B, 1) next ids: greedy at temperature 0, else sampled from the top_k."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float('inf')
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)


@torch.no_grad()
def generate(model, mode, prompt, max_new_tokens, temperature=1.0, top_k=None, kv_cache=True,
             generator=None, return_logits=False):
    """
    Sample max_new_tokens text tokens after prompt (B, P) with the mode's inference layout.
    Special tokens are never sampled; text longer than the model's positions is cropped to the
    most recent tokens that fit; kv_cache=False recomputes the whole layout every step, giving the
    same logits. top_k None or 0 keeps every token. Returns (B, P + max_new_tokens) ids, and
    per-step logits (B, steps, V) if return_logits.
    """
    decoder = (FixedDecoder if mode.think is None else ThinkingDecoder)(model, mode, prompt, kv_cache)
    all_logits = []
    for _ in range(max_new_tokens):
        logits = decoder.step()
        if return_logits:
            all_logits.append(logits)
        decoder.push(pick(logits, temperature, top_k, generator))
    if return_logits:
        return decoder.text, torch.stack(all_logits, 1)
    return decoder.text


class FixedDecoder:
    """
    The fixed policy: every row has the layout mode.inference_counts gives. Each step feeds the
    slots after the previous prediction slot up to the slot that predicts the next text token:
    [x_{t+1}] in standard mode, [x_{t+1}, R x N] for reflection, and [r_t x N, x_{t+1}] for reasoning
    (step t's reasoning slots are known inputs, so they are computed with the next text token).
    """

    def __init__(self, model, mode, prompt, kv_cache=True):
        self.model, self.mode, self.kv_cache = model, mode, kv_cache
        self.text, self.n_prompt = prompt, prompt.size(1)
        self.cache, self.fed, self.window_start = None, 0, 0

    def push(self, next_id):
        """Append the (B, 1) next text tokens."""
        self.text = torch.cat((self.text, next_id), dim=1)

    def step(self):
        """(B, V) text logits of the next token."""
        mode, text, n_positions = self.mode, self.text, self.model.config.n_positions
        # the most recent text that fits in the position table
        start = self.window_start
        while True:
            # built uncached and without its full mask: only the new queries' rows are needed
            lay = mode._build(mode.inference_counts(text.size(1) - start, self.n_prompt - start))
            if int(lay.pos.max()) < n_positions:
                break
            start += 1
        read = int(lay.eval_slots[-1])  # the slot that predicts the next text token
        if not self.kv_cache or start != self.window_start or self.cache is None:
            # (re)start from an empty cache: first step, plain path, or the window moved
            self.window_start, self.fed = start, 0
            if self.kv_cache:
                self.cache = KVCache(self.model.config, text.size(0), n_positions * mode.slots_per_position(),
                                     text.device, next(self.model.parameters()).dtype)
        fed = self.fed
        ids = lay.inputs(text[:, start:])[:, fed:read + 1]  # (B, new slots)
        vis = mode.visibility(lay.kind, lay.step, fed, read + 1)  # rows of the new queries
        logits, _ = self.model(**self.model.prepare(ids, pos=lay.pos[fed:read + 1],
                                                    slot=None if lay.slot is None else lay.slot[fed:read + 1],
                                                    vis=vis, cache=self.cache if self.kv_cache else None,
                                                    decoding=True))
        self.fed = read + 1 if self.kv_cache else 0
        return text_logits(logits[:, -1, :], self.mode)  # (B, V)


class ThinkingDecoder:
    """
    Rows that each choose their own number of thinking slots per text token, decoded together.
    step() feeds every row's current text token followed by think_max thinking slots in one
    forward pass (causal attention makes slot j's prediction independent of the slots after it),
    keeps each row's slots up to the first whose prediction is confident (modes.ThinkingPolicy), and
    returns the next-token logits read there. The discarded slots stay in the KV cache, masked out
    of that row's later queries; positions count the kept slots only. So every row computes exactly
    what a sequence holding only its kept slots would, one pass per text token. When a row's
    layout and think_max more slots no longer fit the position table, its oldest text tokens are
    dropped (with their slots) and the cache is rebuilt from the rows' windows, left-padded, in the
    pass that feeds the block; kv_cache=False rebuilds it every step and so recomputes everything.
    """

    def __init__(self, model, mode, prompt, kv_cache=True):
        self.model, self.mode, self.policy, self.kv_cache = model, mode, mode.think, kv_cache
        self.device, B = prompt.device, prompt.size(0)
        self.n_positions = model.config.n_positions
        # a text slot and its candidate thinking slots; the window always leaves room for them: the
        # fixed policy's window with N = think_max (+inf has think_max 0: the N=0 window)
        self.block = 1 + self.policy.max_slots
        self.capacity = 2 * self.n_positions * self.block  # cache slots before it is rebuilt compactly
        self.text = prompt[:, :1]  # (B, n): the last column is the token the next step feeds
        self.counts = torch.zeros(B, 0, dtype=torch.long, device=self.device)  # thinking slots kept per fed token
        self.start = [0] * B  # each row's window: text tokens start.. are in its layout
        self.used = torch.zeros(B, dtype=torch.long, device=self.device)  # positions the window takes
        self.cache = None  # None: rebuilt from the windows at the next step
        self.keys = None  # per cache slot (B, K): kept, kind, step (the text token it belongs to)
        for t in range(1, prompt.size(1)):  # the prompt's tokens get their thinking slots as sampled ones would
            self.step()
            self.push(prompt[:, t:t + 1])

    def push(self, next_id):
        """Append the (B, 1) next text tokens (sampled, or known in teacher forcing)."""
        self.text = torch.cat((self.text, next_id), dim=1)

    def step(self):
        """Decide the current token's thinking slots; return the next token's (B, V) text logits."""
        B = self.text.size(0)
        self._crop(self.block)
        logits = self._feed_block()  # (B, block, V)
        n = self.policy.slots(logits)  # (B,)
        self.keys['kept'][:, -self.block:] = torch.arange(self.block, device=self.device) <= n[:, None]
        self.counts = torch.cat((self.counts, n[:, None]), 1)
        self.used += n + 1
        return logits[torch.arange(B, device=self.device), n]

    def _crop(self, need):
        """Drop each row's oldest text tokens (with their slots) until `need` more positions fit."""
        for b in range(self.text.size(0)):
            while int(self.used[b]) + need > self.n_positions:
                self.used[b] -= 1 + self.counts[b, self.start[b]]
                self.start[b] += 1
                self.cache = None  # the rows' windows changed: rebuild

    def _feed_block(self):
        """Feed every row's current token and think_max candidate slots: their text logits (B, block, V)."""
        B, t = self.text.size(0), self.text.size(1) - 1
        extra = self.mode.extra_id
        current = self.text[:, t:t + 1]
        ids = torch.cat((current, (current if extra < 0 else torch.full_like(current, extra)).expand(B, self.block - 1)), 1)
        kind = torch.full((B, self.block), self.mode.spec.extra_kind, device=self.device)
        kind[:, 0] = TEXT
        pos = self.used[:, None] + torch.arange(self.block, device=self.device)
        new = dict(ids=ids, kind=kind, step=torch.full((B, self.block), t, device=self.device),
                   kept=torch.ones(B, self.block, dtype=torch.bool, device=self.device), pos=pos)
        if not self.kv_cache or self.cache is None or self.cache.length + self.block > self.capacity:
            # the rows' windows and the block in one pass, into a new cache (none without kv_cache)
            window, self.keys = self._windows(), None
            new = {k: torch.cat((window[k], new[k]), 1) for k in new}
            self.cache = KVCache(self.model.config, B, self.capacity, self.device,
                                 next(self.model.parameters()).dtype) if self.kv_cache else None
        return text_logits(self._forward(new, self.block), self.mode)

    def _windows(self):
        """Every row's window (the kept slots of its tokens before the current one), left-padded."""
        rows = []
        for b in range(self.text.size(0)):
            lay = self.mode.layout(self.counts[b, self.start[b]:].cpu())
            rows.append((lay.inputs(self.text[b:b + 1, self.start[b]:].cpu())[0], lay.kind, lay.step + self.start[b]))
        width = max(ids.numel() for ids, _, _ in rows)

        def padded(take, fill):
            return torch.stack([F.pad(take(r), (width - r[0].numel(), 0), value=fill) for r in rows]).to(self.device)
        return dict(ids=padded(lambda r: r[0], 0), kind=padded(lambda r: r[1], TEXT), step=padded(lambda r: r[2], -1),
                    kept=padded(lambda r: torch.ones(r[0].numel(), dtype=torch.bool), False),
                    pos=padded(lambda r: torch.arange(r[0].numel()), 0))

    def _forward(self, new, n_read):
        """Feed slots (B, L) after the cached ones; returns the logits of the last n_read (B, n_read, V)."""
        self.keys = new if self.keys is None else {k: torch.cat((self.keys[k], new[k]), 1) for k in ('kept', 'kind', 'step')}
        K, L = self.keys['kept'].size(1), new['ids'].size(1)
        q = torch.arange(K - L, K, device=self.device)[:, None]  # (L, 1) the new slots' cache indices
        k = torch.arange(K, device=self.device)[None, :]  # (1, K)
        visible = self.keys['kept'][:, None, :] & (k <= q)  # (B, L, K)
        if self.mode.rules:  # the rows' own kinds and steps (hidden reflections)
            visible = visible & torch.stack([pair_masks(self.mode.rules, self.keys['kind'][b], self.keys['step'][b], q, k)[0]
                                             for b in range(visible.size(0))])
        visible = (visible | (k == q))[:, None]  # (B, 1, L, K); a left pad sees only itself
        attend = Prepared(lambda q_, k_, v_, dropout_p: F.scaled_dot_product_attention(q_, k_, v_, attn_mask=visible))
        logits, _ = self.model(idx=new['ids'], pos=new['pos'], vis=attend, cache=self.cache,
                               predict=torch.arange(L - n_read, L, device=self.device))
        return logits


@torch.no_grad()
def teacher_forced(model, mode, chunk, kv_cache=True):
    """
    chunk (B, T+1) known text -> (loss (B, T) per predicted text token, counts (B, T) thinking slots
    each token got), with exactly the decisions and logits sampling makes on that text.
    """
    decoder = ThinkingDecoder(model, mode, chunk[:, :1], kv_cache)
    losses = []
    for t in range(1, chunk.size(1)):
        logits = decoder.step()
        losses.append(F.cross_entropy(logits, chunk[:, t], reduction='none'))
        decoder.push(chunk[:, t:t + 1])
    return torch.stack(losses, 1), decoder.counts


def thinking_budgets(fixed, thresholds, think_max):
    """[(name, inference knobs)] for a compute-vs-quality curve: no thinking, a fixed number of
    thinking slots after every text token, and the entropy policy at each threshold."""
    def knobs(threshold, most):
        return dict(think_policy='entropy', think_threshold=float(threshold), think_max=most)
    return ([('none', knobs('inf', 0))] + [(f'fixed {n}', knobs('-inf', n)) for n in fixed] +
            [(f'entropy > {t:g}', knobs(t, think_max)) for t in thresholds])


def evaluate_thinking(model, mode, chunks, kv_cache=True):
    """(mean loss per text token, mean thinking slots per text token) of teacher_forced over the
    (B, T+1) chunks: the decisions sampling makes, batched across each chunk's sequences."""
    losses, slots = [], []
    for chunk in chunks:
        loss, counts = teacher_forced(model, mode, chunk, kv_cache)
        losses.append(loss.mean().item())
        slots.append(counts.float().mean().item())
    return sum(losses) / len(losses), sum(slots) / len(slots)
