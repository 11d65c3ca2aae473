"""
microgpt.py: train and sample a GPT built from single numbers, in plain Python.

A re-creation of Karpathy's microgpt: a scalar autograd (`Value`), a one-layer GPT
made of lists of `Value`s, Adam, and sampling. Standard library only, so this one
file can be copied anywhere. `python microgpt.py` with makemore's `names.txt` beside
it (or `python microgpt.py FILE`, one document a line) trains the reference run and
prints samples. With seed 42 it prints the reference's numbers exactly.

As a library: build `GPT(GPTConfig(vocab_size, ...), rng)`, feed `train(...)` documents
as token lists (`encode`), and call `sample(model, ...)`.
"""
import math
import os
import random
import sys
from dataclasses import dataclass
from typing import NamedTuple

# The reference hyperparameters; GPTConfig and Adam take them as defaults.
n_layer = 1        # depth: number of transformer blocks
n_embd = 16        # width: embedding dimension
block_size = 16    # longest context (the longest name is 15 characters)
n_head = 4         # attention heads; head_dim = n_embd // n_head
learning_rate, beta1, beta2, eps_adam = 0.01, 0.85, 0.99, 1e-8
init_std = 0.08    # weights start as gauss(0, init_std)


# ---------------------------------------------------------------------------
# Data and tokenizer: the documents are names, one a line (read and shuffled by main, below);
# each distinct character becomes a token id 0..n-1, and one more id, BOS, marks a
# document's start and end. vocab_size = BOS + 1.
def tokenizer(docs):
    """(uchars, BOS): the characters, sorted (uchars[i] is token id i), and BOS's id."""
    uchars = sorted(set(''.join(docs)))
    return uchars, len(uchars)


def encode(doc, uchars, BOS):
    """A document as the model reads it: [BOS] + its characters' ids + [BOS]."""
    return [BOS] + [uchars.index(ch) for ch in doc] + [BOS]


# ---------------------------------------------------------------------------
# Autograd: a scalar that remembers how it was made, to apply the chain rule.
# Each op states only its forward value and its local gradients (d out / d child);
# the chain rule lives once, in backward().
class Value:
    __slots__ = ('data', 'grad', '_children', '_local_grads')  # many small nodes: save memory

    def __init__(self, data, children=(), local_grads=()):
        self.data = data                 # value, set in the forward pass
        self.grad = 0                    # d loss / d self, accumulated by backward()
        self._children = children        # the nodes this one was computed from
        self._local_grads = local_grads  # d self / d child, one per child

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, k):  # k is a plain number
        return Value(self.data ** k, (self,), (k * self.data ** (k - 1),))

    def exp(self):
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def log(self):
        return Value(math.log(self.data), (self,), (1 / self.data,))

    def relu(self):
        return Value(max(0, self.data), (self,), (float(self.data > 0),))

    def tanh(self):  # for GELU and the softcap
        t = math.tanh(self.data)
        return Value(t, (self,), (1 - t * t,))

    def __neg__(self): return self * -1
    def __radd__(self, other): return self + other
    def __sub__(self, other): return self + (-other)
    def __rsub__(self, other): return other + (-self)
    def __rmul__(self, other): return self * other
    def __truediv__(self, other): return self * other ** -1
    def __rtruediv__(self, other): return other * self ** -1
    def __repr__(self): return f"Value(data={self.data}, grad={self.grad})"

    def backward(self):
        """Add d self / d node to every node's .grad, by the chain rule.

        Gradients accumulate (+=): a node used twice gets both contributions, and
        calling backward() again adds again. Leaves (the weights) must be zeroed
        before the next pass; the optimizer does that after each update.
        """
        # Topological order, children before parents, by an explicit stack: a deep
        # graph would overflow Python's recursion limit with the recursive version.
        topo, visited, stack = [], set(), [(self, False)]
        while stack:
            v, children_done = stack.pop()
            if children_done:
                topo.append(v)
            elif v not in visited:
                visited.add(v)
                stack.append((v, True))
                stack.extend((c, False) for c in v._children if c not in visited)
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad


def dot(a, b):
    """sum(a[i] * b[i]) as one node: the same value as summing Value products left to
    right, with a fraction of the nodes. It is what makes training fast in pure Python."""
    s = 0
    for ai, bi in zip(a, b):  # an explicit loop: sum() of floats rounds differently in 3.12+
        s += ai.data * bi.data
    return Value(s, (*a, *b), (*(bi.data for bi in b), *(ai.data for ai in a)))


# ---------------------------------------------------------------------------
# The model: GPT-2 with rmsnorm instead of layernorm, no biases, ReLU instead of GeLU. The
# GPT's choices (GPTConfig's, below) switch parts back to GPT-2's or on to nanochat's; their
# defaults are the reference's.
def linear(x, w, b=None):  # [nout, nin] @ [nin] (+ [nout]) -> [nout]
    return [dot(wo, x) for wo in w] if b is None else [dot(wo, x) + bo for wo, bo in zip(w, b)]

def softmax(logits):
    max_val = max(val.data for val in logits)  # subtracting the max keeps exp() finite
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps)
    return [e / total for e in exps]

GELU_C = math.sqrt(2 / math.pi)

# The MLP's nonlinearity: relu (the reference's), relu2 (relu squared: nanochat's) or gelu
# (GPT-2's, in its tanh approximation).
ACTIVATIONS = dict(relu=lambda x: x.relu(), relu2=lambda x: x.relu() ** 2,
                   gelu=lambda x: 0.5 * x * (1 + (GELU_C * (x + 0.044715 * x ** 3)).tanh()))

def rmsnorm(x, eps=1e-5):
    ms = dot(x, x) / len(x)
    scale = (ms + eps) ** -0.5
    return [xi * scale for xi in x]

def layernorm(x, gain, bias, eps=1e-5):  # GPT-2's: the mean taken out too, then a gain and bias
    mean = sum(x) / len(x)
    xc = [xi - mean for xi in x]
    scale = (dot(xc, xc) / len(x) + eps) ** -0.5
    return [c * scale * g + b for c, g, b in zip(xc, gain, bias)]

def rope(x, pos, hd, base=10000.0):
    """Rotary position embedding: in each head of x, dims d and d + hd/2 form a pair, turned
    by the angle pos * base^(-2d/hd); q.k then depends on how far apart q and k are."""
    out = []
    for h in range(0, len(x), hd):
        angles = [pos * base ** (-2 * d / hd) for d in range(hd // 2)]
        x1, x2 = x[h:h + hd // 2], x[h + hd // 2:h + hd]
        out += [a * math.cos(t) + b * math.sin(t) for a, b, t in zip(x1, x2, angles)]
        out += [b * math.cos(t) - a * math.sin(t) for a, b, t in zip(x1, x2, angles)]
    return out


@dataclass(frozen=True)
class GPTConfig:
    """A GPT's settings: its size (the reference's by default), then its choices."""
    vocab_size: int
    n_embd: int = n_embd
    n_head: int = n_head
    n_layer: int = n_layer
    block_size: int = block_size
    tie_lm_head: bool = False      # logits by wte itself, with no lm_head matrix
    input_rmsnorm: bool = True     # a norm of the embeddings before the first block
    activation: str = 'relu'       # relu, relu2 (nanochat's), gelu (GPT-2's)
    final_norm: bool = False       # a norm before lm_head (GPT-2's ln_f)
    norm: str = 'rmsnorm'          # rmsnorm, layernorm (GPT-2's: a gain and a bias)
    norm_eps: float = 1e-5         # added to the mean square (or variance) in every norm
    position: str = 'learned'      # learned (wpe), rope (nanochat's), none
    qk_norm: bool = False          # an rmsnorm of each head's q and k (nanochat's)
    qk_scale: float = 1.0          # q and k times this, after qk_norm (nanochat's 1.2)
    rope_base: float = 10000.0     # rope's angles: pos * rope_base^(-2d/hd)
    softcap: float = 0.0           # logits softcap * tanh(logit / softcap) (nanochat's 15); 0: off
    bias: bool = False             # a bias in every linear map of the blocks (GPT-2's)
    n_kv_head: int = None          # heads of k and v, each shared by n_head / n_kv_head heads of q
    value_embeddings: bool = False  # nanochat's: every other layer adds a gated embedding of the token to v
    residual_scalars: bool = False  # nanochat's: each block's input is a x + b x0, a and b learned
    init: str = 'microgpt'         # how the weights start (init_rows): microgpt's, GPT-2's, nanochat's
    init_std: float = init_std     # microgpt's initial weights are gauss(0, init_std)

    def __post_init__(self):
        why = problem(self.__dict__)
        if why:
            raise ValueError(why)


NORMS, POSITIONS, INITS = ('rmsnorm', 'layernorm'), ('learned', 'rope', 'none'), ('microgpt', 'gpt2', 'nanochat')
VE_GATE = 12  # the channels of a block's input that its value-embedding gates read (nanochat's)


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


# The weights, in one table: each one's name (the reference's), shape and role. The role is
# what the rest reads: the init here; weight decay, Muon's groups and the FLOP count in the lab.
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
    order. Gains start at 1, biases at 0, the residual scalars at nanochat's values, drawn
    from none. microgpt: gauss(0, init_std). gpt2 (nanoGPT's):
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
    """The weights (`state_dict`, by the reference's names, drawn as weight_table says) and
    the forward pass: embed, then each block's attention and MLP, then the head. Each choice
    of GPTConfig lives inside the part it changes, as a function settled here, when the
    model is built (`same` where it is not taken)."""

    def __init__(self, config, rng):
        self.config = c = config
        self.table = weight_table(c)
        # The order of the draws is part of the model: it is what makes a seed reproducible.
        self.state_dict = sd = {}
        for name, w in self.table.items():
            sd[name] = [[Value(x) for x in row] for row in init_rows(w, c, rng)]
            if name == 'wte' and c.position != 'learned':  # wpe's draws all the same: the rest keep theirs
                init_rows(Weight((c.block_size, c.n_embd), 'embedding', 'wpe'), c, rng)
        self.params = [p for mat in sd.values() for row in mat for p in row]
        self.choose(c, sd)

    def choose(self, c, sd):
        """Settle each choice into the part it changes (embed, blocks, head): a function, or `same`."""
        hd = c.n_embd // c.n_head
        self.norm = dict(rmsnorm=lambda x, at: rmsnorm(x, c.norm_eps),
                         layernorm=lambda x, at: layernorm(x, sd[at + '_gain'][0], sd[at + '_bias'][0], c.norm_eps))[c.norm]
        self.bias = (lambda name: sd[name + '_bias'][0]) if c.bias else lambda name: None
        self.activation = ACTIVATIONS[c.activation]
        self.add_position = (lambda x, pos_id: [t + p for t, p in zip(x, sd['wpe'][pos_id])]) \
            if c.position == 'learned' else same
        self.input_norm = (lambda x: self.norm(x, 'input_norm')) if c.input_rmsnorm else same
        # the blocks
        self.mix = self.residual_scalars if c.residual_scalars else same
        self.value_embed = {at: self.value_embedding if at + 'value_embed' in sd else same
                            for at in (f'layer{i}.' for i in range(c.n_layer))}
        self.rotate = (lambda u, pos_id: rope(u, pos_id, hd, c.rope_base)) if c.position == 'rope' else same
        self.qk_norm = (lambda u: [z for h in range(0, len(u), hd) for z in rmsnorm(u[h:h + hd], c.norm_eps)]) \
            if c.qk_norm else same  # nanochat's: each head of q and k rmsnormed
        self.qk_scale = (lambda u: [z * c.qk_scale for z in u]) if c.qk_scale != 1 else same
        # the head
        self.final_norm = (lambda x: self.norm(x, 'final_norm')) if c.final_norm else same
        self.lm_head = sd['wte'] if c.tie_lm_head else sd['lm_head']
        self.softcap = (lambda logits: [c.softcap * (z / c.softcap).tanh() for z in logits]) if c.softcap else same

    def __call__(self, token_id, pos_id, keys, values):
        """Logits for the token after `token_id` at position `pos_id`. keys/values hold,
        per layer, the k and v vectors of the earlier positions; this call appends its own."""
        x = self.embed(token_id, pos_id)
        x0 = x                                   # the embeddings, as the first block sees them
        for li in range(self.config.n_layer):
            at = f'layer{li}.'
            x = self.mix(x, x0, li)              # nanochat's a_i x + b_i x0; else x
            # 1) multi-head causal self-attention: this position attends to itself and the past
            x_residual = x
            x = self.attention(self.norm(x, at + 'attn_norm'), at, token_id, pos_id, keys[li], values[li])
            x = [a + b for a, b in zip(x, x_residual)]
            # 2) MLP: widen 4x, ReLU (or another activation), narrow back
            x_residual = x
            x = self.mlp(self.norm(x, at + 'mlp_norm'), at)
            x = [a + b for a, b in zip(x, x_residual)]
        return self.head(x)

    def embed(self, token_id, pos_id):
        """The token's embedding, its position's added (learned) or left to attention (rope)."""
        x = self.state_dict['wte'][token_id]
        x = self.add_position(x, pos_id)
        return self.input_norm(x)  # not redundant: the residual stream carries x un-normalised

    def attention(self, x, at, token_id, pos_id, keys, values):
        """q, k, v of this position; each head's weights over the positions so far; their
        values weighed, the heads projected back. keys, values: this layer's cache."""
        sd, c = self.state_dict, self.config
        hd = c.n_embd // c.n_head
        group = c.n_head // (c.n_kv_head or c.n_head)  # heads of q that share a head of k and v
        q, k = linear(x, sd[at + 'attn_wq'], self.bias(at + 'attn_wq')), linear(x, sd[at + 'attn_wk'], self.bias(at + 'attn_wk'))
        v = linear(x, sd[at + 'attn_wv'], self.bias(at + 'attn_wv'))
        v = self.value_embed[at](v, x, token_id, at)       # nanochat's v + gate * ve; else v
        q, k = self.qk_scale(self.qk_norm(self.rotate(q, pos_id))), self.qk_scale(self.qk_norm(self.rotate(k, pos_id)))
        keys.append(k)
        values.append(v)
        x_attn = []
        for h in range(c.n_head):
            hs, kvs = slice(h * hd, (h + 1) * hd), slice(h // group * hd, (h // group + 1) * hd)
            attn_logits = [dot(q[hs], k[kvs]) / hd ** 0.5 for k in keys]
            attn_weights = softmax(attn_logits)
            v_h = [v[kvs] for v in values]
            x_attn.extend(dot(attn_weights, [v[j] for v in v_h]) for j in range(hd))
        return linear(x_attn, sd[at + 'attn_wo'], self.bias(at + 'attn_wo'))

    def mlp(self, x, at):
        sd = self.state_dict
        x = [self.activation(xi) for xi in linear(x, sd[at + 'mlp_fc1'], self.bias(at + 'mlp_fc1'))]
        return linear(x, sd[at + 'mlp_fc2'], self.bias(at + 'mlp_fc2'))

    def head(self, x):
        """Logits of the next token; lm_head is wte itself when tied."""
        return self.softcap(linear(self.final_norm(x), self.lm_head))  # nanochat's cap tanh(z / cap)

    # The choices that take more than a line, each inside the part it changes.
    def residual_scalars(self, x, x0, li):
        """nanochat's: each block's input a_i x + b_i x0, a and b learned, x0 the embeddings."""
        a_i, b_i = self.state_dict['resid_lambdas'][0][li], self.state_dict['x0_lambdas'][0][li]
        return [a_i * xi + b_i * x0i for xi, x0i in zip(x, x0)]

    def value_embedding(self, v, x, token_id, at):
        """nanochat's: v += 3 sigmoid(gate) * the token's value embedding, a gate a head of v."""
        hd = self.config.n_embd // self.config.n_head
        gates = [3 / (1 + (-z).exp()) for z in linear(x[:VE_GATE], self.state_dict[at + 've_gate'])]
        ve = self.state_dict[at + 'value_embed'][token_id]
        return [vj + gates[j // hd] * ej for j, (vj, ej) in enumerate(zip(v, ve))]

    def kv_cache(self):
        """Empty keys and values: per layer, a list that each position appends to."""
        return [[] for _ in range(self.config.n_layer)], [[] for _ in range(self.config.n_layer)]

    def loss(self, tokens):
        """Mean cross-entropy of predicting tokens[1:] from what precedes them, over the
        first block_size positions of one document ([BOS] + ids + [BOS])."""
        n = min(self.config.block_size, len(tokens) - 1)
        keys, values = self.kv_cache()
        losses = []
        for pos_id in range(n):
            probs = softmax(self(tokens[pos_id], pos_id, keys, values))
            losses.append(-probs[tokens[pos_id + 1]].log())
        return (1 / n) * sum(losses)


# ---------------------------------------------------------------------------
# Adam, with bias correction; the learning rate is given per step (it decays).
class Adam:
    def __init__(self, params, beta1=beta1, beta2=beta2, eps=eps_adam):
        self.params, self.beta1, self.beta2, self.eps = params, beta1, beta2, eps
        self.m = [0.0] * len(params)  # first moment: running mean of gradients
        self.v = [0.0] * len(params)  # second moment: running mean of squared gradients
        self.t = 0                    # updates done, for the bias correction

    def step(self, lr):
        """Update every parameter from its .grad, then zero the .grad for the next pass."""
        self.t += 1
        b1, b2, m, v = self.beta1, self.beta2, self.m, self.v
        for i, p in enumerate(self.params):
            m[i] = b1 * m[i] + (1 - b1) * p.grad
            v[i] = b2 * v[i] + (1 - b2) * p.grad ** 2
            m_hat = m[i] / (1 - b1 ** self.t)
            v_hat = v[i] / (1 - b2 ** self.t)
            p.data -= lr * m_hat / (v_hat ** 0.5 + self.eps)
            p.grad = 0


# ---------------------------------------------------------------------------
# Training: one document per step, the learning rate decaying linearly to zero.
def train(model, docs, num_steps, lr=learning_rate, adam=None, start_step=0):
    """Train on docs[step % len(docs)] at each step; yield (step, loss, n_tokens) after
    each update, step counting from 1. Pass `adam` and `start_step` to resume a run."""
    adam = adam or Adam(model.params)
    for step in range(start_step, num_steps):
        tokens = docs[step % len(docs)]
        loss = model.loss(tokens)
        loss.backward()
        adam.step(lr * (1 - step / num_steps))
        yield step + 1, loss.data, min(model.config.block_size, len(tokens) - 1)


def evaluate(model, docs):
    """Mean over docs of each document's mean cross-entropy; no update."""
    return sum(model.loss(tokens).data for tokens in docs) / len(docs)


# ---------------------------------------------------------------------------
# Sampling: a new document, token by token, each drawn from the model's prediction.
def sample(model, rng, bos, temperature=0.5, prompt=(), top_k=None):
    """Draw one document: token ids after `prompt`, until BOS or block_size tokens.
    The draws come from `rng`, one `rng.choices` per token, as the reference draws.
    With top_k, only the k most likely tokens can be drawn."""
    keys, values = model.kv_cache()
    tokens, out = [bos, *prompt], []
    for pos_id in range(model.config.block_size):
        logits = model(tokens[pos_id], pos_id, keys, values)
        if pos_id + 1 < len(tokens):
            continue  # still reading the prompt
        probs = [p.data for p in softmax([l / temperature for l in logits])]
        if top_k and top_k < len(probs):  # the rest get weight 0; choices renormalises
            kth = sorted(probs, reverse=True)[top_k - 1]
            probs = [p if p >= kth else 0.0 for p in probs]
        token_id = rng.choices(range(model.config.vocab_size), weights=probs)[0]
        if token_id == bos:
            break
        tokens.append(token_id)
        out.append(token_id)
    return out


# ---------------------------------------------------------------------------
# Alone: the reference run, as the original script does it, printing what it prints.
# `python microgpt.py` trains on names.txt beside this file; `python microgpt.py FILE`
# on any UTF-8 text file, one document a line.
def main(path=None, seed=42, num_steps=1000, num_samples=20, temperature=0.5):
    docs = read_docs(path or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'names.txt'))
    rng = random.Random(seed)  # one generator: the shuffle, then the weights, then the samples
    rng.shuffle(docs)
    uchars, BOS = tokenizer(docs)
    print(f"num docs: {len(docs)}\nvocab size: {BOS + 1}")
    model = GPT(GPTConfig(vocab_size=BOS + 1), rng)
    print(f"num params: {len(model.params)}")
    for step, loss, _ in train(model, [encode(doc, uchars, BOS) for doc in docs], num_steps):
        print(f"step {step:4d} / {num_steps:4d} | loss {loss:.4f}")
    print("\n--- inference (new, hallucinated names) ---")
    for i in range(num_samples):
        ids = sample(model, rng, BOS, temperature)
        print(f"sample {i + 1:2d}: {''.join(uchars[t] for t in ids)}")


NAMES_URL = ('https://raw.githubusercontent.com/karpathy/makemore/'
             '988aa59e4d8fefa526d06f3b453ad116258398d4/names.txt')


def read_docs(path):
    if os.path.exists(path) and not os.path.isfile(path):  # a device or a FIFO reads for ever
        raise SystemExit(f"error: {path} is not a regular file")
    try:
        with open(path, encoding='utf-8-sig') as f:  # -sig: a byte-order mark is no character
            docs = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError:
        raise SystemExit(f"error: {path} is not UTF-8 text")
    except OSError as e:
        raise SystemExit(f"error: cannot read {path} ({e.strerror}); put one document a line "
                         f"there, e.g. {NAMES_URL}")
    except MemoryError:
        raise SystemExit(f"error: {path} is too big to read into memory")
    if not docs:
        raise SystemExit(f"error: {path} has no documents (it is empty or holds only blank lines)")
    return docs


if __name__ == '__main__':
    if len(sys.argv) > 2 or sys.argv[1:2] in (['-h'], ['--help']):
        raise SystemExit("usage: python microgpt.py [FILE]  (default: names.txt beside this file)")
    try:
        main(*sys.argv[1:])
    except KeyboardInterrupt:
        raise SystemExit(130)
