"""
Sampling: the KV cache gives the uncached logits in every mode, the cached logits are those of one
full forward pass over the inference layout, and sample.py works end to end from a trained run.
"""

import csv
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, run_together
from kv_cache import KVCache
from model import GPT, GPTConfig, Linear, pad_vocab
from generation import generate, teacher_forced
from modes import NUM_SPECIAL_TOKENS, Mode
from training import DEFAULTS

TEXT_VOCAB = 40


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny models: a second thread saves little, and spins badly when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# (id, layout config overrides, inference knobs)
MODES = [
    ('standard', dict(mode='standard'), {}),
    ('pause-M3', dict(mode='pause'), dict(num_pause_tokens=3)),
    ('reflection-R2', dict(mode='reflection'), dict(num_reflect_tokens=2)),
    ('reflection-R2-hidden', dict(mode='reflection', reflect_hidden=True), dict(num_reflect_tokens=2)),
    ('reflection-R2-repeat', dict(mode='reflection', reflect_repeat=True), dict(num_reflect_tokens=2)),
    ('reasoning-N1', dict(mode='reasoning', num_reason_tokens=1), {}),
    ('reasoning-N2', dict(mode='reasoning', num_reason_tokens=2), {}),
    ('reasoning-N2-delay2', dict(mode='reasoning', num_reason_tokens=2, reason_delay=2), {}),
    ('reasoning-N1-delay2', dict(mode='reasoning', num_reason_tokens=1, reason_delay=2), {}),
    ('reasoning-N2-stopgrad', dict(mode='reasoning', num_reason_tokens=2, reason_stopgrad=True), {}),
]


def tiny(layout, knobs, n_positions):
    """A tiny random model and its mode; weights larger than GPT-2's init so greedy picks are clear."""
    mode = Mode({**DEFAULTS, **layout, **knobs}, TEXT_VOCAB)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_positions=n_positions, vocab_size=pad_vocab(TEXT_VOCAB + NUM_SPECIAL_TOKENS),
                          n_layer=2, n_head=2, n_embd=32, n_slot_embd=mode.num_reason))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and name != 'transformer.wse.weight':
                p.normal_(0.0, 0.3)
    return model.eval(), mode


def prompt(B=2, P=5, seed=1):
    return torch.randint(TEXT_VOCAB, (B, P), generator=torch.Generator().manual_seed(seed))


# cropped: prompt + generated text outgrows the position table, so the window slides and the
# cache is rebuilt (reflection with R=2 has 3 slots per token: 16 positions hold 5 tokens)
@pytest.mark.parametrize('n_positions,new', [(64, 12), (16, 24)], ids=['fits', 'cropped'])
@pytest.mark.parametrize('layout,knobs', [m[1:] for m in MODES], ids=[m[0] for m in MODES])
def test_kv_cache_matches_recompute(layout, knobs, n_positions, new):
    model, mode = tiny(layout, knobs, n_positions)
    x = prompt()
    out_c, logits_c = generate(model, mode, x, new, temperature=0, kv_cache=True, return_logits=True)
    out_r, logits_r = generate(model, mode, x, new, temperature=0, kv_cache=False, return_logits=True)
    assert torch.equal(out_c, out_r)
    assert torch.equal(out_c[:, :x.size(1)], x)
    assert bool((out_c < TEXT_VOCAB).all())  # special tokens are never sampled
    assert torch.isinf(logits_c[..., TEXT_VOCAB:]).all() and torch.isinf(logits_r[..., TEXT_VOCAB:]).all()
    torch.testing.assert_close(logits_c[..., :TEXT_VOCAB], logits_r[..., :TEXT_VOCAB], rtol=0, atol=1e-5)


@pytest.mark.parametrize('bias', [True, False])
def test_decode_linear_equals_plain_linear(bias):
    """Inference on a few CPU rows takes Linear's W @ x^T path; it must give F.linear's result for
    every row count and batch shape, contiguous or not; with gradients on it is F.linear itself."""
    torch.manual_seed(0)
    lin = Linear(48, 80, bias=bias)
    for shape in [(1, 1), (1, 2), (3, 1), (2, 4), (1, 8), (1, 9), (4, 5)]:
        x = torch.randn(*shape, 48)
        for inp in (x, torch.randn(48, *shape).movedim(0, -1)):  # contiguous, and strided rows
            ref = torch.nn.functional.linear(inp, lin.weight, lin.bias)
            with torch.no_grad():
                out = lin(inp)
            assert out.shape == ref.shape and out.is_contiguous()
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    x = torch.randn(1, 2, 48, requires_grad=True)
    assert torch.equal(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias))


def test_positions_beyond_the_table_are_a_clear_error():
    """Implicit positions (with or without a cache) and explicit ones past n_positions raise a
    ValueError naming the position, instead of an index error inside the embedding."""
    model, mode = tiny(dict(mode='standard'), {}, 8)
    with torch.no_grad():
        model(prompt(P=8))  # exactly fills the table
        with pytest.raises(ValueError, match="position 8 is beyond the model's 8 positions"):
            model(prompt(P=9))
        with pytest.raises(ValueError, match="position 9 is beyond the model's 8 positions"):
            model(prompt(P=4), pos=torch.tensor([0, 1, 9, 3]))
        cache = KVCache(model.config, 2, 16, 'cpu', torch.float32)
        model(prompt(P=6), cache=cache)
        with pytest.raises(ValueError, match="position 8 is beyond the model's 8 positions"):
            model(prompt(P=3), cache=cache)


@pytest.mark.parametrize('layout,knobs', [m[1:] for m in MODES], ids=[m[0] for m in MODES])
def test_cached_logits_equal_full_forward(layout, knobs):
    model, mode = tiny(layout, knobs, 64)
    x, new = prompt(P=4), 10
    out, logits = generate(model, mode, x, new, temperature=0, kv_cache=True, return_logits=True)
    P, n_text = x.size(1), x.size(1) + new - 1  # the last sampled token is never fed back
    text = out[:, :n_text]
    lay = mode.layout(mode.inference_counts(n_text, P))
    assert len(lay) > n_text or mode.name == 'standard'  # the thinking slots are really there
    with torch.no_grad():
        full, _ = model(idx=lay.inputs(text), pos=lay.pos, slot=lay.slot, vis=lay.vis,
                        predict=lay.eval_slots[P - 1:])
    assert full.shape[1] == new
    torch.testing.assert_close(logits[..., :TEXT_VOCAB], full[..., :TEXT_VOCAB], rtol=0, atol=1e-5)


@pytest.mark.parametrize('layout,knobs', [m[1:] for m in MODES], ids=[m[0] for m in MODES])
def test_prompt_cropped_to_positions_samples_the_same(layout, knobs):
    """sample.py hands generate only the last n_positions prompt tokens (no more can fit)."""
    model, mode = tiny(layout, knobs, 16)
    x, new = prompt(P=40), 6
    full = generate(model, mode, x, new, temperature=0)
    tail = generate(model, mode, x[:, -16:], new, temperature=0)
    assert torch.equal(full[:, -new:], tail[:, -new:])


# ---- adaptive thinking (think_policy='entropy') ------------------------------------------------

THINKING = [
    ('pause', dict(mode='pause')),
    ('reflection', dict(mode='reflection')),
    ('reflection-hidden', dict(mode='reflection', reflect_hidden=True)),
    ('reflection-repeat', dict(mode='reflection', reflect_repeat=True)),
]


def thinking(layout, n_positions, threshold, most=3):
    return tiny(layout, dict(think_policy='entropy', think_threshold=threshold, think_max=most), n_positions)


def median_entropy(layout):
    """A threshold that sends some tokens to think and not others on these weights and prompts."""
    model, mode = tiny(layout, dict(num_reflect_tokens=0) if layout['mode'] == 'reflection' else {}, 64)
    _, logits = generate(model, mode, prompt(), 12, temperature=0, return_logits=True)
    return float(torch.special.entr(torch.softmax(logits, -1)).sum(-1).median())


@pytest.mark.parametrize('n_positions,new', [(64, 12), (16, 24)], ids=['fits', 'cropped'])
@pytest.mark.parametrize('layout', [m[1] for m in THINKING], ids=[m[0] for m in THINKING])
def test_thinking_kv_cache_matches_recompute_and_teacher_forcing(layout, n_positions, new):
    """Rows that think different amounts: the cached decoder gives the uncached decisions and
    logits, and teacher forcing on the sampled text makes the same decisions with the same losses."""
    model, mode = thinking(layout, n_positions, median_entropy(layout))
    x = prompt(P=3)
    out_c, logits_c = generate(model, mode, x, new, temperature=0, kv_cache=True, return_logits=True)
    out_r, logits_r = generate(model, mode, x, new, temperature=0, kv_cache=False, return_logits=True)
    assert torch.equal(out_c, out_r)
    torch.testing.assert_close(logits_c[..., :TEXT_VOCAB], logits_r[..., :TEXT_VOCAB], rtol=0, atol=1e-5)
    loss, counts = teacher_forced(model, mode, out_c)
    assert counts.shape == (2, x.size(1) + new - 1)
    assert 0 < int((counts > 0).sum()) < counts.numel()  # some tokens think, others do not
    assert not torch.equal(counts[0], counts[1])  # the two rows have layouts of their own
    sampled = torch.nn.functional.cross_entropy(logits_c.transpose(1, 2), out_c[:, x.size(1):], reduction='none')
    torch.testing.assert_close(loss[:, x.size(1) - 1:], sampled, rtol=0, atol=1e-4)
    _, counts_r = teacher_forced(model, mode, out_c, kv_cache=False)
    assert torch.equal(counts, counts_r)


@pytest.mark.parametrize('n_positions', [64, 16], ids=['fits', 'cropped'])
@pytest.mark.parametrize('layout', [m[1] for m in THINKING[1:]], ids=[m[0] for m in THINKING[1:]])
def test_thinking_thresholds_at_the_extremes_are_the_fixed_policy(layout, n_positions):
    """think_threshold=inf is no thinking, 0 with think_max=M is M reflections after every token."""
    x, new = prompt(P=4), 16
    for threshold, most, fixed in ((float('inf'), 3, 0), (0.0, 2, 2)):
        model, mode = thinking(layout, n_positions, threshold, most)
        out, logits = generate(model, mode, x, new, temperature=0, return_logits=True)
        model, reference = tiny(layout, dict(num_reflect_tokens=fixed), n_positions)
        ref_out, ref_logits = generate(model, reference, x, new, temperature=0, return_logits=True)
        assert torch.equal(out, ref_out)
        torch.testing.assert_close(logits[..., :TEXT_VOCAB], ref_logits[..., :TEXT_VOCAB], rtol=0, atol=1e-5)
        assert bool((teacher_forced(model, mode, out)[1] == fixed).all())


def test_thinking_policy_errors():
    for layout, knobs, needle in [
        (dict(mode='standard'), {}, 'needs a pause- or reflection-mode checkpoint'),
        (dict(mode='reasoning', num_reason_tokens=1), {}, 'needs a pause- or reflection-mode checkpoint'),
        (dict(mode='reflection'), dict(think_policy='sometimes'), "think_policy='sometimes' is not one of"),
        (dict(mode='reflection'), dict(think_max=-1), 'think_max >= 0'),
    ]:
        with pytest.raises(ValueError, match=needle):
            Mode({**DEFAULTS, **layout, 'think_policy': 'entropy', 'think_threshold': 1.0, 'think_max': 2, **knobs},
                 TEXT_VOCAB)


def test_sampling_is_reproducible_with_a_generator():
    model, mode = tiny(dict(mode='reasoning', num_reason_tokens=2), {}, 64)
    runs = [generate(model, mode, prompt(), 20, temperature=1.0, top_k=10, kv_cache=kv,
                     generator=torch.Generator().manual_seed(7)) for kv in (True, True, False)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


# ---- sample.py end to end ---------------------------------------------------------------------

PROMPT = 'ROMEO:\nWhat say you'


def run_all(*arg_lists):
    """`python ARGS` for each argument list, all at once; their CompletedProcesses in order."""
    env = {**os.environ,
           'TIKTOKEN_CACHE_DIR': os.environ.get('TIKTOKEN_CACHE_DIR', os.path.join(REPO, '..', 'shared', 'data', 'tiktoken_cache')),
           # one thread, as in this process (see one_thread)
           'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    return run_together([[sys.executable, *args] for args in arg_lists], cwd=REPO, env=env)


def run(*args):
    return run_all(args)[0]


def one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope='module')
def trained(char_data, tmp_path_factory):
    """trained(mode) -> out_dir of a 10-iteration run of the CPU recipe (reasoning: N=2), made once."""
    runs = {}

    def get(mode):
        if mode not in runs:
            out = tmp_path_factory.mktemp(f'out-{mode}')
            extra = ['--num_reason_tokens=2'] if mode == 'reasoning' else []
            proc = run('train.py', 'config/train_shakespeare_char_cpu.py', f'--data_dir={char_data}',
                       f'--out_dir={out}', '--max_iters=10', '--eval_interval=10', '--eval_iters=2',
                       '--log_interval=5', '--always_save_checkpoint=True', f'--mode={mode}', *extra)
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert (out / 'ckpt.pt').exists()
            runs[mode] = out
        return runs[mode]
    return get


def samples(stdout):
    parts = stdout.split('---------------\n')
    assert parts[-1] == ''
    return parts[:-1]


@pytest.mark.parametrize('mode', ['standard', 'reasoning'])
def test_sample_cli(trained, mode):
    args = ['sample.py', f'--out_dir={trained(mode)}', f'--start={PROMPT}', '--max_new_tokens=50', '--num_samples=2']
    # the plain recompute path must sample the same text from the same seed (temperature 0.8)
    cached, recomputed = run_all(args, args + ['--kv_cache=False'])
    assert cached.returncode == 0, cached.stderr[-2000:]
    got = samples(cached.stdout)
    assert len(got) == 2
    for s in got:
        assert s.startswith(PROMPT) and len(s) == len(PROMPT) + 50 + 1  # + print's newline
    assert recomputed.returncode == 0, recomputed.stderr[-2000:]
    assert samples(recomputed.stdout) == got


def test_sample_cli_errors(trained, tmp_path):
    """The error cases through the CLI: a non-zero exit and one line on stderr, no traceback."""
    base = ['sample.py', '--max_new_tokens=5', '--num_samples=1']
    bad_text, too_many, missing = run_all(base + [f'--out_dir={trained("standard")}', '--start=ROMEO: Zounds~'],
                                          base + [f'--out_dir={trained("reasoning")}', '--num_reason_tokens=3'],
                                          base + [f'--out_dir={tmp_path}'])
    msg = one_line_error(bad_text, 'outside')
    assert "'Z'" in msg and "'~'" in msg
    one_line_error(too_many, 'num_reason_tokens=3', '0..2')
    one_line_error(missing, 'no checkpoint')


def sample_main(capsys, *argv):
    """sample.py in this process (no interpreter start-up): its samples."""
    import sample
    sample.main(list(argv))
    return samples(capsys.readouterr().out)


def test_sample_fewer_reasoning_tokens(trained, capsys):
    """Fewer reasoning tokens than trained work (0 = plain text); the default is the checkpoint's N."""
    args = [f'--out_dir={trained("reasoning")}', '--start=ROMEO:', '--max_new_tokens=30', '--num_samples=2']
    runs = [sample_main(capsys, *args, f'--num_reason_tokens={n}') for n in (0, 1, 2)]
    assert all(len(r) == 2 and all(s.startswith('ROMEO:') for s in r) for r in runs)
    assert runs[2] == sample_main(capsys, *args)


@pytest.mark.parametrize('mode', ['standard', 'reasoning'])
def test_sample_long_prompt(trained, mode, char_data, tmp_path, capsys):
    """A prompt longer than the model's 64 positions is cropped to the most recent text."""
    with open(char_data / 'meta.pkl', 'rb') as f:
        itos = pickle.load(f)['itos']
    long_prompt = ''.join(itos[i] for i in np.fromfile(char_data / 'train.bin', dtype=np.uint16)[:300].tolist())
    path = tmp_path / 'prompt.txt'
    path.write_text(long_prompt)
    got = []
    for kv in (True, False):
        (s,) = sample_main(capsys, f'--out_dir={trained(mode)}', f'--start=FILE:{path}', '--max_new_tokens=20',
                           '--num_samples=1', f'--kv_cache={kv}')
        assert s.startswith(long_prompt) and len(s) == len(long_prompt) + 20 + 1
        got.append(s)
    assert got[0] == got[1]


@pytest.mark.parametrize('argv,needle', [
    (['--num_reason_tokens=1'], 'num_reason_tokens=1 must be in 0..0'),
    (['--num_pause_tokens=4'], 'num_pause_tokens applies to pause-mode'),
    (['--num_reflect_tokens=2'], 'num_reflect_tokens applies to reflection-mode'),
    (['--start=FILE:/nonexistent/prompt.txt'], 'cannot read the prompt file'),
    (['--start='], 'prompt is empty'),
    (['--init_from=gpt3'], "init_from='gpt3'"),
    (['--dtype=float8'], 'dtype'),
    (['--temperature=-1'], 'temperature must be >= 0'),
    (['--top_k=-5'], 'top_k >= 0'),
    (['--device=cuda:99'], "device='cuda:99'"),
    (['--device=tpu'], "device='tpu'"),
    (['--think_policy=entropy'], "needs a pause- or reflection-mode checkpoint, this one is mode standard"),
])
def test_sample_errors_in_process(trained, argv, needle):
    import sample
    with pytest.raises(SystemExit) as e:
        sample.main([f'--out_dir={trained("standard")}', '--max_new_tokens=5', *argv])
    assert str(e.value).startswith('error: ') and needle in str(e.value), str(e.value)
    assert '\n' not in str(e.value)


def fake_run(out, char_data, **layout):
    """An untrained checkpoint as train.py writes it, for the inference knobs of other modes."""
    import pickle as pkl
    from dataclasses import asdict
    import training
    with open(char_data / 'meta.pkl', 'rb') as f:
        text_vocab = pkl.load(f)['vocab_size']
    config = {**DEFAULTS, 'data_dir': str(char_data), 'n_layer': 1, 'n_head': 2, 'n_embd': 16,
              'block_size': 32, **layout}
    model = training.new_model(config, Mode(config, text_vocab))
    out.mkdir()
    torch.save({'model': model.state_dict(), 'model_args': asdict(model.config), 'config': config,
                'text_vocab_size': text_vocab}, out / 'ckpt.pt')
    return out


@pytest.mark.parametrize('layout,knob,attr', [
    (dict(mode='pause', pause_rate=0.25), '--num_pause_tokens=5', 'num_pause_tokens'),
    (dict(mode='reflection'), '--num_reflect_tokens=3', 'num_reflect_tokens'),
    (dict(mode='reflection', reflect_hidden=True), '--num_reflect_tokens=0', 'num_reflect_tokens'),
])
def test_sample_inference_knobs_reach_the_mode(char_data, tmp_path, monkeypatch, capsys, layout, knob, attr):
    import sample
    out = fake_run(tmp_path / 'run', char_data, **layout)
    seen = []

    def spy(model, mode, *args, **kwargs):
        seen.append(mode)
        return generate(model, mode, *args, **kwargs)
    monkeypatch.setattr(sample, 'generate', spy)
    got = sample_main(capsys, f'--out_dir={out}', '--start=ROMEO:', '--max_new_tokens=10', '--num_samples=2', knob)
    assert len(got) == 2 and all(s.startswith('ROMEO:') for s in got)
    (mode,) = seen
    assert mode.name == layout['mode'] and getattr(mode, attr) == int(knob.split('=')[1])
    assert mode.cfg['reflect_hidden'] == layout.get('reflect_hidden', False)
    with pytest.raises(SystemExit, match='too few'):  # more thinking slots than positions
        sample.main([f'--out_dir={out}', f"{knob.split('=')[0]}=100"])


def test_sample_entropy_policy_cli_and_compute_curve(char_data, tmp_path, capsys):
    """sample.py's adaptive thinking gives the same greedy text without the KV cache, and
    scripts/eval_thinking.py writes every budget of the curve (CSV, table, plot) next to the run."""
    sys.path.insert(0, os.path.join(REPO, 'scripts'))
    import eval_thinking
    out = fake_run(tmp_path / 'run', char_data, mode='reflection')
    argv = [f'--out_dir={out}', '--start=ROMEO:', '--max_new_tokens=12', '--num_samples=2', '--temperature=0',
            '--think_policy=entropy', '--think_threshold=1.5', '--think_max=3']
    assert sample_main(capsys, *argv) == sample_main(capsys, *argv, '--kv_cache=False')
    eval_thinking.main([f'--out_dir={out}', '--eval_batches=1', '--fixed=1,2', '--thresholds=1,2,3,4,5'])
    rows = list(csv.DictReader(open(out / 'thinking.csv')))
    assert [r['budget'] for r in rows] == ['none', 'fixed 1', 'fixed 2', 'entropy > 1', 'entropy > 2', 'entropy > 3',
                                           'entropy > 4', 'entropy > 5']
    slots = [float(r['slots_per_token']) for r in rows]
    assert slots[:3] == [0.0, 1.0, 2.0] and all(0 <= s <= 4 for s in slots[3:])
    n_positions = torch.load(out / 'ckpt.pt')['model_args']['n_positions']
    assert all(float(r['val_loss']) > 0 for r in rows)
    assert int(rows[0]['context']) == n_positions // 5  # the most whose layout fits 4 thinking slots per token
    assert (out / 'thinking.png').stat().st_size > 0 and 'entropy > 3' in (out / 'thinking.md').read_text()
