"""
The datasets every script reads: data/<name>/{train,val}.bin (uint16 token ids) and meta.pkl
(vocab size; characters for character-level sets; the record format of prompt/answer sets), the
checks made before a run starts, random windows of text, the tokenizer of a dataset, the problems
of a prompt/answer set (exact-match evaluation), and learnable synthetic data (scripts/gpu_check.py).
"""

import os
import pickle

import numpy as np
import torch

from configurator import fail
from modes import Records

GPT2_VOCAB = 50257


def data_dir_of(config):
    return config['data_dir'] or os.path.join('data', config['dataset'])


class PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only (dicts, lists, tuples, sets, strings, numbers): every other object
    is named through find_class, which refuses it before anything is built or called."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}")


def meta_of(data_dir):
    """The dataset's meta.pkl (written by every prepare.py), or {} when it has none."""
    meta_path = os.path.join(data_dir, 'meta.pkl') if data_dir else ''
    if not meta_path or not os.path.exists(meta_path):
        return {}
    with open(meta_path, 'rb') as f:
        try:
            return PlainUnpickler(f).load()
        except pickle.UnpicklingError as e:
            fail(f"{meta_path} holds {e}, not plain data: refused, nothing in it ran (re-run the dataset's prepare.py)")
        except (EOFError, ValueError) as e:
            fail(f"{meta_path} is truncated or corrupt ({type(e).__name__}): re-run the dataset's prepare.py")


def text_vocab_size_of(data_dir):
    """The dataset's vocab size; GPT-2's when meta.pkl does not say."""
    return meta_of(data_dir).get('vocab_size', GPT2_VOCAB)


def records_of(data_dir):
    """The record format of a prompt/answer dataset, or None for plain text."""
    meta = meta_of(data_dir)
    return Records(meta['record_len'], meta['prompt_len'], meta['answer_len']) if 'record_len' in meta else None


def check_data(data_dir, block_size, align=1):
    """Both splits exist, are whole uint16 tokens, and hold a window of block_size + 1 tokens starting
    at a multiple of align (get_chunk's windows; checked before a long first step)."""
    for split in ('train', 'val'):
        path = os.path.join(data_dir, f'{split}.bin')
        if not os.path.exists(path):
            prepare = os.path.join(data_dir, 'prepare.py')
            fail(f"{path} not found: run `python {prepare}` first (or set --data_dir)")
        size = os.path.getsize(path)
        if size % np.dtype(np.uint16).itemsize:
            fail(f"{path} has {size:,} bytes, an odd number: not uint16 token ids (a truncated copy?); "
                 f"re-run the dataset's prepare.py")
        tokens = size // np.dtype(np.uint16).itemsize
        if (tokens - block_size - 1) // align < 1:
            fail(f"{path} has {tokens:,} tokens, too few for windows of block_size + 1 = {block_size + 1:,}"
                 f"{f' at multiples of the record length {align}' if align > 1 else ''}: lower block_size or "
                 f"prepare more data")


def check_token_ids(data_dir, text_vocab):
    """Every token id in the data must be below the dataset's vocab size (scanned in chunks)."""
    for split in ('train', 'val'):
        data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
        step = 1 << 26
        top = max((int(data[i:i + step].max()) for i in range(0, len(data), step)), default=0)
        if top >= text_vocab:
            fail(f"{split}.bin holds token id {top}, outside the vocab of {text_vocab} "
                 f"(meta.pkl / checkpoint): re-run the dataset's prepare.py")


def micro_batch_generator(seed, iter_num, micro_step):
    """The RNG of one global micro-batch: the same data whatever the world size or restarts."""
    return torch.Generator().manual_seed((seed * 1_000_003 + iter_num) * 10_007 + micro_step)


def get_chunk(data_dir, split, batch_size, block_size, generator, align=1):
    """(B, block_size + 1) random windows of text tokens: the inputs plus the last target.
    Windows start at multiples of `align` (record boundaries of prompt/answer data)."""
    # a fresh memmap per batch avoids the memory growth of a long-lived one (nanoGPT issue #3)
    data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
    ix = torch.randint((len(data) - block_size - 1) // align, (batch_size,), generator=generator) * align
    return torch.stack([torch.from_numpy(data[i:i + block_size + 1].astype(np.int64)) for i in ix.tolist()])


def tokenizer(data_dir, text_vocab):
    """(encode, decode): the dataset's characters if its meta.pkl has them, else GPT-2 BPE."""
    meta = meta_of(data_dir)
    if 'stoi' in meta:
        stoi, itos = meta['stoi'], meta['itos']

        def encode(s):
            unknown = sorted(set(s) - set(stoi))
            if unknown:
                fail(f"the prompt has characters outside the model's vocabulary: "
                     f"{' '.join(repr(ch) for ch in unknown)}")
            return [stoi[ch] for ch in s]
        return encode, lambda ids: ''.join(itos[i] for i in ids)
    if text_vocab != GPT2_VOCAB:  # GPT-2 BPE would produce ids the model never saw
        where = f"{os.path.join(data_dir, 'meta.pkl')} not found" if data_dir else "HF weights carry no tokenizer here"
        fail(f"the model's text vocab is {text_vocab}, not GPT-2's {GPT2_VOCAB}, and {where}: "
             f"no tokenizer for it")
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    return (lambda s: enc.encode(s, allowed_special={'<|endoftext|>'})), enc.decode


def load_problems(data_dir, max_problems, text_vocab, offset=0):
    """(prompts (n, offset + prompt_len) int64, answer strings, ops, meta) of the first max_problems val
    problems; offset > 0 puts the last `offset` characters of the record before each one in front of
    it, so that the problem starts at position `offset` instead of 0."""
    meta = meta_of(data_dir)
    if not meta:
        fail(f"{data_dir} has no meta.pkl: not a prepared arithmetic dataset (run data/arithmetic/prepare.py)")
    if 'record_len' not in meta:
        fail(f"{data_dir} is not a prompt/answer dataset (its meta.pkl has no record_len): "
             f"evaluate runs trained on data/arithmetic")
    if meta['vocab_size'] != text_vocab:
        fail(f"{data_dir} has a vocab of {meta['vocab_size']} characters, the checkpoint {text_vocab}: "
             f"evaluate on the dataset the run was trained on")
    path = os.path.join(data_dir, 'val.bin')
    if not os.path.exists(path):
        fail(f"{path} not found: run data/arithmetic/prepare.py (with the run's settings) first")
    rlen, plen, alen = meta['record_len'], meta['prompt_len'], meta['answer_len']
    data = np.fromfile(path, dtype=np.uint16)
    if len(data) % rlen or len(data) == 0:
        fail(f"{path} holds {len(data)} tokens, not a whole number of {rlen}-character records: re-run prepare.py")
    if not 0 <= offset <= rlen:
        fail(f"offset={offset} must be in 0..{rlen} (the record length)")
    every = data.reshape(-1, rlen).astype(np.int64)
    records = every[:max_problems]
    before = np.roll(every, 1, axis=0)[:max_problems, rlen - offset:]  # another problem's tail
    itos = meta['itos']
    answers = [''.join(itos[i] for i in row[plen:plen + alen]) for row in records]
    ops = [''.join(itos[i] for i in row[:plen]).strip('= 0123456789')[:1] for row in records]
    return torch.from_numpy(np.concatenate([before, records[:, :plen]], 1)), answers, ops, meta


def score(predictions, answers):
    """Exact-match accuracy of predicted answer strings (every character of the fixed-width answer
    must match) and char_accuracy, the fraction of answer characters right (partial progress)."""
    predictions, answers = list(predictions), list(answers)
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    n = len(answers)
    correct = sum(p == a for p, a in zip(predictions, answers))
    chars = sum(len(a) for a in answers)
    chars_right = sum(sum(x == y for x, y in zip(p, a)) for p, a in zip(predictions, answers))
    return {'accuracy': correct / n if n else 0.0, 'correct': correct, 'n': n,
            'char_accuracy': chars_right / chars if chars else 0.0}


def make_data(folder, vocab=GPT2_VOCAB, subset=4096, tokens=2_000_000, seed=0):
    """train.bin / val.bin of token ids that a model can learn within a few steps: each token of a
    random `subset` of the vocab has one successor, taken 90% of the time (else a random one). A
    vocab other than GPT-2's is written to meta.pkl."""
    os.makedirs(folder, exist_ok=True)
    if vocab != GPT2_VOCAB:
        with open(os.path.join(folder, 'meta.pkl'), 'wb') as f:
            pickle.dump({'vocab_size': vocab}, f)
    rng = np.random.default_rng(seed)
    ids = rng.choice(vocab, subset, replace=False)
    successor = rng.permutation(subset)
    noise = rng.random(tokens) < 0.1
    random_next = rng.integers(subset, size=tokens)
    seq = np.empty(tokens, dtype=np.int64)
    x = 0
    for i in range(tokens):
        x = random_next[i] if noise[i] else successor[x]
        seq[i] = x
    data = ids[seq].astype(np.uint16)
    split = int(0.9 * tokens)
    data[:split].tofile(os.path.join(folder, 'train.bin'))
    data[split:].tofile(os.path.join(folder, 'val.bin'))
