"""
Tiny Shakespeare at the character level: every distinct character is one token.
Writes train.bin / val.bin (uint16 token ids, first 90% / last 10% of the characters)
and meta.pkl (vocab_size, stoi, itos) so that training and sampling can encode/decode.

python data/shakespeare_char/prepare.py                      # downloads input.txt next to this script
python data/shakespeare_char/prepare.py --input path/to.txt  # any local text file instead (offline)
"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(here))
from tinyshakespeare import parse_args, read_text, write_splits  # noqa: E402

args = parse_args(__doc__, here)
data = read_text(args.input, here)

# the vocabulary is every character that occurs, in sorted order
chars = sorted(set(data))
vocab_size = len(chars)
print("all the unique characters:", ''.join(chars))
print(f"vocab size: {vocab_size:,}")
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for i, ch in enumerate(chars)}
write_splits(args.out_dir, data, lambda text: [stoi[c] for c in text],
             {'vocab_size': vocab_size, 'itos': itos, 'stoi': stoi, 'tokenizer': 'char'})

# length of dataset in characters: 1,115,394
# all the unique characters:
#  !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
# vocab size: 65
# train has 1,003,854 tokens
# val has 111,540 tokens
