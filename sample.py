"""
Sample from a trained model, in the mode it was trained in, with a KV cache.

    python sample.py --out_dir=out-reasoning-shakespeare-char --start="ROMEO:" --num_samples=3
    python sample.py --init_from=gpt2 --start="FILE:prompt.txt" --temperature=0.8 --top_k=200
    python sample.py --out_dir=out-pause-shakespeare-char --num_pause_tokens=10

The checkpoint's config fixes the mode and its layout; three knobs change how many thinking slots
inference uses: num_reason_tokens (0 .. the trained N; 0 samples plain text), num_pause_tokens
(pauses after the prompt) and num_reflect_tokens (reflections after every token).
"""

import json
import os
import pickle
import sys

import torch

from configurator import configure
from model import GPT
from modes import LAYOUT_KEYS, Mode, check_sampling, generate
import train

DEFAULTS = dict(
    init_from='resume',  # 'resume' (out_dir/ckpt.pt), 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' or a HF dir
    out_dir='out',
    start='\n',  # the prompt, or 'FILE:path' to read it from a file
    num_samples=10,
    max_new_tokens=500,  # text tokens per sample; thinking slots are not counted
    temperature=0.8,  # 1.0 = the model's distribution, lower = more conservative, 0 = greedy
    top_k=200,  # keep only the top_k most likely tokens (None or 0 = all)
    seed=1337,
    device='',  # '' = cuda if available, else cpu
    dtype='',  # '' = bfloat16 on GPUs that have it, float16 on other GPUs, float32 on cpu
    compile=False,
    kv_cache=True,  # False recomputes the whole layout every step (same logits, slower)
    # inference layout (see modes.Mode.inference_counts)
    num_reason_tokens=-1,  # reasoning slots after every token: 0 .. the checkpoint's N; -1 = its N
    num_pause_tokens=-1,  # <pause> slots after the prompt (pause-mode checkpoints); -1 = the checkpoint's (0 unless finetuned with pauses)
    num_reflect_tokens=1,  # <reflect> slots after every token (reflection-mode checkpoints)
)
GPT2_MODELS = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
GPT2_VOCAB = 50257
fail = train.fail


def load_model(c):
    """(model, the training config of its layout, text vocab size, data dir or None)."""
    if c['init_from'] == 'resume':
        path = os.path.join(c['out_dir'], 'ckpt.pt')
        if not os.path.exists(path):  # train.load_checkpoint's hint is about training
            fail(f"no checkpoint at {path}: train one first, or point --out_dir at a run")
        checkpoint = train.load_checkpoint(path)
        model = train.model_from_checkpoint(checkpoint)
        config = {**train.DEFAULTS, **checkpoint['config']}  # defaults fill keys older runs lack
        return model, config, checkpoint['text_vocab_size'], train.data_dir_of(config)
    if c['init_from'] in GPT2_MODELS or os.path.isdir(c['init_from']):
        try:
            model = GPT.from_pretrained(c['init_from'])
        except OSError as e:  # offline without a cached copy, or a directory without a model
            fail(f"cannot load GPT-2 weights {c['init_from']!r}: {str(e).splitlines()[0]}")
        text_vocab = GPT2_VOCAB
        if os.path.isdir(c['init_from']):  # the unpadded vocab is only in the HF config
            with open(os.path.join(c['init_from'], 'config.json')) as f:
                text_vocab = json.load(f)['vocab_size']
        return model, {**train.DEFAULTS, 'mode': 'standard'}, text_vocab, None
    fail(f"init_from={c['init_from']!r} is not 'resume', one of {', '.join(GPT2_MODELS)}, or a directory")


def inference_mode(c, config, text_vocab, n_positions):
    """The checkpoint's mode with the inference knobs applied; a one-line error for bad values."""
    name = config['mode']
    trained_n = config['num_reason_tokens'] if name == 'reasoning' else 0
    n = trained_n if c['num_reason_tokens'] == -1 else c['num_reason_tokens']
    if not 0 <= n <= trained_n:
        fail(f"num_reason_tokens={n} must be in 0..{trained_n}: the checkpoint was trained "
             f"with {trained_n} reasoning tokens (mode {name})")
    pauses = config['num_pause_tokens'] if c['num_pause_tokens'] == -1 else c['num_pause_tokens']
    # knobs for another mode would be silently ignored: say so instead
    if pauses != 0 and name != 'pause':
        fail(f"num_pause_tokens applies to pause-mode checkpoints, this one is mode {name}")
    if c['num_reflect_tokens'] != 1 and name != 'reflection':
        fail(f"num_reflect_tokens applies to reflection-mode checkpoints, this one is mode {name}")
    if pauses < 0 or c['num_reflect_tokens'] < 0:
        fail("num_pause_tokens and num_reflect_tokens must be >= 0")
    # the layout of one text token (plus the pauses) must fit the position table
    if pauses + 1 > n_positions or c['num_reflect_tokens'] + 1 > n_positions:
        fail(f"the model has {n_positions} positions: too few for that many thinking tokens")
    layout = {k: config[k] for k in LAYOUT_KEYS}
    # answer_only shapes training batches only; generation builds its layout from the knobs here
    return Mode({**layout, 'answer_only': False, 'num_reason_tokens': n, 'num_pause_tokens': pauses,
                 'num_reflect_tokens': c['num_reflect_tokens']}, text_vocab)


def tokenizer(data_dir, text_vocab):
    """(encode, decode): the dataset's characters if its meta.pkl has them, else GPT-2 BPE."""
    meta_path = os.path.join(data_dir, 'meta.pkl') if data_dir else ''
    if meta_path and os.path.exists(meta_path):
        with open(meta_path, 'rb') as f:
            meta = pickle.load(f)
        if 'stoi' in meta:
            stoi, itos = meta['stoi'], meta['itos']

            def encode(s):
                unknown = sorted(set(s) - set(stoi))
                if unknown:
                    fail(f"the prompt has characters outside the model's vocabulary: "
                         f"{' '.join(repr(ch) for ch in unknown)}")
                return [stoi[ch] for ch in s]
            return encode, lambda ids: ''.join(itos[i] for i in ids)
    if text_vocab != GPT2_VOCAB:  # GPT-2 BPE would produce ids the model never saw
        where = f"{meta_path} not found" if data_dir else "HF weights carry no tokenizer here"
        fail(f"the model's text vocab is {text_vocab}, not GPT-2's {GPT2_VOCAB}, and {where}: "
             f"no tokenizer for it")
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    return (lambda s: enc.encode(s, allowed_special={'<|endoftext|>'})), enc.decode


def main(argv=None):
    c = configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    device = train.device_of(c)
    _, autocast = train.precision(c, device)
    if c['num_samples'] < 1 or c['max_new_tokens'] < 0:
        fail("num_samples must be >= 1 and max_new_tokens >= 0")
    try:
        check_sampling(c['temperature'], c['top_k'])
    except ValueError as e:
        fail(str(e))

    model, config, text_vocab, data_dir = load_model(c)
    mode = inference_mode(c, config, text_vocab, model.config.n_positions)
    encode, decode = tokenizer(data_dir, text_vocab)
    start = c['start']
    if start.startswith('FILE:'):
        path = start[5:]
        try:
            with open(path, encoding='utf-8') as f:
                start = f.read()
        except OSError as e:
            fail(f"cannot read the prompt file {path!r} ({e.strerror})")
    prompt_ids = encode(start)
    if not prompt_ids:
        fail("the prompt is empty: give --start at least one character")

    model.eval()
    model.to(device)
    # masked layouts use dense-mask SDPA here: cached steps only attend from a few queries
    if c['compile']:
        model = torch.compile(model)
    torch.manual_seed(c['seed'])
    generator = torch.Generator(device=device).manual_seed(c['seed'])
    # Every text token takes a position of its own, so no more than n_positions of them fit:
    # generate crops to what fits, but searching a long prompt for that window is quadratic.
    head, tail = prompt_ids[:-model.config.n_positions], prompt_ids[-model.config.n_positions:]
    # all samples in one batch: one forward pass per text token for all of them
    prompt = torch.tensor(tail, dtype=torch.long, device=device)[None].repeat(c['num_samples'], 1)
    with autocast:
        out = generate(model, mode, prompt, c['max_new_tokens'], temperature=c['temperature'],
                       top_k=c['top_k'], kv_cache=c['kv_cache'], generator=generator)
    for row in out.tolist():
        print(decode(head + row))  # the whole prompt, then the sample
        print('---------------')


if __name__ == '__main__':
    main()
