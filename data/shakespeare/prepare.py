"""
Tiny Shakespeare with the GPT-2 BPE (tiktoken), e.g. for finetuning GPT-2.
Writes train.bin / val.bin (uint16 token ids of the first 90% / last 10% of the characters)
and meta.pkl (vocab_size 50257).

python data/shakespeare/prepare.py                      # downloads input.txt next to this script
python data/shakespeare/prepare.py --input path/to.txt  # any local text file instead (offline)

tiktoken downloads the GPT-2 BPE on first use; offline, set TIKTOKEN_CACHE_DIR to a cache holding it.
"""
import os
import sys

import tiktoken

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(here))
from tinyshakespeare import parse_args, read_text, write_splits  # noqa: E402

args = parse_args(__doc__, here)
data = read_text(args.input, here)
# encode_ordinary: text that happens to spell "<|endoftext|>" stays plain text, never the special token
enc = tiktoken.get_encoding('gpt2')
write_splits(args.out_dir, data, enc.encode_ordinary, {'vocab_size': enc.n_vocab, 'tokenizer': 'gpt2'})

# length of dataset in characters: 1,115,394
# train has 301,966 tokens
# val has 36,059 tokens
