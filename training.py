"""
The run's set-up, shared by train.py, bench.py and the scripts: the config defaults and their
checks, device and precision, the model and optimizer from any `init_from`, the training step,
the learning-rate schedule and the evaluation loss. What train.py adds is the loop around them:
logging, checkpoints, signals.
"""

import ctypes
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from attention import BACKENDS
from checkpoints import load_checkpoint, model_from_checkpoint, set_rng_state
from configurator import fail
from dataset import (check_data, check_token_ids, data_dir_of, get_chunk, micro_batch_generator, records_of,
                     text_vocab_size_of)
from model import GPT, GPTConfig, pad_vocab
from modes import EVAL_SEED, NUM_SPECIAL_TOKENS, Mode

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
    # h > 0 (with num_reason_tokens=0): no reasoning slots; in the last h heads of every layer step s
    # does not see the text tokens of steps s-K .. s (or, with reason_stopgrad, gets no gradient into them)
    reason_heads=0,
    # prompt/answer datasets (data/arithmetic): whole records per sequence, loss on the answers only;
    # in pause mode, num_pause_tokens pauses after every prompt instead of pause_rate (finetuning)
    answer_only=False,
    num_pause_tokens=0,  # pauses after the prompt (answer_only training; sample.py has the same knob)
    align_records=True,  # windows start at a record boundary (False: anywhere; pretraining only)
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
# Peak dense bf16 tensor-core FLOP/s of the GPUs we know; anything else uses the config's peak_flops.
KNOWN_PEAK_FLOPS = {'A100': 312e12, 'H100': 989e12, 'H200': 989e12}


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
    if not 0 <= c['reason_heads'] <= c['n_head']:
        raise ValueError(f"reason_heads={c['reason_heads']} must be in 0..n_head={c['n_head']}")
    if c['attention'] not in ('auto', *BACKENDS):
        raise ValueError(f"attention={c['attention']!r} must be one of {', '.join(('auto', *BACKENDS))}")
    if c['on_nonfinite'] not in ('stop', 'skip'):
        raise ValueError(f"on_nonfinite={c['on_nonfinite']!r} must be 'stop' or 'skip'")


def config_of(saved):
    """A checkpoint's config, with the defaults filling keys that older runs lack."""
    return {**DEFAULTS, **saved}


# ---- device and precision ---------------------------------------------------------------------

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


def keep_freed_memory():
    """
    Serve every allocation from glibc's heap and keep freed memory there. By default glibc maps
    large blocks straight from the OS and unmaps them when freed, so every CPU training step would
    fault its activations in again, page by page, zeroed by the kernel (docs/performance.md has the
    cost). A no-op off glibc.
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


def init_process_group(backend, rank, world):
    """dist.init_process_group over torchrun's store, with a key prefix per restart attempt:
    torchrun --max-restarts keeps its store, and a restarted group could otherwise read the previous
    attempt's addresses and fail to connect (pytorch/pytorch#167288)."""
    store, _, _ = next(dist.rendezvous('env://', rank, world))
    attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
    dist.init_process_group(backend, store=dist.PrefixStore(f'attempt{attempt}', store), rank=rank, world_size=world)


# ---- the model --------------------------------------------------------------------------------

def mode_of(c, text_vocab=None):
    """The Mode of config c on its dataset (a ValueError for bad layout settings)."""
    data_dir = data_dir_of(c)
    return Mode(c, text_vocab_size_of(data_dir) if text_vocab is None else text_vocab, records_of(data_dir))


def new_model(c, mode):
    """A freshly initialised GPT for config c: positions and slot embeddings sized by the mode."""
    return GPT(GPTConfig(n_positions=mode.n_positions(c['block_size']),
                         vocab_size=pad_vocab(mode.text_vocab_size + NUM_SPECIAL_TOKENS),
                         n_layer=c['n_layer'], n_head=c['n_head'], n_embd=c['n_embd'],
                         dropout=c['dropout'], bias=c['bias'], n_slot_embd=mode.num_reason))


def initial_model(c, mode, checkpoint):
    """The model init_from names: the checkpoint's (resume), a new one, a run of this repo or of
    nanoGPT (its weights: finetuning, in any mode), or GPT-2 weights. Model keys of c follow the source's."""
    if checkpoint is not None:
        return model_from_checkpoint(checkpoint)
    if c['init_from'] == 'scratch':
        return new_model(c, mode)
    if os.path.exists(os.path.join(c['init_from'], 'ckpt.pt')):
        source = load_checkpoint(os.path.join(c['init_from'], 'ckpt.pt'))
        # a nanoGPT model gets the slot embeddings reasoning mode needs; a run of this repo has its own
        model = model_from_checkpoint(source, mode.num_reason if source.get('source') == 'nanoGPT' else 0)
        c.update({k: source['config'][k] for k in ('n_layer', 'n_head', 'n_embd', 'bias')})
        if source['text_vocab_size'] != mode.text_vocab_size:
            fail(f"{c['init_from']} was trained on a vocab of {source['text_vocab_size']} tokens, {data_dir_of(c)} "
                 f"has {mode.text_vocab_size}: finetune on a dataset with the same vocab")
        if mode.num_reason > model.config.n_slot_embd:
            fail(f"num_reason_tokens={mode.num_reason} needs that many slot embeddings, {c['init_from']} has "
                 f"{model.config.n_slot_embd}: pretrain in reasoning mode with at least that N")
        return model
    model = GPT.from_pretrained(c['init_from'], dict(dropout=c['dropout']))
    c.update({k: getattr(model.config, k) for k in ('n_layer', 'n_head', 'n_embd', 'bias')})
    if mode.num_reason > 0:
        fail("reasoning mode needs slot embeddings that GPT-2 checkpoints lack; train from scratch")
    return model


def set_attention(model, c):
    """The model's attention backend for config c (one-line error for one that cannot run here)."""
    try:
        model.set_attention(c['attention'])
    except ValueError as e:
        fail(str(e))


@dataclass
class Run:
    """Everything a training loop (train.py) or a timing of it (bench.py) works with."""
    c: dict
    device: str
    dtype: str
    autocast: object
    data_dir: str
    mode: Mode
    model: GPT  # the plain model: its state_dict, FLOPs, prepare
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step_model: torch.nn.Module  # what the step calls: the model, compiled if asked, wrapped in DDP
    eval_model: torch.nn.Module  # compiled if asked, without DDP
    synthetic: bool = False  # uniform random text instead of train.bin (bench.py)
    ddp: bool = False
    rank: int = 0
    world: int = 1
    iter_num: int = 0
    best_val_loss: float = float('inf')
    train_time: float = 0.0
    accum: int = field(init=False)

    def __post_init__(self):
        self.accum = self.c['gradient_accumulation_steps'] // self.world

    @property
    def master(self):
        return self.rank == 0

    @property
    def text_per_iter(self):
        return self.c['gradient_accumulation_steps'] * self.c['batch_size'] * self.c['block_size']

    @cached_property  # logged every step: priced once
    def flops_per_text_token(self):
        return self.mode.flops_per_text_token(self.model, self.c['block_size'])

    @cached_property
    def peak_flops(self):
        return peak_flops_for(self.device, self.c['peak_flops'])


def set_up(c, checkpoint=None, rank=0, world=1, local_rank=0, ddp=False, synthetic=False):
    """The Run of config c: data and mode checked, the model from init_from (or the checkpoint) on
    its device with its attention backend, optimizer and scaler (their state restored on resume),
    compiled and wrapped in DDP as asked. Every check that can fail comes before out_dir is touched."""
    torch.manual_seed(c['seed'] + rank)  # dropout differs across ranks; data does not (see dataset.py)
    device = device_of(c)
    if ddp and device.startswith('cuda'):
        device = f'cuda:{local_rank}'
    if c['gradient_accumulation_steps'] < 1 or c['gradient_accumulation_steps'] % world:
        fail(f"gradient_accumulation_steps={c['gradient_accumulation_steps']} must be a positive multiple of the "
             f"world size {world}")
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    dtype, autocast = precision(c, device)
    data_dir = data_dir_of(c)
    records = records_of(data_dir)
    if not synthetic:
        check_data(data_dir, c['block_size'], 1 if records is None else records.record_len)
    text_vocab = checkpoint['text_vocab_size'] if checkpoint else text_vocab_size_of(data_dir)
    if rank == 0 and not synthetic:
        check_token_ids(data_dir, text_vocab)
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

    model = initial_model(c, mode, checkpoint)
    if mode.n_positions(c['block_size']) > model.config.n_positions:
        fail(f"block_size={c['block_size']} needs {mode.n_positions(c['block_size'])} positions in mode "
             f"{c['mode']}, the model has {model.config.n_positions}: lower block_size")
    if model.config.vocab_size < text_vocab + NUM_SPECIAL_TOKENS:
        fail(f"the model's vocab ({model.config.vocab_size}) has no room for the dataset's {text_vocab} tokens "
             f"and {NUM_SPECIAL_TOKENS} thinking tokens")
    model.to(device)
    set_attention(model, c)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
    optimizer = model.configure_optimizers(c['weight_decay'], c['learning_rate'], (c['beta1'], c['beta2']), device_type)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint['optimizer'])
        scaler.load_state_dict(checkpoint['scaler'])
        if len(checkpoint['rng']) == world:
            set_rng_state(checkpoint['rng'][rank], device)
        elif rank == 0:
            print(f"note: checkpoint has RNG states of {len(checkpoint['rng'])} ranks, running {world}: dropout RNG reseeded")
    # static shapes: a run sees a few layout shapes (training, eval variants), each compiled once
    eval_model = torch.compile(model, dynamic=False) if c['compile'] else model
    step_model = DDP(eval_model, device_ids=[local_rank] if device_type == 'cuda' else None) if ddp else eval_model
    run = Run(c, device, dtype, autocast, data_dir, mode, model, optimizer, scaler, step_model, eval_model,
              synthetic=synthetic, ddp=ddp, rank=rank, world=world)
    if checkpoint is not None:
        run.iter_num, run.best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
        run.train_time = checkpoint.get('train_time', 0.0)
    return run


# ---- training and evaluation ------------------------------------------------------------------

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


def train_batch(run, iter_num, global_micro):
    """Global micro-batch `global_micro` of iteration iter_num, laid out for training and prepared
    for the model (on its device, attention masks built: see GPT.prepare)."""
    c, mode = run.c, run.mode
    gen = micro_batch_generator(c['seed'], iter_num, global_micro)
    if run.synthetic:
        chunk = torch.randint(mode.text_vocab_size, (c['batch_size'], c['block_size'] + 1), generator=gen)
    else:
        chunk = get_chunk(run.data_dir, 'train', c['batch_size'], c['block_size'], gen, mode.chunk_align)
    return run.model.prepare(**mode.train_batch(chunk, mode.train_counts(c['block_size'], gen)))


def train_step(run, stop_requested=False):
    """
    One optimizer step of iteration run.iter_num over its micro-batches, each made just before its
    forward pass. Returns (mean loss tensor, finite, stop): the update is skipped when the loss or the
    gradient is not finite (fp16's GradScaler handles overflowing gradients itself), and stop is True
    on every rank if any rank asked to stop, so all ranks leave the loop after the same step. One
    small all-reduce and one host sync per step.
    """
    model, optimizer, scaler = run.step_model, run.optimizer, run.scaler
    for group in optimizer.param_groups:
        group['lr'] = lr_at(run.iter_num, run.c)
    loss_sum = 0.0
    for micro_step in range(run.accum):
        batch = train_batch(run, run.iter_num, micro_step * run.world + run.rank)
        if run.ddp:  # all-reduce gradients only on the last micro-step
            model.require_backward_grad_sync = micro_step == run.accum - 1
        with run.autocast:
            _, loss = model(**batch)
            loss = loss / run.accum
        loss_sum += loss.detach()
        scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # true gradients for the norm (a no-op without fp16 scaling)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    bad_grad = ~torch.isfinite(norm) & (not scaler.is_enabled())
    flags = torch.stack([(~torch.isfinite(loss_sum) | bad_grad).float(),
                         torch.tensor(float(stop_requested), device=norm.device)])
    if run.ddp:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    nonfinite, stop = (bool(f) for f in flags.tolist())
    if not nonfinite:
        if run.c['grad_clip'] != 0.0:
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), run.c['grad_clip'], norm)
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, not nonfinite, stop


@torch.no_grad()
def estimate_loss(run):
    """Mean loss per text token on fixed batches (the same in every eval and every mode), for each
    split and eval variant; the batches are divided among the ranks."""
    c, mode = run.c, run.mode
    out = {}
    run.step_model.eval()
    for split in ('train', 'val'):
        for variant, counts_fn in mode.eval_variants(c['block_size']).items():
            total = torch.zeros((), device=run.device)
            for k in range(run.rank, c['eval_iters'], run.world):
                gen = micro_batch_generator(EVAL_SEED, 0, k)
                chunk = get_chunk(run.data_dir, split, c['batch_size'], c['block_size'], gen, mode.chunk_align)
                batch = run.model.prepare(**mode.eval_batch(chunk, counts_fn(c['block_size'], gen)))
                with run.autocast:
                    _, loss = run.eval_model(**batch)
                total += loss.float()
            if run.ddp:
                dist.all_reduce(total)
            out[split + ('_' + variant if variant else '')] = total.item() / c['eval_iters']
    run.step_model.train()
    return out
