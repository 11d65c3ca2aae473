"""Step time of tensorgpt.py before issue 34's redesign (e0f114a) and after it, in one
process, the two taking turns 5 steps at a time, ROUNDS times each, at configs A (4 layers,
n_embd 128, block 64, batch 12), B (block 256, batch 8), C (6 layers, n_embd 384, 6 heads,
block 256, batch 8), and A with nanochat's blocks (rope, QK-norm and scale, value
embeddings, residual scalars, relu², softcap: the choices now built of general ops), all on
Shakespeare's first 300,000 bytes with AdamW. The same weights, data and draws in both.
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python steps.py BEFORE/tensorgpt.py AFTER/tensorgpt.py THREADS [ROUNDS [CONFIG,...]]"""
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
    sys.modules[name] = module  # (a dataclass looks its module up)
    spec.loader.exec_module(module)
    return module


before, after, threads = load(sys.argv[1], 'before'), load(sys.argv[2], 'after'), int(sys.argv[3])
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 20
threadpoolctl.threadpool_limits(threads)
after.configure_process()
import numba  # noqa: E402
numba.set_num_threads(threads)
print(threadpoolctl.threadpool_info()[0].get('architecture'), threadpoolctl.threadpool_info()[0].get('internal_api'))
text = np.frombuffer(open(sys.argv[2].replace('tensorgpt.py', 'tinyshakespeare.txt'), 'rb').read()[:300000],
                     np.uint8) % 65
NANOCHAT = dict(position='rope', rope_base=100000.0, qk_norm=True, qk_scale=1.2, value_embeddings=True,
                residual_scalars=True, activation='relu2', final_norm=True, softcap=15.0, norm_eps=2.0 ** -23)
CONFIGS = dict(A=(dict(n_embd=128, n_head=4, n_layer=4, block_size=64), 12),
               B=(dict(n_embd=128, n_head=4, n_layer=4, block_size=256), 8),
               C=(dict(n_embd=384, n_head=6, n_layer=6, block_size=256), 8),
               A_nanochat=(dict(n_embd=128, n_head=4, n_layer=4, block_size=64, **NANOCHAT), 12),
               A_qk_norm=(dict(n_embd=128, n_head=4, n_layer=4, block_size=64, qk_norm=True), 12),
               A_value_embeddings=(dict(n_embd=128, n_head=4, n_layer=4, block_size=64, value_embeddings=True), 12),
               A_residual_scalars=(dict(n_embd=128, n_head=4, n_layer=4, block_size=64, residual_scalars=True), 12))
for name, (cfg, batch) in CONFIGS.items():
    if len(sys.argv) > 5 and name not in sys.argv[5].split(','):
        continue
    steps = {}
    for code, m in (('before', before), ('after', after)):
        model = m.GPT(m.GPTConfig(65, **cfg), random.Random(3))
        rng, T = random.Random(0), cfg['block_size']
        windows = lambda step, rng=rng, T=T: np.stack([text[o:o + T + 1] for o in
                                                       [rng.randrange(len(text) - T - 2) for _ in range(batch)]])
        steps[code] = m.train(model, windows, 10 ** 6, lr=1e-3)
        for _ in range(3):
            next(steps[code])  # compiled, warm
    times = {code: [] for code in steps}
    for _ in range(rounds):
        for code, run in steps.items():
            t0 = time.perf_counter()
            for _ in range(5):
                next(run)
            times[code].append((time.perf_counter() - t0) / 5)
    b, a = statistics.median(times['before']), statistics.median(times['after'])
    print(f"{name}: before {b * 1e3:.2f} ms a step, after {a * 1e3:.2f} ms (medians of {rounds}); "
          f"after / before {a / b:.3f}; best {min(times['after']) / min(times['before']):.3f}", flush=True)
