"""
models.py: the two models behind one interface. Scalar mode is microgpt.py (Python floats,
one document a step); tensor mode is tensorgpt.py (NumPy and numba, batched).

Everything the lab does with a model goes through here: building one from a run's settings
or from a checkpoint, its optimizer, training, evaluating and sampling it, its weights and
their shapes (from which the checkpoint, the FLOP count and the memory check derive), and
what tensor mode's kernels need of the process (their threads, the numba warm-up).
"""
import dataclasses
import math
import operator
import os
import random
import time

import numpy as np

from microgpt_lab import UserError, settings


def lib(mode):
    """The module that implements a mode: microgpt (scalar) or tensorgpt (tensor)."""
    if mode == 'scalar':
        import microgpt
        return microgpt
    bad = numba_environment()
    if bad:
        raise UserError(bad)
    try:
        import tensorgpt
    except ImportError as e:
        raise UserError(f"--mode tensor needs {e.name}: install the project with pip") from None
    return tensorgpt


def lib_of(model):
    """The module of a model: microgpt or tensorgpt."""
    return lib('scalar' if is_scalar(model) else 'tensor')


def is_scalar(model):
    import microgpt
    return isinstance(model, microgpt.GPT)


def numba_environment():
    """Why numba would refuse to start in this environment (NUMBA_NUM_THREADS=0, say), as a
    phrase; None when it will start."""
    raw = os.environ.get('NUMBA_NUM_THREADS')
    if raw is None or (raw.strip().isdigit() and int(raw) >= 1):
        return None
    return f"NUMBA_NUM_THREADS={raw} in the environment: numba needs a whole number >= 1 (or unset it)"


# ---------------------------------------------------------------------------
# A model: its config, its weights and their shapes.
def gpt_config(cfg, vocab_size, mode=None):
    """The GPTConfig of the model that a run's settings cfg make in `mode` (default: cfg's):
    the settings that the mode's model takes (scalar mode's has no dropout nor dtype)."""
    m = lib(mode or cfg['mode'])
    takes = {f.name for f in dataclasses.fields(m.GPTConfig)} - {'vocab_size'}
    return m.GPTConfig(vocab_size=vocab_size, **{k: cfg[k] for k in takes if k in cfg})


def build(cfg, vocab_size, rng):
    """A new model as cfg says, its weights drawn from rng."""
    return lib(cfg['mode']).GPT(gpt_config(cfg, vocab_size), rng)


def weight_table(config):
    """{name: Weight(shape, role, kind)}: the weights of the model a checkpoint's config
    (vocab_size and the model's settings) describes. Both modes make the same weights for
    every setting they both take (the tests hold them to it); scalar mode's, standard library
    only, says."""
    return lib('scalar').weight_table(gpt_config(dict(config, mode='scalar'), config['vocab_size']))


def weight_shapes(config):
    """{name: shape} of weight_table(config)."""
    return {name: w.shape for name, w in weight_table(config).items()}


def n_params(cfg, vocab_size):
    """How many weights the model of a run's settings has."""
    return sum(math.prod(shape) for shape in weight_shapes(dict(cfg, vocab_size=vocab_size)).values())


def config_of(model):
    """A model's config as a checkpoint records it: vocab_size and the model's settings
    (scalar mode's model has no dropout: 0)."""
    return dict({'dropout': 0.0}, **{k: v for k, v in dataclasses.asdict(model.config).items()
                                     if k == 'vocab_size' or k in settings.MODEL})


def weights(model):
    """{name: float64 array}: a copy of the model's weights."""
    if is_scalar(model):
        return {name: np.array([[p.data for p in row] for row in mat], dtype=np.float64)
                for name, mat in model.state_dict.items()}
    return {name: t.data.astype(np.float64) for name, t in model.state_dict.items()}


def load_weights(model, values):
    """Set every weight of the model, in place, from {name: array of the same shape}."""
    scalar = is_scalar(model)
    for name, w in model.state_dict.items():
        new = np.asarray(values[name], dtype=np.float64)
        shape = (len(w), len(w[0])) if scalar else w.data.shape
        if new.shape != shape:
            raise ValueError(f"{name}: shape {new.shape}, expected {shape}")
        if not scalar:
            w.data[...] = new
            continue
        for row, new_row in zip(w, new.tolist()):  # rows of Values
            for p, x in zip(row, new_row):
                p.data = x


def weights_finite(model):
    """Whether every weight is a finite number: an update can overflow while the loss that
    led to it was still finite. (Scalar mode sums them, in one fast pass: a sum is finite
    only if every term is, or they are so large, near 1e308, that the run diverged anyway.)"""
    if not is_scalar(model):
        return all(np.isfinite(p.data).all() for p in model.params)
    return math.isfinite(sum(map(operator.attrgetter('data'), model.params)))


def check_memory(cfg, vocab_size, longest_doc, at_once=1):
    """A UserError, before anything is built, if `at_once` such runs would need more memory
    than this machine has: a rough count of the weights with their gradients and Adam's
    moments, and of one step's activations (scalar mode: one graph node per dot product)."""
    C, L, V, B = cfg['n_embd'], cfg['n_layer'], vocab_size, cfg['batch_size']
    T = min(cfg['block_size'], longest_doc + 1)  # positions a document can fill
    params = n_params(cfg, vocab_size)
    if cfg['mode'] == 'scalar':
        need = 150 * params + 80 * T * params
    else:
        size = 4 if cfg['dtype'] == 'float32' else 8
        need = 40 * params + B * T * size * (40 * C * L + 4 * V + 2 * cfg['n_head'] * T * L)
    need *= at_once
    try:
        have = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.9 * have:
        runs = f"{at_once} runs at once of " if at_once > 1 else ''
        raise UserError(f"{runs}this model and batch need about {need / 2 ** 30:.0f} GiB of "
                        f"memory, the machine has {have / 2 ** 30:.0f}: choose a smaller "
                        f"--n-embd, --n-layer, --block-size or --batch-size"
                        f"{', or fewer --jobs' if at_once > 1 else ''}")


# ---------------------------------------------------------------------------
# Training: the optimizer, the steps, the evaluation.
def optimizer(cfg, model):
    """Adam as cfg sets it (AdamW in tensor mode, gains, biases and scalars not decayed); or
    nanochat's Muon with AdamW (tensor mode), its learning rates on the schedule of cfg's lr."""
    if cfg.get('optimizer') == 'muon':
        tg, decay, schedules = lib('tensor'), cfg['weight_decay'], {}
        if cfg['muon_schedule'] == 'nanochat':  # base_train.py's momentum and decay
            decay = tg.cosine_decay(nanochat_weight_decay(cfg, model.config.vocab_size), cfg['steps'])
            schedules = dict(momentum=tg.nanochat_momentum(cfg['steps']))
        return tg.Muon(model, cfg['lr'], cfg['muon_lr'], decay, **schedules)
    extra = dict(weight_decay=cfg['weight_decay'], no_decay=model.no_decay) \
        if cfg['mode'] == 'tensor' else {}
    return lib(cfg['mode']).Adam(model.params, beta1=cfg['beta1'], beta2=cfg['beta2'],
                                 eps=cfg['eps'], **extra)


# nanochat's base_train.py (92d63d4) tunes its Muon at a 12-layer model trained on B_ref = 2^19
# tokens a step for D_ref tokens (12 times its "scaling parameters": the blocks' matrices and
# lm_head), and moves to another model and batch keeping B / (lr decay D) as it was (the
# T_epoch rule): the learning rates times sqrt(B / B_ref), the decay 0.28 times
# sqrt(B / B_ref) (D_ref / D). Here Muon's learning rate stays its own (at B = 768, the rule's
# 0.02 x 0.038 would be 13 times below the best the lab measured), so the decay takes the
# rule's whole: it shrinks a weight each step as much as nanochat's would at this batch.
def nanochat_weight_decay(cfg, vocab_size):
    """cfg's --weight-decay scaled by base_train.py's rule, with the learning rate unscaled:
    times (B / 2^19) (D_ref / D), B the tokens of a step (batch_size windows of block_size;
    documents take fewer), D_ref and D the scaling parameters of nanochat's reference (768
    wide, heads of 128) with cfg's vocabulary and choices, and of cfg's model."""
    def scaling_params(c):
        table = weight_table(dict(c, vocab_size=vocab_size))
        return sum(math.prod(w.shape) for w in table.values() if w.role == 'matrix') \
            + vocab_size * c['n_embd']                  # lm_head's, tied or not
    d12 = dict(cfg, n_layer=12, n_embd=768, n_head=6, n_kv_head=None)
    B = cfg['batch_size'] * cfg['block_size']
    return cfg['weight_decay'] * (B / 2 ** 19) * (scaling_params(d12) / scaling_params(cfg))


def train(cfg, model, batches, adam=None, start_step=0):
    """The model's train() as cfg sets it, from start_step to cfg['steps']: yields (step,
    loss, tokens) after each update. batches: the framed documents, or for a text a
    function of the step that returns its windows."""
    if cfg['mode'] == 'scalar':
        return lib('scalar').train(model, batches, cfg['steps'], lr=cfg['lr'], adam=adam,
                                   start_step=start_step)
    tg = lib('tensor')
    return tg.train(model, batches, cfg['steps'], batch_size=cfg['batch_size'], lr=cfg['lr'],
                    adam=adam, start_step=start_step, grad_clip=cfg['grad_clip'],
                    schedule=tg.lr_schedule(cfg['lr'], cfg['steps'], cfg['warmup_steps'],
                                            cfg['lr_schedule'], cfg['min_lr']))


def evaluate(model, docs):
    """The model's mean loss over docs: framed documents, or a text's windows [n, T + 1]."""
    return lib_of(model).evaluate(model, docs)


def validate(model, docs, counted):
    """(mean, nats) of the model's loss over docs (framed documents, or a text's windows):
    evaluate()'s mean, and the sum of the cross-entropies of the targets that counted ([V]
    booleans) counts, bits per byte's numerator as nanochat's evaluate_bpb has it (BOS stands
    for no byte and is not counted). Scalar mode: one pass, microgpt.evaluate's arithmetic
    in floats (its Values hold these very floats), so the mean is its, bit for bit."""
    if not is_scalar(model):
        mean = lib('tensor').evaluate(model, docs)
        if isinstance(docs, np.ndarray) and counted[docs[:, 1:]].all():  # a text: every target
            return mean, mean * docs[:, 1:].size
        return mean, lib('tensor').evaluate(model, docs, counted=counted)
    softmax, means, nats = lib('scalar').softmax, [], 0.0
    for doc in docs:
        n = min(model.config.block_size, len(doc) - 1)
        keys, values = model.kv_cache()
        total = 0
        for pos in range(n):                                  # microgpt's GPT.loss, in floats
            nll = -math.log(softmax(model(doc[pos], pos, keys, values))[doc[pos + 1]].data)
            total += nll
            nats += nll if counted[doc[pos + 1]] else 0.0
        means.append((1 / n) * total)
    return sum(means) / len(docs), nats


# ---------------------------------------------------------------------------
# A checkpoint's model, and a stopped run's state.
def from_checkpoint(ckpt, mode, dtype='float64'):
    """(model, tokenizer) of a loaded checkpoint (checkpoint.load), in either mode."""
    cfg = dict(ckpt['config'], mode=mode, dtype=dtype, init_std=settings.SETTINGS['init_std'].default)
    model = build(cfg, ckpt['config']['vocab_size'], random.Random(0))
    load_weights(model, ckpt['weights'])
    return model, ckpt['tok']


def restore(cfg, ckpt):
    """(model, optimizer) of a stopped run, as its loaded checkpoint left them: weights,
    Adam's state, dropout's draws."""
    model, _ = from_checkpoint(ckpt, cfg['mode'], cfg['dtype'])
    adam = optimizer(cfg, model)
    fill(adam.m, flat([ckpt['adam']['m'][name] for name in ckpt['weights']]))
    fill(adam.v, flat([ckpt['adam']['v'][name] for name in ckpt['weights']]))
    adam.t = ckpt['adam']['t']
    if ckpt['dropout_stream'] and cfg['mode'] == 'tensor':
        model.dropout_stream = lib('tensor').DropoutStream(*ckpt['dropout_stream'])
    return model, adam


def uneven_muon_v(ckpt):
    """The name of the first of Muon's matrices whose v, in a loaded checkpoint, is not as
    Muon keeps it: NorMuon's mean of squares of a row (or a column), held at the weight's
    shape with every entry along the mean's axis equal (tensorgpt's muon_update); None if
    each is so. Muon's matrices are the weight table's, as its groups read them."""
    for name, w in weight_table(ckpt['config']).items():
        if w.role == 'matrix':
            v = ckpt['adam']['v'][name]
            rows, cols = v.shape
            if not (v == (v[:, :1] if rows >= cols else v[:1])).all():  # muon_update's axis
                return name
    return None


def flat(arrays):
    """One float64 vector from a list of floats (scalar mode's Adam moments) or of arrays
    (tensor mode's): in the weights' order."""
    return np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays]) \
        if len(arrays) else np.zeros(0)


def fill(dst, values):
    """Write a flat vector back into a list of floats or of arrays, in place."""
    i = 0
    for j, d in enumerate(dst):
        if np.ndim(d) == 0:
            dst[j], i = float(values[i]), i + 1
        else:
            d[...] = values[i:i + d.size].reshape(d.shape)
            i += d.size


# ---------------------------------------------------------------------------
# Sampling
def sample(model, rng, bos, temperature=0.5, prompt=(), top_k=None):
    """One document's token ids after `prompt`, drawn from rng (see either model's sample)."""
    return lib_of(model).sample(model, rng, bos, temperature, prompt, top_k)


# ---------------------------------------------------------------------------
# What tensor mode's kernels need of the process.
def use_threads(cfg):
    """Run BLAS and numba with the run's threads (see threads_of); returns that count, which
    the run records. The count is a setting: OpenBLAS splits a product's sums across its
    threads, so they round differently with another count. (numba's kernels give the same
    numbers with any count; it runs at most the threads it started with.)"""
    import threadpoolctl
    n = threads_of(cfg)
    threadpoolctl.threadpool_limits(n)
    if cfg['mode'] == 'tensor':
        import numba
        lib('tensor').configure_process()  # its threading layer, before its threads start
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return n


def threads_of(cfg):
    """The BLAS threads a run of cfg runs: its --threads, or (auto) the cores, as many as
    this machine's BLAS runs. A UserError if --threads asks for more than it runs (its
    build's limit: 64 for NumPy's OpenBLAS), which it would silently cap."""
    import threadpoolctl
    n = cfg['threads'] or os.cpu_count() or 1
    with threadpoolctl.threadpool_limits(n, user_api='blas'):  # asked, then read back
        most = min([p['num_threads'] for p in threadpoolctl.threadpool_info()
                    if p['user_api'] == 'blas'], default=n)
    if most < n and cfg['threads']:
        raise UserError(f"--threads {n}: this machine's BLAS runs at most {most} threads")
    return min(n, most)


def warm_up(cfg):
    """Seconds that numba took to compile (or load from its cache) every kernel, now, so
    that the training time counts training only."""
    t0 = time.perf_counter()
    if cfg['mode'] == 'tensor':
        lib('tensor').warm_up(cfg['dtype'])
    return time.perf_counter() - t0
