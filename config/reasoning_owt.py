# GPT-2 124M on OpenWebText with one self-reasoning token after every text token: the blog's setup
# (Bonetto 2024, "Self-reasoning tokens"), on 8 GPUs under torchrun:
#   torchrun --standalone --nproc_per_node=8 train.py config/reasoning_owt.py
#   scripts/run_single_node.sh config/reasoning_owt.py
# Everything else is config/train_gpt2.py, so its val loss (per text token) compares directly.

import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_gpt2.py')).read())

out_dir = 'out-reasoning-owt'
wandb_run_name = 'gpt2-124M-reasoning-1'

mode = 'reasoning'
num_reason_tokens = 1  # one reasoning slot after each text token (try 3: the blog's other curve)
reason_delay = 1  # hidden from the next text step, so it can only help the ones after
reason_stopgrad = False

# N reasoning tokens make (N + 1) x 1024 slots per sequence (positions are shared, so block_size
# stays 1024 text tokens): activations grow (N + 1)x and attention scores (N + 1)^2 x. Keep the
# optimizer step at train_gpt2.py's 491,520 *text* tokens, so runs compare token for token, and
# halve the per-GPU batch instead: 6 x 1024 x 80 = 491,520. With N = 3 use batch_size = 3 and
# gradient_accumulation_steps = 20 * 8. The run costs about (N + 1)x the FLOPs of standard.
batch_size = 6
gradient_accumulation_steps = 10 * 8  # 10 micro-steps on each of 8 GPUs
