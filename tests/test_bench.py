"""bench.py end to end on a tiny model: the JSON report's medians, ratios and slot accounting, and
the greedy-identity check of the KV cache."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=2',
        '--gradient_accumulation_steps=1', '--device=cpu', '--compile=False', '--synthetic=True',
        '--bench_warmup=1']


def bench(tmp_path, *args):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, 'bench.py', *TINY, *args, f'--json_out={out}'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f), proc.stdout


def test_train_variants(tmp_path):
    report, stdout = bench(tmp_path, '--repeats=2', '--bench_iters=2',
                           '--variants=mode=standard; mode=reasoning,num_reason_tokens=1')
    standard, reasoning = report['variants']
    assert [v['name'] for v in report['variants']] == ['mode=standard', 'mode=reasoning,num_reason_tokens=1']
    for v in (standard, reasoning):
        assert not v['errors']
        assert len(v['measurements']) == 2 and all(len(m['step_ms']) == 2 for m in v['measurements'])
        s = v['summary']
        assert s['ms_min'] <= s['ms_median'] <= s['ms_max'] and s['ms_median'] > 0
        assert s['peak_mem_max'] > 0 and s['nonfinite_steps'] == 0
    assert standard['summary']['ratio'] == 1.0
    assert reasoning['summary']['ratio'] == reasoning['summary']['ms_median'] / standard['summary']['ms_median']
    # slots per text token: 1 in standard mode, 1 + N with N reasoning slots
    assert standard['summary']['slot_tps'] == standard['summary']['text_tps']
    assert abs(reasoning['summary']['slot_tps'] - 2 * reasoning['summary']['text_tps']) < 1e-6 * reasoning['summary']['slot_tps']
    # the work per text token against standard's, printed beside the time ratio: the one block is
    # the last, which computes only text rows, so N=1 adds just the reasoning slots' keys and values
    # (c_attn) and the attention pairs they add
    s, r = standard['summary'], reasoning['summary']
    assert s['flops_ratio'] == 1.0 and r['flops_ratio'] == r['flops_per_text'] / s['flops_per_text']
    assert 1.0 < r['flops_ratio'] < 1.1
    assert f"| {r['flops_ratio']:.2f}x |" in stdout.split('| mode=reasoning,num_reason_tokens=1 |')[1].splitlines()[0]
    assert '| mode=reasoning,num_reason_tokens=1 |' in stdout and 'command: python' in stdout


def test_sample_kv_cache_identical(tmp_path):
    # top_k=0 samples from the whole vocab, as in sample.py
    report, stdout = bench(tmp_path, '--task=sample', '--repeats=1', '--max_new_tokens=24', '--top_k=0',
                           '--variants=kv_cache=True; kv_cache=False')
    cached, plain = report['variants']
    assert cached['summary']['ratio'] == 1.0 and plain['summary']['ms_median'] > 0
    assert cached['greedy_identical'] == 'yes' and plain['greedy_identical'] == 'yes'
    assert len(cached['measurements'][0]['greedy'][0]) == 24
    assert 'greedy identical' in stdout


@pytest.mark.parametrize('variants,needle', [
    ('mode=standard; n_embd=33', 'n_embd=33: n_embd=33 must be a multiple of n_head=2'),
    ('mode=standard; mode=reasonng', "mode=reasonng: mode='reasonng' is not one of"),
    ('mode=standard; device=cuda:99', "device='cuda:99'"),
    ('mode=standard; temperature=-1', 'temperature=-1: temperature must be >= 0'),
])
def test_bad_variant_fails_in_one_line_before_any_measurement(variants, needle):
    proc = subprocess.run([sys.executable, 'bench.py', *TINY, '--repeats=1', f'--variants={variants}'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and 'repeat 1' not in proc.stdout, proc.stdout[-2000:]
    assert len(lines) == 1 and lines[0].startswith('error: ') and needle in lines[0], proc.stderr[-2000:]
