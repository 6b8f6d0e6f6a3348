"""
Tiny Shakespeare with the GPT-2 BPE (tiktoken), e.g. for finetuning GPT-2.
Writes train.bin / val.bin (uint16 token ids of the first 90% / last 10% of the characters)
and meta.pkl (vocab_size 50257).

python data/shakespeare/prepare.py                      # downloads input.txt next to this script
python data/shakespeare/prepare.py --input path/to.txt  # any local text file instead (offline)

tiktoken downloads the GPT-2 BPE on first use; offline, set TIKTOKEN_CACHE_DIR to a cache holding it.
"""
import argparse
import os
import pickle
import sys
import urllib.request

import numpy as np
import tiktoken

URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
here = os.path.dirname(os.path.abspath(__file__))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--input', help='local text file to use instead of downloading Tiny Shakespeare')
parser.add_argument('--out_dir', default=here, help='where train.bin, val.bin and meta.pkl go (default: next to this script)')
args = parser.parse_args()

if args.input:
    input_file_path = args.input
    if not os.path.isfile(input_file_path):
        sys.exit(f"error: --input {input_file_path} not found: pass an existing text file, or omit --input to download Tiny Shakespeare")
else:
    # cached next to the script, as in nanoGPT (.gitignore keeps it out of the repo)
    input_file_path = os.path.join(here, 'input.txt')
    if not os.path.exists(input_file_path):
        try:
            with urllib.request.urlopen(URL, timeout=60) as r:
                text = r.read().decode('utf-8')
        except OSError as e:
            sys.exit(f"error: could not download {URL} ({e}): pass --input PATH to a local copy of the text")
        with open(input_file_path, 'w', encoding='utf-8') as f:
            f.write(text)

with open(input_file_path, 'r', encoding='utf-8') as f:
    data = f.read()
print(f"length of dataset in characters: {len(data):,}")

# split on characters (as nanoGPT), then encode each part on its own.
# encode_ordinary: text that happens to spell "<|endoftext|>" stays plain text, never the special token
n = len(data)
enc = tiktoken.get_encoding('gpt2')
train_ids = np.array(enc.encode_ordinary(data[:int(n * 0.9)]), dtype=np.uint16)
val_ids = np.array(enc.encode_ordinary(data[int(n * 0.9):]), dtype=np.uint16)
print(f"train has {len(train_ids):,} tokens")
print(f"val has {len(val_ids):,} tokens")

os.makedirs(args.out_dir, exist_ok=True)
train_ids.tofile(os.path.join(args.out_dir, 'train.bin'))
val_ids.tofile(os.path.join(args.out_dir, 'val.bin'))
with open(os.path.join(args.out_dir, 'meta.pkl'), 'wb') as f:
    pickle.dump({'vocab_size': enc.n_vocab, 'tokenizer': 'gpt2'}, f)

# length of dataset in characters: 1,115,394
# train has 301,966 tokens
# val has 36,059 tokens
