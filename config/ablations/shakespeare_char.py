"""
The thinking-token ablation on character-level Tiny Shakespeare, on a CPU.

    python data/shakespeare_char/prepare.py
    python scripts/ablate.py config/ablations/shakespeare_char.py --jobs=2

Every variant is the CPU recipe (4 layers, 4 heads, 128 wide, block 64, batch 12) shortened to 1000
iterations (768k text tokens; the full 2000 would take the grid past two hours), in one mode, 3
seeds each, at equal text tokens; 'standard, FLOPs of X' is standard given the training FLOPs of X
(more iterations: 1.1x for pause and reflection, 1.86x for reasoning N=1, 3.75x for N=3; see
grids.py). Val losses are per text token, on the same fixed batches in every run, so they compare
across modes.

Expected time: roughly 100 min on 2 cores with --jobs=2 (45 runs; the last measured, before the
equal-FLOPs rows for pause, reflection and N=3, took about 80). Per 1000-iteration run at one
thread, standard takes ~1 min of training; pause and reflection ~1.2x that, hidden reflection
~2x, reasoning N=1 (any K, stopgrad) ~3x, reasoning heads ~1.5x, N=3 ~8x (masked attention on a CPU is dense), standard at
reasoning N=1's FLOPs ~2x, at N=3's ~4x; the 9 evals of 100 batches per split add ~30% (~60% for pause and
reflection, which also evaluate without their inserted tokens). Reruns skip finished runs.
"""

base = 'config/train_shakespeare_char_cpu.py'
common = dict(
    max_iters=1000,
    lr_decay_iters=1000,
    eval_interval=250,  # 4 points per curve after the one at initialisation
    eval_iters=100,  # per split: the final val loss to ~0.01, at a third of the recipe's eval cost
    log_interval=100,  # train.log stays readable
)
seeds = [1, 2, 3]
out_root = 'out/ablations/shakespeare_char'
title = 'Tiny Shakespeare'
variants = {
    'standard': dict(mode='standard'),
    'pause 10%': dict(mode='pause', pause_rate=0.1),
    'reflection 10%': dict(mode='reflection', reflect_rate=0.1),
    'reflection 10% hidden': dict(mode='reflection', reflect_rate=0.1, reflect_hidden=True),
    'reasoning N=1': dict(mode='reasoning', num_reason_tokens=1, reason_delay=1),
    'reasoning N=3': dict(mode='reasoning', num_reason_tokens=3, reason_delay=1),
    'reasoning N=1 stopgrad': dict(mode='reasoning', num_reason_tokens=1, reason_delay=1, reason_stopgrad=True),
    'reasoning N=1 K=2': dict(mode='reasoning', num_reason_tokens=1, reason_delay=2),
    # the reasoning rule on the text tokens themselves in the last h of the 4 heads: standard's FLOPs
    'reasoning heads h=1': dict(mode='reasoning', num_reason_tokens=0, reason_heads=1, reason_delay=1),
    'reasoning heads h=2': dict(mode='reasoning', num_reason_tokens=0, reason_heads=2, reason_delay=1),
    'reasoning heads h=1 stopgrad': dict(mode='reasoning', num_reason_tokens=0, reason_heads=1, reason_delay=1,
                                         reason_stopgrad=True),
    'reasoning heads h=2 stopgrad': dict(mode='reasoning', num_reason_tokens=0, reason_heads=2, reason_delay=1,
                                         reason_stopgrad=True),
    # standard given each thinking variant's training FLOPs; one run serves variants of the same FLOPs
    # (within 2%), and the reasoning heads run at standard's own FLOPs (1.00x): standard is theirs
    'standard, FLOPs of pause/reflection 10%': dict(mode='standard', flops_budget_of=[
        'pause 10%', 'reflection 10%', 'reflection 10% hidden']),
    'standard, FLOPs of reasoning N=1': dict(mode='standard', flops_budget_of=[
        'reasoning N=1', 'reasoning N=1 stopgrad', 'reasoning N=1 K=2']),
    'standard, FLOPs of reasoning N=3': dict(mode='standard', flops_budget_of='reasoning N=3'),
}
