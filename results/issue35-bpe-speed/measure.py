"""Issue 35's tokenizer speed: bpe.py against rustbpe (training, Rust, on every core) and
tiktoken (encoding, with the same ranks), and against minbpe (its own code, given a checkout
as MINBPE=PATH; else Part I, its algorithm), on tinyshakespeare, taking turns, medians of 5;
training's peak memory, in a fresh process.

Run from the repository root with the test extra installed (rustbpe, tiktoken), the BLAS pin
removed as every speed figure here (it does not touch these, but the record says so):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. MINBPE=/path/to/minbpe python results/issue35-bpe-speed/measure.py
It writes results.md and results.json beside itself.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import rustbpe
import threadpoolctl
import tiktoken

import bpe
import data

HERE = os.path.dirname(os.path.abspath(__file__))
text = open(data.SHAKESPEARE, encoding='utf-8').read()
mb = len(text.encode()) / 1e6
bpe.train_fast([text[:1000]], 5)
bpe.encode_fast(text[:1000], [(32, 116)])                   # numba's compile (or cache load), untimed


def clock(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def turns(*contenders, n=5):
    """Each contender's median seconds, taking turns."""
    times = [[] for _ in contenders]
    for _ in range(n):
        for t, f in zip(times, contenders):
            t.append(clock(f))
    return [statistics.median(t) for t in times]


rows, out = [], {}
for V in (512, 4096):
    ours, rust = turns(lambda: bpe.train_fast([text], V - 256),
                       lambda: rustbpe.Tokenizer().train_from_iterator([text], V))
    out[f"train_{V}"] = dict(ours_s=ours, rustbpe_s=rust, speed_vs_rustbpe=rust / ours)
    rows.append(f"| train, vocab {V} | {ours:.3f} s | rustbpe {rust:.3f} s | {rust / ours:.2f}× |")
merges = bpe.train_fast([text], 4096 - 256)
enc = tiktoken.Encoding('ours', pat_str=bpe.PATTERNS['gpt4'], special_tokens={},
                        mergeable_ranks={t: i for i, t in enumerate(bpe.vocabulary(merges))})
assert enc.encode_ordinary(text) == bpe.encode_fast(text, merges).tolist()
ours, tik = turns(lambda: bpe.encode_fast(text, merges), lambda: enc.encode_ordinary(text))
out['encode_4096'] = dict(ours_s=ours, tiktoken_s=tik, speed_vs_tiktoken=tik / ours)
rows.append(f"| encode, vocab 4096 | {ours:.3f} s | tiktoken {tik:.3f} s | {tik / ours:.2f}× |")
# minbpe's own code (karpathy/minbpe, a checkout named by MINBPE; its RegexTokenizer), else
# Part I, which is its algorithm: training a pass over every chunk a merge, on a tenth of the text
part = text[:len(text) // 10]
part_mb = len(part.encode()) / 1e6
if os.environ.get('MINBPE'):
    sys.path.insert(0, os.environ['MINBPE'])
    from minbpe import RegexTokenizer
    slow_name = 'minbpe ' + subprocess.run(['git', '-C', os.environ['MINBPE'], 'rev-parse', '--short', 'HEAD'],
                                           capture_output=True, text=True).stdout.strip()
    minbpe = RegexTokenizer()
    slow_train = clock(lambda: minbpe.train(part, 256 + 20)) / 20 / part_mb
    minbpe.merges = {pair: 256 + i for i, pair in enumerate(merges)}
    minbpe.vocab = dict(enumerate(bpe.vocabulary(merges)))
    assert minbpe.encode_ordinary(part) == bpe.encode_fast(part, merges).tolist()
    slow_encode = clock(lambda: minbpe.encode_ordinary(part)) / part_mb
else:
    slow_name = "Part I (minbpe's way)"
    slow_train = clock(lambda: bpe.train([part], 20)) / 20 / part_mb           # s a merge per MB
    slow_encode = clock(lambda: bpe.encode(part, merges)) / part_mb           # s per MB
fast_train = out['train_4096']['ours_s'] / 3840 / mb
fast_encode = out['encode_4096']['ours_s'] / mb
out['slow'] = dict(name=slow_name, train_s_per_merge_per_mb=slow_train, encode_s_per_mb=slow_encode,
                   train_speedup=slow_train / fast_train, encode_speedup=slow_encode / fast_encode)
rows.append(f"| train, a merge per MB (vocab 4096) | {fast_train * 1e3:.3f} ms | {slow_name} {slow_train:.3f} s | "
            f"{slow_train / fast_train:.0f}× |")
rows.append(f"| encode, per MB (vocab 4096) | {fast_encode:.3f} s | {slow_name} {slow_encode:.2f} s "
            f"| {slow_encode / fast_encode:.0f}× |")
# memory: the rise of a fresh process's peak RSS while training at 4096 (compiled already)
# (the peak reset just before, as a run resets it: provenance.reset_peak_memory; in MB)
probe = ("import bpe, data; from microgpt_lab import provenance as p; t = open(data.SHAKESPEARE).read(); "
         "bpe.train_fast(['ab'], 1); p.reset_peak_memory(); before = p.peak_memory_mb(); "
         "bpe.train_fast([t], 3840); print(p.peak_memory_mb() - before)")
rise_mb = float(subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True,
                               env=dict(os.environ, PYTHONPATH=os.getcwd())).stdout)
out['train_4096_peak_rss_rise_mb'] = rise_mb
out['text_mb'] = mb
cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')), '?')
blas = [(p['internal_api'], p.get('architecture')) for p in threadpoolctl.threadpool_info()]  # (unused here)
out['machine'] = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(), blas=blas,
                      openblas_coretype=os.environ.get('OPENBLAS_CORETYPE'),
                      rustbpe=getattr(rustbpe, '__version__', '?'), tiktoken=tiktoken.__version__)
md = [f"# bpe.py's speed, {time.strftime('%Y-%m-%d')}", '',
      f"tinyshakespeare ({mb:.2f} MB), GPT-4's pattern; medians of 5, taking turns; {cpu}, "
      f"{os.cpu_count()} cores (rustbpe and tiktoken use what they use; bpe.py one thread); "
      f"OPENBLAS_CORETYPE {os.environ.get('OPENBLAS_CORETYPE') or 'unset'}, BLAS {blas} (no product here uses it). "
      f"Made by `MINBPE=... python {os.path.relpath(__file__)}` (minbpe: a checkout of karpathy/minbpe).", '',
      '| what | bpe.py | against | bpe.py\'s speed, times |', '| --- | --- | --- | --- |', *rows, '',
      f"Training at vocab 4096 raises the process's peak memory by {rise_mb:.1f} MB: "
      f"{rise_mb / mb:.1f}× the text's {mb:.2f} MB.", '']
open(os.path.join(HERE, 'results.md'), 'w').write('\n'.join(md))
open(os.path.join(HERE, 'results.json'), 'w').write(json.dumps(out, indent=2) + '\n')
print('\n'.join(md))
