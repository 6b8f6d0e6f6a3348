"""
The GPU check: one command that proves the CUDA training path and measures it, and writes GPU.md.

    python scripts/gpu_check.py             # on a CUDA machine: about 8 minutes on one H100/H200
    python scripts/gpu_check.py --dry-run   # the same steps on the CPU at tiny shapes (minutes)

It needs torch, numpy and pytest, and no network (the training data is made here), and runs:
  1. the CUDA tests: FlexAttention against dense masks, forward and backward, every mode and
     variant, fp32 and bf16, and a compiled step free of graph breaks and recompilations
     (pytest tests/test_attention.py -k cuda);
  2. per variant one process, at the GPT-2 124M shape in bf16: a compiled training run whose losses
     must be finite and falling, timed as bench.py times (its measure_train: ms/iter, text tok/s,
     MFU, peak memory, FLOPs), then the same model's first steps eagerly, whose losses must agree
     with the compiled ones within bf16 tolerance. Processes overlap their compilation (--jobs) and
     take turns for the timed steps (a file lock), so every timing has the GPU to itself;
  3. sampling at 124M with bench.py: KV cache on vs off (speed, identical greedy output), and
     reasoning N=1 against standard per generated token;
  4. torchrun --nproc_per_node=1 with NCCL: SIGTERM mid-run, resume, and the loss sequence against
     an uninterrupted run's.
The dry run skips what needs CUDA (the CUDA tests skip themselves, torchrun uses gloo) and so
checks the script itself before a GPU is at hand. Exit code 1 if any check fails.
"""

import argparse
import fcntl
import glob
import json
import os
import pickle
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

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


def make_data(folder, vocab=50257, subset=4096, tokens=2_000_000, seed=0):
    """train.bin / val.bin of token ids that a model can learn within a few steps: each token of a
    random `subset` of the vocab has one successor, taken 90% of the time (else a random one). A
    vocab other than GPT-2's is written to meta.pkl."""
    os.makedirs(folder, exist_ok=True)
    if vocab != 50257:
        with open(os.path.join(folder, 'meta.pkl'), 'wb') as f:
            pickle.dump({'vocab_size': vocab}, f)
    rng = np.random.default_rng(seed)
    ids = rng.choice(vocab, subset, replace=False)
    successor = rng.permutation(subset)
    noise = rng.random(tokens) < 0.1
    random_next = rng.integers(subset, size=tokens)
    seq = np.empty(tokens, dtype=np.int64)
    x = 0
    for i in range(tokens):
        x = random_next[i] if noise[i] else successor[x]
        seq[i] = x
    data = ids[seq].astype(np.uint16)
    split = int(0.9 * tokens)
    data[:split].tofile(os.path.join(folder, 'train.bin'))
    data[split:].tofile(os.path.join(folder, 'val.bin'))


# ---- one variant, in its own process ---------------------------------------------------------

class FileLock:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.f = open(self.path, 'w')
        fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def variant_child(payload):
    """Compiled run (timed under the lock), then the first steps eagerly: a JSON line on stdout."""
    import bench
    import torch
    c = payload['config']
    if c['device'] == 'cpu':  # the dry run: graph capture only (inductor's code generation takes minutes on 2 cores)
        compile_fn = torch.compile
        torch.compile = lambda model, **kw: compile_fn(model, backend='eager', **kw)
    compiled = bench.measure_train(dict(c, compile=True), exclusive=FileLock(payload['lock']))
    if c['device'].startswith('cuda'):
        torch.cuda.empty_cache()
    eager = bench.measure_train(dict(c, compile=False, bench_warmup=0, bench_iters=EAGER_STEPS))
    print('GPU_CHECK ' + json.dumps(dict(compiled=compiled, eager_losses=eager['losses'])), flush=True)


def variant_config(args, overrides, share):
    import bench
    import train
    c = {**train.DEFAULTS, **bench.BENCH_KEYS, **sizes(args.dry_run), **overrides}
    c.update(data_dir=args.data_dir, batch_size=max(1, args.batch_size // share),
             gradient_accumulation_steps=args.accum * share, bias=False, warmup_iters=5,
             lr_decay_iters=1000, min_lr=6e-5, bench_warmup=args.warmup, bench_iters=args.steps - args.warmup)
    train.check_config(c)
    return c


def run_variants(args):
    """{name: result or error} for every variant, --jobs processes at a time."""
    lock = os.path.join(args.workdir, 'timing.lock')
    pending = [(name, variant_config(args, ov, share)) for name, ov, share in VARIANTS]
    running, results = [], {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name, c = pending.pop(0)
            payload = json.dumps(dict(config=c, lock=lock))
            proc = subprocess.Popen([sys.executable, __file__, f'--_variant={payload}'], cwd=REPO, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            running.append((name, proc, time.time()))
        time.sleep(1)
        for item in [r for r in running if r[1].poll() is not None]:
            name, proc, t0 = item
            running.remove(item)
            out, err = proc.communicate()
            lines = [line for line in out.splitlines() if line.startswith('GPU_CHECK ')]
            if proc.returncode or not lines:
                results[name] = dict(error=f"exit {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}",
                                     stderr=err[-4000:])
            else:
                results[name] = json.loads(lines[-1][len('GPU_CHECK '):])
            print(f"  {name}: {'FAILED' if 'error' in results[name] else 'done'} in {time.time() - t0:.0f} s", flush=True)
    return results


def judge_variants(results, dry):
    """Rows for the table and failed checks."""
    import bench
    base = results.get('standard', {}).get('compiled')
    rows, failed = [], []
    loss_tol = 1e-4 if dry else 0.05  # bf16 autocast: compiled and eager kernels round differently
    for name, _, _ in VARIANTS:
        r = results[name]
        if 'error' in r:
            failed.append(f"{name}: {r['error']}")
            rows.append([name, 'FAILED: ' + r['error']] + [''] * 8)
            continue
        m, eager = r['compiled'], r['eager_losses']
        losses = m['losses']
        finite = all(np.isfinite(losses))
        falling = finite and np.mean(losses[-5:]) < losses[0] - (0.2 if dry else 1.0)
        diff = max(abs(a - b) for a, b in zip(eager, losses))
        s = bench.summarize('train', [m], None)
        ratio = m['ms'] / base['ms'] if base else None
        flop_ratio = m['flops_per_text'] / base['flops_per_text'] if base else None
        bar = RATIO_BAR.get(name, DEFAULT_RATIO_BAR)
        ok_ratio = ratio is None or dry or ratio / flop_ratio <= bar
        if not finite or not falling:
            failed.append(f"{name}: losses not finite and falling ({losses[0]:.3f} -> {np.mean(losses[-5:]):.3f})")
        if diff > loss_tol:
            failed.append(f"{name}: compiled and eager losses differ by {diff:.4f} (> {loss_tol})")
        if not ok_ratio:
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

def cuda_tests():
    cmd = [sys.executable, '-m', 'pytest', '-q', '-rs', 'tests/test_attention.py', '-k', 'cuda', '-p', 'no:cacheprovider']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    summary = next((line for line in reversed(proc.stdout.splitlines()) if re.search(r'\d+ (passed|failed|skipped)', line)),
                   proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else 'no output')
    failures = [line for line in proc.stdout.splitlines() if line.startswith('FAILED')]
    return ' '.join(cmd[1:]), summary.strip('= '), failures, proc.returncode not in (0, 5) or bool(failures)


def sampling(args):
    """bench.py task=sample: KV cache on/off for standard and reasoning N=1. (rows, failed)."""
    out = os.path.join(args.workdir, 'sample.json')
    shape = sizes(args.dry_run)
    variants = '; '.join(f"mode={m}{',num_reason_tokens=1' if m == 'reasoning' else ''},kv_cache={kv}"
                         for m in ('standard', 'reasoning') for kv in (True, False))
    cmd = [sys.executable, 'bench.py', '--task=sample', '--synthetic=True', '--repeats=1',
           f"--max_new_tokens={20 if args.dry_run else 100}",
           '--temperature=0', '--compile=False', f'--variants={variants}', f'--json_out={out}'] + \
        [f'--{k}={v}' for k, v in shape.items() if k != 'learning_rate']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        return ' '.join(cmd[1:]), [], [f"sampling: bench.py failed: {proc.stderr.strip()[-500:]}"]
    with open(out) as f:
        report = json.load(f)
    rows, failed = [], []
    base = report['variants'][0]['summary']['ms_median']
    for v in report['variants']:
        s = v['summary']
        rows.append([v['name'], f"{s['ms_median']:.2f}", f"{s['ms_median'] / base:.2f}x", str(v['greedy_identical'])])
        if v['greedy_identical'] not in ('yes', None):
            failed.append(f"sampling {v['name']}: greedy output differs with the KV cache ({v['greedy_identical']})")
    return ' '.join(cmd[1:]), rows, failed


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
        return cmd, {}, [f"torchrun resume: {why[0]}"]
    got, want = {**losses(first), **losses(resumed.stdout)}, losses(ref_out)
    stopped = max(losses(first))
    diff = max(abs(got[i] - want[i]) / max(abs(want[i]), 1e-8) for i in want)
    failed = [] if sorted(got) == sorted(want) and diff <= 1e-4 else \
        [f"torchrun resume: losses differ from the uninterrupted run (max relative {diff:.2e})"]
    return cmd, dict(stopped=stopped, iters=len(got), diff=diff), failed


# ---- the report -------------------------------------------------------------------------------

def table(header, rows):
    return '\n'.join(['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] +
                     ['| ' + ' | '.join(r) + ' |' for r in rows])


def machine(dry):
    import torch
    if dry:
        return f"dry run on the CPU ({platform.processor() or platform.machine()}); torch {torch.__version__}"
    return f"{torch.cuda.get_device_name()}; torch {torch.__version__}, CUDA {torch.version.cuda}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dry-run', action='store_true', help='the same steps on the CPU at tiny shapes')
    p.add_argument('--report', default=os.path.join(REPO, 'GPU.md'), help='the markdown report to write')
    p.add_argument('--workdir', default='/tmp/gpu_check', help='data, runs and the timing lock')
    p.add_argument('--jobs', type=int, default=3, help='variant processes at a time (they compile in parallel)')
    p.add_argument('--batch_size', type=int, default=16, help='sequences per micro-batch (N=3: half)')
    p.add_argument('--accum', type=int, default=2, help='micro-batches per step (N=3: twice)')
    p.add_argument('--steps', type=int, default=30, help='training steps per variant')
    p.add_argument('--warmup', type=int, default=10, help='untimed steps first (compilation)')
    p.add_argument('--_variant', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._variant:
        return variant_child(json.loads(args._variant))
    if args.dry_run:
        args.batch_size, args.steps, args.warmup = min(args.batch_size, 4), min(args.steps, 12), min(args.warmup, 4)
    else:
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("error: torch sees no CUDA GPU: run with --dry-run to check the script on the CPU")
    command = ' '.join(shlex.quote(a) for a in ['python', 'scripts/gpu_check.py', *sys.argv[1:]])
    args.data_dir = os.path.join(args.workdir, 'data')
    for old in glob.glob(os.path.join(args.workdir, 'torchrun-*')):  # an earlier check's runs
        shutil.rmtree(old)
    os.makedirs(args.workdir, exist_ok=True)
    t0 = time.time()
    make_data(args.data_dir, **(dict(vocab=512, subset=256, tokens=200_000) if args.dry_run else {}))
    failed, sections = [], []

    print('1/4 CUDA tests', flush=True)
    cmd, summary, failures, bad = cuda_tests()
    failed += [f"CUDA tests: {summary}"] if bad else []
    sections.append(f"## CUDA tests\n\n`python {cmd}`: {summary}\n" + ''.join(f"\n- {f}" for f in failures))

    print(f'2/4 training, {len(VARIANTS)} variants', flush=True)
    rows, bad = judge_variants(run_variants(args), args.dry_run)
    failed += bad
    c = variant_config(args, {}, 1)
    sections.append(
        f"## Training: compiled, {c['dtype']}, {c['n_layer']} layers x {c['n_embd']}, block {c['block_size']}\n\n"
        f"{args.steps} steps per variant ({args.warmup} untimed), {args.batch_size} sequences x {args.accum} micro-batches "
        f"per step (reasoning N=3: half the sequences, twice the micro-batches); ms/iter is the median timed step "
        f"(bench.measure_train, the GPU to itself); losses: the first step -> the mean of the last 5; eager diff: the "
        f"largest difference of the first {EAGER_STEPS} losses, eager against compiled.\n\n" +
        table(['variant', 'loss', 'eager diff', 'ms/iter', 'text tok/s', 'MFU', 'peak mem', 'time ratio',
               'FLOP ratio', 'time / FLOP ratio'], rows))

    print('3/4 sampling', flush=True)
    cmd, rows, bad = sampling(args)
    failed += bad
    sections.append(f"## Sampling\n\n`python {cmd}`\n\n" + table(['variant', 'ms/token', 'vs first', 'greedy identical'], rows))

    print('4/4 torchrun SIGTERM and resume', flush=True)
    cmd, r, bad = torchrun_resume(args)
    failed += bad
    sections.append(f"## torchrun: SIGTERM mid-run, resume\n\n`python {cmd}`\n\n" +
                    (f"stopped after iter {r['stopped']}, resumed to {r['iters']} iterations; largest relative loss "
                     f"difference to the uninterrupted run {r['diff']:.2e}" if r else 'failed'))

    verdict = 'every check passed' if not failed else 'FAILED:\n' + '\n'.join(f'- {f}' for f in failed)
    report = (f"# GPU check\n\nGenerated by `{command}` on {time.strftime('%Y-%m-%d')}, in {time.time() - t0:.0f} s.\n"
              f"Machine: {machine(args.dry_run)}.\n\n{verdict}\n\n" + '\n\n'.join(sections) + '\n')
    with open(args.report, 'w') as f:
        f.write(report)
    print(report)
    raise SystemExit(1 if failed else 0)


if __name__ == '__main__':
    main()
