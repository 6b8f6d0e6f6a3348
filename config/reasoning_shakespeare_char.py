# Tiny Shakespeare (characters) in reasoning mode: a self-reasoning slot after every character,
# hidden from the next step (self-reasoning tokens, Bonetto 2024).
# The CPU recipe's size and schedule (config/train_shakespeare_char_cpu.py), so the val losses of the
# four mode configs (all per text token, on the same fixed batches) compare directly.
# Prepare the data first: python data/shakespeare_char/prepare.py
#   python train.py config/reasoning_shakespeare_char.py
# Runs on the GPU when there is one (base a copy on config/train_shakespeare_char.py for the full size).

import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_shakespeare_char_cpu.py')).read())

out_dir = 'out-reasoning-shakespeare-char'
wandb_group = 'modes'  # the four mode runs side by side
wandb_run_name = 'reasoning'
mode = 'reasoning'
device = ''  # the GPU when there is one, else the CPU
num_reason_tokens = 1  # N slots after every character: 2 slots per character, ~2x the compute
reason_delay = 1  # step t's reasoning slot is hidden from step t+1, so it must help later steps
reason_stopgrad = False  # --reason_stopgrad=True: visible to t+1 but without gradient from it
