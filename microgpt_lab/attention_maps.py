"""
attention_maps.py: where a trained model looks, for every layer and head.

The model of a checkpoint reads a text (a document, framed by BOS, or a passage of a text)
in one forward pass, the one training uses, and keeps each layer's attention weights: row
t is how position t spreads its attention over positions 0..t, and sums to 1. They are
shown as text heatmaps in the terminal, and as a grid of heatmaps, a layer a row and a
head a column, in a PNG.
"""
import numpy as np

import data
from microgpt_lab import UserError, checkpoint, models, plots

SHADES = ' .:-=+*#%@'  # weight 0 to 1, a tenth a step
MAX_WIDE = 80     # the most characters a text heatmap shows: a terminal's width
MAX_INCHES = 40   # the picture's longer side at most (4,400 pixels), whatever the text


def show(token):
    """A token's text as the axes show it: newlines and spaces made visible."""
    return ''.join({'\n': '⏎', ' ': '␣'}.get(ch, ch) for ch in token)


def attention_weights(ckpt, text):
    """(labels, maps): the characters the model reads, and maps[layer] [H, T, T], the
    attention weights of that layer's heads over them."""
    model, tok = models.from_checkpoint(ckpt, 'tensor')
    is_text = ckpt['data_format'] == 'text'
    try:
        ids = tok.encode(text) if is_text else [tok.bos] + tok.encode(text)
    except data.DataError as e:
        raise UserError(f"--text: {e} of this checkpoint") from None
    if not ids:
        raise UserError("--text is empty")
    if len(ids) > model.config.block_size:
        raise UserError(f"--text is {len(ids)} tokens; the model's context holds "
                        f"{model.config.block_size}")
    maps = []
    with np.errstate(all='ignore'):  # huge weights overflow to inf, as training would
        model.forward(np.array(ids), np.arange(len(ids)), np.array([0, len(ids)]),
                      attention_maps=maps)
    labels = ['BOS' if i == tok.bos else show(tok.token_text(i)) for i in ids]
    return labels, [m[0] for m in maps]


def heatmap_text(weights, labels):
    """One head's weights as text: a row a query position, a column a key, a shade a tenth."""
    width = max(len(label) for label in labels)
    lines = [' ' * width + '  ' + ' '.join(label[0] for label in labels)]
    for label, row in zip(labels, weights):
        lines.append(f"{label:>{width}}  " + ' '.join(
            SHADES[min(len(SHADES) - 1, int(w * len(SHADES)))] for w in row))
    return '\n'.join(lines)


def draw(path, labels, maps, title):
    """A grid of heatmaps, a layer a row and a head a column, the characters on both axes.
    Returns False without matplotlib."""
    plt = plots.pyplot()
    if plt is None:
        return False
    L, H = len(maps), maps[0].shape[0]
    size = min(0.9 + 0.12 * len(labels), MAX_INCHES / max(L, H))  # the picture stays in bounds
    fig, axes = plt.subplots(L, H, figsize=(size * H, size * L + 0.6), squeeze=False)
    for layer, heads in enumerate(maps):
        for head, ax in enumerate(axes[layer]):
            ax.imshow(heads[head], cmap='viridis', vmin=0, vmax=1)
            if len(labels) <= MAX_WIDE:  # more characters than that are too small to read
                ax.set_xticks(range(len(labels)), labels, fontsize=7)
                ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (size * L + 0.6)))  # room for the title
    plots.save(fig, path)
    return True


def attention_command(cfg):
    """`cli.py attention`: print every head's heatmap over cfg['text'] and draw them all
    to cfg['png']."""
    plots.check_png(cfg['png'])
    ckpt = checkpoint.load(cfg['checkpoint'])
    L, H = ckpt['config']['n_layer'], ckpt['config']['n_head']
    if L * H > plots.MAX_PANELS:
        raise UserError(f"{L} layers x {H} heads are more maps than one picture shows "
                        f"({plots.MAX_PANELS})")
    labels, maps = attention_weights(ckpt, cfg['text'])
    for layer, heads in enumerate(maps):
        for head, weights in enumerate(heads):
            if len(labels) > MAX_WIDE:
                break
            print(f"--- layer {layer}, head {head} (row: a position; column: where it looks; "
                  f"'{SHADES[1]}' to '{SHADES[-1]}': weight 0.1 to 1) ---")
            print(heatmap_text(weights, labels))
    if len(labels) > MAX_WIDE:
        print(f"text heatmaps skipped: {len(labels)} positions are wider than a terminal "
              f"({MAX_WIDE}); the picture has every map")
    if draw(cfg['png'], labels, maps, f"attention over {cfg['text']!r}"):
        print(f"picture: {cfg['png']}")
    else:
        print(f"picture skipped: matplotlib is not installed ({plots.GET_MATPLOTLIB})")
