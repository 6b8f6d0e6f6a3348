"""
Export a standard, pause or reflection run as a Hugging Face GPT2LMHeadModel directory.

    python scripts/export_hf.py --out_dir=out-pause-shakespeare-char --hf_dir=hf-pause

transformers loads it (GPT2LMHeadModel.from_pretrained(DIR)); config.json names the ids of <pause>
and <reflect>, which callers insert as sample.py does; `--init_from=DIR` loads it back here. Layouts
GPT-2 cannot express (reasoning, reflect_hidden) are refused (checkpoints.export_hf).
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from checkpoints import export_hf, load_checkpoint  # noqa: E402
from configurator import configure, fail  # noqa: E402

if __name__ == '__main__':
    c = configure(dict(out_dir='', hf_dir=''))
    if not c['out_dir'] or not c['hf_dir']:
        fail("give --out_dir=RUN (holding ckpt.pt) and --hf_dir=DIR (where the model goes)")
    if os.path.exists(os.path.join(c['hf_dir'], 'config.json')):
        fail(f"{c['hf_dir']} already holds a model: choose another --hf_dir")
    config = export_hf(load_checkpoint(os.path.join(c['out_dir'], 'ckpt.pt')), c['hf_dir'])
    print(f"wrote {c['hf_dir']}: GPT2LMHeadModel, vocab {config.vocab_size} (<pause> {config.pause_token_id}, "
          f"<reflect> {config.reflect_token_id}), {config.n_positions} positions")
