"""
Every thinking-token mode's token layout, in one place.

A mode turns a chunk of text tokens x_0 .. x_T (block_size = T inputs plus the last target) into a
layout of L >= T slots: each text token's slot is followed by zero or more extra slots (a <pause>,
a <reflect>, or N reasoning slots), the step of text token t being its slot plus its extras.
Everything the model needs follows from how many extras each step has (`counts`, shape (T,)):

  input ids   text slots carry x_t; extras carry <pause>/<reflect>, or x_t again (reasoning,
              reflect_repeat)
  targets     which slots predict x_{t+1} (the rest have no loss)
  positions   sequential over slots, except reasoning, whose slots share their text token's position
  visibility  causal, minus the mode's rules (reasoning delay, hidden reflections)
  eval slots  per text token, the last slot that predicts it: the per-text-token loss every mode
              reports is taken there, so val losses are comparable across modes

Training draws counts at random (pause, reflection) or uses a fixed pattern (reasoning); evaluation
uses fixed-seed counts; sampling builds the same layout step by step (generation.py). The insertion
pattern is drawn once per batch and shared by its sequences, so one visibility serves the whole
batch (attention.py: per-slot vectors and rules, from which each backend derives its masks).
"""

from collections import OrderedDict, namedtuple
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional

import torch
from torch.nn import functional as F

from attention import Rule, Visibility

TEXT, PAUSE, REFLECT, REASON = 0, 1, 2, 3
NUM_SPECIAL_TOKENS = 2  # <pause>, <reflect>: ids text_vocab_size and text_vocab_size + 1, in every mode

# the config keys that define a mode's layout (saved in checkpoints, checked on resume)
LAYOUT_KEYS = ('mode', 'pause_rate', 'reflect_rate', 'reflect_hidden', 'reflect_repeat',
               'num_reason_tokens', 'reason_delay', 'reason_stopgrad', 'reason_heads', 'answer_only',
               'num_pause_tokens')
EVAL_SEED = 1234  # insertion patterns for evaluation: the same in every eval of every run

# A dataset of fixed-width prompt/answer records (data/arithmetic): each record is prompt_len
# characters ending in '=', answer_len answer characters, then a newline.
Records = namedtuple('Records', 'record_len prompt_len answer_len')


def special_token_ids(text_vocab_size):
    return {'<pause>': text_vocab_size, '<reflect>': text_vocab_size + 1}


def _reflection_rules(cfg):
    # a hidden reflection slot is seen only by the later reflection slots of its own step
    return (Rule(REFLECT, 1),) if cfg['reflect_hidden'] else ()


def _reasoning_rules(cfg):
    if cfg['reason_heads'] > 0:
        # no extra slots: in the last h heads, the text tokens of steps s-K .. s are out of reach of
        # (or pass no gradient to) step s, so those heads carry only what was computed K+1 steps before
        return (Rule(TEXT, 0, cfg['reason_delay'], stopgrad=cfg['reason_stopgrad'],
                     heads=tuple(range(-cfg['reason_heads'], 0))),)
    # step t's reasoning slots are out of reach of (or pass no gradient to) steps t+1 .. t+K
    if cfg['num_reason_tokens'] > 0 and cfg['reason_delay'] > 0:
        return (Rule(REASON, 1, cfg['reason_delay'], stopgrad=cfg['reason_stopgrad']),)
    return ()


@dataclass(frozen=True)
class ModeSpec:
    """Everything that sets one mode apart from the others (a row of MODE_SPECS)."""
    extra_kind: int  # the kind of the extra slots after a text token (TEXT: the mode has none)
    extra_token: Optional[str]  # the special token the extras carry; None: their step's text token again
    repeat_key: Optional[str]  # a config key that, when True, makes the extras carry the text token instead
    predicts: str  # which slots of step t predict x_{t+1}: 'all', the 'last' (its next input is x_{t+1}), 'text'
    own_positions: bool  # extras take positions of their own (else they share their text token's)
    rate_key: Optional[str]  # training: extras inserted at random, this config key's rate per text token
    every_key: Optional[str]  # training and inference: this config key's count of extras after every token
    knob: Optional[str]  # the inference knob (sample.py) for the number of extras
    knob_after: Optional[str]  # where inference puts them: after the 'prompt', or after every 'token'
    eval_clean: bool  # evaluation also reports the layout without extras ('val_clean')
    rules: Callable = lambda cfg: ()  # attention rules (attention.Rule) on top of causal attention


MODE_SPECS = {
    'standard': ModeSpec(TEXT, None, None, 'all', True, None, None, None, None, False),
    'pause': ModeSpec(PAUSE, '<pause>', None, 'last', True, 'pause_rate', None, 'num_pause_tokens', 'prompt', True),
    'reflection': ModeSpec(REFLECT, '<reflect>', 'reflect_repeat', 'all', True, 'reflect_rate', None,
                           'num_reflect_tokens', 'token', True, _reflection_rules),
    'reasoning': ModeSpec(REASON, None, None, 'text', False, None, 'num_reason_tokens', 'num_reason_tokens',
                          'token', False, _reasoning_rules),
}
MODES = tuple(MODE_SPECS)
# sample.py's inference knobs and their defaults; -1: the checkpoint's own (its pause finetuning M, its N).
# think_policy 'fixed' uses the counts above; 'entropy' (pause and reflection checkpoints) decides
# per text token how many <pause>/<reflect> slots, up to think_max, to spend (ThinkingPolicy).
INFERENCE_KNOBS = {'num_reason_tokens': -1, 'num_pause_tokens': -1, 'num_reflect_tokens': 1,
                   'think_policy': 'fixed', 'think_threshold': 1.5, 'think_max': 3}
THINK_POLICIES = ('fixed', 'entropy')


@dataclass(frozen=True)
class ThinkingPolicy:
    """After a slot predicts the next text token, one more thinking slot while that prediction's
    entropy (nats, over the text tokens) is above threshold, up to max_slots: +inf never thinks,
    -inf always takes max_slots."""
    threshold: float
    max_slots: int

    def slots(self, logits):
        """logits (B, 1 + max_slots, V) of a text token's slot and its thinking slots, special ids at
        -inf -> (B,) thinking slots to keep: up to the first slot confident enough to commit."""
        entropy = torch.special.entr(F.softmax(logits.float(), dim=-1)).sum(-1)  # (B, 1 + max_slots)
        commits = entropy <= self.threshold
        commits[:, -1] = True  # the last slot commits whatever its entropy
        return commits.int().argmax(-1)  # the first slot that commits


@dataclass
class Layout:
    """One token layout over T text tokens, L slots. Index tensors live on the CPU."""
    counts: torch.Tensor   # (T,) extra slots after each text token
    kind: torch.Tensor     # (L,) TEXT / PAUSE / REFLECT / REASON
    step: torch.Tensor     # (L,) the text token each slot belongs to
    src: torch.Tensor      # (L,) index into the chunk of the text token a slot carries
    special: torch.Tensor  # (L,) token id replacing the text token (<pause>, <reflect>), or -1
    tgt: torch.Tensor      # (L,) index into the chunk of the slot's target, -1 = no loss
    pos: torch.Tensor      # (L,) positions
    slot: Optional[torch.Tensor]  # (L,) slot-embedding index (reasoning), else None
    eval_slots: torch.Tensor      # (T,) the slot whose prediction of x_{t+1} counts
    vis: Optional[Visibility]     # None = plain causal (SDPA's is_causal fast path)

    def __len__(self):
        return self.kind.numel()

    def attended_pairs(self, n_head=1):
        """Visible (query, key) pairs averaged over n_head heads, for FLOP counts."""
        L = len(self)
        return L * (L + 1) // 2 if self.vis is None else self.vis.pairs(n_head)

    def read_pairs(self, n_head=1):
        """The visible pairs of vis.read's queries (all pairs when every slot is read)."""
        return self.attended_pairs(n_head) if self.vis is None or self.vis.read is None else self.vis.rows().pairs(n_head)

    @cached_property
    def loss_slots(self):
        """Slots with a training target, or None when every slot has one (computed once per layout:
        train_batch asks for it every step)."""
        has = self.tgt >= 0
        return None if bool(has.all()) else has.nonzero().squeeze(1)

    def inputs(self, text):
        """(B, >=T) text ids -> (B, L) input ids."""
        ids = text[:, self.src]
        return torch.where(self.special >= 0, self.special, ids)


class Mode:
    """Layouts for one mode and its settings (the LAYOUT_KEYS of a config)."""

    def __init__(self, config, text_vocab_size, records=None):
        self.name = config['mode']
        if self.name not in MODE_SPECS:
            raise ValueError(f"mode={self.name!r} is not one of {', '.join(MODES)}")
        self.spec = spec = MODE_SPECS[self.name]
        self.cfg = {k: config[k] for k in LAYOUT_KEYS}
        self.num_pause_tokens = int(self.cfg['num_pause_tokens'])
        self.num_reflect_tokens = int(config.get('num_reflect_tokens', 1))
        self.text_vocab_size = text_vocab_size
        repeat = spec.repeat_key is not None and self.cfg[spec.repeat_key]
        # -1: the extras carry their step's text token
        self.extra_id = -1 if spec.extra_token is None or repeat else special_token_ids(text_vocab_size)[spec.extra_token]
        self.rate = self.cfg[spec.rate_key] if spec.rate_key else 0.0
        if not 0.0 <= self.rate:
            raise ValueError(f"insertion rate must be >= 0, got {self.rate}")
        self.num_reason = self.cfg[spec.every_key] if spec.every_key else 0  # extras after every text token
        if self.num_reason < 0 or self.cfg['reason_delay'] < 0 or self.cfg['reason_heads'] < 0:
            raise ValueError("num_reason_tokens, reason_delay and reason_heads must be >= 0")
        if self.cfg['reason_heads'] and (self.name != 'reasoning' or self.num_reason):
            raise ValueError(f"reason_heads={self.cfg['reason_heads']} applies the reasoning rule to the text "
                             f"tokens in that many heads: it needs mode='reasoning' with num_reason_tokens=0")
        # A dataset of records is read in whole records (sequences start at a prompt, as at
        # inference). answer_only puts the loss on answers only, and in a mode whose inference puts
        # extras after the prompt (pause) then puts num_pause_tokens of them after every prompt
        # (pause finetuning) instead of at random.
        self.records = records
        self.answer_only = self.cfg['answer_only']
        if self.answer_only and records is None:
            raise ValueError("answer_only=True needs a dataset of prompt/answer records "
                             "(meta.pkl with record_len, prompt_len, answer_len), e.g. data/arithmetic")
        # align_records=False: pretraining windows start anywhere, so records sit at every absolute
        # position (as text does), not always at multiples of the record length
        self.align_records = config.get('align_records', True)
        if self.answer_only and not self.align_records:
            raise ValueError("answer_only=True finds the answers by their offset from a record boundary: "
                             "it needs align_records=True")
        self.pauses_after_prompts = spec.knob_after == 'prompt' and self.answer_only
        # extras per prompt or per token when generating: the value of the mode's inference knob
        self.num_at_inference = {None: 0, 'num_pause_tokens': self.num_pause_tokens, 'num_reason_tokens': self.num_reason,
                                 'num_reflect_tokens': self.num_reflect_tokens}[spec.knob]
        self.rules = spec.rules(self.cfg)
        self.think = self._thinking_policy(config)
        self._layouts = OrderedDict()

    def _thinking_policy(self, config):
        """The adaptive policy of the think_* inference knobs, or None for the fixed one."""
        policy = config.get('think_policy', 'fixed')
        if policy not in THINK_POLICIES:
            raise ValueError(f"think_policy={policy!r} is not one of {', '.join(THINK_POLICIES)}")
        if policy == 'fixed':
            return None
        if self.spec.extra_token is None or self.spec.every_key:
            raise ValueError(f"think_policy='entropy' adds <pause>/<reflect> slots: it needs a pause- or "
                             f"reflection-mode checkpoint, this one is mode {self.name}")
        threshold, most = float(config['think_threshold']), config['think_max']
        if threshold != threshold or most < 0:
            raise ValueError("think_threshold must be a number (inf: never think) and think_max >= 0")
        return ThinkingPolicy(threshold, 0 if threshold == float('inf') else most)  # +inf never thinks

    # ---- how many extras follow each text token -------------------------------------------

    def num_inserted(self, block_size):
        """Pause/reflection slots a training sequence of block_size text tokens gets."""
        if self.pauses_after_prompts:
            return self.num_pause_tokens * (block_size // self.records.record_len)
        return round(self.rate * block_size)

    @property
    def chunk_align(self):
        """Training and eval chunks start at multiples of this (record boundaries of record data,
        unless align_records=False)."""
        return self.records.record_len if self.records is not None and self.align_records else 1

    def train_counts(self, block_size, generator):
        """(T,) extras per text token for one training batch."""
        if self.spec.every_key:
            return torch.full((block_size,), self.num_reason, dtype=torch.long)
        counts = torch.zeros(block_size, dtype=torch.long)
        if self.pauses_after_prompts:  # chunks start at a record: every prompt's '=' is at the same offset
            counts[self.records.prompt_len - 1::self.records.record_len] = self.num_pause_tokens
            return counts
        n = self.num_inserted(block_size)
        if n == 0:
            return counts
        # n extras at uniformly random slots of the final layout, never before the first text
        # token: choose n of the L-1 non-first slots; an extra belongs to the text token before it
        L = block_size + n
        is_extra = torch.zeros(L, dtype=torch.bool)
        is_extra[1 + torch.randperm(L - 1, generator=generator)[:n]] = True
        step = torch.cumsum(~is_extra, 0) - 1  # (L,) text index each slot belongs to
        counts.index_add_(0, step[is_extra], torch.ones(n, dtype=torch.long))
        return counts

    def eval_variants(self, block_size):
        """{name: counts generator} for evaluation; insertion modes also report clean text."""
        if self.spec.eval_clean and not self.pauses_after_prompts and self.num_inserted(block_size) > 0:
            return {'': self.train_counts, 'clean': lambda T, g: torch.zeros(T, dtype=torch.long)}
        return {'': self.train_counts}

    def inference_counts(self, n_text, n_prompt):
        """Extras per text token when generating: pauses after the prompt, N reflections or
        reasoning slots after every token."""
        counts = torch.zeros(n_text, dtype=torch.long)
        if self.spec.knob_after == 'prompt':
            if 0 < n_prompt <= n_text:
                counts[n_prompt - 1] = self.num_at_inference
        elif self.spec.knob_after == 'token':
            counts[:] = self.num_at_inference
        return counts

    def n_positions(self, block_size):
        """Rows of the position table a model needs for training layouts of block_size text tokens."""
        if not self.spec.own_positions:
            return block_size
        return block_size + self.num_inserted(block_size)

    def slots_per_position(self):
        return self.num_reason + 1

    def slots_per_text_token(self, block_size):
        """Layout slots per text token in training (what slot tokens/s counts)."""
        return (block_size + self.num_inserted(block_size) + self.num_reason * block_size) / block_size

    # ---- the layout ------------------------------------------------------------------------

    def layout(self, counts):
        """The Layout for these counts, cached (layouts repeat: reasoning always, eval per seed)."""
        key = counts.numpy().tobytes()
        if key in self._layouts:
            self._layouts.move_to_end(key)
            return self._layouts[key]
        lay = self._build(counts)
        self._layouts[key] = lay
        if len(self._layouts) > 64:
            self._layouts.popitem(last=False)
        return lay

    def _build(self, counts):
        T = counts.numel()
        per_step = counts + 1
        step = torch.repeat_interleave(torch.arange(T), per_step)  # (L,)
        L = step.numel()
        first = torch.cumsum(per_step, 0) - per_step  # (T,) slot of each text token
        sub = torch.arange(L) - first[step]  # (L,) 0 for the text slot, 1.. for its extras
        is_text = sub == 0
        kind = torch.where(is_text, TEXT, self.spec.extra_kind)
        special = torch.where(is_text | (self.extra_id < 0), -1, self.extra_id)
        last = sub == counts[step]  # the last slot of each step
        if self.spec.predicts == 'last':  # predict x_{t+1} only where the next input is x_{t+1}
            has_tgt, eval_slots = last, first + counts
        elif self.spec.predicts == 'text':
            has_tgt, eval_slots = is_text, first
        else:  # every slot of step t predicts x_{t+1}
            has_tgt, eval_slots = torch.ones(L, dtype=torch.bool), first + counts
        tgt = torch.where(has_tgt, step + 1, -1)
        if self.spec.own_positions:
            pos, slot = torch.arange(L), None
        else:  # extras share their text token's position and tell themselves apart by slot embeddings
            pos, slot = step.clone(), (sub if self.num_reason > 0 else None)
        vis = self.visibility(kind, step)
        if vis is not None and vis.read is not None:  # the model computes only these slots' outputs
            assert torch.equal(vis.read, eval_slots) and torch.equal(vis.read, has_tgt.nonzero().squeeze(1))
        return Layout(counts=counts, kind=kind, step=step, src=step.clone(), special=special, tgt=tgt,
                      pos=pos, slot=slot, eval_slots=eval_slots, vis=vis)

    def visibility(self, kind, step, q_start=0, q_end=None):
        """
        The Visibility of the queries q_start..q_end over the keys 0..q_end, or None when the rules
        remove nothing there (plain causal). Where only text slots are ever predicted from (reasoning),
        it names them as `read` and the model's last block computes only those.
        """
        q_end = kind.numel() if q_end is None else q_end
        kind, step = kind[:q_end], step[:q_end]
        # a rule hits some pair iff a key of its kind has a query min_gap or more steps later
        last = step[-1] if q_end else 0
        if not any(bool(((kind == r.key_kind) & (step + r.min_gap <= last)).any()) for r in self.rules):
            return None
        read = (kind[q_start:] == TEXT).nonzero().squeeze(1) if self.spec.predicts == 'text' else None
        if read is not None and read.numel() == q_end - q_start:
            read = None  # every slot is read (reason_heads: text slots only)
        q_slots = None if q_start == 0 else torch.arange(q_start, q_end)
        return Visibility(kind, step, self.rules, q_slots=q_slots, read=read)

    # ---- batches for the model ----------------------------------------------------------

    def train_batch(self, chunk, counts):
        """chunk (B, T+1) text -> model kwargs for the training objective."""
        lay = self.layout(counts)
        predict = lay.loss_slots
        tgt = lay.tgt if predict is None else lay.tgt[predict]
        return self._batch(chunk, lay, predict, self._targets(chunk, tgt))

    def eval_batch(self, chunk, counts):
        """chunk (B, T+1) text -> model kwargs whose loss is the mean loss per text token."""
        lay = self.layout(counts)
        predict = lay.eval_slots
        return self._batch(chunk, lay, predict, self._targets(chunk, torch.arange(1, chunk.size(1))))

    def _targets(self, chunk, index):
        """The text tokens at chunk positions `index` as targets; with answer_only, -1 (no loss)
        wherever the target is not an answer character."""
        targets = chunk[:, index]
        if not self.answer_only:
            return targets
        offset = index % self.records.record_len  # chunks start at a record boundary
        is_answer = (offset >= self.records.prompt_len) & (offset < self.records.prompt_len + self.records.answer_len)
        return torch.where(is_answer, targets, -1)

    def _batch(self, chunk, lay, predict, targets):
        if len(lay) == lay.counts.numel() and lay.vis is None:
            predict = None  # plain text layout: exactly the standard GPT call
        elif lay.vis is not None and lay.vis.read is not None:
            # the predicted slots are the read ones (asserted in _build), which the model computes
            # and predicts from by default: no per-call mapping of predict onto them
            predict = None
        return dict(idx=lay.inputs(chunk), targets=targets, pos=lay.pos, slot=lay.slot,
                    vis=lay.vis, predict=predict)

    def flops_per_text_token(self, model, block_size, counts=None):
        """Training FLOPs per text token for this mode's training layout (see GPT.flops_per_layout)."""
        if counts is None:
            counts = self.train_counts(block_size, torch.Generator().manual_seed(0))
        lay = self.layout(counts)
        n_pred = len(lay) if lay.loss_slots is None else lay.loss_slots.numel()
        n_head = model.config.n_head
        read = None if lay.vis is None or lay.vis.read is None else (lay.vis.read.numel(), lay.read_pairs(n_head))
        return model.flops_per_layout(lay.attended_pairs(n_head), len(lay), n_pred, read) / block_size


def inference_mode(config, text_vocab, n_positions, knobs):
    """The Mode a checkpoint trained with `config` generates with, the inference knobs (any of
    INFERENCE_KNOBS; missing ones at their defaults) applied; a ValueError for values it cannot use."""
    name, spec = config['mode'], MODE_SPECS[config['mode']]
    knobs = {**INFERENCE_KNOBS, **knobs}
    trained_n = config['num_reason_tokens'] if spec.every_key == 'num_reason_tokens' else 0
    n = trained_n if knobs['num_reason_tokens'] == -1 else knobs['num_reason_tokens']
    if not 0 <= n <= trained_n:
        raise ValueError(f"num_reason_tokens={n} must be in 0..{trained_n}: the checkpoint was trained "
                         f"with {trained_n} reasoning tokens (mode {name})")
    pauses = config['num_pause_tokens'] if knobs['num_pause_tokens'] == -1 else knobs['num_pause_tokens']
    reflections = knobs['num_reflect_tokens']
    # a knob of another mode would be silently ignored: say so instead
    for knob, value, idle in (('num_pause_tokens', pauses, 0), ('num_reflect_tokens', reflections, 1)):
        if value != idle and spec.knob != knob:
            owner = next(m for m, s in MODE_SPECS.items() if s.knob == knob)
            raise ValueError(f"{knob} applies to {owner}-mode checkpoints, this one is mode {name}")
    if pauses < 0 or reflections < 0:
        raise ValueError("num_pause_tokens and num_reflect_tokens must be >= 0")
    # the layout of one text token (plus the pauses) must fit the position table
    most = knobs['think_max'] if knobs['think_policy'] == 'entropy' else 0
    if max(pauses, reflections, most) + 1 > n_positions:
        raise ValueError(f"the model has {n_positions} positions: too few for that many thinking tokens")
    layout = {k: config[k] for k in LAYOUT_KEYS}
    think = {k: knobs[k] for k in ('think_policy', 'think_threshold', 'think_max')}
    # answer_only shapes training batches only; generation builds its layout from the knobs here
    return Mode({**layout, **think, 'answer_only': False, 'num_reason_tokens': n, 'num_pause_tokens': pauses,
                 'num_reflect_tokens': reflections}, text_vocab)
