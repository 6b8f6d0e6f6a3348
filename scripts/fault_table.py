"""
Run the fault-injection suite and write its record as the table in FAULTS.md.

    python scripts/fault_table.py            # runs pytest tests/test_faults.py, rewrites FAULTS.md

Every row comes from a trial the suite actually ran (tests/test_faults.py appends them to a JSONL
file, faults.jsonl); FAULTS.md is rendered from that file.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import reporting  # noqa: E402


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'faults.jsonl')
        proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', 'tests/test_faults.py'], cwd=REPO,
                              env={**os.environ, 'FAULT_TABLE': path})
        if proc.returncode != 0:
            sys.exit("error: the fault suite failed; FAULTS.md was not rewritten")
        with open(path) as f:
            rows = [json.loads(line) for line in f]
    lines = ['# Fault injection record', '',
             f'Produced by `python scripts/fault_table.py` on {time.strftime("%Y-%m-%d")} ({reporting.machine()}), '
             'from the trials `tests/test_faults.py` ran. "Lost" is what a run lost to the fault.', '',
             *reporting.table(['fault', 'trials', 'lost', 'detail'],
                              [[r['fault'], r['trials'], r['lost'], r['detail']] for r in rows])]
    with open(os.path.join(REPO, 'FAULTS.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
