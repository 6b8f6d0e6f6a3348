"""
The repo's layout as its users rely on it: the entry scripts share a library and never import each
other, and docs/design.md pictures every mode with images its script makes from the code.
"""

import ast
import glob
import os
import re
import subprocess
import sys

from conftest import REPO

from modes import MODE_SPECS

ENTRY_SCRIPTS = ['train.py', 'sample.py', 'bench.py'] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'scripts', '*.py')))
ENTRY_NAMES = {os.path.splitext(os.path.basename(p))[0] for p in ENTRY_SCRIPTS}


def imported_modules(path):
    tree = ast.parse(open(os.path.join(REPO, path)).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split('.')[0]


def test_no_entry_script_imports_another():
    offenders = {path: sorted(set(imported_modules(path)) & ENTRY_NAMES) for path in ENTRY_SCRIPTS}
    assert {p: names for p, names in offenders.items() if names} == {}


def test_design_notes_picture_every_mode(tmp_path):
    text = open(os.path.join(REPO, 'docs', 'design.md')).read()
    images = re.findall(r'!\[[^\]]*\]\((layouts/[^)]+\.png)\)', text)
    for mode in MODE_SPECS:  # each mode has a section with at least one picture of its own
        section = text[text.index(f'### {mode}'):]
        assert re.search(rf'\(layouts/{mode}[^)]*\.png\)', section.split('\n### ')[0]), mode
    # the script draws from the code exactly the pictures the notes show, and they are committed
    proc = subprocess.run([sys.executable, 'scripts/draw_layouts.py', str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    drawn = sorted(os.path.basename(line) for line in proc.stdout.split())
    assert drawn == sorted(os.path.basename(i) for i in set(images))
    for name in drawn:
        assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        assert os.path.exists(os.path.join(REPO, 'docs', 'layouts', name)), name
