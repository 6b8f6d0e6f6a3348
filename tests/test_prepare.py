"""The data/*/prepare.py scripts, run as a user runs them (a subprocess each) on small local inputs:
the token ids are exactly the encoding of each split, train + val decode back to the input, the
vocab matches, OpenWebText keeps every document once with one <|endoftext|> each, and bad inputs
stop with a one-line error."""

import json
import os
import pickle
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, '..', 'shared', 'data')
# tiktoken cannot download the GPT-2 BPE offline: the scripts and these tests read it from here
TIKTOKEN_CACHE = os.environ.get('TIKTOKEN_CACHE_DIR') or os.path.abspath(os.path.join(SHARED, 'tiktoken_cache'))
EOT = 50256

# documents with the awkward cases: unicode, an empty one, newlines, one that spells the eot token
DOCS = [
    'The quick brown fox jumps over the lazy dog.',
    'Unicode: café, naïve, 日本語, emoji 🙂 and a zero-width\u200bspace.',
    'A document that spells <|endoftext|> in its text must not be split there.',
    '',
    'Several\nlines\n\nwith a blank one\n',
    '   leading and trailing spaces   ',
    'numbers 12345 and punctuation!?;:' * 5,
    'The last document.',
]


def run(script, *args, tmp_path):
    """Run data/<script>/prepare.py with the shared BPE cache and an HF cache of its own."""
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=TIKTOKEN_CACHE, HF_HOME=str(tmp_path / 'hf_home'),
               HF_HUB_OFFLINE='1')
    return subprocess.run([sys.executable, os.path.join(REPO, 'data', script, 'prepare.py'), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300)


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope='module')
def enc():
    if not os.path.isdir(TIKTOKEN_CACHE):
        pytest.skip(f'no tiktoken cache at {TIKTOKEN_CACHE} for the GPT-2 BPE')
    tiktoken = pytest.importorskip('tiktoken')
    with pytest.MonkeyPatch.context() as mp:  # tiktoken reads the variable when it loads the BPE
        mp.setenv('TIKTOKEN_CACHE_DIR', TIKTOKEN_CACHE)
        return tiktoken.get_encoding('gpt2')


@pytest.fixture
def shakespeare(tmp_path):
    """The first 20k characters of Tiny Shakespeare, as a file in tmp_path."""
    path = os.environ.get('SHAKESPEARE_PATH', os.path.join(SHARED, 'tinyshakespeare', 'input.txt'))
    if not os.path.exists(path):
        pytest.skip(f'Tiny Shakespeare not found at {path} (set SHAKESPEARE_PATH)')
    with open(path, encoding='utf-8') as f:
        text = f.read()[:20000]
    small = tmp_path / 'input.txt'
    small.write_text(text, encoding='utf-8')
    return small, text


def load(out_dir):
    train = np.fromfile(out_dir / 'train.bin', dtype=np.uint16)
    val = np.fromfile(out_dir / 'val.bin', dtype=np.uint16)
    with open(out_dir / 'meta.pkl', 'rb') as f:
        meta = pickle.load(f)
    return train, val, meta


def test_shakespeare_char(tmp_path, shakespeare):
    path, text = shakespeare
    script_dir = os.path.join(REPO, 'data', 'shakespeare_char')
    before = sorted(os.listdir(script_dir))
    out = tmp_path / 'out'
    ok(run('shakespeare_char', '--input', path, '--out_dir', out, tmp_path=tmp_path))
    train, val, meta = load(out)

    chars = sorted(set(text))
    assert meta['tokenizer'] == 'char'
    assert meta['vocab_size'] == len(chars)
    assert [meta['itos'][i] for i in range(len(chars))] == chars
    assert meta['stoi'] == {ch: i for i, ch in enumerate(chars)}
    split = int(len(text) * 0.9)
    assert (len(train), len(val)) == (split, len(text) - split)
    decode = lambda ids: ''.join(meta['itos'][int(i)] for i in ids)
    assert decode(train) == text[:split] and decode(val) == text[split:]
    assert sorted(os.listdir(script_dir)) == before  # --input and --out_dir leave the repo alone


def test_shakespeare_bpe(tmp_path, shakespeare, enc):
    path, text = shakespeare
    out = tmp_path / 'out'
    ok(run('shakespeare', '--input', path, '--out_dir', out, tmp_path=tmp_path))
    train, val, meta = load(out)

    assert meta == {'vocab_size': 50257, 'tokenizer': 'gpt2'}
    split = int(len(text) * 0.9)
    assert train.tolist() == enc.encode_ordinary(text[:split])
    assert val.tolist() == enc.encode_ordinary(text[split:])
    assert enc.decode(train.tolist()) + enc.decode(val.tolist()) == text


def write_docs(kind, tmp_path):
    """DOCS as --input files of one kind (json lines and parquet carry an extra column)."""
    if kind == 'jsonl':
        path = tmp_path / 'docs.jsonl'
        path.write_text(''.join(json.dumps({'text': d, 'url': f'https://example.com/{i}'}) + '\n'
                                for i, d in enumerate(DOCS)), encoding='utf-8')
        return [path]
    if kind == 'parquet':
        pq = pytest.importorskip('pyarrow.parquet')
        pa = pytest.importorskip('pyarrow')
        path = tmp_path / 'docs.parquet'
        pq.write_table(pa.table({'text': DOCS, 'id': list(range(len(DOCS)))}), path)
        return [path]
    paths = []  # txt: one file per document
    for i, d in enumerate(DOCS):
        paths.append(tmp_path / f'doc{i}.txt')
        with open(paths[-1], 'w', encoding='utf-8', newline='') as f:
            f.write(d)
    return paths


def documents(ids, enc):
    """Split a .bin on the eot token (encode_ordinary never emits it inside a document)."""
    assert len(ids) > 0 and ids[-1] == EOT, 'every document ends with <|endoftext|>'
    pieces = np.split(ids, np.flatnonzero(ids == EOT) + 1)[:-1]
    docs = []
    for piece in pieces:
        text = enc.decode(piece[:-1].tolist())
        assert piece[:-1].tolist() == enc.encode_ordinary(text)
        docs.append(text)
    return docs


@pytest.mark.parametrize('kind, extra, n_val', [
    ('jsonl', [], 1),                                   # default val_fraction on 8 documents: still 1 for val
    ('jsonl', ['--num_proc', 2, '--val_fraction', 0.25, '--shards', 3], 2),  # worker processes, shards of several docs
    ('parquet', [], 1),
    ('txt', [], 1),
])
def test_openwebtext_local(tmp_path, enc, kind, extra, n_val):
    out = tmp_path / 'out'
    ok(run('openwebtext', '--input', *write_docs(kind, tmp_path), '--out_dir', out,
           '--num_proc', 1, *extra, tmp_path=tmp_path))
    train, val, meta = load(out)

    assert meta == {'vocab_size': 50257, 'tokenizer': 'gpt2'}
    train_docs, val_docs = documents(train, enc), documents(val, enc)
    assert (len(train_docs), len(val_docs)) == (len(DOCS) - n_val, n_val)
    assert Counter(train_docs + val_docs) == Counter(DOCS)  # each document once, in one split
    assert len(train) + len(val) == sum(len(enc.encode_ordinary(d)) + 1 for d in DOCS)


def test_openwebtext_needs_two_documents(tmp_path, enc):
    path = tmp_path / 'one.jsonl'
    path.write_text(json.dumps({'text': 'only one document'}) + '\n')
    result = run('openwebtext', '--input', path, '--out_dir', tmp_path / 'out', tmp_path=tmp_path)
    assert result.returncode != 0
    assert 'at least 2 documents' in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / 'out' / 'train.bin').exists()


@pytest.mark.parametrize('script', ['shakespeare_char', 'shakespeare', 'openwebtext'])
def test_missing_input(tmp_path, script):
    missing = tmp_path / 'no_such_file.txt'
    result = run(script, '--input', missing, '--out_dir', tmp_path / 'out', tmp_path=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:'), result.stderr
    assert str(missing) in lines[0] and '--input' in lines[0]
    assert not (tmp_path / 'out').exists()
