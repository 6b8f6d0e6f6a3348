"""
Fault injection: no fault we can provoke may lose more than the current step.

Each trial is recorded (fault, outcome, what was lost); with FAULT_TABLE=path set, the records are
appended there as JSON lines, and scripts/fault_table.py renders them as the table in FAULTS.md.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import train
from checkpoints import load_checkpoint
from conftest import REPO, losses, run_together, write_char_data
from model import GPT

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--dropout=0.1', '--gradient_accumulation_steps=1', '--eval_iters=2', '--log_interval=1', '--device=cpu', '--compile=False',
        '--learning_rate=1e-3', '--warmup_iters=2', '--always_save_checkpoint=True', '--progress_bar=False']


def record(fault, trials, lost, detail=''):
    path = os.environ.get('FAULT_TABLE')
    if path:
        with open(path, 'a') as f:
            f.write(json.dumps(dict(fault=fault, trials=trials, lost=lost, detail=detail)) + '\n')


def sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def train_cmd(data, out, *extra, torchrun=0):
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={torchrun}'] \
        if torchrun else [sys.executable]
    return launcher + ['train.py', f'--data_dir={data}', f'--out_dir={out}', *TINY, *extra]


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, **kw)


def one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith('error: '), proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A small character-level dataset from the first 60000 characters of Tiny Shakespeare."""
    return write_char_data(tmp_path_factory.mktemp('char_data'), 60000)


@pytest.fixture(scope='module')
def reference(data, tmp_path_factory):
    """An uninterrupted 12-iteration run: the loss sequence every recovery must reproduce."""
    out = tmp_path_factory.mktemp('reference')
    proc = run(train_cmd(data, out, '--max_iters=12', '--eval_interval=4'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return losses(proc.stdout)


# ---- kill during save ---------------------------------------------------------------------------

KILL_DURING_SAVE = r'''
import os, signal, sys, torch, train
real_save = torch.save
def dying_save(obj, f, *a, **k):
    real_save(obj, f, *a, **k)
    f.flush()
    f.truncate(int(sys.argv[1]))            # part of the new checkpoint is on disk ...
    os.kill(os.getpid(), signal.SIGKILL)    # ... when the process is killed: no handler, no cleanup
torch.save = dying_save
train.main(sys.argv[2:])
'''


def test_kill_during_save_keeps_previous_checkpoint(data, tmp_path):
    out = tmp_path / 'out'
    proc = run(train_cmd(data, out, '--max_iters=4', '--eval_interval=4'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = sha(out / 'ckpt.pt')
    size = (out / 'ckpt.pt').stat().st_size
    offsets = [0, 1, 100, size // 3, size // 2, size - 10]
    # die at several points of the write of the iter-8 checkpoint, each in its own copy of the run
    outs = [tmp_path / f'out-{offset}' for offset in offsets]
    for o in outs:
        shutil.copytree(out, o)
    procs = run_together([[sys.executable, '-c', KILL_DURING_SAVE, str(offset), f'--data_dir={data}', f'--out_dir={o}',
                           *TINY, '--max_iters=8', '--eval_interval=4', '--init_from=resume']
                          for offset, o in zip(offsets, outs)], cwd=REPO)
    for o, proc in zip(outs, procs):
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert sha(o / 'ckpt.pt') == before
        assert load_checkpoint(str(o / 'ckpt.pt'))['iter_num'] == 4
    # a killed save leaves its temp file behind (the next start removes it): at most one per run
    leftovers = [len(list(o.glob('ckpt.pt.tmp.*'))) for o in outs]
    assert max(leftovers) <= 1, leftovers
    # and the run goes on from the intact checkpoint, removing the stale temp file
    proc = run(train_cmd(data, outs[-1], '--max_iters=8', '--eval_interval=4', '--init_from=resume'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(outs[-1].glob('ckpt.pt.tmp.*'))
    assert load_checkpoint(str(outs[-1] / 'ckpt.pt'))['iter_num'] == 8
    record('SIGKILL during a checkpoint write (truncated at 6 offsets)', len(offsets),
           'nothing: previous checkpoint intact and loadable', f'temp files left: {max(leftovers)} per killed run, removed when the run resumes')


def test_truncated_checkpoint_is_named_as_such(data, tmp_path):
    out = tmp_path / 'out'
    assert run(train_cmd(data, out, '--max_iters=2', '--eval_interval=2')).returncode == 0
    ckpt = out / 'ckpt.pt'
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    proc = run(train_cmd(data, out, '--max_iters=4', '--init_from=resume'))
    one_line_error(proc, 'truncated or corrupt')
    record('truncated checkpoint file on resume', 1, 'nothing: one-line error, file untouched')


# ---- preemption ---------------------------------------------------------------------------------

def interrupt(cmd, after_iter, sig=signal.SIGTERM):
    """Start cmd, send sig once the log shows iteration after_iter, return (returncode, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen, sent = [], False
    try:
        # read on to the end through the same buffered reader: communicate() reads the pipe itself
        # and would drop lines already read ahead into the buffer (the 'iter' lines after after_iter)
        for line in proc.stdout:
            seen.append(line)
            if not sent and line.startswith(f'iter {after_iter}:'):
                proc.send_signal(sig)
                sent = True
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, ''.join(seen), err


@pytest.mark.parametrize('ranks', [0, 2], ids=['1-process', 'torchrun-2-ranks'])
def test_sigterm_saves_and_resume_is_exact(data, tmp_path, reference, ranks):
    out = tmp_path / 'out'
    extra = ['--max_iters=12', '--eval_interval=4']
    if ranks:
        extra.append('--gradient_accumulation_steps=2')
    code, stdout, stderr = interrupt(train_cmd(data, out, *extra, torchrun=ranks), after_iter=5)
    assert 'stopped by SIGTERM' in stdout, stdout + stderr[-2000:]
    stopped_at = load_checkpoint(str(out / 'ckpt.pt'))['iter_num']
    assert stopped_at >= 5  # the step in flight when the signal came was finished, not lost
    resume = train_cmd(data, out, *extra, '--init_from=resume', torchrun=ranks)
    if ranks:  # the uninterrupted run to compare with has the same ranks; it runs alongside the resume
        proc, uninterrupted = run_together([resume, train_cmd(data, tmp_path / 'ref2', *extra, torchrun=ranks)], cwd=REPO)
        ref = losses(uninterrupted.stdout)
    else:
        proc, ref = run(resume), reference
    assert proc.returncode == 0, proc.stderr[:4000]  # the head: a rank's own error comes before torchrun's summary
    resumed = losses(proc.stdout)
    combined = {**losses(stdout), **resumed}
    assert sorted(combined) == list(range(1, 13))
    for it, loss in combined.items():
        assert loss == pytest.approx(ref[it], rel=1e-5, abs=1e-6), (it, loss, ref[it])
    record(f'SIGTERM mid-run ({"torchrun, 2 gloo ranks" if ranks else "1 process"})', 1,
           'nothing: resumed loss sequence equals the uninterrupted run', f'stopped after iter {stopped_at}')


# ---- non-finite values --------------------------------------------------------------------------

def nan_after(monkeypatch, iteration):
    """Make the model's loss NaN from the given training call on (eval calls are not counted)."""
    real_forward = GPT.forward
    calls = {'n': 0}

    def forward(self, *args, **kwargs):
        logits, loss = real_forward(self, *args, **kwargs)
        if self.training:
            calls['n'] += 1
            if calls['n'] > iteration and loss is not None:
                loss = loss * float('nan')
        return logits, loss
    monkeypatch.setattr(GPT, 'forward', forward)


def test_nan_stops_without_overwriting_checkpoint(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    args = [f'--data_dir={data}', f'--out_dir={out}', *TINY, '--eval_interval=4']
    train.main(args + ['--max_iters=4'])
    before = sha(out / 'ckpt.pt')
    nan_after(monkeypatch, 2)
    with pytest.raises(SystemExit) as e:
        train.main(args + ['--max_iters=12', '--init_from=resume'])
    assert 'non-finite loss or gradient at iter 6' in str(e.value)
    assert sha(out / 'ckpt.pt') == before
    assert load_checkpoint(str(out / 'ckpt.pt'))['iter_num'] == 4
    record('NaN loss injected (on_nonfinite=stop)', 1, 'nothing: run stopped, last good checkpoint kept')


def test_nan_skip_skips_the_update(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    nan_after(monkeypatch, 3)
    train.main([f'--data_dir={data}', f'--out_dir={out}', *TINY, '--max_iters=6', '--eval_interval=100',
                '--on_nonfinite=skip'])
    stdout = capsys.readouterr().out
    assert stdout.count('update skipped') == 3
    state = load_checkpoint(str(out / 'ckpt.pt'))['model']
    assert all(torch.isfinite(v).all() for v in state.values())
    record('NaN loss injected (on_nonfinite=skip)', 3, 'the 3 poisoned updates only; weights stay finite')


# ---- fail fast before training -----------------------------------------------------------------

def test_fail_fast_cases(data, tmp_path):
    out = tmp_path / 'out'
    assert run(train_cmd(data, out, '--max_iters=2', '--eval_interval=2')).returncode == 0
    before = sha(out / 'ckpt.pt')
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    bad_vocab = tmp_path / 'bad_vocab'
    bad_vocab.mkdir()
    for split in ('train', 'val'):
        (bad_vocab / f'{split}.bin').write_bytes((data / f'{split}.bin').read_bytes())
    with open(bad_vocab / 'val.bin', 'r+b') as f:
        f.seek(100)
        f.write((60000).to_bytes(2, 'little'))
    (bad_vocab / 'meta.pkl').write_bytes((data / 'meta.pkl').read_bytes())
    cases = [
        ('unwritable out_dir', train_cmd(data, blocker / 'sub', '--max_iters=2'), ['cannot write to out_dir']),
        ('token ids outside the vocab', train_cmd(bad_vocab, tmp_path / 'o2', '--max_iters=2'),
         ['val.bin holds token id 60000']),
        ('resume with another n_layer', train_cmd(data, out, '--init_from=resume', '--n_layer=3'), ['n_layer=2']),
        ('resume with another mode', train_cmd(data, out, '--init_from=resume', '--mode=reasoning'),
         ["mode='standard'"]),
        ('resume with a longer block_size', train_cmd(data, out, '--init_from=resume', '--block_size=64'),
         ['block_size=32']),
        ('gradient_accumulation_steps=0', train_cmd(data, tmp_path / 'o3', '--gradient_accumulation_steps=0'),
         ['gradient_accumulation_steps=0']),
        ('batch_size=0', train_cmd(data, tmp_path / 'o4', '--batch_size=0'), ['batch_size=0']),
    ]
    for (name, _, needles), proc in zip(cases, run_together([cmd for _, cmd, _ in cases], cwd=REPO)):
        one_line_error(proc, *needles)
    assert sha(out / 'ckpt.pt') == before  # by any of them
    record('bad input before training (' + '; '.join(n for n, _, _ in cases) + ')', len(cases),
           'nothing: one-line error before training, checkpoint untouched')


def test_grad_accum_not_divisible_by_world_size(data, tmp_path):
    proc = run(train_cmd(data, tmp_path / 'out', '--max_iters=2', '--gradient_accumulation_steps=3', torchrun=2))
    assert proc.returncode != 0
    assert 'must be a positive multiple of the world size 2' in proc.stderr
    record('gradient_accumulation_steps=3 on 2 ranks', 1, 'nothing: one-line error on each rank')


# ---- automatic restarts -------------------------------------------------------------------------

def test_torchrun_restart_resumes_automatically(data, tmp_path, reference):
    """A worker is SIGKILLed mid-run; torchrun --max-restarts restarts the group, which resumes
    from the latest checkpoint (init_from=auto) and ends with the uninterrupted run's losses."""
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           '--max-restarts=2', 'train.py', f'--data_dir={data}', f'--out_dir={out}', *TINY,
           '--max_iters=40', '--eval_interval=4', '--init_from=auto', '--gradient_accumulation_steps=2']
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith('iter 6:'):
                # kill the rank-1 worker like an OOM killer would
                workers = subprocess.run(['pgrep', '-f', f'out_dir={out}'], capture_output=True, text=True)
                pids = sorted(int(p) for p in workers.stdout.split() if int(p) != proc.pid)
                os.kill(pids[-1], signal.SIGKILL)
                break
        rest, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    stdout = ''.join(lines) + rest
    ref2 = losses(run(train_cmd(data, tmp_path / 'ref', '--max_iters=40', '--eval_interval=4',
                                '--gradient_accumulation_steps=2', torchrun=2)).stdout)
    # rank 0 may log a few iterations after iter 6 before the group notices the kill: judge the
    # restarted group by its own lines, after its start-up banner (printed once per start)
    starts = stdout.count('mode standard: ')
    assert starts == 2 and rest.count('mode standard: ') == 1, f'{starts} starts, not 2:\n{stdout[-3000:]}'
    first_group, restarted_group = stdout.rsplit('mode standard: ', 1)
    before, final = losses(first_group), losses(restarted_group)
    assert final, 'the first group finished all 40 iterations before the kill landed'
    assert max(final) == 40 and min(final) % 4 == 1 and min(final) > 1  # resumed after a checkpoint (every 4)
    for it, loss in [*before.items(), *final.items()]:
        assert loss == pytest.approx(ref2[it], rel=1e-5, abs=1e-6), it
    record('SIGKILL of one torchrun worker with --max-restarts=2, init_from=auto', 1,
           f'the iterations after the last checkpoint (redone from iter {min(final) - 1})',
           f'{len(set(before) & set(final))} iterations ran twice')


# ---- checkpoints and data files -----------------------------------------------------------------

def test_disk_full_while_saving_keeps_the_previous_checkpoint(data, tmp_path):
    """A checkpoint write that fails part-way (the file size limit stands in for a full disk) stops
    with one line; the previous checkpoint is intact and loadable, and no partial file is left."""
    import resource
    out = tmp_path / 'out'
    assert run(train_cmd(data, out, '--max_iters=4', '--eval_interval=4')).returncode == 0
    before, limit = sha(out / 'ckpt.pt'), os.path.getsize(out / 'ckpt.pt') // 2

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
    proc = run(train_cmd(data, out, '--max_iters=8', '--eval_interval=4', '--init_from=resume'), preexec_fn=small_disk)
    line = one_line_error(proc, 'could not write the checkpoint', f'the previous checkpoint {out / "ckpt.pt"} is kept')
    assert sha(out / 'ckpt.pt') == before and load_checkpoint(str(out / 'ckpt.pt'))['iter_num'] == 4
    assert sorted(p.name for p in out.iterdir() if p.name.startswith('ckpt')) == ['ckpt.pt']
    record('checkpoint write fails part-way (disk full: RLIMIT_FSIZE at half a checkpoint)', 1,
           'nothing: one-line error, previous checkpoint intact and loadable, no partial file left',
           f"the write's error: {line[line.index('(') + 1:line.index('):')]}")


def test_second_run_on_a_live_out_dir_is_refused(data, tmp_path):
    """While a run lives, another on its out_dir is refused in one line and changes nothing; once the
    first is killed (SIGKILL: no clean-up), its lock goes with it and the next run starts."""
    out = tmp_path / 'out'
    live = subprocess.Popen(train_cmd(data, out, '--max_iters=100000', '--eval_interval=100000'), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    try:
        for line in live.stdout:
            if line.startswith('iter 2:'):
                break
        metrics_before = (out / 'metrics.jsonl').read_bytes()
        second = run(train_cmd(data, out, '--max_iters=2', '--init_from=auto'))
        one_line_error(second, f'is in use by a live run (pid {live.pid})')
        assert (out / 'metrics.jsonl').read_bytes() == metrics_before and live.poll() is None
    finally:
        live.kill()
        live.communicate()
    after_kill = run(train_cmd(data, out, '--max_iters=2', '--eval_interval=2', '--init_from=auto'))
    assert after_kill.returncode == 0, after_kill.stderr[-2000:]
    assert load_checkpoint(str(out / 'ckpt.pt'))['iter_num'] == 2
    record('a second run on the out_dir of a live run; then the live run SIGKILLed and the next started', 2,
           'nothing: one-line error, the live run untouched; a killed run\'s lock does not block the next',
           'the error names the live run\'s pid')


def test_bad_bin_files_are_one_line_errors(data, tmp_path):
    """A .bin whose byte count is odd (not uint16 tokens) or shorter than a split's window needs."""
    cases = []
    for name, split, size in [('odd', 'train', None), ('short', 'val', 33 * 2)]:
        folder = tmp_path / name
        folder.mkdir()
        for s in ('train', 'val'):
            (folder / f'{s}.bin').write_bytes((data / f'{s}.bin').read_bytes())
        (folder / 'meta.pkl').write_bytes((data / 'meta.pkl').read_bytes())
        raw = (folder / f'{split}.bin').read_bytes()
        (folder / f'{split}.bin').write_bytes(raw[:-1] if size is None else raw[:size])
        cases.append(train_cmd(folder, tmp_path / f'out-{name}', '--max_iters=2'))
    odd, short = run_together(cases, cwd=REPO)
    one_line_error(odd, 'train.bin has', 'an odd number: not uint16 token ids')
    one_line_error(short, 'val.bin has 33 tokens, too few for windows of block_size + 1 = 33')
    assert not (tmp_path / 'out-odd').exists() and not (tmp_path / 'out-short').exists()
    record('a train/val .bin with an odd byte count; one shorter than its split needs', 2,
           'nothing: one-line error before training, nothing written')


def test_checkpoint_that_runs_code_is_refused(data, tmp_path, monkeypatch):
    """A ckpt.pt whose pickle would run code (here: create a file) is refused by train.py (resume and
    init_from) and sample.py in one line, and its code never runs; so is such a meta.pkl."""
    import pickle
    marker = tmp_path / 'pwned'

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))
    evil = tmp_path / 'evil'
    evil.mkdir()
    torch.save({'model': {}, 'model_args': {'n_positions': 1}, 'config': {}, 'payload': RunsCode()}, evil / 'ckpt.pt')
    procs = run_together([train_cmd(data, evil, '--init_from=resume'),
                          train_cmd(data, tmp_path / 'ft', f'--init_from={evil}'),
                          [sys.executable, 'sample.py', f'--out_dir={evil}']], cwd=REPO)
    for proc in procs:
        one_line_error(proc, 'needs posix.system to load, which could run code: refused, nothing in it ran')
    bad_meta = tmp_path / 'bad_meta'
    bad_meta.mkdir()
    for s in ('train', 'val'):
        (bad_meta / f'{s}.bin').write_bytes((data / f'{s}.bin').read_bytes())
    with open(bad_meta / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 65, 'payload': RunsCode()}, f)
    one_line_error(run(train_cmd(bad_meta, tmp_path / 'o', '--max_iters=2')), 'posix.system, not plain data: refused')
    assert not marker.exists()
    record('a ckpt.pt (train.py resume and init_from, sample.py) or a meta.pkl whose pickle runs code', 4,
           'nothing: one-line error naming what it needs, the code never ran')
