"""
Checkpoints and the per-run metrics log.

A checkpoint holds everything needed to continue a run exactly: model, optimizer, scaler,
iteration, config, and every rank's RNG state (the data order needs none: see dataset.py). It is
written atomically, so a crash at any moment leaves the previous one loadable, and it holds
tensors, dicts, lists, numbers and strings only, so it loads with torch.load(weights_only=True):
a file that would need anything else (a pickle that runs code) is refused before any of it runs.
A ckpt.pt of karpathy/nanoGPT's train.py loads too, as this repo's format (from_nanogpt).
metrics.jsonl holds one line per evaluation; scripts/ablate.py reads it to know when a run has finished.
"""

import fcntl
import glob
import json
import os
import pickle
import re

import torch

from configurator import fail
from dataset import GPT2_VOCAB, meta_of
from model import GPT, GPTConfig, pad_vocab
from modes import NUM_SPECIAL_TOKENS

# 1: checkpoints written before the version was recorded (the same keys: they load as they are)
FORMAT_VERSION = 2
NANOGPT_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')


_claimed = {}  # out_dir -> its lock file, held for the life of the process (a later run in it may reuse it)


def claim_out_dir(out_dir):
    """
    Make out_dir this run's alone before anything is written there: it must take a file, and its
    lock (flock on out_dir/.lock, held until the process exits) must be free, so a second run on
    it is refused while the first lives, and a killed run's lock goes with its process. Then the
    temporary files of a save that a killed run left are removed.
    """
    key = os.path.realpath(out_dir)
    if key in _claimed and os.path.exists(os.path.join(out_dir, '.lock')):
        return  # this process holds it already (an earlier run in it)
    try:
        os.makedirs(out_dir, exist_ok=True)
        lock = open(os.path.join(out_dir, '.lock'), 'a+')
    except OSError as e:
        fail(f"cannot write to out_dir {out_dir!r} ({e.strerror}): choose another --out_dir")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        fail(f"out_dir {out_dir!r} is in use by a live run (pid {lock.read().strip() or '?'}): wait for it to "
             f"finish or stop it, or choose another --out_dir")
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    _claimed[key] = lock
    for stale in glob.glob(os.path.join(out_dir, 'ckpt.pt.tmp.*')):
        os.remove(stale)


def save_checkpoint(path, keep, checkpoint):
    """
    Write atomically: a temporary file in the same directory, flushed to disk, then renamed over
    the old one. With keep > 1 the last `keep` checkpoints also stay as ckpt-<iter>.pt (hard links:
    no extra space).
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        try:
            with open(tmp, 'wb') as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, RuntimeError) as e:  # the disk is full (torch.save reports it as a RuntimeError)
            fail(f"could not write the checkpoint {tmp} ({getattr(e, 'strerror', None) or str(e).splitlines()[0]}): "
                 f"{'the previous checkpoint ' + path + ' is kept' if os.path.exists(path) else 'no checkpoint yet'}; "
                 f"free space, then continue with --init_from=resume")
        os.replace(tmp, path)
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if keep > 1:
        folder = os.path.dirname(os.path.abspath(path))
        numbered = os.path.join(folder, f"ckpt-{checkpoint['iter_num']:08d}.pt")
        if os.path.exists(numbered):
            os.remove(numbered)
        os.link(path, numbered)
        for old in sorted(f for f in os.listdir(folder) if f.startswith('ckpt-') and f.endswith('.pt'))[:-keep]:
            os.remove(os.path.join(folder, old))


def load_checkpoint(path, map_location='cpu'):
    """The checkpoint at path in this repo's format (a nanoGPT one converted), or a one-line error."""
    if not os.path.exists(path):
        fail(f"no checkpoint at {path}: train first, or use --init_from=scratch")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a global the weights-only unpickler does not allow; a truncated zip, bad pickle, ...
        needs = re.search(r'GLOBAL (\S+)', str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if needs:
            fail(f"checkpoint {path} needs {needs[1]} to load, which could run code: refused, nothing in it ran "
                 f"(a checkpoint holds tensors, dicts, lists, numbers and strings only)")
        fail(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); restore a good copy or start over")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('model'), dict) \
            or not isinstance(checkpoint.get('model_args'), dict):
        fail(f"{path} is not a checkpoint of this repo or of nanoGPT (no model and model_args)")
    if 'n_positions' not in checkpoint['model_args']:
        return from_nanogpt(checkpoint, path)
    if checkpoint.get('format', 1) > FORMAT_VERSION:
        fail(f"{path} has checkpoint format {checkpoint['format']}, newer than this code's {FORMAT_VERSION}: "
             f"update the repo")
    return checkpoint


def from_nanogpt(checkpoint, path):
    """
    A karpathy/nanoGPT ckpt.pt (model, model_args, iter_num, best_val_loss, config) in this repo's
    format, for sampling and finetuning (not resuming: it has no RNG states). Its parameter names are
    this repo's, less the `_orig_mod.` prefix of compiled models and the attn.bias mask buffers;
    the text vocab is its dataset's meta.pkl's (data/<dataset>, as nanoGPT reads it), else GPT-2's.
    When the embedding has no room for the two thinking tokens it grows rows, initialised as a new
    model's embedding rows are.
    """
    args = checkpoint['model_args']
    missing = [k for k in NANOGPT_ARGS if k not in args]
    if missing:
        fail(f"{path} is not a checkpoint of this repo or of nanoGPT (model_args lacks {', '.join(missing)})")
    dataset = checkpoint.get('config', {}).get('dataset', 'openwebtext')
    text_vocab = meta_of(os.path.join('data', dataset)).get('vocab_size', min(args['vocab_size'], GPT2_VOCAB))
    state = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items() if not k.endswith('.attn.bias')}
    vocab = args['vocab_size']
    if vocab < text_vocab + NUM_SPECIAL_TOKENS:
        wte = state['transformer.wte.weight']
        rows = torch.empty(pad_vocab(text_vocab + NUM_SPECIAL_TOKENS) - vocab, wte.size(1), dtype=wte.dtype)
        state['transformer.wte.weight'] = state['lm_head.weight'] = torch.cat([wte, rows.normal_(0.0, 0.02)])
        vocab = state['lm_head.weight'].size(0)
    shape = {k: args[k] for k in ('n_layer', 'n_head', 'n_embd', 'bias', 'dropout')}
    return dict(model=state, model_args=dict(shape, n_positions=args['block_size'], vocab_size=vocab),
                iter_num=checkpoint.get('iter_num', 0), best_val_loss=float(checkpoint.get('best_val_loss', 'inf')),
                config=dict(shape, mode='standard', dataset=dataset, block_size=args['block_size']),
                text_vocab_size=text_vocab, source='nanoGPT', format=FORMAT_VERSION)


def model_from_checkpoint(checkpoint, slot_embeddings=0):
    """The checkpoint's model; with slot_embeddings above its own, reasoning slot embeddings added
    (freshly initialised) to the trained weights."""
    args = checkpoint['model_args']
    model = GPT(GPTConfig(**{**args, 'n_slot_embd': max(args.get('n_slot_embd', 0), slot_embeddings)}))
    # checkpoints of compiled models carry this prefix
    state = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    added = ['transformer.wse.weight'] if model.config.n_slot_embd > args.get('n_slot_embd', 0) else []
    if unexpected or missing != added:
        fail(f"the checkpoint's weights do not fit its model_args (missing {missing}, unexpected {unexpected})")
    return model


def rng_state(device):
    state = {'torch': torch.get_rng_state()}
    if device.startswith('cuda'):
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and device.startswith('cuda'):
        torch.cuda.set_rng_state(state['cuda'], device)


def start_metrics(path, iter_num):
    """A resumed run keeps the lines up to its checkpoint's iteration (later ones belong to steps
    that are redone); a new run starts empty."""
    lines = []
    if iter_num > 0 and os.path.exists(path):
        with open(path) as f:
            lines = [line for line in f if line.strip() and json.loads(line)['iter'] <= iter_num]
    with open(path + '.tmp', 'w') as f:
        f.writelines(lines)
    os.replace(path + '.tmp', path)


def append_metrics(path, record):
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def read_metrics(out_dir):
    """The records of a run's metrics.jsonl (one per eval), or [] when there is none yet."""
    path = os.path.join(out_dir, 'metrics.jsonl')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def is_finished(records):
    """A run is finished when its metrics end with the final eval."""
    return bool(records) and records[-1]['final']


def export_hf(checkpoint, hf_dir):
    """
    Write a run as a transformers GPT2LMHeadModel directory (config.json, model.safetensors): the
    text vocab plus <pause> and <reflect> (their ids in config.json), zero biases for a bias-free
    model, Conv1D weights transposed. GPT-2 attends causally over sequential positions, so a layout
    beyond that is refused: reasoning (shared positions, slot embeddings, hidden pairs) and
    reflect_hidden (hidden pairs). Pause and reflection slots are the caller's to insert.
    """
    from transformers import GPT2Config, GPT2LMHeadModel
    c, args, text_vocab = checkpoint['config'], checkpoint['model_args'], checkpoint['text_vocab_size']
    if c.get('mode') == 'reasoning' or (c.get('mode') == 'reflection' and c.get('reflect_hidden')):
        fail(f"mode {c['mode']}{' with reflect_hidden' * (c['mode'] == 'reflection')} cannot be a GPT-2 model: its "
             f"layout hides some earlier slots{' and shares positions' * (c['mode'] == 'reasoning')}, GPT-2 sees "
             f"every earlier slot at its own position")
    ids = {'pause_token_id': text_vocab, 'reflect_token_id': text_vocab + 1}
    gpt2 = text_vocab == GPT2_VOCAB
    config = GPT2Config(vocab_size=text_vocab + NUM_SPECIAL_TOKENS, n_positions=args['n_positions'],
                        n_embd=args['n_embd'], n_layer=args['n_layer'], n_head=args['n_head'],
                        activation_function={'none': 'gelu', 'tanh': 'gelu_new'}[args.get('gelu_approximate', 'none')],
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                        bos_token_id=GPT2_VOCAB - 1 if gpt2 else None, eos_token_id=GPT2_VOCAB - 1 if gpt2 else None,
                        text_vocab_size=text_vocab, thinking_mode=c.get('mode', 'standard'), **ids)
    hf = GPT2LMHeadModel(config)
    ours = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()}
    with torch.no_grad():
        for name, p in hf.state_dict().items():
            if name.endswith('.attn.bias') or name.endswith('.attn.masked_bias'):
                continue  # older transformers keep the causal mask as a buffer
            w = ours.get(name)
            if w is None:  # a bias of a model trained without biases
                p.zero_()
            elif name.endswith(('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')):
                p.copy_(w.t())
            else:
                p.copy_(w[:p.size(0)] if name in ('transformer.wte.weight', 'lm_head.weight') else w)
    hf.save_pretrained(hf_dir, safe_serialization=True)
    return config
