# A baby GPT on character-level Tiny Shakespeare, for one GPU (nanoGPT's recipe, val loss ~1.47).
# Prepare the data first: python data/shakespeare_char/prepare.py

out_dir = 'out-shakespeare-char'
eval_interval = 250  # it overfits quickly: evaluate often
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # keep the best model by val loss

wandb_log = False
wandb_project = 'shakespeare-char'
wandb_run_name = 'mini-gpt'

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # up to 256 previous characters of context

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

learning_rate = 1e-3  # a small network can take a higher learning rate
max_iters = 5000
lr_decay_iters = 5000
min_lr = 1e-4  # learning_rate / 10
beta2 = 0.99  # a bit higher: few tokens per iteration
warmup_iters = 100

compile = True
