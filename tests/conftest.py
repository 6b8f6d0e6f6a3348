"""Shared test setup: the repo root on sys.path, and a tiny character-level dataset."""

import os
import pickle
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `pytest` (not only `python -m pytest`) can import train, model, ...
    sys.path.insert(0, REPO)


def write_char_data(folder, n_chars):
    """train.bin, val.bin (first 90% / last 10%) and meta.pkl ({'vocab_size', 'stoi', 'itos'}) from
    the first n_chars of Tiny Shakespeare (SHAKESPEARE_PATH, or ../shared/data beside the repo)."""
    path = os.environ.get('SHAKESPEARE_PATH') or os.path.join(REPO, '..', 'shared', 'data', 'tinyshakespeare', 'input.txt')
    if not os.path.exists(path):
        pytest.fail(f'Tiny Shakespeare not found at {path}: set SHAKESPEARE_PATH to its input.txt')
    with open(path, encoding='utf-8') as f:
        text = f.read()[:n_chars]
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    split = int(len(text) * 0.9)
    np.array([stoi[ch] for ch in text[:split]], dtype=np.uint16).tofile(folder / 'train.bin')
    np.array([stoi[ch] for ch in text[split:]], dtype=np.uint16).tofile(folder / 'val.bin')
    with open(folder / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': len(chars), 'stoi': stoi, 'itos': dict(enumerate(chars))}, f)
    return folder


def losses(stdout):
    """{iter: training loss} from train.py's `iter N: loss X` log lines (nan and inf included)."""
    return {int(m[1]): float(m[2]) for m in re.finditer(r'^iter (\d+): loss ([-\d.naif]+)', stdout, re.M)}


def finish(proc, timeout=300):
    """Wait for a started process (started with start_new_session=True); its CompletedProcess. On a
    timeout its whole process group is killed (torchrun's workers too) and the timeout raised."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_together(cmds, **popen_kw):
    """Run independent commands at once (Python's start-up, ~3 s of one core each on a slow CPU,
    overlaps); their CompletedProcesses in order. popen_kw as for subprocess.Popen (cwd, env)."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, **popen_kw) for cmd in cmds]
    try:
        return [finish(proc) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:  # a timeout or error left it running
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()


@pytest.fixture(scope='session')
def char_data(tmp_path_factory):
    return write_char_data(tmp_path_factory.mktemp('char_data'), 20000)
