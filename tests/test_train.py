"""
train.py end to end, as a user runs it: a subprocess per run, tiny models on a slice of Tiny Shakespeare.

    every mode trains, reports per-text-token val losses and writes ckpt.pt; standard learns
    a run stopped and resumed has the loss sequence (and weights) of an uninterrupted one
    two DDP ranks under torchrun give one process's losses for the same global batch
    wandb logs offline
    bad input stops with one `error: ...` line and leaves out_dir as it was

Whole file: about 2-3 minutes on 2 cores. The `slow` ones (torchrun, several runs each) can be
deselected with -m "not slow" while iterating; CI runs everything.
"""

import glob
import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from conftest import REPO, finish, losses, write_char_data

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4', '--device=cpu',
        '--compile=False', '--progress_bar=False', '--eval_iters=2', '--log_interval=1', '--warmup_iters=2',
        '--learning_rate=1e-3', '--gradient_accumulation_steps=1', '--dropout=0.0']
MODES = {
    'standard': ['--mode=standard'],
    'pause': ['--mode=pause', '--pause_rate=0.1'],
    'reflection': ['--mode=reflection', '--reflect_rate=0.1'],
    'reasoning': ['--mode=reasoning', '--num_reason_tokens=1', '--reason_delay=1'],
}
# masked-attention variants of the same modes: another code path through the model
VARIANTS = {
    'reflection-hidden': MODES['reflection'] + ['--reflect_hidden=True'],
    'reasoning-2-stopgrad': ['--mode=reasoning', '--num_reason_tokens=2', '--reason_stopgrad=True'],
}
ALL_MODES = {**MODES, **VARIANTS}
with warnings.catch_warnings():  # `slow` is not registered: no pytest config file to do it in yet
    warnings.simplefilter('ignore', pytest.PytestUnknownMarkWarning)
    slow = pytest.mark.slow  # several runs each, or torchrun: deselect with -m "not slow" while iterating


# ---- helpers ------------------------------------------------------------------------------------

def start_train(args, env=None, ranks=0):
    """Start `python train.py ARGS` (or torchrun with `ranks` processes) in the repo root."""
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={ranks}'] \
        if ranks else [sys.executable]
    # one thread per process: tiny models gain nothing from more, runs started together share the
    # cores, and the numbers do not depend on the machine's core count (torchrun sets the same)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    return subprocess.Popen(launcher + ['train.py', *map(str, args)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def run_train(args, env=None, ranks=0):
    """Run train.py to the end; returns its CompletedProcess."""
    return finish(start_train(args, env, ranks))


def train_together(*arg_lists, **kw):
    """Several independent runs at once (each uses one core); their CompletedProcesses in order."""
    return [finish(p) for p in [start_train(args, **kw) for args in arg_lists]]


def tiny(data, out, *extra):
    return [f'--data_dir={data}', f'--out_dir={out}', *TINY, *extra]


def succeeded(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def train_ok(data, out, *extra, **kw):
    """A tiny run that must succeed; returns its CompletedProcess."""
    return succeeded(run_train(tiny(data, out, *extra), **kw))


def evals(stdout):
    """{step: {'train': .., 'val': .., 'val_clean': ..}} from the `step N: ... (loss per text token)` lines."""
    out = {}
    for m in re.finditer(r'^step (\d+): (.*) \(loss per text token\)$', stdout, re.M):
        out[int(m[1])] = {k: float(v) for k, v in (kv.split() for kv in m[2].split(', '))}
    return out


def metrics(out):
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def checkpoint(out):
    return torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=False)


def snapshot(folder):
    """{relative path: sha256} of every file under folder."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def one_line_error(proc, *needles):
    """A failed run whose stderr is exactly one line, `error: ...`, containing every needle."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr[-4000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def data(tmp_path_factory):
    """A small character-level dataset from the first 50_000 characters of Tiny Shakespeare."""
    return write_char_data(tmp_path_factory.mktemp('shakespeare_char'), 50_000)


@pytest.fixture(scope='session')
def trained(data, tmp_path_factory):
    """out_dir of a finished 2-iteration standard run: a checkpoint the bad-input tests must not touch."""
    out = tmp_path_factory.mktemp('trained')
    train_ok(data, out, '--max_iters=2', '--eval_interval=2')
    return out


# ---- every mode, end to end ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def mode_runs(data, tmp_path_factory):
    """{mode: (CompletedProcess, out_dir)}: 4 iterations of every mode and variant, run side by side."""
    outs = {mode: tmp_path_factory.mktemp(mode) for mode in ALL_MODES}
    procs = train_together(*(tiny(data, outs[mode], '--max_iters=4', '--eval_interval=2', *args)
                           for mode, args in ALL_MODES.items()))
    return {mode: (proc, outs[mode]) for mode, proc in zip(ALL_MODES, procs)}


@pytest.mark.parametrize('mode', ALL_MODES)
def test_mode_trains_evaluates_and_saves(mode_runs, mode):
    proc, out = mode_runs[mode]
    succeeded(proc)
    assert sorted(losses(proc.stdout)) == [1, 2, 3, 4]
    ev = evals(proc.stdout)
    assert sorted(ev) == [0, 2, 4], proc.stdout
    expected = {'train', 'val'} | ({'train_clean', 'val_clean'} if mode.split('-')[0] in ('pause', 'reflection')
                                   else set())
    for step in ev.values():
        assert set(step) == expected
        # per text token, at initialisation about ln(vocab): 59 characters + 2 thinking tokens, padded
        assert all(math.isfinite(v) and 3.0 < v < 5.0 for v in step.values()), step
    ckpt = checkpoint(out)
    assert ckpt['iter_num'] == 4
    assert {k: ckpt['config'][k] for k in ('mode', 'n_layer', 'block_size')} == \
        {'mode': mode.split('-')[0], 'n_layer': 2, 'block_size': 32}


def test_standard_loss_decreases(data, tmp_path):
    proc = train_ok(data, tmp_path, '--max_iters=30', '--eval_interval=30', '--eval_iters=4')
    ev, tr = evals(proc.stdout), losses(proc.stdout)
    assert ev[30]['val'] < ev[0]['val'] - 0.3, ev
    assert sum(tr[i] for i in range(26, 31)) / 5 < tr[1] - 0.3, tr


# ---- the configs ------------------------------------------------------------------------------

CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'config', '*.py')))


FAULTS_OF_64MIB_STEPS = """
import resource, torch, training
def faults_of_steps(n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        x = torch.ones(16 << 20)  # 64 MiB, every page written, then freed like a step's activations
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_steps(10)
default = faults_of_steps(5)
training.precision({'dtype': ''}, 'cpu')  # what train.py, sample.py and bench.py do on the CPU
faults_of_steps(10)  # the heap grows to hold the block (small allocations can split a freed one)
print(default, faults_of_steps(5))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason="tunes glibc's malloc")
def test_cpu_runs_reuse_freed_memory_instead_of_faulting_it_in_every_step():
    """By default glibc unmaps a freed 64 MiB block, and the next one is faulted in page by page
    (16384 pages a step); once train.py has set up the CPU, the heap keeps it and steps stop faulting."""
    out = subprocess.run([sys.executable, '-c', FAULTS_OF_64MIB_STEPS], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    default, kept = map(int, out.stdout.split())
    assert default >= 5 * 16000 and kept < 1000, (default, kept)


@pytest.mark.parametrize('path', CONFIGS)
def test_config_sets_known_keys(path):
    from configurator import configure  # in-process: configure() only reads the file
    from training import DEFAULTS
    config = configure(DEFAULTS, [path])
    assert config['batch_size'] * config['block_size'] * config['gradient_accumulation_steps'] > 0
    if os.path.basename(path).endswith('_owt.py'):  # the mode runs compare with train_gpt2.py token for token
        gpt2 = configure(DEFAULTS, ['config/train_gpt2.py'])
        assert config['batch_size'] * config['gradient_accumulation_steps'] == 12 * 40 == \
            gpt2['batch_size'] * gpt2['gradient_accumulation_steps']
        assert config['out_dir'] != gpt2['out_dir'] and config['wandb_run_name'] != gpt2['wandb_run_name']


def test_mode_configs_run(data, tmp_path):
    """The four Tiny Shakespeare mode configs, 2 iterations each on the test data."""
    names = ('standard', 'pause', 'reflection', 'reasoning')
    procs = train_together(*([f'config/{name}_shakespeare_char.py', f'--data_dir={data}', f'--out_dir={tmp_path / name}',
                            '--max_iters=2', '--eval_interval=2', '--eval_iters=1', '--progress_bar=False']
                           for name in names))
    for name, proc in zip(names, procs):
        succeeded(proc)
        assert checkpoint(tmp_path / name)['config']['mode'] == name


# ---- resume -------------------------------------------------------------------------------------

K = 6  # checkpoint every K iterations; stop at K, then resume to 2K


@slow
@pytest.mark.parametrize('mode', ['pause', 'reasoning'])
def test_resume_continues_exactly(data, tmp_path, mode):
    """Train 2K iterations in one go, or K and then resume to 2K: the same losses at every iteration
    and the same final weights. Dropout makes the saved RNG state matter; pause draws random insertions
    (standard's path is pause's without them)."""
    common = [f'--eval_interval={K}', '--always_save_checkpoint=True', '--log_interval=1', '--dropout=0.1',
              '--gradient_accumulation_steps=2', *MODES[mode]]
    whole, first = map(succeeded, train_together(tiny(data, tmp_path / 'whole', *common, f'--max_iters={2 * K}'),
                                               tiny(data, tmp_path / 'split', *common, f'--max_iters={K}')))
    assert checkpoint(tmp_path / 'split')['iter_num'] == K
    second = train_ok(data, tmp_path / 'split', *common, f'--max_iters={2 * K}', '--init_from=resume')
    expected = losses(whole.stdout)
    assert sorted(expected) == list(range(1, 2 * K + 1))
    assert sorted(losses(second.stdout)) == list(range(K + 1, 2 * K + 1))
    assert {**losses(first.stdout), **losses(second.stdout)} == expected
    a, b = checkpoint(tmp_path / 'whole'), checkpoint(tmp_path / 'split')
    assert a['iter_num'] == b['iter_num'] == 2 * K
    assert a['model'].keys() == b['model'].keys()
    for name, tensor in a['model'].items():
        assert torch.equal(tensor, b['model'][name]), name
    # metrics.jsonl: one line per eval, none repeated by the resume, the same numbers; the
    # training time carries over
    whole_m, split_m = metrics(tmp_path / 'whole'), metrics(tmp_path / 'split')
    same = ('iter', 'text_tokens', 'train_flops', 'flops_per_text_token', 'losses')
    assert [{k: m[k] for k in same} for m in split_m] == [{k: m[k] for k in same} for m in whole_m]
    assert [m['iter'] for m in split_m] == [0, K, 2 * K] and split_m[-1]['final']
    assert 0 < split_m[1]['train_time_s'] < split_m[2]['train_time_s']
    assert split_m[2]['text_tokens'] == 2 * K * 2 * 4 * 32  # iters x accumulation x batch x block


def test_finetune_from_a_run(data, trained, tmp_path):
    """init_from=<out_dir of a run> loads its weights only (iteration 0, fresh optimizer) and may
    change the mode: the first eval of a standard finetune equals the source run's last eval."""
    args = ['--max_iters=2', '--eval_interval=2', f'--init_from={trained}']
    same, paused, reason = train_together(tiny(data, tmp_path / 'std', *args),
                                        tiny(data, tmp_path / 'pause', *args, *MODES['pause'], '--block_size=24'),  # + 2 pauses fit
                                        tiny(data, tmp_path / 'reason', *args, *MODES['reasoning']))
    assert evals(succeeded(same).stdout)[0]['val'] == pytest.approx(metrics(trained)[-1]['losses']['val'], abs=1e-4)
    assert checkpoint(tmp_path / 'std')['iter_num'] == 2
    assert 'val_clean' in evals(succeeded(paused).stdout)[0]
    one_line_error(reason, 'needs that many slot embeddings')


# ---- DDP ----------------------------------------------------------------------------------------

@slow
@pytest.mark.parametrize('mode', [m for m in ALL_MODES if m != 'reflection'])
def test_ddp_matches_one_process(data, tmp_path, mode):
    """2 gloo ranks x 1 micro-step each == 1 process x 2 micro-steps: the same global batches (the data
    and insertion patterns follow the global micro-step), so the same losses up to all-reduce order.
    Every path through the model (pause: a loss on some slots; reasoning's last block computes text rows
    only; stop-gradient has its own backward; reflection is pause's path with a loss on every slot),
    and DDP must reduce all of it."""
    args = ['--max_iters=6', '--eval_interval=6', '--gradient_accumulation_steps=2', *ALL_MODES[mode]]
    two = start_train(tiny(data, tmp_path / 'two', *args), ranks=2)
    one = train_ok(data, tmp_path / 'one', *args)
    two = succeeded(finish(two))
    expected, got = losses(one.stdout), losses(two.stdout)
    assert sorted(got) == sorted(expected) == list(range(1, 7)), two.stdout
    for it in expected:  # the log prints 4 decimals: allow one unit of rounding in the last
        assert got[it] == pytest.approx(expected[it], rel=1e-5, abs=1.01e-4), (it, got[it], expected[it])
    for split, value in evals(one.stdout)[6].items():
        assert evals(two.stdout)[6][split] == pytest.approx(value, rel=1e-5, abs=1.01e-4), split
    a, b = checkpoint(tmp_path / 'one'), checkpoint(tmp_path / 'two')
    assert a['iter_num'] == b['iter_num'] == 6
    for name, tensor in a['model'].items():
        assert torch.allclose(tensor, b['model'][name], rtol=1e-4, atol=1e-6), name


@slow
def test_ddp_rejects_accumulation_not_divisible_by_ranks(data, tmp_path):
    proc = run_train(tiny(data, tmp_path, '--max_iters=2', '--gradient_accumulation_steps=3'), ranks=2)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert errors, proc.stderr[-4000:]
    # every rank says the same single line, and train.py itself shows no traceback (torchrun's
    # own failure report follows it)
    assert set(errors) == {'error: gradient_accumulation_steps=3 must be a positive multiple of the world size 2'}, errors
    assert 'train.py", line' not in proc.stderr, proc.stderr[-4000:]
    assert not os.path.exists(tmp_path / 'ckpt.pt')


# ---- wandb --------------------------------------------------------------------------------------

@slow
def test_wandb_offline_run(data, tmp_path):
    out = tmp_path / 'out'
    wandb_home = tmp_path / 'wandb-home'  # keep wandb's settings and cache out of $HOME
    env = {'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', 'WANDB_CONFIG_DIR': str(wandb_home),
           'WANDB_CACHE_DIR': str(wandb_home), 'WANDB_DATA_DIR': str(wandb_home)}
    env.pop('WANDB_API_KEY', None)
    train_ok(data, out, '--max_iters=2', '--eval_interval=2', '--wandb_log=True', env=env)
    runs = sorted((out / 'wandb').glob('offline-run-*'))
    assert len(runs) == 1, list((out / 'wandb').iterdir()) if (out / 'wandb').exists() else 'no wandb dir'
    assert list(runs[0].glob('*.wandb')), list(runs[0].iterdir())


# ---- bad input ----------------------------------------------------------------------------------

BAD_INPUT = {
    # name: (extra args, needles in the error line); {tmp}: the case's tmp dir, {config}: a config with a typo
    'unknown key': (['--learning_rat=1e-3'], ["unknown config key 'learning_rat'", 'closest: learning_rate']),
    'unknown key in a config file': (['{config}'], ["unknown config key 'n_layers'", 'n_layer']),
    'wrongly typed value': (['--batch_size=four'], ["'batch_size' expects int", 'four']),
    'wrongly typed bool': (['--compile=yes'], ["'compile' expects bool"]),
    'missing train.bin': (['--init_from=resume', '--data_dir={tmp}/empty'],
                          ['train.bin not found', 'python {tmp}/empty/prepare.py']),
    'missing dataset': (['--init_from=resume', '--data_dir=', '--dataset=no_such_set'],
                        ['data/no_such_set/train.bin not found', 'python data/no_such_set/prepare.py']),
    'scratch over a checkpoint': ([], ['ckpt.pt exists', '--init_from=resume']),
    'resume without checkpoint': (['--init_from=resume', '--out_dir={tmp}/empty'], ['no checkpoint at']),
    'resume with another n_layer': (['--init_from=resume', '--n_layer=3'], ['n_layer=2 in checkpoint vs 3']),
    'resume with another mode': (['--init_from=resume', '--mode=reasoning'],
                                 ["mode='standard' in checkpoint vs 'reasoning'"]),
    'resume with another n_layer and mode': (['--init_from=resume', '--n_layer=3', '--mode=pause'],
                                             ['n_layer=2 in checkpoint vs 3', "mode='standard' in checkpoint"]),
    'resume with a longer block_size': (['--init_from=resume', '--block_size=64'],
                                        ['block_size=32 in checkpoint vs 64']),
    # a new run into {tmp}/empty/out: every check must come before out_dir is created
    'heads that do not divide n_embd': (['--out_dir={tmp}/empty/out', '--n_embd=33'],
                                        ['n_embd=33 must be a multiple of n_head=2']),
    'zero block_size': (['--out_dir={tmp}/empty/out', '--block_size=0'], ['block_size=0 must be >= 1']),
    'zero eval_iters': (['--out_dir={tmp}/empty/out', '--eval_iters=0'], ['eval_iters=0 must be >= 1']),
    'dropout of 1.5': (['--out_dir={tmp}/empty/out', '--dropout=1.5'], ['dropout=1.5 must be in [0, 1)']),
    'no room for the cosine decay': (['--out_dir={tmp}/empty/out', '--warmup_iters=4', '--lr_decay_iters=4'],
                                     ['lr_decay_iters=4 must be above warmup_iters=4']),
    'block_size longer than val.bin': (['--out_dir={tmp}/empty/out', '--block_size=6000'],
                                       ['val.bin has 5,000 tokens', 'lower block_size']),
    'typo in the mode': (['--out_dir={tmp}/empty/out', '--mode=reasonng'], ["mode='reasonng' is not one of"]),
    'a GPU that is not there': (['--out_dir={tmp}/empty/out', '--device=cuda:99'], ["device='cuda:99'"]),
}


@pytest.fixture(scope='module')
def bad_runs(data, trained, tmp_path_factory):
    """{case: (CompletedProcess, tmp dir, needles, out_dir snapshot before, after)}: all cases at once,
    each on its own copy of a finished run's out_dir."""
    runs = {}
    for case, (extra, needles) in BAD_INPUT.items():
        tmp = tmp_path_factory.mktemp('bad')
        (tmp / 'empty').mkdir()
        (tmp / 'config.py').write_text('n_layers = 3  # a typo\n')
        shutil.copytree(trained, tmp / 'out')
        fill = lambda s, tmp=tmp: s.format(tmp=tmp, config=tmp / 'config.py')
        args = tiny(data, tmp / 'out', '--max_iters=4') + [fill(a) for a in extra]
        runs[case] = (tmp, [fill(n) for n in needles], snapshot(tmp / 'out'), start_train(args))
    return {case: (finish(proc), tmp, needles, before, snapshot(tmp / 'out'))
            for case, (tmp, needles, before, proc) in runs.items()}


@pytest.mark.parametrize('case', BAD_INPUT)
def test_bad_input_is_one_line_and_touches_nothing(bad_runs, case):
    proc, tmp, needles, before, after = bad_runs[case]
    one_line_error(proc, *needles)
    assert 'ckpt.pt' in before and after == before
    assert not os.listdir(tmp / 'empty')
