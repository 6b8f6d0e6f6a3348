"""
Exact-match accuracy on arithmetic problems (data/arithmetic), by greedy generation with each
run's own inference procedure: pauses after the prompt (standard/pause checkpoints), reflections
after every token (reflection), N reasoning slots after every token (reasoning).

    python scripts/eval_arithmetic.py --out_dir=out-arith-ft --num_pause_tokens=0,1,2,4,8
    python scripts/eval_arithmetic.py --out_dir=out/ablations/arithmetic/reasoning-n1-ft/seed1 --num_reason_tokens=0,1
    python scripts/eval_arithmetic.py --grid=config/ablations/arithmetic.py \
        --num_pause_tokens=0,1,2,4,8 --num_reason_tokens=0,1

One run: loads RUN/ckpt.pt, takes the first max_problems validation problems of the run's dataset
(val.bin + meta.pkl of its data_dir), generates answer_len characters after each prompt
(temperature 0, KV cache, all problems of a batch at once) and counts the answers that match
exactly. Prints the accuracy for each inference setting and writes RUN/accuracy.json.

Inference settings (comma-separated lists; each value is one evaluation):
  num_pause_tokens    <pause> slots after the prompt's '='. Applies to standard- and pause-mode
                      checkpoints (a standard one then meets pauses it never trained with; 0 is the
                      plain standard procedure). Default: the run's num_pause_tokens (its pause
                      finetuning M; 0 for pretraining and standard runs).
  num_reason_tokens   reasoning checkpoints: 0 .. the trained N. Default: the trained N.
  num_reflect_tokens  reflection checkpoints. Default: 1.
A list for another mode than the run's is an error for one run; with --grid each run takes the
lists of its own mode (and reasoning values up to its N), plus its own setting.

--grid=FILE evaluates every finished run of an ablation grid (scripts/ablate.py's format: its run
directories and its notion of finished), and writes into the grid's out_root: accuracy.md (each
run with its own inference, mean ± std over seeds; the robustness curve, accuracy against the
pauses used at inference, as a table; accuracy against reasoning tokens), accuracy.csv (one row
per run and setting) and accuracy_vs_pauses.png. Results already in a run's accuracy.json are
reused while its checkpoint, val.bin and max_problems are unchanged (--force=True redoes them).
"""

import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from configurator import configure  # noqa: E402
from modes import generate  # noqa: E402
import sample  # noqa: E402
import train  # noqa: E402

DEFAULTS = dict(
    out_dir='',  # one run's directory (holding ckpt.pt)
    grid='',  # or an ablation grid file: every finished run of it
    num_pause_tokens='',  # comma-separated, e.g. '0,2,4,8'; '' = the run's own
    num_reason_tokens='',  # comma-separated, e.g. '0,1'; '' = the run's trained N
    num_reflect_tokens='',  # comma-separated; '' = 1
    max_problems=1000,  # the first this many val problems (val.bin is in random order)
    batch_size=500,  # problems generated together
    data_dir='',  # '' = the run's data_dir
    device='cpu',
    force=False,  # re-evaluate even when accuracy.json already has a setting
)
SETTING_OF_MODE = {'standard': 'num_pause_tokens', 'pause': 'num_pause_tokens',
                   'reflection': 'num_reflect_tokens', 'reasoning': 'num_reason_tokens'}
SHORT = {'num_pause_tokens': 'pauses', 'num_reason_tokens': 'N', 'num_reflect_tokens': 'reflections'}
fail = train.fail


# ---- scoring ----------------------------------------------------------------------------------

def score(predictions, answers):
    """
    Exact-match accuracy of predicted answer strings against the true ones (the fixed-width,
    space-padded answers of the records: a prediction counts only if every character matches).
    Returns {'accuracy', 'correct', 'n', 'char_accuracy'}; char_accuracy is the fraction of
    answer characters right, a softer measure of partial progress.
    """
    predictions, answers = list(predictions), list(answers)
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    n = len(answers)
    correct = sum(p == a for p, a in zip(predictions, answers))
    chars = sum(len(a) for a in answers)
    chars_right = sum(sum(x == y for x, y in zip(p, a)) for p, a in zip(predictions, answers))
    return {'accuracy': correct / n if n else 0.0, 'correct': correct, 'n': n,
            'char_accuracy': chars_right / chars if chars else 0.0}


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

def load_problems(data_dir, max_problems, text_vocab):
    """(prompts (n, prompt_len) int64, answer strings, ops, meta) of the first max_problems val problems."""
    meta = train.meta_of(data_dir)
    if not meta:
        fail(f"{data_dir} has no meta.pkl: not a prepared arithmetic dataset (run data/arithmetic/prepare.py)")
    if 'record_len' not in meta:
        fail(f"{data_dir} is not a prompt/answer dataset (its meta.pkl has no record_len): "
             f"evaluate runs trained on data/arithmetic")
    if meta['vocab_size'] != text_vocab:
        fail(f"{data_dir} has a vocab of {meta['vocab_size']} characters, the checkpoint {text_vocab}: "
             f"evaluate on the dataset the run was trained on")
    path = os.path.join(data_dir, 'val.bin')
    if not os.path.exists(path):
        fail(f"{path} not found: run data/arithmetic/prepare.py (with the run's settings) first")
    rlen, plen, alen = meta['record_len'], meta['prompt_len'], meta['answer_len']
    data = np.fromfile(path, dtype=np.uint16)
    if len(data) % rlen or len(data) == 0:
        fail(f"{path} holds {len(data)} tokens, not a whole number of {rlen}-character records: re-run prepare.py")
    records = data.reshape(-1, rlen)[:max_problems].astype(np.int64)
    itos = meta['itos']
    answers = [''.join(itos[i] for i in row[plen:plen + alen]) for row in records]
    ops = [''.join(itos[i] for i in row[:plen]).strip('= 0123456789')[:1] for row in records]
    return torch.from_numpy(records[:, :plen].copy()), answers, ops, meta


def own_setting(config):
    """(setting, value) of a run's own inference: the pauses it was finetuned with (0 for standard
    runs and pause pretraining), its trained N reasoning tokens, or 1 reflection."""
    name = SETTING_OF_MODE[config['mode']]
    return name, {'num_pause_tokens': config['num_pause_tokens'] if config['mode'] == 'pause' else 0,
                  'num_reason_tokens': config['num_reason_tokens'], 'num_reflect_tokens': 1}[name]


def inference_settings(config, c):
    """(setting name, [values]) for this checkpoint: the requested list of its mode, else its own."""
    name = SETTING_OF_MODE[config['mode']]
    values = parse_list(name, c[name])
    other = [k for k in SHORT if k != name and c[k] != '']
    if other and not c['grid']:  # in a grid, each run takes the lists that apply to it
        fail(f"--{other[0]} does not apply to {c['out_dir']}, a {config['mode']}-mode run: use --{name}")
    own = own_setting(config)[1]
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


def inference_mode(config, text_vocab, n_positions, setting, value):
    """The run's mode for generation with one inference setting (sample.py's procedure). A
    standard-mode run evaluated with pauses is run as pause mode: with no pauses the two layouts
    are identical, and <pause> has an embedding in every model."""
    knobs = {'num_reason_tokens': -1, 'num_pause_tokens': -1, 'num_reflect_tokens': 1, setting: value}
    if setting == 'num_pause_tokens' and config['mode'] == 'standard':
        config = {**config, 'mode': 'pause'}
    return sample.inference_mode(knobs, config, text_vocab, n_positions)


def checkpoint_stamp(ckpt_path):
    st = os.stat(ckpt_path)
    return {'ckpt_size': st.st_size, 'ckpt_mtime': st.st_mtime}


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
    acc_path = os.path.join(out_dir, 'accuracy.json')
    stamp = checkpoint_stamp(ckpt_path)
    checkpoint = None
    previous = read_accuracy(acc_path)

    # settings come from the checkpoint's config; read it cheaply from accuracy.json when current
    if previous and all(previous.get(k) == v for k, v in stamp.items()) and 'config' in previous:
        config = {**train.DEFAULTS, **previous['config']}
    else:
        checkpoint = train.load_checkpoint(ckpt_path)
        config = {**train.DEFAULTS, **checkpoint['config']}
        previous = None  # a new checkpoint: old results are stale
    setting, values = inference_settings(config, c)
    data_dir = c['data_dir'] or train.data_dir_of(config)
    if not os.path.isabs(data_dir) and not os.path.exists(data_dir) and os.path.exists(os.path.join(REPO, data_dir)):
        data_dir = os.path.join(REPO, data_dir)  # a run's data_dir is relative to the repo root
    val_path = os.path.join(data_dir, 'val.bin')
    val_stamp = [os.path.getsize(val_path), os.path.getmtime(val_path)] if os.path.exists(val_path) else None
    key = {'data_dir': os.path.abspath(data_dir), 'val_bin': val_stamp, 'max_problems': c['max_problems']}
    done = {}
    if previous and not c['force'] and all(previous.get(k) == v for k, v in key.items()):
        done = {(r['setting'], r['value']): r for r in previous.get('results', [])}
    todo = [v for v in values if (setting, v) not in done]

    if todo:
        if checkpoint is None:
            checkpoint = train.load_checkpoint(ckpt_path)
        text_vocab = checkpoint['text_vocab_size']
        prompts, answers, ops, meta = load_problems(data_dir, c['max_problems'], text_vocab)
        model = train.model_from_checkpoint(checkpoint).to(c['device']).eval()
        iter_num = checkpoint['iter_num']
        del checkpoint
        itos = meta['itos']
        for value in todo:
            mode = inference_mode(config, text_vocab, model.config.n_positions, setting, value)
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

    saved = {k: config[k] for k in train.LAYOUT_KEYS if k in config}
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
                print(f"{out_dir}: {config['mode']} {SHORT[setting]}={r['value']}: accuracy {r['accuracy']:.4f} "
                      f"({r['correct']}/{r['n']}; {ops_shown}), char accuracy {r['char_accuracy']:.4f}")
    return report


# ---- a grid of runs ---------------------------------------------------------------------------

def mean_std(values):
    """(mean, sample std or 0 for one value)."""
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def fmt(values):
    if not values:
        return '–'
    m, s = mean_std(values)
    return f"{100 * m:.1f} ± {100 * s:.1f}" + ('' if len(values) > 1 else ' (1 seed)')


def evaluate_grid(grid_path, c):
    """Evaluate every finished run of a grid; write accuracy.md, accuracy.csv, accuracy_vs_pauses.png."""
    grid_path, cwd = os.path.abspath(grid_path), os.getcwd()
    os.chdir(REPO)  # grid paths are relative to the repo root
    try:
        _evaluate_grid(grid_path, c)
    finally:
        os.chdir(cwd)


def _evaluate_grid(grid_path, c):
    if os.path.join(REPO, 'scripts') not in sys.path:
        sys.path.insert(0, os.path.join(REPO, 'scripts'))
    import ablate  # scripts/ablate.py: the grid format, its run directories, when a run is finished
    grid = ablate.load_grid(grid_path)
    inside = not os.path.relpath(grid_path, REPO).startswith('..')
    shown = os.path.relpath(grid_path, REPO) if inside else grid_path
    rows, missing = [], []  # rows: (variant, seed, run_dir, report)
    for variant in grid['variants']:
        for seed in grid['seeds']:
            run_dir = ablate.run_dir(grid, variant, seed)
            finished = ablate.is_finished(ablate.read_metrics(run_dir))
            if not (finished and os.path.exists(os.path.join(run_dir, 'ckpt.pt'))):
                missing.append(f"{variant} seed {seed}")
                continue
            t0 = time.time()
            report = evaluate_run(run_dir, c, quiet=True)
            shown_acc = ', '.join(f"{SHORT[r['setting']]}={r['value']}: {r['accuracy']:.3f}" for r in report['results'])
            print(f"{variant} seed {seed} ({time.time() - t0:.0f} s): {shown_acc}", flush=True)
            rows.append((variant, seed, run_dir, report))
    if not rows:
        fail(f"no finished runs of {shown} under {grid['out_root']}: run `python scripts/ablate.py {shown}` first")
    out_root = grid['out_root']
    # results[variant][(setting, value)] = [accuracy per seed]
    results, own = {}, {}
    for variant, seed, run_dir, report in rows:
        cfg = {**train.DEFAULTS, **report['config']}
        setting, own_value = own_setting(cfg)
        wanted = set(parse_list(setting, c[setting]) or []) | {own_value}
        own[variant] = (cfg['mode'], setting, own_value)
        for r in report['results']:
            if r['setting'] != setting or r['value'] not in wanted:
                continue
            results.setdefault(variant, {}).setdefault((r['setting'], r['value']), []).append(r)

    # accuracy.csv: one row per run and setting
    with open(os.path.join(out_root, 'accuracy.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['variant', 'seed', 'run_dir', 'mode', 'setting', 'value', 'accuracy', 'correct', 'n',
                    'char_accuracy', 'accuracy_add', 'accuracy_mul'])
        for variant, seed, run_dir, report in rows:
            for r in report['results']:
                if (r['setting'], r['value']) in results.get(variant, {}):
                    w.writerow([variant, seed, run_dir, report['config']['mode'], r['setting'], r['value'],
                                f"{r['accuracy']:.4f}", r['correct'], r['n'], f"{r['char_accuracy']:.4f}",
                                r['per_op'].get('+', ''), r['per_op'].get('*', '')])

    # accuracy.md
    n_problems = rows[0][3]['results'][0]['n'] if rows[0][3]['results'] else 0
    # per-op columns when the problems mix ops
    ops = sorted({op for _, _, _, report in rows for r in report['results'] for op in r['per_op']})
    ops = ops if len(ops) > 1 else []
    per_op_note = f"; {' and '.join(ops)}: the accuracy on each op's problems" if ops else ''
    argv = ' '.join(f"--{k}={c[k]}" for k in ('max_problems', *SHORT) if c[k] != DEFAULTS[k])
    lines = [f"# Arithmetic exact-match accuracy: `{shown}`", '',
             f"Greedy generation on the first {n_problems} val problems; accuracy in %, mean ± std over "
             f"seeds {', '.join(map(str, grid['seeds']))} (sample std){per_op_note}. "
             f"Written by `python scripts/eval_arithmetic.py --grid={shown}{' ' + argv if argv else ''}` "
             f"from the runs' accuracy.json; do not edit by hand.", '',
             "## Each run with its own inference procedure", '',
             f"| variant | mode | inference | accuracy |{''.join(f' {op} |' for op in ops)} seeds |",
             '|---|---|---|---|' + '---|' * len(ops) + '---|']
    for variant in grid['variants']:
        if variant not in own:
            lines.append(f"| {variant} | – | – | not run |{' |' * len(ops)} 0 |")
            continue
        mode, setting, value = own[variant]
        rs = results.get(variant, {}).get((setting, value), [])
        per_op = ''.join(f" {fmt([r['per_op'][op] for r in rs if op in r['per_op']])} |" for op in ops)
        lines.append(f"| {variant} | {mode} | {SHORT[setting]}={value} | {fmt([r['accuracy'] for r in rs])} |"
                     f"{per_op} {len(rs)} |")
    for setting in ('num_pause_tokens', 'num_reason_tokens', 'num_reflect_tokens'):
        variants = [v for v in grid['variants'] if v in own and own[v][1] == setting]
        values = sorted({val for v in variants for (s, val) in results.get(v, {}) if s == setting})
        if len(values) < 2:
            continue
        title = {'num_pause_tokens': 'Robustness: accuracy against the number of pauses at inference',
                 'num_reason_tokens': 'Accuracy against the reasoning tokens used at inference',
                 'num_reflect_tokens': 'Accuracy against the reflection tokens used at inference'}[setting]
        lines += ['', f"## {title}", '']
        if setting == 'num_pause_tokens':
            lines += ["Columns: <pause> slots appended after the prompt when generating. M = the pauses each "
                      "run was finetuned with (standard runs: 0).", '']
        lines.append(f"| variant | trained | {' | '.join(f'{SHORT[setting]}={v}' for v in values)} |")
        lines.append('|---|---|' + '---|' * len(values))
        for v in variants:
            cells = [fmt([r['accuracy'] for r in results[v].get((setting, val), [])]) for val in values]
            lines.append(f"| {v} | {own[v][2]} | {' | '.join(cells)} |")
    if missing:
        lines += ['', f"Not finished (left out): {', '.join(missing)}"]
    with open(os.path.join(out_root, 'accuracy.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    plot_pauses(grid, own, results, os.path.join(out_root, 'accuracy_vs_pauses.png'))
    print('\n'.join(lines))
    print(f"\nwrote {os.path.join(out_root, 'accuracy.md')}, accuracy.csv, accuracy_vs_pauses.png")


def plot_pauses(grid, own, results, path):
    """Accuracy against inference pauses, one line per standard/pause-mode variant (mean ± std)."""
    variants = [v for v in grid['variants'] if v in own and own[v][1] == 'num_pause_tokens']
    if not variants:
        return
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for v in variants:
        pts = sorted((val, [r['accuracy'] for r in rs]) for (s, val), rs in results.get(v, {}).items()
                     if s == 'num_pause_tokens')
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ms = [100 * mean_std(p[1])[0] for p in pts]
        ss = [100 * mean_std(p[1])[1] for p in pts]
        ax.errorbar(xs, ms, yerr=ss, marker='o', capsize=3, label=f"{v} (M={own[v][2]})")
    ax.set_xlabel('pauses after the prompt at inference')
    ax.set_ylabel('exact-match accuracy (%)')
    ax.set_ylim(bottom=0)
    ax.set_title('mean ± std over seeds', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    c = configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if bool(c['out_dir']) == bool(c['grid']):
        fail("give one of --out_dir=RUN_DIR (one run) or --grid=GRID_FILE (every finished run of a grid)")
    if c['max_problems'] < 1 or c['batch_size'] < 1:
        fail("max_problems and batch_size must be at least 1")
    for k in SHORT:
        parse_list(k, c[k])  # fail early on malformed lists
    if c['grid'] and not os.path.exists(c['grid']):
        fail(f"grid file {c['grid']!r} not found")
    with torch.no_grad():  # scoped, so a caller in the same process (the tests) keeps autograd
        if c['grid']:
            evaluate_grid(c['grid'], c)
        else:
            evaluate_run(c['out_dir'], c)


if __name__ == '__main__':
    main()
