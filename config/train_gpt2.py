# GPT-2 124M on OpenWebText, standard mode (nanoGPT's recipe: val loss ~2.85 after ~300k iters).
# Launch on one node of 8 GPUs (a config file is just an argument to train.py):
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
#   scripts/run_single_node.sh config/train_gpt2.py
# Prepare the data first: python data/openwebtext/prepare.py

out_dir = 'out-gpt2'
wandb_log = True
wandb_project = 'owt'
wandb_run_name = 'gpt2-124M'
wandb_group = 'owt-modes'  # with the mode configs that build on this one

dataset = 'openwebtext'
# ~0.5M text tokens per optimizer step: 12 sequences x 1024 tokens x 40 micro-steps = 491,520.
# gradient_accumulation_steps is the total over all ranks: 5 micro-steps on each of 8 GPUs
# (on 4 GPUs each rank does 10, on 1 GPU 40; the batch, and so the run, stays the same).
batch_size = 12  # per GPU and micro-step: fits a 40 GB A100 in bf16 with compile
block_size = 1024
gradient_accumulation_steps = 5 * 8

# GPT-2 small: 12 layers, 12 heads, 768 wide (the defaults, repeated so the recipe is complete)
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0  # pretraining on this much data does not overfit
bias = False

# 600k iterations x 491,520 tokens = ~300B tokens; the cosine decay spans the whole run
learning_rate = 6e-4
max_iters = 600000
lr_decay_iters = 600000
min_lr = 6e-5  # learning_rate / 10
warmup_iters = 2000
weight_decay = 1e-1

eval_interval = 1000
eval_iters = 200
log_interval = 10  # each log costs a host sync; every 10 iterations keeps the GPUs busy

compile = True
