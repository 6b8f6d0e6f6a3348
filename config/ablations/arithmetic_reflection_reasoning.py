"""
Reflection and reasoning on the downstream benchmark (config/ablations/arithmetic.py: its task, model,
pretraining and finetuning, 3 seeds): the modes whose thinking slots follow every token rather than
the prompt, each pretrained and finetuned in its own mode, against the standard chain and against the
standard chain given that chain's training FLOPs. A grid of its own so that it runs, and is reported,
in one piece (about 30 minutes on 2 cores with --jobs=2; RESULTS.md states the measured budget).

    python data/arithmetic/prepare.py --ops=+,* --add_digits=2 --mul_digits=2 --out_dir=data/arithmetic_mix2
    python scripts/ablate.py config/ablations/arithmetic_reflection_reasoning.py --jobs=2
    python scripts/eval_arithmetic.py --grid=config/ablations/arithmetic_reflection_reasoning.py --num_reflect_tokens=0,1,2 --num_reason_tokens=0,1

The variants:

    PT std, StdPT-StdFT                the pause grid's standard chain, rerun here (same commands and
                                       seeds) so that this grid's differences are within one run
    PT reflection, RefPT-RefFT         <reflect> slots at random, 10% of the text tokens (the OWT
                                       config's rate), in pretraining and in finetuning
    PT reasoning N=1, ReasPT-ReasFT    one reasoning slot after every token, hidden from the next step
    StdPT-StdFT, FLOPs of <chain>      standard finetuning given that chain's training FLOPs (its
                                       pretraining's extra cost goes into more steps)

The eval scores each run with its own inference (reflection: one <reflect> after every token;
reasoning: its N) and at 0, 1, 2 reflections and 0, 1 reasoning slots: accuracy against inference
compute.
"""

import os

# the downstream grid's settings (its _PT, _ft, _STEPS, common, prepare, seeds, min_effect), then this
# grid's own
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'arithmetic.py')).read())

_REFLECT = dict(mode='reflection', reflect_rate=0.1)
_REASON = dict(mode='reasoning', num_reason_tokens=1, reason_delay=1)
out_root = 'out/ablations/arithmetic_reflection_reasoning'
title = 'Arithmetic (downstream): reflection and reasoning'
baseline = 'StdPT-StdFT'
eval_args = '--num_reflect_tokens=0,1,2 --num_reason_tokens=0,1'  # for scripts/eval_arithmetic.py --grid=<this file>
variants = {
    'PT std': variants['PT std'],
    'PT reflection': dict(_PT, **_REFLECT),
    'PT reasoning N=1': dict(_PT, **_REASON),
    'StdPT-StdFT': variants['StdPT-StdFT'],
    'RefPT-RefFT': dict(_ft, **_STEPS, **_REFLECT, init_from='{out[PT reflection]}'),
    'ReasPT-ReasFT': dict(_ft, **_STEPS, **_REASON, init_from='{out[PT reasoning N=1]}'),
    **{f'StdPT-StdFT, FLOPs of {v}': dict(_ft, mode='standard', init_from='{out[PT std]}', flops_budget_of=v)
       for v in ('RefPT-RefFT', 'ReasPT-ReasFT')},
}
