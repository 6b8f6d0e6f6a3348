"""
Benchmark training steps or sampling across variants of one config: every speed and memory claim
in this repo is measured with this script.

    python bench.py config/train_shakespeare_char_cpu.py \
        --variants="mode=standard; mode=pause; mode=reasoning,num_reason_tokens=1"
    python bench.py config/train_gpt2.py --synthetic=True --task=sample --variants="kv_cache=True; kv_cache=False"

Config works as in train.py (config files, then --key=value; every key of training.DEFAULTS)
plus the bench keys below. `variants` is a ';'-separated list of override sets, each
`key=value,key=value`; the first is the baseline of the ratios. Every variant is measured `repeats`
times, each time in a fresh process (so peak memory is clean and nothing carries over), in
interleaved order (so slow drifts of the machine hit every variant alike); the report gives the
median over the repeats, with min and max.

task=train times training.train_step, the step train.py runs (data loading included, as in
train.py's ms/iter), on the run training.set_up builds for train.py: model, optimizer, GradScaler,
autocast and torch.compile. task=sample times
modes.generate on a randomly initialised model (speed does not depend on the weights), eagerly
and with dense-mask attention as sample.py runs it; variants that differ only in speed knobs
(kv_cache, attention, compile) must give identical greedy output, and the report says if they do.
"""

import fcntl
import json
import os
import resource
import shlex
import statistics
import sys
import time
from contextlib import contextmanager

import torch

from attention import make_attention
from configurator import configure, fail
from dataset import check_data, data_dir_of, text_vocab_size_of
from generation import check_sampling, generate
from reporting import emit_result, machine, run_child, table
from training import DEFAULTS, check_config, device_of, mode_of, new_model, precision, set_up, train_step

BENCH_KEYS = dict(
    variants='',  # 'key=value,key=value; key=value; ...'; '' = the config alone; the first is the baseline
    repeats=5,  # measurements per variant, each in a fresh process (unless fresh_process=False)
    bench_iters=10,  # timed optimizer steps per measurement (task=train)
    # untimed steps first: optimizer steps (train) or generated tokens (sample); they absorb
    # torch.compile and allocator warmup. (Not `warmup_iters`: that is train.py's LR warmup,
    # which config files set to 100s or 1000s.)
    bench_warmup=3,
    task='train',  # 'train' or 'sample'
    synthetic=False,  # uniform random tokens of the dataset's vocab (also used when train.bin is missing)
    json_out='',  # path for every raw measurement and the summaries as JSON
    # a file: task=train times its steps holding an exclusive lock on it, so that bench.py processes
    # sharing one GPU (scripts/gpu_check.py) compile at the same time but time their steps one at a time
    timing_lock='',
    threads=0,  # torch threads in each measurement; 0 = torch's default
    # False: every measurement in this process, one after another, saving a start-up each (a crash then
    # ends the run, and on the CPU peak memory is the whole process's)
    fresh_process=True,
    # task=sample: one timed generate per measurement; names and meanings as in sample.py
    max_new_tokens=200,
    prompt_len=16,  # random text tokens
    num_samples=1,  # sequences generated together (the batch)
    temperature=1.0,
    top_k=200,
    kv_cache=True,
    num_reflect_tokens=1,
    think_policy='fixed',  # 'entropy': think_max candidate slots per token, kept while above think_threshold
    think_threshold=1.5,
    think_max=3,
)
PARENT_KEYS = ('variants', 'repeats', 'task', 'json_out', 'fresh_process')  # one value for the whole run, never per variant
SPEED_KNOBS = ('kv_cache', 'attention', 'compile')  # change speed, must not change greedy output


# ---- one measurement, in a child process ------------------------------------------------------

def data_source(c):
    """(data dir, text vocab, synthetic?): random tokens when asked to or when there is no data."""
    data_dir = data_dir_of(c)
    synthetic = c['synthetic'] or not os.path.exists(os.path.join(data_dir, 'train.bin'))
    return data_dir, text_vocab_size_of(data_dir), synthetic


class Timer:
    """Wall time (the measurement) and this process's CPU time (a cross-check: on a CPU shared
    with other processes, wall time grows with their load while CPU time mostly does not)."""

    def __init__(self, device):
        self.cuda = device.startswith('cuda')

    def __enter__(self):
        if self.cuda:  # wait for queued GPU work, so the timer measures work and not launches
            torch.cuda.synchronize()
        self.t0, self.p0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.ms = (time.perf_counter() - self.t0) * 1000
        self.cpu_ms = (time.process_time() - self.p0) * 1000


def peak_memory(device):
    """(bytes, what was measured): CUDA's allocator peak, or on CPU the whole process's peak RSS."""
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated(device), 'CUDA max_memory_allocated'
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'peak RSS of the whole process (ru_maxrss)'


@contextmanager
def exclusive(lock_path):
    """Hold an exclusive lock on lock_path (nothing when it is '')."""
    if not lock_path:
        yield
        return
    with open(lock_path, 'w') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def measure_train(c):
    """One measurement of config c's training step: train.py's set-up and step (training.set_up,
    training.train_step), micro-batches made just before their forward pass as there."""
    run = set_up(c, synthetic=data_source(c)[2])
    step_ms, step_cpu_ms, nonfinite, losses = [], [], 0, []

    def step(it):
        run.iter_num = it
        with Timer(run.device) as t:
            loss, finite, _ = train_step(run)
        losses.append(loss.item())  # outside the timer: the step itself syncs once, this is a second
        return t, finite

    for it in range(c['bench_warmup']):
        step(it)
    with exclusive(c['timing_lock']):
        for it in range(c['bench_warmup'], c['bench_warmup'] + c['bench_iters']):
            t, finite = step(it)
            step_ms.append(t.ms)
            step_cpu_ms.append(t.cpu_ms)
            nonfinite += not finite  # a skipped update is faster: the report flags it
    mem, mem_kind = peak_memory(run.device)
    return dict(step_ms=step_ms, step_cpu_ms=step_cpu_ms, ms=statistics.median(step_ms), losses=losses,
                cpu_ms=statistics.median(step_cpu_ms), nonfinite=nonfinite, peak_mem=mem, mem_kind=mem_kind,
                text_per_iter=run.text_per_iter, slots_per_text=run.mode.slots_per_text_token(c['block_size']),
                flops_per_text=run.flops_per_text_token, peak_flops=run.peak_flops,
                params=run.model.get_num_params(), synthetic=run.synthetic, text_vocab=run.mode.text_vocab_size,
                device=run.device, dtype=run.dtype, machine=machine(run.device))


def measure_sample(c, greedy):
    device = device_of(c)
    dtype, autocast = precision(c, device)
    mode = mode_of(c)
    text_vocab = mode.text_vocab_size
    torch.manual_seed(c['seed'])  # the same weights and prompt in every variant of the same shape
    model = new_model(c, mode).to(device).eval()
    gen = torch.Generator(device=device).manual_seed(c['seed'])
    prompt = torch.randint(text_vocab, (c['num_samples'], c['prompt_len']), generator=gen, device=device)

    def run(n, temperature, top_k):
        with autocast:
            return generate(model, mode, prompt, n, temperature=temperature, top_k=top_k,
                            kv_cache=c['kv_cache'], generator=gen)

    run(c['bench_warmup'], c['temperature'], c['top_k'])
    with Timer(device) as t:
        out = run(c['max_new_tokens'], c['temperature'], c['top_k'])
    mem, mem_kind = peak_memory(device)  # before the greedy run, which is not part of the measurement
    greedy_ids = None
    if greedy:  # the timed run was greedy already at temperature 0
        greedy_ids = (out if c['temperature'] == 0 else run(c['max_new_tokens'], 0.0, None))[:, c['prompt_len']:].tolist()
    return dict(ms=t.ms / c['max_new_tokens'], cpu_ms=t.cpu_ms / c['max_new_tokens'], seconds=t.ms / 1000,
                peak_mem=mem, mem_kind=mem_kind,
                tokens=c['num_samples'] * c['max_new_tokens'], greedy=greedy_ids,
                params=model.get_num_params(), text_vocab=text_vocab, device=device, dtype=dtype,
                machine=machine(device))


def measure(c, greedy):
    if c['threads']:
        torch.set_num_threads(c['threads'])
    if c['device'].startswith('cuda') and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # per measurement, also when several share a process
    return measure_train(c) if c['task'] == 'train' else measure_sample(c, greedy)


# ---- the parent: variants, scheduling, report -------------------------------------------------

def parse_variants(c):
    """[(name, overrides, config)]; just the config itself when `variants` is empty."""
    out = []
    for spec in [s.strip() for s in c['variants'].split(';') if s.strip()] or ['']:
        overrides = ['--' + kv.strip() for kv in spec.split(',') if kv.strip()]
        for o in overrides:
            if o[2:].split('=', 1)[0] in PARENT_KEYS:
                fail(f"variant {spec!r} sets {o[2:]!r}: {', '.join(PARENT_KEYS)} apply to the whole run")
        cfg = configure(c, overrides)
        try:  # a bad setting fails here in one line, not in every child
            check_config(cfg)
            data_dir, _, synthetic = data_source(cfg)
            mode_of(cfg)
            check_sampling(cfg['temperature'], cfg['top_k'])
            make_attention(cfg['attention'], device_of(cfg), cfg['dropout'], cfg['n_head'])
        except ValueError as e:
            fail(f"{spec or 'the config'}: {e}")
        if not synthetic:
            check_data(data_dir, cfg['block_size'])
        out.append((spec or '(config)', overrides, cfg))
    return out


def summarize(task, runs, baseline):
    """Medians over the repeats. A repeat's own value is its median step time (robust to a stray
    slow step: a GC pause, a neighbour process), or its ms per generated token."""
    ms = [r['ms'] for r in runs]
    first = runs[0]
    s = dict(ms_median=statistics.median(ms), ms_min=min(ms), ms_max=max(ms),
             cpu_ms_median=statistics.median(r['cpu_ms'] for r in runs),
             peak_mem_max=max(r['peak_mem'] for r in runs))
    s['ratio'] = s['ms_median'] / baseline['ms_median'] if baseline else None
    s['cpu_ratio'] = s['cpu_ms_median'] / baseline['cpu_ms_median'] if baseline else None
    if task == 'train':
        s['text_tps'] = first['text_per_iter'] / (s['ms_median'] / 1000)
        s['slot_tps'] = s['text_tps'] * first['slots_per_text']
        s['mfu'] = first['flops_per_text'] * s['text_tps'] / first['peak_flops'] if first['peak_flops'] else None
        # the work each layout requires per text token, against the baseline's: a time ratio above
        # it is the layout running less efficiently, not just doing more
        s['flops_per_text'] = first['flops_per_text']
        s['flops_ratio'] = s['flops_per_text'] / baseline['flops_per_text'] if baseline else None
        s['nonfinite_steps'] = sum(r['nonfinite'] for r in runs)
    else:
        s['text_tps'] = first['tokens'] / (statistics.median(r['seconds'] for r in runs))
    return s


def same_output_groups(variants):
    """Lists (2 or more) of variant indices whose configs differ only in SPEED_KNOBS."""
    groups = {}
    for i, (_, _, cfg) in enumerate(variants):
        key = json.dumps({k: v for k, v in cfg.items() if k not in SPEED_KNOBS}, sort_keys=True)
        groups.setdefault(key, []).append(i)
    return [m for m in groups.values() if len(m) > 1]


def greedy_verdicts(variants, results):
    """{variant index: 'yes' / 'no (...)'}: is its greedy output that of its group's first variant?"""
    verdict = {}
    for members in same_output_groups(variants):
        outputs = [next((r['greedy'] for r in results[i] if r['greedy'] is not None), None) for i in members]
        if any(o is None for o in outputs):
            continue  # a crashed variant: nothing to compare
        ref = outputs[0]
        for i, out in zip(members, outputs):
            if out == ref:
                verdict[i] = 'yes'
            else:
                diff = next((t for t, (a, b) in enumerate(zip(sum(ref, []), sum(out, []))) if a != b), None)
                verdict[i] = f"no (first difference at token {diff})"
    return verdict


def fmt_mem(n):
    return f"{n / 2**20:,.0f} MiB"


def fmt_ratio(r):
    return 'n/a (baseline failed)' if r is None else f"{r:.2f}x"


def report(c, variants, errors, summaries, verdict, command, load, info):
    train_task = c['task'] == 'train'
    if info:
        print(f"\nmachine: {info['machine']}; device {info['device']}, {info['dtype']}; load average "
              f"{load:.2f} at start, {os.getloadavg()[0]:.2f} at end (other processes skew wall times)")
        print(f"peak memory: {info['mem_kind']}, max over repeats")
    print(f"command: {command}")
    if info and train_task:
        data = 'synthetic random tokens' if info['synthetic'] else data_dir_of(c)
        print(f"train: {info['params'] / 1e6:.2f}M params, batch {c['batch_size']} x block {c['block_size']} x "
              f"accum {c['gradient_accumulation_steps']}, vocab {info['text_vocab']}, data: {data}, "
              f"compile={c['compile']}; {c['repeats']} repeats x {c['bench_iters']} timed steps "
              f"(+{c['bench_warmup']} warmup)")
    elif info:
        print(f"sample: {info['params'] / 1e6:.2f}M params, vocab {info['text_vocab']}, prompt {c['prompt_len']}, "
              f"{c['max_new_tokens']} new tokens x {c['num_samples']} samples, temperature {c['temperature']}, "
              f"top_k {c['top_k']}; {c['repeats']} repeats")
    unit = 'ms/iter' if train_task else 'ms/token'
    cols = ['variant', f'{unit} median', 'min', 'max', 'vs baseline', 'text tok/s']
    cols += ['slot tok/s', 'peak mem', 'MFU', 'FLOPs/text tok vs baseline'] if train_task else ['peak mem', 'greedy identical']
    cols += [f'CPU-time {unit}', 'CPU-time vs baseline']
    rows = []
    for i, (name, _, _) in enumerate(variants):
        s = summaries[i]
        if s is None:
            rows.append([name, 'FAILED'] + [''] * (len(cols) - 2))
            continue
        cells = [name, f"{s['ms_median']:.2f}", f"{s['ms_min']:.2f}", f"{s['ms_max']:.2f}", fmt_ratio(s['ratio']),
                 f"{s['text_tps']:,.0f}"]
        if train_task:
            cells += [f"{s['slot_tps']:,.0f}", fmt_mem(s['peak_mem_max']),
                      f"{100 * s['mfu']:.1f}%" if s['mfu'] is not None else 'n/a', fmt_ratio(s['flops_ratio'])]
        else:
            cells += [fmt_mem(s['peak_mem_max']), verdict.get(i, '-')]
        rows.append(cells + [f"{s['cpu_ms_median']:.2f}", fmt_ratio(s['cpu_ratio'])])
    print('\n' + '\n'.join(table(cols, rows)))
    for i, (name, _, _) in enumerate(variants):
        if summaries[i] and summaries[i].get('nonfinite_steps'):
            print(f"warning: {name}: {summaries[i]['nonfinite_steps']} timed steps had a non-finite loss "
                  f"or gradient and skipped the update")
        for err in errors[i]:
            print(f"\n{name} crashed: {err}")


def main(argv):
    command = ' '.join(shlex.quote(a) for a in ['python', sys.argv[0], *argv])
    c = configure({**DEFAULTS, **BENCH_KEYS}, argv)
    if c['task'] not in ('train', 'sample'):
        fail(f"task={c['task']!r} must be 'train' or 'sample'")
    if c['repeats'] < 1 or c['bench_iters'] < 1 or c['bench_warmup'] < 0 or c['max_new_tokens'] < 1:
        fail("repeats, bench_iters and max_new_tokens must be >= 1, bench_warmup >= 0")
    variants = parse_variants(c)
    n = len(variants)
    load = os.getloadavg()[0]
    # only variants that should match another's output need the extra greedy run
    greedy_needed = {i for m in same_output_groups(variants) for i in m} if c['task'] == 'sample' else set()

    results, errors = [[] for _ in variants], [[] for _ in variants]
    for rep in range(c['repeats']):
        # round robin, starting one variant later each round: no variant always runs first
        for i in [(rep + k) % n for k in range(n)]:
            name, _, cfg = variants[i]
            if errors[i]:
                continue  # it crashed once; the same config would crash again
            greedy = rep == 0 and i in greedy_needed
            if c['fresh_process']:
                payload = json.dumps(dict(config=cfg, greedy=greedy))
                result, err = run_child([os.path.abspath(__file__), f'--_child={payload}'])
            else:
                result, err = measure(cfg, greedy), None
            if err:
                errors[i].append(err)
                print(f"[{name}] repeat {rep + 1}: CRASHED", flush=True)
            else:
                results[i].append(result)
                unit = 'iter' if c['task'] == 'train' else 'token'
                print(f"[{name}] repeat {rep + 1}: {result['ms']:.2f} ms/{unit} ({result['cpu_ms']:.2f} CPU-time ms)",
                      flush=True)

    base = summarize(c['task'], results[0], None) if results[0] else None
    summaries = [summarize(c['task'], r, base) if r else None for r in results]
    verdict = greedy_verdicts(variants, results) if c['task'] == 'sample' else {}
    info = next((r[0] for r in results if r), None)  # what every measurement shares: machine, sizes
    report(c, variants, errors, summaries, verdict, command, load, info)

    if c['json_out']:
        with open(c['json_out'], 'w') as f:
            json.dump(dict(command=command, task=c['task'], config=c, variants=[
                dict(name=name, overrides=ov, measurements=results[i], summary=summaries[i],
                     greedy_identical=verdict.get(i), errors=errors[i])
                for i, (name, ov, _) in enumerate(variants)]), f, indent=1)
    if any(errors):
        raise SystemExit(1)


if __name__ == '__main__':
    if len(sys.argv) == 2 and sys.argv[1].startswith('--_child='):
        payload = json.loads(sys.argv[1][len('--_child='):])
        emit_result(measure(payload['config'], payload['greedy']))
    else:
        main(sys.argv[1:])
