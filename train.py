"""
Train a GPT-2 in any thinking-token mode, on one CPU/GPU or many under torchrun.

    python train.py config/train_shakespeare_char_cpu.py
    python train.py config/reasoning_shakespeare_char.py --num_reason_tokens=3
    torchrun --standalone --nproc_per_node=8 train.py config/reasoning_owt.py

The mode (modes.py) turns each batch of text into the model's token layout; the loop below is the
same for every mode. Checkpoints hold everything needed to continue a run exactly: model,
optimizer, scaler, iteration, config, and every rank's RNG state. The data order and the insertion
patterns are a function of (seed, iteration, micro-step), so they need no saved state.
"""

import ctypes
import gc
import glob
import json
import math
import os
import pickle
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from attention import BACKENDS
from configurator import configure
from model import GPT, GPTConfig, pad_vocab
from modes import EVAL_SEED, LAYOUT_KEYS, NUM_SPECIAL_TOKENS, Mode, Records, special_token_ids

DEFAULTS = dict(
    # I/O
    out_dir='out',
    eval_interval=2000,
    log_interval=1,
    eval_iters=200,
    eval_only=False,  # evaluate once and exit
    always_save_checkpoint=True,  # else save only when val loss improves
    keep_checkpoints=1,  # also keep the last N checkpoints as ckpt-<iter>.pt (1 = only ckpt.pt)
    on_nonfinite='stop',  # a NaN/inf loss or gradient: 'stop' the run, or 'skip' that update
    # 'scratch', 'resume', 'auto' (resume if out_dir has a checkpoint), 'gpt2*', a HF model dir, or
    # the out_dir of a run of this repo (its weights only: finetuning, the mode may differ)
    init_from='scratch',
    # wandb
    wandb_log=False,
    wandb_project='thinking-tokens',
    wandb_run_name='',  # '' = out_dir's name
    wandb_group='',
    # data
    dataset='openwebtext',
    data_dir='',  # '' = data/<dataset>
    gradient_accumulation_steps=5 * 8,  # summed over all ranks
    batch_size=12,  # per micro-step and rank
    block_size=1024,  # text tokens per sequence; thinking slots come on top (modes.py)
    # model
    n_layer=12,
    n_head=12,
    n_embd=768,
    dropout=0.0,
    bias=False,
    # thinking-token mode: 'standard', 'pause', 'reflection' or 'reasoning' (see modes.py)
    mode='standard',
    pause_rate=0.1,  # <pause> slots per text token in training
    reflect_rate=0.1,  # <reflect> slots per text token in training
    reflect_hidden=False,  # later text cannot attend to reflection slots
    reflect_repeat=False,  # a reflection slot's input repeats the last text token
    num_reason_tokens=1,  # reasoning slots after every text token
    reason_delay=1,  # K: step t's reasoning slots are hidden from steps t+1..t+K
    reason_stopgrad=False,  # ...or visible to them, but without gradient
    # prompt/answer datasets (data/arithmetic): whole records per sequence, loss on the answers only;
    # in pause mode, num_pause_tokens pauses after every prompt instead of pause_rate (finetuning)
    answer_only=False,
    num_pause_tokens=0,  # pauses after the prompt (answer_only training; sample.py has the same knob)
    # AdamW and the learning-rate schedule
    learning_rate=6e-4,
    max_iters=600000,
    weight_decay=1e-1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,  # 0 = off
    decay_lr=True,
    warmup_iters=2000,
    lr_decay_iters=600000,
    min_lr=6e-5,
    # system
    device='',  # '' = cuda if available, else cpu
    dtype='',  # '' = bfloat16 on GPUs that have it, float16 on other GPUs, float32 on cpu
    compile=False,
    # masked layouts: 'flex' (FlexAttention), 'cpu_flash' (the CPU flash kernel), 'sdpa' (dense masks, any
    # device), 'auto' = flex on cuda, cpu_flash on cpu (sdpa with attention dropout); see attention.py
    attention='auto',
    backend='',  # torch.distributed backend; '' = nccl on cuda, gloo on cpu
    seed=1337,
    peak_flops=0.0,  # peak FLOP/s of one device for MFU; 0 = known GPUs only (A100/H100/H200)
    progress_bar=True,  # a tqdm bar when stdout is a terminal
)
MODEL_KEYS = ('n_layer', 'n_head', 'n_embd', 'bias', 'block_size')


def fail(msg):
    raise SystemExit(f"error: {msg}")


def check_config(c):
    """ValueError naming the first key whose value no run can use (in train.py and bench.py alike)."""
    for key in ('n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size', 'eval_iters', 'eval_interval',
                'log_interval', 'keep_checkpoints'):
        if c[key] < 1:
            raise ValueError(f"{key}={c[key]} must be >= 1")
    for key in ('max_iters', 'warmup_iters', 'learning_rate', 'min_lr', 'weight_decay', 'grad_clip', 'peak_flops'):
        if c[key] < 0:
            raise ValueError(f"{key}={c[key]} must be >= 0")
    if c['n_embd'] % c['n_head']:
        raise ValueError(f"n_embd={c['n_embd']} must be a multiple of n_head={c['n_head']} (each head gets "
                         f"n_embd / n_head dimensions)")
    if not 0 <= c['dropout'] < 1:
        raise ValueError(f"dropout={c['dropout']} must be in [0, 1)")
    if not (0 <= c['beta1'] < 1 and 0 <= c['beta2'] < 1):
        raise ValueError(f"beta1={c['beta1']} and beta2={c['beta2']} must be in [0, 1)")
    if c['decay_lr'] and c['lr_decay_iters'] <= c['warmup_iters']:
        # the cosine runs from warmup_iters to lr_decay_iters (lr_at); equal, it would divide by zero
        raise ValueError(f"lr_decay_iters={c['lr_decay_iters']} must be above warmup_iters={c['warmup_iters']}: "
                         f"raise lr_decay_iters (usually = max_iters), or set decay_lr=False")
    if c['attention'] not in ('auto', *BACKENDS):
        raise ValueError(f"attention={c['attention']!r} must be one of {', '.join(('auto', *BACKENDS))}")
    if c['on_nonfinite'] not in ('stop', 'skip'):
        raise ValueError(f"on_nonfinite={c['on_nonfinite']!r} must be 'stop' or 'skip'")


def device_of(c):
    """The device c['device'] names ('' = cuda if available, else cpu), if this torch can use it."""
    device = c['device'] or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        kind = torch.device(device)
    except RuntimeError:
        fail(f"device={device!r} is not a device: use cpu, cuda or cuda:N")
    if kind.type not in ('cpu', 'cuda'):
        fail(f"device={device!r}: this repo runs on cpu and cuda devices only")
    if kind.type == 'cuda' and not torch.cuda.is_available():
        fail(f"device={device!r}, but torch sees no CUDA GPU (torch {torch.__version__}): use --device=cpu, "
             f"or install a CUDA build of torch")
    if kind.type == 'cuda' and (kind.index or 0) >= torch.cuda.device_count():
        fail(f"device={device!r}, but torch sees {torch.cuda.device_count()} CUDA GPU(s): pick one of them")
    return device


# Peak dense bf16 tensor-core FLOP/s of the GPUs we know; anything else uses the config's peak_flops.
KNOWN_PEAK_FLOPS = {'A100': 312e12, 'H100': 989e12, 'H200': 989e12}


def peak_flops_for(device, configured=0.0):
    """Peak FLOP/s for MFU: the configured value if given, else a known GPU's, else 0 (unknown)."""
    if configured:
        return configured
    if device.startswith('cuda') and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
        for key, flops in KNOWN_PEAK_FLOPS.items():
            if key in name:
                return flops
    return 0.0


# ---- data -------------------------------------------------------------------------------------

def data_dir_of(config):
    return config['data_dir'] or os.path.join('data', config['dataset'])


def meta_of(data_dir):
    """The dataset's meta.pkl (written by every prepare.py), or {} when it has none."""
    meta_path = os.path.join(data_dir, 'meta.pkl')
    if not os.path.exists(meta_path):
        return {}
    with open(meta_path, 'rb') as f:
        return pickle.load(f)


def text_vocab_size_of(data_dir):
    """The dataset's vocab size; GPT-2's when meta.pkl does not say."""
    return meta_of(data_dir).get('vocab_size', 50257)


def records_of(data_dir):
    """The record format of a prompt/answer dataset, or None for plain text."""
    meta = meta_of(data_dir)
    return Records(meta['record_len'], meta['prompt_len'], meta['answer_len']) if 'record_len' in meta else None


def check_data(data_dir, block_size):
    """Both splits exist and hold a window of block_size + 1 tokens (checked before a long first step)."""
    for split in ('train', 'val'):
        path = os.path.join(data_dir, f'{split}.bin')
        if not os.path.exists(path):
            prepare = os.path.join(data_dir, 'prepare.py')
            fail(f"{path} not found: run `python {prepare}` first (or set --data_dir)")
        tokens = os.path.getsize(path) // np.dtype(np.uint16).itemsize
        if tokens <= block_size + 1:
            fail(f"{path} has {tokens:,} tokens, too few for windows of block_size + 1 = {block_size + 1:,}: "
                 f"lower block_size or prepare more data")


def check_token_ids(data_dir, text_vocab):
    """Every token id in the data must be below the dataset's vocab size (scanned in chunks)."""
    for split in ('train', 'val'):
        data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
        step = 1 << 26
        top = max((int(data[i:i + step].max()) for i in range(0, len(data), step)), default=0)
        if top >= text_vocab:
            fail(f"{split}.bin holds token id {top}, outside the vocab of {text_vocab} "
                 f"(meta.pkl / checkpoint): re-run the dataset's prepare.py")


def check_writable(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f'.write_test.{os.getpid()}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        fail(f"cannot write to out_dir {out_dir!r} ({e.strerror}): choose another --out_dir")


def micro_batch_generator(seed, iter_num, micro_step):
    """The RNG of one global micro-batch: the same data whatever the world size or restarts."""
    return torch.Generator().manual_seed((seed * 1_000_003 + iter_num) * 10_007 + micro_step)


def get_chunk(data_dir, split, batch_size, block_size, generator, align=1):
    """(B, block_size + 1) random windows of text tokens: the inputs plus the last target.
    Windows start at multiples of `align` (record boundaries of prompt/answer data)."""
    # a fresh memmap per batch avoids the memory growth of a long-lived one (nanoGPT issue #3)
    data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
    ix = torch.randint((len(data) - block_size - 1) // align, (batch_size,), generator=generator) * align
    return torch.stack([torch.from_numpy(data[i:i + block_size + 1].astype(np.int64)) for i in ix.tolist()])


def train_batch(c, mode, data_dir, iter_num, global_micro, model):
    """Global micro-batch `global_micro` of iteration iter_num, laid out for training and prepared
    for the model (on its device, attention masks built: see GPT.prepare)."""
    gen = micro_batch_generator(c['seed'], iter_num, global_micro)
    chunk = get_chunk(data_dir, 'train', c['batch_size'], c['block_size'], gen, mode.chunk_align)
    return model.prepare(**mode.train_batch(chunk, mode.train_counts(c['block_size'], gen)))


def set_attention(model, c):
    """The model's attention backend for config c (one-line error for one that cannot run here)."""
    try:
        model.set_attention(c['attention'])
    except ValueError as e:
        fail(str(e))


def keep_freed_memory():
    """
    Serve every allocation from glibc's heap and keep freed memory there. By default glibc maps
    blocks over a threshold (128 KiB, rising to at most 32 MiB) straight from the OS and unmaps them
    when freed, so every CPU training step faults its activations in again, page by page, and the
    kernel zeroes them: at the 124M shape on a 2-core CPU, 0.35-0.45M page faults and 1-3 s of kernel
    time per ~6 s step (25-40k and 0.3 s kept; the step 18% faster). Kept, blocks are reused once
    the heap has grown over the first few steps; peak RSS grew 0-7% in bench.py's runs. A no-op off
    glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    mallopt(M_MMAP_MAX, 0)  # no mmap for large blocks (glibc still falls back to it if the heap cannot grow)
    mallopt(M_TRIM_THRESHOLD, -1)  # never give the heap's free top back to the OS


def precision(c, device):
    """(dtype name, autocast context) for config c on device, the same in train, sample and bench:
    float32 on CPU, bf16 on GPUs that have it, else fp16 (with a GradScaler in training). Also
    applies the process-wide settings for the device: TF32 matmuls on GPUs, keep_freed_memory on CPU."""
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    dtype = c['dtype'] or ('float32' if device_type == 'cpu' else
                           'bfloat16' if torch.cuda.is_bf16_supported() else 'float16')
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}.get(dtype)
    if ptdtype is None:
        fail(f"dtype={dtype!r} must be float32, bfloat16 or float16")
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        keep_freed_memory()
    autocast = nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
    return dtype, autocast


# ---- model and optimization step --------------------------------------------------------------

def new_model(c, mode):
    """A freshly initialised GPT for config c: positions and slot embeddings sized by the mode."""
    return GPT(GPTConfig(n_positions=mode.n_positions(c['block_size']),
                         vocab_size=pad_vocab(mode.text_vocab_size + NUM_SPECIAL_TOKENS),
                         n_layer=c['n_layer'], n_head=c['n_head'], n_embd=c['n_embd'],
                         dropout=c['dropout'], bias=c['bias'], n_slot_embd=mode.num_reason))


def train_step(model, optimizer, scaler, batches, accum, autocast, grad_clip, ddp, stop_requested=False):
    """
    One optimizer step over `accum` micro-batches. Returns (mean loss tensor, finite, stop):
    the update is skipped when the loss or the gradient is not finite (fp16's GradScaler handles
    overflowing gradients itself), and stop is True on every rank if any rank asked to stop, so
    all ranks leave the loop after the same step. One small all-reduce and one host sync per step.
    """
    loss_sum = 0.0
    for micro_step, batch in enumerate(batches):
        if ddp:  # all-reduce gradients only on the last micro-step
            model.require_backward_grad_sync = micro_step == accum - 1
        with autocast:
            _, loss = model(**batch)
            loss = loss / accum
        loss_sum += loss.detach()
        scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # true gradients for the norm (a no-op without fp16 scaling)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    bad_grad = ~torch.isfinite(norm) & (not scaler.is_enabled())
    flags = torch.stack([(~torch.isfinite(loss_sum) | bad_grad).float(),
                         torch.tensor(float(stop_requested), device=norm.device)])
    if ddp:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    nonfinite, stop = (bool(f) for f in flags.tolist())
    if not nonfinite:
        if grad_clip != 0.0:
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, norm)
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, not nonfinite, stop


# ---- checkpoints ------------------------------------------------------------------------------

def save_checkpoint(path, keep, checkpoint):
    """
    Write atomically: a temporary file in the same directory, flushed to disk, then renamed over
    the old one, so a crash at any moment leaves the previous checkpoint loadable. With keep > 1
    the last `keep` checkpoints also stay as ckpt-<iter>.pt (hard links: no extra space).
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if keep > 1:
        folder = os.path.dirname(os.path.abspath(path))
        numbered = os.path.join(folder, f"ckpt-{checkpoint['iter_num']:08d}.pt")
        if os.path.exists(numbered):
            os.remove(numbered)
        os.link(path, numbered)
        for old in sorted(f for f in os.listdir(folder) if f.startswith('ckpt-') and f.endswith('.pt'))[:-keep]:
            os.remove(os.path.join(folder, old))


def start_metrics(path, iter_num):
    """metrics.jsonl gets one line per evaluation; a resumed run keeps the lines up to its
    checkpoint's iteration (later ones belong to steps that are redone), a new run starts empty."""
    lines = []
    if iter_num > 0 and os.path.exists(path):
        with open(path) as f:
            lines = [line for line in f if line.strip() and json.loads(line)['iter'] <= iter_num]
    with open(path + '.tmp', 'w') as f:
        f.writelines(lines)
    os.replace(path + '.tmp', path)


def append_metrics(path, record):
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def load_checkpoint(path, map_location='cpu'):
    if not os.path.exists(path):
        fail(f"no checkpoint at {path}: train first, or use --init_from=scratch")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, bad pickle, ...
        fail(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); restore a good copy or start over")
    if not isinstance(checkpoint, dict) or 'model' not in checkpoint or 'model_args' not in checkpoint:
        fail(f"{path} is not a checkpoint written by train.py")
    return checkpoint


def model_from_checkpoint(checkpoint):
    model = GPT(GPTConfig(**checkpoint['model_args']))
    state = checkpoint['model']
    # checkpoints of compiled models carry this prefix
    state = {k.removeprefix('_orig_mod.'): v for k, v in state.items()}
    model.load_state_dict(state)
    return model


def rng_state(device):
    state = {'torch': torch.get_rng_state()}
    if device.startswith('cuda'):
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and device.startswith('cuda'):
        torch.cuda.set_rng_state(state['cuda'], device)


# ---- the run ---------------------------------------------------------------------------------

def init_process_group(backend, rank, world):
    """dist.init_process_group over torchrun's store, with a key prefix per restart attempt:
    torchrun --max-restarts keeps its store, and a restarted group could otherwise read the previous
    attempt's addresses and fail to connect (pytorch/pytorch#167288)."""
    store, _, _ = next(dist.rendezvous('env://', rank, world))
    attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
    dist.init_process_group(backend, store=dist.PrefixStore(f'attempt{attempt}', store), rank=rank, world_size=world)


def lr_at(it, config):
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not config['decay_lr']:
        return config['learning_rate']
    if it < config['warmup_iters']:
        return config['learning_rate'] * (it + 1) / (config['warmup_iters'] + 1)
    if it > config['lr_decay_iters']:
        return config['min_lr']
    ratio = (it - config['warmup_iters']) / (config['lr_decay_iters'] - config['warmup_iters'])
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return config['min_lr'] + coeff * (config['learning_rate'] - config['min_lr'])


def resolve_config(argv):
    """Config from argv; on resume, argv applies on top of the checkpoint's config, and model or
    layout keys that then differ from the checkpoint are an error."""
    config = configure(DEFAULTS, argv)
    checkpoint = None
    ckpt_path = os.path.join(config['out_dir'], 'ckpt.pt')
    if config['init_from'] == 'auto':
        config['init_from'] = 'resume' if os.path.exists(ckpt_path) else 'scratch'
    if config['init_from'] != 'resume' and os.path.exists(ckpt_path) and not config['eval_only']:
        fail(f"{ckpt_path} exists and init_from={config['init_from']!r} would overwrite it: continue that run with "
             f"--init_from=resume (or auto), or choose another --out_dir")
    if config['init_from'] == 'resume':
        checkpoint = load_checkpoint(ckpt_path)
        saved = checkpoint['config']
        config = configure({**DEFAULTS, **saved}, argv)
        config['init_from'] = 'resume'
        differ = [k for k in MODEL_KEYS + LAYOUT_KEYS if config[k] != saved.get(k)]
        if differ:
            diffs = ', '.join(f"{k}={saved.get(k)!r} in checkpoint vs {config[k]!r}" for k in differ)
            fail(f"cannot resume {ckpt_path} with different model/mode settings: {diffs}")
    try:
        check_config(config)
    except ValueError as e:
        fail(str(e))
    return config, checkpoint


def main(argv=None):
    config, checkpoint = resolve_config(sys.argv[1:] if argv is None else argv)
    c = config  # short alias for the loop below

    # -- processes and devices
    ddp = int(os.environ.get('RANK', -1)) != -1
    device = device_of(c)
    if ddp:
        rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
        if device.startswith('cuda'):
            device = f'cuda:{local_rank}'
            torch.cuda.set_device(device)
        init_process_group(c['backend'] or ('nccl' if device.startswith('cuda') else 'gloo'), rank, world)
    else:
        rank, local_rank, world = 0, 0, 1
    master = rank == 0
    if c['gradient_accumulation_steps'] < 1 or c['gradient_accumulation_steps'] % world:
        fail(f"gradient_accumulation_steps={c['gradient_accumulation_steps']} must be a positive multiple of the "
             f"world size {world}")
    accum = c['gradient_accumulation_steps'] // world
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    dtype, autocast = precision(c, device)
    torch.manual_seed(c['seed'] + rank)  # dropout differs across ranks; data does not (see get_chunk)

    # -- data and mode
    data_dir = data_dir_of(c)
    check_data(data_dir, c['block_size'])
    text_vocab = checkpoint['text_vocab_size'] if checkpoint else text_vocab_size_of(data_dir)
    if master:
        check_token_ids(data_dir, text_vocab)
    records = records_of(data_dir)
    if c['answer_only'] and records is None:
        fail(f"answer_only=True needs a prompt/answer dataset (meta.pkl with record_len), {data_dir} is plain "
             f"text: use e.g. --dataset=arithmetic (data/arithmetic/prepare.py)")
    if c['answer_only'] and c['block_size'] % records.record_len:
        fail(f"answer_only=True needs block_size to be a multiple of the record length {records.record_len}, "
             f"got {c['block_size']}")
    try:
        mode = Mode(c, text_vocab, records)
    except ValueError as e:
        fail(str(e))
    text_per_iter = c['gradient_accumulation_steps'] * c['batch_size'] * c['block_size']

    # -- model
    iter_num, best_val_loss, train_time = 0, float('inf'), 0.0
    if checkpoint is not None:
        model = model_from_checkpoint(checkpoint)
        iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
        train_time = checkpoint.get('train_time', 0.0)
    elif c['init_from'] == 'scratch':
        model = new_model(c, mode)
    elif os.path.exists(os.path.join(c['init_from'], 'ckpt.pt')):  # a run of this repo: finetune its weights
        source = load_checkpoint(os.path.join(c['init_from'], 'ckpt.pt'))
        model = model_from_checkpoint(source)
        for k in ('n_layer', 'n_head', 'n_embd', 'bias'):
            c[k] = source['config'][k]
        if source['text_vocab_size'] != text_vocab:
            fail(f"{c['init_from']} was trained on a vocab of {source['text_vocab_size']} tokens, {data_dir} has "
                 f"{text_vocab}: finetune on a dataset with the same vocab")
        if mode.num_reason > model.config.n_slot_embd:
            fail(f"num_reason_tokens={mode.num_reason} needs that many slot embeddings, {c['init_from']} has "
                 f"{model.config.n_slot_embd}: pretrain in reasoning mode with at least that N")
        del source
    else:  # GPT-2 weights
        model = GPT.from_pretrained(c['init_from'], dict(dropout=c['dropout']))
        for k in ('n_layer', 'n_head', 'n_embd', 'bias'):
            c[k] = getattr(model.config, k)
        if mode.num_reason > 0:
            fail("reasoning mode needs slot embeddings that GPT-2 checkpoints lack; train from scratch")
    if mode.n_positions(c['block_size']) > model.config.n_positions:
        fail(f"block_size={c['block_size']} needs {mode.n_positions(c['block_size'])} positions in mode "
             f"{c['mode']}, the model has {model.config.n_positions}: lower block_size")
    if model.config.vocab_size < text_vocab + NUM_SPECIAL_TOKENS:
        fail(f"the model's vocab ({model.config.vocab_size}) has no room for the dataset's {text_vocab} tokens "
             f"and {NUM_SPECIAL_TOKENS} thinking tokens")
    model.to(device)
    set_attention(model, c)
    # the first write to out_dir: every check that can fail on the config, data or checkpoint came before
    if master and not c['eval_only']:
        check_writable(c['out_dir'])
        for stale in glob.glob(os.path.join(c['out_dir'], 'ckpt.pt.tmp.*')):
            os.remove(stale)  # left by a process killed while saving

    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
    optimizer = model.configure_optimizers(c['weight_decay'], c['learning_rate'], (c['beta1'], c['beta2']), device_type)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint['optimizer'])
        scaler.load_state_dict(checkpoint['scaler'])
        if len(checkpoint['rng']) == world:
            set_rng_state(checkpoint['rng'][rank], device)
        elif master:
            print(f"note: checkpoint has RNG states of {len(checkpoint['rng'])} ranks, running {world}: dropout RNG reseeded")
    raw_model = model
    if c['compile']:
        # static shapes: a run sees a few layout shapes (training, eval variants), each compiled once
        model = torch.compile(model, dynamic=False)
    eval_model = model  # evaluation runs the compiled model too, without DDP
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
    flops_per_text_token = mode.flops_per_text_token(raw_model, c['block_size'])
    peak = peak_flops_for(device, c['peak_flops'])
    checkpoint = None  # free memory

    metrics_path = os.path.join(c['out_dir'], 'metrics.jsonl')
    if master and not c['eval_only']:
        start_metrics(metrics_path, iter_num)
        print(f"mode {c['mode']}: {raw_model.get_num_params() / 1e6:.2f}M parameters, "
              f"{text_per_iter:,} text tokens per iteration, {flops_per_text_token / 1e6:.1f} MFLOPs per text token")
    run = None
    if c['wandb_log'] and master:
        import wandb
        run = wandb.init(project=c['wandb_project'], name=c['wandb_run_name'] or os.path.basename(os.path.abspath(c['out_dir'])),
                         group=c['wandb_group'] or None, config=c, dir=c['out_dir'])

    @torch.no_grad()
    def estimate_loss():
        """Mean loss per text token on fixed batches (the same in every eval and every mode),
        for each split and eval variant; the batches are divided among the ranks."""
        out = {}
        model.eval()
        for split in ('train', 'val'):
            for variant, counts_fn in mode.eval_variants(c['block_size']).items():
                total = torch.zeros((), device=device)
                for k in range(rank, c['eval_iters'], world):
                    gen = micro_batch_generator(EVAL_SEED, 0, k)
                    chunk = get_chunk(data_dir, split, c['batch_size'], c['block_size'], gen, mode.chunk_align)
                    batch = raw_model.prepare(**mode.eval_batch(chunk, counts_fn(c['block_size'], gen)))
                    with autocast:
                        _, loss = eval_model(**batch)
                    total += loss.float()
                if ddp:
                    dist.all_reduce(total)
                out[split + ('_' + variant if variant else '')] = total.item() / c['eval_iters']
        model.train()
        return out

    def checkpoint_now():
        rngs = [None] * world
        if ddp:
            dist.all_gather_object(rngs, rng_state(device))
        else:
            rngs = [rng_state(device)]
        if master:
            save_checkpoint(os.path.join(c['out_dir'], 'ckpt.pt'), c['keep_checkpoints'], {
                'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(),
                'scaler': scaler.state_dict(), 'model_args': asdict(raw_model.config),
                'iter_num': iter_num, 'best_val_loss': best_val_loss, 'train_time': train_time, 'config': c,
                'text_vocab_size': text_vocab, 'special_tokens': special_token_ids(text_vocab), 'rng': rngs,
            })

    bar = None
    if master and c['progress_bar'] and sys.stdout.isatty() and not c['eval_only']:
        from tqdm import tqdm
        bar = tqdm(total=c['max_iters'], initial=iter_num, unit='it', dynamic_ncols=True)
    log = bar.write if bar is not None else print

    # A preemption notice (SIGTERM) or Ctrl-C finishes the current step, saves, and exits cleanly.
    # A second Ctrl-C stops at once.
    stop_signal = []

    def request_stop(signum, frame):
        if stop_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop_signal.append(signal.Signals(signum).name)
    previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    start_iter = iter_num
    t_last, iters_since_log, loss_sum = time.time(), 0, torch.zeros((), device=device)
    while True:
        # -- evaluate and checkpoint (not again right after a resume: that was done before the stop)
        if (iter_num % c['eval_interval'] == 0 or iter_num == c['max_iters']) and \
                (iter_num != start_iter or start_iter == 0 or c['eval_only']):
            t_eval = time.time()
            losses = estimate_loss()
            t_last += time.time() - t_eval  # eval time is not training time
            if master:
                shown = ', '.join(f"{k} {v:.4f}" for k, v in losses.items())
                log(f"step {iter_num}: {shown} (loss per text token)")
                if run is not None:
                    run.log({'iter': iter_num, 'text_tokens': iter_num * text_per_iter,
                             'lr': lr_at(iter_num, c), **{f'loss/{k}': v for k, v in losses.items()}})
                if not c['eval_only']:
                    text_tps = iter_num * text_per_iter / train_time if train_time else 0.0
                    append_metrics(metrics_path, {
                        'iter': iter_num, 'max_iters': c['max_iters'], 'final': iter_num >= c['max_iters'],
                        'text_tokens': iter_num * text_per_iter,
                        'train_flops': iter_num * text_per_iter * flops_per_text_token,
                        'flops_per_text_token': flops_per_text_token, 'train_time_s': train_time,
                        'text_tok_s': text_tps, 'slot_tok_s': text_tps * mode.slots_per_text_token(c['block_size']),
                        'losses': losses})
            if not math.isfinite(losses['val']):
                fail(f"val loss is {losses['val']} at iter {iter_num}; the last good checkpoint was kept")
            if losses['val'] < best_val_loss or c['always_save_checkpoint']:
                best_val_loss = min(best_val_loss, losses['val'])
                if iter_num > 0 and not c['eval_only']:
                    checkpoint_now()
        if iter_num >= c['max_iters'] or c['eval_only']:
            break

        # -- one optimizer step over `accum` micro-batches
        lr = lr_at(iter_num, c)
        for group in optimizer.param_groups:
            group['lr'] = lr
        t_step = time.time()
        batches = (train_batch(c, mode, data_dir, iter_num, micro_step * world + rank, raw_model)
                   for micro_step in range(accum))
        loss, finite, stop = train_step(model, optimizer, scaler, batches, accum, autocast, c['grad_clip'], ddp,
                                        stop_requested=bool(stop_signal))
        train_time += time.time() - t_step
        if not finite:
            if c['on_nonfinite'] == 'stop':
                fail(f"non-finite loss or gradient at iter {iter_num}; stopped without saving, the last good "
                     f"checkpoint in {c['out_dir']} is kept (lower learning_rate, or --on_nonfinite=skip)")
            log(f"iter {iter_num}: non-finite loss or gradient, update skipped")
        else:
            loss_sum += loss
            iters_since_log += 1
        iter_num += 1
        if bar is not None:
            bar.update(1)

        # -- log: mean training loss since the last log, over all ranks (one sync per log)
        if (iter_num % c['log_interval'] == 0 or iter_num == c['max_iters']) and iters_since_log:
            if ddp:
                dist.all_reduce(loss_sum)
                loss_sum /= world
            loss_value = loss_sum.item() / iters_since_log
            dt = (time.time() - t_last) / iters_since_log
            text_tps = text_per_iter / dt
            slot_tps = text_tps * mode.slots_per_text_token(c['block_size'])
            mfu = f"{100 * flops_per_text_token * text_tps / (peak * world):.2f}%" if peak else "n/a"
            if master:
                log(f"iter {iter_num}: loss {loss_value:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
                    f"{text_tps:,.0f} text tok/s, {slot_tps:,.0f} slot tok/s, mfu {mfu}")
                if run is not None:
                    run.log({'iter': iter_num, 'loss/train_objective': loss_value, 'ms_per_iter': dt * 1000,
                             'text_tokens_per_s': text_tps, 'slot_tokens_per_s': slot_tps})
            t_last, iters_since_log = time.time(), 0
            loss_sum.zero_()

        if stop:
            checkpoint_now()
            if master:
                why = stop_signal[0] if stop_signal else 'another rank'
                log(f"stopped by {why} after iter {iter_num}: checkpoint saved in {c['out_dir']}; "
                    f"continue with --init_from=resume")
            break

    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)
    if bar is not None:
        bar.close()
    if run is not None:
        run.finish()
    if ddp:
        # wait for rank 0's last checkpoint write: a rank that tears gloo down while another is still
        # working can abort at exit ("terminate called without an active exception")
        dist.barrier()
        # Free DDP (it holds the process group, inside reference cycles) so that destroying the group
        # joins gloo's threads now. Left to the interpreter's exit, a gloo thread could free its last
        # all-reduce after Python began shutting down and abort the rank with the same message
        # (2 of 50 complete 2-rank CPU runs did)
        del model
        gc.collect()
        dist.destroy_process_group()


if __name__ == '__main__':
    try:
        main()
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        # the error line in a single write: under torchrun every rank shares stderr, and Python's
        # own report writes the message and its newline separately, so ranks' lines could interleave
        os.write(sys.stderr.fileno(), (e.code + '\n').encode())
        raise SystemExit(1)
