"""Muon's update alone (tensorgpt.muon_update on each block matrix), in float32 and in
float64, at nanoGPT's CPU config's shapes (n_embd 128, 4 layers: q, k, v, o [128, 128],
mlp_fc1 [512, 128], mlp_fc2 [128, 512]). Taking turns, median of 7 rounds of 20 steps.
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python results/muon-step-dtype/measure.py"""
import os, statistics, sys, time
import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))
import tensorgpt as tg
from microgpt_lab import provenance
from threadpoolctl import threadpool_info

shapes = [(128, 128)] * 4 + [(512, 128), (128, 512)]
rng = np.random.default_rng(0)
state = {dt: [[rng.standard_normal(s).astype(dt) * 0.02 for _ in range(4)] for s in shapes * 4]
         for dt in (np.float32, np.float64)}  # p, g, m, v per matrix


def steps(dt, n=20):
    t = time.perf_counter()
    for _ in range(n):
        for p, g, m, v in state[dt]:
            g[...] = p  # any gradient: the work does not depend on its values
            v[...] = np.abs(v)
            tg.muon_update(p, g, m, v, 0.01, 0.95, 0.9, 0.0)
    return (time.perf_counter() - t) / n * 1e3


for dt in state:
    steps(dt, 3)  # warm
times = {dt: [] for dt in state}
for _ in range(7):
    for dt in state:
        times[dt].append(steps(dt))
blas = [i for i in threadpool_info() if i['user_api'] == 'blas'][0]
print(f"cpu: {provenance.cpu_model()} ({provenance.cpu_id()}), {os.cpu_count()} cores; BLAS {blas['internal_api']} "
      f"{blas['version']} {blas['architecture']}, {blas['num_threads']} threads")
for dt, ts in times.items():
    print(f"{np.dtype(dt).name}: {statistics.median(ts):.1f} ms a step (median of 7; range {min(ts):.1f}-{max(ts):.1f})")
print(f"float64 / float32: {statistics.median(times[np.float64]) / statistics.median(times[np.float32]):.2f}x")
