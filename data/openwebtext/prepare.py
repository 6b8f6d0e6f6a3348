"""
OpenWebText with the GPT-2 BPE, as in nanoGPT: every document is encoded with tiktoken
(encode_ordinary) followed by the <|endoftext|> token, a small random set of documents becomes
val, and the token ids are written to train.bin / val.bin (uint16) plus meta.pkl (vocab_size 50257).

python data/openwebtext/prepare.py                          # all of OpenWebText from the HF Hub
python data/openwebtext/prepare.py --input a.jsonl b.jsonl  # local documents instead

--input takes .jsonl/.json (one document per record), .parquet (one per row), each with a
`text` column, or .txt (each file is one document, like the original OpenWebText release);
they go through the same load_dataset -> split -> tokenize -> write path as the Hub data.
Full OpenWebText: train.bin ~17GB (~9B tokens), val.bin ~8.5MB (~4M tokens).
tiktoken downloads the GPT-2 BPE on first use; offline, set TIKTOKEN_CACHE_DIR to a cache holding it.
"""
import argparse
import os
import pickle
import sys

import numpy as np
import tiktoken
from datasets import load_dataset
from tqdm import tqdm

# The main branch of Skylion007/openwebtext still holds its loading script (openwebtext.py), which
# datasets>=4 refuses to run ("Dataset scripts are no longer supported"), and its auto-converted
# refs/convert/parquet branch is the Hub viewer's export, which for datasets this large is only
# partial. The dataset owner's own Parquet conversion of the full corpus ("convert-parquet-full",
# 93 shards) lives on the branch of Hub PR #18; reading its files with the packaged "parquet"
# builder never looks for a script. If the Hub repo gets a script-free main branch, point this
# at 'hf://datasets/Skylion007/openwebtext/data/*.parquet' (or whatever it ships) instead.
OWT_FILES = 'hf://datasets/Skylion007/openwebtext@refs%2Fpr%2F18/data/train-*.parquet'
BUILDERS = {'.jsonl': 'json', '.json': 'json', '.parquet': 'parquet', '.txt': 'text'}


def process(example):
    # tiktoken caches the encoding, so this is a lookup; holding no Encoding object keeps this
    # function cheap for datasets to hash (its cache key) and to send to the worker processes
    enc = tiktoken.get_encoding('gpt2')
    # encode_ordinary ignores special tokens, so a document that spells "<|endoftext|>" stays
    # text; the real eot (50256) is appended as the document separator
    ids = enc.encode_ordinary(example['text'])
    ids.append(enc.eot_token)
    return {'ids': ids, 'len': len(ids)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', nargs='+', metavar='PATH', help='local .jsonl/.json/.parquet/.txt files instead of OpenWebText')
    parser.add_argument('--out_dir', default=os.path.dirname(os.path.abspath(__file__)), help='where train.bin, val.bin and meta.pkl go (default: next to this script)')
    parser.add_argument('--num_proc', type=int, default=max(1, (os.cpu_count() or 1) // 2), help='worker processes for loading and tokenizing')
    parser.add_argument('--val_fraction', type=float, default=0.0005, help='fraction of documents held out for val (at least 1)')
    parser.add_argument('--seed', type=int, default=2357, help='seed of the train/val split')
    parser.add_argument('--shards', type=int, default=1024, help='write each .bin in this many contiguous pieces (capped at its number of documents)')
    args = parser.parse_args()
    if not 0 <= args.val_fraction < 1:
        sys.exit(f"error: --val_fraction {args.val_fraction} must be in [0, 1)")
    if args.num_proc < 1 or args.shards < 1:
        sys.exit("error: --num_proc and --shards must be at least 1")

    if args.input:
        for path in args.input:
            if not os.path.isfile(path):
                sys.exit(f"error: --input {path} not found: pass existing .jsonl/.json/.parquet/.txt files, or omit --input to download OpenWebText")
        kinds = {BUILDERS.get(os.path.splitext(path)[1].lower()) for path in args.input}
        if None in kinds or len(kinds) > 1:
            sys.exit(f"error: --input files must all be .jsonl/.json, all .parquet or all .txt, got {' '.join(args.input)}")
        builder, data_files = kinds.pop(), [os.path.abspath(path) for path in args.input]
    else:
        builder, data_files = 'parquet', OWT_FILES
    # a .txt file is one whole document, not one per line
    options = {'sample_by': 'document'} if builder == 'text' else {}
    try:
        dataset = load_dataset(builder, data_files=data_files, split='train', num_proc=args.num_proc, **options)
    except Exception as e:  # offline or the Hub unreachable: the HTTP client's errors vary by version
        if args.input:
            raise
        sys.exit(f"error: could not download OpenWebText from the Hugging Face Hub ({type(e).__name__}: {e}); "
                 f"pass --input with local .jsonl/.parquet/.txt files")
    if 'text' not in dataset.column_names:
        sys.exit(f"error: the documents need a 'text' column, found {dataset.column_names}")
    if len(dataset) < 2:
        sys.exit(f"error: need at least 2 documents (at least 1 for train and 1 for val), found {len(dataset)}")

    # OpenWebText has only a train split: hold out a few random documents for val. Rounding gives
    # nanoGPT's split on the full corpus (4,007 of 8,013,769 documents); tiny inputs still get 1.
    n_val = min(max(1, round(args.val_fraction * len(dataset))), len(dataset) - 1)
    split_dataset = dataset.train_test_split(test_size=n_val, seed=args.seed, shuffle=True)
    split_dataset['val'] = split_dataset.pop('test')

    enc = tiktoken.get_encoding('gpt2')  # loaded once here, before the workers start
    tokenized = split_dataset.map(process, remove_columns=dataset.column_names,
                                  desc='tokenizing the splits', num_proc=args.num_proc)

    # concatenate all the ids of each split into one file, a contiguous shard at a time so that
    # the whole split never has to sit in memory
    os.makedirs(args.out_dir, exist_ok=True)
    for split, dset in tokenized.items():
        arr_len = int(dset.with_format('numpy')['len'][:].sum())
        filename = os.path.join(args.out_dir, f'{split}.bin')
        arr = np.memmap(filename, dtype=np.uint16, mode='w+', shape=(arr_len,))  # GPT-2 ids < 2**16
        num_shards = min(args.shards, len(dset))  # no empty shards
        idx = 0
        for index in tqdm(range(num_shards), desc=f'writing {filename}'):
            batch = dset.shard(num_shards=num_shards, index=index, contiguous=True).with_format('numpy')[:]
            arr_batch = np.concatenate(batch['ids'])
            arr[idx:idx + len(arr_batch)] = arr_batch
            idx += len(arr_batch)
        arr.flush()
        print(f"{split} has {len(dset):,} documents, {arr_len:,} tokens")

    with open(os.path.join(args.out_dir, 'meta.pkl'), 'wb') as f:
        pickle.dump({'vocab_size': enc.n_vocab, 'tokenizer': 'gpt2'}, f)


if __name__ == '__main__':  # worker processes started by spawn/forkserver re-import this file
    main()

# Full OpenWebText (nanoGPT's numbers):
# train has 8,009,762 documents, 9,035,582,198 tokens
# val has 4,007 documents, 4,434,897 tokens
# to read the bin files later, e.g. with numpy:
# m = np.memmap('train.bin', dtype=np.uint16, mode='r')
