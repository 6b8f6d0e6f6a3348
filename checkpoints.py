"""
Checkpoints and the per-run metrics log.

A checkpoint holds everything needed to continue a run exactly: model, optimizer, scaler,
iteration, config, and every rank's RNG state (the data order needs none: see dataset.py). It is
written atomically, so a crash at any moment leaves the previous one loadable. metrics.jsonl holds
one line per evaluation; scripts/ablate.py reads it to know when a run has finished.
"""

import glob
import json
import os

import torch

from configurator import fail
from model import GPT, GPTConfig


def check_writable(out_dir):
    """out_dir exists and takes a file; a temporary file left by a process killed while saving is removed."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f'.write_test.{os.getpid()}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        fail(f"cannot write to out_dir {out_dir!r} ({e.strerror}): choose another --out_dir")
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
        with open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
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
    if not os.path.exists(path):
        fail(f"no checkpoint at {path}: train first, or use --init_from=scratch")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, bad pickle, ...
        fail(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); restore a good copy or start over")
    if not isinstance(checkpoint, dict) or 'model' not in checkpoint or 'model_args' not in checkpoint:
        fail(f"{path} is not a checkpoint written by train.py")
    return checkpoint


def model_from_checkpoint(checkpoint):
    model = GPT(GPTConfig(**checkpoint['model_args']))
    # checkpoints of compiled models carry this prefix
    model.load_state_dict({k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()})
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
