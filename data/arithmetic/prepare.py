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

# one fixed vocabulary for every setting, so checkpoints carry over between arithmetic datasets; filler
# datasets add '.' after it (the others keep their ids and files)
CHARS = sorted('\n +*=0123456789')
FILLER = '.'

OPS = {'+': lambda a, b: a + b, '*': lambda a, b: a * b}
MAX_DIGITS = 9  # operands and problem indices stay within int64


def record_format(ops, add_digits, mul_digits, operands=2):
    """(operand width, prompt_len, answer_len, record_len) for this choice of ops and sizes."""
    digits = {'+': add_digits, '*': mul_digits}
    width = max(digits[op] for op in ops)
    answer_len = max(len(str(operands * (10 ** digits[op] - 1))) if op == '+' else 2 * digits[op] for op in ops)
    prompt_len = operands * (width + 1)  # the operands, the ops between them, '='
    return width, prompt_len, answer_len, prompt_len + answer_len + 1


def format_record(numbers, op, width, answer_len, filler=0):
    result = sum(numbers) if op == '+' else OPS[op](*numbers)
    return op.join(f"{x:>{width}}" for x in numbers) + '=' + FILLER * filler + f"{result:>{answer_len}}\n"


def split_counts(n, k):
    """n items over k ops: as even as possible, the remainder to the first ops."""
    return [n // k + (i < n % k) for i in range(k)]


def make_problems(ops, add_digits, mul_digits, num_train, num_val, seed, operands=2):
    """{'train': [((a, b, ...), op), ...], 'val': [...]}: distinct problems, disjoint splits, random order."""
    rng = np.random.Generator(np.random.PCG64(seed))
    digits = {'+': add_digits, '*': mul_digits}
    splits = {'train': [], 'val': []}
    for op, n_train, n_val in zip(ops, split_counts(num_train, len(ops)), split_counts(num_val, len(ops))):
        side = 10 ** digits[op]
        space = side ** operands  # every tuple of operands < 10^digits
        if n_train + n_val > space:  # every problem, split in the requested proportion
            n_val = max(1, round(space * n_val / (n_train + n_val)))
            n_train = space - n_val
        index = rng.choice(space, size=n_train + n_val, replace=False)  # distinct problems
        problems = [(tuple(int(i) // side ** (operands - 1 - j) % side for j in range(operands)), op) for i in index]
        splits['val'] += problems[:n_val]
        splits['train'] += problems[n_val:]
    for name in ('train', 'val'):  # interleave the ops
        order = rng.permutation(len(splits[name]))
        splits[name] = [splits[name][i] for i in order]
    return splits


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out_dir', default=here,
                        help='where train.bin, val.bin and meta.pkl go (default: next to this script)')
    parser.add_argument('--seed', type=int, default=0, help='problem sampling and order (default 0)')
    parser.add_argument('--ops', default='+', help="comma-separated ops among '+' and '*' (default '+')")
    parser.add_argument('--add_digits', type=int, default=3, help='max digits of each addition operand (default 3)')
    parser.add_argument('--mul_digits', type=int, default=2,
                        help='max digits of each multiplication operand (default 2)')
    parser.add_argument('--operands', type=int, default=2,
                        help="numbers per problem (default 2; more than 2 for '+' only: 12+ 7+40=059)")
    parser.add_argument('--filler', type=int, default=0,
                        help=f"{FILLER!r} characters after every '=', part of the prompt (default 0): filler text "
                             f"in place of thinking tokens (Pfau et al. 2024's control)")
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
    if not 2 <= args.operands <= 8 or (args.operands > 2 and ops != ['+']):
        sys.exit(f"error: --operands={args.operands} must be 2, or up to 8 with --ops=+ alone")
    if args.filler < 0:
        sys.exit(f"error: --filler={args.filler} must be >= 0")
    if args.num_train < 1 or args.num_val < 1:
        sys.exit(f"error: --num_train={args.num_train} and --num_val={args.num_val} must be at least 1")
    args.ops = ops
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    width, prompt_len, answer_len, record_len = record_format(args.ops, args.add_digits, args.mul_digits, args.operands)
    prompt_len, record_len = prompt_len + args.filler, record_len + args.filler
    chars = CHARS + [FILLER] * (args.filler > 0)
    stoi = {ch: i for i, ch in enumerate(chars)}
    splits = make_problems(args.ops, args.add_digits, args.mul_digits, args.num_train, args.num_val, args.seed,
                           args.operands)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, problems in splits.items():
        text = ''.join(format_record(numbers, op, width, answer_len, args.filler) for numbers, op in problems)
        assert len(text) == record_len * len(problems)
        np.array([stoi[ch] for ch in text], dtype=np.uint16).tofile(os.path.join(args.out_dir, f'{name}.bin'))
        print(f"{name}: {len(problems):,} problems, {len(text):,} tokens")
    meta = {
        'vocab_size': len(chars), 'itos': dict(enumerate(chars)), 'stoi': stoi, 'tokenizer': 'char',
        'record_len': record_len, 'prompt_len': prompt_len, 'answer_len': answer_len, 'operand_width': width,
        'ops': list(args.ops), 'add_digits': args.add_digits, 'mul_digits': args.mul_digits,
        'operands': args.operands, 'filler': args.filler, 'seed': args.seed,
        'num_train': len(splits['train']), 'num_val': len(splits['val']),
        'requested': {'num_train': args.num_train, 'num_val': args.num_val},
    }
    with open(os.path.join(args.out_dir, 'meta.pkl'), 'wb') as f:
        pickle.dump(meta, f)
    example = format_record(*splits['train'][0], width, answer_len, args.filler)
    print(f"records of {record_len} chars (prompt {prompt_len}, answer {answer_len}, newline), e.g. {example!r}")


if __name__ == '__main__':
    main()
