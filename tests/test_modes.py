"""
Behaviour tests for the thinking-token layouts (modes.py) and the model's visibility spec (model.py).

Everything is checked against the behaviour spec, not against the code's own masks: the expected
visibility is rebuilt here pair by pair from the rules, exact targets are written out by hand, and
information flow is measured on a real (tiny, fp32, eval-mode) model by perturbing inputs and
watching which outputs move (forward) or which inputs receive gradient (stop-gradient).

Why "A @ A" below: in a 2-layer transformer the output at slot q depends on the input at slot k iff
there is a path q <- j <- k through the two attention layers (the residual stream makes every slot
see itself), i.e. iff (A @ A)[q, k] > 0 for the boolean visibility A with its diagonal.
"""

import math
import os
import sys

import pytest
import torch
from torch.nn import functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import model as model_module  # noqa: E402
from attention import Visibility  # noqa: E402
from model import GPT, GPTConfig, pad_vocab  # noqa: E402
from modes import (EVAL_SEED, LAYOUT_KEYS, MODES, NUM_SPECIAL_TOKENS, PAUSE, REASON, REFLECT,  # noqa: E402
                   TEXT, Mode, Records, special_token_ids)

VT = 50  # text vocab size of the toy dataset
PAUSE_ID, REFLECT_ID = VT, VT + 1
SAME = 1e-6  # "unchanged": exact up to float32 noise
MOVED = 1e-3  # "changed": well above float noise with the weights below


# ---- helpers ------------------------------------------------------------------------------------

def make_mode(name, records=None, **kw):
    cfg = dict(mode=name, pause_rate=0.0, reflect_rate=0.0, reflect_hidden=False, reflect_repeat=False,
               num_reason_tokens=1, reason_delay=1, reason_stopgrad=False, reason_heads=0, answer_only=False,
               num_pause_tokens=0)
    cfg.update(kw)
    assert set(LAYOUT_KEYS) <= set(cfg)
    return Mode(cfg, VT, records)


def tiny_model(mode, block_size, seed=0, std=0.3):
    """2 layers, 2 heads, 32 dims, fp32, eval. Weights are drawn larger than GPT-2's init so that
    information flow shows up far above float noise (row 0 of the slot table stays zero)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = GPT(GPTConfig(n_positions=mode.n_positions(block_size), vocab_size=pad_vocab(VT + NUM_SPECIAL_TOKENS),
                          n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True, n_slot_embd=mode.num_reason))
        with torch.no_grad():
            for name, p in m.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, std)
                elif name.endswith('bias'):
                    p.normal_(0.0, 0.05)
            if 'wse' in m.transformer:
                m.transformer.wse.weight[0].zero_()
    return m.eval()


# the CPU's attention backends: the flash kernel (the default) and dense-mask SDPA (the public
# fallback, which splits stop-gradient attention in two and merges by log-sum-exp, as FlexAttention does)
CPU_BACKENDS = ['cpu_flash', 'sdpa']


def make_chunk(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VT, (B, T + 1), generator=g)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def expected_structure(mode_name, counts):
    """(kind, step) per slot, from the spec: each text slot followed by counts[t] extras."""
    extra = {'pause': PAUSE, 'reflection': REFLECT, 'reasoning': REASON, 'standard': TEXT}[mode_name]
    kind, step = [], []
    for t, c in enumerate(counts.tolist()):
        kind += [TEXT] + [extra] * c
        step += [t] * (c + 1)
    return torch.tensor(kind), torch.tensor(step)


def spec_masks(mode, lay):
    """(allow, no_grad) built pair by pair from the behaviour spec (not from modes.py's masks)."""
    cfg = mode.cfg
    kind, step = lay.kind.tolist(), lay.step.tolist()
    L = len(kind)
    allow = torch.zeros(L, L, dtype=torch.bool)
    no_grad = torch.zeros(L, L, dtype=torch.bool)
    reasoning = mode.name == 'reasoning' and cfg['num_reason_tokens'] > 0
    for q in range(L):
        for k in range(q + 1):
            if reasoning and kind[k] == REASON and step[k] < step[q] <= step[k] + cfg['reason_delay']:
                if cfg['reason_stopgrad']:
                    no_grad[q, k] = True  # seen, but no gradient into k
                else:
                    continue  # step t's reasoning slots are out of reach of steps t+1..t+K
            if (mode.name == 'reflection' and cfg['reflect_hidden'] and kind[k] == REFLECT
                    and not (kind[q] == REFLECT and step[q] == step[k])):
                continue  # a reflection slot is seen only by its own run's later reflection slots
            allow[q, k] = True
    return allow, no_grad


def predicted_slots(batch):
    """(P,) the slots a batch's targets belong to: predict, else the read slots of its Visibility
    (the model's default), else every slot."""
    if batch['predict'] is not None:
        return batch['predict']
    if batch['vis'] is not None and batch['vis'].read is not None:
        return batch['vis'].read
    return torch.arange(batch['idx'].size(1))


def with_vis(batch, vis):
    """The batch under other attention rules, predicting from the same slots."""
    return dict(batch, vis=vis, predict=predicted_slots(batch))


def per_slot_targets(batch):
    """(B, L) target of every slot of a train batch, -1 where the slot has no loss."""
    B, L = batch['idx'].shape
    out = torch.full((B, L), -1)
    out[:, predicted_slots(batch)] = batch['targets']
    return out


def reach2(A):
    """Which inputs can influence which outputs of a 2-layer model with visibility A (diagonal incl.)."""
    A = A.float()
    return (A @ A) > 0


class Perturb:
    """Forward pre-hook on the first block: x (B, L, C) += add (broadcast), the block's input being
    the full input embedding wte + wpe (+ wse)."""

    def __init__(self, model, add):
        self.add = add
        self.handle = model.transformer.h[0].register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        return (args[0] + self.add,) + tuple(args[1:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def every_row(vis):
    """The same rules with every slot's output computed (no vis.read)."""
    return None if vis is None else vis.without_read()


def all_slot_logits(model, batch):
    """Logits at every slot of the layout (B, L, V) for the batch's inputs/positions/visibility,
    reasoning slots included (whose outputs the model normally skips in its last block)."""
    L = batch['idx'].size(1)
    logits, _ = model(batch['idx'], pos=batch['pos'], slot=batch['slot'], vis=every_row(batch['vis']),
                      predict=torch.arange(L))
    return logits


def influence(model, batch, noise_scale=1.0, seed=0):
    """D[q, k]: max |change| of slot q's logits when only slot k's input embedding is perturbed.
    One forward pass: row 0 of the batch is clean, row k+1 has noise on slot k."""
    idx = batch['idx'][:1]
    L = idx.size(1)
    C = model.config.n_embd
    noise = torch.randn(L, C, generator=gen(seed)) * noise_scale
    add = torch.zeros(L + 1, L, C)
    add[torch.arange(1, L + 1), torch.arange(L)] = noise
    b = dict(batch, idx=idx.expand(L + 1, L))
    with torch.no_grad(), Perturb(model, add):
        logits = all_slot_logits(model, b)  # (L+1, L, V)
    return (logits[1:] - logits[:1]).abs().amax(-1).T  # (q, k)


def assert_flow(D, expected, what=''):
    """Influence D must be ~0 exactly where expected is False, and clearly non-zero where True."""
    leaked = D[~expected]
    assert leaked.numel() == 0 or leaked.max() <= SAME, f"{what}: information leaked, max {leaked.max():.3g}"
    missing = D[expected]
    assert missing.min() > MOVED, f"{what}: expected influence missing, min {missing.min():.3g}"


# ---- token ids and layouts ----------------------------------------------------------------------

def test_special_token_ids():
    assert NUM_SPECIAL_TOKENS == 2
    assert special_token_ids(VT) == {'<pause>': VT, '<reflect>': VT + 1}
    assert set(MODES) == {'standard', 'pause', 'reflection', 'reasoning'}


def test_unknown_mode_and_bad_settings_raise():
    with pytest.raises(ValueError):
        make_mode('thinking')
    with pytest.raises(ValueError):
        make_mode('pause', pause_rate=-0.1)
    with pytest.raises(ValueError):
        make_mode('reasoning', num_reason_tokens=-1)


def test_pause_hand_built_layout():
    """counts [0,1,0,2]: inputs t0 t1 P t2 t3 P P; targets t1 - t2 t3 - - t4 (no loss where the
    target is <pause>; a pause whose target is real text keeps its loss)."""
    mode = make_mode('pause', pause_rate=0.5)
    chunk = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])
    counts = torch.tensor([0, 1, 0, 2])
    b = mode.train_batch(chunk, counts)
    P = PAUSE_ID
    assert b['idx'].tolist() == [[10, 11, P, 12, 13, P, P], [20, 21, P, 22, 23, P, P]]
    assert b['pos'].tolist() == list(range(7))
    assert b['slot'] is None and b['vis'] is None  # plain causal attention
    # per-slot targets, -1 = no loss
    assert per_slot_targets(b).tolist() == [[11, -1, 12, 13, -1, -1, 14], [21, -1, 22, 23, -1, -1, 24]]
    assert (b['targets'] < VT).all()  # never a loss on predicting <pause>
    lay = mode.layout(counts)
    kind, step = expected_structure('pause', counts)
    assert torch.equal(lay.kind, kind) and torch.equal(lay.step, step)
    # eval: exactly one slot per text token, the last slot of its step, targets = the next text
    e = mode.eval_batch(chunk, counts)
    assert e['predict'].tolist() == [0, 2, 3, 6]
    assert torch.equal(e['targets'], chunk[:, 1:])
    assert torch.equal(e['idx'], b['idx'])


def test_pause_loss_is_masked_where_target_is_pause():
    """The model's training loss equals cross-entropy over every slot whose target is real text."""
    T = 12
    mode = make_mode('pause', pause_rate=0.5)
    model = tiny_model(mode, T)
    chunk = make_chunk(3, T)
    counts = mode.train_counts(T, gen(3))
    b = mode.train_batch(chunk, counts)
    with torch.no_grad():
        _, loss = model(**b)
        full = all_slot_logits(model, b)  # (B, L, V)
    # by hand: the target of slot i is the next slot's input if that is text, else no loss
    idx = b['idx']
    L = idx.size(1)
    nxt = torch.cat([idx[:, 1:], chunk[:, -1:]], 1)  # the final slot predicts x_T
    tgt = torch.where(nxt == PAUSE_ID, -1, nxt)
    assert (tgt >= 0).sum(1).tolist() == [T] * 3  # one loss per text target
    ref = F.cross_entropy(full.reshape(-1, full.size(-1)), tgt.reshape(-1), ignore_index=-1)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    assert L == T + mode.num_inserted(T)


def test_answer_only_pause_finetune_hand_built():
    """Records `p0 p1 = a0 a1 NL` (prompt_len 3, answer_len 2), 2 pauses after each prompt:
    inputs p0 p1 = P P a0 a1 NL; only the slots predicting answer characters have a loss (the
    last pause predicts a0), whatever pause_rate says."""
    rec = Records(record_len=6, prompt_len=3, answer_len=2)
    mode = make_mode('pause', rec, answer_only=True, num_pause_tokens=2, pause_rate=0.5)
    chunk = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]])  # two records + the next's first
    counts = mode.train_counts(12, gen(0))
    assert counts.tolist() == [0, 0, 2, 0, 0, 0] * 2
    assert mode.num_inserted(12) == 4 and mode.n_positions(12) == 16 and mode.chunk_align == 6
    b = mode.train_batch(chunk, counts)
    P = PAUSE_ID
    assert b['idx'].tolist() == [[1, 2, 3, P, P, 4, 5, 6, 7, 8, 9, P, P, 10, 11, 12]]
    assert per_slot_targets(b).tolist() == [[-1, -1, -1, -1, 4, 5, -1, -1, -1, -1, -1, -1, 10, 11, -1, -1]]
    e = mode.eval_batch(chunk, counts)  # one slot per text token, loss on answers only
    assert e['predict'].tolist() == [0, 1, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15]
    assert e['targets'].tolist() == [[-1, -1, 4, 5, -1, -1, -1, -1, 10, 11, -1, -1]]
    assert list(mode.eval_variants(12)) == ['']  # the pauses after prompts are the layout, not noise


@pytest.mark.parametrize('name', ['standard', 'reasoning'])
def test_answer_only_masks_prompts(name):
    rec = Records(record_len=6, prompt_len=3, answer_len=2)
    mode = make_mode(name, rec, answer_only=True)
    chunk = torch.arange(1, 8)[None]
    b = mode.train_batch(chunk, mode.train_counts(6, gen(0)))
    assert b['targets'][b['targets'] >= 0].tolist() == [4, 5]
    assert mode.eval_batch(chunk, mode.train_counts(6, gen(0)))['targets'].tolist() == [[-1, -1, 4, 5, -1, -1]]
    with pytest.raises(ValueError, match='answer_only=True needs a dataset of prompt/answer records'):
        make_mode(name, None, answer_only=True)


def test_record_data_is_read_in_whole_records():
    """Pretraining on record data: chunks start at records, but every token keeps its loss and
    pause mode inserts at random (pause_rate), not after prompts."""
    rec = Records(record_len=6, prompt_len=3, answer_len=2)
    mode = make_mode('pause', rec, pause_rate=0.5, num_pause_tokens=2)
    assert mode.chunk_align == 6 and make_mode('standard').chunk_align == 1
    chunk = torch.arange(1, 14)[None]
    counts = mode.train_counts(12, gen(0))
    assert counts.sum() == 6 and counts.tolist() != [0, 0, 2, 0, 0, 0] * 2
    assert torch.equal(mode.eval_batch(chunk, counts)['targets'], chunk[:, 1:])


@pytest.mark.parametrize('T,rate', [(16, 0.1), (16, 0.25), (30, 0.5), (20, 1.0), (8, 2.0), (33, 0.3)])
@pytest.mark.parametrize('name', ['pause', 'reflection'])
def test_insertion_count_follows_rate(name, T, rate):
    mode = make_mode(name, pause_rate=rate, reflect_rate=rate)
    n = round(rate * T)
    assert mode.num_inserted(T) == n
    assert mode.n_positions(T) == T + n
    special = PAUSE_ID if name == 'pause' else REFLECT_ID
    for seed in range(3):
        counts = mode.train_counts(T, gen(seed))
        assert counts.shape == (T,) and counts.dtype == torch.long
        assert int(counts.sum()) == n and (counts >= 0).all()
        b = mode.train_batch(make_chunk(2, T), counts)
        assert b['idx'].shape == (2, T + n)
        assert ((b['idx'] == special).sum(1) == n).all()
        assert int(b['pos'].max()) < mode.n_positions(T)


def test_insertion_pattern_is_uniform_over_slots():
    """n extras land on uniformly random non-first slots of the final layout (2 of 5 here)."""
    mode = make_mode('pause', pause_rate=0.5)
    T, draws = 4, 3000
    g = gen(0)
    seen = {}
    for _ in range(draws):
        key = tuple(mode.train_counts(T, g).tolist())
        seen[key] = seen.get(key, 0) + 1
    # layouts: t0 then 5 slots of which 2 are pauses -> C(5,2) = 10 patterns, equally likely
    assert len(seen) == 10
    for key, c in seen.items():
        assert abs(c / draws - 0.1) < 0.03, (key, c)


@pytest.mark.parametrize('name', ['pause', 'reflection', 'reasoning'])
def test_train_counts_deterministic_and_shared_by_batch(name):
    mode = make_mode(name, pause_rate=0.3, reflect_rate=0.3, num_reason_tokens=2)
    T = 20
    a = mode.train_counts(T, gen(7))
    assert torch.equal(a, mode.train_counts(T, gen(7)))
    if name != 'reasoning':
        assert any(not torch.equal(a, mode.train_counts(T, gen(s))) for s in range(8, 12))
        g = gen(7)
        first, second = mode.train_counts(T, g), mode.train_counts(T, g)
        assert torch.equal(first, a) and not torch.equal(first, second)  # the generator advances
    # one pattern for the whole batch: extras sit at the same slots in every sequence, one mask
    b = mode.train_batch(make_chunk(4, T), a)
    lay = mode.layout(a)
    extra = lay.kind != TEXT
    if name != 'reasoning':
        special = b['idx'][:, extra]
        assert (special == special[:1]).all()
    assert b['pos'].dim() == 1 and (b['slot'] is None or b['slot'].dim() == 1)
    if b['vis'] is not None:
        assert b['vis'].allow.shape == (len(lay), len(lay))


def test_reflection_hand_built_layouts():
    """t1 t2 R t3 -> targets t2 t3 t3 t4; reflect_repeat carries t2 again; runs of several."""
    chunk = torch.tensor([[1, 2, 3, 4]])
    R = REFLECT_ID
    mode = make_mode('reflection', reflect_rate=0.5)
    b = mode.train_batch(chunk, torch.tensor([0, 1, 0]))
    assert b['idx'].tolist() == [[1, 2, R, 3]]
    assert per_slot_targets(b).tolist() == [[2, 3, 3, 4]]
    assert b['vis'] is None and b['pos'].tolist() == [0, 1, 2, 3]
    e = mode.eval_batch(chunk, torch.tensor([0, 1, 0]))
    assert e['predict'].tolist() == [0, 2, 3] and e['targets'].tolist() == [[2, 3, 4]]

    rep = make_mode('reflection', reflect_rate=0.5, reflect_repeat=True)
    b = rep.train_batch(chunk, torch.tensor([0, 1, 0]))
    assert b['idx'].tolist() == [[1, 2, 2, 3]]
    assert per_slot_targets(b).tolist() == [[2, 3, 3, 4]]

    # a run of three reflections after t2, and one after t3
    b = mode.train_batch(chunk, torch.tensor([0, 3, 1]))
    assert b['idx'].tolist() == [[1, 2, R, R, R, 3, R]]
    assert per_slot_targets(b).tolist() == [[2, 3, 3, 3, 3, 4, 4]]
    e = mode.eval_batch(chunk, torch.tensor([0, 3, 1]))
    assert e['predict'].tolist() == [0, 4, 6] and e['targets'].tolist() == [[2, 3, 4]]
    b = rep.train_batch(chunk, torch.tensor([0, 3, 1]))
    assert b['idx'].tolist() == [[1, 2, 2, 2, 2, 3, 3]]


@pytest.mark.parametrize('repeat', [False, True])
def test_reflect_hidden_information_flow(repeat):
    """Later real tokens never see a reflection slot (not even through other slots); a reflection
    slot is seen by its own run's later reflection slots. Without reflect_hidden, everything later
    sees it."""
    T = 10
    counts = torch.tensor([0, 2, 0, 1, 0, 0, 3, 0, 0, 1])
    chunk = make_chunk(1, T)
    for hidden in (True, False):
        mode = make_mode('reflection', reflect_rate=0.7, reflect_hidden=hidden, reflect_repeat=repeat)
        model = tiny_model(mode, T)
        lay = mode.layout(counts)
        kind, step = expected_structure('reflection', counts)
        assert torch.equal(lay.kind, kind) and torch.equal(lay.step, step)
        allow, no_grad = spec_masks(mode, lay)
        assert not no_grad.any()
        if hidden:
            assert lay.vis is not None and torch.equal(lay.vis.allow, allow) and lay.vis.no_grad is None
        else:
            assert lay.vis is None and torch.equal(allow, torch.ones_like(allow).tril())
        b = mode.train_batch(chunk, counts)
        D = influence(model, b)
        assert_flow(D, reach2(allow), f'reflect_hidden={hidden}')
        refl = (lay.kind == REFLECT).nonzero().squeeze(1)
        later_text = [q for q in range(len(lay)) if lay.kind[q] == TEXT and q > int(refl[0])]
        if hidden:  # the spec's statement, spelled out
            assert D[later_text][:, refl].max() <= SAME
            first_of_run = int((lay.step == 6).nonzero()[1])  # step 6 has a run of 3
            assert D[first_of_run + 1, first_of_run] > MOVED and D[first_of_run + 2, first_of_run] > MOVED
        else:
            assert D[later_text][:, refl[:1]].min() > MOVED


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_reflect_hidden_train_loss_matches_reference_mask(backend, monkeypatch):
    """Loss and gradients equal a plain masked-softmax attention on the spec's mask, through each
    CPU attention backend."""
    T = 24
    mode = make_mode('reflection', reflect_rate=0.25, reflect_hidden=True)
    model = tiny_model(mode, T)
    model.set_attention(backend)
    chunk = make_chunk(2, T)
    counts = mode.train_counts(T, gen(1))
    b = mode.train_batch(chunk, counts)
    lay = mode.layout(counts)
    allow, _ = spec_masks(mode, lay)
    loss, g = grads(model, b)
    with monkeypatch.context() as mp:
        mp.setattr(model_module.CausalSelfAttention, 'forward', reference_attention(allow, torch.zeros_like(allow)))
        ref_loss, ref_g = grads(model, b)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    for n in g:
        torch.testing.assert_close(g[n], ref_g[n], rtol=1e-4, atol=1e-5, msg=lambda m: f'{n}: {m}')
    assert lay.attended_pairs() == int(allow.sum())


# ---- reasoning ----------------------------------------------------------------------------------

@pytest.mark.parametrize('N', [1, 3])
def test_reasoning_layout_and_embeddings(N):
    """Every x_t is followed by N slots carrying x_t's embedding plus slot embedding j, all at
    position t; only text slots predict."""
    T = 6
    mode = make_mode('reasoning', num_reason_tokens=N, reason_delay=1)
    model = tiny_model(mode, T)
    chunk = make_chunk(2, T)
    counts = mode.train_counts(T, None)
    assert counts.tolist() == [N] * T
    b = mode.train_batch(chunk, counts)
    L = T * (N + 1)
    assert b['idx'].shape == (2, L)
    assert torch.equal(b['idx'], chunk[:, :T].repeat_interleave(N + 1, dim=1))
    assert b['pos'].tolist() == [t for t in range(T) for _ in range(N + 1)]
    assert b['slot'].tolist() == list(range(N + 1)) * T
    text_slots = torch.arange(0, L, N + 1)
    assert b['predict'] is None and torch.equal(predicted_slots(b), text_slots)  # the read slots, by default
    assert torch.equal(b['targets'], chunk[:, 1:])
    assert mode.n_positions(T) == T and mode.slots_per_position() == N + 1
    assert mode.slots_per_text_token(T) == N + 1
    # the first block's input is wte(x_t) + wpe(t) + wse(j), with wse row 0 = 0 for text slots
    seen = {}
    h = model.transformer.h[0].register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    with torch.no_grad():
        _, loss = model(**b)
        full = all_slot_logits(model, b)
    h.remove()
    tr = model.transformer
    expect = tr.wte(b['idx']) + tr.wpe(b['pos']) + tr.wse(b['slot'])
    torch.testing.assert_close(seen['x'], expect, rtol=0, atol=0)
    assert tr.wse.weight[0].abs().max() == 0
    assert (tr.wse.weight[1:].abs().amax(1) > 0).all()
    # loss only at the text slots, each predicting the next text token
    ref = F.cross_entropy(full[:, text_slots].reshape(-1, full.size(-1)), chunk[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('N,K', [(1, 1), (1, 2), (3, 1), (3, 2), (2, 0), (2, 5)])
@pytest.mark.parametrize('stopgrad', [False, True])
def test_reasoning_visibility_matches_spec(N, K, stopgrad):
    T = 8
    mode = make_mode('reasoning', num_reason_tokens=N, reason_delay=K, reason_stopgrad=stopgrad)
    lay = mode.layout(mode.train_counts(T, None))
    kind, step = expected_structure('reasoning', torch.full((T,), N))
    assert torch.equal(lay.kind, kind) and torch.equal(lay.step, step)
    allow, no_grad = spec_masks(mode, lay)
    causal = torch.ones_like(allow).tril()
    if K == 0:  # nothing removed: plain causal attention
        assert torch.equal(allow, causal)
        assert lay.vis is None or (torch.equal(lay.vis.allow, causal) and lay.vis.no_grad is None)
    elif stopgrad:
        assert torch.equal(allow, causal)
        assert torch.equal(lay.vis.allow, causal) and torch.equal(lay.vis.no_grad, no_grad)
    else:
        assert torch.equal(lay.vis.allow, allow) and lay.vis.no_grad is None
    assert lay.attended_pairs() == int(allow.sum())


def test_reason_delay_zero_uses_causal_fast_path():
    for stopgrad in (False, True):
        mode = make_mode('reasoning', num_reason_tokens=2, reason_delay=0, reason_stopgrad=stopgrad)
        assert mode.layout(mode.train_counts(8, None)).vis is None, f'reason_stopgrad={stopgrad}'


@pytest.mark.parametrize('N', [1, 3])
@pytest.mark.parametrize('K', [1, 2])
def test_reasoning_delay_perturbation(N, K):
    """Perturb only step t's reasoning slots: text logits at steps <= t+K are unchanged, every
    later step's change."""
    T = 10
    mode = make_mode('reasoning', num_reason_tokens=N, reason_delay=K)
    model = tiny_model(mode, T)
    chunk = make_chunk(2, T)
    counts = mode.train_counts(T, None)
    b = mode.train_batch(chunk, counts)
    lay = mode.layout(counts)
    L, C = len(lay), model.config.n_embd
    with torch.no_grad():
        base, _ = model(**b)  # (B, T, V): the text slots, step by step
    for t in (0, 3, T - K - 2):
        add = torch.zeros(L, C)
        sl = (lay.step == t) & (lay.kind == REASON)
        assert int(sl.sum()) == N
        add[sl] = torch.randn(N, C, generator=gen(t))
        with torch.no_grad(), Perturb(model, add):
            out, _ = model(**b)
        diff = (out - base).abs().amax(dim=(0, 2))  # (T,)
        assert diff[:t + K + 1].max() <= SAME, (t, diff)
        assert diff[t + K + 1:].min() > MOVED, (t, diff)


@pytest.mark.parametrize('N,K', [(1, 1), (3, 2), (2, 1)])
def test_reasoning_information_flow_all_slots(N, K):
    """Every slot (text and reasoning): within step t a slot sees x_t, its earlier slots and the
    earlier steps' slots the delay allows; nothing else, not even through another slot."""
    T = 7
    mode = make_mode('reasoning', num_reason_tokens=N, reason_delay=K)
    model = tiny_model(mode, T)
    counts = mode.train_counts(T, None)
    b = mode.train_batch(make_chunk(1, T), counts)
    lay = mode.layout(counts)
    allow, _ = spec_masks(mode, lay)
    D = influence(model, b)
    assert_flow(D, reach2(allow), f'reasoning N={N} K={K}')
    # spelled out for step 3: slot j sees x_3 and slots < j of step 3, not slots > j
    s = (lay.step == 3).nonzero().squeeze(1).tolist()
    for j in range(1, N + 1):
        assert D[s[j], s[0]] > MOVED
        for i in range(1, j):
            assert D[s[j], s[i]] > MOVED
        for i in range(j + 1, N + 1):
            assert D[s[j], s[i]] <= SAME


# ---- reasoning in a subset of heads --------------------------------------------------------------

def head_spec(T, n_head, h, K):
    """(n_head, T, T) visibility from the spec: causal, and in the last h heads step s does not see
    the text tokens of steps s-K .. s (itself included)."""
    q, k = torch.meshgrid(torch.arange(T), torch.arange(T), indexing='ij')
    causal = k <= q
    hidden = causal & (q - k <= K)
    return torch.stack([causal & ~hidden if head >= n_head - h else causal for head in range(n_head)])


def head_mode(h, K=1, stopgrad=False):
    return make_mode('reasoning', num_reason_tokens=0, reason_heads=h, reason_delay=K, reason_stopgrad=stopgrad)


def head_outputs(model, batch, layer=0):
    """(B, nh, L, hs): every head's attention output in `layer` (the input of its c_proj)."""
    got = {}
    proj = model.transformer.h[layer].attn.c_proj
    handle = proj.register_forward_pre_hook(lambda m, args: got.update(y=args[0]))
    try:
        with torch.no_grad():
            model(**dict(batch, predict=torch.arange(batch['idx'].size(1))))
    finally:
        handle.remove()
    B, L, C = got['y'].shape
    nh = model.config.n_head
    return got['y'].view(B, L, nh, C // nh).transpose(1, 2)


@pytest.mark.parametrize('h,K,stopgrad', [(1, 1, False), (2, 1, False), (1, 2, False), (1, 1, True), (2, 2, True)])
def test_reason_heads_visibility_and_flops(h, K, stopgrad):
    """No extra slots; the rule per head as the spec says; hidden pairs are not counted as FLOPs and
    stop-gradient ones are (the count is standard's up to the hidden pairs)."""
    T, n_head = 12, 2
    mode = head_mode(h, K, stopgrad)
    lay = mode.layout(mode.train_counts(T, None))
    assert len(lay) == T and lay.slot is None and torch.equal(lay.pos, torch.arange(T))
    assert mode.n_positions(T) == T and mode.num_reason == 0 and lay.vis.read is None
    visible, passing = lay.vis.dense(n_head)
    spec = head_spec(T, n_head, h, K)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    if stopgrad:
        assert torch.equal(visible, causal.expand(n_head, T, T)) and torch.equal(passing, spec)
        assert lay.attended_pairs(n_head) == T * (T + 1) // 2
    else:
        assert torch.equal(visible, spec) and torch.equal(passing, spec)
        assert lay.attended_pairs(n_head) == pytest.approx(spec.sum().item() / n_head)
    std = make_mode('standard')
    model = tiny_model(std, T)
    ratio = mode.flops_per_text_token(model, T) / std.flops_per_text_token(model, T)
    assert ratio == 1.0 if stopgrad else 0.97 < ratio < 1.0


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('h,K', [(1, 1), (2, 1), (1, 3)])
def test_reason_heads_perturbation_per_head(h, K, backend):
    """Perturb the input of one step: in the plain heads every later query's output moves; in the
    last h heads only queries K+1 or more steps later do, and a query with no visible key outputs zero."""
    T = 10
    mode = head_mode(h, K)
    model = tiny_model(mode, T)
    model.set_attention(backend)
    b = mode.train_batch(make_chunk(2, T), mode.train_counts(T, None))
    base = head_outputs(model, b)  # (B, nh, T, hs)
    n_head = model.config.n_head
    for head in range(n_head - h, n_head):
        assert base[:, head, :K + 1].abs().max() == 0  # steps 0..K see no key there
    for t in (0, 2, 5):
        add = torch.zeros(T, model.config.n_embd)
        add[t] = torch.randn(model.config.n_embd, generator=gen(t))
        with Perturb(model, add):
            out = head_outputs(model, b)
        diff = (out - base).abs().amax(dim=(0, 3))  # (nh, T)
        for head in range(n_head):
            moved = torch.arange(T) >= t
            if head >= n_head - h:  # step t moves through its own query (when it weighs two keys or more),
                moved &= (torch.arange(T) > t + K) | (torch.arange(T) == t) & (t > K + 1)  # K steps see none of it
            assert (diff[head][~moved] <= SAME).all(), (head, t, diff[head])
            assert (diff[head][moved] > MOVED).all(), (head, t, diff[head])


def test_reason_heads_all_heads_information_flow():
    """With every head reasoning, a 2-layer model's output at step s depends on its own input (the
    residual) and on steps that are K+1 or more behind through attention, composed over two layers."""
    T, K = 9, 1
    mode = make_mode('reasoning', num_reason_tokens=0, reason_heads=2, reason_delay=K)
    model = tiny_model(mode, T)
    b = mode.train_batch(make_chunk(1, T), mode.train_counts(T, None))
    A = head_spec(T, 2, 2, K)[0] | torch.eye(T, dtype=torch.bool)  # attention in every head, plus the residual
    assert_flow(influence(model, b), reach2(A), 'reason_heads=n_head')


@pytest.mark.parametrize('h,K', [(1, 1), (2, 2)])
@pytest.mark.parametrize('stopgrad', [False, True])
@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_reason_heads_gradients_match_per_pair_reference(h, K, stopgrad, backend, monkeypatch):
    """Every gradient equals the autograd reference built from the spec's per-head masks (hidden
    pairs masked, stop-gradient pairs through detached k and v)."""
    T = 10
    mode = head_mode(h, K, stopgrad)
    model = tiny_model(mode, T)
    model.set_attention(backend)
    b = mode.train_batch(make_chunk(3, T), mode.train_counts(T, None))
    spec = head_spec(T, 2, h, K)
    causal = torch.ones(2, T, T, dtype=torch.bool).tril()
    allow, no_grad = (causal, causal & ~spec) if stopgrad else (spec, torch.zeros_like(spec))
    loss, g = grads(model, b)
    with monkeypatch.context() as mp:
        mp.setattr(model_module.CausalSelfAttention, 'forward', reference_attention(allow, no_grad))
        ref_loss, ref_g = grads(model, b)
    _, plain_g = grads(model, with_vis(b, None))
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    for n in g:
        torch.testing.assert_close(g[n], ref_g[n], rtol=1e-4, atol=1e-5, msg=lambda m: f'{n}: {m}')
    assert max((g[n] - plain_g[n]).abs().max() for n in g) > 1e-4  # the rule changes the gradients


def test_reason_heads_with_reasoning_slots_or_elsewhere_is_an_error():
    with pytest.raises(ValueError, match='num_reason_tokens=0'):
        make_mode('reasoning', num_reason_tokens=1, reason_heads=1)
    with pytest.raises(ValueError, match="mode='reasoning'"):
        make_mode('reflection', reason_heads=1)
    model = tiny_model(make_mode('standard'), 8)
    with pytest.raises(ValueError, match='head'):  # more heads than the model has
        model(**head_mode(3).train_batch(make_chunk(1, 8), torch.zeros(8, dtype=torch.long)))


# ---- stop-gradient ------------------------------------------------------------------------------

def reference_attention(allow, no_grad):
    """A slow CausalSelfAttention.forward that routes gradient per (query, key) pair from the
    spec's masks: pairs in no_grad use detached k and v, everything else is plain masked softmax."""

    def forward(self, x, attend, cache=None, rows=None):
        assert cache is None
        B, T, C = x.size()
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (z.view(B, T, nh, hs).transpose(1, 2) for z in (q, k, v))
        a, ng = allow, no_grad
        if rows is not None:  # the last block: only the read slots query
            q, a, ng = q[:, :, rows], allow[rows], no_grad[rows]
        s_live = q @ k.transpose(-2, -1) / math.sqrt(hs)
        s_dead = q @ k.detach().transpose(-2, -1) / math.sqrt(hs)
        s = torch.where(ng, s_dead, s_live).masked_fill(~a, float('-inf'))
        p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # a row with no visible key outputs zero
        y = (p * ~ng) @ v + (p * ng) @ v.detach()
        y = y.transpose(1, 2).contiguous().view(B, q.size(2), C)
        return self.resid_dropout(self.c_proj(y))

    return forward


def grads(model, batch):
    model.zero_grad(set_to_none=True)
    _, loss = model(**batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('N,K', [(1, 1), (2, 2), (3, 1)])
def test_reason_stopgrad_forward_is_full_causal(N, K):
    T = 9
    mode = make_mode('reasoning', num_reason_tokens=N, reason_delay=K, reason_stopgrad=True)
    model = tiny_model(mode, T)
    counts = mode.train_counts(T, None)
    b = mode.train_batch(make_chunk(2, T), counts)
    lay = mode.layout(counts)
    causal = Visibility(lay.kind, lay.step, ())  # no rules: every causal pair, through the masked path
    for grad_mode in (torch.no_grad, torch.enable_grad):  # with grad: the split (stop-gradient) path
        with grad_mode():
            out, loss = model(**b)
            ref, ref_loss = model(**with_vis(b, None))
            ref2, _ = model(**with_vis(b, causal))
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(out, ref2, rtol=0, atol=1e-5)
        torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    # ... while the hidden (non-stopgrad) variant is a different function
    hidden = make_mode('reasoning', num_reason_tokens=N, reason_delay=K)
    with torch.no_grad():
        out_hidden, _ = model(**hidden.train_batch(make_chunk(2, T), mode.train_counts(T, None)))
    assert (out_hidden - out).abs().max() > MOVED


@pytest.mark.parametrize('N,K', [(1, 1), (2, 2), (3, 1)])
@pytest.mark.parametrize('stopgrad', [True, False])
@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_attention_gradients_match_per_pair_reference(N, K, stopgrad, backend, monkeypatch):
    """Every parameter's gradient equals the autograd reference that detaches k/v exactly for the
    pairs (query at steps t+1..t+K, key a reasoning slot of step t), through each CPU backend."""
    T = 8
    mode = make_mode('reasoning', num_reason_tokens=N, reason_delay=K, reason_stopgrad=stopgrad)
    model = tiny_model(mode, T)
    model.set_attention(backend)
    counts = mode.train_counts(T, None)
    b = mode.train_batch(make_chunk(3, T), counts)
    allow, no_grad = spec_masks(mode, mode.layout(counts))
    assert bool(no_grad.any()) == stopgrad
    loss, g = grads(model, b)
    with monkeypatch.context() as mp:
        mp.setattr(model_module.CausalSelfAttention, 'forward', reference_attention(allow, no_grad))
        ref_loss, ref_g = grads(model, b)
    _, plain_g = grads(model, with_vis(b, None))  # plain causal attention, same forward
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    assert set(g) == set(ref_g)
    for n in g:
        torch.testing.assert_close(g[n], ref_g[n], rtol=1e-4, atol=1e-5, msg=lambda m: f'{n}: {m}')
    if stopgrad:  # the test has teeth: stop-gradient changes the gradients of plain attention
        assert max((g[n] - plain_g[n]).abs().max() for n in g) > 1e-4


@pytest.mark.parametrize('N,K,stopgrad', [(1, 1, False), (3, 1, True), (2, 2, False)])
@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_last_block_computing_only_text_slots_changes_nothing(N, K, stopgrad, backend):
    """Reasoning layouts name their text slots as vis.read, and the last block computes only those
    rows. Loss, logits and every gradient equal computing every slot through every block."""
    T = 8
    mode = make_mode('reasoning', num_reason_tokens=N, reason_delay=K, reason_stopgrad=stopgrad)
    model = tiny_model(mode, T)
    model.set_attention(backend)
    counts = mode.train_counts(T, None)
    lay = mode.layout(counts)
    assert lay.vis.read.tolist() == (lay.kind == TEXT).nonzero().squeeze(1).tolist()
    assert lay.read_pairs() == int(spec_masks(mode, lay)[0][lay.kind == TEXT].sum()) < lay.attended_pairs()
    b = mode.train_batch(make_chunk(3, T), counts)
    full = with_vis(b, every_row(b['vis']))
    loss, g = grads(model, b)
    full_loss, full_g = grads(model, full)
    torch.testing.assert_close(loss, full_loss, rtol=0, atol=1e-6)
    for n in g:
        torch.testing.assert_close(g[n], full_g[n], rtol=1e-4, atol=1e-6, msg=lambda m: f'{n}: {m}')
    with torch.no_grad():
        some = b['vis'].read[[1, 4, 6]]  # any text slots can be asked for ...
        logits, _ = model(b['idx'], pos=b['pos'], slot=b['slot'], vis=b['vis'], predict=some)
        full_logits, _ = model(b['idx'], pos=b['pos'], slot=b['slot'], vis=full['vis'], predict=some)
        torch.testing.assert_close(logits, full_logits, rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match='outside vis.read'):  # ... but not a reasoning slot
            model(b['idx'], pos=b['pos'], slot=b['slot'], vis=b['vis'], predict=b['vis'].read + 1)
        with pytest.raises(ValueError, match='last slot is not in vis.read'):  # it ends in reasoning slots
            model(b['idx'], pos=b['pos'], slot=b['slot'], vis=b['vis'])
    # the FLOP count drops by the skipped rows' work in the last block, and only by that
    model_flops = mode.flops_per_text_token(model, T) * T
    c = model.config
    layer = sum(p.numel() for p in model.transformer.h[0].parameters())
    c_attn = sum(p.numel() for p in model.transformer.h[0].attn.c_attn.parameters())
    skipped = 6 * (layer - c_attn) * (len(lay) - T) + 3 * 4 * c.n_embd * (lay.attended_pairs() - lay.read_pairs())
    assert model_flops == model.flops_per_layout(lay.attended_pairs(), len(lay), T) - skipped


@pytest.mark.parametrize('N,K', [(1, 1), (2, 2), (3, 1)])
def test_reason_stopgrad_gradient_flow(N, K):
    """The loss at text slots of steps t+1..t+K sends no gradient into step t's reasoning slots
    (exactly zero, through any path); the loss at a step after t+K does."""
    T = 8
    mode = make_mode('reasoning', num_reason_tokens=N, reason_delay=K, reason_stopgrad=True)
    model = tiny_model(mode, T)
    counts = mode.train_counts(T, None)
    chunk = make_chunk(2, T)
    b = mode.train_batch(chunk, counts)
    lay = mode.layout(counts)
    L, C = len(lay), model.config.n_embd
    allow, no_grad = spec_masks(mode, lay)
    with_grad = allow & ~no_grad
    G_expected = reach2(with_grad)  # (q, k): can q's output send gradient into k's input?
    delta = torch.zeros(2, L, C, requires_grad=True)
    with Perturb(model, delta):
        logits, _ = model(**b)  # (B, T, V) at the text slots
    per_tok = F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction='none').sum(0)  # (T,)
    text_slots = lay.eval_slots.tolist()
    for s in range(T):
        (gd,) = torch.autograd.grad(per_tok[s], delta, retain_graph=True)
        got = gd.abs().amax(dim=(0, 2))  # (L,): gradient reaching each slot's input
        exp = G_expected[text_slots[s]]
        assert got[~exp].max() == 0, (s, got)
        assert got[exp].min() > 1e-7, (s, got)
        for t in range(s):
            reason_t = ((lay.step == t) & (lay.kind == REASON)).nonzero().squeeze(1)
            if s <= t + K:
                assert got[reason_t].max() == 0
            else:
                assert got[reason_t].min() > 1e-7


# ---- evaluation ---------------------------------------------------------------------------------

EVAL_CASES = [
    ('standard', dict()),
    ('pause', dict(pause_rate=0.25)),
    ('reflection', dict(reflect_rate=0.25)),
    ('reflection', dict(reflect_rate=0.25, reflect_hidden=True)),
    ('reflection', dict(reflect_rate=0.25, reflect_repeat=True)),
    ('reasoning', dict(num_reason_tokens=2, reason_delay=1)),
    ('reasoning', dict(num_reason_tokens=1, reason_delay=2, reason_stopgrad=True)),
]


@pytest.mark.parametrize('name,kw', EVAL_CASES)
def test_eval_batch_one_prediction_per_text_token(name, kw):
    T = 16
    mode = make_mode(name, **kw)
    model = tiny_model(mode, T)
    chunk = make_chunk(2, T)
    variants = mode.eval_variants(T)
    if name in ('pause', 'reflection'):
        assert set(variants) == {'', 'clean'}
        assert variants['clean'](T, gen(EVAL_SEED)).tolist() == [0] * T
    else:
        assert set(variants) == {''}
    for vname, counts_fn in variants.items():
        counts = counts_fn(T, gen(EVAL_SEED))
        assert torch.equal(counts, counts_fn(T, gen(EVAL_SEED)))  # fixed-seed eval patterns
        e = mode.eval_batch(chunk, counts)
        assert torch.equal(e['targets'], chunk[:, 1:])
        first = torch.cumsum(counts + 1, 0) - (counts + 1)
        if name == 'reasoning':
            expect = first  # only text slots predict
        else:
            expect = first + counts  # the last slot of each step
        pred = predicted_slots(e)
        assert pred.tolist() == expect.tolist()
        # the slot that counts really predicts the next text token in training too
        t = mode.train_batch(chunk, counts)
        tp = predicted_slots(t)
        train_tgt = dict(zip(tp.tolist(), t['targets'][0].tolist()))
        assert [train_tgt[i] for i in expect.tolist()] == chunk[0, 1:].tolist()
        with torch.no_grad():
            _, loss = model(**e)
            full = all_slot_logits(model, e)
        ref = F.cross_entropy(full[:, expect].reshape(-1, full.size(-1)), chunk[:, 1:].reshape(-1))
        torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
        if vname == 'clean':
            std = make_mode('standard')
            with torch.no_grad():
                _, std_loss = model(**std.eval_batch(chunk, counts))
            torch.testing.assert_close(loss, std_loss, rtol=0, atol=0)


# ---- degenerate settings reproduce standard mode ----------------------------------------------

DEGENERATE = [
    ('reasoning', dict(num_reason_tokens=0)),
    ('reasoning', dict(num_reason_tokens=0, reason_heads=0, reason_stopgrad=True)),
    ('reasoning', dict(num_reason_tokens=0, reason_delay=3, reason_stopgrad=True)),
    ('reasoning', dict(num_reason_tokens=0, reason_delay=0)),
    ('pause', dict(pause_rate=0.0)),
    ('pause', dict(pause_rate=0.01)),  # round(0.01 * 16) = 0
    ('reflection', dict(reflect_rate=0.0)),
    ('reflection', dict(reflect_rate=0.0, reflect_hidden=True)),
    ('reflection', dict(reflect_rate=0.0, reflect_repeat=True)),
]


@pytest.mark.parametrize('name,kw', DEGENERATE)
def test_degenerate_modes_reproduce_standard(name, kw):
    T = 16
    mode = make_mode(name, **kw)
    std = make_mode('standard')
    assert mode.n_positions(T) == std.n_positions(T) == T
    assert mode.num_reason == 0
    model = tiny_model(std, T)
    chunk = make_chunk(3, T)
    if name != 'reasoning':
        assert set(mode.eval_variants(T)) == {''}
    for seed in (0, 1):
        counts = mode.train_counts(T, gen(seed))
        assert counts.tolist() == [0] * T
        for which in ('train_batch', 'eval_batch'):
            b = getattr(mode, which)(chunk, counts)
            s = getattr(std, which)(chunk, std.train_counts(T, gen(seed)))
            assert b['predict'] is None and b['vis'] is None and b['slot'] is None
            assert torch.equal(b['idx'], s['idx']) and torch.equal(b['targets'], s['targets'])
            assert torch.equal(b['pos'], s['pos'])
            with torch.no_grad():
                logits, loss = model(**b)
                slogits, sloss = model(**s)
                plain_logits, plain_loss = model(chunk[:, :-1], chunk[:, 1:])
            assert torch.equal(logits, slogits) and torch.equal(loss, sloss)
            assert torch.equal(logits, plain_logits) and torch.equal(loss, plain_loss)
