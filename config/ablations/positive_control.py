"""
The positive control: a task built so that computation before the answer is what a model of the CPU
recipe's size lacks, where the literature expects thinking tokens to help (Goyal et al. 2023; Pfau et al.
2024, "Let's Think Dot by Dot": filler tokens let a fixed-depth transformer do parallel work it cannot
do in its answer positions alone). Exact-match accuracy, trained from scratch, 3 seeds.

    python data/arithmetic/prepare.py --operands=4 --add_digits=2 --out_dir=data/sum4
    python data/arithmetic/prepare.py --operands=4 --add_digits=2 --filler=8 --out_dir=data/sum4_filler8
    python scripts/ablate.py config/ablations/positive_control.py --jobs=2
    python scripts/eval_arithmetic.py --grid=config/ablations/positive_control.py --num_pause_tokens=0,2,4,8,16 --num_reason_tokens=0,1

The task: the sum of four 2-digit numbers, most significant digit first ("55+82+47+50=234"): the
first answer digit depends on all eight digits and on the carries out of both columns, which the
model's answer positions must gather and combine within 4 layers. Extra slots after the '=' add
parallel width (depth stays 4 layers), which is what this computation can use. The model trains
on the answers only (config/arithmetic/pretrain.py's 4-layer, 128-wide model with answer_only, 4
records a sequence) in each of:

    none                    standard: the answer right after the '='
    pause M=8               8 <pause> slots after every '=' (pause mode), in training and at inference
    filler 8                8 '.' characters after every '=' as plain text (data/sum4_filler8): the
                            same extra slots, made of text the model sees everywhere else too
    reasoning N=1           a reasoning slot after every token (reasoning mode)

and 'none, FLOPs of <thinking variant>': standard given that variant's training FLOPs (more steps);
filler 8's layout costs what pause M=8's does (within 1%), so one run serves both.

min_effect: the accuracy difference this grid is meant to resolve, stated before the runs: either
answer, pauses help or they do not, counts once 2 x SE is below it.

3SUM itself (after Pfau et al.) and 2SUM stayed at chance through 250-500 steps of this recipe in
pilots (docs/pilots.md): too slow to learn on a CPU budget to tell pauses from none. The 4-operand
sum is learned from the start.

Expected time on 2 cores with --jobs=2: about 30 minutes for the 18 runs (1000 steps each; the
pause and filler layouts are 1.5x standard's slots, reasoning 2x), then under a minute for the eval;
RESULTS.md states the measured budget.
"""

base = 'config/arithmetic/pretrain.py'
common = dict(dataset='sum4', answer_only=True, block_size=64, max_iters=1000, lr_decay_iters=1000,
              eval_interval=500)
prepare = ['python data/arithmetic/prepare.py --operands=4 --add_digits=2 --out_dir=data/sum4',
           'python data/arithmetic/prepare.py --operands=4 --add_digits=2 --filler=8 --out_dir=data/sum4_filler8']
seeds = [1, 2, 3]
out_root = 'out/ablations/positive_control'
title = 'Positive control: sums of four numbers'
baseline = 'none'
min_effect = 5.0  # accuracy points
eval_args = '--num_pause_tokens=0,2,4,8,16 --num_reason_tokens=0,1'
variants = {
    'none': dict(mode='standard'),
    'pause M=8': dict(mode='pause', num_pause_tokens=8),
    'filler 8': dict(mode='standard', dataset='sum4_filler8', block_size=96),  # 4 records of 24 characters
    'reasoning N=1': dict(mode='reasoning', num_reason_tokens=1, reason_delay=1),
    'none, FLOPs of pause M=8': dict(mode='standard', flops_budget_of=['pause M=8', 'filler 8']),
    'none, FLOPs of reasoning N=1': dict(mode='standard', flops_budget_of='reasoning N=1'),
}
