"""
What data/shakespeare_char/prepare.py and data/shakespeare/prepare.py share: the command line,
reading Tiny Shakespeare (a local file, or downloaded once and cached next to the calling script),
and writing train.bin / val.bin / meta.pkl. Each script only says how characters become tokens.
"""
import argparse
import os
import pickle
import sys
import urllib.request

import numpy as np

URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'


def parse_args(doc, here):
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', help='local text file to use instead of downloading Tiny Shakespeare')
    parser.add_argument('--out_dir', default=here, help='where train.bin, val.bin and meta.pkl go (default: next to the script)')
    return parser.parse_args()


def read_text(input_path, here):
    """The text of input_path, or of Tiny Shakespeare cached in here/input.txt (downloaded once)."""
    if input_path:
        if not os.path.isfile(input_path):
            sys.exit(f"error: --input {input_path} not found: pass an existing text file, or omit --input to download Tiny Shakespeare")
    else:
        # cached next to the script, as in nanoGPT (.gitignore keeps it out of the repo)
        input_path = os.path.join(here, 'input.txt')
        if not os.path.exists(input_path):
            try:
                with urllib.request.urlopen(URL, timeout=60) as r:
                    text = r.read().decode('utf-8')
            except OSError as e:
                sys.exit(f"error: could not download {URL} ({e}): pass --input PATH to a local copy of the text")
            with open(input_path, 'w', encoding='utf-8') as f:
                f.write(text)
    with open(input_path, 'r', encoding='utf-8') as f:
        text = f.read()
    print(f"length of dataset in characters: {len(text):,}")
    return text


def write_splits(out_dir, text, encode, meta):
    """Split on characters (first 90% train, last 10% val, as nanoGPT), encode each part on its
    own, and write the uint16 token files and meta.pkl."""
    n = len(text)
    train_ids = np.array(encode(text[:int(n * 0.9)]), dtype=np.uint16)
    val_ids = np.array(encode(text[int(n * 0.9):]), dtype=np.uint16)
    print(f"train has {len(train_ids):,} tokens")
    print(f"val has {len(val_ids):,} tokens")
    os.makedirs(out_dir, exist_ok=True)
    train_ids.tofile(os.path.join(out_dir, 'train.bin'))
    val_ids.tofile(os.path.join(out_dir, 'val.bin'))
    with open(os.path.join(out_dir, 'meta.pkl'), 'wb') as f:
        pickle.dump(meta, f)
