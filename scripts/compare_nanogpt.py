"""
Speed of this repo's standard-mode training step against karpathy/nanoGPT's, side by side.

    python scripts/compare_nanogpt.py --nanogpt_dir=/path/to/nanoGPT --compile=both

Both models get the CPU recipe's shapes (4 layers, 4 heads, 128 wide, block 64, batch 12,
dropout 0, no bias; vocab 65, which this repo pads to 128 with its two thinking tokens) and
random batches, each drawn inside the timed step (as train.py and nanoGPT's get_batch do). A step
is each repo's own training step: this repo's training.train_step on the run training.set_up
builds (forward, backward, the finite checks, clip, AdamW), and nanoGPT's train.py loop body
(forward, backward, unscale, clip_grad_norm_, AdamW, loss.item() as with its CPU recipe's
log_interval=1); AdamW with lr 1e-3, betas (0.9, 0.99),
weight decay 0.1, grad_clip 1.0. Each measurement runs in a fresh process, alternating between the two repos so
machine noise hits both alike; the report gives median ms/iter (over repeats, each its median step) and the ratio ours / nanoGPT.
No nanoGPT code lives in this repo: point --nanogpt_dir at a checkout (its model.py is enough).
"""

import argparse
import importlib.util
import os
import pickle
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import reporting  # noqa: E402

SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab=65)
OPTIM = dict(learning_rate=1e-3, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0)


def ours_step_fn(torch, compile_model, data_dir):
    import training
    with open(os.path.join(data_dir, 'meta.pkl'), 'wb') as f:  # the dataset's vocab is all set_up reads
        pickle.dump({'vocab_size': SHAPE['vocab']}, f)
    c = {**training.DEFAULTS, **{k: v for k, v in SHAPE.items() if k != 'vocab'}, 'mode': 'standard',
         'data_dir': data_dir, 'device': 'cpu', 'dtype': 'float32', 'compile': bool(compile_model), 'dropout': 0.0,
         'bias': False, 'gradient_accumulation_steps': 1, 'decay_lr': False, 'learning_rate': OPTIM['learning_rate'],
         'beta1': OPTIM['betas'][0], 'beta2': OPTIM['betas'][1], 'weight_decay': OPTIM['weight_decay'],
         'grad_clip': OPTIM['grad_clip']}
    run = training.set_up(c, synthetic=True)

    def step(it):
        run.iter_num = it
        training.train_step(run)
    return step, run.model.config.vocab_size


def nanogpt_step_fn(torch, compile_model, nanogpt_dir):
    # by its path: this repo's model.py is already imported under the name `model`
    spec = importlib.util.spec_from_file_location('nanogpt_model', os.path.join(nanogpt_dir, 'model.py'))
    nanogpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nanogpt)
    gen = torch.Generator().manual_seed(1337)
    model = nanogpt.GPT(nanogpt.GPTConfig(n_layer=SHAPE['n_layer'], n_head=SHAPE['n_head'], n_embd=SHAPE['n_embd'],
                          block_size=SHAPE['block_size'], vocab_size=SHAPE['vocab'], dropout=0.0, bias=False))
    optimizer = model.configure_optimizers(OPTIM['weight_decay'], OPTIM['learning_rate'], OPTIM['betas'], 'cpu')
    step_model = torch.compile(model) if compile_model else model

    def step(it):  # nanoGPT train.py's step on CPU: no autocast, its GradScaler disabled (no CUDA)
        chunk = torch.randint(SHAPE['vocab'], (SHAPE['batch_size'], SHAPE['block_size'] + 1), generator=gen)
        _, loss = step_model(chunk[:, :-1], chunk[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM['grad_clip'])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # its log line, every iteration in the CPU recipe
    return step, model.config.vocab_size


def child(args):
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1337)
    with tempfile.TemporaryDirectory() as tmp:
        n = args.warmup + args.iters
        step, vocab = ours_step_fn(torch, args.compile_model, tmp) if args.impl == 'ours' else \
            nanogpt_step_fn(torch, args.compile_model, args.nanogpt_dir)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            step(i)
            if i >= args.warmup:  # the warmup steps also absorb torch.compile
                times.append((time.perf_counter() - t0) * 1000)
    reporting.emit_result(dict(ms=statistics.median(times), step_ms=times, model_vocab=vocab,
                               threads=torch.get_num_threads(), torch=torch.__version__))


def measure(args, impl, compile_model):
    result, err = reporting.run_child([os.path.abspath(__file__), f'--nanogpt_dir={args.nanogpt_dir}', f'--_impl={impl}',
                                       f'--_compile_model={int(compile_model)}', f'--iters={args.iters}',
                                       f'--threads={args.threads}',
                                       f'--warmup={args.warmup_compiled if compile_model else args.warmup}'])
    if err:
        raise SystemExit(f"error: the {impl} measurement (compile={compile_model}) crashed, {err}")
    return result


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
          f"vocab: ours {first['model_vocab']} (65 + 2 thinking tokens, padded to a multiple of 64), "
          f"nanoGPT {runs['nanogpt', settings[0]][0]['model_vocab']}")
    print(f"command: python {' '.join(sys.argv)}\n")
    rows = []
    for cm in settings:
        (om, olo, ohi), (nm, nlo, nhi) = [(statistics.median(ms), min(ms), max(ms)) for ms in
                                          ([r['ms'] for r in runs[impl, cm]] for impl in ('ours', 'nanogpt'))]
        rows.append(['on' if cm else 'off', f"{om:.2f} ({olo:.2f}-{ohi:.2f})", f"{nm:.2f} ({nlo:.2f}-{nhi:.2f})",
                     f"{om / nm:.3f}"])
    print('\n'.join(reporting.table(['compile', 'ours ms/iter median (min-max)', 'nanoGPT ms/iter median (min-max)',
                                      'ours / nanoGPT'], rows)))


if __name__ == '__main__':
    main()
