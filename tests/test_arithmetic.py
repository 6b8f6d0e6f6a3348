"""
The arithmetic task (data/arithmetic/prepare.py, scripts/eval_arithmetic.py):

    the generator is deterministic (same seed -> identical bytes, another seed -> other problems)
    every record parses, its answer is right, train and val share no problem, meta describes them
    the exact-match scoring counts a perfect, a wrong and a partly right answer set correctly
    end to end: tiny data, pretrain, pause-finetune on answers only (init_from), evaluate at
    several inference pause counts; accuracy.json is reused while the checkpoint is unchanged
    reasoning and reflection runs are scored with their own inference knobs
    --grid: the tables over seeds, the csv and the plot; bad input stops with one `error:` line

Whole file: about 25 seconds on one thread.
"""

import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare = load_script('arithmetic_prepare', 'data/arithmetic/prepare.py')
sys.path.insert(0, os.path.join(REPO, 'scripts'))
import eval_arithmetic  # noqa: E402
from dataset import load_problems  # noqa: E402


def make(out_dir, *args):
    prepare.main([f'--out_dir={out_dir}', *args])
    with open(os.path.join(out_dir, 'meta.pkl'), 'rb') as f:
        meta = pickle.load(f)
    splits = {}
    for split in ('train', 'val'):
        ids = np.fromfile(os.path.join(out_dir, f'{split}.bin'), dtype=np.uint16)
        splits[split] = ''.join(meta['itos'][int(i)] for i in ids)
    return splits, meta


def files(out_dir):
    return {name: open(os.path.join(out_dir, name), 'rb').read() for name in ('train.bin', 'val.bin', 'meta.pkl')}


# ---- the generator ------------------------------------------------------------------------------

def test_deterministic(tmp_path, capsys):
    args = ['--num_train=600', '--num_val=60', '--seed=3']
    make(tmp_path / 'a', *args)
    make(tmp_path / 'b', *args)
    assert files(tmp_path / 'a') == files(tmp_path / 'b')
    make(tmp_path / 'c', '--num_train=600', '--num_val=60', '--seed=4')
    other = files(tmp_path / 'c')
    assert other['train.bin'] != files(tmp_path / 'a')['train.bin']
    assert other['val.bin'] != files(tmp_path / 'a')['val.bin']
    assert len(other['train.bin']) == len(files(tmp_path / 'a')['train.bin'])  # same format, other problems


def parse(text, meta):
    """[(a, op, b, answer string)] of a split, checking the fixed-width layout of every record."""
    w, alen, rlen = meta['operand_width'], meta['answer_len'], meta['record_len']
    assert len(text) % rlen == 0
    pattern = re.compile(rf"^([ \d]{{{w}}})([+*])([ \d]{{{w}}})=([ \d]{{{alen}}})\n$")
    out = []
    for i in range(0, len(text), rlen):
        record = text[i:i + rlen]
        m = pattern.match(record)
        assert m, record
        assert len(record) == rlen and record.index('=') == meta['prompt_len'] - 1
        for field in (m[1], m[3], m[4]):  # right-aligned numbers: spaces, then digits
            assert re.fullmatch(r' *\d+', field), record
        out.append((int(m[1]), m[2], int(m[3]), m[4]))
    return out


def test_records(tmp_path, capsys):
    splits, meta = make(tmp_path, '--ops=+,*', '--num_train=2000', '--num_val=200', '--seed=1')
    assert (meta['record_len'], meta['prompt_len'], meta['answer_len']) == (13, 8, 4)  # 3-digit +, 2-digit *
    assert meta['vocab_size'] == len(meta['stoi']) == len(meta['itos'])
    assert all(meta['stoi'][ch] == i for i, ch in meta['itos'].items())
    assert (meta['ops'], meta['add_digits'], meta['mul_digits'], meta['seed']) == (['+', '*'], 3, 2, 1)
    problems = {}
    for split, text in splits.items():
        rows = parse(text, meta)
        assert len(rows) == meta[f'num_{split}']
        for a, op, b, answer in rows:
            assert int(answer) == (a + b if op == '+' else a * b)
            assert a < (1000 if op == '+' else 100) and b < (1000 if op == '+' else 100)
        problems[split] = [(a, op, b) for a, op, b, _ in rows]
        assert len(set(problems[split])) == len(rows)  # no problem twice
        ops = [op for _, op, _ in problems[split]]
        assert ops.count('+') == ops.count('*')  # split evenly over the ops
        assert ops != sorted(ops) and ops != sorted(ops, reverse=True)  # shuffled together
    assert len(problems['train']) == 2000 and len(problems['val']) == 200
    assert not set(problems['train']) & set(problems['val'])


def test_default_task_is_three_digit_addition(tmp_path, capsys):
    splits, meta = make(tmp_path)
    assert (meta['ops'], meta['add_digits'], meta['num_train'], meta['num_val']) == (['+'], 3, 40000, 1000)
    assert (meta['record_len'], meta['prompt_len'], meta['answer_len']) == (13, 8, 4)
    rows = parse(splits['val'], meta)
    assert {op for _, op, _, _ in rows} == {'+'} and all(int(ans) == a + b for a, _, b, ans in rows)


def test_small_space_uses_every_problem(tmp_path, capsys):
    # 1-digit addition has 100 problems: 80 train and 20 val, as 400 : 100
    splits, meta = make(tmp_path, '--ops=+', '--add_digits=1', '--num_train=400', '--num_val=100')
    assert (meta['record_len'], meta['prompt_len'], meta['answer_len']) == (7, 4, 2)
    train, val = ({(a, b) for a, _, b, _ in parse(splits[s], meta)} for s in ('train', 'val'))
    assert len(val) == 20 and len(train) == 80 and train | val == {(a, b) for a in range(10) for b in range(10)}
    assert splits['val'][:7].endswith('\n') and (meta['num_train'], meta['num_val']) == (80, 20)
    # 2-digit multiplication has 10,000 problems for the default 40,000 + 1,000 requested
    _, meta = make(tmp_path / 'default', '--ops=*')
    assert (meta['num_train'], meta['num_val']) == (9756, 244)


def test_more_operands_and_filler(tmp_path, capsys):
    """--operands=4: sums of four numbers, every record's answer right; --filler=3: the same problems
    with three dots after '=' as part of the prompt, the other characters keeping their ids."""
    plain, meta = make(tmp_path / 'plain', '--operands=4', '--add_digits=2', '--num_train=300', '--num_val=30')
    assert (meta['record_len'], meta['prompt_len'], meta['answer_len']) == (16, 12, 3)  # 99 * 4 = 396
    for split, text in plain.items():
        records = [text[i:i + 16] for i in range(0, len(text), 16)]
        assert len(records) == meta[f'num_{split}'] and len(set(records)) == len(records)
        for record in records:
            prompt, answer = record[:11], record[12:15]
            numbers = prompt.split('+')
            assert len(numbers) == 4 and all(len(x) == 2 for x in numbers) and record[11] == '=' and record[15] == '\n'
            assert int(answer) == sum(int(x) for x in numbers)
    dots, dmeta = make(tmp_path / 'dots', '--operands=4', '--add_digits=2', '--num_train=300', '--num_val=30',
                       '--filler=3')
    assert (dmeta['prompt_len'], dmeta['record_len'], dmeta['vocab_size']) == (15, 19, meta['vocab_size'] + 1)
    assert all(dmeta['stoi'][ch] == i for ch, i in meta['stoi'].items())
    assert {k: t.replace('=...', '=') for k, t in dots.items()} == plain


def test_unaligned_windows_start_anywhere_and_answer_only_needs_aligned(tmp_path, capsys):
    from dataset import get_chunk, records_of
    from modes import Mode
    from training import DEFAULTS
    _, meta = make(tmp_path, '--num_train=300', '--num_val=30')
    offsets = {}
    for align in (True, False):
        mode = Mode({**DEFAULTS, 'align_records': align}, meta['vocab_size'], records_of(str(tmp_path)))
        chunk = get_chunk(str(tmp_path), 'train', 256, 26, torch.Generator().manual_seed(0), mode.chunk_align)
        # the offset of each window's first '=': where in a record the window starts
        offsets[align] = {int((row == meta['stoi']['=']).nonzero()[0]) for row in chunk}
    assert offsets[True] == {meta['prompt_len'] - 1}
    assert offsets[False] == set(range(meta['record_len']))
    with pytest.raises(ValueError, match='needs align_records=True'):
        Mode({**DEFAULTS, 'align_records': False, 'answer_only': True}, meta['vocab_size'], records_of(str(tmp_path)))


@pytest.mark.parametrize('args,message', [
    (['--ops=-'], '--ops'), (['--ops=+,+'], '--ops'), (['--add_digits=0'], '--add_digits'),
    (['--mul_digits=12'], '--mul_digits'), (['--num_val=0'], '--num_val'), (['--operands=3', '--ops=*'], '--operands'),
    (['--filler=-1'], '--filler'),
])
def test_bad_arguments(tmp_path, args, message):
    r = subprocess.run([sys.executable, 'data/arithmetic/prepare.py', f'--out_dir={tmp_path}', *args],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and r.stderr.strip().startswith('error:') and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not os.listdir(tmp_path)


# ---- scoring ----------------------------------------------------------------------------------------

def test_score():
    answers = [' 302', ' 982', '1911', '  42']
    assert eval_arithmetic.score(answers, answers) == {'accuracy': 1.0, 'correct': 4, 'n': 4, 'char_accuracy': 1.0}
    wrong = [' 303', '982 ', '1910', ' 420']  # right digits in the wrong place count as wrong
    s = eval_arithmetic.score(wrong, answers)
    assert s['accuracy'] == 0.0 and s['correct'] == 0 and s['n'] == 4
    assert s['char_accuracy'] == pytest.approx((3 + 0 + 3 + 1) / 16)
    partial = [' 302', ' 981', '1911', '  4 ']
    s = eval_arithmetic.score(partial, answers)
    assert s['accuracy'] == 0.5 and s['correct'] == 2
    assert s['char_accuracy'] == pytest.approx(14 / 16)
    with pytest.raises(ValueError):
        eval_arithmetic.score(answers[:3], answers)
    assert eval_arithmetic.score([], [])['accuracy'] == 0.0


def test_parse_list():
    assert eval_arithmetic.parse_list('num_pause_tokens', '8,0,2,2') == [0, 2, 8]
    assert eval_arithmetic.parse_list('num_pause_tokens', '') is None
    with pytest.raises(SystemExit, match='comma-separated'):
        eval_arithmetic.parse_list('num_pause_tokens', '1,x')


# ---- end to end: pretrain, pause-finetune on answers only, evaluate ---------------------------------

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--batch_size=8', '--device=cpu', '--compile=False',
        '--progress_bar=False', '--eval_iters=2', '--log_interval=1', '--warmup_iters=2', '--learning_rate=1e-3',
        '--gradient_accumulation_steps=1', '--dropout=0.0']


def run(args, script='train.py'):
    r = subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Tiny data, a standard pretraining and a pause finetuning (M=3, answers only) from it."""
    root = tmp_path_factory.mktemp('arith_runs')
    data, pt, ft = root / 'data', root / 'pt', root / 'ft'
    prepare.main([f'--out_dir={data}', '--num_train=400', '--num_val=40'])
    # pretraining sees 4 records per sequence: 52 positions cover the finetune layout 26 + 2 * 3
    run(['config/arithmetic/pretrain.py', *TINY, f'--data_dir={data}', f'--out_dir={pt}', '--block_size=52',
         '--max_iters=3', '--eval_interval=3'])
    run(['config/arithmetic/finetune.py', *TINY, f'--data_dir={data}', f'--out_dir={ft}', f'--init_from={pt}',
         '--mode=pause', '--num_pause_tokens=3', '--block_size=26', '--max_iters=2', '--eval_interval=2'])
    return data, pt, ft


def test_end_to_end(runs, capsys):
    data, pt, ft = runs
    r = run([f'--out_dir={ft}', '--num_pause_tokens=0,3,5', '--max_problems=30', '--batch_size=16'],
            script='scripts/eval_arithmetic.py')
    assert r.stdout.count(': accuracy') == 3 and 'pauses=5' in r.stdout
    with open(ft / 'accuracy.json') as f:
        report = json.load(f)
    assert report['config']['mode'] == 'pause' and report['config']['num_pause_tokens'] == 3
    assert report['config']['answer_only'] is True
    assert [(x['setting'], x['value']) for x in report['results']] == [('num_pause_tokens', v) for v in (0, 3, 5)]
    for x in report['results']:
        assert x['n'] == 30 and 0.0 <= x['accuracy'] <= 1.0 and set(x['per_op']) <= {'+', '*'}

    # in process: the default setting is the run's own M, reused from accuracy.json (not recomputed)
    c = eval_arithmetic.configure(eval_arithmetic.DEFAULTS, [f'--out_dir={ft}', '--max_problems=30'])
    mtime = os.path.getmtime(ft / 'accuracy.json')
    again = eval_arithmetic.evaluate_run(str(ft), c)
    assert again['results'] == report['results'] and os.path.getmtime(ft / 'accuracy.json') == mtime
    assert 'pauses=3' in capsys.readouterr().out
    # a standard run evaluated with pauses goes through the pause layout
    c = eval_arithmetic.configure(eval_arithmetic.DEFAULTS, [f'--out_dir={pt}', '--max_problems=8',
                                                             '--num_pause_tokens=0,2'])
    std = eval_arithmetic.evaluate_run(str(pt), c)
    assert [x['value'] for x in std['results']] == [0, 2] and std['config']['mode'] == 'standard'


def test_offset_puts_another_problem_s_tail_before_each_problem(runs, capsys):
    data, _, ft = runs
    prompts, answers, _, meta = load_problems(str(data), 30, 15)
    shifted, same_answers, _, _ = load_problems(str(data), 30, 15, offset=5)
    val = np.fromfile(data / 'val.bin', dtype=np.uint16).reshape(-1, meta['record_len'])
    assert same_answers == answers and torch.equal(shifted[:, 5:], prompts)
    assert shifted[1, :5].tolist() == val[0, -5:].tolist() and shifted[0, :5].tolist() == val[-1, -5:].tolist()
    # one run's diagnostic, in its own file: the grid's accuracy.json stays as it is
    before = (ft / 'accuracy.json').read_bytes() if (ft / 'accuracy.json').exists() else None
    c = eval_arithmetic.configure(eval_arithmetic.DEFAULTS, [f'--out_dir={ft}', '--max_problems=30', '--offset=5'])
    report = eval_arithmetic.evaluate_run(str(ft), c)
    assert report['offset'] == 5 and (ft / 'accuracy_offset5.json').exists()
    assert report['results'][0]['examples'][0].startswith(''.join(meta['itos'][int(i)] for i in val[-1, -5:]))
    assert ((ft / 'accuracy.json').read_bytes() if (ft / 'accuracy.json').exists() else None) == before
    with pytest.raises(SystemExit, match='offset=14 must be in 0..13'):
        load_problems(str(data), 30, 15, offset=14)


@pytest.mark.parametrize('mode,knob,values', [
    (['--mode=reasoning', '--num_reason_tokens=2'], 'num_reason_tokens', [0, 2]),
    (['--mode=reflection', '--reflect_rate=0.1'], 'num_reflect_tokens', [1, 2]),
], ids=['reasoning', 'reflection'])
def test_other_modes(runs, tmp_path, capsys, mode, knob, values):
    """Reasoning and reflection runs are scored with their own inference procedure and knobs."""
    data, _, _ = runs
    run(['config/arithmetic/pretrain.py', *TINY, *mode, f'--data_dir={data}', f'--out_dir={tmp_path}',
         '--block_size=26', '--max_iters=2', '--eval_interval=2'])
    c = eval_arithmetic.configure(eval_arithmetic.DEFAULTS, [f'--out_dir={tmp_path}', '--max_problems=8',
                                                             f"--{knob}={','.join(map(str, values))}"])
    report = eval_arithmetic.evaluate_run(str(tmp_path), c)
    assert [(x['setting'], x['value']) for x in report['results']] == [(knob, v) for v in values]
    assert all(x['n'] == 8 for x in report['results'])
    if knob == 'num_reason_tokens':  # more than the trained N: an error
        c = eval_arithmetic.configure(eval_arithmetic.DEFAULTS, [f'--out_dir={tmp_path}', '--num_reason_tokens=3'])
        with pytest.raises(SystemExit, match='trained with N=2'):
            eval_arithmetic.evaluate_run(str(tmp_path), c)


def test_errors(runs, tmp_path):
    data, pt, ft = runs
    r = subprocess.run([sys.executable, 'scripts/eval_arithmetic.py', f'--out_dir={tmp_path}'], cwd=REPO,
                       capture_output=True, text=True, timeout=60, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        f"error: no checkpoint at {tmp_path / 'ckpt.pt'}: train the run first (or point --out_dir at a run directory)"]

    def err(*args):
        with pytest.raises(SystemExit) as e:
            eval_arithmetic.main(list(args))
        assert str(e.value).startswith('error: ') and '\n' not in str(e.value)
        return str(e.value)
    assert 'one of --out_dir' in err()
    assert 'diagnostic of one run' in err('--grid=config/ablations/arithmetic.py', '--offset=3')
    assert 'comma-separated' in err(f'--out_dir={ft}', '--num_pause_tokens=a')
    assert 'does not apply' in err(f'--out_dir={ft}', '--num_reason_tokens=1')
    # a dataset without records (plain text) is not an arithmetic dataset
    text = tmp_path / 'text'
    text.mkdir()
    (text / 'val.bin').write_bytes((data / 'val.bin').read_bytes())
    with open(text / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': len(prepare.CHARS), 'stoi': {c: i for i, c in enumerate(prepare.CHARS)},
                     'itos': dict(enumerate(prepare.CHARS))}, f)
    assert 'not a prompt/answer dataset' in err(f'--out_dir={ft}', f'--data_dir={text}', '--force=True')
    assert 'no meta.pkl' in err(f'--out_dir={ft}', f'--data_dir={tmp_path}', '--force=True')


def test_grid(runs, tmp_path, capsys):
    """--grid: every finished run of a grid file (here two 'seeds' that are the same runs), the
    tables by variant and inference pauses, the csv and the plot."""
    data, pt, ft = runs
    cwd = os.getcwd()
    out_root = tmp_path / 'grid'
    for variant, run_dir in (('pt-std', pt), ('pauseft', ft)):
        for seed in (1, 2):
            (out_root / variant).mkdir(parents=True, exist_ok=True)
            os.symlink(run_dir, out_root / variant / f'seed{seed}')
    grid = tmp_path / 'grid.py'
    grid.write_text(f"base = 'config/arithmetic/pretrain.py'\nseeds = [1, 2, 3]\nout_root = {str(out_root)!r}\n"
                    "variants = {'PT std': dict(), 'PauseFT': dict(mode='pause', num_pause_tokens=3), "
                    "'never run': dict(mode='reasoning')}\n")
    eval_arithmetic.main([f'--grid={grid}', '--num_pause_tokens=0,3', '--max_problems=8', '--num_reason_tokens=1'])
    md = (out_root / 'accuracy.md').read_text()
    assert '| PT std | standard | pauses=0 |' in md and '| PauseFT | pause | pauses=3 |' in md
    assert '| never run | – | – | not run |' in md and 'Not finished (left out): ' in md
    assert 'Robustness' in md and '| PauseFT | 3 |' in md and '(1 seed)' not in md
    with open(out_root / 'accuracy.csv') as f:
        rows = f.read().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2  # header, 2 variants x 2 seeds x 2 pause counts
    assert (out_root / 'accuracy_vs_thinking.png').stat().st_size > 0
    assert os.getcwd() == cwd
