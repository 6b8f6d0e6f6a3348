"""
Speed of this repo's standard-mode training step against karpathy/nanoGPT's, side by side.

    python scripts/compare_nanogpt.py --nanogpt_dir=/path/to/nanoGPT --compile=both

Both models get the CPU recipe's shapes (4 layers, 4 heads, 128 wide, block 64, batch 12,
dropout 0, no bias; vocab 65, which this repo pads to 128 with its two thinking tokens) and the
same random batches, made before the timer starts. A step is each repo's own training step:
this repo's train.train_step (forward, backward, the finite checks, clip, AdamW), and nanoGPT's
train.py loop body (forward, backward, unscale, clip_grad_norm_, AdamW, loss.item() as with
its CPU recipe's log_interval=1); AdamW with lr 1e-3, betas (0.9, 0.99), weight decay 0.1,
grad_clip 1.0. Each measurement runs in a fresh process, alternating between the two repos so
machine noise hits both alike; the report gives median ms/iter (over repeats, each its median step) and the ratio ours / nanoGPT.
No nanoGPT code lives in this repo: point --nanogpt_dir at a checkout (its model.py is enough).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab=65)
OPTIM = dict(learning_rate=1e-3, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0)
RESULT_TAG = 'COMPARE_RESULT '


def batches(torch, n, vocab):
    """n (inputs, targets) pairs of random text, the same in both processes."""
    gen = torch.Generator().manual_seed(1337)
    chunks = [torch.randint(vocab, (SHAPE['batch_size'], SHAPE['block_size'] + 1), generator=gen) for _ in range(n)]
    return [(x[:, :-1].contiguous(), x[:, 1:].contiguous()) for x in chunks]


def ours_step_fn(torch, compile_model):
    sys.path.insert(0, REPO)
    import train
    from modes import Mode
    c = {**train.DEFAULTS, **{k: v for k, v in SHAPE.items() if k != 'vocab'}, 'mode': 'standard',
         'dropout': 0.0, 'bias': False, 'beta1': OPTIM['betas'][0], 'beta2': OPTIM['betas'][1]}
    mode = Mode(c, SHAPE['vocab'])
    model = train.new_model(c, mode)
    optimizer = model.configure_optimizers(OPTIM['weight_decay'], OPTIM['learning_rate'], OPTIM['betas'], 'cpu')
    scaler = torch.amp.GradScaler('cpu', enabled=False)  # float32 on CPU, as train.py
    step_model = torch.compile(model) if compile_model else model
    counts = mode.train_counts(c['block_size'], torch.Generator())  # standard mode: all zeros

    def prepare(x, y):
        return mode.train_batch(torch.cat([x, y[:, -1:]], 1), counts)  # the (B, T+1) chunk train.py reads

    def step(batch):
        train.train_step(step_model, optimizer, scaler, [batch], 1, nullcontext(), OPTIM['grad_clip'], False)
    return prepare, step, model.config.vocab_size


def nanogpt_step_fn(torch, compile_model, nanogpt_dir):
    sys.path.insert(0, nanogpt_dir)
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(n_layer=SHAPE['n_layer'], n_head=SHAPE['n_head'], n_embd=SHAPE['n_embd'],
                          block_size=SHAPE['block_size'], vocab_size=SHAPE['vocab'], dropout=0.0, bias=False))
    optimizer = model.configure_optimizers(OPTIM['weight_decay'], OPTIM['learning_rate'], OPTIM['betas'], 'cpu')
    step_model = torch.compile(model) if compile_model else model

    def step(batch):
        # nanoGPT train.py's step on CPU: no autocast, its GradScaler disabled (no CUDA)
        x, y = batch
        _, loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM['grad_clip'])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # its log line, every iteration in the CPU recipe
    return (lambda x, y: (x, y)), step, model.config.vocab_size


def child(args):
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1337)
    if args.impl == 'ours':
        prepare, step, vocab = ours_step_fn(torch, args.compile_model)
    else:
        prepare, step, vocab = nanogpt_step_fn(torch, args.compile_model, args.nanogpt_dir)
    data = [prepare(x, y) for x, y in batches(torch, args.warmup + args.iters, SHAPE['vocab'])]
    times = []
    for i, batch in enumerate(data):
        t0 = time.perf_counter()
        step(batch)
        if i >= args.warmup:  # the warmup steps also absorb torch.compile
            times.append((time.perf_counter() - t0) * 1000)
    print(RESULT_TAG + json.dumps(dict(ms=statistics.median(times), step_ms=times, model_vocab=vocab,
                                       threads=torch.get_num_threads(), torch=torch.__version__)), flush=True)


def measure(args, impl, compile_model):
    cmd = [sys.executable, os.path.abspath(__file__), f'--nanogpt_dir={args.nanogpt_dir}', f'--_impl={impl}',
           f'--_compile_model={int(compile_model)}', f'--iters={args.iters}', f'--threads={args.threads}',
           f'--warmup={args.warmup_compiled if compile_model else args.warmup}']
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"error: the {impl} measurement (compile={compile_model}) crashed, "
                         f"exit code {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--nanogpt_dir', required=True, help="a karpathy/nanoGPT checkout (its model.py is used)")
    p.add_argument('--compile', choices=('off', 'on', 'both'), default='both')
    p.add_argument('--repeats', type=int, default=5, help="fresh-process measurements per repo and compile setting")
    p.add_argument('--iters', type=int, default=20, help="timed steps per measurement")
    p.add_argument('--warmup', type=int, default=5, help="untimed steps first (eager)")
    p.add_argument('--warmup_compiled', type=int, default=10, help="untimed steps first under torch.compile")
    p.add_argument('--threads', type=int, default=0, help="torch threads in both (0 = torch's default)")
    p.add_argument('--_impl', dest='impl', help=argparse.SUPPRESS)
    p.add_argument('--_compile_model', dest='compile_model', type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        return child(args)
    if not os.path.exists(os.path.join(args.nanogpt_dir, 'model.py')):
        raise SystemExit(f"error: no model.py in --nanogpt_dir={args.nanogpt_dir}")

    settings = {'off': [False], 'on': [True], 'both': [False, True]}[args.compile]
    runs = {(impl, cm): [] for impl in ('ours', 'nanogpt') for cm in settings}
    for rep in range(args.repeats):
        for cm in settings:
            # alternate which repo goes first, so neither always runs right after the other
            for impl in (('ours', 'nanogpt') if rep % 2 == 0 else ('nanogpt', 'ours')):
                r = measure(args, impl, cm)
                runs[impl, cm].append(r)
                print(f"[{impl}, compile={cm}] repeat {rep + 1}: {r['ms']:.2f} ms/iter", flush=True)

    first = runs['ours', settings[0]][0]
    print(f"\ntorch {first['torch']}, {first['threads']} threads; {args.repeats} repeats x {args.iters} timed steps; "
          f"vocab: ours {first['model_vocab']} (65 + 2 thinking tokens, padded to 64), "
          f"nanoGPT {runs['nanogpt', settings[0]][0]['model_vocab']}")
    print(f"command: python {' '.join(sys.argv)}\n")
    print("| compile | ours ms/iter median (min-max) | nanoGPT ms/iter median (min-max) | ours / nanoGPT |")
    print("|---|---|---|---|")
    for cm in settings:
        cells = []
        for impl in ('ours', 'nanogpt'):
            ms = [r['ms'] for r in runs[impl, cm]]
            cells.append((statistics.median(ms), min(ms), max(ms)))
        (om, olo, ohi), (nm, nlo, nhi) = cells
        print(f"| {'on' if cm else 'off'} | {om:.2f} ({olo:.2f}-{ohi:.2f}) | {nm:.2f} ({nlo:.2f}-{nhi:.2f}) | {om / nm:.3f} |")


if __name__ == '__main__':
    main()
