# Evaluate OpenAI's GPT-2 124M ('gpt2') on OpenWebText: train and val loss, then exit.
#   python train.py config/eval_gpt2.py     (or under torchrun: the eval batches are split over ranks)
# Needs data/openwebtext (python data/openwebtext/prepare.py) and `pip install transformers`.

init_from = 'gpt2'
dataset = 'openwebtext'
eval_only = True
batch_size = 8
eval_iters = 500  # 500 x 8 x 1024 = ~4M tokens per split: a good estimate
wandb_log = False
