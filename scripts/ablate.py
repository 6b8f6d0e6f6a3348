"""
Run an ablation grid (variants x seeds) of plain train.py commands, then report it.

    python scripts/ablate.py config/ablations/shakespeare_char.py --jobs=2     # run, resume, report
    python scripts/ablate.py config/ablations/shakespeare_char.py --dry_run    # print the commands only
    python scripts/ablate.py config/ablations/shakespeare_char.py --only=reasoning --wandb
    python scripts/ablate.py config/ablations/shakespeare_char.py --report_only

The grid file format (variants, seeds, '{out[<variant>]}' chains, flops_budget_of for equal
FLOPs, title, baseline, eval_args) is grids.py's.

Every run is one train.py command, printed before it runs: paste it in the repo root to redo that
run by hand (the grid's paths are relative to the repo root too). Its output goes to
<out_dir>/train.log. A run is finished when its metrics.jsonl (written by train.py at every eval)
ends with the final eval; reruns skip finished runs and resume unfinished ones (--init_from=auto). A crashed run is
reported, its dependents are skipped, the rest of the grid goes on, and the exit code is 1. A
variant that sets init_from itself resumes with --init_from=resume once its own checkpoint exists.

--jobs=N runs N at once, each with OMP_NUM_THREADS = max(1, T // N), T = $OMP_NUM_THREADS if
set, else the CPU cores. Outputs in out_root, from every finished run: summary.csv (a row per run),
then from it results.md (reporting.grid_section, as in RESULTS.md), and from the runs' metrics.jsonl
the val loss plots (reporting.PLOTS: mean over seeds per variant, band = min..max over seeds).
"""

import argparse
import datetime
import os
import shlex
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import reporting  # noqa: E402
from checkpoints import is_finished, read_metrics  # noqa: E402
from configurator import fail  # noqa: E402
from grids import add_wall_time, command, finished_runs, load_grid, plan, select, shown, summary, write_summary  # noqa: E402


def last_line(path):
    try:
        with open(path, errors='replace') as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ''
    return lines[-1] if lines else ''


def execute(grid, runs, configs, jobs, wandb_group):
    """Run what is not finished, `jobs` at once, dependencies first. Returns the failures; the wall
    time of an invocation that trained anything is added to the grid's budget.json."""
    began, trained = time.time(), False
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
                trained = True
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
    finally:
        if trained:
            add_wall_time(grid['out_root'], time.time() - began, jobs, reporting.machine().split(';')[0])
    return failures


# ---- the report -------------------------------------------------------------------------------

def report(grid, runs, jobs):
    """summary.csv, then results.md and the plots from it and the metrics."""
    out_root = grid['out_root']
    results = finished_runs(grid, runs)
    os.makedirs(out_root, exist_ok=True)
    write_summary(os.path.join(out_root, 'summary.csv'), grid, results)
    reporting.write_loss_plots(out_root, grid['title'], {name: [records for _, records in finished]
                                                         for name, finished in results.items()})
    path = os.path.join(out_root, 'results.md')
    lines, _ = reporting.grid_section(grid, summary(grid), jobs, path)
    with open(path, 'w') as f:
        f.write('\n'.join([f"<!-- Written by `python scripts/ablate.py {shown(grid['path'])}` on {datetime.date.today()} "
                           f"({reporting.machine()}) from summary.csv: do not edit by hand. -->", *lines]))
    print('\n'.join(line for line in lines if line.startswith('|')))
    print(f"wrote summary.csv, results.md and {', '.join(reporting.PLOTS)} in {out_root}")


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
        report(grid, runs, args.jobs)
        return
    selected = select(grid, runs, args.only)
    group = os.path.splitext(os.path.basename(grid_path))[0] if args.wandb else ''
    if args.dry_run:
        for k, run in enumerate(selected, 1):
            status = 'skip (finished)' if is_finished(read_metrics(run.out_dir)) else 'would run'
            cmd = command(grid, run, run.init_from, group)
            print(f"[{k}/{len(selected)}] {run.variant} seed {run.seed}: {status}\n  {shlex.join(cmd)}")
        return
    failures = execute(grid, selected, configs, args.jobs, group)
    report(grid, runs, args.jobs)
    if failures:
        print(f"{len(failures)} run(s) failed:\n" + '\n'.join(f"  {f}" for f in failures))
        sys.exit(1)


if __name__ == '__main__':
    main()
