"""
Write RESULTS.md from the finished ablation grids: tables, plots, commands, the machine, whether
each difference exceeds the seed spread, and what testing the same claims at GPT-2 124M would cost.

    python scripts/make_results.py                        # after the grids (README, "Ablations and results")
    python scripts/make_results.py --allow_missing        # a grid not run yet gets a "not run" section
    python scripts/make_results.py config/ablations/shakespeare_char.py=/elsewhere/out --assumed_mfu=0.35

Inputs: grid files as arguments, each optionally GRID=OUT_ROOT to read its runs from another
out_root (default: every grid of config/ablations/, those without eval_args first, then by name).
Each grid's section is reporting.grid_section (also its results.md), from what scripts/ablate.py
wrote in out_root (summary.csv, budget.json, plots) and, for a grid with eval_args or an
accuracy.csv, what `scripts/eval_arithmetic.py --grid=GRID <eval_args>` wrote (accuracy.csv,
accuracy_vs_thinking.png), and scripts/eval_thinking.py (thinking.csv, thinking.png); titles and
baselines are the grid files'. Those files are copied to --results_dir/<grid name>/ when the runs
are here, and read from there: committed, they let any clone regenerate RESULTS.md. A grid with
neither is an error unless --allow_missing. The GPT-2 124M estimate comes from the OWT config files.

Outputs: RESULTS.md (--output) and results/<grid name>/. No number here is typed in: each is read
from those files or computed from them and the configs; the one hand-written paragraph has no digits.

The seed-spread screen: a difference of means counts as beyond the seed spread when it exceeds
reporting.SPREAD x its standard error, sqrt(s_a^2/n_a + s_b^2/n_b) with sample stds s (Welch's t).
With three seeds this is a screen, not a significance test.
"""

import argparse
import datetime
import glob
import os
import platform
import shlex
import shutil
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import reporting  # noqa: E402
from configurator import configure, fail  # noqa: E402
from grids import load_grid, read_csv, shown, summary, values, wall_times  # noqa: E402
from reporting import SPREAD  # noqa: E402
from training import DEFAULTS, KNOWN_PEAK_FLOPS, mode_of, new_model  # noqa: E402

OWT_CONFIGS = ('config/train_gpt2.py', 'config/pause_owt.py', 'config/reflection_owt.py', 'config/reasoning_owt.py')

INTERPRETATION = """\
*Interpretation (hand-written, the same whatever the runs say):* thinking tokens change two things
at once, the compute spent per text token and what the model can attend to, so a lower loss at
equal text tokens is not yet evidence that the extra slots carry useful computation; standard
given the same training FLOPs as more iterations is the fairer test of that. Runs this small and
this short sit where the loss still falls fast, far from the scale at which the claims were made,
so neither a gain nor a loss here settles them. A difference counts only when it exceeds the
spread across seeds; with few seeds that screen is coarse, and a difference within the spread
means not resolved, not no effect, unless twice its standard error is below the effect the grid
stated before its runs (`min_effect`): then no effect that large is resolved. On arithmetic,
exact-match accuracy of a tiny model on short problems shows whether pauses can be used at all,
not how much they help a large model; the positive control is a task built to need computation
before the answer, where thinking tokens have the best case to help."""


def grid_paths(specs, cwd):
    """[(grid file, out_root or '')] from GRID[=OUT_ROOT] arguments (relative to cwd), or every grid of
    config/ablations."""
    if not specs:
        paths = sorted(glob.glob(os.path.join(REPO, 'config', 'ablations', '*.py')))
        return sorted(((p, '') for p in paths), key=lambda p: bool(load_grid(p[0])['eval_args']))
    return [(os.path.join(cwd, path), os.path.join(cwd, out_root) if out_root else '')
            for path, _, out_root in (spec.partition('=') for spec in specs)]


REPORT_FILES = ('summary.csv', 'accuracy.csv', 'thinking.csv', 'budget.json', *reporting.PLOTS, reporting.ACCURACY_PLOT,
                reporting.THINKING_PLOT)


def load(grid_path, out_root, args):
    """(grid, {variant: summary.csv rows} in grid order, or None when not run). Where the grid's runs
    are (its out_root, or OUT_ROOT), their report files are first copied to results_dir/<grid name>/,
    replacing an earlier copy; the report reads that copy, so a clone regenerates RESULTS.md without
    the runs."""
    grid = load_grid(grid_path)
    runs_root = out_root or grid['out_root']
    saved = os.path.join(args.results_dir, os.path.splitext(os.path.basename(grid_path))[0])
    if os.path.exists(os.path.join(runs_root, 'summary.csv')):
        shutil.rmtree(saved, ignore_errors=True)  # files of an earlier version of the grid must not linger
        os.makedirs(saved)
        for name in REPORT_FILES:
            if os.path.exists(os.path.join(runs_root, name)):
                shutil.copyfile(os.path.join(runs_root, name), os.path.join(saved, name))
    grid['out_root'] = saved
    runs = summary(grid)
    if runs is None and not args.allow_missing:
        fail(f"no summary.csv in {shown(runs_root)} nor in {shown(saved)}: run `python scripts/ablate.py "
             f"{shown(grid_path)} --jobs={args.jobs}` first (or pass --allow_missing)")
    if runs and not set(runs) & set(grid['variants']):
        fail(f"{shown(saved)}/summary.csv has none of the variants of {shown(grid_path)}: pass the grid file "
             f"it was made from")
    return grid, runs


def machine_section(sections):
    lines = ["## Machine", '',
             f"This file was generated on: {reporting.machine()}; {platform.platform()}, Python "
             f"{platform.python_version()}, {datetime.date.today()}. Each grid's runs: the machine and budget "
             f"below (budget.json, written by scripts/ablate.py).", '']
    budgets = []
    for grid, facts in sections:
        if facts:
            times = [t for rows in facts['runs'].values() for t in values(rows, 'train_time_s')]
            budget, evals = wall_times(grid['out_root']), read_csv(os.path.join(grid['out_root'], 'accuracy.csv'))
            budgets += [budget] if budget else []
            wall = (f"`scripts/ablate.py` wall time {budget['wall_s'] / 60:.1f} min with --jobs="
                    f"{'/'.join(map(str, budget['jobs']))} (over {budget['invocations']} invocation(s)) on "
                    f"{' and '.join(budget['machines'])}; " if budget else "no budget.json (wall time not recorded); ")
            evaluated = (f"; exact-match eval {sum(values(evals, 'seconds')) / 60:.1f} min of generation"
                         if evals and 'seconds' in evals[0] else '')
            lines.append(f"- {grid['title']}: {len(times)} runs; {wall}training time (evals excluded) summed over "
                         f"runs {sum(times) / 60:.1f} min, longest run {max(times) / 60:.1f} min{evaluated}.")
    if len(budgets) > 1:
        machines = sorted({m for b in budgets for m in b['machines']})
        lines.append(f"- All {len(budgets)} grids with a budget: {sum(b['wall_s'] for b in budgets) / 60:.1f} min of "
                     f"`scripts/ablate.py` wall time on {' and '.join(machines)}.")
    return lines if lines[-1] == '' else lines + ['']


def owt_estimate(path, mfu):
    """Size, text tokens and training FLOPs of one OWT config, as train.py would count them."""
    c = configure(DEFAULTS, [path])
    mode = mode_of(c)  # GPT-2's 50257 tokens unless prepared otherwise
    with torch.device('meta'):  # shapes only: no 124M parameters allocated or initialised
        model = new_model(c, mode)
    fptt = mode.flops_per_text_token(model, c['block_size'])
    tokens = c['max_iters'] * c['gradient_accumulation_steps'] * c['batch_size'] * c['block_size']
    flops = fptt * tokens
    return dict(path=path, mode=c['mode'], params=model.get_num_params(), tokens=tokens, fptt=fptt, flops=flops,
                hours={gpu: flops / (peak * mfu) / 3600 for gpu, peak in KNOWN_PEAK_FLOPS.items()})


def owt_section(args):
    estimates = [owt_estimate(path, args.assumed_mfu) for path in OWT_CONFIGS]
    ref = estimates[0]['fptt']
    n = args.owt_seeds
    lines = ["## What testing the claims at GPT-2 124M would take", '',
             f"Training FLOPs of the OpenWebText configs as train.py counts them (the token layout priced by "
             f"model.GPT.flops_per_layout: forward + backward matmuls, masked attention pairs not counted), "
             f"times their text tokens (max_iters × gradient_accumulation_steps × batch_size × block_size). "
             f"GPU-hours = FLOPs / (peak dense bf16 FLOP/s of training.KNOWN_PEAK_FLOPS × an assumed MFU of "
             f"{args.assumed_mfu:.0%}, `--assumed_mfu`); cells are one run / {n} seeds (`--owt_seeds`).", '']
    lines += reporting.table(
        ['config', 'mode', 'params (no positions)', 'text tokens', f'FLOPs/text token (× {OWT_CONFIGS[0]})',
         'training FLOPs', *(f'{gpu} GPU-hours' for gpu in KNOWN_PEAK_FLOPS)],
        [[f"`{e['path']}`", e['mode'], f"{e['params'] / 1e6:.1f} M", f"{e['tokens'] / 1e9:.1f} B",
          f"{e['fptt'] / 1e6:.0f} M ({e['fptt'] / ref:.2f}×)", f"{e['flops']:.3g}",
          *(f"{h:,.0f} / {n * h:,.0f}" for h in e['hours'].values())] for e in estimates])
    totals = {gpu: n * sum(e['hours'][gpu] for e in estimates) for gpu in KNOWN_PEAK_FLOPS}
    lines += ['', "All of them, " + ', '.join(
        f"{gpu}: {h:,.0f} GPU-hours ({h / 8 / 24:.1f} days on one node of 8)" for gpu, h in totals.items())
        + f" for {len(estimates)} configs × {n} seeds. Masked layouts (reasoning) run through FlexAttention "
          f"and may reach a lower MFU than standard's causal attention, so their hours are the likelier to be "
          f"underestimated.", '', 'Commands (one node of 8 GPUs; scripts/ has multi-node and SLURM launchers):', '',
        '```', *(f"torchrun --standalone --nproc_per_node=8 train.py {e['path']} --seed={seed} "
                 f"--out_dir=out-{os.path.splitext(os.path.basename(e['path']))[0]}-seed{seed}"
                 for e in estimates for seed in range(1, n + 1)), '```', '']
    return lines, dict(estimates=estimates, totals=totals, seeds=n)


def reading_section(args, sections, owt):
    lines = ["## Reading", '', "Generated from the tables above:", '']
    for grid, facts in sections:
        lines += reporting.reading(grid, facts, owt['estimates'][0]['tokens'])
    lines.append(f"- With {SPREAD} standard errors as the bar and a few seeds per variant, 'beyond the seed spread' "
                 f"is a screen, not a significance test; 'within' means not resolved at this number of seeds, unless "
                 f"marked resolved: {SPREAD} × SE below the effect the grid stated before its runs (`min_effect`), so no "
                 f"effect that large.")
    h100 = owt['totals'].get('H100')
    if h100:
        lines.append(f"- Testing the claims at GPT-2 124M with the OWT configs: about {h100:,.0f} H100-hours for all "
                     f"{len(owt['estimates'])} configs × {owt['seeds']} seeds at {args.assumed_mfu:.0%} MFU.")
    return lines + ['', INTERPRETATION, '']


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('grids', nargs='*', metavar='GRID[=OUT_ROOT]',
                   help="grid files (default: config/ablations/*.py), each optionally with the out_root of its runs")
    p.add_argument('--output', default=os.path.join(REPO, 'RESULTS.md'))
    p.add_argument('--results_dir', default=os.path.join(REPO, 'results'),
                   help="where each grid's report files are kept (results/<grid name>/), committed with RESULTS.md")
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
    args.output, args.results_dir = os.path.abspath(args.output), os.path.abspath(args.results_dir)
    cwd = os.getcwd()
    os.chdir(REPO)  # grid files, their base configs and out_roots are relative to the repo root
    paths = grid_paths(args.grids, cwd)

    sections, body = [], []  # (grid, facts of its section), the sections' lines
    for path, out_root in paths:
        grid, runs = load(path, out_root, args)
        lines, facts = reporting.grid_section(grid, runs, args.jobs, args.output)
        sections.append((grid, facts))
        body += lines
    owt_lines, owt = owt_section(args)
    header = [
        "<!-- Generated by `python scripts/make_results.py`: do not edit by hand, rerun the script. -->",
        "# Results", '',
        f"Generated by `python scripts/make_results.py{' ' + argv if argv else ''}` from the finished runs of the "
        f"grids below (their summary.csv, accuracy.csv and plots) and the repo's configs: every number here was "
        f"read or computed by the script, none typed by hand. Do not edit this file: rerun the script after the "
        f"grids change.", '']
    text = [*header, *machine_section(sections), *body, *owt_lines, *reading_section(args, sections, owt)]
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, 'w') as f:
        f.write('\n'.join(text))
    print(f"wrote {args.output} from the grids' files in {args.results_dir}")


if __name__ == '__main__':
    main()
