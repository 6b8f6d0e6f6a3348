"""
Draw every mode's token layout and attention mask into docs/layouts/*.png (shown in docs/design.md).
The pictures are made from modes.py and attention.py themselves, so they cannot drift from the code:

    python scripts/draw_layouts.py            # docs/layouts/ (or a folder given as the argument)
"""

import os
import sys
import textwrap

import matplotlib
matplotlib.use('Agg')  # no display needed
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import modes  # noqa: E402

BASE = {'mode': 'standard', 'pause_rate': 0.1, 'reflect_rate': 0.1, 'reflect_hidden': False, 'reflect_repeat': False,
        'num_reason_tokens': 1, 'reason_delay': 1, 'reason_stopgrad': False, 'reason_heads': 0, 'answer_only': False,
        'num_pause_tokens': 0}
INSERTED = [0, 1, 0, 2, 0]  # pause/reflection: a fixed pattern instead of a random draw, with one step of two
VARIANTS = {  # file name: (overrides, extras after each of the 5 text tokens)
    'standard': ({'mode': 'standard'}, [0] * 5),
    'pause': ({'mode': 'pause'}, INSERTED),
    'reflection': ({'mode': 'reflection'}, INSERTED),
    'reflection_hidden': ({'mode': 'reflection', 'reflect_hidden': True}, INSERTED),
    'reasoning_n1_k1': ({'mode': 'reasoning', 'num_reason_tokens': 1, 'reason_delay': 1}, [1] * 5),
    'reasoning_n1_k1_stopgrad': ({'mode': 'reasoning', 'reason_delay': 1, 'reason_stopgrad': True}, [1] * 5),
    'reasoning_n2_k1': ({'mode': 'reasoning', 'num_reason_tokens': 2, 'reason_delay': 1}, [2] * 5),
}
NAME = {modes.TEXT: 'x{}', modes.PAUSE: '<p>', modes.REFLECT: '<r>', modes.REASON: 'r{}'}
KIND_COLOR = {modes.TEXT: '#cfe2f3', modes.PAUSE: '#d9d9d9', modes.REFLECT: '#fff2cc', modes.REASON: '#d9ead3'}
# mask cells: 0 future (not causal), 1 visible, 2 hidden by a rule, 3 visible but stop-gradient
MASK_COLORS = ListedColormap(['white', '#3d6fb6', '#f4b6b6', '#f6a04d'])


def draw(name, overrides, counts, out_dir):
    lay = modes.Mode({**BASE, **overrides}, text_vocab_size=65).layout(torch.tensor(counts))
    L = len(lay.kind)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    visible = causal if lay.vis is None else lay.vis.allow  # vis None = plain causal
    cells = causal.long() + (causal & ~visible).long()  # 1 visible, 2 hidden
    if lay.vis is not None and lay.vis.no_grad is not None:
        cells[lay.vis.no_grad] = 3
    # the eval slot of text token t: the last slot that predicts x_{t+1} (where val loss is taken)
    eval_slot = {t: i for i, t in enumerate(lay.tgt.tolist()) if t >= 0}
    labels = [NAME[int(k)].format(int(s)) for k, s in zip(lay.kind, lay.step)]
    fig, (top, ax) = plt.subplots(2, 1, figsize=(0.32 * L + 1.3, 0.32 * L + 1.9), height_ratios=[3, L])
    for i in range(L):  # the slot row: slot, its target (bold at eval slots), its position
        t = int(lay.tgt[i])
        top.add_patch(plt.Rectangle((i, 0), 1, 3, color=KIND_COLOR[int(lay.kind[i])], ec='grey'))
        top.text(i + .5, 2.5, labels[i], ha='center', va='center', fontsize=7)
        top.text(i + .5, 1.5, f'x{t}' if t >= 0 else '-', ha='center', va='center', fontsize=7,
                 weight='bold' if eval_slot.get(t) == i else 'normal')
        top.text(i + .5, 0.5, str(int(lay.pos[i])), ha='center', va='center', fontsize=7)
    top.set(xlim=(0, L), ylim=(0, 3), xticks=[])
    top.set_yticks([.5, 1.5, 2.5], ['pos', 'target', 'slot'], fontsize=7)
    top.set_title(textwrap.fill(' '.join(f'{k}={v}' for k, v in overrides.items()), 45), fontsize=7)
    ax.pcolormesh(cells, cmap=MASK_COLORS, vmin=0, vmax=3, edgecolors='lightgrey', linewidth=.5)
    ax.set(aspect='equal', xlabel='key', ylabel='query')
    ax.invert_yaxis()  # query 0 at the top, as the matrix is written
    ax.set_xticks([i + .5 for i in range(L)], labels, fontsize=6, rotation=90)
    ax.set_yticks([i + .5 for i in range(L)], labels, fontsize=6)
    handles = [plt.Rectangle((0, 0), 1, 1, fc=MASK_COLORS(c), ec='grey') for c in (1, 2, 3)]
    fig.legend(handles, ['visible', 'hidden', 'stop-gradient'], loc='lower center', ncol=3, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(os.path.join(out_dir, f'{name}.png'), dpi=90)
    plt.close(fig)


if __name__ == '__main__':
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, 'docs', 'layouts')
    os.makedirs(out_dir, exist_ok=True)
    for name, (overrides, counts) in VARIANTS.items():
        draw(name, overrides, counts, out_dir)
        print(os.path.join(out_dir, f'{name}.png'))
