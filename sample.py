"""
Sample from a trained model, in the mode it was trained in, with a KV cache.

    python sample.py --out_dir=out-reasoning-shakespeare-char --start="ROMEO:" --num_samples=3
    python sample.py --init_from=gpt2 --start="FILE:prompt.txt" --temperature=0.8 --top_k=200
    python sample.py --out_dir=out-pause-shakespeare-char --num_pause_tokens=10

The checkpoint's config fixes the mode and its layout; three knobs change how many thinking slots
inference uses: num_reason_tokens (0 .. the trained N; 0 samples plain text), num_pause_tokens
(pauses after the prompt) and num_reflect_tokens (reflections after every token). For pause and
reflection checkpoints, --think_policy=entropy instead decides per text token: another <pause> or
<reflect> slot while the next-token prediction's entropy is above think_threshold (nats), up to
think_max (generation.ThinkingDecoder).

    python sample.py --out_dir=out-reflection-shakespeare-char --think_policy=entropy --think_threshold=1.5 --think_max=3
"""

import json
import os
import sys

import torch

from checkpoints import load_checkpoint, model_from_checkpoint
from configurator import configure, fail
from dataset import GPT2_VOCAB, data_dir_of, tokenizer
from model import GPT
from generation import check_sampling, generate
from modes import INFERENCE_KNOBS, inference_mode
from training import DEFAULTS as TRAIN_DEFAULTS, config_of, device_of, precision

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
    # the inference layout (modes.INFERENCE_KNOBS): num_reason_tokens, reasoning slots after every token
    # (0 .. the checkpoint's N; -1 = its N); num_pause_tokens, <pause> slots after the prompt (pause-mode
    # checkpoints; -1 = the checkpoint's, 0 unless finetuned with pauses); num_reflect_tokens, <reflect>
    # slots after every token (reflection-mode checkpoints); think_policy 'fixed' (those counts) or
    # 'entropy' (pause/reflection checkpoints: think_threshold in nats, at most think_max slots per token)
    **INFERENCE_KNOBS,
)
GPT2_MODELS = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')


def load_model(c):
    """(model, the training config of its layout, text vocab size, data dir or None)."""
    if c['init_from'] == 'resume':
        path = os.path.join(c['out_dir'], 'ckpt.pt')
        if not os.path.exists(path):  # load_checkpoint's hint is about training
            fail(f"no checkpoint at {path}: train one first, or point --out_dir at a run")
        checkpoint = load_checkpoint(path)
        config = config_of(checkpoint['config'])
        return model_from_checkpoint(checkpoint), config, checkpoint['text_vocab_size'], data_dir_of(config)
    if c['init_from'] in GPT2_MODELS or os.path.isdir(c['init_from']):
        try:
            model = GPT.from_pretrained(c['init_from'])
        except OSError as e:  # offline without a cached copy, or a directory without a model
            fail(f"cannot load GPT-2 weights {c['init_from']!r}: {str(e).splitlines()[0]}")
        text_vocab, mode = GPT2_VOCAB, 'standard'
        if os.path.isdir(c['init_from']):  # the unpadded vocab is only in the HF config (an export's: also its mode)
            with open(os.path.join(c['init_from'], 'config.json')) as f:
                hf = json.load(f)
            text_vocab, mode = hf.get('text_vocab_size', hf['vocab_size']), hf.get('thinking_mode', 'standard')
        return model, {**TRAIN_DEFAULTS, 'mode': mode}, text_vocab, None
    fail(f"init_from={c['init_from']!r} is not 'resume', one of {', '.join(GPT2_MODELS)}, or a directory")


def main(argv=None):
    c = configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    device = device_of(c)
    _, autocast = precision(c, device)
    if c['num_samples'] < 1 or c['max_new_tokens'] < 0:
        fail("num_samples must be >= 1 and max_new_tokens >= 0")
    try:
        check_sampling(c['temperature'], c['top_k'])
    except ValueError as e:
        fail(str(e))

    model, config, text_vocab, data_dir = load_model(c)
    try:
        mode = inference_mode(config, text_vocab, model.config.n_positions, {k: c[k] for k in INFERENCE_KNOBS})
    except ValueError as e:
        fail(str(e))
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
