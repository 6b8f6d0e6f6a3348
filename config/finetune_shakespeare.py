# Finetune OpenAI's GPT-2 on Tiny Shakespeare in GPT-2 BPE (nanoGPT's recipe): a few minutes on one GPU.
# Prepare the data first: python data/shakespeare/prepare.py
# GPT-2 weights need `pip install transformers` and the Hugging Face hub (or a local HF dir as init_from).

out_dir = 'out-shakespeare'
eval_interval = 5
eval_iters = 40
wandb_log = False  # feel free to turn on
wandb_project = 'shakespeare'
wandb_run_name = 'ft-gpt2'

dataset = 'shakespeare'
init_from = 'gpt2'  # 124M; the largest GPT-2 fits on one 80 GB GPU:
# init_from = 'gpt2-xl'

# only save checkpoints if the validation loss improves: the model overfits this small set quickly
always_save_checkpoint = False

# 1 sequence x 1024 tokens x 32 micro-steps = 32,768 tokens per step; Shakespeare has ~300k tokens,
# so 20 iterations are ~2 epochs
batch_size = 1
gradient_accumulation_steps = 32
max_iters = 20
# block_size stays GPT-2's 1024. In pause/reflection mode the inserted slots need positions too:
# with rate 0.1 lower it to 930 (930 + 93 <= 1024). Reasoning mode cannot start from GPT-2 weights.

# finetune at a small, constant learning rate
learning_rate = 3e-5
decay_lr = False
