"""
scripts/ablate.py, as a user runs it: a tiny grid (1 seed, tiny models, a slice of Tiny Shakespeare)
of reasoning N=1, standard at reasoning's FLOPs, a run that crashes and one that depends on it.

    the report (summary.csv, results.md, 3 PNGs) holds the finished runs' numbers from metrics.jsonl
    a crash gives exit code 1 and is listed; its dependent is skipped; the other runs still report
    the equal-FLOPs variant trains the computed iterations and matches the reference's FLOPs
    a rerun skips finished runs without retraining them
    a run's printed command reproduces it by hand
    bad grids stop with one `error: ...` line

Whole file: about 40 s on one thread.
"""

import csv
import json
import os
import shlex
import struct
import subprocess
import sys

import pytest

import grids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=2, max_iters=4, lr_decay_iters=4,
            warmup_iters=1, eval_interval=2, eval_iters=2, log_interval=2, progress_bar=False)
REF, EQUAL, BROKEN, DEPENDENT = 'reasoning N=1', 'standard, FLOPs of reasoning N=1', 'broken', 'finetune of broken'


def write_grid(path, out_root, common, variants):
    with open(path, 'w') as f:
        f.write(f"base = 'config/train_shakespeare_char_cpu.py'\ncommon = {common!r}\nseeds = [1]\n"
                f"out_root = {str(out_root)!r}\nvariants = {variants!r}\n")


def ablate(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'ablate.py'), *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=300)


def metrics(out_dir):
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def grid(char_data, tmp_path_factory):
    """The grid run once, then rerun: both results, and what the first run left behind."""
    tmp = tmp_path_factory.mktemp('ablate')
    out_root = tmp / 'out'
    variants = {
        REF: dict(mode='reasoning', num_reason_tokens=1),
        EQUAL: dict(mode='standard', flops_budget_of=REF),
        BROKEN: dict(data_dir=str(tmp / 'missing')),  # a dataset that is not there: train.py exits 1
        DEPENDENT: dict(init_from='{out[broken]}'),
    }
    write_grid(tmp / 'grid.py', out_root, {**TINY, 'data_dir': str(char_data)}, variants)
    first = ablate(tmp / 'grid.py')
    dirs = {name: out_root / slug / 'seed1' for name, slug in
            [(REF, 'reasoning-n1'), (EQUAL, 'standard-flops-of-reasoning-n1'), (BROKEN, 'broken')]}
    mtimes = {name: os.path.getmtime(d / 'metrics.jsonl') for name, d in dirs.items() if name != BROKEN}
    budget = json.loads((out_root / 'budget.json').read_text())
    csv_rows = read_csv(out_root / 'summary.csv')
    with open(out_root / 'results.md') as f:
        results_md = f.read()
    second = ablate(tmp / 'grid.py')
    return dict(tmp=tmp, out_root=out_root, dirs=dirs, first=first, second=second, mtimes=mtimes, budget=budget,
                csv_rows=csv_rows, results_md=results_md, common={**TINY, 'data_dir': str(char_data)})


def test_report_holds_the_finished_runs_and_the_crash_is_reported(grid):
    first, dirs = grid['first'], grid['dirs']
    assert first.returncode == 1, first.stdout + first.stderr
    out = first.stdout
    assert f"[1/4] {REF} seed 1: running" in out and f"{REF} seed 1: done in" in out
    assert f"{BROKEN} seed 1: CRASHED (exit 1, see {dirs[BROKEN] / 'train.log'})" in out
    assert f"{DEPENDENT} seed 1: skipped (dependency failed)" in out
    failed = out[out.index('run(s) failed:'):]  # listed again at the end, with train.py's error line
    assert BROKEN in failed and 'train.bin not found' in failed and DEPENDENT in failed

    rows = {row['variant']: row for row in grid['csv_rows']}
    assert sorted(rows) == sorted([REF, EQUAL])
    for name, row in rows.items():
        records = metrics(dirs[name])
        last = records[-1]
        assert last['final'] and row['seed'] == '1' and row['out_dir'] == str(dirs[name])
        assert int(row['iters']) == last['iter'] and int(row['text_tokens']) == last['text_tokens']
        assert float(row['val_loss']) == last['losses']['val']
        assert float(row['best_val']) == min(r['losses']['val'] for r in records)
        for key in ('train_flops', 'flops_per_text_token', 'train_time_s', 'text_tok_s', 'slot_tok_s'):
            assert float(row[key]) == last[key], key
        assert row['val_clean'] == ''  # neither mode has a clean variant
    # reasoning N=1 processes two slots per text token
    assert float(rows[REF]['slot_tok_s']) == pytest.approx(2 * float(rows[REF]['text_tok_s']))

    md = grid['results_md']
    ref_val = float(rows[REF]['val_loss'])
    assert f"| {REF} | {ref_val:.4f} |" in md and f"| {EQUAL} | " in md
    assert f"| {BROKEN} | no finished run |" in md
    assert "Not finished (left out above): broken seed 1, finetune of broken seed 1." in md
    for name in ('val_vs_text_tokens.png', 'val_vs_flops.png', 'val_vs_time.png'):
        with open(grid['out_root'] / name, 'rb') as f:
            head = f.read(24)
        assert head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR'
        assert struct.unpack('>II', head[16:24]) == (800, 500)


def test_equal_flops_variant_trains_to_the_reference_flops(grid):
    ref, equal = metrics(grid['dirs'][REF])[-1], metrics(grid['dirs'][EQUAL])[-1]
    # the runner's FLOPs without training are train.py's, so the iterations follow from the ratio
    ratio = ref['flops_per_text_token'] / equal['flops_per_text_token']
    assert ratio > 1.15  # N=1 doubles the slots; the last block computes only the text slots
    assert equal['iter'] == round(TINY['max_iters'] * ratio) and ref['iter'] == TINY['max_iters']
    per_iter = equal['train_flops'] / equal['iter']
    assert abs(equal['train_flops'] - ref['train_flops']) <= per_iter / 2  # equal up to rounding
    assert f"--max_iters={equal['iter']} --lr_decay_iters={equal['iter']}" in grid['first'].stdout


def test_equal_flops_iters():
    c = dict(max_iters=2000, lr_decay_iters=1800)
    assert grids.equal_flops_iters(c, 10.3e6, c, 5.0e6) == (4120, 3708)
    # a finetune at 5 FLOPs per iteration from a pretraining of 1000 FLOPs, against one of 2000 iterations
    # at 10 from a pretraining of 3000: (20000 + 3000 - 1000) / 5 = 4400 iterations
    assert grids.equal_flops_iters(c, 10.0, c, 5.0, ref_upstream=3000.0, upstream=1000.0) == (4400, 3960)
    with pytest.raises(SystemExit, match='leaves no iterations'):
        grids.equal_flops_iters(c, 1.0, c, 1.0, upstream=5000.0)


def test_rerun_skips_finished_runs(grid):
    second = grid['second']
    # the first invocation's wall time is the grid's budget; the rerun trained again only the crashed run
    first = grid['budget']
    assert first['invocations'] == 1 and first['jobs'] == [1] and 0 < first['wall_s'] < 600
    # one run at a time: the invocation lasted at least as long as its runs' training together
    assert first['wall_s'] >= sum(float(r['train_time_s']) for r in grid['csv_rows'])
    assert len(first['machines']) == 1 and 'cores' in first['machines'][0]
    again = json.loads((grid['out_root'] / 'budget.json').read_text())
    assert again['invocations'] == 2 and again['wall_s'] > first['wall_s']
    assert second.returncode == 1  # the broken run is retried and crashes again
    for name in (REF, EQUAL):
        assert f"{name} seed 1: skip (finished)" in second.stdout
        assert os.path.getmtime(grid['dirs'][name] / 'metrics.jsonl') == grid['mtimes'][name]  # not retrained
    assert f"{BROKEN} seed 1: running" in second.stdout
    assert read_csv(grid['out_root'] / 'summary.csv') == grid['csv_rows']


def test_printed_command_reproduces_the_run(grid, tmp_path):
    row = next(r for r in grid['csv_rows'] if r['variant'] == EQUAL)
    assert row['command'] in grid['first'].stdout  # the command the runner printed and ran
    cmd = shlex.split(row['command'])
    assert cmd[:2] == ['python', 'train.py']
    proc = subprocess.run([sys.executable, *cmd[1:], f'--out_dir={tmp_path}'], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    by_hand, by_runner = metrics(tmp_path), metrics(grid['dirs'][EQUAL])
    assert [r['losses'] for r in by_hand] == [r['losses'] for r in by_runner]


@pytest.mark.parametrize('variants, message', [
    ({'a': dict(learning_rat=1.0)}, "error: variant 'a': unknown config key 'learning_rat'"),
    ({'a': dict(init_from='{out[b]}'), 'b': dict(init_from='{out[a]}')},
     "error: variants depend on each other in a cycle: a -> b -> a"),
    ({'a': dict(init_from='{out[c]}')}, "error: variant 'a' refers to {out[c]}, but there is no variant 'c'"),
    ({'a': dict(flops_budget_of='c')}, "error: variant 'a': flops_budget_of='c' must name another variant"),
    ({'a': dict(max_iters=4), 'b': dict(max_iters=8), 'c': dict(flops_budget_of=['a', 'b'])},
     "error: variant 'c': 'b' and 'a' differ by more than 2% in training FLOPs"),
    ({'a': dict(mode='thinking')}, "error: variant 'a': mode='thinking' is not one of"),
    ({'a': dict(n_head=3)}, "error: variant 'a': n_embd=32 must be a multiple of n_head=3"),
    ({'a': dict(seed=2)}, "error: 'a' sets 'seed': the runner sets it for every run"),
])
def test_bad_grid_is_one_line_error(tmp_path, monkeypatch, variants, message):
    monkeypatch.chdir(REPO)
    write_grid(tmp_path / 'grid.py', tmp_path / 'out', TINY, variants)
    with pytest.raises(SystemExit) as e:
        grids.plan(grids.load_grid(str(tmp_path / 'grid.py')))
    assert str(e.value).startswith(message) and '\n' not in str(e.value)


def test_dependencies_run_first_with_their_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    variants = {'finetune': dict(mode='pause', init_from='{out[pretrain]}'), 'pretrain': dict(mode='standard')}
    write_grid(tmp_path / 'grid.py', tmp_path / 'out', TINY, variants)
    grid = grids.load_grid(str(tmp_path / 'grid.py'))
    runs, _ = grids.plan({**grid, 'seeds': [1, 2]})
    assert [(r.variant, r.seed) for r in runs] == [('pretrain', 1), ('finetune', 1), ('pretrain', 2), ('finetune', 2)]
    for run in runs[1::2]:
        assert run.deps == ['pretrain'] and run.init_from == str(tmp_path / 'out' / 'pretrain' / f'seed{run.seed}')


def test_equal_flops_of_a_finetune_counts_the_pretraining_it_starts_from(tmp_path, monkeypatch):
    """A standard finetune matched to a reasoning pretrain -> finetune chain gets the reasoning
    pretraining's extra FLOPs as more finetuning steps: the two chains' totals agree to a step."""
    monkeypatch.chdir(REPO)
    # FLOPs per text token as at the CPU recipe's size (reasoning N=1 ~1.86x); this tiny model's are
    # dominated by its output layer
    monkeypatch.setattr(grids, 'flops_per_text_token', lambda c: {'standard': 5.0e6, 'reasoning': 9.3e6}[c['mode']])
    variants = {'PT std': dict(mode='standard'), 'PT reasoning': dict(mode='reasoning', num_reason_tokens=1),
                'FT reasoning': dict(mode='reasoning', num_reason_tokens=1, init_from='{out[PT reasoning]}'),
                'FT std, FLOPs of FT reasoning': dict(mode='standard', init_from='{out[PT std]}',
                                                      flops_budget_of='FT reasoning')}
    write_grid(tmp_path / 'grid.py', tmp_path / 'out', TINY, variants)
    _, configs = grids.plan(grids.load_grid(str(tmp_path / 'grid.py')))
    cost = {name: grids.flops_per_iter(c) for name, c in configs.items()}
    chains = {name: configs[name]['max_iters'] * cost[name] + configs[pt]['max_iters'] * cost[pt]
              for name, pt in (('FT reasoning', 'PT reasoning'), ('FT std, FLOPs of FT reasoning', 'PT std'))}
    # (4 + 4) x 9.3 - 4 x 5.0 = 54.4 standard-iteration units -> 11 finetuning steps at 5.0
    assert configs['FT std, FLOPs of FT reasoning']['max_iters'] == round((8 * 9.3 - 4 * 5.0) / 5.0)
    assert abs(chains['FT reasoning'] - chains['FT std, FLOPs of FT reasoning']) <= cost['PT std'] / 2


def test_chain_flops_adds_the_pretraining_a_finetune_starts_from():
    grid = {'variants': {'PT': {}, 'FT': {'init_from': '{out[PT]}'}, 'FT2': {'init_from': '{out[FT]}'}}}
    runs = {'PT': [{'train_flops': '10'}, {'train_flops': '30'}], 'FT': [{'train_flops': '5'}],
            'FT2': [{'train_flops': '1'}]}
    assert grids.chain_flops(grid, runs, 'PT') == 20 and grids.chain_flops(grid, runs, 'FT2') == 26
    assert grids.chain_flops(grid, {**runs, 'PT': []}, 'FT') is None  # a missing pretraining: not known
