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
from microgpt_lab import ablation, efficiency, records, settings, training
from microgpt_lab.records import UserError

TORCH_REF = os.path.join(records.ROOT, '..', 'shared', 'bench', 'torch_ref.py')


def time_ours(cfg, mode, batch_size, d, steps, warmup):
    """One fresh run of warmup + steps steps on the run's data d (training.run_data):
    (steps/s, tokens/s) over the last `steps`."""
    run_cfg = dict(cfg, mode=mode, batch_size=batch_size, steps=warmup + steps,
                   dtype=cfg['dtype'] if mode == 'tensor' else 'float64')
    rng = random.Random(cfg['seed'])
    model = training.build_model(run_cfg, d.tok.vocab_size, rng)
    tokens, t0 = 0, time.perf_counter()
    for step, _, n in training.model_lib(mode).train(
            model, training.batches(run_cfg, d, rng), warmup + steps, lr=cfg['lr'],
            **training.train_kwargs(run_cfg)):
        if step == warmup:  # the timed steps begin after this one
            tokens, t0 = 0, time.perf_counter()
        else:
            tokens += n
    dt = time.perf_counter() - t0
    return steps / dt, tokens / dt


def time_torch(cfg, batch_size, steps, warmup):
    """The same, in PyTorch: torch_ref.py prints its figures as one JSON line."""
    cmd = [cfg['torch'], TORCH_REF, '--data', cfg['data'], '--batch-size', str(batch_size),
           '--steps', str(warmup + steps), '--warmup', str(warmup), '--threads', str(cfg['threads']),
           '--dtype', cfg['dtype'], '--n-embd', str(cfg['n_embd']), '--n-head', str(cfg['n_head']),
           '--n-layer', str(cfg['n_layer']), '--block-size', str(cfg['block_size']),
           '--lr', str(cfg['lr']), '--seed', str(cfg['seed'])]
    cmd += ['--tie'] * cfg['tie_lm_head'] + ['--no-input-rmsnorm'] * (not cfg['input_rmsnorm'])
    cmd += ['--init-std', str(cfg['init_std'])] + ['--text'] * (cfg['data_format'] == 'text')
    p = subprocess.run(cmd, capture_output=True, text=True)
    try:
        result = json.loads(p.stdout.strip().splitlines()[-1])
        return float(result['steps_per_s']), float(result['tokens_per_s'])
    except (IndexError, ValueError, KeyError, TypeError):
        why = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ['no output'])[-1]
        raise UserError(f"torch_ref.py with {cfg['torch']} failed: {why}") from None


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
                    return (step - first) / dt, tokens / dt
        finally:
            p.kill()
            p.wait()
        why = (p.stderr.read().strip().splitlines() or ['it printed no step lines'])[-1]
        raise UserError(f"the reference script {cfg['reference']} failed: {why}")


def summarize(timings):
    """{(mode, batch): [(steps/s, tokens/s), ...]} -> a row per contender: medians and ranges."""
    rows = []
    for (mode, b), ts in timings.items():
        sps, tps = [t[0] for t in ts], [t[1] for t in ts]
        rows.append(dict(mode=mode, batch_size=b, steps_per_s=statistics.median(sps),
                         steps_per_s_range=[min(sps), max(sps)],
                         tokens_per_s=statistics.median(tps), tokens_per_s_range=[min(tps), max(tps)]))
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
    for (mode, b), tps in by.items():  # a choice's cost: its blocks against the reference's
        if mode.startswith('tensor '):
            out[f"{mode} / tensor at batch {b}, tokens/s"] = tps / by[('tensor', b)]
    return out


def share(x):
    return f"{x:.0%}" if x >= 0.01 else f"{x:.2%}"


def markdown(rows, ratio, warmup_s, flops=None, peaks=None):
    md = ['| mode | batch | steps/s (median) | range | tokens/s (median) | range | model GFLOP/s '
          '| of the matmul peak |', '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in rows:
        gflops = f"{r['gflops_per_s']:.1f}" if 'gflops_per_s' in r else 'n/a'
        md.append(f"| {r['mode']} | {r['batch_size']} | {r['steps_per_s']:.1f} | "
                  f"{r['steps_per_s_range'][0]:.1f}–{r['steps_per_s_range'][1]:.1f} | "
                  f"{r['tokens_per_s']:.0f} | {r['tokens_per_s_range'][0]:.0f}–"
                  f"{r['tokens_per_s_range'][1]:.0f} | {gflops} | "
                  f"{share(r['share_of_peak']) if 'share_of_peak' in r else 'n/a'} |")
    md += [''] + [f"- {k}: **{v:.2f}×**" if '=' in k.split(' / ')[0] else f"- {k}: **{v:.1f}×**"
                  for k, v in ratio.items()]  # a choice's cost, to the percent
    if flops:
        md += [f"- model FLOPs per token trained on: {flops:,.0f} (6 (12 L C² + V C) + 12 L C t: "
               "the matrix products of a step, forward and backward)"]
    if peaks:
        md += ["- matmul peak at the model's shapes, measured in this run (a step's weight "
               "products alone, NumPy's BLAS, median of the repeats' best): " + '; '.join(
                   f"batch {b}: {p:.0f} GFLOP/s" for b, p in peaks.items())]
    md += [f"- numba warm-up (compile or cache load), not timed: {warmup_s:.1f} s", '']
    return '\n'.join(md)


def bench_command(cfg):
    """`cli.py bench`: time the contenders, print the table, and write bench.json and
    bench.md to a new folder."""
    if cfg['torch'] is not None and not os.path.exists(TORCH_REF):
        raise UserError("--torch needs ../shared/bench/torch_ref.py beside the project")
    if cfg['torch'] is not None and not shutil.which(cfg['torch']):
        raise UserError(f"--torch {cfg['torch']}: no such program")
    choices = [n for n in settings.CHOICES if cfg[n] != settings.SETTINGS[n].default]
    if cfg['torch'] is not None and choices:
        raise UserError(f"--torch times torch_ref.py, the reference's blocks: leave out "
                        f"{settings.option(choices[0])}")
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
    text = cfg['data_format'] == 'text'
    if text and cfg['reference']:
        raise UserError("--reference trains on documents: it cannot take --data-format text")
    start = records.now()
    cfg = dict(cfg, threads=training.use_threads(dict(cfg, mode='tensor')))  # BLAS's and numba's
    pinned = records.kernel_pinned()
    if pinned:
        print(pinned)  # bench's output, beside its figures: an error alone goes to stderr
    contents = data.load(cfg['data'], cfg['data_format'], cfg['fetch'])
    training.check_data(cfg, contents)
    d = training.run_data(cfg, contents, random.Random(cfg['seed']))  # as a run splits it
    steps, warmup, B = cfg['bench_steps'], cfg['warmup'], cfg['batch_size']
    contenders = [('reference', 1)] if cfg['reference'] else []
    contenders += ([('scalar', 1)] if cfg['scalar'] and not text else [])
    contenders += [('tensor', 1), ('tensor', B)]
    if cfg['torch']:
        contenders += [('torch', 1), ('torch', B)]
    varied = {}  # 'tensor norm=layernorm': {'norm': 'layernorm'}, each value alone
    for name, values in cfg.get('vary', []):
        for v in values:
            varied[f"tensor {name.replace('_', '-')}={ablation.shown(name, v)}"] = dict(ablation.pairs(name, v))
    contenders += [(mode, B) for mode in varied]
    contenders = list(dict.fromkeys(contenders))
    out, made = records.new_folder(cfg['out'], 'bench', 'bench', start)
    with records.owned(out, made=made):
        print(f"bench: {steps} timed steps after {warmup} untimed, {cfg['repeats']} repeats, "
              f"{cfg['threads']} threads, {cfg['dtype']} (tensor, torch); n_embd {cfg['n_embd']}, "
              f"n_head {cfg['n_head']}, n_layer {cfg['n_layer']}, block_size {cfg['block_size']}"
              f"{'; text windows (scalar mode trains on documents only)' if text else ''}")
        t0 = time.perf_counter()  # compile (or load from numba's cache) before any timing
        training.model_lib('tensor').warm_up(cfg['dtype'])
        warmup_s = time.perf_counter() - t0
        print(f"warm-up (numba compile or cache load): {warmup_s:.1f} s")
        import numba
        numba_threads = numba.get_num_threads()
        if numba_threads < cfg['threads']:
            print(f"numba runs {numba_threads} threads, the most it has here")
        timings = {c: [] for c in contenders}
        peak_runs = {b: [] for b in dict.fromkeys(b for _, b in contenders)}
        for r in range(cfg['repeats']):
            for b, runs in peak_runs.items():  # the machine's own peak, taking its turn too
                runs.append(efficiency.matmul_peak(
                    cfg, d.tok.vocab_size, efficiency.tokens_per_step(d, dict(cfg, batch_size=b)),
                    cfg['dtype']))
                print(f"repeat {r + 1}: matmul peak at batch {b}'s shapes: {runs[-1]:.0f} GFLOP/s",
                      flush=True)
            for mode, b in contenders:  # taking turns, so that drift hits all alike
                if mode == 'torch':
                    t = time_torch(cfg, b, steps, warmup)
                elif mode == 'reference':
                    t = time_reference(cfg, d.train, steps, warmup)
                elif mode in varied:
                    t = time_ours(dict(cfg, **varied[mode]), 'tensor', b, d, steps, warmup)
                else:
                    t = time_ours(cfg, mode, b, d, steps, warmup)
                timings[(mode, b)].append(t)
                print(f"repeat {r + 1}: {mode:6s} batch {b:3d}: {t[0]:9.1f} steps/s "
                      f"{t[1]:11.0f} tokens/s", flush=True)
        rows = summarize(timings)
        flops = efficiency.flops_per_token(cfg, d.tok.vocab_size, efficiency.mean_keys(d, cfg))
        peaks = {b: statistics.median(runs) for b, runs in peak_runs.items()}
        for r in rows:  # scalar mode runs the same products, one number at a time
            r['gflops_per_s'] = r['tokens_per_s'] * flops / 1e9
            r['share_of_peak'] = r['gflops_per_s'] / peaks[r['batch_size']]
        ratio = ratios(rows, dict.fromkeys((1, B)))
        env = records.environment(cfg['seed'], 'bench', f"numpy+numba {cfg['dtype']}", start)
        env.update(threads=cfg['threads'], numba_threads=numba_threads, torch=cfg['torch'] and subprocess.run(
            [cfg['torch'], '-c', 'import torch; print(torch.__version__)'], capture_output=True,
            text=True).stdout.strip(), openblas_coretype=os.environ.get('OPENBLAS_CORETYPE'),
            kernel_pinned=pinned)
        md = markdown(rows, ratio, warmup_s, flops, peaks)
        records.write_record(out, {
            'bench.md': md,
            'bench.json': records.json_text(dict(
                config={k: cfg[k] for k in ('data', 'data_format', 'seed', 'lr', 'n_embd', 'n_head',
                                            'n_layer', 'block_size', 'tie_lm_head', 'init_std',
                                            'dtype', 'batch_size', 'bench_steps', 'warmup',
                                            'repeats', 'threads', *settings.CHOICES)},
                vary=cfg.get('vary', []),
                data_sha256=data.sha256_of(cfg['data']), results=rows, ratios=ratio,
                flops_per_token=flops, matmul_peak_gflops_per_s={str(b): p for b, p in peaks.items()},
                compile_s=warmup_s, environment=env))})
    print(md)
    print(f"results: {os.path.relpath(out)}/bench.json, bench.md")
    return 0
