"""
Write RESULTS.md from the finished ablation grids: tables, plots, commands, the machine, whether
each difference exceeds the seed spread, and what testing the same claims at GPT-2 124M would cost.

    python scripts/make_results.py                        # after both grids (README, "Ablations and results")
    python scripts/make_results.py --allow_missing        # a grid not run yet gets a "not run" section
    python scripts/make_results.py --shakespeare=/elsewhere/out/ablations/shakespeare_char --assumed_mfu=0.35

Inputs, per grid: the grid file (--shakespeare_grid, --arithmetic_grid: variant order, seeds,
flops_budget_of pairs, base config) and its out_root (--shakespeare, --arithmetic; default: the
grid's out_root) holding what scripts/ablate.py wrote (summary.csv, results.md, plots) and, for
arithmetic, what `scripts/eval_arithmetic.py --grid=...` wrote (accuracy.md, accuracy.csv,
accuracy_vs_pauses.png, and each run's accuracy.json). A grid without summary.csv is an error
unless --allow_missing. The GPT-2 124M estimate comes from the OWT config files alone.

Outputs: RESULTS.md (--output) and the plots, copied to results/ (--results_dir) as
<grid name>_<plot>.png. No number in RESULTS.md is typed in this script: each is read from those
files or computed from them and the configs; the one hand-written paragraph has no digits.

The seed-spread screen: a difference of means counts as beyond the seed spread when it exceeds
SPREAD x its standard error, sqrt(s_a^2/n_a + s_b^2/n_b) with sample stds s (Welch's t, |t| > SPREAD).
With three seeds this is a screen, not a significance test.
"""

import argparse
import csv
import datetime
import math
import os
import platform
import shlex
import shutil
import statistics
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'scripts'))
import ablate  # noqa: E402
import configurator  # noqa: E402
import eval_arithmetic  # noqa: E402
import train  # noqa: E402
from modes import Mode  # noqa: E402

SPREAD = 2  # beyond the seed spread: |difference of means| > SPREAD standard errors of the difference
OWT_CONFIGS = ('config/train_gpt2.py', 'config/pause_owt.py', 'config/reflection_owt.py', 'config/reasoning_owt.py')
ARITHMETIC_EVAL_ARGS = '--num_pause_tokens=0,1,2,4,8 --num_reason_tokens=0,1'  # the README's eval command
fail = ablate.fail

INTERPRETATION = """\
*Interpretation (hand-written, the same whatever the runs say):* thinking tokens change two things
at once, the compute spent per text token and what the model can attend to, so a lower loss at
equal text tokens is not yet evidence that the extra slots carry useful computation; standard
given the same training FLOPs as more iterations is the fairer test of that. Runs this small and
this short sit where the loss still falls fast, far from the scale at which the claims were made,
so neither a gain nor a loss here settles them. A difference counts only when it exceeds the
spread across seeds; with few seeds that screen is coarse, and a difference within the spread
means not resolved, not no effect. On arithmetic, exact-match accuracy of a tiny model on short
problems shows whether pauses can be used at all, not how much they help a large model."""


# ---- reading the grids ------------------------------------------------------------------------

def shown(path):
    """A path as RESULTS.md shows it: relative to the repo root when inside it."""
    rel = os.path.relpath(os.path.abspath(path), REPO)
    return path if rel.startswith('..') else rel


def load(grid_path, out_root, args):
    """(grid, out_root, {variant: [summary.csv rows]} in grid order, or None when not run)."""
    grid = ablate.load_grid(grid_path)
    out_root = out_root or grid['out_root']
    summary = os.path.join(out_root, 'summary.csv')
    if not os.path.exists(summary):
        if args.allow_missing:
            return grid, out_root, None
        fail(f"no summary.csv in {out_root}: run `python scripts/ablate.py {shown(grid_path)} --jobs={args.jobs}` "
             f"first (or pass --allow_missing)")
    runs = {}
    with open(summary, newline='') as f:
        for row in csv.DictReader(f):
            runs.setdefault(row['variant'], []).append(row)
    if runs and not set(runs) & set(grid['variants']):
        fail(f"{summary} has none of the variants of {shown(grid_path)}: pass the grid file it was made from")
    order = [v for v in grid['variants'] if v in runs] + [v for v in runs if v not in grid['variants']]
    return grid, out_root, {v: runs[v] for v in order}


def values(rows, key):
    return [float(r[key]) for r in rows if r[key] != '']


def missing_runs(grid, runs):
    return [f"{v} seed {s}" for v in grid['variants'] for s in grid['seeds']
            if not any(int(r['seed']) == s for r in runs.get(v, []))]


def written_by_line(out_root, filename):
    """The line in which ablate.py / eval_arithmetic.py recorded how and where they wrote `filename`."""
    try:
        with open(os.path.join(out_root, filename)) as f:
            return next((line.strip() for line in f if line.startswith('Written by')), '')
    except OSError:
        return ''


# ---- statistics -------------------------------------------------------------------------------

def compare(name, a, ref_name, b, fmt, unit=''):
    """Mean of a minus mean of b, their spread, and the verdict."""
    diff = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2:
        return dict(name=name, ref=ref_name, diff=diff, std_a=None, std_b=None, se=None, t=None, beyond=None,
                    verdict="one seed on a side: no spread to judge by")
    std_a, std_b = statistics.stdev(a), statistics.stdev(b)
    se = math.sqrt(std_a ** 2 / len(a) + std_b ** 2 / len(b))
    beyond = abs(diff) > SPREAD * se
    t = diff / se if se else math.copysign(math.inf, diff) if diff else 0.0
    if beyond:
        verdict = f"{'lower' if diff < 0 else 'higher'} than {ref_name} by {fmt.format(abs(diff))}{unit}, " \
                  f"beyond the seed spread"
    else:
        verdict = "within the seed spread"
    return dict(name=name, ref=ref_name, diff=diff, std_a=std_a, std_b=std_b, se=se, t=t, beyond=beyond,
                verdict=verdict)


def comparison_row(c, fmt, extra=()):
    def opt(v, f):
        return '–' if v is None else f.format(v)
    cells = [c['name'], *extra, fmt.replace('{:', '{:+').format(c['diff']), opt(c['std_a'], fmt),
             opt(c['std_b'], fmt), opt(None if c['se'] is None else SPREAD * c['se'], fmt), opt(c['t'], '{:+.1f}'),
             c['verdict']]
    return '| ' + ' | '.join(cells) + ' |'


def comparison_header(first, what, ref, extra=()):
    cols = [first, *extra, f"{what} − {ref}", 'std', f'std {ref}', f'{SPREAD} × SE', 'Welch t', 'verdict']
    return ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]


def grouped(comparisons, fmt):
    """'a (-0.0123), b (+0.0040)' lists of the variants beyond the spread below, above, within it,
    and of those with one seed (no spread to judge by)."""
    def names(cs):
        return ', '.join(f"{c['name']} ({fmt.replace('{:', '{:+').format(c['diff'])})" for c in cs)
    return (names([c for c in comparisons if c['beyond'] and c['diff'] < 0]),
            names([c for c in comparisons if c['beyond'] and c['diff'] > 0]),
            names([c for c in comparisons if c['beyond'] is False]),
            names([c for c in comparisons if c['beyond'] is None]))


# ---- sections ---------------------------------------------------------------------------------

def variant_table(runs, relative_to=None):
    """Per variant, mean ± std over seeds of the final numbers in summary.csv."""
    ref = statistics.mean(values(runs[relative_to], 'flops_per_text_token')) if relative_to in runs else None
    clean = any(values(rows, 'val_clean') for rows in runs.values())
    cols = ['variant', 'val loss', *(['val clean'] if clean else []),
            f"FLOPs/text token{f' (× {relative_to})' if ref else ''}", 'train time (s)', 'text tok/s',
            'slot tok/s', 'iters', 'text tokens', 'seeds']
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for name, rows in runs.items():
        fptt = statistics.mean(values(rows, 'flops_per_text_token'))
        iters = sorted({int(r['iters']) for r in rows})
        tokens = sorted({int(r['text_tokens']) for r in rows})
        cells = [name, ablate.mean_std(values(rows, 'val_loss'), '{:.4f}')]
        if clean:
            cells.append(ablate.mean_std(values(rows, 'val_clean'), '{:.4f}') if values(rows, 'val_clean') else '–')
        cells += [f"{fptt / 1e6:.2f} M" + (f" ({fptt / ref:.2f}×)" if ref else ''),
                  ablate.mean_std(values(rows, 'train_time_s'), '{:.1f}'),
                  ablate.mean_std(values(rows, 'text_tok_s'), '{:,.0f}'),
                  ablate.mean_std(values(rows, 'slot_tok_s'), '{:,.0f}'),
                  '–'.join(map(str, iters)), '–'.join(f"{t:,}" for t in tokens), str(len(rows))]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def copy_plots(out_root, names, prefix, results_dir, output):
    """Copy the grid's plots into results_dir; markdown image lines for the ones there are."""
    os.makedirs(results_dir, exist_ok=True)
    lines = []
    for name in names:
        src = os.path.join(out_root, name)
        if not os.path.exists(src):
            lines.append(f"(`{name}` not found in {shown(out_root)}.)")
            continue
        dst = os.path.join(results_dir, f"{prefix}_{name}")
        shutil.copyfile(src, dst)
        lines += [f"![{prefix} {name}]({os.path.relpath(dst, os.path.dirname(os.path.abspath(output)))})", '']
    return lines


def commands_block(grid_path, out_root, jobs, data_config, extra=()):
    prepare = os.path.join(train.data_dir_of(data_config), 'prepare.py')
    return ['Commands, in the repo root:', '', '```', f"python {prepare}",
            f"python scripts/ablate.py {shown(grid_path)} --jobs={jobs}", *extra, '```', '',
            f"Every run's own `train.py` command (paste it in the repo root to redo that run alone) is in the "
            f"`command` column of `{shown(os.path.join(out_root, 'summary.csv'))}`.", '']


def not_run(title, grid_path, jobs, data_config, extra=()):
    prepare = os.path.join(train.data_dir_of(data_config), 'prepare.py')
    return [f"## {title}", '', f"Not run: `{shown(grid_path)}` has no summary.csv yet. To run it:", '', '```',
            f"python {prepare}", f"python scripts/ablate.py {shown(grid_path)} --jobs={jobs}", *extra,
            "python scripts/make_results.py", '```', '']


def base_config(grid, variant):
    """The train.py config of a grid variant (the first seed's; placeholders left as they are)."""
    overrides = {k: v for k, v in {**grid['common'], **grid['variants'][variant]}.items() if k != 'flops_budget_of'}
    return configurator.configure(train.DEFAULTS, [grid['base'], *(ablate.override_arg(k, v)
                                                                  for k, v in overrides.items())])


def shakespeare_section(args, facts):
    grid, out_root, runs = load(args.shakespeare_grid, args.shakespeare, args)
    title = f"Tiny Shakespeare (`{shown(args.shakespeare_grid)}`)"
    base = args.baseline
    config = base_config(grid, base if base in grid['variants'] else next(iter(grid['variants'])))
    if runs is None:
        facts['shakespeare'] = None
        return not_run(title, args.shakespeare_grid, args.jobs, config)
    lines = [f"## {title}", '', *commands_block(args.shakespeare_grid, out_root, args.jobs, config)]
    recorded = written_by_line(out_root, 'results.md')
    if recorded:
        lines += [f"The grid's own report (`{shown(os.path.join(out_root, 'results.md'))}`) says: {recorded}", '']
    lines += ["### Final numbers per variant", '',
              f"Mean ± std (sample std) over the finished seeds of each run's final eval, from summary.csv. Val loss "
              f"is per text token on the same fixed batches in every run; val clean is pause/reflection evaluated "
              f"without inserted tokens; FLOPs per text token are training FLOPs from the token layout; train time "
              f"excludes evals and was measured with --jobs={args.jobs} runs sharing the machine.", '',
              *variant_table(runs, base), '']
    missing = missing_runs(grid, runs)
    if missing:
        lines += [f"Not finished (left out above): {', '.join(missing)}.", '']
    lines += copy_plots(out_root, ablate.PLOTS, 'shakespeare_char', args.results_dir, args.output)

    text_tokens = {name: statistics.mean(values(rows, 'text_tokens')) for name, rows in runs.items()}
    vs_base, equal_flops = [], []
    if base not in runs:
        lines += [f"No finished run of the baseline {base!r}: no comparison.", '']
    else:
        lines += [f"### Against {base}", '',
                  f"Difference of mean final val loss (negative: better than {base}); std of each; the standard error "
                  f"of the difference, SE = sqrt(std²/n + std {base}²/n {base}); Welch t = difference / SE. Verdict: "
                  f"beyond the seed spread when |difference| > {SPREAD} × SE.", '',
                  *comparison_header('variant', 'val loss', base, ['text tokens (× ' + base + ')'])]
        for name, rows in runs.items():
            if name == base:
                continue
            c = compare(name, values(rows, 'val_loss'), base, values(runs[base], 'val_loss'), '{:.4f}')
            c['equal_tokens'] = text_tokens[name] == text_tokens[base]
            vs_base.append(c)
            lines.append(comparison_row(c, '{:.4f}', [f"{text_tokens[name] / text_tokens[base]:.2f}×"]))
        lines.append('')
    pairs = [(ref, name) for name, o in grid['variants'].items()
             if (ref := o.get('flops_budget_of')) and ref in runs and name in runs]
    if pairs:
        lines += ["### At equal training FLOPs", '',
                  "Each thinking-token variant against the variant given its training FLOPs (`flops_budget_of`: "
                  "more iterations). Difference of mean final val loss, spread and verdict as above.", '',
                  *comparison_header('variant', 'val loss', 'equal-FLOPs run', ['equal-FLOPs run', 'training FLOPs'])]
        for ref, name in pairs:
            c = compare(ref, values(runs[ref], 'val_loss'), name, values(runs[name], 'val_loss'), '{:.4f}')
            equal_flops.append(c)
            flops = f"{statistics.mean(values(runs[ref], 'train_flops')):.3g} vs " \
                    f"{statistics.mean(values(runs[name], 'train_flops')):.3g}"
            lines.append(comparison_row(c, '{:.4f}', [name, flops]))
        lines.append('')
    facts['shakespeare'] = dict(runs=runs, base=base, vs_base=vs_base, equal_flops=equal_flops, config=config,
                                text_tokens=text_tokens.get(base), seeds=len(grid['seeds']), missing=missing)
    return lines


def own_accuracies(out_root, grid):
    """{variant: [accuracy in % per seed]} with each run's own inference setting (eval_arithmetic.own_setting,
    from the config in its accuracy.json), read from accuracy.csv."""
    acc = {}
    with open(os.path.join(out_root, 'accuracy.csv'), newline='') as f:
        for row in csv.DictReader(f):
            run_dir = os.path.join(out_root, ablate.slug(row['variant']), f"seed{row['seed']}")
            report = eval_arithmetic.read_accuracy(os.path.join(run_dir, 'accuracy.json'))
            if report is None:
                continue
            own = eval_arithmetic.own_setting({**train.DEFAULTS, **report['config']})
            if (row['setting'], int(row['value'])) == own:
                acc.setdefault(row['variant'], []).append(100 * float(row['accuracy']))
    order = [v for v in grid['variants'] if v in acc] + [v for v in acc if v not in grid['variants']]
    return {v: acc[v] for v in order}


def arithmetic_section(args, facts):
    grid, out_root, runs = load(args.arithmetic_grid, args.arithmetic, args)
    title = f"Arithmetic (`{shown(args.arithmetic_grid)}`)"
    eval_cmd = f"python scripts/eval_arithmetic.py --grid={shown(args.arithmetic_grid)} {ARITHMETIC_EVAL_ARGS}"
    facts['arithmetic'] = None
    config = base_config(grid, next(iter(grid['variants'])))
    if runs is None:
        return not_run(title, args.arithmetic_grid, args.jobs, config, [eval_cmd])
    lines = [f"## {title}", '', *commands_block(args.arithmetic_grid, out_root, args.jobs, config, [eval_cmd])]
    accuracy_md = os.path.join(out_root, 'accuracy.md')
    if not os.path.exists(accuracy_md):
        lines += ["### Exact-match accuracy", '', f"Not run: {shown(out_root)} has no accuracy.md. To run it:", '',
                  '```', eval_cmd, '```', '']
    else:
        lines += ["### Exact-match accuracy", '',
                  f"`{shown(accuracy_md)}` as `scripts/eval_arithmetic.py` wrote it (headings moved down):", '']
        with open(accuracy_md) as f:
            lines += [('###' + line if line.startswith('#') else line).rstrip('\n') for line in f]
        lines += ['', *copy_plots(out_root, ['accuracy_vs_pauses.png'], 'arithmetic', args.results_dir, args.output)]
        acc = own_accuracies(out_root, grid)
        base = args.arithmetic_baseline
        if base in acc:
            comparisons = [compare(name, a, base, acc[base], '{:.1f}', ' points')
                           for name, a in acc.items() if name != base]
            lines += [f"### Accuracy against {base}", '',
                      f"Exact-match accuracy (%) with each run's own inference, difference of means against {base} "
                      f"(positive: better), spread and verdict as for the losses.", '',
                      *comparison_header('variant', 'accuracy', base)]
            lines += [comparison_row(c, '{:.1f}') for c in comparisons] + ['']
            facts['arithmetic'] = dict(base=base, base_acc=statistics.mean(acc[base]), comparisons=comparisons)
    lines += ["### Val loss per variant", '',
              "From summary.csv, mean ± std over seeds: pretraining runs over whole records, finetunes on answer "
              "tokens only, so the two groups do not compare with each other.", '', *variant_table(runs), '']
    missing = missing_runs(grid, runs)
    if missing:
        lines += [f"Not finished (left out above): {', '.join(missing)}.", '']
    facts['arithmetic_time'] = runs
    return lines


def machine_section(facts):
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    except OSError:
        pass  # not Linux: platform's name above
    lines = ["## Machine", '',
             f"This file was generated on: {cpu}, {os.cpu_count()} logical cores "
             f"({len(os.sched_getaffinity(0))} available to this process), {platform.platform()}, "
             f"Python {platform.python_version()}, torch {torch.__version__}, {datetime.date.today()}. "
             f"Run the grids and this script on the same machine; each grid section quotes the machine line "
             f"its own report recorded.", '']
    for name, runs in [('Tiny Shakespeare', (facts['shakespeare'] or {}).get('runs')),
                       ('Arithmetic', facts.get('arithmetic_time'))]:
        if not runs:
            continue
        times = [t for rows in runs.values() for t in values(rows, 'train_time_s')]
        lines.append(f"- {name}: {len(times)} runs; training time (evals excluded) summed over runs "
                     f"{sum(times) / 60:.1f} min, longest run {max(times) / 60:.1f} min.")
    return lines if lines[-1] == '' else lines + ['']


def owt_estimate(path, mfu):
    """Size, text tokens and training FLOPs of one OWT config, as train.py would count them."""
    c = configurator.configure(train.DEFAULTS, [path])
    mode = Mode(c, train.text_vocab_size_of(train.data_dir_of(c)))  # GPT-2's 50257 unless prepared otherwise
    with torch.device('meta'):  # shapes only: no 124M parameters allocated or initialised
        model = train.new_model(c, mode)
    fptt = mode.flops_per_text_token(model, c['block_size'])
    tokens = c['max_iters'] * c['gradient_accumulation_steps'] * c['batch_size'] * c['block_size']
    flops = fptt * tokens
    return dict(path=path, mode=c['mode'], params=model.get_num_params(), tokens=tokens, fptt=fptt, flops=flops,
                hours={gpu: flops / (peak * mfu) / 3600 for gpu, peak in train.KNOWN_PEAK_FLOPS.items()})


def owt_section(args, facts):
    estimates = [owt_estimate(path, args.assumed_mfu) for path in OWT_CONFIGS]
    ref = estimates[0]['fptt']
    n = args.owt_seeds
    lines = ["## What testing the claims at GPT-2 124M would take", '',
             f"Training FLOPs of the OpenWebText configs as train.py counts them (the token layout priced by "
             f"model.GPT.flops_per_layout: forward + backward matmuls, masked attention pairs not counted), "
             f"times their text tokens (max_iters × gradient_accumulation_steps × batch_size × block_size). "
             f"GPU-hours = FLOPs / (peak dense bf16 FLOP/s of train.KNOWN_PEAK_FLOPS × an assumed MFU of "
             f"{args.assumed_mfu:.0%}, `--assumed_mfu`); cells are one run / {n} seeds (`--owt_seeds`).", '']
    cols = ['config', 'mode', 'params (no positions)', 'text tokens', f'FLOPs/text token (× {OWT_CONFIGS[0]})',
            'training FLOPs', *(f'{gpu} GPU-hours' for gpu in train.KNOWN_PEAK_FLOPS)]
    lines += ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for e in estimates:
        lines.append('| ' + ' | '.join([
            f"`{e['path']}`", e['mode'], f"{e['params'] / 1e6:.1f} M", f"{e['tokens'] / 1e9:.1f} B",
            f"{e['fptt'] / 1e6:.0f} M ({e['fptt'] / ref:.2f}×)", f"{e['flops']:.3g}",
            *(f"{h:,.0f} / {n * h:,.0f}" for h in e['hours'].values())]) + ' |')
    totals = {gpu: n * sum(e['hours'][gpu] for e in estimates) for gpu in train.KNOWN_PEAK_FLOPS}
    lines += ['', "All of them, " + ', '.join(
        f"{gpu}: {h:,.0f} GPU-hours ({h / 8 / 24:.1f} days on one node of 8)" for gpu, h in totals.items())
        + f" for {len(estimates)} configs × {n} seeds. Masked layouts (reasoning) run through FlexAttention "
          f"and may reach a lower MFU than standard's causal attention, so their hours are the likelier to be "
          f"underestimated.", '', 'Commands (one node of 8 GPUs; scripts/ has multi-node and SLURM launchers):', '',
        '```', *(f"torchrun --standalone --nproc_per_node=8 train.py {e['path']} --seed={seed} "
                 f"--out_dir=out-{os.path.splitext(os.path.basename(e['path']))[0]}-seed{seed}"
                 for e in estimates for seed in range(1, n + 1)), '```', '']
    facts['owt'] = dict(estimates=estimates, totals=totals, seeds=n)
    return lines


def reading_line(intro, ref, comparisons, fmt, better):
    """'- intro: the variants beyond the spread on the better side (or that there are none); the
    ones beyond it on the worse side; the ones within.'"""
    lower, higher, within, unjudged = grouped(comparisons, fmt)
    worse = 'higher' if better == 'lower' else 'lower'
    good, bad = (lower, higher) if better == 'lower' else (higher, lower)
    parts = []
    if good:
        parts.append(f"{better} beyond the seed spread: {good}.")
    elif bad or within:
        parts.append(f"no variant is {better} than {ref} beyond the seed spread.")
    if bad:
        parts.append(f"{worse.capitalize()} beyond the seed spread: {bad}.")
    if within:
        parts.append(f"Within the seed spread: {within}.")
    if unjudged:
        parts.append(f"One seed on a side, not judged: {unjudged}." if parts else
                     f"one seed on a side, not judged: {unjudged}.")
    return f"- {intro}: " + ' '.join(parts)


def reading_section(args, facts):
    lines = ["## Reading", '', "Generated from the tables above:", '']
    sh = facts['shakespeare']
    if sh is None:
        lines.append("- Tiny Shakespeare: not run, nothing to read.")
    elif sh['vs_base']:
        base = sh['base']
        lines.append(reading_line(
            f"Tiny Shakespeare at equal text tokens ({sh['text_tokens']:,.0f} per run), final val loss against {base} "
            f"({statistics.mean(values(sh['runs'][base], 'val_loss')):.4f})", base,
            [c for c in sh['vs_base'] if c['equal_tokens']], '{:.4f}', 'lower'))
    for c in sh['equal_flops'] if sh else []:
        lines.append(f"- Tiny Shakespeare at equal training FLOPs: {c['name']} against {c['ref']}: {c['verdict']} "
                     f"(difference {c['diff']:+.4f}, {SPREAD} × SE "
                     f"{'–' if c['se'] is None else format(SPREAD * c['se'], '.4f')}).")
    ar = facts['arithmetic']
    if ar:
        lines.append(reading_line(
            f"Arithmetic exact-match accuracy with each run's own inference, against {ar['base']} "
            f"({ar['base_acc']:.1f}%)", ar['base'], ar['comparisons'], '{:.1f}', 'higher'))
    else:
        lines.append("- Arithmetic: no accuracy to read (grid or eval not run, or no run of the baseline "
                     f"{args.arithmetic_baseline!r}).")
    owt = facts['owt']
    if sh and sh['text_tokens']:
        c = sh['config']
        lines.append(f"- Scale: each Tiny Shakespeare run trained a {c['n_layer']}-layer, {c['n_embd']}-wide model on "
                     f"{sh['text_tokens']:,.0f} text tokens ({sh['seeds']} seeds per variant); the GPT-2 124M configs "
                     f"train on {owt['estimates'][0]['tokens']:,} text tokens per run, "
                     f"{owt['estimates'][0]['tokens'] / sh['text_tokens']:,.0f}× more."
                     + (f" {len(sh['missing'])} planned run(s) had not finished." if sh['missing'] else ''))
    lines.append(f"- With {SPREAD} standard errors as the bar and a few seeds per variant, 'beyond the seed spread' "
                 f"is a screen, not a significance test; 'within' means not resolved at this number of seeds.")
    h100 = owt['totals'].get('H100')
    if h100:
        lines.append(f"- Testing the claims at GPT-2 124M with the OWT configs: about {h100:,.0f} H100-hours for all "
                     f"{len(owt['estimates'])} configs × {owt['seeds']} seeds at {args.assumed_mfu:.0%} MFU.")
    return lines + ['', INTERPRETATION, '']


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--shakespeare', default='', help="out_root of the Tiny Shakespeare grid (default: the grid's)")
    p.add_argument('--shakespeare_grid', default='config/ablations/shakespeare_char.py')
    p.add_argument('--arithmetic', default='', help="out_root of the arithmetic grid (default: the grid's)")
    p.add_argument('--arithmetic_grid', default='config/ablations/arithmetic.py')
    p.add_argument('--baseline', default='standard', help='Tiny Shakespeare variant the others are compared with')
    p.add_argument('--arithmetic_baseline', default='StdPT-StdFT', help='arithmetic variant the others are compared with')
    p.add_argument('--output', default=os.path.join(REPO, 'RESULTS.md'))
    p.add_argument('--results_dir', default=os.path.join(REPO, 'results'), help='where the plots are copied')
    p.add_argument('--assumed_mfu', type=float, default=0.4, help='model FLOPs utilisation for the GPU-hour estimate')
    p.add_argument('--owt_seeds', type=int, default=3, help='seeds per config in the GPU-hour estimate')
    p.add_argument('--jobs', type=int, default=2, help='the --jobs the grids ran with (shown in the commands)')
    p.add_argument('--allow_missing', action='store_true', help='a grid without summary.csv gets a "not run" section')
    args = p.parse_args()
    if not 0 < args.assumed_mfu <= 1:
        fail(f"--assumed_mfu must be in (0, 1], got {args.assumed_mfu}")
    if args.owt_seeds < 1 or args.jobs < 1:
        fail("--owt_seeds and --jobs must be at least 1")
    argv = shlex.join(sys.argv[1:])
    for key in ('shakespeare', 'shakespeare_grid', 'arithmetic', 'arithmetic_grid', 'output', 'results_dir'):
        if getattr(args, key):
            setattr(args, key, os.path.abspath(getattr(args, key)))
    os.chdir(REPO)  # grid files, their base configs and out_roots are relative to the repo root

    facts = {}  # what the sections found, for the machine and reading sections
    shakespeare = shakespeare_section(args, facts)
    arithmetic = arithmetic_section(args, facts)
    owt = owt_section(args, facts)
    header = [
        "<!-- Generated by `python scripts/make_results.py`: do not edit by hand, rerun the script. -->",
        "# Results", '',
        f"Generated by `python scripts/make_results.py{' ' + argv if argv else ''}` from the finished runs of the "
        f"grids below (their summary.csv, results.md, accuracy.md/csv and plots) and the repo's configs: every "
        f"number here was read or computed by the script, none typed by hand. Do not edit this file: rerun the "
        f"script after the grids change.", '']
    body = [*header, *machine_section(facts), *shakespeare, *arithmetic, *owt, *reading_section(args, facts)]
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, 'w') as f:
        f.write('\n'.join(body))
    print(f"wrote {args.output} and the plots in {args.results_dir}")


if __name__ == '__main__':
    main()
