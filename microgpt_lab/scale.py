"""
scale.py: bench's scale. With --vary over a model's sizes, a table of each size beside the
base config, ours and PyTorch's, and its picture (scale.png, with matplotlib); with --vary
threads, the speed-up at each thread count (scaling.png).
"""
import os

from microgpt_lab import efficiency, grid, plots

SIZES = ('n_embd', 'n_layer', 'n_head', 'block_size')


def scale_points(rows, cfg, sizes):
    """[(setting, value, row of ours, row of PyTorch's or None)], for each varied size with
    the base config's own value among them, in order."""
    by = {r['mode']: r for r in rows if r['batch_size'] == cfg['batch_size']}
    points = []
    for name, values in cfg['vary']:
        if name not in sizes:
            continue
        for v in sorted(set(values) | {cfg[name]}):
            label = '' if v == cfg[name] else f" {grid.cell_name(((name, v),))}"
            points.append((name, v, by[f"tensor{label}"], by.get(f"torch{label}")))
    return points


def scale_table(rows, cfg, sizes):
    md = ['Scale: each size alone, the rest as the base config, batch '
          f"{cfg['batch_size']} (peak memory: each process's own, resident)", '',
          '| setting | value | params | tokens/s, ours | tokens/s, PyTorch | ours / PyTorch | '
          'model GFLOP/s, ours | of the matmul peak | peak MB, ours | peak MB, PyTorch |',
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for name, v, ours, torch in scale_points(rows, cfg, sizes):
        theirs = lambda key, form: form.format(torch[key]) if torch and torch.get(key) else 'n/a'
        ratio = f"**{ours['tokens_per_s'] / torch['tokens_per_s']:.2f}×**" if torch else 'n/a'
        md.append(f"| {name} | {v} | {ours['num_params'] / 1e6:.2f}M | {ours['tokens_per_s']:,.0f} | "
                  f"{theirs('tokens_per_s', '{:,.0f}')} | {ratio} | {ours['gflops_per_s']:.0f} | "
                  f"{efficiency.share(ours['share_of_peak'])} | {ours['peak_memory_mb']:.0f} | "
                  f"{theirs('peak_memory_mb', '{:.0f}')} |")
    return '\n'.join(md) + '\n'


def scaling_table(rows, cfg):
    """bench --vary threads: tokens/s at each thread count, ours and PyTorch's, with each
    one's share of the matmul peak at that count and its speed-up over the fewest threads."""
    points = scale_points(rows, cfg, ('threads',))
    fewest, ours1, torch1 = points[0][1], points[0][2], points[0][3]
    speedup = lambda row, first: f"{row['tokens_per_s'] / first['tokens_per_s']:.2f}×" if row and first else 'n/a'
    md = [f"Scaling: tokens/s at each thread count (BLAS's, numba's and PyTorch's), batch "
          f"{cfg['batch_size']}; speed-up over {fewest} thread{'s' * (fewest > 1)}", '',
          '| threads | tokens/s, ours | tokens/s, PyTorch | ours / PyTorch | of the matmul peak, '
          f'ours | of the matmul peak, PyTorch | matmul peak GFLOP/s | speed-up over {fewest}, ours | '
          f'speed-up over {fewest}, PyTorch |',
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for _, n, ours, torch in points:
        md.append(f"| {n} | {ours['tokens_per_s']:,.0f} | "
                  f"{format(torch['tokens_per_s'], ',.0f') if torch else 'n/a'} | "
                  f"{'**%.2f×**' % (ours['tokens_per_s'] / torch['tokens_per_s']) if torch else 'n/a'} | "
                  f"{efficiency.share(ours['share_of_peak'])} | "
                  f"{efficiency.share(torch['share_of_peak']) if torch else 'n/a'} | "
                  f"{ours['matmul_peak_gflops_per_s']:.0f} | {speedup(ours, ours1)} | {speedup(torch, torch1)} |")
    return '\n'.join(md) + '\n'


def draw_scale(out, rows, cfg, sizes, png='scale.png'):
    """scale.png (scaling.png, for threads) beside the record, when matplotlib is there: a
    picture, not part of it."""
    panels = []
    for name in sizes:
        points = [p for p in scale_points(rows, cfg, sizes) if p[0] == name]
        with_torch = all(torch for *_, torch in points)
        series = lambda key: dict([('ours', [ours[key] for _, _, ours, _ in points])] + (
            [('PyTorch', [torch[key] for *_, torch in points])] if with_torch else []))
        panels.append((name, [v for _, v, _, _ in points], series('tokens_per_s'),
                       series('peak_memory_mb')))
    threads = '' if 'threads' in sizes else f", {cfg['threads']} threads"  # (else an axis)
    title = (f"{os.path.basename(cfg['data'])}: n_embd {cfg['n_embd']}, n_layer {cfg['n_layer']}, "
             f"block {cfg['block_size']}, batch {cfg['batch_size']}{threads}")
    try:
        if not plots.scale(os.path.join(out, png), panels, title):
            print(f"{png} skipped: matplotlib is not installed ({plots.GET_MATPLOTLIB})")
    except Exception as e:  # whatever fails in the picture, the record stands
        print(f"{png} not written: {getattr(e, 'strerror', None) or str(e).strip()[:200]}")
