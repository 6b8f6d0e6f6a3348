# Tiny Shakespeare (characters) in reflection mode: <reflect> slots at random whose target
# repeats the next real character (ReflectionTokens).
# The CPU recipe's size and schedule (config/train_shakespeare_char_cpu.py), so the val losses of the
# four mode configs (all per text token, on the same fixed batches) compare directly.
# Prepare the data first: python data/shakespeare_char/prepare.py
#   python train.py config/reflection_shakespeare_char.py
# Runs on the GPU when there is one (base a copy on config/train_shakespeare_char.py for the full size).

import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_shakespeare_char_cpu.py')).read())

out_dir = 'out-reflection-shakespeare-char'
wandb_group = 'modes'  # the four mode runs side by side
wandb_run_name = 'reflection'
mode = 'reflection'
device = ''  # the GPU when there is one, else the CPU
reflect_rate = 0.1  # 6 reflections per 64-character sequence
reflect_hidden = False  # --reflect_hidden=True hides reflections from later text
reflect_repeat = False  # --reflect_repeat=True feeds the last character again instead of <reflect>
