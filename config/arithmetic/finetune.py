# Finetuning on arithmetic answers: whole records per sequence, the loss on the answer characters
# only (answer_only). In pause mode, num_pause_tokens (M) <pause> slots follow every prompt's '='
# (pause finetuning, Goyal et al. 2023); in standard mode there are none; reasoning mode keeps its N
# slots after every token. The model's sizes come from the pretrained run given as init_from; its
# positions must cover block_size plus M per record. About 2 minutes on one CPU thread (pause M=4
# ~1.3x, reasoning N=1 ~2x). On the default 3-digit addition, 500 steps sit in the middle of
# learning the task: a pilot StdPT-StdFT run was at 3.5% exact match after 250 steps and 94% after 750.
#
#   python train.py config/arithmetic/finetune.py --init_from=out-arith-pt --out_dir=out-arith-ft        # StdFT
#   python train.py config/arithmetic/finetune.py --init_from=out-arith-pt --out_dir=out-arith-ft-pause \
#       --mode=pause --num_pause_tokens=4                                                                   # PauseFT
#   python scripts/eval_arithmetic.py --out_dir=out-arith-ft-pause --num_pause_tokens=0,2,4,8
#
# The val loss it reports is per answer character. The learning rate is the pretraining one: at
# 1e-3 finetuning learned clearly less in the same steps (2-digit addition, 400 steps: 65% against 81%
# exact match).

out_dir = 'out-arith-ft'
init_from = 'out-arith-pt'
dataset = 'arithmetic'
device = 'cpu'
compile = False
progress_bar = False
answer_only = True
block_size = 52  # 4 records of 13 characters (a multiple of the record length)
batch_size = 32
gradient_accumulation_steps = 1
dropout = 0.0
learning_rate = 2e-3
max_iters = 500
lr_decay_iters = 500
warmup_iters = 20
min_lr = 2e-4
weight_decay = 0.1
eval_interval = 250
eval_iters = 20
log_interval = 100
