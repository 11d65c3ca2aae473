"""Issue 35's tokenizer speed: bpe.py against rustbpe (training, Rust, on every core) and
tiktoken (encoding, with the same ranks), and against its own Part I (minbpe's algorithm),
on tinyshakespeare, taking turns, medians of 5; training's peak memory, in a fresh process.

Run from the repository root with the test extra installed (rustbpe, tiktoken), the BLAS pin
removed as every speed figure here (it does not touch these, but the record says so):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python results/issue35-bpe-speed/measure.py
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
# Part I, minbpe's algorithm (a pass over every chunk a merge), on a tenth of the text
part = text[:len(text) // 10]
slow_train = clock(lambda: bpe.train([part], 20)) / 20 / (len(part.encode()) / 1e6)  # s a merge per MB
fast_train = out['train_4096']['ours_s'] / 3840 / mb
slow_encode = clock(lambda: bpe.encode(part, merges[:512])) / (len(part.encode()) / 1e6)  # s per MB
fast_encode = out['encode_4096']['ours_s'] / mb
out['part_one'] = dict(train_s_per_merge_per_mb=slow_train, encode_s_per_mb_512=slow_encode,
                       train_speedup=slow_train / fast_train, encode_speedup=slow_encode / fast_encode)
rows.append(f"| Part I train (minbpe's way), a merge per MB | {fast_train * 1e3:.3f} ms | "
            f"Part I {slow_train:.3f} s | {slow_train / fast_train:.0f}× |")
rows.append(f"| Part I encode, per MB | {fast_encode:.3f} s (vocab 4096) | Part I {slow_encode:.1f} s "
            f"(vocab 768) | {slow_encode / fast_encode:.0f}× |")
# memory: the rise of a fresh process's peak RSS while training at 4096 (compiled already)
probe = ("import resource, bpe, data; t = open(data.SHAKESPEARE).read(); bpe.train_fast(['ab'], 1); "
         "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; bpe.train_fast([t], 3840); "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
rise_mb = int(subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True,
                             env=dict(os.environ, PYTHONPATH=os.getcwd())).stdout) / 1024
out['train_4096_peak_rss_rise_mb'] = rise_mb
out['text_mb'] = mb
cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')), '?')
out['machine'] = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
                      rustbpe=getattr(rustbpe, '__version__', '?'), tiktoken=tiktoken.__version__)
md = [f"# bpe.py's speed, {time.strftime('%Y-%m-%d')}", '',
      f"tinyshakespeare ({mb:.2f} MB), GPT-4's pattern; medians of 5, taking turns; {cpu}, "
      f"{os.cpu_count()} cores (rustbpe and tiktoken use what they use; bpe.py one thread). "
      f"Made by `{' '.join(['python', os.path.relpath(__file__)])}`.", '',
      '| what | bpe.py | against | bpe.py\'s speed, times |', '| --- | --- | --- | --- |', *rows, '',
      f"Training at vocab 4096 raises the process's peak memory by {rise_mb:.1f} MB: "
      f"{rise_mb / mb:.1f}× the text's {mb:.2f} MB.", '']
open(os.path.join(HERE, 'results.md'), 'w').write('\n'.join(md))
open(os.path.join(HERE, 'results.json'), 'w').write(json.dumps(out, indent=2) + '\n')
print('\n'.join(md))
