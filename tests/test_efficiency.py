"""efficiency.py: the model's FLOPs per token against a count of a step's products, its
weights against the models' own, and the matmul peak measured at its shapes."""
import random

import numpy as np
import pytest

import data
import microgpt
import tensorgpt as tg
from microgpt_lab import efficiency, models, tokens


@pytest.mark.parametrize('text, choices', [(False, {}), (True, {}), (False, dict(tie_lm_head=True, n_kv_head=1)),
                                           (True, dict(value_embeddings=True, n_kv_head=1, bias=True))])
def test_the_flops_formula_is_a_count_of_the_products_of_a_step(monkeypatch, text, choices):
    """Count the multiply-adds of every product a forward pass makes (linear, and attention's
    q k^T and att v over each token's keys), times 3 for the backward's two: the formula, read
    off the weight table (grouped-query attention's smaller k and v, the gates' products)."""
    cfg = dict(n_layer=2, n_embd=8, n_head=2, block_size=6, data_format='text' if text else 'lines', **choices)
    model = tg.GPT(tg.GPTConfig(5, n_embd=8, n_head=2, n_layer=2, block_size=6, dtype='float64', **choices),
                   random.Random(0))
    count, linear, attention = [0], tg.linear, tg.attention
    def counted_linear(x, w, b=None):
        count[0] += 2 * x.data.size // x.data.shape[-1] * w.data.size
        return linear(x, w, b)
    def counted_attention(qkv, starts, n_head, *rest):
        C = qkv.data.shape[1] // 3
        count[0] += sum(4 * C * n * (n + 1) // 2 for n in np.diff(starts))  # token i sees i + 1 keys
        return attention(qkv, starts, n_head, *rest)
    monkeypatch.setattr(tg, 'linear', counted_linear)
    monkeypatch.setattr(tg, 'attention', counted_attention)
    batch = np.array([[0, 1, 2, 3, 4, 0, 1]] * 3) if text else [[4, 0, 1, 4], [4, 2, 2, 3, 1, 0, 1, 2, 4]]
    d = tokens.RunData(data.Tokenizer('abcd'), batch, val=[], check=[], sizes='')
    n = tg.n_targets(batch, 6)
    model.loss(batch)
    expected = efficiency.flops_per_token(cfg, 5, efficiency.mean_keys(d, cfg)) * n
    assert 3 * count[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('choices', [{}, {'tie_lm_head': True}, {'position': 'rope'},
                                     {'norm': 'layernorm', 'final_norm': True},
                                     {'norm': 'layernorm', 'input_rmsnorm': False}])
def test_the_count_of_weights_is_the_models_own(choices):
    cfg = dict(dict(n_embd=8, n_head=2, n_layer=2, block_size=6, tie_lm_head=False,
                    input_rmsnorm=True), **choices)
    model = tg.GPT(tg.GPTConfig(5, **cfg), random.Random(0))
    assert models.n_params(cfg, 5) == sum(p.data.size for p in model.params)
    scalar = microgpt.GPT(microgpt.GPTConfig(5, **cfg), random.Random(0))
    assert models.n_params(cfg, 5) == len(scalar.params)


def test_the_matmul_peak_is_the_products_flops_over_their_time(monkeypatch):
    """Timed on a clock that ticks 1 s a call, each shape's one try takes 1 s, counted as
    often as a step runs the shape: the peak is the step's weight-product FLOPs over that."""
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(efficiency.time, 'perf_counter', lambda: next(ticks))
    cfg = dict(n_embd=4, n_layer=2)
    peak = efficiency.matmul_peak(cfg, 3, 10, tries=1)
    flops = sum(count * 6 * 10 * nin * nout for nout, nin, count in efficiency.weight_shapes(cfg, 3))
    assert peak == pytest.approx(flops / (4 * 2 + 1) / 1e9)  # 4 shapes L = 2 times, lm_head once
    assert efficiency.matmul_peak(cfg, 3, 10, tries=2, least_s=0.0001) > 0  # the real clock


def test_tokens_per_step_are_a_batch_of_windows_or_of_mean_documents():
    d = tokens.RunData(data.Tokenizer('ab'), [[2, 0, 2], [2, 0, 1, 1, 2]], val=[], check=[], sizes='')
    assert efficiency.tokens_per_step(d, dict(data_format='lines', batch_size=4, block_size=16)) == 12
    assert efficiency.tokens_per_step(d, dict(data_format='lines', batch_size=4, block_size=2)) == 8
    assert efficiency.tokens_per_step(d, dict(data_format='text', batch_size=4, block_size=16)) == 64
