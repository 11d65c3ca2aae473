"""products_split.py: C's and A's weight products with OpenBLAS at 1 thread, at 2, and cut by rows
between 2 Python threads with OpenBLAS at 1 each (GFLOP/s; and whether the results are equal)."""
import numpy as np, time, statistics
from concurrent.futures import ThreadPoolExecutor
from threadpoolctl import threadpool_limits
rng = np.random.default_rng(0)
for (M, K, N) in [(2048, 384, 1536), (2048, 1536, 384), (768, 128, 512)]:
    x = rng.standard_normal((M, K), dtype=np.float32); W = rng.standard_normal((K, N), dtype=np.float32)
    pool = ThreadPoolExecutor(2)
    def split():
        y = np.empty((M, N), np.float32)
        def part(p): np.matmul(x[M * p // 2:M * (p + 1) // 2], W, out=y[M * p // 2:M * (p + 1) // 2])
        list(pool.map(part, range(2))); return y
    res = {}
    for name in ['blas1', 'blas2', 'pool2']:
        ts = []
        for _ in range(30):
            with threadpool_limits(2 if name == 'blas2' else 1):
                t = time.perf_counter(); y = x @ W if name != 'pool2' else split(); ts.append(time.perf_counter() - t)
        res[name] = y
        print(M, K, N, name, f"{statistics.median(ts)*1e3:.3f} ms", f"{2*M*K*N/statistics.median(ts)/1e9:.0f} GFLOP/s")
    print('pool2==blas1', np.array_equal(res['pool2'], res['blas1']), 'blas2==blas1', np.array_equal(res['blas2'], res['blas1']))
