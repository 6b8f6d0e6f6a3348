"""
Exact-match accuracy on arithmetic problems (data/arithmetic), by greedy generation with each
run's own inference procedure: pauses after the prompt (standard/pause checkpoints), reflections
after every token (reflection), N reasoning slots after every token (reasoning).

    python scripts/eval_arithmetic.py --out_dir=out-arith-ft --num_pause_tokens=0,1,2,4,8
    python scripts/eval_arithmetic.py --out_dir=out/ablations/arithmetic/reasoning-n1-ft/seed1 --num_reason_tokens=0,1
    python scripts/eval_arithmetic.py --grid=config/ablations/arithmetic.py \
        --num_pause_tokens=0,1,2,4,8 --num_reason_tokens=0,1

One run: loads RUN/ckpt.pt, generates answer_len characters greedily (KV cache, a batch of
problems at once) after each of the first max_problems val prompts of the run's dataset, counts the
exact matches per inference setting, prints them and writes RUN/accuracy.json.

Inference settings, comma-separated lists (each value is one evaluation) of modes.INFERENCE_KNOBS:
num_pause_tokens (<pause> slots after the prompt; standard and pause runs; default the run's
finetuning M, 0 for other runs), num_reason_tokens (reasoning runs, 0 .. the trained N; default N),
num_reflect_tokens (reflection runs; default 1). A list for another mode is an error for one run;
with --grid each run takes the list of its own mode (reasoning values up to its N) and its own setting.

--grid=FILE evaluates every finished run of an ablation grid (grids.py) and writes into its
out_root accuracy.csv (one row per run and setting), then from it accuracy.md and
accuracy_vs_thinking.png (reporting.accuracy_section, as in RESULTS.md). Results already in a run's
accuracy.json are reused while its checkpoint, val.bin and max_problems are unchanged
(--force=True redoes them).

--offset=j (one run): each problem is preceded by the last j characters of another record, so it
starts at position j instead of 0 (RUN/accuracy_offset<j>.json). A model that relies on learned
absolute positions (every record of its training at a multiple of the record length) fails at
offsets it never saw; docs/pilots.md.
"""

import csv
import json
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
from dataset import data_dir_of, load_problems, score  # noqa: E402
from grids import load_grid, own_setting, run_dir, run_or_grid, shown  # noqa: E402
from generation import generate  # noqa: E402
from modes import LAYOUT_KEYS, inference_mode  # noqa: E402
from reporting import SHORT  # noqa: E402
from training import config_of  # noqa: E402

DEFAULTS = dict(
    out_dir='',  # one run's directory (holding ckpt.pt)
    grid='',  # or an ablation grid file: every finished run of it
    num_pause_tokens='',  # comma-separated, e.g. '0,2,4,8'; '' = the run's own
    num_reason_tokens='',  # comma-separated, e.g. '0,1'; '' = the run's trained N
    num_reflect_tokens='',  # comma-separated; '' = 1
    max_problems=1000,  # the first this many val problems (val.bin is in random order)
    offset=0,  # each problem preceded by the last `offset` characters of another: it starts at that position
    batch_size=500,  # problems generated together
    data_dir='',  # '' = the run's data_dir
    device='cpu',
    force=False,  # re-evaluate even when accuracy.json already has a setting
)


def parse_list(key, raw):
    """'0,2,4' -> [0, 2, 4]; '' -> None (the run's own setting)."""
    if raw in ('', None):
        return None
    try:
        values = [int(v) for v in str(raw).replace(' ', '').strip('()[]').split(',') if v != '']
    except ValueError:
        fail(f"--{key}={raw!r} must be comma-separated integers, e.g. --{key}=0,2,4")
    if not values or min(values) < 0:
        fail(f"--{key}={raw!r} must be comma-separated integers >= 0")
    return sorted(set(values))


# ---- one run ----------------------------------------------------------------------------------

def inference_settings(config, c):
    """(setting name, [values]) for this checkpoint: the requested list of its mode, else its own."""
    name, own = own_setting(config)
    values = parse_list(name, c[name])
    other = [k for k in SHORT if k != name and c[k] != '']
    if other and not c['grid']:  # in a grid, each run takes the lists that apply to it
        fail(f"--{other[0]} does not apply to {c['out_dir']}, a {config['mode']}-mode run: use --{name}")
    if values is None:
        values = [own]
    elif c['grid']:  # the table of each run's own inference needs this one too
        values = sorted(set(values) | {own})
    if name == 'num_reason_tokens' and c['grid']:  # runs of other N take the values that apply
        values = [v for v in values if v <= config['num_reason_tokens']]
    if name == 'num_reason_tokens' and max(values) > config['num_reason_tokens']:
        fail(f"num_reason_tokens={max(values)}: the run was trained with N={config['num_reason_tokens']}, "
             f"evaluate with 0..{config['num_reason_tokens']}")
    return name, values


def generation_mode(config, text_vocab, n_positions, setting, value):
    """The run's mode for generation with one inference setting (sample.py's procedure). A
    standard-mode run evaluated with pauses is run as pause mode: with no pauses the two layouts
    are identical, and <pause> has an embedding in every model."""
    if setting == 'num_pause_tokens' and config['mode'] == 'standard':
        config = {**config, 'mode': 'pause'}
    try:
        return inference_mode(config, text_vocab, n_positions, {setting: value})
    except ValueError as e:
        fail(str(e))


def read_accuracy(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def evaluate_run(out_dir, c, quiet=False):
    """Evaluate one run for every inference setting asked for; returns (and writes) accuracy.json's dict."""
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    if not os.path.exists(ckpt_path):
        fail(f"no checkpoint at {ckpt_path}: train the run first (or point --out_dir at a run directory)")
    acc_path = os.path.join(out_dir, 'accuracy.json' if not c['offset'] else f"accuracy_offset{c['offset']}.json")
    stamp = {'ckpt_size': os.path.getsize(ckpt_path), 'ckpt_mtime': os.path.getmtime(ckpt_path)}
    checkpoint, previous = None, read_accuracy(acc_path)

    # settings come from the checkpoint's config; read it cheaply from accuracy.json when current
    if previous and all(previous.get(k) == v for k, v in stamp.items()) and 'config' in previous:
        config = config_of(previous['config'])
    else:
        checkpoint = load_checkpoint(ckpt_path)
        config = config_of(checkpoint['config'])
        previous = None  # a new checkpoint: old results are stale
    setting, values = inference_settings(config, c)
    data_dir = c['data_dir'] or data_dir_of(config)
    if not os.path.isabs(data_dir) and not os.path.exists(data_dir) and os.path.exists(os.path.join(REPO, data_dir)):
        data_dir = os.path.join(REPO, data_dir)  # a run's data_dir is relative to the repo root
    val_path = os.path.join(data_dir, 'val.bin')
    val_stamp = [os.path.getsize(val_path), os.path.getmtime(val_path)] if os.path.exists(val_path) else None
    key = {'data_dir': os.path.abspath(data_dir), 'val_bin': val_stamp, 'max_problems': c['max_problems'],
           'offset': c['offset']}
    done = {}
    if previous and not c['force'] and all(previous.get(k) == v for k, v in key.items()):
        done = {(r['setting'], r['value']): r for r in previous.get('results', [])}
    todo = [v for v in values if (setting, v) not in done]

    if todo:
        if checkpoint is None:
            checkpoint = load_checkpoint(ckpt_path)
        text_vocab = checkpoint['text_vocab_size']
        prompts, answers, ops, meta = load_problems(data_dir, c['max_problems'], text_vocab, c['offset'])
        model = model_from_checkpoint(checkpoint).to(c['device']).eval()
        iter_num = checkpoint['iter_num']
        del checkpoint
        itos = meta['itos']
        for value in todo:
            mode = generation_mode(config, text_vocab, model.config.n_positions, setting, value)
            t0 = time.time()
            predictions = []
            for i in range(0, len(prompts), c['batch_size']):
                batch = prompts[i:i + c['batch_size']].to(c['device'])
                out = generate(model, mode, batch, meta['answer_len'], temperature=0, kv_cache=True)
                predictions += [''.join(itos[t] for t in row) for row in out[:, batch.size(1):].tolist()]
            result = {'setting': setting, 'value': value, **score(predictions, answers),
                      'per_op': {op: score([p for p, o in zip(predictions, ops) if o == op],
                                           [a for a, o in zip(answers, ops) if o == op])['accuracy']
                                 for op in sorted(set(ops))},
                      'examples': [f"{''.join(itos[t] for t in prompts[j].tolist())}{predictions[j]!r} "
                                   f"(true {answers[j]!r})" for j in range(min(3, len(answers)))],
                      'seconds': round(time.time() - t0, 3)}
            done[(setting, value)] = result
    else:
        iter_num = previous.get('iter_num')

    saved = {k: config[k] for k in LAYOUT_KEYS if k in config}
    saved.update({k: config[k] for k in ('dataset', 'data_dir', 'init_from', 'seed', 'block_size', 'max_iters')})
    report = {'out_dir': out_dir, **stamp, 'iter_num': iter_num, **key, 'config': saved,
              'results': sorted(done.values(), key=lambda r: (r['setting'], r['value']))}
    if todo:
        tmp = acc_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, acc_path)
    if not quiet:
        for r in report['results']:
            if r['setting'] == setting and r['value'] in values:
                ops_shown = ', '.join(f"{op} {a:.3f}" for op, a in r['per_op'].items())
                at = f" at offset {c['offset']}" if c['offset'] else ''
                print(f"{out_dir}: {config['mode']} {SHORT[setting]}={r['value']}{at}: accuracy {r['accuracy']:.4f} "
                      f"({r['correct']}/{r['n']}; {ops_shown}), char accuracy {r['char_accuracy']:.4f}")
    return report


# ---- a grid of runs ---------------------------------------------------------------------------

def evaluate_grid(grid_path, c):
    """Evaluate every finished run of a grid (grid_path absolute, cwd the repo root); write
    accuracy.csv, then accuracy.md and accuracy_vs_thinking.png from it."""
    grid = load_grid(grid_path)
    out_root, rows = grid['out_root'], []
    for variant in grid['variants']:
        for seed in grid['seeds']:
            path = run_dir(grid, variant, seed)
            if not (is_finished(read_metrics(path)) and os.path.exists(os.path.join(path, 'ckpt.pt'))):
                continue
            t0 = time.time()
            report = evaluate_run(path, c, quiet=True)
            shown_acc = ', '.join(f"{SHORT[r['setting']]}={r['value']}: {r['accuracy']:.3f}" for r in report['results'])
            print(f"{variant} seed {seed} ({time.time() - t0:.0f} s): {shown_acc}", flush=True)
            setting, own = own_setting(config_of(report['config']))
            wanted = set(parse_list(setting, c[setting]) or []) | {own}
            rows += [[variant, seed, path, report['config']['mode'], r['setting'], r['value'], f"{r['accuracy']:.4f}",
                      r['correct'], r['n'], f"{r['char_accuracy']:.4f}", r['per_op'].get('+', ''), r['per_op'].get('*', ''),
                      r['seconds']]
                     for r in report['results'] if r['setting'] == setting and r['value'] in wanted]
    if not rows:
        fail(f"no finished runs of {shown(grid_path)} under {out_root}: run "
             f"`python scripts/ablate.py {shown(grid_path)}` first")
    with open(os.path.join(out_root, 'accuracy.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['variant', 'seed', 'run_dir', 'mode', 'setting', 'value', 'accuracy', 'correct', 'n',
                    'char_accuracy', 'accuracy_add', 'accuracy_mul', 'seconds'])
        w.writerows(rows)
    csv_rows = reporting.read_csv(os.path.join(out_root, 'accuracy.csv'))
    argv = ' '.join(f"--{k}={c[k]}" for k in ('max_problems', *SHORT) if c[k] != DEFAULTS[k])
    lines, _ = reporting.accuracy_section(grid, csv_rows)
    lines = [f"# Arithmetic exact-match accuracy: `{shown(grid_path)}`", '',
             f"Written by `python scripts/eval_arithmetic.py --grid={shown(grid_path)}{' ' + argv if argv else ''}` "
             f"from accuracy.csv; do not edit by hand.", '', *lines]
    with open(os.path.join(out_root, 'accuracy.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    reporting.write_accuracy_plot(grid, csv_rows, os.path.join(out_root, reporting.ACCURACY_PLOT))
    print('\n'.join(lines))
    print(f"\nwrote {os.path.join(out_root, 'accuracy.md')}, accuracy.csv, {reporting.ACCURACY_PLOT}")


def main(argv=None):
    c = configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if bool(c['out_dir']) == bool(c['grid']):
        fail("give one of --out_dir=RUN_DIR (one run) or --grid=GRID_FILE (every finished run of a grid)")
    if c['max_problems'] < 1 or c['batch_size'] < 1:
        fail("max_problems and batch_size must be at least 1")
    if c['offset'] and c['grid']:
        fail("--offset is a diagnostic of one run (--out_dir): a grid's tables are at offset 0")
    for k in SHORT:
        parse_list(k, c[k])  # fail early on malformed lists
    with torch.no_grad():  # scoped, so a caller in the same process (the tests) keeps autograd
        run_or_grid(c, evaluate_run, evaluate_grid)


if __name__ == '__main__':
    main()
