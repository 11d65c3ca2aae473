"""steps.py REPO CFG THREADS STEPS [prof]: median ms a training step of tensorgpt in REPO at config A, B or C
(the first 300k characters of Shakespeare), or its cProfile with prof. BLAS=N: BLAS threads apart."""
import sys, time, random, statistics, os
repo, cfg, threads, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, repo)
import numpy as np, numba
from threadpoolctl import threadpool_limits
import tensorgpt as tg
numba.set_num_threads(threads)
threadpool_limits(int(os.environ.get("BLAS", threads)))
text = open(os.path.join(repo, 'tinyshakespeare.txt')).read()[:300000]
ids = np.array([ord(c) % 65 for c in text])
E, H, L, T, B = dict(A=(128, 4, 4, 64, 12), B=(128, 4, 4, 256, 8), C=(384, 6, 6, 256, 8))[cfg]
model = tg.GPT(tg.GPTConfig(65, n_embd=E, n_head=H, n_layer=L, block_size=T, tie_lm_head=True, input_rmsnorm=True), random.Random(0))
rng = np.random.default_rng(0)
def batch(step):
    o = rng.integers(0, len(ids) - T - 1, B)
    return np.stack([ids[i:i + T + 1] for i in o])
times = []
gen = tg.train(model, batch, steps + 3, lr=1e-3)
t = time.perf_counter()
if len(sys.argv) > 5:
    import cProfile, pstats
    for _ in range(3): next(gen)
    pr = cProfile.Profile(); pr.enable()
    for _ in range(steps): next(gen)
    pr.disable(); pstats.Stats(pr).sort_stats('tottime').print_stats(25)
else:
    for s in gen:
        now = time.perf_counter(); times.append(now - t); t = now
    ms = statistics.median(times[3:]) * 1e3
    print(f"{cfg} t{threads} {repo}: {ms:.2f} ms/step {B * T / ms * 1e3:.0f} tok/s")
