"""
The GPU check's dry run: every step of scripts/gpu_check.py on the CPU at tiny shapes (the CUDA
tests skip themselves, torchrun uses gloo), so the one call on a GPU does not fail on a typo.
"""

import subprocess
import sys

from conftest import REPO

sys.path.insert(0, f'{REPO}/scripts')
import gpu_check  # noqa: E402


def test_gpu_check_dry_run(tmp_path):
    report = tmp_path / 'GPU.md'
    proc = subprocess.run([sys.executable, 'scripts/gpu_check.py', '--dry-run', f'--report={report}',
                           f'--workdir={tmp_path}', '--jobs=2'], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = report.read_text()
    assert 'every check passed' in text
    for section in ('## CUDA tests', '## Training', '## Sampling', '## torchrun'):
        assert section in text
    for name, _, _ in gpu_check.VARIANTS:
        assert f'| {name} |' in text
    assert 'greedy identical' in text and '| yes |' in text
    assert 'largest relative loss difference to the uninterrupted run' in text


def test_gpu_check_data_is_learnable(tmp_path):
    """The made-up data follows a fixed successor 90% of the time: a model can learn it in a few steps."""
    import numpy as np
    gpu_check.make_data(tmp_path, tokens=20_000)
    data = np.fromfile(tmp_path / 'train.bin', dtype=np.uint16).astype(np.int64)
    assert data.max() < 50257 and len(np.unique(data)) <= 4096
    pairs, counts = np.unique(data[:-1] * 65536 + data[1:], return_counts=True)  # (a, b) transitions
    first = pairs // 65536
    starts = np.flatnonzero(np.r_[True, first[1:] != first[:-1]])
    top = np.maximum.reduceat(counts, starts).sum() / (len(data) - 1)  # each token's likeliest successor
    assert top > 0.85
