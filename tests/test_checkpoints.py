"""
Checkpoints from elsewhere: karpathy/nanoGPT's ckpt.pt (built here in its format, no nanoGPT code)
samples with sample.py and finetunes in pause and reasoning mode; older checkpoints of this repo's
format load; anything else is a one-line error.

    sample.py's greedy text from a nanoGPT checkpoint is the reference model's greedy text
    a finetune starts from its weights: the embedding grown for the thinking tokens, slot
    embeddings added in reasoning mode, the trained rows unchanged at learning rate 0
"""

import os
import subprocess
import sys

import pytest
import torch

from checkpoints import load_checkpoint
from conftest import REPO, run_together, write_char_data
from model import GPT, GPTConfig, pad_vocab
from modes import NUM_SPECIAL_TOKENS

SHAPE = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, bias=False, dropout=0.0)


@pytest.fixture(scope='module')
def nanogpt(tmp_path_factory):
    """A nanoGPT-style run: cwd/data/shakespeare_char (meta.pkl: a vocab with no room for the thinking tokens) and
    out-nano/ckpt.pt as nanoGPT's train.py writes it (compiled: _orig_mod. names, attn.bias buffers)."""
    root = tmp_path_factory.mktemp('nanogpt')
    data = root / 'data' / 'shakespeare_char'
    data.mkdir(parents=True)
    write_char_data(data, 20000)
    import pickle
    with open(data / 'meta.pkl', 'rb') as f:
        vocab = pickle.load(f)['vocab_size']
    torch.manual_seed(0)
    reference = GPT(GPTConfig(n_positions=SHAPE['block_size'], vocab_size=vocab, n_layer=2, n_head=2, n_embd=32,
                              bias=False)).eval()
    state = {f'_orig_mod.{k}': v for k, v in reference.state_dict().items()}
    T = SHAPE['block_size']
    for i in range(SHAPE['n_layer']):
        state[f'_orig_mod.transformer.h.{i}.attn.bias'] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-3)
    out = root / 'out-nano'
    out.mkdir()
    torch.save({'model': state, 'optimizer': optimizer.state_dict(), 'model_args': dict(SHAPE, vocab_size=vocab),
                'iter_num': 5000, 'best_val_loss': torch.tensor(1.47).item(),
                'config': {'dataset': 'shakespeare_char', 'batch_size': 64, 'block_size': T, 'compile': True,
                           'wandb_log': False, 'out_dir': 'out-nano'}}, out / 'ckpt.pt')
    return dict(root=root, data=data, out=out, reference=reference, vocab=vocab)


def test_nanogpt_checkpoint_samples(nanogpt, monkeypatch, capsys):
    import sample
    from dataset import tokenizer
    monkeypatch.chdir(nanogpt['root'])  # nanoGPT reads data/<dataset>/meta.pkl relative to the working directory
    sample.main([f'--out_dir={nanogpt["out"]}', '--start=ROMEO:', '--max_new_tokens=40', '--num_samples=1',
                 '--temperature=0'])
    text = capsys.readouterr().out.split('---------------')[0].rstrip('\n')
    encode, decode = tokenizer(str(nanogpt['data']), nanogpt['vocab'])
    ids = torch.tensor([encode('ROMEO:')])
    with torch.no_grad():
        for _ in range(40):  # greedy with the reference model, the plain GPT-2 way
            logits, _ = nanogpt['reference'](ids)
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert text == decode(ids[0].tolist())
    converted = load_checkpoint(str(nanogpt['out'] / 'ckpt.pt'))
    assert converted['text_vocab_size'] == nanogpt['vocab'] and converted['model_args']['vocab_size'] == pad_vocab(nanogpt['vocab'] + NUM_SPECIAL_TOKENS)


@pytest.mark.parametrize('mode_args', [['--mode=pause', '--pause_rate=0.1'], ['--mode=reasoning', '--num_reason_tokens=1']],
                         ids=['pause', 'reasoning'])
def test_nanogpt_checkpoint_finetunes(nanogpt, tmp_path, mode_args):
    out = tmp_path / 'ft'
    cmd = [sys.executable, os.path.join(REPO, 'train.py'), f'--data_dir={nanogpt["data"]}', f'--out_dir={out}',
           f'--init_from={nanogpt["out"]}', *mode_args, '--block_size=32', '--batch_size=4', '--max_iters=2',
           '--eval_interval=2', '--eval_iters=2', '--gradient_accumulation_steps=1', '--device=cpu', '--compile=False',
           '--decay_lr=False', '--learning_rate=0.0', '--progress_bar=False']
    proc = subprocess.run(cmd, cwd=nanogpt['root'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(str(out / 'ckpt.pt'))
    assert ckpt['config']['mode'] == mode_args[0].split('=')[1] and ckpt['text_vocab_size'] == nanogpt['vocab']
    state, ref = ckpt['model'], nanogpt['reference'].state_dict()
    assert torch.equal(state['transformer.h.1.mlp.c_fc.weight'], ref['transformer.h.1.mlp.c_fc.weight'])
    wte = state['transformer.wte.weight']
    assert wte.shape[0] == pad_vocab(nanogpt['vocab'] + NUM_SPECIAL_TOKENS) and torch.equal(wte[:nanogpt['vocab']], ref['transformer.wte.weight'])
    assert 0.01 < wte[nanogpt['vocab']:].std() < 0.03  # the grown rows: initialised as new embedding rows
    assert ('transformer.wse.weight' in state) == (mode_args[0] == '--mode=reasoning')


def test_older_format_loads_and_foreign_files_are_one_line_errors(nanogpt, tmp_path, monkeypatch):
    monkeypatch.chdir(nanogpt['root'])
    ours = load_checkpoint(str(nanogpt['out'] / 'ckpt.pt'))
    old = {k: v for k, v in ours.items() if k not in ('format', 'source')}  # before the version was recorded
    torch.save(old, tmp_path / 'old.pt')
    assert load_checkpoint(str(tmp_path / 'old.pt'))['model_args'] == ours['model_args']
    cases = {'newer.pt': ({**ours, 'format': 99}, 'format 99, newer than this code'),
             'dict.pt': ({'weights': torch.zeros(2)}, 'is not a checkpoint of this repo or of nanoGPT'),
             'args.pt': ({'model': {}, 'model_args': {'n_layer': 2}}, 'model_args lacks n_head')}
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(SystemExit) as e:
            load_checkpoint(str(tmp_path / name))
        assert str(e.value).startswith('error: ') and message in str(e.value) and '\n' not in str(e.value)
    (tmp_path / 'text.pt').write_text('not a checkpoint')
    with pytest.raises(SystemExit, match='truncated or corrupt'):
        load_checkpoint(str(tmp_path / 'text.pt'))


# ---- Hugging Face export ------------------------------------------------------------------------

@pytest.fixture(scope='module')
def runs(char_data, tmp_path_factory):
    """A standard and a pause run, trained a little so that greedy choices are clear-cut."""
    root = tmp_path_factory.mktemp('hf_runs')
    common = [f'--data_dir={char_data}', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=128', '--batch_size=8',
              '--max_iters=150', '--eval_interval=150', '--eval_iters=2', '--learning_rate=5e-3', '--warmup_iters=2',
              '--gradient_accumulation_steps=1', '--device=cpu', '--compile=False', '--progress_bar=False']
    out = {'standard': root / 'standard', 'pause': root / 'pause'}
    procs = run_together([[sys.executable, 'train.py', *common, f'--out_dir={out["standard"]}'],
                          [sys.executable, 'train.py', *common, f'--out_dir={out["pause"]}', '--mode=pause']], cwd=REPO)
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize('mode, pauses', [('standard', 0), ('pause', 3)])
def test_hf_export_generates_as_sample_does(runs, char_data, tmp_path, mode, pauses, capsys):
    """transformers' greedy 100 tokens from the exported model (the caller appending the pauses)
    are sample.py's; loaded back with --init_from=DIR, the model gives the run's logits."""
    import sample
    from transformers import GPT2LMHeadModel
    from dataset import tokenizer
    hf_dir = tmp_path / 'hf'
    proc = subprocess.run([sys.executable, 'scripts/export_hf.py', f'--out_dir={runs[mode]}', f'--hf_dir={hf_dir}'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (hf_dir / 'config.json').exists() and (hf_dir / 'model.safetensors').exists()
    sample.main([f'--out_dir={runs[mode]}', '--start=ROMEO:', '--max_new_tokens=100', '--num_samples=1',
                 '--temperature=0', f'--num_pause_tokens={pauses}' if mode == 'pause' else '--num_pause_tokens=-1'])
    printed = capsys.readouterr().out
    ours = printed[:printed.index('\n---------------\n')]
    assert len(set(ours[6:])) > 2  # a trained model's text, not one character repeated
    hf = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    encode, decode = tokenizer(str(char_data), hf.config.text_vocab_size)
    prompt = encode('ROMEO:') + [hf.config.pause_token_id] * pauses
    ids = torch.tensor([prompt])
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=100, do_sample=False, pad_token_id=0,
                      suppress_tokens=[hf.config.pause_token_id, hf.config.reflect_token_id])
    assert 'ROMEO:' + decode(out[0, len(prompt):].tolist()) == ours

    back = GPT.from_pretrained(str(hf_dir)).eval()  # what --init_from=DIR loads
    from checkpoints import model_from_checkpoint
    run_model = model_from_checkpoint(load_checkpoint(str(runs[mode] / 'ckpt.pt'))).eval()
    idx = torch.randint(hf.config.text_vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, _ = back(idx, predict=torch.arange(64))
        b, _ = run_model(idx, predict=torch.arange(64))
    V = hf.config.vocab_size
    assert torch.allclose(a[..., :V], b[..., :V], atol=1e-5)


def test_hf_export_refuses_layouts_gpt2_cannot_express(runs):
    from checkpoints import export_hf
    ckpt = load_checkpoint(str(runs['standard'] / 'ckpt.pt'))
    for layout, why in [({'mode': 'reasoning'}, 'shares positions'), ({'mode': 'reflection', 'reflect_hidden': True},
                                                                          'hides some earlier slots')]:
        with pytest.raises(SystemExit) as e:
            export_hf({**ckpt, 'config': {**ckpt['config'], **layout}}, '/nonexistent/never-written')
        assert str(e.value).startswith('error: ') and why in str(e.value) and 'GPT-2' in str(e.value)
