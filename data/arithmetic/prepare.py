"""
Arithmetic problems with exact answers, at the character level, as fixed-width records:

    123+ 45= 168\\n        prompt: operands right-aligned to one width, the op, '='
     67* 89=5963\\n        answer: the result right-aligned to a fixed width, then a newline

Every record of a dataset has the same length, so every prompt of a batch ends at the same offset
(pauses inserted after the prompt then fall at the same layout slots for every sequence). Problems
(a, op, b) are drawn at random without repetition, split into disjoint train and val sets, and
written in a random order; the same arguments always give byte-identical files.

    python data/arithmetic/prepare.py                              # 3-digit +, 40000/1000 problems
    python data/arithmetic/prepare.py --ops=+,* --mul_digits=2     # also 2-digit multiplication
    python data/arithmetic/prepare.py --ops=+ --add_digits=5 --num_train=50000 --seed=1
    python data/arithmetic/prepare.py --out_dir=data/arithmetic_small --num_train=2000 --num_val=200

Writes train.bin / val.bin (uint16 ids of the records, concatenated) and meta.pkl: the char vocab
(vocab_size, stoi, itos), the record format (record_len, prompt_len, answer_len) that
train.py --answer_only=True and scripts/eval_arithmetic.py read, and the generation settings.
Operands are uniform over 0 .. 10^digits - 1; the problems of each op are num_train / len(ops)
(and num_val / len(ops)), or every problem of that op when fewer exist, split between train and
val in the requested proportion (2-digit multiplication has 10,000: 9,756 train, 244 val).

The default, 3-digit addition with the answer's most significant digit first, is what the
arithmetic ablation (config/ablations/arithmetic.py) trains on: the first answer digit depends on
every carry, and the CPU-sized model learns it only partly in the grid's budget, so extra
computation before answering has room to show. 2-digit addition is learned almost perfectly by
the same finetuning, and with 2-digit multiplication mixed in, 3-digit addition is barely learned.
"""
import argparse
import os
import pickle
import sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))

# one fixed vocabulary for every setting, so checkpoints carry over between arithmetic datasets
CHARS = sorted('\n +*=0123456789')
STOI = {ch: i for i, ch in enumerate(CHARS)}
ITOS = {i: ch for i, ch in enumerate(CHARS)}
OPS = {'+': lambda a, b: a + b, '*': lambda a, b: a * b}
MAX_DIGITS = 9  # operands and problem indices stay within int64


def record_format(ops, add_digits, mul_digits):
    """(operand width, prompt_len, answer_len, record_len) for this choice of ops and sizes."""
    digits = {'+': add_digits, '*': mul_digits}
    width = max(digits[op] for op in ops)
    answer_len = max(digits[op] + 1 if op == '+' else 2 * digits[op] for op in ops)
    prompt_len = 2 * width + 2  # a, op, b, '='
    return width, prompt_len, answer_len, prompt_len + answer_len + 1


def format_record(a, op, b, width, answer_len):
    return f"{a:>{width}}{op}{b:>{width}}={OPS[op](a, b):>{answer_len}}\n"


def split_counts(n, k):
    """n items over k ops: as even as possible, the remainder to the first ops."""
    return [n // k + (i < n % k) for i in range(k)]


def make_problems(ops, add_digits, mul_digits, num_train, num_val, seed):
    """{'train': [(a, op, b), ...], 'val': [...]}: distinct problems, disjoint splits, random order."""
    rng = np.random.Generator(np.random.PCG64(seed))
    digits = {'+': add_digits, '*': mul_digits}
    splits = {'train': [], 'val': []}
    for op, n_train, n_val in zip(ops, split_counts(num_train, len(ops)), split_counts(num_val, len(ops))):
        side = 10 ** digits[op]
        space = side * side  # every (a, b) with a, b < 10^digits
        if n_train + n_val > space:  # every problem, split in the requested proportion
            n_val = max(1, round(space * n_val / (n_train + n_val)))
            n_train = space - n_val
        index = rng.choice(space, size=n_train + n_val, replace=False)  # distinct problems
        problems = [(int(i) // side, op, int(i) % side) for i in index]
        splits['val'] += problems[:n_val]
        splits['train'] += problems[n_val:]
    for name in ('train', 'val'):  # interleave the ops
        order = rng.permutation(len(splits[name]))
        splits[name] = [splits[name][i] for i in order]
    return splits


def encode(text):
    return np.array([STOI[ch] for ch in text], dtype=np.uint16)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out_dir', default=here,
                        help='where train.bin, val.bin and meta.pkl go (default: next to this script)')
    parser.add_argument('--seed', type=int, default=0, help='problem sampling and order (default 0)')
    parser.add_argument('--ops', default='+', help="comma-separated ops among '+' and '*' (default '+')")
    parser.add_argument('--add_digits', type=int, default=3, help='max digits of each addition operand (default 3)')
    parser.add_argument('--mul_digits', type=int, default=2,
                        help='max digits of each multiplication operand (default 2)')
    parser.add_argument('--num_train', type=int, default=40000, help='training problems, over all ops (default 40000)')
    parser.add_argument('--num_val', type=int, default=1000, help='validation problems, over all ops (default 1000)')
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.ops.split(',') if op.strip()]
    bad = [op for op in ops if op not in OPS]
    if not ops or bad or len(set(ops)) != len(ops):
        sys.exit(f"error: --ops={args.ops!r} must list distinct ops among {', '.join(OPS)}, e.g. --ops=+,*")
    for key in ('add_digits', 'mul_digits'):
        if not 1 <= getattr(args, key) <= MAX_DIGITS:
            sys.exit(f"error: --{key}={getattr(args, key)} must be between 1 and {MAX_DIGITS}")
    if args.num_train < 1 or args.num_val < 1:
        sys.exit(f"error: --num_train={args.num_train} and --num_val={args.num_val} must be at least 1")
    args.ops = ops
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    width, prompt_len, answer_len, record_len = record_format(args.ops, args.add_digits, args.mul_digits)
    splits = make_problems(args.ops, args.add_digits, args.mul_digits, args.num_train, args.num_val, args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, problems in splits.items():
        text = ''.join(format_record(a, op, b, width, answer_len) for a, op, b in problems)
        assert len(text) == record_len * len(problems)
        encode(text).tofile(os.path.join(args.out_dir, f'{name}.bin'))
        print(f"{name}: {len(problems):,} problems, {len(text):,} tokens")
    meta = {
        'vocab_size': len(CHARS), 'itos': ITOS, 'stoi': STOI, 'tokenizer': 'char',
        'record_len': record_len, 'prompt_len': prompt_len, 'answer_len': answer_len, 'operand_width': width,
        'ops': list(args.ops), 'add_digits': args.add_digits, 'mul_digits': args.mul_digits, 'seed': args.seed,
        'num_train': len(splits['train']), 'num_val': len(splits['val']),
        'requested': {'num_train': args.num_train, 'num_val': args.num_val},
    }
    with open(os.path.join(args.out_dir, 'meta.pkl'), 'wb') as f:
        pickle.dump(meta, f)
    example = format_record(*splits['train'][0], width, answer_len)
    print(f"records of {record_len} chars (prompt {prompt_len}, answer {answer_len}, newline), e.g. {example!r}")


if __name__ == '__main__':
    main()
