"""
Reasoning on the downstream benchmark (config/ablations/arithmetic.py: its task, model, pretraining and
finetuning, 3 seeds): reasoning-mode pretraining and finetuning (N=1 reasoning slot after every
token, hidden from the next step) against the standard chain, and against the standard chain given
the reasoning chain's training FLOPs. Its own grid so that it runs, and is reported, in one piece of
about 40 minutes beside the pause grid's 80.

    python data/arithmetic/prepare.py --ops=+,* --add_digits=2 --mul_digits=2 --out_dir=data/arithmetic_mix2
    python scripts/ablate.py config/ablations/arithmetic_reasoning.py --jobs=2
    python scripts/eval_arithmetic.py --grid=config/ablations/arithmetic_reasoning.py --num_reason_tokens=0,1

The variants:

    PT std, StdPT-StdFT                    the pause grid's standard chain, rerun here (same commands
                                           and seeds) so this grid's differences are within one run
    PT reasoning N=1, reasoning N=1 FT     the reasoning chain
    StdPT-StdFT, FLOPs of reasoning N=1 FT standard finetuning given the reasoning chain's training
                                           FLOPs (its pretraining's extra cost goes into more steps)

The eval scores each run with its own inference, and the reasoning runs also at N=0 (no reasoning
slots at inference: what the slots add).
"""

import os

# the downstream grid's settings (its _PT, _ft, _STEPS, common, prepare, seeds, min_effect), then this
# grid's own
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'arithmetic.py')).read())

_REASON = dict(mode='reasoning', num_reason_tokens=1, reason_delay=1)
out_root = 'out/ablations/arithmetic_reasoning'
title = 'Arithmetic (downstream): reasoning'
baseline = 'StdPT-StdFT'
eval_args = '--num_reason_tokens=0,1'  # for scripts/eval_arithmetic.py --grid=<this file>
variants = {
    'PT std': variants['PT std'],
    'PT reasoning N=1': dict(_PT, **_REASON),
    'StdPT-StdFT': variants['StdPT-StdFT'],
    'reasoning N=1 FT': dict(_ft, **_STEPS, **_REASON, init_from='{out[PT reasoning N=1]}'),
    'StdPT-StdFT, FLOPs of reasoning N=1 FT': dict(_ft, mode='standard', init_from='{out[PT std]}',
                                                   flops_budget_of='reasoning N=1 FT'),
}
