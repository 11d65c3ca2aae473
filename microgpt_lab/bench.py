"""
bench.py: the speed of scalar mode, tensor mode and PyTorch, measured side by side.

Every contender trains the same model on the same data, seed and settings: scalar mode,
tensor mode at batch 1 and at --batch-size, and optionally PyTorch and the reference script;
with --vary, tensor mode at --batch-size with each varied value alone. Each timed run
is fresh: --warmup untimed steps, then --bench-steps timed ones. The contenders take turns,
--repeats times, so that whatever else the machine is doing slows them alike; the table
gives the median and the range of each, and the ratios of medians. PyTorch (optional, never
a dependency) runs ../shared/bench/torch_ref.py, the same model, with the Python given to
--torch; the reference script (Karpathy's gist, which the user saves) runs unmodified.
"""
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import data
from microgpt_lab import (UserError, efficiency, grid, models, provenance, records, scale,
                          settings, tokens)

TORCH_REF = os.path.join(provenance.ROOT, '..', 'shared', 'bench', 'torch_ref.py')
OURS = (*settings.CHOICES, 'optimizer')  # what torch_ref.py's model and AdamW do not have


def time_ours(cfg, mode, batch_size, d, steps, warmup):
    """One fresh run of warmup + steps steps on the run's data d (tokens.run_data):
    (steps/s, tokens/s) over the last `steps`, and the process's peak memory (MB) during it."""
    run_cfg = dict(cfg, mode=mode, batch_size=batch_size, steps=warmup + steps,
                   dtype=cfg['dtype'] if mode == 'tensor' else 'float64')
    models.use_threads(run_cfg)  # bench --vary threads: each run its own count
    rng = random.Random(cfg['seed'])
    provenance.reset_peak_memory()
    model = models.build(run_cfg, d.tok.vocab_size, rng)
    n_tokens, t0 = 0, time.perf_counter()
    adam = models.optimizer(run_cfg, model)
    for step, _, n in models.train(run_cfg, model, tokens.batches(run_cfg, d, rng), adam):
        if step == warmup:  # the timed steps begin after this one
            n_tokens, t0 = 0, time.perf_counter()
        else:
            n_tokens += n
    dt = time.perf_counter() - t0
    return steps / dt, n_tokens / dt, provenance.peak_memory_mb()


def time_torch(cfg, batch_size, steps, warmup):
    """The same, in PyTorch: torch_ref.py prints its figures as one JSON line; its process's
    peak memory, it says itself as it ends (PEAK_SAID)."""
    cmd = [cfg['torch'], '-c', PEAK_SAID, TORCH_REF, '--data', cfg['data'], '--batch-size', str(batch_size),
           '--steps', str(warmup + steps), '--warmup', str(warmup), '--threads', str(cfg['threads']),
           '--dtype', cfg['dtype'], '--n-embd', str(cfg['n_embd']), '--n-head', str(cfg['n_head']),
           '--n-layer', str(cfg['n_layer']), '--block-size', str(cfg['block_size']),
           '--lr', str(cfg['lr']), '--seed', str(cfg['seed'])]
    cmd += ['--tie'] * cfg['tie_lm_head'] + ['--no-input-rmsnorm'] * (not cfg['input_rmsnorm'])
    cmd += ['--init-std', str(cfg['init_std'])] + ['--text'] * (cfg['data_format'] == 'text')
    p = subprocess.run(cmd, capture_output=True, text=True)
    said = re.findall(r'^peak memory: ([0-9.]+) MB$', p.stderr, re.M)
    stderr = re.sub(r'^peak memory: .*\n?', '', p.stderr, flags=re.M)
    try:
        result = json.loads(p.stdout.strip().splitlines()[-1])
        return float(result['steps_per_s']), float(result['tokens_per_s']), float(said[-1])
    except (IndexError, ValueError, KeyError, TypeError):
        why = (stderr.strip().splitlines() or p.stdout.strip().splitlines() or ['no output'])[-1]
        raise UserError(f"torch_ref.py with {cfg['torch']} failed: {why}") from None


# torch_ref.py run as it is, by a Python that then says the peak resident memory of its own
# process: the kernel's VmHWM (a child's ru_maxrss would count the parent's memory at the fork).
PEAK_SAID = """import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
finally:
    try:
        kb = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
    except (OSError, StopIteration):
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == 'darwin' else 1)
    print(f'peak memory: {kb / 1024:.1f} MB', file=sys.stderr)
"""


def time_reference(cfg, train_tokens, steps, warmup):
    """The reference script itself, which the user saved (it is not ours to ship), run
    unmodified in a temporary folder with the data as its input.txt: timed from its printed
    line of step `warmup` to that of step warmup + steps, then stopped. It draws the same
    documents in the same order as scalar mode (seed 42), so they count the same tokens."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(cfg['data'], os.path.join(folder, 'input.txt'))
        p = subprocess.Popen([sys.executable, '-u', os.path.abspath(cfg['reference'])], cwd=folder,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = first = None
        try:
            for line in p.stdout:
                step = re.match(r'step +(\d+) /', line)
                step = step and int(step.group(1))
                if step and first is None and step >= warmup:  # the first line from warmup on
                    t0, first = time.perf_counter(), step
                elif step and first is not None and step >= warmup + steps:
                    dt = time.perf_counter() - t0
                    tokens = sum(min(cfg['block_size'], len(t) - 1)
                                 for t in train_tokens[first:step])
                    return (step - first) / dt, tokens / dt, None
        finally:
            p.kill()
            p.wait()
        why = (p.stderr.read().strip().splitlines() or ['it printed no step lines'])[-1]
        raise UserError(f"the reference script {cfg['reference']} failed: {why}")


def summarize(timings):
    """{(mode, batch): [(steps/s, tokens/s, peak MB or None), ...]} -> a row per contender:
    medians and ranges, and the highest peak memory."""
    rows = []
    for (mode, b), ts in timings.items():
        sps, tps, mbs = [t[0] for t in ts], [t[1] for t in ts], [t[2] for t in ts if t[2]]
        rows.append(dict(mode=mode, batch_size=b, steps_per_s=statistics.median(sps),
                         steps_per_s_range=[min(sps), max(sps)],
                         tokens_per_s=statistics.median(tps), tokens_per_s_range=[min(tps), max(tps)],
                         peak_memory_mb=max(mbs) if mbs else None))
    return rows


def ratios(rows, batch_sizes):
    """How many times the tokens/s of the other contenders tensor mode makes, by medians:
    above 1, tensor mode is faster."""
    by = {(r['mode'], r['batch_size']): r['tokens_per_s'] for r in rows}
    out = {}
    for b in batch_sizes:
        if ('scalar', 1) in by:
            out[f"tensor batch {b} / scalar, tokens/s"] = by[('tensor', b)] / by[('scalar', 1)]
    if ('reference', 1) in by:
        out["scalar / reference, tokens/s"] = by[('scalar', 1)] / by[('reference', 1)]
    for b in batch_sizes:
        if ('torch', b) in by:
            out[f"tensor / torch at batch {b}, tokens/s"] = by[('tensor', b)] / by[('torch', b)]
    for (mode, b), tps in by.items():  # a varied setting: against PyTorch at the same, or
        kind, _, label = mode.partition(' ')  # else (a choice) its cost against the reference
        if kind == 'tensor' and label and (f"torch {label}", b) in by:
            out[f"{mode} / torch {label} at batch {b}, tokens/s"] = tps / by[(f"torch {label}", b)]
        elif kind == 'tensor' and label:
            out[f"{mode} / tensor at batch {b}, tokens/s"] = tps / by[('tensor', b)]
    return out


def markdown(rows, ratio, warmup_s, flops=None, peaks=None, notes=()):
    md = ['| mode | batch | steps/s (median) | range | tokens/s (median) | range | model GFLOP/s '
          '| of the matmul peak | peak memory (MB) |',
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in rows:
        gflops = f"{r['gflops_per_s']:.1f}" if 'gflops_per_s' in r else 'n/a'
        memory = 'n/a' if r.get('peak_memory_mb') is None else f"{r['peak_memory_mb']:.0f}"
        md.append(f"| {r['mode']} | {r['batch_size']} | {r['steps_per_s']:.1f} | "
                  f"{r['steps_per_s_range'][0]:.1f}–{r['steps_per_s_range'][1]:.1f} | "
                  f"{r['tokens_per_s']:.0f} | {r['tokens_per_s_range'][0]:.0f}–"
                  f"{r['tokens_per_s_range'][1]:.0f} | {gflops} | "
                  f"{efficiency.share(r['share_of_peak']) if 'share_of_peak' in r else 'n/a'} | {memory} |")
    md += [''] + [f"- {k}: **{v:.2f}×**" if '=' in k.split(' / ')[1] else f"- {k}: **{v:.1f}×**"
                  for k, v in ratio.items()]  # a choice's cost, to the percent
    if flops:
        md += [f"- model FLOPs per token trained on: {flops:,.0f} (6 (12 L C² + V C) + 12 L C t: "
               "the matrix products of a step, forward and backward)"]
    if peaks:
        md += ["- matmul peak at the model's shapes, measured in this run (a step's weight "
               "products alone, NumPy's BLAS, median of the repeats' best): " + '; '.join(
                   f"batch {b}: {p:.0f} GFLOP/s" for b, p in peaks.items())]
    md += [f"- {note}" for note in notes]
    md += [f"- numba warm-up (compile or cache load), not timed: {warmup_s:.1f} s", '']
    return '\n'.join(md)


def bench_command(cfg):
    """`cli.py bench`: time the contenders, print the table, and write bench.json and
    bench.md to a new folder."""
    # the options: checked together before anything runs; the thread counts this machine has
    check(cfg)
    start = provenance.now()
    cfg = thread_counts(dict(cfg, threads=models.use_threads(dict(cfg, mode='tensor'))))  # BLAS's and numba's
    pinned = provenance.kernel_pinned()
    if pinned:
        print(pinned)  # bench's output, beside its figures: an error alone goes to stderr
    # the data, split as a run splits it
    contents = data.load(cfg['data'], cfg['data_format'], cfg['fetch'])
    tokens.check_data(cfg, contents)
    d = tokens.run_data(cfg, contents, random.Random(cfg['seed']), data.sha256_of(cfg['data']))
    # the contenders: each a mode at a batch size, and the settings it runs
    contenders, config_of = contenders_of(cfg)
    if cfg['torch']:  # every contender starts before any is timed: PyTorch, one step
        time_torch(cfg, 1, 1, 0)
    out, made = records.new_folder(cfg['out'], 'bench', 'bench', start)
    with records.owned(out, made=made):
        print(f"bench: {cfg['bench_steps']} timed steps after {cfg['warmup']} untimed, {cfg['repeats']} "
              f"repeats, {cfg['threads']} threads, {cfg['dtype']} (tensor, torch); n_embd {cfg['n_embd']}, "
              f"n_head {cfg['n_head']}, n_layer {cfg['n_layer']}, block_size {cfg['block_size']}"
              f"{'; text windows (scalar mode trains on documents only)' if cfg['data_format'] == 'text' else ''}")
        warmup_s = models.warm_up(cfg)  # compile (or load from numba's cache) before any timing
        print(f"warm-up (numba compile or cache load): {warmup_s:.1f} s")
        import numba
        numba_threads = numba.get_num_threads()
        if numba_threads < cfg['threads']:
            print(f"numba runs {numba_threads} threads, the most it has here")
        # the timing: the contenders, and the matmul peak at each one's shapes, taking turns
        shapes = {}  # (label, batch): the settings whose products' peak is measured
        for mode, b in contenders:
            shapes.setdefault((mode.partition(' ')[2], b), dict(config_of(mode), batch_size=b))
        timings, peak_runs = time_all(cfg, d, contenders, config_of, shapes)
        # the figures: medians and ranges, FLOPs, and each one's share of the matmul peak
        rows, peaks, notes = figures(cfg, d, timings, peak_runs, config_of, shapes)
        # the record: bench.md and bench.json, and the scale's pictures
        models.use_threads(dict(cfg, mode='tensor'))  # the record's threads: the base's, not the last run's
        env = provenance.environment(cfg['seed'], 'bench', f"numpy+numba {cfg['dtype']}", start)
        env.update(threads=cfg['threads'], numba_threads=numba_threads, torch=cfg['torch'] and subprocess.run(
            [cfg['torch'], '-c', 'import torch; print(torch.__version__)'], capture_output=True,
            text=True).stdout.strip(), openblas_coretype=os.environ.get('OPENBLAS_CORETYPE'),
            kernel_pinned=pinned)
        md = write_record(out, cfg, d, rows, peaks, notes, warmup_s, env)
    print(md)
    print(f"results: {os.path.relpath(out)}/bench.json, bench.md")
    return 0


def check(cfg):
    """A UserError for the first of bench's options that cannot be timed as given. A setting
    is named as the user gave it: its option, or the recipe's that set it (cfg['set_by'])."""
    named = lambda name: cfg['set_by'].get(name) or settings.option(name)
    for name, values in cfg['vary']:  # a model's settings (the rest bench sets for every
        if name == 'threads':         # contender), or the machine's threads alone
            if None in values:
                raise UserError("bench --vary threads takes thread counts (threads=1,2,4), not auto")
            continue
        if 'threads' in name.split('+'):
            raise UserError("bench --vary threads=N,...: the thread counts alone, not with another setting")
        if any(n not in settings.MODEL + ('optimizer',) for n in name.split('+')):
            raise UserError(f"bench --vary takes the model's settings ({', '.join(map(settings.option, settings.MODEL))}) "
                            f"and --optimizer, not {'/'.join(map(settings.option, name.split('+')))}")
        for v in values:
            settings.check(dict(cfg, **dict(grid.pairs(name, v))), named)
    varied = {n for name, _ in cfg['vary'] for n in name.split('+')}
    for name in ('dropout', 'optimizer'):  # tensor mode's alone
        if (cfg[name] != settings.SETTINGS[name].default or name in varied) and cfg['scalar']:
            raise UserError(f"bench with {named(name)}: scalar mode has no {name}, so give --no-scalar")
    if cfg['torch'] is not None and not os.path.exists(TORCH_REF):
        raise UserError("--torch needs ../shared/bench/torch_ref.py beside the project")
    if cfg['torch'] is not None and not shutil.which(cfg['torch']):
        raise UserError(f"--torch {cfg['torch']}: no such program")
    choices = [n for n in OURS if cfg[n] != settings.SETTINGS[n].default]
    if cfg['torch'] is not None and choices:
        raise UserError(f"--torch times torch_ref.py, the reference's blocks: leave out {named(choices[0])}")
    if cfg['reference']:
        reference_config = dict(n_embd=16, n_head=4, n_layer=1, block_size=16, tie_lm_head=False,
                                input_rmsnorm=True, seed=42, lr=0.01)
        if any(cfg[k] != v for k, v in reference_config.items()) or not cfg['scalar']:
            raise UserError("--reference times the reference's own run: it needs the reference "
                            "config, seed and --lr, with scalar mode to compare")
        if not 1 <= cfg['warmup'] or cfg['warmup'] + cfg['bench_steps'] > 1000:
            raise UserError("--reference: the reference script runs 1000 steps; --warmup must "
                            "be >= 1 and --warmup + --bench-steps <= 1000")
        if not os.path.isfile(cfg['reference']):
            raise UserError(f"--reference {cfg['reference']}: no such file")
        if cfg['data_format'] == 'text':
            raise UserError("--reference trains on documents: it cannot take --data-format text")


def thread_counts(cfg):
    """cfg with --vary threads's counts those this machine has, each once, in order (those
    it has not: said and left out)."""
    cores = os.cpu_count() or 1
    counts = [v for name, values in cfg['vary'] if name == 'threads' for v in values]
    if not counts:
        return cfg
    over = [n for n in counts if n > cores]
    if over:
        print(f"threads={','.join(map(str, over))} left out: this machine has {cores} cores")
    counts = sorted({n for n in counts if n <= cores})
    if not counts:
        raise UserError(f"bench --vary threads: this machine has {cores} cores; give counts up to {cores}")
    return dict(cfg, vary=[(n, v) for n, v in cfg['vary'] if n != 'threads'] + [('threads', counts)])


def contenders_of(cfg):
    """The contenders [(mode, batch)], and config_of(mode): the settings each runs. A
    varied value alone is a mode of its own ('tensor norm=layernorm')."""
    B = cfg['batch_size']
    contenders = [('reference', 1)] if cfg['reference'] else []
    contenders += ([('scalar', 1)] if cfg['scalar'] and cfg['data_format'] != 'text' else [])
    contenders += [('tensor', 1), ('tensor', B)]
    if cfg['torch']:
        contenders += [('torch', 1), ('torch', B)]
    varied = {}  # 'norm=layernorm': {'norm': 'layernorm'}, each value alone
    for name, values in cfg['vary']:
        for v in values:
            if name in scale.SIZES + ('threads',) and v == cfg[name]:
                continue  # the base config's own size or threads: its rows are the base's
            varied[grid.cell_name(((name, v),))] = dict(grid.pairs(name, v))
    for label, change in varied.items():  # a model's size in PyTorch too; its blocks are ours
        contenders += [(f"tensor {label}", B)] + [(f"torch {label}", B)] * (
            bool(cfg['torch']) and not set(change) & set(OURS))
    return list(dict.fromkeys(contenders)), lambda mode: dict(cfg, **varied.get(mode.partition(' ')[2], {}))


def time_all(cfg, d, contenders, config_of, shapes):
    """Time every contender --repeats times, in turns, so that drift hits all alike, each
    turn after the matmul peak at every shape: (timings {contender: [(steps/s, tokens/s,
    peak MB)]}, {shape: [the peak's GFLOP/s]})."""
    timings, peak_runs = {c: [] for c in contenders}, {key: [] for key in shapes}
    for r in range(cfg['repeats']):
        for (label, b), shape in shapes.items():  # the machine's own peak, taking its turn
            models.use_threads(dict(shape, mode='tensor'))
            peak_runs[(label, b)].append(efficiency.matmul_peak(
                shape, d.tok.vocab_size, efficiency.tokens_per_step(d, shape), cfg['dtype']))
            print(f"repeat {r + 1}: matmul peak at the shapes of {label or 'the model'}, "
                  f"batch {b}: {peak_runs[(label, b)][-1]:.0f} GFLOP/s", flush=True)
        for mode, b in contenders:
            kind = mode.partition(' ')[0]
            if kind == 'torch':
                t = time_torch(config_of(mode), b, cfg['bench_steps'], cfg['warmup'])
            elif kind == 'reference':
                t = time_reference(cfg, d.train, cfg['bench_steps'], cfg['warmup'])
            else:
                t = time_ours(config_of(mode), kind, b, d, cfg['bench_steps'], cfg['warmup'])
            timings[(mode, b)].append(t)
            print(f"repeat {r + 1}: {mode:6s} batch {b:3d}: {t[0]:9.1f} steps/s "
                  f"{t[1]:11.0f} tokens/s" + (f" {t[2]:7.0f} MB" if t[2] else ''), flush=True)
    return timings, peak_runs


def figures(cfg, d, timings, peak_runs, config_of, shapes):
    """The table's rows (summarize) with each one's FLOPs, parameters and share of the
    matmul peak; the peaks, {shape: median GFLOP/s}; and the notes on shares not credible."""
    rows = summarize(timings)
    peaks = {key: statistics.median(runs) for key, runs in peak_runs.items()}
    for r in rows:  # scalar mode runs the same products, one number at a time
        c = config_of(r['mode'])
        r['flops_per_token'] = efficiency.flops_per_token(c, d.tok.vocab_size, efficiency.mean_keys(d, c))
        r['gflops_per_s'] = r['tokens_per_s'] * r['flops_per_token'] / 1e9
        r['num_params'] = models.n_params(c, d.tok.vocab_size)

    def measure_again(key):
        print(f"a share of the matmul peak above 100% at the shapes of {key[0] or 'the model'}, "
              f"batch {key[1]}: measuring the peak again", flush=True)
        models.use_threads(dict(shapes[key], mode='tensor'))
        return max(peak_runs[key] + [efficiency.matmul_peak(
            shapes[key], d.tok.vocab_size, efficiency.tokens_per_step(d, shapes[key]), cfg['dtype'], tries=25)])
    return rows, peaks, efficiency.shares(rows, peaks, measure_again)


def write_record(out, cfg, d, rows, peaks, notes, warmup_s, env):
    """bench.md (returned) and bench.json in out; scale.png and scaling.png beside them
    when the sizes or the threads vary."""
    flops = efficiency.flops_per_token(cfg, d.tok.vocab_size, efficiency.mean_keys(d, cfg))
    ratio = ratios(rows, dict.fromkeys((1, cfg['batch_size'])))
    base_peaks = {b: p for (label, b), p in peaks.items() if not label}
    md = markdown(rows, ratio, warmup_s, flops, base_peaks, notes)
    sizes = [name for name, _ in cfg['vary'] if name in scale.SIZES]
    threads = any(name == 'threads' for name, _ in cfg['vary'])
    if sizes:
        md += '\n' + scale.scale_table(rows, cfg, sizes)
    if threads:
        md += '\n' + scale.scaling_table(rows, cfg)
    records.write_record(out, {
        'bench.md': md,
        'bench.json': records.json_text(dict(
            config={k: cfg[k] for k in ('data', 'data_format', 'seed', 'lr', 'n_embd', 'n_head',
                                        'n_layer', 'block_size', 'tie_lm_head', 'init_std',
                                        'dtype', 'batch_size', 'bench_steps', 'warmup',
                                        'repeats', 'threads', *OURS, 'muon_lr', 'init', 'recipe')},
            vary=cfg['vary'], data_sha256=data.sha256_of(cfg['data']), results=rows, ratios=ratio,
            flops_per_token=flops, matmul_peak_gflops_per_s={str(b): p for b, p in base_peaks.items()},
            compile_s=warmup_s, environment=env))})
    if sizes:
        scale.draw_scale(out, rows, cfg, sizes)
    if threads:
        scale.draw_scale(out, rows, cfg, ['threads'], 'scaling.png')
    return md
