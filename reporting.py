"""
What every report of this repo shares (bench.py's tables, RESULTS.md, FAULTS.md, GPU.md, the grids'
results.md and accuracy.md): markdown tables, mean ± std, the machine line, the protocol by which a
child process hands its measurement to its parent, and the reports rendered from the files their
runners write (summary.csv and metrics.jsonl: scripts/ablate.py; accuracy.csv: eval_arithmetic.py;
gpu_check.json): per-variant tables, Welch t / SPREAD x SE verdicts, accuracy tables and plots.
"""

import json
import math
import os
import platform
import statistics
import subprocess
import sys

import torch

from dataset import data_dir_of
from grids import by_variant, chain_flops, flops_references, missing_runs, own_settings, read_csv, shown, values, variant_config

RESULT_TAG = 'RESULT_JSON '  # marks a child's one result line on stdout


def table(header, rows):
    """Markdown table lines."""
    return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + \
           ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]


def mean_std(samples, fmt):
    """'mean ± sample std' in format fmt, or the value alone when there is one."""
    if len(samples) < 2:
        return fmt.format(samples[0])
    return f"{fmt.format(statistics.mean(samples))} ± {fmt.format(statistics.stdev(samples))}"


def cpu_name():
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), name)
    except OSError:  # not Linux: platform's name
        return name


def machine(device='cpu'):
    """The machine a measurement ran on: the GPU (or CPU, its cores), torch and its threads."""
    if device.startswith('cuda'):
        return f"{torch.cuda.get_device_name(device)}; torch {torch.__version__}, CUDA {torch.version.cuda}"
    return (f"{cpu_name()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} available); "
            f"torch {torch.__version__}; {torch.get_num_threads()} threads")


def emit_result(result):
    """In a child process: hand `result` (JSON-able) to the parent."""
    print(RESULT_TAG + json.dumps(result), flush=True)


def child_result(proc):
    """(result, None) from a finished child process (subprocess.CompletedProcess with text stdout,
    stderr), or (None, what went wrong)."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        return None, f"exit code {proc.returncode}; stderr tail:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len(RESULT_TAG):]), None


def run_child(args, **kwargs):
    """Run `python args...` in a fresh interpreter and return child_result of it."""
    return child_result(subprocess.run([sys.executable, *args], capture_output=True, text=True, **kwargs))


# ---- the grids' reports (scripts/ablate.py, eval_arithmetic.py, make_results.py) ---------------

SPREAD = 2  # beyond the seed spread: |difference of means| > SPREAD standard errors of the difference
PLOTS = {  # file -> (metrics.jsonl key on the x axis, axis label)
    'val_vs_text_tokens.png': ('text_tokens', 'text tokens trained on'),
    'val_vs_flops.png': ('train_flops', 'training FLOPs'),
    'val_vs_time.png': ('train_time_s', 'training wall time (s, evals excluded)'),
}
ACCURACY_PLOT = 'accuracy_vs_thinking.png'
THINKING_PLOT = 'thinking.png'  # scripts/eval_thinking.py: loss against thinking slots per token
SHORT = {'num_pause_tokens': 'pauses', 'num_reason_tokens': 'N', 'num_reflect_tokens': 'reflections'}
KNOB_TITLES = {'num_pause_tokens': 'Robustness: accuracy against the number of pauses at inference',
               'num_reason_tokens': 'Accuracy against the reasoning tokens used at inference',
               'num_reflect_tokens': 'Accuracy against the reflection tokens used at inference'}
INFERENCE_AXES = {'num_pause_tokens': 'pauses after the prompt at inference',
                  'num_reason_tokens': 'reasoning slots after every token at inference',
                  'num_reflect_tokens': 'reflections after every token at inference'}
OPS = (('+', 'accuracy_add'), ('*', 'accuracy_mul'))  # accuracy.csv's per-op columns


def compare(name, a, ref_name, b, fmt, unit='', min_effect=None):
    """Mean of a minus mean of b, their spread (Welch's t), and the verdict against SPREAD x SE. With
    min_effect (the smallest difference worth resolving, stated before the runs), a difference within
    the spread is resolved when SPREAD x SE is below min_effect: no effect that large, at this many seeds."""
    diff = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2:
        return dict(name=name, ref=ref_name, diff=diff, std_a=None, std_b=None, se=None, t=None, beyond=None,
                    resolved=None, verdict="one seed on a side: no spread to judge by")
    std_a, std_b = statistics.stdev(a), statistics.stdev(b)
    se = math.sqrt(std_a ** 2 / len(a) + std_b ** 2 / len(b))
    beyond = abs(diff) > SPREAD * se
    t = diff / se if se else math.copysign(math.inf, diff) if diff else 0.0
    resolved = True if beyond else None if min_effect is None else SPREAD * se < min_effect
    if beyond:
        verdict = f"{'lower' if diff < 0 else 'higher'} than {ref_name} by {fmt.format(abs(diff))}{unit}, beyond the seed spread"
    elif min_effect is None:
        verdict = "within the seed spread"
    elif resolved:
        verdict = f"within the seed spread, resolved ({SPREAD} × SE < {fmt.format(min_effect)}{unit}, the effect of interest)"
    else:
        verdict = f"within the seed spread, not resolved ({SPREAD} × SE ≥ {fmt.format(min_effect)}{unit}, the effect of interest)"
    return dict(name=name, ref=ref_name, diff=diff, std_a=std_a, std_b=std_b, se=se, t=t, beyond=beyond,
                resolved=resolved, verdict=verdict)


def comparison_table(what, ref, comparisons, fmt, extra=()):
    """Table lines of compare() results; each may carry cells for the `extra` columns as c['extra']."""
    def opt(v, f):
        return '–' if v is None else f.format(v)
    return table(['variant', *extra, f"{what} − {ref}", 'std', f'std {ref}', f'{SPREAD} × SE', 'Welch t', 'verdict'],
                 [[c['name'], *c.get('extra', ()), fmt.replace('{:', '{:+').format(c['diff']), opt(c['std_a'], fmt),
                   opt(c['std_b'], fmt), opt(None if c['se'] is None else SPREAD * c['se'], fmt), opt(c['t'], '{:+.1f}'),
                   c['verdict']] for c in comparisons])


def grouped(comparisons, fmt):
    """'a (-0.0123), b (+0.0040)' lists of the variants beyond the spread below, above, within it,
    and of those with one seed (no spread to judge by)."""
    def names(cs):
        return ', '.join(f"{c['name']} ({fmt.replace('{:', '{:+').format(c['diff'])}"
                         f"{'' if c['beyond'] or c.get('resolved') is None else ', resolved' if c['resolved'] else ', not resolved'})"
                         for c in cs)
    return (names([c for c in comparisons if c['beyond'] and c['diff'] < 0]),
            names([c for c in comparisons if c['beyond'] and c['diff'] > 0]),
            names([c for c in comparisons if c['beyond'] is False]),
            names([c for c in comparisons if c['beyond'] is None]))


def variant_table(grid, runs):
    """Per variant, mean ± std over seeds of the final numbers in summary.csv."""
    base = grid['baseline']
    ref = statistics.mean(values(runs[base], 'flops_per_text_token')) if base in runs else None
    clean = any(values(rows, 'val_clean') for rows in runs.values())
    header = ['variant', 'val loss', *(['val clean'] if clean else []), 'best val',
              f"FLOPs/text token{f' (× {base})' if ref else ''}", 'train FLOPs', 'train time (s)', 'text tok/s',
              'slot tok/s', 'iters', 'text tokens', 'seeds']
    rows = []
    for name in [*grid['variants'], *(v for v in runs if v not in grid['variants'])]:
        if name not in runs:
            rows.append([name, 'no finished run', *[''] * (len(header) - 3), '0'])
            continue
        rs = runs[name]
        fptt = statistics.mean(values(rs, 'flops_per_text_token'))
        cells = [name, mean_std(values(rs, 'val_loss'), '{:.4f}')]
        if clean:
            cells.append(mean_std(values(rs, 'val_clean'), '{:.4f}') if values(rs, 'val_clean') else '–')
        cells += [mean_std(values(rs, 'best_val'), '{:.4f}'),
                  f"{fptt / 1e6:.2f} M" + (f" ({fptt / ref:.2f}×)" if ref else ''),
                  f"{statistics.mean(values(rs, 'train_flops')):.3g}", mean_std(values(rs, 'train_time_s'), '{:.1f}'),
                  mean_std(values(rs, 'text_tok_s'), '{:,.0f}'), mean_std(values(rs, 'slot_tok_s'), '{:,.0f}'),
                  '–'.join(str(i) for i in sorted({int(r['iters']) for r in rs})),
                  '–'.join(f"{t:,}" for t in sorted({int(r['text_tokens']) for r in rs})), str(len(rs))]
        rows.append(cells)
    return table(header, rows)


def plot_links(out_root, names, output):
    """Markdown image lines for the plots in out_root, as seen from the report `output`."""
    lines = []
    for name in names:
        path = os.path.join(out_root, name)
        lines += [f"![{name}]({os.path.relpath(path, os.path.dirname(os.path.abspath(output)))})" if os.path.exists(path)
                  else f"(`{name}` not found in {shown(out_root)}.)", '']
    return lines


def equal_flops_pairs(grid):
    """[(thinking variant, the variant given its training FLOPs)] of a grid (flops_budget_of)."""
    return [(ref, name) for name, o in grid['variants'].items() if 'flops_budget_of' in o for ref in flops_references(o)]


def grid_section(grid, runs, jobs, output):
    """
    The report of one grid: its commands, the final numbers per variant and the comparisons
    against the baseline and at equal training FLOPs (from summary.csv, here `runs`: {variant:
    rows}, None when the grid has not run), the loss plots, and for an evaluated grid its accuracy
    (accuracy_section, from accuracy.csv). Returns (lines, facts for a reading of the section).
    """
    g, base, out_root = shown(grid['path']), grid['baseline'], grid['out_root']
    configs = {name: variant_config(grid, name) for name in grid['variants']}
    accuracy_rows = read_csv(os.path.join(out_root, 'accuracy.csv'))
    evaluated = grid['eval_args'] or accuracy_rows is not None
    eval_cmd = [f"python scripts/eval_arithmetic.py --grid={g} {grid['eval_args']}".rstrip()] if evaluated else []
    prepare = grid['prepare'] or [f"python {os.path.join(data_dir_of(configs[base]), 'prepare.py')}"]
    commands = ['```', *prepare,
                f"python scripts/ablate.py {g} --jobs={jobs}", *eval_cmd]
    lines = [f"## {grid['title']} (`{g}`)", '']
    if runs is None:
        return lines + [f"Not run: `{g}` has no summary.csv yet. To run it:", '', *commands,
                        "python scripts/make_results.py", '```', ''], None
    first_seed = [r['command'] for rows in runs.values() for r in rows if int(r['seed']) == grid['seeds'][0]]
    lines += ['Commands, in the repo root:', '', *commands, '```', '',
              f"Every run's own `train.py` command (paste it in the repo root to redo that run alone) is in the "
              f"`command` column of `{shown(os.path.join(out_root, 'summary.csv'))}`; the first seed's:", '',
              '```', *first_seed, '```', '', "### Final numbers per variant", '',
              f"Mean ± std (sample std) over the finished seeds of each run's final eval, from summary.csv. Val loss "
              f"is per text token on the same fixed batches in every run; val clean is pause/reflection evaluated "
              f"without inserted tokens; best val is the lowest eval of each run; FLOPs per text token are training "
              f"FLOPs from the token layout (model.GPT.flops_per_layout); train time excludes evals and was measured "
              f"with --jobs={jobs} runs sharing the machine.", '', *variant_table(grid, runs), '']
    missing = missing_runs(grid, runs)
    if missing:
        lines += [f"Not finished (left out above): {', '.join(missing)}.", '']
    lines += plot_links(out_root, PLOTS, output)
    tokens = {name: statistics.mean(values(rows, 'text_tokens')) for name, rows in runs.items()}
    vs_base, equal_flops = [], []
    loss_effect = None if evaluated else grid['min_effect']  # an evaluated grid's min_effect is in accuracy points
    if base not in runs:
        lines += [f"No finished run of the baseline {base!r}: no comparison.", '']
    else:
        for name, rows in runs.items():  # only losses of the same kind compare (answer_only: the answers')
            if name != base and name in configs and configs[name]['answer_only'] == configs[base]['answer_only']:
                c = compare(name, values(rows, 'val_loss'), base, values(runs[base], 'val_loss'), '{:.4f}',
                            min_effect=loss_effect)
                vs_base.append({**c, 'equal_tokens': tokens[name] == tokens[base],
                                'extra': [f"{tokens[name] / tokens[base]:.2f}×"]})
        lines += [f"### Against {base}", '',
                  f"Difference of mean final val loss (negative: better than {base}), for the variants whose loss "
                  f"is of the same kind; std of each; the standard error of the difference, SE = sqrt(std²/n + std "
                  f"{base}²/n {base}); Welch t = difference / SE. Verdict: beyond the seed spread when |difference| "
                  f"> {SPREAD} × SE.", '',
                  *comparison_table('val loss', base, vs_base, '{:.4f}', [f'text tokens (× {base})']), '']
    for ref, name in equal_flops_pairs(grid):
        if ref in runs and name in runs:
            c = compare(ref, values(runs[ref], 'val_loss'), name, values(runs[name], 'val_loss'), '{:.4f}',
                        min_effect=loss_effect)
            flops = [chain_flops(grid, runs, v) for v in (ref, name)]
            equal_flops.append({**c, 'extra': [name, ' vs '.join('–' if f is None else f"{f:.3g}" for f in flops)]})
    if equal_flops:
        lines += ["### At equal training FLOPs", '',
                  "Each thinking-token variant against the variant given its training FLOPs (`flops_budget_of`: "
                  "more iterations; a finetune's FLOPs include the pretraining it starts from). Difference of mean "
                  "final val loss, spread and verdict as above.", '',
                  *comparison_table('val loss', 'equal-FLOPs run', equal_flops, '{:.4f}',
                                    ['equal-FLOPs run', 'training FLOPs']), '']
    thinking_rows = read_csv(os.path.join(out_root, 'thinking.csv'))
    if thinking_rows:
        lines += thinking_section(thinking_rows, f"python scripts/eval_thinking.py --grid={g}", out_root, output)
    facts = dict(grid=grid, runs=runs, vs_base=vs_base, equal_flops=equal_flops, config=configs[base],
                 text_tokens=tokens.get(base), missing=missing, evaluated=evaluated, accuracy=None)
    if accuracy_rows is None and evaluated:
        lines += ["### Exact-match accuracy", '', f"Not run: {shown(out_root)} has no accuracy.csv. To run it:", '',
                  '```', *eval_cmd, '```', '']
    elif accuracy_rows is not None:
        acc_lines, facts['accuracy'] = accuracy_section(grid, accuracy_rows, runs)
        lines += acc_lines + plot_links(out_root, [ACCURACY_PLOT], output)
    return lines, facts


def percent(rows, key):
    """Mean ± std in % of a fraction column over rows (seeds)."""
    vals = [100 * v for v in values(rows, key)]
    return mean_std(vals, '{:.1f}') + (' (1 seed)' if len(vals) == 1 else '') if vals else '–'


def accuracy_section(grid, rows, runs=None):
    """
    Exact-match accuracy of a grid from accuracy.csv's rows (scripts/eval_arithmetic.py): each run
    with its own inference (grids.own_setting), accuracy against each knob's values, and against
    the baseline. Returns (lines, facts of the baseline comparison or None).
    """
    own, acc = own_settings(grid), {}
    for r in rows:  # acc[variant][(setting, value)] = rows, one per seed
        acc.setdefault(r['variant'], {}).setdefault((r['setting'], int(r['value'])), []).append(r)
    ops = [(op, key) for op, key in OPS if any(r[key] != '' for r in rows)]
    ops = ops if len(ops) > 1 else []
    per_op = f"; {' and '.join(op for op, _ in ops)}: the accuracy on each op's problems" if ops else ''
    lines = ["### Exact-match accuracy", '',
             f"Greedy generation on the first {rows[0]['n'] if rows else 0} val problems; accuracy in %, mean ± std "
             f"over seeds {', '.join(map(str, grid['seeds']))} (sample std){per_op}; from accuracy.csv.", '',
             "#### Each run with its own inference procedure", '']
    cells = []
    for v in grid['variants']:
        if v not in acc:
            cells.append([v, '–', '–', 'not run', *[''] * len(ops), '0'])
            continue
        rs = acc[v].get(own[v], [])
        cells.append([v, next(iter(acc[v].values()))[0]['mode'], f"{SHORT[own[v][0]]}={own[v][1]}",
                      percent(rs, 'accuracy'), *(percent(rs, key) for _, key in ops), str(len(rs))])
    lines += table(['variant', 'mode', 'inference', 'accuracy', *(op for op, _ in ops), 'seeds'], cells) + ['']
    for knob, title in KNOB_TITLES.items():
        variants = [v for v in grid['variants'] if v in acc and own[v][0] == knob]
        xs = sorted({x for v in variants for (s, x) in acc[v] if s == knob})
        if len(xs) < 2:
            continue
        note = ["Columns: <pause> slots appended after the prompt when generating; own: the run's own setting, the "
                "pauses it was finetuned with (standard runs: 0).", ''] if knob == 'num_pause_tokens' else [
            f"Columns: the {SHORT[knob]} used when generating; own: the run's own setting (reasoning: the trained N; "
            f"reflection: one after every token, whatever the training rate).", '']
        lines += [f"#### {title}", '', *note, *table(['variant', 'own', *(f'{SHORT[knob]}={x}' for x in xs)], [
            [v, str(own[v][1]), *(percent(acc[v].get((knob, x), []), 'accuracy') for x in xs)] for v in variants]), '']
    missing = missing_runs(grid, by_variant(grid, rows))
    if missing:
        lines += [f"Not finished (left out): {', '.join(missing)}", '']
    own_acc = {v: [100 * a for a in values(acc[v].get(own[v], []), 'accuracy')] for v in acc if v in own}
    own_acc, base = {v: a for v, a in own_acc.items() if a}, grid['baseline']
    if base not in own_acc:
        return lines, None
    effect = grid['min_effect']
    stated = f" The effect of interest, stated before the runs: {effect:g} points (`min_effect`)." if effect else ''
    trained_like_base = variant_config(grid, base)['answer_only']  # a pretraining stage is no rival to a finetune
    comparisons = [compare(v, a, base, own_acc[base], '{:.1f}', ' points', effect)
                   for v, a in own_acc.items() if v != base and variant_config(grid, v)['answer_only'] == trained_like_base]
    lines += [f"#### Accuracy against {base}", '',
              f"Exact-match accuracy (%) with each run's own inference, difference of means against {base} "
              f"(positive: better), for the variants trained on the same loss as {base} (answers only, or "
              f"whole records); spread and verdict as for the losses.{stated}", '',
              *comparison_table('accuracy', base, comparisons, '{:.1f}'), '']
    equal_flops = [compare(v, own_acc[v], ref, own_acc[ref], '{:.1f}', ' points', effect)
                   for v, ref in equal_flops_pairs(grid) if v in own_acc and ref in own_acc]
    if equal_flops:
        def flops(c):  # training FLOPs of both chains, from summary.csv (runs)
            both = [chain_flops(grid, runs, v) if runs else None for v in (c['name'], c['ref'])]
            return ' vs '.join('–' if f is None else f"{f:.3g}" for f in both)
        lines += ["#### Accuracy at equal training FLOPs", '',
                  "Each thinking variant against the standard run given its training FLOPs (`flops_budget_of`: more "
                  "iterations; a finetune's FLOPs include the pretraining it starts from); positive: the thinking "
                  "variant is better.", '',
                  *comparison_table('accuracy', 'equal-FLOPs run', [{**c, 'extra': [c['ref'], flops(c)]}
                                                                     for c in equal_flops],
                                    '{:.1f}', ['equal-FLOPs run', 'training FLOPs']), '']
    return lines, dict(base=base, base_acc=statistics.mean(own_acc[base]), base_std=statistics.stdev(own_acc[base])
                       if len(own_acc[base]) > 1 else None, comparisons=comparisons, equal_flops=equal_flops)


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


def reading(grid, f, tokens_124m):
    """'- ...' lines that read a grid_section's facts f (None: not run) in words; tokens_124m: the
    text tokens of a GPT-2 124M run, for the scale."""
    title, base, lines = grid['title'], grid['baseline'], []
    if f is None:
        return [f"- {title}: not run, nothing to read."]
    equal_tokens = [c for c in f['vs_base'] if c['equal_tokens']]
    if equal_tokens:
        lines.append(reading_line(
            f"{title} at equal text tokens ({f['text_tokens']:,.0f} per run), final val loss against {base} "
            f"({statistics.mean(values(f['runs'][base], 'val_loss')):.4f})", base, equal_tokens, '{:.4f}', 'lower'))
    for c in f['equal_flops']:
        lines.append(f"- {title} at equal training FLOPs: {c['name']} against {c['ref']}: {c['verdict']} "
                     f"(difference {c['diff']:+.4f}, {SPREAD} × SE "
                     f"{'–' if c['se'] is None else format(SPREAD * c['se'], '.4f')}).")
    acc = f['accuracy']
    if acc:
        spread = '' if acc['base_std'] is None else f" ± {acc['base_std']:.1f}"
        lines.append(reading_line(
            f"{title} exact-match accuracy with each run's own inference, against {acc['base']} "
            f"({acc['base_acc']:.1f}%{spread})", acc['base'], acc['comparisons'], '{:.1f}', 'higher'))
        for c in acc['equal_flops']:
            lines.append(f"- {title} accuracy at equal training FLOPs: {c['name']} against {c['ref']}: {c['verdict']} "
                         f"(difference {c['diff']:+.1f} points, {SPREAD} × SE "
                         f"{'–' if c['se'] is None else format(SPREAD * c['se'], '.1f')}).")
    elif f['evaluated']:
        lines.append(f"- {title}: no accuracy to read (eval not run, or no run of the baseline {base!r}).")
    if f['text_tokens']:
        lines.append(f"- Scale: each {title} run of {base} trained a {f['config']['n_layer']}-layer, "
                     f"{f['config']['n_embd']}-wide model on {f['text_tokens']:,.0f} text tokens ({len(grid['seeds'])} "
                     f"seeds per variant); the GPT-2 124M configs train on {tokens_124m:,} text tokens per run, "
                     f"{tokens_124m / f['text_tokens']:,.0f}× more."
                     + (f" {len(f['missing'])} planned run(s) had not finished." if f['missing'] else ''))
    return lines


# ---- GPU.md ------------------------------------------------------------------------------------

def gpu_report(r):
    """GPU.md from the results scripts/gpu_check.py writes to gpu_check.json."""
    t, c = r['training'], r['training']['shape']
    verdict = 'every check passed' if not r['failed'] else 'FAILED:\n' + '\n'.join(f'- {f}' for f in r['failed'])
    sections = [
        f"## CUDA tests\n\n`python {r['cuda_tests']['cmd']}`: {r['cuda_tests']['summary']}\n"
        + ''.join(f"\n- {f}" for f in r['cuda_tests']['failures']),
        f"## Training: compiled, {c['dtype']}, {c['n_layer']} layers x {c['n_embd']}, block {c['block_size']}\n\n"
        f"{t['steps']} steps per variant ({t['warmup']} untimed), {t['batch_size']} sequences x {t['accum']} "
        f"micro-batches per step (reasoning N=3: half the sequences, twice the micro-batches); ms/iter is the median "
        f"timed step (bench.py, the GPU to itself); losses: the first step -> the mean of the last 5; eager diff: the "
        f"largest difference of the first {r['eager_steps']} losses, eager against compiled.\n\n" + '\n'.join(
            table(['variant', 'loss', 'eager diff', 'ms/iter', 'text tok/s', 'MFU', 'peak mem', 'time ratio',
                   'FLOP ratio', 'time / FLOP ratio'], t['rows'])),
        f"## Sampling\n\n`python {r['sampling']['cmd']}`\n\n" + '\n'.join(
            table(['variant', 'ms/token', 'vs first', 'greedy identical'], r['sampling']['rows'])),
        f"## torchrun: SIGTERM mid-run, resume\n\n`python {r['torchrun']['cmd']}`\n\n" + (
            f"stopped after iter {r['torchrun']['stopped']}, resumed to {r['torchrun']['iters']} iterations; largest "
            f"relative loss difference to the uninterrupted run {r['torchrun']['diff']:.2e}"
            if r['torchrun'].get('iters') else 'failed')]
    return (f"# GPU check\n\nGenerated by `{r['command']}` on {r['date']}, in {r['seconds']:.0f} s, from "
            f"gpu_check.json.\nMachine: {'dry run: ' * r['dry_run']}{r['machine']}.\n\n{verdict}\n\n"
            + '\n\n'.join(sections) + '\n')


# ---- plots -------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def curve(records_per_seed, key):
    """(x, mean val, min val, max val) over seeds at the evals every seed has, iter 0 left out
    (the loss at initialisation says nothing about a variant and squashes the differences)."""
    by_iter = [{r['iter']: r for r in records} for records in records_per_seed]
    iters = sorted(set.intersection(*(set(b) for b in by_iter)) - {0})
    x = [statistics.mean(b[i][key] for b in by_iter) for i in iters]
    vals = [[b[i]['losses']['val'] for b in by_iter] for i in iters]
    return x, [statistics.mean(v) for v in vals], [min(v) for v in vals], [max(v) for v in vals]


def write_loss_plots(out_root, title, curves):
    """PLOTS in out_root from {variant: [metrics.jsonl records of each finished seed]}."""
    plt = _pyplot()
    for filename, (key, xlabel) in PLOTS.items():
        fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
        tops, bottoms = [], []
        for name, per_seed in curves.items():
            if not per_seed:
                continue
            x, mean, lo, hi = curve(per_seed, key)
            line, = ax.plot(x, mean, marker='.', label=f"{name} ({len(per_seed)} seed{'s' * (len(per_seed) > 1)})")
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            # y range: the last two thirds of each curve, where the variants separate
            tail = [v for xi, v in zip(x, hi) if xi >= x[-1] / 3] or hi
            tops.append(max(tail))
            bottoms.append(min(lo))
        if tops:
            pad = 0.05 * (max(tops) - min(bottoms)) or 0.01
            ax.set_ylim(min(bottoms) - pad, max(tops) + pad)
            ax.legend(fontsize=8)
        ax.set(xlabel=xlabel, ylabel='val loss per text token', title=f"{title}: mean over seeds, band = min..max")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out_root, filename))
        plt.close(fig)


def write_accuracy_plot(grid, rows, path):
    """Accuracy against the thinking slots used at inference from accuracy.csv rows: a panel per
    inference knob (pauses, reasoning slots, reflections) that some run was scored at two or more
    values of, a line per such variant (mean ± std over seeds); nothing when there is none."""
    own = own_settings(grid)
    points = {}  # points[knob][variant][value] = accuracies over seeds, in %
    for r in rows:
        if r['variant'] in own and own[r['variant']][0] == r['setting']:
            points.setdefault(r['setting'], {}).setdefault(r['variant'], {}).setdefault(int(r['value']), []).append(
                100 * float(r['accuracy']))
    panels = [(knob, {v: points[knob][v] for v in grid['variants'] if len(points[knob].get(v, {})) > 1})
              for knob in KNOB_TITLES if knob in points]
    panels = [(knob, lines) for knob, lines in panels if lines]
    if not panels:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.8 * len(panels)), dpi=120, squeeze=False)
    for ax, (knob, lines) in zip(axes[:, 0], panels):
        for v, by_value in lines.items():
            xs = sorted(by_value)
            ax.errorbar(xs, [statistics.mean(by_value[x]) for x in xs],
                        yerr=[statistics.stdev(by_value[x]) if len(by_value[x]) > 1 else 0 for x in xs],
                        marker='o', capsize=3, label=f"{v} (own: {SHORT[knob]}={own[v][1]})")
        ax.set_xticks(sorted({x for by_value in lines.values() for x in by_value}))  # slot counts are whole
        ax.set(xlabel=INFERENCE_AXES[knob], ylabel='exact-match accuracy (%)')
        ax.set_ylim(bottom=0)
        ax.set_title('mean ± std over seeds', fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1))  # beside the lines, not over them
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---- compute against quality (thinking.csv: scripts/eval_thinking.py) ---------------------------

def _by_budget(rows):
    """{(variant, budget): rows over seeds}, in the order of rows."""
    groups = {}
    for r in rows:
        groups.setdefault((r['variant'], r['budget']), []).append(r)
    return groups


def thinking_table(rows):
    """Per variant and inference budget: thinking slots and val loss per text token, over seeds."""
    cells = [[variant, budget, mean_std([float(r['slots_per_token']) for r in rs], '{:.3f}'),
              mean_std([float(r['val_loss']) for r in rs], '{:.4f}'), str(len(rs))]
             for (variant, budget), rs in _by_budget(rows).items()]
    return table(['variant', 'inference budget', 'thinking slots per text token', 'val loss per text token',
                  'seeds'], cells)


def write_thinking_plot(rows, path, title):
    """Val loss against thinking slots per text token: per variant, the fixed budgets and the entropy
    thresholds as two lines through the no-thinking point (means over seeds)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    groups = _by_budget(rows)
    for variant in dict.fromkeys(r['variant'] for r in rows):
        color = None
        for policy, style in (('fixed', 'o-'), ('entropy', 's--')):
            points = [(statistics.mean(float(r['slots_per_token']) for r in rs), statistics.mean(float(r['val_loss']) for r in rs))
                      for (v, budget), rs in groups.items() if v == variant and budget.split()[0] in ('none', policy)]
            if len(points) > 1:
                xs, ys = zip(*sorted(points))
                line, = ax.plot(xs, ys, style, color=color, markersize=4, label=f"{variant}: {policy}" if variant else policy)
                color = line.get_color()
    ax.set(xlabel='thinking slots per text token (inference)', ylabel='val loss per text token')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def thinking_section(rows, command, out_root, output):
    """RESULTS.md's compute-against-quality curves of a grid, from its thinking.csv rows."""
    return ["### Compute against quality at inference", '',
            "Each pause and reflection run evaluated under several inference budgets: no thinking, a fixed number "
            "of thinking slots after every text token, and the entropy policy (another slot while the prediction's "
            "entropy is above the threshold, up to think_max), each teacher-forced on the same fixed val batches "
            f"with the decisions sampling makes (generation.teacher_forced), on contexts of {rows[0]['context']} text "
            "tokens (the most whose layout fits the position table at the largest budget). Written by:", '',
            '```', command, '```', '', *thinking_table(rows), '',
            *plot_links(out_root, [THINKING_PLOT], output)]
