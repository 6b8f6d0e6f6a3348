# GPT-2 124M on OpenWebText with <reflect> tokens inserted at random whose target repeats the next
# real token (ReflectionTokens), on 8 GPUs:
#   torchrun --standalone --nproc_per_node=8 train.py config/reflection_owt.py
# Everything else is config/train_gpt2.py, so its val loss (per text token) compares directly.

import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_gpt2.py')).read())

out_dir = 'out-reflection-owt'
wandb_run_name = 'gpt2-124M-reflection-0.1'

mode = 'reflection'
reflect_rate = 0.1  # 102 reflections per 1024 text tokens: 1126 slots, ~10% more memory and compute
reflect_hidden = False  # True: later text cannot attend to them (a masked layout: FlexAttention)
reflect_repeat = False  # True: a reflection slot carries the last text token instead of <reflect>
