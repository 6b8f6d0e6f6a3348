"""
The downstream benchmark: pause pretraining x pause finetuning (Goyal et al. 2023, "Think before you
speak"), every thinking variant against a standard run given its training FLOPs, on a CPU: exact-match
accuracy, 3 seeds. Reflection and reasoning on the same benchmark:
config/ablations/arithmetic_reflection_reasoning.py.

    python data/arithmetic/prepare.py --ops=+,* --add_digits=2 --mul_digits=2 --out_dir=data/arithmetic_mix2
    python scripts/ablate.py config/ablations/arithmetic.py --jobs=2
    python scripts/eval_arithmetic.py --grid=config/ablations/arithmetic.py --num_pause_tokens=0,1,2,4,8

The task: 2-digit addition and 2-digit multiplication, mixed (9,756 + 9,756 problems to train on,
244 + 244 held out; "96*29=2784", "31+ 7=  38": answers most significant digit first, so the first
answer digit needs the whole computation). On 3-digit addition alone with 500 finetuning steps (this
grid's earlier version) the baseline's seeds fell on both sides of the task's learning transition,
and past it addition alone goes above 90%; with 2-digit multiplication mixed into 3-digit addition
the baseline was still before the transition after 1000 steps. Here addition is learned quickly and
multiplication only in part, which keeps the mean inside the band with room both ways; finetuning is
1000 steps, and 'StdPT-StdFT, 500 steps' is the training-length sweep's other point.

StdPT-PauseFT: pretrained with every record at a multiple of the record length, the standard model
answers only where a record starts at such a position (eval_arithmetic --offset), and pause
finetuning moves the answers, so it has to relearn where they are: it leaves the plateau later, and
at 1000 steps its seeds fall on both sides of the transition. Pretraining on windows that start
anywhere (align_records=False) did not remove that at 3 seeds (config/ablations/arithmetic_positions.py;
docs/pilots.md); a pause finetune past the transition lands a few points below standard finetuning.

Pretraining (config/arithmetic/pretrain.py: the CPU recipe's 4-layer, 128-wide model, next-token
prediction over whole records, 400 steps of 10 records) in standard and pause (10% random pauses)
mode; then finetuning on the answers only (config/arithmetic/finetune.py, here 1000 steps of 4
records):

    StdPT-StdFT, PausePT-StdFT        no pauses
    StdPT-PauseFT, PausePT-PauseFT    M = 4 pauses after every prompt

and, for each of the three thinking finetunes, 'StdPT-StdFT, FLOPs of <it>': standard finetuning from
the standard pretraining given that chain's training FLOPs (pretraining plus finetuning; the cheaper
standard pretraining's difference goes into more finetuning steps, grids.equal_flops_iters).

The eval scores greedy answers on the 488 held-out problems with each run's own inference (M pauses
for PauseFT, none for StdFT), and at 0, 1, 2, 4, 8 pauses (accuracy against inference compute for
the pause runs; standard runs then meet pauses they were never trained with). min_effect: the difference in accuracy points this grid is meant to
resolve, stated before the runs.

Expected time on 2 cores with --jobs=2: 30 to 80 minutes for the 30 runs depending on the CPU, then
a minute or two for the eval; RESULTS.md states the measured budget. Reruns skip finished runs.
"""

import os


def _settings(name):
    """The keys a config file of config/arithmetic sets."""
    keys = {}
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'arithmetic', name)).read(), {}, keys)
    return keys


# the finetunes: config/arithmetic/finetune.py where it differs from the base (pretrain.py), but its
# length (the equal-FLOPs runs set their own); out_dir and init_from come from the grid
_pt, _ft = _settings('pretrain.py'), _settings('finetune.py')
_ft = {k: v for k, v in _ft.items() if _pt.get(k) != v and k not in ('out_dir', 'init_from', 'max_iters', 'lr_decay_iters')}
_ft.update(eval_interval=500, block_size=44)  # 4 records of 11 characters
_STEPS = dict(max_iters=1000, lr_decay_iters=1000)
_M = 4  # pauses after the prompt in pause finetuning
_PAUSE_FT = dict(mode='pause', num_pause_tokens=_M)

base = 'config/arithmetic/pretrain.py'
common = dict(dataset='arithmetic_mix2')
prepare = ['python data/arithmetic/prepare.py --ops=+,* --add_digits=2 --mul_digits=2 --out_dir=data/arithmetic_mix2']
_PT = dict(block_size=110)  # 10 records of 11 characters
seeds = [1, 2, 3]
out_root = 'out/ablations/arithmetic'
title = 'Arithmetic (downstream)'
baseline = 'StdPT-StdFT'
min_effect = 5.0  # accuracy points
eval_args = '--num_pause_tokens=0,1,2,4,8'  # for scripts/eval_arithmetic.py --grid=<this file>
variants = {
    'PT std': dict(_PT, mode='standard'),
    'PT pause': dict(_PT, mode='pause', pause_rate=0.1),
    'StdPT-StdFT': dict(_ft, **_STEPS, mode='standard', init_from='{out[PT std]}'),
    'StdPT-PauseFT': dict(_ft, **_STEPS, **_PAUSE_FT, init_from='{out[PT std]}'),
    'PausePT-StdFT': dict(_ft, **_STEPS, mode='standard', init_from='{out[PT pause]}'),
    'PausePT-PauseFT': dict(_ft, **_STEPS, **_PAUSE_FT, init_from='{out[PT pause]}'),
    **{f'StdPT-StdFT, FLOPs of {v}': dict(_ft, mode='standard', init_from='{out[PT std]}', flops_budget_of=v)
       for v in ('StdPT-PauseFT', 'PausePT-StdFT', 'PausePT-PauseFT')},
    'StdPT-StdFT, 500 steps': dict(_ft, mode='standard', init_from='{out[PT std]}', max_iters=500,
                                   lr_decay_iters=500, eval_interval=250),
}
