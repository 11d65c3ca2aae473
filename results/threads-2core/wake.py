"""wake.py: the cost of one numba parallel region (a prange of 1, 2 or 64 pieces of tiny work)
against none, at 1 and 2 threads; run with NUMBA_THREADING_LAYER=workqueue or omp."""
import numba, numpy as np, time
from numba import njit, prange
@njit
def _twin(x, y, lo, hi):
    for i in range(lo, hi):
        y[i] = x[i] * 2.0
@njit(parallel=True)
def par(x, y, k):
    n = x.size
    if k == 1:
        _twin(x, y, 0, n)
    else:
        for p in prange(k):
            _twin(x, y, n * p // k, n * (p + 1) // k)
x = np.ones(1000); y = np.empty_like(x)
for th in (1, 2):
    numba.set_num_threads(th)
    for k in (1, 2, 64):
        par(x, y, k)
        t = time.perf_counter()
        for _ in range(2000): par(x, y, k)
        print(th, k, (time.perf_counter() - t) / 2000 * 1e6, 'us')
