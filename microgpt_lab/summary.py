"""
summary.py: what an ablation's runs say, cell by cell: summary.csv (a row a run),
summary.json and table.md (a row a cell: the means over its seeds, and the paired difference
from the reference cell with its 95% interval, in validation bits per byte, and in nats per
token too where every cell shares a tokenizer), losses.png and intervals.png.

Bits per byte compare cells whose tokens differ (nanochat's measure); records from before
it (no val_bpb) are compared in validation loss alone.
"""
import os

from microgpt_lab import plots, records, settings
from microgpt_lab.grid import VARIANT_AXIS, VARIANT_NAMES, cell_config, cell_name, names, pairs, said
from microgpt_lab.stats import mean_sd, paired_interval


def variant_of(cfg):
    """The variant of a run's settings: its lm_head and input rmsnorm, by name."""
    return VARIANT_NAMES[(cfg['tie_lm_head'], cfg['input_rmsnorm'])]


def run_row(base, cell, seed, run_dir, out):
    """The figures of one finished run, a row of summary.csv: its cell (variant and the
    values of the other varied settings), seed and results."""
    cfg, m = cell_config(base, cell, seed), records.read_run(run_dir)
    s = m['samples']
    joint = lambda name, value: cell_name(((name, value),), 'label').partition('=')[2]  # 'rmsnorm+off'
    return {'variant': variant_of(cfg), **{name: joint(name, value) if '+' in name else value
                                        for name, value in cell if name != VARIANT_AXIS}, **dict(
        seed=seed, tie_lm_head=cfg['tie_lm_head'], input_rmsnorm=cfg['input_rmsnorm'],
        status=m['status'], final_loss=m['final_loss'], mean_loss_last_n=m['mean_loss_last_n'],
        last_n=m['last_n'], val_loss=m['val_loss'], val_bpb=m['val_bpb'], steps_per_s=m['steps_per_s'],
        tokens_per_s=m['tokens_per_s'], samples_train=s.get('train'), samples_val=s.get('val'),
        samples_new=s.get('new'), run=os.path.relpath(run_dir, out))}


NO_INTERVAL = 'n/a (needs ≥ 2 paired seeds)'  # the table's words, and intervals.png's
DESIGN_WORDS = dict(product="every combination of the variants and the --vary values",
                    alone="each choice alone against the reference (one change a cell)",
                    path="a path from the reference, one change a step, each cell keeping the changes above it")


def summarize(out, base, runs, seeds, axes):
    """summary.csv (a row a run), summary.json and table.md (a row a cell: means over
    seeds, and the paired difference of validation loss from the reference cell; on a
    path, from the cell before it too), the plot. Returns the cell of each run that diverged."""
    rows = [run_row(base, cell, seed, run_dir, out) for cell, seed, run_dir in runs]
    varied = [name for name, _ in axes if name != VARIANT_AXIS]  # the variants have columns
    records.write_atomic(os.path.join(out, 'summary.csv'),
                         records.csv_text(list(rows[0]), (r.values() for r in rows)))
    grid = list(dict.fromkeys(cell for cell, _, _ in runs))
    reference = grid[0]
    done = lambda row: row['status'] == 'completed'  # a diverged run's figures are left out
    configs = [cell_config(base, cell, base['seed']) for cell in grid]
    measure = 'val_bpb' if any(row['val_bpb'] is not None for row in rows) else 'val_loss'  # (older records)
    def delta(cell, against, key='val_bpb'):  # the paired difference, seed by seed
        val = {c: {seed: row[key] for (c2, seed, _), row in zip(runs, rows)
                   if c2 == c and done(row) and row[key] is not None} for c in (cell, against)}
        return paired_interval([v - val[against][seed] for seed, v in val[cell].items() if seed in val[against]])
    table = []
    for i, cell in enumerate(grid):
        rs = [row for (c, _, _), row in zip(runs, rows) if c == cell]
        ok = [r for r in rs if done(r)]
        stats = {k: mean_sd([r[k] for r in ok]) for k in (
            'final_loss', 'mean_loss_last_n', 'val_loss', 'val_bpb', 'steps_per_s', 'tokens_per_s',
            'samples_train', 'samples_val', 'samples_new')}
        table.append({'cell': cell_name(cell, 'label'), 'variant': variant_of(cell_config(base, cell, 0)),
                      **{name: value for name, value in cell if name in varied}, 'seeds': len(rs),
                      **stats, 'last_n': (ok or rs)[0]['last_n'],
                      'bpb_delta': delta(cell, reference) if i else None,
                      'val_delta': delta(cell, reference, 'val_loss') if i and one_tokenizer(configs) else None,
                      **({'step_delta': delta(cell, grid[i - 1], measure) if i else None}
                         if base['design'] == 'path' else {}),
                      'diverged': len(rs) - len(ok)})
    records.write_json(os.path.join(out, 'summary.json'), dict(
        seeds=seeds, reference=cell_name(reference, 'label'), varied=varied,
        design=base['design'], variants=table, runs=rows))
    md = markdown_table(table, grid, varied, base['design'], configs)
    records.write_atomic(os.path.join(out, 'table.md'), md)
    print(md)
    plot(out, [(cell, run_dir) for cell, _, run_dir in runs], grid, base['design'])
    draw_intervals(out, table, grid, base['design'])
    print(f"summary: {os.path.relpath(out)}/summary.json, summary.csv, table.md")
    return [cell for (cell, _, _), row in zip(runs, rows) if not done(row)]


def shared(configs, grid):
    """The settings that every cell runs alike, in words, where they are not the defaults:
    'untied-norm, data=tinyshakespeare.txt, n-embd=128, ...'."""
    variants = {variant_of(cfg) for cfg in configs}
    same = [name for name in settings.SETTINGS if name not in ('seed', 'out', 'stop_after', 'tie_lm_head',
            'input_rmsnorm') and len({repr(cfg[name]) for cfg in configs}) == 1
            and configs[0][name] != settings.SETTINGS[name].default]
    value = lambda name: os.path.basename(configs[0][name]) if name == 'data' else said(name, configs[0][name])
    return ', '.join((sorted(variants) if len(variants) == 1 else [])
                     + [f"{name.replace('_', '-')}={value(name)}" for name in same])


def markdown_table(table, grid, varied, design='product', configs=None):
    """The table: a row a cell (table's rows, grid's cells), named by its values of the
    varied settings (product) or by what it changes (alone, path), with its figures; under
    it, the settings that every cell shares (configs: each cell's settings)."""
    last_n = {r['last_n'] for r in table if r['mean_loss_last_n'][0] is not None}
    own_n = lambda r: '' if len(last_n) <= 1 else f" (N={r['last_n']})"  # cells differ in steps
    def pm(stat, fmt='.4f'):
        mean, sd = stat
        if mean is None:
            return 'n/a'
        return f"{mean:{fmt}}" + ('' if sd is None else f" ± {sd:{fmt}}")

    if design == 'product':  # a column a setting, the variants' if they vary
        axes = (['variant'] if len({r['variant'] for r in table}) > 1 else []) + varied
        columns = [n.replace('_', '-') for name in axes for n in name.split('+')]
        idle = {cell: settings.idle(cfg) for cell, cfg in zip(grid, configs or [])}  # said as –
        cell_values = lambda r, name, cell: r['variant'] if name == 'variant' else \
            ' | '.join('–' if n in idle.get(cell, ()) else said(n, v)  # settings varied together: each its own
                       for n, v in pairs(name, r[name]))
    else:
        axes, columns = ['change'], ['change']
        words = dict(zip(grid, names(grid, design)))
        cell_values = lambda r, name, cell: words[cell] if cell != grid[0] else '(the reference)'
    with_samples = any(r[k][0] is not None for r in table for k in ('samples_train', 'samples_val', 'samples_new'))
    path = design == 'path'  # a column more: each step's own difference, from the cell above
    bpb = in_bpb(table)
    nats = one_tokenizer(configs) or not bpb  # nats per token compare cells that share their tokens only
    n = f"{min(last_n) if len(last_n) == 1 else 'N'}"
    header = (["val bpb", "Δ val bpb vs the reference (95% CI)"] * bpb
              + ["Δ val bpb vs the step before (95% CI)"] * (path and bpb)
              + ["val loss", "Δ val loss vs the reference (95% CI)"] * nats
              + ["Δ val loss vs the step before (95% CI)"] * (path and not bpb)
              + ["final loss", f"mean loss, last {n}"] * nats
              + ["tokens/s"] + ["samples: train / val / new"] * with_samples)
    lines = ['| ' + ''.join(f"{c} | " for c in columns + header).rstrip(),
             '|' + ' --- |' * (len(columns) + len(header))]
    interval = lambda d: NO_INTERVAL if d is None else \
        f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    for r, cell in zip(table, grid):
        first = cell == grid[0]
        step = (['' if first else interval(r['step_delta'])] if path else [])
        figures = (([pm(r['val_bpb']), '(reference)' if first else interval(r['bpb_delta'])] + step if bpb else [])
                   + ([pm(r['val_loss']), '(reference)' if first else interval(r['val_delta'])]
                      + ([] if bpb else step) + [pm(r['final_loss']), f"{pm(r['mean_loss_last_n'])}{own_n(r)}"]
                      if nats else [])
                   + [pm(r['tokens_per_s'], '.0f')]
                   + [' / '.join('n/a' if r[k][0] is None else f"{r[k][0]:.0%}"
                                 for k in ('samples_train', 'samples_val', 'samples_new'))] * with_samples)
        lines.append('| ' + ''.join(f"{v} | " for v in [cell_values(r, name, cell) for name in axes]
                                    + figures).rstrip())
    lines += ['', f"The reference: {cell_name(grid[0])}. Every cell: "
                  f"{shared(configs, grid) if configs else '(not recorded)'}.",
              f"Design: {DESIGN_WORDS[design]}. Mean ± standard deviation over "
              f"{table[0]['seeds']} seed(s)."]
    lines += [f"{cell_name(cell)}: {r['diverged']} of {r['seeds']} runs diverged and are left out."
              for r, cell in zip(table, grid) if r['diverged']]
    return '\n'.join(lines) + '\n'


def in_bpb(table):
    """Whether a table's runs have their bits per byte (records before issue 35: loss alone)."""
    return any(r['val_bpb'][0] is not None for r in table)


def one_tokenizer(configs):
    """Whether the cells' settings (configs; None: not recorded) share one tokenizer."""
    return not configs or len({(c['tokenizer'], c['vocab_size'], c['split_pattern'])
                               for c in configs}) == 1


def draw_intervals(out, table, grid, design='product'):
    """intervals.png: each cell's Δ validation bits per byte (loss, for records before
    them) against the reference, with its 95% interval, named by what it changes
    (plots.intervals); a cell without one says why, as the table does."""
    key = 'bpb_delta' if in_bpb(table) else 'val_delta'
    d = lambda r: NO_INTERVAL if r[key] is None else (r[key]['mean'], r[key]['low'], r[key]['high'])
    rows = [(name, d(r) if i else None) for i, (r, name) in enumerate(zip(table, names(grid, design)))]
    try:
        if plots.intervals(os.path.join(out, 'intervals.png'), rows, 'bits per byte' if key == 'bpb_delta' else 'loss',
                           f"{os.path.basename(os.path.normpath(out))}, {table[0]['seeds']} seeds a "
                           f"cell; the reference: {cell_name(grid[0])}"):
            print(f"plot: {os.path.relpath(out)}/intervals.png")
    except Exception as e:  # whatever fails in the picture, the summary stands
        print(f"intervals.png not written: {getattr(e, 'strerror', None) or str(e).strip()[:200]}")


def plot(out, runs, grid, design='product'):
    """losses.png: each cell's curves, the mean over its seeds, named in words (names); in
    small multiples, one panel a cell, when there are more cells than one picture holds."""
    if len(grid) > plots.MAX_PANELS:
        print(f"plot skipped: {len(grid)} cells are more than one picture shows "
              f"({plots.MAX_PANELS}); the table and summary hold them all")
        return
    draw = plots.curves if len(grid) <= 8 else plots.small_multiples
    if draw(os.path.join(out, 'losses.png'), curves(runs, dict(zip(grid, names(grid, design))))):
        print(f"plot: {os.path.relpath(out)}/losses.png")
    else:
        print(f"plot skipped: matplotlib is not installed; {plots.GET_MATPLOTLIB} to get losses.png")


def curves(runs, name_of=None):
    """{a cell's name: [(losses, validation history), ...]}: the curves of the completed
    runs among runs [(cell, run folder)], by cell; its name name_of[cell], or the cell in words."""
    groups = {}
    for cell, run_dir in runs:
        m = records.read_run(run_dir)
        if m['status'] == 'completed':
            groups.setdefault((name_of or {}).get(cell) or cell_name(cell), []).append((m['losses'], m['val_history']))
    return groups


