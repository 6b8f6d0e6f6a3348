"""
Run an ablation grid (variants x seeds) of plain train.py commands, then report it.

    python scripts/ablate.py config/ablations/shakespeare_char.py --jobs=2     # run, resume, report
    python scripts/ablate.py config/ablations/shakespeare_char.py --dry_run    # print the commands only
    python scripts/ablate.py config/ablations/shakespeare_char.py --only=reasoning --wandb
    python scripts/ablate.py config/ablations/shakespeare_char.py --report_only

A grid file is plain Python, like a config:

    base = 'config/train_shakespeare_char_cpu.py'     # the train.py config every run starts from
    common = dict(eval_interval=250)                   # overrides for every run (optional)
    seeds = [1, 2, 3]
    out_root = 'out/ablations/shakespeare_char'        # run r of variant v: <out_root>/<slug(v)>/seed<r>
    variants = {                                       # name -> overrides, in this order
        'standard': dict(mode='standard'),
        'reasoning N=1': dict(mode='reasoning', num_reason_tokens=1),
        'standard, FLOPs of reasoning N=1': dict(mode='standard', flops_budget_of='reasoning N=1'),
        'reasoning N=1, finetuned': dict(mode='reasoning', init_from='{out[reasoning N=1]}', learning_rate=1e-4),
    }

Every run is one train.py command, printed before it runs: paste it in the repo root to redo that
run by hand (the grid's paths are relative to the repo root too). Its output goes to
<out_dir>/train.log. A run is finished when its metrics.jsonl (written by train.py at every eval)
ends with the final eval; reruns skip finished runs and resume unfinished ones (--init_from=auto). A crashed run is
reported, its dependents are skipped, the rest of the grid goes on, and the exit code is 1.

'{out[<variant>]}' in an override is that variant's out_dir for the same seed (pretrain ->
finetune chains); such runs wait for it. A variant that sets init_from itself resumes with
--init_from=resume once its own checkpoint exists.

Equal FLOPs: flops_budget_of='<variant>' scales this variant's max_iters and lr_decay_iters
(warmup stays) by the ratio of the two variants' training FLOPs per iteration, so its total
training FLOPs matches that variant's. FLOPs per text token are train.py's own number, computed
here without training: the mode's training layout priced by model.GPT.flops_per_layout
(forward + backward matmul work: 6 FLOPs per block weight per slot, 6 per LM-head weight per
predicted slot, 12 * n_embd * n_layer per visible (query, key) pair), divided by block_size.

--jobs=N runs N at once, each with OMP_NUM_THREADS = max(1, T // N), T = $OMP_NUM_THREADS if
set, else the CPU cores. Outputs in out_root, from every finished run of the grid: summary.csv
(one row per run), results.md (mean +- std over seeds per variant) and val_vs_text_tokens.png,
val_vs_flops.png, val_vs_time.png (mean over seeds per variant, band = min..max over seeds).
"""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import matplotlib
import torch

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import configurator  # noqa: E402
import modes  # noqa: E402
import train  # noqa: E402

GRID_KEYS = ('base', 'common', 'seeds', 'out_root', 'variants')
RUNNER_KEYS = ('out_dir', 'seed')  # every run gets its own; a grid may not set them
PLACEHOLDER = re.compile(r'\{out\[([^\]]*)\]\}')
PLOTS = {  # file -> (metrics.jsonl key on the x axis, axis label)
    'val_vs_text_tokens.png': ('text_tokens', 'text tokens trained on'),
    'val_vs_flops.png': ('train_flops', 'training FLOPs'),
    'val_vs_time.png': ('train_time_s', 'training wall time (s, evals excluded)'),
}


def fail(msg):
    raise SystemExit(f"error: {msg}")


@dataclass
class Run:
    variant: str
    seed: int
    out_dir: str
    args: list  # train.py arguments after the base config, except init_from
    init_from: str  # 'auto', or the variant's own init_from (a finetune)
    deps: list  # variants whose run with this seed must finish first

    @property
    def log(self):
        return os.path.join(self.out_dir, 'train.log')


# ---- the grid ---------------------------------------------------------------------------------

def slug(name):
    """A directory name for a variant: 'reasoning N=1 K=2' -> 'reasoning-n1-k2', '10%' -> '10pct'."""
    s = name.lower().replace('%', 'pct').replace('=', '')
    return re.sub(r'[^a-z0-9.]+', '-', s).strip('-')


def load_grid(path):
    """The grid file's settings, their shape checked (plan() checks them as train.py configs)."""
    namespace = {'__file__': path}
    try:
        with open(path) as f:
            exec(compile(f.read(), path, 'exec'), namespace)
    except OSError:
        fail(f"grid file {path!r} not found")
    except Exception as e:
        fail(f"grid file {path!r} failed: {type(e).__name__}: {e}")
    grid = {k: v for k, v in namespace.items()
            if not k.startswith('_') and not callable(v) and type(v).__name__ != 'module'}
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        fail(f"unknown grid key {unknown[0]!r} in {path} (a grid sets {', '.join(GRID_KEYS)})")
    missing = [k for k in GRID_KEYS if k not in grid and k != 'common']
    if missing:
        fail(f"grid file {path} does not set {missing[0]!r}")
    grid.setdefault('common', {})
    if not isinstance(grid['base'], str) or not os.path.exists(grid['base']):
        fail(f"base config {grid['base']!r} not found (paths are relative to the repo root)")
    if not isinstance(grid['out_root'], str):
        fail(f"out_root must be a path, got {grid['out_root']!r}")
    seeds = grid['seeds']
    if not isinstance(seeds, (list, tuple)) or not seeds or len(set(seeds)) != len(seeds) \
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        fail(f"seeds must be a non-empty list of distinct ints, got {grid['seeds']!r}")
    if not isinstance(grid['variants'], dict) or not grid['variants']:
        fail("variants must be a non-empty dict of name -> dict of overrides")
    for name, overrides in [('common', grid['common']), *grid['variants'].items()]:
        if not isinstance(name, str) or not isinstance(overrides, dict):
            fail(f"variant {name!r}: overrides must be a dict of config keys, got {overrides!r}")
        for key in RUNNER_KEYS:
            if key in overrides:
                fail(f"{name!r} sets {key!r}: the runner sets it for every run")
    if 'flops_budget_of' in grid['common']:
        fail("flops_budget_of belongs in a variant, not in common")
    slugs = {}
    for name in grid['variants']:
        if not slug(name) or slug(name) in slugs:
            fail(f"variant name {name!r} gives the directory {slug(name)!r}, empty or taken by another variant")
        slugs[slug(name)] = name
    return grid


def override_arg(key, value):
    """--key=value that configurator.py reads back as the same value."""
    return f"--{key}={value}" if isinstance(value, str) else f"--{key}={value!r}"


def dependencies(name, overrides, variants):
    """The variants named by '{out[...]}' placeholders in these overrides."""
    deps = []
    for value in overrides.values():
        for dep in PLACEHOLDER.findall(value) if isinstance(value, str) else []:
            if dep not in variants:
                fail(f"variant {name!r} refers to {{out[{dep}]}}, but there is no variant {dep!r}")
            if dep not in deps:
                deps.append(dep)
    return deps


def in_dependency_order(variants, deps):
    """Variant names with every variant after the ones it depends on (grid order otherwise)."""
    ordered, visiting = [], []

    def visit(name):
        if name in ordered:
            return
        if name in visiting:
            fail(f"variants depend on each other in a cycle: {' -> '.join(visiting[visiting.index(name):] + [name])}")
        visiting.append(name)
        for dep in deps[name]:
            visit(dep)
        visiting.pop()
        ordered.append(name)
    for name in variants:
        visit(name)
    return ordered


def run_dir(grid, name, seed):
    return os.path.join(grid['out_root'], slug(name), f'seed{seed}')


def fill_placeholders(overrides, grid, seed):
    return {k: PLACEHOLDER.sub(lambda m: run_dir(grid, m.group(1), seed), v) if isinstance(v, str) else v
            for k, v in overrides.items()}


def train_config(grid, name, overrides):
    """The config train.py would run with (out_dir and seed aside), or a one-line error."""
    try:
        args = [grid['base'], *(override_arg(k, v) for k, v in overrides.items())]
        config = configurator.configure(train.DEFAULTS, args)
        train.check_config(config)
        mode_of(config)  # checks the layout settings
    except SystemExit as e:
        fail(f"variant {name!r}: {str(e).removeprefix('error: ')}")
    except ValueError as e:
        fail(f"variant {name!r}: {e}")
    return config


def mode_of(config):
    """train.py's Mode for a config (a ValueError for bad layout settings)."""
    data_dir = train.data_dir_of(config)
    return modes.Mode(config, train.text_vocab_size_of(data_dir), train.records_of(data_dir))


def flops_per_text_token(config):
    """Training FLOPs per text token of a config, as train.py records them (see the docstring)."""
    mode = mode_of(config)
    return mode.flops_per_text_token(train.new_model(config, mode), config['block_size'])


def equal_flops_iters(ref_config, ref_flops_per_text_token, config, flops_per_text_token):
    """(max_iters, lr_decay_iters) that give `config` the total training FLOPs of ref_config:
    the reference's, scaled by the ratio of training FLOPs per iteration, rounded."""
    def per_iter(c, f):
        return c['gradient_accumulation_steps'] * c['batch_size'] * c['block_size'] * f
    ratio = per_iter(ref_config, ref_flops_per_text_token) / per_iter(config, flops_per_text_token)
    return round(ref_config['max_iters'] * ratio), round(ref_config['lr_decay_iters'] * ratio)


def plan(grid):
    """(every run of the grid, in an order that runs dependencies first; each variant's config)."""
    variants = grid['variants']
    overrides = {name: {**grid['common'], **{k: v for k, v in o.items() if k != 'flops_budget_of'}}
                 for name, o in variants.items()}
    deps = {name: dependencies(name, overrides[name], variants) for name in variants}
    order = in_dependency_order(variants, deps)
    configs = {name: train_config(grid, name, fill_placeholders(overrides[name], grid, grid['seeds'][0]))
               for name in variants}
    for name, o in variants.items():
        if 'flops_budget_of' not in o:
            continue
        ref = o['flops_budget_of']
        if ref not in variants or 'flops_budget_of' in variants[ref]:
            fail(f"variant {name!r}: flops_budget_of={ref!r} must name another variant that has no flops_budget_of")
        if 'max_iters' in o or 'lr_decay_iters' in o:
            fail(f"variant {name!r} sets max_iters or lr_decay_iters and flops_budget_of: drop one")
        max_iters, decay_iters = equal_flops_iters(configs[ref], flops_per_text_token(configs[ref]),
                                                   configs[name], flops_per_text_token(configs[name]))
        overrides[name].update(max_iters=max_iters, lr_decay_iters=decay_iters)
        configs[name].update(max_iters=max_iters, lr_decay_iters=decay_iters)
    runs = []
    for seed in grid['seeds']:  # seed-major: one seed of every variant comes first
        for name in order:
            filled = fill_placeholders(overrides[name], grid, seed)
            init_from = filled.pop('init_from', 'auto')
            out_dir = run_dir(grid, name, seed)
            args = [override_arg(k, v) for k, v in {**filled, 'seed': seed, 'out_dir': out_dir}.items()]
            runs.append(Run(name, seed, out_dir, args, init_from, deps[name]))
    return runs, configs


def command(grid, run, init_from, wandb_group=''):
    args = ['python', 'train.py', grid['base'], *run.args, f'--init_from={init_from}']
    if wandb_group:
        args += ['--wandb_log=True', f'--wandb_group={wandb_group}', f'--wandb_run_name={run.variant}-seed{run.seed}']
    return args


# ---- running ----------------------------------------------------------------------------------

def read_metrics(out_dir):
    """The records of train.py's metrics.jsonl (one per eval), or [] when there is none yet."""
    path = os.path.join(out_dir, 'metrics.jsonl')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def is_finished(records):
    return bool(records) and records[-1]['final']


def last_line(path):
    try:
        with open(path, errors='replace') as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ''
    return lines[-1] if lines else ''


def execute(grid, runs, configs, jobs, wandb_group):
    """Run what is not finished, `jobs` at once, dependencies first. Returns the failures."""
    total_threads = int(os.environ.get('OMP_NUM_THREADS') or 0) or len(os.sched_getaffinity(0))
    threads = max(1, total_threads // jobs)
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads)}
    print(f"{len(runs)} runs, {jobs} at once with {threads} thread(s) each; out_root {grid['out_root']}", flush=True)
    state = {}  # (variant, seed) -> 'ok' or 'failed'
    pending, running, failures = list(runs), [], []
    started = 0

    def label(k, run):
        return f"[{k}/{len(runs)}] {run.variant} seed {run.seed}"

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)  # a preemption notice stops the grid as Ctrl-C does

    try:
        while pending or running:
            for run in list(pending):
                if len(running) >= jobs:
                    break
                dep_states = [state.get((dep, run.seed)) for dep in run.deps]
                if None in dep_states:
                    continue  # a dependency is still pending or running
                pending.remove(run)
                started += 1
                if 'failed' in dep_states:
                    state[(run.variant, run.seed)] = 'failed'
                    failures.append(f"{run.variant} seed {run.seed}: skipped (dependency failed)")
                    print(f"{label(started, run)}: skipped (dependency failed)", flush=True)
                    continue
                records = read_metrics(run.out_dir)
                if is_finished(records):
                    state[(run.variant, run.seed)] = 'ok'
                    planned = configs[run.variant]['max_iters']
                    note = '' if records[-1]['max_iters'] == planned else \
                        f"; note: it ran {records[-1]['max_iters']} iters, the grid now says {planned}: " \
                        f"delete {run.out_dir} to redo it"
                    print(f"{label(started, run)}: skip (finished){note}", flush=True)
                    continue
                resume = run.init_from != 'auto' and os.path.exists(os.path.join(run.out_dir, 'ckpt.pt'))
                cmd = command(grid, run, 'resume' if resume else run.init_from, wandb_group)
                os.makedirs(run.out_dir, exist_ok=True)
                with open(run.log, 'a') as log:
                    log.write(f"$ {shlex.join(cmd)}\n")
                    log.flush()
                    proc = subprocess.Popen([sys.executable, *cmd[1:]], stdout=log, stderr=subprocess.STDOUT, env=env)
                print(f"{label(started, run)}: running\n  {shlex.join(cmd)}", flush=True)
                running.append((proc, run, started, time.time()))
            time.sleep(0.2)
            for item in list(running):
                proc, run, k, t0 = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                records = read_metrics(run.out_dir)
                if proc.returncode == 0 and is_finished(records):
                    state[(run.variant, run.seed)] = 'ok'
                    print(f"{label(k, run)}: done in {time.time() - t0:.0f} s, val {records[-1]['losses']['val']:.4f}",
                          flush=True)
                else:
                    state[(run.variant, run.seed)] = 'failed'
                    why = f"exit {proc.returncode}" if proc.returncode else "exit 0 before the final eval"
                    failures.append(f"{run.variant} seed {run.seed}: CRASHED ({why}, see {run.log}): "
                                    f"{last_line(run.log)}")
                    print(f"{label(k, run)}: CRASHED ({why}, see {run.log})", flush=True)
    except KeyboardInterrupt:
        # stop the running ones cleanly: SIGTERM makes train.py finish its step and save, so a rerun
        # resumes them (a terminal's Ctrl-C reached them too; a second SIGINT would not save)
        for proc, run, _, _ in running:
            proc.terminate()
        for proc, run, _, _ in running:
            proc.wait()
        raise SystemExit(f"interrupted: stopped {len(running)} run(s), each saved at its last step or eval; "
                         f"rerun the same command to resume")
    return failures


# ---- the report -------------------------------------------------------------------------------

def collect(grid, runs):
    """{variant: [(run, records)]} for the finished runs, in grid order."""
    results = {name: [] for name in grid['variants']}
    for run in runs:
        records = read_metrics(run.out_dir)
        if is_finished(records):
            results[run.variant].append((run, records))
    return results


def write_csv(path, grid, results):
    fields = ['variant', 'seed', 'iters', 'val_loss', 'val_clean', 'best_val', 'train_loss', 'text_tokens',
              'train_flops', 'flops_per_text_token', 'train_time_s', 'text_tok_s', 'slot_tok_s', 'out_dir', 'command']
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for name, finished in results.items():
            for run, records in finished:
                last = records[-1]
                writer.writerow({
                    'variant': name, 'seed': run.seed, 'iters': last['iter'], 'val_loss': last['losses']['val'],
                    'val_clean': last['losses'].get('val_clean', ''),
                    'best_val': min(r['losses']['val'] for r in records), 'train_loss': last['losses']['train'],
                    'text_tokens': last['text_tokens'], 'train_flops': last['train_flops'],
                    'flops_per_text_token': last['flops_per_text_token'], 'train_time_s': last['train_time_s'],
                    'text_tok_s': last['text_tok_s'], 'slot_tok_s': last['slot_tok_s'], 'out_dir': run.out_dir,
                    'command': shlex.join(command(grid, run, run.init_from))})


def mean_std(values, fmt):
    if len(values) < 2:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def write_markdown(path, grid, grid_path, runs, configs, results):
    finals = {name: [records[-1] for _, records in finished] for name, finished in results.items()}
    # FLOPs per text token relative to the first standard-mode variant with a finished run
    baseline = next((finals[n][0]['flops_per_text_token'] for n in finals
                     if configs[n]['mode'] == 'standard' and finals[n]), None)
    common = ' '.join(override_arg(k, v) for k, v in grid['common'].items())
    inside = not os.path.relpath(grid_path, REPO).startswith('..')
    shown = os.path.relpath(grid_path, REPO) if inside else grid_path
    lines = [
        f"# Ablation grid `{shown}`",
        "",
        f"Written by `python scripts/ablate.py {shown}` on {datetime.date.today()} ({platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}) from the runs' metrics.jsonl; do not edit by hand.",
        f"Base config `{grid['base']}`{f' with `{common}`' if common else ''}; "
        f"seeds {', '.join(map(str, grid['seeds']))}.",
        "",
        "Val loss is per text token (comparable across modes) at the final eval, mean ± std over the finished seeds; "
        "val clean is pause/reflection evaluated without inserted tokens; best val is the lowest eval of each run. "
        "FLOPs per text token are training FLOPs from the token layout (model.GPT.flops_per_layout)"
        f"{', relative to standard' if baseline else ''}. Train time excludes evals and is as measured: runs "
        "sharing the machine (--jobs > 1) slow each other down.",
        "",
        "| variant | val loss | val clean | best val | seeds | iters | text tokens | FLOPs/text token | train FLOPs "
        "| train time (s) | text tok/s | slot tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, recs in finals.items():
        if not recs:
            lines.append(f"| {name} | no finished run | | | 0 | | | | | | | |")
            continue
        clean = [r['losses']['val_clean'] for r in recs if 'val_clean' in r['losses']]
        fptt = recs[0]['flops_per_text_token']
        relative = f" ({fptt / baseline:.2f}×)" if baseline else ''
        best = [min(r['losses']['val'] for r in records) for _, records in results[name]]
        lines.append(' | '.join([
            f"| {name}", mean_std([r['losses']['val'] for r in recs], '{:.4f}'),
            mean_std(clean, '{:.4f}') if clean else '', mean_std(best, '{:.4f}'), str(len(recs)),
            str(recs[0]['iter']), f"{recs[0]['text_tokens']:,}", f"{fptt / 1e6:.2f} M{relative}",
            f"{recs[0]['train_flops']:.3g}", mean_std([r['train_time_s'] for r in recs], '{:.1f}'),
            mean_std([r['text_tok_s'] for r in recs], '{:,.0f}'), mean_std([r['slot_tok_s'] for r in recs], '{:,.0f}'),
        ]) + ' |')
    missing = [f"{run.variant} seed {run.seed}" for run in runs
               if not any(r is run for r, _ in results[run.variant])]
    if missing:
        lines += ["", f"Not finished (left out above): {', '.join(missing)}."]
    lines += ["", "Plots: `val_vs_text_tokens.png`, `val_vs_flops.png`, `val_vs_time.png` (mean over seeds, band = "
              "min..max over seeds).", "", "## Commands", "",
              "The first seed of each variant, run in the repo root; other seeds differ only in --seed and --out_dir, "
              "and every run's command is in `summary.csv`.", "", "```"]
    first_seed = grid['seeds'][0]
    lines += [shlex.join(command(grid, run, run.init_from)) for run in runs if run.seed == first_seed]
    lines += ["```", ""]
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return lines


def curve(finished, key):
    """(x, mean val, min val, max val) over seeds at the evals every seed has, iter 0 left out
    (the loss at initialisation says nothing about a variant and squashes the differences)."""
    by_iter = [{r['iter']: r for r in records} for _, records in finished]
    iters = sorted(set.intersection(*(set(b) for b in by_iter)) - {0})
    x = [statistics.mean(b[i][key] for b in by_iter) for i in iters]
    vals = [[b[i]['losses']['val'] for b in by_iter] for i in iters]
    return x, [statistics.mean(v) for v in vals], [min(v) for v in vals], [max(v) for v in vals]


def write_plots(out_root, grid_name, results):
    for filename, (key, xlabel) in PLOTS.items():
        fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
        tops, bottoms = [], []
        for name, finished in results.items():
            if not finished:
                continue
            x, mean, lo, hi = curve(finished, key)
            line, = ax.plot(x, mean, marker='.', label=f"{name} ({len(finished)} seed{'s' * (len(finished) > 1)})")
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            # y range: the last two thirds of each curve, where the variants separate
            tail = [v for xi, v in zip(x, hi) if xi >= x[-1] / 3] or hi
            tops.append(max(tail))
            bottoms.append(min(lo))
        if tops:
            pad = 0.05 * (max(tops) - min(bottoms)) or 0.01
            ax.set_ylim(min(bottoms) - pad, max(tops) + pad)
        ax.set_xlabel(xlabel)
        ax.set_ylabel('val loss per text token')
        ax.set_title(f"{grid_name}: mean over seeds, band = min..max")
        ax.grid(alpha=0.3)
        if tops:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_root, filename))
        plt.close(fig)


def report(grid, grid_path, runs, configs):
    results = collect(grid, runs)
    os.makedirs(grid['out_root'], exist_ok=True)
    write_csv(os.path.join(grid['out_root'], 'summary.csv'), grid, results)
    lines = write_markdown(os.path.join(grid['out_root'], 'results.md'), grid, grid_path, runs, configs, results)
    write_plots(grid['out_root'], os.path.splitext(os.path.basename(grid_path))[0], results)
    print('\n'.join(line for line in lines if line.startswith('|')))
    print(f"wrote summary.csv, results.md and {', '.join(PLOTS)} in {grid['out_root']}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('grid', help='grid file, e.g. config/ablations/shakespeare_char.py')
    p.add_argument('--jobs', type=int, default=1, help='runs at once (default 1)')
    p.add_argument('--only', default='', help='only the variants whose name contains this (and their dependencies)')
    p.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
    p.add_argument('--report_only', action='store_true', help='write the report from the runs there are')
    p.add_argument('--wandb', action='store_true', help='log to wandb, the grid as one group')
    args = p.parse_args()
    if args.jobs < 1:
        fail(f"--jobs must be at least 1, got {args.jobs}")
    grid_path = os.path.abspath(args.grid)
    os.chdir(REPO)  # grid paths and the printed commands are relative to the repo root
    grid = load_grid(grid_path)
    runs, configs = plan(grid)
    if args.report_only:
        report(grid, grid_path, runs, configs)
        return
    chosen = {name for name in grid['variants'] if args.only.lower() in name.lower()}
    if not chosen:
        fail(f"--only={args.only!r} matches no variant ({', '.join(grid['variants'])})")
    while True:  # with the variants they depend on
        more = {dep for run in runs if run.variant in chosen for dep in run.deps} - chosen
        if not more:
            break
        chosen |= more
    selected = [run for run in runs if run.variant in chosen]
    group = os.path.splitext(os.path.basename(grid_path))[0] if args.wandb else ''
    if args.dry_run:
        for k, run in enumerate(selected, 1):
            status = 'skip (finished)' if is_finished(read_metrics(run.out_dir)) else 'would run'
            cmd = command(grid, run, run.init_from, group)
            print(f"[{k}/{len(selected)}] {run.variant} seed {run.seed}: {status}\n  {shlex.join(cmd)}")
        return
    failures = execute(grid, selected, configs, args.jobs, group)
    report(grid, grid_path, runs, configs)
    if failures:
        print(f"{len(failures)} run(s) failed:\n" + '\n'.join(f"  {f}" for f in failures))
        sys.exit(1)


if __name__ == '__main__':
    main()
