# Tiny Shakespeare (characters) in standard mode: plain next-token prediction, the baseline.
# The CPU recipe's size and schedule (config/train_shakespeare_char_cpu.py), so the val losses of the
# four mode configs (all per text token, on the same fixed batches) compare directly.
# Prepare the data first: python data/shakespeare_char/prepare.py
#   python train.py config/standard_shakespeare_char.py
# Runs on the GPU when there is one (base a copy on config/train_shakespeare_char.py for the full size).

import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_shakespeare_char_cpu.py')).read())

out_dir = 'out-standard-shakespeare-char'
wandb_group = 'modes'  # the four mode runs side by side
wandb_run_name = 'standard'
mode = 'standard'
device = ''  # the GPU when there is one, else the CPU
