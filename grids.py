"""
The ablation-grid file format (scripts/ablate.py runs a grid, scripts/make_results.py reports it).

A grid file is plain Python, like a config:

    base = 'config/train_shakespeare_char_cpu.py'     # the train.py config every run starts from
    common = dict(eval_interval=250)                   # overrides for every run (optional)
    seeds = [1, 2, 3]
    out_root = 'out/ablations/shakespeare_char'        # run r of variant v: <out_root>/<slug(v)>/seed<r>
    variants = {                                       # name -> overrides, in this order
        'standard': dict(mode='standard'),
        'reasoning N=1': dict(mode='reasoning', num_reason_tokens=1),
        'standard, FLOPs of reasoning N=1': dict(mode='standard', flops_budget_of='reasoning N=1'),  # or a list of
                                        # variants of the same training FLOPs, each compared with this run
        'reasoning N=1, finetuned': dict(mode='reasoning', init_from='{out[reasoning N=1]}', learning_rate=1e-4),
    }
    title = 'Tiny Shakespeare'      # optional: the report's section title (default: the file's name)
    baseline = 'standard'           # optional: the variant the others are compared with (default: the first)
    eval_args = '--num_pause_tokens=0,4'  # optional: evaluate with scripts/eval_arithmetic.py --grid=... these
    prepare = ['python data/arithmetic/prepare.py --ops=+,*']  # optional: data commands (default: the base's prepare.py)
    min_effect = 5.0                # optional: the smallest difference worth resolving, stated up front, in
                                    # accuracy points (evaluated grids) or val loss: a comparison within the
                                    # seed spread is resolved when SPREAD x its SE is below it (reporting.compare)

'{out[<variant>]}' in an override is that variant's out_dir for the same seed (pretrain ->
finetune chains); such runs wait for it. Equal FLOPs: flops_budget_of='<variant>' sets this
variant's max_iters and lr_decay_iters (warmup stays) so that its training FLOPs plus those of the
runs it starts from (its init_from chain) match that variant's plus its chain's: for runs from
scratch, the reference's iterations scaled by the ratio of FLOPs per iteration; a finetune from a
cheaper pretraining gets the difference as more finetuning steps. FLOPs per text token are
train.py's own number, computed here without training: the mode's training layout priced by
model.GPT.flops_per_layout, divided by block_size.
"""

import contextlib
import csv
import json
import os
import re
import shlex
from dataclasses import dataclass

from checkpoints import is_finished, read_metrics
from configurator import configure, fail
from modes import INFERENCE_KNOBS, MODE_SPECS
from training import DEFAULTS, check_config, mode_of, new_model

REPO = os.path.dirname(os.path.abspath(__file__))
GRID_KEYS = ('base', 'common', 'seeds', 'out_root', 'variants', 'title', 'baseline', 'eval_args', 'min_effect',
             'prepare')
OPTIONAL = ('common', 'title', 'baseline', 'eval_args', 'min_effect', 'prepare')
RUNNER_KEYS = ('out_dir', 'seed')  # every run gets its own; a grid may not set them
PLACEHOLDER = re.compile(r'\{out\[([^\]]*)\]\}')


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


def shown(path):
    """A path as commands and reports show it: relative to the repo root when inside it."""
    rel = os.path.relpath(os.path.abspath(path), REPO)
    return path if rel.startswith('..') else rel


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
    missing = [k for k in GRID_KEYS if k not in grid and k not in OPTIONAL]
    if missing:
        fail(f"grid file {path} does not set {missing[0]!r}")
    if not isinstance(grid['base'], str) or not os.path.exists(grid['base']):
        fail(f"base config {grid['base']!r} not found (paths are relative to the repo root)")
    seeds = grid['seeds']
    if not isinstance(seeds, (list, tuple)) or not seeds or len(set(seeds)) != len(seeds) \
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        fail(f"seeds must be a non-empty list of distinct ints, got {grid['seeds']!r}")
    if not isinstance(grid['variants'], dict) or not grid['variants']:
        fail("variants must be a non-empty dict of name -> dict of overrides")
    grid = {'common': {}, 'title': os.path.splitext(os.path.basename(path))[0],
            'baseline': next(iter(grid['variants'])), 'eval_args': '', 'min_effect': None, 'prepare': None, **grid,
            'path': os.path.abspath(path)}
    if grid['prepare'] is not None and not (isinstance(grid['prepare'], list) and
                                            all(isinstance(c, str) for c in grid['prepare'])):
        fail(f"prepare must be a list of shell commands, got {grid['prepare']!r}")
    if grid['min_effect'] is not None and not (isinstance(grid['min_effect'], (int, float)) and grid['min_effect'] > 0):
        fail(f"min_effect must be a positive number, got {grid['min_effect']!r}")
    for key in ('out_root', 'title', 'eval_args'):
        if not isinstance(grid[key], str):
            fail(f"{key} must be a string, got {grid[key]!r}")
    if grid['baseline'] not in grid['variants']:
        fail(f"baseline {grid['baseline']!r} is not a variant of {path}")
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


def variant_overrides(grid, name):
    """A variant's overrides on top of the base config: common, then its own (flops_budget_of aside)."""
    return {k: v for k, v in {**grid['common'], **grid['variants'][name]}.items() if k != 'flops_budget_of'}


def variant_config(grid, name):
    """The train.py config of a variant as the grid file states it (placeholders left as they are)."""
    return configure(DEFAULTS, [grid['base'], *(override_arg(k, v) for k, v in
                                                                      variant_overrides(grid, name).items())])


def train_config(grid, name, overrides):
    """The config train.py would run with (out_dir and seed aside), or a one-line error."""
    try:
        config = configure(DEFAULTS, [grid['base'], *(override_arg(k, v)
                                                                           for k, v in overrides.items())])
        check_config(config)
        mode_of(config)  # checks the layout settings
    except SystemExit as e:
        fail(f"variant {name!r}: {str(e).removeprefix('error: ')}")
    except ValueError as e:
        fail(f"variant {name!r}: {e}")
    return config


def flops_per_text_token(config):
    """Training FLOPs per text token of a config, as train.py records them (see the docstring)."""
    mode = mode_of(config)
    return mode.flops_per_text_token(new_model(config, mode), config['block_size'])


def flops_references(overrides):
    """The variants a variant's flops_budget_of names: one, or a list whose training FLOPs agree (the
    first sets the iterations; each is compared with this run)."""
    refs = overrides['flops_budget_of']
    if not (isinstance(refs, str) or isinstance(refs, list) and refs and all(isinstance(r, str) for r in refs)):
        fail(f"flops_budget_of={refs!r} must name a variant, or be a list of variant names")
    return [refs] if isinstance(refs, str) else refs


def flops_per_iter(config):
    """Training FLOPs of one iteration of a config (all micro-batches)."""
    c = config
    return c['gradient_accumulation_steps'] * c['batch_size'] * c['block_size'] * flops_per_text_token(c)


def equal_flops_iters(ref_config, ref_per_iter, config, per_iter, ref_upstream=0.0, upstream=0.0):
    """(max_iters, lr_decay_iters) that give `config` plus the runs it starts from (`upstream`
    training FLOPs) the total training FLOPs of ref_config plus its own (`ref_upstream`); both
    scaled from the reference's, rounded (lr_decay_iters keeps the reference's share of max_iters)."""
    iters = (ref_config['max_iters'] * ref_per_iter + ref_upstream - upstream) / per_iter
    if iters < 1:
        fail(f"the FLOPs budget leaves no iterations ({iters:.2f}): the runs this variant starts from already "
             f"cost more than its reference")
    return round(iters), round(iters * ref_config['lr_decay_iters'] / ref_config['max_iters'])


def plan(grid):
    """(every run of the grid, in an order that runs dependencies first; each variant's config)."""
    variants = grid['variants']
    overrides = {name: variant_overrides(grid, name) for name in variants}
    deps = {name: dependencies(name, overrides[name], variants) for name in variants}
    order = in_dependency_order(variants, deps)
    configs = {name: train_config(grid, name, fill_placeholders(overrides[name], grid, grid['seeds'][0]))
               for name in variants}
    references = {name: flops_references(o) for name, o in variants.items() if 'flops_budget_of' in o}
    budgets = {name: refs[0] for name, refs in references.items()}  # the one whose FLOPs set the iterations
    for name, refs in references.items():
        for ref in refs:
            if ref not in variants or ref in budgets:
                fail(f"variant {name!r}: flops_budget_of={ref!r} must name another variant that has no flops_budget_of")
        if 'max_iters' in variants[name] or 'lr_decay_iters' in variants[name]:
            fail(f"variant {name!r} sets max_iters or lr_decay_iters and flops_budget_of: drop one")
    per_iter = {name: flops_per_iter(configs[name]) for name in variants}

    def upstream(name):
        """Training FLOPs of the runs a finetune starts from (its init_from chain)."""
        source = PLACEHOLDER.findall(str(overrides[name].get('init_from', '')))
        return total(source[0]) if source else 0.0

    def total(name):
        return configs[name]['max_iters'] * per_iter[name] + upstream(name)
    # budgets in an order where a reference and the runs it starts from are final before they are read
    for name in in_dependency_order(variants, {n: deps[n] + ([budgets[n]] if n in budgets else []) for n in variants}):
        if name in budgets:
            ref = budgets[name]
            max_iters, decay_iters = equal_flops_iters(configs[ref], per_iter[ref], configs[name], per_iter[name],
                                                       upstream(ref), upstream(name))
            overrides[name].update(max_iters=max_iters, lr_decay_iters=decay_iters)
            configs[name].update(max_iters=max_iters, lr_decay_iters=decay_iters)
    for name, refs in references.items():  # one run can serve variants of the same training FLOPs
        for ref in refs[1:]:
            if abs(total(ref) / total(refs[0]) - 1) > 0.02:
                fail(f"variant {name!r}: {ref!r} and {refs[0]!r} differ by more than 2% in training FLOPs "
                     f"({total(ref):.3g} vs {total(refs[0]):.3g}): give {ref!r} a run of its own")
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


def select(grid, runs, only):
    """The runs of the variants whose name contains `only`, with the variants they depend on."""
    chosen = {name for name in grid['variants'] if only.lower() in name.lower()}
    if not chosen:
        fail(f"--only={only!r} matches no variant ({', '.join(grid['variants'])})")
    while True:
        more = {dep for run in runs if run.variant in chosen for dep in run.deps} - chosen
        if not more:
            return [run for run in runs if run.variant in chosen]
        chosen |= more


def finished_runs(grid, runs):
    """{variant: [(run, records)]} for the finished runs, in grid order."""
    results = {name: [] for name in grid['variants']}
    for run in runs:
        records = read_metrics(run.out_dir)
        if is_finished(records):
            results[run.variant].append((run, records))
    return results


def write_summary(path, grid, results):
    """summary.csv: a row per finished run (finished_runs), its final eval and its train.py command."""
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


def add_wall_time(out_root, seconds, jobs, machine):
    """Add one invocation's wall time to out_root/budget.json: what running the grid cost on `machine`,
    summed over the invocations that trained (a grid run in pieces, or resumed, counts each piece)."""
    path = os.path.join(out_root, 'budget.json')
    budget = wall_times(out_root) or {'wall_s': 0.0, 'invocations': 0, 'jobs': [], 'machines': []}
    budget = {'wall_s': budget['wall_s'] + seconds, 'invocations': budget['invocations'] + 1,
              'jobs': sorted(set(budget['jobs']) | {jobs}),
              'machines': budget['machines'] + [machine] * (machine not in budget['machines'])}
    os.makedirs(out_root, exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(budget, f)
    os.replace(path + '.tmp', path)


def wall_times(out_root):
    """budget.json of a grid (add_wall_time), or None when it has none."""
    try:
        with open(os.path.join(out_root, 'budget.json')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_csv(path):
    """The rows of a CSV file as dicts, or None when there is no such file."""
    if not os.path.exists(path):
        return None
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def by_variant(grid, rows):
    """{variant: its rows}, the grid's variants first in grid order."""
    out = {}
    for row in rows:
        out.setdefault(row['variant'], []).append(row)
    order = [v for v in grid['variants'] if v in out] + [v for v in out if v not in grid['variants']]
    return {v: out[v] for v in order}


def summary(grid):
    """{variant: its rows of the grid's summary.csv (write_summary)} in grid order, or None when there is none."""
    rows = read_csv(os.path.join(grid['out_root'], 'summary.csv'))
    return None if rows is None else by_variant(grid, rows)


def values(rows, key):
    return [float(r[key]) for r in rows if r[key] != '']


def chain_flops(grid, runs, name):
    """Mean training FLOPs of a variant's runs ({variant: summary rows}) plus those of the runs it
    starts from (its init_from chain): what flops_budget_of equalises; None if a run is missing."""
    if not runs.get(name):
        return None
    source = PLACEHOLDER.findall(str(grid['variants'][name].get('init_from', '')))
    upstream = chain_flops(grid, runs, source[0]) if source else 0.0
    return None if upstream is None else sum(values(runs[name], 'train_flops')) / len(runs[name]) + upstream


def missing_runs(grid, runs):
    """'variant seed s' of every planned run without a row in runs ({variant: rows})."""
    return [f"{v} seed {s}" for v in grid['variants'] for s in grid['seeds']
            if not any(int(r['seed']) == s for r in runs.get(v, []))]


def own_setting(config):
    """(inference knob, value) a run is evaluated with by default: its mode's knob (modes.MODE_SPECS;
    a standard run counts as 0 pauses) at the run's own value (INFERENCE_KNOBS' -1: the config's)."""
    knob = MODE_SPECS[config['mode']].knob
    if knob is None:
        return 'num_pause_tokens', 0
    return knob, config[knob] if INFERENCE_KNOBS[knob] == -1 else INFERENCE_KNOBS[knob]


def own_settings(grid):
    """{variant: (inference knob, value) it is scored with by default}."""
    return {v: own_setting(variant_config(grid, v)) for v in grid['variants']}


def run_or_grid(c, evaluate_run, evaluate_grid):
    """An evaluation script's target: evaluate_run(out_dir, c) for --out_dir, or
    evaluate_grid(grid file, c) for --grid, run in the repo root (grid paths are relative to it)."""
    if c['grid']:
        grid_path = os.path.abspath(c['grid'])
        with contextlib.chdir(REPO):
            evaluate_grid(grid_path, c)
    else:
        evaluate_run(c['out_dir'], c)
