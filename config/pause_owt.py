# GPT-2 124M on OpenWebText with <pause> tokens inserted at random (Goyal et al. 2023), on 8 GPUs:
#   torchrun --standalone --nproc_per_node=8 train.py config/pause_owt.py
# Everything else is config/train_gpt2.py, so its val loss (per text token) compares directly.

import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_gpt2.py')).read())

out_dir = 'out-pause-owt'
wandb_run_name = 'gpt2-124M-pause-0.1'

mode = 'pause'
pause_rate = 0.1  # 102 pauses among each sequence's 1024 text tokens: 1126 slots, ~10% more memory
# and compute than train_gpt2.py; batch_size 12 still fits where it does (else 6 and 10 * 8).
# The model gets 1126 positions, so it cannot start from GPT-2's 1024-position weights.
