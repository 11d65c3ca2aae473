"""Tests of tensorgpt.py, in the file's own order. Part I: Tensor, every op's gradient
against finite differences, the model against microgpt.py, AdamW, Muon, the schedule,
training, sampling, the reference run, and Part I alone training and sampling. Part II: every
kernel against the Part I function it replaces (P1, Part I alone, NumPy's math), then the
plumbing (Adam's flat buffer, threads, memory, numba's cache, warm_up)."""
import math
import os
import gc
import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import microgpt
import tensorgpt as tg
from conftest import NAMES, ROOT, part_one_source, tensorgpt_part_one

P1 = tensorgpt_part_one()  # the oracle: what each kernel computes, in NumPy

dims = st.integers(1, 5)
values = st.floats(-2, 2, allow_nan=False, width=64)
seeds = st.integers(0, 2 ** 32 - 1)
dtypes = st.sampled_from([np.float32, np.float64])


def weights_of(model):
    """{name: float64 array} of either model's weights."""
    if isinstance(model, microgpt.GPT):
        return {n: np.array([[p.data for p in row] for row in w]) for n, w in model.state_dict.items()}
    return {n: t.data.astype(np.float64) for n, t in model.state_dict.items()}


def load_weights(model, weights):
    for name, t in model.state_dict.items():
        t.data[...] = weights[name]


def assert_close(a, b, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@st.composite
def arrays(draw, shape, elements=values):
    return draw(hnp.arrays(np.float64, shape, elements=elements))


@st.composite
def packed_batches(draw, max_len=6):
    """starts [B + 1]: B documents of 1..T positions packed back to back, one of length T."""
    T = draw(st.integers(1, max_len))
    lengths = draw(st.lists(st.integers(1, T), min_size=1, max_size=4))
    lengths[draw(st.integers(0, len(lengths) - 1))] = T
    return np.concatenate([[0], np.cumsum(lengths)])


def grad_check(fn, *arrays, seed=0, h=1e-6, rtol=1e-6, atol=1e-8):
    """Autograd gradients of sum(fn(*tensors) * R), for a random R, against central
    differences, for every input of every array. A difference quotient is no truer than
    the rounding of the sum it divides by 2h, about eps * sum|fn * R| / h: that is the
    least absolute tolerance (1e-7 for a sum of 400, where the gradients are O(1))."""
    tensors = [tg.Tensor(a.copy()) for a in arrays]
    out = fn(*tensors)
    R = np.random.default_rng(seed).standard_normal(out.data.shape)
    out.backward(R)
    atol = max(atol, np.finfo(out.data.dtype).eps * np.sum(np.abs(out.data * R)) / h)
    for a, t in zip(arrays, tensors):
        numeric = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            def f(delta):
                x = a.copy()
                x[i] += delta
                return np.sum(fn(*(tg.Tensor(x if b is a else b) for b in arrays)).data * R)
            numeric[i] = (f(h) - f(-h)) / (2 * h)
        np.testing.assert_allclose(t.grad, numeric, rtol=rtol, atol=atol)


# ===========================================================================
# Part I: the GPT, on NumPy alone
# ===========================================================================

# ---------------------------------------------------------------------------
# Autograd: Tensor, and the chain rule's walk and sum in Tensor.backward()
def test_unbroadcast_sums_the_broadcast_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(tg.unbroadcast(g, (3, 1)), g.sum(axis=(0, 2))[:, None])
    assert tg.unbroadcast(g, (2, 3, 4)) is g


def test_gradients_accumulate_over_paths_and_calls():
    x = tg.Tensor(np.array([1.0, -2.0]))
    y = tg.add(tg.add(x, x), x)  # 3x
    y.backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    y.backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])


# ---------------------------------------------------------------------------
# Ops, in the file's order, each one's gradient against finite differences (grad_check)
# add
@given(st.data())
def test_add_broadcast_grad_matches_finite_difference(data):
    shape = data.draw(st.lists(dims, min_size=1, max_size=3))
    b_shape = [data.draw(st.sampled_from([1, n])) for n in shape[data.draw(st.integers(0, len(shape) - 1)):]]
    a, b = data.draw(arrays(tuple(shape))), data.draw(arrays(tuple(b_shape)))
    grad_check(tg.add, a, b)
    grad_check(tg.add, b, a)


# embedding
@given(st.data())
def test_embedding_grad_matches_finite_difference(data):
    V, C = data.draw(dims), data.draw(dims)
    ids = np.array(data.draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=8)))  # with repeats
    grad_check(lambda w: tg.embedding(w, ids.reshape(1, -1)), data.draw(arrays((V, C))))


# linear
@given(st.data())
def test_linear_grad_matches_finite_difference(data):
    lead = tuple(data.draw(st.lists(dims, min_size=1, max_size=2)))
    nin, nout = data.draw(dims), data.draw(dims)
    grad_check(tg.linear, data.draw(arrays(lead + (nin,))), data.draw(arrays((nout, nin))))


@given(st.data())
def test_linear_with_a_bias_grad_matches_finite_difference(data):
    N, nin, nout = data.draw(dims), data.draw(dims), data.draw(dims)
    grad_check(tg.linear, data.draw(arrays((N, nin))), data.draw(arrays((nout, nin))),
               data.draw(arrays((1, nout))))


# mul
@given(st.data())
def test_mul_grad_matches_finite_difference_broadcasting_either_way(data):
    """a * b: two tensors, either one broadcast ([N, K, D] * [N, K, 1], [N, C] * [1, 1]),
    or a tensor times a constant."""
    N, K, D = data.draw(dims), data.draw(dims), data.draw(dims)
    grad_check(tg.mul, data.draw(arrays((N, K, D))), data.draw(arrays((N, K, 1))))
    grad_check(tg.mul, data.draw(arrays((1, 1))), data.draw(arrays((N, D))))
    s = data.draw(arrays((D,)))
    grad_check(lambda t: tg.mul(t, s), data.draw(arrays((N, D))))


# index
@given(st.data())
def test_index_grad_matches_finite_difference_for_slices_and_repeated_rows(data):
    """x[key]: a slice's gradient lands where it came from, 0 elsewhere; rows picked more
    than once (grouped-query attention's shared heads) get each copy's gradient."""
    N, C = data.draw(dims), data.draw(dims)
    n = data.draw(st.integers(1, C))
    grad_check(lambda t: tg.index(t, np.s_[:, :n]), data.draw(arrays((N, C))))
    grad_check(lambda t: tg.index(t, np.s_[:, n - 1:n]), data.draw(arrays((1, C))))
    ids = np.array(data.draw(st.lists(st.integers(0, N - 1), min_size=1, max_size=6)))
    grad_check(lambda t: tg.index(t, ids), data.draw(arrays((N, C))))
    grad_check(lambda t: tg.index(t, (slice(None), ids % C)), data.draw(arrays((N, C))))
    g = np.ones((len(ids), C))
    x = tg.Tensor(np.zeros((N, C)))
    tg.index(x, ids).backward(g)
    np.testing.assert_array_equal(x.grad[:, 0], np.bincount(ids, minlength=N))  # each copy counted


# reshape
@given(st.data())
def test_place_grad_matches_finite_difference_and_undoes_index(data):
    """place(x, shape, key): zeros but x at [key], so that index(place(x), key) is x."""
    N, C = data.draw(dims), data.draw(dims)
    n = data.draw(st.integers(1, C))
    grad_check(lambda t: tg.place(t, (N, C + n), np.s_[:, n:]), data.draw(arrays((N, C))))
    x = data.draw(arrays((N, C)))
    y = tg.place(tg.Tensor(x), (N, C + n), np.s_[:, n:]).data
    assert not y[:, :n].any() and np.array_equal(tg.index(tg.Tensor(y), np.s_[:, n:]).data, x)


@given(st.data())
def test_reshape_grad_matches_finite_difference(data):
    N, K, D = data.draw(dims), data.draw(dims), data.draw(dims)
    grad_check(lambda t: tg.reshape(t, (N, K, D)), data.draw(arrays((N, K * D))))


# concat
@given(st.data(), st.integers(0, 1))
def test_concat_grad_matches_finite_difference(data, axis):
    C = data.draw(dims)
    shape = lambda: (data.draw(dims), C)[::1 - 2 * axis]  # axis 1: [C, n] each
    grad_check(lambda *ts: tg.concat(*ts, axis=axis), *(data.draw(arrays(shape())) for _ in range(3)))


# elementwise, with each of FUNCTIONS, and softcap
@given(st.data())
def test_relu_grad_matches_finite_difference(data):
    away_from_kink = values.filter(lambda v: abs(v) > 1e-3)
    grad_check(lambda x: tg.elementwise(x, tg.FUNCTIONS['relu']), data.draw(arrays((data.draw(dims), data.draw(dims)), away_from_kink)))


@pytest.mark.parametrize('kind', ['relu2', 'gelu', 'sigmoid'])
@given(st.data())
def test_activation_grad_matches_finite_difference(kind, data):
    away_from_kink = values.filter(lambda v: abs(v) > 1e-3)  # relu2's second derivative jumps at 0
    grad_check(lambda x: tg.elementwise(x, tg.FUNCTIONS[kind]), data.draw(arrays((data.draw(dims), data.draw(dims)),
                                                              away_from_kink)))


def test_activations_are_their_textbook_formulas():
    x = np.linspace(-4, 4, 81)
    np.testing.assert_array_equal(P1.relu2_forward(x), np.where(x > 0, x * x, 0))
    from math import erf
    exact = np.array([0.5 * v * (1 + erf(v / np.sqrt(2))) for v in x])  # GELU's definition
    np.testing.assert_allclose(P1.gelu_forward(x)[0], exact, atol=1e-3)  # tanh form: close


@given(st.data(), st.floats(0.1, 20))
def test_softcap_grad_matches_finite_difference(data, cap):
    x = data.draw(arrays((3, 4), elements=st.floats(-40, 40)))
    grad_check(lambda t: tg.elementwise(t, tg.softcap(cap)), x)
    y = tg.elementwise(tg.Tensor(x), tg.softcap(cap)).data
    assert np.all(np.abs(y) <= cap)
    assert np.allclose(tg.elementwise(tg.Tensor(x / 1e6), tg.softcap(cap)).data, x / 1e6)


# rmsnorm
@given(st.data())
def test_rmsnorm_grad_matches_finite_difference(data):
    x = data.draw(arrays((data.draw(dims), data.draw(dims), data.draw(dims))))
    grad_check(tg.rmsnorm, x, rtol=1e-5, atol=1e-6)  # rows near 0 curve hard: looser differences


def test_rmsnorm_is_microgpts_formula():
    x = np.array([[3.0, -4.0]])
    np.testing.assert_allclose(tg.rmsnorm(tg.Tensor(x)).data, x * (12.5 + 1e-5) ** -0.5, rtol=1e-15)


# layernorm
@given(st.data())
def test_layernorm_grad_matches_finite_difference(data):
    N, C = data.draw(dims), data.draw(st.integers(2, 5))
    x = data.draw(arrays((N, C)))
    gain, bias = data.draw(arrays((1, C))), data.draw(arrays((1, C)))
    assume(np.ptp(x, axis=-1).min() > 0.1)  # a row of one value: its variance, near 0, curves hard
    grad_check(tg.layernorm, x, gain, bias, rtol=1e-5, atol=1e-6)


def test_layernorm_is_the_textbook_formula():
    x = np.array([[1.0, 2.0, 6.0]])
    y = tg.layernorm(tg.Tensor(x), tg.Tensor(np.array([[2.0, 1.0, 1.0]])), tg.Tensor(np.array([[0.5, 0, 0]])))
    np.testing.assert_allclose(y.data, (x - 3) / np.sqrt(14 / 3 + 1e-5) * [2, 1, 1] + [0.5, 0, 0], rtol=1e-14)


# rope
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), seeds)
def test_qk_rmsnorm_grad_matches_finite_difference(N, n_head, D, seed):
    qkv = np.random.default_rng(seed).standard_normal((N, 3 * n_head * D)) + 0.5
    grad_check(lambda t: tg.qk_rmsnorm(t, n_head), qkv, rtol=1e-5, atol=1e-6)
    y = tg.qk_rmsnorm(tg.Tensor(qkv), n_head).data.reshape(N, 3, n_head, D)
    np.testing.assert_array_equal(y[:, 2], qkv.reshape(N, 3, n_head, D)[:, 2])  # v as it was
    qk = qkv.reshape(N, 3, n_head, D)[:, :2]                                     # q, k: rmsnormed
    np.testing.assert_allclose(y[:, :2], qk / np.sqrt(np.mean(qk ** 2, axis=-1, keepdims=True) + 1e-5),
                               rtol=1e-12)


@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 3), seeds)
def test_rope_grad_matches_finite_difference(N, n_head, half, seed):
    rng = np.random.default_rng(seed)
    qkv, positions = rng.standard_normal((N, 3 * n_head * 2 * half)), rng.integers(0, 50, N)
    grad_check(lambda t: tg.rope(t, tg.rope_angles(positions, 2 * half, np.float64), n_head), qkv)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 100), seeds)
def test_rope_scores_depend_only_on_how_far_apart(n_head, half, shift, seed):
    """q_i . k_j after rope depends on i - j alone: shifting every position changes nothing."""
    D, rng = 2 * half, np.random.default_rng(seed)
    qkv, positions = rng.standard_normal((6, 3 * n_head * D)), np.arange(6)
    scores = []
    for p in (positions, positions + shift):
        y = tg.rope(tg.Tensor(qkv), tg.rope_angles(p, D, np.float64), n_head).data.reshape(6, 3, n_head, D)
        scores.append(np.einsum('ihd,jhd->hij', y[:, 0], y[:, 1]))
    np.testing.assert_allclose(scores[1], scores[0], rtol=1e-9, atol=1e-9)


# dropout
@given(st.data())
def test_dropout_grad_matches_finite_difference(data):
    x = data.draw(arrays((data.draw(dims), data.draw(dims))))
    keep = tg.DropoutStream(data.draw(seeds)).keep(x.shape, 0.5, np.float64)
    grad_check(lambda t: tg.dropout(t, keep), x)


# attention
@given(packed_batches(), st.integers(1, 3), st.integers(1, 3), seeds)
def test_attention_grad_matches_finite_difference(starts, n_head, D, seed):
    qkv = np.random.default_rng(seed).standard_normal((starts[-1], 3 * n_head * D))
    grad_check(lambda qkv: tg.attention(qkv, starts, n_head), qkv)


@given(packed_batches(), st.integers(1, 3), st.integers(1, 3), seeds)
def test_attention_with_dropout_grad_matches_finite_difference(starts, n_head, D, seed):
    qkv = np.random.default_rng(seed).standard_normal((starts[-1], 3 * n_head * D))
    drop = lambda shape: tg.DropoutStream(seed).keep(shape, 0.3, np.float64)  # the same each call
    grad_check(lambda qkv: tg.attention(qkv, starts, n_head, drop=drop), qkv)


# cross_entropy
@given(st.integers(1, 12), st.integers(1, 6), seeds)
def test_cross_entropy_grad_matches_finite_difference(N, V, seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, V, N)
    weights = rng.random(N) * (rng.random(N) < 0.7)  # some positions count for nothing
    grad_check(lambda l: tg.cross_entropy(l, targets, weights), 3 * rng.standard_normal((N, V)))


# ---------------------------------------------------------------------------
# The model: its weights (the table, each init), then the GPT's parts, against microgpt.py
GPT2 = {'norm': 'layernorm', 'activation': 'gelu', 'final_norm': True, 'tie_lm_head': True,
        'input_rmsnorm': False, 'bias': True, 'init': 'gpt2'}
NANOCHAT = {'activation': 'relu2', 'position': 'rope', 'qk_norm': True, 'final_norm': True,
            'qk_scale': 1.2, 'rope_base': 100000.0, 'softcap': 15.0, 'norm_eps': 2.0 ** -23,
            'value_embeddings': True, 'residual_scalars': True, 'init': 'nanochat'}
CONFIGS = {  # every architecture choice, alone and together, by name
    'reference': {},
    'tied head': {'tie_lm_head': True},
    'no input rmsnorm': {'input_rmsnorm': False},
    '2 layers': {'n_layer': 2},
    'tied, no input rmsnorm, 2 small layers': {'n_layer': 2, 'tie_lm_head': True, 'input_rmsnorm': False,
                                               'n_embd': 8, 'n_head': 2, 'block_size': 5},
    'relu2': {'activation': 'relu2'},
    'gelu, 2 layers': {'activation': 'gelu', 'n_layer': 2},
    'final norm': {'final_norm': True},
    'final norm, tied, relu2': {'final_norm': True, 'tie_lm_head': True, 'activation': 'relu2'},
    'layernorm': {'norm': 'layernorm'},
    'layernorm, no input norm, 2 layers': {'norm': 'layernorm', 'input_rmsnorm': False, 'n_layer': 2},
    'rope': {'position': 'rope'},
    'no position': {'position': 'none'},
    'qk norm': {'qk_norm': True},
    'qk norm, rope, 2 layers': {'qk_norm': True, 'position': 'rope', 'n_layer': 2},
    'qk scale': {'qk_scale': 1.2},
    'qk norm and scale': {'qk_norm': True, 'qk_scale': 1.2},
    'rope base': {'position': 'rope', 'rope_base': 100000.0},
    'softcap': {'softcap': 15.0},
    'tight softcap, tied': {'softcap': 0.5, 'tie_lm_head': True},
    'biases': {'bias': True},
    'biases, layernorm, GQA': {'bias': True, 'norm': 'layernorm', 'n_kv_head': 2},
    'norm eps, qk norm': {'norm_eps': 1e-7, 'qk_norm': True},
    'gpt2 init, 2 layers': {'init': 'gpt2', 'n_layer': 2},
    # value embeddings in the last layer and the first
    'nanochat init, value embeddings, 3 layers': {'init': 'nanochat', 'value_embeddings': True, 'n_layer': 3},
    # the gates read 12 of 32 channels
    'value embeddings, MQA, 32 channels': {'value_embeddings': True, 'n_kv_head': 1, 'n_layer': 2,
                                           'n_embd': 32, 'n_head': 2},
    'GQA, rope, qk norm': {'n_kv_head': 2, 'position': 'rope', 'qk_norm': True},
    'residual scalars, 2 layers': {'residual_scalars': True, 'n_layer': 2},
    'GPT-2': GPT2,
    'nanochat': NANOCHAT}
documents = st.lists(st.integers(0, 9), max_size=20).map(lambda ids: [10] + ids + [10])  # BOS = 10


def models(seed, **config):
    """microgpt's and tensorgpt's GPT (float64) made from the same seed."""
    return (microgpt.GPT(microgpt.GPTConfig(11, **config), random.Random(seed)),
            tg.GPT(tg.GPTConfig(11, dtype='float64', **config), random.Random(seed)))


# its weights
def test_same_seed_gives_microgpts_weights():
    ref, model = models(3, n_layer=2, tie_lm_head=True)
    assert list(model.state_dict) == list(ref.state_dict)
    for name, w in weights_of(ref).items():
        np.testing.assert_array_equal(weights_of(model)[name], w)
    f32 = tg.GPT(tg.GPTConfig(11, n_layer=2, tie_lm_head=True), random.Random(3))
    assert all(t.data.dtype == np.float32 for t in f32.params)
    assert vars(f32.config) == {**vars(ref.config), 'dtype': 'float32', 'dropout': 0.0}  # tensor mode's
    np.testing.assert_array_equal(f32.state_dict['wte'].data, model.state_dict['wte'].data.astype(np.float32))


def test_each_init_draws_as_its_authors_do():
    c = lambda init: tg.GPTConfig(50, n_embd=64, n_head=4, n_layer=2, block_size=32, init=init,
                                  dtype='float64', residual_scalars=True, bias=True, value_embeddings=True)
    sd = lambda init: {k: t.data for k, t in tg.GPT(c(init), random.Random(0)).state_dict.items()}
    g, n = sd('gpt2'), sd('nanochat')
    assert g['wte'].std() == pytest.approx(0.02, rel=0.05) and g['layer1.mlp_fc1'].std() == pytest.approx(0.02, rel=0.05)
    assert g['layer0.attn_wo'].std() == pytest.approx(0.02 / 2, rel=0.05)  # 0.02 / sqrt(2 n_layer)
    assert g['layer0.mlp_fc2'].std() == pytest.approx(0.01, rel=0.05) and not g['layer0.mlp_fc1_bias'].any()
    s = 64 ** -0.5  # nanochat: uniform with this std, 0.4 of it in mlp_fc1; projections 0
    assert n['wte'].std() == pytest.approx(0.8, rel=0.05) and n['lm_head'].std() == pytest.approx(0.001, rel=0.05)
    assert n['layer0.attn_wq'].std() == pytest.approx(s, rel=0.05) and np.abs(n['layer0.attn_wk']).max() <= 3 ** 0.5 * s
    assert n['layer0.mlp_fc1'].std() == pytest.approx(0.4 * s, rel=0.05)
    assert not n['layer1.attn_wo'].any() and not n['layer1.mlp_fc2'].any()
    assert n['layer1.value_embed'].std() == pytest.approx(s, rel=0.05) and 0 <= n['layer1.ve_gate'].min() < n['layer1.ve_gate'].max() <= 0.02
    np.testing.assert_allclose(n['resid_lambdas'], [[1.15, 1.05]])
    np.testing.assert_allclose(n['x0_lambdas'], [[0.2, 0.05]])


# its parts: the forward pass and the loss, with every choice, against microgpt.py's
@pytest.mark.parametrize('config', CONFIGS.values(), ids=list(CONFIGS))
@settings(max_examples=5)
@given(doc=documents, seed=seeds)
def test_loss_and_gradients_match_microgpt(config, doc, seed):
    ref, model = models(seed, **config)
    ref_loss = ref.loss(doc)
    ref_loss.backward()
    loss = model.loss([doc])
    loss.backward()
    assert float(loss.data) == pytest.approx(ref_loss.data, rel=1e-12)
    for name, t in model.state_dict.items():
        ref_grad = np.array([[p.grad for p in row] for row in ref.state_dict[name]])
        np.testing.assert_allclose(t.grad, ref_grad, rtol=0, atol=1e-10)


@settings(max_examples=5)
@given(st.lists(documents, min_size=1, max_size=3), seeds)
def test_model_grad_matches_finite_difference(docs, seed):
    model = tg.GPT(tg.GPTConfig(11, n_embd=8, n_head=2, n_layer=2, block_size=8, dtype='float64'), random.Random(seed))
    model.loss(docs).backward()
    rng = np.random.default_rng(seed)
    for t in model.params:
        for _ in range(2):
            i = tuple(rng.integers(0, n) for n in t.data.shape)
            w = t.data[i]
            def central(h):
                t.data[i] = w + h
                up = float(model.loss(docs).data)
                t.data[i] = w - h
                down = float(model.loss(docs).data)
                t.data[i] = w
                return (up - down) / (2 * h)
            # a ReLU's kink within h of a weight spoils that step's difference, not a smaller one's
            assert any(t.grad[i] == pytest.approx(central(h), rel=1e-5, abs=1e-8) for h in (1e-6, 1e-7))


@given(st.integers(1, 12), st.integers(1, 3), st.integers(1, 2), seeds)
def test_attention_maps_are_the_forward_passes_rows_summing_to_one_and_causal(T, n_head, n_layer, seed):
    model = tg.GPT(tg.GPTConfig(7, n_embd=2 * n_head, n_head=n_head, n_layer=n_layer, block_size=12, dtype='float64'), random.Random(seed))
    ids = np.array(random.Random(seed).choices(range(7), k=T))
    maps = []
    logits = model.forward(ids, np.arange(T), np.array([0, T]), attention_maps=maps).data
    np.testing.assert_array_equal(logits, model.forward(ids, np.arange(T), np.array([0, T])).data)
    assert len(maps) == n_layer and all(m.shape == (1, n_head, T, T) for m in maps)
    for m in maps:
        np.testing.assert_allclose(m.sum(axis=-1), 1.0, rtol=1e-12)
        assert not np.triu(m[0], k=1).any()  # no position looks ahead


@given(st.data())
def test_value_embeddings_and_residual_scalars_grads_match_finite_difference(data):
    """The two choices built of general ops (index, mul, reshape, concat, sigmoid), as one
    function of their inputs and weights."""
    H, K, D = data.draw(st.sampled_from([(2, 1, 2), (2, 2, 3), (4, 2, 2)]))
    N, V = data.draw(dims), 5
    model = tg.GPT(tg.GPTConfig(V, n_embd=H * D, n_head=H, n_kv_head=K, n_layer=1, value_embeddings=True,
                                residual_scalars=True, dtype='float64'), random.Random(0))
    tokens = np.array(data.draw(st.lists(st.integers(0, V - 1), min_size=N, max_size=N)))
    sd = model.state_dict
    def choices(qkv, x, ve, gate, lambdas):
        sd['layer0.value_embed'], sd['layer0.ve_gate'], sd['resid_lambdas'] = ve, gate, lambdas
        return tg.add(model.value_embedding(qkv, x, tokens, 'layer0.'),
                      tg.concat(*[model.residual_scalars(x, x, 0)] * 3, axis=1))
    grad_check(choices, data.draw(arrays((N, 3 * H * D))), data.draw(arrays((N, H * D))),
               data.draw(arrays((V, K * D))), data.draw(arrays((K, min(12, H * D)))),
               data.draw(arrays((1, 1))))


def test_dropout_is_on_while_training_only():
    docs = [[10, 1, 2, 3, 10], [10, 4, 5, 10]]
    plain = tg.GPT(tg.GPTConfig(11, dtype='float64'), random.Random(0))
    model = tg.GPT(tg.GPTConfig(11, dtype='float64', dropout=0.3), random.Random(0))
    assert all(np.array_equal(w, weights_of(plain)[n]) for n, w in weights_of(model).items())
    # evaluation, validation and sampling: deterministic, and P = 0's
    assert tg.evaluate(model, docs) == tg.evaluate(model, docs) == tg.evaluate(plain, docs)
    assert tg.sample(model, random.Random(1), 10) == tg.sample(plain, random.Random(1), 10)
    assert model.dropout_stream.count == 0
    trained = [float(model.loss(docs, training=True).data) for _ in range(2)]
    assert model.dropout_stream.count > 0 and trained[0] != trained[1] != float(plain.loss(docs).data)


@settings(max_examples=10)
@given(st.lists(documents, min_size=1, max_size=5), seeds)
def test_batch_loss_is_the_mean_of_document_losses(docs, seed):
    """Batching changes nothing: a batch's loss and gradient are the means of its documents'."""
    model = tg.GPT(tg.GPTConfig(11, n_embd=8, n_head=2, block_size=8, dtype='float64'), random.Random(seed))
    loss = model.loss(docs)
    loss.backward()
    batch_grads = [t.grad.copy() for t in model.params]
    for t in model.params:
        t.grad[...] = 0
    singles = []
    for doc in docs:
        single = model.loss([doc])
        single.backward()
        singles.append(float(single.data))
    assert float(loss.data) == pytest.approx(np.mean(singles), rel=1e-12)
    for g, t in zip(batch_grads, model.params):
        np.testing.assert_allclose(g, t.grad / len(docs), rtol=1e-9, atol=1e-13)


def test_a_batch_of_windows_has_the_loss_of_the_same_windows_as_documents():
    model = tg.GPT(tg.GPTConfig(6, n_embd=8, n_head=2, block_size=5, dtype='float64'), random.Random(1))
    windows = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    as_docs = float(model.loss([list(w) for w in windows]).data)
    assert float(model.loss(windows).data) == pytest.approx(as_docs, rel=1e-12)


# the KV cache, for sampling
KV_CACHE_CASES = {  # name: (dtype, choices)
    'reference, float32': ('float32', {}),
    'reference, float64': ('float64', {}),
    'relu2': ('float64', {'activation': 'relu2'}),
    'gelu, float32': ('float32', {'activation': 'gelu'}),
    'final norm': ('float64', {'final_norm': True}),
    'layernorm': ('float64', {'norm': 'layernorm'}),
    'rope': ('float64', {'position': 'rope'}),
    'rope, qk norm, float32': ('float32', {'position': 'rope', 'qk_norm': True}),
    'no position': ('float64', {'position': 'none'}),
    'qk norm': ('float64', {'qk_norm': True}),
    'dropout, off when not training': ('float64', {'dropout': 0.5}),
    'qk norm and scale': ('float64', {'qk_norm': True, 'qk_scale': 1.2}),
    'rope base, float32': ('float32', {'position': 'rope', 'rope_base': 100000.0}),
    'softcap': ('float64', {'softcap': 2.0}),
    'biases, MQA': ('float64', {'bias': True, 'n_kv_head': 1}),
    'value embeddings, residual scalars': ('float64', {'value_embeddings': True, 'residual_scalars': True}),
    'value embeddings, MQA, float32': ('float32', {'value_embeddings': True, 'n_kv_head': 1}),
    'GPT-2': ('float64', GPT2),
    'nanochat, float32': ('float32', NANOCHAT)}


@pytest.mark.parametrize('dtype, choices', KV_CACHE_CASES.values(), ids=list(KV_CACHE_CASES))
@settings(max_examples=5)
@given(docs=st.lists(documents, min_size=1, max_size=3), seed=seeds)
def test_kv_cache_logits_match_full_forward(dtype, choices, docs, seed):
    model = tg.GPT(tg.GPTConfig(11, n_embd=8, n_head=2, n_layer=2, block_size=6, dtype=dtype, **choices), random.Random(seed))
    T = 6
    tokens = np.array([(d + [0] * T)[:T] for d in docs])  # [B, T]
    full = model.forward(tokens.ravel(), np.tile(np.arange(T), len(docs)), np.arange(0, tokens.size + 1, T))
    full = full.data.reshape(len(docs), T, -1)
    cache = model.kv_cache(len(docs))
    tol = 1e-4 if dtype == 'float32' else 1e-12
    for pos in range(T):
        step = model.next_logits(tokens[:, pos], pos, cache)
        assert step.dtype == dtype
        np.testing.assert_allclose(step, full[:, pos], rtol=tol, atol=tol)


# ---------------------------------------------------------------------------
# AdamW: Adam with bias correction, clipping and weight decay
def test_adam_step_is_microgpts():
    rng = random.Random(0)
    values = [microgpt.Value(rng.gauss(0, 1)) for _ in range(6)]
    tensor = tg.Tensor(np.array([p.data for p in values]).reshape(2, 3))
    adam, ref = tg.Adam([tensor]), microgpt.Adam(values)
    for step in range(3):
        grads = [rng.gauss(0, 1) for _ in values]
        for p, g in zip(values, grads):
            p.grad = g
        tensor.grad[...] = np.reshape(grads, (2, 3))
        adam.step(0.01 * (1 - step / 3))
        ref.step(0.01 * (1 - step / 3))
    np.testing.assert_allclose(tensor.data.ravel(), [p.data for p in values], rtol=1e-15)
    np.testing.assert_allclose(adam.m[0].ravel(), ref.m, rtol=1e-15)
    assert adam.t == 3 and not tensor.grad.any()


@pytest.mark.parametrize('clip, scale', [(2.0, 2 / (5 + 1e-6)), (10.0, 1.0), (0.0, 1.0)])
def test_clipping_scales_the_gradient_down_to_the_clip_norm(clip, scale):
    t = tg.Tensor(np.zeros((1, 4)))
    adam = tg.Adam([t])
    t.grad[...] = [[3.0, 4.0, 0.0, 0.0]]  # norm 5
    adam.step(0.1, grad_clip=clip)
    np.testing.assert_allclose(adam.m[0], (1 - 0.85) * np.array([[3.0, 4.0, 0, 0]]) * scale)


def test_weight_decay_shrinks_weights_with_no_gradient():
    t = tg.Tensor(np.full((2, 2), 3.0))
    adam = tg.Adam([t], weight_decay=0.1)
    adam.step(0.5)  # zero gradient: the update is the decay alone
    np.testing.assert_allclose(t.data, 3.0 * (1 - 0.5 * 0.1))


# ---------------------------------------------------------------------------
# Muon with AdamW: nanochat's optimizer
# The orthogonalisation sends every singular value near 1, and one step equals nanochat's
# fused step (optim.py's muon_step_fused at 92d63d4) as written out here in plain NumPy.
@settings(max_examples=25)
@given(st.integers(1, 24), st.integers(1, 24), seeds)
def test_orthogonalize_sends_every_singular_value_near_one(m, n, seed):
    G = np.random.default_rng(seed).standard_normal((m, n))
    Geq = G / np.linalg.norm(G, axis=1, keepdims=True)
    assume(np.linalg.cond(Geq) < 30)  # (a direction nearly absent is not brought up in 5 steps)
    s = np.linalg.svd(tg.orthogonalize(G), compute_uv=False)
    assert np.all((s > 0.5) & (s < 1.5)), s
    assert np.sqrt(np.sum(s ** 2)) == pytest.approx(math.sqrt(min(m, n)))  # Muon+'s norm
    # its directions: those of G with its rows scaled to one norm (MuonEq), near their U V^T
    U, _, Vt = np.linalg.svd(G / np.linalg.norm(G, axis=1, keepdims=True), full_matrices=False)
    assert np.linalg.norm(tg.orthogonalize(G) - U @ Vt) < 0.5 * math.sqrt(min(m, n))


def muon_step_numpy(p, g, m, v, lr, momentum, beta2, wd):
    """nanochat's muon_step_fused for one matrix, line by line; v its factored [rows, 1] or
    [1, cols] buffer."""
    lerp = lambda a, b, w: a + w * (b - a)
    m = lerp(m, g, 1 - momentum)
    X = lerp(g, m, momentum)
    target = np.linalg.norm(X) / X.shape[-2] ** 0.5
    row_norm = np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-6)
    X = X * (target / row_norm)
    X = X / (np.linalg.norm(X) * 1.01 + 1e-6)
    for a, b, c in tg.POLAR_EXPRESS:
        if X.shape[-2] > X.shape[-1]:
            A = X.T @ X
            X = a * X + X @ (b * A + c * (A @ A))
        else:
            A = X @ X.T
            X = a * X + (b * A + c * (A @ A)) @ X
    X = X * (min(X.shape) ** 0.5 / max(np.linalg.norm(X), 1e-6))
    red = -1 if p.shape[-2] >= p.shape[-1] else -2
    v_mean = np.mean(X ** 2, axis=red, keepdims=True)
    size = X.shape[red]
    v_norm = np.sqrt(v_mean.sum() * size)
    v = lerp(v, v_mean, 1 - beta2)
    step = np.maximum(v, 1e-10) ** -0.5
    v_norm_new = np.sqrt(((v_mean * size) * step ** 2).sum())
    X = X * (step * (v_norm / max(v_norm_new, 1e-10)))
    lr = lr * max(1.0, p.shape[-2] / p.shape[-1]) ** 0.5
    return p - (lr * X + lr * wd * p * ((X * p) >= 0)), m, v


@settings(max_examples=20)
@given(st.integers(1, 12), st.integers(1, 12), seeds)
def test_muon_update_equals_nanochats_step_written_in_numpy(rows, cols, seed):
    rng = np.random.default_rng(seed)
    p, m, g = rng.standard_normal((3, rows, cols))
    v_small = rng.random((rows, 1) if rows >= cols else (1, cols))
    expected, m2, v2 = muon_step_numpy(p, g, m, v_small, 0.02, 0.95, 0.9, 0.1)
    v = np.broadcast_to(v_small, p.shape).copy()  # kept at p's shape
    grad = g.copy()
    tg.muon_update(p, grad, m, v, 0.02, 0.95, 0.9, 0.1)
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m, m2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(v, np.broadcast_to(v2, p.shape), rtol=1e-12, atol=1e-14)
    assert not grad.any()


def test_muon_groups_are_nanochats():
    model = tg.GPT(tg.GPTConfig(11, n_embd=64, n_head=4, n_layer=2, value_embeddings=True, residual_scalars=True,
                                norm='layernorm', bias=True), random.Random(0))
    opt = tg.Muon(model, lr=0.001)
    sd = model.state_dict
    assert [id(p) for p in opt.matrices] == [id(t) for name, t in sd.items() if name.startswith('layer') and
                                             name.split('.')[1] in ('attn_wq', 'attn_wk', 'attn_wv', 'attn_wo', 'mlp_fc1',
                                                                      'mlp_fc2', 've_gate')]
    group = {id(p): (lr, (a.beta1, a.beta2), a.eps, a.weight_decay) for lr, a in opt.adamw for p in a.params}
    s = math.sqrt(768 / 64)  # nanochat's (base_train.py's learning rates, setup_optimizer's rest)
    assert group[id(sd['wte'])] == group[id(sd['wpe'])] == (pytest.approx(0.3 * s), (0.8, 0.995), 1e-10, 0.001)
    assert group[id(sd['lm_head'])] == (pytest.approx(0.008 * s), (0.8, 0.96), 1e-10, 0.01)
    assert group[id(sd['layer1.value_embed'])] == (pytest.approx(0.15 * s), (0.8, 0.995), 1e-10, 0.01)
    assert group[id(sd['resid_lambdas'])] == (0.005, (0.8, 0.95), 1e-10, 0.05)
    assert group[id(sd['x0_lambdas'])] == (0.5, (0.96, 0.95), 1e-10, 0.0)
    assert group[id(sd['layer0.attn_wq_bias'])] == group[id(sd['layer1.mlp_norm_gain'])] == (0.2, (0.8, 0.95), 1e-10, 0.0)
    assert len(group) + len(opt.matrices) == len(model.params) and len(opt.m) == len(model.params)


def get_muon_momentum(it, num_iterations, warmdown_ratio=0.65):
    """nanochat's base_train.py (92d63d4), its lines as they are."""
    warmdown_iters = round(warmdown_ratio * num_iterations)
    warmdown_start = num_iterations - warmdown_iters
    if it < 400:
        frac = it / 400
        return (1 - frac) * 0.85 + frac * 0.97
    elif it >= warmdown_start:
        progress = (it - warmdown_start) / warmdown_iters
        return 0.97 * (1 - progress) + 0.90 * progress
    else:
        return 0.97


@pytest.mark.parametrize('num_steps', [1, 10, 600, 1000, 2000, 5000])
def test_muon_momentum_and_decay_follow_nanochats_schedules(num_steps):
    momentum, decay = tg.nanochat_momentum(num_steps), tg.cosine_decay(0.3, num_steps)
    for s in range(num_steps + 1):  # nanochat's loop steps the optimizer at step num_steps too
        assert momentum(s) == get_muon_momentum(s, num_steps)
        assert decay(s) == 0.3 * 0.5 * (1 + math.cos(math.pi * s / num_steps))  # get_weight_decay
    if num_steps == 2000:  # warm-up to 0.97 by step 400, the plateau, cool-down to 0.90 from 700
        assert (momentum(0), momentum(200), momentum(400), momentum(700), momentum(2000)) == \
            (0.85, pytest.approx(0.91), 0.97, 0.97, pytest.approx(0.90))
        assert (decay(0), decay(1000), decay(2000)) == (0.3, pytest.approx(0.15), pytest.approx(0))


def test_muon_takes_its_momentum_and_decay_at_each_step_from_their_schedules():
    """Muon with functions of the step equals Muon given each step's numbers by hand."""
    make = lambda: tg.GPT(tg.GPTConfig(7, n_embd=8, n_head=2, n_layer=1, block_size=4), random.Random(0))
    scheduled, by_hand = make(), make()
    a = tg.Muon(scheduled, lr=0.01, momentum=lambda s: (0.9, 0.5, 0.7)[s], weight_decay=lambda s: (0.1, 0.3, 0.0)[s])
    b = tg.Muon(by_hand, lr=0.01)
    for step, doc in enumerate([[0, 1, 2, 3], [3, 2, 1], [4, 5, 6, 0]]):
        b.momentum, b.weight_decay = (0.9, 0.5, 0.7)[step], (0.1, 0.3, 0.0)[step]
        for model, opt in ((scheduled, a), (by_hand, b)):
            model.loss([doc]).backward()
            opt.step(0.01)
    assert all((p.data == q.data).all() for p, q in zip(scheduled.params, by_hand.params))
    assert (a.t, b.t) == (3, 3)


# ---------------------------------------------------------------------------
# The learning-rate schedule
@given(st.integers(1, 300), st.integers(0, 50), st.sampled_from(['linear', 'cosine']),
       st.sampled_from([0.0, 1e-4]))
def test_lr_schedule_is_warm_up_then_decay_to_min_lr(num_steps, warmup, kind, min_lr):
    lr, at = 1e-3, tg.lr_schedule(1e-3, num_steps, warmup, kind, min_lr)
    for s in range(num_steps):
        if s < warmup:
            expected = lr * (s + 1) / warmup
        else:
            p = (s - warmup) / (num_steps - warmup)
            factor = (1 + math.cos(math.pi * p)) / 2 if kind == 'cosine' else 1 - p
            expected = min_lr + (lr - min_lr) * factor
        assert at(s) == pytest.approx(expected, rel=1e-12, abs=1e-18)
    assert at(min(warmup, num_steps - 1)) <= lr


def test_the_default_schedule_is_the_references_bit_for_bit():
    at = tg.lr_schedule(0.01, 1000)
    assert all(at(s) == 0.01 * (1 - s / 1000) for s in range(1000))


# ---------------------------------------------------------------------------
# Training and evaluation
def test_train_takes_batches_in_order_and_decays_lr():
    docs = [[10] + [i % 10] * (i % 4) + [10] for i in range(7)]
    model, ref = tg.GPT(tg.GPTConfig(11, dtype='float64'), random.Random(0)), tg.GPT(tg.GPTConfig(11, dtype='float64'), random.Random(0))
    adam = tg.Adam(ref.params)
    out = list(tg.train(model, docs, 3, batch_size=3, lr=0.02))
    for step in range(3):
        batch = [docs[(step * 3 + j) % 7] for j in range(3)]
        loss = ref.loss(batch)
        loss.backward()
        adam.step(0.02 * (1 - step / 3))
        assert out[step] == (step + 1, float(loss.data), sum(len(d) - 1 for d in batch))
    for t, r in zip(model.params, ref.params):
        np.testing.assert_array_equal(t.data, r.data)


def test_evaluate_is_the_mean_document_loss_and_changes_nothing():
    docs = [[10] + [i % 10] * (i % 5) + [10] for i in range(7)]
    model = tg.GPT(tg.GPTConfig(11, dtype='float64'), random.Random(0))
    before = weights_of(model)
    mean = np.mean([float(model.loss([d]).data) for d in docs])
    assert tg.evaluate(model, docs, batch_size=3) == pytest.approx(mean, rel=1e-12)
    assert all(np.array_equal(w, weights_of(model)[n]) for n, w in before.items())
    assert not any(t.grad.any() for t in model.params)


def test_larger_model_runs_in_both_dtypes():
    docs = [[70] + [random.Random(i).randrange(70) for _ in range(300)] + [70] for i in range(2)]
    for dtype in ('float32', 'float64'):
        model = tg.GPT(tg.GPTConfig(71, n_embd=64, n_head=8, n_layer=3, block_size=256, dtype=dtype), random.Random(0))
        losses = [loss for _, loss, _ in tg.train(model, docs, 3, batch_size=2)]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0]
        assert all(t.data.dtype == dtype and t.grad.dtype == dtype for t in model.params)


# ---------------------------------------------------------------------------
# Sampling: a text's continuation (generate), documents (sample, sample_batch), top-k
@pytest.mark.parametrize('position', ['learned', 'rope', 'none'])
def test_a_passage_past_the_block_is_drawn_from_the_forward_pass_of_its_last_block(position):
    model = tg.GPT(tg.GPTConfig(7, block_size=5, dtype='float64', position=position), random.Random(0))
    ids, rng = [1, 2], random.Random(3)
    for _ in range(12):  # past the block: the window slides, its positions from 0 again
        window = np.array(ids[-5:])
        logits = model.forward(window, np.arange(len(window)), np.array([0, len(window)])).data[-1:]
        ids.append(rng.choices(range(7), weights=tg.probabilities(logits, 0.8)[0].tolist())[0])
    assert tg.generate(model, random.Random(3), [1, 2], 12, temperature=0.8) == ids[2:]


def test_generation_past_the_context_is_a_forward_pass_over_the_last_block_size():
    model = tg.GPT(tg.GPTConfig(5, n_embd=8, n_head=2, block_size=4, dtype='float64'), random.Random(2))
    drawn = tg.generate(model, random.Random(7), [1, 2], 12, temperature=0.8)
    rng, ids = random.Random(7), [1, 2]
    for _ in range(12):
        context = ids[-4:]  # the last block_size ids, at positions 0..3
        logits = model.forward(np.array(context), np.arange(len(context)),
                               np.array([0, len(context)])).data[-1].astype(np.float64)
        p = np.exp(logits / 0.8 - (logits / 0.8).max())
        ids.append(rng.choices(range(5), weights=(p / p.sum()).tolist())[0])
    assert drawn == ids[2:] and len(drawn) == 12


@pytest.mark.parametrize('prompt', [(), (3, 4)])
def test_sample_matches_microgpt(prompt):
    ref, model = models(5, block_size=8)
    rng1, rng2 = random.Random(7), random.Random(7)
    for _ in range(5):
        assert tg.sample(model, rng2, 10, 0.8, prompt) == microgpt.sample(ref, rng1, 10, 0.8, prompt)


def test_top_k_draws_only_among_the_k_most_likely():
    model = tg.GPT(tg.GPTConfig(8, n_embd=8, n_head=2, block_size=6, dtype='float64'), random.Random(3))
    logits = model.forward(np.array([7]), np.array([0]), np.array([0, 1])).data
    best = np.argsort(-logits[0])[:2].tolist()
    firsts = {tg.sample(model, random.Random(s), 7, 2.0, top_k=2)[:1][0]
              for s in range(40) if tg.sample(model, random.Random(s), 7, 2.0, top_k=2)}
    assert firsts and firsts <= set(best) | {7}
    greedy = tg.generate(model, random.Random(0), [7], 1, top_k=1)
    assert greedy == [int(np.argmax(logits[0]))]


@pytest.mark.parametrize('top_k', [1, 3])
def test_top_k_samples_agree_in_both_modes(top_k):
    scalar = microgpt.GPT(microgpt.GPTConfig(7, n_embd=8, n_head=2), random.Random(5))
    tensor = tg.GPT(tg.GPTConfig(7, n_embd=8, n_head=2, dtype='float64'), random.Random(0))
    load_weights(tensor, weights_of(scalar))
    for s in range(10):
        assert microgpt.sample(scalar, random.Random(s), 6, 1.0, top_k=top_k) == \
            tg.sample(tensor, random.Random(s), 6, 1.0, top_k=top_k)


def test_sample_batch_draws_documents():
    model = tg.GPT(tg.GPTConfig(11, block_size=8), random.Random(0))
    samples = tg.sample_batch(model, random.Random(1), 10, 20, temperature=1.0, prompt=(3,))
    assert len(samples) == 20 and len({tuple(s) for s in samples}) > 1
    assert all(10 not in s and len(s) <= 7 and all(0 <= t < 10 for t in s) for s in samples)
    assert samples == tg.sample_batch(model, random.Random(1), 10, 20, temperature=1.0, prompt=(3,))


# ---------------------------------------------------------------------------
# The reference run
@pytest.fixture(scope='module')
def names():
    """(state of the generator after the shuffle, characters, token documents), as microgpt.main."""
    docs = [line.strip() for line in NAMES.read_text(encoding='utf-8').splitlines() if line.strip()]
    rng = random.Random(42)
    rng.shuffle(docs)
    uchars = sorted(set(''.join(docs)))
    BOS = len(uchars)
    return rng.getstate(), uchars, [[BOS] + [uchars.index(ch) for ch in doc] + [BOS] for doc in docs]


def generator(state):
    rng = random.Random()
    rng.setstate(state)
    return rng


def test_first_steps_match_microgpt(names):
    state, _, docs = names
    ref, model = microgpt.GPT(microgpt.GPTConfig(27), generator(state)), tg.GPT(tg.GPTConfig(27, dtype='float64'), generator(state))
    ref_losses = [loss for _, loss, _ in microgpt.train(ref, docs, 50)]
    losses = [loss for _, loss, _ in tg.train(model, docs, 50, batch_size=1)]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-10)


def test_reference_run_gives_every_loss_and_sample_the_reference_printed(names, reference):
    state, uchars, docs = names
    rng = generator(state)
    model = tg.GPT(tg.GPTConfig(27, dtype='float64'), rng)
    losses = [loss for _, loss, _ in tg.train(model, docs, 1000, batch_size=1)]
    assert [f"step {i + 1:4d} / 1000 | loss {loss:.4f}" for i, loss in enumerate(losses)] == \
        reference['steps']
    samples = [''.join(uchars[t] for t in tg.sample(model, rng, len(uchars), 0.5)) for _ in range(20)]
    assert [f"sample {i + 1:2d}: {s}" for i, s in enumerate(samples)] == reference['samples']


# ---------------------------------------------------------------------------
# Part I alone: tensorgpt.py with Part II deleted trains and samples, on NumPy alone, with
# the full file's numbers
PART_ONE_RUN = """
import json, random, sys
import numpy as np
import tensorgpt as tg
docs = [[10] + [random.Random(i).randrange(10) for _ in range(i % 9)] + [10] for i in range(40)]
text = np.random.default_rng(0).integers(0, 10, 2000)
def windows(step, r=random.Random(5)):
    return np.stack([text[o:o + 71] for o in [r.randrange(len(text) - 71) for _ in range(3)]])
out = []
for batches, choices in ((docs, dict(position='rope', qk_norm=True, activation='relu2', dropout=0.1)),
                         (windows, dict(norm='layernorm', activation='gelu', final_norm=True,
                                        dropout=0.1, block_size=70, n_embd=8, n_head=2))):
    model = tg.GPT(tg.GPTConfig(11, dtype='float64', **choices), random.Random(1))
    adam = tg.Adam(model.params, weight_decay=0.1, no_decay=model.no_decay)
    losses = [loss for _, loss, _ in tg.train(model, batches, 12, batch_size=4, adam=adam,
                                              grad_clip=1.0)]
    out.append(dict(losses=losses, val=tg.evaluate(model, docs[:10]),
                    samples=[tg.sample(model, random.Random(s), 10) for s in range(3)],
                    passage=tg.generate(model, random.Random(0), [1, 2], 20)))
print(json.dumps(dict(runs=out, numba='numba' in sys.modules)))
"""


def test_part_one_alone_trains_and_samples_with_the_full_files_numbers(tmp_path):
    """Delete Part II: what is left trains and samples, without numba, and in float64 its
    losses are the full file's to 1e-12 (Part II's kernels compute Part I's math)."""
    source = (ROOT / 'tensorgpt.py').read_text(encoding='utf-8')
    (tmp_path / 'tensorgpt.py').write_text(part_one_source(source), encoding='utf-8')
    alone, whole = (json.loads(subprocess.run(  # the whole file where it is: its kernels cached
        [sys.executable, '-c', PART_ONE_RUN], cwd=cwd, capture_output=True, text=True,
        check=True, timeout=300).stdout) for cwd in (tmp_path, ROOT))
    assert not alone['numba'] and whole['numba']
    for a, w in zip(alone['runs'], whole['runs']):
        np.testing.assert_allclose(a['losses'], w['losses'], rtol=1e-12, atol=0)
        assert a['val'] == pytest.approx(w['val'], rel=1e-12)
        assert a['samples'] == w['samples'] and a['passage'] == w['passage']


# ===========================================================================
# Part II: speed
# ===========================================================================

# ---------------------------------------------------------------------------
# Each numba kernel against the Part I function it replaces (P1), in both dtypes, in the order of
# Part II; then the plumbing: Adam's flat buffer, threads, memory, numba's cache, warm_up
# embedding
@given(st.integers(1, 30), dims, dims, dtypes, seeds)
def test_embedding_kernel_matches_numpy(N, V, C, dtype, seed):
    rng = np.random.default_rng(seed)
    ids, g = rng.integers(0, V, N), rng.standard_normal((N, C)).astype(dtype)
    gw = tg.embedding_backward(ids, g, V)
    assert gw.dtype == dtype
    assert_close(gw, P1.embedding_backward(ids, g, V), dtype)


# the activations (each)
@given(dims, st.integers(1, 40), dtypes, seeds)
def test_relu_kernel_matches_numpy(N, C, dtype, seed):
    rng = np.random.default_rng(seed)
    x, g = (rng.standard_normal((N, C)).astype(dtype) for _ in range(2))
    np.testing.assert_array_equal(tg.relu_backward(x, g), P1.relu_backward(x, g))


@given(dims, st.integers(1, 40), dtypes, seeds)
def test_activation_kernels_match_numpy(N, C, dtype, seed):
    rng = np.random.default_rng(seed)
    x, g = (rng.standard_normal((N, C)).astype(dtype) for _ in range(2))
    assert_close(tg.relu2_forward(x), P1.relu2_forward(x), dtype)
    assert_close(tg.relu2_backward(x, g), P1.relu2_backward(x, g), dtype)
    (y, t), (y_np, t_np) = tg.gelu_forward(x), P1.gelu_forward(x)
    assert y.dtype == t.dtype == dtype
    assert_close(y, y_np, dtype)
    assert_close(t, t_np, dtype)
    assert_close(tg.gelu_backward(x, t, g), P1.gelu_backward(x, t, g), dtype)


# rmsnorm
@given(dims, st.integers(1, 40), dtypes, seeds)
def test_rmsnorm_kernels_match_numpy(N, C, dtype, seed):
    rng = np.random.default_rng(seed)
    x, g = (rng.standard_normal((N, C)).astype(dtype) for _ in range(2))
    y, s = tg.rmsnorm_forward(x)
    y_np, s_np = P1.rmsnorm_forward(x)
    assert y.dtype == dtype
    assert_close(y, y_np, dtype)
    assert_close(s, s_np, dtype)
    assert_close(tg.rmsnorm_backward(x, s, g), P1.rmsnorm_backward(x, s, g), dtype)


# layernorm
@given(dims, st.integers(1, 40), dtypes, seeds)
def test_layernorm_kernels_match_numpy(N, C, dtype, seed):
    rng = np.random.default_rng(seed)
    x, g = (rng.standard_normal((N, C)).astype(dtype) for _ in range(2))
    gain, bias = (rng.standard_normal(C).astype(dtype) for _ in range(2))
    out, twin = tg.layernorm_forward(x, gain, bias), P1.layernorm_forward(x, gain, bias)
    for a, b in zip(out, twin):
        assert a.dtype == dtype
        assert_close(a, b, dtype)
    back = tg.layernorm_backward(x, out[1], out[2], gain, g)
    for a, b in zip(back, P1.layernorm_backward(x, out[1], out[2], gain, g)):
        assert a.dtype == dtype
        assert_close(a, b, dtype)


# rope
@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 4), dtypes, seeds)
def test_rope_kernel_matches_numpy(N, n_head, half, dtype, seed):
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((N, 3 * n_head * 2 * half)).astype(dtype)
    cos, sin = tg.rope_angles(rng.integers(0, 50, N), 2 * half, dtype)
    assert_close(tg.rope_rotate(qkv, cos, sin, n_head), P1.rope_rotate(qkv, cos, sin, n_head), dtype)


# dropout
def test_dropout_draws_are_part_ones_and_keep_one_minus_p():
    stream = tg.DropoutStream(2 ** 63 + 12345)
    first, second = stream.keep((300, 400), 0.1, np.float32), stream.keep((7,), 0.1, np.float32)
    assert stream.count == 120007 and first.dtype == np.float32
    twin = P1.dropout_keep(120007, np.uint64(2 ** 63 + 12345), np.uint64(0),
                                 np.uint64(round(0.1 * 2 ** 32)), np.float32(1 / 0.9))
    np.testing.assert_array_equal(np.concatenate([first.ravel(), second]), twin)
    assert set(np.unique(first)) == {0, np.float32(1 / 0.9)}
    assert abs(np.mean(first == 0) - 0.1) < 4 * math.sqrt(0.09 / 120000)  # 4 sigma
    again = tg.DropoutStream(2 ** 63 + 12345, count=120000).keep((7,), 0.1, np.float32)
    np.testing.assert_array_equal(again, second)  # the state is (seed, count): resumable


# ---------------------------------------------------------------------------
# Attention, in one of three ways: in tiles, in each document's triangle, or Part I's math
# in tiles (a text's windows)
def attention_in_tiles(qkv, B, n_head, tile):
    """attention_blocks (attention_fast's way in tiles) as an op: a Tensor in and out."""
    y, backward, _ = tg.attention_blocks(qkv.data, B, n_head, tile=tile)
    return tg.Tensor(y, (qkv,), lambda g: (backward(g),))


@given(st.integers(1, 3), st.integers(1, 40), st.sampled_from([1, 2, 4]), st.integers(1, 5),
       st.integers(1, 50), dtypes, seeds)
def test_attention_in_tiles_is_the_attention_of_each_document(B, T, n_head, D, tile, dtype, seed):
    rng = np.random.default_rng(seed)
    q, k, v, dy = (rng.standard_normal((B * T, n_head * D)).astype(dtype) for _ in range(4))
    starts = np.arange(0, B * T + 1, T)
    qkv = tg.Tensor(np.hstack([q, k, v]))
    y = tg.attention(qkv, starts, n_head)            # in tiles from 32 positions, else triangles
    y_np, att = P1.attention_forward(q, k, v, starts, n_head)
    assert y.data.dtype == dtype
    assert_close(tg.attention_blocks(qkv.data, B, n_head, tile=tile)[0], y_np, dtype)
    y.backward(dy)
    assert_close(qkv.grad, np.hstack(P1.attention_backward(q, k, v, att, dy, starts, n_head)), dtype)


@given(st.integers(1, 3), st.integers(1, 7), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 4), seeds)
def test_attention_of_equal_documents_grad_matches_finite_difference(B, T, n_head, D, tile, seed):
    qkv = np.random.default_rng(seed).standard_normal((B * T, 3 * n_head * D))
    grad_check(lambda qkv: attention_in_tiles(qkv, B, n_head, tile), qkv)


@given(st.integers(1, 3), st.integers(1, 7), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 4), seeds)
def test_attention_in_tiles_with_dropout_is_part_ones(B, T, n_head, D, tile, seed):
    rng = np.random.default_rng(seed)
    q, k, v, dy = (rng.standard_normal((B * T, n_head * D)) for _ in range(4))
    starts = np.arange(0, B * T + 1, T)
    drop = lambda shape: tg.DropoutStream(seed).keep(shape, 0.3, np.float64)  # the same each call
    y, backward, _ = tg.attention_blocks(np.hstack([q, k, v]), B, n_head, drop, tile=tile)
    keep = drop((B, n_head, T, T))  # Part I's one draw, which the tiles take their parts of
    y_np, att = P1.attention_forward(q, k, v, starts, n_head, keep)
    np.testing.assert_allclose(y, y_np, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backward(dy), np.hstack(P1.attention_backward(
        q, k, v, att, dy, starts, n_head, keep)), rtol=1e-12, atol=1e-12)


# A tile's causal softmax (Part II's alone, no Part I function): row t of a tile whose first
# row is position i sees keys j <= i + t; the rest of the row is 0.
def causal_softmax_numpy(scores, scale, i=0):
    T, J = scores.shape[-2:]
    scores = np.where(np.arange(J) <= i + np.arange(T)[:, None], scores * scale, -np.inf)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def causal_softmax_backward_numpy(att, datt, scale):
    return att * (datt - np.sum(att * datt, axis=-1, keepdims=True)) * scale


@given(st.integers(1, 3), st.integers(1, 8), st.integers(0, 40), st.integers(1, 50), dtypes, seeds)
def test_causal_softmax_kernels_match_numpy(B, T, i, J, dtype, seed):
    J = max(J, min(i + T, J))
    rng = np.random.default_rng(seed)
    s, d = (rng.standard_normal((B, 2, T, J)).astype(dtype) for _ in range(2))
    att = s.copy()
    tg.causal_softmax(att, dtype(0.3), i)
    expected = causal_softmax_numpy(s, 0.3, i)
    assert_close(att, expected, dtype)
    ds = d.copy()
    tg.causal_softmax_backward(att, ds, dtype(0.3), i, dtype(0))
    assert_close(ds, causal_softmax_backward_numpy(expected, d, 0.3), dtype)


# in each document's triangle (names)
def check_attention_kernels(starts, n_head, D, dtype, seed):
    rng = np.random.default_rng(seed)
    q, k, v, dy = (rng.standard_normal((starts[-1], n_head * D)).astype(dtype) for _ in range(4))
    y, att = tg.attention_triangles(np.hstack([q, k, v]), starts, n_head)
    y_np, att_np = P1.attention_forward(q, k, v, starts, n_head)
    assert y.dtype == dtype
    assert_close(y, y_np, dtype)
    T = att.shape[-1]
    for b, n in enumerate(np.diff(starts)):  # the kernel sets only each document's triangle
        triangle = np.tril(np.ones((T, T), bool)) & (np.arange(T) < n)[:, None]
        assert_close(np.where(triangle, att[b], 0), att_np[b], dtype)
    for g, g_np in zip(np.hsplit(tg.attention_triangles_backward(np.hstack([q, k, v]), att, dy, starts, n_head), 3),
                       P1.attention_backward(q, k, v, att_np, dy, starts, n_head)):
        assert g.dtype == dtype
        assert_close(g, g_np, dtype)


@given(packed_batches(max_len=20), st.sampled_from([1, 2, 4]), st.integers(1, 8), dtypes, seeds)
def test_attention_kernels_match_numpy(starts, n_head, D, dtype, seed):
    check_attention_kernels(starts, n_head, D, dtype, seed)


@given(packed_batches(), st.integers(1, 3), seeds)
def test_attention_is_causal_within_each_document(starts, n_head, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((starts[-1], 2 * n_head)) for _ in range(3))
    y = tg.attention_triangles(np.hstack([q, k, v]), starts, n_head)[0]
    for last in starts[1:] - 1:  # change a document's last key and value: its own future
        k2, v2 = k.copy(), v.copy()
        k2[last], v2[last] = 100.0, -100.0
        y2 = tg.attention_triangles(np.hstack([q, k2, v2]), starts, n_head)[0]
        np.testing.assert_array_equal(np.delete(y2, last, axis=0), np.delete(y, last, axis=0))


# cross_entropy
@given(st.integers(1, 30), st.integers(1, 70), dtypes, seeds)
def test_cross_entropy_kernels_match_numpy(N, V, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((N, V))).astype(dtype)
    targets = rng.integers(0, V, N)
    weights = rng.random(N) * (rng.random(N) < 0.7)  # some positions count for nothing
    loss, lse = tg.cross_entropy_forward(logits, targets, weights)
    loss_np, lse_np = P1.cross_entropy_forward(logits, targets, weights)
    assert_close(loss, loss_np, dtype)
    assert_close(lse[weights > 0], lse_np[weights > 0], dtype)
    dl = tg.cross_entropy_backward(logits, targets, weights, lse, 0.5)
    assert dl.dtype == dtype
    assert_close(dl, P1.cross_entropy_backward(logits, targets, weights, lse_np, 0.5), dtype)


# ---------------------------------------------------------------------------
# Adam: one pass over all the weights (FlatAdam's flat buffer)
@given(st.integers(1, 50), st.integers(1, 5), dtypes, seeds, st.sampled_from([0.0, 0.1]),
       st.sampled_from([1.0, 0.3]))
def test_adam_kernel_matches_numpy(n, t, dtype, seed, weight_decay, scale):
    rng = np.random.default_rng(seed)
    p, g = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    m, v = rng.standard_normal(n), rng.random(n)
    args = (0.01, 0.85, 0.99, 1e-8, 1 - 0.85 ** t, 1 - 0.99 ** t, 1 - 0.01 * weight_decay, scale)
    twins = [a.copy() for a in (p, g, m, v)]
    tg.adam_update_kernel(p, g, m, v, *args)
    P1.adam_update(*twins, *args)
    for a, b in zip((p, g, m, v), twins):
        assert a.dtype == b.dtype
        assert_close(a, b, dtype)
    assert not g.any()


@given(st.integers(2, 40), st.sampled_from([0.5, 1.0, 100.0]), st.sampled_from([0.0, 0.1]), seeds)
def test_adam_with_clipping_and_decay_matches_part_ones_update(n, clip, weight_decay, seed):
    rng = np.random.default_rng(seed)
    t = tg.Tensor(rng.standard_normal((2, n)))
    adam = tg.Adam([t], weight_decay=weight_decay)
    p, m, v = t.data.copy(), np.zeros(2 * n), np.zeros(2 * n)
    for step in range(1, 4):
        g = rng.standard_normal((2, n)) * 3
        t.grad[...] = g
        norm = np.sqrt(np.sum(g ** 2))
        scale = min(1.0, clip / (norm + 1e-6))
        adam.step(0.01, grad_clip=clip)
        twin_p, twin_g = p.ravel(), g.ravel().copy()
        P1.adam_update(twin_p, twin_g, m, v, 0.01, 0.85, 0.99, 1e-8, 1 - 0.85 ** step,
                             1 - 0.99 ** step, 1 - 0.01 * weight_decay, scale)
        np.testing.assert_allclose(t.data.ravel(), twin_p, rtol=1e-12)
    assert tg.squared_norm_kernel(g.ravel()) == pytest.approx(P1.squared_norm(g))


# ---------------------------------------------------------------------------
# Threads: a kernel's parallel form, its work cut into pieces on 2 threads, is its serial
# form's result bit for bit (no sum runs across pieces; the loss's sum stays in row order).
# In float32. In float64 they agree to the dtype's precision, not always to the bit: LLVM
# contracts a twin's multiply-adds into FMAs differently where it inlines it (AdamW's v).
def kernel_cases(rng):
    """Each parallel kernel's name, with arguments at small, odd sizes (float32)."""
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    N, C, H, D = 37, 24, 3, 8
    x, g, gain, bias = f32(N, C), f32(N, C), f32(C), f32(C)
    _, inv_rms = tg.rmsnorm_forward_kernel(x)
    _, mu, inv_std = tg.layernorm_forward_kernel(x, gain, bias)
    cos, sin = tg.rope_angles(rng.integers(0, 50, N), D, np.float32)
    starts = np.array([0, 5, 17, 18, N])
    qkv = f32(N, 3 * H * D)
    att = tg.attention_triangles(qkv, starts, H)[1]
    scores, datt = f32(3, 2, 5, 9), f32(3, 2, 5, 9)
    weights = (rng.random(N) < 0.8).astype(np.float32)
    lse = tg.cross_entropy_forward_kernel(x, rng.integers(0, C, N), weights)[1]
    cases = [('embedding_backward_kernel', (rng.integers(0, 7, N), g, 7)),
             ('rmsnorm_forward_kernel', (x,)), ('rmsnorm_backward_kernel', (x, inv_rms, g)),
             ('layernorm_forward_kernel', (x, gain, bias)),
             ('layernorm_backward_kernel', (x, mu, inv_std, gain, g)),
             ('rope_rotate_kernel', (qkv, cos, sin, H)),
             ('dropout_keep_kernel', (1001, np.uint64(7), np.uint64(3), np.uint64(2 ** 31), np.float32(2))),
             ('scale_and_shift', (scores, np.float32(0.3), 4)),
             ('normalize_rows', (scores, 4, np.float32(0))),
             ('causal_softmax_backward', (scores, datt, np.float32(0.3), 4, np.float32(0))),
             ('attention_triangles', (qkv, starts, H)),
             ('attention_triangles_backward', (qkv, att, f32(N, H * D), starts, H)),
             ('cached_attention_kernel', (qkv[:5], f32(5, 9, H * D), f32(5, 9, H * D), 6, H)),
             ('cross_entropy_forward_kernel', (x, rng.integers(0, C, N), weights)),
             ('cross_entropy_backward_kernel', (x, rng.integers(0, C, N), weights, lse, 0.5)),
             ('adam_update_kernel', (f32(N * C), f32(N * C), rng.standard_normal(N * C),
                                     rng.random(N * C), 0.01, 0.85, 0.99, 1e-8, 0.15, 0.02, 0.999, 0.5))]
    return cases + [('each', (f, x, g, f32(N, C))) for f in range(6)]


def results(name, out, args):
    """A kernel's outputs and every array it was given (some work in place), the unset
    entries of attention's [B, H, T, T] weights (outside each document's triangle) zeroed."""
    out = list(out) if isinstance(out, tuple) else [out]
    if name == 'attention_triangles':
        starts, T = args[1], out[1].shape[2]
        inside = np.tril(np.ones((T, T), bool)) & (np.arange(T)[:, None] < np.diff(starts)[:, None, None, None])
        out[1] = np.where(inside, out[1], 0)
    return [np.asarray(a) for a in out] + [a for a in args if isinstance(a, np.ndarray)]


def parallel_forms(request, tmp_path_factory):
    """tensorgpt.py with every work over the threshold (PARALLEL_WORK = 0), as a module of
    its own: the kernels' parallel forms, calling tensorgpt's own serial twins. numba
    compiles them once (some 20 s) and caches them beside the copy, in pytest's cache folder
    (or, without one, a temporary folder), to load in a second while tensorgpt.py is
    unchanged: a change to it changes the copy, which numba then compiles afresh."""
    source, n = re.subn(r'^PARALLEL_WORK = .*$', 'PARALLEL_WORK = 0',
                        (ROOT / 'tensorgpt.py').read_text(encoding='utf-8'), flags=re.M)
    assert n == 1
    cache = getattr(request.config, 'cache', None)
    folder = cache.mkdir('tensorgpt-parallel-forms') if cache else tmp_path_factory.mktemp('forms')
    path = folder / 'tensorgpt_parallel_forms.py'
    if not path.exists() or path.read_text(encoding='utf-8') != source:
        path.write_text(source, encoding='utf-8')
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = sys.modules[path.stem] = importlib.util.module_from_spec(spec)  # (for dataclasses)
    spec.loader.exec_module(module)
    for name, f in vars(tg).items():  # their serial twins: tensorgpt's own, compiled already
        if hasattr(f, 'targetoptions') and not f.targetoptions.get('parallel') and name != '_pieces':
            setattr(module, name, f)
    return module


def test_parallel_kernels_are_their_serial_forms_bit_for_bit(request, tmp_path_factory):
    cases = kernel_cases(np.random.default_rng(0))
    assert {name for name, _ in cases} == {f.__name__ for f in vars(tg).values() if hasattr(
        f, 'targetoptions') and f.targetoptions.get('parallel')}  # every one
    copies = lambda args: [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    serial = []
    for name, args in cases:  # each below PARALLEL_WORK: one thread
        given = copies(args)
        serial.append(results(name, getattr(tg, name)(*given), given))
    # the same code with every work over the threshold, on 2 threads
    forms = parallel_forms(request, tmp_path_factory)
    assert forms._pieces(37, 1) == 37
    threads = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    request.addfinalizer(lambda: numba.set_num_threads(threads))
    for (name, args), expected in zip(cases, serial):
        given = copies(args)
        got = results(name, getattr(forms, name)(*given), given)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b, err_msg=name)


# ---------------------------------------------------------------------------
# Memory: given back as soon as it is used; the process set up as training starts
def test_memory_goes_back_as_soon_as_it_is_used():
    """Evaluating keeps no graph; backward drops each op output's gradient once passed on;
    train() drops a step's graph before the next step's forward pass."""
    docs = [[10, 1, 2, 10], [10, 3, 10]]
    model = tg.GPT(tg.GPTConfig(11, dtype='float64'), random.Random(0))
    with tg.no_graph():
        quiet = model.loss(docs)
    loss = model.loss(docs)
    assert quiet._parents == () and float(quiet.data) == float(loss.data) and loss._parents
    ops = lambda t: [p for p in t._parents if p._parents]
    inner = ops(loss)
    loss.backward()
    assert inner and all(t.grad is None for t in inner)
    del quiet, loss, inner
    steps = tg.train(model, docs, 3, batch_size=2)
    next(steps)
    gc.collect()
    # type(), not isinstance(): a dead weak proxy (numba's compiler leaves some) raises on the latter
    assert not [o for o in gc.get_objects() if issubclass(type(o), tg.Tensor) and o._parents]


# Importing changes nothing outside the file; training applies what the kernels need.
PROCESS_PROBE = """
import ctypes, numba, numpy as np
libc = ctypes.CDLL('libc.so.6')
class Info(ctypes.Structure):  # glibc's mallinfo2: hblks counts the blocks malloc mmapped
    _fields_ = [(n, ctypes.c_size_t) for n in ('arena ordblks smblks hblks hblkhd usmblks '
                                                'fsmblks uordblks fordblks keepcost').split()]
libc.mallinfo2.restype = Info
def mmapped():  # does a 30 MB array get pages of its own (glibc's default), or heap?
    before = libc.mallinfo2().hblks
    a = np.ones(30 * 2 ** 20 // 8)
    return libc.mallinfo2().hblks - before
import tensorgpt as tg
print(numba.config.THREADING_LAYER, mmapped())
tg.warm_up()
print(numba.config.THREADING_LAYER, mmapped())
"""


def test_importing_tensorgpt_leaves_malloc_and_numba_as_they_were_and_training_sets_them():
    env = {k: v for k, v in os.environ.items() if k != 'NUMBA_THREADING_LAYER'}
    p = subprocess.run([sys.executable, '-c', PROCESS_PROBE], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=env)
    assert p.stdout.split() == ['default', '1', 'workqueue', '0'], p.stderr


# ---------------------------------------------------------------------------
# numba's cache: compiled once, and never an error
# The probe's kernel is the smallest: one loop, no threads, compiled in a second (a parallel
# kernel's compile took seven), and cached as every kernel is.
CACHE_PROBE = """
import numpy as np, tensorgpt
print(tensorgpt.squared_norm_kernel(np.array([3.0, 4.0])))
"""


def probe(cwd, **env):
    p = subprocess.run([sys.executable, '-c', CACHE_PROBE], cwd=cwd, capture_output=True,
                       text=True, env={**os.environ, **env}, timeout=300)
    return p.returncode, p.stdout.strip(), p.stderr


def test_a_corrupt_numba_cache_is_compiled_afresh_and_mended(tmp_path):
    shutil.copy(ROOT / 'tensorgpt.py', tmp_path)
    assert probe(tmp_path) == (0, '25.0', '')  # compiles, caches
    cached = list((tmp_path / '__pycache__').glob('tensorgpt.squared_norm_kernel-*'))
    assert cached
    for f in cached:
        f.write_bytes(b'garbage')
    code, out, err = probe(tmp_path)
    assert (code, out) == (0, '25.0') and 'Traceback' not in err
    assert err.count('\n') == 1 and "numba's kernel cache is unreadable" in err
    assert probe(tmp_path) == (0, '25.0', '')  # mended


def test_no_writable_cache_folder_is_a_note_not_an_error(tmp_path):
    shutil.copy(ROOT / 'tensorgpt.py', tmp_path)
    (tmp_path / '__pycache__').write_text('')  # a file where numba's folder would go
    code, out, err = probe(tmp_path, HOME='/proc', XDG_CACHE_HOME='/proc/no',
                           NUMBA_CACHE_DIR='/proc/no')
    assert (code, out) == (0, '25.0') and 'Traceback' not in err
    assert err.count('\n') == 1 and 'kernels are compiled on every run' in err


# ---------------------------------------------------------------------------
# warm_up: every kernel a run uses, compiled before it starts
WARM_UP_PROBE = """
import random, tensorgpt as tg
kernels = lambda: {k: len(f.signatures) for k, f in vars(tg).items() if hasattr(f, 'signatures')}
tg.warm_up('float32')
warm = kernels()
model = tg.GPT(tg.GPTConfig(5, n_embd=8, n_head=2), random.Random(0))
list(tg.train(model, [[4, 0, 1, 4], [4, 2, 4], [4, 3, 3, 3, 4]], 2, batch_size=3))
tg.evaluate(model, [[4, 0, 4]])
tg.sample(model, random.Random(0), 4)
tg.sample_batch(model, random.Random(0), 4, 3)
print(warm == kernels(), all(n >= 1 for k, n in warm.items() if not k.startswith('_')))
"""


def test_warm_up_compiles_every_kernel_a_run_uses():
    p = subprocess.run([sys.executable, '-c', WARM_UP_PROBE], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.stdout.split() == ['True', 'True'], p.stderr
