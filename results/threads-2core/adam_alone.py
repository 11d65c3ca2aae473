"""adam_alone.py REPO: tensorgpt's AdamW kernel on 10.7M float32 weights alone (outside a step), at 1
and 2 numba threads, median of 15 calls."""
import sys, time, statistics, numpy as np, numba
sys.path.insert(0, sys.argv[1])
import tensorgpt as tg
n = 10_700_000
p = np.random.rand(n).astype(np.float32); g = np.random.rand(n).astype(np.float32); m = np.zeros(n); v = np.zeros(n)
for th in (1, 2, 1, 2):
    numba.set_num_threads(th)
    ts = []
    for _ in range(15):
        t = time.perf_counter(); tg.adam_update_kernel(p, g, m, v, 1e-3, 0.9, 0.99, 1e-8, 0.1, 0.01, 1.0, 1.0); ts.append(time.perf_counter() - t)
    print(numba.threading_layer(), th, f"{statistics.median(ts)*1e3:.2f} ms")
