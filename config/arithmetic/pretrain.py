# Pretraining on arithmetic records (data/arithmetic): the CPU recipe's baby GPT (4 layers, 4 heads,
# 128 wide), next-token prediction over whole records, prompts and answers alike. About 1.5 minutes
# on one CPU thread (pause ~10% more, reasoning N=1 about 2x); 400 iterations keep the 3-seed grid
# within half an hour on 2 cores (800 reach higher accuracy).
# Prepare the data first: python data/arithmetic/prepare.py
#
#   python train.py config/arithmetic/pretrain.py                                                 # StdPT
#   python train.py config/arithmetic/pretrain.py --mode=pause --pause_rate=0.1 --out_dir=out-arith-pt-pause  # PausePT
#   python scripts/eval_arithmetic.py --out_dir=out-arith-pt
# then finetune on the answers only with config/arithmetic/finetune.py.
#
# block_size counts text tokens and is a whole number of records: 8 of the default 13-character
# records (3-digit +). The model gets that many positions, which must cover the finetune
# layouts (4 records plus M pauses after each prompt: 52 + 4M <= 104 for M <= 13). Other record
# lengths (prepare.py --add_digits/--mul_digits/--ops) need another block_size here and in finetune.py.

out_dir = 'out-arith-pt'
dataset = 'arithmetic'
device = 'cpu'
compile = False
progress_bar = False
block_size = 104
batch_size = 32
gradient_accumulation_steps = 1
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
learning_rate = 2e-3
max_iters = 400
lr_decay_iters = 400
warmup_iters = 50
min_lr = 2e-4
weight_decay = 0.1
eval_interval = 200
eval_iters = 20
log_interval = 100
