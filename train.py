"""
Train a GPT-2 in any thinking-token mode, on one CPU/GPU or many under torchrun.

    python train.py config/train_shakespeare_char_cpu.py
    python train.py config/reasoning_shakespeare_char.py --num_reason_tokens=3
    torchrun --standalone --nproc_per_node=8 train.py config/reasoning_owt.py

The set-up, the step and the evaluation are training.py's, shared with bench.py; the mode
(modes.py) turns each batch of text into the model's token layout, so the loop below is the same
for every mode. The data order and the insertion patterns are a function of (seed, iteration,
micro-step), so a resumed run continues exactly where it stopped.
"""

import gc
import math
import os
import signal
import sys
import time
from dataclasses import asdict

import torch
import torch.distributed as dist

from checkpoints import (FORMAT_VERSION, append_metrics, claim_out_dir, load_checkpoint, rng_state, save_checkpoint,
                         start_metrics)
from configurator import configure, fail
from modes import LAYOUT_KEYS, special_token_ids
from training import (DEFAULTS, MODEL_KEYS, check_config, config_of, device_of, estimate_loss, init_process_group,
                      lr_at, set_up, train_step)


def resolve_config(argv):
    """(config, checkpoint or None) from argv; on resume, argv applies on top of the checkpoint's
    config, and model or layout keys that then differ from the checkpoint are an error."""
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
        if checkpoint.get('source') == 'nanoGPT':
            fail(f"{ckpt_path} was written by nanoGPT and cannot be resumed here: finetune from it with "
                 f"--init_from={config['out_dir']} and another --out_dir")
        saved = config_of(checkpoint['config'])  # keys added since it was written take their defaults
        config = configure(saved, argv)
        config['init_from'] = 'resume'
        differ = [k for k in MODEL_KEYS + LAYOUT_KEYS if config[k] != saved[k]]
        if differ:
            diffs = ', '.join(f"{k}={saved[k]!r} in checkpoint vs {config[k]!r}" for k in differ)
            fail(f"cannot resume {ckpt_path} with different model/mode settings: {diffs}")
    try:
        check_config(config)
    except ValueError as e:
        fail(str(e))
    return config, checkpoint


def start_processes(c):
    """(rank, local_rank, world, ddp): under torchrun, this rank's GPU chosen and the group joined."""
    if int(os.environ.get('RANK', -1)) == -1:
        return 0, 0, 1, False
    rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
    on_cuda = device_of(c).startswith('cuda')
    if on_cuda:
        torch.cuda.set_device(f'cuda:{local_rank}')
    init_process_group(c['backend'] or ('nccl' if on_cuda else 'gloo'), rank, world)
    return rank, local_rank, world, True


def save(run):
    """Checkpoint the run: every rank's RNG state, gathered; rank 0 writes."""
    rngs = [None] * run.world
    if run.ddp:
        dist.all_gather_object(rngs, rng_state(run.device))
    else:
        rngs = [rng_state(run.device)]
    if run.master:
        text_vocab = run.mode.text_vocab_size
        save_checkpoint(os.path.join(run.c['out_dir'], 'ckpt.pt'), run.c['keep_checkpoints'], {
            'model': run.model.state_dict(), 'optimizer': run.optimizer.state_dict(),
            'scaler': run.scaler.state_dict(), 'model_args': asdict(run.model.config),
            'iter_num': run.iter_num, 'best_val_loss': run.best_val_loss, 'train_time': run.train_time,
            'config': run.c, 'text_vocab_size': text_vocab, 'special_tokens': special_token_ids(text_vocab),
            'rng': rngs, 'format': FORMAT_VERSION,
        })


def evaluate(run, log, wandb_run):
    """Evaluate, log (console, metrics.jsonl, wandb) and checkpoint when due; a non-finite val loss stops."""
    c, it = run.c, run.iter_num
    losses = estimate_loss(run)
    if run.master:
        log(f"step {it}: {', '.join(f'{k} {v:.4f}' for k, v in losses.items())} (loss per text token)")
        if wandb_run is not None:
            wandb_run.log({'iter': it, 'text_tokens': it * run.text_per_iter, 'lr': lr_at(it, c),
                           **{f'loss/{k}': v for k, v in losses.items()}})
        if not c['eval_only']:
            text_tps = it * run.text_per_iter / run.train_time if run.train_time else 0.0
            append_metrics(os.path.join(c['out_dir'], 'metrics.jsonl'), {
                'iter': it, 'max_iters': c['max_iters'], 'final': it >= c['max_iters'],
                'text_tokens': it * run.text_per_iter, 'train_flops': it * run.text_per_iter * run.flops_per_text_token,
                'flops_per_text_token': run.flops_per_text_token, 'train_time_s': run.train_time,
                'text_tok_s': text_tps, 'slot_tok_s': text_tps * run.mode.slots_per_text_token(c['block_size']),
                'losses': losses})
    if not math.isfinite(losses['val']):
        fail(f"val loss is {losses['val']} at iter {it}; the last good checkpoint was kept")
    if losses['val'] < run.best_val_loss or c['always_save_checkpoint']:
        run.best_val_loss = min(run.best_val_loss, losses['val'])
        if it > 0 and not c['eval_only']:
            save(run)


def log_training(run, log, wandb_run, loss_sum, iters, seconds):
    """The mean training loss of the last `iters` steps over all ranks (one sync per log), and speed."""
    if run.ddp:
        dist.all_reduce(loss_sum)
        loss_sum /= run.world
    loss, dt = loss_sum.item() / iters, seconds / iters
    text_tps = run.text_per_iter / dt
    slot_tps = text_tps * run.mode.slots_per_text_token(run.c['block_size'])
    mfu = f"{100 * run.flops_per_text_token * text_tps / (run.peak_flops * run.world):.2f}%" if run.peak_flops else "n/a"
    if run.master:
        log(f"iter {run.iter_num}: loss {loss:.4f}, lr {lr_at(run.iter_num - 1, run.c):.2e}, {dt * 1000:.1f} ms/iter, "
            f"{text_tps:,.0f} text tok/s, {slot_tps:,.0f} slot tok/s, mfu {mfu}")
        if wandb_run is not None:
            wandb_run.log({'iter': run.iter_num, 'loss/train_objective': loss, 'ms_per_iter': dt * 1000,
                           'text_tokens_per_s': text_tps, 'slot_tokens_per_s': slot_tps})


class StopRequests:
    """A preemption notice (SIGTERM) or Ctrl-C finishes the current step, saves, and exits cleanly;
    a second Ctrl-C stops at once."""

    def __enter__(self):
        self.signals = []
        self.previous = {sig: signal.signal(sig, self.request) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def request(self, signum, frame):
        if self.signals and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signals.append(signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def tear_down(run):
    # Wait for rank 0's last checkpoint write: a rank that tears gloo down while another is still
    # working can abort at exit. Then free DDP (it holds the process group, inside reference cycles)
    # so that destroying the group joins gloo's threads now rather than during interpreter shutdown,
    # where a late all-reduce can abort the rank the same way ("terminate called without an active exception").
    dist.barrier()
    run.step_model = run.eval_model = None
    gc.collect()
    dist.destroy_process_group()


def main(argv=None):
    c, checkpoint = resolve_config(sys.argv[1:] if argv is None else argv)
    rank, local_rank, world, ddp = start_processes(c)
    run = set_up(c, checkpoint, rank=rank, world=world, local_rank=local_rank, ddp=ddp)
    del checkpoint  # free memory
    # the first write to out_dir: every check that can fail on the config, data or checkpoint came before
    if run.master and not c['eval_only']:
        claim_out_dir(c['out_dir'])
        start_metrics(os.path.join(c['out_dir'], 'metrics.jsonl'), run.iter_num)
        print(f"mode {c['mode']}: {run.model.get_num_params() / 1e6:.2f}M parameters, {run.text_per_iter:,} text "
              f"tokens per iteration, {run.flops_per_text_token / 1e6:.1f} MFLOPs per text token")
    wandb_run, bar = None, None
    if c['wandb_log'] and run.master:
        import wandb
        wandb_run = wandb.init(project=c['wandb_project'], group=c['wandb_group'] or None, config=c, dir=c['out_dir'],
                               name=c['wandb_run_name'] or os.path.basename(os.path.abspath(c['out_dir'])))
    if run.master and c['progress_bar'] and sys.stdout.isatty() and not c['eval_only']:
        from tqdm import tqdm
        bar = tqdm(total=c['max_iters'], initial=run.iter_num, unit='it', dynamic_ncols=True)
    log = bar.write if bar is not None else print

    start_iter = run.iter_num
    t_last, iters_since_log, loss_sum = time.time(), 0, torch.zeros((), device=run.device)
    with StopRequests() as stop_requests:
        while True:
            # evaluate and checkpoint (not again right after a resume: that was done before the stop)
            if (run.iter_num % c['eval_interval'] == 0 or run.iter_num == c['max_iters']) and \
                    (run.iter_num != start_iter or start_iter == 0 or c['eval_only']):
                t_eval = time.time()
                evaluate(run, log, wandb_run)
                t_last += time.time() - t_eval  # eval time is not training time
            if run.iter_num >= c['max_iters'] or c['eval_only']:
                break

            t_step = time.time()
            loss, finite, stop = train_step(run, stop_requested=bool(stop_requests.signals))
            run.train_time += time.time() - t_step
            if not finite:
                if c['on_nonfinite'] == 'stop':
                    fail(f"non-finite loss or gradient at iter {run.iter_num}; stopped without saving, the last good "
                         f"checkpoint in {c['out_dir']} is kept (lower learning_rate, or --on_nonfinite=skip)")
                log(f"iter {run.iter_num}: non-finite loss or gradient, update skipped")
            else:
                loss_sum += loss
                iters_since_log += 1
            run.iter_num += 1
            if bar is not None:
                bar.update(1)
            if (run.iter_num % c['log_interval'] == 0 or run.iter_num == c['max_iters']) and iters_since_log:
                log_training(run, log, wandb_run, loss_sum, iters_since_log, time.time() - t_last)
                t_last, iters_since_log = time.time(), 0
                loss_sum.zero_()
            if stop:
                save(run)
                if run.master:
                    why = stop_requests.signals[0] if stop_requests.signals else 'another rank'
                    log(f"stopped by {why} after iter {run.iter_num}: checkpoint saved in {c['out_dir']}; "
                        f"continue with --init_from=resume")
                break

    if bar is not None:
        bar.close()
    if wandb_run is not None:
        wandb_run.finish()
    if run.ddp:
        tear_down(run)


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
