"""Shared test setup: the repo root on sys.path, and a tiny character-level dataset."""

import os
import pickle
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `pytest` (not only `python -m pytest`) can import train, model, ...
    sys.path.insert(0, REPO)


@pytest.fixture(scope='session')
def char_data(tmp_path_factory):
    """train.bin, val.bin and meta.pkl ({'vocab_size', 'stoi', 'itos'}) from 20k chars of Tiny
    Shakespeare (SHAKESPEARE_PATH, or ../shared/data/tinyshakespeare/input.txt beside the repo)."""
    path = os.environ.get('SHAKESPEARE_PATH', os.path.join(REPO, '..', 'shared', 'data', 'tinyshakespeare', 'input.txt'))
    if not os.path.exists(path):
        pytest.skip(f'Tiny Shakespeare not found at {path} (set SHAKESPEARE_PATH)')
    with open(path) as f:
        text = f.read()[:20000]
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    out = tmp_path_factory.mktemp('char_data')
    split = int(len(text) * 0.9)
    np.array([stoi[ch] for ch in text[:split]], dtype=np.uint16).tofile(out / 'train.bin')
    np.array([stoi[ch] for ch in text[split:]], dtype=np.uint16).tofile(out / 'val.bin')
    with open(out / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': len(chars), 'stoi': stoi, 'itos': dict(enumerate(chars))}, f)
    return out
