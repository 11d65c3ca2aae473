"""
efficiency.py: how much of the machine a run uses. A model's FLOPs per token, and the
machine's own matmul peak, measured at the model's shapes, in the same process.

nanoGPT and llm.c report model FLOP/s against the hardware's peak ("MFU"). A CPU's peak
from its data sheet is far from what BLAS reaches at a small model's shapes, so the peak
here is measured: the FLOP/s of a training step's weight products alone, at the step's own
shapes, dtype and threads, the best of a few tries. A share near 1 means the step runs at
the speed of its matrix products; what is missing is the time of everything else
(attention, norms, activations, Adam, Python).
"""
import time

import numpy as np

from microgpt_lab import models


# ---------------------------------------------------------------------------
# Model FLOPs: the multiply-adds of the matrix products of a training step, 2 FLOPs each, per
# token trained on. Forward, per token: 2 nout nin for each product with a weight (the
# weight table's matrices and head: for the reference, q, k, v, o: 4 C^2 a layer; the MLP:
# 8 C^2; lm_head: V C), and 4 C t per layer for attention (q k^T and att v over the t keys
# the token sees). Backward does twice the forward's products (the gradient of each input and
# of each weight), so a step is 3 times the forward:
#     flops/token = 6 sum(nout nin) + 12 L C t,   t = the mean number of keys a token sees:
# (T + 1) / 2 for windows of T, less for short documents. Norms, activations and softmax are
# left out, as nanoGPT's and llm.c's counts leave them out.
def flops_per_token(cfg, vocab_size, mean_keys):
    products = sum(count * nout * nin for nout, nin, count in weight_shapes(cfg, vocab_size))
    return 6 * products + 12 * cfg['n_layer'] * cfg['n_embd'] * mean_keys


def trained_lengths(d, cfg):
    """The positions trained on of each training document (d: tokens.RunData): its
    first block_size."""
    return [min(cfg['block_size'], len(doc) - 1) for doc in d.train]


def mean_keys(d, cfg):
    """The mean number of keys a trained token attends to: of a text's windows of block_size,
    or of the training documents."""
    if cfg['data_format'] == 'text':
        return (cfg['block_size'] + 1) / 2
    lengths = trained_lengths(d, cfg)
    return sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)


def tokens_per_step(d, cfg):
    """The tokens of a batch: batch_size windows of block_size, or documents of the mean length."""
    if cfg['data_format'] == 'text':
        return cfg['batch_size'] * cfg['block_size']
    lengths = trained_lengths(d, cfg)
    return max(1, round(cfg['batch_size'] * sum(lengths) / len(lengths)))


# ---------------------------------------------------------------------------
# The matmul peak at the model's shapes: a step's weight products, each in the three forms
# that tensorgpt.linear runs (y = x w^T; the input's gradient g w; the weight's g^T x), on
# random arrays of the step's N tokens.
def weight_shapes(cfg, vocab_size):
    """(nout, nin, count): the weight matrices of a step's products, read off the model's
    weight table: each layer's q, k and v as one [3C, C] (as tensorgpt runs them, k and v's
    heads shared out to every head of q first), o, the MLP's two, the value-embedding gates
    where there are some, and the head (wte's shape when tied)."""
    table = models.weight_table(dict(cfg, vocab_size=vocab_size))
    L, (V, C) = cfg['n_layer'], table['wte'].shape
    gates = [w.shape for w in table.values() if w.kind == 've_gate']
    return [(3 * C, C, L), (C, C, L), (4 * C, C, L), (C, 4 * C, L), (V, C, 1)] \
        + [(*shape, len(gates)) for shape in gates[:1]]


def matmul_peak(cfg, vocab_size, n_tokens, dtype='float32', tries=5, least_s=0.002):
    """The GFLOP/s of a step's weight products alone: for each shape, the best of `tries`
    timings (each of at least least_s seconds), weighted by how often a step runs it."""
    rng = np.random.default_rng(0)
    flops = seconds = 0.0
    for nout, nin, count in weight_shapes(cfg, vocab_size):
        x = rng.standard_normal((n_tokens, nin)).astype(dtype)
        w = rng.standard_normal((nout, nin)).astype(dtype)
        g = rng.standard_normal((n_tokens, nout)).astype(dtype)
        def step():
            x @ w.T, g @ w, g.T @ x                    # forward, d input, d weight
        step()
        best, reps = float('inf'), 1
        for _ in range(tries):
            t0 = time.perf_counter()
            for _ in range(reps):
                step()
            dt = time.perf_counter() - t0
            best = min(best, dt / reps)
            reps = max(reps, int(least_s / max(dt / reps, 1e-9)) + 1)
        flops += count * 3 * 2 * n_tokens * nin * nout
        seconds += count * best
    return flops / seconds / 1e9


# ---------------------------------------------------------------------------
# A run's share of the peak, as bench's table gives it
def share(x):
    """A share of the peak as the tables give it: '45%', '0.45%', or 'not credible' (None)."""
    if x is None:
        return 'not credible'
    return f"{x:.0%}" if x >= 0.01 else f"{x:.2%}"


def shares(rows, peaks, measure_again):
    """Each row's share of the matmul peak at its shapes (peaks: {(label, batch): GFLOP/s},
    measured in this run). The model cannot run its products faster than they run alone: a
    share above 1 means the peak was timed while something else took the cores. That peak is
    measured again (measure_again(key): GFLOP/s) and the best kept; a share still above 1 is
    not given (None), and said in a note instead: [notes]."""
    key = lambda r: (r['mode'].partition(' ')[2], r['batch_size'])
    for k in dict.fromkeys(key(r) for r in rows if r['gflops_per_s'] > peaks[key(r)]):
        peaks[k] = max(peaks[k], measure_again(k))  # each peak once, before any share
    notes = []
    for r in rows:
        r['matmul_peak_gflops_per_s'] = peaks[key(r)]
        x = r['gflops_per_s'] / peaks[key(r)]
        r['share_of_peak'] = x if x <= 1 else None
        if x > 1:
            notes.append(f"{r['mode']} at batch {r['batch_size']}: its share of the matmul peak "
                         f"is not credible ({r['gflops_per_s']:.0f} GFLOP/s against a peak of "
                         f"{peaks[key(r)]:.0f}, measured again): the peak's products were timed "
                         "while something else ran on the cores (run bench on a quiet machine)"
                         + (", or PyTorch's own BLAS outruns NumPy's" if r['mode'].startswith('torch') else ''))
    return notes
