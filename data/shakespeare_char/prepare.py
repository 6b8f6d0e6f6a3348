"""
Tiny Shakespeare at the character level: every distinct character is one token.
Writes train.bin / val.bin (uint16 token ids, first 90% / last 10% of the characters)
and meta.pkl (vocab_size, stoi, itos) so that training and sampling can encode/decode.

python data/shakespeare_char/prepare.py                      # downloads input.txt next to this script
python data/shakespeare_char/prepare.py --input path/to.txt  # any local text file instead (offline)
"""
import argparse
import os
import pickle
import sys
import urllib.request

import numpy as np

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

# the vocabulary is every character that occurs, in sorted order
chars = sorted(set(data))
vocab_size = len(chars)
print("all the unique characters:", ''.join(chars))
print(f"vocab size: {vocab_size:,}")
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for i, ch in enumerate(chars)}

# split on characters: first 90% train, last 10% val
n = len(data)
train_ids = np.array([stoi[c] for c in data[:int(n * 0.9)]], dtype=np.uint16)
val_ids = np.array([stoi[c] for c in data[int(n * 0.9):]], dtype=np.uint16)
print(f"train has {len(train_ids):,} tokens")
print(f"val has {len(val_ids):,} tokens")

os.makedirs(args.out_dir, exist_ok=True)
train_ids.tofile(os.path.join(args.out_dir, 'train.bin'))
val_ids.tofile(os.path.join(args.out_dir, 'val.bin'))
with open(os.path.join(args.out_dir, 'meta.pkl'), 'wb') as f:
    pickle.dump({'vocab_size': vocab_size, 'itos': itos, 'stoi': stoi, 'tokenizer': 'char'}, f)

# length of dataset in characters: 1,115,394
# all the unique characters:
#  !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
# vocab size: 65
# train has 1,003,854 tokens
# val has 111,540 tokens
