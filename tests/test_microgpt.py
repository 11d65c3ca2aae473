"""microgpt.py: every Value gradient against finite differences, the model's pieces, and
the reference run's published figures."""
import math
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import data
import microgpt
from conftest import ROOT, reference_run
from microgpt import GPTConfig, Value, dot, rmsnorm, softmax

finite = st.floats(-3, 3, allow_nan=False)
positive = st.floats(0.1, 5)
away_from_zero = st.one_of(st.floats(-3, -0.2), st.floats(0.2, 3))  # relu's kink, pow's pole


def GPT(vocab_size, rng, **config):
    return microgpt.GPT(GPTConfig(vocab_size, **config), rng)


def numeric_grad(f, xs, i, h=1e-6):
    """Central finite difference of f at xs along coordinate i."""
    up, down = list(xs), list(xs)
    up[i] += h
    down[i] -= h
    return (f(up) - f(down)) / (2 * h)


def check_grads(f, xs, rel=1e-6, abs_=1e-6):
    """f maps a list of Values to one Value; backward() must match finite differences."""
    vs = [Value(x) for x in xs]
    f(vs).backward()
    for i, v in enumerate(vs):
        expected = numeric_grad(lambda ys: f([Value(y) for y in ys]).data, xs, i)
        assert v.grad == pytest.approx(expected, rel=rel, abs=abs_), f"input {i}"


# ---------------------------------------------------------------------------
# Every op
@given(finite, finite)
def test_add_grad_matches_finite_difference(a, b):
    check_grads(lambda v: v[0] + v[1], [a, b])


@given(finite, finite)
def test_mul_grad_matches_finite_difference(a, b):
    check_grads(lambda v: v[0] * v[1], [a, b])


@given(positive, st.sampled_from([-1, -0.5, 0.5, 2, 3, 1.7]))
def test_pow_grad_matches_finite_difference(a, k):
    check_grads(lambda v: v[0] ** k, [a])


@given(finite)
def test_exp_grad_matches_finite_difference(a):
    check_grads(lambda v: v[0].exp(), [a])


@given(positive)
def test_log_grad_matches_finite_difference(a):
    check_grads(lambda v: v[0].log(), [a])


@given(away_from_zero)
def test_relu_grad_matches_finite_difference(a):
    check_grads(lambda v: v[0].relu(), [a])


@given(finite, away_from_zero, finite)
def test_neg_sub_div_and_reflected_ops_grads_match_finite_difference(a, b, c):
    check_grads(lambda v: -v[0] - v[1] / v[2] ** 2 + (c - v[0]) * (1 / v[1]) + (2 + v[2]),
                [a, b, c + 4])


@given(finite)
def test_tanh_grad_matches_finite_difference(a):
    check_grads(lambda v: v[0].tanh(), [a])


@pytest.mark.parametrize('kind', ['relu2', 'gelu'])
@given(away_from_zero)
def test_activation_grad_matches_finite_difference(kind, a):
    check_grads(lambda v: microgpt.ACTIVATIONS[kind](v[0]), [a])


@given(st.integers(1, 6).flatmap(lambda n: st.lists(finite, min_size=2 * n, max_size=2 * n)))
def test_dot_grad_matches_finite_difference(xs):
    n = len(xs) // 2
    check_grads(lambda v: dot(v[:n], v[n:]), xs)


@given(st.lists(finite, min_size=1, max_size=8))
def test_dot_equals_summed_value_products(xs):
    vs = [Value(x) for x in xs]
    ws = [Value(x / 2 + 1) for x in xs]
    assert dot(ws, vs).data == sum(w * v for w, v in zip(ws, vs)).data  # bit for bit


# ---------------------------------------------------------------------------
# Composites, the chain rule across ops
@given(st.lists(finite, min_size=2, max_size=6), st.data())
def test_softmax_cross_entropy_grad_matches_finite_difference(xs, draw):
    target = draw.draw(st.integers(0, len(xs) - 1))
    check_grads(lambda v: -softmax(v)[target].log(), xs)


@given(st.lists(finite, min_size=2, max_size=6).filter(lambda xs: sum(x * x for x in xs) > 0.1))
def test_rmsnorm_grad_matches_finite_difference(xs):
    check_grads(lambda v: dot(rmsnorm(v), [Value(i + 1.0) for i in range(len(v))]), xs)


@given(st.lists(finite, min_size=1, max_size=8))
def test_softmax_sums_to_one_and_is_shift_invariant(xs):
    p = [v.data for v in softmax([Value(x) for x in xs])]
    assert sum(p) == pytest.approx(1, abs=1e-12)
    shifted = [v.data for v in softmax([Value(x + 10) for x in xs])]
    assert shifted == pytest.approx(p, abs=1e-12)


@given(st.lists(finite, min_size=1, max_size=16).filter(lambda xs: sum(x * x for x in xs) > 1))
def test_rmsnorm_output_has_unit_rms(xs):
    y = [v.data for v in rmsnorm([Value(x) for x in xs])]
    ms = sum(x * x for x in xs) / len(xs)
    assert math.sqrt(sum(v * v for v in y) / len(y)) == pytest.approx(math.sqrt(ms / (ms + 1e-5)))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans(), st.booleans(), st.integers(1, 2))
def test_gpt_loss_grad_matches_finite_difference(seed, tie, norm, n_layer):
    rng = random.Random(seed)
    model = GPT(5, rng, n_embd=4, n_head=2, n_layer=n_layer, block_size=4,
                tie_lm_head=tie, input_rmsnorm=norm)
    tokens = [4] + [rng.randrange(4) for _ in range(rng.randrange(1, 6))] + [4]
    model.loss(tokens).backward()
    for p in rng.sample(model.params, 12):
        grad, x = p.grad, p.data
        p.data = x + 1e-6
        up = model.loss(tokens).data
        p.data = x - 1e-6
        down = model.loss(tokens).data
        p.data = x
        assert grad == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-8)


# ---------------------------------------------------------------------------
# backward() itself
def test_backward_on_a_deep_chain_does_not_hit_the_recursion_limit():
    x = Value(0.5)
    y = x
    for _ in range(20_000):  # 20,000 nodes deep, far past the default limit of 1,000
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001 ** 20_000)


def test_gradients_accumulate_over_a_reused_node_and_over_calls():
    x = Value(3.0)
    y = x * x + x  # x is used three times: dy/dx = 2x + 1
    y.backward()
    assert x.grad == 7.0
    (x * x + x).backward()  # a second graph over the same leaf adds, it does not overwrite
    assert x.grad == 14.0


def test_adam_step_zeroes_gradients_and_moves_against_them():
    p = Value(1.0)
    p.grad = 2.0
    microgpt.Adam([p]).step(0.1)
    assert p.grad == 0 and p.data == pytest.approx(0.9)  # first step: lr * sign(grad)


# ---------------------------------------------------------------------------
# The model, trained
def test_config_rejects_a_choice_it_does_not_have():
    for choice in (dict(position='Rope'), dict(norm='batchnorm'), dict(activation='tanh')):
        with pytest.raises(ValueError, match="must be one of"):
            GPTConfig(5, **choice)
    with pytest.raises(ValueError, match="rope turns pairs of dims"):  # zip would drop a dim
        GPTConfig(5, n_embd=6, n_head=2, position='rope')


def test_config_rejects_n_embd_not_divisible_by_n_head():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(5, n_embd=10, n_head=4)


def test_tied_model_has_no_lm_head_and_draws_fewer_weights():
    untied, tied = GPT(7, random.Random(1)), GPT(7, random.Random(1), tie_lm_head=True)
    assert 'lm_head' in untied.state_dict and 'lm_head' not in tied.state_dict
    assert len(untied.params) - len(tied.params) == 7 * 16
    assert [[p.data for p in row] for row in untied.state_dict['wpe']] == \
        [[p.data for p in row] for row in tied.state_dict['wpe']]  # drawn before lm_head


def test_short_training_run_lowers_the_loss():
    docs = ['abba', 'baab', 'abab', 'bbaa']
    tok = data.Tokenizer.from_docs(docs)
    model = GPT(tok.vocab_size, random.Random(0), n_embd=8, n_head=2)
    framed = [tok.frame(d, 16) for d in docs]
    before = microgpt.evaluate(model, framed)
    list(microgpt.train(model, framed, 60, lr=0.02))
    assert microgpt.evaluate(model, framed) < before - 0.3


def test_sample_stops_at_block_size_and_keeps_the_prompt_out_of_its_output():
    model = GPT(3, random.Random(0), n_embd=4, n_head=1, block_size=5)
    for _ in range(20):
        out = microgpt.sample(model, random.Random(_), bos=2, temperature=3.0, prompt=[0, 1])
        assert len(out) <= 5 - 2 and 2 not in out


# ---------------------------------------------------------------------------
# The reference's numbers: `python microgpt.py` prints what the reference script printed.
def test_run_alone_it_prints_the_reference_output_byte_for_byte(reference):
    code, out, err = reference_run('alone')  # microgpt.py copied alone, names.txt beside it
    assert code == 0 and out == reference['text'], err


@pytest.mark.parametrize('content, message', [
    (b'ab\n\xff\xfe\n', 'is not UTF-8 text'),
    (b'\n  \n', 'has no documents'),
    (b'', 'has no documents'),
])
def test_run_alone_on_a_bad_file_it_says_so_in_one_line(tmp_path, content, message):
    (tmp_path / 'in.txt').write_bytes(content)
    p = subprocess.run([sys.executable, str(ROOT / 'microgpt.py'), 'in.txt'], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 1 and message in p.stderr and p.stderr.count('\n') == 1


def test_run_alone_a_byte_order_mark_is_not_a_character(tmp_path, capsys):
    (tmp_path / 'in.txt').write_bytes(b'\xef\xbb\xbfab\nba\n')
    microgpt.main(str(tmp_path / 'in.txt'), num_steps=1, num_samples=0)
    assert 'vocab size: 3' in capsys.readouterr().out


@pytest.mark.parametrize('kind', ['device', 'fifo'])
def test_run_alone_on_a_device_or_a_fifo_it_says_so_at_once(tmp_path, kind):
    path = '/dev/zero' if kind == 'device' else str(tmp_path / 'fifo')
    if kind == 'fifo':
        os.mkfifo(path)  # reading it would wait for a writer for ever
    p = subprocess.run([sys.executable, str(ROOT / 'microgpt.py'), path], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and p.stderr == f"error: {path} is not a regular file\n"
