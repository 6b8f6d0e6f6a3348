"""GPT.from_pretrained on a local Hugging Face directory gives the HF model's logits."""

import os

import pytest
import torch

from model import GPT, GPTConfig, pad_vocab

transformers = pytest.importorskip('transformers')

VOCAB = 100  # not a multiple of 64: from_pretrained pads it to 128


def save_hf(path, activation, vocab_size=VOCAB):
    """A tiny random GPT2LMHeadModel saved with save_pretrained (no download needed)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=vocab_size,
                                     activation_function=activation, bos_token_id=0, eos_token_id=0,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # GPT-2's init gives near-uniform logits: make them differ clearly
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(path)
    return hf.eval()


def compare(path, hf):
    model = GPT.from_pretrained(str(path)).eval()
    assert model.config.vocab_size == pad_vocab(VOCAB) == 128
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd, model.config.n_positions) == (2, 2, 32, 64)
    # the tied embedding keeps the HF rows; the padded rows are fresh ids for thinking tokens
    assert torch.equal(model.transformer.wte.weight[:VOCAB], hf.transformer.wte.weight)
    assert model.lm_head.weight is model.transformer.wte.weight
    idx = torch.randint(VOCAB, (2, 64), generator=torch.Generator().manual_seed(1))  # every position
    with torch.no_grad():
        ours, _ = model(idx, predict=torch.arange(idx.size(1)))
        ref = hf(idx).logits
    assert ours.shape == (2, 64, 128)
    torch.testing.assert_close(ours[..., :VOCAB], ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize('activation', ['gelu_new', 'gelu'])
def test_from_pretrained_copies_every_weight(tmp_path, activation):
    """GPT-2's own activation (the tanh GELU, 'gelu_new') and exact GELU both give the HF logits to
    fp32 rounding: every weight (transposed Conv1D, tied embedding, positions, LayerNorms) lands
    where it belongs and the MLP computes the checkpoint's activation."""
    compare(tmp_path, save_hf(tmp_path, activation))


def test_from_pretrained_rejects_other_activations(tmp_path):
    save_hf(tmp_path, 'relu')
    with pytest.raises(SystemExit, match="activation 'relu'"):
        GPT.from_pretrained(str(tmp_path))


def test_scratch_models_use_exact_gelu():
    """Models trained here keep nanoGPT's exact GELU; only GPT-2 checkpoints switch to tanh."""
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, n_positions=4, vocab_size=64))
    assert model.transformer.h[0].mlp.gelu.approximate == 'none'


def test_sample_rejects_hf_dir_without_gpt2_vocab(tmp_path):
    """sample.py has only the GPT-2 tokenizer for HF weights: another vocab is a one-line error."""
    import sample
    save_hf(tmp_path, 'gelu_new')
    with pytest.raises(SystemExit) as e:
        sample.main([f'--init_from={tmp_path}', '--max_new_tokens=2', '--num_samples=1'])
    msg = str(e.value)
    assert msg.startswith('error: ') and '100' in msg and '50257' in msg, msg


def test_sample_from_hf_dir_with_gpt2_vocab(tmp_path, monkeypatch, capsys):
    """A HF directory with GPT-2's vocab samples through tiktoken's GPT-2 BPE, in standard mode."""
    import sample
    cache = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared', 'data',
                         'tiktoken_cache')
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', os.environ.get('TIKTOKEN_CACHE_DIR', cache))
    try:
        import tiktoken
        tiktoken.get_encoding('gpt2')
    except Exception as e:  # no cached BPE files and no internet
        pytest.skip(f'GPT-2 BPE not available offline: {e}')
    save_hf(tmp_path, 'gelu_new', vocab_size=50257)
    prompt = 'Hello<|endoftext|> world'
    args = [f'--init_from={tmp_path}', f'--start={prompt}', '--max_new_tokens=8', '--num_samples=2']
    sample.main(args)
    out = capsys.readouterr().out.split('---------------\n')
    assert len(out) == 3 and out[2] == ''
    for s in out[:2]:
        assert s.startswith(prompt) and s.endswith('\n') and len(s) > len(prompt) + 8  # 8 non-empty tokens
    sample.main(args + ['--kv_cache=False'])
    assert capsys.readouterr().out.split('---------------\n') == out
    with pytest.raises(SystemExit, match='num_reason_tokens=1 must be in 0..0'):
        sample.main(args + ['--num_reason_tokens=1'])
