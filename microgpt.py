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
VE_GATE = 12  # the channels of a block's input that its value-embedding gates read (nanochat's)

def activate(x, kind='relu'):
    """The MLP's nonlinearity: relu (the reference's), relu2 (relu squared: nanochat's) or
    gelu (GPT-2's, in its tanh approximation)."""
    if kind == 'relu':
        return x.relu()
    if kind == 'relu2':
        return x.relu() ** 2
    return 0.5 * x * (1 + (GELU_C * (x + 0.044715 * x ** 3)).tanh())

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
        if self.n_embd % self.n_head or (self.position == 'rope' and self.n_embd // self.n_head % 2):
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
                             + (" into heads of an even size, for rope" if self.position == 'rope' else ""))
        if self.activation not in ('relu', 'relu2', 'gelu') or self.norm not in ('rmsnorm', 'layernorm') \
                or self.position not in ('learned', 'rope', 'none') or self.init not in ('microgpt', 'gpt2', 'nanochat'):
            raise ValueError(f"no such choice: {self.activation}, {self.norm}, {self.position}, {self.init}")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            raise ValueError(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")


def weight_shapes(c):
    """{name: shape}: a GPT's weights, by the reference's names, in the order they are made."""
    C, V, D = c.n_embd, c.vocab_size, c.n_embd // c.n_head
    KD = (c.n_kv_head or c.n_head) * D  # the width of k and of v
    shapes = {'wte': (V, C)}
    if c.position == 'learned':
        shapes['wpe'] = (c.block_size, C)
    if not c.tie_lm_head:
        shapes['lm_head'] = (V, C)
    for i in range(c.n_layer):
        for w, shape in (('attn_wq', (C, C)), ('attn_wk', (KD, C)), ('attn_wv', (KD, C)),
                         ('attn_wo', (C, C)), ('mlp_fc1', (4 * C, C)), ('mlp_fc2', (C, 4 * C))):
            shapes[f'layer{i}.{w}'] = shape
        if c.value_embeddings and i % 2 == (c.n_layer - 1) % 2:  # nanochat's: the last layer, every other
            shapes[f'layer{i}.value_embed'] = (V, KD)
            shapes[f'layer{i}.ve_gate'] = (c.n_kv_head or c.n_head, min(VE_GATE, C))
    if c.residual_scalars:
        shapes['resid_lambdas'] = shapes['x0_lambdas'] = (1, c.n_layer)
    for i in range(c.n_layer) if c.bias else ():
        for w in ('attn_wq', 'attn_wk', 'attn_wv', 'attn_wo', 'mlp_fc1', 'mlp_fc2'):
            shapes[f'layer{i}.{w}_bias'] = (1, shapes[f'layer{i}.{w}'][0])
    if c.norm == 'layernorm':  # a gain and a bias per norm, one row each
        for where in ['input_norm'] * c.input_rmsnorm + [f'layer{i}.{n}' for i in range(c.n_layer)
                      for n in ('attn_norm', 'mlp_norm')] + ['final_norm'] * c.final_norm:
            shapes[f'{where}_gain'] = shapes[f'{where}_bias'] = (1, C)
    return shapes


def init_rows(name, c, nout, nin, rng):
    """Weight `name`'s first values, rows of floats, as c.init says, drawn from rng in order.
    Gains start at 1, biases at 0, the residual scalars at nanochat's values, drawn from none.
    microgpt: gauss(0, init_std). gpt2 (nanoGPT's): gauss(0, 0.02), the projections into the
    residual stream 0.02 / sqrt(2 n_layer). nanochat (its init_weights): wte 0.8, lm_head
    0.001, the blocks' input maps uniform with std 1/sqrt(C) (mlp_fc1 0.4 times that), the
    projections into the residual stream 0."""
    kind, L, s = name.rsplit('.', 1)[-1], c.n_layer, math.sqrt(3 / c.n_embd)
    fixed = {'resid_lambdas': [1.15 - 0.10 * i / max(L - 1, 1) for i in range(L)],
             'x0_lambdas': [0.20 - 0.15 * i / max(L - 1, 1) for i in range(L)]}.get(kind)
    if fixed or kind.endswith(('_gain', '_bias')):
        return [fixed or [1.0 if kind.endswith('_gain') else 0.0] * nin]
    out = kind in ('attn_wo', 'mlp_fc2')  # into the residual stream
    if c.init == 'nanochat' and out:
        return [[0.0] * nin for _ in range(nout)]
    draw = lambda: rng.gauss(0, c.init_std)
    if c.init == 'gpt2':
        draw = lambda: rng.gauss(0, 0.02 / math.sqrt(2 * L) if out else 0.02)
    elif c.init == 'nanochat':
        draw = dict(wte=lambda: rng.gauss(0, 0.8), wpe=lambda: rng.gauss(0, 0.8),
                    lm_head=lambda: rng.gauss(0, 0.001), mlp_fc1=lambda: rng.uniform(-0.4 * s, 0.4 * s),
                    ve_gate=lambda: rng.uniform(0, 0.02)).get(kind, lambda: rng.uniform(-s, s))
    return [[draw() for _ in range(nin)] for _ in range(nout)]


class GPT:
    """The weights (`state_dict`, by the reference's names) and the forward pass, as its
    GPTConfig says."""

    def __init__(self, config, rng):
        self.config = c = config
        # The order of the draws is part of the model: it is what makes a seed reproducible.
        self.state_dict = {}
        for name, (nout, nin) in weight_shapes(c).items():
            self.state_dict[name] = [[Value(x) for x in row] for row in init_rows(name, c, nout, nin, rng)]
            if name == 'wte' and c.position != 'learned':
                init_rows('wpe', c, c.block_size, c.n_embd, rng)  # wpe's draws all the same: the rest keep theirs
        self.params = [p for mat in self.state_dict.values() for row in mat for p in row]

    def __call__(self, token_id, pos_id, keys, values):
        """Logits for the token after `token_id` at position `pos_id`. keys/values hold,
        per layer, the k and v vectors of the earlier positions; this call appends its own."""
        sd, c = self.state_dict, self.config
        hd = c.n_embd // c.n_head
        group = c.n_head // (c.n_kv_head or c.n_head)  # heads of q that share a head of k and v
        bias = lambda name: sd[f'{name}_bias'][0] if c.bias else None
        x = sd['wte'][token_id]
        if c.position == 'learned':
            x = [t + p for t, p in zip(x, sd['wpe'][pos_id])]
        if c.input_rmsnorm:
            x = self.normalize(x, 'input_norm')  # not redundant: the residual stream carries x un-normalised
        x0 = x
        for li in range(c.n_layer):
            at = f'layer{li}.'
            if c.residual_scalars:  # nanochat's: x = a_i x + b_i x0, a and b learned
                a_i, b_i = sd['resid_lambdas'][0][li], sd['x0_lambdas'][0][li]
                x = [a_i * xi + b_i * x0i for xi, x0i in zip(x, x0)]
            # 1) multi-head causal self-attention: this position attends to itself and the past
            x_residual = x
            x = self.normalize(x, at + 'attn_norm')
            q, k = linear(x, sd[at + 'attn_wq'], bias(at + 'attn_wq')), linear(x, sd[at + 'attn_wk'], bias(at + 'attn_wk'))
            v = linear(x, sd[at + 'attn_wv'], bias(at + 'attn_wv'))
            if at + 'value_embed' in sd:  # nanochat's: v += 3 sigmoid(gate) * the token's value embedding
                gates = [3 / (1 + (-z).exp()) for z in linear(x[:VE_GATE], sd[at + 've_gate'])]
                ve = sd[at + 'value_embed'][token_id]
                v = [vj + gates[j // hd] * ej for j, (vj, ej) in enumerate(zip(v, ve))]
            if c.position == 'rope':
                q, k = rope(q, pos_id, hd, c.rope_base), rope(k, pos_id, hd, c.rope_base)
            if c.qk_norm:  # nanochat's: each head's q and k rmsnormed
                per_head = lambda u: [z for h in range(0, len(u), hd) for z in rmsnorm(u[h:h + hd], c.norm_eps)]
                q, k = per_head(q), per_head(k)
            if c.qk_scale != 1:  # sharper (or flatter) attention: the scores times qk_scale^2
                q, k = [z * c.qk_scale for z in q], [z * c.qk_scale for z in k]
            keys[li].append(k)
            values[li].append(v)
            x_attn = []
            for h in range(c.n_head):
                hs, kvs = slice(h * hd, (h + 1) * hd), slice(h // group * hd, (h // group + 1) * hd)
                attn_logits = [dot(q[hs], k[kvs]) / hd ** 0.5 for k in keys[li]]
                attn_weights = softmax(attn_logits)
                v_h = [v[kvs] for v in values[li]]
                x_attn.extend(dot(attn_weights, [v[j] for v in v_h]) for j in range(hd))
            x = linear(x_attn, sd[at + 'attn_wo'], bias(at + 'attn_wo'))
            x = [a + b for a, b in zip(x, x_residual)]
            # 2) MLP: widen 4x, ReLU (or another activation), narrow back
            x_residual = x
            x = self.normalize(x, at + 'mlp_norm')
            x = [activate(xi, c.activation) for xi in linear(x, sd[at + 'mlp_fc1'], bias(at + 'mlp_fc1'))]
            x = linear(x, sd[at + 'mlp_fc2'], bias(at + 'mlp_fc2'))
            x = [a + b for a, b in zip(x, x_residual)]
        if c.final_norm:
            x = self.normalize(x, 'final_norm')
        logits = linear(x, sd['wte'] if c.tie_lm_head else sd['lm_head'])
        if c.softcap:  # smoothly within (-softcap, softcap), near z itself for small z
            logits = [c.softcap * (z / c.softcap).tanh() for z in logits]
        return logits

    def normalize(self, x, where):  # rmsnorm, or layernorm with the weights of `where`
        if self.config.norm == 'rmsnorm':
            return rmsnorm(x, self.config.norm_eps)
        return layernorm(x, self.state_dict[f'{where}_gain'][0], self.state_dict[f'{where}_bias'][0],
                         self.config.norm_eps)

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
