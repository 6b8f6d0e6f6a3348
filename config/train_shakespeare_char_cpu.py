# The baby GPT scaled down to train on a laptop CPU in minutes (nanoGPT's CPU recipe: val ~1.88).
# Prepare the data first: python data/shakespeare_char/prepare.py

import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_shakespeare_char.py')).read())

out_dir = 'out-shakespeare-char-cpu'
device = 'cpu'
compile = False
eval_iters = 200  # our eval batches are fixed; 200 keeps the estimate's noise well under 0.01
log_interval = 1
block_size = 64
batch_size = 12
n_layer = 4
n_head = 4
n_embd = 128
max_iters = 2000
lr_decay_iters = 2000
dropout = 0.0
