"""
scripts/make_results.py on hand-made grid outputs (no training): a Tiny Shakespeare-like grid whose
summary.csv is written by scripts/ablate.py's writer (grids.write_summary), and an arithmetic grid
with accuracy files.

    the per-variant table holds the CSV's mean ± std; the verdicts follow the chosen losses (one
    variant clearly beyond the seed spread, one within, and the equal-FLOPs pair)
    the plots are copied into the results dir
    the GPT-2 124M GPU-hours for config/train_gpt2.py equal a hand computation from the config
    the arithmetic accuracy comparison uses each run's own inference setting
    the hand-written paragraph has no digits; a grid without summary.csv is a one-line error,
    or a "not run" section with --allow_missing

Whole file: about 15 s on one thread.
"""

import csv
import json
import math
import os
import re
import statistics
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import grids  # noqa: E402

ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
STD, BETTER, SAME, EQUAL = 'standard', 'reasoning N=1', 'pause 10%', 'standard, FLOPs of reasoning N=1'
# final val losses per seed: reasoning is clearly lower, pause within the spread of standard's,
# standard at reasoning's FLOPs in between (so reasoning is lower than it too, beyond the spread)
LOSSES = {STD: [2.00, 2.01, 1.99], BETTER: [1.90, 1.91, 1.89], SAME: [2.005, 1.985, 2.015], EQUAL: [1.95, 1.96, 1.94]}
FLOPS_PER_TOKEN = {STD: 5.0e6, BETTER: 10.0e6, SAME: 5.5e6, EQUAL: 5.0e6}
ITERS = {STD: 1000, BETTER: 1000, SAME: 1000, EQUAL: 2000}
PLOTS = ('val_vs_text_tokens.png', 'val_vs_flops.png', 'val_vs_time.png')
ACCURACY_FIELDS = ['variant', 'seed', 'run_dir', 'mode', 'setting', 'value', 'accuracy', 'correct', 'n',
                   'char_accuracy', 'accuracy_add', 'accuracy_mul', 'seconds']
PAUSE_FT, STD_FT, STD_FT_EQUAL = 'PausePT-PauseFT', 'StdPT-StdFT', 'StdPT-StdFT, FLOPs of PausePT-PauseFT'


def write_grid(path, base, out_root, variants, **keys):
    with open(path, 'w') as f:
        f.write(f"base = {base!r}\nseeds = [1, 2, 3]\nout_root = {str(out_root)!r}\nvariants = {variants!r}\n")
        f.write(''.join(f"{k} = {v!r}\n" for k, v in keys.items()))


def write_png(path):
    import matplotlib.pyplot as plt
    plt.imsave(path, [[0.0, 1.0], [1.0, 0.0]])


def write_summary(grid_path, losses, clean=()):
    """summary.csv through grids.write_summary, from made-up final metrics records."""
    os.chdir(REPO)  # the grid's base config is relative to the repo root
    grid = grids.load_grid(str(grid_path))
    results = {}
    for name, per_seed in losses.items():
        for seed, loss in zip(grid['seeds'], per_seed):
            run = grids.Run(name, seed, grids.run_dir(grid, name, seed), [f'--seed={seed}'], 'auto', [])
            iters, fptt = ITERS.get(name, 600), FLOPS_PER_TOKEN.get(name, 1e6)
            tokens = iters * 12 * 64
            record = {'iter': iters, 'final': True, 'text_tokens': tokens, 'train_flops': fptt * tokens,
                      'flops_per_text_token': fptt, 'train_time_s': 60.0 + seed, 'text_tok_s': 3000.0 + seed,
                      'slot_tok_s': 3000.0 + seed, 'losses': {'train': loss, 'val': loss}}
            if name in clean:
                record['losses']['val_clean'] = loss + 0.01
            results.setdefault(name, []).append((run, [record]))
    os.makedirs(grid['out_root'], exist_ok=True)
    grids.write_summary(os.path.join(grid['out_root'], 'summary.csv'), grid, results)
    with open(os.path.join(grid['out_root'], 'results.md'), 'w') as f:
        f.write("# grid\n\nWritten by `python scripts/ablate.py grid.py` on a test machine.\n")
    return grid


def load_grid_in_repo(path):
    """grids.load_grid of a grid file whose base config is relative to the repo root."""
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        return grids.load_grid(str(path))
    finally:
        os.chdir(cwd)


def make_results(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'make_results.py'), *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=120)


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('make_results')
    cwd = os.getcwd()
    try:
        write_grid(tmp / 'sc.py', 'config/train_shakespeare_char_cpu.py', tmp / 'sc', {
            STD: dict(mode='standard'), BETTER: dict(mode='reasoning', num_reason_tokens=1),
            SAME: dict(mode='pause', pause_rate=0.1), EQUAL: dict(mode='standard', flops_budget_of=BETTER)})
        write_summary(tmp / 'sc.py', LOSSES, clean=[SAME])
        for name in PLOTS:
            write_png(tmp / 'sc' / name)
        with open(tmp / 'sc' / 'thinking.csv', 'w', newline='') as f:  # scripts/eval_thinking.py --grid
            w = csv.writer(f)
            w.writerow(['variant', 'seed', 'budget', 'think_threshold', 'think_max', 'context', 'slots_per_token',
                        'val_loss', 'seconds'])
            for seed, loss in zip([1, 2, 3], [2.0, 2.1, 2.2]):
                w.writerow([SAME, seed, 'none', 'inf', 0, 14, 0.0, loss, 1.0])
                w.writerow([SAME, seed, 'entropy > 2', 2.0, 4, 14, 0.5 * seed, loss + 0.3, 1.0])
        write_png(tmp / 'sc' / 'thinking.png')
        arith = {STD_FT: dict(mode='standard'), PAUSE_FT: dict(mode='pause', num_pause_tokens=4),
                 STD_FT_EQUAL: dict(mode='standard', flops_budget_of=PAUSE_FT)}
        write_grid(tmp / 'ar.py', 'config/arithmetic/pretrain.py', tmp / 'ar', arith, min_effect=5.0)
        write_summary(tmp / 'ar.py', {name: [0.5, 0.51, 0.49] for name in arith})
        grids.add_wall_time(str(tmp / 'ar'), 600.0, 2, 'CPU A, 2 cores')  # two invocations of ablate.py --jobs=2
        grids.add_wall_time(str(tmp / 'ar'), 120.0, 2, 'CPU A, 2 cores')
    finally:
        os.chdir(cwd)
    # accuracy per run: the own setting (0 pauses for StdFT, 4 for PauseFT) and one other setting that
    # must not count (PauseFT evaluated with 0 pauses); standard at PauseFT's FLOPs within 5 points of
    # PauseFT with a small spread (resolved), StdFT far below it
    own = {STD_FT: ('standard', 0, [0.50, 0.52, 0.48]), PAUSE_FT: ('pause', 4, [0.80, 0.82, 0.78]),
           STD_FT_EQUAL: ('standard', 0, [0.79, 0.80, 0.78])}
    with open(tmp / 'ar' / 'accuracy.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(ACCURACY_FIELDS)
        for name, (mode, m, accs) in own.items():
            for seed, acc in zip([1, 2, 3], accs):
                run_dir = tmp / 'ar' / grids.slug(name) / f'seed{seed}'
                run_dir.mkdir(parents=True)
                with open(run_dir / 'accuracy.json', 'w') as g:
                    json.dump({'config': {'mode': mode, 'num_pause_tokens': m}}, g)
                w.writerow([name, seed, run_dir, mode, 'num_pause_tokens', m, acc, 0, 100, acc, '', '', 30.0])
                if m:
                    w.writerow([name, seed, run_dir, mode, 'num_pause_tokens', 0, 0.1, 0, 100, 0.1, '', '', 30.0])
    with open(tmp / 'ar' / 'accuracy.md', 'w') as f:
        f.write("# Arithmetic exact-match accuracy\n\n| variant | accuracy |\n|---|---|\n| made up | here |\n")
    write_png(tmp / 'ar' / 'accuracy_vs_thinking.png')
    proc = make_results(tmp / 'sc.py', tmp / 'ar.py',
                        f'--output={tmp / "RESULTS.md"}', f'--results_dir={tmp / "results"}',
                        '--assumed_mfu=0.5', '--owt_seeds=2')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp / 'RESULTS.md') as f:
        text = f.read()
    return dict(tmp=tmp, text=text)


def row(text, first_cell):
    lines = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    assert lines, first_cell
    return lines


def test_table_holds_the_csv_mean_and_std(made):
    with open(made['tmp'] / 'sc' / 'summary.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    for name in LOSSES:
        vals = [float(r['val_loss']) for r in rows if r['variant'] == name]
        assert len(vals) == 3
        table_row = row(made['text'], name)[0]  # the per-variant table comes first
        assert table_row.startswith(f"| {name} | {statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f} |")
    clean = [float(r['val_clean']) for r in rows if r['variant'] == SAME]
    assert f"{statistics.mean(clean):.4f} ± {statistics.stdev(clean):.4f}" in row(made['text'], SAME)[0]
    assert "| 10.00 M (2.00×) |" in row(made['text'], BETTER)[0]  # FLOPs per text token relative to standard


def test_verdicts(made):
    text = made['text']
    assert row(text, BETTER)[1].endswith("| lower than standard by 0.1000, beyond the seed spread |")
    assert row(text, SAME)[1].endswith("| within the seed spread |")
    # the equal-FLOPs pair: reasoning against standard given its FLOPs
    equal = [line for line in row(text, BETTER) if f"| {EQUAL} |" in line]
    assert equal and equal[0].endswith(f"| lower than {EQUAL} by 0.0500, beyond the seed spread |")
    # Welch t of reasoning against standard: -0.1 / sqrt(2 * 0.01^2 / 3)
    assert f"| {-0.1 / math.sqrt(2 * 0.01 ** 2 / 3):+.1f} |" in row(text, BETTER)[1]
    reading = text[text.index('## Reading'):]
    assert f"lower beyond the seed spread: {BETTER} (-0.1000)" in reading
    assert f"Within the seed spread: {SAME}" in reading
    assert "higher beyond the seed spread: PausePT-PauseFT (+30.0)" in reading  # 80% against 50%, own inference


def test_accuracy_at_equal_flops_and_the_effect_of_interest(made):
    text = made['text']
    assert 'The effect of interest, stated before the runs: 5 points (`min_effect`).' in text
    # PauseFT (80 ± 2) against standard given its FLOPs (79 ± 1): +1.0 points, 2 x SE = 2 sqrt(4/3 + 1/3) < 5
    two_se = 2 * math.sqrt((0.02 ** 2 + 0.01 ** 2) / 3) * 100
    line = [r for r in row(text, PAUSE_FT) if f"| {STD_FT_EQUAL} |" in r and "| +1.0 |" in r]  # the accuracy table's
    flops = 600 * 12 * 64 * 1e6  # write_summary's made-up runs: 600 iterations, 1 MFLOP per text token
    assert line == [f"| {PAUSE_FT} | {STD_FT_EQUAL} | {flops:.3g} vs {flops:.3g} | +1.0 | 2.0 | 1.0 | {two_se:.1f} | "
                    f"{2 / two_se:+.1f} | within the seed spread, "
                    f"resolved (2 × SE < 5.0 points, the effect of interest) |"]
    reading = text[text.index('## Reading'):]
    assert (f"accuracy at equal training FLOPs: {PAUSE_FT} against {STD_FT_EQUAL}: within the seed spread, resolved"
            in reading)
    assert f"against {STD_FT} (50.0% ± 2.0)" in reading


def test_each_grid_states_its_budget(made):
    machine = made['text'].split('## Machine')[1].split('\n## ')[0]
    # budget.json: 720 s over two invocations; the accuracy eval: 12 rows of 30 s of generation
    assert "`scripts/ablate.py` wall time 12.0 min with --jobs=2 (over 2 invocation(s)) on CPU A, 2 cores;" in machine
    assert "exact-match eval 6.0 min of generation" in machine
    assert "no budget.json (wall time not recorded)" in machine  # the loss grid did not record one


def test_compute_against_quality_curves(made):
    """A grid's thinking.csv (scripts/eval_thinking.py) becomes a table over seeds per budget."""
    text = made['text']
    assert '### Compute against quality at inference' in text and 'contexts of 14 text tokens' in text
    lines = [line for line in row(text, SAME) if '| entropy > 2 |' in line]
    assert lines == [f"| {SAME} | entropy > 2 | 1.000 ± 0.500 | 2.4000 ± 0.1000 | 3 |"]


def test_report_files_are_kept_and_regenerate_the_same_results(made, tmp_path):
    tmp = made['tmp']
    for grid, names in (('sc', ['summary.csv', 'thinking.csv', *PLOTS, 'thinking.png']),
                        ('ar', ['summary.csv', 'accuracy.csv', 'budget.json', 'accuracy_vs_thinking.png'])):
        for name in names:
            assert (tmp / 'results' / grid / name).read_bytes() == (tmp / grid / name).read_bytes()
        for name in names[-1:]:
            assert f"(results/{grid}/{name})" in made['text']
    # without the runs (an out_root with nothing), the kept files give the same RESULTS.md
    proc = make_results(f"{tmp / 'sc.py'}={tmp_path / 'gone'}", f"{tmp / 'ar.py'}={tmp_path / 'gone'}",
                        f'--output={tmp / "RESULTS.md"}', f'--results_dir={tmp / "results"}',
                        '--assumed_mfu=0.5', '--owt_seeds=2')
    assert proc.returncode == 0, proc.stderr
    again = (tmp / 'RESULTS.md').read_text()
    assert again.split('## Machine')[1].split('\n', 2)[2] == made['text'].split('## Machine')[1].split('\n', 2)[2]


def test_gpu_hours_of_train_gpt2_match_a_hand_computation(made):
    # config/train_gpt2.py: 12 layers, 768 wide, block 1024, no bias, GPT-2's vocab + 2 thinking ids padded to 64
    L, d, T, V = 12, 768, 1024, 50304
    block_params = L * (12 * d * d + 2 * d)  # qkv, proj, 2-layer MLP, two LayerNorm weights
    causal_pairs = T * (T + 1) // 2
    per_token = (6 * block_params * T + 6 * V * d * T + 12 * d * L * causal_pairs) / T
    tokens = 600000 * 40 * 12 * 1024
    cells = row(made['text'], '`config/train_gpt2.py`')[0].split(' | ')
    for gpu, peak in [('A100', 312e12), ('H100', 989e12)]:
        hours = per_token * tokens / (peak * 0.5) / 3600
        assert f"{hours:,.0f} / {2 * hours:,.0f}" in cells, (gpu, cells)
    assert f"{per_token * tokens:.3g}" in cells


def test_no_digits_in_the_hand_written_paragraph(made):
    text = made['text']
    paragraph = text[text.index('*Interpretation'):]
    assert paragraph.strip() and not re.search(r'\d', paragraph)
    assert text.startswith('<!-- Generated by `python scripts/make_results.py`')


def test_missing_grid(tmp_path, made):
    empty = tmp_path / 'nothing'
    args = [made['tmp'] / 'sc.py', f'config/ablations/arithmetic.py={empty}',
            f'--output={tmp_path / "R.md"}', f'--results_dir={tmp_path / "results"}']
    proc = make_results(*args)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: no summary.csv in {empty} nor in {tmp_path / 'results' / 'arithmetic'}: run `python "
        f"scripts/ablate.py config/ablations/arithmetic.py --jobs=2` first (or pass --allow_missing)"]
    proc = make_results(*args, '--allow_missing')
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / 'R.md').read_text()
    section = text[text.index('## Arithmetic'):text.index('## What testing')]
    assert 'Not run' in section and 'python scripts/eval_arithmetic.py --grid=config/ablations/arithmetic.py' in section
    assert not re.search(r'\d\.\d', section)  # no numbers where nothing ran


def test_one_equal_flops_run_serves_variants_of_the_same_flops():
    sys.path.insert(0, REPO)
    import reporting
    grid = {'variants': {'N=1': {}, 'N=1 stopgrad': {}, 'N=3': {},
                         'std at N=1': dict(flops_budget_of=['N=1', 'N=1 stopgrad']),
                         'std at N=3': dict(flops_budget_of='N=3')}}
    assert reporting.equal_flops_pairs(grid) == [('N=1', 'std at N=1'), ('N=1 stopgrad', 'std at N=1'),
                                                 ('N=3', 'std at N=3')]


def test_accuracy_plot_has_a_panel_per_inference_knob_scored_at_two_values(tmp_path):
    """Reflection and reasoning runs scored at several slot counts get a panel each; a standard run
    scored at its own setting only draws nothing."""
    import matplotlib.image
    import reporting
    variants = {STD_FT: dict(mode='standard'), 'RefFT': dict(mode='reflection'),
                'ReasFT': dict(mode='reasoning', num_reason_tokens=1)}
    write_grid(tmp_path / 'g.py', 'config/arithmetic/pretrain.py', tmp_path / 'g', variants)
    grid = load_grid_in_repo(tmp_path / 'g.py')

    def rows(scored):
        return [dict(zip(ACCURACY_FIELDS, [name, seed, '', '', setting, value, 0.5 + 0.01 * seed, 0, 100, 0.5, '', '', 1.0]))
                for name, setting, values in scored for value in values for seed in (1, 2)]
    own_only = [(STD_FT, 'num_pause_tokens', [0]), ('RefFT', 'num_reflect_tokens', [1]), ('ReasFT', 'num_reason_tokens', [1])]
    reporting.write_accuracy_plot(grid, rows(own_only), str(tmp_path / 'none.png'))
    assert not (tmp_path / 'none.png').exists()
    curves = [(STD_FT, 'num_pause_tokens', [0]), ('RefFT', 'num_reflect_tokens', [0, 1, 2]),
              ('ReasFT', 'num_reason_tokens', [0, 1])]
    reporting.write_accuracy_plot(grid, rows(curves), str(tmp_path / 'two.png'))
    reporting.write_accuracy_plot(grid, rows(curves[:2]), str(tmp_path / 'one.png'))
    two, one = (matplotlib.image.imread(tmp_path / name).shape[0] for name in ('two.png', 'one.png'))
    assert two == 2 * one


def test_accuracy_is_compared_only_between_variants_trained_on_the_same_loss(tmp_path):
    """A pretraining stage (whole records) is listed with its accuracy but not set against the
    finetuned (answers-only) baseline; another finetune is."""
    import reporting
    variants = {'PT': dict(mode='standard'), STD_FT: dict(mode='standard', answer_only=True),
                PAUSE_FT: dict(mode='pause', num_pause_tokens=4, answer_only=True)}
    write_grid(tmp_path / 'g.py', 'config/arithmetic/pretrain.py', tmp_path / 'g', variants, baseline=STD_FT)
    grid = load_grid_in_repo(tmp_path / 'g.py')
    own = {'PT': ('standard', 0), STD_FT: ('standard', 0), PAUSE_FT: ('pause', 4)}
    rows = [dict(zip(ACCURACY_FIELDS, [name, seed, '', mode, 'num_pause_tokens', m, 0.1 * seed, 0, 100, 0.5, '', '', 1.0]))
            for name, (mode, m) in own.items() for seed in (1, 2, 3)]
    lines, facts = reporting.accuracy_section(grid, rows)
    assert [c['name'] for c in facts['comparisons']] == [PAUSE_FT]
    assert any(line.startswith('| PT | standard |') for line in lines)


def test_the_budgets_of_several_grids_are_summed(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('make_results', os.path.join(REPO, 'scripts', 'make_results.py'))
    make_results_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_results_module)
    sections = []
    for name, seconds in (('a', 600.0), ('b', 300.0), ('c', None)):
        out_root = tmp_path / name
        out_root.mkdir()
        if seconds:
            grids.add_wall_time(str(out_root), seconds, 2, 'CPU A, 2 cores')
        runs = {'v': [{'train_time_s': '60.0'}]}
        sections.append(({'title': name, 'out_root': str(out_root)}, {'runs': runs}))
    lines = make_results_module.machine_section(sections)
    assert "- All 2 grids with a budget: 15.0 min of `scripts/ablate.py` wall time on CPU A, 2 cores." in lines
    assert not any('grids with a budget' in line for line in make_results_module.machine_section(sections[:1]))
