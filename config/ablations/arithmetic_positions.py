"""
Why StdPT-PauseFT falls far below StdPT-StdFT on the downstream benchmark (config/ablations/arithmetic.py:
its task, model, pretraining and finetuning, 3 seeds): the positional confound, measured. Pretrained
with every record at a multiple of the record length, a standard model answers only where records
start at such positions (docs/pilots.md, eval_arithmetic --offset), and M pauses per record move
them. Pretraining on windows that start anywhere in a record (align_records=False: records at every
absolute position, as text is) removes that; a 1-seed pilot took StdPT-PauseFT from 8% to 38%.

    python data/arithmetic/prepare.py --ops=+,* --add_digits=2 --mul_digits=2 --out_dir=data/arithmetic_mix2
    python scripts/ablate.py config/ablations/arithmetic_positions.py --jobs=2
    python scripts/eval_arithmetic.py --grid=config/ablations/arithmetic_positions.py --num_pause_tokens=0,4

The variants, finetuned as in the downstream grid (answers only, aligned records, M = 4 pauses):

    PT std, StdPT-StdFT, StdPT-PauseFT       aligned pretraining (the downstream grid's chains, rerun
                                             here so that the differences are within one run)
    PT std unaligned, UnPT-StdFT, UnPT-PauseFT   the same pretraining on unaligned windows
    UnPT-StdFT, FLOPs of UnPT-PauseFT        standard finetuning given UnPT-PauseFT's training FLOPs

Read UnPT-PauseFT against UnPT-StdFT (the pause cost once positions are not pinned in pretraining)
and against StdPT-PauseFT (what unaligned pretraining recovers).
"""

import os

# the downstream grid's settings (its _PT, _ft, _STEPS, _PAUSE_FT, common, prepare, seeds, min_effect),
# then this grid's own
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'arithmetic.py')).read())

out_root = 'out/ablations/arithmetic_positions'
title = 'Arithmetic (downstream): aligned against unaligned pretraining'
baseline = 'StdPT-StdFT'
eval_args = '--num_pause_tokens=0,4'  # for scripts/eval_arithmetic.py --grid=<this file>
variants = {
    'PT std': variants['PT std'],
    'PT std unaligned': dict(variants['PT std'], align_records=False),
    'StdPT-StdFT': variants['StdPT-StdFT'],
    'StdPT-PauseFT': variants['StdPT-PauseFT'],
    'UnPT-StdFT': dict(variants['StdPT-StdFT'], init_from='{out[PT std unaligned]}'),
    'UnPT-PauseFT': dict(variants['StdPT-PauseFT'], init_from='{out[PT std unaligned]}'),
    'UnPT-StdFT, FLOPs of UnPT-PauseFT': dict(_ft, mode='standard', init_from='{out[PT std unaligned]}',
                                              flops_budget_of='UnPT-PauseFT'),
}
