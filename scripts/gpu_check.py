"""
The GPU check: one command that proves the CUDA training path and measures it, and writes GPU.md.

    python scripts/gpu_check.py             # on a CUDA machine
    python scripts/gpu_check.py --dry-run   # the same steps on the CPU at tiny shapes (minutes)

It needs torch, numpy and pytest, and no network (the training data is made here), and runs:
  1. the CUDA tests: FlexAttention against dense masks, forward and backward, every mode and
     variant, fp32 and bf16, and a compiled step free of graph breaks and recompilations
     (pytest tests/test_attention.py -k cuda);
  2. per variant one bench.py process, at the GPT-2 124M shape in bf16: a compiled training run
     whose losses must be finite and falling (ms/iter, text tok/s, MFU, peak memory, FLOPs), then
     the same model's first steps eagerly, whose losses must agree with the compiled ones within
     bf16 tolerance. Processes overlap their compilation (--jobs) and take turns for the timed
     steps (bench.py's timing_lock), so every timing has the GPU to itself;
  3. sampling at 124M with bench.py: KV cache on vs off (speed, identical greedy output), and
     reasoning N=1 against standard per generated token;
  4. torchrun --nproc_per_node=1 with NCCL: SIGTERM mid-run, resume, and the loss sequence against
     an uninterrupted run's.
The dry run skips what needs CUDA (the CUDA tests skip themselves, torchrun uses gloo, compiled
graphs run eagerly) and so checks the script before a GPU is at hand. The results go to
<workdir>/gpu_check.json and GPU.md is rendered from it (reporting.gpu_report). Exit code 1 if any
check fails.
"""

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import reporting  # noqa: E402
from dataset import make_data  # noqa: E402
from grids import override_arg, slug  # noqa: E402

VARIANTS = [  # (name, overrides, sequences per micro-batch as a fraction of --batch_size)
    ('standard', dict(mode='standard'), 1),
    ('pause', dict(mode='pause'), 1),
    ('reflection', dict(mode='reflection'), 1),
    ('reflection hidden', dict(mode='reflection', reflect_hidden=True), 1),
    ('reasoning N=1', dict(mode='reasoning', num_reason_tokens=1), 1),
    ('reasoning N=1 stop-gradient', dict(mode='reasoning', num_reason_tokens=1, reason_stopgrad=True), 1),
    ('reasoning N=3', dict(mode='reasoning', num_reason_tokens=3), 2),  # 4x the slots: half the micro-batch
]
# step-time ratio to standard over the FLOP ratio, at most (the bars)
RATIO_BAR = {'reasoning N=1 stop-gradient': 1.25}
DEFAULT_RATIO_BAR = 1.15
MFU_BAR = 0.40
EAGER_STEPS = 3


def sizes(dry):
    """The model and run shape: GPT-2 124M on CUDA, a tiny model for the dry run."""
    if dry:
        return dict(n_layer=2, n_head=2, n_embd=64, block_size=64, device='cpu', dtype='float32', learning_rate=3e-3)
    return dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, device='cuda', dtype='bfloat16', learning_rate=6e-4)


# ---- training: one bench.py process per variant ----------------------------------------------

def variant_args(args, overrides, share):
    """bench.py's arguments for one variant: the compiled run, then its first steps eagerly."""
    c = {**sizes(args.dry_run), **overrides, 'data_dir': args.data_dir, 'batch_size': max(1, args.batch_size // share),
         'gradient_accumulation_steps': args.accum * share, 'bias': False, 'warmup_iters': 5, 'lr_decay_iters': 1000,
         'min_lr': 6e-5, 'bench_warmup': args.warmup, 'bench_iters': args.steps - args.warmup, 'repeats': 1,
         'timing_lock': os.path.join(args.workdir, 'timing.lock'), 'fresh_process': False,
         'variants': f'compile=True; compile=False,bench_warmup=0,bench_iters={EAGER_STEPS}'}
    return ['bench.py', *(override_arg(k, v) for k, v in c.items())]


def run_variants(args):
    """{name: bench.py's JSON report, or {'error': ...}} for every variant, --jobs processes at a time."""
    # the dry run: graph capture only (inductor's code generation takes minutes on 2 cores)
    env = dict(os.environ, **({'TORCH_COMPILE_OVERRIDE_BACKENDS': '>=0:eager'} if args.dry_run else {}))
    pending, running, results = list(VARIANTS), [], {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name, overrides, share = pending.pop(0)
            out = os.path.join(args.workdir, f'train-{slug(name)}.json')
            proc = subprocess.Popen([sys.executable, *variant_args(args, overrides, share), f'--json_out={out}'],
                                    cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            running.append((name, proc, out, time.time()))
        time.sleep(1)
        for item in [r for r in running if r[1].poll() is not None]:
            name, proc, out, t0 = item
            running.remove(item)
            stdout, err = proc.communicate()
            if proc.returncode:  # bench.py's output ends with the crashed measurement's stderr
                last = (stdout + err).strip().splitlines()[-1:]
                results[name] = dict(error=f"exit {proc.returncode}: {last[0] if last else ''}")
            else:
                with open(out) as f:
                    results[name] = json.load(f)
            print(f"  {name}: {'FAILED' if 'error' in results[name] else 'done'} in {time.time() - t0:.0f} s", flush=True)
    return results


def judge_variants(results, dry):
    """Rows for the table and failed checks."""
    def compiled(name):
        return results[name]['variants'][0] if 'variants' in results.get(name, {}) else None
    base = compiled('standard')
    base_m = base['measurements'][0] if base else None
    rows, failed = [], []
    loss_tol = 1e-4 if dry else 0.05  # bf16 autocast: compiled and eager kernels round differently
    for name, _, _ in VARIANTS:
        r = results[name]
        if 'error' in r:
            failed.append(f"{name}: {r['error']}")
            rows.append([name, 'FAILED: ' + r['error']] + [''] * 8)
            continue
        m, s = compiled(name)['measurements'][0], compiled(name)['summary']
        eager, losses = r['variants'][1]['measurements'][0]['losses'], m['losses']
        finite = all(np.isfinite(losses))
        falling = finite and np.mean(losses[-5:]) < losses[0] - (0.2 if dry else 1.0)
        diff = max(abs(a - b) for a, b in zip(eager, losses))
        ratio = m['ms'] / base_m['ms'] if base_m else None
        flop_ratio = m['flops_per_text'] / base_m['flops_per_text'] if base_m else None
        bar = RATIO_BAR.get(name, DEFAULT_RATIO_BAR)
        if not finite or not falling:
            failed.append(f"{name}: losses not finite and falling ({losses[0]:.3f} -> {np.mean(losses[-5:]):.3f})")
        if diff > loss_tol:
            failed.append(f"{name}: compiled and eager losses differ by {diff:.4f} (> {loss_tol})")
        if ratio is not None and not dry and ratio / flop_ratio > bar:
            failed.append(f"{name}: step-time ratio {ratio:.2f}x is over {bar}x its FLOP ratio {flop_ratio:.2f}x")
        if name == 'standard' and not dry and s['mfu'] is not None and s['mfu'] < MFU_BAR:
            failed.append(f"standard: MFU {100 * s['mfu']:.1f}% is under {100 * MFU_BAR:.0f}%")
        rows.append([name, f"{losses[0]:.3f} -> {np.mean(losses[-5:]):.3f}", f"{diff:.4f}", f"{m['ms']:.1f}",
                     f"{s['text_tps']:,.0f}", f"{100 * s['mfu']:.1f}%" if s['mfu'] is not None else 'n/a',
                     f"{m['peak_mem'] / 2**30:.1f} GiB",
                     f"{ratio:.2f}x" if ratio else 'n/a', f"{flop_ratio:.2f}x" if flop_ratio else 'n/a',
                     f"{ratio / flop_ratio:.2f} (bar {bar})" if ratio else 'n/a'])
    return rows, failed


# ---- the other steps --------------------------------------------------------------------------

def cuda_tests(args):
    cmd = [sys.executable, '-m', 'pytest', '-q', '-rs', 'tests/test_attention.py', '-k', 'cuda', '-p', 'no:cacheprovider']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    summary = next((line for line in reversed(proc.stdout.splitlines()) if re.search(r'\d+ (passed|failed|skipped)', line)),
                   proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else 'no output')
    failures = [line for line in proc.stdout.splitlines() if line.startswith('FAILED')]
    bad = proc.returncode not in (0, 5) or bool(failures)
    return dict(cmd=' '.join(cmd[1:]), summary=summary.strip('= '), failures=failures), \
        [f"CUDA tests: {summary.strip('= ')}"] if bad else []


def training(args):
    rows, failed = judge_variants(run_variants(args), args.dry_run)
    return dict(shape=sizes(args.dry_run), steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                accum=args.accum, rows=rows), failed


def sampling(args):
    """bench.py task=sample: KV cache on/off for standard and reasoning N=1. (rows, failed)."""
    out = os.path.join(args.workdir, 'sample.json')
    shape = sizes(args.dry_run)
    variants = '; '.join(f"mode={m}{',num_reason_tokens=1' if m == 'reasoning' else ''},kv_cache={kv}"
                         for m in ('standard', 'reasoning') for kv in (True, False))
    cmd = [sys.executable, 'bench.py', '--task=sample', '--synthetic=True', '--repeats=1', f'--fresh_process={not args.dry_run}',
           f"--max_new_tokens={20 if args.dry_run else 100}",
           '--temperature=0', '--compile=False', f'--variants={variants}', f'--json_out={out}'] + \
        [f'--{k}={v}' for k, v in shape.items() if k != 'learning_rate']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        return dict(cmd=' '.join(cmd[1:]), rows=[]), [f"sampling: bench.py failed: {proc.stderr.strip()[-500:]}"]
    with open(out) as f:
        report = json.load(f)
    rows, failed = [], []
    base = report['variants'][0]['summary']['ms_median']
    for v in report['variants']:
        s = v['summary']
        rows.append([v['name'], f"{s['ms_median']:.2f}", f"{s['ms_median'] / base:.2f}x", str(v['greedy_identical'])])
        if v['greedy_identical'] not in ('yes', None):
            failed.append(f"sampling {v['name']}: greedy output differs with the KV cache ({v['greedy_identical']})")
    return dict(cmd=' '.join(cmd[1:]), rows=rows), failed


def losses(text):
    return {int(m[1]): float(m[2]) for m in re.finditer(r'^iter (\d+): loss ([-\d.naif]+)', text, re.M)}


def torchrun_resume(args):
    """SIGTERM a 1-rank torchrun run mid-way, resume it, compare with an uninterrupted run."""
    shape = dict(sizes(True), device='cuda' if not args.dry_run else 'cpu')
    base = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1', 'train.py',
            f'--data_dir={args.data_dir}', '--max_iters=16', '--eval_interval=8', '--eval_iters=2', '--log_interval=1',
            '--batch_size=4', '--gradient_accumulation_steps=2', '--warmup_iters=2', '--lr_decay_iters=16',
            '--dtype=float32', f"--backend={'gloo' if args.dry_run else 'nccl'}", '--compile=False',
            '--progress_bar=False'] + [f'--{k}={v}' for k, v in shape.items() if k not in ('dtype', 'learning_rate')]
    runs = {n: os.path.join(args.workdir, f'torchrun-{n}') for n in ('stopped', 'reference')}
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    ref = subprocess.Popen(base + [f"--out_dir={runs['reference']}"], cwd=REPO, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = subprocess.Popen(base + [f"--out_dir={runs['stopped']}"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    seen, sent = [], False
    for line in proc.stdout:
        seen.append(line)
        if not sent and line.startswith('iter 6:'):
            proc.send_signal(signal.SIGTERM)  # a preemption notice to torchrun, which passes it to its worker
            sent = True
    proc.wait()
    resumed = subprocess.run(base + [f"--out_dir={runs['stopped']}", '--init_from=resume'], cwd=REPO, env=env,
                             capture_output=True, text=True)
    ref_out, ref_err = ref.communicate()
    cmd = ' '.join(shlex.quote(a) for a in base[1:])
    first = ''.join(seen)
    if 'stopped by SIGTERM' not in first or resumed.returncode or ref.returncode:
        why = (resumed.stderr or ref_err).strip().splitlines()[-1:] or ['no stop message']
        return dict(cmd=cmd), [f"torchrun resume: {why[0]}"]
    got, want = {**losses(first), **losses(resumed.stdout)}, losses(ref_out)
    stopped = max(losses(first))
    diff = max(abs(got[i] - want[i]) / max(abs(want[i]), 1e-8) for i in want)
    failed = [] if sorted(got) == sorted(want) and diff <= 1e-4 else \
        [f"torchrun resume: losses differ from the uninterrupted run (max relative {diff:.2e})"]
    return dict(cmd=cmd, stopped=stopped, iters=len(got), diff=diff), failed


# ---- the report -------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dry-run', action='store_true', help='the same steps on the CPU at tiny shapes')
    p.add_argument('--report', default=os.path.join(REPO, 'GPU.md'), help='the markdown report to write')
    p.add_argument('--workdir', default='/tmp/gpu_check', help='data, runs, the timing lock and gpu_check.json')
    p.add_argument('--jobs', type=int, default=3, help='variant processes at a time (they compile in parallel)')
    p.add_argument('--batch_size', type=int, default=16, help='sequences per micro-batch (N=3: half)')
    p.add_argument('--accum', type=int, default=2, help='micro-batches per step (N=3: twice)')
    p.add_argument('--steps', type=int, default=30, help='training steps per variant')
    p.add_argument('--warmup', type=int, default=10, help='untimed steps first (compilation)')
    args = p.parse_args()
    if args.dry_run:
        args.batch_size, args.steps, args.warmup = min(args.batch_size, 4), min(args.steps, 12), min(args.warmup, 4)
    elif not torch.cuda.is_available():
        raise SystemExit("error: torch sees no CUDA GPU: run with --dry-run to check the script on the CPU")
    args.data_dir = os.path.join(args.workdir, 'data')
    for old in glob.glob(os.path.join(args.workdir, 'torchrun-*')):  # an earlier check's runs
        shutil.rmtree(old)
    os.makedirs(args.workdir, exist_ok=True)
    t0 = time.time()
    make_data(args.data_dir, **(dict(vocab=512, subset=256, tokens=200_000) if args.dry_run else {}))
    r = dict(command=shlex.join(['python', 'scripts/gpu_check.py', *sys.argv[1:]]), date=time.strftime('%Y-%m-%d'),
             eager_steps=EAGER_STEPS, dry_run=args.dry_run, failed=[],
             machine=reporting.machine('cpu' if args.dry_run else 'cuda'))

    steps = {'cuda_tests': ('CUDA tests', cuda_tests), 'training': (f'training, {len(VARIANTS)} variants', training),
             'sampling': ('sampling', sampling), 'torchrun': ('torchrun SIGTERM and resume', torchrun_resume)}
    for k, (key, (what, step)) in enumerate(steps.items(), 1):
        print(f'{k}/{len(steps)} {what}', flush=True)
        r[key], failed = step(args)
        r['failed'] += failed
    r['seconds'] = time.time() - t0
    path = os.path.join(args.workdir, 'gpu_check.json')
    with open(path, 'w') as f:
        json.dump(r, f, indent=1)
    with open(path) as f:
        report = reporting.gpu_report(json.load(f))
    with open(args.report, 'w') as f:
        f.write(report)
    print(report)
    raise SystemExit(1 if r['failed'] else 0)


if __name__ == '__main__':
    main()
