"""Step time of tensorgpt.py before the refactor (58f6e96) and after it, in one process,
taking turns 10 steps at a time, 30 times each: config A (4 layers, n_embd 128, block 64,
batch 12) on Shakespeare's first 200,000 bytes. The same weights, data and draws in both.
    python steps.py BEFORE/tensorgpt.py AFTER/tensorgpt.py THREADS"""
import importlib.util
import random
import statistics
import sys
import time

import numpy as np
import threadpoolctl


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (the dataclass of the new one looks its module up)
    spec.loader.exec_module(module)
    return module


before, after, threads = load(sys.argv[1], 'before'), load(sys.argv[2], 'after'), int(sys.argv[3])
threadpoolctl.threadpool_limits(threads)
before.configure_process()
import numba  # noqa: E402
numba.set_num_threads(threads)
text = np.frombuffer(open(sys.argv[2].replace('tensorgpt.py', 'tinyshakespeare.txt'), 'rb').read()[:200000],
                     np.uint8) % 65
cfg = dict(n_embd=128, n_head=4, n_layer=4, block_size=64)
steps = {}
for code, model in (('before', before.GPT(65, random.Random(3), **cfg)),
                    ('after', after.GPT(after.GPTConfig(65, **cfg), random.Random(3)))):
    rng = random.Random(0)
    windows = lambda step, rng=rng: np.stack([text[o:o + 65] for o in
                                              [rng.randrange(len(text) - 66) for _ in range(12)]])
    steps[code] = getattr(sys.modules[code], 'train')(model, windows, 10 ** 6, lr=1e-3)
    for _ in range(5):
        next(steps[code])  # compiled, warm
times = {code: [] for code in steps}
for _ in range(30):
    for code, run in steps.items():
        t0 = time.perf_counter()
        for _ in range(10):
            next(run)
        times[code].append((time.perf_counter() - t0) / 10)
for code, ts in times.items():
    print(f"{code}: median {statistics.median(ts) * 1e3:.2f} ms a step, best {min(ts) * 1e3:.2f} ms")
print(f"after / before, threads {threads}: median {statistics.median(times['after']) / statistics.median(times['before']):.3f}, "
      f"best {min(times['after']) / min(times['before']):.3f}")
