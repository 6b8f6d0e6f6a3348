"""
Run the fault-injection suite and write its record as the table in FAULTS.md.

    python scripts/fault_table.py            # runs pytest tests/test_faults.py, rewrites FAULTS.md

Every row comes from a trial the suite actually ran (tests/test_faults.py records them).
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        table = os.path.join(tmp, 'faults.jsonl')
        cmd = [sys.executable, '-m', 'pytest', '-q', 'tests/test_faults.py']
        proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, 'FAULT_TABLE': table})
        if proc.returncode != 0:
            sys.exit("error: the fault suite failed; FAULTS.md was not rewritten")
        with open(table) as f:
            rows = [json.loads(line) for line in f]
    lines = [
        '# Fault injection record',
        '',
        f'Produced by `python scripts/fault_table.py` on {time.strftime("%Y-%m-%d")} '
        f'({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}), '
        'from the trials `tests/test_faults.py` ran. "Lost" is what a run lost to the fault.',
        '',
        '| fault | trials | lost | detail |',
        '|---|---|---|---|',
    ]
    lines += [f"| {r['fault']} | {r['trials']} | {r['lost']} | {r['detail']} |" for r in rows]
    with open(os.path.join(REPO, 'FAULTS.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
