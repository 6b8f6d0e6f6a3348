"""
Pause pretraining x pause finetuning on arithmetic (Goyal et al. 2023, "Think before you speak"),
and reasoning N=1 against standard, on a CPU: exact-match accuracy, 3 seeds.

    python data/arithmetic/prepare.py
    python scripts/ablate.py config/ablations/arithmetic.py --jobs=2
    python scripts/eval_arithmetic.py --grid=config/ablations/arithmetic.py --num_pause_tokens=0,1,2,4,8 --num_reason_tokens=0,1

The task is data/arithmetic's default: 3-digit addition, 40,000 problems to train on and 1,000
held out ("123+945=1068"; answers most significant digit first, so the first answer digit needs
every carry: extra computation before answering should help).

Pretraining (config/arithmetic/pretrain.py: the CPU recipe's 4-layer, 128-wide model, next-token
prediction over whole records, 400 steps) in standard, pause (10% random pauses) and reasoning
(N=1) mode; then finetuning on the answers only (config/arithmetic/finetune.py, 500 steps, where
standard finetuning is midway through learning the task) from those weights:

    StdPT-StdFT, PausePT-StdFT        no pauses
    StdPT-PauseFT, PausePT-PauseFT    M = 4 pauses after every prompt
    reasoning N=1 FT                  reasoning mode, from the reasoning pretraining (against StdPT-StdFT)

The eval scores greedy answers on the held-out problems with each run's own inference (M pauses for
PauseFT, none for StdFT, N reasoning slots), at 0, 1, 2, 4, 8 pauses (the robustness curve:
inference with fewer or more pauses than finetuning; standard runs then meet pauses they were
never trained with) and reasoning runs at N=0 and 1. It writes out/ablations/arithmetic/accuracy.md,
accuracy.csv and accuracy_vs_pauses.png; scripts/ablate.py's results.md has the val losses (per
answer character for the finetunes).

Expected time on 2 cores with --jobs=2: roughly 45-50 minutes for the 24 runs (per seed at one
thread about 2-4 min per pretraining, 8 min for reasoning, 2-4 min per finetuning), then a few
minutes for the eval. Reruns skip finished runs.
"""

import os


def _settings(name):
    """The keys a config file of config/arithmetic sets."""
    keys = {}
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'arithmetic', name)).read(), {}, keys)
    return keys


# the finetunes: config/arithmetic/finetune.py where it differs from the base (pretrain.py);
# out_dir and init_from come from the grid
_pt, _ft = _settings('pretrain.py'), _settings('finetune.py')
_ft = {k: v for k, v in _ft.items() if _pt.get(k) != v and k not in ('out_dir', 'init_from')}
_M = 4  # pauses after the prompt in pause finetuning

base = 'config/arithmetic/pretrain.py'
seeds = [1, 2, 3]
out_root = 'out/ablations/arithmetic'
title = 'Arithmetic'
baseline = 'StdPT-StdFT'
eval_args = '--num_pause_tokens=0,1,2,4,8 --num_reason_tokens=0,1'  # for scripts/eval_arithmetic.py --grid=<this file>
variants = {
    'PT std': dict(mode='standard'),
    'PT pause': dict(mode='pause', pause_rate=0.1),
    'PT reasoning N=1': dict(mode='reasoning', num_reason_tokens=1, reason_delay=1),
    'StdPT-StdFT': dict(_ft, mode='standard', init_from='{out[PT std]}'),
    'StdPT-PauseFT': dict(_ft, mode='pause', num_pause_tokens=_M, init_from='{out[PT std]}'),
    'PausePT-StdFT': dict(_ft, mode='standard', init_from='{out[PT pause]}'),
    'PausePT-PauseFT': dict(_ft, mode='pause', num_pause_tokens=_M, init_from='{out[PT pause]}'),
    'reasoning N=1 FT': dict(_ft, mode='reasoning', num_reason_tokens=1, reason_delay=1,
                             init_from='{out[PT reasoning N=1]}'),
}
