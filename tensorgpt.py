"""
tensorgpt.py: the microgpt model on NumPy arrays, batched and fast.

The same GPT as microgpt.py, weight for weight, but each value of the autograd is a whole
array (`Tensor`) instead of a single number, and a batch of documents (or windows of a
text) goes through at once. With dtype='float64' and batch_size=1 it trains as microgpt.py
does and prints the reference's numbers; with the default float32 and larger batches it
trains much faster.

A batch is packed: its documents' positions back to back in one array of N rows, rather than
padded to the longest and masked. Everything but attention works position by position, and
attention keeps to each document, so the result is the same, with no work on padding.

The file is in two parts. Part I is the GPT, on NumPy alone, in the order a learner wants
it: the hyperparameters, `Tensor` and the chain rule, each op with its backward below its
forward, the model (its settings in one `GPTConfig`, its architecture choices, one `blocks`
path for training and for sampling with a KV cache), AdamW, the learning-rate schedule,
training, and sampling (documents, and a text's continuation). Part I runs alone: delete
Part II and the file still trains and samples, more slowly. Part II is speed: numba kernels for Part I's functions, in
the order of the ops (matrix products stay with NumPy's BLAS), attention in tiles, Adam over
one flat buffer, the memory plumbing, and numba's on-disk cache; it ends with one table
that says which Part I function each of them replaces. Importing the file changes nothing
outside it; what the kernels need of the process is applied when training starts.
Shapes are in comments: N positions, B documents, T positions in the longest, C = n_embd,
H heads, D = C // H per head, V = vocab_size.

As a library: build `GPT(GPTConfig(vocab_size, ...), rng)`, feed `train(...)` documents as
token lists ([BOS] + ids + [BOS]) or a function of the step that returns windows [B, T + 1]
of a text, and call `sample(model, ...)` or `generate(model, ...)`. NumPy, numba and the
standard library only.
"""
import math
import random
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# ===========================================================================
# Part I: the GPT, on NumPy alone
# ===========================================================================

# The reference hyperparameters, as in microgpt.py; GPTConfig and Adam take them as defaults.
n_layer, n_embd, block_size, n_head = 1, 16, 16, 4
learning_rate, beta1, beta2, eps_adam = 0.01, 0.85, 0.99, 1e-8
init_std = 0.08


# ---------------------------------------------------------------------------
# Autograd: an array that remembers how it was made, to apply the chain rule.
# Each op computes its output and a `backward(g)` that, given g = d loss / d output, returns
# each input's share (d loss / d input, by the op's local derivative). The chain rule's walk
# and sum live once, in Tensor.backward().
class Tensor:
    __slots__ = ('data', 'grad', '_parents', '_backward')

    def __init__(self, data, parents=(), backward=None):
        self.data = data                  # np.ndarray
        # d loss / d self, summed by backward(): a leaf's (a weight's) from now on, an op
        # output's from when backward() starts
        self.grad = None if parents else np.zeros_like(data)
        self._parents = parents           # the tensors this one was computed from
        self._backward = backward         # g -> the parents' gradients, in their order

    def __add__(self, other): return add(self, other)
    def __repr__(self): return f"Tensor(shape={self.data.shape}, dtype={self.data.dtype})"

    def backward(self, grad=None):
        """Add d self / d leaf to every leaf's .grad, by the chain rule. `grad` is
        d loss / d self (default 1, for self a scalar loss). Leaves (the weights) accumulate:
        a second backward() adds its gradient again; their owner zeroes them (Adam.step)."""
        topo = self.ops_in_order()
        for t in topo:
            t.grad = np.zeros_like(t.data)  # the op outputs' sums start over
        self.grad = np.ones_like(self.data) if grad is None else grad
        for t in reversed(topo):
            for parent, g in zip(t._parents, t._backward(t.grad)):
                parent.grad += g          # the chain rule's sum over every path

    def ops_in_order(self):
        """The op outputs that self was computed from, and self, each after its parents
        (leaves need no visit: their consumers fill them); by an explicit stack, as in
        microgpt.py: no recursion limit."""
        topo, visited, stack = [], set(), [(self, False)]
        while stack:
            t, parents_done = stack.pop()
            if parents_done:
                topo.append(t)
            elif t not in visited:
                visited.add(t)
                stack.append((t, True))
                stack.extend((p, False) for p in t._parents if p._parents and p not in visited)
        return topo


def unbroadcast(g, shape):
    """Sum g down to `shape`, undoing NumPy broadcasting: the gradient of a broadcast input."""
    if g.shape == shape:
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))  # the leading axes broadcasting added
    return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)


# ---------------------------------------------------------------------------
# Ops: each one's backward right below its forward, and its math in NumPy. Where the math
# is more than a line, it is a function of arrays (rmsnorm_forward, ...), which Part II
# replaces with a numba kernel.
def add(a, b):
    """a + b, broadcasting like NumPy."""
    return Tensor(a.data + b.data, (a, b),
                  lambda g: (unbroadcast(g, a.data.shape), unbroadcast(g, b.data.shape)))


def embedding(w, ids):
    """Rows of w picked by an integer array: [V, C], ids [...] -> [..., C]."""
    return Tensor(w.data[ids], (w,), lambda g: (
        embedding_backward(ids.reshape(-1), g.reshape(-1, g.shape[-1]), len(w.data)),))


# Backward is a scatter-add: a row picked twice gets both gradients. [N], [N, C] -> [V, C]
def embedding_backward(ids, g, V):
    gw = np.zeros((V, g.shape[1]), g.dtype)
    np.add.at(gw, ids, g)
    return gw


def linear(x, w, b=None):
    """x @ w.T (+ b), a weight w of shape [nout, nin] as in microgpt, a bias b [1, nout] (or
    None): [..., nin] -> [..., nout]."""
    x2 = x.data.reshape(-1, x.data.shape[-1])        # [N, nin], N = all leading axes
    def backward(g):
        g2 = g.reshape(-1, g.shape[-1])                # [N, nout]
        dx = (g2 @ w.data).reshape(x.data.shape)       # [N, nout] @ [nout, nin] -> [..., nin]
        dw = g2.T @ x2                                 # [nout, N] @ [N, nin] -> [nout, nin]
        return (dx, dw) if b is None else (dx, dw, g2.sum(axis=0, keepdims=True))  # db [1, nout]
    y = x2 @ w.data.T                                  # [N, nin] @ [nin, nout] -> [N, nout]
    y = y if b is None else y + b.data
    return Tensor(y.reshape(*x.data.shape[:-1], -1), (x, w) if b is None else (x, w, b), backward)


def mul(a, b):
    """a * b, broadcasting like NumPy; b a Tensor or a constant (a number, an array)."""
    if not isinstance(b, Tensor):
        return Tensor(a.data * b, (a,), lambda g: (unbroadcast(g * b, a.data.shape),))
    return Tensor(a.data * b.data, (a, b), lambda g: (unbroadcast(g * b.data, a.data.shape),
                                                       unbroadcast(g * a.data, b.data.shape)))


def index(x, key):
    """x[key], NumPy's indexing: a slice (x[:, :n]), or rows picked by an array of ids, each
    as often as it is named. Its backward puts g back where each entry came from."""
    ids = any(isinstance(k, np.ndarray) for k in (key if isinstance(key, tuple) else (key,)))
    def backward(g):
        dx = np.zeros_like(x.data)
        if ids:
            np.add.at(dx, key, g)                      # a row named twice gets both
        else:
            dx[key] = g                                # a slice names each entry once
        return dx,
    return Tensor(x.data[key], (x,), backward)


def place(x, shape, key):
    """index's other way round: an array of `shape`, 0 but for x at [key] (x = out[key]).
    Its backward takes g[key]."""
    out = np.zeros(shape, x.data.dtype)
    out[key] = x.data
    return Tensor(out, (x,), lambda g: (g[key],))


def reshape(x, shape):
    """The same entries in another shape, e.g. [N, K * D] -> [N, K, D]."""
    return Tensor(x.data.reshape(shape), (x,), lambda g: (g.reshape(x.data.shape),))


def concat(*ws, axis=0):
    """The arrays ws joined along axis: [n1, C], [n2, C], ... -> [n1 + n2 + ..., C] (axis 0).
    One product with the stack does the work of one product with each (fewer, larger calls)."""
    ends = np.cumsum([w.data.shape[axis] for w in ws])
    return Tensor(np.concatenate([w.data for w in ws], axis), ws, lambda g: np.split(g, ends[:-1], axis))


def elementwise(x, f):
    """f applied to each entry of x; f = (forward: x -> (y, kept), backward: (x, kept, g) ->
    d loss / d x), one of FUNCTIONS or a function made as softcap makes one."""
    forward, backward = f
    y, kept = forward(x.data)
    return Tensor(y, (x,), lambda g: (backward(x.data, kept, g),))


# The elementwise functions: the MLP's nonlinearity, relu (the reference's), relu2 (relu
# squared: nanochat's) or gelu (GPT-2's, in its tanh approximation); and the sigmoid of
# nanochat's gates. Each calls its math by name, so that Part II's kernels take its place.
FUNCTIONS = dict(
    relu=(lambda x: (np.maximum(x, 0), None), lambda x, _, g: relu_backward(x, g)),
    relu2=(lambda x: (relu2_forward(x), None), lambda x, _, g: relu2_backward(x, g)),
    gelu=(lambda x: gelu_forward(x), lambda x, t, g: gelu_backward(x, t, g)),
    sigmoid=(lambda x: (sigmoid_forward(x),) * 2, lambda x, s, g: g * s * (1 - s)))
ACTIVATIONS = ('relu', 'relu2', 'gelu')


# relu: y = max(x, 0); the gradient passes where x > 0.
def relu_backward(x, g):
    return g * (x > 0)


# relu2: y = max(x, 0)^2, dy/dx = 2 max(x, 0).
def relu2_forward(x):
    return np.maximum(x, 0) ** 2


def relu2_backward(x, g):
    return g * 2 * np.maximum(x, 0)


# gelu:  y = x/2 (1 + tanh u), u = c (x + 0.044715 x^3), c = sqrt(2/pi);
#        dy/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) c (1 + 3 * 0.044715 x^2).
GELU_C = math.sqrt(2 / math.pi)


def gelu_forward(x):  # -> y, tanh u. (x * x * x, not x ** 3: NumPy's power is slow)
    t = np.tanh(GELU_C * (x + 0.044715 * (x * x * x)))
    return 0.5 * x * (1 + t), t


def gelu_backward(x, t, g):
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * x * x))


# sigmoid: s = 1 / (1 + e^-x), ds/dx = s (1 - s).
def sigmoid_forward(x):
    return 1 / (1 + np.exp(-x))


def softcap(cap):
    """The function cap * tanh(x / cap), for elementwise(): within (-cap, cap), about x
    itself where |x| << cap (nanochat's logits). Its gradient: 1 - tanh^2."""
    def forward(x):
        t = np.tanh(x / cap)
        return cap * t, t
    return forward, lambda x, t, g: g * (1 - t * t)


def rmsnorm(x, eps=1e-5):
    """x / sqrt(mean(x^2) + eps) over the last axis; no gain. [..., C] -> [..., C]."""
    x2 = x.data.reshape(-1, x.data.shape[-1])         # [N, C]
    y, inv_rms = rmsnorm_forward(x2, eps)               # [N, C], [N]
    return Tensor(y.reshape(x.data.shape), (x,), lambda g: (
        rmsnorm_backward(x2, inv_rms, g.reshape(x2.shape)).reshape(x.data.shape),))


# y = x * r with r = (mean(x^2) + eps)^-1/2, the inverse rms. Since dr/dx_j = -r^3 x_j / C,
# dx = r * g - x * r^3 * mean(g * x).
def rmsnorm_forward(x, eps=1e-5):
    r = (np.mean(x * x, axis=-1) + eps) ** -0.5    # [N, C] -> [N]
    return x * r[:, None], r


def rmsnorm_backward(x, r, g):
    r = r[:, None]                                   # [N, 1]
    return r * g - x * r ** 3 * np.mean(g * x, axis=-1, keepdims=True)


def layernorm(x, gain, bias, eps=1e-5):
    """GPT-2's norm: (x - mean(x)) / sqrt(var(x) + eps) * gain + bias over the last axis,
    gain and bias [1, C] learned. [..., C] -> [..., C]."""
    x2 = x.data.reshape(-1, x.data.shape[-1])                  # [N, C]
    y, mu, inv_std = layernorm_forward(x2, gain.data[0], bias.data[0], eps)  # [N, C], [N], [N]
    def backward(g):
        dx, dgain, dbias = layernorm_backward(x2, mu, inv_std, gain.data[0], g.reshape(x2.shape))
        return dx.reshape(x.data.shape), dgain[None], dbias[None]
    return Tensor(y.reshape(x.data.shape), (x, gain, bias), backward)


# y = xhat * gain + bias, xhat = (x - mu) * r, r = (var + eps)^-1/2. With gh = g * gain,
# dx = r * (gh - mean(gh) - xhat * mean(gh * xhat)); dgain = sum over rows of g * xhat; dbias = sum of g.
def layernorm_forward(x, gain, bias, eps=1e-5):
    mu = x.mean(axis=-1)                                       # [N]
    r = (np.mean((x - mu[:, None]) ** 2, axis=-1) + eps) ** -0.5
    return (x - mu[:, None]) * r[:, None] * gain + bias, mu, r


def layernorm_backward(x, mu, r, gain, g):
    xhat = (x - mu[:, None]) * r[:, None]
    gh = g * gain
    dx = r[:, None] * (gh - gh.mean(axis=-1, keepdims=True)
                       - xhat * np.mean(gh * xhat, axis=-1, keepdims=True))
    return dx, np.sum(g * xhat, axis=0), np.sum(g, axis=0)


def qk_heads(a, n_head):
    """The heads of q and k in an array laid out as qkv, a view: [N, 3C] -> [N, 2H, D]."""
    return a.reshape(a.shape[0], 3 * n_head, -1)[:, :2 * n_head]


def qk_rmsnorm(qkv, n_head, eps=1e-5):
    """rmsnorm of each head's q and k (not v), nanochat's QK-norm: the attention scores
    then stay within +-sqrt(D), whatever the weights grow to. [N, 3C] -> [N, 3C]."""
    N, D = qkv.data.shape[0], qkv.data.shape[1] // (3 * n_head)
    qk = lambda a: qk_heads(a, n_head)
    x = qk(qkv.data).reshape(-1, D)                            # [N * 2H, D]: a row per head
    y, inv_rms = rmsnorm_forward(x, eps)
    out = qkv.data.copy()
    qk(out)[...] = y.reshape(N, 2 * n_head, D)
    def backward(g):
        dqkv = g.copy()
        qk(dqkv)[...] = rmsnorm_backward(x, inv_rms, qk(g).reshape(-1, D)).reshape(N, 2 * n_head, D)
        return dqkv,
    return Tensor(out, (qkv,), backward)


def rope(qkv, angles, n_head):
    """Rotary position embedding (RoPE) of q and k: in each head, dims d and d + D/2 form a
    pair, turned by the angle position * base^(-2d/D) (angles: rope_angles of the
    positions). The product of a q and a k then depends on how far apart they are, not
    where they are. [N, 3C] -> [N, 3C]."""
    cos, sin = angles                                          # [N, D/2] each
    # a rotation's transpose is the rotation back: the gradient turns by -angle
    return Tensor(rope_rotate(qkv.data, cos, sin, n_head), (qkv,),
                  lambda g: (rope_rotate(g, cos, -sin, n_head),))


def rope_angles(positions, D, dtype, base=10000.0):
    """cos and sin of position * base^(-2d/D), d < D/2, in float64 then dtype: [N, D/2] each."""
    angle = np.asarray(positions, np.float64)[:, None] * base ** (-2 * np.arange(D // 2) / D)
    return np.cos(angle).astype(dtype), np.sin(angle).astype(dtype)


# Pair (x1, x2) = dims (d, d + D/2) of a head of q or k becomes (x1 cos + x2 sin, x2 cos - x1 sin).
def rope_rotate(a, cos, sin, n_head):
    D = a.shape[1] // (3 * n_head)
    qk = lambda a: qk_heads(a, n_head)                           # [N, 2H, D], views
    out, cos, sin = a.copy(), cos[:, None], sin[:, None]         # angles [N, 1, D/2]
    x1, x2 = qk(a)[..., :D // 2], qk(a)[..., D // 2:]
    qk(out)[..., :D // 2] = x1 * cos + x2 * sin
    qk(out)[..., D // 2:] = x2 * cos - x1 * sin
    return out


def dropout(x, keep):
    """x * keep, keep an array of 0 (dropped) and 1/(1 - p) (kept, scaled so that the
    expected value stays x), drawn by a DropoutStream."""
    return Tensor(x.data * keep, (x,), lambda g: (g * keep,))


class DropoutStream:
    """Dropout's random draws, from a counter-based generator: draw i is the i-th output of
    splitmix64 from seed. Its whole state is then two integers (a checkpoint keeps them, and
    a resumed run draws on bit for bit), and a kernel draws millions a step."""
    def __init__(self, seed, count=0):
        self.seed, self.count = seed, count

    def keep(self, shape, p, dtype):
        """An array of shape: 0 with probability p, else 1 / (1 - p)."""
        n = int(math.prod(shape))
        keep = dropout_keep(n, np.uint64(self.seed), np.uint64(self.count),
                            np.uint64(round(p * 2 ** 32)), np.dtype(dtype).type(1 / (1 - p)))
        self.count += n
        return keep.reshape(shape)


# Draw i (from start) is kept when the top 32 bits of splitmix64's i-th output are >= p * 2^32.
# (Arithmetic mod 2^64, in uint64: NumPy's wraps silently.)
def dropout_keep(n, seed, start, threshold, value):
    z = seed + (start + np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.where((z >> np.uint64(32)) >= threshold, value, type(value)(0))


def attention(qkv, starts, n_head, attention_maps=None, drop=None):
    """Causal multi-head self-attention within each document: a position attends to itself
    and the earlier positions of its own document. Rows starts[b]:starts[b + 1] are
    document b; qkv holds q, k and v side by side, and each its heads side by side.
    [N, 3C] -> [N, C]. A list attention_maps gets the weights, [B, H, T, T], 0 outside
    each document's triangle. With drop (shape -> a dropout keep array), the weights go
    through dropout before they weigh v."""
    q, k, v = np.hsplit(qkv.data, 3)                                   # [N, C] each
    keep = drop((len(starts) - 1, n_head, max(np.diff(starts)), max(np.diff(starts)))) \
        if drop else None                                              # [B, H, T, T]
    y, att = attention_forward(q, k, v, starts, n_head, keep)
    if attention_maps is not None:
        attention_maps.append(att)
    return Tensor(y, (qkv,), lambda g: (
        np.hstack(attention_backward(q, k, v, att, g, starts, n_head, keep)),))  # -> [N, 3C]


def heads(x, n_head):
    n, C = x.shape
    return x.reshape(n, n_head, C // n_head).transpose(1, 0, 2)  # [n, C] -> [H, n, D]


def documents(starts):
    return [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]


# Per document and head: att = softmax(q k^T / sqrt(D) + causal mask), y = (att * keep) v, keep
# dropout's array (1 without). Backward: dv = (att * keep)^T dy; datt = dy v^T * keep;
# ds = att * (datt - rowsum(att * datt)) / sqrt(D); dq = ds k; dk = ds^T q. att and keep are
# [B, H, T, T], T the longest document, att 0 outside each one's triangle.
def attention_forward(q, k, v, starts, n_head, keep=None):
    T = np.max(np.diff(starts))
    keep = np.ones((len(starts) - 1, n_head, T, T), q.dtype) if keep is None else keep
    y, att = np.zeros_like(q), np.zeros((len(starts) - 1, n_head, T, T), q.dtype)
    for b, rows in enumerate(documents(starts)):
        qh, kh, vh = heads(q[rows], n_head), heads(k[rows], n_head), heads(v[rows], n_head)  # [H, n, D]
        n, D = qh.shape[1:]
        scores = qh @ kh.swapaxes(1, 2) / math.sqrt(D)                   # [H, n, n]
        scores[:, ~np.tril(np.ones((n, n), bool))] = -np.inf               # no looking ahead
        a = np.exp(scores - scores.max(axis=-1, keepdims=True))
        a /= a.sum(axis=-1, keepdims=True)
        y[rows] = ((a * keep[b, :, :n, :n]) @ vh).transpose(1, 0, 2).reshape(n, -1)  # -> [n, C]
        att[b, :, :n, :n] = a
    return y, att


def attention_backward(q, k, v, att, dy, starts, n_head, keep=None):
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    keep = np.ones_like(att) if keep is None else keep
    for b, rows in enumerate(documents(starts)):
        qh, kh, vh, dyh = (heads(x[rows], n_head) for x in (q, k, v, dy))  # [H, n, D]
        n, D = qh.shape[1:]
        a, kp = att[b, :, :n, :n], keep[b, :, :n, :n]                     # [H, n, n]
        datt = dyh @ vh.swapaxes(1, 2) * kp
        ds = a * (datt - np.sum(a * datt, axis=-1, keepdims=True)) / math.sqrt(D)
        for out, grad in ((dq, ds @ kh), (dk, ds.swapaxes(1, 2) @ qh), (dv, (a * kp).swapaxes(1, 2) @ dyh)):
            out[rows] = grad.transpose(1, 0, 2).reshape(n, -1)            # [H, n, D] -> [n, C]
    return dq, dk, dv


def cached_attention(qkv, keys, values, pos, n_head):
    """Attention for sampling, one position at a time: n new positions, all at position pos
    of their documents, store their keys and values in the cache (keys, values: [n,
    block_size, C] each) at pos, and attend to positions 0..pos. [n, 3C] -> [n, C]. The
    same as attention() gives at position pos; no gradient."""
    n, C = qkv.shape[0], qkv.shape[1] // 3
    D = C // n_head
    keys[:, pos], values[:, pos] = qkv[:, C:2 * C], qkv[:, 2 * C:]
    q = qkv[:, :C].reshape(n, n_head, 1, D)                                          # [n, H, 1, D]
    k = keys[:, :pos + 1].reshape(n, pos + 1, n_head, D).transpose(0, 2, 3, 1)       # [n, H, D, t]
    v = values[:, :pos + 1].reshape(n, pos + 1, n_head, D).transpose(0, 2, 1, 3)     # [n, H, t, D]
    scores = (q @ k) / math.sqrt(D)                                                  # [n, H, 1, t]
    att = np.exp(scores - scores.max(axis=-1, keepdims=True))
    att /= att.sum(axis=-1, keepdims=True)
    return (att @ v).reshape(n, C)


def cross_entropy(logits, targets, weights):
    """sum over positions of weights * -log softmax(logits)[target]: a scalar.
    [N, V], targets [N], weights [N] -> []."""
    loss, lse = cross_entropy_forward(logits.data, targets, weights)  # float, [N]
    return Tensor(np.array(loss, logits.data.dtype), (logits,), lambda g: (
        cross_entropy_backward(logits.data, targets, weights, lse, float(g)),))


# nll = logsumexp(l) - l[target]; d nll / d l = softmax(l) - onehot(target).
def cross_entropy_forward(logits, targets, weights):
    m = logits.max(axis=-1)                                                 # [N]
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=-1))              # [N]
    nll = lse - logits[np.arange(len(targets)), targets]                   # [N]
    return float(np.sum(weights * nll)), lse


def cross_entropy_backward(logits, targets, weights, lse, g):
    p = np.exp(logits - lse[:, None])                                       # softmax [N, V]
    p[np.arange(len(targets)), targets] -= 1
    return (g * weights[:, None] * p).astype(logits.dtype)


# ---------------------------------------------------------------------------
# The model: GPT-2 with rmsnorm instead of layernorm, no biases, ReLU instead of GeLU; or,
# choice by choice, GPT-2's blocks, nanochat's, and those between.
NORMS, POSITIONS, INITS = ('rmsnorm', 'layernorm'), ('learned', 'rope', 'none'), ('microgpt', 'gpt2', 'nanochat')
VE_GATE = 12  # the channels of a block's input that its value-embedding gates read (nanochat's)


@dataclass(frozen=True)
class GPTConfig:
    """A GPT's settings, as nanoGPT's GPTConfig: its size, then its architecture choices,
    each defaulting to the reference's."""
    vocab_size: int
    n_embd: int = n_embd
    n_head: int = n_head
    n_layer: int = n_layer
    block_size: int = block_size
    tie_lm_head: bool = False      # logits by wte itself, with no lm_head matrix
    input_rmsnorm: bool = True     # a norm of the embeddings before the first block
    activation: str = 'relu'       # the MLP's: relu, relu2 (nanochat's), gelu (GPT-2's)
    final_norm: bool = False       # a norm before lm_head (GPT-2's ln_f)
    norm: str = 'rmsnorm'          # rmsnorm (no weights), layernorm (GPT-2's: a gain and a bias)
    norm_eps: float = 1e-5         # added to the mean square (or variance) in every norm
    position: str = 'learned'      # learned (wpe), rope (nanochat's), none
    qk_norm: bool = False          # an rmsnorm of each head's q and k (nanochat's)
    qk_scale: float = 1.0          # q and k times this, after qk_norm (nanochat's 1.2)
    rope_base: float = 10000.0     # rope's angles: position * rope_base^(-2d/D)
    softcap: float = 0.0           # logits softcap * tanh(logit / softcap) (nanochat's 15); 0: off
    bias: bool = False             # a bias in every linear map of the blocks (GPT-2's)
    n_kv_head: int = None          # heads of k and v, each shared by n_head / n_kv_head heads of q
    #                                (grouped-query attention); None: n_head
    value_embeddings: bool = False  # nanochat's: every other layer adds a gated embedding of the token to v
    residual_scalars: bool = False  # nanochat's: each block's input is a x + b x0, a and b learned
    dropout: float = 0.0           # its rate, while training only
    dtype: str = 'float32'
    init: str = 'microgpt'         # how the weights start (init_rows): microgpt's, GPT-2's, nanochat's
    init_std: float = init_std     # microgpt's initial weights are gauss(0, init_std)

    def __post_init__(self):
        why = problem(self.__dict__)
        if why:
            raise ValueError(why)


def problem(c, name=str):
    """Why a model's settings (a mapping of GPTConfig's fields) make no model, as a phrase,
    each setting called name(setting); None if they make one. The model's constraints in one
    place: GPTConfig checks them, and so do the lab's settings and a checkpoint's config
    (microgpt.py keeps its own copy)."""
    for k, allowed in (('activation', ACTIVATIONS), ('norm', NORMS), ('position', POSITIONS), ('init', INITS)):
        if k in c and c[k] not in allowed:  # (a checkpoint's config has no init)
            return f"{name(k)} must be one of {', '.join(allowed)}, not {c[k]!r}"
    C, H, K = c['n_embd'], c['n_head'], c['n_kv_head']
    if C % H:
        return f"{name('n_embd')} ({C}) must be divisible by {name('n_head')} ({H})"
    if c['position'] == 'rope' and C // H % 2:
        return (f"{name('position')} rope turns pairs of dims: each head's size, "
                f"{name('n_embd')} / {name('n_head')} = {C // H}, must be even")
    if K is not None and (K < 1 or H % K):
        return f"{name('n_kv_head')} ({K}) must divide {name('n_head')} ({H}): each head of k and v serves as many of q"
    if not 0 <= c.get('dropout', 0) < 1:
        return f"{name('dropout')} must be >= 0 and < 1, not {c['dropout']}"
    return None


# ---------------------------------------------------------------------------
# The weights, in one table: each one's name (microgpt's), shape and role. The role is what
# the rest reads: the init, weight decay's groups, Muon's groups, the FLOP count.
#   embedding: rows picked by token (wte, value_embed) or position (wpe)
#   matrix: a linear map in a block; head: lm_head; gain, bias: a norm's or a linear map's;
#   scalar: nanochat's residual scalars, one a layer
class Weight(NamedTuple):
    shape: tuple
    role: str
    kind: str   # the name without its layer: which weight of its layer it is (attn_wq, ...)


def norms_of(c):
    """Where a model's norms are, in order; layernorm's weights are named after them."""
    return ((['input_norm'] if c.input_rmsnorm else [])
            + [f'layer{i}.{n}' for i in range(c.n_layer) for n in ('attn_norm', 'mlp_norm')]
            + (['final_norm'] if c.final_norm else []))


def weight_table(c):
    """{name: Weight}: a GPT's weights, in the order they are made (and drawn)."""
    C, V, D, K = c.n_embd, c.vocab_size, c.n_embd // c.n_head, c.n_kv_head or c.n_head
    maps = dict(attn_wq=(C, C), attn_wk=(K * D, C), attn_wv=(K * D, C), attn_wo=(C, C),
                mlp_fc1=(4 * C, C), mlp_fc2=(C, 4 * C))       # [nout, nin]; k, v: K heads
    rows = [('wte', (V, C), 'embedding')] + [('wpe', (c.block_size, C), 'embedding')] * (c.position == 'learned') \
        + [('lm_head', (V, C), 'head')] * (not c.tie_lm_head)
    for i in range(c.n_layer):
        rows += [(f'layer{i}.{w}', shape, 'matrix') for w, shape in maps.items()]
        if c.value_embeddings and i % 2 == (c.n_layer - 1) % 2:  # nanochat's: the last layer, every other
            rows += [(f'layer{i}.value_embed', (V, K * D), 'embedding'),
                     (f'layer{i}.ve_gate', (K, min(VE_GATE, C)), 'matrix')]
    rows += [('resid_lambdas', (1, c.n_layer), 'scalar'), ('x0_lambdas', (1, c.n_layer), 'scalar')] * c.residual_scalars
    rows += [(f'layer{i}.{w}_bias', (1, maps[w][0]), 'bias') for i in range(c.n_layer) for w in maps] * c.bias
    rows += [(f'{where}_{role}', (1, C), role) for where in norms_of(c) for role in ('gain', 'bias')] \
        * (c.norm == 'layernorm')
    return {name: Weight(shape, role, name.split('.')[-1]) for name, shape, role in rows}


def init_rows(w, c, rng):
    """Weight w's first values, rows of Python floats, as c.init says, drawn from rng in
    order (as microgpt.py draws them). Gains start at 1, biases at 0, the residual scalars at
    nanochat's values, drawn from none. microgpt: gauss(0, init_std). gpt2 (nanoGPT's):
    gauss(0, 0.02), the projections into the residual stream 0.02 / sqrt(2 n_layer).
    nanochat (its init_weights): wte 0.8, lm_head 0.001, the blocks' input maps uniform with
    std 1/sqrt(C) (mlp_fc1 0.4 times that), the projections into the residual stream 0."""
    (nout, nin), L, s = w.shape, c.n_layer, math.sqrt(3 / c.n_embd)
    fixed = {'resid_lambdas': [1.15 - 0.10 * i / max(L - 1, 1) for i in range(L)],
             'x0_lambdas': [0.20 - 0.15 * i / max(L - 1, 1) for i in range(L)]}.get(w.kind)
    if fixed or w.role in ('gain', 'bias'):
        return [fixed or [1.0 if w.role == 'gain' else 0.0] * nin]
    out = w.kind in ('attn_wo', 'mlp_fc2')               # into the residual stream
    if c.init == 'nanochat' and out:
        return [[0.0] * nin for _ in range(nout)]
    draw = lambda: rng.gauss(0, c.init_std)
    if c.init == 'gpt2':
        draw = lambda: rng.gauss(0, 0.02 / math.sqrt(2 * L) if out else 0.02)
    elif c.init == 'nanochat':
        draw = dict(wte=lambda: rng.gauss(0, 0.8), wpe=lambda: rng.gauss(0, 0.8),
                    lm_head=lambda: rng.gauss(0, 0.001), mlp_fc1=lambda: rng.uniform(-0.4 * s, 0.4 * s),
                    ve_gate=lambda: rng.uniform(0, 0.02)).get(w.kind, lambda: rng.uniform(-s, s))
    return [[draw() for _ in range(nin)] for _ in range(nout)]


def same(x, *_):
    """A choice not taken: x as it is."""
    return x


class GPT:
    """The weights (`state_dict`, by microgpt's names and shapes, drawn as weight_table
    says) and the forward pass: embed, then each block's attention and MLP, then the head.
    Each choice of GPTConfig lives inside the part it changes, as a function settled here,
    when the model is built (`same` where it is not taken)."""

    def __init__(self, config, rng):
        self.config = c = config
        self.table = weight_table(c)
        # microgpt's draws in microgpt's order, as Python floats, so one seed gives both
        # models the same weights
        self.state_dict = sd = {}
        for name, w in self.table.items():
            sd[name] = Tensor(np.array(init_rows(w, c, rng), np.float64).reshape(w.shape).astype(c.dtype))
            if name == 'wte' and c.position != 'learned':  # wpe's draws all the same: the rest keep theirs
                init_rows(Weight((c.block_size, c.n_embd), 'embedding', 'wpe'), c, rng)
        self.params = list(sd.values())
        self.no_decay = [sd[n] for n, w in self.table.items() if w.role in ('gain', 'bias', 'scalar')]
        # dropout's draws: seeded from a copy of rng, so that rng's own draws (the batches,
        # the samples) are those of the same run without dropout
        twin = random.Random()
        twin.setstate(rng.getstate())
        self.dropout_stream = DropoutStream(twin.getrandbits(64))
        self.choose(c, sd)

    def choose(self, c, sd):
        """Settle each choice into the part it changes (embed, blocks, head): a function, or `same`."""
        H, K, D = c.n_head, c.n_kv_head or c.n_head, c.n_embd // c.n_head
        heads = (np.arange(H)[:, None] // (H // K) * D + np.arange(D)).ravel()  # k, v's row of each
        self.norm = dict(rmsnorm=lambda x, at: rmsnorm(x, c.norm_eps),
                         layernorm=lambda x, at: layernorm(x, sd[at + '_gain'], sd[at + '_bias'], c.norm_eps))[c.norm]
        self.activation = FUNCTIONS[c.activation]
        self.add_position = (lambda x, pos: x + embedding(sd['wpe'], pos)) if c.position == 'learned' else same
        self.input_norm = (lambda x: self.norm(x, 'input_norm')) if c.input_rmsnorm else same
        # the blocks
        self.mix = self.residual_scalars if c.residual_scalars else same
        self.share = (lambda t, axis: index(t, (slice(None),) * axis + (heads,))) if K < H else same
        self.qkv_bias = (lambda at: concat(sd[at + 'attn_wq_bias'], self.share(sd[at + 'attn_wk_bias'], 1),
                                           self.share(sd[at + 'attn_wv_bias'], 1), axis=1)) if c.bias else lambda at: None
        self.value_embed = {f'layer{i}.': self.value_embedding if f'layer{i}.value_embed' in sd else same
                            for i in range(c.n_layer)}
        cos, sin = rope_angles(np.arange(c.block_size), D, c.dtype, c.rope_base)   # [block_size, D/2] each
        self.rotate = (lambda qkv, pos: rope(qkv, (cos[pos], sin[pos]), H)) if c.position == 'rope' else same
        self.qk_norm = (lambda qkv: qk_rmsnorm(qkv, H, c.norm_eps)) if c.qk_norm else same
        s = np.repeat(np.array([c.qk_scale, c.qk_scale, 1], c.dtype), c.n_embd)   # q, k times s; v once
        self.qk_scale = (lambda qkv: mul(qkv, s)) if c.qk_scale != 1 else same
        # the head
        self.final_norm = (lambda x: self.norm(x, 'final_norm')) if c.final_norm else same
        self.lm_head = sd['wte'] if c.tie_lm_head else sd['lm_head']
        self.softcap = (lambda logits: elementwise(logits, softcap(c.softcap))) if c.softcap else same

    def forward(self, tokens, positions, starts, attention_maps=None, training=False):
        """Logits for the next token at every position of a packed batch: the documents'
        tokens back to back, tokens [N] at positions [N] (each document's from 0), document
        b in rows starts[b]:starts[b + 1]. -> [N, V]. A list attention_maps gets each layer's
        attention weights, [B, H, T, T]. training: with dropout (if the model has it).

        Packing instead of padding to the longest document: no position is computed for
        nothing, and no padding needs masking; the result is the same."""
        drop = self.keep if training and self.config.dropout else None
        attend = lambda i, qkv: attention(qkv, starts, self.config.n_head, attention_maps, drop)
        return self.blocks(tokens, positions, attend, (lambda y: dropout(y, drop(y.data.shape))) if drop else same)

    def blocks(self, tokens, positions, attend, dropped=same):
        """The model from tokens [N] at positions [N] to logits [N, V], attention given by
        attend(layer, qkv [N, 3C]) -> [N, C]: within each document (forward), or over a
        cache of the past (next_logits). One story for training and for sampling."""
        x = self.embed(tokens, positions)                                       # [N, C]
        x0 = x                                   # the embeddings, as the first block sees them
        for i in range(self.config.n_layer):
            at = f'layer{i}.'
            x = self.mix(x, x0, i)               # nanochat's a_i x + b_i x0; else x
            x = x + dropped(self.attention(self.norm(x, at + 'attn_norm'), at, tokens, positions,
                                           lambda qkv: attend(i, qkv)))
            x = x + dropped(self.mlp(self.norm(x, at + 'mlp_norm'), at))
        return self.head(x)                                                    # [N, V]

    def embed(self, tokens, positions):
        """Each token's embedding, its position's added (learned) or left to attention (rope):
        [N] -> [N, C]."""
        x = embedding(self.state_dict['wte'], tokens)                          # [N, C]
        x = self.add_position(x, positions)
        return self.input_norm(x)   # not redundant: the residual stream carries x un-normalised

    def attention(self, x, at, tokens, positions, attend):
        """Multi-head causal self-attention: q, k, v of every head from x, each head
        attending (attend: [N, 3C] -> [N, C]), the heads projected back. [N, C] -> [N, C].
        With n_kv_head < n_head, each head of k and v serves H / K heads of q (its weights
        shared: the same math)."""
        sd, share = self.state_dict, self.share
        w = concat(sd[at + 'attn_wq'], share(sd[at + 'attn_wk'], 0), share(sd[at + 'attn_wv'], 0))  # [3C, C]
        qkv = linear(x, w, self.qkv_bias(at))                                  # [N, 3C]: q, k, v
        qkv = self.value_embed[at](qkv, x, tokens, at)   # nanochat's v + gate * ve; else qkv
        qkv = self.qk_scale(self.qk_norm(self.rotate(qkv, positions)))   # rope, QK-norm, q, k times s
        return linear(attend(qkv), sd[at + 'attn_wo'], sd.get(at + 'attn_wo_bias'))

    def mlp(self, x, at):
        """Widen 4x, ReLU (or another activation), narrow back: [N, C] -> [N, C]."""
        sd = self.state_dict
        h = linear(x, sd[at + 'mlp_fc1'], sd.get(at + 'mlp_fc1_bias'))         # [N, 4C]
        return linear(elementwise(h, self.activation), sd[at + 'mlp_fc2'], sd.get(at + 'mlp_fc2_bias'))

    def head(self, x):
        """Logits of the next token: [N, C] -> [N, V]; lm_head is wte itself when tied."""
        return self.softcap(linear(self.final_norm(x), self.lm_head))   # nanochat's cap tanh(l / cap)

    # The choices that take more than a line, each inside the part it changes.
    def residual_scalars(self, x, x0, i):
        """nanochat's: each block's input a_i x + b_i x0, a and b learned, x0 the embeddings."""
        a, b = (index(self.state_dict[n], np.s_[:, i:i + 1]) for n in ('resid_lambdas', 'x0_lambdas'))
        return mul(x, a) + mul(x0, b)                                          # [1, 1] each

    def value_embedding(self, qkv, x, tokens, at):
        """nanochat's: v = v + gate * ve, ve the token's embedding in this layer's own table
        and gate = 3 sigmoid(x[:, :12] w_gate^T), one for each head of v. [N, 3C] -> [N, 3C]."""
        sd, (N, C), K = self.state_dict, x.data.shape, len(self.state_dict[at + 've_gate'].data)
        gate = mul(elementwise(linear(index(x, np.s_[:, :VE_GATE]), sd[at + 've_gate']), FUNCTIONS['sigmoid']), 3.0)
        ve = embedding(sd[at + 'value_embed'], tokens)                          # [N, K * D]
        gve = reshape(mul(reshape(ve, (N, K, -1)), reshape(gate, (N, K, 1))), (N, -1))  # [N, K * D]
        return qkv + place(self.share(gve, 1), qkv.data.shape, np.s_[:, 2 * C:])    # added to v alone

    def keep(self, shape):
        """A dropout keep array of shape, from the model's stream."""
        return self.dropout_stream.keep(shape, self.config.dropout, self.config.dtype)

    def loss(self, batch, training=False, counted=None):
        """Mean over the batch of each document's mean cross-entropy of predicting tokens[1:]
        from what precedes them, over its first block_size positions. `batch` is a list of
        documents ([BOS] + ids + [BOS]); with one document this is microgpt's loss. Or it is
        an array [B, T + 1] of windows of a text, T <= block_size: the mean over all of their
        positions. training: with dropout. counted: a [V] array of booleans; given, the sum of
        the cross-entropies of the targets it counts instead (nats: bits per byte's)."""
        if isinstance(batch, np.ndarray):                            # windows: [B, T + 1]
            B, T = batch.shape[0], batch.shape[1] - 1
            logits = self.forward(batch[:, :-1].ravel(), np.tile(np.arange(T), B),
                                  np.arange(0, B * T + 1, T), training=training)  # [B * T, V]
            weights = np.full(B * T, 1 / (B * T)) if counted is None else counted[batch[:, 1:].ravel()] * 1.0
            return cross_entropy(logits, batch[:, 1:].ravel(), weights)
        docs = [doc[:self.config.block_size + 1] for doc in batch]
        lengths = [len(doc) - 1 for doc in docs]                     # positions with a target
        tokens = np.array([t for doc in docs for t in doc[:-1]])     # [N] inputs, packed
        targets = np.array([t for doc in docs for t in doc[1:]])     # [N]
        starts = np.concatenate([[0], np.cumsum(lengths)])           # [B + 1]
        positions = np.arange(starts[-1]) - np.repeat(starts[:-1], lengths)  # [N], from 0 in each
        weights = np.repeat([1 / (n * len(docs)) for n in lengths], lengths) if counted is None \
            else counted[targets] * 1.0                              # [N] float64
        logits = self.forward(tokens, positions, starts, training=training)  # [N, V]
        return cross_entropy(logits, targets, weights)               # []

    # -----------------------------------------------------------------------
    # Sampling, one position at a time, with a key/value cache: each new position runs the
    # blocks for itself only and attends to the cached keys and values of the earlier ones.
    def kv_cache(self, n):
        """Empty keys and values for n documents: per layer, two [n, block_size, C] arrays."""
        c = self.config
        shape, dtype = (n, c.block_size, c.n_embd), c.dtype
        return [(np.zeros(shape, dtype), np.zeros(shape, dtype)) for _ in range(c.n_layer)]

    def next_logits(self, token_ids, pos, cache):
        """Logits [n, V] for the token after token_ids [n], all at position pos, given the
        cache filled for positions 0..pos-1; fills position pos. The same as forward() would
        give at position pos of each document."""
        attend = lambda i, qkv: Tensor(cached_attention(qkv.data, *cache[i], pos, self.config.n_head))
        return self.blocks(np.asarray(token_ids), np.full(len(token_ids), pos), attend).data  # [n, V]


# ---------------------------------------------------------------------------
# Adam, with bias correction; the learning rate is given per step (it decays). With
# weight_decay it is AdamW: every weight matrix also shrinks by lr * weight_decay of itself,
# apart from the gradient; layernorm's gains and biases (no_decay) do not, as in nanoGPT.
class Adam:
    def __init__(self, params, beta1=beta1, beta2=beta2, eps=eps_adam, weight_decay=0.0,
                 no_decay=()):
        self.params, self.beta1, self.beta2, self.eps = params, beta1, beta2, eps
        self.weight_decay = weight_decay
        self.decays = [not any(p is q for q in no_decay) for p in params]
        self.m = [np.zeros(p.data.shape) for p in params]  # running mean of gradients (float64)
        self.v = [np.zeros(p.data.shape) for p in params]  # ... of squared gradients
        self.t = 0                                          # updates done, for the bias correction

    def step(self, lr, grad_clip=0.0):
        """Update every parameter from its .grad, then zero the .grad for the next pass.
        With grad_clip, the gradients are first scaled down so that their global norm is
        at most grad_clip (as torch.nn.utils.clip_grad_norm_ does)."""
        self.t += 1
        scale = 1.0
        if grad_clip:
            norm = math.sqrt(sum(squared_norm(p.grad) for p in self.params))
            scale = min(1.0, grad_clip / (norm + 1e-6))
        for p, m, v, decays in zip(self.params, self.m, self.v, self.decays):
            adam_update(p.data, p.grad, m, v, lr, self.beta1, self.beta2, self.eps,
                        1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t,
                        1 - lr * self.weight_decay if decays else 1.0, scale)


# microgpt's formula and order of operations; bias corrections bc1 = 1 - beta1^t, bc2 = 1 - beta2^t;
# decay = 1 - lr * weight_decay; scale multiplies the gradient (clipping).
def adam_update(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, decay=1.0, scale=1.0):
    g64 = g.astype(np.float64) * scale
    m[...] = beta1 * m + (1 - beta1) * g64
    v[...] = beta2 * v + (1 - beta2) * g64 ** 2
    p[...] = (p * decay - lr * (m / bc1) / ((v / bc2) ** 0.5 + eps)).astype(p.dtype)
    g[...] = 0


def squared_norm(g):
    return float(np.sum(g.astype(np.float64) ** 2))


# ---------------------------------------------------------------------------
# Muon with AdamW: nanochat's optimizer (MuonAdamW in nanochat/optim.py, at commit 92d63d4).
# The blocks' matrices take Muon: momentum (Nesterov's), then the update made nearly
# orthogonal, all its singular values near 1, so that every direction of the matrix moves
# alike; then each row's (or column's) size evened out by a running mean of its squares
# (NorMuon), and a weight decay only where it pulls the same way as the update (cautious).
# The other weights take AdamW in nanochat's groups, each with its own learning rate.
POLAR_EXPRESS = ((8.156554524902461, -22.48329292557795, 15.878769915207462),  # (a, b, c) a step
                 (4.042929935166739, -2.808917465908714, 0.5000178451051316),
                 (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
                 (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
                 (2.3465413258596377, -1.7097828382687081, 0.42323551169305323))


def orthogonalize(G, steps=5):
    """G [m, n] -> about U V^T, where G = U S V^T: its singular values sent near 1 by an odd
    polynomial X -> a X + b (X X^T) X + c (X X^T)^2 X, applied `steps` times (Polar Express's
    coefficients), G's rows first scaled to one norm, the root mean square of theirs (MuonEq),
    the result's norm then set to an orthogonal matrix's, sqrt(min(m, n)) (Muon+)."""
    m, n = G.shape
    X = G * (np.linalg.norm(G) / math.sqrt(m) / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-6))
    X = X / (np.linalg.norm(X) * 1.01 + 1e-6)          # every singular value now below 1
    for a, b, c in POLAR_EXPRESS[:steps]:
        if m > n:                                     # tall: the smaller product, X^T X
            A = X.T @ X                               # [n, n]
            X = a * X + X @ (b * A + c * (A @ A))
        else:
            A = X @ X.T                               # [m, m]
            X = a * X + (b * A + c * (A @ A)) @ X
    return X * (math.sqrt(min(m, n)) / max(np.linalg.norm(X), 1e-6))


# One matrix's step, in its weights' dtype (as nanochat runs it in its compute dtype): m the
# momentum, v NorMuon's mean of squares (a row's, or a column's, kept at p's shape: each of its
# entries the same, so that a checkpoint holds it as it holds Adam's v).
def muon_update(p, g, m, v, lr, momentum, beta2, weight_decay):
    m[...] = m + (1 - momentum) * (g - m)
    X = orthogonalize(g + momentum * (m - g))         # Nesterov: the gradient, pushed on by m
    rows, cols = X.shape
    axis = 1 if rows >= cols else 0                   # a scale per row, or per column
    sq = np.mean(X * X, axis=axis, keepdims=True)     # [rows, 1] or [1, cols]
    v[...] = v + (1 - beta2) * (sq - v)
    step = np.maximum(v[:, :1] if axis else v[:1], 1e-10) ** -0.5
    norm, new_norm = math.sqrt(sq.sum() * X.shape[axis]), math.sqrt((sq * X.shape[axis] * step ** 2).sum())
    X = X * step * (norm / max(new_norm, 1e-10))       # the rows evened out, the norm kept
    lr = lr * max(1.0, rows / cols) ** 0.5
    p[...] = p - lr * X - lr * weight_decay * p * (X * p >= 0)
    g[...] = 0


class Muon:
    """nanochat's MuonAdamW for a GPT's weights, grouped by role: step(lr_t, grad_clip) as Adam's.
    Each group has its own learning rate: Muon's is muon_lr; AdamW's are nanochat's (its
    base_train.py: embeddings 0.3, lm_head 0.008, each times sqrt(768 / C); scalars 0.5),
    with its betas, eps 1e-10 and weight decays. All follow one schedule, as nanochat's
    get_lr_multiplier: at a step whose lr is the schedule's for `lr`, a group's is its own
    times lr_t / lr (written own * lr_t / lr: the order the records were made in).
    momentum and weight_decay are Muon's: numbers, or functions of the step (from 0), as
    nanochat's base_train.py schedules them (nanochat_momentum, cosine_decay)."""
    ADAMW = dict(  # group: (lr, times sqrt(768 / C)?, (beta1, beta2), weight decay)
        lm_head=(0.008, True, (0.8, 0.96), 0.01), embedding=(0.3, True, (0.8, 0.995), 0.001),
        value_embeds=(0.15, True, (0.8, 0.995), 0.01), resid_lambdas=(0.005, False, (0.8, 0.95), 0.05),
        x0_lambdas=(0.5, False, (0.96, 0.95), 0.0),
        other=(0.2, False, (0.8, 0.95), 0.0))  # nanochat's for its other small weights; here gains, biases

    def __init__(self, model, lr, muon_lr=0.02, weight_decay=0.0, momentum=0.95, beta2=0.9):
        self.params, self.lr, self.muon_lr = model.params, lr, muon_lr
        self.weight_decay, self.momentum, self.beta2 = weight_decay, momentum, beta2
        groups = {}  # by each weight's role, as nanochat reads them off its model
        for w, p in zip(model.table.values(), model.params):
            group = 'muon' if w.role == 'matrix' else 'value_embeds' if w.kind == 'value_embed' else \
                w.kind if w.role == 'scalar' else dict(head='lm_head', embedding='embedding').get(w.role, 'other')
            groups.setdefault(group, []).append(p)
        self.matrices = groups.pop('muon', [])
        C = self.params[0].data.shape[1]              # wte's width
        self.adamw = [(self.ADAMW[g][0] * ((768 / C) ** 0.5 if self.ADAMW[g][1] else 1.0),
                       Adam(ps, *self.ADAMW[g][2], eps=1e-10, weight_decay=self.ADAMW[g][3]))
                      for g, ps in groups.items()]
        self.mv = [(np.zeros_like(p.data), np.zeros_like(p.data)) for p in self.matrices]
        own = {id(p): mv for p, mv in zip(self.matrices, self.mv)}
        for _, adam in self.adamw:
            own.update({id(p): (m, v) for p, m, v in zip(adam.params, adam.m, adam.v)})
        self.m, self.v = [own[id(p)][0] for p in self.params], [own[id(p)][1] for p in self.params]
        self._t = 0

    @property
    def t(self):  # updates done: Muon's, and every AdamW group's bias correction
        return self._t

    @t.setter
    def t(self, t):
        self._t = t
        for _, adam in self.adamw:
            adam.t = t

    def step(self, lr_t, grad_clip=0.0):
        if grad_clip:  # the gradients' global norm capped first, as Adam caps it
            norm = math.sqrt(sum(squared_norm(p.grad) for p in self.params))
            for p in self.params:
                p.grad *= min(1.0, grad_clip / (norm + 1e-6))
        at = lambda value: value(self._t) if callable(value) else value  # at this step
        momentum, weight_decay = at(self.momentum), at(self.weight_decay)
        self._t += 1
        for p, (m, v) in zip(self.matrices, self.mv):
            muon_update(p.data, p.grad, m, v, self.muon_lr * lr_t / self.lr, momentum,
                        self.beta2, weight_decay)
        for group_lr, adam in self.adamw:
            adam.step(group_lr * lr_t / self.lr)


# nanochat's schedules of Muon's momentum and weight decay (base_train.py's get_muon_momentum
# and get_weight_decay), over a run of num_steps: functions of the step s (from 0).
def nanochat_momentum(num_steps, warmdown_ratio=0.65):
    """From 0.85 up to 0.97 over the first 400 steps; from 0.97 down to 0.90 over the last
    warmdown_ratio of the steps (nanochat's learning-rate warm-down)."""
    warmdown = round(warmdown_ratio * num_steps)
    def at(step):
        if step < 400:
            frac = step / 400
            return (1 - frac) * 0.85 + frac * 0.97
        if step >= num_steps - warmdown:
            progress = (step - (num_steps - warmdown)) / warmdown
            return 0.97 * (1 - progress) + 0.90 * progress
        return 0.97
    return at


def cosine_decay(value, num_steps):
    """value at step 0, down to 0 at num_steps on a cosine."""
    return lambda step: value * 0.5 * (1 + math.cos(math.pi * step / num_steps))


# ---------------------------------------------------------------------------
# Training: batch_size documents (or windows of a text) per step, the learning rate on a
# schedule: by default the reference's, decaying linearly to zero.
def lr_schedule(lr, num_steps, warmup_steps=0, kind='linear', min_lr=0.0):
    """The learning rate of each step s (from 0), as a function: a linear warm-up over the
    first warmup_steps, to lr; then a decay to min_lr at num_steps, linear or cosine
    (nanoGPT's). With no warm-up and min_lr 0, linear is the reference's lr (1 - s / num_steps)."""
    def at(step):
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        progress = (step - warmup_steps) / (num_steps - warmup_steps)
        if kind == 'cosine':
            return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)
        return min_lr + (lr - min_lr) * (1 - progress)
    return at


def n_targets(batch, block_size):
    """The tokens a batch predicts: a window array's every position, a document's first
    block_size."""
    if isinstance(batch, np.ndarray):
        return batch.shape[0] * (batch.shape[1] - 1)
    return sum(min(block_size, len(doc) - 1) for doc in batch)


def train(model, docs, num_steps, batch_size=32, lr=learning_rate, adam=None, start_step=0,
          schedule=None, grad_clip=0.0):
    """Yield (step, loss, n_target_tokens) after each update, step counting from 1. Step s
    (from 0) trains on docs[s * batch_size ...][:batch_size], wrapping around; or, if docs
    is a function, on docs(s) (e.g. windows of a text at random offsets). Its learning rate
    is schedule(s) (default: lr decaying linearly to 0), its gradients' norm capped at
    grad_clip (0: no cap). Pass `adam` and `start_step` to resume a run."""
    adam = adam or Adam(model.params)
    schedule = schedule or lr_schedule(lr, num_steps)
    for step in range(start_step, num_steps):
        batch = docs(step) if callable(docs) else \
            [docs[(step * batch_size + j) % len(docs)] for j in range(batch_size)]
        loss = model.loss(batch, training=True)
        loss.backward()
        adam.step(schedule(step), grad_clip)
        value, loss = float(loss.data), None  # its graph (every activation) goes now, not
        yield step + 1, value, n_targets(batch, model.config.block_size)  # after the next forward


def evaluate(model, docs, batch_size=32, counted=None):
    """Mean over docs of each document's mean cross-entropy; no update. counted: a [V] array
    of booleans; given, the sum of the cross-entropies of the targets it counts instead."""
    out = 0.0
    for i in range(0, len(docs), batch_size):
        batch = docs[i:i + batch_size]
        out += float(model.loss(batch, counted=counted).data) * (1 if counted is not None else len(batch))
    return out if counted is not None else out / len(docs)


# ---------------------------------------------------------------------------
# Sampling: token by token, each drawn from the model's prediction. A document goes one
# position at a time with the KV cache (next_logits); a text's passage, from the forward
# pass of its last block_size ids.
def probabilities(logits, temperature, top_k=None):
    """softmax(logits / temperature) in float64, like microgpt's: [n, V]. With top_k, the
    tokens below the k-th largest probability get 0 (random.choices renormalises)."""
    # times temperature ** -1, not / temperature: microgpt's Value divides so, and the
    # same rounding keeps the samples of both models bit-equal
    logits = logits.astype(np.float64) * temperature ** -1
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    if top_k and top_k < p.shape[-1]:
        kth = -np.sort(-p, axis=-1)[:, top_k - 1:top_k]          # [n, 1]
        p = np.where(p >= kth, p, 0.0)
    return p


def generate(model, rng, context, n, temperature=1.0, top_k=None):
    """n token ids drawn after `context` (a list of ids, at least one), each from the
    prediction given the last block_size ids: once the text outgrows the model's context,
    its oldest ids drop out of view. One `rng.choices` per id."""
    ids = list(context)
    for _ in range(n):
        window = np.array(ids[-model.config.block_size:])
        logits = model.forward(window, np.arange(len(window)),
                              np.array([0, len(window)])).data[-1:]  # [1, V]
        probs = probabilities(logits, temperature, top_k)[0].tolist()
        ids.append(rng.choices(range(model.config.vocab_size), weights=probs)[0])
    return ids[len(context):]


def sample(model, rng, bos, temperature=0.5, prompt=(), top_k=None):
    """Draw one document: token ids after `prompt`, until BOS or block_size tokens.
    The draws come from `rng`, one `rng.choices` per token, as microgpt draws them."""
    cache = model.kv_cache(1)
    tokens, out = [bos, *prompt], []
    for pos in range(model.config.block_size):
        logits = model.next_logits(np.array(tokens[pos:pos + 1]), pos, cache)
        if pos + 1 < len(tokens):
            continue  # still reading the prompt
        probs = probabilities(logits, temperature, top_k)[0].tolist()
        token_id = rng.choices(range(model.config.vocab_size), weights=probs)[0]
        if token_id == bos:
            break
        tokens.append(token_id)
        out.append(token_id)
    return out


def sample_batch(model, rng, bos, n, temperature=0.5, prompt=(), top_k=None):
    """Draw n documents at once (a list of n token lists), like n calls of sample() but
    one forward pass per position for all of them. The draws from `rng` go position by
    position across the documents, so the result differs from n calls of sample()."""
    if n == 0:
        return []
    cache = model.kv_cache(n)
    tokens = [[bos, *prompt] for _ in range(n)]
    done = [False] * n
    for pos in range(model.config.block_size):
        logits = model.next_logits(np.array([doc[pos] for doc in tokens]), pos, cache)
        if pos + 1 < len(tokens[0]):
            continue
        probs = probabilities(logits, temperature, top_k).tolist()
        for doc, p, i in zip(tokens, probs, range(n)):
            if done[i]:
                doc.append(bos)  # a finished document's row runs on, ignored
                continue
            token_id = rng.choices(range(model.config.vocab_size), weights=p)[0]
            doc.append(token_id)
            done[i] = token_id == bos
        if all(done):
            break
    drawn = [doc[1 + len(prompt):] for doc in tokens]
    return [out[:out.index(bos)] if bos in out else out for out in drawn]


# ===========================================================================
# Part II: speed
#
# numba kernels for Part I's functions, in the order of the ops, each computing the Part I
# function it replaces (the tests check that they agree) in one pass over the data, with
# its loops written so that they vectorise; attention in tiles of BLAS products; Adam over
# one flat buffer; memory given back as soon as it is used; and numba's on-disk cache.
# The table at the end says which Part I function each replaces. Two settings let the
# compiler vectorise: error_model='numpy' (x / 0 gives inf or nan, as in NumPy, instead of
# a check that raises) and fastmath 'reassoc' (a sum may be added up in another order:
# results move in the last bits, not more).
# ===========================================================================
import contextlib  # noqa: E402 (Part II's imports: Part I needs none of them)
import ctypes  # noqa: E402
import functools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numba  # noqa: E402
import numba.core.caching  # noqa: E402
from numba import njit, prange  # noqa: E402

KERNELS = []  # every kernel, to be given numba's on-disk cache (see the plumbing)
PARALLEL_WORK = 2 ** 26  # operations, some 30 ms on one core: below it, a kernel runs in one
#                          thread. On the 2-core machines here a parallel region inside a
#                          training step ran slower than one thread at every size up to
#                          config C's (docs/speed.md, "Threads"), so only larger models use them.


def kernel(f=None, **options):
    """f compiled by numba (on its first call, for the types it is called with). With
    parallel=True, its prange loops run on the threads, but none of its array expressions
    (np.zeros, say), each of which would wake them however little its work."""
    if f is None:
        return lambda f: kernel(f, **options)
    if options.get('parallel') is True:  # (numba's options object: a dict it would empty)
        options['parallel'] = numba.core.cpu.ParallelOptions(dict(
            comprehension=False, reduction=False, inplace_binop=False, setitem=False,
            numpy=False, stencil=False, fusion=False))
    KERNELS.append(njit(**dict(dict(error_model='numpy', fastmath={'reassoc', 'contract'}),
                               **options))(f))
    return KERNELS[-1]


# Every kernel runs on all the run's threads (numba's, numba.set_num_threads) where its work
# is large enough to pay for waking them: it cuts its rows (or elements, documents and
# heads, columns) into pieces, which numba shares out evenly between the threads, each piece
# done by the kernel's serial twin, which is the whole kernel when given all the rows (a
# twin's name starts with _, as does every kernel's that only kernels call). Each row's
# arithmetic is the same whoever does it, no sum runs across pieces, and how many pieces
# depends on the work alone, so the result is the same bit for bit with any number of
# threads. (One piece and many agree bit for bit in float32; in float64 to its precision, as
# LLVM may contract a twin's multiply-adds differently where it inlines it.) One piece runs
# without prange: a prange even of one piece wakes the threads.
PIECES = 256  # at most: many more than threads, so that they share them out evenly


@kernel
def _pieces(n, work):
    """How many pieces to cut n rows into (work: their operations in all): 1, done in the
    calling thread, while waking the other threads would cost more than they save."""
    return 1 if work < PARALLEL_WORK else max(1, min(n, PIECES))


# embedding: the scatter-add of its backward, column by column (a row picked twice gets both
# gradients, in the order of the ids, whoever sums its columns).
@kernel(parallel=True)
def embedding_backward_kernel(ids, g, V):
    C = g.shape[1]
    gw = np.zeros((V, C), g.dtype)
    k = _pieces(C, g.size)
    if k == 1:
        _embedding_backward(ids, g, gw, 0, C)
    else:
        for p in prange(k):
            _embedding_backward(ids, g, gw, C * p // k, C * (p + 1) // k)
    return gw


@kernel
def _embedding_backward(ids, g, gw, lo, hi):
    for i in range(len(ids)):
        gw[ids[i], lo:hi] += g[i, lo:hi]


# The activations: a pass over the elements each, rather than NumPy's several (gelu's tanh
# is NumPy's, which vectorises). `each` is that pass, for the formula numbered `f`.
RELU_GRAD, RELU2, RELU2_GRAD, GELU_U, GELU, GELU_GRAD = range(6)


@kernel(parallel=True)
def each(f, a, b, c):
    """Formula f of each element x, y, z of arrays a, b, c of one shape: [...] -> [...]."""
    out = np.empty_like(a)
    xs, ys, zs, o = a.ravel(), b.ravel(), c.ravel(), out.ravel()
    n = xs.size
    k = _pieces(n, n)
    if k == 1:
        _each(f, xs, ys, zs, o, 0, n)
    else:
        for p in prange(k):
            _each(f, xs, ys, zs, o, n * p // k, n * (p + 1) // k)
    return out


@kernel
def _each(f, xs, ys, zs, o, lo, hi):
    for i in range(lo, hi):
        x, y, z = xs[i], ys[i], zs[i]
        if f == RELU_GRAD:    # y = g
            o[i] = y if x > 0 else 0
        elif f == RELU2:
            o[i] = x * x if x > 0 else 0
        elif f == RELU2_GRAD:
            o[i] = 2 * y * x if x > 0 else 0
        elif f == GELU_U:
            o[i] = GELU_C * (x + 0.044715 * (x * x * x))
        elif f == GELU:       # y = t = tanh u
            o[i] = 0.5 * x * (1 + y)
        else:                 # GELU_GRAD: y = t, z = g
            o[i] = z * (0.5 * (1 + y) + 0.5 * x * (1 - y * y) * GELU_C * (1 + 3 * 0.044715 * x * x))


def relu_backward_kernel(x, g):
    return each(RELU_GRAD, x, g, g)


def relu2_forward_kernel(x):
    return each(RELU2, x, x, x)


def relu2_backward_kernel(x, g):
    return each(RELU2_GRAD, x, g, g)


def gelu_forward_kernel(x):
    t = np.tanh(each(GELU_U, x, x, x))
    return each(GELU, x, t, t), t


def gelu_backward_kernel(x, t, g):
    return each(GELU_GRAD, x, t, g)


# rmsnorm: forward and backward row by row, in one pass each, with float64 sums.
@kernel(parallel=True)
def rmsnorm_forward_kernel(x, eps=1e-5):
    N, C = x.shape
    y, inv_rms = np.empty_like(x), np.empty(N, x.dtype)
    k = _pieces(N, x.size)
    if k == 1:
        _rmsnorm_forward(x, eps, y, inv_rms, 0, N)
    else:
        for p in prange(k):
            _rmsnorm_forward(x, eps, y, inv_rms, N * p // k, N * (p + 1) // k)
    return y, inv_rms


@kernel
def _rmsnorm_forward(x, eps, y, inv_rms, lo, hi):
    C = x.shape[1]
    for i in range(lo, hi):
        ms = 0.0
        for j in range(C):
            ms += x[i, j] * x[i, j]
        r = (ms / C + eps) ** -0.5
        inv_rms[i] = r
        for j in range(C):
            y[i, j] = x[i, j] * r


@kernel(parallel=True)
def rmsnorm_backward_kernel(x, inv_rms, g):
    N, C = x.shape
    dx = np.empty_like(x)
    k = _pieces(N, x.size)
    if k == 1:
        _rmsnorm_backward(x, inv_rms, g, dx, 0, N)
    else:
        for p in prange(k):
            _rmsnorm_backward(x, inv_rms, g, dx, N * p // k, N * (p + 1) // k)
    return dx


@kernel
def _rmsnorm_backward(x, inv_rms, g, dx, lo, hi):
    C = x.shape[1]
    for i in range(lo, hi):
        gx = 0.0
        for j in range(C):
            gx += g[i, j] * x[i, j]
        r = inv_rms[i]
        c = r ** 3 * gx / C
        for j in range(C):
            dx[i, j] = r * g[i, j] - x[i, j] * c


# layernorm: the same, with the mean taken out and a gain and bias.
@kernel(parallel=True)
def layernorm_forward_kernel(x, gain, bias, eps=1e-5):
    N, C = x.shape
    y, mu, inv_std = np.empty_like(x), np.empty(N, x.dtype), np.empty(N, x.dtype)
    k = _pieces(N, x.size)
    if k == 1:
        _layernorm_forward(x, gain, bias, eps, y, mu, inv_std, 0, N)
    else:
        for p in prange(k):
            _layernorm_forward(x, gain, bias, eps, y, mu, inv_std, N * p // k, N * (p + 1) // k)
    return y, mu, inv_std


@kernel
def _layernorm_forward(x, gain, bias, eps, y, mu, inv_std, lo, hi):
    C = x.shape[1]
    for i in range(lo, hi):
        s = 0.0
        for j in range(C):
            s += x[i, j]
        m = s / C
        var = 0.0
        for j in range(C):
            var += (x[i, j] - m) ** 2
        r = (var / C + eps) ** -0.5
        mu[i], inv_std[i] = m, r
        for j in range(C):
            y[i, j] = (x[i, j] - m) * r * gain[j] + bias[j]


# Backward: dx row by row; dgain and dbias, sums over the rows, column by column (each
# column's sum in the order of the rows, whoever sums it).
@kernel(parallel=True)
def layernorm_backward_kernel(x, mu, inv_std, gain, g):
    N, C = x.shape
    dx = np.empty_like(x)
    dgain, dbias = np.zeros(C), np.zeros(C)     # float64 sums over the rows
    k, kc = _pieces(N, x.size), _pieces(C, x.size)
    if k == 1:
        _layernorm_backward(x, mu, inv_std, gain, g, dx, 0, N)
        _layernorm_gain_grads(x, mu, inv_std, g, dgain, dbias, 0, C)
    else:
        for p in prange(k):
            _layernorm_backward(x, mu, inv_std, gain, g, dx, N * p // k, N * (p + 1) // k)
        for p in prange(kc):
            _layernorm_gain_grads(x, mu, inv_std, g, dgain, dbias, C * p // kc, C * (p + 1) // kc)
    return dx, dgain.astype(x.dtype), dbias.astype(x.dtype)


@kernel
def _layernorm_backward(x, mu, inv_std, gain, g, dx, lo, hi):
    C = x.shape[1]
    for i in range(lo, hi):
        m, r = mu[i], inv_std[i]
        s, sx = 0.0, 0.0                        # sum(gh), sum(gh * xhat)
        for j in range(C):
            xhat = (x[i, j] - m) * r
            gh = g[i, j] * gain[j]
            s += gh
            sx += gh * xhat
        for j in range(C):
            xhat = (x[i, j] - m) * r
            dx[i, j] = r * (g[i, j] * gain[j] - s / C - xhat * sx / C)


@kernel
def _layernorm_gain_grads(x, mu, inv_std, g, dgain, dbias, lo, hi):
    for i in range(x.shape[0]):
        m, r = mu[i], inv_std[i]
        for j in range(lo, hi):
            xhat = (x[i, j] - m) * r
            dgain[j] += g[i, j] * xhat
            dbias[j] += g[i, j]


# rope: a pass over q and k, each pair turned; v copied.
@kernel(parallel=True)
def rope_rotate_kernel(a, cos, sin, n_head):
    N = a.shape[0]
    out = np.empty_like(a)
    k = _pieces(N, a.size)
    if k == 1:
        _rope_rotate(a, cos, sin, n_head, out, 0, N)
    else:
        for p in prange(k):
            _rope_rotate(a, cos, sin, n_head, out, N * p // k, N * (p + 1) // k)
    return out


@kernel
def _rope_rotate(a, cos, sin, n_head, out, lo, hi):
    D = a.shape[1] // (3 * n_head)
    half = D // 2
    for i in range(lo, hi):
        c, s = cos[i], sin[i]
        for h in range(2 * n_head):
            x1, x2 = a[i, h * D:h * D + half], a[i, h * D + half:(h + 1) * D]
            y1, y2 = out[i, h * D:h * D + half], out[i, h * D + half:(h + 1) * D]
            for d in range(half):
                y1[d] = x1[d] * c[d] + x2[d] * s[d]
                y2[d] = x2[d] * c[d] - x1[d] * s[d]
        out[i, 2 * n_head * D:] = a[i, 2 * n_head * D:]


# dropout: its draws, one splitmix64 each.
@kernel(parallel=True)
def dropout_keep_kernel(n, seed, start, threshold, value):
    out = np.empty(n, type(value))
    k = _pieces(n, 8 * n)                        # some 8 operations a draw
    if k == 1:
        _dropout_keep(seed, start, threshold, value, out, 0, n)
    else:
        for p in prange(k):
            _dropout_keep(seed, start, threshold, value, out, n * p // k, n * (p + 1) // k)
    return out


@kernel
def _dropout_keep(seed, start, threshold, value, out, lo, hi):
    golden = np.uint64(0x9E3779B97F4A7C15)
    for i in range(lo, hi):
        z = seed + (start + np.uint64(i) + np.uint64(1)) * golden
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        out[i] = value if (z >> np.uint64(32)) >= threshold else 0


# ---------------------------------------------------------------------------
# Attention, in one of three ways chosen by the batch's shape.
def attention_fast(qkv, starts, n_head, attention_maps=None, drop=None):
    """Part I's attention. Documents of one length, 32 positions or more (a text's
    windows), go through BLAS matrix products in tiles (attention_blocks); others (names)
    through kernels that walk each document's own triangle; or, with dropout, through Part
    I's NumPy math."""
    y, backward, weights = attention_arrays(qkv.data, starts, n_head, drop)  # [N, C]
    if attention_maps is not None:
        attention_maps.append(weights())
    return Tensor(y, (qkv,), lambda g: (backward(g),))                 # g: [N, C] -> [N, 3C]


def attention_arrays(qkv, starts, n_head, drop=None):
    """attention_fast's work on arrays: (y [N, C], backward: dy [N, C] -> dqkv [N, 3C],
    weights: () -> [B, H, T, T])."""
    T = starts[1] - starts[0]
    if T >= 32 and np.all(np.diff(starts) == T):  # long enough for BLAS to pay
        return attention_blocks(qkv, len(starts) - 1, n_head, drop)
    if drop:
        C, T = qkv.shape[1] // 3, np.max(np.diff(starts))
        q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
        keep = drop((len(starts) - 1, n_head, T, T))
        y, att = attention_forward(q, k, v, starts, n_head, keep)
        return y, lambda g: np.hstack(attention_backward(q, k, v, att, g, starts, n_head, keep)), \
            lambda: att
    y, att = attention_triangles(qkv, starts, n_head)                 # [N, C], [B, H, T, T]

    def weights():  # each document's triangle; the kernel leaves the rest unset
        T = att.shape[2]
        inside = np.tril(np.ones((T, T), bool)) & \
            (np.arange(T)[:, None] < np.diff(starts)[:, None, None, None])  # [B, 1, T, T]
        return np.where(inside, att, 0)
    return y, lambda g: attention_triangles_backward(qkv, att, g, starts, n_head), weights


def attention_blocks(qkv, B, n_head, drop=None, tile=64):
    """attention_arrays() for B documents of T positions each, rows b*T:(b+1)*T, by batched
    matrix products over all (document, head) pairs: s = q k^T / sqrt(D), att = causal
    softmax(s), y = att v. Queries go `tile` positions at a time, each against the keys up
    to its last position only: causal attention needs no more, about half of the whole
    square. Every matrix a product reads is laid out row by row (k^T, v^T as copies): BLAS
    is twice as fast on those as on transposed views. With drop, y = (att * keep) v."""
    N, C = qkv.shape[0], qkv.shape[1] // 3
    T, D = N // B, C // n_head
    parts = qkv.reshape(B, T, 3, n_head, D)                       # [B, T, (q k v), H, D]
    split = lambda x, *axes: np.ascontiguousarray(x.transpose(*axes))
    qh, kT, vh = split(parts[:, :, 0], 0, 2, 1, 3), split(parts[:, :, 1], 0, 2, 3, 1), \
        split(parts[:, :, 2], 0, 2, 1, 3)                             # [B, H, T, D], kT [B, H, D, T]
    tiles = [(i, min(i + tile, T)) for i in range(0, T, tile)]       # query rows i:j see keys :j
    scale = qkv.dtype.type(1 / math.sqrt(D))                    # in the arrays' dtype
    keep = drop((B, n_head, T, T)) if drop else None                 # Part I's draws, in tiles
    y, atts, keeps = np.empty_like(qh), [], []
    for i, j in tiles:
        att = qh[:, :, i:j] @ kT[:, :, :, :j]                        # [B, H, j - i, j] scores
        causal_softmax(att, scale, i)                                # in place: att
        keeps.append(None if keep is None else keep[:, :, i:j, :j])
        y[:, :, i:j] = (att if keeps[-1] is None else att * keeps[-1]) @ vh[:, :, :j]  # [B, H, j - i, D]
        atts.append(att)

    def weights():                                                   # the whole [B, H, T, T]
        att_all = np.zeros((B, n_head, T, T), qkv.dtype)
        for (i, j), att in zip(tiles, atts):
            att_all[:, :, i:j, :j] = att
        return att_all

    def backward(g):
        gh = split(g.reshape(B, T, n_head, D), 0, 2, 1, 3)           # [B, H, T, D]
        vT, kh = split(parts[:, :, 2], 0, 2, 3, 1), split(parts[:, :, 1], 0, 2, 1, 3)
        dq, dk, dv = np.empty_like(qh), np.zeros_like(kh), np.zeros_like(vh)
        for (i, j), att, keep in zip(tiles, atts, keeps):
            dropped = att if keep is None else att * keep
            dv[:, :, :j] += dropped.transpose(0, 1, 3, 2) @ gh[:, :, i:j]  # dv = att^T dy
            ds = gh[:, :, i:j] @ vT[:, :, :, :j]                       # d att = dy v^T
            if keep is not None:
                ds *= keep
            causal_softmax_backward(att, ds, scale, i, scale * 0)      # in place: d scores
            dq[:, :, i:j] = ds @ kh[:, :, :j]                          # dq = ds k
            dk[:, :, :j] += ds.transpose(0, 1, 3, 2) @ qh[:, :, i:j]   # dk = ds^T q
        dqkv = np.empty_like(qkv)
        for n, d in enumerate((dq, dk, dv)):                         # [B, H, T, D] -> [N, 3C]
            dqkv.reshape(B, T, 3, n_head, D)[:, :, n] = d.transpose(0, 2, 1, 3)
        return dqkv
    return y.transpose(0, 2, 1, 3).reshape(N, C), backward, weights


# A tile's softmax over each row's causal part after scaling: row t of a tile whose first
# row is position i sees keys j <= i + t; the rest of the row is 0. Backward, given datt:
# ds = att * (datt - sum_j att * datt) * scale.
def causal_softmax(scores, scale, i=0):
    """In place on scores [B, H, T, J], in three passes: the kernels do what vectorises in
    numba, NumPy the exp (numba's is one value at a time)."""
    scale_and_shift(scores, scale, i)    # (s - max over the causal part) * scale, -inf past it
    np.exp(scores, out=scores)           # exp(-inf) = 0
    normalize_rows(scores, i, scores.dtype.type(0))


# The kernels go over the (document, head) pairs, pieces of them on each thread. They keep
# their per-row maxima in 16 lanes, so that LLVM can fill the CPU's vector registers (one
# running maximum would be one value at a time).
@kernel(parallel=True)
def scale_and_shift(scores, scale, i):
    B, H = scores.shape[:2]
    k = _pieces(B * H, scores.size)
    if k == 1:
        _scale_and_shift(scores, scale, i, 0, B * H)
    else:
        for p in prange(k):
            _scale_and_shift(scores, scale, i, B * H * p // k, B * H * (p + 1) // k)


@kernel(fastmath={'reassoc', 'contract', 'nnan', 'nsz'})
def _scale_and_shift(scores, scale, i, lo, hi):
    H, T, J = scores.shape[1:]
    lanes = np.empty(16, scores.dtype)
    for bh in range(lo, hi):
        a = scores[bh // H, bh % H]
        for t in range(T):
            n = min(i + t + 1, J)          # the row's causal part: keys 0..i+t
            lanes[:] = a[t, 0]
            whole = n - n % 16
            for j0 in range(0, whole, 16):
                for lane in range(16):
                    x = a[t, j0 + lane]
                    lanes[lane] = x if x > lanes[lane] else lanes[lane]
            m = lanes.max()
            for j in range(whole, n):
                m = a[t, j] if a[t, j] > m else m
            for j in range(n):
                a[t, j] = (a[t, j] - m) * scale
            for j in range(n, J):
                a[t, j] = -np.inf


# Their sums run in the arrays' own dtype (`zero`): float32 sums vectorise twice as wide.
@kernel(parallel=True)
def normalize_rows(scores, i, zero):
    B, H = scores.shape[:2]
    k = _pieces(B * H, scores.size)
    if k == 1:
        _normalize_rows(scores, i, zero, 0, B * H)
    else:
        for p in prange(k):
            _normalize_rows(scores, i, zero, B * H * p // k, B * H * (p + 1) // k)


@kernel
def _normalize_rows(scores, i, zero, lo, hi):
    H, T, J = scores.shape[1:]
    for bh in range(lo, hi):
        a = scores[bh // H, bh % H]
        for t in range(T):
            n = min(i + t + 1, J)
            total = zero
            for j in range(n):
                total += a[t, j]
            r = 1 / total
            for j in range(n):
                a[t, j] *= r


@kernel(parallel=True)
def causal_softmax_backward(att, datt, scale, i, zero):
    B, H = att.shape[:2]
    k = _pieces(B * H, 2 * att.size)
    if k == 1:
        _causal_softmax_backward(att, datt, scale, i, zero, 0, B * H)
    else:
        for p in prange(k):
            _causal_softmax_backward(att, datt, scale, i, zero, B * H * p // k, B * H * (p + 1) // k)


@kernel
def _causal_softmax_backward(att, datt, scale, i, zero, lo, hi):
    H, T, J = att.shape[1:]
    for bh in range(lo, hi):
        a, d = att[bh // H, bh % H], datt[bh // H, bh % H]
        for t in range(T):
            n = min(i + t + 1, J)
            rowsum = zero
            for j in range(n):
                rowsum += a[t, j] * d[t, j]
            for j in range(n):
                d[t, j] = a[t, j] * (d[t, j] - rowsum) * scale
            for j in range(n, J):
                d[t, j] = 0


# The triangle kernels work one (document, head) at a time, over the causal triangle. Head
# h of position t is the slice q[start + t, o:o+D], start the document's first row.
# Reductions (dot products) and updates (row additions) sit in separate innermost loops
# over D, so that each vectorises. Batches whose work is over PARALLEL_WORK spread the
# (document, head) pairs over the threads; the others stay in one thread.
@kernel
def _attention_head(q, k, v, start, n, o, D, y, a):
    scale = 1 / math.sqrt(D)
    y[start:start + n, o:o + D] = 0
    for t in range(n):
        at, qt, yt = a[t], q[start + t, o:o + D], y[start + t, o:o + D]
        for j in range(t + 1):                  # scores
            kj = k[start + j, o:o + D]
            dot = 0.0
            for d in range(D):
                dot += qt[d] * kj[d]
            at[j] = dot * scale
        m = at[0]                               # softmax, in q's dtype (exp of float32 is faster)
        for j in range(1, t + 1):
            m = max(m, at[j])
        total = 0.0
        for j in range(t + 1):
            at[j] = math.exp(at[j] - m)
            total += at[j]
        for j in range(t + 1):                  # y_t = sum_j att[t, j] v_j
            at[j] /= total
            vj = v[start + j, o:o + D]
            for d in range(D):
                yt[d] += at[j] * vj[d]


@kernel(parallel=True)
def attention_triangles(qkv, starts, n_head):
    N, C = qkv.shape[0], qkv.shape[1] // 3
    q = np.ascontiguousarray(qkv[:, :C])          # q, k and v apart, each one's row in a row:
    k = np.ascontiguousarray(qkv[:, C:2 * C])     # the loops below vectorise on rows only
    v = np.ascontiguousarray(qkv[:, 2 * C:])
    B, D = len(starts) - 1, C // n_head
    T = 0                                       # the longest document (a loop: in a parallel
    for b in range(B):                          # kernel, an array expression would wake threads)
        T = max(T, starts[b + 1] - starts[b])
    y = np.empty((N, C), q.dtype)
    att = np.empty((B, n_head, T, T), q.dtype)  # only each document's triangle is set
    if _pieces(B * n_head, n_head * N * T * D) == 1:
        for bh in range(B * n_head):
            b, h = bh // n_head, bh % n_head
            _attention_head(q, k, v, starts[b], starts[b + 1] - starts[b], h * D, D, y, att[b, h])
    else:
        for bh in prange(B * n_head):
            b, h = bh // n_head, bh % n_head
            _attention_head(q, k, v, starts[b], starts[b + 1] - starts[b], h * D, D, y, att[b, h])
    return y, att


@kernel
def _attention_head_backward(q, k, v, a, dy, start, n, o, D, dq, dk, dv):
    scale = 1 / math.sqrt(D)
    rows = slice(start, start + n)
    dq[rows, o:o + D], dk[rows, o:o + D], dv[rows, o:o + D] = 0, 0, 0
    datt = np.empty(n)                          # d loss / d att[t, j], for one t at a time
    for t in range(n):
        at, qt, dyt, dqt = a[t], q[start + t, o:o + D], dy[start + t, o:o + D], dq[start + t, o:o + D]
        rowsum = 0.0                            # sum_j att[t, j] * datt[t, j]
        for j in range(t + 1):
            vj, dvj = v[start + j, o:o + D], dv[start + j, o:o + D]
            dot = 0.0
            for d in range(D):
                dot += dyt[d] * vj[d]
            for d in range(D):
                dvj[d] += at[j] * dyt[d]
            datt[j] = dot
            rowsum += at[j] * dot
        for j in range(t + 1):
            ds = at[j] * (datt[j] - rowsum) * scale
            kj, dkj = k[start + j, o:o + D], dk[start + j, o:o + D]
            for d in range(D):
                dqt[d] += ds * kj[d]
            for d in range(D):
                dkj[d] += ds * qt[d]


@kernel(parallel=True)
def attention_triangles_backward(qkv, att, dy, starts, n_head):
    N, C = qkv.shape[0], qkv.shape[1] // 3
    q = np.ascontiguousarray(qkv[:, :C])
    k = np.ascontiguousarray(qkv[:, C:2 * C])
    v = np.ascontiguousarray(qkv[:, 2 * C:])
    B, D = len(starts) - 1, C // n_head
    T = att.shape[2]
    dq, dk, dv = np.empty((N, C), q.dtype), np.empty((N, C), q.dtype), np.empty((N, C), q.dtype)
    if _pieces(B * n_head, n_head * N * T * D) == 1:
        for bh in range(B * n_head):
            b, h = bh // n_head, bh % n_head
            _attention_head_backward(q, k, v, att[b, h], dy, starts[b], starts[b + 1] - starts[b], h * D, D, dq, dk, dv)
    else:
        for bh in prange(B * n_head):
            b, h = bh // n_head, bh % n_head
            _attention_head_backward(q, k, v, att[b, h], dy, starts[b], starts[b + 1] - starts[b], h * D, D, dq, dk, dv)
    return np.hstack((dq, dk, dv))


# The KV cache's attention, for sampling: one query a (document, head), against the cached
# keys 0..pos; each pair's scores, softmax and weighted sum of values on one thread.
@kernel(parallel=True)
def cached_attention_kernel(qkv, keys, values, pos, n_head):
    n, C = qkv.shape[0], qkv.shape[1] // 3
    y = np.empty((n, C), qkv.dtype)
    k = _pieces(n * n_head, 2 * n * (pos + 1) * C)
    if k == 1:
        _cached_attention(qkv, keys, values, pos, n_head, y, 0, n * n_head)
    else:
        for p in prange(k):
            _cached_attention(qkv, keys, values, pos, n_head, y, n * n_head * p // k, n * n_head * (p + 1) // k)
    return y


@kernel
def _cached_attention(qkv, keys, values, pos, n_head, y, lo, hi):
    C = qkv.shape[1] // 3
    D = C // n_head
    scale = 1 / math.sqrt(D)
    s = np.empty(pos + 1)                       # one pair's scores, then weights
    for bh in range(lo, hi):
        b, o = bh // n_head, bh % n_head * D
        keys[b, pos, o:o + D] = qkv[b, C + o:C + o + D]          # the new position's k and v
        values[b, pos, o:o + D] = qkv[b, 2 * C + o:2 * C + o + D]
        m = -np.inf
        for j in range(pos + 1):
            dot = 0.0
            for d in range(D):
                dot += qkv[b, o + d] * keys[b, j, o + d]
            s[j] = dot * scale
            m = max(m, s[j])
        total = 0.0
        for j in range(pos + 1):
            s[j] = math.exp(s[j] - m)
            total += s[j]
        y[b, o:o + D] = 0
        for j in range(pos + 1):
            w = s[j] / total
            for d in range(D):
                y[b, o + d] += w * values[b, j, o + d]


# cross_entropy: the kernels skip positions of weight 0, whose gradient is 0. Forward: each
# row's log-sum-exp on any thread; the loss summed over the rows in their order, in one.
@kernel(parallel=True)
def cross_entropy_forward_kernel(logits, targets, weights):
    N, V = logits.shape
    lse = np.zeros(N)
    k = _pieces(N, 4 * logits.size)              # an exp is some 4 operations
    if k == 1:
        _cross_entropy_lse(logits, weights, lse, 0, N)
    else:
        for p in prange(k):
            _cross_entropy_lse(logits, weights, lse, N * p // k, N * (p + 1) // k)
    loss = 0.0
    for i in range(N):
        if weights[i] != 0:
            loss += weights[i] * (lse[i] - logits[i, targets[i]])
    return loss, lse


@kernel
def _cross_entropy_lse(logits, weights, lse, lo, hi):
    V = logits.shape[1]
    for i in range(lo, hi):
        if weights[i] == 0:
            continue
        m = logits[i, 0]
        for c in range(1, V):
            m = max(m, logits[i, c])
        total = 0.0
        for c in range(V):
            total += math.exp(logits[i, c] - m)
        lse[i] = m + math.log(total)


@kernel(parallel=True)
def cross_entropy_backward_kernel(logits, targets, weights, lse, g):
    N = logits.shape[0]
    dl = np.empty_like(logits)
    k = _pieces(N, 4 * logits.size)
    if k == 1:
        _cross_entropy_backward(logits, targets, weights, lse, g, dl, 0, N)
    else:
        for p in prange(k):
            _cross_entropy_backward(logits, targets, weights, lse, g, dl, N * p // k, N * (p + 1) // k)
    return dl


@kernel
def _cross_entropy_backward(logits, targets, weights, lse, g, dl, lo, hi):
    V = logits.shape[1]
    for i in range(lo, hi):
        if weights[i] == 0:
            dl[i] = 0
            continue
        gw = g * weights[i]
        for c in range(V):
            dl[i, c] = gw * math.exp(logits[i, c] - lse[i])
        dl[i, targets[i]] -= gw


# ---------------------------------------------------------------------------
# Adam: one pass over all the weights (FlatAdam's flat buffer), in float64 arithmetic whatever
# the storage.
# With decay and scale 1, p * decay - x is p - x exactly: the reference's update, bit for bit.
@kernel(parallel=True)
def adam_update_kernel(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, decay, scale):
    n = p.size
    k = _pieces(n, 4 * n)                        # a pass over 4 arrays
    if k == 1:
        _adam_update(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, decay, scale, 0, n)
    else:
        for i in prange(k):  # (piece i: p is the weights)
            _adam_update(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, decay, scale, n * i // k, n * (i + 1) // k)


@kernel
def _adam_update(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, decay, scale, lo, hi):
    for i in range(lo, hi):
        gi = np.float64(g[i]) * scale
        m[i] = beta1 * m[i] + (1 - beta1) * gi
        v[i] = beta2 * v[i] + (1 - beta2) * gi ** 2
        m_hat = m[i] / bc1
        v_hat = v[i] / bc2
        p[i] = p[i] * decay - lr * m_hat / (math.sqrt(v_hat) + eps)  # sqrt: v_hat ** 0.5, correctly rounded
        g[i] = 0


# The gradient's norm, for clipping: one sum in the order of the weights, in one thread, so
# that a clipped run's steps are the same whatever its threads (it is some 2% of Adam's time).
@kernel
def squared_norm_kernel(g):
    total = 0.0
    for i in range(g.size):
        total += np.float64(g[i]) ** 2
    return total


class FlatAdam:
    """Part I's Adam (the same parameters, m, v and t), updated by a kernel call over all
    the decayed weights and one over the rest.

    To make that one call, Adam moves the parameters into one flat array: each parameter's
    .data and .grad become views into Adam's flat `theta` and `grad`, with the same values.
    (So make the optimizer before keeping references to .data or .grad arrays.) `m` and `v`
    are lists of per-parameter views too: to restore them, assign in place (m[i][...] = x)."""

    def __init__(self, params, beta1=beta1, beta2=beta2, eps=eps_adam, weight_decay=0.0,
                 no_decay=()):
        self.params, self.beta1, self.beta2, self.eps = params, beta1, beta2, eps
        self.weight_decay, self.t = weight_decay, 0
        # the decayed weights first in the flat arrays, then the rest: two kernel calls
        layout = [p for p in params if not any(p is q for q in no_decay)]
        self.n_decayed = sum(p.data.size for p in layout)
        layout += [p for p in params if any(p is q for q in no_decay)]
        self.theta = np.concatenate([p.data.ravel() for p in layout])
        self.grad = np.concatenate([p.grad.ravel() for p in layout])
        self._m = np.zeros_like(self.theta, dtype=np.float64)  # running mean of gradients
        self._v = np.zeros_like(self.theta, dtype=np.float64)  # ... of squared gradients
        views, start = {}, 0
        for p in layout:
            end = start + p.data.size
            p.data, p.grad = self.theta[start:end].reshape(p.data.shape), self.grad[start:end].reshape(p.data.shape)
            views[id(p)] = self._m[start:end].reshape(p.data.shape), self._v[start:end].reshape(p.data.shape)
            start = end
        self.m, self.v = [views[id(p)][0] for p in params], [views[id(p)][1] for p in params]

    def step(self, lr, grad_clip=0.0):
        self.t += 1
        scale = min(1.0, grad_clip / (math.sqrt(squared_norm_kernel(self.grad)) + 1e-6)) if grad_clip else 1.0
        for part, decay in ((slice(0, self.n_decayed), 1 - lr * self.weight_decay),
                            (slice(self.n_decayed, None), 1.0)):
            adam_update_kernel(self.theta[part], self.grad[part], self._m[part], self._v[part], lr,
                        self.beta1, self.beta2, self.eps, 1 - self.beta1 ** self.t,
                        1 - self.beta2 ** self.t, decay, scale)


# ---------------------------------------------------------------------------
# Memory: given back as soon as it is used.
class LeanTensor(Tensor):
    """Part I's Tensor, with its memory given back as soon as it is used: an op output gets
    a gradient only during backward(), which drops it once passed on to its parents; and
    inside no_graph() ops keep no graph at all, so that a forward pass for evaluation holds
    one layer's activations, not every layer's as training must for backward()."""
    __slots__ = ()
    recording = True  # False inside no_graph()

    def __init__(self, data, parents=(), backward=None):
        self.data = data
        # a leaf (a weight) owns its gradient array from the start: backward() adds into it
        # in place, and its owner zeroes it (Adam.step does)
        self.grad = None if parents else np.zeros_like(data)
        self._parents = parents if LeanTensor.recording else ()
        self._backward = backward if LeanTensor.recording else None

    def backward(self, grad=None):
        topo = self.ops_in_order()
        for t in topo:
            t.grad = None
        self.grad = np.ones_like(self.data) if grad is None else grad
        for t in reversed(topo):
            for p, g in zip(t._parents, t._backward(t.grad)):
                if not p._parents:
                    p.grad += g      # a leaf: in place, into the array its owner reads
                elif p.grad is None:
                    p.grad = g       # an op output's first path (g is never written to afterwards)
                else:
                    p.grad = p.grad + g  # not in place: the first g may be another tensor's grad too
            t.grad = None  # used: its memory goes back for the gradients still to come


@contextlib.contextmanager
def no_graph():
    """Ops inside keep no graph (no parents, no backward): each activation is freed as soon
    as the next op has used it."""
    LeanTensor.recording = False
    try:
        yield
    finally:
        LeanTensor.recording = True


def without_graph(f):
    """f, its ops keeping no graph: for a forward pass alone (evaluate)."""
    @functools.wraps(f)
    def lean(*args, **kwargs):
        with no_graph():
            return f(*args, **kwargs)
    return lean


# A step's large arrays (activations, gradients) come from malloc, which by default maps
# fresh pages for each one over 128 KB and unmaps them when the array goes: every step then
# pays a page fault per 4 KB of activations, a quarter of its time. glibc's mallopt keeps
# freed memory for the next step instead. (Where there is no glibc, nothing changes.)
def keep_freed_memory():
    try:
        mallopt = ctypes.CDLL('libc.so.6').mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 32 * 2 ** 20)  # M_MMAP_THRESHOLD: arrays of up to 32 MB come from the heap
    mallopt(-1, 2 ** 30)       # M_TRIM_THRESHOLD: and freed heap stays, up to 1 GB


def configure_process():
    """What the kernels need of the whole process, which train() applies when training
    starts (never on import: a program that copies this file in keeps its own settings):
    freed memory kept for the next step (keep_freed_memory); and numba's 'workqueue' threads,
    which sleep when idle, where OpenMP's would spin while they wait, taking the cores from
    NumPy's BLAS threads (a 5x slowdown here). A threading layer the user chose
    (NUMBA_THREADING_LAYER) stays, and once numba has started its threads, none changes."""
    keep_freed_memory()
    if 'NUMBA_THREADING_LAYER' not in os.environ:
        numba.config.THREADING_LAYER = 'workqueue'


def configuring(train):
    """train, applying configure_process() as it starts."""
    @functools.wraps(train)
    def configured(*args, **kwargs):
        configure_process()
        yield from train(*args, **kwargs)
    return configured


# ---------------------------------------------------------------------------
# numba's on-disk cache: every kernel is compiled on its first call and cached on disk
# (beside this file, or in numba's user-wide cache), to be loaded by the next process.
class KernelCache(numba.core.caching.FunctionCache):
    """numba's on-disk cache, except that a cache it cannot read (corrupt files) or write (a
    read-only or full disk) is a cache miss, noted once on stderr, never an error."""
    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as e:
            note_cache_trouble(f"unreadable ({type(e).__name__}): compiled afresh, and "
                               "cached again")
            with contextlib.suppress(OSError):  # start its index over: the next save mends it
                os.remove(self._cache_file._index_path)

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as e:
            note_cache_trouble(f"not writable ({type(e).__name__}): kernels are compiled "
                               "on every run")


def note_cache_trouble(why, noted=[]):
    if not noted:
        noted.append(why)
        print(f"note: numba's kernel cache is {why}", file=sys.stderr)


def cache_on_disk(kernels):
    """What njit(cache=True) does, with KernelCache."""
    for compiled in kernels:
        try:
            compiled._cache = KernelCache(compiled.py_func)
        except RuntimeError:  # no folder to cache in at all
            note_cache_trouble("not writable anywhere: kernels are compiled on every run")
            return


cache_on_disk(KERNELS)


def warm_up(dtype='float32'):
    """Compile (or load from numba's cache) every kernel for dtype, on a tiny model, so that
    a timed run times the model, not the compiler."""
    for choices in ({}, dict(norm='layernorm', qk_norm=True, dropout=0.5, activation='gelu'),
                    dict(activation='relu2', position='rope')):  # every kernel
        model = GPT(GPTConfig(3, n_embd=2, n_head=1, block_size=32, dtype=dtype, **choices),
                    random.Random(0))
        list(train(model, [[2, 0, 1, 2], [2, 1, 2]], 1, batch_size=2, grad_clip=1.0))  # documents
        list(train(model, lambda step: np.array([[0, 1] * 16 + [0]]), 1))            # a long window
        sample(model, random.Random(0), bos=2)


# ===========================================================================
# The table: which Part I function each of Part II's replaces. Part I's code calls them by
# these names, so from here on it runs Part II's; without Part II, its own NumPy math.
# ===========================================================================
Tensor = LeanTensor                                  # gradients freed as backward goes
embedding_backward = embedding_backward_kernel
relu_backward = relu_backward_kernel
relu2_forward = relu2_forward_kernel
relu2_backward = relu2_backward_kernel
gelu_forward = gelu_forward_kernel                   # and NumPy's tanh
gelu_backward = gelu_backward_kernel
rmsnorm_forward = rmsnorm_forward_kernel
rmsnorm_backward = rmsnorm_backward_kernel
layernorm_forward = layernorm_forward_kernel
layernorm_backward = layernorm_backward_kernel
rope_rotate = rope_rotate_kernel
dropout_keep = dropout_keep_kernel
attention = attention_fast                           # tiles, triangles, or Part I's math
cached_attention = cached_attention_kernel
cross_entropy_forward = cross_entropy_forward_kernel
cross_entropy_backward = cross_entropy_backward_kernel
Adam = FlatAdam                                      # the weights in one flat buffer, and
#                                                      adam_update and squared_norm's kernels
evaluate = without_graph(evaluate)                   # a forward pass keeps no graph
train = configuring(train)                           # the process set up as training starts
