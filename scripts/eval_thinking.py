"""
Compute against quality at inference: a pause or reflection checkpoint evaluated under several
thinking budgets (generation.thinking_budgets).

    python scripts/eval_thinking.py --out_dir=out/ablations/shakespeare_char/reflection-10pct/seed1
    python scripts/eval_thinking.py --grid=config/ablations/shakespeare_char.py

Budgets: no thinking; `fixed` thinking slots after every text token; the entropy policy at each of
`thresholds` with think_max (sample.py's --think_policy=entropy). Each is teacher-forced
(generation.teacher_forced: exactly the decisions sampling makes) on the run's fixed val batches
(the first eval_batches of those every eval uses), cut to `context` text tokens: by default the
most whose layout fits the position table at the largest budget, so that no budget loses context
to cropping and the losses compare. Reports per budget the val loss per text token and the mean
thinking slots per text token. One run: RUN/thinking.csv, .md and .png. --grid: every finished
pause and reflection run of the grid (each run's files, reused while newer than its checkpoint),
then thinking.csv, .md and .png in the grid's out_root, which RESULTS.md shows.
"""

import csv
import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import reporting  # noqa: E402
from checkpoints import is_finished, load_checkpoint, model_from_checkpoint, read_metrics  # noqa: E402
from configurator import configure, fail  # noqa: E402
from dataset import data_dir_of, get_chunk, micro_batch_generator  # noqa: E402
from generation import evaluate_thinking, thinking_budgets  # noqa: E402
from grids import load_grid, run_dir, run_or_grid, shown, variant_config  # noqa: E402
from modes import EVAL_SEED, MODE_SPECS, inference_mode  # noqa: E402
from training import config_of, mode_of  # noqa: E402

DEFAULTS = dict(
    out_dir='',  # one run's directory (holding ckpt.pt)
    grid='',  # or an ablation grid file: its finished pause and reflection runs
    fixed='1,2,4',  # thinking slots after every text token, one budget each
    thresholds='1.0,1.5,2.0,2.5,3.0,3.5',  # entropy thresholds (nats), one budget each
    think_max=4,  # the entropy policy's most slots per token
    eval_batches=20,  # fixed val batches of the run's batch_size
    context=0,  # text tokens per sequence; 0 = the most that fit at the largest budget
    device='cpu',
    force=False,  # redo runs whose thinking.csv is newer than their checkpoint
)
COLUMNS = ['variant', 'seed', 'budget', 'think_threshold', 'think_max', 'context', 'slots_per_token', 'val_loss', 'seconds']
THINKING_MODES = [m for m, s in MODE_SPECS.items() if s.extra_token and not s.every_key]


def numbers(key, text, kind):
    try:
        return [kind(v) for v in text.split(',') if v.strip()]
    except ValueError:
        fail(f"--{key}={text!r} must be a comma-separated list of numbers")


def evaluate_run(out_dir, c, variant='', seed=''):
    """thinking.csv's rows for one run (written with its .md and .png into out_dir)."""
    path = os.path.join(out_dir, 'ckpt.pt')
    if not os.path.exists(path):
        fail(f"no checkpoint at {path}: train the run first (or point --out_dir at a run directory)")
    csv_path = os.path.join(out_dir, 'thinking.csv')
    if not c['force'] and os.path.exists(csv_path) and os.path.getmtime(csv_path) > os.path.getmtime(path):
        return [{**r, 'variant': variant, 'seed': seed} for r in reporting.read_csv(csv_path)]
    checkpoint = load_checkpoint(path)
    config, text_vocab = config_of(checkpoint['config']), checkpoint['text_vocab_size']
    model = model_from_checkpoint(checkpoint).to(c['device']).eval()
    budgets = thinking_budgets(numbers('fixed', c['fixed'], int), numbers('thresholds', c['thresholds'], float), c['think_max'])
    most = max(b['think_max'] for _, b in budgets)
    context = c['context'] or min(config['block_size'], model.config.n_positions // (1 + most))
    rows, chunks, align = [], [], mode_of(config, text_vocab).chunk_align
    for k in range(c['eval_batches']):  # the batches estimate_loss uses, cut to the context
        chunk = get_chunk(data_dir_of(config), 'val', config['batch_size'], config['block_size'],
                          micro_batch_generator(EVAL_SEED, 0, k), align)
        chunks.append(chunk[:, :context + 1].to(c['device']))
    for name, knobs in budgets:
        try:
            mode = inference_mode(config, text_vocab, model.config.n_positions, knobs)
        except ValueError as e:
            fail(f"{out_dir}: {e}")
        t0 = time.time()
        loss, slots = evaluate_thinking(model, mode, chunks)
        rows.append(dict(variant=variant, seed=seed, budget=name, think_threshold=knobs['think_threshold'],
                         think_max=knobs['think_max'], context=context, slots_per_token=f"{slots:.4f}",
                         val_loss=f"{loss:.4f}", seconds=f"{time.time() - t0:.1f}"))
        print(f"{out_dir}: {name}: {slots:.3f} slots per token, val loss {loss:.4f}", flush=True)
    write(out_dir, rows, f"{shown(out_dir)} ({config['mode']}), {context}-token contexts")
    return rows


def write(where, rows, title):
    with open(os.path.join(where, 'thinking.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(where, 'thinking.md'), 'w') as f:
        f.write('\n'.join([f"# Compute against quality: {title}", '', "Written by scripts/eval_thinking.py from "
                           "thinking.csv; do not edit by hand.", '', *reporting.thinking_table(rows)]) + '\n')
    reporting.write_thinking_plot(rows, os.path.join(where, reporting.THINKING_PLOT), title)
    print(f"wrote {shown(os.path.join(where, 'thinking.csv'))}, thinking.md, {reporting.THINKING_PLOT}")


def evaluate_grid(grid_path, c):
    grid = load_grid(grid_path)
    rows = []
    for variant in grid['variants']:
        for seed in grid['seeds']:
            path = run_dir(grid, variant, seed)
            if variant_config(grid, variant)['mode'] in THINKING_MODES and is_finished(read_metrics(path)):
                rows += evaluate_run(path, c, variant, seed)
    if not rows:
        fail(f"no finished pause or reflection runs of {shown(grid_path)} under {grid['out_root']}: "
             f"run `python scripts/ablate.py {shown(grid_path)}` first")
    write(grid['out_root'], rows, f"{grid['title']}, {rows[0]['context']}-token contexts")


def main(argv=None):
    c = configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if bool(c['out_dir']) == bool(c['grid']):
        fail("give one of --out_dir=RUN_DIR (one run) or --grid=GRID_FILE (its pause and reflection runs)")
    if c['eval_batches'] < 1 or c['think_max'] < 0 or c['context'] < 0:
        fail("eval_batches must be >= 1, think_max and context >= 0")
    with torch.no_grad():
        run_or_grid(c, evaluate_run, evaluate_grid)


if __name__ == '__main__':
    main()
