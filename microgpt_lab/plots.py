"""
plots.py: pictures of runs, drawn with matplotlib (the optional `plot` extra).

A run's losses (losses.png in every run record), the curves of an ablation's variants, and
the curves of several runs or ablations overlaid. Without matplotlib each says, in one
line, how to get it, and nothing else changes: pictures are never part of a record's
contract.
"""
import math
import os
import textwrap

import numpy as np

from microgpt_lab import UserError

GET_MATPLOTLIB = "pip install -e '.[plot]'"
# The most curves one picture draws: small multiples of 48 panels take some 20 s, and the
# time grows faster than the panels (900 took over 6 minutes).
MAX_PANELS = 48


def pyplot():
    """matplotlib.pyplot, drawing to files; or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        matplotlib.rcParams['text.parse_math'] = False  # a '$' in a file name is a '$'
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(fig, path):
    """Write the figure to path whole (a temporary file, then a rename), and close it."""
    plt = pyplot()
    tmp = os.path.join(os.path.dirname(path) or '.', f".{os.path.basename(path)}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    except OSError as e:  # named by the path asked for, not the temporary file
        raise OSError(e.errno, e.strerror, path) from None
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def check_png(path):
    """A UserError unless path can name a new picture: a .png file (so that no record's
    file, e.g. a checkpoint.json, can be written over by mistake), not a folder."""
    if not path.lower().endswith('.png'):
        raise UserError(f"--png {path}: a picture's name ends in .png")
    if os.path.isdir(path):
        raise UserError(f"--png {path} is a folder")


def moving_average(losses, window=None):
    """(steps, averages): the mean of each `window` consecutive losses (default: 2% of the
    run), placed at the window's last step."""
    losses = np.asarray(losses, dtype=float)
    w = min(window or max(1, len(losses) // 50), max(1, len(losses)))
    return np.arange(w, len(losses) + 1), np.convolve(losses, np.ones(w) / w, mode='valid')


def run_losses(path, losses, val_history, title):
    """A run's picture: every step's training loss, faint, its moving average, and the
    validation losses. Returns False (and draws nothing) without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color='tab:blue', alpha=0.25, linewidth=0.8, label='training loss')
    ax.plot(*moving_average(losses), color='tab:blue', label='moving average')
    if val_history:
        ax.plot([e[0] for e in val_history], [e[1] for e in val_history], 'o-',
                color='tab:orange', label='validation loss')
    ax.set(title=title, xlabel='step', ylabel='loss')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path)
    return True


def mean_curve(runs):
    """(steps, moving average) of the mean training loss of runs [(losses, val_history),
    ...], over the steps they all made."""
    n = min(len(losses) for losses, _ in runs)
    return moving_average(np.mean([losses[:n] for losses, _ in runs], axis=0))


def in_bpb(groups):
    """Whether every validation of the groups' runs has its bits per byte (records before
    issue 35: none), which compare runs whose tokens differ."""
    return all(len(e) == 4 for runs in groups.values() for _, history in runs for e in history)


def mean_validation(runs, bpb=False):
    """(steps, means): at each step where any of the runs validated, the mean of their
    validation losses (bpb: bits per byte)."""
    vals = {}
    for _, history in runs:
        for e in history:
            vals.setdefault(e[0], []).append(e[3] if bpb else e[1])
    steps = sorted(vals)
    return steps, [np.mean(vals[s]) for s in steps]


def curves(path, groups):
    """Training (moving average) and validation curves of several groups of runs side by
    side, each group's mean over its runs: {label: [(losses, val_history), ...]}; the legend
    under both panels, off the curves. Returns False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    labels = {label: textwrap.fill(label, 50) for label in groups}  # a long one on lines
    lines = max(label.count('\n') + 1 for label in labels.values()) if labels else 1
    rows = math.ceil(len(groups) / 3) * lines  # of the legend's text: three labels a row
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5 + 0.3 * rows))
    bpb = in_bpb(groups)
    for label, runs in groups.items():
        label = labels[label]
        ax_train.plot(*mean_curve(runs), label=label)
        ax_val.plot(*mean_validation(runs, bpb), marker='o', label=label)
    ax_train.set(title='training loss (moving average, mean over seeds)', xlabel='step',
                 ylabel='loss (nats per token)')
    ax_val.set(title=f"validation {'bits per byte' if bpb else 'loss'} (mean over seeds)",
               xlabel='step', ylabel='bits per byte' if bpb else 'loss')
    for ax in (ax_train, ax_val):
        ax.grid(alpha=0.3)
    handles, labels = ax_train.get_legend_handles_labels()
    fig.legend(handles, labels, loc='lower center', ncol=min(3, len(labels)) or 1, frameon=False)
    fig.tight_layout(rect=(0, 0.3 * rows / (4.5 + 0.3 * rows) + 0.02, 1, 1))
    save(fig, path)
    return True


def small_multiples(path, groups):
    """One panel a group, on shared axes: its training curve (moving average, mean over its
    runs) and validation points, with the first group's curve in grey in every panel for
    reference. Returns False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    labels = list(groups)
    cols = min(4, len(labels))
    rows = -(-len(labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), sharex=True,
                             sharey=True, squeeze=False)
    reference = mean_curve(groups[labels[0]])
    for ax, name in zip(axes.flat, labels):
        ax.plot(*reference, color='0.7', linewidth=1)
        ax.plot(*mean_curve(groups[name]), color='tab:blue')
        ax.plot(*mean_validation(groups[name]), 'o', color='tab:orange', markersize=3)  # (in nats, as the curve)
        ax.set_title(name, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis('off')
    fig.suptitle(f"training loss (moving average) and validation loss (dots), mean over seeds; "
                 f"grey: {labels[0]}", fontsize=9)
    fig.tight_layout()
    save(fig, path)
    return True


def scale(path, panels, title):
    """bench's scale picture: for each varied size, tokens/s (above) and peak memory (below)
    of ours and PyTorch's against its values. panels: [(setting, values, {label: tokens/s},
    {label: MB})]. Returns False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 7), squeeze=False)
    for (name, values, speed, memory), (top, bottom) in zip(panels, axes.T):
        for ax, series, ylabel in ((top, speed, 'tokens/s'), (bottom, memory, 'peak memory (MB)')):
            for label, ys in series.items():
                ax.plot(values, ys, 'o-', label=label)
            ax.set(xscale='log', xlabel=name, ylabel=ylabel, ylim=(0, None))
            ax.set_xticks(values, [str(v) for v in values])
            ax.minorticks_off()
            ax.yaxis.set_major_formatter(lambda y, _: f"{y:,.0f}")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)
    return True


def intervals(path, rows, measure, title):
    """An ablation's answer at a glance: each cell's difference in validation `measure` (bits
    per byte, or loss) from the reference, with its 95% interval, a row a cell in the table's order, and a line at
    zero. rows: [(name, (mean, low, high); or None: the reference, a dot at zero; or words:
    why there is no interval, written in its row)]. Blue: better than the reference, red:
    worse, grey: no difference it can tell. Returns False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.42 * len(rows)))
    ys = list(range(len(rows)))[::-1]                         # the table's first row on top
    for y, (name, d) in zip(ys, rows):
        if d is None:
            ax.plot([0], [y], 'o', color='black')
            continue
        if isinstance(d, str):  # no interval: no mark, the reason instead
            ax.text(0, y, f"  {d}", va='center', color='grey')
            continue
        mean, low, high = d
        color = 'tab:blue' if high < 0 else 'tab:red' if low > 0 else 'grey'
        ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt='o', color=color, capsize=4)
    ax.axvline(0, color='black', lw=0.8)
    ax.set_yticks(ys, [textwrap.shorten(shown(name), 60) for name, _ in rows])
    ax.set_xlabel(f'Δ validation {measure} vs the reference, 95% interval (< 0: better)')
    ax.grid(axis='x', alpha=0.3)
    fig.suptitle(textwrap.fill(shown(title), 100), fontsize=9)  # over the figure: the names' room too
    fig.tight_layout()
    save(fig, path)
    return True


def shown(name):
    """A file name as a label: bytes that are not UTF-8 (kept by Python as surrogates,
    which no font draws) become replacement characters."""
    return name.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')

