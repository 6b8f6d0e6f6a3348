# Tiny Shakespeare (characters) in pause mode: <pause> slots at random (Goyal et al. 2023).
# The CPU recipe's size and schedule (config/train_shakespeare_char_cpu.py), so the val losses of the
# four mode configs (all per text token, on the same fixed batches) compare directly.
# Prepare the data first: python data/shakespeare_char/prepare.py
#   python train.py config/pause_shakespeare_char.py
# Runs on the GPU when there is one (base a copy on config/train_shakespeare_char.py for the full size).

import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_shakespeare_char_cpu.py')).read())

out_dir = 'out-pause-shakespeare-char'
wandb_group = 'modes'  # the four mode runs side by side
wandb_run_name = 'pause'
mode = 'pause'
device = ''  # the GPU when there is one, else the CPU
pause_rate = 0.1  # 6 pauses per 64-character sequence; no loss where the target is a <pause>
